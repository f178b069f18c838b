//! event-pipeline: Kafka consume → process → produce, with a dead-letter topic.
//!
//! The reference service of seeds 000 and 001, written the way their teams were reaching for:
//!
//! - **one shutdown trigger**: a `CancellationToken`; signals only cancel it;
//! - **every task tracked**: per-batch work goes on a `TaskTracker`, closed and awaited on the
//!   way out;
//! - **at-least-once, exactly committed**: an input's offset is committed only after its output
//!   was delivered; on the way out the loop stops taking input, waits for every delivery
//!   (the producer flush), and commits what was processed, synchronously;
//! - **clients built once, in order**: consumer, producer, then ready; dropped in reverse.
//!
//! It follows quiesce's Kafka contract: for each processed input it writes one record to the
//! output topic, keyed by the input's key, valued `{"partition": P, "offset": O}`. Inputs whose
//! payload is not `seq-N` also go to the dead-letter topic (`{output}.dlq`).
//!
//! `QUIESCE_VARIANT` picks a deliberately broken variant, each a bug from the seeds (see
//! [`Variant`]); the scenario files next to this crate say which verdict each must get.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Inputs per batch: each batch gets a small follow-up task (an audit of the batch).
const BATCH: u64 = 100;
/// How long the batch audit takes, unless shutdown comes first.
const AUDIT: Duration = Duration::from_millis(200);
/// How long the `slow-drain` variant waits on the way out.
const SLOW_DRAIN: Duration = Duration::from_secs(7);

quiesce::variants! {
    /// The service's behaviour: the correct lifecycle, or one of the seeds' bugs.
    pub enum Variant {
        /// Everything right.
        Correct => "correct",
        /// A fire-and-forget task per batch (a metrics flusher) that never learns of shutdown
        /// (seed 000: `asyncio.create_task` without tracking).
        UntrackedTask => "untracked-task",
        /// Per-batch tasks registered by weak reference, so the registry that should cancel them
        /// finds nothing at shutdown (seed 001: the WeakSet of task handles).
        DroppedHandle => "dropped-handle",
        /// Offsets are committed every `commit_every` inputs but not on the way out.
        NoFinalCommit => "no-final-commit",
        /// Offsets are committed on receipt, before the input is processed: fine after a clean
        /// stop that drains, a loss after SIGKILL.
        CommitBeforeProcess => "commit-before-process",
        /// Offsets are committed once the output is queued, not delivered, and the producer is
        /// dropped without a flush (rdkafka purges its queue on drop): outputs are lost.
        ProducerNotFlushed => "producer-not-flushed",
        /// librdkafka's automatic offset store: with `enable.auto.commit` (and the default
        /// `enable.auto.offset.store`), every record is stored for commit as it is polled.
        /// Polled records wait in a buffer for a worker; on the way out the worker stops with
        /// records still buffered, and the consumer's closing commit (what librdkafka's close
        /// does with auto-commit on) commits them: polled, never processed, lost. Invisible
        /// when nothing is in flight at the stop.
        AutoOffsetStore => "auto-offset-store",
        /// Everything right on the way out but the last step: the process exits without
        /// closing its consumer (the client is leaked, as a `process.exit()` or an
        /// `os._exit()` in a signal handler does), so no LeaveGroup is sent and the group
        /// keeps its partitions until the session timeout.
        ExitWithoutClose => "exit-without-close",
        /// A raw `std::thread` lag sampler that is never told to stop or joined (seed 000).
        SamplerThread => "sampler-thread",
        /// The way out waits a fixed 7 s "for in-flight work" instead of on the work itself.
        SlowDrain => "slow-drain",
        /// A broker outage ends the service: librdkafka's "all brokers down", which it reports
        /// and then recovers from by itself, is taken for a fatal error. Only a soak with
        /// outages (`event-pipeline-soak-outages.toml`) shows it.
        QuitsOnOutage => "quits-on-outage",
    }
}

