//! What a run concludes: one outcome per check, with evidence.
//!
//! A failed check is data, not an error. Each check ends as a pass, a violation with evidence
//! a person can act on (which process, how many ms over, which partition), or inconclusive with
//! the reason it could not be decided. A check is never skipped silently: one that cannot run
//! says so here, and the report shows it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::exit_codes;

/// The invariants quiesce checks, by their names in scenario files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckName {
    StartsWithin,
    StopsWithin,
    ExitCode,
    NoLeakedTasks,
    NoLeakedThreads,
    NoOrphanProcesses,
    OffsetsCommitted,
    NoMessageLoss,
    NoRedelivery,
    ProducerFlushed,
    GroupLeft,
    LockReleased,
    SingleLeader,
    JobsOncePerInterval,
    ReadinessTruthful,
    /// Judged on a graph whose fault schedule rolls out a service, with `[kafka]`: not in
    /// [`CheckName::ALL`].
    TakeoverWithin,
    /// Judged by `quiesce soak` alone, from its timeline: not in [`CheckName::ALL`].
    MemoryFlat,
}

impl CheckName {
    /// The checks every target gets, in report order.
    pub const LIFECYCLE: [CheckName; 6] = [
        CheckName::StartsWithin,
        CheckName::StopsWithin,
        CheckName::ExitCode,
        CheckName::NoLeakedTasks,
        CheckName::NoLeakedThreads,
        CheckName::NoOrphanProcesses,
    ];

    /// The checks of a scenario with a Kafka workload (`[kafka]`), in report order.
    pub const KAFKA: [CheckName; 5] = [
        CheckName::OffsetsCommitted,
        CheckName::NoMessageLoss,
        CheckName::NoRedelivery,
        CheckName::ProducerFlushed,
        CheckName::GroupLeft,
    ];

    /// Every check that needs a `[kafka]` table: those, and a rollout's `takeover_within`.
    pub const NEEDS_KAFKA: [CheckName; 6] = [
        CheckName::OffsetsCommitted,
        CheckName::NoMessageLoss,
        CheckName::NoRedelivery,
        CheckName::ProducerFlushed,
        CheckName::GroupLeft,
        CheckName::TakeoverWithin,
    ];

    /// The checks of a scenario with leader election on Redis (`[redis]`), in report order.
    pub const REDIS: [CheckName; 3] = [
        CheckName::LockReleased,
        CheckName::SingleLeader,
        CheckName::JobsOncePerInterval,
    ];

    /// Every check, in report order: the lifecycle ones, the Kafka ones, the Redis ones, then
    /// `readiness_truthful` (which needs a `[readiness]` table).
    pub const ALL: [CheckName; 15] = {
        let mut all = [CheckName::ReadinessTruthful; 15];
        let (lifecycle, kafka, redis) =
            (Self::LIFECYCLE.len(), Self::KAFKA.len(), Self::REDIS.len());
        let mut i = 0;
        while i < lifecycle + kafka + redis {
            all[i] = if i < lifecycle {
                Self::LIFECYCLE[i]
            } else if i < lifecycle + kafka {
                Self::KAFKA[i - lifecycle]
            } else {
                Self::REDIS[i - lifecycle - kafka]
            };
            i += 1;
        }
        all
    };

    /// Whether the check judges leader election on Redis (and needs a `[redis]` table).
    /// A check judged from leader-only work's runs (see `RedisLeadership::jobs_off`).
    pub fn needs_jobs(self) -> bool {
        matches!(
            self,
            CheckName::SingleLeader | CheckName::JobsOncePerInterval
        )
    }

    pub fn needs_redis(self) -> bool {
        CheckName::REDIS.contains(&self)
    }

    /// Whether the check judges the Kafka workload (and needs a `[kafka]` table).
    pub fn needs_kafka(self) -> bool {
        CheckName::NEEDS_KAFKA.contains(&self)
    }

