//! The schedules `quiesce explore` draws from, for one scenario: which actions, on which
//! dependencies and instances, at which times.
//!
//! Times are on a 250 ms grid: shrinking a time is a binary search, and each of its steps is
//! a real run, so a coarse grid keeps shrinking short. Every choice is listed simplest first
//! (`ready` before `stop`, every client before the target's alone, short latency before
//! long), because proptest shrinks a choice towards the first one.

use proptest::prelude::*;
use proptest::sample::select;

use crate::infra::DependencyKind;
use crate::scenario::{Action, FaultStep, Instance, Point, Scenario, StopOld, StopSignal, Target};

/// The grid schedules are timed on.
pub const SLOT_MS: u64 = 250;

/// Latencies a schedule adds: under the usual client timeouts, over a 1 s one, over a
/// lock's TTL of a few seconds. One near a timeout would make a flaky schedule.
const LATENCIES_MS: [u64; 3] = [100, 2_000, 5_000];

/// How late after the start a fault during startup may come.
const STARTUP_MS: u64 = 2_000;

/// What a scenario's schedules may contain.
#[derive(Clone, Debug)]
pub struct Space {
    actions: Vec<Action>,
    dependencies: Vec<DependencyKind>,
    /// The target's own Redis proxy can be cut: it has a standby to take over.
    primary: bool,
    signals: Vec<StopSignal>,
    /// From ready to the stop.
    run_ms: u64,
    /// From the stop to the kill.
    drain_ms: u64,
    /// A service graph's services: where a signal, a restart or a rollout goes.
    services: Vec<String>,
    /// When a rollout stops an old instance: every step of the join with `[kafka]`, else at
    /// ready only.
    stop_olds: Vec<StopOld>,
}

impl Space {
    /// The space of `scenario`, made of `actions`: the dependencies its tables name (both
    /// when none does), signals it can take.
    pub fn of(scenario: &Scenario, actions: &[Action]) -> Space {
        let mut dependencies = Vec::new();
        let readiness = scenario.readiness.as_ref();
        let named = |kind: DependencyKind| {
            readiness.is_some_and(|r| r.required.contains(&kind) || r.optional.contains(&kind))
        };
        if scenario.kafka.is_some() || named(DependencyKind::Kafka) {
            dependencies.push(DependencyKind::Kafka);
        }
        if scenario.redis.is_some() || named(DependencyKind::Redis) {
            dependencies.push(DependencyKind::Redis);
        }
        if dependencies.is_empty() {
            dependencies = DependencyKind::ALL.to_vec();
        }
        let graph = matches!(scenario.target, Target::Graph(_));
        let signals = match graph {
            // A graph's one trigger is its token: SIGKILL has no meaning for it.
            true => vec![StopSignal::Term, StopSignal::Int],
            false => vec![StopSignal::Term, StopSignal::Int, StopSignal::Kill],
        };
        // A service graph's signal, restart or rollout goes to one of its services.
        let services: Vec<String> = match &scenario.target {
            Target::Services(graph) => graph.services.iter().map(|s| s.name.clone()).collect(),
            _ => Vec::new(),
        };
        let stop_olds = match scenario.kafka.is_some() {
            true => vec![
                StopOld::Sync,
                StopOld::Ready,
                StopOld::Join,
                StopOld::Synced,
            ],
            false => vec![StopOld::Ready],
        };
        Space {
            actions: actions
                .iter()
                .copied()
                // A redeploy is of a graph's service: nothing to redeploy elsewhere.
                .filter(|a| !services.is_empty() || !matches!(a, Action::Restart | Action::Rollout))
                .collect(),
            dependencies,
            primary: !graph && scenario.redis.as_ref().is_some_and(|r| r.standby),
            signals,
            run_ms: scenario.stop.after_ms,
            drain_ms: scenario.stop.kill_after_ms.min(5_000),
            services,
            stop_olds,
        }
    }

