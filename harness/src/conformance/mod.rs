//! Kafka conformance: what a real Kafka guarantees to every client, checked against the broker
//! quiesce starts, with the client libraries services really use.
//!
//! quiesce may blame a service only for what a real Kafka would do. A broker that drops the
//! records of a batch a consumer resumes inside, or hands a rejoining member an empty
//! assignment, makes correct services fail. Each case runs one client library the way a
//! service would (a batching producer, a consumer group, synchronous commits, a close and a
//! resume) and reports what it saw; [`judge`] decides, from those observations alone, whether
//! the broker behaved as Kafka does, and says why.
//!
//! rdkafka (the Rust crate) runs in this process ([`rdkafka`]); the Python clients
//! (confluent-kafka, kafka-python, aiokafka) run `conformance/clients.py`, embedded here; kcat (librdkafka 2.0.2 in Debian 12) runs as a command. A case a client
//! cannot express (kcat has no commit of its own) is not applicable, never a pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod rdkafka;

/// The client script, written to the run's folder.
const CLIENTS_PY: &str = include_str!("../../../conformance/clients.py");

/// The partitions of each case's topic.
pub const PARTITIONS: i32 = 3;

/// How long one case may take before it is stopped and failed.
const CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// A client library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Client {
    /// rdkafka, the Rust crate (librdkafka built in).
    Rdkafka,
    /// confluent-kafka (librdkafka), from PyPI.
    ConfluentKafka,
    /// kafka-python, from PyPI.
    KafkaPython,
    /// aiokafka, from PyPI.
    Aiokafka,
    /// kcat, from Debian (librdkafka 2.0.2).
    Kcat,
}

impl Client {
    pub const ALL: [Client; 5] = [
        Client::Rdkafka,
        Client::ConfluentKafka,
        Client::KafkaPython,
        Client::Aiokafka,
        Client::Kcat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Client::Rdkafka => "rdkafka",
            Client::ConfluentKafka => "confluent-kafka",
            Client::KafkaPython => "kafka-python",
            Client::Aiokafka => "aiokafka",
            Client::Kcat => "kcat",
        }
    }

    /// Whether the client can run the case; kcat has no group commits.
    pub fn runs(self, case: Case) -> bool {
        self != Client::Kcat || matches!(case, Case::Seek | Case::End)
    }
}

/// One thing Kafka guarantees, exercised as a service would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// Consume part of a batched topic committing each record, close; a new consumer in the
    /// group reads exactly the rest.
    ResumeRecord,
    /// The same, committing once after each poll.
    ResumeBatch,
    /// Consumers that join the moment the last one left, in turn: each gets partitions, and
    /// together they read every record once.
    Rejoin,
    /// A consumer starts at an offset inside a producer's batch and reads exactly from there.
    Seek,
    /// The end offset ListOffsets answers equals the high watermark a fetch reports, and the
    /// number of records produced.
    End,
    /// Two consumers share the group; the first closes (leaves), the second reads the rest;
    /// DescribeGroups then lists the second alone, in state Stable.
    Describe,
    /// A rolling update: the first consumer reads; the second subscribes and is polled, the
    /// first not, until the broker gives it a member id and then 500 ms more, its join held
    /// for the first to rejoin; the first closes then, inside that rebalance; the second gets
    /// the partitions within [`TAKEOVER`] of the close and reads the rest.
    Rollout,
    /// The client reaches the broker through the fault proxy, which goes down for
    /// [`AWAY`] twice: while the producer sends its second half, and while a consumer
    /// committing each record is mid-way. Both carry on once it is back; a new consumer
    /// resumes exactly.
    Outage,
    /// The same with the broker itself stopped and started again in place of the outage:
    /// what was acknowledged and committed before must still be there.
    Restart,
}

impl Case {
    pub const ALL: [Case; 9] = [
        Case::ResumeRecord,
        Case::ResumeBatch,
        Case::Rejoin,
        Case::Seek,
        Case::End,
        Case::Describe,
        Case::Rollout,
        Case::Outage,
        Case::Restart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Case::ResumeRecord => "resume-record",
            Case::ResumeBatch => "resume-batch",
            Case::Rejoin => "rejoin",
            Case::Seek => "seek",
            Case::End => "end",
            Case::Describe => "describe",
            Case::Rollout => "rollout",
            Case::Outage => "outage",
            Case::Restart => "restart",
        }
    }

    /// Whether the harness takes the broker away during the case.
    pub fn cuts(self) -> bool {
        matches!(self, Case::Outage | Case::Restart)
    }
}

/// How long the broker stays away at each cut of the outage and restart cases.
pub const AWAY: Duration = Duration::from_secs(3);

/// The harness's side of the outage and restart cases: takes the broker away (the proxy
/// down, or the broker stopped) and brings it back.
pub trait Disrupt: Send {
    fn away(&mut self, case: Case) -> futures::future::BoxFuture<'_, Result<(), String>>;
    fn back(&mut self, case: Case) -> futures::future::BoxFuture<'_, Result<(), String>>;
}

/// One cut as the harness made it: what the client was doing, and when the broker went away
/// and came back (milliseconds since the epoch, the clock the clients report in).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Cut {
    pub what: String,
    pub away_ms: u64,
    pub back_ms: u64,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Takes the broker away for `what`, calls `told` (which tells the client it is away), holds