    /// What the harness must observe for this check to pass, in one line (`quiesce check`
    /// prints it; docs/checks.md says the rest).
    pub fn evidence(self) -> &'static str {
        match self {
            CheckName::StartsWithin => "the ready probe answering within the deadline",
            CheckName::StopsWithin => "the process gone within the deadline after the stop signal",
            CheckName::ExitCode => "the expected exit code after a clean signal",
            CheckName::NoLeakedTasks => {
                "the probe's count of tasks alive at the end of shutdown, or the output's leak signatures"
            }
            CheckName::NoLeakedThreads => {
                "the probe's count of threads alive at the end of shutdown"
            }
            CheckName::NoOrphanProcesses => {
                "every process of the run (its QUIESCE_RUN_ID, its process group) gone with the target"
            }
            CheckName::OffsetsCommitted => {
                "the group's commits, moved in the run, equal to the end of what was processed"
            }
            CheckName::NoMessageLoss => {
                "every acknowledged input with an output, or left to a restart that consumed it"
            }
            CheckName::NoRedelivery => {
                "inputs processed, none twice after a clean stop and restart"
            }
            CheckName::ProducerFlushed => {
                "every output the target reported sending found in the output topic"
            }
            CheckName::GroupLeft => {
                "a LeaveGroup on the wire from every member the target had, at the stop"
            }
            CheckName::LockReleased => {
                "the target holding the lock (its value learnt from its own SET on the wire), then \
                 deleting or handing it over (not letting it expire)"
            }
            CheckName::SingleLeader => {
                "leader-only job runs (job_line or job_log), no two instances' overlapping"
            }
            CheckName::JobsOncePerInterval => {
                "job runs (job_line or job_log), one per job per interval"
            }
            CheckName::ReadinessTruthful => {
                "/ready polled inside every outage and the drain, 503 throughout each; /health 200"
            }
            CheckName::TakeoverWithin => {
                "a Fetch on the wire by its next owner (by the leader's SyncGroup) of every \
                 partition a rolled-out instance held, within the deadline after its SIGTERM, and \
                 no partition unconsumed longer in the rollout"
            }
            CheckName::MemoryFlat => "enough samples of a soak, the trend below the threshold",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::StartsWithin => "starts_within",
            CheckName::StopsWithin => "stops_within",
            CheckName::MemoryFlat => "memory_flat",
            CheckName::ExitCode => "exit_code",
            CheckName::NoLeakedTasks => "no_leaked_tasks",
            CheckName::NoLeakedThreads => "no_leaked_threads",
            CheckName::NoOrphanProcesses => "no_orphan_processes",
            CheckName::OffsetsCommitted => "offsets_committed",
            CheckName::NoMessageLoss => "no_message_loss",
            CheckName::NoRedelivery => "no_redelivery",
            CheckName::ProducerFlushed => "producer_flushed",
            CheckName::GroupLeft => "group_left",
            CheckName::LockReleased => "lock_released",
            CheckName::SingleLeader => "single_leader",
            CheckName::JobsOncePerInterval => "jobs_once_per_interval",
            CheckName::ReadinessTruthful => "readiness_truthful",
            CheckName::TakeoverWithin => "takeover_within",
        }
    }
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one check ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The invariant held. `detail` says what was measured; `limits` what could not be seen.
    Pass {
        detail: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        limits: Option<String>,
    },
    /// The invariant was broken; `summary` in one line, `evidence` one item a line.
    Violation {
        summary: String,
        evidence: Vec<String>,
    },
    /// The check could not be decided, and why.
    Inconclusive { reason: String },
}

impl Outcome {
    /// Says where the evidence came from: `pass` appended to a pass's detail, `evidence` as a
    /// violation's last line; an inconclusive outcome says its own why.
    pub fn sourced(self, pass: &str, evidence: String) -> Outcome {
        match self {
            Outcome::Pass { detail, limits } => Outcome::Pass {
                detail: format!("{detail}{pass}"),
                limits,
            },
            Outcome::Violation {
                summary,
                evidence: mut lines,
            } => {
                lines.push(evidence);
                Outcome::Violation {
                    summary,
                    evidence: lines,
                }
            }
            inconclusive => inconclusive,
        }
    }

    pub fn pass(detail: impl Into<String>) -> Self {
        Outcome::Pass {
            detail: detail.into(),
            limits: None,
        }
    }

    pub fn violation(summary: impl Into<String>, evidence: Vec<String>) -> Self {
        Outcome::Violation {
            summary: summary.into(),
            evidence,
        }
    }

    pub fn inconclusive(reason: impl Into<String>) -> Self {
        Outcome::Inconclusive {
            reason: reason.into(),
        }
    }

    pub fn is_violation(&self) -> bool {
        matches!(self, Outcome::Violation { .. })
    }

