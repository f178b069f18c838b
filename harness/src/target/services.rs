//! A service graph's run: each service's instances started once everything it depends on is
//! ready, the graph run for `[stop] after_ms`, then each service stopped in the stop order,
//! the next one only once every instance of the one before has exited.
//!
//! Each instance is an ordinary process target ([`run_process`]) with its own process group,
//! run id, folder and port, so each is judged on its own: its start, its stop, its exit code,
//! what it leaked and what it left behind. The graph drives them through their hooks: a ready
//! hook says when an instance is ready, an early-stop hook is how its stop is asked for, and
//! Ctrl-C reaches every instance at once through a relayed signal handler.
//!
//! The run around the graph sees it as one target through graph-level hooks: ready once
//! every instance is, stopping when the first service is asked to, and stopped early (a Kafka
//! workload's `stop_when_processed`) as a single target is.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::LocalBoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{oneshot, watch};

use crate::scenario::{ReadyProbe, ServiceGraph, StopOld, StopPlan, StopSignal};
use crate::signal::{SignalEvent, SignalHandler};
use crate::target::Redeploy;
use crate::target::{
    Hooks, ProbeReport, ProcessContext, ReadyState, Scheduled, TargetExit, TargetRun, run_process,
};

/// How long an instance runs when nothing stops it: the graph always does first.
const UNTIL_STOPPED: Duration = Duration::from_secs(7 * 24 * 3600);

/// What every instance of a graph shares.
pub struct ServicesContext<'a> {
    /// Variables on top of each service's own `env` (endpoints, `--env`).
    pub env: Vec<(String, String)>,
    /// Each service's instances' ports, chosen before the start (empty: chosen at the start).
    pub ports: Vec<Vec<u16>>,
    /// The run's id; instance `api#2` gets `RUN_ID.api.2`.
    pub run_id: &'a str,
    /// The run's folder; each instance writes its logs in a folder of its own under it.
    pub out_dir: &'a Path,
    /// The folder a relative `cwd` or command is resolved against.
    pub base_dir: &'a Path,
    pub ready_timeout: Duration,
    /// With Kafka: where a rollout sees its new instance join a group.
    pub join: Option<JoinWatch>,
    /// With `[redis] service`: how that service's instances reach Redis, each on its own.
    pub redis: Option<RedisPerInstance>,
}

/// Each instance of the service that contends for the leader lock reaches Redis through a
/// proxy of its own, so every command on the key is known to be that instance's.
#[derive(Clone)]
pub struct RedisPerInstance {
    /// Index of the service in the graph.
    pub service: usize,
    /// Where its proxies forward to: the shared proxy (whose faults they still meet), or
    /// Redis itself.
    pub upstream: std::net::SocketAddr,
    /// The reader of an instance's commands, given its index among the graph's instances.
    pub observer: std::sync::Arc<dyn Fn(u32) -> std::sync::Arc<dyn crate::fault::Observer>>,
}

/// Sets `key` in `env`, in place of any value it had.
fn set_var(env: &mut Vec<(String, String)>, key: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => env.push((key.to_owned(), value)),
    }
}

/// How a rollout sees a new instance join a consumer group: the run's groups on the wire.
pub struct JoinWatch {
    pub tap: crate::kafka::wire::GroupTap,
    /// The groups of the run (`[kafka] group`, each `via` hop's).
    pub groups: Vec<String>,
    /// How long a new instance gets, once ready, to join one.
    pub within: Duration,
}

/// How often a rollout looks for its new instance's join.
const JOIN_POLL: Duration = Duration::from_millis(20);

/// One instance of one service: its run, or why it was never started.
#[derive(Debug)]
pub struct InstanceRun {
    /// Index of its service in the graph.
    pub service: usize,
    /// `api`, or `worker#2` for the second of several replicas.
    pub name: String,
    /// Its `QUIESCE_RUN_ID`, which every process it starts carries.
    pub run_id: String,
    pub out_dir: PathBuf,
    /// 1 for the instance the graph started; 2 for the one a `restart` started in its place
    /// (`worker#1@2`), and so on.
    pub incarnation: u32,
    /// A rollout stopped it, once its replacement had joined (or was ready).
    pub rolled_out: bool,
    pub run: Result<TargetRun, String>,
}

/// An instance: what does not change while it runs.
#[derive(Clone)]
struct Instance {
    service: usize,
    name: String,
    run_id: String,
    replica: u32,
    incarnation: u32,
    out_dir: PathBuf,
    probe_file: PathBuf,
    port: u16,
    target: crate::scenario::ProcessTarget,
    plan: StopPlan,
}