/// it away for [`AWAY`] and brings it back, whatever `told` answered.
pub async fn cut<F>(
    disrupt: &mut dyn Disrupt,
    case: Case,
    what: &str,
    told: F,
) -> Result<Cut, String>
where
    F: std::future::Future<Output = Result<(), String>>,
{
    disrupt.away(case).await?;
    let away_ms = now_ms();
    let told = told.await;
    tokio::time::sleep(AWAY).await;
    disrupt.back(case).await?;
    told?;
    Ok(Cut {
        what: what.to_owned(),
        away_ms,
        back_ms: now_ms(),
    })
}

/// A record as a client saw it: partition, offset, value.
pub type Seen = (i32, i64, String);

/// What one case's client observed; nothing in it is a judgement.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Observations {
    /// Every record the producer had acknowledged.
    pub produced: Vec<Seen>,
    /// What each consumer read, in the order they ran.
    #[serde(default)]
    pub phases: Vec<Vec<Seen>>,
    /// How many records each consumer was to read before it closed.
    #[serde(default)]
    pub limits: Vec<usize>,
    /// The offset committed (or started from) on each partition before the last consumer.
    #[serde(default)]
    pub committed: BTreeMap<String, i64>,
    /// Each partition's high watermark from a fetch, and its end from ListOffsets.
    #[serde(default)]
    pub ends: BTreeMap<String, (i64, i64)>,
    /// What DescribeGroups answered for the group once the first consumer had left.
    #[serde(default)]
    pub described: Option<Described>,
    /// The rollout case: the second consumer at the first's close, and its takeover.
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// The outage and restart cases: when the client's work across each cut ended (epoch
    /// ms), by what it was doing.
    #[serde(default)]
    pub done: BTreeMap<String, u64>,
    /// How many times the client's commits were tried again while the broker was away.
    #[serde(default)]
    pub commit_retries: usize,
    /// The cuts the harness made (never from the client).
    #[serde(default, skip_deserializing)]
    pub cuts: Vec<Cut>,
}

/// A group as DescribeGroups lists it, and the member that was to be in it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Described {
    pub state: String,
    pub members: Vec<String>,
    /// The member id of the consumer still in the group, where the client tells it.
    pub survivor: Option<String>,
}

/// The rollout case's second consumer at the first one's close, as its client tells it
/// (durations by the driver's monotonic clock).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Rollout {
    /// Its member id, which the broker gives in answer to its first JoinGroup.
    pub member_id: Option<String>,
    /// How many partitions it held, polled all along: none while its join is held.
    pub assigned_at_close: usize,
    /// How many records it read before the close: none while its join is held.
    pub read_before_close: usize,
    /// How long it had been joining (polled, its member id given) when the first closed.
    pub pending_ms: u64,
    /// From the first consumer's close to the second's first record.
    pub took_ms: Option<u64>,
}

/// How long the rollout case's second consumer must have been joining, polled and given no
/// partition, when the first closes: the broker held its join for the first to rejoin, so
/// the close lands inside the rebalance. The driver waits 500 ms.
pub const PENDING: std::time::Duration = std::time::Duration::from_millis(400);
/// How long it may have been joining then: a close later than this is not the one the case
/// times (a driver stalled on a loaded machine).
pub const PENDING_AT_MOST: std::time::Duration = std::time::Duration::from_millis(1_200);
/// How soon after the first consumer's close in a rebalance the rollout case's second one
/// must read: Kafka completes the join once every remaining member has joined, so the
/// leave ends the rebalance at once (measured here: under 400 ms); a broker that waits
/// for the departed leader to rejoin (3 s in tansu before patch 0010, of which at most
/// [`PENDING_AT_MOST`] before the close) fails.
pub const TAKEOVER: std::time::Duration = std::time::Duration::from_millis(1_500);

/// A case's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Pass,
    Fail,
    /// The client cannot express the case.
    NotApplicable,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::NotApplicable => "n/a",
        })
    }
}

/// One row of the table: a client, a case, the outcome and the evidence for it.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub client: Client,
    pub case: Case,
    pub outcome: Outcome,
    pub evidence: String,
}

/// Judges a case from its observations: PASS only when the records seen are exactly those
/// Kafka would have delivered.
pub fn judge(case: Case, obs: &Observations) -> (Outcome, String) {
    if obs.produced.is_empty() {
        return (
            Outcome::Fail,
            "the producer had nothing acknowledged".into(),
        );
    }
    let produced: BTreeMap<(i32, i64), &str> = obs
        .produced
        .iter()
        .map(|(p, o, v)| ((*p, *o), v.as_str()))
        .collect();
    if produced.len() != obs.produced.len() {
        return (
            Outcome::Fail,
            format!(
                "{} records acknowledged at {} distinct offsets",
                obs.produced.len(),
                produced.len()
            ),
        );
    }
    let partitions: BTreeSet<i32> = produced.keys().map(|(p, _)| *p).collect();
    let ends: BTreeMap<i32, i64> = partitions
        .iter()
        .map(|p| {
            let last = produced.range((*p, 0)..=(*p, i64::MAX)).next_back();
            (*p, last.map_or(0, |((_, o), _)| o + 1))
        })
        .collect();
    match case {
        Case::ResumeRecord | Case::ResumeBatch | Case::Rejoin => {
            judge_exactly_once(&produced, obs, produced.keys().copied().collect())
        }
        Case::Outage | Case::Restart => {
            let (outcome, read) =
                judge_exactly_once(&produced, obs, produced.keys().copied().collect());
            let (crossed, uncrossed) = crossings(obs);
            match (outcome, uncrossed.is_empty()) {
                (Outcome::Pass, true) => (Outcome::Pass, format!("{read}; {crossed}")),
                (_, true) => (Outcome::Fail, format!("{read}; {crossed}")),
                _ => (Outcome::Fail, format!("{read}; {}", uncrossed.join("; "))),
            }
        }
        Case::Describe => judge_describe(&produced, obs),
        Case::Rollout => judge_rollout(&produced, obs),
        Case::Seek => judge_seek(&produced, &ends, obs),
        Case::End => judge_end(&partitions, &ends, obs),
    }
}