    /// `PASS`, `FAIL` or `????`.
    /// `P`, `F` or `?`: see [`Verdict::marks`].
    pub fn mark(&self) -> &'static str {
        match self {
            Outcome::Pass { .. } => "P",
            Outcome::Violation { .. } => "F",
            Outcome::Inconclusive { .. } => "?",
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass { .. } => "PASS",
            Outcome::Violation { .. } => "FAIL",
            Outcome::Inconclusive { .. } => "????",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub check: CheckName,
    /// The service of a graph it judges (`[[services]]`); none for a single target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl CheckResult {
    /// A result of the whole target.
    pub fn new(check: CheckName, outcome: Outcome) -> CheckResult {
        CheckResult {
            check,
            service: None,
            outcome,
        }
    }

    /// Its name in reports: `stops_within`, or `worker/stops_within` for a graph's service.
    pub fn label(&self) -> String {
        match &self.service {
            Some(service) => format!("{service}/{}", self.check),
            None => self.check.to_string(),
        }
    }
}

/// Something that happened during the run, with its time since the target was started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineEvent {
    pub at_ms: u64,
    pub event: String,
}

/// The whole conclusion of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The scenario's name.
    pub scenario: String,
    /// What was run, for the report's heading.
    pub target: String,
    /// The infrastructure backend, or `none` when the scenario needs none.
    pub backend: String,
    pub results: Vec<CheckResult>,
    pub timeline: Vec<TimelineEvent>,
    /// The run was cut short by Ctrl-C; checks that could not run say so.
    pub interrupted: bool,
    /// Where the target's output was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_log: Option<String>,
    /// Checks whose inconclusive outcome the user accepted (`--allow-inconclusive`, or
    /// `allow_inconclusive` in the file's `[checks]`): they are still reported as
    /// inconclusive, but do not make the run so.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_inconclusive: Vec<CheckName>,
}

impl Verdict {
    pub fn violations(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome.is_violation())
            .count()
    }

    pub fn inconclusive(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Inconclusive { .. }))
            .count()
    }

    /// The inconclusive checks the user did not accept: each makes the run inconclusive.
    pub fn unaccepted_inconclusive(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.iter().filter(|r| {
            matches!(r.outcome, Outcome::Inconclusive { .. })
                && !self.allowed_inconclusive.contains(&r.check)
        })
    }

    /// `VIOLATION` when any check failed, else `INTERRUPTED`, else `INCONCLUSIVE` when a check
    /// could not be decided (and was not accepted as such), else `PASS`: a PASS means every
    /// enabled check passed on evidence.
    pub fn word(&self) -> &'static str {
        if self.violations() > 0 {
            "VIOLATION"
        } else if self.interrupted {
            "INTERRUPTED"
        } else if self.unaccepted_inconclusive().next().is_some() {
            "INCONCLUSIVE"
        } else {
            "PASS"
        }
    }

    /// Each check's outcome as `P` (pass), `F` (violation) or `?` (inconclusive), in report
    /// order: `starts_within=P stops_within=F ...`. What a catalogue of variants is tested
    /// against, with [`expected_marks`].
    pub fn marks(&self) -> String {
        self.results
            .iter()
            .map(|r| format!("{}={}", r.label(), r.outcome.mark()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The exit code, by [`Verdict::word`]: 1 for any violation, 130 when interrupted, 6 when
    /// a check could not be decided, else 0.
    pub fn exit_code(&self) -> i32 {
        match self.word() {
            "VIOLATION" => exit_codes::VIOLATION,
            "INTERRUPTED" => exit_codes::INTERRUPTED,
            "INCONCLUSIVE" => exit_codes::INCONCLUSIVE,
            _ => exit_codes::OK,
        }
    }
}

/// The marks a verdict on `checks` must have when exactly `failing` fail and `unsure` are
/// inconclusive: compare with [`Verdict::marks`].
///
/// ```
/// use quiesce::verdict::{CheckName, expected_marks};
/// let checks = [CheckName::StopsWithin, CheckName::ExitCode];
/// assert_eq!(
///     expected_marks(checks, &[CheckName::ExitCode], &[]),
///     "stops_within=P exit_code=F"
/// );
/// ```
pub fn expected_marks(
    checks: impl IntoIterator<Item = CheckName>,
    failing: &[CheckName],
    unsure: &[CheckName],
) -> String {
    checks
        .into_iter()
        .map(|c| {
            let mark = if failing.contains(&c) {
                "F"
            } else if unsure.contains(&c) {
                "?"
            } else {
                "P"
            };
            format!("{c}={mark}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}
