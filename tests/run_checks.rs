//! `quiesce run` against purpose-built process targets: each breaks one invariant (or none),
//! and the table below is the exact verdict each must get. A check that fails where it should
//! pass, or passes where it should fail, fails the test.

use std::collections::BTreeMap;

use quiesce::infra::{BackendKind, InfraConfig};
use quiesce::run::{RunOptions, run};
use quiesce::scenario::{ChecksConfig, ReadyProbe, Scenario, StopSignal};
use quiesce::signal::SignalHandler;
use quiesce::verdict::{CheckName, Outcome, Verdict};

/// What a check must conclude.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Pass,
    Fail,
    Unsure,
}

use CheckName::*;
use Expect::*;

fn outcome_kind(outcome: &Outcome) -> Expect {
    match outcome {
        Outcome::Pass { .. } => Pass,
        Outcome::Violation { .. } => Fail,
        Outcome::Inconclusive { .. } => Unsure,
    }
}

/// A shell target: `body` runs after `ready` is printed, with `trap` as its TERM handler.
fn sh(trap: &str, body: &str) -> Vec<String> {
    let script = format!("{trap} echo listening; {body}");
    vec!["sh".into(), "-c".into(), script]
}

const LOOP: &str = "while :; do sleep 0.05; done";

fn asyncio(behaviour: &str) -> (Vec<String>, Vec<(String, String)>) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/examples/asyncio_service.py"
    );
    (
        vec!["python3".into(), script.into()],
        vec![("QUIESCE_VARIANT".into(), behaviour.into())],
    )
}

struct Case {
    name: &'static str,
    command: Vec<String>,
    env: Vec<(String, String)>,
    ready: ReadyProbe,
    signal: StopSignal,
    expected: &'static [(CheckName, Expect)],
}

fn case(
    name: &'static str,
    command: Vec<String>,
    expected: &'static [(CheckName, Expect)],
) -> Case {
    Case {
        name,
        command,
        env: Vec::new(),
        ready: ReadyProbe::Log("^(listening|ready)$".into()),
        signal: StopSignal::Term,
        expected,
    }
}

