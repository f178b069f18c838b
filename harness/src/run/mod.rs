//! `quiesce run`: one scenario, start to verdict.
//!
//! Start the infrastructure, run the target through start, ready, the run and the stop, then
//! decide every enabled check from what was observed. A broker that fails to start is a
//! [`RunError`], never a verdict against the target.

mod checks;
mod faults;
mod ingress;
mod kafka;
mod lock_tap;
mod readiness;
mod redis;
mod services;
mod takeover;

pub use checks::{BUILTIN_LEAK_SIGNATURES, evaluate};
pub use redis::JobRun;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::fault::ProxySwitch;
use crate::infra::{BackendKind, DependencyKind, Endpoints, Infra, InfraError};
use crate::kafka::wire::{GroupTap, StopWindow};
use crate::kafka::{AckedRecord, KafkaError, StopKind};
use crate::scenario::{GroupLeftParams, KafkaWorkload, Scenario, StopPlan, StopSignal, Target};
use crate::signal::SignalHandler;
use crate::target::{
    Hang, Hooks, PidReporter, ReadyState, TargetRun, free_port, run_graph, run_process,
};
use crate::verdict::{CheckName, Outcome, TimelineEvent, Verdict};

/// Settings of one run that are not part of the scenario.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Extra variables for the target (`--env KEY=VALUE`), over the scenario's.
    pub env: Vec<(String, String)>,
    /// Where the target's output is kept; default: a new folder under the temp dir.
    pub out_dir: Option<PathBuf>,
}

/// Why a run produced no verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Infra(#[from] InfraError),
    #[error("target: cannot start `{program}`: {source} (hint: check [target] command and cwd)")]
    TargetSpawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot create the output folder {path}: {source}")]
    OutDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The harness's Kafka work failed (topics, workload, read-back): never the target's fault.
    #[error("{0} (the broker, not the target: no verdict)")]
    Kafka(KafkaError),
    /// The harness could not watch Redis: never the target's fault.
    #[error("{0} (Redis, not the target: no verdict)")]
    Redis(String),
    #[error("cannot find a free loopback port for the target: {0}")]
    Port(std::io::Error),
    #[error("interrupted while starting the infrastructure; everything started was stopped")]
    Interrupted,
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        use crate::exit_codes::*;
        match self {
            RunError::Infra(e) => e.exit_code(),
            RunError::TargetSpawn { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                PREREQUISITE_MISSING
            }
            RunError::TargetSpawn { .. }
            | RunError::OutDir { .. }
            | RunError::Kafka(_)
            | RunError::Redis(_)
            | RunError::Port(_) => INFRA_FAILED,
            RunError::Interrupted => INTERRUPTED,
        }
    }
}

/// A run id unique on this machine: the harness pid, a counter and the time.
fn new_run_id(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{clean}-{}-{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff_ffff
    )
}
/// Runs `scenario` once and returns its verdict.
pub async fn run(
    scenario: &Scenario,
    options: &RunOptions,
    signals: &mut SignalHandler,
) -> Result<Verdict, RunError> {
    let mut session = Session::start(scenario, signals).await?;
    let cycle = session.cycle(scenario, options, signals).await;
    let closed = session.close(signals).await;
    let cycle = cycle?;
    closed?;
    Ok(cycle.verdict)
}

/// The infrastructure a scenario's runs share, started once: for one run, or for every
/// cycle of a loop. What a real restart keeps (the topics, the consumer group and its
/// commits, the leader key) is kept from cycle to cycle; each cycle gets its own run id,
/// output folder, port and job log.
pub struct Session {
    /// Shared with a fault schedule that stops, starts, kills, pauses or resumes a dependency.
    infra: faults::SharedInfra,
    backend: BackendKind,
    endpoints: Endpoints,
    switches: BTreeMap<DependencyKind, ProxySwitch>,
    /// Where the next cycle's Kafka evidence begins, by the topics and group it is of: the
    /// scenarios of a suite share the session, each with its own topics.
    kafka: BTreeMap<String, kafka::Baseline>,
    /// Told each process target's pid (see [`Session::report_pid_to`]).
    pid: Option<PidReporter>,
    /// What every client said to its group coordinator through the Kafka proxy.
    groups: GroupTap,
}

/// One cycle of a session: its verdict and what the harness saw of the target.
#[derive(Debug)]
pub struct Cycle {
    pub verdict: Verdict,
    pub ready: ReadyState,
    /// From the cycle's start to the target running (the harness's own set-up included).
    pub start: Duration,
    /// From the stop request to the target gone, when it went by itself.
    pub stopped_after: Option<Duration>,
    /// Stuck past a deadline, and stopped or killed by the harness.
    pub killed_by_harness: bool,
    /// Where it was stuck, looked at before it was stopped.
    pub hangs: Vec<Hang>,
    /// Ctrl-C cut it short.
    pub interrupted: bool,
    /// Each partition move's takeover time in the cycle's rollouts, in ms.
    pub takeover_ms: Vec<u64>,
}

