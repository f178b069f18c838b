//! `quiesce loop`: one scenario, many cycles, against infrastructure started once.
//!
//! Each cycle is a whole [`crate::run`]: start, ready, the workload, the stop and every check.
//! What a real restart keeps is kept from cycle to cycle (the topics, the consumer group and
//! its commits, the leader key); what belongs to one start is fresh (run id, output folder,
//! port, job log). A target stuck past the ready or the stop deadline is looked at
//! ([`crate::target::Hang`]) and killed, and the loop goes on.
//!
//! Every cycle lands in one class: passed, failed (as a start error, a ready timeout, a hang,
//! a stop timeout or a check violation), or inconclusive: nothing failed, but a check could
//! not be decided, so the cycle proves nothing about it and is not counted as a pass. The
//! report gives the flake rate with a 95% upper bound (Wilson), the start, ready and stop
//! times' percentiles, every failing cycle with its evidence and every inconclusive one with
//! its reasons.

mod report;
mod stats;

pub use report::{junit_suite, junit_xml, summary};
pub use stats::{Percentiles, nearest_rank, wilson_upper};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::run::{Cycle, RunError, RunOptions, Session};
use crate::scenario::Scenario;
use crate::signal::SignalHandler;
use crate::target::{Hang, Phase, ReadyState};
use crate::verdict::{CheckName, Outcome};

/// The most cycles a loop runs when neither a count nor a duration bounds it.
pub const MAX_CYCLES: u64 = 10_000;

/// How a loop runs.
#[derive(Clone, Debug)]
pub struct LoopOptions {
    /// `--env` values for the target.
    pub env: Vec<(String, String)>,
    /// Where every cycle's folder goes (`cycle-0001`, …) and `loop.json`.
    pub out_dir: PathBuf,
    /// At most this many cycles.
    pub cycles: u64,
    /// Start no cycle after this long.
    pub duration: Option<Duration>,
    /// End at the first failing cycle.
    pub until_failure: bool,
    /// Keep the folders of passing cycles (by default only failing cycles keep theirs).
    pub keep_passing: bool,
}

/// Why a cycle failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClass {
    /// The target could not start, or ended before it was ready.
    StartError,
    /// Not ready by the deadline, and still busy (using CPU): slow rather than stuck.
    ReadyTimeout,
    /// Past a deadline and idle: waiting for something that never comes.
    Hang,
    /// Not gone by the stop deadline, and still busy.
    StopTimeout,
    /// Started and stopped in time, but a check failed.
    CheckViolation,
}

