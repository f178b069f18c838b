//! Overhead of the Kafka checks: from the target's exit to the three Kafka outcomes, with
//! 100,000 processed records (the target: under 1 s). Measures reading the output topic to its
//! end and the committed offsets from a real local broker, then judging.

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use quiesce::infra::Infra;
use quiesce::kafka::{
    AckedRecord, KafkaEvidence, StopKind, committed_offsets, create_topic, no_message_loss,
    no_redelivery, offsets_committed, read_processed,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const RECORDS: i64 = 100_000;
const PARTITIONS: i32 = 3;

fn exit_to_verdict(c: &mut Criterion) {
    let rt = quiesce_benches::runtime();
    let config = quiesce_benches::local_backend();
    let mut infra = rt.block_on(Infra::start(&config)).expect("local backend");
    let bootstrap = infra.endpoints().kafka_bootstrap.clone();
    // What a service leaves behind: 100,000 output records and its inputs' acknowledgements.
    let acked: Vec<AckedRecord> = rt.block_on(async {
        create_topic(&bootstrap, "bench-out", PARTITIONS)
            .await
            .expect("topic");
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "20")
            .create()
            .expect("producer");
        let mut acked = Vec::with_capacity(RECORDS as usize);
        let mut deliveries = Vec::with_capacity(RECORDS as usize);
        for n in 0..RECORDS {
            let (p, o) = ((n % PARTITIONS as i64) as i32, n / PARTITIONS as i64);
            let value = format!(r#"{{"partition":{p},"offset":{o}}}"#);
            let key = format!("k{n}");
            let record = FutureRecord::to("bench-out")
                .key(&key)
                .payload(&value)
                .partition(p);
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("queued"),
            );
            acked.push(AckedRecord {
                partition: p,
                offset: o,
                key,
            });
        }
        let mut failed = 0;
        for delivery in deliveries {
            if !matches!(delivery.await, Ok(Ok(_))) {
                failed += 1;
            }
        }
        assert_eq!(failed, 0, "every output record acknowledged");
        acked
    });

    let mut group = c.benchmark_group("kafka_checks");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("exit_to_verdict_100k_records", |b| {
        b.iter(|| {
            rt.block_on(async {
                let processed = read_processed(&bootstrap, "bench-out")
                    .await
                    .expect("read back");
                assert_eq!(processed.len() as i64, RECORDS);
                let committed: BTreeMap<i32, Option<i64>> =
                    committed_offsets(&bootstrap, "bench-group", "bench-out", PARTITIONS)
                        .await
                        .expect("committed");
                let evidence = KafkaEvidence {
                    acked: acked.clone(),
                    processed,
                    committed,
                    floor: Default::default(),
                };
                (
                    offsets_committed(&evidence, StopKind::Clean),
                    no_message_loss(&evidence),
                    no_redelivery(&evidence, StopKind::Clean),
                )
            })
        })
    });
    group.finish();
    rt.block_on(infra.close()).expect("stop");
}

criterion_group!(benches, exit_to_verdict);
criterion_main!(benches);