impl Session {
    /// Starts the scenario's infrastructure. Ctrl-C during the start stops what was started.
    pub async fn start(
        scenario: &Scenario,
        signals: &mut SignalHandler,
    ) -> Result<Session, RunError> {
        let infra = tokio::select! {
            started = Infra::start(&scenario.infra) => started?,
            _ = signals.recv() => return Err(RunError::Interrupted),
        };
        let switches = DependencyKind::ALL
            .into_iter()
            .map(|d| (d, infra.proxy(d).switch()))
            .collect();
        // Only a graph's instances need telling apart by the connections they open.
        let groups = match scenario.target {
            Target::Services(_) => GroupTap::with_owners(),
            _ => GroupTap::default(),
        };
        infra
            .proxy(DependencyKind::Kafka)
            .observe(std::sync::Arc::new(groups.clone()));
        Ok(Session {
            backend: infra.backend(),
            endpoints: infra.endpoints().clone(),
            infra: std::sync::Arc::new(tokio::sync::Mutex::new(infra)),
            switches,
            kafka: BTreeMap::new(),
            pid: None,
            groups,
        })
    }

    /// From now on, each cycle's process target tells `pid` its pid once started (the
    /// restart of a Kafka workload's read-back is not a cycle's target: it does not).
    pub fn report_pid_to(&mut self, pid: tokio::sync::watch::Sender<Option<u32>>) {
        self.pid = Some(PidReporter::One(std::sync::Arc::new(pid)));
    }

    /// From now on, each cycle's graph of services tells `instances` of each instance it
    /// starts, with a receiver of its pid.
    pub fn report_instances_to(
        &mut self,
        instances: tokio::sync::mpsc::UnboundedSender<crate::target::InstancePid>,
    ) {
        self.pid = Some(PidReporter::Instances(instances));
    }

    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// Runs the target once, start to verdict, on this session's infrastructure.
    pub async fn cycle(
        &mut self,
        scenario: &Scenario,
        options: &RunOptions,
        signals: &mut SignalHandler,
    ) -> Result<Cycle, RunError> {
        let begun = std::time::Instant::now();
        let (run_id, out_dir) = run_folder(scenario, options)?;
        let ports = match &scenario.target {
            Target::Services(graph) => graph
                .services
                .iter()
                .map(|s| (0..s.replicas).map(|_| free_port()).collect())
                .collect::<Result<Vec<Vec<u16>>, _>>()
                .map_err(RunError::Port)?,
            _ => Vec::new(),
        };
        // A port for the target's HTTP endpoints, when the scenario polls them: `{port}` in
        // its URLs becomes it, for the run and the report alike. In a graph, `[readiness]`
        // polls its service's first instance.
        let port = match &scenario.target {
            Target::Services(graph) => scenario
                .readiness
                .as_ref()
                .and_then(|r| graph.index_of(r.service.as_deref()?))
                .and_then(|s| ports.get(s)?.first().copied()),
            _ if scenario.needs_port() => Some(free_port().map_err(RunError::Port)?),
            _ => None,
        };
        let filled;
        let scenario = match port {
            Some(port) => {
                filled = scenario.with_port(port);
                &filled
            }
            None => scenario,
        };
        let Driven {
            observed,
            findings,
            kafka,
        } = drive(
            scenario,
            options,
            &run_id,
            &out_dir,
            Reach {
                endpoints: self.endpoints.clone(),
                infra: self.infra.clone(),
                switches: self.switches.clone(),
                port,
                ports,
                kafka: baseline_key(scenario)
                    .and_then(|key| self.kafka.get(&key).cloned())
                    .unwrap_or_default(),
                pid: self.pid.clone(),
                groups: self.groups.clone(),
            },
            signals,
        )
        .await?;
        if let (Some(next), Some(key)) = (kafka, baseline_key(scenario)) {
            self.kafka.insert(key, next);
        }
        let results = evaluate(scenario, &observed, &findings);
        let verdict = Verdict {
            scenario: scenario.name.clone(),
            target: scenario.target.describe(),
            backend: self.backend.to_string(),
            results,
            timeline: timeline_events(&observed.timeline),
            interrupted: observed.interrupted,
            target_log: Some(out_dir.display().to_string()),
            allowed_inconclusive: scenario.checks.allow_inconclusive.clone(),
        };
        Ok(Cycle {
            verdict,
            start: observed.started_at.saturating_duration_since(begun),
            ready: observed.ready,
            stopped_after: observed.stopped_after,
            killed_by_harness: observed.killed_by_harness,
            hangs: observed.hangs,
            takeover_ms: findings.takeover_ms,
            interrupted: observed.interrupted,
        })
    }

    /// Stops everything the session started. A second Ctrl-C during the close kills at
    /// once: dropping the infrastructure does that.
    pub async fn close(self, signals: &mut SignalHandler) -> Result<(), RunError> {
        let closing = async { self.infra.lock().await.close().await };
        tokio::select! {
            closed = closing => Ok(closed?),
            _ = signals.recv() => Ok(()),
        }
    }
}

/// What a Kafka baseline is of: the scenario's input and output topics and its group.
fn baseline_key(scenario: &Scenario) -> Option<String> {
    let k = scenario.kafka.as_ref()?;
    Some(format!("{} {} {}", k.input_topic, k.output_topic, k.group))
}

