//! `quiesce run` on in-process graphs: a Rust service graph on a runtime the harness owns, one
//! per lifecycle bug, and the verdict each must get.

use std::time::Duration;

use quiesce::infra::{BackendKind, InfraConfig};
use quiesce::run::{RunOptions, run};
use quiesce::scenario::{ChecksConfig, Scenario};
use quiesce::signal::SignalHandler;
use quiesce::target::{Graph, GraphContext};
use quiesce::verdict::{CheckName, Outcome, Verdict};
use tokio_util::task::TaskTracker;

async fn run_graph(graph: Graph) -> Verdict {
    run_graph_killed_after(graph, 3_000).await
}

/// As [`run_graph`], killing the graph `kill_after_ms` after the stop.
async fn run_graph_killed_after(graph: Graph, kill_after_ms: u64) -> Verdict {
    let mut checks = ChecksConfig::default();
    checks.stops_within.params.deadline_ms = 1_000;
    checks.starts_within.params.deadline_ms = 2_000;
    let scenario = Scenario::graph(graph.name().to_owned(), graph)
        .infra(InfraConfig {
            backend: BackendKind::Local,
            ..InfraConfig::default()
        })
        .run_for_ms(200)
        .kill_after_ms(kill_after_ms)
        .checks(checks)
        .build()
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let options = RunOptions {
        env: Vec::new(),
        out_dir: Some(out.path().to_owned()),
    };
    run(&scenario, &options, &mut SignalHandler::noop())
        .await
        .unwrap()
}

fn kind(verdict: &Verdict, check: CheckName) -> &'static str {
    match &verdict
        .results
        .iter()
        .find(|r| r.check == check)
        .unwrap()
        .outcome
    {
        Outcome::Pass { .. } => "pass",
        Outcome::Violation { .. } => "FAIL",
        Outcome::Inconclusive { .. } => "????",
    }
}