/// An instance's state while the graph runs.
#[derive(Default)]
struct State {
    started: bool,
    ready: bool,
    stop: Option<oneshot::Sender<String>>,
    /// Where the fault schedule's signals to its service reach it.
    signals: Option<tokio::sync::mpsc::UnboundedSender<Scheduled>>,
    done: Option<std::io::Result<TargetRun>>,
    /// Why it was never started.
    blocked: Option<String>,
    /// A `restart` stopped it: once it has exited, another takes its place.
    restarting: bool,
    /// Started by a rollout beside this instance, which is stopped once it is ready.
    replacing: Option<usize>,
    /// For an instance a rollout started: when the old one is stopped.
    stop_old: StopOld,
    /// A rollout stopped it: once it has exited, the rollout goes on.
    rolled: bool,
    /// When it was started.
    started_at: Option<Instant>,
}

/// A rollout of one service under way: its instances still to replace, one at a time.
struct Rollout {
    service: usize,
    /// The old instances' stop signal; `None`: each one's own.
    signal: Option<StopSignal>,
    queue: std::collections::VecDeque<usize>,
    /// When each old instance is stopped, relative to its replacement's join.
    stop_old: crate::scenario::StopOld,
}

enum Event {
    Ready(usize),
    /// A rollout's new instance joined a group (the member, and when), or did not in time.
    Joined(usize, Option<(String, Instant)>),
    NotReady,
    Done(usize, Box<std::io::Result<TargetRun>>),
}

/// The graph's notes, by time since it started.
struct Notes {
    started: Instant,
    entries: Vec<(u64, String)>,
}

impl Notes {
    fn note(&mut self, what: String) {
        self.entries
            .push((self.started.elapsed().as_millis() as u64, what));
    }
}

/// Runs `graph` start to stop, and returns it as one target with each instance's run in
/// `instances`. Ctrl-C stops every running instance at once (each with its signal, killed at
/// a second Ctrl-C or its `kill_after_ms`) and starts nothing more.
pub async fn run_services(
    graph: &ServiceGraph,
    stop: &StopPlan,
    ctx: ServicesContext<'_>,
    hooks: Hooks,
    signals: &mut SignalHandler,
) -> std::io::Result<TargetRun> {
    let instances = instances(graph, stop, &ctx)?;
    let started = Instant::now();
    let mut driver = Driver {
        graph,
        ctx: &ctx,
        state: instances.iter().map(|_| State::default()).collect(),
        events: FuturesUnordered::new(),
        relay: watch::channel(SignalEvent::Interrupt).0,
        notes: Notes {
            started,
            entries: Vec::new(),
        },
        interrupted: false,
        schedule: None,
        stop_began: None,
        instances,
        rollouts: Vec::new(),
        hooks,
    };
    driver.schedule = driver.hooks.signals.take();
    driver.start_all(signals).await;
    if driver.all_ready() {
        driver.hooks.ready();
        driver.run_for(stop.after(), signals).await;
    }
    driver.stop_all(signals).await;
    let Driver {
        instances,
        state,
        mut notes,
        interrupted,
        stop_began,
        ..
    } = driver;
    let mut runs = Vec::new();
    for (instance, state) in instances.iter().zip(state) {
        let rolled_out = state.rolled;
        let run = match (state.done, state.blocked) {
            (Some(Ok(run)), _) => {
                let offset = run
                    .started_at
                    .saturating_duration_since(started)
                    .as_millis() as u64;
                for (at, what) in &run.timeline {
                    notes
                        .entries
                        .push((offset + at, format!("{}: {what}", instance.name)));
                }
                Ok(run)
            }
            (Some(Err(e)), _) => return Err(e),
            (None, Some(why)) => Err(why),
            (None, None) => Err("not started: the run was interrupted first".to_owned()),
        };
        runs.push(InstanceRun {
            service: instance.service,
            name: instance.name.clone(),
            run_id: instance.run_id.clone(),
            out_dir: instance.out_dir.clone(),
            incarnation: instance.incarnation,
            rolled_out,
            run,
        });
    }
    notes.entries.sort_by_key(|(at, _)| *at);
    Ok(whole(
        started,
        runs,
        notes.entries,
        stop,
        stop_began,
        interrupted,
    ))
}