/// A timeline as a verdict gives it.
fn timeline_events(timeline: &[(u64, String)]) -> Vec<TimelineEvent> {
    timeline
        .iter()
        .map(|(at_ms, event)| TimelineEvent {
            at_ms: *at_ms,
            event: event.clone(),
        })
        .collect()
}

/// A new run id and the run's folder, made.
fn run_folder(scenario: &Scenario, options: &RunOptions) -> Result<(String, PathBuf), RunError> {
    let run_id = new_run_id(&scenario.name);
    let out_dir = options
        .out_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("quiesce-run-{run_id}")));
    std::fs::create_dir_all(&out_dir).map_err(|source| RunError::OutDir {
        path: out_dir.clone(),
        source,
    })?;
    Ok((run_id, out_dir))
}

/// What the Kafka and Redis phases decided, or why they could not.
#[derive(Debug, Default)]
pub struct Findings {
    pub kafka: Option<Decided>,
    pub redis: Option<Decided>,
    pub readiness: Option<Decided>,
    /// A graph's checks of one instance or service decided outside its run (`worker#1/group_left`
    /// of an instance a rollout stopped, `worker/takeover_within` of the rollout).
    pub instances: Vec<crate::verdict::CheckResult>,
    /// Each partition move's takeover time in a rollout, in ms (`takeover_within`).
    pub takeover_ms: Vec<u64>,
}

/// Outcomes of a family of checks decided outside the target's run, or why none could be.
pub type Decided = Result<BTreeMap<CheckName, Outcome>, String>;

/// How a run reaches the infrastructure.
struct Reach {
    endpoints: Endpoints,
    /// For the fault schedule's dependency actions.
    infra: faults::SharedInfra,
    /// Each dependency's proxy, to take down and up.
    switches: BTreeMap<DependencyKind, ProxySwitch>,
    /// The target's HTTP port (`QUIESCE_HTTP_PORT`), when the scenario polls its endpoints.
    port: Option<u16>,
    /// Each service's instances' ports, for `[[services]]` (known before they start, for an
    /// ingress to send to).
    ports: Vec<Vec<u16>>,
    /// What earlier cycles left in the Kafka topics and group.
    kafka: kafka::Baseline,
    /// Told the target's pid.
    pid: Option<PidReporter>,
    groups: GroupTap,
}

/// What [`drive`] saw and decided.
struct Driven {
    observed: TargetRun,
    findings: Findings,
    /// Where the next cycle's Kafka evidence begins, when this one read Kafka back.
    kafka: Option<kafka::Baseline>,
}

/// How the target was stopped, for the Kafka and Redis judgements.
fn stop_kind(observed: &TargetRun) -> StopKind {
    if observed.stop_signal == StopSignal::Kill || observed.killed_by_harness {
        StopKind::Kill
    } else {
        StopKind::Clean
    }
}

/// Everything between the infrastructure's start and its close: the dependencies prepared,
/// the watchers started (fault schedule, readiness, workload, leader), the target's run, then
/// each phase's judgement (readiness, leader key, Kafka with its restart).
async fn drive(
    scenario: &Scenario,
    options: &RunOptions,
    run_id: &str,
    out_dir: &Path,
    reach: Reach,
    signals: &mut SignalHandler,
) -> Result<Driven, RunError> {
    let (mut settings, before) = prepare(scenario, options, &reach, signals).await?;
    let Reach {
        mut endpoints,
        infra,
        switches,
        port,
        ports,
        kafka: baseline,
        pid,
        groups,
    } = reach;
    let start = WatchStart {
        scenario,
        run_id,
        out_dir,
        endpoints: &endpoints,
        settings: &settings,
        baseline: &baseline,
        ingress: ingress_target(scenario, port, &ports),
    };
    let (watchers, hooks) = Watchers::start(start, infra, switches, pid).await?;

    // The target reaches Redis through its own proxy when the schedule partitions it alone;
    // its standby and the harness keep the shared one.
    let shared_redis = endpoints.redis_url.clone();
    if let Some(own) = watchers
        .schedule
        .as_ref()
        .and_then(faults::Schedule::own_redis_url)
    {
        endpoints.redis_url = own;
        for (key, value) in &mut settings {
            if key == "QUIESCE_REDIS_URL" {
                *value = endpoints.redis_url.clone();
            }
        }
    }
    // A rollout's new instance is given until it has joined one of the run's groups.
    let join = scenario.kafka.as_ref().map(|k| crate::target::JoinWatch {
        tap: groups.clone(),
        groups: std::iter::once(k.group.clone())
            .chain(k.via.iter().map(|hop| hop.group.clone()))
            .collect(),
        within: std::time::Duration::from_millis(scenario.checks.starts_within.params.deadline_ms),
    });
    let observed = start_target(
        scenario,
        &scenario.stop,
        run_id,
        out_dir,
        &endpoints,
        Placement {
            settings: &settings,
            ports: &ports,
            join,
            redis: watchers
                .leader
                .as_ref()
                .and_then(redis::Leader::per_instance),
        },
        hooks,
        signals,
    )
    .await;
    let noted = match watchers.schedule {
        Some(schedule) => schedule.finish().await,
        None => Vec::new(),
    };
    endpoints.redis_url = shared_redis;
    let mut observed = observed?;
    // Judged now, before a restart joins the group again.
    let (group_left, held) = match &scenario.kafka {
        Some(workload) => {
            let (outcome, held) = group_left(scenario, workload, &observed, &groups);
            (Some(outcome), held)
        }
        None => (None, None),
    };
    let mut instances = match (&scenario.kafka, &scenario.target) {
        (Some(workload), Target::Services(_))
            if scenario.enabled_checks().any(|c| c == CheckName::GroupLeft) =>
        {
            instances_left(scenario, workload, &observed, &groups)
        }
        _ => Vec::new(),
    };
    let (takeovers, takeover_ms) = takeover::rows(scenario, &observed, &groups);
    instances.extend(takeovers);
    merge_timeline(&mut observed, before, noted);

    let mut findings = Findings {
        instances,
        takeover_ms,
        ..Findings::default()
    };
    if let (Some(config), Some(player)) = (&scenario.readiness, watchers.player) {
        let log = player.finish().await;
        for note in &log.notes {
            let at = observed.timeline.last().map_or(0, |(at, _)| *at);
            observed.timeline.push((at, note.clone()));
        }
        findings.readiness = Some(Ok(BTreeMap::from([(
            CheckName::ReadinessTruthful,
            readiness::judge(config, &log),
        )])));
    }
    if let Some(leader) = watchers.leader {
        let stop = stop_kind(&observed);
        findings.redis = Some(
            leader
                .finish(&mut observed, stop, &endpoints.redis_url, signals)
                .await,
        );
    }
    let mut next = None;
    if let (Some(workload), Some(producer)) = (&scenario.kafka, watchers.producer) {
        let sent = producer.finish().await.map_err(RunError::Kafka)?;
        let acked = acknowledged(
            sent,
            (&endpoints.kafka_bootstrap, run_id),
            workload,
            signals,
        )
        .await?;
        let ctx = KafkaPhase {
            scenario,
            workload,
            baseline: &baseline,
            run_id,
            out_dir,
            endpoints: &endpoints,
            settings: &settings,
            held,
        };
        let (mut decided, after) = kafka_phase(ctx, acked, &mut observed, signals).await?;
        if let (Ok(outcomes), Some(outcome)) = (&mut decided, group_left) {
            outcomes.insert(CheckName::GroupLeft, outcome);
        }
        findings.kafka = Some(decided);
        next = after;
    }
    Ok(Driven {
        observed,
        findings,
        kafka: next,
    })
}