/// The table: each target and the outcome each check must reach.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let (py, py_clean) = asyncio("correct");
    let (_, py_leak) = asyncio("untracked-task");
    let (_, py_thread) = asyncio("sampler-thread");
    let mut py_leak_no_probe = py_leak.clone();
    py_leak_no_probe.push(("QUIESCE_NO_PROBE".into(), "1".into()));
    vec![
        case("clean", sh("trap 'exit 0' TERM;", LOOP),
            &[(StartsWithin, Pass), (StopsWithin, Pass), (ExitCode, Pass), (NoLeakedTasks, Pass), (NoLeakedThreads, Unsure), (NoOrphanProcesses, Pass)]),
        case("slow-stop", sh("trap 'sleep 2; exit 0' TERM;", LOOP),
            &[(StartsWithin, Pass), (StopsWithin, Fail), (ExitCode, Pass), (NoLeakedTasks, Pass), (NoLeakedThreads, Unsure), (NoOrphanProcesses, Pass)]),
        // Killed by the harness with its `sleep` child alive: whether it would have stopped
        // it is unknown (its group was once killed before anyone looked, and this passed).
        case("ignores-term", sh("trap '' TERM;", LOOP),
            &[(StartsWithin, Pass), (StopsWithin, Fail), (ExitCode, Fail), (NoLeakedTasks, Unsure), (NoLeakedThreads, Unsure), (NoOrphanProcesses, Unsure)]),
        case("bad-exit-code", sh("trap 'exit 3' TERM;", LOOP),
            &[(StartsWithin, Pass), (StopsWithin, Pass), (ExitCode, Fail), (NoLeakedTasks, Pass), (NoLeakedThreads, Unsure), (NoOrphanProcesses, Pass)]),
        case("no-term-handler", sh("", LOOP),
            &[(StartsWithin, Pass), (StopsWithin, Pass), (ExitCode, Fail), (NoLeakedTasks, Pass), (NoLeakedThreads, Unsure), (NoOrphanProcesses, Pass)]),
        case("orphan-child", sh("trap 'exit 0' TERM; sleep 300 &", LOOP),
            &[(StartsWithin, Pass), (StopsWithin, Pass), (ExitCode, Pass), (NoLeakedTasks, Pass), (NoLeakedThreads, Unsure), (NoOrphanProcesses, Fail)]),
        // A grandchild in its own session, out of the target's process group.
        case("orphan-setsid-grandchild", sh("trap 'exit 0' TERM; setsid sh -c 'sleep 300' &", LOOP),
            &[(StartsWithin, Pass), (StopsWithin, Pass), (ExitCode, Pass), (NoLeakedTasks, Pass), (NoLeakedThreads, Unsure), (NoOrphanProcesses, Fail)]),
        case("exits-early", sh("trap 'exit 0' TERM;", "exit 0"),
            &[(StartsWithin, Pass), (StopsWithin, Unsure), (ExitCode, Fail), (NoLeakedTasks, Pass), (NoLeakedThreads, Unsure), (NoOrphanProcesses, Pass)]),
        case("crashes-at-start", vec!["sh".into(), "-c".into(), "echo 'config error' >&2; exit 1".into()],
            &[(StartsWithin, Fail), (StopsWithin, Unsure), (ExitCode, Unsure), (NoLeakedTasks, Pass), (NoLeakedThreads, Unsure), (NoOrphanProcesses, Pass)]),
        Case { ready: ReadyProbe::Log("^never$".into()), ..case("never-ready", sh("trap 'exit 0' TERM;", LOOP),
            &[(StartsWithin, Fail), (StopsWithin, Unsure), (ExitCode, Unsure), (NoLeakedTasks, Pass), (NoLeakedThreads, Unsure), (NoOrphanProcesses, Pass)]) },
        Case { signal: StopSignal::Kill, ..case("sigkill", sh("trap 'exit 0' TERM;", LOOP),
            &[(StartsWithin, Pass), (StopsWithin, Pass), (ExitCode, Unsure), (NoLeakedTasks, Unsure), (NoLeakedThreads, Unsure), (NoOrphanProcesses, Pass)]) },
        // The Python asyncio service with quiesce's probe: tasks and threads counted exactly.
        Case { env: py_clean, ..case("asyncio-clean", py.clone(),
            &[(StartsWithin, Pass), (StopsWithin, Pass), (ExitCode, Pass), (NoLeakedTasks, Pass), (NoLeakedThreads, Pass), (NoOrphanProcesses, Pass)]) },
        // Its probe waits 1.4 s for the leaked task to end, inside its shutdown: the stop took
        // that long, over the 1 s deadline (the wait was once subtracted, and this passed).
        Case { env: py_leak, ..case("asyncio-untracked-task", py.clone(),
            &[(StartsWithin, Pass), (StopsWithin, Fail), (ExitCode, Pass), (NoLeakedTasks, Fail), (NoLeakedThreads, Pass), (NoOrphanProcesses, Pass)]) },
        // The same for the thread its probe waits on.
        Case { env: py_thread, ..case("asyncio-sampler-thread", py.clone(),
            &[(StartsWithin, Pass), (StopsWithin, Fail), (ExitCode, Pass), (NoLeakedTasks, Pass), (NoLeakedThreads, Fail), (NoOrphanProcesses, Pass)]) },
        // The same leak without the probe: seen only through what asyncio prints.
        Case { env: py_leak_no_probe, ..case("asyncio-untracked-task-no-probe", py,
            &[(StartsWithin, Pass), (StopsWithin, Pass), (ExitCode, Pass), (NoLeakedTasks, Fail), (NoLeakedThreads, Unsure), (NoOrphanProcesses, Pass)]) },
    ]
}

