//! The Kafka side of a run: topics before the target starts, the workload once it is ready,
//! the read-back after each stop, and the judgement.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::ingress::{Answers, IngressEvidence, IngressTarget, send_requests};
use crate::kafka::{
    AckedRecord, KafkaError, KafkaEvidence, OutputCount, ProcessedRecord, StopKind, Unmatched,
    Workload, committed_offsets, count_processed, create_topic, no_message_loss, no_redelivery,
    no_redelivery_under_faults, offsets_committed, produce_counted, producer_flushed, read_back,
    resolve,
};
use crate::scenario::{KafkaWorkload, ProcessedBy, StopRule};
use crate::target::Hooks;
use crate::verdict::{CheckName, Outcome};

/// Creates the input and output topics.
pub async fn create_topics(bootstrap: &str, workload: &KafkaWorkload) -> Result<(), KafkaError> {
    create_topic(bootstrap, &workload.input_topic, workload.partitions).await?;
    create_topic(bootstrap, &workload.output_topic, workload.partitions).await
}

/// What every input key of the run `run_id` begins with: the run id and a part the target is
/// not told (from a secret of this process), so that a target cannot name inputs it never read:
/// with guessable keys, a target that consumed nothing wrote an output for every key it could
/// guess, committed the input topic's end, and passed the three Kafka checks.
pub fn key_prefix(run_id: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static SECRET: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut hasher = SECRET.get_or_init(Default::default).build_hasher();
    hasher.write(run_id.as_bytes());
    format!("{run_id}-{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// Where processed inputs are counted while the target runs: the output topic from where
/// this run's outputs begin, or the log files of this start of the target.
#[derive(Clone, Debug)]
pub struct Counting {
    bootstrap: String,
    workload: KafkaWorkload,
    since: BTreeMap<i32, i64>,
    logs: Vec<PathBuf>,
    /// The inputs' keys begin `{prefix}-` (see [`key_prefix`]).
    prefix: String,
}

impl Counting {
    pub fn new(
        bootstrap: &str,
        workload: &KafkaWorkload,
        baseline: &Baseline,
        logs: Vec<PathBuf>,
        run_id: &str,
    ) -> Counting {
        Counting {
            bootstrap: bootstrap.to_owned(),
            workload: workload.clone(),
            since: baseline.outputs.clone(),
            logs,
            prefix: key_prefix(run_id),
        }
    }

    /// Counts in the background, until the guard is dropped.
    fn start(
        &self,
    ) -> (
        tokio::sync::watch::Receiver<OutputCount>,
        AbortOnDrop<Result<(), KafkaError>>,
    ) {
        let (seen_tx, seen) = tokio::sync::watch::channel(OutputCount::default());
        let this = self.clone();
        let counter = tokio::spawn(async move {
            match this.workload.processed.log_pattern() {
                None => {
                    count_processed(
                        &this.bootstrap,
                        &this.workload.output_topic,
                        &this.since,
                        &this.workload.processed,
                        &this.prefix,
                        seen_tx,
                    )
                    .await
                }
                Some(pattern) => {
                    crate::kafka::log::count_lines(this.logs, pattern, this.prefix, seen_tx).await;
                    Ok(())
                }
            }
        });
        (seen, AbortOnDrop(counter))
    }
}

/// The workload of the first run, started in the background: it waits for the target to be
/// ready, produces, and (with `stop_when_processed`) asks for the stop once every acknowledged
/// input has an output.
pub struct Producer {
    task: tokio::task::JoinHandle<Result<Vec<AckedRecord>, KafkaError>>,
    stop: CancellationToken,
    /// With `[kafka.ingress]`: where the requests go and what they got.
    ingress: Option<(IngressTarget, Arc<Mutex<Answers>>)>,
}

/// What the workload sent and what acknowledged it.
pub struct Sent {
    /// The records the broker acknowledged; with an ingress, the acknowledged requests, their
    /// records not yet found (`partition` -1: see [`super::ingress::locate`]).
    pub acked: Vec<AckedRecord>,
    pub ingress: Option<(IngressTarget, Answers)>,
}

impl Producer {
    /// Starts it; the returned hooks go to the target's runner.
    ///
    /// `in_process`: the target shares this process (a graph), so the workload ends when the
    /// target is told to stop, and its Kafka clients are gone before the graph's threads are
    /// counted; else they would be counted as the graph's.
    /// `ingress`: the requests' target, with `[kafka.ingress]`.
    pub fn start(
        counting: Counting,
        in_process: bool,
        ingress: Option<IngressTarget>,
    ) -> (Producer, Hooks) {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (quiet_tx, quiet_rx) = oneshot::channel::<()>();
        let stop = CancellationToken::new();
        let ingress = ingress.map(|target| (target, Arc::new(Mutex::new(Answers::default()))));
        let task = tokio::spawn({
            let drive = drive(counting, ingress.clone(), ready_rx, stop_tx, stop.clone());
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
        (
            Producer {
                task,
                stop,
                ingress,
            },
            hooks,
        )
    }

    /// Ends the sending (sends in flight still get their acknowledgement) and returns what
    /// was acknowledged.
    pub async fn finish(self) -> Result<Sent, KafkaError> {
        self.stop.cancel();
        let acked = self.task.await.map_err(|e| KafkaError {
            what: "workload".to_owned(),
            reason: e.to_string(),
        })??;
        let ingress = self.ingress.map(|(target, answers)| {
            let answers = answers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            (target, answers)
        });
        Ok(Sent { acked, ingress })
    }
}

async fn drive(
    counting: Counting,
    ingress: Option<(IngressTarget, Arc<Mutex<Answers>>)>,
    ready: oneshot::Receiver<()>,
    stop_tx: oneshot::Sender<String>,
    stop: CancellationToken,
) -> Result<Vec<AckedRecord>, KafkaError> {
    let (bootstrap, workload, run_id) = (&counting.bootstrap, &counting.workload, &counting.prefix);
    tokio::select! {
        ready = ready => if ready.is_err() { return Ok(Vec::new()) },
        () = stop.cancelled() => return Ok(Vec::new()),
    }
    let sequence = Workload {
        topic: &workload.input_topic,
        prefix: run_id,
        value: &workload.input_value,
        count: workload.records,
        rate: workload.rate,
        batching: workload.batching(),
    };
    // Counts outputs as they come, for an early stop.
    let (mut seen, counter) = counting.start();
    let acked_so_far = AtomicUsize::new(0);
    let result = async {
        let mut stop_tx = Some(stop_tx);
        let mut ask_stop = |what: String| {
            if let Some(tx) = stop_tx.take() {
                let _ = tx.send(what);
            }
        };
        let producing = async {
            match &ingress {
                None => produce_counted(bootstrap, &sequence, &stop, &acked_so_far).await,
                Some((target, answers)) => {
                    let keys =
                        send_requests(target, &sequence, &stop, &acked_so_far, answers).await;
                    Ok(keys.into_iter().map(AckedRecord::unplaced).collect())
                }
            }
        };
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
/// `counting`: on the restart's log files; `old_total`: the outputs counted before the
/// restart (none when a log is counted: the restart's log begins empty).
pub fn restart_hooks(counting: Counting, acked: &[AckedRecord], old_total: usize) -> Hooks {
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let (mut stop_tx, stop_rx) = oneshot::channel();
    let old_total = match counting.workload.processed {
        ProcessedBy::Log { .. } => 0,
        _ => old_total,
    };
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
            reason = caught_up(&counting, &ends, old_total) => reason,
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

async fn caught_up(counting: &Counting, ends: &BTreeMap<i32, i64>, old_total: usize) -> String {
    let (bootstrap, workload) = (&counting.bootstrap, &counting.workload);
    let (mut seen, _counter) = counting.start();
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

/// What Kafka (or the target's log) held after one stop.
#[derive(serde::Serialize)]
pub struct AfterStop {
    pub processed: Vec<ProcessedRecord>,
    /// Outputs that named no acknowledged input of the run.
    pub unmatched: Unmatched,
    /// The broker served less than it reported (see [`crate::kafka::ReadBack`]).
    pub stalled: Option<String>,
    pub committed: BTreeMap<i32, Option<i64>>,
    /// A chain's hops (`[kafka] via`), the first from the input topic: each group's commits
    /// and what of its topic reached the next one. Empty without `via`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<HopAfterStop>,
}

/// One hop of a chain after a stop: the group that consumes `topic`, its commits there, and
/// which of the topic's records of this run reached the next topic.
#[derive(serde::Serialize)]
pub struct HopAfterStop {
    pub group: String,
    pub topic: String,
    /// The topic's records of this run: the hop's inputs (the first hop's are the inputs the
    /// broker acknowledged).
    pub records: usize,
    #[serde(skip)]
    pub evidence: KafkaEvidence,
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
            let Some((p, o)) = record.output else {
                continue;
            };
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

/// Reads what was processed (the output topic from `baseline` on, or the `logs` of every
/// start so far), each output's input found among `acked`, and the group's commits.
pub async fn read_after_stop(
    bootstrap: &str,
    workload: &KafkaWorkload,
    baseline: &Baseline,
    acked: &[AckedRecord],
    logs: &[PathBuf],
) -> Result<AfterStop, KafkaError> {
    let read = match workload.processed.log_pattern() {
        None => {
            read_back(
                bootstrap,
                &workload.output_topic,
                &baseline.outputs,
                &workload.processed,
            )
            .await?
        }
        Some(pattern) => crate::kafka::ReadBack {
            outputs: crate::kafka::log::read_outputs(logs, &pattern),
            ..Default::default()
        },
    };
    let (processed, unmatched) = resolve(read.outputs, acked);
    let unmatched = read.unmatched.merge(unmatched);
    let committed = committed_offsets(
        bootstrap,
        &workload.group,
        &workload.input_topic,
        workload.partitions,
    )
    .await?;
    let hops = match workload.via.is_empty() {
        true => Vec::new(),
        false => read_hops(bootstrap, workload, baseline, acked).await?,
    };
    Ok(AfterStop {
        processed,
        unmatched,
        committed,
        stalled: read.stalled,
        hops,
    })
}

/// Each hop of a chain: its group's commits on the topic it consumes, judged against what of
/// that topic reached the next (the first hop's topic is the input, the last's next the
/// output). A hop's records are known by the input key they carry, as `processed` reads it.
async fn read_hops(
    bootstrap: &str,
    workload: &KafkaWorkload,
    baseline: &Baseline,
    acked: &[AckedRecord],
) -> Result<Vec<HopAfterStop>, KafkaError> {
    let ours: std::collections::BTreeSet<&str> = acked.iter().map(|a| a.key.as_str()).collect();
    let mut stages: Vec<(&str, &str)> = vec![(&workload.input_topic, &workload.group)];
    stages.extend(
        workload
            .via
            .iter()
            .map(|h| (h.topic.as_str(), h.group.as_str())),
    );
    let mut records = acked.to_vec();
    let mut hops = Vec::new();
    for (i, (topic, group)) in stages.iter().enumerate() {
        let (next, since) = match stages.get(i + 1) {
            Some((next, _)) => (*next, BTreeMap::new()),
            None => (workload.output_topic.as_str(), baseline.outputs.clone()),
        };
        let read = read_back(bootstrap, next, &since, &workload.processed).await?;
        // The next hop's records of this run: where each is, and the input key it carries.
        let next_records: Vec<AckedRecord> = read
            .outputs
            .iter()
            .filter_map(|o| match (&o.input, o.at) {
                (crate::kafka::InputRef::Key(key), Some((partition, offset)))
                    if ours.contains(key.as_str()) =>
                {
                    Some(AckedRecord {
                        partition,
                        offset,
                        key: key.clone(),
                    })
                }
                _ => None,
            })
            .collect();
        let (processed, _) = resolve(read.outputs, &records);
        let partitions = records
            .iter()
            .map(|r| r.partition + 1)
            .max()
            .unwrap_or(0)
            .max(workload.partitions);
        let committed = committed_offsets(bootstrap, group, topic, partitions).await?;
        let floor = match i {
            0 => baseline.committed.clone(),
            _ => BTreeMap::new(),
        };
        hops.push(HopAfterStop {
            group: (*group).to_owned(),
            topic: (*topic).to_owned(),
            records: records.len(),
            evidence: KafkaEvidence {
                acked: std::mem::replace(&mut records, next_records),
                processed,
                committed,
                floor,
            },
        });
    }
    Ok(hops)
}

/// Everything the Kafka checks are decided from; written to `kafka.json` in the run's output
/// folder, so a verdict can be checked record by record.
#[derive(serde::Serialize)]
pub struct KafkaRun {
    /// What earlier cycles left; the outputs and commits below begin there.
    pub baseline: Baseline,
    pub acked: Vec<AckedRecord>,
    /// With `[kafka.ingress]`: what the requests got, and the acknowledged ones the service
    /// never wrote to the input topic (`acked` holds those it wrote).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressEvidence>,
    pub stop: StopKind,
    /// After the first stop.
    pub first: AfterStop,
    /// What the target said it sent before the first stop ended.
    pub outputs_sent: Option<u64>,
    /// What the restart consumed, or why there is none.
    pub restart: Restart,
    /// Faults the schedule played on Kafka while the target ran, before the stop (see
    /// [`no_redelivery_under_faults`]).
    pub kafka_faults: usize,
    /// Whether the harness waited for the target to process (a mid-stream or all-processed
    /// stop) rather than stopping it on a timer: then nothing processed by the stop means the
    /// target consumed nothing while inputs waited.
    pub waited_for_processing: bool,
}

/// What became of the restart that shows what a restart consumes.
#[derive(serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "restart")]
pub enum Restart {
    /// It ran, became ready, consumed, and was stopped cleanly; this is what Kafka held then.
    Consumed(AfterStop),
    /// Not run: turned off, or nothing was acknowledged, or the run was interrupted.
    NotRun { why: String },
    /// It was started but never became ready (it exited, or timed out): the target cannot
    /// restart, which is a failure of the checks that need one.
    Failed { how: String, evidence: Vec<String> },
}

impl Restart {
    fn consumed(&self) -> Option<&AfterStop> {
        match self {
            Restart::Consumed(after) => Some(after),
            _ => None,
        }
    }
}

/// The end of the timeline line that says a `stop_when_processed` workload was processed
/// whole (`all N acknowledged input(s) processed: stopping`).
const ALL_PROCESSED: &str = "acknowledged input(s) processed: stopping";

/// Decides the Kafka checks. A check passes only on evidence that what it judges happened:
/// the target processed inputs in the run (and, for loss and redelivery, a restart consumed
/// what was left); the read-back was complete.
pub fn judge(run: &KafkaRun, workload: &KafkaWorkload) -> BTreeMap<CheckName, Outcome> {
    let mut outcomes = BTreeMap::new();
    if run.acked.is_empty() {
        let reason = match &run.ingress {
            None => format!(
                "the broker acknowledged none of the {} input record(s)",
                workload.records
            ),
            Some(ingress) => format!(
                "no request `{}` acknowledged is in `{}` ({})",
                ingress.service,
                workload.input_topic,
                ingress.answers.describe()
            ),
        };
        for check in CheckName::KAFKA {
            outcomes.insert(check, Outcome::inconclusive(reason.clone()));
        }
        if let Some(ingress) = &run.ingress {
            outcomes.insert(
                CheckName::NoMessageLoss,
                super::ingress::judge_loss(ingress, workload, None),
            );
        }
        return outcomes;
    }
    let first = KafkaEvidence {
        acked: run.acked.clone(),
        processed: run.first.processed.clone(),
        committed: run.first.committed.clone(),
        floor: run.baseline.committed.clone(),
    };
    let source = workload.processed.describe(&workload.output_topic);
    outcomes.insert(
        CheckName::OffsetsCommitted,
        match (first.processed.is_empty(), run.first.hops.is_empty()) {
            (true, _) => consumed_nothing(run, workload, &source),
            (false, true) => offsets_committed(&first, run.stop),
            (false, false) => hops_committed(&run.first.hops, run.stop),
        },
    );
    outcomes.insert(
        CheckName::ProducerFlushed,
        match workload.processed {
            ProcessedBy::Log { .. } => Outcome::inconclusive(
                "what was processed was read from the target's log, not from an output topic: \
                 no output was there to find",
            ),
            _ => producer_flushed(
                run.outputs_sent,
                &first.processed,
                run.stop,
                run.kafka_faults > 0,
            ),
        },
    );
    let (loss, redelivery) = loss_and_redelivery(run, workload, &first, &source);
    outcomes.insert(CheckName::NoMessageLoss, loss);
    outcomes.insert(CheckName::NoRedelivery, redelivery);
    qualify(&mut outcomes, run, &source);
    if let Some(ingress) = &run.ingress {
        let beyond = outcomes.remove(&CheckName::NoMessageLoss);
        outcomes.insert(
            CheckName::NoMessageLoss,
            super::ingress::judge_loss(ingress, workload, beyond),
        );
    }
    outcomes
}

/// `offsets_committed` for a chain: every hop's group judged against what of its topic
/// reached the next; a violation in any hop fails the check, naming the group.
fn hops_committed(hops: &[HopAfterStop], stop: StopKind) -> Outcome {
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    let mut unsure = Vec::new();
    for hop in hops {
        let name = format!("group `{}` on `{}`", hop.group, hop.topic);
        match offsets_committed(&hop.evidence, stop) {
            Outcome::Pass { detail, .. } => passed.push(format!("{name}: {detail}")),
            Outcome::Violation { summary, evidence } => {
                failed.push(format!("{name}: {summary}"));
                failed.extend(evidence.into_iter().map(|l| format!("  {l}")));
            }
            Outcome::Inconclusive { reason } => unsure.push(format!("{name}: {reason}")),
        }
    }
    match (failed.is_empty(), unsure.is_empty()) {
        (false, _) => Outcome::violation(
            "a hop of the chain committed what it had not handed on",
            failed.into_iter().chain(passed).collect(),
        ),
        (true, false) => Outcome::inconclusive(unsure.join("; ")),
        (true, true) => Outcome::pass(passed.join("; ")),
    }
}

/// Nothing processed while inputs waited: the absence is the bug when the harness waited for
/// processing; with a timed stop it may have come too early to say.
fn consumed_nothing(run: &KafkaRun, workload: &KafkaWorkload, source: &str) -> Outcome {
    let summary = format!(
        "the target processed none of the {} acknowledged input(s) while it ran",
        run.acked.len()
    );
    let mut evidence = vec![format!(
        "no input was named by {source}, and no commit moved in group `{}`: does it consume \
         `{}` in that group?",
        workload.group, workload.input_topic
    )];
    evidence.extend(unmatched_lines(&run.first.unmatched, workload));
    match run.waited_for_processing {
        true => Outcome::violation(summary, evidence),
        false => Outcome::inconclusive(format!(
            "{summary}, but the stop came on a timer ([kafka] stop_when_processed = false): too \
             early to tell"
        )),
    }
}

/// `no_message_loss` and `no_redelivery`: judged over the run and the restart that consumed
/// what it left, when one ran.
fn loss_and_redelivery(
    run: &KafkaRun,
    workload: &KafkaWorkload,
    first: &KafkaEvidence,
    source: &str,
) -> (Outcome, Outcome) {
    match &run.restart {
        Restart::Failed { how, evidence } => {
            let mut lines = vec![format!(
                "the restart, started to consume what the stop left, {how}"
            )];
            lines.extend(evidence.iter().cloned());
            (
                Outcome::violation(
                    format!(
                        "the target could not be restarted ({how}): what it left was never consumed"
                    ),
                    lines.clone(),
                ),
                Outcome::violation(
                    format!(
                        "the target could not be restarted ({how}): what a restart redelivers was never seen"
                    ),
                    lines,
                ),
            )
        }
        Restart::Consumed(after) => {
            let last = KafkaEvidence {
                acked: run.acked.clone(),
                processed: after.processed.clone(),
                committed: after.committed.clone(),
                floor: run.baseline.committed.clone(),
            };
            let redelivery = match (last.processed.is_empty(), run.kafka_faults) {
                (true, _) => Outcome::inconclusive(
                    "nothing was processed, by the run or the restart: nothing could be redelivered",
                ),
                (false, 0) => no_redelivery(&last, run.stop),
                (false, _) => no_redelivery_under_faults(&last, &run.first.processed, run.stop),
            };
            (loss_after_restart(&last, workload), redelivery)
        }
        Restart::NotRun { why } => {
            let note = format!(
                "inputs after the group's commits were left to a later consumer: no restart was \
                 run to see them consumed ({why})"
            );
            let loss = match first.processed.is_empty() {
                true => consumed_nothing(run, workload, source),
                false => with_note(no_message_loss(first), Some(&note)),
            };
            let redelivery = match no_redelivery(first, run.stop) {
                violation @ Outcome::Violation { .. } => violation,
                _ => Outcome::inconclusive(format!(
                    "what a restart redelivers after the stop was not seen: no restart was run ({why})"
                )),
            };
            (loss, redelivery)
        }
    }
}

/// What every verdict says besides its own finding: no PASS stands on a partial read-back
/// (a broker that served less than it reported), outputs that named no input were not counted,
/// and where what was processed was read from.
fn qualify(outcomes: &mut BTreeMap<CheckName, Outcome>, run: &KafkaRun, source: &str) {
    let stalled = [run.first.stalled.as_deref()]
        .into_iter()
        .chain([run.restart.consumed().and_then(|r| r.stalled.as_deref())])
        .flatten()
        .collect::<Vec<_>>()
        .join("; ");
    if !stalled.is_empty() {
        for outcome in outcomes.values_mut() {
            *outcome = match std::mem::replace(outcome, Outcome::inconclusive("")) {
                Outcome::Pass { detail, .. } => Outcome::inconclusive(format!(
                    "the read-back of the output topic was incomplete ({stalled}); on what it \
                     read: {detail}"
                )),
                other => with_note(other, Some(&stalled)),
            };
        }
    }
    let unmatched = run
        .restart
        .consumed()
        .map_or(&run.first.unmatched, |after| &after.unmatched);
    let uncounted = (unmatched.count > 0).then(|| {
        format!(
            "{} output(s) named no input of this run and were not counted (e.g. {})",
            unmatched.count,
            unmatched.examples.first().map_or("", String::as_str)
        )
    });
    for outcome in outcomes.values_mut() {
        let named = named_source(
            std::mem::replace(outcome, Outcome::inconclusive("")),
            source,
        );
        *outcome = with_note(named, uncounted.as_deref());
    }
}

/// A pass's detail or a violation's evidence says where what was processed was read from.
fn named_source(outcome: Outcome, source: &str) -> Outcome {
    outcome.sourced(
        &format!("; processed: {source}"),
        format!("what was processed was read from {source}"),
    )
}

/// The evidence lines of outputs that named no input: how many, a few of them, and what the
/// harness looked for.
fn unmatched_lines(unmatched: &Unmatched, workload: &KafkaWorkload) -> Vec<String> {
    if unmatched.count == 0 {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "{} output(s) named no input of this run (its inputs are keyed `<run id>-<secret>-<n>`; \
         [kafka] processed = {}), e.g.:",
        unmatched.count,
        toml::to_string(&workload.processed)
            .map(|t| format!("{{ {} }}", t.trim().replace('\n', ", ")))
            .unwrap_or_default()
    )];
    lines.extend(unmatched.examples.iter().map(|e| format!("  {e}")));
    lines
}

/// `no_message_loss` once a restart has consumed what the stop left: every acknowledged input
/// was processed, by the run or the restart. One committed but never processed is lost; one
/// neither processed nor committed is one the restart did not consume.
fn loss_after_restart(last: &KafkaEvidence, workload: &KafkaWorkload) -> Outcome {
    let verdict = no_message_loss(last);
    if verdict.is_violation() {
        return verdict;
    }
    let processed: std::collections::BTreeSet<(i32, i64)> = last
        .processed
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    let waiting: Vec<&AckedRecord> = last
        .acked
        .iter()
        .filter(|a| !processed.contains(&(a.partition, a.offset)))
        .collect();
    if waiting.is_empty() {
        return Outcome::pass(format!(
            "all {} acknowledged input(s) processed, by the run or the restart",
            last.acked.len()
        ));
    }
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for a in &waiting {
        by_partition.entry(a.partition).or_default().push(a.offset);
    }
    let mut evidence: Vec<String> = by_partition
        .iter()
        .take(10)
        .map(|(p, offsets)| {
            let (lo, hi) = (offsets[0], offsets[offsets.len() - 1]);
            format!(
                "partition {p}: {} input(s) between offsets {lo} and {hi}",
                offsets.len()
            )
        })
        .collect();
    evidence.push(format!(
        "the restart was stopped once its output went quiet, or after [kafka] restart_timeout_ms \
         = {} ms, with these still unconsumed",
        workload.restart_timeout_ms
    ));
    Outcome::violation(
        format!(
            "{} acknowledged input(s) never processed: neither the run nor the restart consumed them",
            waiting.len()
        ),
        evidence,
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(n: i64) -> Vec<AckedRecord> {
        (0..n)
            .map(|o| AckedRecord {
                partition: 0,
                offset: o,
                key: format!("k{o}"),
            })
            .collect()
    }

    fn processed(offsets: impl IntoIterator<Item = i64>) -> Vec<ProcessedRecord> {
        offsets
            .into_iter()
            .map(|o| ProcessedRecord {
                partition: 0,
                offset: o,
                key: format!("k{o}"),
                output: Some((0, o)),
            })
            .collect()
    }

    fn after(done: impl IntoIterator<Item = i64>, committed: Option<i64>) -> AfterStop {
        AfterStop {
            processed: processed(done),
            unmatched: Unmatched::default(),
            stalled: None,
            committed: BTreeMap::from([(0, committed)]),
            hops: Vec::new(),
        }
    }

    fn hop(group: &str, done: std::ops::Range<i64>, committed: i64) -> HopAfterStop {
        HopAfterStop {
            group: group.into(),
            topic: format!("{group}-in"),
            records: 10,
            evidence: KafkaEvidence {
                acked: acked(10),
                processed: processed(done),
                committed: BTreeMap::from([(0, Some(committed))]),
                floor: BTreeMap::new(),
            },
        }
    }

    /// A chain's first hop commits what it handed to the next topic, which the end of the
    /// chain has not reached yet: each hop judged on its own passes; the end-to-end view
    /// would have called the lag a loss. A hop that commits what it never handed on fails,
    /// named.
    #[test]
    fn a_chain_is_judged_hop_by_hop() {
        // The end of the chain has 0..4; the intake handed on 0..8 and committed 8.
        let mut first = after(0..4, Some(8));
        first.hops = vec![hop("intake", 0..8, 8), hop("worker", 0..4, 4)];
        let workload = KafkaWorkload {
            processed: ProcessedBy::Key {},
            ..KafkaWorkload::default()
        };
        let judged = judge(
            &run(first, Restart::Consumed(after(0..10, Some(10)))),
            &workload,
        );
        let outcome = &judged[&CheckName::OffsetsCommitted];
        assert!(matches!(outcome, Outcome::Pass { .. }), "{outcome:?}");
        // The worker commits 7 with only 0..4 handed on: 4..7 can never come again.
        let mut first = after(0..4, Some(8));
        first.hops = vec![hop("intake", 0..8, 8), hop("worker", 0..4, 7)];
        let judged = judge(
            &run(first, Restart::Consumed(after(0..10, Some(10)))),
            &workload,
        );
        let Outcome::Violation { evidence, .. } = &judged[&CheckName::OffsetsCommitted] else {
            panic!("{judged:?}")
        };
        let all = evidence.join("\n");
        assert!(
            all.contains("group `worker` on `worker-in`: committed offsets disagree"),
            "{all}"
        );
        assert!(!all.contains("group `intake` on `intake-in`: committed offsets disagree"));
    }

    fn run(first: AfterStop, restart: Restart) -> KafkaRun {
        KafkaRun {
            baseline: Baseline::default(),
            acked: acked(10),
            ingress: None,
            stop: StopKind::Clean,
            first,
            outputs_sent: Some(5),
            restart,
            kafka_faults: 0,
            waited_for_processing: true,
        }
    }

    fn marks(judged: &BTreeMap<CheckName, Outcome>) -> String {
        judged
            .iter()
            .map(|(c, o)| format!("{c}={}", o.mark()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A process that never touched Kafka passed every Kafka check: "all 500 acknowledged
    /// input(s) processed or still to be consumed", "0 input(s) processed once each".
    #[test]
    fn a_target_that_consumed_nothing_fails_and_judges_no_redelivery_on_nothing() {
        let mut idle = run(after([], None), Restart::Consumed(after([], None)));
        idle.outputs_sent = Some(0);
        let judged = judge(&idle, &KafkaWorkload::default());
        assert_eq!(
            marks(&judged),
            "offsets_committed=F no_message_loss=F no_redelivery=? producer_flushed=?"
        );
        let Outcome::Violation { summary, .. } = &judged[&CheckName::OffsetsCommitted] else {
            unreachable!()
        };
        assert_eq!(
            summary,
            "the target processed none of the 10 acknowledged input(s) while it ran"
        );
        // Without a restart either.
        let alone = run(
            after([], None),
            Restart::NotRun {
                why: "turned off".into(),
            },
        );
        let judged = judge(&alone, &KafkaWorkload::default());
        assert!(judged[&CheckName::NoMessageLoss].is_violation());
        assert!(matches!(
            judged[&CheckName::NoRedelivery],
            Outcome::Inconclusive { .. }
        ));
    }

    /// A service whose outputs name no input of the run (a wrong pointer, its own keys) had
    /// processed nothing as far as anyone can tell: the evidence shows what was found, and
    /// which setting looked for it.
    #[test]
    fn outputs_that_name_no_input_fail_with_what_was_found() {
        let outputs = vec![crate::kafka::Output {
            input: crate::kafka::InputRef::Key("order-1".into()),
            key: "order-1".into(),
            at: Some((0, 0)),
        }];
        let (processed, unmatched) = resolve(outputs, &acked(10));
        assert!(processed.is_empty());
        let mut first = after([], None);
        first.unmatched = unmatched;
        let workload = KafkaWorkload {
            processed: ProcessedBy::Key {},
            ..KafkaWorkload::default()
        };
        let judged = judge(&run(first, Restart::Consumed(after([], None))), &workload);
        let Outcome::Violation { evidence, .. } = &judged[&CheckName::OffsetsCommitted] else {
            panic!("{judged:?}")
        };
        let all = evidence.join("\n");
        assert!(
            all.contains("1 output(s) named no input of this run")
                && all.contains("partition 0 offset 0: `order-1` is no input of this run")
                && all.contains("processed = { by = \"key\" }"),
            "{all}"
        );
    }

    /// The source is named under every verdict it decided; a log has no topic, so a flush
    /// cannot be judged from it.
    #[test]
    fn the_evidence_names_its_source() {
        let (processed, _) = resolve(
            (0..10)
                .map(|o| crate::kafka::Output {
                    input: crate::kafka::InputRef::Key(format!("k{o}")),
                    key: String::new(),
                    at: None,
                })
                .collect(),
            &acked(10),
        );
        assert_eq!(processed.len(), 10);
        let mut first = after([], Some(10));
        first.processed = processed;
        let workload = KafkaWorkload {
            processed: ProcessedBy::Log {
                pattern: r"done (\S+)".into(),
            },
            ..KafkaWorkload::default()
        };
        let judged = judge(
            &run(first, Restart::Consumed(after(0..10, Some(10)))),
            &workload,
        );
        assert_eq!(
            marks(&judged),
            "offsets_committed=P no_message_loss=P no_redelivery=P producer_flushed=?"
        );
        let Outcome::Pass { detail, .. } = &judged[&CheckName::OffsetsCommitted] else {
            unreachable!()
        };
        assert!(
            detail.ends_with("; processed: lines of the target's output matching `done (\\S+)`"),
            "{detail}"
        );
    }

    /// A restart that died before it was ready failed nothing: the crash was a note under a
    /// PASS.
    #[test]
    fn a_restart_that_never_became_ready_fails_loss_and_redelivery() {
        let crashed = run(
            after(0..5, Some(5)),
            Restart::Failed {
                how: "exited before it was ready (exit code 1, after 812 ms)".into(),
                evidence: vec!["  ValueError: ...".into()],
            },
        );
        let judged = judge(&crashed, &KafkaWorkload::default());
        assert_eq!(
            marks(&judged),
            "offsets_committed=P no_message_loss=F no_redelivery=F producer_flushed=P"
        );
        let Outcome::Violation { evidence, .. } = &judged[&CheckName::NoMessageLoss] else {
            unreachable!()
        };
        assert!(evidence[0].contains("exit code 1"), "{evidence:?}");
        assert_eq!(evidence[1], "  ValueError: ...");
    }

    #[test]
    fn inputs_the_restart_never_consumed_are_not_still_to_be_consumed() {
        // The run processed 0..5 and committed 5; the restart consumed nothing more.
        let stalled = run(
            after(0..5, Some(5)),
            Restart::Consumed(after(0..5, Some(5))),
        );
        let Outcome::Violation { summary, .. } =
            &judge(&stalled, &KafkaWorkload::default())[&CheckName::NoMessageLoss]
        else {
            panic!("five inputs left unconsumed")
        };
        assert!(
            summary.starts_with("5 acknowledged input(s) never processed"),
            "{summary}"
        );
        let done = run(
            after(0..5, Some(5)),
            Restart::Consumed(after(0..10, Some(10))),
        );
        assert_eq!(
            marks(&judge(&done, &KafkaWorkload::default())),
            "offsets_committed=P no_message_loss=P no_redelivery=P producer_flushed=P"
        );
    }

    /// "an incomplete read-back of the output topic is a note under a PASS".
    #[test]
    fn no_pass_stands_on_an_incomplete_read_back() {
        let mut first = after(0..5, Some(5));
        first.stalled = Some("partition 0 read to 5 of 10".into());
        let judged = judge(
            &run(first, Restart::Consumed(after(0..10, Some(10)))),
            &KafkaWorkload::default(),
        );
        for check in [CheckName::OffsetsCommitted, CheckName::NoMessageLoss] {
            let Outcome::Inconclusive { reason } = &judged[&check] else {
                panic!("{check}: {:?}", judged[&check])
            };
            assert!(reason.contains("read to 5 of 10"), "{reason}");
        }
    }

    /// One Kafka fault line anywhere in the timeline (even after the stop) forgave every
    /// duplicate made before the stop.
    #[test]
    fn only_kafka_faults_before_the_stop_count() {
        let timeline = vec![
            (100, "fault: redis down".to_owned()),
            (200, "fault: kafka down".to_owned()),
            (900, "fault: kafka latency 500 ms".to_owned()),
            (950, "restart: fault: kafka down".to_owned()),
        ];
        assert_eq!(crate::run::kafka_faults_played(&timeline, Some(500)), 1);
        assert_eq!(crate::run::kafka_faults_played(&timeline, Some(100)), 0);
        assert_eq!(crate::run::kafka_faults_played(&timeline, None), 0);
    }

    fn ingress(acknowledged: usize, lost: &[&str]) -> IngressEvidence {
        IngressEvidence {
            service: "api".into(),
            instances: vec!["api#1".into(), "api#2".into()],
            answers: crate::run::ingress::Answers {
                sent: acknowledged + 3,
                acknowledged,
                refused: BTreeMap::from([(503, 3)]),
                ..Default::default()
            },
            lost: lost.iter().map(|k| (*k).to_owned()).collect(),
            written_twice: 0,
            written_unacknowledged: 0,
            unreadable: Unmatched::default(),
        }
    }

    /// Hostile: an API that answers 202 and drops some requests before Kafka. Everything it
    /// did write was processed, committed and not redelivered: the graph beyond the door
    /// passes, and the loss at the door still fails `no_message_loss`, naming the keys.
    #[test]
    fn an_ingress_that_acknowledges_what_it_never_wrote_fails_no_message_loss() {
        let done = Restart::Consumed(after(0..10, Some(10)));
        let mut honest = run(after(0..5, Some(5)), done);
        honest.ingress = Some(ingress(10, &[]));
        let judged = judge(&honest, &KafkaWorkload::default());
        assert_eq!(
            marks(&judged),
            "offsets_committed=P no_message_loss=P no_redelivery=P producer_flushed=P"
        );
        let Outcome::Pass { detail, .. } = &judged[&CheckName::NoMessageLoss] else {
            unreachable!()
        };
        assert!(
            detail.contains(
                "`api` answered 13 request(s): 10 acknowledged (2xx), 3 refused (503 x3)"
            ),
            "{detail}"
        );

        let mut dropping = run(
            after(0..5, Some(5)),
            Restart::Consumed(after(0..10, Some(10))),
        );
        dropping.ingress = Some(ingress(12, &["r-10", "r-11"]));
        let judged = judge(&dropping, &KafkaWorkload::default());
        assert_eq!(
            marks(&judged),
            "offsets_committed=P no_message_loss=F no_redelivery=P producer_flushed=P"
        );
        let Outcome::Violation { summary, evidence } = &judged[&CheckName::NoMessageLoss] else {
            unreachable!()
        };
        assert!(
            summary.starts_with("2 request(s) answered 2xx by `api` never reached"),
            "{summary}"
        );
        assert!(
            evidence.iter().any(|l| l.contains("`r-10`, `r-11`")),
            "{evidence:?}"
        );
        // Key `r-10` is request 10, sent to `api#1`; `r-11` to `api#2`.
        assert!(
            evidence
                .iter()
                .any(|l| l == "lost by instance: `api#1` 1, `api#2` 1"),
            "{evidence:?}"
        );

        // The same, with records in `orders` that `written` cannot read: the scenario may be
        // what is wrong, and no service is blamed.
        let mut misread = ingress(12, &["r-10", "r-11"]);
        misread
            .unreadable
            .add(|| "partition 0 offset 3: no `/id` in the value".to_owned());
        dropping.ingress = Some(misread);
        let judged = judge(&dropping, &KafkaWorkload::default());
        let Outcome::Inconclusive { reason } = &judged[&CheckName::NoMessageLoss] else {
            panic!("{judged:?}")
        };
        assert!(
            reason.contains("is `written` right for this service?"),
            "{reason}"
        );
    }

    /// An API that wrote none of what it acknowledged: nothing reached Kafka to judge the
    /// rest on, and the loss is still a violation; one that acknowledged nothing owes nothing.
    #[test]
    fn an_ingress_that_wrote_nothing_fails_and_one_that_acknowledged_nothing_is_undecided() {
        let mut black_hole = run(after([], None), Restart::Consumed(after([], None)));
        black_hole.acked.clear();
        black_hole.ingress = Some(ingress(4, &["a", "b", "c", "d"]));
        let judged = judge(&black_hole, &KafkaWorkload::default());
        assert_eq!(
            marks(&judged),
            "offsets_committed=? no_message_loss=F no_redelivery=? producer_flushed=? group_left=?"
        );
        black_hole.ingress = Some(ingress(0, &[]));
        let judged = judge(&black_hole, &KafkaWorkload::default());
        assert_eq!(
            marks(&judged),
            "offsets_committed=? no_message_loss=? no_redelivery=? producer_flushed=? group_left=?"
        );
        let Outcome::Inconclusive { reason } = &judged[&CheckName::NoMessageLoss] else {
            unreachable!()
        };
        assert!(
            reason.contains("acknowledged none of its requests"),
            "{reason}"
        );
    }
}
