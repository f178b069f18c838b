//! From what Kafka holds after the stop to an outcome per invariant. Pure: no I/O, so every
//! rule is tested on synthetic evidence.

use std::collections::{BTreeMap, BTreeSet};

use crate::kafka::{AckedRecord, ProcessedRecord};
use crate::verdict::Outcome;

/// How the target was stopped: the invariants differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// SIGTERM, SIGINT, the shutdown token: everything processed must be committed.
    Clean,
    /// SIGKILL: commits may lag (redelivery is expected, and counted), never lead.
    Kill,
}

/// What Kafka holds after the stop.
#[derive(Clone, Debug, Default)]
pub struct KafkaEvidence {
    /// Input records the broker acknowledged to the workload.
    pub acked: Vec<AckedRecord>,
    /// Output records: what the service says it processed.
    pub processed: Vec<ProcessedRecord>,
    /// The service group's committed offset per input partition.
    pub committed: BTreeMap<i32, Option<i64>>,
    /// The group's committed offsets before this run (a loop's earlier cycles): where a
    /// partition that processed nothing in this run must still be committed.
    pub floor: BTreeMap<i32, i64>,
}

/// How many items evidence lists before it summarises.
const LISTED: usize = 10;

impl KafkaEvidence {
    /// Distinct processed offsets per partition.
    fn processed_offsets(&self) -> BTreeMap<i32, BTreeSet<i64>> {
        let mut map: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
        for r in &self.processed {
            map.entry(r.partition).or_default().insert(r.offset);
        }
        map
    }

    fn partitions(&self) -> BTreeSet<i32> {
        self.committed
            .keys()
            .copied()
            .chain(self.acked.iter().map(|a| a.partition))
            .chain(self.processed.iter().map(|p| p.partition))
            .collect()
    }
}

/// `1, 2, 3, 7` as `1..=3, 7`.
fn ranges(offsets: &[i64]) -> String {
    let mut parts = Vec::new();
    let mut iter = offsets.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}..={end}")
        });
    }
    parts.join(", ")
}

/// Committed offset == last processed + 1, per partition, after a clean stop.
pub fn offsets_committed(evidence: &KafkaEvidence, stop: StopKind) -> Outcome {
    let processed = evidence.processed_offsets();
    let mut violations = Vec::new();
    let mut redelivered = 0i64;
    for p in evidence.partitions() {
        let floor = evidence.floor.get(&p).copied().unwrap_or(0);
        let end = processed
            .get(&p)
            .and_then(|s| s.last())
            .map_or(floor, |last| (last + 1).max(floor));
        let committed = evidence.committed.get(&p).copied().flatten();
        match committed {
            Some(c) if c == end => {}
            Some(c) if c > end => violations.push(format!(
                "partition {p}: committed {c}, but {} — offsets {end}..{c} were never processed and will not be consumed again (loss)",
                if end == 0 {
                    "nothing was processed".to_owned()
                } else {
                    format!("the last processed offset is {}", end - 1)
                }
            )),
            Some(c) if stop == StopKind::Kill => redelivered += end - c,
            Some(c) => violations.push(format!(
                "partition {p}: committed {c}, last processed offset {} — {} processed record(s) will be redelivered after a restart",
                end - 1,
                end - c
            )),
            None if end == 0 => {}
            None if stop == StopKind::Kill => redelivered += end,
            None => violations.push(format!(
                "partition {p}: nothing committed, though offsets up to {} were processed — all {end} will be redelivered",
                end - 1
            )),
        }
    }
    if violations.is_empty() {
        let detail = if redelivered > 0 {
            format!(
                "commits never lead processing; {redelivered} record(s) will be redelivered, as expected after SIGKILL"
            )
        } else {
            format!(
                "committed == last processed + 1 on {} partition(s)",
                evidence.partitions().len()
            )
        };
        return Outcome::pass(detail);
    }
    Outcome::violation(
        format!(
            "committed offsets disagree with processing on {} partition(s)",
            violations.len()
        ),
        violations,
    )
}

/// Every acknowledged input is processed, or will be consumed again (at or after the committed
/// offset): acked ⊆ consumed.
pub fn no_message_loss(evidence: &KafkaEvidence) -> Outcome {
    let processed = evidence.processed_offsets();
    let mut lost: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for a in &evidence.acked {
        let done = processed
            .get(&a.partition)
            .is_some_and(|s| s.contains(&a.offset));
        let committed = evidence.committed.get(&a.partition).copied().flatten();
        let will_be_consumed = committed.is_none_or(|c| a.offset >= c);
        if !done && !will_be_consumed {
            lost.entry(a.partition).or_default().push(a.offset);
        }
    }
    let total: usize = lost.values().map(Vec::len).sum();
    if total == 0 {
        return Outcome::pass(format!(
            "all {} acknowledged input(s) processed or still to be consumed",
            evidence.acked.len()
        ));
    }
    Outcome::violation(
        format!("{total} acknowledged input(s) lost: committed but never processed"),
        lost.iter()
            .take(LISTED)
            .map(|(p, offsets)| format!("partition {p}: offsets {}", ranges(offsets)))
            .collect(),
    )
}