/// Where the pipeline reads and writes, and how it behaves.
#[derive(Clone, Debug)]
pub struct Config {
    pub bootstrap: String,
    pub input_topic: String,
    pub output_topic: String,
    pub dlq_topic: String,
    pub group: String,
    pub variant: Variant,
    /// Commit after this many processed inputs (and, correctly, on the way out). The default,
    /// 499, is just under the half of a 1000-input workload at which quiesce's default stop
    /// comes: the commit's wait for its outputs' delivery is a pause in which the stop can
    /// land, and a pause at a multiple of 100 past the half (300's 600) made
    /// `no-final-commit`'s stop land on a fresh commit, so that its bug did not show.
    pub commit_every: u64,
    /// Work per input.
    pub process_cost: Duration,
    /// Bytes kept forever per processed input: a leak of a known rate, for soak runs
    /// (`EVENT_PIPELINE_LEAK_BYTES_PER_RECORD`, a number of bytes, fractions allowed, so that
    /// 2.43 at 50 records/s is 10 MB/day; 0, the default, leaks nothing).
    pub leak_bytes_per_record: f64,
}

impl Config {
    /// From quiesce's variables (`QUIESCE_KAFKA_BOOTSTRAP`, `QUIESCE_KAFKA_INPUT_TOPIC`,
    /// `QUIESCE_KAFKA_OUTPUT_TOPIC`, `QUIESCE_KAFKA_GROUP`, `QUIESCE_VARIANT`) and the
    /// pipeline's own (`EVENT_PIPELINE_COMMIT_EVERY`, default 499;
    /// `EVENT_PIPELINE_PROCESS_MS`, default 1; `EVENT_PIPELINE_LEAK_BYTES_PER_RECORD`, default
    /// 0), looked up by `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let bootstrap = get("QUIESCE_KAFKA_BOOTSTRAP")
            .ok_or("QUIESCE_KAFKA_BOOTSTRAP is not set (host:port of a Kafka broker)")?;
        let output_topic =
            get("QUIESCE_KAFKA_OUTPUT_TOPIC").unwrap_or_else(|| "quiesce-output".to_owned());
        let number = |key: &str, default: u64| -> Result<u64, String> {
            get(key).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| format!("{key} = `{v}` is not a whole number"))
            })
        };
        Ok(Config {
            bootstrap,
            input_topic: get("QUIESCE_KAFKA_INPUT_TOPIC")
                .unwrap_or_else(|| "quiesce-input".to_owned()),
            dlq_topic: format!("{output_topic}.dlq"),
            output_topic,
            group: get("QUIESCE_KAFKA_GROUP").unwrap_or_else(|| "quiesce-target".to_owned()),
            variant: get("QUIESCE_VARIANT")
                .map(|v| v.parse())
                .transpose()?
                .unwrap_or(Variant::Correct),
            commit_every: number("EVENT_PIPELINE_COMMIT_EVERY", 499)?.max(1),
            process_cost: Duration::from_millis(number("EVENT_PIPELINE_PROCESS_MS", 1)?),
            leak_bytes_per_record: leak_rate(get("EVENT_PIPELINE_LEAK_BYTES_PER_RECORD"))?,
        })
    }
}

/// `EVENT_PIPELINE_LEAK_BYTES_PER_RECORD`: a finite number of bytes, 0 or more.
fn leak_rate(value: Option<String>) -> Result<f64, String> {
    let Some(value) = value else { return Ok(0.0) };
    match value.parse::<f64>() {
        Ok(bytes) if bytes.is_finite() && bytes >= 0.0 => Ok(bytes),
        _ => Err(format!(
            "EVENT_PIPELINE_LEAK_BYTES_PER_RECORD = `{value}` is not a number of bytes (0 or more)"
        )),
    }
}

fn client(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap)
        .set("client.id", "event-pipeline")
        .set("log_level", "3");
    client
}

/// Tasks registered by weak reference: what seed 001's WeakSet did. Cancelling through it
/// reaches only the tasks something else still holds, which is none of them.
#[derive(Default)]
struct WeakRegistry(Mutex<Vec<Weak<CancellationToken>>>);

impl WeakRegistry {
    fn register(&self, stop: &Arc<CancellationToken>) {
        if let Ok(mut tasks) = self.0.lock() {
            tasks.push(Arc::downgrade(stop));
        }
    }

    fn cancel_all(&self) {
        if let Ok(tasks) = self.0.lock() {
            for stop in tasks.iter().filter_map(Weak::upgrade) {
                stop.cancel();
            }
        }
    }
}

