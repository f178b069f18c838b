//! `scenarios/python-pipeline`: a Python asyncio service with aiokafka and redis-py gets the
//! same Kafka checks as the Rust pipeline, through the same contract and the Python probe.
//! Each variant must get exactly its verdict.

use std::collections::BTreeMap;
use std::path::Path;

use quiesce::infra::BackendKind;
use quiesce::scenario::Scenario;
use quiesce::verdict::CheckName;

use CheckName::*;

/// The catalogue: variant and the checks it fails.
const ROWS: &[(&str, &[CheckName])] = &[
    ("correct", &[]),
    ("untracked-task", &[NoLeakedTasks]),
    ("no-final-commit", &[OffsetsCommitted, NoRedelivery]),
];

/// Nothing may be undecided: the restart rejoins the group and consumes the rest (so
/// redelivery is judged), and aiokafka leaves its group from generation 1. An inconclusive
/// check would mean aiokafka or redis-py is missing, or the broker lost the rejoin.
const UNDECIDED: &[CheckName] = &[];

/// Runs the row and asserts its exact verdict; returns its stop time.
async fn check(variant: &str) -> Option<u64> {
    let (_, failing) = ROWS.iter().find(|r| r.0 == variant).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/python-pipeline/python-pipeline.toml");
    let mut scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    scenario.infra.backend = BackendKind::Local;
    let checked = quiesce::catalogue::check(
        &scenario,
        &[("QUIESCE_VARIANT", variant)],
        failing,
        UNDECIDED,
    )
    .await
    .unwrap_or_else(|e| panic!("{variant}: no verdict: {e}"));
    assert_eq!(
        checked.got, checked.want,
        "{variant}: wrong verdict (is aiokafka installed? run scripts/setup)\n{}",
        checked.report
    );
    checked.stop_ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correct_passes_every_check() {
    check("correct").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracked_task_is_a_leaked_task() {
    check("untracked-task").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_final_commit_is_named() {
    check("no-final-commit").await;
}

/// Opt-in evidence: the catalogue `QUIESCE_REPEAT` times (default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: about 10 s per repetition; run with --run-ignored only"]
async fn catalogue_repeated() {
    let times = quiesce::catalogue::repetitions();
    let mut stops: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut runs = 0;
    for round in 1..=times {
        for (variant, _) in ROWS.iter().filter(|r| quiesce::catalogue::selected(r.0)) {
            if let Some(ms) = check(variant).await {
                stops.entry(variant).or_default().push(ms);
            }
            runs += 1;
        }
        eprintln!("round {round}/{times}: every row exact");
    }
    for (row, ms) in &mut stops {
        eprintln!("stop time, {row}: {}", quiesce::catalogue::spread(ms));
    }
    eprintln!("{times} rounds, {runs} runs, 0 mismatches");
}
