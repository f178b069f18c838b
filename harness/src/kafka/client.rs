//! The harness's Kafka client: topics, the sequence-numbered workload, and the read-back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::scenario::ProcessedBy;

/// Budget for one request to the broker.
const REQUEST: Duration = Duration::from_secs(30);
/// Once the ListOffsets end of a topic is reached, and no fetch response has told the exact end,
/// how long the topic must stay quiet before the read-back ends. The ListOffsets end cannot be
/// trusted alone: unpatched tansu 0.6.0 answers it with a high watermark that lags (at times
/// stuck near 10,001) while it serves, and has acknowledged, records beyond it.
const QUIET: Duration = Duration::from_secs(1);
/// Past the reported end, how long one wait for a record lasts before the end is looked at again.
const LOOK: Duration = Duration::from_millis(20);
/// Short of the reported end, how long nothing may arrive before the read-back stops trusting
/// the report.
const STALL: Duration = Duration::from_secs(10);
/// Bound on the whole read-back.
const READ_BACK: Duration = Duration::from_secs(120);

/// A Kafka request that failed. Always the harness's or the broker's problem, never a verdict.
#[derive(Debug, thiserror::Error)]
#[error("kafka: {what}: {reason}")]
pub struct KafkaError {
    pub what: String,
    pub reason: String,
}

fn failed(what: impl Into<String>, reason: impl ToString) -> KafkaError {
    KafkaError {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// The settings every Kafka client of the harness starts from.
pub(crate) fn config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "quiesce")
        .set("socket.timeout.ms", "10000")
        .set("message.timeout.ms", "30000")
        .set("log_level", "3");
    config
}

/// An input record the broker acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AckedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
}

impl AckedRecord {
    /// A request an HTTP ingress acknowledged, before its record is found in the input topic.
    pub fn unplaced(key: String) -> AckedRecord {
        AckedRecord {
            partition: -1,
            offset: -1,
            key,
        }
    }
}

/// One piece of evidence that the service processed the input at (`partition`, `offset`):
/// an output record, or a line of its log.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessedRecord {
    pub partition: i32,
    pub offset: i64,
    /// The output record's key (the input's key, by the contract).
    #[serde(skip_deserializing)]
    pub key: String,
    /// Where the output record itself is: (partition, offset) in the output topic (`None`
    /// for a log line).
    #[serde(skip_deserializing)]
    pub output: Option<(i32, i64)>,
}

/// The input an output names: where it was, or its key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum InputRef {
    At(i32, i64),
    Key(String),
}

/// The input the output record `message` names under `processed`, or why it names none.
fn input_of(processed: &ProcessedBy, message: &impl Message) -> Result<InputRef, String> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match processed {
        ProcessedBy::Log { .. } => Err("a log, not an output record, names the inputs".into()),
        ProcessedBy::Contract {} => {
            let value = message.payload().unwrap_or_default();
            serde_json::from_slice::<ProcessedRecord>(value)
                    .map(|r| InputRef::At(r.partition, r.offset))
                    .map_err(|e| {
                        format!(
                            "not an output record ({e}); expected JSON {{\"partition\": P, \"offset\": O}}"
                        )
                    })
        }
        ProcessedBy::Key {} => message
            .key()
            .map(|k| InputRef::Key(text(k)))
            .ok_or_else(|| "it has no key".to_owned()),
        ProcessedBy::JsonPointer { pointer } => {
            let value: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default())
                    .map_err(|e| format!("its value is not JSON ({e})"))?;
            match value.pointer(pointer) {
                Some(serde_json::Value::String(key)) => Ok(InputRef::Key(key.clone())),
                Some(serde_json::Value::Number(n)) => Ok(InputRef::Key(n.to_string())),
                Some(other) => Err(format!("`{pointer}` holds {other}, not a key")),
                None => Err(format!("its value has nothing at `{pointer}`")),
            }
        }
        ProcessedBy::Header { name } => {
            use rdkafka::message::Headers;
            message
                .headers()
                .and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value.map(|v| InputRef::Key(text(v))))
                })
                .ok_or_else(|| format!("it has no header `{name}`"))
        }
    }
}

/// Output records that name no input of the run: how many, and a few of them with why.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Unmatched {
    pub count: usize,
    pub examples: Vec<String>,
}

impl Unmatched {
    const EXAMPLES: usize = 3;

