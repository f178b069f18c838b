//! Every variant of the catalogue against the verdict it must get (VARIANTS.md), as a process
//! (the binary, with the probe and a standby instance) and as an in-process graph. A check
//! that passes where it must fail, or fails where it must pass, fails the test.

use std::path::Path;

use quiesce::infra::BackendKind;
use quiesce::scenario::{Scenario, Target};
use quiesce::verdict::CheckName;

use CheckName::*;

/// The scenario file on the local backend, running this crate's binary or its graph.
fn scenario(graph: bool) -> Scenario {
    scenario_file("leader-jobs.toml", graph)
}

fn scenario_file(file: &str, graph: bool) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let mut scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    scenario.infra.backend = BackendKind::Local;
    if graph {
        scenario.target = Target::Graph(leader_jobs::graph());
    } else if let Target::Process(target) = &mut scenario.target {
        target.command[0] = env!("CARGO_BIN_EXE_leader-jobs").to_owned();
    }
    scenario
}

/// A graph's child processes are not tracked.
const GRAPH: &[CheckName] = &[NoOrphanProcesses];

/// The catalogue: variant, as a graph?, failing checks, inconclusive checks.
#[rustfmt::skip]
const ROWS: &[(&str, bool, &[CheckName], &[CheckName])] = &[
    ("correct", false, &[], &[]),
    ("lock-not-released", false, &[LockReleased], &[]),
    ("duplicate-registration", false, &[JobsOncePerInterval], &[]),
    ("heartbeat-leak", false, &[NoLeakedTasks], &[]),
    ("correct", true, &[], GRAPH),
    ("lock-not-released", true, &[LockReleased], GRAPH),
    ("heartbeat-leak", true, &[NoLeakedTasks], GRAPH),
];

/// `leader-jobs-partition.toml`: the service alone is cut off from Redis once it leads, the
/// standby takes over, the partition heals. It does not hold the lock when it is stopped, so
/// the file turns `lock_released` off: nothing to judge.
#[rustfmt::skip]
const PARTITION_ROWS: &[(&str, &[CheckName], &[CheckName])] = &[
    ("correct", &[], &[]),
    ("ignores-lost-leadership", &[SingleLeader, JobsOncePerInterval], &[]),
];

/// Runs a row of [`PARTITION_ROWS`] and asserts its exact verdict.
async fn check_partition_row(variant: &str) {
    let (_, failing, unsure) = PARTITION_ROWS
        .iter()
        .find(|r| r.0 == variant)
        .unwrap_or_else(|| panic!("no partition row for {variant}"));
    let scenario = scenario_file("leader-jobs-partition.toml", false);
    assert_verdict(&scenario, variant, failing, unsure).await;
}

/// Runs `variant` on `scenario` and asserts its exact verdict; returns its stop time.
async fn assert_verdict(
    scenario: &Scenario,
    variant: &str,
    failing: &[CheckName],
    unsure: &[CheckName],
) -> Option<u64> {
    let checked =
        quiesce::catalogue::check(scenario, &[("QUIESCE_VARIANT", variant)], failing, unsure)
            .await
            .unwrap_or_else(|e| panic!("{variant}: no verdict: {e}"));
    assert_eq!(
        checked.got,
        checked.want,
        "{} ({}) / {variant}: wrong verdict\n{}",
        scenario.name,
        scenario.target.describe(),
        checked.report
    );
    checked.stop_ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_of_the_leader() {
    for (variant, _, _) in PARTITION_ROWS {
        check_partition_row(variant).await;
    }
}

/// Runs the row and asserts its exact verdict; returns its stop time.
async fn check_row(variant: &str, graph: bool) -> Option<u64> {
    let (_, _, failing, unsure) = ROWS
        .iter()
        .find(|r| r.0 == variant && r.1 == graph)
        .unwrap_or_else(|| panic!("no row for {variant}"));
    assert_verdict(&scenario(graph), variant, failing, unsure).await
}

// One test per process row, so they run side by side.
quiesce::row_tests!(check_row {
    correct => ("correct", false),
    lock_not_released => ("lock-not-released", false),
    duplicate_registration => ("duplicate-registration", false),
    heartbeat_leak => ("heartbeat-leak", false),
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_graph_rows() {
    for (variant, graph, _, _) in ROWS.iter().filter(|r| r.1) {
        check_row(variant, *graph).await;
    }
}

/// Opt-in evidence: the whole catalogue `QUIESCE_REPEAT` times (default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: about 65 s per repetition; run with --run-ignored only"]
async fn catalogue_repeated() {
    let mut repeated = quiesce::catalogue::Repeated::default();
    for round in repeated.rounds() {
        for (variant, graph, _, _) in ROWS.iter().filter(|r| quiesce::catalogue::selected(r.0)) {
            let stop = check_row(variant, *graph).await;
            repeated.ran(variant, *graph, stop);
        }
        for (variant, _, _) in PARTITION_ROWS
            .iter()
            .filter(|r| quiesce::catalogue::selected(r.0))
        {
            check_partition_row(variant).await;
            repeated.ran_more(1);
        }
        repeated.round_done(round);
    }
    repeated.finish("");
}

/// The rows whose bug shows at the stop, in loop mode: every cycle of a 2-cycle loop (one
/// infrastructure, the leader key kept between cycles) gets the row's verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_mode_gives_each_cycle_the_run_verdict() {
    for variant in ["correct", "lock-not-released", "heartbeat-leak"] {
        let (_, _, failing, unsure) = ROWS
            .iter()
            .find(|r| r.0 == variant && !r.1)
            .unwrap_or_else(|| panic!("no row for {variant}"));
        let env = [("QUIESCE_VARIANT", variant)];
        quiesce::catalogue::check_loop(&scenario(false), &env, failing, unsure, 2)
            .await
            .unwrap_or_else(|e| panic!("{variant}: {e}"));
    }
}
