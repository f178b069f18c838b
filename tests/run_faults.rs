//! `[[faults]]`: a schedule of proxy faults, dependency actions and signals played while the
//! target runs, each recorded where it took effect, and all of it undone when the run ends.

use quiesce::infra::{BackendKind, InfraConfig};
use quiesce::run::{RunOptions, run};
use quiesce::scenario::{Action, FaultStep, Instance, Point, ReadyProbe, Scenario, StopSignal};
use quiesce::signal::SignalHandler;
use quiesce::verdict::{CheckName, Verdict};

/// A target that is ready only if Redis answers it, and then runs until SIGTERM.
fn scenario(faults: Vec<FaultStep>) -> Scenario {
    with_trap("trap 'exit 0' TERM", faults)
}

/// The same target with its own SIGTERM trap.
fn with_trap(trap: &str, faults: Vec<FaultStep>) -> Scenario {
    let script = format!(
        "{trap}; redis-cli -u \"$QUIESCE_REDIS_URL\" ping | grep -q PONG \
         && echo listening; while :; do sleep 0.05; done"
    );
    let mut scenario = Scenario::builder("faults", ["sh", "-c", script.as_str()])
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
        dependency: Some(quiesce::infra::DependencyKind::Redis),
        signal: None,
        service: None,
        instance: Instance::All,
        latency_ms: None,
        jitter_ms: None,
        timeout_ms: None,
        rate_kb: None,
        every_ms: None,
        times: None,
        stop_old: None,
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

fn signal(after: Point, at_ms: u64, signal: StopSignal) -> FaultStep {
    FaultStep {
        after,
        dependency: None,
        signal: Some(signal),
        service: None,
        ..step(Action::Signal, at_ms)
    }
}

async fn run_once(s: &Scenario) -> Verdict {
    let out = tempfile::tempdir().unwrap();
    let options = RunOptions {
        env: Vec::new(),
        out_dir: Some(out.path().to_owned()),
    };
    run(s, &options, &mut SignalHandler::noop()).await.unwrap()
}

/// A check's outcome, in words.
fn outcome(verdict: &Verdict, check: CheckName) -> String {
    let found = verdict.results.iter().find(|r| r.check == check);
    format!("{:?}", found.map(|r| &r.outcome))
        .trim_start_matches("Some(")
        .to_owned()
}

fn events<'a>(verdict: &'a Verdict, prefix: &'a str) -> impl Iterator<Item = u64> + 'a {
    verdict
        .timeline
        .iter()
        .filter(move |e| e.event.starts_with(prefix))
        .map(|e| e.at_ms)
}

/// A SIGTERM the schedule sends after ready is the stop: the harness sends none of its own,
/// and the stop is timed from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_signal_is_the_stop() {
    // A step after the stop is played when due, though a step after ready is still waiting.
    let mut late = step(Action::Down, 60_000);
    late.after = Point::Ready;
    let mut drain = step(Action::Latency, 100);
    drain.after = Point::Stop;
    drain.latency_ms = Some(10);
    // It takes half a second to stop: the drain step is due within it.
    let mut s = with_trap(
        "trap 'sleep 0.5; exit 0' TERM",
        vec![signal(Point::Ready, 200, StopSignal::Term), late, drain],
    );
    s.stop.after_ms = 60_000;
    let verdict = run_once(&s).await;
    let report = quiesce::report::summary(&verdict);
    let ready = events(&verdict, "ready").next().expect(&report);
    let sent: Vec<u64> = events(&verdict, "sent SIGTERM").collect();
    assert_eq!(sent.len(), 1, "one SIGTERM, the schedule's: {report}");
    assert!(sent[0] >= ready + 200 && sent[0] < 30_000, "{report}");
    assert_eq!(verdict.violations(), 0, "{report}");
    let stop = outcome(&verdict, CheckName::StopsWithin);
    assert!(stop.contains("SIGTERM (the fault schedule's)"), "{stop}");
    let drained = "fault: latency 10 ms (jitter 0 ms) on redis (stop + 100 ms)";
    assert_eq!(events(&verdict, drained).count(), 1, "{report}");
    let waiting = "fault not played: proxy down on redis at ready + 60000 ms";
    assert_eq!(events(&verdict, waiting).count(), 1, "{report}");
}

