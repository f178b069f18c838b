//! `[[faults]]`: a schedule of proxy faults played while the target runs, each recorded where
//! it took effect, and all of it undone when the run ends.

use quiesce::infra::{BackendKind, InfraConfig};
use quiesce::run::{RunOptions, run};
use quiesce::scenario::{Action, FaultStep, Instance, Point, ReadyProbe, Scenario};
use quiesce::signal::SignalHandler;

/// A target that is ready only if Redis answers it, and then runs until SIGTERM.
fn scenario(faults: Vec<FaultStep>) -> Scenario {
    let mut scenario = Scenario::builder(
        "faults",
        [
            "sh",
            "-c",
            "trap 'exit 0' TERM; redis-cli -u \"$QUIESCE_REDIS_URL\" ping | grep -q PONG \
             && echo listening; while :; do sleep 0.05; done",
        ],
    )
    .infra(InfraConfig {
        backend: BackendKind::Local,
        ..InfraConfig::default()
    })
    .ready(ReadyProbe::Log("^listening$".to_owned()))
    .run_for_ms(1_000)
    .kill_after_ms(5_000)
    .build()
    .unwrap();
    scenario.checks.starts_within.params.deadline_ms = 5_000;
    scenario.faults = faults;
    scenario
}

fn step(action: Action, at_ms: u64) -> FaultStep {
    FaultStep {
        after: Point::Ready,
        at_ms,
        action,
        dependency: quiesce::infra::DependencyKind::Redis,
        instance: Instance::All,
        latency_ms: None,
        jitter_ms: None,
        timeout_ms: None,
        rate_kb: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_is_on_the_timeline_where_it_took_effect() {
    let mut latency = step(Action::Latency, 300);
    latency.latency_ms = Some(100);
    let s = scenario(vec![
        step(Action::Down, 100),
        step(Action::Up, 200),
        latency,
        // Due after the stop: never played, and said so.
        step(Action::Down, 60_000),
    ]);
    let out = tempfile::tempdir().unwrap();
    let options = RunOptions {
        env: Vec::new(),
        out_dir: Some(out.path().to_owned()),
    };
    let verdict = run(&s, &options, &mut SignalHandler::noop()).await.unwrap();
    let at = |prefix: &str| {
        verdict
            .timeline
            .iter()
            .find(|e| e.event.starts_with(prefix))
            .map(|e| e.at_ms)
            .unwrap_or_else(|| panic!("no `{prefix}` in {:#?}", verdict.timeline))
    };
    let ready = at("ready");
    let down = at("fault: proxy down on redis (ready + 100 ms)");
    let up = at("fault: proxy up on redis (ready + 200 ms)");
    let slow = at("fault: latency 100 ms (jitter 0 ms) on redis (ready + 300 ms)");
    assert!(down >= ready + 100 && up >= ready + 200 && slow >= ready + 300);
    assert!(down < up && up < slow, "in order: {down} {up} {slow}");
    at("fault not played: proxy down on redis at ready + 60000 ms");
    assert_eq!(
        verdict.violations(),
        0,
        "{}",
        quiesce::report::summary(&verdict)
    );
}

/// A proxy the schedule took down and never brought up is up again for the next cycle: the
/// second cycle's target reaches Redis and gets ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_schedule_did_is_undone_before_the_next_cycle() {
    let mut timeout = step(Action::Timeout, 0);
    timeout.instance = Instance::Primary;
    let s = scenario(vec![step(Action::Down, 0), timeout]);
    let report = quiesce::catalogue::run_loop(&s, &[], 2).await.unwrap();
    assert_eq!(
        (report.cycles, report.failed),
        (2, 0),
        "{}",
        quiesce::repeat::summary(&report)
    );
}