/// The graph as one target: ready once its last instance is, asked to stop when its first
/// was, stopped when its last was gone; what any instance left behind, or hung on.
fn whole(
    started: Instant,
    instances: Vec<InstanceRun>,
    timeline: Vec<(u64, String)>,
    stop: &StopPlan,
    stop_began: Option<Instant>,
    interrupted: bool,
) -> TargetRun {
    let runs: Vec<&TargetRun> = instances
        .iter()
        .filter_map(|i| i.run.as_ref().ok())
        .collect();
    let orphans = runs
        .iter()
        .map(|r| r.orphans.clone())
        .collect::<Option<Vec<_>>>()
        .map(|all| all.into_iter().flatten().collect());
    TargetRun {
        started_at: started,
        ready: ready(started, &instances, interrupted),
        exited_early: runs
            .iter()
            .find_map(|r| r.exited_early.as_ref())
            .map(TargetExit::same),
        // The graph's stop, not a service the fault schedule signalled while the rest ran.
        stop_sent_at: stop_began.map(|at| at.saturating_duration_since(started)),
        // A service the schedule killed (SIGKILL) makes the graph's stop a kill: its commits
        // may lag what it processed, as a killed target's may.
        stop_signal: match runs.iter().any(|r| r.stop_signal == StopSignal::Kill) {
            true => StopSignal::Kill,
            false => stop.signal,
        },
        trigger: "the graph's stop order".to_owned(),
        stopped_after: stopped_after(&runs, stop_began),
        killed_by_harness: runs.iter().any(|r| r.killed_by_harness),
        exit: None,
        orphans,
        alive_at_kill: None,
        probe: outputs_probe(&instances),
        stdout: None,
        stderr: None,
        interrupted,
        hangs: runs.iter().flat_map(|r| r.hangs.iter().cloned()).collect(),
        timeline,
        instances,
    }
}

/// The graph is ready once its last instance is; otherwise it is in the state of the first
/// that was not (one never started is not: what it waited on is).
fn ready(started: Instant, instances: &[InstanceRun], interrupted: bool) -> ReadyState {
    if interrupted {
        return ReadyState::Interrupted;
    }
    let mut last = Duration::ZERO;
    // An instance a restart started came after the graph was ready.
    let first = instances.iter().filter(|i| i.incarnation == 1);
    for observed in first.filter_map(|i| i.run.as_ref().ok()) {
        match &observed.ready {
            ReadyState::Ready { after } => {
                let at = observed.started_at.saturating_duration_since(started) + *after;
                last = last.max(at);
            }
            other => return other.clone(),
        }
    }
    ReadyState::Ready { after: last }
}

/// From the first stop signal of the graph's stop sent to the last instance gone, when every
/// instance went by itself after its signal. An instance the fault schedule stopped before
/// (signalled, restarted) is not part of the graph's stop.
fn stopped_after(runs: &[&TargetRun], stop_began: Option<Instant>) -> Option<Duration> {
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for run in runs {
        let sent = run.started_at + run.stop_sent_at?;
        if stop_began.is_some_and(|began| sent < began) {
            continue;
        }
        let gone = sent + run.stopped_after?;
        first = Some(first.map_or(sent, |f| f.min(sent)));
        last = Some(last.map_or(gone, |l| l.max(gone)));
    }
    Some(last?.saturating_duration_since(first?))
}

/// The output records the graph handed to its producers, for `producer_flushed`: what the
/// instances of the one service whose probe counts them say together. When probes of several
/// services count (a chain, each hop producing), which one feeds the output topic is not
/// known: none is used.
fn outputs_probe(instances: &[InstanceRun]) -> Option<Result<ProbeReport, String>> {
    let counting: Vec<(usize, &ProbeReport)> = instances
        .iter()
        .filter_map(|i| match &i.run.as_ref().ok()?.probe {
            Some(Ok(report)) if report.outputs_sent.is_some() => Some((i.service, report)),
            _ => None,
        })
        .collect();
    let (service, first) = counting.first()?;
    if counting.iter().any(|(s, _)| s != service) {
        return None;
    }
    let mut report = (*first).clone();
    report.outputs_sent = Some(counting.iter().filter_map(|(_, r)| r.outputs_sent).sum());
    Some(Ok(report))
}

/// Every instance of every service, in the graph's order, each with its own id, folder,
/// port, ready probe and stop.
fn instances(
    graph: &ServiceGraph,
    stop: &StopPlan,
    ctx: &ServicesContext<'_>,
) -> std::io::Result<Vec<Instance>> {
    let mut instances = Vec::new();
    for (service, spec) in graph.services.iter().enumerate() {
        for replica in 0..spec.replicas {
            let name = spec.instance_name(replica);
            let out_dir = ctx.out_dir.join(name.replace('#', "-"));
            std::fs::create_dir_all(&out_dir)?;
            let probe_file = out_dir.join("probe.json");
            // A probe file from an earlier run in the same folder must not speak for this one.
            let _ = std::fs::remove_file(&probe_file);
            let port = match ctx.ports.get(service).and_then(|p| p.get(replica as usize)) {
                Some(port) => *port,
                None => super::free_port()?,
            };
            let target = spec.process();
            let plan = spec.stop_plan(stop, UNTIL_STOPPED.as_millis() as u64);
            instances.push(Instance {
                service,
                run_id: format!("{}.{}.{}", ctx.run_id, spec.name, replica + 1),
                name,
                replica,
                incarnation: 1,
                out_dir,
                probe_file,
                port,
                target,
                plan,
            });
        }
    }
    let firsts = first_ports(graph, &instances);
    for instance in &mut instances {
        fill_ready(instance, &firsts);
    }
    Ok(instances)
}