/// The outcome of every check, in report order, as one line.
fn table(verdict: &Verdict) -> String {
    CheckName::LIFECYCLE
        .iter()
        .map(|c| format!("{c}={}", kind(verdict, *c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A worker that stops when told, tracked: what a correct graph does.
fn tracked_worker(tracker: &TaskTracker, ctx: &GraphContext) {
    let token = ctx.shutdown.clone();
    tracker.spawn(async move {
        while !token.is_cancelled() {
            tokio::select! {
                () = token.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    });
}

async fn drain(tracker: TaskTracker) {
    tracker.close();
    tracker.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correct_graph_passes() {
    let graph = Graph::new("correct", |mut ctx| async move {
        let tracker = TaskTracker::new();
        tracked_worker(&tracker, &ctx);
        ctx.ready();
        ctx.shutdown.cancelled().await;
        drain(tracker).await;
        Ok(())
    });
    let verdict = run_graph(graph).await;
    assert_eq!(
        table(&verdict),
        "starts_within=pass stops_within=pass exit_code=pass no_leaked_tasks=pass \
         no_leaked_threads=pass no_orphan_processes=????",
        "{}",
        quiesce::report::summary(&verdict)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracked_tasks_are_counted() {
    let graph = Graph::new("untracked-task", |mut ctx| async move {
        let tracker = TaskTracker::new();
        tracked_worker(&tracker, &ctx);
        for _ in 0..3 {
            // Fire and forget, as in seed 001: nobody cancels these.
            SPAWN_LINE.store(line!() + 1, std::sync::atomic::Ordering::SeqCst);
            drop(tokio::spawn(async {
                tokio::time::sleep(Duration::from_secs(3600)).await
            }));
        }
        ctx.ready();
        ctx.shutdown.cancelled().await;
        drain(tracker).await;
        Ok(())
    });
    let verdict = run_graph(graph).await;
    let text = quiesce::report::summary(&verdict);
    assert!(table(&verdict).contains("no_leaked_tasks=FAIL"), "{text}");
    assert!(
        text.contains("3 tasks still alive when shutdown completed"),
        "{text}"
    );
    assert_eq!(verdict.violations(), 1, "{text}");
    // Each leak is named by the line that spawned it where tokio's task hooks are built in
    // (`--cfg tokio_unstable`, which scripts/test also runs); else the report says so.
    let line = SPAWN_LINE.load(std::sync::atomic::Ordering::SeqCst);
    let spawned_here = format!("tests/run_graph.rs:{line}:");
    if quiesce_probe::SpawnRegistry::ENABLED {
        assert_eq!(text.matches(&spawned_here).count(), 3, "{text}");
        // With task dumps built in too, each leak comes with its stack: parked in the sleep.
        if cfg!(feature = "taskdump") {
            assert_eq!(
                text.matches("untracked_tasks_are_counted").count(),
                3,
                "{text}"
            );
        }
    } else {
        assert_eq!(
            text.matches("build with --cfg tokio_unstable").count(),
            3,
            "{text}"
        );
    }
}

/// The line of the `tokio::spawn` in `untracked_tasks_are_counted`.
static SPAWN_LINE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_never_joined_is_named() {
    let graph = Graph::new("sampler-thread", |mut ctx| async move {
        std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .unwrap();
        ctx.ready();
        ctx.shutdown.cancelled().await;
        Ok(())
    });
    let verdict = run_graph(graph).await;
    let text = quiesce::report::summary(&verdict);
    assert!(table(&verdict).contains("no_leaked_threads=FAIL"), "{text}");
    assert!(text.contains("thread `rss-sampler`"), "{text}");
    assert_eq!(verdict.violations(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drain_misses_the_deadline() {
    let graph = Graph::new("slow-drain", |mut ctx| async move {
        ctx.ready();
        ctx.shutdown.cancelled().await;
        tokio::time::sleep(Duration::from_millis(1_800)).await;
        Ok(())
    });
    let verdict = run_graph(graph).await;
    let text = quiesce::report::summary(&verdict);
    assert!(table(&verdict).contains("stops_within=FAIL"), "{text}");
    assert!(text.contains("after the shutdown token"), "{text}");
    assert_eq!(verdict.violations(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_panics_fail_exit_code() {
    let failing = Graph::new("returns-error", |mut ctx| async move {
        ctx.ready();
        ctx.shutdown.cancelled().await;
        Err("flush failed: broker unavailable".to_owned())
    });
    let verdict = run_graph(failing).await;
    let text = quiesce::report::summary(&verdict);
    assert!(table(&verdict).contains("exit_code=FAIL"), "{text}");
    assert!(text.contains("flush failed: broker unavailable"), "{text}");

    let panicking = Graph::new("panics", |mut ctx| async move {
        ctx.ready();
        ctx.shutdown.cancelled().await;
        panic!("commit on a closed consumer");
    });
    // The panic hook prints a backtrace when RUST_BACKTRACE is set (as test runners set it),
    // and symbolizing one in a debug build takes seconds on a loaded machine: the graph
    // returns only after that, so it gets more than the default 3 s.
    let verdict = run_graph_killed_after(panicking, 60_000).await;
    let text = quiesce::report::summary(&verdict);
    assert!(table(&verdict).contains("exit_code=FAIL"), "{text}");
    assert!(
        text.contains("panicked: commit on a closed consumer"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_and_never_stopping_graphs() {
    let unready = Graph::new("never-ready", |ctx| async move {
        ctx.shutdown.cancelled().await;
        Ok(())
    });
    let verdict = run_graph(unready).await;
    assert!(
        table(&verdict).starts_with("starts_within=FAIL stops_within=????"),
        "{}",
        table(&verdict)
    );

    let stubborn = Graph::new("ignores-shutdown", |mut ctx| async move {
        ctx.ready();
        std::future::pending::<()>().await;
        Ok(())
    });
    let verdict = run_graph(stubborn).await;
    let text = quiesce::report::summary(&verdict);
    assert!(
        table(&verdict).contains("stops_within=FAIL exit_code=FAIL"),
        "{text}"
    );
    assert!(
        text.contains("the graph did not return by itself"),
        "{text}"
    );
    assert!(
        verdict
            .timeline
            .iter()
            .any(|e| e.event == "killed: its future was dropped"),
        "{text}"
    );
}