impl FailureClass {
    pub const ALL: [FailureClass; 5] = [
        FailureClass::StartError,
        FailureClass::ReadyTimeout,
        FailureClass::Hang,
        FailureClass::StopTimeout,
        FailureClass::CheckViolation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::StartError => "start-error",
            FailureClass::ReadyTimeout => "ready-timeout",
            FailureClass::Hang => "hang",
            FailureClass::StopTimeout => "stop-timeout",
            FailureClass::CheckViolation => "check-violation",
        }
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One cycle, as the report keeps it.
#[derive(Clone, Debug, Serialize)]
pub struct CycleRecord {
    /// Counted from 1.
    pub cycle: u64,
    /// `None`: it passed.
    pub failure: Option<FailureClass>,
    /// For a hang: the phase it was stuck in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// From the cycle's start to the target running, in ms.
    pub start_ms: u64,
    /// From the target running to ready, in ms.
    pub ready_ms: Option<u64>,
    /// From the stop request to the target gone, in ms.
    pub stop_ms: Option<u64>,
    /// Each partition move's takeover time in the cycle's rollouts, in ms.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub takeover_ms: Vec<u64>,
    /// The checks that failed.
    pub failed_checks: Vec<CheckName>,
    /// The checks that could not be decided.
    pub inconclusive_checks: Vec<CheckName>,
    /// Nothing failed, but a check the user did not accept as inconclusive could not be
    /// decided: neither a pass nor a failure.
    pub inconclusive: bool,
    /// Why each such check could not be decided: `check: reason`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undecided: Vec<String>,
    /// What shows the failure: each failed check's summary and evidence, the hang's
    /// explanation.
    pub evidence: Vec<String>,
    /// Where the stuck target was, if it was stuck.
    pub hangs: Vec<Hang>,
    /// The cycle's folder (logs, probe file, kafka.json); removed for passing cycles unless
    /// asked to keep them.
    pub out_dir: String,
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ended {
    /// It ran the cycles it was asked for.
    Count,
    /// Its duration was over.
    Duration,
    /// A cycle failed, with `--until-failure`.
    Failure,
    /// Ctrl-C.
    Interrupted,
    /// The infrastructure or the harness failed (not the target): see `error`.
    Error,
}

/// What a loop found.
#[derive(Clone, Debug, Serialize)]
pub struct LoopReport {
    pub scenario: String,
    pub target: String,
    pub backend: String,
    /// Cycles that ran to a verdict.
    pub cycles: u64,
    /// Cycles whose every check passed (or was accepted as inconclusive).
    pub passed: u64,
    pub failed: u64,
    /// Cycles with no failure but an undecided check: counted apart from both.
    pub inconclusive: u64,
    pub failures: BTreeMap<FailureClass, u64>,
    /// failed / cycles.
    pub failure_rate: f64,
    /// The 95% upper bound of the failure rate (Wilson score interval).
    pub failure_rate_upper_95: Option<f64>,
    pub start: Option<Percentiles>,
    pub ready: Option<Percentiles>,
    pub stop: Option<Percentiles>,
    /// Every partition move's takeover time over every cycle's rollouts (`takeover_ms`);
    /// its `samples` counts the moves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub takeover: Option<Percentiles>,
    /// The failing cycles, in order.
    pub failing: Vec<CycleRecord>,
    pub ended: Ended,
    /// With [`Ended::Error`]: what failed.
    pub error: Option<String>,
    /// With [`Ended::Error`]: that error's exit code.
    #[serde(skip)]
    pub error_code: Option<i32>,
    pub elapsed_ms: u64,
    /// Where the cycles' folders and `loop.json` are.
    pub out_dir: String,
    /// Every cycle's class and times, passing ones included.
    pub all: Vec<CycleRecord>,
}

impl LoopReport {
    /// 0 when every cycle passed, 1 when one failed, 130 when Ctrl-C ended the loop, 6 when
    /// none failed but one was inconclusive; a harness error's own code when one ended it.
    pub fn exit_code(&self) -> i32 {
        use crate::exit_codes::*;
        if let Some(code) = self.error_code {
            code
        } else if self.failed > 0 {
            VIOLATION
        } else if self.ended == Ended::Interrupted {
            INTERRUPTED
        } else if self.inconclusive > 0 || self.cycles == 0 {
            INCONCLUSIVE
        } else {
            OK
        }
    }

    /// `PASS`, `FAIL` or `INCONCLUSIVE`, by the rules of [`LoopReport::exit_code`].
    pub fn word(&self) -> &'static str {
        if self.failed > 0 || self.error_code.is_some() {
            "FAIL"
        } else if self.inconclusive > 0 || self.cycles == 0 {
            "INCONCLUSIVE"
        } else {
            "PASS"
        }
    }
}

/// What a loop tells its watcher as it goes.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// Cycles done.
    pub done: u64,
    /// Cycles planned (the count; with a duration, at most).
    pub planned: u64,
    pub failed: u64,
    /// The cycle just done.
    pub last: &'a CycleRecord,
}