/// No input processed twice. After SIGKILL, duplicates are counted, not failed.
pub fn no_redelivery(evidence: &KafkaEvidence, stop: StopKind) -> Outcome {
    let mut seen: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for r in &evidence.processed {
        *seen.entry((r.partition, r.offset)).or_default() += 1;
    }
    let mut twice: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for ((p, o), n) in &seen {
        if *n > 1 {
            twice.entry(*p).or_default().push(*o);
        }
    }
    let total: usize = twice.values().map(Vec::len).sum();
    if total == 0 {
        return Outcome::pass(format!("{} input(s) processed once each", seen.len()));
    }
    if stop == StopKind::Kill {
        return Outcome::pass(format!(
            "{total} input(s) processed twice, as expected after SIGKILL"
        ));
    }
    Outcome::violation(
        format!("{total} input(s) processed more than once after a clean stop"),
        twice
            .iter()
            .take(LISTED)
            .map(|(p, offsets)| format!("partition {p}: offsets {}", ranges(offsets)))
            .collect(),
    )
}

/// [`no_redelivery`] for a run whose fault schedule cut into Kafka before the stop (an
/// outage, a broker restart): an input processed twice *before* the stop is at-least-once
/// delivery under a fault (a consumer that lost its session resumes at its last commit), so
/// it is counted, not failed, as Kafka's own system tests count duplicates across broker
/// bounces. What a clean stop must still not do is redeliver: an input processed more often
/// in `evidence` (which spans the restart) than in `before_stop` fails as ever.
pub fn no_redelivery_under_faults(
    evidence: &KafkaEvidence,
    before_stop: &[ProcessedRecord],
    stop: StopKind,
) -> Outcome {
    if stop == StopKind::Kill {
        return no_redelivery(evidence, stop);
    }
    let count = |records: &[ProcessedRecord]| {
        let mut seen: BTreeMap<(i32, i64), usize> = BTreeMap::new();
        for r in records {
            *seen.entry((r.partition, r.offset)).or_default() += 1;
        }
        seen
    };
    let (before, after) = (count(before_stop), count(&evidence.processed));
    let during = before.values().filter(|n| **n > 1).count();
    let mut again: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (&(p, o), &n) in &after {
        if n > before.get(&(p, o)).copied().unwrap_or(0).max(1) {
            again.entry(p).or_default().push(o);
        }
    }
    let total: usize = again.values().map(Vec::len).sum();
    if total == 0 {
        let detail = format!(
            "none of {} input(s) redelivered after the clean stop; {during} processed more than \
             once before it, during the schedule's Kafka faults (at-least-once under faults: \
             counted, not failed)",
            after.len()
        );
        return Outcome::pass(detail);
    }
    Outcome::violation(
        format!("{total} input(s) processed again after a clean stop"),
        again
            .iter()
            .take(LISTED)
            .map(|(p, offsets)| format!("partition {p}: offsets {}", ranges(offsets)))
            .collect(),
    )
}

