//! The Kafka side of a run: topics before the target starts, the workload once it is ready,
//! the read-back after each stop, and the judgement.

use std::collections::BTreeMap;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::kafka::{
    AckedRecord, KafkaError, KafkaEvidence, OutputCount, ProcessedRecord, StopKind, Workload,
    committed_offsets, count_processed, create_topic, no_message_loss, no_redelivery,
    no_redelivery_under_faults, offsets_committed, produce_counted, producer_flushed, read_back,
};
use crate::scenario::{KafkaWorkload, StopRule};
use crate::target::Hooks;
use crate::verdict::{CheckName, Outcome};

/// Creates the input and output topics.
pub async fn create_topics(bootstrap: &str, workload: &KafkaWorkload) -> Result<(), KafkaError> {
    create_topic(bootstrap, &workload.input_topic, workload.partitions).await?;
    create_topic(bootstrap, &workload.output_topic, workload.partitions).await
}

/// The workload of the first run, started in the background: it waits for the target to be
/// ready, produces, and (with `stop_when_processed`) asks for the stop once every acknowledged
/// input has an output.
pub struct Producer {
    task: tokio::task::JoinHandle<Result<Vec<AckedRecord>, KafkaError>>,
    stop: CancellationToken,
}

impl Producer {
    /// Starts it; the returned hooks go to the target's runner. `one_record_per_batch`: see
    /// [`crate::kafka::Workload`].
    ///
    /// `in_process`: the target shares this process (a graph), so the workload ends when the
    /// target is told to stop, and its Kafka clients are gone before the graph's threads are
    /// counted; else they would be counted as the graph's.
    pub fn start(
        bootstrap: &str,
        workload: &KafkaWorkload,
        run_id: &str,
        baseline: &Baseline,
        one_record_per_batch: bool,
        in_process: bool,
    ) -> (Producer, Hooks) {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (quiet_tx, quiet_rx) = oneshot::channel::<()>();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let sending = Sending {
                bootstrap: bootstrap.to_owned(),
                workload: workload.clone(),
                run_id: run_id.to_owned(),
                since: baseline.outputs.clone(),
                one_record_per_batch,
            };
            let drive = drive(sending, ready_rx, stop_tx, stop.clone());
            async move {
                let acked = drive.await;
                drop(quiet_tx);
                acked
            }
        });
        let mut hooks = Hooks {
            on_ready: vec![ready_tx],
            stop_early: Some(stop_rx),
            ..Hooks::default()
        };
        if in_process {
            let (stopping_tx, stopping_rx) = oneshot::channel();
            let stop = stop.clone();
            tokio::spawn(async move {
                if stopping_rx.await.is_ok() {
                    stop.cancel();
                }
            });
            hooks.on_stop.push(stopping_tx);
            hooks.quiet.push(quiet_rx);
        }
        (Producer { task, stop }, hooks)
    }

    /// Ends the sending (sends in flight still get their acknowledgement) and returns what
    /// the broker acknowledged.
    pub async fn finish(self) -> Result<Vec<AckedRecord>, KafkaError> {
        self.stop.cancel();
        self.task.await.map_err(|e| KafkaError {
            what: "workload".to_owned(),
            reason: e.to_string(),
        })?
    }
}

/// What the workload sends, and where it counts the outputs from.
struct Sending {
    bootstrap: String,
    workload: KafkaWorkload,
    /// The keys' prefix.
    run_id: String,
    /// Where this run's outputs begin ([`Baseline::outputs`]).
    since: BTreeMap<i32, i64>,
    one_record_per_batch: bool,
}