/// What the workload sent that was acknowledged: the records the broker acknowledged, or,
/// with an ingress, the requests answered 2xx, each found in the input topic.
async fn acknowledged(
    sent: kafka::Sent,
    (bootstrap, run_id): (&str, &str),
    workload: &crate::scenario::KafkaWorkload,
    signals: &mut SignalHandler,
) -> Result<(Vec<AckedRecord>, Option<ingress::IngressEvidence>), RunError> {
    let Some((target, answers)) = sent.ingress else {
        return Ok((sent.acked, None));
    };
    let keys = sent.acked.into_iter().map(|a| a.key).collect();
    let prefix = kafka::key_prefix(run_id);
    tokio::select! {
        located = ingress::locate(bootstrap, workload, &target, (keys, &prefix), answers) => {
            let (acked, evidence) = located.map_err(RunError::Kafka)?;
            Ok((acked, Some(evidence)))
        }
        _ = signals.recv() => Err(RunError::Interrupted),
    }
}

/// The dependencies made ready for the target (the topics created, a leader key left by an
/// earlier cycle waited out) and the variables it gets. Also returns what that preparation
/// noted, for the top of the timeline.
async fn prepare(
    scenario: &Scenario,
    options: &RunOptions,
    reach: &Reach,
    signals: &mut SignalHandler,
) -> Result<(Vec<(String, String)>, Vec<String>), RunError> {
    let endpoints = &reach.endpoints;
    let mut settings: Vec<(String, String)> = endpoints
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    if let Some(workload) = &scenario.kafka {
        tokio::select! {
            created = kafka::create_topics(&endpoints.kafka_bootstrap, workload) => created.map_err(RunError::Kafka)?,
            _ = signals.recv() => return Err(RunError::Interrupted),
        }
        settings.extend(workload.env());
    }
    let mut before = Vec::new();
    if let Some(leadership) = &scenario.redis {
        let prepared = tokio::select! {
            prepared = redis::prepare(&endpoints.redis_url, leadership) => prepared,
            _ = signals.recv() => return Err(RunError::Interrupted),
        };
        before.extend(prepared.map_err(RunError::Redis)?);
        settings.extend(leadership.env());
        settings.push(("QUIESCE_INSTANCE".to_owned(), redis::PRIMARY.to_owned()));
    }
    if let Some(port) = reach.port {
        settings.push(("QUIESCE_HTTP_PORT".to_owned(), port.to_string()));
    }
    settings.extend(options.env.iter().cloned());
    Ok((settings, before))
}

/// What [`Watchers::start`] needs of the run: `'a` for what the leader watch keeps for the
/// whole run, `'b` for what is read at the start.
struct WatchStart<'a, 'b> {
    scenario: &'a Scenario,
    run_id: &'b str,
    out_dir: &'a Path,
    endpoints: &'b Endpoints,
    settings: &'b [(String, String)],
    baseline: &'b kafka::Baseline,
    ingress: Option<ingress::IngressTarget>,
}