/// Memory kept and never given back, at a set number of bytes per processed input: what a
/// per-record cache without eviction does. It grows in touched 64 KiB chunks, so resident
/// memory follows the bytes leaked, not the allocator's address space.
#[derive(Default)]
struct Leak {
    per_record: f64,
    owed: f64,
    kept: Vec<Box<[u8]>>,
}

impl Leak {
    const CHUNK: usize = 64 * 1024;

    fn record(&mut self) {
        self.owed += self.per_record;
        while self.owed >= Self::CHUNK as f64 {
            self.owed -= Self::CHUNK as f64;
            // Non-zero, so every page is really written (zeroed pages may stay unbacked).
            self.kept.push(vec![0xa5; Self::CHUNK].into_boxed_slice());
        }
    }
}

/// What the consume loop has done and not yet committed.
#[derive(Default)]
struct Progress {
    /// Per input partition: the next offset to commit (last processed + 1).
    positions: BTreeMap<i32, i64>,
    /// Deliveries of outputs not yet confirmed.
    pending: Vec<DeliveryFuture>,
    processed: u64,
    since_commit: u64,
    leak: Leak,
}

/// Runs the pipeline until `shutdown` is cancelled, then stops it. `ready` is called once the
/// clients are up and subscribed; `outputs_sent` counts output records handed to the producer.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(),
    outputs_sent: Arc<AtomicU64>,
) -> Result<(), String> {
    let auto_commit = config.variant == Variant::AutoOffsetStore;
    let consumer: StreamConsumer = client(&config)
        .set("group.id", &config.group)
        .set(
            "enable.auto.commit",
            if auto_commit { "true" } else { "false" },
        )
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    consumer
        .subscribe(&[&config.input_topic])
        .map_err(|e| format!("subscribe to {}: {e}", config.input_topic))?;
    let producer: FutureProducer = client(&config)
        // Outputs are batched for 100 ms, as throughput-minded pipelines do: what is queued
        // at the stop is delivered only by a flush.
        .set("linger.ms", "100")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    create_dlq(&config).await?;
    let tracker = TaskTracker::new();
    let registry = WeakRegistry::default();
    if config.variant == Variant::SamplerThread {
        start_lag_sampler();
    }
    ready();

    let mut progress = Progress::default();
    let result = if auto_commit {
        consume_auto_store(&config, &consumer, &producer, &shutdown, &outputs_sent).await
    } else if config.variant == Variant::CommitBeforeProcess {
        consume_commit_on_receipt(
            &config,
            &consumer,
            &producer,
            &shutdown,
            &tracker,
            &outputs_sent,
        )
        .await
    } else {
        consume(
            &config,
            &consumer,
            &producer,
            &shutdown,
            &tracker,
            &registry,
            &outputs_sent,
            &mut progress,
        )
        .await
    };

    // The way out, in order: no new input (the loop has ended), outputs delivered, offsets
    // committed, follow-up tasks stopped and awaited, clients closed.
    if config.variant == Variant::SlowDrain {
        tokio::time::sleep(SLOW_DRAIN).await;
    }
    if config.variant == Variant::ProducerNotFlushed {
        // The bug: the producer goes first, unflushed; rdkafka purges what it still queues.
        drop(producer);
    } else {
        delivered(&mut progress.pending).await?;
    }
    if auto_commit {
        // What librdkafka's close does with auto-commit on: commit the stored offsets, which
        // are those of every record polled, processed or not.
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .or_else(|e| match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::NoOffset) => Ok(()),
                _ => Err(format!("commit: {e}")),
            })?;
    } else if config.variant != Variant::NoFinalCommit {
        commit(&config, &consumer, &progress.positions, CommitMode::Sync)?;
    }
    tracker.close();
    tracker.wait().await;
    registry.cancel_all();
    if config.variant == Variant::ExitWithoutClose {
        // The bug: the consumer is never closed; the process exits with it still a member.
        std::mem::forget(consumer);
        return result;
    }
    consumer.unsubscribe();
    drop(consumer);
    result
}

/// The dead-letter topic, created if it is not there (as many partitions as the broker's
/// default).
async fn create_dlq(config: &Config) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client(config)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let topic = NewTopic::new(&config.dlq_topic, 1, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|e| format!("create {}: {e}", config.dlq_topic))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => return Err(format!("create {topic}: {e}")),
        }
    }
    Ok(())
}

