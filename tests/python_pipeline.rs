//! `scenarios/python-pipeline`: a Python asyncio service with aiokafka gets the same Kafka
//! checks as the Rust pipeline, through the same contract and the Python probe. Each variant
//! must get exactly its verdict.

use std::path::Path;

use quiesce::infra::BackendKind;
use quiesce::run::{RunOptions, run};
use quiesce::scenario::Scenario;
use quiesce::signal::SignalHandler;
use quiesce::verdict::{CheckName, Outcome};

use CheckName::*;

async fn check(variant: &str, failing: &[CheckName]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/python-pipeline/python-pipeline.toml");
    let mut scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    scenario.infra.backend = BackendKind::Local;
    let options = RunOptions {
        env: vec![("QUIESCE_VARIANT".to_owned(), variant.to_owned())],
        out_dir: None,
    };
    let verdict = run(&scenario, &options, &mut SignalHandler::noop())
        .await
        .unwrap_or_else(|e| panic!("{variant}: no verdict: {e}"));
    let report = quiesce::report::summary(&verdict);
    let got: Vec<(CheckName, bool)> = verdict
        .results
        .iter()
        .map(|r| {
            assert!(
                !matches!(r.outcome, Outcome::Inconclusive { .. }),
                "{variant}: {} inconclusive (is aiokafka installed? run scripts/setup)\n{report}",
                r.check
            );
            (r.check, r.outcome.is_violation())
        })
        .collect();
    let want: Vec<(CheckName, bool)> = scenario
        .enabled_checks()
        .map(|c| (c, failing.contains(&c)))
        .collect();
    assert_eq!(got, want, "{variant}: wrong verdict\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correct_passes_every_check() {
    check("correct", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracked_task_is_a_leaked_task() {
    check("untracked-task", &[NoLeakedTasks]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_final_commit_is_named() {
    check("no-final-commit", &[OffsetsCommitted]).await;
}