/// What runs beside the target and takes part through its hooks.
struct Watchers<'a> {
    schedule: Option<faults::Schedule>,
    player: Option<readiness::Player>,
    producer: Option<kafka::Producer>,
    leader: Option<redis::Leader<'a>>,
}

impl<'a> Watchers<'a> {
    /// Starts the fault schedule, the readiness player, the workload and the leader watch,
    /// each as the scenario asks; their hooks, merged, go to the target's runner.
    async fn start(
        start: WatchStart<'a, '_>,
        infra: faults::SharedInfra,
        switches: BTreeMap<DependencyKind, ProxySwitch>,
        pid: Option<PidReporter>,
    ) -> Result<(Watchers<'a>, Hooks), RunError> {
        let WatchStart {
            scenario,
            run_id,
            out_dir,
            endpoints,
            settings,
            baseline,
            ingress,
        } = start;
        let mut hooks = Hooks {
            pid,
            ..Hooks::default()
        };
        let schedule = match faults::Schedule::start(&scenario.faults, &switches, Some(infra)).await
        {
            Ok(Some((schedule, more))) => {
                hooks = hooks.merge(more);
                Some(schedule)
            }
            Ok(None) => None,
            Err(source) => {
                return Err(RunError::Infra(InfraError::Proxy {
                    dependency: DependencyKind::Redis,
                    source,
                }));
            }
        };
        let shared_redis = switches.get(&DependencyKind::Redis).cloned();
        let player = scenario.readiness.as_ref().map(|config| {
            let (player, more) = readiness::Player::start(config, switches);
            hooks = std::mem::take(&mut hooks).merge(more);
            player
        });
        let producer = scenario.kafka.as_ref().map(|workload| {
            let counting = kafka::Counting::new(
                &endpoints.kafka_bootstrap,
                workload,
                baseline,
                crate::target::log_files(out_dir).to_vec(),
                run_id,
            );
            let (producer, more) = kafka::Producer::start(
                counting,
                matches!(scenario.target, Target::Graph(_)),
                ingress,
            );
            hooks = std::mem::take(&mut hooks).merge(more);
            producer
        });
        let mut leader = None;
        if let Some(leadership) = &scenario.redis {
            let standby = match &scenario.target {
                Target::Process(target) if leadership.standby => Ok(redis::StandbySpec {
                    target,
                    base_dir: &scenario.base_dir,
                    out_dir,
                    env: settings.to_vec(),
                    run_id: format!("{run_id}-standby"),
                    grace: scenario.stop.kill_after(),
                }),
                Target::Process(_) => Err("turned off ([redis] standby = false)"),
                Target::Graph(_) => Err("a graph target has no standby"),
                Target::Services(_) => Err("a service graph has no standby: its replicas contend"),
            };
            let contenders = match (&scenario.target, &leadership.service) {
                (Target::Services(graph), Some(name)) => graph.index_of(name),
                _ => None,
            };
            let reach = redis::RedisReach {
                url: &endpoints.redis_url,
                shared: shared_redis,
                out_dir,
                contenders,
            };
            let (started, more) = redis::Leader::start(leadership, reach, standby)
                .await
                .map_err(RunError::Redis)?;
            hooks = hooks.merge(more);
            leader = Some(started);
        }
        let watchers = Watchers {
            schedule,
            player,
            producer,
            leader,
        };
        Ok((watchers, hooks))
    }
}

/// Puts what the preparation noted at the top of the target's timeline and each fault where
/// it took effect, on the target's clock.
fn merge_timeline(
    observed: &mut TargetRun,
    before: Vec<String>,
    noted: Vec<(std::time::Instant, String)>,
) {
    for note in before.into_iter().rev() {
        observed.timeline.insert(0, (0, note));
    }
    for (at, note) in noted {
        let ms = at
            .saturating_duration_since(observed.started_at)
            .as_millis() as u64;
        observed.timeline.push((ms, note));
    }
    observed.timeline.sort_by_key(|(at, _)| *at);
}

/// `group_left` for the target's run that just ended, from what its consumers sent; and how
/// long the broker keeps the partitions of members that did not leave (see
/// [`crate::kafka::wire::held_after_stop`]).
fn group_left(
    scenario: &Scenario,
    workload: &KafkaWorkload,
    observed: &TargetRun,
    groups: &GroupTap,
) -> (Outcome, Option<Duration>) {
    let within = scenario
        .checks
        .group_left
        .as_ref()
        .map(|c| c.params.within_ms)
        .unwrap_or_else(|| GroupLeftParams::default().within_ms);
    let window = StopWindow {
        started: observed.started_at,
        stop_sent: observed.stop_sent_at.map(|d| observed.started_at + d),
        // The run returns once the target is gone and its leftovers are looked at.
        exited: std::time::Instant::now(),
        killed: stop_kind(observed) == StopKind::Kill,
        hung: observed.stop_signal != StopSignal::Kill && observed.killed_by_harness,
    };
    let events = groups.events(&workload.group);
    let held = crate::kafka::wire::held_after_stop(&events, &workload.group, &window);
    let outcome = crate::kafka::wire::group_left(
        &events,
        &workload.group,
        window,
        Duration::from_millis(within),
    );
    (outcome, held)
}