async fn drive(
    sending: Sending,
    ready: oneshot::Receiver<()>,
    stop_tx: oneshot::Sender<String>,
    stop: CancellationToken,
) -> Result<Vec<AckedRecord>, KafkaError> {
    let Sending {
        bootstrap,
        workload,
        run_id,
        since,
        one_record_per_batch,
    } = sending;
    tokio::select! {
        ready = ready => if ready.is_err() { return Ok(Vec::new()) },
        () = stop.cancelled() => return Ok(Vec::new()),
    }
    let sequence = Workload {
        topic: &workload.input_topic,
        prefix: &run_id,
        count: workload.records,
        rate: workload.rate,
        one_record_per_batch,
    };
    // Counts outputs as they come, for an early stop.
    let (mut seen, counter) = count_outputs(&bootstrap, &workload.output_topic, &since);
    let acked_so_far = AtomicUsize::new(0);
    let result = async {
        let mut stop_tx = Some(stop_tx);
        let mut ask_stop = |what: String| {
            if let Some(tx) = stop_tx.take() {
                let _ = tx.send(what);
            }
        };
        let producing = produce_counted(&bootstrap, &sequence, &stop, &acked_so_far);
        tokio::pin!(producing);
        let rule = workload.stop_rule();
        let acked = match rule {
            StopRule::Midstream(want) => {
                tokio::select! {
                    acked = &mut producing => {
                        // Sent whole before `want` were processed: the stop comes at `want`
                        // all the same, with the rest of the sent records still in flight.
                        let acked = acked?;
                        tokio::select! {
                            reached = reach(&mut seen, want) => if let Some(n) = reached {
                                ask_stop(in_flight(n, acked.len(), false));
                            },
                            () = stop.cancelled() => {}
                        }
                        acked
                    }
                    reached = reach(&mut seen, want) => {
                        if let Some(n) = reached {
                            let sent = acked_so_far.load(Ordering::Relaxed);
                            ask_stop(in_flight(n, sent, true));
                        }
                        // Keep producing: the stop lands mid-stream.
                        producing.await?
                    }
                }
            }
            StopRule::AllProcessed => {
                let acked = producing.await?;
                let want = acked.len();
                tokio::select! {
                    done = reach(&mut seen, want) => if done.is_some() {
                        ask_stop(format!("all {want} {ALL_PROCESSED}"));
                    },
                    () = stop.cancelled() => {}
                }
                acked
            }
            StopRule::Timer => producing.await?,
        };
        Ok(acked)
    }
    .await;
    // The counter's Kafka client (and its threads) is gone before this returns.
    counter.stop().await;
    result
}

/// The timeline line of a mid-stream stop: the evidence that records were in flight.
fn in_flight(processed: usize, acknowledged: usize, still_sending: bool) -> String {
    format!(
        "{processed} input(s) processed, {acknowledged} acknowledged ({} in flight){}: stopping",
        acknowledged.saturating_sub(processed),
        match still_sending {
            true => ", the workload still sending",
            false => "",
        }
    )
}

/// Waits until the distinct count reaches `want`; `None` if the counting ended first.
async fn reach(seen: &mut tokio::sync::watch::Receiver<OutputCount>, want: usize) -> Option<usize> {
    seen.wait_for(|n| n.distinct >= want)
        .await
        .ok()
        .map(|n| n.distinct)
}

/// Counts the output topic's records in the background, until the guard is dropped.
fn count_outputs(
    bootstrap: &str,
    topic: &str,
    since: &BTreeMap<i32, i64>,
) -> (
    tokio::sync::watch::Receiver<OutputCount>,
    AbortOnDrop<Result<(), KafkaError>>,
) {
    let (seen_tx, seen) = tokio::sync::watch::channel(OutputCount::default());
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    let since = since.clone();
    let counter =
        tokio::spawn(async move { count_processed(&bootstrap, &topic, &since, seen_tx).await });
    (seen, AbortOnDrop(counter))
}

/// Aborts a background task when the work it serves ends.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Aborts the task and waits until it has ended (its future, and what it held, dropped).
    async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Before the restart has produced any output: how long it may stay quiet before the harness
/// asks whether anything is left to consume.
const RESTART_IDLE: Duration = Duration::from_secs(3);
/// Once the restart produces output: how long the output must stay quiet for it to be done.
const RESTART_QUIET: Duration = Duration::from_secs(2);

