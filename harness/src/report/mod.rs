//! A verdict for people and for machines: a terminal summary, JSON, and JUnit XML with one test
//! case per check (so CI dashboards show each invariant).

mod junit;
mod terminal;

pub use junit::{junit_suite, junit_xml};
pub use terminal::summary;

use crate::verdict::Verdict;

/// The verdict as pretty JSON, led by its word (`PASS`, `VIOLATION`, `INCONCLUSIVE`,
/// `INTERRUPTED`) and the exit code it gives, so CI reads the conclusion without re-deriving it.
pub fn json(verdict: &Verdict) -> String {
    #[derive(serde::Serialize)]
    struct Concluded<'a> {
        verdict: &'static str,
        exit_code: i32,
        #[serde(flatten)]
        whole: &'a Verdict,
    }
    let concluded = Concluded {
        verdict: verdict.word(),
        exit_code: verdict.exit_code(),
        whole: verdict,
    };
    serde_json::to_string_pretty(&concluded).expect("a verdict always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{CheckName, CheckResult, Outcome, TimelineEvent};

    /// One of each outcome, with fixed times, so the reports are stable.
    fn verdict() -> Verdict {
        Verdict {
            scenario: "event-pipeline".into(),
            target: "./event-pipeline --workers 4".into(),
            backend: "local".into(),
            allowed_inconclusive: Vec::new(),
            results: vec![
                CheckResult {
                    check: CheckName::StartsWithin,
                    service: None,
                    outcome: Outcome::pass("ready in 412 ms (deadline 30000 ms)"),
                },
                CheckResult {
                    check: CheckName::StopsWithin,
                    service: None,
                    outcome: Outcome::violation(
                        "stopped 7012 ms after SIGTERM, 2012 ms over the 5000 ms deadline",
                        vec![],
                    ),
                },
                CheckResult {
                    check: CheckName::NoLeakedTasks,
                    service: None,
                    outcome: Outcome::violation(
                        "2 leak signature line(s) in the target's output",
                        vec![
                            "out/stderr.log:14: Task was destroyed but it is pending!".into(),
                            "out/stderr.log:15: task: <Task pending name='Task-3' coro=<flush()>>"
                                .into(),
                        ],
                    ),
                },
                CheckResult {
                    check: CheckName::NoLeakedThreads,
                    service: None,
                    outcome: Outcome::inconclusive("the target wrote no probe file"),
                },
                CheckResult {
                    check: CheckName::NoOrphanProcesses,
                    service: None,
                    outcome: Outcome::Pass {
                        detail: "nothing the target started outlived it".into(),
                        limits: Some(
                            "a process that cleared its environment & left the group".into(),
                        ),
                    },
                },
                CheckResult {
                    check: CheckName::OffsetsCommitted,
                    service: None,
                    outcome: Outcome::violation(
                        "committed offsets disagree with processing on 1 partition(s)",
                        vec![
                            "partition 2: committed 228, last processed offset 327 — 100 processed record(s) will be redelivered after a restart".into(),
                        ],
                    ),
                },
                CheckResult {
                    check: CheckName::NoMessageLoss,
                    service: None,
                    outcome: Outcome::pass(
                        "all 1000 acknowledged input(s) processed or still to be consumed",
                    ),
                },
                CheckResult {
                    check: CheckName::NoRedelivery,
                    service: None,
                    outcome: Outcome::Pass {
                        detail: "1000 input(s) processed once each".into(),
                        limits: Some("what a restart consumes (turned off: [kafka] restart = false)".into()),
                    },
                },
                CheckResult {
                    check: CheckName::ProducerFlushed,
                    service: None,
                    outcome: Outcome::inconclusive(
                        "the target did not report how many outputs it sent (the probe's `outputs_sent`)",
                    ),
                },
            ],
            timeline: vec![
                TimelineEvent {
                    at_ms: 0,
                    event: "started pid 4242".into(),
                },
                TimelineEvent {
                    at_ms: 412,
                    event: "ready".into(),
                },
            ],
            interrupted: false,
            target_log: Some("/tmp/quiesce-run-event-pipeline".into()),
        }
    }

    #[test]
    fn terminal_summary() {
        insta::assert_snapshot!(summary(&verdict()));
    }

    #[test]
    fn json_report() {
        insta::assert_snapshot!(json(&verdict()));
    }

    #[test]
    fn junit_report() {
        insta::assert_snapshot!(junit_xml(&verdict()));
    }

    #[test]
    fn verdict_words_and_exit_codes() {
        let mut v = verdict();
        assert_eq!((v.word(), v.exit_code()), ("VIOLATION", 1));
        v.results.retain(|r| !r.outcome.is_violation());
        // An undecided check is not a pass: the run proves nothing about it.
        assert_eq!((v.word(), v.exit_code()), ("INCONCLUSIVE", 6));
        let unsure: Vec<CheckName> = v.unaccepted_inconclusive().map(|r| r.check).collect();
        assert!(!unsure.is_empty());
        // Accepted by name, it is still reported, but the run passes.
        v.allowed_inconclusive = unsure;
        assert_eq!((v.word(), v.exit_code()), ("PASS", 0));
        v.allowed_inconclusive.clear();
        v.results
            .retain(|r| !matches!(r.outcome, Outcome::Inconclusive { .. }));
        assert_eq!((v.word(), v.exit_code()), ("PASS", 0));
        v.interrupted = true;
        assert_eq!((v.word(), v.exit_code()), ("INTERRUPTED", 130));
    }
}
