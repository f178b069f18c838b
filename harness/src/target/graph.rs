//! An in-process target: a Rust service graph on a tokio runtime the harness builds and owns.
//!
//! The graph gets the endpoints and one shutdown trigger, a `CancellationToken` ("container
//! close is the only shutdown signal", seed 000), says when it is ready, and returns when it has
//! stopped. The runtime runs on a thread of its own, so once the graph has returned the harness
//! can still look inside it: how many tasks are alive (`RuntimeMetrics::num_alive_tasks`, after
//! a settle budget like goleak's) and which OS threads the graph started that are still running
//! (every thread of the process that is neither the runtime's own nor there before the graph
//! started).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::infra::Endpoints;
use crate::scenario::{StopPlan, StopSignal};
use crate::signal::SignalHandler;
use crate::target::hang::{Hang, Phase, Stuck};
use crate::target::{
    ProbeReport, ProbeSet, ProbeTask, ProbeThread, ReadyState, TargetExit, TargetRun,
};

/// Names of the graph runtime's threads (`/proc` shows the first 15 bytes).
const RUNTIME_THREADS: &str = "quiesce-graph";
/// The thread that drives the graph's runtime.
const DRIVER_THREAD: &str = "quiesce-driver";
/// Threads of the harness's own runtime, which may start while the graph runs (tokio's default
/// names, old and new, cut to 15 bytes).
const HARNESS_THREADS: [&str; 2] = ["tokio-runtime-w", "tokio-rt-worker"];
/// How long the count waits for the harness's own clients to be gone.
const QUIET_WAIT: Duration = Duration::from_secs(10);
/// How long the harness waits for the count once the graph has returned.
const COUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed graph may take to return.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What a graph is given.
pub struct GraphContext {
    /// Where Kafka and Redis are (the proxies).
    pub endpoints: Endpoints,
    /// The one shutdown trigger: cancelled when the harness stops the graph.
    pub shutdown: CancellationToken,
    /// The settings a process target gets as environment variables (the Kafka topics and
    /// group, `--env` values), by name.
    pub settings: BTreeMap<String, String>,
    /// What the graph counts here: output records it handed to its producer (the
    /// `producer_flushed` check compares it with the output topic).
    pub outputs_sent: Arc<AtomicU64>,
    ready: Option<oneshot::Sender<()>>,
}

impl GraphContext {
    /// Says the graph is ready (what `/ready` would say). Later calls do nothing.
    pub fn ready(&mut self) {
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(());
        }
    }
}

type GraphFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A service graph the harness can start, as often as it likes.
///
/// ```
/// use quiesce::target::Graph;
/// let graph = Graph::new("ticker", |mut ctx| async move {
///     let tracker = tokio_util::task::TaskTracker::new();
///     let token = ctx.shutdown.clone();
///     tracker.spawn(async move { token.cancelled().await });
///     ctx.ready();
///     ctx.shutdown.cancelled().await;
///     tracker.close();
///     tracker.wait().await;
///     Ok(())
/// });
/// assert_eq!(graph.name(), "ticker");
/// ```
#[derive(Clone)]
pub struct Graph {
    name: String,
    start: Arc<dyn Fn(GraphContext) -> GraphFuture + Send + Sync>,
}

impl Graph {
    /// `start` builds and runs the graph until it has stopped.
    pub fn new<F, Fut>(name: impl Into<String>, start: F) -> Self
    where
        F: Fn(GraphContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Graph {
            name: name.into(),
            start: Arc::new(move |ctx| Box::pin(start(ctx))),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Graph({})", self.name)
    }
}

impl PartialEq for Graph {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.start, &other.start)
    }
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Threads started since `baseline` that are not the runtime's or the harness's.
fn leftover_threads(
    baseline: &HashSet<u32>,
    runtime: &Mutex<HashSet<u32>>,
    driver: u32,
) -> Vec<ProbeThread> {
    let runtime = runtime.lock().unwrap_or_else(|e| e.into_inner());
    quiesce_soak::own_threads()
        .into_iter()
        .filter(|(tid, name)| {
            !baseline.contains(tid)
                && !runtime.contains(tid)
                && *tid != driver
                && !HARNESS_THREADS.iter().any(|p| name.starts_with(p))
        })
        .map(|(_, name)| ProbeThread {
            name,
            daemon: false,
        })
        .collect()
}

