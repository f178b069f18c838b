//! `quiesce explore` on `leader-jobs-explore.toml` (the partition scenario without its own
//! schedule): it finds the `ignores-lost-leadership` bug (a leader that lost its lock and keeps
//! running its job), shrinks the schedule to one fault on the leader's connection, and the
//! replay file it writes breaks the same invariant; the next exploration runs it first.

use std::path::{Path, PathBuf};

use quiesce::explore::{Ended, ExploreOptions, ExploreReport, explore};
use quiesce::scenario::{Action, Scenario};
use quiesce::signal::SignalHandler;
use quiesce::verdict::CheckName;

/// `leader-jobs-explore.toml` as a file in `dir`, running this crate's binary on the local
/// backend.
fn scenario_file(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("leader-jobs-explore.toml");
    let text = std::fs::read_to_string(source).unwrap();
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    let binary = env!("CARGO_BIN_EXE_leader-jobs").to_owned();
    table["target"]
        .as_table_mut()
        .unwrap()
        .insert("command".to_owned(), vec![binary].into());
    table.insert(
        "infra".to_owned(),
        toml::Value::Table(toml::toml! { backend = "local" }),
    );
    let path = dir.join("leader-jobs-explore.toml");
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    path
}

fn options(out: &Path, variant: &str, cases: u32) -> ExploreOptions {
    let mut options = ExploreOptions::new(out.to_owned());
    // Case 1 of seed 10 is two latency steps on the leader's own connection.
    options.seed = 10;
    options.cases = cases;
    options.max_steps = 2;
    options.actions = vec![Action::Latency];
    options.checks = vec![CheckName::SingleLeader];
    options.shrink_runs = 16;
    options.env = vec![("QUIESCE_VARIANT".to_owned(), variant.to_owned())];
    options
}

async fn run(file: &Path, options: &ExploreOptions) -> ExploreReport {
    let scenario = Scenario::load(file).unwrap_or_else(|e| panic!("{e}"));
    let mut log = |line: &str| eprintln!("  {line}");
    explore(
        &scenario,
        file,
        options,
        &mut SignalHandler::noop(),
        &mut log,
    )
    .await
    .unwrap_or_else(|e| panic!("explore: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_finds_and_shrinks_a_leader_ignoring_lost_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario_file(dir.path());
    let out = dir.path().join("explore");
    let report = run(&file, &options(&out, "ignores-lost-leadership", 4)).await;
    let summary = quiesce::explore::summary(&report);
    assert_eq!(report.ended, Ended::Failure, "{summary}");
    let finding = report.finding.as_ref().expect(&summary);
    assert!(
        finding.shrunk.violated.contains(&CheckName::SingleLeader),
        "{summary}"
    );
    // One fault, a latency on Redis, is all the bug needs.
    assert_eq!(finding.shrunk.steps.len(), 1, "{summary}");
    assert!(
        finding.original.steps.len() >= finding.shrunk.steps.len(),
        "{summary}"
    );
    let step = &finding.shrunk.steps[0];
    assert_eq!(step.action, Action::Latency, "{summary}");

    // The replay file plays that one step and breaks the same invariant, with no --env.
    let replay = finding.replay.as_ref().expect(&summary);
    let replayed = Scenario::load(replay).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(replayed.faults, finding.shrunk.steps);
    let verdict = quiesce::run::run(
        &replayed,
        &quiesce::run::RunOptions {
            env: Vec::new(),
            out_dir: Some(dir.path().join("replay")),
        },
        &mut SignalHandler::noop(),
    )
    .await
    .unwrap();
    let broken: Vec<CheckName> = verdict
        .results
        .iter()
        .filter(|r| r.outcome.is_violation())
        .map(|r| r.check)
        .collect();
    assert!(
        broken.contains(&CheckName::SingleLeader),
        "{}",
        quiesce::report::summary(&verdict)
    );

    // Next time, the kept failure runs first, and still fails.
    let again = run(&file, &options(&out, "ignores-lost-leadership", 0)).await;
    assert_eq!(
        again.ended,
        Ended::KeptFailure,
        "{}",
        quiesce::explore::summary(&again)
    );
    assert_eq!(again.kept, vec![(replay.clone(), true)]);
}

/// The same exploration of the correct service: it steps down when it loses its lock, so no
/// schedule breaks `single_leader`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_of_the_correct_service_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario_file(dir.path());
    let report = run(&file, &options(&dir.path().join("explore"), "correct", 2)).await;
    let summary = quiesce::explore::summary(&report);
    assert_eq!(
        (report.ended, report.cases),
        (Ended::Passed, 2),
        "{summary}"
    );
    assert!(report.finding.is_none(), "{summary}");
}
