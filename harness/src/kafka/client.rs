//! The harness's Kafka client: topics, the sequence-numbered workload, and the read-back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// Budget for one request to the broker.
const REQUEST: Duration = Duration::from_secs(30);
/// Once the reported end of a topic is reached, how long it must stay quiet before the read-back
/// ends. The reported end cannot be trusted alone: tansu 0.6.0 answers ListOffsets with a high
/// watermark stuck near 10,001 while it serves (and has acknowledged) records far beyond it.
const QUIET: Duration = Duration::from_secs(1);
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

fn config(bootstrap: &str) -> ClientConfig {
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

/// One output record: the service processed the input at (`partition`, `offset`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessedRecord {
    pub partition: i32,
    pub offset: i64,
    #[serde(skip)]
    pub key: String,
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

/// Produces `count` records keyed `{prefix}-{n}` with payload `seq-{n}` and returns the ones
/// the broker acknowledged, sorted by partition and offset.
pub async fn produce_sequence(
    bootstrap: &str,
    topic: &str,
    prefix: &str,
    count: usize,
) -> Result<Vec<AckedRecord>, KafkaError> {
    let producer: FutureProducer = config(bootstrap)
        .set("enable.idempotence", "false")
        .create()
        .map_err(|e| failed("producer", e))?;
    let sends = (0..count).map(|n| {
        let producer = &producer;
        async move {
            let key = format!("{prefix}-{n}");
            let payload = format!("seq-{n}");
            let delivery = producer
                .send(FutureRecord::to(topic).key(&key).payload(&payload), REQUEST)
                .await;
            delivery.ok().map(|d| AckedRecord {
                partition: d.partition,
                offset: d.offset,
                key,
            })
        }
    });
    let mut acked: Vec<AckedRecord> = futures::stream::iter(sends)
        .buffer_unordered(256)
        .filter_map(|a| async move { a })
        .collect()
        .await;
    acked.sort();
    Ok(acked)
}

/// Reads `topic` from its beginning to the end it has now, as processed records. Values that
/// are not the contract's JSON are errors: a service that writes something else has not
/// adopted the contract, and guessing would give a wrong verdict.
pub async fn read_processed(
    bootstrap: &str,
    topic: &str,
) -> Result<Vec<ProcessedRecord>, KafkaError> {
    let consumer: StreamConsumer = config(bootstrap)
        .set("group.id", "quiesce-verifier")
        .set("enable.auto.commit", "false")
        // An idle fetch returns soon, so the quiet period is measured, not waited out in fetches.
        .set("fetch.wait.max.ms", "100")
        .create()
        .map_err(|e| failed("verifier consumer", e))?;
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
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| failed("assignment", e))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| failed("assign", e))?;
    let mut processed = Vec::new();
    let mut reached: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + READ_BACK;
    loop {
        let at_reported_end = ends
            .iter()
            .all(|(p, end)| reached.get(p).is_some_and(|r| r >= end));
        // Before the reported end: wait as long as it takes (bounded); after it: only QUIET.
        let wait = if at_reported_end {
            QUIET
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let message = match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(message) => message.map_err(|e| failed(format!("reading {topic}"), e))?,
            Err(_) if at_reported_end => break,
            Err(_) => {
                return Err(failed(
                    format!("reading {topic}"),
                    format!("did not reach the end within {READ_BACK:?}"),
                ));
            }
        };
        reached.insert(message.partition(), message.offset() + 1);
        let value = message.payload().unwrap_or_default();
        let mut record: ProcessedRecord = serde_json::from_slice(value).map_err(|e| {
            failed(
                format!(
                    "{topic}/{} offset {}",
                    message.partition(),
                    message.offset()
                ),
                format!(
                    "not an output record ({e}); expected JSON {{\"partition\": P, \"offset\": O}}"
                ),
            )
        })?;
        record.key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        processed.push(record);
    }
    Ok(processed)
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
