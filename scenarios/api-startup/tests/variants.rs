//! Every variant of the catalogue against the verdict it must get (VARIANTS.md), as a process
//! (the binary, with the probe) and, for a few, as an in-process graph. A check that passes
//! where it must fail, or fails where it must pass, fails the test.

use std::path::Path;

use quiesce::infra::BackendKind;
use quiesce::scenario::{Scenario, Target};
use quiesce::verdict::CheckName;

use CheckName::*;

/// The scenario file on the local backend, running this crate's binary or its graph.
fn scenario(graph: bool) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("api-startup.toml");
    let mut scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    scenario.infra.backend = BackendKind::Local;
    if graph {
        scenario.target = Target::Graph(api_startup::graph());
    } else if let Target::Process(target) = &mut scenario.target {
        target.command[0] = env!("CARGO_BIN_EXE_api-startup").to_owned();
    }
    scenario
}

/// A graph's child processes are not tracked.
const GRAPH: &[CheckName] = &[NoOrphanProcesses];
/// A start that hangs: nothing after it can be judged, and the hung process is killed.
const HUNG: &[CheckName] = &[
    StopsWithin,
    ExitCode,
    NoLeakedTasks,
    NoLeakedThreads,
    ReadinessTruthful,
];

/// The catalogue: variant, as a graph?, failing checks, inconclusive checks.
#[rustfmt::skip]
const ROWS: &[(&str, bool, &[CheckName], &[CheckName])] = &[
    ("correct", false, &[], &[]),
    ("ready-always-200", false, &[ReadinessTruthful], &[]),
    ("redis-required", false, &[ReadinessTruthful], &[]),
    ("unmirrored-shutdown", false, &[NoLeakedTasks], &[]),
    // Every start hangs (API_STARTUP_CIRCULAR_PERCENT=100): caught at startup.
    ("circular-init", false, &[StartsWithin], HUNG),
    ("correct", true, &[], GRAPH),
    ("ready-always-200", true, &[ReadinessTruthful], GRAPH),
    ("unmirrored-shutdown", true, &[NoLeakedTasks], GRAPH),
];

/// The row's scenario and settings: circular-init deadlocks on every start, with short
/// deadlines.
fn prepare(variant: &str, graph: bool) -> (Scenario, Vec<(&str, &str)>) {
    let mut scenario = scenario(graph);
    let mut env = vec![("QUIESCE_VARIANT", variant)];
    if variant == "circular-init" {
        env.push(("API_STARTUP_CIRCULAR_PERCENT", "100"));
        scenario.checks.starts_within.params.deadline_ms = 3_000;
        scenario.stop.kill_after_ms = 2_000;
    }
    (scenario, env)
}

/// Runs the row and asserts its exact verdict; returns its stop time.
async fn check_row(variant: &str, graph: bool) -> Option<u64> {
    let (_, _, failing, unsure) = ROWS
        .iter()
        .find(|r| r.0 == variant && r.1 == graph)
        .unwrap_or_else(|| panic!("no row for {variant}"));
    let (scenario, env) = prepare(variant, graph);
    let checked = quiesce::catalogue::check(&scenario, &env, failing, unsure)
        .await
        .unwrap_or_else(|e| panic!("{variant}: no verdict: {e}"));
    assert_eq!(
        checked.got, checked.want,
        "{variant} (graph: {graph}): wrong verdict\n{}",
        checked.report
    );
    checked.stop_ms
}

// One test per process row, so they run side by side.
quiesce::row_tests!(check_row {
    correct => ("correct", false),
    ready_always_200 => ("ready-always-200", false),
    redis_required => ("redis-required", false),
    unmirrored_shutdown => ("unmirrored-shutdown", false),
    circular_init => ("circular-init", false),
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_graph_rows() {
    for (variant, graph, _, _) in ROWS.iter().filter(|r| r.1) {
        check_row(variant, *graph).await;
    }
}

/// Opt-in evidence: the whole catalogue `QUIESCE_REPEAT` times (default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: about a minute per repetition; run with --run-ignored only"]
async fn catalogue_repeated() {
    let mut repeated = quiesce::catalogue::Repeated::default();
    for round in repeated.rounds() {
        for (variant, graph, _, _) in ROWS.iter().filter(|r| quiesce::catalogue::selected(r.0)) {
            let stop = check_row(variant, *graph).await;
            repeated.ran(variant, *graph, stop);
        }
        repeated.round_done(round);
    }
    repeated.finish("");
}

/// The rows whose bug shows at startup or at the stop, in loop mode: every cycle of a
/// 2-cycle loop on one infrastructure gets the row's verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_mode_gives_each_cycle_the_run_verdict() {
    for variant in ["correct", "circular-init", "unmirrored-shutdown"] {
        let (_, _, failing, unsure) = ROWS
            .iter()
            .find(|r| r.0 == variant && !r.1)
            .unwrap_or_else(|| panic!("no row for {variant}"));
        let (scenario, env) = prepare(variant, false);
        quiesce::catalogue::check_loop(&scenario, &env, failing, unsure, 2)
            .await
            .unwrap_or_else(|e| panic!("{variant}: {e}"));
    }
}