/// Hooks for the restart: stop it once it has consumed what was left. That is when its output
/// has gone quiet after growing, or, if it had nothing to redo, when the group's commits
/// already cover every acknowledged input.
/// `old_total`: the output records there were before the restart.
pub fn restart_hooks(
    bootstrap: &str,
    workload: &KafkaWorkload,
    baseline: &Baseline,
    acked: &[AckedRecord],
    old_total: usize,
) -> Hooks {
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let (mut stop_tx, stop_rx) = oneshot::channel();
    let bootstrap = bootstrap.to_owned();
    let workload = workload.clone();
    let since = baseline.outputs.clone();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for a in acked {
        let end = ends.entry(a.partition).or_default();
        *end = (*end).max(a.offset + 1);
    }
    tokio::spawn(async move {
        if ready_rx.await.is_err() {
            return;
        }
        // Ends with the run: the runner drops the receiver, and `closed` below yields.
        let reason = tokio::select! {
            reason = caught_up(&bootstrap, &workload, &since, &ends, old_total) => reason,
            () = stop_tx.closed() => return,
        };
        let _ = stop_tx.send(reason);
    });
    Hooks {
        on_ready: vec![ready_tx],
        stop_early: Some(stop_rx),
        ..Hooks::default()
    }
}

async fn caught_up(
    bootstrap: &str,
    workload: &KafkaWorkload,
    since: &BTreeMap<i32, i64>,
    ends: &BTreeMap<i32, i64>,
    old_total: usize,
) -> String {
    let (mut seen, _counter) = count_outputs(bootstrap, &workload.output_topic, since);
    loop {
        let grown = seen.borrow().total > old_total;
        let quiet = if grown { RESTART_QUIET } else { RESTART_IDLE };
        match tokio::time::timeout(quiet, seen.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return "output counting failed: stopping".to_owned(),
            Err(_) if grown => {
                return format!(
                    "{} new output(s), then quiet for {} ms: stopping",
                    seen.borrow().total - old_total,
                    RESTART_QUIET.as_millis()
                );
            }
            Err(_) => {
                // Nothing new: done if nothing is left to consume.
                let committed = committed_offsets(
                    bootstrap,
                    &workload.group,
                    &workload.input_topic,
                    workload.partitions,
                )
                .await;
                if let Ok(committed) = committed
                    && ends
                        .iter()
                        .all(|(p, end)| committed.get(p).copied().flatten() >= Some(*end))
                {
                    return "nothing new to process, and the group's commits cover every acknowledged input: stopping".to_owned();
                }
            }
        }
    }
}

/// What Kafka held after one stop.
#[derive(serde::Serialize)]
pub struct AfterStop {
    pub processed: Vec<ProcessedRecord>,
    /// The broker served less than it reported (see [`crate::kafka::ReadBack`]).
    pub stalled: Option<String>,
    pub committed: BTreeMap<i32, Option<i64>>,
}

/// Where a run's Kafka evidence begins: what the earlier cycles of a loop left in the topics
/// and the group they share (empty for a single run). A restart keeps the group, and so does
/// the next cycle: its commits are judged against where the last one left them.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Baseline {
    /// Per output partition, the offset after the last output already read.
    pub outputs: BTreeMap<i32, i64>,
    /// The group's commits when the last cycle ended.
    pub committed: BTreeMap<i32, i64>,
}

impl Baseline {
    /// The baseline of the next cycle, once `last` was read after this one.
    pub fn after(&self, last: &AfterStop) -> Baseline {
        let mut next = self.clone();
        for record in &last.processed {
            let (p, o) = record.output;
            let end = next.outputs.entry(p).or_default();
            *end = (*end).max(o + 1);
        }
        for (p, c) in &last.committed {
            if let Some(c) = c {
                next.committed.insert(*p, *c);
            }
        }
        next
    }
}

/// Reads the output topic (from `baseline` on) and the group's commits.
pub async fn read_after_stop(
    bootstrap: &str,
    workload: &KafkaWorkload,
    baseline: &Baseline,
) -> Result<AfterStop, KafkaError> {
    let read = read_back(bootstrap, &workload.output_topic, &baseline.outputs).await?;
    let committed = committed_offsets(
        bootstrap,
        &workload.group,
        &workload.input_topic,
        workload.partitions,
    )
    .await?;
    Ok(AfterStop {
        processed: read.records,
        committed,
        stalled: read.stalled,
    })
}