fn scenario(case: &Case) -> Scenario {
    let mut checks = ChecksConfig::default();
    checks.stops_within.params.deadline_ms = 1_000;
    // Generous: a loaded 2-core machine may take a while to start Python.
    checks.starts_within.params.deadline_ms = 20_000;
    if case.name == "never-ready" {
        checks.starts_within.params.deadline_ms = 500;
    }
    let mut builder = Scenario::builder(case.name, case.command.clone())
        .infra(InfraConfig {
            backend: BackendKind::Local,
            ..InfraConfig::default()
        })
        .ready(case.ready.clone())
        .stop_signal(case.signal)
        .run_for_ms(200)
        .kill_after_ms(3_000)
        .checks(checks);
    for (k, v) in &case.env {
        builder = builder.env(k, v);
    }
    builder.build().expect("a valid scenario")
}

async fn run_case(case: &Case) -> Verdict {
    let out = tempfile::tempdir().unwrap();
    let options = RunOptions {
        env: Vec::new(),
        out_dir: Some(out.path().to_owned()),
    };
    run(&scenario(case), &options, &mut SignalHandler::noop())
        .await
        .unwrap_or_else(|e| panic!("{}: the run itself failed: {e}", case.name))
}

/// Runs every case `rounds` times and checks each verdict against the table.
async fn detection_matrix(rounds: usize) {
    let mut wrong = Vec::new();
    for round in 0..rounds {
        for case in cases() {
            let verdict = run_case(&case).await;
            let got: BTreeMap<CheckName, Expect> = verdict
                .results
                .iter()
                .map(|r| (r.check, outcome_kind(&r.outcome)))
                .collect();
            let want: BTreeMap<CheckName, Expect> = case.expected.iter().copied().collect();
            if got != want {
                wrong.push(format!(
                    "round {round}, {}: got {got:?}, want {want:?}\n{}",
                    case.name,
                    quiesce::report::summary(&verdict)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "verdicts differ from the table:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_gets_its_exact_verdict() {
    detection_matrix(1).await;
}

/// The same table ten times in a row: no flake. Opt-in (about 5 minutes):
/// `cargo nextest run --run-ignored only -E 'test(detection_matrix_ten_times)'`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: 10 rounds of the detection matrix"]
async fn detection_matrix_ten_times() {
    detection_matrix(10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_names_what_went_wrong() {
    let all = cases();
    let find = |name: &str| all.iter().find(|c| c.name == name).unwrap();
    let text = |v: &Verdict| quiesce::report::summary(v);

    let slow = run_case(find("slow-stop")).await;
    assert!(
        text(&slow).contains("over the 1000 ms deadline"),
        "{}",
        text(&slow)
    );

    let orphan = run_case(find("orphan-setsid-grandchild")).await;
    assert!(text(&orphan).contains(": sleep 300"), "{}", text(&orphan));

    let leak = run_case(find("asyncio-untracked-task-no-probe")).await;
    assert!(
        text(&leak).contains("Task was destroyed but it is pending!"),
        "{}",
        text(&leak)
    );
    assert!(
        text(&leak).contains("stderr.log:"),
        "evidence names the file and line: {}",
        text(&leak)
    );

    let probed = run_case(find("asyncio-untracked-task")).await;
    assert!(
        text(&probed).contains("task `Task-3` at worker"),
        "{}",
        text(&probed)
    );
    assert!(
        text(&probed).contains("asyncio_service.py:"),
        "the stack is evidence: {}",
        text(&probed)
    );
    // The probe's 1.4 s wait for a task that never ends was once subtracted from the stop:
    // it is the target's own task not finishing, so the whole stop counts.
    assert!(
        text(&probed).contains("waiting for its tasks to finish")
            && !text(&probed).contains("less"),
        "the probe's wait is counted, not discounted: {}",
        text(&probed)
    );

    let thread = run_case(find("asyncio-sampler-thread")).await;
    assert!(
        text(&thread).contains("thread `rss-sampler` (daemon)"),
        "{}",
        text(&thread)
    );

    let crash = run_case(find("crashes-at-start")).await;
    assert!(
        text(&crash).contains("config error"),
        "the log tail is evidence: {}",
        text(&crash)
    );

    let unhandled = run_case(find("no-term-handler")).await;
    assert!(
        text(&unhandled).contains("killed by SIGTERM"),
        "{}",
        text(&unhandled)
    );
}