/// A consume error the pipeline waits out: its input topic does not exist yet (it appears
/// when something first produces to it), or the broker cannot be reached for now, which
/// librdkafka reports and recovers from by itself (`quits-on-outage` ends there instead).
/// Every other error ends the pipeline.
fn waits_out(variant: Variant, e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::KafkaError::MessageConsumption;
    match e {
        MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition) => true,
        MessageConsumption(
            RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure,
        ) => {
            if variant == Variant::QuitsOnOutage {
                return false;
            }
            eprintln!("event-pipeline: waiting out: {e}");
            true
        }
        _ => false,
    }
}

/// The consume loop of every variant but `commit-before-process`.
#[allow(clippy::too_many_arguments)]
async fn consume(
    config: &Config,
    consumer: &StreamConsumer,
    producer: &FutureProducer,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    registry: &WeakRegistry,
    outputs_sent: &AtomicU64,
    progress: &mut Progress,
) -> Result<(), String> {
    loop {
        let message = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            message = consumer.recv() => match message {
                Ok(message) => message,
                Err(e) if waits_out(config.variant, &e) => continue,
                Err(e) => return Err(format!("consume: {e}")),
            },
        };
        do_work(config.process_cost).await;
        progress
            .pending
            .extend(send_outputs(config, producer, &message)?);
        outputs_sent.fetch_add(1, Ordering::SeqCst);
        progress
            .positions
            .insert(message.partition(), message.offset() + 1);
        progress.processed += 1;
        progress.since_commit += 1;
        progress.leak.per_record = config.leak_bytes_per_record;
        progress.leak.record();
        if progress.processed.is_multiple_of(BATCH) {
            follow_up(config.variant, shutdown, tracker, registry);
        }
        if progress.since_commit >= config.commit_every {
            if config.variant != Variant::ProducerNotFlushed {
                delivered(&mut progress.pending).await?;
            } else {
                // The bug: commit once queued; the deliveries are never looked at.
                progress.pending.clear();
            }
            commit(config, consumer, &progress.positions, CommitMode::Async)?;
            progress.since_commit = 0;
        }
    }
}

/// `commit-before-process`: commit on receipt, process later on a worker.
async fn consume_commit_on_receipt(
    config: &Config,
    consumer: &StreamConsumer,
    producer: &FutureProducer,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    outputs_sent: &Arc<AtomicU64>,
) -> Result<(), String> {
    // Bounded, as a real service's hand-off is: the consumer runs at most `COMMIT_AHEAD`
    // records ahead of its worker, so a clean stop's drain (and the leave after it) is short.
    let (queue, mut work) = tokio::sync::mpsc::channel::<OwnedMessage>(COMMIT_AHEAD);
    let worker = {
        let config = config.clone();
        let producer = producer.clone();
        let outputs_sent = outputs_sent.clone();
        tracker.spawn(async move {
            let mut pending = Vec::new();
            while let Some(message) = work.recv().await {
                do_work(config.process_cost).await;
                pending.extend(send_outputs(&config, &producer, &message)?);
                outputs_sent.fetch_add(1, Ordering::SeqCst);
            }
            delivered(&mut pending).await
        })
    };
    loop {
        let message = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            message = consumer.recv() => match message {
                Ok(message) => message,
                Err(e) if waits_out(config.variant, &e) => continue,
                Err(e) => return Err(format!("consume: {e}")),
            },
        };
        let position = BTreeMap::from([(message.partition(), message.offset() + 1)]);
        commit(config, consumer, &position, CommitMode::Async)?;
        // Awaited even once the stop has come: the record is committed, so it must be
        // processed; the worker frees a place within one record's work.
        if queue.send(message.detach()).await.is_err() {
            break;
        }
    }
    // A clean stop drains the queue: only a crash shows the bug.
    drop(queue);
    worker
        .await
        .map_err(|e| format!("the processing worker failed: {e}"))?
}

/// How many committed records `commit-before-process` queues ahead of its worker: all of them
/// are lost to a SIGKILL.
const COMMIT_AHEAD: usize = 50;