/// Every output the target handed to its producer reached the output topic: `sent` is what
/// the target reported (its probe's `outputs_sent`), `processed` what the topic holds. Distinct
/// inputs with an output are counted, so duplicates cannot make up for lost outputs; only
/// where `resends` (the schedule faulted Kafka before the stop, and a consumer resuming at its
/// last commit sends some outputs again) does each record count as a send.
pub fn producer_flushed(
    sent: Option<u64>,
    processed: &[ProcessedRecord],
    stop: StopKind,
    resends: bool,
) -> Outcome {
    if stop == StopKind::Kill {
        return Outcome::inconclusive(
            "the target was killed: nothing runs on the way out, so there was no flush to check",
        );
    }
    let Some(sent) = sent else {
        return Outcome::inconclusive(
            "the target did not report how many outputs it sent (the probe's `outputs_sent`; \
             see the Kafka contract in docs/kafka.md)",
        );
    };
    if sent == 0 {
        return Outcome::inconclusive(
            "the target reported no output handed to its producer: there was no flush to check",
        );
    }
    let distinct: BTreeSet<(i32, i64)> =
        processed.iter().map(|r| (r.partition, r.offset)).collect();
    let duplicates = processed.len() - distinct.len();
    let (found, dup_note) = match (duplicates, resends) {
        (0, _) => (distinct.len() as u64, String::new()),
        (n, true) => (
            processed.len() as u64,
            format!(", and {n} duplicate(s) counted as resends under the schedule's Kafka faults"),
        ),
        (n, false) => (
            distinct.len() as u64,
            format!(", and {n} duplicate(s) that count for nothing"),
        ),
    };
    if found >= sent {
        return Outcome::pass(format!(
            "all {sent} output(s) the target sent are in the output topic ({found} distinct input(s) with an output{dup_note})"
        ));
    }
    Outcome::violation(
        format!(
            "{} of {sent} output(s) the target sent never reached the output topic: its producer was not flushed before exit",
            sent - found
        ),
        vec![format!(
            "the target reported {sent} output(s) handed to its producer; the output topic holds outputs for {found} distinct input(s){dup_note}"
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(p: i32, offsets: std::ops::Range<i64>) -> Vec<AckedRecord> {
        offsets
            .map(|o| AckedRecord {
                partition: p,
                offset: o,
                key: format!("k{o}"),
            })
            .collect()
    }

    fn processed(p: i32, offsets: impl IntoIterator<Item = i64>) -> Vec<ProcessedRecord> {
        offsets
            .into_iter()
            .map(|o| ProcessedRecord {
                partition: p,
                offset: o,
                key: String::new(),
                output: Some((p, o)),
            })
            .collect()
    }

    fn evidence(processed_to: i64, committed: Option<i64>) -> KafkaEvidence {
        KafkaEvidence {
            acked: acked(0, 0..10),
            processed: processed(0, 0..processed_to),
            committed: BTreeMap::from([(0, committed)]),
            floor: BTreeMap::new(),
        }
    }

    #[test]
    fn a_partition_idle_in_this_cycle_must_stay_committed_where_the_last_one_left_it() {
        // An earlier cycle committed partition 1 at 7; this one processed only partition 0.
        let mut e = evidence(10, Some(10));
        e.floor = BTreeMap::from([(1, 7)]);
        e.committed.insert(1, Some(7));
        assert!(matches!(
            offsets_committed(&e, StopKind::Clean),
            Outcome::Pass { .. }
        ));
        // Without the floor, the same commit would read as leading processing.
        let mut no_floor = e.clone();
        no_floor.floor.clear();
        assert!(matches!(
            offsets_committed(&no_floor, StopKind::Clean),
            Outcome::Violation { .. }
        ));
        // A commit that went back behind the floor is redelivery.
        e.committed.insert(1, Some(5));
        assert!(matches!(
            offsets_committed(&e, StopKind::Clean),
            Outcome::Violation { .. }
        ));
    }

    #[test]
    fn clean_stop_with_every_commit_passes_everything() {
        let e = evidence(10, Some(10));
        assert!(matches!(
            offsets_committed(&e, StopKind::Clean),
            Outcome::Pass { .. }
        ));
        assert!(matches!(no_message_loss(&e), Outcome::Pass { .. }));
        assert!(matches!(
            no_redelivery(&e, StopKind::Clean),
            Outcome::Pass { .. }
        ));
    }

    #[test]
    fn missing_final_commit_is_a_redelivery_not_a_loss() {
        let e = evidence(10, Some(6));
        let Outcome::Violation {
            evidence: lines, ..
        } = offsets_committed(&e, StopKind::Clean)
        else {
            panic!("a lagging commit after a clean stop is a violation")
        };
        assert_eq!(
            lines,
            [
                "partition 0: committed 6, last processed offset 9 — 4 processed record(s) will be redelivered after a restart"
            ]
        );
        assert!(matches!(no_message_loss(&e), Outcome::Pass { .. }));
        // After SIGKILL the same lag is expected, and counted.
        let Outcome::Pass { detail, .. } = offsets_committed(&e, StopKind::Kill) else {
            panic!("lag after SIGKILL is fine")
        };
        assert!(
            detail.contains("4 record(s) will be redelivered"),
            "{detail}"
        );
        let none = self::evidence(10, None);
        assert!(offsets_committed(&none, StopKind::Clean).is_violation());
    }

    #[test]
    fn commit_before_process_is_a_loss_even_after_sigkill() {
        let e = evidence(4, Some(10));
        for stop in [StopKind::Clean, StopKind::Kill] {
            let Outcome::Violation { evidence, .. } = offsets_committed(&e, stop) else {
                panic!("a commit ahead of processing is always a violation")
            };
            assert!(
                evidence[0].contains("offsets 4..10 were never processed"),
                "{evidence:?}"
            );
        }
        let Outcome::Violation { evidence, summary } = no_message_loss(&e) else {
            panic!("committed but unprocessed inputs are lost")
        };
        assert_eq!(
            summary,
            "6 acknowledged input(s) lost: committed but never processed"
        );
        assert_eq!(evidence, ["partition 0: offsets 4..=9"]);
    }

    #[test]
    fn duplicates_fail_only_after_a_clean_stop() {
        let mut e = evidence(10, Some(10));
        e.processed.extend(processed(0, [3, 4, 8]));
        let Outcome::Violation { evidence, .. } = no_redelivery(&e, StopKind::Clean) else {
            panic!("duplicates after a clean stop")
        };
        assert_eq!(evidence, ["partition 0: offsets 3..=4, 8"]);
        assert!(matches!(
            no_redelivery(&e, StopKind::Kill),
            Outcome::Pass { .. }
        ));
    }

    /// Duplicates made before the stop while Kafka was faulted are counted; an input
    /// processed again after the clean stop still fails, and only it is listed.
    #[test]
    fn under_kafka_faults_only_redelivery_after_the_stop_fails() {
        let before: Vec<ProcessedRecord> = processed(0, 0..10)
            .into_iter()
            .chain(processed(0, [3, 4]))
            .collect();
        let mut e = evidence(10, Some(10));
        e.processed = before.clone();
        let Outcome::Pass { detail, .. } = no_redelivery_under_faults(&e, &before, StopKind::Clean)
        else {
            panic!("duplicates before the stop are at-least-once under faults")
        };
        assert!(
            detail.contains("2 processed more than once before it"),
            "{detail}"
        );
        assert!(matches!(
            no_redelivery(&e, StopKind::Clean),
            Outcome::Violation { .. }
        ));
        // The restart processes 4 (twice before the stop) and 8 (once) yet again.
        e.processed.extend(processed(0, [4, 8]));
        let Outcome::Violation { evidence, summary } =
            no_redelivery_under_faults(&e, &before, StopKind::Clean)
        else {
            panic!("redelivery after the clean stop")
        };
        assert_eq!(summary, "2 input(s) processed again after a clean stop");
        assert_eq!(evidence, ["partition 0: offsets 4, 8"]);
        assert!(matches!(
            no_redelivery_under_faults(&e, &before, StopKind::Kill),
            Outcome::Pass { .. }
        ));
    }

    /// Counts once compared: outputs written twice for some inputs hid outputs lost for
    /// others, and a target reporting 0 sent passed.
    #[test]
    fn duplicates_cannot_hide_lost_outputs_and_nothing_sent_is_not_a_pass() {
        let mut outputs = processed(0, 0..7);
        outputs.extend(processed(0, [0, 1, 2]));
        let Outcome::Violation { summary, evidence } =
            producer_flushed(Some(10), &outputs, StopKind::Clean, false)
        else {
            panic!("three outputs lost behind three duplicates")
        };
        assert!(summary.starts_with("3 of 10 output(s)"), "{summary}");
        assert!(evidence[0].contains("3 duplicate(s)"), "{evidence:?}");
        assert!(matches!(
            producer_flushed(Some(0), &[], StopKind::Clean, false),
            Outcome::Inconclusive { .. }
        ));
        // Under Kafka faults a consumer resumes at its last commit and sends again: each
        // record is a send.
        assert!(matches!(
            producer_flushed(Some(10), &outputs, StopKind::Clean, true),
            Outcome::Pass { .. }
        ));
    }

    #[test]
    fn unflushed_outputs_are_counted() {
        let outputs = processed(0, 0..7);
        let Outcome::Violation { summary, .. } =
            producer_flushed(Some(10), &outputs, StopKind::Clean, false)
        else {
            panic!("three outputs short")
        };
        assert!(summary.starts_with("3 of 10 output(s)"), "{summary}");
        assert!(matches!(
            producer_flushed(Some(7), &outputs, StopKind::Clean, false),
            Outcome::Pass { .. }
        ));
        for (sent, stop) in [(None, StopKind::Clean), (Some(10), StopKind::Kill)] {
            assert!(matches!(
                producer_flushed(sent, &outputs, stop, false),
                Outcome::Inconclusive { .. }
            ));
        }
    }

    #[test]
    fn unprocessed_inputs_past_the_commit_are_not_lost() {
        // Processed 0..4, committed 4: inputs 4..10 will be consumed after a restart.
        let e = evidence(4, Some(4));
        assert!(matches!(no_message_loss(&e), Outcome::Pass { .. }));
        assert!(matches!(
            offsets_committed(&e, StopKind::Clean),
            Outcome::Pass { .. }
        ));
    }
}