    pub fn add(&mut self, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(example());
        }
    }

    /// Both sets, `other`'s examples after these.
    pub fn merge(mut self, other: Unmatched) -> Unmatched {
        self.count += other.count;
        self.examples.extend(other.examples);
        self.examples.truncate(Self::EXAMPLES);
        self
    }
}

/// One output record as read back: the input it names, its own key, where it is.
#[derive(Clone, Debug)]
pub struct Output {
    pub input: InputRef,
    pub key: String,
    pub at: Option<(i32, i64)>,
}

/// The processed records `outputs` stand for: each one's input found among `acked` by key
/// (an output naming its input's place is taken as it is); the rest are unmatched.
pub fn resolve(outputs: Vec<Output>, acked: &[AckedRecord]) -> (Vec<ProcessedRecord>, Unmatched) {
    // A key written more than once (a service's retried produce) is several inputs: its
    // outputs go to its copies in turn, the last copy taking any beyond one each.
    let mut by_key: BTreeMap<&str, (Vec<&AckedRecord>, usize)> = BTreeMap::new();
    for a in acked {
        by_key.entry(a.key.as_str()).or_default().0.push(a);
    }
    let mut unmatched = Unmatched::default();
    let mut processed = Vec::with_capacity(outputs.len());
    for output in outputs {
        let (partition, offset) = match &output.input {
            InputRef::At(p, o) => (*p, *o),
            InputRef::Key(key) => match by_key.get_mut(key.as_str()) {
                Some((copies, used)) => {
                    let a = copies[(*used).min(copies.len() - 1)];
                    *used += 1;
                    (a.partition, a.offset)
                }
                None => {
                    unmatched.add(|| match output.at {
                        Some((p, o)) => {
                            format!("partition {p} offset {o}: `{key}` is no input of this run")
                        }
                        None => format!("`{key}` is no input of this run"),
                    });
                    continue;
                }
            },
        };
        processed.push(ProcessedRecord {
            partition,
            offset,
            key: output.key,
            output: output.at,
        });
    }
    (processed, unmatched)
}

/// Creates `topic` with `partitions` partitions; an existing topic is fine.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap)
        .create()
        .map_err(|e| failed("admin client", e))?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(REQUEST)),
        )
        .await
        .map_err(|e| failed(format!("create topic {topic}"), e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(failed(format!("create topic {t}"), e)),
        }
    }
    Ok(())
}

/// Produces `count` records keyed `{prefix}-{n}` with value `seq-{n}` and returns the ones
/// the broker acknowledged, sorted by partition and offset.
pub async fn produce_sequence(
    bootstrap: &str,
    topic: &str,
    prefix: &str,
    count: usize,
) -> Result<Vec<AckedRecord>, KafkaError> {
    let workload = Workload {
        topic,
        prefix,
        value: "seq-{seq}",
        count,
        rate: 0,
        batching: Batching::default(),
    };
    produce_until(bootstrap, &workload, &CancellationToken::new()).await
}

/// What [`produce_until`] writes.
#[derive(Clone, Copy, Debug)]
pub struct Workload<'a> {
    pub topic: &'a str,
    /// Keys are `{prefix}-{n}`.
    pub prefix: &'a str,
    /// Each value: `{key}`, `{seq}` and `{run_id}` (the prefix) filled in.
    pub value: &'a str,
    pub count: usize,
    /// Records per second; 0: as fast as the broker acknowledges.
    pub rate: u32,
    /// How the producer batches, as a service's producer would.
    pub batching: Batching,
}

/// A batching producer's settings: librdkafka's `linger.ms` and `batch.num.messages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// How long a record waits for others to share its batch.
    pub linger_ms: u32,
    /// The most records a batch holds.
    pub max_records: u32,
}

impl Default for Batching {
    /// 50 ms, up to 100 records: batches of many records at any rate above a few a second.
    fn default() -> Self {
        Batching {
            linger_ms: 50,
            max_records: 100,
        }
    }
}

/// How many sends may wait for their acknowledgement at once.
const IN_FLIGHT: usize = 256;

/// Produces the workload's records until all are sent or `stop` is cancelled, and returns the
/// ones the broker acknowledged, sorted by partition and offset. Sends already made when
/// `stop` comes still get their acknowledgement: a record the broker took is in the set.
pub async fn produce_until(
    bootstrap: &str,
    workload: &Workload<'_>,
    stop: &CancellationToken,
) -> Result<Vec<AckedRecord>, KafkaError> {
    produce_counted(bootstrap, workload, stop, &AtomicUsize::new(0)).await
}

