//! The service under test.
//!
//! An in-process target ([`Graph`]) is a Rust service graph on a tokio runtime the harness
//! builds and owns, given the endpoints and one shutdown trigger (a `CancellationToken`). When
//! the graph returns, the harness counts what is still alive on that runtime.
//!
//! A process target is any executable, in any language. The harness gives it the endpoints in
//! environment variables, starts it in its own process group, waits until it is ready, lets it
//! run, sends the stop signal, and watches it go: how long it took, how it exited, and whether
//! anything it started is still alive afterwards.
//!
//! Environment a target receives:
//!
//! | variable | value |
//! |---|---|
//! | `QUIESCE_KAFKA_BOOTSTRAP` | `host:port` of the Kafka proxy |
//! | `QUIESCE_REDIS_URL` | `redis://host:port` of the Redis proxy |
//! | `QUIESCE_RUN_ID` | an id unique to this run; inherited by everything the target starts, which is how survivors are found |
//! | `QUIESCE_PROBE_FILE` | where a target-side probe writes the tasks and threads still alive when shutdown completes |
//! | `QUIESCE_KAFKA_INPUT_TOPIC`, `QUIESCE_KAFKA_OUTPUT_TOPIC`, `QUIESCE_KAFKA_GROUP` | with a `[kafka]` workload: the topic to consume, the topic to report processed records to, and the consumer group whose commits are judged |

mod graph;
mod observed;
mod orphans;
mod probe;
mod process;
mod ready;

pub use graph::{Graph, GraphContext, run_graph};
pub use observed::{ReadyState, TargetExit, TargetRun};
pub use orphans::{OrphanProcess, find_orphans};
pub use probe::{ProbeReport, ProbeSet, ProbeTask, ProbeThread, read_probe};
pub use process::{ProcessContext, describe_status, run_process};
pub use ready::wait_ready;

/// How the run around a target takes part while the target runs.
#[derive(Debug, Default)]
pub struct Hooks {
    /// Told once the target is ready.
    pub on_ready: Option<tokio::sync::oneshot::Sender<()>>,
    /// Stops the target before `[stop] after_ms` when it yields; the text goes to the timeline.
    pub stop_early: Option<tokio::sync::oneshot::Receiver<String>>,
}

impl Hooks {
    fn ready(&mut self) {
        if let Some(tx) = self.on_ready.take() {
            let _ = tx.send(());
        }
    }

    /// Yields when the run wants the target stopped early; never, if it does not.
    async fn stop_early(&mut self) -> String {
        match self.stop_early.as_mut() {
            Some(rx) => match rx.await {
                Ok(reason) => reason,
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}