/// `group_left` of each instance of a graph, at its own stop (the graph's, a rollout's, a
/// restart's, a signal's): the members on connections its own processes opened (the kernel's
/// socket table names them, by its run id) must leave, in every group of the run, each hop's
/// included. An instance with no request tied to it is no consumer, unless requests whose
/// connection could not be tied to any process came while it ran: then it is inconclusive,
/// saying so.
fn instances_left(
    scenario: &Scenario,
    workload: &KafkaWorkload,
    observed: &TargetRun,
    groups: &GroupTap,
) -> Vec<crate::verdict::CheckResult> {
    let within = Duration::from_millis(
        scenario
            .checks
            .group_left
            .as_ref()
            .map_or(GroupLeftParams::default().within_ms, |c| c.params.within_ms),
    );
    let names: Vec<&String> = std::iter::once(&workload.group)
        .chain(workload.via.iter().map(|hop| &hop.group))
        .collect();
    let events: Vec<(&String, Vec<crate::kafka::wire::GroupEvent>)> =
        names.iter().map(|g| (*g, groups.events(g))).collect();
    let mut rows = Vec::new();
    for instance in &observed.instances {
        let Ok(run) = &instance.run else { continue };
        let Some(sent) = run.stop_sent_at.map(|d| run.started_at + d) else {
            continue;
        };
        let exited = run
            .stopped_after
            .map_or_else(std::time::Instant::now, |d| sent + d);
        let window = StopWindow {
            started: run.started_at,
            stop_sent: Some(sent),
            exited,
            killed: run.stop_signal == StopSignal::Kill || run.killed_by_harness,
            hung: run.stop_signal != StopSignal::Kill && run.killed_by_harness,
        };
        let mut judged = Vec::new();
        let mut untied = 0;
        for (group, all) in &events {
            let during =
                |e: &&crate::kafka::wire::GroupEvent| e.at >= run.started_at && e.at <= exited;
            untied += all
                .iter()
                .filter(during)
                .filter(|e| e.owner.is_none())
                .count();
            let own: Vec<_> = (all.iter())
                .filter(|e| e.owner.as_deref() == Some(instance.run_id.as_str()))
                .cloned()
                .collect();
            if !own.is_empty() {
                let outcome = crate::kafka::wire::group_left(&own, group, window, within);
                judged.push((group, outcome));
            }
        }
        // The worst of its groups' outcomes speaks for it.
        let rank = |o: &Outcome| match o {
            Outcome::Violation { .. } => 2,
            Outcome::Inconclusive { .. } => 1,
            _ => 0,
        };
        let outcome = match judged.into_iter().max_by_key(|(_, o)| rank(o)) {
            Some((group, outcome)) => outcome.sourced(
                &format!(" (group `{group}`)"),
                format!("in group `{group}`"),
            ),
            None if untied == 0 => continue,
            None => Outcome::inconclusive(format!(
                "no group request was tied to its processes, and {untied} request(s) while it \
                 ran came on connections whose process could not be found"
            )),
        };
        rows.push(crate::verdict::CheckResult {
            check: CheckName::GroupLeft,
            service: Some(instance.name.clone()),
            outcome,
        });
    }
    rows
}

/// What the Kafka phase works with.
#[derive(Clone, Copy)]
struct KafkaPhase<'a> {
    scenario: &'a Scenario,
    workload: &'a KafkaWorkload,
    baseline: &'a kafka::Baseline,
    run_id: &'a str,
    out_dir: &'a Path,
    endpoints: &'a Endpoints,
    settings: &'a [(String, String)],
    /// How long the broker keeps the partitions of the members that did not leave: the
    /// restart gets at least that long (and 10 s to rebalance) to consume what is left.
    held: Option<Duration>,
}

/// What the restart gets past a session timeout to be given the partitions.
const REBALANCE: Duration = Duration::from_secs(10);

/// How many of the schedule's faults on Kafka were played while the target ran and before
/// it was told to stop (`stop_ms` on its clock), from the timeline's `fault: … kafka …` lines
/// (see `FaultStep::describe`). A fault after the stop forgives no duplicate made before it.
fn kafka_faults_played(timeline: &[(u64, String)], stop_ms: Option<u64>) -> usize {
    let kafka = crate::infra::DependencyKind::Kafka.as_str();
    timeline
        .iter()
        .filter(|(at, _)| stop_ms.is_some_and(|stop| *at <= stop))
        .filter(|(_, event)| {
            // A fault on Kafka, or a service of a graph signalled while the rest ran: a
            // consumer's partitions move to another member, which resumes at the last commit.
            event.strip_prefix("fault: ").is_some_and(|what| {
                what.contains(" to service `")
                    || what
                        .split(|c: char| !c.is_alphanumeric())
                        .any(|word| word == kafka)
            })
        })
        .count()
}