/// Everything the Kafka checks are decided from; written to `kafka.json` in the run's output
/// folder, so a verdict can be checked record by record.
#[derive(serde::Serialize)]
pub struct KafkaRun {
    /// What earlier cycles left; the outputs and commits below begin there.
    pub baseline: Baseline,
    pub acked: Vec<AckedRecord>,
    pub stop: StopKind,
    /// After the first stop.
    pub first: AfterStop,
    /// What the target said it sent before the first stop ended.
    pub outputs_sent: Option<u64>,
    /// After the restart, if there was one; else why not.
    pub restart: Result<AfterStop, String>,
    /// Faults the schedule played on Kafka while the target ran (see
    /// [`no_redelivery_under_faults`]).
    pub kafka_faults: usize,
}

/// The end of the timeline line that says a `stop_when_processed` workload was processed
/// whole (`all N acknowledged input(s) processed: stopping`).
const ALL_PROCESSED: &str = "acknowledged input(s) processed: stopping";

/// Decides the Kafka checks.
pub fn judge(run: &KafkaRun, records: usize) -> BTreeMap<CheckName, Outcome> {
    let mut outcomes = BTreeMap::new();
    if run.acked.is_empty() {
        let reason = format!("the broker acknowledged none of the {records} input record(s)");
        for check in CheckName::KAFKA {
            outcomes.insert(check, Outcome::inconclusive(reason.clone()));
        }
        return outcomes;
    }
    let first = KafkaEvidence {
        acked: run.acked.clone(),
        processed: run.first.processed.clone(),
        committed: run.first.committed.clone(),
        floor: run.baseline.committed.clone(),
    };
    outcomes.insert(
        CheckName::OffsetsCommitted,
        offsets_committed(&first, run.stop),
    );
    outcomes.insert(
        CheckName::ProducerFlushed,
        producer_flushed(run.outputs_sent, &first.processed, run.stop),
    );
    let (last, limits) = match &run.restart {
        Ok(after) => (
            KafkaEvidence {
                acked: run.acked.clone(),
                processed: after.processed.clone(),
                committed: after.committed.clone(),
                floor: run.baseline.committed.clone(),
            },
            None,
        ),
        Err(why) => (first, Some(format!("what a restart consumes ({why})"))),
    };
    let redelivery = match run.kafka_faults {
        0 => no_redelivery(&last, run.stop),
        _ => no_redelivery_under_faults(&last, &run.first.processed, run.stop),
    };
    for (check, outcome) in [
        (CheckName::NoMessageLoss, no_message_loss(&last)),
        (CheckName::NoRedelivery, redelivery),
    ] {
        outcomes.insert(check, with_note(outcome, limits.as_deref()));
    }
    // A broker that served less than it reported is said on every check it touched.
    let stalled = [run.first.stalled.as_deref()]
        .into_iter()
        .chain([run.restart.as_ref().ok().and_then(|r| r.stalled.as_deref())])
        .flatten()
        .collect::<Vec<_>>()
        .join("; ");
    if !stalled.is_empty() {
        for outcome in outcomes.values_mut() {
            *outcome = with_note(outcome.clone(), Some(&stalled));
        }
    }
    outcomes
}

/// Adds `note` to a pass's limits or a violation's evidence.
fn with_note(outcome: Outcome, note: Option<&str>) -> Outcome {
    let Some(note) = note else {
        return outcome;
    };
    match outcome {
        Outcome::Pass { detail, limits } => Outcome::Pass {
            detail,
            limits: Some(match limits {
                Some(limits) => format!("{limits}; {note}"),
                None => note.to_owned(),
            }),
        },
        Outcome::Violation {
            summary,
            mut evidence,
        } => {
            evidence.push(format!("note: {note}"));
            Outcome::Violation { summary, evidence }
        }
        inconclusive => inconclusive,
    }
}