/// A look inside a running graph's runtime, for when it is stuck.
struct Inspect {
    handle: tokio::runtime::Handle,
    spawns: quiesce_probe::SpawnRegistry,
    runtime_tids: Arc<Mutex<HashSet<u32>>>,
}

/// What the runner hands the graph's thread.
struct Channels {
    quiet: Vec<oneshot::Receiver<()>>,
    inspect: oneshot::Sender<Inspect>,
    /// Told when the graph is stuck past the stop deadline: its future is dropped, as a
    /// SIGKILL would end a process.
    kill: oneshot::Receiver<()>,
    returned: oneshot::Sender<(Result<(), String>, Instant)>,
    counted: oneshot::Sender<ProbeReport>,
}

/// What a killed graph returned.
const KILLED: &str = "killed by the harness: its future was dropped";

/// Drives the graph on its own runtime, on this (dedicated) thread.
fn drive(graph: Graph, ctx: GraphContext, baseline: HashSet<u32>, channels: Channels) {
    let Channels {
        quiet,
        inspect,
        kill,
        returned,
        counted,
    } = channels;
    let runtime_tids = Arc::new(Mutex::new(HashSet::new()));
    let spawns = quiesce_probe::SpawnRegistry::default();
    let runtime = build_runtime(&spawns, &runtime_tids);
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = returned.send((
                Err(format!("cannot build the graph's runtime: {e}")),
                Instant::now(),
            ));
            return;
        }
    };
    let _ = inspect.send(Inspect {
        handle: runtime.handle().clone(),
        spawns: spawns.clone(),
        runtime_tids: runtime_tids.clone(),
    });
    let result = runtime.block_on(async move {
        let started = std::panic::AssertUnwindSafe((graph.start)(ctx)).catch_unwind();
        let killed = async move {
            match kill.await {
                Ok(()) => {}
                // The runner is gone without a word: nothing will kill.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            result = started => result,
            () = killed => Ok(Err(KILLED.to_owned())),
        }
        .unwrap_or_else(|panic| {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!("panicked: {text}"))
        })
    });
    let _ = returned.send((result, Instant::now()));
    // The harness's own clients that started threads in this process (Kafka's, say) must be
    // gone first, or their threads would count as the graph's. Bounded: after QUIET_WAIT the
    // count goes ahead.
    let deadline = Instant::now() + QUIET_WAIT;
    for mut rx in quiet {
        while Instant::now() < deadline
            && matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    let _ = counted.send(count_leftovers(&runtime, &baseline, &runtime_tids, &spawns));
    // Leaked tasks are dropped here; leaked threads are the graph's to end.
    runtime.shutdown_timeout(Duration::from_secs(1));
}

/// The graph's runtime: two workers, named, each thread's id kept in `runtime_tids` while it
/// lives, every spawn located by `spawns`.
fn build_runtime(
    spawns: &quiesce_probe::SpawnRegistry,
    runtime_tids: &Arc<Mutex<HashSet<u32>>>,
) -> std::io::Result<tokio::runtime::Runtime> {
    let (on_start, on_stop) = (runtime_tids.clone(), runtime_tids.clone());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    spawns
        .install(&mut builder)
        .worker_threads(2)
        .thread_name(RUNTIME_THREADS)
        .enable_all()
        .on_thread_start(move || {
            on_start
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(gettid());
        })
        .on_thread_stop(move || {
            on_stop
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&gettid());
        })
        .build()
}

