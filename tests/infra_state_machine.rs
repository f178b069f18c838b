//! Any sequence of lifecycle faults (stop, start, kill, pause, resume) and proxy faults (down,
//! up) on the local backend leaves Kafka and Redis usable once everything is restored.
//!
//! A `[[faults]]` schedule and the fault API drive these actions in orders nobody wrote a test
//! for: a kill of a paused broker, a start while the proxy is down, a resume of a process that
//! was never paused. A reference model (proptest-state-machine) keeps each dependency's
//! process (running, paused, stopped) and proxy (up, down), and predicts which actions the
//! infrastructure must refuse: a start of a process that runs (paused or not), and a stop, kill,
//! pause or resume of one that does not. Refused actions are generated too, so the errors are
//! checked as well as the successes. Every step is applied to a real local `Infra`; after each
//! one, what the harness reports, what the OS says of the processes and what a client sees are
//! compared with the model. At the end everything is restored, both dependencies must answer a
//! real client through their proxies, and `close` must leave no process behind.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use quiesce::infra::{DependencyKind, Infra, InfraError, LifecycleAction};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::util::{
    alive, assert_all_gone, eventually, kafka_config, processes_mentioning, redis_set_get,
    start_local,
};

/// What runs behind a proxy, as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Process {
    Running,
    /// SIGSTOPped: alive, answers nothing.
    Paused,
    /// After a stop or a kill.
    Stopped,
}

/// Whether a proxy accepts connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proxy {
    Up,
    Down,
}

/// One dependency in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dependency {
    process: Process,
    proxy: Proxy,
}

impl Dependency {
    /// The process after `action`, or `None` when the infrastructure must refuse it.
    fn after(self, action: LifecycleAction) -> Option<Process> {
        use LifecycleAction::*;
        use Process::*;
        match (self.process, action) {
            (Stopped, Start) => Some(Running),
            (Running | Paused, Start) => None,
            (Stopped, Stop | Kill | Pause | Resume) => None,
            (Running | Paused, Stop | Kill) => Some(Stopped),
            // Pausing what is paused and resuming what runs do nothing, on every backend.
            (Running | Paused, Pause) => Some(Paused),
            (Running | Paused, Resume) => Some(Running),
        }
    }
}

/// The reference state: both dependencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Model {
    kafka: Dependency,
    redis: Dependency,
}

impl Model {
    const STARTED: Model = Model {
        kafka: Dependency {
            process: Process::Running,
            proxy: Proxy::Up,
        },
        redis: Dependency {
            process: Process::Running,
            proxy: Proxy::Up,
        },
    };

    fn dep(&self, kind: DependencyKind) -> Dependency {
        match kind {
            DependencyKind::Kafka => self.kafka,
            DependencyKind::Redis => self.redis,
        }
    }

    fn dep_mut(&mut self, kind: DependencyKind) -> &mut Dependency {
        match kind {
            DependencyKind::Kafka => &mut self.kafka,
            DependencyKind::Redis => &mut self.redis,
        }
    }

    /// The model after `step`, or `None` when the infrastructure must refuse the step (and
    /// change nothing).
    fn after(&self, step: Step) -> Option<Model> {
        let mut next = *self;
        match step {
            Step::Act(kind, action) => {
                let process = self.dep(kind).after(action)?;
                next.dep_mut(kind).process = process;
            }
            // Both are idempotent: never refused.
            Step::ProxyDown(kind) => next.dep_mut(kind).proxy = Proxy::Down,
            Step::ProxyUp(kind) => next.dep_mut(kind).proxy = Proxy::Up,
        }
        Some(next)
    }
}

/// One thing done to the infrastructure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// `Infra::act`.
    Act(DependencyKind, LifecycleAction),
    /// `ProxySwitch::down`.
    ProxyDown(DependencyKind),
    /// `ProxySwitch::up`.
    ProxyUp(DependencyKind),
}

impl Step {
    /// Every step there is, simplest (for shrinking) first.
    fn all() -> Vec<Step> {
        use LifecycleAction::*;
        DependencyKind::ALL
            .into_iter()
            .flat_map(|kind| {
                [Stop, Start, Kill, Pause, Resume]
                    .map(|action| Step::Act(kind, action))
                    .into_iter()
                    .chain([Step::ProxyDown(kind), Step::ProxyUp(kind)])
            })
            .collect()
    }
}

/// The reference state machine.
struct FaultModel;

impl ReferenceStateMachine for FaultModel {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::STARTED).boxed()
    }

    /// Two steps the model accepts for one it refuses. Accepted steps move the sequence on (a
    /// kill of a paused broker needs a pause first); refused ones are few in any state, so
    /// drawing them as a group keeps the error cases frequent. Drawing from the model's own
    /// groups also means a step it wrongly calls refused is drawn more often, not less.
    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let (accepted, refused): (Vec<Step>, Vec<Step>) = Step::all()
            .into_iter()
            .partition(|step| state.after(*step).is_some());
        // Neither is ever empty: proxy steps are always accepted, and a start is refused for
        // a running process and everything but a start for a stopped one.
        prop_oneof![
            2 => proptest::sample::select(accepted),
            1 => proptest::sample::select(refused),
        ]
        .boxed()
    }

    fn apply(state: Model, step: &Step) -> Model {
        state.after(*step).unwrap_or(state)
    }
}

