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
    // Case 1 of seed 64 is two latency steps: 2000 ms on the leader's own connection 750 ms
    // after ready, which breaks the invariant whoever else runs, and 100 ms on every client
    // at start+500, which does nothing. (A latency on every client is a flaky schedule: see
    // the file.)
    options.seed = 64;
    options.cases = cases;
    options.max_steps = 2;
    options.actions = vec![Action::Latency];
    options.checks = vec![CheckName::SingleLeader];
    options.shrink_runs = 8;
    options.env = vec![("QUIESCE_VARIANT".to_owned(), variant.to_owned())];
    options
}

/// The exploration's report, and its progress lines (also printed).
async fn run(file: &Path, options: &ExploreOptions) -> (ExploreReport, Vec<String>) {
    let scenario = Scenario::load(file).unwrap_or_else(|e| panic!("{e}"));
    let mut lines = Vec::new();
    let mut log = |line: &str| {
        eprintln!("  {line}");
        lines.push(line.to_owned());
    };
    let report = explore(
        &scenario,
        file,
        options,
        &mut SignalHandler::noop(),
        &mut log,
    )
    .await
    .unwrap_or_else(|e| panic!("explore: {e}"));
    (report, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_finds_and_shrinks_a_leader_ignoring_lost_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario_file(dir.path());
    let out = dir.path().join("explore");
    let (report, lines) = run(&file, &options(&out, "ignores-lost-leadership", 4)).await;
    let summary = quiesce::explore::summary(&report);
    // No schedule is shrunk twice: the walk comes back to some, and skips them.
    let mut shrunk = std::collections::BTreeSet::new();
    for line in lines.iter().filter(|l| l.starts_with("shrink ")) {
        let (_, schedule) = line.split_once(": ").expect(line);
        assert!(shrunk.insert(schedule.to_owned()), "{}", lines.join("\n"));
    }
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
    // It broke the invariant again in every confirmation run.
    let (failed, of) = finding.confirmed;
    assert!(of >= 2 && failed == of, "{summary}");

    // The replay file plays that one step and breaks the same invariant, with no --env: in
    // one of six runs at least. A timing bug does not show every time: the shrunk schedule,
    // 2 s on every client at ready+0, passed 4 of 12 runs seen (a race between the leader and
    // the standby for the expired lock, see the scenario file), so two runs were not enough
    // (both passed once in CI), and six passes in a row come about once in 700 runs of the
    // test; the confirmation above ran it twice already.
    let replay = finding.replay.as_ref().expect(&summary);
    let replayed = Scenario::load(replay).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(replayed.faults, finding.shrunk.steps);
    let mut reports = Vec::new();
    const REPLAYS: usize = 6;
    for attempt in 0..REPLAYS {
        let verdict = quiesce::run::run(
            &replayed,
            &quiesce::run::RunOptions {
                env: Vec::new(),
                out_dir: Some(dir.path().join(format!("replay-{attempt}"))),
            },
            &mut SignalHandler::noop(),
        )
        .await
        .unwrap();
        reports.push(quiesce::report::summary(&verdict));
        let broken = (verdict.results.iter())
            .any(|r| r.check == CheckName::SingleLeader && r.outcome.is_violation());
        if broken {
            break;
        }
        assert!(attempt + 1 < REPLAYS, "{}", reports.join("\n"));
    }

    // Next time, the kept failure runs first, and still fails (tried up to six times, as
    // above).
    let mut kept = options(&out, "ignores-lost-leadership", 0);
    kept.retries = 5;
    let (again, _) = run(&file, &kept).await;
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
    let (report, _) = run(&file, &options(&dir.path().join("explore"), "correct", 2)).await;
    let summary = quiesce::explore::summary(&report);
    assert_eq!(
        (report.ended, report.cases),
        (Ended::Passed, 2),
        "{summary}"
    );
    assert!(report.finding.is_none(), "{summary}");
}
