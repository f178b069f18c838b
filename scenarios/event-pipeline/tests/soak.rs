//! `quiesce soak` on `event-pipeline-soak.toml`, shortened to a minute: a leak set by
//! `EVENT_PIPELINE_LEAK_BYTES_PER_RECORD` is found at the rate it was set to, and the correct
//! service is not called leaky. The 30-minute experiment is `scripts/soak-experiment`.

use std::path::Path;
use std::time::Duration;

use quiesce::infra::BackendKind;
use quiesce::scenario::{Scenario, Target};
use quiesce::signal::SignalHandler;
use quiesce::soak::{SoakOptions, SoakReport, soak};
use quiesce::verdict::CheckName;

fn scenario() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("event-pipeline-soak.toml");
    let mut scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    scenario.infra.backend = BackendKind::Local;
    let Target::Process(target) = &mut scenario.target else {
        unreachable!("the file runs the binary")
    };
    target.command[0] = env!("CARGO_BIN_EXE_event-pipeline").to_owned();
    scenario
}

/// A minute at 50 records/s, sampled twice a second, judged on the 50 s after a 10 s warm-up.
async fn soak_for_a_minute(out: &Path, leak_bytes_per_record: u64) -> SoakReport {
    let mut options = SoakOptions::new(Duration::from_secs(60), out.to_owned());
    options.interval = Duration::from_millis(500);
    options.warmup = Duration::from_secs(10);
    options.min_span = Duration::from_secs(40);
    options.env = vec![(
        "EVENT_PIPELINE_LEAK_BYTES_PER_RECORD".to_owned(),
        leak_bytes_per_record.to_string(),
    )];
    soak(&scenario(), &options, &mut SignalHandler::noop(), |_| {})
        .await
        .unwrap_or_else(|e| panic!("soak: {e}"))
}

/// Whether `memory_flat` is in the verdict, and failed.
fn memory_flat_failed(report: &SoakReport) -> Option<bool> {
    report
        .verdict
        .results
        .iter()
        .find(|r| r.check == CheckName::MemoryFlat)
        .map(|r| r.outcome.is_violation())
}

/// 2,000 bytes a record at 50 records/s is 8,240 MiB/day: found, at that rate, by the
/// anonymous-memory series, and every other check still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_leak_is_found_at_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let report = soak_for_a_minute(dir.path(), 2_000).await;
    let summary = quiesce::report::summary(&report.verdict);
    assert!(report.memory.is_leak(), "{summary}");
    assert_eq!(
        report.verdict.violations(),
        1,
        "only memory_flat: {summary}"
    );
    let trend = report.memory.trend().expect("a leak has a trend");
    let set = 2_000.0 * 50.0 * 86_400.0 / 1_048_576.0;
    assert!(
        (trend.slope_mb_per_day - set).abs() < set * 0.15,
        "measured {:.0} MiB/day, set {set:.0}: {summary}",
        trend.slope_mb_per_day
    );
    assert!(report.samples >= 100, "{} samples", report.samples);
    assert!(report.timeline.is_file() && report.plot.is_file());
    assert_eq!(memory_flat_failed(&report), Some(true), "{summary}");
}

/// The correct service over the same minute: not a leak (flat, or grown then stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correct_service_is_not_called_leaky() {
    let dir = tempfile::tempdir().unwrap();
    let report = soak_for_a_minute(dir.path(), 0).await;
    let summary = quiesce::report::summary(&report.verdict);
    assert!(!report.memory.is_leak(), "{summary}");
    assert_eq!(report.verdict.violations(), 0, "{summary}");
    assert_eq!(memory_flat_failed(&report), Some(false), "{summary}");
}