/// Each service's name and its first instance's port: what `{port:NAME}` and
/// `QUIESCE_PORT_NAME` stand for.
fn first_ports<'g>(graph: &'g ServiceGraph, instances: &[Instance]) -> Vec<(&'g str, u16)> {
    (graph.services.iter().enumerate())
        .filter_map(|(s, spec)| {
            let first = instances.iter().find(|i| i.service == s)?;
            Some((spec.name.as_str(), first.port))
        })
        .collect()
}

/// `{port}` and `{port:NAME}` in an instance's ready URL, filled.
fn fill_ready(instance: &mut Instance, firsts: &[(&str, u16)]) {
    if let ReadyProbe::Http(url) | ReadyProbe::Tcp(url) = &mut instance.target.ready {
        *url = url.replace("{port}", &instance.port.to_string());
        for (name, port) in firsts {
            *url = url.replace(&format!("{{port:{name}}}"), &port.to_string());
        }
    }
}

impl Instance {
    /// The instance a restart or a rollout starts in this one's place, on `port`: the same
    /// replica and stop, its own name (`worker#1@2`), run id and folder, its ready probe
    /// filled for its port and the services' `firsts`.
    fn next(
        &self,
        ctx: &ServicesContext<'_>,
        graph: &ServiceGraph,
        (port, firsts): (u16, &[(&str, u16)]),
    ) -> std::io::Result<Instance> {
        let incarnation = self.incarnation + 1;
        let base = self.name.split('@').next().unwrap_or(&self.name);
        let name = format!("{base}@{incarnation}");
        let out_dir = ctx.out_dir.join(name.replace('#', "-"));
        std::fs::create_dir_all(&out_dir)?;
        let probe_file = out_dir.join("probe.json");
        let _ = std::fs::remove_file(&probe_file);
        let run_id = self.run_id.split('@').next().unwrap_or(&self.run_id);
        let mut next = Instance {
            run_id: format!("{run_id}@{incarnation}"),
            name,
            incarnation,
            out_dir,
            probe_file,
            port,
            target: graph.services[self.service].process(),
            ..self.clone()
        };
        fill_ready(&mut next, firsts);
        Ok(next)
    }
}

/// The graph's moving parts while it runs.
struct Driver<'g, 'c> {
    graph: &'g ServiceGraph,
    ctx: &'g ServicesContext<'c>,
    /// Every instance started or to start, in the graph's order, then those restarts added.
    instances: Vec<Instance>,
    state: Vec<State>,
    events: FuturesUnordered<LocalBoxFuture<'g, Event>>,
    /// Ctrl-C, passed on to every instance.
    relay: watch::Sender<SignalEvent>,
    notes: Notes,
    interrupted: bool,
    /// The run around the graph: told when it is ready and stopping, and able to stop it.
    hooks: Hooks,
    /// The fault schedule's signals, each to a service.
    schedule: super::ScheduledSignals,
    /// When the graph's stop began: its first service asked to stop, or Ctrl-C.
    stop_began: Option<Instant>,
    /// The fault schedule's rollouts under way.
    rollouts: Vec<Rollout>,
}