    /// Schedules of 1 to `max_steps` steps.
    pub fn strategy(&self, max_steps: usize) -> BoxedStrategy<Vec<FaultStep>> {
        let space = self.clone();
        let instances = match self.primary {
            true => vec![Instance::All, Instance::Primary],
            false => vec![Instance::All],
        };
        let slots = self.slots();
        let step = (
            select(self.actions.clone()),
            select(self.dependencies.clone()),
            select(instances),
            select(self.signals.clone()),
            select(vec![Point::Ready, Point::Stop, Point::Start]),
            0..=slots,
            select(LATENCIES_MS.to_vec()),
            (
                select(match self.services.is_empty() {
                    true => vec![String::new()],
                    false => self.services.clone(),
                }),
                select(self.stop_olds.clone()),
            ),
        )
            .prop_map(move |choice| space.step(choice));
        proptest::collection::vec(step, 1..=max_steps.max(1)).boxed()
    }

    /// How many grid points the longest window has.
    fn slots(&self) -> u64 {
        (self.run_ms.max(self.drain_ms).max(STARTUP_MS) / SLOT_MS).max(1)
    }

    #[allow(clippy::type_complexity)]
    fn step(
        &self,
        (action, dependency, instance, signal, point, slot, latency, (service, stop_old)): (
            Action,
            DependencyKind,
            Instance,
            StopSignal,
            Point,
            u64,
            u64,
            (String, StopOld),
        ),
    ) -> FaultStep {
        let redeploy = matches!(action, Action::Restart | Action::Rollout);
        let after = match (action, point) {
            // A signal during the start is not a schedule's to send (see FaultStep::validate).
            (Action::Signal, Point::Start) => Point::Ready,
            // A redeploy is timed from ready: the graph runs whole by then.
            _ if redeploy => Point::Ready,
            _ => point,
        };
        let window = match after {
            Point::Start => STARTUP_MS,
            Point::Ready => self.run_ms,
            Point::Stop => self.drain_ms,
        };
        let proxy = action != Action::Signal && !redeploy && action.lifecycle().is_none();
        let mut step = FaultStep {
            after,
            // The slot scaled to the point's own window, on the grid: 0 stays 0, so a time
            // shrinks towards its point.
            at_ms: slot * (window / SLOT_MS) / self.slots() * SLOT_MS,
            action,
            dependency: (action != Action::Signal && !redeploy).then_some(dependency),
            signal: (action == Action::Signal).then_some(signal),
            // In a graph, a signal or a redeploy goes to a service.
            service: (action == Action::Signal || redeploy)
                .then_some(service)
                .filter(|s| !s.is_empty()),
            instance: match proxy && dependency == DependencyKind::Redis {
                true => instance,
                false => Instance::All,
            },
            latency_ms: None,
            jitter_ms: None,
            timeout_ms: None,
            rate_kb: None,
            every_ms: None,
            times: None,
            stop_old: (action == Action::Rollout).then_some(stop_old),
        };
        match action {
            Action::Latency => step.latency_ms = Some(latency),
            Action::Bandwidth => step.rate_kb = Some(1),
            _ => {}
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::*;

    fn scenario(toml: &str) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, toml).unwrap();
        Scenario::load(&path).unwrap()
    }

    const LEADER: &str = "name = \"s\"\n[target]\ncommand = [\"x\"]\nready = { log = \"r\" }\n\
                          [redis]\nstandby = true\n[stop]\nafter_ms = 4000\n";

    /// Every schedule drawn is one a scenario file may hold, and uses only what the space
    /// allows.
    #[test]
    fn every_drawn_schedule_is_valid() {
        let s = scenario(LEADER);
        let space = Space::of(&s, &Action::ALL);
        let strategy = space.strategy(4);
        let mut runner = TestRunner::deterministic();
        let mut primary = 0;
        for _ in 0..500 {
            let steps = strategy.new_tree(&mut runner).unwrap().current();
            assert!((1..=4).contains(&steps.len()));
            for step in &steps {
                step.validate().unwrap_or_else(|e| panic!("{step:?}: {e}"));
                assert!(step.dependency.is_none_or(|d| d == DependencyKind::Redis));
                let window = match step.after {
                    Point::Start => STARTUP_MS,
                    Point::Ready => 4_000,
                    Point::Stop => 5_000,
                };
                assert!(
                    step.at_ms <= window && step.at_ms % SLOT_MS == 0,
                    "{step:?}"
                );
                primary += usize::from(step.instance == Instance::Primary);
            }
        }
        assert!(primary > 0, "the target's own proxy is never drawn");
    }

