//! quiesce's target-side probe for Rust services on tokio.
//!
//! A process's tasks and threads die with it, so only the process can say which were still
//! alive when its shutdown completed. Add two lines to `main`:
//!
//! ```no_run
//! #[tokio::main]
//! async fn main() {
//!     let probe = quiesce_probe::Probe::start();   // first thing: the threads that exist now are not yours
//!     // ... run the service until its shutdown signal, then shut it down ...
//!     probe.report().await;                         // what is still alive now is a leak
//! }
//! ```
//!
//! When quiesce runs the service it sets `QUIESCE_PROBE_FILE`; without it `report` does nothing,
//! so the lines can stay in production code. The report counts the runtime's alive tasks
//! (`RuntimeMetrics::num_alive_tasks`) and the OS threads started since `start` that are not the
//! runtime's own, after a settle budget like goleak's (20 looks, at most 100 ms apart). Call
//! `report` from `main`'s own future, not from a spawned task (which would count itself).
//!
//! In a soak, quiesce also sets `QUIESCE_HEAP_FILE`: the probe then writes the allocator's
//! bytes in use there once a second (glibc's `mallinfo2`, on a thread of its own that `report`
//! joins), so the leak verdict can tell a heap that grows from memory the allocator retains.

mod heap;
mod spawns;

pub use heap::{heap_held_bytes, heap_in_use_bytes};
pub use spawns::SpawnRegistry;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

const SCHEMA: u32 = 1;

/// Thread name prefixes of the runtime itself (`/proc` keeps 15 bytes of a name).
const RUNTIME_THREADS: &[&str] = &["tokio-runtime-w", "tokio-rt-worker"];

/// Remembers the threads that existed before the service started.
#[derive(Debug)]
pub struct Probe {
    baseline: HashSet<u32>,
    ignore: Vec<String>,
    outputs: Option<Arc<AtomicU64>>,
    spawns: Option<SpawnRegistry>,
    /// Writes the live heap for a soak (`QUIESCE_HEAP_FILE`); stopped before the report.
    heap: Option<heap::HeapReporter>,
}

#[derive(Serialize)]
struct Task {
    name: String,
    location: String,
    stack: Vec<String>,
}

#[derive(Serialize)]
struct Thread {
    name: String,
    daemon: bool,
}

#[derive(Serialize)]
struct Set<T> {
    alive: u64,
    items: Vec<T>,
}

#[derive(Serialize)]
struct Report {
    schema: u32,
    runtime: &'static str,
    settle_ms: u64,
    tasks: Set<Task>,
    threads: Set<Thread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs_sent: Option<u64>,
}

impl Probe {
    /// Call first thing in `main`.
    pub fn start() -> Self {
        Probe {
            baseline: quiesce_soak::own_threads()
                .into_iter()
                .map(|(tid, _)| tid)
                .collect(),
            ignore: RUNTIME_THREADS.iter().map(|s| s.to_string()).collect(),
            outputs: None,
            spawns: None,
            heap: heap::HeapReporter::from_env(),
        }
    }

    /// Names leaked tasks by spawn location from `spawns`, which must be installed on the
    /// service's runtime ([`SpawnRegistry::install`], built with `--cfg tokio_unstable`).
    pub fn spawns(mut self, spawns: SpawnRegistry) -> Self {
        self.spawns = Some(spawns);
        self
    }

    /// Reports `counter` as the output records the service handed to its Kafka producer (for
    /// quiesce's `producer_flushed` check, which compares it with the output topic).
    pub fn count_outputs(mut self, counter: Arc<AtomicU64>) -> Self {
        self.outputs = Some(counter);
        self
    }

    /// Also ignores threads whose name starts with `prefix` (a runtime with custom thread
    /// names, say).
    pub fn ignore_threads(mut self, prefix: impl Into<String>) -> Self {
        self.ignore.push(prefix.into());
        self
    }

    fn leftover_threads(&self) -> Vec<Thread> {
        quiesce_soak::own_threads()
            .into_iter()
            .filter(|(tid, name)| {
                !self.baseline.contains(tid)
                    && !self.ignore.iter().any(|p| name.starts_with(p.as_str()))
            })
            .map(|(_, name)| Thread {
                name,
                daemon: false,
            })
            .collect()
    }

    /// Writes the report to `QUIESCE_PROBE_FILE`, if set. Must run on the service's runtime.
    /// The live-heap thread, if a soak asked for one, is stopped and joined first: it is the
    /// probe's, not the service's.
    pub async fn report(mut self) {
        if let Some(mut heap) = self.heap.take() {
            heap.stop();
        }
        let Some(path) = std::env::var_os("QUIESCE_PROBE_FILE") else {
            return;
        };
        let metrics = tokio::runtime::Handle::current().metrics();
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        for _ in 0..20 {
            if metrics.num_alive_tasks() == 0 && self.leftover_threads().is_empty() {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        let alive = metrics.num_alive_tasks() as u64;
        let mut locations = self
            .spawns
            .as_ref()
            .map(SpawnRegistry::alive)
            .unwrap_or_default()
            .into_iter();
        let threads = self.leftover_threads();
        let report = Report {
            schema: SCHEMA,
            runtime: "tokio",
            settle_ms: started.elapsed().as_millis() as u64,
            tasks: Set {
                alive,
                // Names and spawn locations need tokio's unstable task hooks; the count is exact.
                items: (0..alive)
                    .map(|i| Task {
                        name: format!("task {}", i + 1),
                        location: locations
                            .next()
                            .unwrap_or_else(|| SpawnRegistry::unknown().to_owned()),
                        stack: Vec::new(),
                    })
                    .collect(),
            },
            threads: Set {
                alive: threads.len() as u64,
                items: threads,
            },
            outputs_sent: self.outputs.as_ref().map(|c| c.load(Ordering::SeqCst)),
        };
        let path = std::path::PathBuf::from(path);
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(&report).expect("the report serializes");
        if std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .is_err()
        {
            eprintln!("quiesce-probe: cannot write {}", path.display());
        }
    }
}
