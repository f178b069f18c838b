//! ledger: books each payment it reads. An ordinary rdkafka service, not written for quiesce:
//! its own variable names, its own JSON in and out, no probe.
//!
//! Reads JSON payments (`{"payment_id": "...", "cents": N}`) from `PAYMENTS_TOPIC` as group
//! `CONSUMER_GROUP` on `BROKERS`, writes a ledger entry (`{"payment_id": ..., "cents": N,
//! "booked": true}`) to `LEDGER_TOPIC` under the payment's key, and commits what it booked
//! every 499 payments. On SIGTERM or SIGINT it stops reading, waits for its entries'
//! delivery, commits, and closes its consumer (which leaves the group).
//!
//! `LEDGER_BUG`, the mistakes its failing tests make (empty: none):
//! - `exit-without-close`: exits straight after the final commit; the consumer never leaves.
//! - `no-final-commit`: commits every 499 payments, but not on the way out.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::signal::unix::{SignalKind, signal};

const COMMIT_EVERY: u64 = 499;

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The payment in `value`, if it is one.
fn payment(value: &[u8]) -> Option<(String, i64)> {
    let json: serde_json::Value = serde_json::from_slice(value).ok()?;
    Some((
        json.get("payment_id")?.as_str()?.to_owned(),
        json.get("cents")?.as_i64()?,
    ))
}

fn commit(
    consumer: &StreamConsumer,
    topic: &str,
    positions: &BTreeMap<i32, i64>,
) -> Result<(), String> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for (p, o) in positions {
        list.add_partition_offset(topic, *p, Offset::Offset(*o))
            .map_err(|e| e.to_string())?;
    }
    consumer
        .commit(&list, CommitMode::Sync)
        .map_err(|e| format!("commit: {e}"))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let brokers = std::env::var("BROKERS").map_err(|_| "BROKERS is not set".to_owned())?;
    let payments = var("PAYMENTS_TOPIC", "payments");
    let ledger = var("LEDGER_TOPIC", "ledger");
    let group = var("CONSUMER_GROUP", "ledger");
    let bug = var("LEDGER_BUG", "");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "100")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    consumer
        .subscribe(&[&payments])
        .map_err(|e| format!("subscribe: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    println!("ledger: consuming {payments} as {group}");

    let mut positions = BTreeMap::new();
    let mut pending = Vec::new();
    let mut booked = 0u64;
    loop {
        let message = tokio::select! {
            biased;
            _ = term.recv() => break,
            _ = int.recv() => break,
            message = consumer.recv() => match message {
                Ok(message) => message,
                Err(e) => {
                    eprintln!("ledger: {e}");
                    continue;
                }
            },
        };
        let key = message.key().unwrap_or_default().to_vec();
        match message.payload().and_then(payment) {
            Some((id, cents)) => {
                let entry = serde_json::json!({"payment_id": id, "cents": cents, "booked": true})
                    .to_string();
                let record = FutureRecord::to(&ledger).key(&key).payload(&entry);
                let delivery = producer
                    .send_result(record)
                    .map_err(|(e, _)| format!("produce: {e}"))?;
                pending.push(delivery);
            }
            None => eprintln!("ledger: not a payment at offset {}", message.offset()),
        }
        positions.insert(message.partition(), message.offset() + 1);
        booked += 1;
        if booked.is_multiple_of(COMMIT_EVERY) {
            // What is committed has been delivered.
            for delivery in pending.drain(..) {
                let _ = delivery.await;
            }
            commit(&consumer, &payments, &positions)?;
        }
    }
    for delivery in pending.drain(..) {
        let _ = delivery.await;
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| format!("flush: {e}"))?;
    if bug != "no-final-commit" {
        commit(&consumer, &payments, &positions)?;
    }
    println!("ledger: stopping after {booked} payment(s)");
    if bug == "exit-without-close" {
        std::process::exit(0);
    }
    consumer.unsubscribe();
    drop(consumer);
    Ok(())
}
