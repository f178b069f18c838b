//! The Kafka invariants against a real broker: a small rdkafka service in this test consumes
//! the harness's sequence-numbered workload, writes the output contract, and commits the way
//! each bug does. The harness's read-back and judge must name each bug.

use std::collections::BTreeMap;
use std::time::Duration;

use quiesce::kafka::{
    Batching, KafkaEvidence, StopKind, Workload, committed_offsets, create_topic, no_message_loss,
    no_redelivery, offsets_committed, produce_sequence, produce_until, read_processed,
};
use quiesce::verdict::Outcome;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::util::*;

const RECORDS: usize = 300;
const PARTITIONS: i32 = 3;

/// How the test service behaves.
#[derive(Clone, Copy, Debug)]
enum Bug {
    None,
    /// Processes everything, commits only half of each partition (seed 000's missing final commit).
    NoFinalCommit,
    /// Commits everything it received, processes only half of it.
    CommitBeforeProcess,
    /// Processes one record twice.
    Duplicate,
}

/// Consumes all `RECORDS` inputs, writes outputs and commits as `bug` says.
async fn service(bootstrap: &str, input: &str, output: &str, group: &str, bug: Bug) {
    let consumer: StreamConsumer = kafka_config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[input]).unwrap();
    let producer: FutureProducer = kafka_config(bootstrap).create().unwrap();
    let mut received = Vec::new();
    while received.len() < RECORDS {
        let m = tokio::time::timeout(PATIENCE, consumer.recv())
            .await
            .expect("input within the deadline")
            .unwrap();
        received.push((
            m.partition(),
            m.offset(),
            m.key().map(|k| k.to_vec()).unwrap_or_default(),
        ));
    }
    let to_process: Vec<_> = match bug {
        Bug::CommitBeforeProcess => received
            .iter()
            .filter(|(_, o, _)| o % 2 == 0 || *o < 5)
            .cloned()
            .collect(),
        _ => received.clone(),
    };
    let mut outputs = to_process.clone();
    if let Bug::Duplicate = bug {
        outputs.push(to_process[0].clone());
    }
    for (p, o, key) in &outputs {
        let value = format!(r#"{{"partition":{p},"offset":{o}}}"#);
        producer
            .send(
                FutureRecord::to(output).key(key).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .expect("output acknowledged");
    }
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o, _) in &received {
        let e = ends.entry(*p).or_default();
        *e = (*e).max(o + 1);
    }
    let mut commit = TopicPartitionList::new();
    for (p, end) in ends {
        let offset = match bug {
            Bug::NoFinalCommit => end / 2,
            _ => end,
        };
        commit
            .add_partition_offset(input, p, Offset::Offset(offset))
            .unwrap();
    }
    consumer.commit(&commit, CommitMode::Sync).expect("commit");
}

/// Runs the workload and the service with `bug` on fresh topics, then judges.
async fn judged(bootstrap: &str, name: &str, bug: Bug) -> (Outcome, Outcome, Outcome) {
    let (input, output, group) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-group"),
    );
    create_topic(bootstrap, &input, PARTITIONS).await.unwrap();
    create_topic(bootstrap, &output, PARTITIONS).await.unwrap();
    let acked = produce_sequence(bootstrap, &input, name, RECORDS)
        .await
        .unwrap();
    assert_eq!(acked.len(), RECORDS, "every input acknowledged");
    service(bootstrap, &input, &output, &group, bug).await;
    let evidence = KafkaEvidence {
        acked,
        processed: read_processed(bootstrap, &output).await.unwrap(),
        committed: committed_offsets(bootstrap, &group, &input, PARTITIONS)
            .await
            .unwrap(),
        floor: Default::default(),
    };
    (
        offsets_committed(&evidence, StopKind::Clean),
        no_message_loss(&evidence),
        no_redelivery(&evidence, StopKind::Clean),
    )
}

