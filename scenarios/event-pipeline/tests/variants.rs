//! Every variant of the catalogue against the verdict it must get (VARIANTS.md), as a process
//! (the binary, with the probe) and, for a few, as an in-process graph. A check that passes
//! where it must fail, or fails where it must pass, fails the test.

use std::path::Path;

use quiesce::infra::BackendKind;
use quiesce::run::{RunOptions, run};
use quiesce::scenario::{Scenario, Target};
use quiesce::signal::SignalHandler;
use quiesce::verdict::{CheckName, Outcome, Verdict};

/// A scenario file of this crate, on the local backend, running this crate's binary.
fn scenario(file: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let mut scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    scenario.infra.backend = BackendKind::Local;
    let Target::Process(target) = &mut scenario.target else {
        unreachable!("the files run the binary")
    };
    target.command[0] = env!("CARGO_BIN_EXE_event-pipeline").to_owned();
    scenario
}

/// The same scenario with the in-process graph as its target.
fn as_graph(mut scenario: Scenario) -> Scenario {
    scenario.target = Target::Graph(event_pipeline::graph());
    scenario
}

async fn verdict(scenario: &Scenario, variant: &str) -> Verdict {
    let options = RunOptions {
        env: vec![("QUIESCE_VARIANT".to_owned(), variant.to_owned())],
        out_dir: None,
    };
    run(scenario, &options, &mut SignalHandler::noop())
        .await
        .unwrap_or_else(|e| panic!("{variant}: no verdict: {e}"))
}

/// Each check's outcome as `P`, `F` or `?`, in report order: `starts_within=P ...`.
fn table(verdict: &Verdict) -> String {
    verdict
        .results
        .iter()
        .map(|r| {
            let mark = match r.outcome {
                Outcome::Pass { .. } => "P",
                Outcome::Violation { .. } => "F",
                Outcome::Inconclusive { .. } => "?",
            };
            format!("{}={mark}", r.check)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The expected table: every check passes except the ones named.
fn expect(scenario: &Scenario, failing: &[CheckName], unsure: &[CheckName]) -> String {
    scenario
        .enabled_checks()
        .map(|c| {
            let mark = if failing.contains(&c) {
                "F"
            } else if unsure.contains(&c) {
                "?"
            } else {
                "P"
            };
            format!("{c}={mark}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn check(scenario: &Scenario, variant: &str, failing: &[CheckName], unsure: &[CheckName]) {
    let verdict = verdict(scenario, variant).await;
    let got = table(&verdict);
    let want = expect(scenario, failing, unsure);
    assert_eq!(
        got,
        want,
        "{} / {variant}: wrong verdict\n{}",
        scenario.name,
        quiesce::report::summary(&verdict)
    );
}

use CheckName::*;

// The clean stop (event-pipeline.toml): one test per variant, so they run side by side.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_correct() {
    check(&scenario("event-pipeline.toml"), "correct", &[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_untracked_task() {
    check(
        &scenario("event-pipeline.toml"),
        "untracked-task",
        &[NoLeakedTasks],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_dropped_handle() {
    check(
        &scenario("event-pipeline.toml"),
        "dropped-handle",
        &[NoLeakedTasks],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_no_final_commit() {
    check(
        &scenario("event-pipeline.toml"),
        "no-final-commit",
        &[OffsetsCommitted, NoRedelivery],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_commit_before_process() {
    // Commits on receipt, but a clean stop drains the queue: only SIGKILL shows it.
    check(
        &scenario("event-pipeline.toml"),
        "commit-before-process",
        &[],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_producer_not_flushed() {
    // Every output was delivered before the stop came: only a stop mid-stream would show it.
    check(
        &scenario("event-pipeline.toml"),
        "producer-not-flushed",
        &[],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_sampler_thread() {
    check(
        &scenario("event-pipeline.toml"),
        "sampler-thread",
        &[NoLeakedThreads],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_slow_drain() {
    check(
        &scenario("event-pipeline.toml"),
        "slow-drain",
        &[StopsWithin],
        &[],
    )
    .await;
}

/// Opt-in: not yet reliable. In about one run in three the correct variant shows one or two
/// inputs on one partition "committed but never processed" and another processed twice, which
/// the same pipeline never shows when the workload is produced before it consumes; and the
/// `producer-not-flushed` variant has not lost an output here yet. Both are open (VARIANTS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "open: false loss under a paced workload; run with --run-ignored only"]
async fn midstream_stop_catalogue() {
    let s = scenario("event-pipeline-midstream.toml");
    check(&s, "correct", &[], &[]).await;
    check(
        &s,
        "producer-not-flushed",
        &[OffsetsCommitted, NoMessageLoss, ProducerFlushed],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_catalogue() {
    let s = scenario("event-pipeline-kill.toml");
    // Nothing runs on the way out, so what only the way out can show is not decided.
    let killed = [ExitCode, NoLeakedTasks, NoLeakedThreads, ProducerFlushed];
    check(&s, "correct", &[], &killed).await;
    check(
        &s,
        "commit-before-process",
        &[OffsetsCommitted, NoMessageLoss],
        &killed,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_graph_catalogue() {
    let s = as_graph(scenario("event-pipeline.toml"));
    // A graph's child processes are not tracked.
    let untracked = [NoOrphanProcesses];
    check(&s, "correct", &[], &untracked).await;
    check(&s, "untracked-task", &[NoLeakedTasks], &untracked).await;
    check(
        &s,
        "no-final-commit",
        &[OffsetsCommitted, NoRedelivery],
        &untracked,
    )
    .await;
}