/// The graph says it has stopped: what is still alive on its runtime is a leak, once tasks
/// finishing their own cancellation have had a moment. The tasks with where they were
/// spawned (and their stacks, where task dumps are built in), and the threads.
fn count_leftovers(
    runtime: &tokio::runtime::Runtime,
    baseline: &HashSet<u32>,
    runtime_tids: &Arc<Mutex<HashSet<u32>>>,
    spawns: &quiesce_probe::SpawnRegistry,
) -> ProbeReport {
    let metrics = runtime.metrics();
    let driver = gettid();
    let mut pause = Duration::from_millis(1);
    for _ in 0..20 {
        if metrics.num_alive_tasks() == 0
            && leftover_threads(baseline, runtime_tids, driver).is_empty()
        {
            break;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    let alive = metrics.num_alive_tasks() as u64;
    let threads = leftover_threads(baseline, runtime_tids, driver);
    let mut located = spawns.alive_with_ids().into_iter();
    let mut stacks = runtime.block_on(task_stacks(runtime.handle()));
    ProbeReport {
        schema: 1,
        runtime: "tokio, in-process".to_owned(),
        // The wait happened after the graph returned, outside the measured stop.
        settle_ms: 0,
        tasks: ProbeSet {
            alive,
            items: (0..alive)
                .map(|i| {
                    let (location, stack) = match located.next() {
                        Some((id, location)) => (location, stacks.remove(&id).unwrap_or_default()),
                        None => (
                            quiesce_probe::SpawnRegistry::unknown().to_owned(),
                            Vec::new(),
                        ),
                    };
                    ProbeTask {
                        name: format!("task {}", i + 1),
                        location,
                        stack,
                    }
                })
                .collect(),
        },
        threads: ProbeSet {
            alive: threads.len() as u64,
            items: threads,
        },
        outputs_sent: None,
    }
}

/// How long a task dump may take: it re-polls every task, and never ends if a worker is
/// blocked.
#[cfg(all(tokio_unstable, feature = "taskdump", target_os = "linux"))]
const DUMP_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this build takes task dumps.
const DUMPS: bool = cfg!(all(
    tokio_unstable,
    feature = "taskdump",
    target_os = "linux"
));

/// Each live task's stack, by task id, from a tokio task dump (`--cfg tokio_unstable` and the
/// `taskdump` feature, on Linux), under a timeout; empty where that is not built in.
#[cfg(all(tokio_unstable, feature = "taskdump", target_os = "linux"))]
async fn task_stacks(
    handle: &tokio::runtime::Handle,
) -> std::collections::HashMap<tokio::task::Id, Vec<String>> {
    match tokio::time::timeout(DUMP_TIMEOUT, handle.dump()).await {
        Ok(dump) => dump
            .tasks()
            .iter()
            .map(|task| {
                let trace = task.trace().to_string();
                (task.id(), trace.lines().map(str::to_owned).collect())
            })
            .collect(),
        Err(_) => std::collections::HashMap::new(),
    }
}

#[cfg(not(all(tokio_unstable, feature = "taskdump", target_os = "linux")))]
async fn task_stacks(
    _: &tokio::runtime::Handle,
) -> std::collections::HashMap<tokio::task::Id, Vec<String>> {
    std::collections::HashMap::new()
}

/// Explains a stuck graph: its runtime's CPU over the look, and every live task with the
/// line that spawned it and its stack.
async fn explain(inspect: &Inspect, phase: Phase) -> Hang {
    let tids: Vec<u32> = inspect
        .runtime_tids
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    let cpu_ms = super::hang::own_threads_cpu(&tids).await;
    let alive = inspect.handle.metrics().num_alive_tasks();
    let mut dumped = task_stacks(&inspect.handle).await;
    let mut stacks: Vec<Stuck> = inspect
        .spawns
        .alive_with_ids()
        .into_iter()
        .map(|(id, location)| Stuck {
            what: format!("task spawned at {location}"),
            stack: dumped.remove(&id).unwrap_or_default(),
        })
        .collect();
    let mut limits = Vec::new();
    if !quiesce_probe::SpawnRegistry::ENABLED {
        stacks.extend((0..alive).map(|i| Stuck {
            what: format!("task {}", i + 1),
            stack: Vec::new(),
        }));
        limits.push("spawn locations need a build with --cfg tokio_unstable".to_owned());
    }
    if !DUMPS {
        limits.push(
            "task stacks need --cfg tokio_unstable and the taskdump feature (Linux)".to_owned(),
        );
    }
    stacks.push(Stuck {
        what: "the graph's own future (not a task: never in a dump)".to_owned(),
        stack: Vec::new(),
    });
    Hang {
        phase,
        cpu_ms,
        stacks,
        limits,
        hook: None,
    }
}

/// What the graph's thread says when the graph's future returns: its result, and when.
type Returned = (Result<(), String>, Instant);

/// The graph's thread, seen from the harness through one run: each phase a method.
struct Watch {
    started: Instant,
    timeline: Vec<(u64, String)>,
    returned_rx: oneshot::Receiver<Returned>,
    returned: Option<Returned>,
    /// The graph's runtime, to explain a hang; none if it could not be built.
    inspect: Option<Inspect>,
    interrupted: bool,
    hangs: Vec<Hang>,
}

impl Watch {
    fn note(&mut self, what: String) {
        self.timeline
            .push((self.started.elapsed().as_millis() as u64, what));
    }

    /// When the thread died without a word, that is what it returned.
    fn died(result: Result<Returned, oneshot::error::RecvError>) -> Returned {
        result.unwrap_or((Err("the graph's thread died".into()), Instant::now()))
    }

    /// Phase 1: ready, returned, timed out, or Ctrl-C. A dropped ready sender means only that
    /// the graph will never say it is ready (a closure may not even capture it), not that it
    /// returned: that is `returned_rx`'s to say.
    async fn ready(
        &mut self,
        mut ready_rx: oneshot::Receiver<()>,
        ready_timeout: Duration,
        signals: &mut SignalHandler,
    ) -> ReadyState {
        let deadline = tokio::time::sleep(ready_timeout);
        tokio::pin!(deadline);
        let mut ready_dropped = false;
        let ready = loop {
            tokio::select! {
                ready = &mut ready_rx, if !ready_dropped => match ready {
                    Ok(()) => break ReadyState::Ready { after: self.started.elapsed() },
                    Err(_) => ready_dropped = true,
                },
                result = &mut self.returned_rx => {
                    let result = Self::died(result);
                    let status = TargetExit::Graph(result.0.clone()).describe();
                    self.returned = Some(result);
                    break ReadyState::Exited { after: self.started.elapsed(), status };
                }
                () = &mut deadline => break ReadyState::TimedOut { deadline: ready_timeout },
                _ = signals.recv() => break ReadyState::Interrupted,
            }
        };
        self.interrupted = ready == ReadyState::Interrupted;
        self.note(ready.describe());
        if let (ReadyState::TimedOut { .. }, Some(inspect)) = (&ready, &self.inspect) {
            let hang = explain(inspect, Phase::Ready).await;
            self.note(hang.headline());
            self.hangs.push(hang);
        }
        ready
    }

    /// Phase 2: run for `[stop] after_ms`, unless the workload asks for the stop, the fault
    /// schedule sends a signal, the graph returns, or Ctrl-C comes.
    async fn run_for(
        &mut self,
        run: &mut TargetRun,
        stop: &StopPlan,
        hooks: &mut super::Hooks,
        signals: &mut SignalHandler,
    ) {
        let mut schedule_signals = hooks.signals.take();
        tokio::select! {
            () = tokio::time::sleep(stop.after()) => {}
            reason = hooks.stop_early() => self.note(reason),
            signal = super::next_scheduled(&mut schedule_signals) => {
                // A graph's one trigger is its token: the signal becomes its cancellation.
                run.trigger = format!("the shutdown token, for the fault schedule's {signal}");
                run.stop_signal = signal;
                self.note(format!("the fault schedule sent {signal}"));
            }
            result = &mut self.returned_rx => {
                let result = Self::died(result);
                self.note(format!("returned by itself ({})", TargetExit::Graph(result.0.clone()).describe()));
                run.exited_early = Some(TargetExit::Graph(result.0.clone()));
                self.returned = Some(result);
            }
            _ = signals.recv() => {
                self.interrupted = true;
                self.note("interrupted (Ctrl-C)".to_owned());
            }
        }
    }

    /// Phase 3: cancel the token and wait for the graph to return; past `kill_after_ms`,
    /// explain the hang and drop the graph's future.
    async fn stop(
        &mut self,
        run: &mut TargetRun,
        (stop, shutdown, kill): (&StopPlan, &CancellationToken, oneshot::Sender<()>),
        hooks: &mut super::Hooks,
        signals: &mut SignalHandler,
    ) {
        let sent = Instant::now();
        shutdown.cancel();
        hooks.stopping(sent);
        self.note("cancelled the shutdown token".to_owned());
        if matches!(run.ready, ReadyState::Ready { .. }) && !self.interrupted {
            run.stop_sent_at = Some(sent.duration_since(self.started));
        }
        let waited = tokio::select! {
            result = tokio::time::timeout(stop.kill_after(), &mut self.returned_rx) => result.ok(),
            _ = signals.recv() => { self.interrupted = true; None }
        };
        if let Some(result) = waited {
            let result = Self::died(result);
            if run.stop_sent_at.is_some() {
                run.stopped_after = Some(result.1.saturating_duration_since(sent));
            }
            self.note(format!(
                "returned ({})",
                TargetExit::Graph(result.0.clone()).describe()
            ));
            self.returned = Some(result);
            return;
        }
        run.killed_by_harness = !self.interrupted;
        if let (false, Some(inspect)) = (self.interrupted, &self.inspect) {
            let hang = explain(inspect, Phase::Stop).await;
            self.note(hang.headline());
            self.hangs.push(hang);
        }
        // Dropping the graph's future is the kill; a task that blocks its worker thread can
        // still keep it from returning: then the graph is abandoned.
        let _ = kill.send(());
        match tokio::time::timeout(KILL_WAIT, &mut self.returned_rx).await {
            Ok(Ok(result)) => {
                self.note("killed: its future was dropped".to_owned());
                self.returned = Some(result);
            }
            _ => self.note("did not return when killed; abandoned".to_owned()),
        }
    }
}

/// Runs `graph` through start, ready, the run and the stop, and counts what it left alive.
pub async fn run_graph(
    graph: &Graph,
    endpoints: Endpoints,
    stop: &StopPlan,
    ready_timeout: Duration,
    settings: BTreeMap<String, String>,
    mut hooks: super::Hooks,
    signals: &mut SignalHandler,
) -> std::io::Result<TargetRun> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let outputs_sent = Arc::new(AtomicU64::new(0));
    let (returned_tx, returned_rx) = oneshot::channel();
    let (counted_tx, counted_rx) = oneshot::channel();
    let (inspect_tx, inspect_rx) = oneshot::channel();
    let (kill_tx, kill_rx) = oneshot::channel();
    let shutdown = CancellationToken::new();
    let ctx = GraphContext {
        endpoints,
        shutdown: shutdown.clone(),
        settings,
        outputs_sent: outputs_sent.clone(),
        ready: Some(ready_tx),
    };
    let baseline: HashSet<u32> = quiesce_soak::own_threads()
        .into_iter()
        .map(|(tid, _)| tid)
        .collect();
    let started = Instant::now();
    let graph_for_thread = graph.clone();
    let quiet = std::mem::take(&mut hooks.quiet);
    std::thread::Builder::new()
        .name(DRIVER_THREAD.to_owned())
        .spawn(move || {
            drive(
                graph_for_thread,
                ctx,
                baseline,
                Channels {
                    quiet,
                    inspect: inspect_tx,
                    kill: kill_rx,
                    returned: returned_tx,
                    counted: counted_tx,
                },
            )
        })?;
    let mut watch = Watch {
        started,
        timeline: Vec::new(),
        returned_rx,
        returned: None,
        // Sent as soon as the runtime is built; none if it could not be.
        inspect: inspect_rx.await.ok(),
        interrupted: false,
        hangs: Vec::new(),
    };
    watch.note(format!("started graph `{}`", graph.name()));

    let mut run = TargetRun {
        started_at: started,
        ready: ReadyState::Interrupted,
        exited_early: None,
        stop_sent_at: None,
        stop_signal: StopSignal::Term,
        trigger: "the shutdown token".to_owned(),
        stopped_after: None,
        killed_by_harness: false,
        exit: None,
        orphans: None,
        alive_at_kill: None,
        probe: None,
        stdout: None,
        stderr: None,
        interrupted: false,
        timeline: Vec::new(),
        hangs: Vec::new(),
        instances: Vec::new(),
    };
    run.ready = watch.ready(ready_rx, ready_timeout, signals).await;
    if matches!(run.ready, ReadyState::Ready { .. }) {
        hooks.ready();
        watch.run_for(&mut run, stop, &mut hooks, signals).await;
    }
    if watch.returned.is_none() {
        let kill = (stop, &shutdown, kill_tx);
        watch.stop(&mut run, kill, &mut hooks, signals).await;
    }

    // 4. Count what it left, unless it was killed: as after SIGKILL, nothing ran on the way
    //    out, so nothing is counted; the runtime is shut down (its tasks dropped) before the
    //    next run starts.
    if run.killed_by_harness {
        run.exit = watch.returned.map(|(result, _)| TargetExit::Graph(result));
        let _ = tokio::time::timeout(COUNT_TIMEOUT, counted_rx).await;
    } else if let Some((result, _)) = watch.returned {
        run.exit = Some(TargetExit::Graph(result));
        run.probe = match tokio::time::timeout(COUNT_TIMEOUT, counted_rx).await {
            Ok(Ok(mut report)) => {
                report.outputs_sent = Some(outputs_sent.load(Ordering::SeqCst));
                Some(Ok(report))
            }
            _ => Some(Err("the graph's runtime could not be inspected".to_owned())),
        };
    }
    run.interrupted = watch.interrupted;
    run.timeline = watch.timeline;
    run.hangs = watch.hangs;
    Ok(run)
}