/// A real local infrastructure, the runtime that drives it, and what was seen of it so far.
struct LiveInfra {
    infra: Infra,
    /// The model as of the last step: predicts whether the next step must be refused.
    model: Model,
    /// Each dependency's process as last checked (`None` when stopped).
    pids: BTreeMap<DependencyKind, Option<u32>>,
    /// Every process the infrastructure ever ran, to check that none outlives `close`.
    every_pid: Vec<u32>,
    /// Tells apart the values each step writes to Redis.
    steps: usize,
    runtime: tokio::runtime::Runtime,
}

impl Drop for LiveInfra {
    fn drop(&mut self) {
        // A failed step unwinds through here: stop everything before the next case starts its
        // own. After a teardown this is a no-op (`close` is idempotent).
        let _ = self.runtime.block_on(self.infra.close());
    }
}

impl LiveInfra {
    /// Compares the harness's status, the processes and a client's view with `model`, which
    /// follows `before` by one step (or is the same state, for the initial check).
    fn check(&mut self, before: Model, model: Model) {
        self.steps += 1;
        for status in self.infra.status() {
            let kind = status.dependency;
            let (was, want) = (before.dep(kind), model.dep(kind));
            assert_eq!(
                (status.running, status.paused, status.proxy_enabled),
                (
                    want.process != Process::Stopped,
                    want.process == Process::Paused,
                    want.proxy == Proxy::Up
                ),
                "{kind}: status (running, paused, proxy_enabled) against the model {want:?}: {status:?}"
            );
            let old = self.pids.get(&kind).copied().flatten();
            match (was.process, want.process) {
                (_, Process::Stopped) => {
                    assert_eq!(status.pid, None, "{kind}: a stopped dependency has no pid");
                    if let Some(pid) = old {
                        assert!(!alive(pid), "{kind}: pid {pid} outlived its stop or kill");
                    }
                }
                (Process::Stopped, _) => {
                    let pid = status.pid.expect("a started dependency has a pid");
                    assert!(
                        !self.every_pid.contains(&pid),
                        "{kind}: a start runs a new process, not pid {pid} again"
                    );
                    self.every_pid.push(pid);
                }
                _ => assert_eq!(
                    status.pid, old,
                    "{kind}: nothing but a start or a stop changes the process"
                ),
            }
            self.pids.insert(kind, status.pid);

            // The harness's `paused` is only its own bookkeeping: the OS must agree.
            if let Some(pid) = status.pid {
                let paused = want.process == Process::Paused;
                self.runtime.block_on(eventually(
                    &format!("{kind}: pid {pid} paused={paused}"),
                    async || match process_state(pid) {
                        Some(state) if (state == 'T') == paused => Ok(()),
                        other => Err(format!("process state {other:?}")),
                    },
                ));
            }

            // A proxy that is up accepts connections whatever runs behind it; one that is down
            // refuses them, though not at once: `down` returns before its accept loop has let
            // go of the listener, and until then the kernel still accepts.
            let endpoint = status.endpoint;
            match want.proxy {
                Proxy::Up => {
                    connect(endpoint).unwrap_or_else(|e| panic!("{kind}: proxy up, but {e}"));
                }
                Proxy::Down => {
                    self.runtime.block_on(eventually(
                        &format!("{kind}: proxy down refuses"),
                        async || match connect(endpoint) {
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
                            other => Err(format!("connect: {other:?}")),
                        },
                    ));
                }
            }
        }

        // Redis is cheap to ask. A paused one would cost a client timeout per step, so only
        // the running and the stopped ones are asked.
        let url = self.infra.endpoints().redis_url.clone();
        let value = format!("step-{}", self.steps);
        match model.redis {
            Dependency {
                process: Process::Running,
                proxy: Proxy::Up,
            } => self.runtime.block_on(eventually("redis answers", async || {
                redis_set_get(&url, "state-machine", &value).await
            })),
            Dependency {
                process: Process::Stopped,
                ..
            } => {
                let answered = self
                    .runtime
                    .block_on(redis_set_get(&url, "state-machine", &value));
                assert!(answered.is_err(), "a stopped redis must not answer");
            }
            _ => {}
        }
    }
}

/// Drives a real infrastructure through the model's steps.
struct InfraUnderFaults;

impl StateMachineTest for InfraUnderFaults {
    type SystemUnderTest = LiveInfra;
    type Reference = FaultModel;

    fn init_test(model: &Model) -> LiveInfra {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut infra = runtime.block_on(start_local());
        let pids: BTreeMap<_, _> = infra
            .status()
            .iter()
            .map(|s| (s.dependency, s.pid))
            .collect();
        let mut live = LiveInfra {
            infra,
            model: *model,
            every_pid: pids.values().copied().flatten().collect(),
            pids,
            steps: 0,
            runtime,
        };
        live.check(*model, *model);
        live
    }