/// Classifies one cycle and keeps what shows its failure.
fn record(number: u64, cycle: &Cycle, out_dir: &std::path::Path) -> CycleRecord {
    let mut failed_checks = Vec::new();
    let mut inconclusive_checks = Vec::new();
    let mut evidence = Vec::new();
    for result in &cycle.verdict.results {
        match &result.outcome {
            Outcome::Violation {
                summary,
                evidence: lines,
            } => {
                failed_checks.push(result.check);
                evidence.push(format!("{}: {summary}", result.label()));
                evidence.extend(lines.iter().map(|l| format!("  {l}")));
            }
            Outcome::Inconclusive { .. } => inconclusive_checks.push(result.check),
            Outcome::Pass { .. } => {}
        }
    }
    let undecided: Vec<String> = cycle
        .verdict
        .unaccepted_inconclusive()
        .map(|r| match &r.outcome {
            Outcome::Inconclusive { reason } => format!("{}: {reason}", r.label()),
            _ => r.label(),
        })
        .collect();
    let stuck = |phase: Phase| cycle.hangs.iter().find(|h| h.phase == phase);
    let (failure, phase) = match &cycle.ready {
        ReadyState::Exited { .. } => (Some(FailureClass::StartError), None),
        ReadyState::TimedOut { .. } => match stuck(Phase::Ready) {
            Some(h) if h.idle() => (Some(FailureClass::Hang), Some(Phase::Ready)),
            _ => (Some(FailureClass::ReadyTimeout), None),
        },
        _ if cycle.killed_by_harness => match stuck(Phase::Stop) {
            Some(h) if h.idle() => (Some(FailureClass::Hang), Some(Phase::Stop)),
            _ => (Some(FailureClass::StopTimeout), None),
        },
        _ if !failed_checks.is_empty() => (Some(FailureClass::CheckViolation), None),
        _ => (None, None),
    };
    CycleRecord {
        cycle: number,
        failure,
        phase,
        start_ms: cycle.start.as_millis() as u64,
        ready_ms: match cycle.ready {
            ReadyState::Ready { after } => Some(after.as_millis() as u64),
            _ => None,
        },
        stop_ms: cycle.stopped_after.map(|d| d.as_millis() as u64),
        takeover_ms: cycle.takeover_ms.clone(),
        inconclusive: failure.is_none() && !undecided.is_empty(),
        failed_checks,
        inconclusive_checks,
        undecided,
        evidence,
        hangs: cycle.hangs.clone(),
        out_dir: out_dir.display().to_string(),
    }
}

