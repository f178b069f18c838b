//! Kafka invariants, checked the way Kafka's own client system tests check them.
//!
//! The harness writes sequence-numbered records to an input topic and keeps the ones the broker
//! acknowledged (like Kafka's `VerifiableProducer`). The service under test reports what it
//! processed by writing **one record per processed input** to an output topic:
//!
//! | field | value |
//! |---|---|
//! | key | the input record's key |
//! | value | JSON `{"partition": P, "offset": O}`: where the input record was |
//!
//! That is the whole contract a service adopts to get the Kafka checks, with one setting: its
//! consumer group starts from the earliest offset when nothing is committed
//! (`auto.offset.reset=earliest`), since the judge counts uncommitted inputs as still to be
//! consumed. After the stop the
//! harness reads the output topic to its end and the committed offsets of the service's
//! consumer group, and [`judge`] decides:
//!
//! - `offsets_committed`: after a clean stop, per partition, committed == last processed + 1
//!   (Kafka's "last_commit == position"). Beyond it is a loss, short of it a redelivery; the
//!   evidence names the partition and both offsets. After SIGKILL only a commit beyond what was
//!   processed is a violation.
//! - `no_message_loss`: every acknowledged input is processed, or at or after the committed
//!   offset (so a restart consumes it): acked ⊆ consumed.
//! - `no_redelivery`: no input processed twice. When the run's schedule faulted Kafka before
//!   the stop, inputs processed twice before it are counted, not failed (at-least-once under
//!   faults); an input processed again after the clean stop still fails.
//!
//! The read-back does not trust the broker's ListOffsets answer alone: unpatched tansu 0.6.0
//! (the local backend's broker before `patches/tansu-0.6.0/0004`) answers it with a high
//! watermark that lags, at times stuck near 10,001, while it serves, and has acknowledged,
//! records far beyond it. The high watermark in its
//! fetch responses is exact, so the read-back ends when every partition is read to that; where
//! no fetch response has said (yet), past the ListOffsets end it waits for a second of quiet.

mod client;
pub mod fetch;
mod judge;
pub mod log;
pub mod wire;

pub(crate) use client::config as client_config;
pub use client::{
    AckedRecord, Batching, InputRef, KafkaError, Output, OutputCount, ProcessedRecord, ReadBack,
    Unmatched, Workload, committed_offsets, count_processed, create_topic, paced, produce_counted,
    produce_sequence, produce_until, read_back, read_processed, resolve,
};
pub use judge::{
    KafkaEvidence, StopKind, no_message_loss, no_redelivery, no_redelivery_under_faults,
    offsets_committed, producer_flushed,
};
