//! The rdkafka (Rust) client's cases: what `conformance/clients.py` does with the Python
//! clients, done with the crate a Rust service uses, on blocking consumers as a service's poll
//! loop would. Reports observations only; [`super::judge`] decides.

use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{Case, Disrupt, Observations, Seen, cut, now_ms};
use crate::kafka::client_config as config;

/// The same bounds as the Python clients: see `conformance/clients.py`.
const IDLE: Duration = Duration::from_secs(6);
/// How long a consumer waits without a record in the outage and restart cases: the broker's
/// absence and the client's reconnect backoff included.
const IDLE_ACROSS_CUTS: Duration = Duration::from_secs(20);
const FIRST: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(90);
/// Records a per-batch consumer reads between commits (the Python clients' poll size).
const POLL_BATCH: usize = 50;
const REJOIN_CONSUMERS: usize = 4;
/// How long the rollout case's second consumer is polled in its join, the broker holding it
/// for the first to rejoin, before the first closes.
const PENDING: Duration = Duration::from_millis(500);

fn failed(what: &str) -> impl Fn(rdkafka::error::KafkaError) -> String + '_ {
    move |e| format!("rdkafka: {what}: {e}")
}

/// Runs `case` on `topic` and reports what rdkafka saw.
pub(super) async fn run(
    bootstrap: &str,
    topic: &str,
    case: Case,
    records: usize,
    disrupt: &mut dyn Disrupt,
) -> Result<Observations, String> {
    if case.cuts() {
        return across_cuts(bootstrap, topic, case, records, disrupt).await;
    }
    let producer = producer(bootstrap)?;
    let mut obs = Observations {
        produced: send(&producer, topic, 0..records).await?,
        ..Observations::default()
    };
    let group = format!("{topic}-group");
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    // The consumers block on their polls, as a service's loop does: off the runtime.
    tokio::task::spawn_blocking(move || {
        let retries = AtomicUsize::new(0);
        let mut phase = |limit: usize, per_record: bool| -> Result<(), String> {
            obs.limits.push(limit);
            let reading = Reading::new(&bootstrap, &topic, &group, &retries);
            let seen = reading.consume(limit, per_record, None)?;
            obs.phases.push(seen);
            Ok(())
        };
        match case {
            Case::ResumeRecord | Case::ResumeBatch => {
                let per_record = case == Case::ResumeRecord;
                phase(records * 250 / 600, per_record)?;
                phase(records, per_record)?;
            }
            Case::Rejoin => {
                for _ in 0..REJOIN_CONSUMERS {
                    phase(records / (REJOIN_CONSUMERS + 2), true)?;
                }
                phase(records, true)?;
            }
            Case::Seek => {
                let mut committed = std::collections::BTreeMap::<i32, Vec<i64>>::new();
                for (p, o, _) in &obs.produced {
                    committed.entry(*p).or_default().push(*o);
                }
                let at: Vec<(i32, i64)> = committed
                    .into_iter()
                    .map(|(p, mut offsets)| {
                        offsets.sort_unstable();
                        (p, offsets[offsets.len() / 2])
                    })
                    .collect();
                commit_at(&bootstrap, &topic, &group, &at)?;
                obs.committed = at.iter().map(|(p, o)| (p.to_string(), *o)).collect();
                obs.limits.push(records);
                let reading = Reading::new(&bootstrap, &topic, &group, &retries);
                obs.phases.push(reading.consume(records, true, None)?);
            }
            Case::End => {
                let partitions: std::collections::BTreeSet<i32> =
                    obs.produced.iter().map(|(p, _, _)| *p).collect();
                obs.ends = ends(&bootstrap, &topic, &partitions)?;
            }
            Case::Describe => describe(&bootstrap, &topic, &group, records, &mut obs)?,
            Case::Rollout => rollout(&bootstrap, &topic, &group, records, &mut obs)?,
            Case::Outage | Case::Restart => unreachable!("run across the cuts above"),
        }
        Ok(obs)
    })
    .await
    .map_err(|e| format!("rdkafka: the consumers' thread: {e}"))?
}