/// `describe`: every record once, and DescribeGroups lists the one member left, Stable.
fn judge_describe(produced: &BTreeMap<(i32, i64), &str>, obs: &Observations) -> (Outcome, String) {
    let (outcome, read) = judge_exactly_once(produced, obs, produced.keys().copied().collect());
    let Some(d) = &obs.described else {
        return (
            Outcome::Fail,
            format!("the group was not described; {read}"),
        );
    };
    let listed = format!(
        "DescribeGroups: state {}, members [{}]",
        d.state,
        d.members.join(", ")
    );
    let right_member = match &d.survivor {
        Some(id) => d.members == [id.clone()],
        None => d.members.len() == 1,
    };
    let mut wrong = Vec::new();
    if !d.state.eq_ignore_ascii_case("stable") {
        wrong.push("not Stable".to_owned());
    }
    if !right_member {
        wrong.push(match &d.survivor {
            Some(id) => format!("the one member left is {id}"),
            None => "one member is left".to_owned(),
        });
    }
    match (outcome, wrong.is_empty()) {
        (Outcome::Pass, true) => (Outcome::Pass, format!("{listed} after the leave; {read}")),
        _ if wrong.is_empty() => (Outcome::Fail, format!("{listed}; {read}")),
        _ => (
            Outcome::Fail,
            format!("{listed} ({}); {read}", wrong.join(", ")),
        ),
    }
}

/// `rollout`: every record once, the close inside the rebalance (the second held a member id
/// and no partition), and the second's first record within [`TAKEOVER`] of the close.
fn judge_rollout(produced: &BTreeMap<(i32, i64), &str>, obs: &Observations) -> (Outcome, String) {
    let (outcome, read) = judge_exactly_once(produced, obs, produced.keys().copied().collect());
    let Some(r) = &obs.rollout else {
        return (
            Outcome::Fail,
            format!("the client did not say how the first consumer closed; {read}"),
        );
    };
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let mut wrong = Vec::new();
    // Two consumers, the first with its share: not one consumer reading everything.
    let share = produced.len() / 6;
    if obs.phases.len() != 2 || obs.phases[0].len() < share.max(1) {
        wrong.push(format!(
            "not two consumers with the first reading {share} records first (read {})",
            obs.phases
                .iter()
                .map(|p| p.len().to_string())
                .collect::<Vec<_>>()
                .join(" + ")
        ));
    }
    match &r.member_id {
        None => wrong.push(
            "the second consumer had no member id at the close: its join had not begun, so \
             the close was not inside a rebalance"
                .to_owned(),
        ),
        Some(_) if r.assigned_at_close > 0 || r.read_before_close > 0 => wrong.push(format!(
            "the second consumer already held {} partition(s) and had read {} record(s) at the \
             close: its join was over, so the close was not inside the rebalance",
            r.assigned_at_close, r.read_before_close
        )),
        Some(_) if r.pending_ms < ms(PENDING) => wrong.push(format!(
            "the second consumer had been joining only {} ms at the close (under {} ms): \
             whether the broker held its join cannot be told",
            r.pending_ms,
            ms(PENDING)
        )),
        Some(_) if r.pending_ms > ms(PENDING_AT_MOST) => wrong.push(format!(
            "the close came {} ms into the second consumer's join (over {} ms): the driver \
             was late, the case did not time that close",
            r.pending_ms,
            ms(PENDING_AT_MOST)
        )),
        Some(_) => {}
    }
    match r.took_ms {
        Some(took) if took > ms(TAKEOVER) => wrong.push(format!(
            "the second consumer read its first record {took} ms after the first one's close \
             (over {} ms)",
            ms(TAKEOVER)
        )),
        Some(_) => {}
        None => wrong.push("the second consumer read nothing after the close".to_owned()),
    }
    let closed = match (&r.member_id, r.took_ms) {
        (Some(id), Some(took)) => format!(
            "closed inside the rebalance (the second, member {id}, joining {} ms with no \
             partition); the second read its first record {took} ms after the close",
            r.pending_ms
        ),
        _ => "the close".to_owned(),
    };
    match (outcome, wrong.is_empty()) {
        (Outcome::Pass, true) => (Outcome::Pass, format!("{closed}; {read}")),
        _ if wrong.is_empty() => (Outcome::Fail, read),
        _ => (Outcome::Fail, format!("{}; {read}", wrong.join("; "))),
    }
}