fn word(o: &Outcome) -> &'static str {
    o.label()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_commit_bug_is_named_against_a_real_broker() {
    let mut infra = start_local().await;
    let bootstrap = infra.endpoints().kafka_bootstrap.clone();

    let (committed, loss, redelivery) = judged(&bootstrap, "correct", Bug::None).await;
    assert_eq!(
        (word(&committed), word(&loss), word(&redelivery)),
        ("PASS", "PASS", "PASS"),
        "{committed:?} {loss:?} {redelivery:?}"
    );

    let (committed, loss, redelivery) =
        judged(&bootstrap, "no-final-commit", Bug::NoFinalCommit).await;
    assert_eq!(
        (word(&committed), word(&loss), word(&redelivery)),
        ("FAIL", "PASS", "PASS"),
        "{committed:?}"
    );
    let Outcome::Violation { evidence, .. } = &committed else {
        unreachable!()
    };
    assert!(
        evidence
            .iter()
            .all(|e| e.contains("will be redelivered after a restart")),
        "{evidence:?}"
    );

    let (committed, loss, redelivery) = judged(
        &bootstrap,
        "commit-before-process",
        Bug::CommitBeforeProcess,
    )
    .await;
    assert_eq!(
        (word(&committed), word(&loss), word(&redelivery)),
        ("FAIL", "FAIL", "PASS"),
        "{committed:?} {loss:?}"
    );
    let Outcome::Violation { summary, .. } = &loss else {
        unreachable!()
    };
    assert!(
        summary.contains("lost: committed but never processed"),
        "{summary}"
    );

    let (committed, loss, redelivery) = judged(&bootstrap, "duplicate", Bug::Duplicate).await;
    assert_eq!(
        (word(&committed), word(&loss), word(&redelivery)),
        ("PASS", "PASS", "FAIL"),
        "{redelivery:?}"
    );

    infra.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_breaks_the_contract_is_an_error_not_a_verdict() {
    let mut infra = start_local().await;
    let bootstrap = infra.endpoints().kafka_bootstrap.clone();
    create_topic(&bootstrap, "free-text", 1).await.unwrap();
    let producer: FutureProducer = kafka_config(&bootstrap).create().unwrap();
    producer
        .send(
            FutureRecord::to("free-text")
                .key("k")
                .payload("processed ok"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let err = read_processed(&bootstrap, "free-text").await.unwrap_err();
    assert!(err.to_string().contains("free-text/0 offset 0"), "{err}");
    assert!(
        err.to_string()
            .contains(r#"expected JSON {"partition": P, "offset": O}"#),
        "{err}"
    );
    infra.close().await.unwrap();
}

/// Offsets a consumer assigned at `start` on partition 0 of `topic` receives, until quiet.
async fn offsets_from(bootstrap: &str, topic: &str, start: i64) -> Vec<i64> {
    let consumer: StreamConsumer = kafka_config(bootstrap)
        .set("group.id", "offsets-from")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Offset(start))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut offsets = Vec::new();
    while let Ok(message) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
        offsets.push(message.unwrap().offset());
    }
    offsets
}

/// A fetch that starts inside a batch returns the records from its offset on, as Kafka does.
/// Unpatched tansu 0.6.0 answered it from the next batch, so a consumer resuming at a
/// committed offset skipped the rest of that batch (patches/tansu-0.6.0/0001 fixes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_inside_a_batch_starts_at_its_offset() {
    let mut infra = start_local().await;
    let bootstrap = infra.endpoints().kafka_bootstrap.clone();
    create_topic(&bootstrap, "batched", 1).await.unwrap();
    // Ten records sent together (one batch), then ten more.
    let producer: FutureProducer = kafka_config(&bootstrap)
        .set("linger.ms", "50")
        .create()
        .unwrap();
    for round in 0..2 {
        let sends: Vec<_> = (0..10)
            .map(|n| {
                let key = format!("{round}-{n}");
                producer
                    .send_result(FutureRecord::to("batched").key(&key).payload("x"))
                    .unwrap()
            })
            .collect();
        for delivery in futures::future::join_all(sends).await {
            delivery.unwrap().unwrap();
        }
    }
    assert_eq!(
        offsets_from(&bootstrap, "batched", 0).await,
        (0..20).collect::<Vec<_>>()
    );
    for start in [5, 9, 10, 15] {
        assert_eq!(
            offsets_from(&bootstrap, "batched", start).await,
            (start..20).collect::<Vec<_>>(),
            "from offset {start}, inside a batch of ten (is tansu built with quiesce's patches?)"
        );
    }
    infra.close().await.unwrap();
}

/// A consumer can resume anywhere, inside a batch too: the broker returns the batch holding
/// the offset and the client skips the records before it (unpatched tansu 0.6.0 skipped to the
/// next batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_can_be_resumed_at_any_offset() {
    let mut infra = start_local().await;
    let bootstrap = infra.endpoints().kafka_bootstrap.clone();
    create_topic(&bootstrap, "single", 1).await.unwrap();
    let workload = Workload {
        topic: "single",
        prefix: "k",
        value: "seq-{seq}",
        count: 50,
        rate: 0,
        batching: Batching {
            linger_ms: 50,
            max_records: 20,
        },
    };
    let acked = produce_until(&bootstrap, &workload, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(acked.len(), 50);
    for start in [0, 7, 33, 49] {
        assert_eq!(
            offsets_from(&bootstrap, "single", start).await,
            (start..50).collect::<Vec<_>>()
        );
    }
    infra.close().await.unwrap();
}