    /// A graph target is never sent SIGKILL, and without a standby nothing is cut from the
    /// target alone.
    #[test]
    fn a_graph_gets_no_sigkill_and_no_primary_partition() {
        let mut s = scenario(LEADER);
        s.target = Target::Graph(crate::target::Graph::new("g", |_ctx| async { Ok(()) }));
        let space = Space::of(&s, &[Action::Signal, Action::Down]);
        let strategy = space.strategy(3);
        let mut runner = TestRunner::deterministic();
        for _ in 0..300 {
            for step in strategy.new_tree(&mut runner).unwrap().current() {
                assert_ne!(step.signal, Some(StopSignal::Kill));
                assert_eq!(step.instance, Instance::All);
            }
        }
    }

    /// In a service graph with Kafka, signals, restarts and rollouts go to its services, a
    /// rollout at every step of the new member's join; each schedule drawn is one the file
    /// may hold. Without Kafka a rollout stops old instances at ready only.
    #[test]
    fn a_graph_of_services_gets_redeploys_of_its_services() {
        let graph = "name = \"g\"\n[[services]]\nname = \"api\"\ncommand = [\"x\"]\n\
                     [[services]]\nname = \"worker\"\ncommand = [\"x\"]\nreplicas = 2\n\
                     [stop]\nafter_ms = 4000\n";
        let with_kafka = scenario(&format!("{graph}[kafka]\n"));
        let without = scenario(graph);
        for (s, steps_of_join) in [(with_kafka, 4), (without, 1)] {
            let strategy = Space::of(&s, &Action::ALL).strategy(3);
            let mut runner = TestRunner::deterministic();
            let mut stop_olds = std::collections::BTreeSet::new();
            let mut redeployed = std::collections::BTreeSet::new();
            for _ in 0..600 {
                let steps = strategy.new_tree(&mut runner).unwrap().current();
                for step in &steps {
                    if matches!(
                        step.action,
                        Action::Signal | Action::Restart | Action::Rollout
                    ) {
                        let service = step.service.as_deref().expect("a service named");
                        redeployed.insert((step.action.name(), service.to_owned()));
                    }
                    if let Some(stop_old) = step.stop_old {
                        stop_olds.insert(stop_old.name());
                    }
                }
                let mut drawn = s.clone();
                drawn.faults = steps;
                drawn
                    .validate("drawn")
                    .unwrap_or_else(|e| panic!("{:?}: {e}", drawn.faults));
            }
            assert_eq!(stop_olds.len(), steps_of_join, "{stop_olds:?}");
            for action in [Action::Signal, Action::Restart, Action::Rollout] {
                for service in ["api", "worker"] {
                    assert!(
                        redeployed.contains(&(action.name(), service.to_owned())),
                        "{action} of {service} never drawn"
                    );
                }
            }
        }
    }

    /// Shrinking goes towards one step, at the start of its window, on every client.
    #[test]
    fn a_schedule_shrinks_towards_one_early_step() {
        let s = scenario(LEADER);
        let strategy = Space::of(&s, &Action::ALL).strategy(4);
        let mut runner = TestRunner::deterministic();
        let mut tree = strategy.new_tree(&mut runner).unwrap();
        while tree.simplify() {}
        let steps = tree.current();
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!(
            (
                steps[0].action,
                steps[0].at_ms,
                steps[0].after,
                steps[0].instance
            ),
            (Action::Down, 0, Point::Ready, Instance::All)
        );
    }
}