/// `seek`: exactly the records from each committed offset to the end of its partition.
fn judge_seek(
    produced: &BTreeMap<(i32, i64), &str>,
    ends: &BTreeMap<i32, i64>,
    obs: &Observations,
) -> (Outcome, String) {
    let mut expected = BTreeSet::new();
    for (p, from) in &obs.committed {
        let Ok(p) = p.parse::<i32>() else {
            return (Outcome::Fail, format!("committed on partition {p:?}"));
        };
        let end = ends.get(&p).copied().unwrap_or(0);
        expected.extend((*from..end).map(|o| (p, o)));
    }
    if obs.committed.is_empty() {
        return (Outcome::Fail, "no offset was committed".into());
    }
    let (outcome, evidence) = judge_exactly_once(produced, obs, expected);
    let at: Vec<String> = obs
        .committed
        .iter()
        .map(|(p, o)| format!("{p}@{o}"))
        .collect();
    (outcome, format!("from {}: {evidence}", at.join(" ")))
}

/// `end`: ListOffsets' end = the high watermark a fetch reported = what was produced, on
/// every partition produced to.
fn judge_end(
    partitions: &BTreeSet<i32>,
    ends: &BTreeMap<i32, i64>,
    obs: &Observations,
) -> (Outcome, String) {
    let unreported: Vec<String> = partitions
        .iter()
        .map(|p| p.to_string())
        .filter(|p| !obs.ends.contains_key(p))
        .collect();
    if !unreported.is_empty() {
        return (
            Outcome::Fail,
            format!(
                "no end reported for partition(s) {} produced to",
                unreported.join(", ")
            ),
        );
    }
    let mut wrong = Vec::new();
    let mut right = Vec::new();
    for (p, (fetch_high, list_end)) in &obs.ends {
        // a partition nothing was produced to ends at 0
        let want = p
            .parse::<i32>()
            .ok()
            .map(|p| ends.get(&p).copied().unwrap_or(0));
        let line = format!("p{p} fetch {fetch_high} list {list_end}");
        if want == Some(*fetch_high) && want == Some(*list_end) {
            right.push(line);
        } else {
            wrong.push(format!("{line} (produced {})", want.unwrap_or(-1)));
        }
    }
    if wrong.is_empty() {
        (
            Outcome::Pass,
            format!("end = high watermark = produced: {}", right.join(", ")),
        )
    } else {
        (Outcome::Fail, wrong.join(", "))
    }
}

/// Whether the producer and the consumer each carried on through a cut: a cut the harness
/// made, and the client's work across it ending after the broker came back. Returns what
/// crossed, and what did not.
fn crossings(obs: &Observations) -> (String, Vec<String>) {
    let mut uncrossed = Vec::new();
    let mut crossed = Vec::new();
    for what in ["produce", "consume"] {
        let Some(cut) = obs.cuts.iter().find(|c| c.what == what) else {
            uncrossed.push(format!("the broker was never taken away during the {what}"));
            continue;
        };
        match obs.done.get(what) {
            Some(done) if *done >= cut.back_ms => crossed.push(format!(
                "{what} ended {} ms after the broker's {} ms away",
                done - cut.back_ms,
                cut.back_ms.saturating_sub(cut.away_ms)
            )),
            Some(done) => uncrossed.push(format!(
                "the {what} ended {} ms before the broker came back: the cut was not crossed",
                cut.back_ms - done
            )),
            None => uncrossed.push(format!("the client did not say when the {what} ended")),
        }
    }
    (
        format!(
            "{} (commits tried again {} times)",
            crossed.join(", "),
            obs.commit_retries
        ),
        uncrossed,
    )
}

/// Every `expected` record read exactly once, with its produced value, and each consumer but
/// the last read its share before it closed.
fn judge_exactly_once(
    produced: &BTreeMap<(i32, i64), &str>,
    obs: &Observations,
    expected: BTreeSet<(i32, i64)>,
) -> (Outcome, String) {
    let mut times: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let mut wrong_value = 0usize;
    let mut unexpected = 0usize;
    for (p, o, v) in obs.phases.iter().flatten() {
        *times.entry((*p, *o)).or_default() += 1;
        match produced.get(&(*p, *o)) {
            Some(want) if want == v => {}
            Some(_) => wrong_value += 1,
            None => {}
        }
        if !expected.contains(&(*p, *o)) {
            unexpected += 1;
        }
    }
    let missed = expected.iter().filter(|k| !times.contains_key(k)).count();
    let twice = times.values().filter(|n| **n > 1).count();
    let counts: Vec<String> = obs.phases.iter().map(|p| p.len().to_string()).collect();
    let short: Vec<String> = obs
        .phases
        .iter()
        .zip(&obs.limits)
        .take(obs.phases.len().saturating_sub(1))
        .enumerate()
        .filter(|(_, (seen, limit))| seen.len() < **limit)
        .map(|(i, (seen, limit))| format!("consumer {} read {} of {limit}", i + 1, seen.len()))
        .collect();
    let read = format!(
        "{} produced to {} partitions, {} expected; consumers read {}",
        produced.len(),
        expected
            .iter()
            .map(|(p, _)| p)
            .collect::<BTreeSet<_>>()
            .len(),
        expected.len(),
        counts.join(" + ")
    );
    if obs.phases.is_empty() {
        return (Outcome::Fail, "no consumer ran".into());
    }
    let mut faults = Vec::new();
    if missed > 0 {
        faults.push(format!("{missed} never delivered"));
    }
    if twice > 0 {
        faults.push(format!("{twice} delivered twice"));
    }
    if unexpected > 0 {
        faults.push(format!("{unexpected} read that were not to be"));
    }
    if wrong_value > 0 {
        faults.push(format!("{wrong_value} with another value than produced"));
    }
    faults.extend(short);
    // The last consumer resumes from what the others committed: one that read nothing did not
    // exercise the resume (its predecessors read everything), so the case proved nothing.
    if obs.phases.len() > 1 && obs.phases.last().is_some_and(|last| last.is_empty()) {
        faults.push(format!(
            "consumer {} read nothing: the resume was not exercised",
            obs.phases.len()
        ));
    }
    if faults.is_empty() {
        (Outcome::Pass, format!("{read}: each once"))
    } else {
        (Outcome::Fail, format!("{read}: {}", faults.join(", ")))
    }
}