/// `auto-offset-store`: poll into a buffer, process on a worker; the offsets are librdkafka's
/// to store (on poll) and commit (every interval, and on the way out).
async fn consume_auto_store(
    config: &Config,
    consumer: &StreamConsumer,
    producer: &FutureProducer,
    shutdown: &CancellationToken,
    outputs_sent: &Arc<AtomicU64>,
) -> Result<(), String> {
    let (buffer, mut work) = tokio::sync::mpsc::channel::<OwnedMessage>(AUTO_STORE_BUFFER);
    let stop_worker = CancellationToken::new();
    let worker = {
        let config = config.clone();
        let producer = producer.clone();
        let outputs_sent = outputs_sent.clone();
        let stop = stop_worker.clone();
        tokio::spawn(async move {
            let mut pending = Vec::new();
            loop {
                let message = tokio::select! {
                    biased;
                    // The bug's other half: the worker quits with records still buffered.
                    () = stop.cancelled() => break,
                    message = work.recv() => match message {
                        Some(message) => message,
                        None => break,
                    },
                };
                do_work(config.process_cost).await;
                pending.extend(send_outputs(&config, &producer, &message)?);
                outputs_sent.fetch_add(1, Ordering::SeqCst);
            }
            delivered(&mut pending).await
        })
    };
    loop {
        let message = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            message = consumer.recv() => match message {
                Ok(message) => message,
                Err(e) if waits_out(config.variant, &e) => continue,
                Err(e) => return Err(format!("consume: {e}")),
            },
        };
        let message = message.detach();
        tokio::select! {
            () = shutdown.cancelled() => break,
            sent = buffer.send(message) => if sent.is_err() { break },
        }
    }
    stop_worker.cancel();
    worker
        .await
        .map_err(|e| format!("the processing worker failed: {e}"))?
}

/// How many polled records `auto-offset-store` buffers ahead of its worker.
const AUTO_STORE_BUFFER: usize = 500;

/// The work an input takes. None at all is none: even a zero sleep waits for the next timer
/// tick, about a millisecond.
async fn do_work(cost: Duration) {
    if !cost.is_zero() {
        tokio::time::sleep(cost).await;
    }
}

/// The output record (and, for a payload that is not `seq-N`, the dead letter) of `message`.
fn send_outputs(
    config: &Config,
    producer: &FutureProducer,
    message: &impl Message,
) -> Result<Vec<DeliveryFuture>, String> {
    let key = message.key().unwrap_or_default();
    let value = format!(
        "{{\"partition\":{},\"offset\":{}}}",
        message.partition(),
        message.offset()
    );
    let mut sends = vec![send(
        producer,
        FutureRecord::to(&config.output_topic)
            .key(key)
            .payload(&value),
    )?];
    let payload = message.payload().unwrap_or_default();
    if !payload.starts_with(b"seq-") {
        sends.push(send(
            producer,
            FutureRecord::to(&config.dlq_topic)
                .key(key)
                .payload(payload),
        )?);
    }
    Ok(sends)
}

fn send(
    producer: &FutureProducer,
    record: FutureRecord<'_, [u8], impl rdkafka::message::ToBytes + ?Sized>,
) -> Result<DeliveryFuture, String> {
    producer
        .send_result(record)
        .map_err(|(e, _)| format!("produce: {e}"))
}

/// Waits for every pending delivery; a failed one is an error (its input must not be
/// committed).
async fn delivered(pending: &mut Vec<DeliveryFuture>) -> Result<(), String> {
    for delivery in futures::future::join_all(pending.drain(..)).await {
        match delivery {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(format!("an output was not delivered: {e}")),
            Err(_) => return Err("the producer went away before a delivery".to_owned()),
        }
    }
    Ok(())
}

fn commit(
    config: &Config,
    consumer: &StreamConsumer,
    positions: &BTreeMap<i32, i64>,
    mode: CommitMode,
) -> Result<(), String> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut offsets = TopicPartitionList::new();
    for (&partition, &next) in positions {
        offsets
            .add_partition_offset(&config.input_topic, partition, Offset::Offset(next))
            .map_err(|e| format!("commit: {e}"))?;
    }
    consumer
        .commit(&offsets, mode)
        .map_err(|e| format!("commit: {e}"))
}

/// The per-batch follow-up task, spawned the way the variant spawns it.
fn follow_up(
    variant: Variant,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    registry: &WeakRegistry,
) {
    match variant {
        Variant::UntrackedTask => {
            // A metrics flusher per batch, on its own: nothing stops it or waits for it.
            tokio::spawn(async {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
        Variant::DroppedHandle => {
            let stop = Arc::new(CancellationToken::new());
            registry.register(&stop);
            let stopped = (*stop).clone();
            tokio::spawn(async move { stopped.cancelled().await });
            // `stop` is dropped here: the registry's weak reference dies with it.
        }
        _ => {
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(AUDIT) => {}
                }
            });
        }
    }
}