/// [`produce_until`], counting the acknowledged records into `acked` as they come, so a
/// watcher can tell how many inputs were in flight at a given moment (the stop).
pub async fn produce_counted(
    bootstrap: &str,
    workload: &Workload<'_>,
    stop: &CancellationToken,
    acked_so_far: &AtomicUsize,
) -> Result<Vec<AckedRecord>, KafkaError> {
    let mut producer = config(bootstrap);
    producer
        .set("enable.idempotence", "false")
        .set("linger.ms", workload.batching.linger_ms.to_string())
        .set(
            "batch.num.messages",
            workload.batching.max_records.to_string(),
        );
    let producer: FutureProducer = producer.create().map_err(|e| failed("producer", e))?;
    let topic = workload.topic;
    let (prefix, template) = (workload.prefix, workload.value);
    let producer = &producer;
    let mut acked: Vec<AckedRecord> = paced(workload.count, workload.rate, stop)
        .map(|n| {
            let key = format!("{prefix}-{n}");
            async move {
                let seq = n.to_string();
                let payload = crate::scenario::template::fill_with(
                    template,
                    &[("key", &key), ("seq", &seq), ("run_id", prefix)],
                );
                let delivery = producer
                    .send(FutureRecord::to(topic).key(&key).payload(&payload), REQUEST)
                    .await;
                delivery.ok().map(|d| {
                    acked_so_far.fetch_add(1, Ordering::Relaxed);
                    AckedRecord {
                        partition: d.partition,
                        offset: d.offset,
                        key,
                    }
                })
            }
        })
        .buffered(IN_FLIGHT)
        .filter_map(|a| async move { a })
        .collect()
        .await;
    acked.sort();
    Ok(acked)
}

/// `0..count`, `rate` a second (0: all at once), until `stop` is cancelled. Paced before the
/// stop is looked at, so a stop ends the sending at once.
pub fn paced(
    count: usize,
    rate: u32,
    stop: &CancellationToken,
) -> impl futures::Stream<Item = usize> + '_ {
    let started = Instant::now();
    futures::stream::iter(0..count)
        .then(move |n| async move {
            if rate > 0 {
                let due = started + Duration::from_secs_f64(n as f64 / f64::from(rate));
                tokio::time::sleep_until(due.into()).await;
            }
            n
        })
        .take_until(stop.cancelled())
}

/// How many output records a topic holds, as [`count_processed`] sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputCount {
    /// Distinct inputs with an output.
    pub distinct: usize,
    /// Output records, duplicates included.
    pub total: usize,
}

/// Counts the output topic's records into `seen`, until dropped. Records that name no input
/// (as `matcher` reads them) are skipped here: the read-back after the stop reports them.
/// A key names an input of this run only if it begins `{prefix}-`. `since`: where in each
/// partition this run's outputs begin (see [`read_back`]).
pub async fn count_processed(
    bootstrap: &str,
    output_topic: &str,
    since: &BTreeMap<i32, i64>,
    processed: &ProcessedBy,
    prefix: &str,
    seen: tokio::sync::watch::Sender<OutputCount>,
) -> Result<(), KafkaError> {
    let consumer = verifier(bootstrap)?;
    assign_from(&consumer, output_topic, since)?;
    let mut counter = Counter::new(prefix);
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            // The watch goes on across an outage: it ends with the run, not with the broker.
            Err(e) if passing(&e) => continue,
            Err(e) => return Err(failed(format!("reading {output_topic}"), e)),
        };
        if let Ok(input) = input_of(processed, &message)
            && counter.count(input)
        {
            seen.send_replace(counter.seen);
        }
    }
}

/// Distinct inputs of one run named so far, by outputs or log lines.
pub struct Counter {
    mark: String,
    inputs: BTreeSet<InputRef>,
    pub seen: OutputCount,
}

impl Counter {
    /// Counts the inputs of the run whose keys begin `{prefix}-`.
    pub fn new(prefix: &str) -> Counter {
        Counter {
            mark: format!("{prefix}-"),
            inputs: BTreeSet::new(),
            seen: OutputCount::default(),
        }
    }