/// Where the clients come from.
#[derive(Clone, Debug)]
pub struct Tools {
    pub python: PathBuf,
    /// The folders holding the Python clients.
    pub python_path: Vec<PathBuf>,
    pub kcat: Option<PathBuf>,
    /// A folder of the run's own for the client script.
    pub workdir: PathBuf,
}

/// Runs one case with one client against `bootstrap` on a new topic, and judges it;
/// `disrupt` takes the broker away where the case asks.
pub async fn run_case(
    tools: &Tools,
    bootstrap: &str,
    client: Client,
    case: Case,
    records: usize,
    run_id: &str,
    disrupt: &mut dyn Disrupt,
) -> Row {
    let row = |outcome, evidence| Row {
        client,
        case,
        outcome,
        evidence,
    };
    if !client.runs(case) {
        return row(
            Outcome::NotApplicable,
            format!("{} has no group commits", client.as_str()),
        );
    }
    let topic = format!("conformance-{run_id}-{}-{}", client.as_str(), case.as_str());
    if let Err(e) = crate::kafka::create_topic(bootstrap, &topic, PARTITIONS).await {
        return row(Outcome::Fail, format!("topic not created: {e}"));
    }
    let observed = match client {
        Client::Rdkafka => rdkafka::run(bootstrap, &topic, case, records, disrupt).await,
        Client::Kcat => kcat_case(tools, bootstrap, &topic, case, records).await,
        _ => python_case(tools, bootstrap, &topic, client, case, records, disrupt).await,
    };
    match observed {
        Ok(obs) => {
            let (outcome, evidence) = judge(case, &obs);
            row(outcome, evidence)
        }
        Err(e) => row(Outcome::Fail, e),
    }
}

async fn python_case(
    tools: &Tools,
    bootstrap: &str,
    topic: &str,
    client: Client,
    case: Case,
    records: usize,
    disrupt: &mut dyn Disrupt,
) -> Result<Observations, String> {
    let script = tools.workdir.join("clients.py");
    if !script.exists() {
        std::fs::write(&script, CLIENTS_PY)
            .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    }
    let path = std::env::join_paths(&tools.python_path).map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new(&tools.python);
    cmd.arg(&script)
        .args([client.as_str(), case.as_str(), "--bootstrap", bootstrap])
        .args(["--topic", topic, "--group", &format!("{topic}-group")])
        .args(["--records", &records.to_string()])
        .env("PYTHONPATH", path);
    let (out, cuts) = if case.cuts() {
        tokio::time::timeout(CASE_TIMEOUT, cut_as_asked(cmd, case, disrupt))
            .await
            .map_err(|_| format!("python3 did not finish in {}s", CASE_TIMEOUT.as_secs()))??
    } else {
        (output(cmd).await?, Vec::new())
    };
    let mut obs: Observations = serde_json::from_str(out.lines().last().unwrap_or_default())
        .map_err(|e| format!("the client's report is not JSON ({e}): {out:.200}"))?;
    obs.cuts = cuts;
    Ok(obs)
}

/// Runs a client that asks for cuts: each `cut WHAT` line it prints takes the broker away,
/// `down` on its stdin tells it so, and the broker comes back [`AWAY`] later. Returns its
/// stdout and the cuts made.
async fn cut_as_asked(
    mut cmd: tokio::process::Command,
    case: Case,
    disrupt: &mut dyn Disrupt,
) -> Result<(String, Vec<Cut>), String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start python3: {e}"))?;
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("python3: no pipes".into());
    };
    // Drained all along: a client that logs its reconnects must never block on a full pipe.
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let (mut out, mut cuts) = (String::new(), Vec::new());
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        match line.strip_prefix("cut ") {
            Some(what) if cuts.len() < 2 => {
                let told = async {
                    stdin
                        .write_all(b"down\n")
                        .await
                        .map_err(|e| format!("python3: stdin: {e}"))
                };
                cuts.push(cut(disrupt, case, what, told).await?);
            }
            _ => {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    let status = child.wait().await.map_err(|e| format!("python3: {e}"))?;
    let errors = errors.await.unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "python3 exited with {status}: {}",
            last_lines(&errors)
        ));
    }
    Ok((out, cuts))
}