/// After the target's run: read Kafka back, restart the target, read again, judge. Also
/// returns where the next cycle's evidence begins, when Kafka was read back.
async fn kafka_phase(
    ctx: KafkaPhase<'_>,
    (acked, ingress): (Vec<AckedRecord>, Option<ingress::IngressEvidence>),
    observed: &mut TargetRun,
    signals: &mut SignalHandler,
) -> Result<(Decided, Option<kafka::Baseline>), RunError> {
    let KafkaPhase {
        workload,
        baseline,
        out_dir,
        endpoints,
        ..
    } = ctx;
    let bootstrap = &endpoints.kafka_bootstrap;
    // Where a log source is read: every start's output so far.
    let mut logs = crate::target::log_files(out_dir).to_vec();
    if !matches!(observed.ready, ReadyState::Ready { .. }) || observed.interrupted {
        return Ok((
            Err("the run ended before the workload did".to_owned()),
            None,
        ));
    }
    let first = tokio::select! {
        first = kafka::read_after_stop(bootstrap, workload, baseline, &acked, &logs) => first.map_err(RunError::Kafka)?,
        _ = signals.recv() => {
            observed.interrupted = true;
            return Ok((Err("interrupted while reading Kafka back".to_owned()), None));
        }
    };
    let stop = stop_kind(observed);
    let outputs_sent = match &observed.probe {
        Some(Ok(report)) => report.outputs_sent,
        _ => None,
    };
    let restart = match workload.restart && !acked.is_empty() {
        true => {
            restart(
                ctx,
                &acked,
                first.processed.len(),
                &mut logs,
                observed,
                signals,
            )
            .await?
        }
        false => kafka::Restart::NotRun {
            why: match acked.is_empty() {
                true => "nothing was acknowledged".to_owned(),
                false => "turned off: [kafka] restart = false".to_owned(),
            },
        },
    };
    let evidence = kafka::KafkaRun {
        baseline: baseline.clone(),
        acked,
        ingress,
        stop,
        first,
        outputs_sent,
        restart,
        kafka_faults: kafka_faults_played(
            &observed.timeline,
            observed.stop_sent_at.map(|d| d.as_millis() as u64),
        ),
        waited_for_processing: workload.stop_rule() != crate::scenario::StopRule::Timer,
    };
    let judged = kafka::judge(&evidence, workload);
    dump_evidence(out_dir, &evidence, observed);
    let last = match &evidence.restart {
        kafka::Restart::Consumed(after) => after,
        _ => &evidence.first,
    };
    Ok((Ok(judged), Some(baseline.after(last))))
}

/// The records behind the verdict, in `kafka.json`, for a person to check; a failure to write
/// them is noted, not fatal.
fn dump_evidence(out_dir: &Path, evidence: &kafka::KafkaRun, observed: &mut TargetRun) {
    let dump = out_dir.join("kafka.json");
    match serde_json::to_vec(evidence).map(|json| std::fs::write(&dump, json)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => observed.timeline.push((
            observed.timeline.last().map_or(0, |(at, _)| *at),
            format!("cannot write {}: {e}", dump.display()),
        )),
        Err(e) => observed
            .timeline
            .push((0, format!("cannot serialize the Kafka evidence: {e}"))),
    }
}

/// The target started again after the stop, to consume what the first run left: what it
/// consumed, or why it could not. Its logs join `logs` (a log source reads every start's).
async fn restart(
    ctx: KafkaPhase<'_>,
    acked: &[AckedRecord],
    processed_first: usize,
    logs: &mut Vec<PathBuf>,
    observed: &mut TargetRun,
    signals: &mut SignalHandler,
) -> Result<kafka::Restart, RunError> {
    let KafkaPhase {
        scenario,
        workload,
        baseline,
        run_id,
        out_dir,
        endpoints,
        settings,
        held,
    } = ctx;
    let bootstrap = &endpoints.kafka_bootstrap;
    // A member that stayed keeps its partitions until its session times out: what it left is
    // consumed only then, and is not lost for coming late.
    let mut after_ms = workload.restart_timeout_ms;
    if let Some(held) = held {
        let wait = (held + REBALANCE).as_millis() as u64;
        if wait > after_ms {
            after_ms = wait;
            let at = observed.timeline.last().map_or(0, |(at, _)| *at);
            observed.timeline.push((
                at,
                format!(
                    "restart: given {wait} ms, not {} ms: a member did not leave the group, and \
                     its partitions wait out its session timeout ({} ms)",
                    workload.restart_timeout_ms,
                    held.as_millis()
                ),
            ));
        }
    }
    let again = StopPlan {
        signal: StopSignal::Term,
        after_ms,
        kill_after_ms: scenario.stop.kill_after_ms,
        order: Vec::new(),
    };
    let restart_dir = out_dir.join("restart");
    let restart_files = crate::target::log_files(&restart_dir);
    let counting = kafka::Counting::new(
        bootstrap,
        workload,
        baseline,
        restart_files.to_vec(),
        run_id,
    );
    let hooks = kafka::restart_hooks(counting, acked, processed_first);
    logs.extend(restart_files);
    std::fs::create_dir_all(&restart_dir).map_err(|source| RunError::OutDir {
        path: restart_dir.clone(),
        source,
    })?;
    let second = start_target(
        scenario,
        &again,
        run_id,
        &restart_dir,
        endpoints,
        Placement {
            settings,
            ports: &[],
            join: None,
            redis: None,
        },
        hooks,
        signals,
    )
    .await?;
    let offset = observed.timeline.last().map_or(0, |(at, _)| *at);
    observed.timeline.extend(
        second
            .timeline
            .iter()
            .map(|(at, what)| (offset + at, format!("restart: {what}"))),
    );
    observed.interrupted |= second.interrupted;
    let not_run = |why: &str| kafka::Restart::NotRun {
        why: why.to_owned(),
    };
    Ok(match (&second.ready, &second.exited_early) {
        (_, _) if second.interrupted => not_run("the restart was interrupted"),
        (ReadyState::Ready { .. }, None) => tokio::select! {
            after = kafka::read_after_stop(bootstrap, workload, baseline, acked, logs) => kafka::Restart::Consumed(after.map_err(RunError::Kafka)?),
            _ = signals.recv() => {
                observed.interrupted = true;
                not_run("interrupted while reading Kafka back after the restart")
            }
        },
        (ReadyState::Ready { .. }, Some(exit)) => kafka::Restart::Failed {
            how: format!("ended by itself after it was ready ({})", exit.describe()),
            evidence: restart_logs(&second),
        },
        (ReadyState::Interrupted, _) => not_run("the restart was interrupted"),
        (not_ready, _) => kafka::Restart::Failed {
            how: not_ready.describe(),
            evidence: restart_logs(&second),
        },
    })
}

