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
