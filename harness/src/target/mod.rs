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
mod hang;
mod observed;
mod orphans;
mod probe;
mod process;
mod ready;
mod services;
mod sockets;

pub use graph::{Graph, GraphContext, run_graph};
pub use hang::{Hang, HookRun, LOOK as HANG_LOOK, Phase, Stuck, explain_process};
pub use observed::{ReadyState, TargetExit, TargetRun};
pub use orphans::{OrphanProcess, find_orphans};
pub use probe::{ProbeReport, ProbeSet, ProbeTask, ProbeThread, read_probe};
pub use process::{ProcessContext, describe_status, log_files, resolve_program, run_process};
pub use ready::{http_status, wait_ready};
pub use services::{InstanceRun, JoinWatch, RedisPerInstance, ServicesContext, run_services};
pub use sockets::run_id_of_client;

/// A free loopback port, for a target (or a graph's instance) to listen on.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Who is told the pids of the processes a run starts (a soak, which samples them).
#[derive(Clone, Debug)]
pub enum PidReporter {
    /// Told a process target's pid once it is started, and `None` once its stop is asked
    /// for.
    One(std::sync::Arc<tokio::sync::watch::Sender<Option<u32>>>),
    /// Told of each instance of a graph as it starts, by name, with a receiver of its pid
    /// as [`PidReporter::One`] is told it.
    Instances(tokio::sync::mpsc::UnboundedSender<InstancePid>),
}

/// An instance of a graph and its pid: see [`PidReporter::Instances`].
pub type InstancePid = (String, tokio::sync::watch::Receiver<Option<u32>>);

impl PidReporter {
    /// A process's pid, or `None` once its stop is asked for (a graph's reporter is told
    /// of its instances instead).
    fn report(&self, pid: Option<u32>) {
        if let PidReporter::One(tx) = self {
            tx.send_replace(pid);
        }
    }

    /// The reporter of instance `name` of a graph, if this one wants them.
    fn instance(&self, name: &str) -> Option<PidReporter> {
        let PidReporter::Instances(tx) = self else {
            return None;
        };
        let (pid_tx, pid_rx) = tokio::sync::watch::channel(None);
        tx.send((name.to_owned(), pid_rx)).ok()?;
        Some(PidReporter::One(std::sync::Arc::new(pid_tx)))
    }
}

/// How the run around a target takes part while the target runs.
#[derive(Debug, Default)]
pub struct Hooks {
    /// Told once the target is ready.
    pub on_ready: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Told when the stop is asked for (the signal sent, the token cancelled).
    pub on_stop: Vec<tokio::sync::oneshot::Sender<std::time::Instant>>,
    /// Stops the target before `[stop] after_ms` when it yields; the text goes to the timeline.
    pub stop_early: Option<tokio::sync::oneshot::Receiver<String>>,
    /// An in-process graph's threads are counted only once each of these has closed: the
    /// harness's own clients that started threads in this process are gone.
    pub quiet: Vec<tokio::sync::oneshot::Receiver<()>>,
    /// Signals a fault schedule sends the target. The first one sent after ready is the stop.
    pub signals: ScheduledSignals,
    /// Told the process target's pid once it is started (a soak samples it).
    pub pid: Option<PidReporter>,
}

impl Hooks {
    /// Both sets of hooks; the first early stop that yields wins.
    pub fn merge(mut self, other: Hooks) -> Hooks {
        self.on_ready.extend(other.on_ready);
        self.on_stop.extend(other.on_stop);
        self.quiet.extend(other.quiet);
        // One schedule per run: there is never a second sender of signals.
        self.signals = self.signals.or(other.signals);
        self.pid = self.pid.or(other.pid);
        self.stop_early = match (self.stop_early, other.stop_early) {
            (Some(a), Some(b)) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let first = tokio::select! {
                        Ok(reason) = a => reason,
                        Ok(reason) = b => reason,
                        else => return,
                    };
                    let _ = tx.send(first);
                });
                Some(rx)
            }
            (a, b) => a.or(b),
        };
        self
    }

    fn ready(&mut self) {
        for tx in self.on_ready.drain(..) {
            let _ = tx.send(());
        }
    }

    fn stopping(&mut self, at: std::time::Instant) {
        for tx in self.on_stop.drain(..) {
            let _ = tx.send(at);
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

/// Signals a fault schedule sends the target.
type ScheduledSignals = Option<tokio::sync::mpsc::UnboundedReceiver<Scheduled>>;

/// A signal the fault schedule sends: to the target, or, in a graph, to one service.
#[derive(Clone, Debug)]
pub struct Scheduled {
    pub service: Option<String>,
    pub signal: crate::scenario::StopSignal,
    /// A graph's service redeployed: `signal` is then each old instance's stop, unless
    /// `own_signal` says to use the service's own.
    pub redeploy: Option<Redeploy>,
    pub own_signal: bool,
}

/// How a graph's service is redeployed by the fault schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redeploy {
    /// Each instance stopped, then started again once it has exited.
    Restart,
    /// One instance at a time: a new one started beside it, and it stopped once the new one
    /// is ready and has reached the step of its group join that `StopOld` names.
    Rollout(crate::scenario::StopOld),
}

/// The next signal the schedule sends; never, without a schedule or once it is done.
async fn next_scheduled(signals: &mut ScheduledSignals) -> crate::scenario::StopSignal {
    next_scheduled_to(signals).await.signal
}

/// The next signal the schedule sends, with the service it names.
async fn next_scheduled_to(signals: &mut ScheduledSignals) -> Scheduled {
    if let Some(rx) = signals.as_mut() {
        match rx.recv().await {
            Some(signal) => return signal,
            None => *signals = None,
        }
    }
    std::future::pending().await
}