impl<'g> Driver<'g, '_> {
    /// The instances of service `s`, by index.
    fn of(&self, s: usize) -> impl Iterator<Item = usize> + use<'g> {
        let services: Vec<usize> = self.instances.iter().map(|i| i.service).collect();
        (0..services.len()).filter(move |&k| services[k] == s)
    }

    fn all_ready(&self) -> bool {
        !self.interrupted && self.state.iter().all(|s| s.ready && s.done.is_none())
    }

    /// Starts each service once every instance of what it depends on is ready; a service
    /// whose dependency never became ready is never started. Returns once every instance
    /// started is ready or gone and nothing more can start.
    async fn start_all(&mut self, signals: &mut SignalHandler) {
        loop {
            if !self.interrupted {
                for &s in &self.graph.start_order {
                    if self
                        .of(s)
                        .any(|k| self.state[k].started || self.state[k].blocked.is_some())
                    {
                        continue;
                    }
                    let deps = self.graph.dependencies(s);
                    let failed = deps.iter().find(|&&d| {
                        self.of(d).any(|k| {
                            let st = &self.state[k];
                            st.blocked.is_some() || (st.done.is_some() && !st.ready)
                        })
                    });
                    if let Some(&d) = failed {
                        let why = format!(
                            "not started: `{}`, which it depends on, never became ready",
                            self.graph.services[d].name
                        );
                        self.notes
                            .note(format!("`{}` {why}", self.graph.services[s].name));
                        for k in self.of(s).collect::<Vec<_>>() {
                            self.state[k].blocked = Some(why.clone());
                        }
                        continue;
                    }
                    if deps
                        .iter()
                        .all(|&d| self.of(d).all(|k| self.state[k].ready))
                    {
                        self.start(s);
                    }
                }
            }
            let settled = self
                .state
                .iter()
                .all(|st| st.blocked.is_some() || (st.started && (st.ready || st.done.is_some())));
            if settled || (self.interrupted && self.events.is_empty()) {
                return;
            }
            if !self.next_event(signals).await {
                return;
            }
        }
    }

    /// Lets the graph run for `after`; an instance that exits by itself is noted.
    async fn run_for(&mut self, after: Duration, signals: &mut SignalHandler) {
        self.notes.note(format!(
            "every service ready: running {} ms",
            after.as_millis()
        ));
        let deadline = tokio::time::Instant::now() + after;
        // The run's early stop (never, when it has none).
        let early = self.hooks.stop_early.take();
        let mut early = std::pin::pin!(async move {
            match early {
                Some(rx) => match rx.await {
                    Ok(reason) => reason,
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        });
        while !self.interrupted {
            let next = tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                reason = &mut early => {
                    self.notes.note(reason);
                    return;
                }
                next = self.next_event(signals) => next,
            };
            if !next {
                return;
            }
        }
    }

    /// Stops each service in the stop order, every instance of it at once, and waits for all
    /// of them to exit before the next. After Ctrl-C every instance is stopping already:
    /// this only waits.
    async fn stop_all(&mut self, signals: &mut SignalHandler) {
        for &s in &self.graph.stop_order {
            let running: Vec<usize> = self
                .of(s)
                .filter(|&k| self.state[k].started && self.state[k].done.is_none())
                .collect();
            if running.is_empty() {
                continue;
            }
            if !self.interrupted {
                self.stop_began.get_or_insert_with(Instant::now);
                self.hooks.stopping(Instant::now());
                self.notes
                    .note(format!("stopping `{}`", self.graph.services[s].name));
                for &k in &running {
                    if let Some(tx) = self.state[k].stop.take() {
                        let _ = tx.send("stopped in the graph's stop order".to_owned());
                    }
                }
            }
            while running.iter().any(|&k| self.state[k].done.is_none()) {
                if !self.next_event(signals).await {
                    break;
                }
            }
        }
        // Whatever is left (a Ctrl-C came between two services), to the end.
        while self.state.iter().any(|st| st.started && st.done.is_none()) {
            if !self.next_event(signals).await {
                break;
            }
        }
    }

    /// Waits for the next instance event or Ctrl-C, and records it. False once nothing is
    /// left to wait for.
    async fn next_event(&mut self, signals: &mut SignalHandler) -> bool {
        let event = tokio::select! {
            event = self.events.next() => event,
            scheduled = super::next_scheduled_to(&mut self.schedule) => {
                self.deliver(scheduled);
                return true;
            }
            _ = signals.recv() => {
                if !self.interrupted {
                    self.notes.note("interrupted (Ctrl-C): stopping every service".to_owned());
                    self.stop_began.get_or_insert_with(Instant::now);
                    self.hooks.stopping(Instant::now());
                }
                self.interrupted = true;
                self.relay.send_replace(SignalEvent::Interrupt);
                return true;
            }
        };
        match event {
            None => false,
            Some(Event::NotReady) => true,
            // Each instance's own timeline says when it was ready and how it exited.
            Some(Event::Ready(k)) => {
                self.state[k].ready = true;
                // At `join` the watch began with the start: the stop does not wait for ready.
                if let Some(old) = self.state[k].replacing
                    && self.state[k].stop_old != StopOld::Join
                {
                    self.joined(old, k);
                }
                true
            }
            Some(Event::Joined(k, member)) => {
                // A new instance gone before its join step: its exit halted the rollout.
                if let (Some(old), true) = (self.state[k].replacing, self.state[k].done.is_none()) {
                    let new = &self.instances[k].name;
                    let within = self.ctx.join.as_ref().map_or(0, |j| j.within.as_millis());
                    let step = self.state[k].stop_old;
                    let note = match &member {
                        Some((member, at)) => {
                            let after = self.state[k]
                                .started_at
                                .map_or(0, |s| at.saturating_duration_since(s).as_millis());
                            let reached = match step {
                                StopOld::Join => "sent its JoinGroup",
                                StopOld::Synced => "completed its join",
                                StopOld::Ready | StopOld::Sync => "joined",
                            };
                            match member.is_empty() {
                                true => format!(
                                    "rollout: `{new}` sent its first JoinGroup ({after} ms after \
                                     its start)"
                                ),
                                false => format!(
                                    "rollout: `{new}` {reached} as member `{member}` ({after} \
                                     ms after its start)"
                                ),
                            }
                        }
                        None => format!(
                            "rollout: `{new}` joined no group of the run within {within} ms of \
                             ready (it may consume none): its old instance is stopped anyway"
                        ),
                    };
                    self.notes.note(note);
                    self.retire(old, k);
                }
                true
            }
            Some(Event::Done(k, run)) => {
                if let Err(e) = run.as_ref() {
                    let name = &self.instances[k].name;
                    self.notes.note(format!("`{name}` could not be run: {e}"));
                }
                self.state[k].done = Some(*run);
                if self.state[k].restarting {
                    self.replace(k);
                }
                let service = self.instances[k].service;
                if self.state[k].rolled {
                    self.roll(service);
                } else if let (Some(old), false) = (self.state[k].replacing, self.state[k].ready) {
                    let (new, old) = (&self.instances[k].name, &self.instances[old].name);
                    self.notes.note(format!(
                        "rollout halted: `{new}` exited before it was ready; `{old}` runs on"
                    ));
                    self.rollouts.retain(|r| r.service != service);
                }
                true
            }
        }
    }

    /// A signal of the fault schedule, to every running instance of its service: for each, it
    /// is its stop (as a scheduled signal is a single target's), while the rest run on.
    fn deliver(&mut self, scheduled: Scheduled) {
        let name = scheduled.service.unwrap_or_default();
        let Some(s) = self.graph.services.iter().position(|x| x.name == name) else {
            self.notes
                .note(format!("fault schedule: no service `{name}` to signal"));
            return;
        };
        let what = match scheduled.redeploy {
            Some(Redeploy::Restart) => "restart",
            Some(Redeploy::Rollout(_)) => "rollout",
            None => "signal",
        };
        // A redeploy happens while the graph runs: once its stop has begun, the stop order
        // decides who goes when, and a second signal would cut a drain short.
        if scheduled.redeploy.is_some() && (self.interrupted || self.stop_began.is_some()) {
            self.notes.note(format!(
                "fault schedule: the {what} of `{name}` not played, the graph is stopping"
            ));
            return;
        }
        if let Some(Redeploy::Rollout(stop_old)) = scheduled.redeploy {
            if self.rollouts.iter().any(|r| r.service == s) {
                self.notes.note(format!(
                    "fault schedule: the rollout of `{name}` not played, one is under way"
                ));
                return;
            }
            let queue = self.of(s).filter(|&k| self.is_running(k)).collect();
            self.notes.note(format!("rollout of `{name}` begins"));
            self.rollouts.push(Rollout {
                service: s,
                signal: (!scheduled.own_signal).then_some(scheduled.signal),
                queue,
                stop_old,
            });
            self.roll(s);
            return;
        }
        for k in self.of(s).collect::<Vec<_>>() {
            // An instance already gone (a restart's or a rollout's old one) is past history.
            if self.state[k].done.is_some() {
                continue;
            }
            let signal = match scheduled.own_signal {
                true => self.instances[k].plan.signal,
                false => scheduled.signal,
            };
            let sent = self.is_running(k) && self.signal(k, signal);
            let state = &mut self.state[k];
            state.restarting |= sent && scheduled.redeploy.is_some();
            let instance = &self.instances[k].name;
            self.notes.note(match (sent, state.restarting) {
                (true, _) if scheduled.redeploy.is_none() => {
                    format!("`{instance}`: {signal} from the fault schedule")
                }
                (true, _) => format!("`{instance}`: {signal} from the fault schedule's {what}"),
                (false, true) => format!(
                    "`{instance}`: restarting already, so not sent {signal} from the fault \
                     schedule's {what}"
                ),
                (false, false) => format!(
                    "`{instance}`: not running, so not sent {signal} from the fault schedule's \
                     {what}"
                ),
            });
        }
    }

    /// Each service's port as an instance started now finds it (`{port:NAME}`): its first
    /// instance still running and not being replaced, else its first (at the start, before
    /// any runs).
    fn live_ports(&self) -> Vec<(&'g str, u16)> {
        let firsts = first_ports(self.graph, &self.instances);
        (firsts.into_iter())
            .map(|(name, first)| {
                let live = (self.instances.iter().enumerate())
                    .find(|(k, i)| {
                        self.graph.services[i.service].name == name && self.is_running(*k)
                    })
                    .map_or(first, |(_, i)| i.port);
                (name, live)
            })
            .collect()
    }

    /// Sends instance `k` `signal`, as its stop; false if it could not be (gone).
    fn signal(&self, k: usize, signal: StopSignal) -> bool {
        self.state[k].signals.as_ref().is_some_and(|tx| {
            let stop = Scheduled {
                service: None,
                signal,
                redeploy: None,
                own_signal: false,
            };
            tx.send(stop).is_ok()
        })
    }

    /// Whether instance `k` runs and no redeploy is stopping it.
    fn is_running(&self, k: usize) -> bool {
        let state = &self.state[k];
        state.started && state.done.is_none() && !state.restarting && !state.rolled
    }

    /// The rollout of service `s`, on: the next old instance still running gets a new one
    /// beside it, on a port of its own (the old one holds its own); none left, it is done.
    fn roll(&mut self, s: usize) {
        let Some(r) = self.rollouts.iter().position(|r| r.service == s) else {
            return;
        };
        let name = &self.graph.services[s].name;
        if self.interrupted || self.stop_began.is_some() {
            self.notes.note(format!(
                "rollout of `{name}` cut short: the graph is stopping"
            ));
            self.rollouts.remove(r);
            return;
        }
        let old = loop {
            match self.rollouts[r].queue.pop_front() {
                Some(k) if self.is_running(k) => break k,
                Some(_) => continue,
                None => {
                    self.notes.note(format!("rollout of `{name}` done"));
                    self.rollouts.remove(r);
                    return;
                }
            }
        };
        let firsts = self.live_ports();
        let next = super::free_port()
            .and_then(|port| self.instances[old].next(self.ctx, self.graph, (port, &firsts)));
        match next {
            Ok(next) => {
                let (new, was) = (&next.name, &self.instances[old].name);
                self.notes
                    .note(format!("rollout: `{new}` starting beside `{was}`"));
                self.instances.push(next);
                let stop_old = self.rollouts[r].stop_old;
                self.state.push(State {
                    replacing: Some(old),
                    stop_old,
                    ..State::default()
                });
                let new = self.instances.len() - 1;
                self.start_instance(new);
                // At `join` the old one is stopped at the new member's JoinGroup, ready or not:
                // inside the rebalance it sets off.
                if stop_old == StopOld::Join && self.ctx.join.is_some() {
                    self.joined(old, new);
                }
            }
            Err(e) => {
                let was = &self.instances[old].name;
                self.notes.note(format!(
                    "rollout of `{name}` halted: no instance could be started beside `{was}`: {e}"
                ));
                self.rollouts.remove(r);
            }
        }
    }

    /// A rollout's new instance `new` is ready (at `join`: started): with Kafka, it is given
    /// until it has reached the rollout's step of a group join (a new member's JoinGroup,
    /// SyncGroup, or first heartbeat after it), bounded; then the old one is retired.
    fn joined(&mut self, old: usize, new: usize) {
        let step = self.state[new].stop_old;
        let (Some(join), Some(since), false) = (
            &self.ctx.join,
            self.state[new].started_at,
            step == StopOld::Ready,
        ) else {
            self.retire(old, new);
            return;
        };
        let (tap, groups, within) = (join.tap.clone(), join.groups.clone(), join.within);
        // Its own join: requests on connections its processes opened (or not yet looked up).
        let owner = self.instances[new].run_id.clone();
        self.events.push(Box::pin(async move {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let seen = (groups.iter()).find_map(|g| {
                    crate::kafka::wire::join_step_since(&tap.events(g), since, step, Some(&owner))
                });
                if seen.is_some() || tokio::time::Instant::now() >= deadline {
                    return Event::Joined(new, seen);
                }
                tokio::time::sleep(JOIN_POLL).await;
            }
        }));
    }

    /// A rollout's new instance `new` is ready: the old one it replaces is stopped, with the
    /// rollout's signal or its own, killed at its `kill_after_ms` (its grace period).
    fn retire(&mut self, old: usize, new: usize) {
        let s = self.instances[old].service;
        let Some(rollout) = self.rollouts.iter().find(|r| r.service == s) else {
            return;
        };
        let signal = rollout.signal.unwrap_or(self.instances[old].plan.signal);
        let (was, now) = (&self.instances[old].name, &self.instances[new].name);
        if !self.is_running(old) || self.stop_began.is_some() {
            self.notes
                .note(format!("rollout: `{now}` ready; `{was}` is not running"));
            self.roll(s);
            return;
        }
        let sent = self.signal(old, signal);
        self.state[old].rolled = sent;
        let now = match self.state[new].ready {
            true => format!("`{now}` ready"),
            false => format!("`{now}` joining, not yet ready"),
        };
        self.notes.note(match sent {
            true => format!("rollout: {now}, `{was}` sent {signal}"),
            false => format!("rollout: {now}, `{was}` could not be signalled"),
        });
        if !sent {
            self.roll(s);
        }
    }

    /// Starts, in the place of instance `k` that a restart stopped and that has exited,
    /// the next; not once the graph's stop has begun.
    fn replace(&mut self, k: usize) {
        let old = &self.instances[k].name;
        if self.interrupted || self.stop_began.is_some() {
            self.notes.note(format!(
                "`{old}` exited: not started again, the graph is stopping"
            ));
            return;
        }
        let firsts = self.live_ports();
        let port = self.instances[k].port;
        match self.instances[k].next(self.ctx, self.graph, (port, &firsts)) {
            Ok(next) => {
                self.notes.note(format!(
                    "`{old}` exited: `{}` starting in its place",
                    next.name
                ));
                self.instances.push(next);
                self.state.push(State::default());
                self.start_instance(self.instances.len() - 1);
            }
            Err(e) => self
                .notes
                .note(format!("`{old}` exited: could not be started again: {e}")),
        }
    }

    /// Starts every instance of service `s`.
    fn start(&mut self, s: usize) {
        let name = &self.graph.services[s].name;
        self.notes.note(format!("`{name}` starting"));
        for k in self.of(s).collect::<Vec<_>>() {
            self.start_instance(k);
        }
    }

    /// Starts instance `k`.
    fn start_instance(&mut self, k: usize) {
        let name = &self.graph.services[self.instances[k].service].name;
        let instance = self.instances[k].clone();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (signals_tx, signals_rx) = tokio::sync::mpsc::unbounded_channel();
        self.state[k].started = true;
        self.state[k].started_at = Some(Instant::now());
        self.state[k].stop = Some(stop_tx);
        self.state[k].signals = Some(signals_tx);
        let mut env = self.ctx.env.clone();
        env.push(("QUIESCE_HTTP_PORT".to_owned(), instance.port.to_string()));
        env.push(("QUIESCE_SERVICE".to_owned(), name.clone()));
        env.push((
            "QUIESCE_REPLICA".to_owned(),
            (instance.replica + 1).to_string(),
        ));
        // How the services of a graph find one another (`QUIESCE_PORT_STORE`, as `{port:store}`).
        env.extend(self.live_ports().into_iter().map(|(name, port)| {
            (
                crate::scenario::template::port_variable(name),
                port.to_string(),
            )
        }));
        // Which instance it is, for a service that logs its job runs by instance.
        set_var(&mut env, "QUIESCE_INSTANCE", instance.name.clone());
        let redis = (self.ctx.redis.clone()).filter(|r| r.service == instance.service);
        let hooks = Hooks {
            on_ready: vec![ready_tx],
            stop_early: Some(stop_rx),
            signals: Some(signals_rx),
            // A soak samples each instance on its own.
            pid: (self.hooks.pid.as_ref()).and_then(|p| p.instance(&instance.name)),
            ..Hooks::default()
        };
        let (base_dir, ready_timeout) = (self.ctx.base_dir, self.ctx.ready_timeout);
        let mut relayed = SignalHandler::relay(&self.relay);
        self.events.push(Box::pin(async move {
            let mut env = env;
            // The contender's own way to Redis, read by the lock tap as its alone.
            let proxy = match redis {
                Some(redis) => {
                    let name = format!("redis ({}'s own)", instance.name);
                    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                    match crate::fault::FaultProxy::start(name, any, redis.upstream).await {
                        Ok(proxy) => {
                            proxy.observe((redis.observer)(k as u32));
                            let addr = proxy.listen_addr();
                            for (key, value) in &mut env {
                                match key.as_str() {
                                    "QUIESCE_REDIS_URL" => {
                                        *value = crate::infra::with_addr(value, addr);
                                    }
                                    "QUIESCE_REDIS_HOST" => *value = addr.ip().to_string(),
                                    "QUIESCE_REDIS_PORT" => *value = addr.port().to_string(),
                                    _ => {}
                                }
                            }
                            Some(proxy)
                        }
                        Err(e) => {
                            let e = std::io::Error::other(format!(
                                "the Redis proxy of `{}`: {e}",
                                instance.name
                            ));
                            return Event::Done(k, Box::new(Err(e)));
                        }
                    }
                }
                None => None,
            };
            let process = ProcessContext {
                env,
                run_id: &instance.run_id,
                out_dir: &instance.out_dir,
                probe_file: &instance.probe_file,
                base_dir,
                ready_timeout,
                hooks,
            };
            let run = run_process(&instance.target, &instance.plan, process, &mut relayed).await;
            if let Some(proxy) = proxy {
                proxy.close().await;
            }
            Event::Done(k, Box::new(run))
        }));
        self.events.push(Box::pin(async move {
            match ready_rx.await {
                Ok(()) => Event::Ready(k),
                Err(_) => Event::NotReady,
            }
        }));
    }
}