/// A target that exits only on its second SIGTERM stops in time when the schedule sends that
/// second one during the drain, and runs into the kill deadline when nothing does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_the_drain_is_delivered() {
    let trap = "n=0; trap 'n=$((n+1)); [ $n -ge 2 ] && exit 0' TERM";
    let mut twice = with_trap(trap, vec![signal(Point::Stop, 300, StopSignal::Term)]);
    twice.stop.after_ms = 200;
    let verdict = run_once(&twice).await;
    let report = quiesce::report::summary(&verdict);
    assert_eq!(verdict.violations(), 0, "{report}");
    assert_eq!(
        events(&verdict, "sent SIGTERM (the fault schedule's)").count(),
        1,
        "{report}"
    );

    let mut once = with_trap(trap, Vec::new());
    once.stop.after_ms = 200;
    once.stop.kill_after_ms = 1_500;
    let verdict = run_once(&once).await;
    let report = quiesce::report::summary(&verdict);
    assert!(verdict.violations() > 0, "{report}");
    let stop = outcome(&verdict, CheckName::StopsWithin);
    assert!(stop.starts_with("Violation"), "{stop}");
}

/// A dependency the schedule stopped is down for the target while it is stopped, which the
/// timeline shows, and runs again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_stopped_by_the_schedule_runs_again_afterwards() {
    let s = scenario(vec![step(Action::Stop, 100), step(Action::Start, 400)]);
    let verdict = run_once(&s).await;
    let report = quiesce::report::summary(&verdict);
    let stopped = events(&verdict, "fault: stop redis (ready + 100 ms)").next();
    let started = events(&verdict, "fault: start redis (ready + 400 ms)").next();
    assert!(
        matches!((stopped, started), (Some(a), Some(b)) if a < b),
        "{report}"
    );
    assert_eq!(verdict.violations(), 0, "{report}");
}

/// What the schedule did and never undid is undone before the next cycle: the second
/// cycle's target reaches Redis and gets ready. A proxy left down, a toxic left on the
/// target's own proxy, a Redis killed, a Redis paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_schedule_did_is_undone_before_the_next_cycle() {
    let mut timeout = step(Action::Timeout, 0);
    timeout.instance = Instance::Primary;
    let schedules = [
        vec![step(Action::Down, 0), timeout, step(Action::Kill, 50)],
        vec![step(Action::Pause, 0)],
    ];
    for schedule in schedules {
        let s = scenario(schedule);
        let report = quiesce::catalogue::run_loop(&s, &[], 2).await.unwrap();
        assert_eq!(
            (report.cycles, report.failed),
            (2, 0),
            "{}",
            quiesce::repeat::summary(&report)
        );
    }
}

/// A step with `every_ms` is played again and again, each time on the timeline: with `times`,
/// that many times and then no more; without, until the run ends, and its next time is not
/// called "not played".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_step_is_played_every_period_until_its_count_or_the_run_ends() {
    let repeat = |action: Action, at_ms: u64, times: Option<u32>| FaultStep {
        every_ms: Some(300),
        times,
        ..step(action, at_ms)
    };
    let mut s = scenario(vec![
        repeat(Action::Down, 100, Some(3)),
        repeat(Action::Up, 200, Some(3)),
        repeat(Action::Clear, 0, None),
    ]);
    s.stop.after_ms = 2_000;
    let verdict = run_once(&s).await;
    let report = quiesce::report::summary(&verdict);
    let ready = events(&verdict, "ready").next().expect(&report);
    let downs: Vec<u64> = events(&verdict, "fault: proxy down on redis").collect();
    let ups: Vec<u64> = events(&verdict, "fault: proxy up on redis").collect();
    assert_eq!((downs.len(), ups.len()), (3, 3), "three of each: {report}");
    for (k, (down, up)) in downs.iter().zip(&ups).enumerate() {
        let k = k as u64;
        assert!(*down >= ready + 100 + 300 * k, "{report}");
        assert!(down < up && *up >= ready + 200 + 300 * k, "{report}");
    }
    assert_eq!(
        events(
            &verdict,
            "fault: proxy down on redis (ready + 700 ms, time 3 of 3)"
        )
        .count(),
        1,
        "{report}"
    );
    // Every 300 ms from ready to the stop at ready + 2 s: 7 times, give or take a late one.
    let clears = events(&verdict, "fault: toxics cleared on redis").count();
    assert!((6..=8).contains(&clears), "{clears} clears: {report}");
    assert_eq!(events(&verdict, "fault not played").count(), 0, "{report}");
    assert_eq!(verdict.violations(), 0, "{report}");
}