    /// Counts `input` if it is the run's; says whether it was.
    pub fn count(&mut self, input: InputRef) -> bool {
        if let InputRef::Key(key) = &input
            && !key.starts_with(&self.mark)
        {
            return false;
        }
        self.inputs.insert(input);
        self.seen = OutputCount {
            distinct: self.inputs.len(),
            total: self.seen.total + 1,
        };
        true
    }
}

/// A consume error that is news of the connection, not of the data: librdkafka reports a
/// broker it cannot reach (an outage the schedule played, or a bootstrap connection it closed)
/// and reconnects by itself. Readers wait these out within their own deadlines.
fn passing(e: &rdkafka::error::KafkaError) -> bool {
    matches!(
        e,
        rdkafka::error::KafkaError::MessageConsumption(
            RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure
        )
    )
}

/// The high watermark of `topic`/`partition` from the consumer's latest fetch response
/// (librdkafka's cached value; no request), if there has been one.
fn fetched_end(consumer: &StreamConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives, which outlasts the call;
    // `topic` is a NUL-terminated string that outlives it; `low` and `high` are valid for
    // writes. The call only reads librdkafka's cached offsets.
    let code = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (code == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

fn verifier(bootstrap: &str) -> Result<StreamConsumer, KafkaError> {
    config(bootstrap)
        .set("group.id", "quiesce-verifier")
        .set("enable.auto.commit", "false")
        // An idle fetch returns soon, so the quiet period is measured, not waited out in fetches.
        .set("fetch.wait.max.ms", "100")
        .create()
        .map_err(|e| failed("verifier consumer", e))
}

/// Assigns every partition of `topic` from its beginning; returns each partition's reported
/// end (high watermark).
/// Assigns every partition of `topic`, each from its offset in `since` (absent: the
/// beginning), and returns the ends the broker reports.
fn assign_from(
    consumer: &StreamConsumer,
    topic: &str,
    since: &BTreeMap<i32, i64>,
) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST)
        .map_err(|e| failed(format!("metadata of {topic}"), e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, REQUEST)
            .map_err(|e| failed(format!("watermarks of {topic}/{p}"), e))?;
        ends.insert(p, high);
        // Every partition, even one reported empty: the report may be wrong.
        let from = since
            .get(&p)
            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
        assignment
            .add_partition_offset(topic, p, from)
            .map_err(|e| failed("assignment", e))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| failed("assign", e))?;
    Ok(ends)
}

/// Reads `topic` from its beginning to the end it has now, as processed records. Values that
/// are not the contract's JSON are errors: a service that writes something else has not
/// adopted the contract, and guessing would give a wrong verdict.
pub async fn read_processed(
    bootstrap: &str,
    topic: &str,
) -> Result<Vec<ProcessedRecord>, KafkaError> {
    let read = read_back(
        bootstrap,
        topic,
        &BTreeMap::new(),
        &ProcessedBy::Contract {},
    )
    .await?;
    Ok(resolve(read.outputs, &[]).0)
}

/// What [`read_back`] found.
#[derive(Clone, Debug, Default)]
pub struct ReadBack {
    pub outputs: Vec<Output>,
    /// Records that name no input (under the contract these are an error instead).
    pub unmatched: Unmatched,
    /// Set when the broker stopped serving short of the end it reports: which partitions,
    /// how far.
    pub stalled: Option<String>,
}