/// The last lines of what a restart printed, for the evidence of its failure.
fn restart_logs(second: &TargetRun) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, path) in [("stdout", &second.stdout), ("stderr", &second.stderr)] {
        let Some(path) = path else { continue };
        let tail = crate::process::log_tail(path, 8);
        if !tail.trim().is_empty() {
            lines.push(format!(
                "last lines of the restart's {name} ({}):",
                path.display()
            ));
            lines.extend(tail.lines().map(|l| format!("  {l}")));
        }
    }
    lines
}

/// Where `[kafka.ingress]` sends its requests: the target's port, or the named service's
/// instances' ports.
fn ingress_target(
    scenario: &Scenario,
    port: Option<u16>,
    ports: &[Vec<u16>],
) -> Option<ingress::IngressTarget> {
    let spec = scenario.kafka.as_ref()?.ingress.clone()?;
    let (service, instances) = match (&scenario.target, &spec.service) {
        (Target::Services(graph), Some(name)) => {
            let s = graph.index_of(name)?;
            let instances = (ports.get(s)?.iter().enumerate())
                .map(|(r, port)| (graph.services[s].instance_name(r as u32), *port))
                .collect();
            (name.clone(), instances)
        }
        _ => (
            "target".to_owned(),
            port.map(|p| ("target".to_owned(), p)).into_iter().collect(),
        ),
    };
    Some(ingress::IngressTarget {
        spec,
        service,
        instances,
    })
}

/// What a target is started with besides the scenario: its variables, a graph's ports, and
/// where a rollout sees a new instance join.
struct Placement<'a> {
    settings: &'a [(String, String)],
    ports: &'a [Vec<u16>],
    join: Option<crate::target::JoinWatch>,
    redis: Option<crate::target::RedisPerInstance>,
}

/// One run of the target, process or graph.
#[allow(clippy::too_many_arguments)]
async fn start_target(
    scenario: &Scenario,
    stop: &StopPlan,
    run_id: &str,
    out_dir: &Path,
    endpoints: &Endpoints,
    Placement {
        settings,
        ports,
        join,
        redis,
    }: Placement<'_>,
    hooks: Hooks,
    signals: &mut SignalHandler,
) -> Result<TargetRun, RunError> {
    let ready_timeout =
        std::time::Duration::from_millis(scenario.checks.starts_within.params.deadline_ms);
    let probe_file = out_dir.join("probe.json");
    // A probe file from an earlier run in the same folder must not speak for this one.
    let _ = std::fs::remove_file(&probe_file);
    let observed = match &scenario.target {
        Target::Process(target) => {
            let ctx = crate::target::ProcessContext {
                env: settings.to_vec(),
                run_id,
                out_dir,
                probe_file: &probe_file,
                base_dir: &scenario.base_dir,
                ready_timeout,
                hooks,
            };
            run_process(target, stop, ctx, signals).await
        }
        Target::Graph(graph) => {
            run_graph(
                graph,
                endpoints.clone(),
                stop,
                ready_timeout,
                settings.iter().cloned().collect(),
                hooks,
                signals,
            )
            .await
        }
        Target::Services(graph) => {
            let ctx = crate::target::ServicesContext {
                env: settings.to_vec(),
                ports: ports.to_vec(),
                run_id,
                out_dir,
                base_dir: &scenario.base_dir,
                ready_timeout,
                join,
                redis,
            };
            crate::target::run_services(graph, stop, ctx, hooks, signals).await
        }
    };
    observed.map_err(|source| RunError::TargetSpawn {
        program: match &scenario.target {
            Target::Process(p) => p.command[0].clone(),
            Target::Graph(g) => format!("graph {}", g.name()),
            Target::Services(g) => g.services[0].command[0].clone(),
        },
        source,
    })
}
