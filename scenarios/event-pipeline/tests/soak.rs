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
    scenario_file("event-pipeline-soak.toml")
}

fn scenario_file(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let mut scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    scenario.infra.backend = BackendKind::Local;
    let Target::Process(target) = &mut scenario.target else {
        unreachable!("the file runs the binary")
    };
    target.command[0] = env!("CARGO_BIN_EXE_event-pipeline").to_owned();
    scenario
}

/// A minute at 50 records/s, sampled twice a second, judged on the 50 s after a 10 s warm-up,
/// against 250 MB/day: what a minute can tell. The correct service's anonymous memory still
/// rose 23 KB over one such minute (client buffers warming up; +32.9 MB/day, judged a leak at
/// the 25 MB/day a soak under two hours holds), while the leaks these tests set are 8 GB/day.
async fn soak_for_a_minute(out: &Path, leak_bytes_per_record: u64) -> SoakReport {
    let leak = leak_bytes_per_record.to_string();
    let env = [("EVENT_PIPELINE_LEAK_BYTES_PER_RECORD", leak.as_str())];
    soak_scenario_for_a_minute(&scenario(), out, &env).await
}

async fn soak_scenario_for_a_minute(
    scenario: &Scenario,
    out: &Path,
    env: &[(&str, &str)],
) -> SoakReport {
    let mut options = SoakOptions::new(Duration::from_secs(60), out.to_owned());
    options.interval = Duration::from_millis(500);
    options.warmup = Duration::from_secs(10);
    options.min_span = Duration::from_secs(40);
    options.thresholds = quiesce::soak::Thresholds {
        resident: 250.0,
        heap: Some(250.0),
    };
    options.env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    soak(scenario, &options, &mut SignalHandler::noop(), |_| {})
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
    assert_eq!(report.soaked.len(), 1, "one process target: {summary}");
    assert!(report.soaked[0].memory.is_leak(), "{summary}");
    assert_eq!(
        report.verdict.violations(),
        1,
        "only memory_flat: {summary}"
    );
    let trend = report.soaked[0].memory.trend().expect("a leak has a trend");
    let set = 2_000.0 * 50.0 * 86_400.0 / 1_048_576.0;
    assert!(
        (trend.slope_mb_per_day - set).abs() < set * 0.15,
        "measured {:.0} MiB/day, set {set:.0}: {summary}",
        trend.slope_mb_per_day
    );
    assert!(
        report.soaked[0].samples >= 100,
        "{} samples",
        report.soaked[0].samples
    );
    // The probe reports the live heap, and the leak is found there, where it is exact.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    assert_eq!(
        report.soaked[0].memory.series(),
        quiesce_soak::Series::Heap,
        "{summary}"
    );
    assert!(report.soaked[0].timeline.is_file() && report.soaked[0].plot.is_file());
    assert_eq!(memory_flat_failed(&report), Some(true), "{summary}");
}

/// The correct service over the same minute: not a leak (flat, or grown then stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correct_service_is_not_called_leaky() {
    let dir = tempfile::tempdir().unwrap();
    let report = soak_for_a_minute(dir.path(), 0).await;
    let summary = quiesce::report::summary(&report.verdict);
    assert!(!report.soaked[0].memory.is_leak(), "{summary}");
    assert_eq!(report.verdict.violations(), 0, "{summary}");
    assert_eq!(memory_flat_failed(&report), Some(false), "{summary}");
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    assert!(!summary.contains("reported no live heap"), "{summary}");
}

/// `event-pipeline-soak-outages.toml`, its period shortened to fit a minute: a 3 s Kafka
/// outage every 20 s, twice.
fn outages_every_20_s() -> Scenario {
    let mut scenario = scenario_file("event-pipeline-soak-outages.toml");
    assert_eq!(scenario.faults.len(), 2, "a down and an up");
    for (step, at_ms) in scenario.faults.iter_mut().zip([15_000, 18_000]) {
        assert_eq!(step.every_ms, Some(600_000), "the file's period");
        step.at_ms = at_ms;
        step.every_ms = Some(20_000);
        step.times = Some(2);
    }
    scenario
}

/// Each outage is on the soak's timeline and its plot where it came; the correct service
/// rides them out (nothing lost or redelivered, every check but memory passes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_outages_are_on_the_timeline_and_the_correct_service_rides_them_out() {
    let dir = tempfile::tempdir().unwrap();
    let report = soak_scenario_for_a_minute(&outages_every_20_s(), dir.path(), &[]).await;
    let summary = quiesce::report::summary(&report.verdict);
    let (_, _, events, _) = quiesce_soak::read_timeline(&report.soaked[0].timeline).unwrap();
    let faults: Vec<(u64, &str)> = events
        .iter()
        .filter(|e| e.event.starts_with("fault: "))
        .map(|e| (e.t_ms, e.event.as_str()))
        .collect();
    let named = |what: &str| faults.iter().filter(|(_, e)| e.contains(what)).count();
    assert_eq!(
        (named("proxy down on kafka"), named("proxy up on kafka")),
        (2, 2),
        "{faults:?}\n{summary}"
    );
    // In the order played, each at least its time after the start (ready came later still).
    let times: Vec<u64> = faults.iter().map(|(t, _)| *t).collect();
    assert!(times.is_sorted(), "{faults:?}");
    for ((t, _), at) in faults.iter().zip([15_000, 18_000, 35_000, 38_000]) {
        assert!(*t >= at, "{faults:?}");
    }
    let plot = std::fs::read_to_string(&report.soaked[0].plot).unwrap();
    assert!(plot.contains("proxy down on kafka"), "the plot marks them");
    // Every check but memory passes. A minute holding two outages says nothing of a leak:
    // librdkafka's buffers grow while the broker is away and are given back later, and on a
    // loaded machine that minute's slope reached +720 MB/day (threshold 250). Whether memory
    // stays flat across outages is the hours-long soak's to say (docs/measured.md); here it
    // is only reported.
    let failed: Vec<_> = report
        .verdict
        .results
        .iter()
        .filter(|r| r.outcome.is_violation() && r.check != CheckName::MemoryFlat)
        .map(|r| r.check)
        .collect();
    assert_eq!(failed, [], "{summary}");
    assert!(memory_flat_failed(&report).is_some(), "{summary}");
}

/// The bug only outages show: `quits-on-outage` takes librdkafka's "all brokers down" for a
/// fatal error and ends at the first outage, which the soak reports as a target that ended
/// by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_quits_on_an_outage_is_caught_by_the_outage_soak() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("QUIESCE_VARIANT", "quits-on-outage")];
    let report = soak_scenario_for_a_minute(&outages_every_20_s(), dir.path(), &env).await;
    let summary = quiesce::report::summary(&report.verdict);
    let exit = report
        .verdict
        .results
        .iter()
        .find(|r| r.check == CheckName::ExitCode)
        .expect("exit_code is judged");
    assert!(exit.outcome.is_violation(), "{summary}");
    // librdkafka reports the cut as one or the other, depending on what it was doing.
    let outage = [
        "All broker connections are down",
        "Broker transport failure",
    ];
    assert!(
        summary.contains("ended by itself") && outage.iter().any(|e| summary.contains(e)),
        "{summary}"
    );
}