async fn kcat_case(
    tools: &Tools,
    bootstrap: &str,
    topic: &str,
    case: Case,
    records: usize,
) -> Result<Observations, String> {
    let Some(kcat) = &tools.kcat else {
        return Err("kcat is not installed (run ./scripts/setup)".into());
    };
    let kcat = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(kcat);
        cmd.args(["-b", bootstrap, "-t", topic]).args(args);
        cmd
    };
    // A batching producer: every value on stdin, keyed by itself (spread over the partitions
    // by the key's hash), lingering 50 ms, up to 100 a batch.
    let values: String = (0..records).map(|i| format!("{i}:{i}\n")).collect();
    let mut produce = kcat(&[
        "-P",
        "-K",
        ":",
        "-X",
        "linger.ms=50",
        "-X",
        "batch.num.messages=100",
    ]);
    produce.stdin(Stdio::piped());
    input_output(produce, values).await?;
    // What was stored, read from the start of each partition (a batch boundary).
    let mut obs = Observations::default();
    for p in 0..PARTITIONS {
        let part = p.to_string();
        let read = output(kcat(&[
            "-C",
            "-p",
            &part,
            "-o",
            "beginning",
            "-e",
            "-f",
            "%p %o %s\\n",
        ]))
        .await?;
        obs.produced.extend(parse_kcat(&read)?);
    }
    match case {
        Case::Seek => {
            let mut phase = Vec::new();
            for p in 0..PARTITIONS {
                let offsets: Vec<i64> = obs
                    .produced
                    .iter()
                    .filter(|(q, _, _)| *q == p)
                    .map(|(_, o, _)| *o)
                    .collect();
                let Some(mid) = offsets.get(offsets.len() / 2).copied() else {
                    continue;
                };
                let (part, from) = (p.to_string(), mid.to_string());
                let read = output(kcat(&[
                    "-C",
                    "-p",
                    &part,
                    "-o",
                    &from,
                    "-e",
                    "-f",
                    "%p %o %s\\n",
                ]))
                .await?;
                phase.extend(parse_kcat(&read)?);
                obs.committed.insert(part, mid);
            }
            obs.limits.push(records);
            obs.phases.push(phase);
        }
        Case::End => {
            for p in 0..PARTITIONS {
                let read_end = obs
                    .produced
                    .iter()
                    .filter(|(q, _, _)| *q == p)
                    .map(|(_, o, _)| o + 1)
                    .max()
                    .unwrap_or(0);
                // ListOffsets LATEST: kcat -Q with timestamp -1.
                let query = format!("{topic}:{p}:-1");
                let listed = output(kcat(&["-Q", "-t", &query])).await?;
                let end = listed
                    .split_whitespace()
                    .last()
                    .and_then(|w| w.parse::<i64>().ok())
                    .ok_or_else(|| format!("kcat -Q answered {listed:?}"))?;
                obs.ends.insert(p.to_string(), (read_end, end));
            }
        }
        _ => unreachable!("kcat runs only seek and end"),
    }
    Ok(obs)
}

fn parse_kcat(text: &str) -> Result<Vec<Seen>, String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut w = l.splitn(3, ' ');
            let p = w.next().and_then(|w| w.parse().ok());
            let o = w.next().and_then(|w| w.parse().ok());
            match (p, o, w.next()) {
                (Some(p), Some(o), Some(v)) => Ok((p, o, v.to_owned())),
                _ => Err(format!("kcat printed {l:?}")),
            }
        })
        .collect()
}

/// Runs a command to its end within [`CASE_TIMEOUT`]: its stdout, or why it failed.
async fn output(cmd: tokio::process::Command) -> Result<String, String> {
    input_output(cmd, String::new()).await
}

async fn input_output(mut cmd: tokio::process::Command, input: String) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let program = Path::new(cmd.as_std().get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| format!("{program}: stdin: {e}"))?;
    }
    let out = tokio::time::timeout(CASE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("{program} did not finish in {}s", CASE_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{program} exited with {}: {}",
            out.status,
            last_lines(&stderr)
        ))
    }
}

/// The last 3 lines of a client's stderr, on one line: why it failed.
fn last_lines(stderr: &str) -> String {
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    tail.join(" | ")
}