/// `sampler-thread`: a periodic sampler on a raw thread, never told to stop.
fn start_lag_sampler() {
    let _ = std::thread::Builder::new()
        .name("lag-sampler".to_owned())
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
}

/// The pipeline as an in-process graph for quiesce, configured by the settings quiesce
/// passes (the same names as the environment of the binary).
pub fn graph() -> quiesce::target::Graph {
    quiesce::target::Graph::new("event-pipeline", |mut ctx| async move {
        let settings = ctx.settings.clone();
        let config = Config::from_lookup(|key| settings.get(key).cloned())?;
        let shutdown = ctx.shutdown.clone();
        let outputs_sent = ctx.outputs_sent.clone();
        run(config, shutdown, move || ctx.ready(), outputs_sent).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_by_name_and_unknown_ones_are_named() {
        for variant in Variant::ALL {
            assert_eq!(variant.as_str().parse::<Variant>(), Ok(variant));
        }
        let err = "leaky".parse::<Variant>().unwrap_err();
        assert!(
            err.contains("`leaky`") && err.contains("slow-drain"),
            "{err}"
        );
    }

    #[test]
    fn config_needs_a_broker_and_takes_defaults() {
        let err = Config::from_lookup(|_| None).unwrap_err();
        assert!(err.contains("QUIESCE_KAFKA_BOOTSTRAP"), "{err}");
        let config = Config::from_lookup(|key| {
            (key == "QUIESCE_KAFKA_BOOTSTRAP").then(|| "127.0.0.1:9092".to_owned())
        })
        .unwrap();
        assert_eq!(config.variant, Variant::Correct);
        assert_eq!(config.dlq_topic, "quiesce-output.dlq");
        assert_eq!(config.commit_every, 499);
        let err = Config::from_lookup(|key| match key {
            "QUIESCE_KAFKA_BOOTSTRAP" => Some("x:1".to_owned()),
            "EVENT_PIPELINE_COMMIT_EVERY" => Some("many".to_owned()),
            _ => None,
        })
        .unwrap_err();
        assert!(
            err.contains("EVENT_PIPELINE_COMMIT_EVERY = `many`"),
            "{err}"
        );
        for bad in ["-1", "NaN", "inf", "a lot"] {
            let err = Config::from_lookup(|key| match key {
                "QUIESCE_KAFKA_BOOTSTRAP" => Some("x:1".to_owned()),
                "EVENT_PIPELINE_LEAK_BYTES_PER_RECORD" => Some(bad.to_owned()),
                _ => None,
            })
            .unwrap_err();
            assert!(err.contains(&format!("= `{bad}`")), "{err}");
        }
        let leaky = Config::from_lookup(|key| match key {
            "QUIESCE_KAFKA_BOOTSTRAP" => Some("x:1".to_owned()),
            "EVENT_PIPELINE_LEAK_BYTES_PER_RECORD" => Some("2.43".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(leaky.leak_bytes_per_record, 2.43);
    }

    /// The leak keeps exactly the bytes owed, in whole chunks, and nothing at 0.
    #[test]
    fn the_leak_keeps_its_rate_in_whole_chunks() {
        let mut leak = Leak {
            per_record: 100.0,
            ..Leak::default()
        };
        for _ in 0..10_000 {
            leak.record();
        }
        let kept: usize = leak.kept.iter().map(|c| c.len()).sum();
        assert_eq!(kept, 1_000_000 / Leak::CHUNK * Leak::CHUNK);
        assert_eq!(leak.owed, (1_000_000 % Leak::CHUNK) as f64);
        // A fraction of a byte per record adds up: 2.5 B × 100,000 is 3 whole chunks.
        let mut fractional = Leak {
            per_record: 2.5,
            ..Leak::default()
        };
        for _ in 0..100_000 {
            fractional.record();
        }
        assert_eq!(fractional.kept.len(), 250_000 / Leak::CHUNK);
        let mut none = Leak::default();
        for _ in 0..10_000 {
            none.record();
        }
        assert!(none.kept.is_empty());
    }
}