    fn apply(mut live: LiveInfra, model: &Model, step: Step) -> LiveInfra {
        let before = live.model;
        let accepted = before.after(step).is_some();
        match step {
            Step::Act(kind, action) => {
                let acted = live.runtime.block_on(live.infra.act(kind, action));
                match acted {
                    Ok(()) if accepted => {}
                    Err(InfraError::Action {
                        dependency,
                        action: refused,
                        ..
                    }) if !accepted && dependency == kind && refused == action => {}
                    other => panic!(
                        "{step:?} on {before:?}: the model expected {}, got {other:?}",
                        if accepted { "success" } else { "a refusal" }
                    ),
                }
            }
            Step::ProxyDown(kind) => live.infra.proxy(kind).switch().down(),
            Step::ProxyUp(kind) => {
                let switch = live.infra.proxy(kind).switch();
                live.runtime
                    .block_on(switch.up())
                    .unwrap_or_else(|e| panic!("{kind}: proxy up: {e}"));
            }
        }
        live.check(before, *model);
        live.model = *model;
        live
    }

    /// Restores everything, then both dependencies must serve a real client through their
    /// proxies, and `close` must leave no process behind.
    fn teardown(mut live: LiveInfra, model: Model) {
        let mut restored = model;
        for kind in DependencyKind::ALL {
            let dep = model.dep(kind);
            let undo = match dep.process {
                Process::Running => None,
                Process::Paused => Some(LifecycleAction::Resume),
                Process::Stopped => Some(LifecycleAction::Start),
            };
            if let Some(action) = undo {
                live.runtime
                    .block_on(live.infra.act(kind, action))
                    .unwrap_or_else(|e| panic!("restoring {kind}: {action}: {e}"));
            }
            if dep.proxy == Proxy::Down {
                let switch = live.infra.proxy(kind).switch();
                live.runtime
                    .block_on(switch.up())
                    .unwrap_or_else(|e| panic!("restoring the {kind} proxy: {e}"));
            }
            *restored.dep_mut(kind) = Model::STARTED.dep(kind);
        }
        live.check(model, restored);

        // Redis was just checked by `check`; Kafka must take a record and give it back.
        let bootstrap = live.infra.endpoints().kafka_bootstrap.clone();
        live.runtime
            .block_on(eventually("kafka round trip", async || {
                kafka_produce_and_fetch(&bootstrap, "state-machine").await
            }));

        let workdir = live.infra.workdir().to_owned();
        live.runtime
            .block_on(live.infra.close())
            .expect("close after restoring everything");
        live.runtime.block_on(assert_all_gone(&live.every_pid));
        let left = processes_mentioning(&workdir);
        assert!(left.is_empty(), "processes left in {workdir:?}: {left:?}");
    }
}

prop_state_machine! {
    #![proptest_config(config())]

    #[test]
    fn any_fault_sequence_leaves_both_dependencies_usable(
        sequential 1..=12 => InfraUnderFaults
    );
}

/// Few cases by default, since each starts a real Redis and tansu (about a second a case);
/// `PROPTEST_CASES=200` explores further.
fn config() -> Config {
    let defaults = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            defaults.cases
        } else {
            8
        },
        // Each shrink step replays a whole case: bound what a failure costs.
        max_shrink_iters: 64,
        // The minimal failing sequence is printed; one worth keeping becomes a named test.
        failure_persistence: None,
        ..defaults
    }
}

/// The state letter of `/proc/<pid>/stat` (`T` for stopped by a signal), if the process exists.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// A plain TCP connection to `addr`, closed at once.
fn connect(addr: SocketAddr) -> std::io::Result<()> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map(drop)
}

/// Creates `topic` (if missing), produces one record and fetches it back by its offset.
async fn kafka_produce_and_fetch(bootstrap: &str, topic: &str) -> Result<(), String> {
    let timeout = Duration::from_secs(10);
    let admin: AdminClient<DefaultClientContext> = kafka_config(bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(timeout)),
        )
        .await
        .map_err(|e| format!("create_topics: {e}"))?;
    for result in created {
        match result {
            // An earlier attempt may have created it.
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => return Err(format!("creating {topic}: {e}")),
        }
    }

    let producer: FutureProducer = kafka_config(bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let delivery = producer
        .send(
            FutureRecord::to(topic).key("k").payload("restored"),
            timeout,
        )
        .await
        .map_err(|(e, _)| format!("produce: {e}"))?;

    let consumer: StreamConsumer = kafka_config(bootstrap)
        .set("group.id", "quiesce-state-machine")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, delivery.partition, Offset::Offset(delivery.offset))
        .map_err(|e| e.to_string())?;
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let message = tokio::time::timeout(timeout, consumer.recv())
        .await
        .map_err(|_| "no record within 10 s".to_owned())?
        .map_err(|e| format!("fetch: {e}"))?;
    match message.payload() {
        Some(b"restored") => Ok(()),
        other => Err(format!(
            "fetched {:?} instead of the record produced",
            other.map(String::from_utf8_lossy)
        )),
    }
}