/// A batching producer: linger 50 ms, up to 100 records a batch.
fn producer(bootstrap: &str) -> Result<FutureProducer, String> {
    config(bootstrap)
        .set("linger.ms", "50")
        .set("batch.num.messages", "100")
        .set("enable.idempotence", "false")
        .create()
        .map_err(failed("producer"))
}

/// Sends the values `values`, every send in flight at once: what was acknowledged.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    values: std::ops::Range<usize>,
) -> Result<Vec<Seen>, String> {
    let values: Vec<String> = values.map(|i| i.to_string()).collect();
    let sends = values.iter().map(|value| {
        producer.send(
            FutureRecord::<(), _>::to(topic).payload(value),
            Duration::from_secs(30),
        )
    });
    let mut acked = Vec::with_capacity(values.len());
    for (value, sent) in values.iter().zip(join_all(sends).await) {
        let delivery = sent.map_err(|(e, _)| format!("rdkafka: produce: {e}"))?;
        acked.push((delivery.partition, delivery.offset, value.clone()));
    }
    Ok(acked)
}

/// The outage and restart cases, as `conformance/clients.py` runs them: the producer sends
/// its second half while the broker is away; a consumer committing each record is cut
/// mid-way and reads on; a new consumer resumes from what was committed.
async fn across_cuts(
    bootstrap: &str,
    topic: &str,
    case: Case,
    records: usize,
    disrupt: &mut dyn Disrupt,
) -> Result<Observations, String> {
    let half = records / 2;
    let producer = producer(bootstrap)?;
    let mut obs = Observations {
        produced: send(&producer, topic, 0..half).await?,
        ..Observations::default()
    };
    let (away_tx, away_rx) = tokio::sync::oneshot::channel();
    let second = async {
        away_rx
            .await
            .map_err(|_| "rdkafka: the broker was never taken away".to_owned())?;
        let acked = send(&producer, topic, half..records).await?;
        Ok::<_, String>((acked, now_ms()))
    };
    let told = async {
        away_tx
            .send(())
            .map_err(|()| "rdkafka: the producer was gone".to_owned())
    };
    let (sent, produce_cut) = tokio::join!(second, cut(disrupt, case, "produce", told));
    let (acked, done) = sent?;
    obs.produced.extend(acked);
    obs.done.insert("produce".into(), done);
    obs.cuts.push(produce_cut?);

    // The consumer blocks on its polls off the runtime; it asks for its cut through a
    // channel and waits for the answer.
    let (ask_tx, mut ask_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (down_tx, down_rx) = std::sync::mpsc::channel::<()>();
    let (b, t, g) = (
        bootstrap.to_owned(),
        topic.to_owned(),
        format!("{topic}-group"),
    );
    let reader = tokio::task::spawn_blocking(move || {
        let retries = AtomicUsize::new(0);
        let mut ask = || {
            ask_tx
                .blocking_send(())
                .map_err(|_| "rdkafka: nobody to cut the broker".to_owned())?;
            down_rx
                .recv()
                .map_err(|_| "rdkafka: the broker was never taken away".to_owned())
        };
        let reading = Reading::new(&b, &t, &g, &retries);
        let across = Reading {
            idle: IDLE_ACROSS_CUTS,
            ..reading
        };
        let first = across.consume(half, true, Some((half / 2, &mut ask)))?;
        let done = now_ms();
        // The broker is back: the resuming consumer waits as in the other cases.
        let rest = reading.consume(records, true, None)?;
        Ok::<_, String>((first, done, rest, retries.into_inner()))
    });
    let consume_cut = async {
        match ask_rx.recv().await {
            Some(()) => {
                let told = async {
                    down_tx
                        .send(())
                        .map_err(|_| "rdkafka: the consumer was gone".to_owned())
                };
                cut(disrupt, case, "consume", told).await.map(Some)
            }
            None => Ok(None),
        }
    };
    let (read, consume_cut) = tokio::join!(reader, consume_cut);
    let (first, done, rest, retries) =
        read.map_err(|e| format!("rdkafka: the consumers' thread: {e}"))??;
    obs.limits = vec![half, records];
    obs.phases = vec![first, rest];
    obs.done.insert("consume".into(), done);
    obs.commit_retries = retries;
    obs.cuts.extend(consume_cut?);
    Ok(obs)
}

fn consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer, String> {
    config(bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .create()
        .map_err(failed("consumer"))
}

/// What a consumer calls to have the broker taken away: it returns once it is away.
type AskCut<'a> = dyn FnMut() -> Result<(), String> + 'a;

/// A consumer's reading of `topic` in `group`: how long it waits for records, and where it
/// counts the commits it had to try again.
struct Reading<'a> {
    bootstrap: &'a str,
    topic: &'a str,
    group: &'a str,
    idle: Duration,
    retries: &'a AtomicUsize,
}

impl<'a> Reading<'a> {
    fn new(bootstrap: &'a str, topic: &'a str, group: &'a str, retries: &'a AtomicUsize) -> Self {
        Reading {
            bootstrap,
            topic,
            group,
            idle: IDLE,
            retries,
        }
    }

    /// Reads up to `limit` records, committing each (per_record) or every [`POLL_BATCH`]
    /// records and at the end; `cut`, (count, ask): ask() once `count` records are read and
    /// committed. The consumer leaves the group when dropped.
    fn consume(
        &self,
        limit: usize,
        per_record: bool,
        mut cut: Option<(usize, &mut AskCut<'_>)>,
    ) -> Result<Vec<Seen>, String> {
        let consumer = consumer(self.bootstrap, self.group)?;
        consumer
            .subscribe(&[self.topic])
            .map_err(failed("subscribe"))?;
        let start = Instant::now();
        let mut last: Option<Instant> = None;
        let mut seen = Vec::new();
        let mut uncommitted = 0;
        let commit_state = || {
            retrying(self.retries, || {
                consumer.commit_consumer_state(CommitMode::Sync)
            })
        };
        while seen.len() < limit {
            let quiet = last.unwrap_or(start).elapsed();
            if quiet > last.map_or(FIRST, |_| self.idle) || start.elapsed() > DEADLINE {
                break;
            }
            let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let Ok(message) = message else {
                // a transport error while the broker is away: the client reconnects
                continue;
            };
            last = Some(Instant::now());
            seen.push(seen_of(&message));
            if per_record {
                commit_after(&consumer, self.topic, &message, self.retries)?;
            } else {
                uncommitted += 1;
                if uncommitted == POLL_BATCH {
                    commit_state()?;
                    uncommitted = 0;
                }
            }
            if let Some((count, ask)) = cut.as_mut()
                && seen.len() == *count
            {
                ask()?;
            }
        }
        if uncommitted > 0 {
            commit_state()?;
        }
        Ok(seen)
    }
}

/// `commit()`, again every 200 ms while it fails, for up to [`DEADLINE`]: a service's commit
/// through a broker that is away. Counts each retry in `retries`.
fn retrying(
    retries: &AtomicUsize,
    commit: impl Fn() -> rdkafka::error::KafkaResult<()>,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match commit() {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() > DEADLINE => return Err(failed("commit")(e)),
            Err(_) => {
                retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Polls once and commits what came: `None` when nothing did.
fn poll_commit(consumer: &BaseConsumer, topic: &str) -> Result<Option<Seen>, String> {
    let Some(message) = consumer.poll(Duration::from_millis(200)) else {
        return Ok(None);
    };
    let message = message.map_err(failed("poll"))?;
    commit_after(consumer, topic, &message, &AtomicUsize::new(0))?;
    Ok(Some(seen_of(&message)))
}

/// Commits the offset after `message`, synchronously.
fn commit_after(
    consumer: &BaseConsumer,
    topic: &str,
    message: &rdkafka::message::BorrowedMessage<'_>,
    retries: &AtomicUsize,
) -> Result<(), String> {
    let mut next = TopicPartitionList::new();
    next.add_partition_offset(
        topic,
        message.partition(),
        Offset::Offset(message.offset() + 1),
    )
    .map_err(failed("commit"))?;
    retrying(retries, || consumer.commit(&next, CommitMode::Sync))
}

fn seen_of(message: &rdkafka::message::BorrowedMessage<'_>) -> Seen {
    let value = message
        .payload()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    (message.partition(), message.offset(), value)
}

/// The two-consumer cases' start: the first consumer reads a sixth (committing each record),
/// then the second subscribes. The first, what it read, and the second.
fn first_then_second(
    bootstrap: &str,
    topic: &str,
    group: &str,
    records: usize,
) -> Result<(BaseConsumer, Vec<Seen>, BaseConsumer), String> {
    let first = consumer(bootstrap, group)?;
    first.subscribe(&[topic]).map_err(failed("subscribe"))?;
    let mut read = Vec::new();
    let start = Instant::now();
    while read.len() < records / 6 && start.elapsed() < FIRST {
        read.extend(poll_commit(&first, topic)?);
    }
    let second = consumer(bootstrap, group)?;
    second.subscribe(&[topic]).map_err(failed("subscribe"))?;
    Ok((first, read, second))
}

/// The first consumer reads a sixth; the second joins and both read until the second has
/// partitions (or 30 s); the first closes; the second reads the rest; then the group is
/// described while the second is still in it.
fn describe(
    bootstrap: &str,
    topic: &str,
    group: &str,
    records: usize,
    obs: &mut Observations,
) -> Result<(), String> {
    let (first, mut read_first, second) = first_then_second(bootstrap, topic, group, records)?;
    let mut read_second = Vec::new();
    let joined = Instant::now();
    while joined.elapsed() < FIRST {
        read_first.extend(poll_commit(&first, topic)?);
        read_second.extend(poll_commit(&second, topic)?);
        let assigned = second.assignment().map_err(failed("assignment"))?.count();
        if assigned > 0 && !read_second.is_empty() {
            break;
        }
    }
    drop(first);
    let mut last = Instant::now();
    while last.elapsed() < IDLE && joined.elapsed() < DEADLINE {
        if let Some(seen) = poll_commit(&second, topic)? {
            read_second.push(seen);
            last = Instant::now();
        }
    }
    let list = second
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .map_err(failed("DescribeGroups"))?;
    let group_info = list.groups().iter().find(|g| g.name() == group);
    let survivor = member_id(&second);
    obs.described = Some(super::Described {
        state: group_info.map(|g| g.state().to_owned()).unwrap_or_default(),
        members: group_info
            .map(|g| g.members().iter().map(|m| m.id().to_owned()).collect())
            .unwrap_or_default(),
        survivor,
    });
    obs.limits = vec![records / 6, 0];
    obs.phases = vec![read_first, read_second];
    Ok(())
}

/// librdkafka's member id for `consumer`, once the broker gave it one.
fn member_id(consumer: &BaseConsumer) -> Option<String> {
    // SAFETY: the client pointer is live for as long as `consumer`; the returned string is
    // librdkafka's, copied here and freed with its own allocator.
    unsafe {
        let ptr = rdkafka::bindings::rd_kafka_memberid(consumer.client().native_ptr());
        (!ptr.is_null()).then(|| {
            let id = std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned();
            rdkafka::bindings::rd_kafka_mem_free(consumer.client().native_ptr(), ptr.cast());
            id
        })
    }
    .filter(|id| !id.is_empty())
}

/// The first consumer reads a sixth; the second subscribes and is polled, the first not,
/// until the broker gave it a member id, then 500 ms more, its join held for the first to
/// rejoin; the first closes then, inside that rebalance; the second reads the rest.
fn rollout(
    bootstrap: &str,
    topic: &str,
    group: &str,
    records: usize,
    obs: &mut Observations,
) -> Result<(), String> {
    let (first, read_first, second) = first_then_second(bootstrap, topic, group, records)?;
    let mut read_second = Vec::new();
    let joined = Instant::now();
    while member_id(&second).is_none() && joined.elapsed() < FIRST {
        read_second.extend(poll_commit(&second, topic)?);
    }
    // Its join held by the broker for the first to rejoin, polled all along.
    let pending = Instant::now();
    while member_id(&second).is_some() && pending.elapsed() < PENDING {
        read_second.extend(poll_commit(&second, topic)?);
    }
    let mut evidence = super::Rollout {
        member_id: member_id(&second),
        assigned_at_close: second.assignment().map_err(failed("assignment"))?.count(),
        read_before_close: read_second.len(),
        pending_ms: pending.elapsed().as_millis() as u64,
        took_ms: None,
    };
    let closed = Instant::now();
    drop(first);
    let mut last = Instant::now();
    while joined.elapsed() < DEADLINE {
        let waited = match evidence.took_ms {
            Some(_) => last.elapsed() >= IDLE,
            None => closed.elapsed() >= FIRST,
        };
        if waited {
            break;
        }
        if let Some(seen) = poll_commit(&second, topic)? {
            evidence
                .took_ms
                .get_or_insert(closed.elapsed().as_millis() as u64);
            read_second.push(seen);
            last = Instant::now();
        }
    }
    obs.rollout = Some(evidence);
    obs.limits = vec![records / 6, 0];
    obs.phases = vec![read_first, read_second];
    Ok(())
}

fn commit_at(bootstrap: &str, topic: &str, group: &str, at: &[(i32, i64)]) -> Result<(), String> {
    let consumer = consumer(bootstrap, group)?;
    let mut offsets = TopicPartitionList::new();
    for (p, o) in at {
        offsets
            .add_partition_offset(topic, *p, Offset::Offset(*o))
            .map_err(failed("commit"))?;
    }
    consumer.assign(&offsets).map_err(failed("assign"))?;
    consumer
        .commit(&offsets, CommitMode::Sync)
        .map_err(failed("commit"))
}

/// Reads every partition from the start, then each partition's high watermark as the last
/// fetch reported it and its end as ListOffsets answers.
fn ends(
    bootstrap: &str,
    topic: &str,
    partitions: &std::collections::BTreeSet<i32>,
) -> Result<std::collections::BTreeMap<String, (i64, i64)>, String> {
    let consumer = consumer(bootstrap, &format!("{topic}-ends"))?;
    let mut from_start = TopicPartitionList::new();
    for p in partitions {
        from_start
            .add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(failed("assign"))?;
    }
    consumer.assign(&from_start).map_err(failed("assign"))?;
    let start = Instant::now();
    let mut last: Option<Instant> = None;
    while last.unwrap_or(start).elapsed() < last.map_or(FIRST, |_| IDLE)
        && start.elapsed() < DEADLINE
    {
        if let Some(message) = consumer.poll(Duration::from_millis(500)) {
            message.map_err(failed("poll"))?;
            last = Some(Instant::now());
        }
    }
    let name = CString::new(topic).map_err(|e| e.to_string())?;
    let mut ends = std::collections::BTreeMap::new();
    for p in partitions {
        let (mut low, mut fetched_high) = (-1i64, -1i64);
        // SAFETY: the client pointer is live for as long as `consumer`, the topic name is a
        // NUL-terminated string that outlives the call, and both outputs are valid i64s.
        let error = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                consumer.client().native_ptr(),
                name.as_ptr(),
                *p,
                &mut low,
                &mut fetched_high,
            )
        };
        if error != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(format!(
                "rdkafka: cached watermarks of partition {p}: {error:?}"
            ));
        }
        let (_, listed) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .map_err(failed("ListOffsets"))?;
        ends.insert(p.to_string(), (fetched_high, listed));
    }
    Ok(ends)
}