/// Runs `scenario` in cycles until the count, the duration, a failure (with
/// `until_failure`) or Ctrl-C ends the loop. Infrastructure that fails is an `Err`; a
/// target that fails is a failing cycle.
pub async fn run_loop(
    scenario: &Scenario,
    options: &LoopOptions,
    signals: &mut SignalHandler,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<LoopReport, RunError> {
    let begun = out_dir(options)?;
    let mut session = Session::start(scenario, signals).await?;
    let backend = session.backend().to_string();
    let done = cycles(&mut session, scenario, options, signals, &mut progress).await;
    let closed = session.close(signals).await;
    conclude(scenario, options, done, closed, backend, begun)
}

/// Makes the loop's folder; the loop's clock starts then.
fn out_dir(options: &LoopOptions) -> Result<Instant, RunError> {
    std::fs::create_dir_all(&options.out_dir).map_err(|source| RunError::OutDir {
        path: options.out_dir.clone(),
        source,
    })?;
    Ok(Instant::now())
}

/// [`run_loop`] on a session already started (several scenarios' loops on one
/// infrastructure, one after another): it is left running.
pub async fn run_loop_on(
    session: &mut Session,
    scenario: &Scenario,
    options: &LoopOptions,
    signals: &mut SignalHandler,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<LoopReport, RunError> {
    let begun = out_dir(options)?;
    let backend = session.backend().to_string();
    let done = cycles(session, scenario, options, signals, &mut progress).await;
    conclude(scenario, options, done, Ok(()), backend, begun)
}

/// The loop's report from its cycles and how the session closed. An error before any cycle
/// is the loop's error; after some, the report keeps them.
fn conclude(
    scenario: &Scenario,
    options: &LoopOptions,
    (all, ended, error): (Vec<CycleRecord>, Ended, Option<RunError>),
    closed: Result<(), RunError>,
    backend: String,
    begun: Instant,
) -> Result<LoopReport, RunError> {
    let error = match (error, closed) {
        (Some(e), _) | (None, Err(e)) if all.is_empty() => return Err(e),
        (Some(e), _) | (None, Err(e)) => Some(e),
        (None, Ok(())) => None,
    };
    let mut report = report(scenario, backend, options, all, ended, begun.elapsed());
    if let Some(e) = error {
        report.ended = Ended::Error;
        report.error = Some(e.to_string());
        report.error_code = Some(e.exit_code());
    }
    Ok(report)
}

async fn cycles(
    session: &mut Session,
    scenario: &Scenario,
    options: &LoopOptions,
    signals: &mut SignalHandler,
    progress: &mut impl FnMut(Progress<'_>),
) -> (Vec<CycleRecord>, Ended, Option<RunError>) {
    let begun = Instant::now();
    let mut all: Vec<CycleRecord> = Vec::new();
    let mut failed = 0;
    let cap = options.cycles.min(MAX_CYCLES);
    let ended = loop {
        if all.len() as u64 >= cap {
            break Ended::Count;
        }
        if options.duration.is_some_and(|d| begun.elapsed() >= d) {
            break Ended::Duration;
        }
        let number = all.len() as u64 + 1;
        let out_dir = options.out_dir.join(format!("cycle-{number:04}"));
        let run = RunOptions {
            env: options.env.clone(),
            out_dir: Some(out_dir.clone()),
        };
        let cycle = match session.cycle(scenario, &run, signals).await {
            Ok(cycle) => cycle,
            Err(e) => return (all, Ended::Error, Some(e)),
        };
        if cycle.interrupted {
            break Ended::Interrupted;
        }
        let record = record(number, &cycle, &out_dir);
        if record.failure.is_none() && !record.inconclusive && !options.keep_passing {
            let _ = std::fs::remove_dir_all(&out_dir);
        }
        failed += u64::from(record.failure.is_some());
        all.push(record);
        let last = all.last().expect("just pushed");
        progress(Progress {
            done: all.len() as u64,
            planned: cap,
            failed,
            last,
        });
        if options.until_failure && last.failure.is_some() {
            break Ended::Failure;
        }
    };
    (all, ended, None)
}

fn report(
    scenario: &Scenario,
    backend: String,
    options: &LoopOptions,
    all: Vec<CycleRecord>,
    ended: Ended,
    elapsed: Duration,
) -> LoopReport {
    let cycles = all.len() as u64;
    let failing: Vec<CycleRecord> = all
        .iter()
        .filter(|c| c.failure.is_some())
        .cloned()
        .collect();
    let failed = failing.len() as u64;
    let inconclusive = all.iter().filter(|c| c.inconclusive).count() as u64;
    let mut failures = BTreeMap::new();
    for c in &failing {
        if let Some(class) = c.failure {
            *failures.entry(class).or_insert(0) += 1;
        }
    }
    let times = |pick: fn(&CycleRecord) -> Option<u64>| {
        Percentiles::of(&all.iter().filter_map(pick).collect::<Vec<_>>())
    };
    LoopReport {
        scenario: scenario.name.clone(),
        target: scenario.target.describe(),
        backend,
        cycles,
        passed: cycles - failed - inconclusive,
        failed,
        inconclusive,
        failures,
        failure_rate: if cycles == 0 {
            0.0
        } else {
            failed as f64 / cycles as f64
        },
        failure_rate_upper_95: wilson_upper(failed, cycles),
        start: times(|c| Some(c.start_ms)),
        ready: times(|c| c.ready_ms),
        stop: times(|c| c.stop_ms),
        takeover: Percentiles::of(
            &(all.iter())
                .flat_map(|c| c.takeover_ms.iter().copied())
                .collect::<Vec<_>>(),
        ),
        failing,
        ended,
        error: None,
        error_code: None,
        elapsed_ms: elapsed.as_millis() as u64,
        out_dir: options.out_dir.display().to_string(),
        all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{CheckResult, Verdict};

    fn cycle(outcomes: Vec<(CheckName, Outcome)>, allowed: Vec<CheckName>) -> Cycle {
        Cycle {
            verdict: Verdict {
                scenario: "s".into(),
                target: "t".into(),
                backend: "local".into(),
                results: outcomes
                    .into_iter()
                    .map(|(check, outcome)| CheckResult::new(check, outcome))
                    .collect(),
                timeline: Vec::new(),
                interrupted: false,
                target_log: None,
                allowed_inconclusive: allowed,
            },
            ready: ReadyState::Ready {
                after: Duration::from_millis(5),
            },
            start: Duration::from_millis(1),
            stopped_after: Some(Duration::from_millis(3)),
            killed_by_harness: false,
            hangs: Vec::new(),
            interrupted: false,
            takeover_ms: Vec::new(),
        }
    }

    /// A loop of rollouts reports the takeover times of every cycle's partition moves
    /// together; a loop without rollouts reports none.
    #[test]
    fn takeover_times_are_gathered_over_the_cycles() {
        let dir = std::path::Path::new("/nonexistent");
        let passed = || vec![(CheckName::StopsWithin, Outcome::pass("stopped"))];
        let with = |ms: &[u64]| {
            let mut c = cycle(passed(), Vec::new());
            c.takeover_ms = ms.to_vec();
            c
        };
        let records = vec![
            record(1, &with(&[40, 41, 42]), dir),
            record(2, &with(&[]), dir),
            record(3, &with(&[30, 50, 900]), dir),
        ];
        let report = looped(records);
        let p = report.takeover.as_ref().expect("takeover times");
        assert_eq!((p.p50, p.max, p.samples), (41, 900, 6));
        let text = summary(&report);
        assert!(
            text.contains(
                "takeover p50 41 ms  p95 900 ms  p99 900 ms  max 900 ms  (6 partition moves)"
            ),
            "{text}"
        );
        let none = looped(vec![record(1, &cycle(passed(), Vec::new()), dir)]);
        assert!(none.takeover.is_none());
        assert!(!summary(&none).contains("takeover"));
        // A cycle whose takeover failed (a partition never taken over adds no time) is said
        // beside the times, never hidden by them.
        let stalled = vec![(
            CheckName::TakeoverWithin,
            Outcome::violation("never taken over", Vec::new()),
        )];
        let mut records = vec![record(1, &with(&[40]), dir)];
        records.push(record(2, &cycle(stalled, Vec::new()), dir));
        let text = summary(&looped(records));
        assert!(
            text.contains(
                "(1 partition moves; takeover_within failed in 1 cycle(s) and was undecided in 0"
            ),
            "{text}"
        );
    }

    fn minimal() -> crate::scenario::Scenario {
        crate::scenario::Scenario::parse(
            std::path::Path::new("s.toml"),
            "name = \"s\"\n[target]\ncommand = [\"true\"]\n",
        )
        .expect("a minimal scenario")
    }

    /// The report of a loop of `records`, every cycle run.
    fn looped(records: Vec<CycleRecord>) -> LoopReport {
        report(
            &minimal(),
            "local".into(),
            &options(),
            records,
            Ended::Count,
            Duration::ZERO,
        )
    }

    fn options() -> LoopOptions {
        LoopOptions {
            env: Vec::new(),
            out_dir: PathBuf::from("/nonexistent"),
            cycles: 3,
            duration: None,
            until_failure: false,
            keep_passing: false,
        }
    }

    /// A cycle with an undecided check was once counted as a pass: the loop printed PASS and
    /// exited 0 for cycles that judged nothing about it.
    #[test]
    fn an_undecided_cycle_is_neither_a_pass_nor_a_failure() {
        let unsure = || {
            vec![
                (CheckName::StopsWithin, Outcome::pass("stopped")),
                (
                    CheckName::LockReleased,
                    Outcome::inconclusive("the key was never held"),
                ),
            ]
        };
        let dir = std::path::Path::new("/nonexistent");
        let records = vec![
            record(1, &cycle(unsure(), Vec::new()), dir),
            record(
                2,
                &cycle(
                    vec![(CheckName::StopsWithin, Outcome::pass("stopped"))],
                    Vec::new(),
                ),
                dir,
            ),
            // Accepted by name: a pass.
            record(3, &cycle(unsure(), vec![CheckName::LockReleased]), dir),
        ];
        assert!(records[0].inconclusive && records[0].failure.is_none());
        assert_eq!(
            records[0].undecided,
            ["lock_released: the key was never held"]
        );
        assert!(!records[2].inconclusive);
        let scenario = minimal();
        let report = looped(records);
        assert_eq!(
            (report.passed, report.failed, report.inconclusive),
            (2, 0, 1)
        );
        assert_eq!(
            (report.word(), report.exit_code()),
            ("INCONCLUSIVE", crate::exit_codes::INCONCLUSIVE)
        );
        let text = summary(&report);
        assert!(text.contains("inconclusive: 1 cycle(s) (1)"), "{text}");
        assert!(
            text.contains("lock_released: the key was never held (1 cycle(s))"),
            "{text}"
        );
        assert!(text.contains("verdict: INCONCLUSIVE"), "{text}");
        let xml = junit_xml(&report);
        assert!(
            xml.contains("inconclusive: lock_released: the key was never held"),
            "{xml}"
        );
        // A failure outranks it.
        let failing = record(
            4,
            &cycle(
                vec![(
                    CheckName::StopsWithin,
                    Outcome::violation("slow", Vec::new()),
                )],
                Vec::new(),
            ),
            dir,
        );
        let mut all = report.all.clone();
        all.push(failing);
        let report = super::report(
            &scenario,
            "local".into(),
            &options(),
            all,
            Ended::Count,
            Duration::ZERO,
        );
        assert_eq!(
            (report.word(), report.exit_code()),
            ("FAIL", crate::exit_codes::VIOLATION)
        );
    }
}
