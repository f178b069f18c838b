//! The probe inside a real tokio service run by quiesce as a process target: each variant gets
//! exactly the verdict its bug calls for.

use quiesce::infra::{BackendKind, InfraConfig};
use quiesce::run::{RunOptions, run};
use quiesce::scenario::{ReadyProbe, Scenario};
use quiesce::signal::SignalHandler;
use quiesce::verdict::{CheckName, Outcome, Verdict};

async fn run_variant(variant: &str) -> Verdict {
    let scenario = Scenario::builder(variant, [env!("CARGO_BIN_EXE_quiesce-probe-demo")])
        .infra(InfraConfig {
            backend: BackendKind::Local,
            ..InfraConfig::default()
        })
        .env("QUIESCE_VARIANT", variant)
        .ready(ReadyProbe::Log("^ready$".into()))
        .run_for_ms(300)
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

fn outcome(verdict: &Verdict, check: CheckName) -> &Outcome {
    &verdict
        .results
        .iter()
        .find(|r| r.check == check)
        .unwrap()
        .outcome
}

fn failed(verdict: &Verdict) -> Vec<CheckName> {
    verdict
        .results
        .iter()
        .filter(|r| r.outcome.is_violation())
        .map(|r| r.check)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correct_service_passes_every_check_exactly() {
    let verdict = run_variant("correct").await;
    let text = quiesce::report::summary(&verdict);
    assert_eq!(verdict.violations() + verdict.inconclusive(), 0, "{text}");
    assert!(
        text.contains("0 tasks alive when shutdown completed (tokio probe)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracked_tasks_are_counted() {
    let verdict = run_variant("untracked-task").await;
    let text = quiesce::report::summary(&verdict);
    assert_eq!(failed(&verdict), vec![CheckName::NoLeakedTasks], "{text}");
    let Outcome::Violation { summary, .. } = outcome(&verdict, CheckName::NoLeakedTasks) else {
        unreachable!()
    };
    // One task per 20 ms batch over the 300 ms run: many, and all of them counted.
    let count: u64 = summary.split_whitespace().next().unwrap().parse().unwrap();
    assert!(count >= 3, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampler_thread_never_joined_is_named() {
    let verdict = run_variant("sampler-thread").await;
    let text = quiesce::report::summary(&verdict);
    assert_eq!(failed(&verdict), vec![CheckName::NoLeakedThreads], "{text}");
    assert!(text.contains("thread `rss-sampler`"), "{text}");
}

/// Asked for the live heap (as a soak asks), the probe writes it on a thread of its own while
/// the service runs, and stops that thread before it counts threads: the correct service still
/// passes every check, and the file holds the allocator's bytes in use.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_heap_is_written_for_a_soak_and_its_thread_is_not_a_leak() {
    let dir = tempfile::tempdir().unwrap();
    let heap = dir.path().join("heap");
    let scenario = Scenario::builder("heap", [env!("CARGO_BIN_EXE_quiesce-probe-demo")])
        .infra(InfraConfig {
            backend: BackendKind::Local,
            ..InfraConfig::default()
        })
        .env("QUIESCE_HEAP_FILE", heap.display().to_string())
        .env("QUIESCE_HEAP_INTERVAL_MS", "20")
        .ready(ReadyProbe::Log("^ready$".into()))
        .run_for_ms(300)
        .build()
        .unwrap();
    let options = RunOptions {
        env: Vec::new(),
        out_dir: Some(dir.path().join("run")),
    };
    let verdict = run(&scenario, &options, &mut SignalHandler::noop())
        .await
        .unwrap();
    let text = quiesce::report::summary(&verdict);
    assert_eq!(verdict.violations() + verdict.inconclusive(), 0, "{text}");
    assert!(!text.contains("quiesce-heap"), "{text}");
    let written = std::fs::read_to_string(&heap).expect("the heap file");
    let numbers: Vec<u64> = written
        .split_whitespace()
        .map(|n| n.parse().expect("a number of bytes"))
        .collect();
    let [bytes, held] = numbers[..] else {
        panic!("in use and held: {written:?}")
    };
    // A tokio service with its runtime has at least some KiB in use, and far less than a GiB;
    // the allocator holds at least what is in use.
    assert!((10_000..1 << 30).contains(&bytes), "{bytes}");
    assert!(held >= bytes, "held {held} < in use {bytes}");
    assert!(written.ends_with('\n'));
}