/// The table: a row per client and case, with the evidence.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        out.push_str(&format!(
            "{:<16} {:<14} {:<5} {}\n",
            row.client.as_str(),
            row.case.as_str(),
            row.outcome.to_string(),
            row.evidence
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produced(n: i64) -> Vec<Seen> {
        (0..n)
            .map(|i| ((i % 3) as i32, i / 3, i.to_string()))
            .collect()
    }

    fn split(obs: &mut Observations, at: usize) {
        let all = obs.produced.clone();
        obs.phases = vec![all[..at].to_vec(), all[at..].to_vec()];
        obs.limits = vec![at, all.len()];
    }

    #[test]
    fn exact_resume_passes() {
        let mut obs = Observations {
            produced: produced(30),
            ..Default::default()
        };
        split(&mut obs, 10);
        let (outcome, evidence) = judge(Case::ResumeRecord, &obs);
        assert_eq!(outcome, Outcome::Pass, "{evidence}");
        assert!(evidence.contains("read 10 + 20"), "{evidence}");
    }

    #[test]
    fn a_record_read_twice_and_one_never_fail() {
        let mut obs = Observations {
            produced: produced(30),
            ..Default::default()
        };
        split(&mut obs, 10);
        let again = obs.phases[0][9].clone();
        obs.phases[1][0] = again;
        let (outcome, evidence) = judge(Case::ResumeRecord, &obs);
        assert_eq!(outcome, Outcome::Fail);
        assert!(evidence.contains("1 never delivered"), "{evidence}");
        assert!(evidence.contains("1 delivered twice"), "{evidence}");
    }

    #[test]
    fn a_consumer_that_read_nothing_fails_though_the_next_read_all() {
        // an empty assignment: the first consumer sat idle, the last read everything once
        let all = produced(30);
        let obs = Observations {
            produced: all.clone(),
            phases: vec![vec![], all],
            limits: vec![10, 30],
            ..Default::default()
        };
        let (outcome, evidence) = judge(Case::Rejoin, &obs);
        assert_eq!(outcome, Outcome::Fail);
        assert!(evidence.contains("consumer 1 read 0 of 10"), "{evidence}");
    }

    #[test]
    fn a_first_consumer_that_reads_everything_proves_no_resume() {
        // hostile: the first consumer ignores its limit, the second has nothing left
        let all = produced(30);
        let obs = Observations {
            produced: all.clone(),
            phases: vec![all, vec![]],
            limits: vec![10, 30],
            ..Default::default()
        };
        let (outcome, evidence) = judge(Case::ResumeRecord, &obs);
        assert_eq!(outcome, Outcome::Fail);
        assert!(evidence.contains("consumer 2 read nothing"), "{evidence}");
    }

    #[test]
    fn a_value_other_than_produced_fails() {
        let mut obs = Observations {
            produced: produced(6),
            ..Default::default()
        };
        split(&mut obs, 3);
        obs.phases[1][0].2 = "other".into();
        assert_eq!(judge(Case::ResumeBatch, &obs).0, Outcome::Fail);
    }

    #[test]
    fn seek_must_start_at_the_committed_offset() {
        let all = produced(30); // 10 records a partition, offsets 0..10
        let from_five: Vec<Seen> = all.iter().filter(|(_, o, _)| *o >= 5).cloned().collect();
        let committed: BTreeMap<String, i64> = (0..3).map(|p| (p.to_string(), 5)).collect();
        let mut obs = Observations {
            produced: all,
            phases: vec![from_five.clone()],
            limits: vec![30],
            committed,
            ..Default::default()
        };
        assert_eq!(judge(Case::Seek, &obs).0, Outcome::Pass);
        // the broker started at the next batch boundary: offsets 5..8 never came
        obs.phases = vec![from_five.into_iter().filter(|(_, o, _)| *o >= 8).collect()];
        let (outcome, evidence) = judge(Case::Seek, &obs);
        assert_eq!(outcome, Outcome::Fail);
        assert!(evidence.contains("9 never delivered"), "{evidence}");
    }

    #[test]
    fn end_must_equal_the_high_watermark_and_what_was_produced() {
        let mut obs = Observations {
            produced: produced(30),
            ends: (0..3).map(|p| (p.to_string(), (10, 10))).collect(),
            ..Default::default()
        };
        assert_eq!(judge(Case::End, &obs).0, Outcome::Pass);
        // an empty partition ends at 0
        obs.ends.insert("3".into(), (0, 0));
        assert_eq!(judge(Case::End, &obs).0, Outcome::Pass);
        obs.ends.insert("3".into(), (0, 4));
        assert_eq!(judge(Case::End, &obs).0, Outcome::Fail);
        obs.ends.insert("3".into(), (0, 0));
        obs.ends.insert("1".into(), (10, 7));
        let (outcome, evidence) = judge(Case::End, &obs);
        assert_eq!(outcome, Outcome::Fail);
        assert!(evidence.contains("p1 fetch 10 list 7"), "{evidence}");
        obs.ends.remove("1");
        let (outcome, evidence) = judge(Case::End, &obs);
        assert_eq!(outcome, Outcome::Fail);
        assert!(
            evidence.contains("no end reported for partition(s) 1"),
            "{evidence}"
        );
    }

    /// Hostile brokers and drivers: a close that was not inside a rebalance (no member id
    /// yet, or partitions already held), a takeover past the deadline, none at all, and a
    /// record read twice all fail; only a prompt takeover inside the rebalance passes.
    #[test]
    fn rollout_needs_the_close_inside_the_rebalance_and_a_prompt_takeover() {
        let mut obs = Observations {
            produced: produced(30),
            ..Default::default()
        };
        split(&mut obs, 5);
        assert_eq!(judge(Case::Rollout, &obs).0, Outcome::Fail, "no evidence");
        let inside = Rollout {
            member_id: Some("b".into()),
            assigned_at_close: 0,
            read_before_close: 0,
            pending_ms: 510,
            took_ms: Some(300),
        };
        obs.rollout = Some(inside.clone());
        let (outcome, evidence) = judge(Case::Rollout, &obs);
        assert_eq!(outcome, Outcome::Pass, "{evidence}");
        assert!(evidence.contains("300 ms after the close"), "{evidence}");
        let hostile = [
            // Its join had not begun.
            Rollout {
                member_id: None,
                ..inside.clone()
            },
            // Its join was over: partitions held, or records read.
            Rollout {
                assigned_at_close: 2,
                ..inside.clone()
            },
            Rollout {
                read_before_close: 1,
                ..inside.clone()
            },
            // Closed at once (the join may not have reached the broker) or far too late.
            Rollout {
                pending_ms: 10,
                ..inside.clone()
            },
            Rollout {
                pending_ms: 2_500,
                ..inside.clone()
            },
            // A broker that waits 3 s for the departed leader; one that never hands over.
            Rollout {
                took_ms: Some(2_800),
                ..inside.clone()
            },
            Rollout {
                took_ms: None,
                ..inside.clone()
            },
        ];
        for r in hostile {
            obs.rollout = Some(r.clone());
            assert_eq!(judge(Case::Rollout, &obs).0, Outcome::Fail, "{r:?}");
        }
        obs.rollout = Some(inside);
        // One consumer reading everything, with the first's share claimed away.
        let mut lone = obs.clone();
        lone.phases = vec![Vec::new(), obs.produced.clone()];
        lone.limits = vec![0, 0];
        assert_eq!(judge(Case::Rollout, &lone).0, Outcome::Fail, "one consumer");
        let again = obs.phases[0][0].clone();
        obs.phases[1].push(again);
        assert_eq!(judge(Case::Rollout, &obs).0, Outcome::Fail, "read twice");
    }

    #[test]
    fn describe_lists_the_one_member_left_in_a_stable_group() {
        let mut obs = Observations {
            produced: produced(30),
            ..Default::default()
        };
        split(&mut obs, 5);
        let listed = |state: &str, members: &[&str]| Described {
            state: state.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            survivor: Some("b".into()),
        };
        assert_eq!(
            judge(Case::Describe, &obs).0,
            Outcome::Fail,
            "not described"
        );
        obs.described = Some(listed("Stable", &["b"]));
        assert_eq!(judge(Case::Describe, &obs).0, Outcome::Pass);
        // the member that left is still listed
        obs.described = Some(listed("Stable", &["a", "b"]));
        let (outcome, evidence) = judge(Case::Describe, &obs);
        assert_eq!(outcome, Outcome::Fail);
        assert!(evidence.contains("the one member left is b"), "{evidence}");
        // an empty answer (ConsumerGroupDescribe of a classic group)
        obs.described = Some(listed("STABLE", &[]));
        assert_eq!(judge(Case::Describe, &obs).0, Outcome::Fail);
        obs.described = Some(listed("PreparingRebalance", &["b"]));
        let (outcome, evidence) = judge(Case::Describe, &obs);
        assert_eq!(outcome, Outcome::Fail);
        assert!(evidence.contains("not Stable"), "{evidence}");
    }

    #[test]
    fn nothing_produced_or_no_consumer_fails() {
        assert_eq!(
            judge(Case::ResumeRecord, &Observations::default()).0,
            Outcome::Fail
        );
        let obs = Observations {
            produced: produced(3),
            ..Default::default()
        };
        assert_eq!(judge(Case::ResumeRecord, &obs).0, Outcome::Fail);
        assert_eq!(judge(Case::Seek, &obs).0, Outcome::Fail);
        assert_eq!(judge(Case::End, &obs).0, Outcome::Fail);
    }

    /// An outage row passes only when the harness cut the broker during both the produce and
    /// the consume, and each carried on until after it came back.
    #[test]
    fn an_outage_row_needs_both_cuts_crossed() {
        let mut obs = Observations {
            produced: produced(30),
            done: [("produce".into(), 5_000), ("consume".into(), 9_000)].into(),
            ..Default::default()
        };
        split(&mut obs, 10);
        let cut = |what: &str, away_ms, back_ms| Cut {
            what: what.into(),
            away_ms,
            back_ms,
        };
        // hostile: a client that never asked for a cut
        let (outcome, evidence) = judge(Case::Outage, &obs);
        assert_eq!(outcome, Outcome::Fail);
        assert!(
            evidence.contains("the broker was never taken away during the produce"),
            "{evidence}"
        );
        obs.cuts = vec![cut("produce", 1_000, 4_000), cut("consume", 6_000, 9_000)];
        let (outcome, evidence) = judge(Case::Outage, &obs);
        assert_eq!(outcome, Outcome::Pass, "{evidence}");
        assert!(
            evidence.contains("produce ended 1000 ms after the broker's 3000 ms away"),
            "{evidence}"
        );
        // hostile: a consumer that said it was done while the broker was still away (it
        // went on without the broker, or the cut came after its work)
        obs.done.insert("consume".into(), 8_000);
        let (outcome, evidence) = judge(Case::Restart, &obs);
        assert_eq!(outcome, Outcome::Fail);
        assert!(
            evidence.contains("the consume ended 1000 ms before the broker came back"),
            "{evidence}"
        );
        // crossed, but a record lost across the cut
        obs.done.insert("consume".into(), 9_500);
        obs.phases[1].pop();
        let (outcome, evidence) = judge(Case::Restart, &obs);
        assert_eq!(outcome, Outcome::Fail);
        assert!(evidence.contains("1 never delivered"), "{evidence}");
    }
}