/// Reads `topic` to its end, each record's input as `matcher` reads it, saying also whether
/// the broker served all it reports.
///
/// `since`: where in each partition to begin (absent: the beginning). A loop's cycles share
/// the output topic; each reads only what was written after the cycle before it.
pub async fn read_back(
    bootstrap: &str,
    topic: &str,
    since: &BTreeMap<i32, i64>,
    processed: &ProcessedBy,
) -> Result<ReadBack, KafkaError> {
    let consumer = verifier(bootstrap)?;
    let ends = assign_from(&consumer, topic, since)?;
    let mut outputs = Vec::new();
    let mut unmatched = Unmatched::default();
    let mut stalled = None;
    let mut reached: BTreeMap<i32, i64> = since.clone();
    let deadline = Instant::now() + READ_BACK;
    let mut last_message = Instant::now();
    loop {
        // Done when every partition is read to the end its latest fetch response reported:
        // exact where ListOffsets is not (tansu), and no quiet period to wait out.
        let fetched_to_end = ends.iter().all(|(p, end)| {
            fetched_end(&consumer, topic, *p)
                .is_some_and(|high| high >= *end && reached.get(p).copied().unwrap_or(0) >= high)
        });
        if fetched_to_end {
            break;
        }
        let at_reported_end = ends
            .iter()
            .all(|(p, end)| reached.get(p).copied().unwrap_or(0) >= *end);
        // Before the reported end: wait as long as it takes (bounded); after it, a short look
        // at a time, until the fetch responses say the end is reached or QUIET has passed.
        let wait = if at_reported_end {
            LOOK
        } else {
            deadline
                .saturating_duration_since(Instant::now())
                .min(STALL)
        };
        let message = match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Err(e)) if passing(&e) && Instant::now() < deadline => continue,
            Ok(message) => {
                last_message = Instant::now();
                message.map_err(|e| failed(format!("reading {topic}"), e))?
            }
            Err(_) if at_reported_end && last_message.elapsed() >= QUIET => break,
            Err(_) if at_reported_end => continue,
            Err(_) if Instant::now() < deadline => {
                // The broker reports records it does not serve: note it, and end here.
                let short: Vec<String> = ends
                    .iter()
                    .filter(|(p, end)| reached.get(p).copied().unwrap_or(0) < **end)
                    .map(|(p, end)| {
                        format!(
                            "{topic}/{p}: served up to offset {}, reported end {end}",
                            reached.get(p).copied().unwrap_or(0)
                        )
                    })
                    .collect();
                stalled = Some(format!(
                    "the broker served nothing for {} s short of the end it reports ({})",
                    STALL.as_secs(),
                    short.join("; ")
                ));
                break;
            }
            Err(_) => {
                return Err(failed(
                    format!("reading {topic}"),
                    format!("did not reach the end within {READ_BACK:?}"),
                ));
            }
        };
        reached.insert(message.partition(), message.offset() + 1);
        let at = (message.partition(), message.offset());
        let input = match input_of(processed, &message) {
            Ok(input) => input,
            Err(why) if *processed == ProcessedBy::Contract {} => {
                return Err(failed(format!("{topic}/{} offset {}", at.0, at.1), why));
            }
            Err(why) => {
                unmatched.add(|| format!("partition {} offset {}: {why}", at.0, at.1));
                continue;
            }
        };
        outputs.push(Output {
            input,
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            at: Some(at),
        });
    }
    Ok(ReadBack {
        outputs,
        unmatched,
        stalled,
    })
}

/// The committed offset of `group` for each partition of `topic` (`None`: nothing committed),
/// read by a second client in the group that does not subscribe.
pub async fn committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, Option<i64>>, KafkaError> {
    let bootstrap = bootstrap.to_owned();
    let group = group.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let reader: BaseConsumer = config(&bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| failed("committed-offset reader", e))?;
        let mut wanted = TopicPartitionList::new();
        for p in 0..partitions {
            wanted.add_partition(&topic, p);
        }
        let committed = reader
            .committed_offsets(wanted, REQUEST)
            .map_err(|e| failed(format!("committed offsets of group {group}"), e))?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                (e.partition(), offset)
            })
            .collect())
    })
    .await
    .map_err(|e| failed("committed offsets", e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(key: &str, offset: i64) -> Output {
        Output {
            input: InputRef::Key(key.to_owned()),
            key: key.to_owned(),
            at: Some((0, offset)),
        }
    }

    /// Hostile: a service that writes a request twice (a retried produce) makes two inputs
    /// with one key. Each processed once is each copy once, not one copy twice (which called
    /// a correct consumer's work a redelivery and the other copy's offset a loss); a third
    /// output for the key goes to the last copy, a redelivery.
    #[test]
    fn a_key_written_twice_is_two_inputs_each_processed_in_turn() {
        let acked = [("k", 4), ("k", 9), ("j", 5)].map(|(key, offset)| AckedRecord {
            partition: 0,
            offset,
            key: key.to_owned(),
        });
        let (processed, unmatched) = resolve(
            vec![
                output("k", 100),
                output("j", 101),
                output("k", 102),
                output("k", 103),
            ],
            &acked,
        );
        assert_eq!(unmatched.count, 0);
        let offsets: Vec<(&str, i64)> = processed
            .iter()
            .map(|p| (p.key.as_str(), p.offset))
            .collect();
        assert_eq!(offsets, [("k", 4), ("j", 5), ("k", 9), ("k", 9)]);
    }
}
