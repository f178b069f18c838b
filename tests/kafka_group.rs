//! What consumers say to their group coordinator, read off the wire by the Kafka proxy's
//! [`GroupTap`], with real clients on a real broker: a clean close sends LeaveGroup, a SIGKILL
//! sends nothing, and a group's first generation is 1 on the local broker, as in Kafka.

use std::sync::Arc;
use std::time::Duration;

use quiesce::infra::DependencyKind;
use quiesce::kafka::create_topic;
use quiesce::kafka::wire::{GroupRequest, GroupTap};
use rdkafka::consumer::{Consumer, StreamConsumer};

use crate::util::*;

/// The member ids the tap saw for `group`, and the ones that left.
fn seen(tap: &GroupTap, group: &str) -> (Vec<String>, Vec<String>) {
    let mut members = Vec::new();
    let mut left = Vec::new();
    for event in tap.events(group) {
        let ids = event.request.member_ids();
        let into = match event.request {
            GroupRequest::Leave { .. } => &mut left,
            _ => &mut members,
        };
        for id in ids {
            if !into.iter().any(|m: &String| m == id) {
                into.push(id.to_owned());
            }
        }
    }
    (members, left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_close_is_seen_leaving_and_the_broker_is_asked_too() {
    let mut infra = start_local().await;
    let tap = GroupTap::default();
    infra
        .proxy(DependencyKind::Kafka)
        .observe(Arc::new(tap.clone()));
    let bootstrap = infra.endpoints().kafka_bootstrap.clone();
    create_topic(&bootstrap, "group-tap", 3).await.unwrap();
    let consumer: StreamConsumer = kafka_config(&bootstrap)
        .set("group.id", "tapped")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&["group-tap"]).unwrap();
    // Joined once the tap has seen a member id (a heartbeat or the sync after the join).
    let member = eventually("the consumer joins", async || {
        let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
        seen(&tap, "tapped")
            .0
            .first()
            .cloned()
            .ok_or_else(|| "no member id yet".to_owned())
    })
    .await;
    assert!(seen(&tap, "tapped").1.is_empty(), "nobody left yet");
    // rdkafka closes the consumer on drop: LeaveGroup.
    drop(consumer);
    let (_, left) = seen(&tap, "tapped");
    assert_eq!(
        left,
        std::slice::from_ref(&member),
        "{:?}",
        tap.events("tapped")
    );
    assert!(seen(&tap, "other").0.is_empty());

    // What the local broker answers once the member left (not judged: the tap is the evidence).
    eprintln!(
        "DescribeGroups after rdkafka's LeaveGroup: {:?}",
        group_members(&bootstrap, "tapped")
    );
    infra.close().await.unwrap();
}

/// How the Python consumer of [`python_consumer`] ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// `await consumer.stop()` on SIGTERM.
    Close,
    /// SIGKILL.
    Kill,
}

/// An aiokafka consumer in group `group`, as a user's service runs it: joins, then ends as
/// `end` says. Returns the member id the tap saw and what the tap saw leave.
fn python_consumer(group: &str, end: End) -> (String, Vec<String>, Vec<String>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut infra = runtime.block_on(start_local());
    let tap = GroupTap::default();
    infra
        .proxy(DependencyKind::Kafka)
        .observe(Arc::new(tap.clone()));
    let bootstrap = infra.endpoints().kafka_bootstrap.clone();
    runtime
        .block_on(create_topic(&bootstrap, "group-tap-py", 1))
        .unwrap();
    let script = r#"
import asyncio, signal, sys
from aiokafka import AIOKafkaConsumer
async def main():
    c = AIOKafkaConsumer("group-tap-py", bootstrap_servers=sys.argv[1], group_id=sys.argv[2],
                         auto_offset_reset="earliest")
    await c.start()
    await c.getmany(timeout_ms=500)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("joined", flush=True)
    await stop.wait()
    await c.stop()
asyncio.run(main())
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, &bootstrap, group])
        .env("PYTHONPATH", quiesce::infra::cache_dir().join("python"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "joined");
    let member = eventually_sync("a member id", || {
        seen(&tap, group)
            .0
            .first()
            .cloned()
            .ok_or_else(|| format!("{:?}", tap.events(group)))
    });
    match end {
        End::Kill => child.kill().unwrap(),
        End::Close => nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap(),
    }
    let status = child.wait().unwrap();
    assert_eq!(status.success(), end == End::Close, "{status}");
    let joined = tap.events(group).into_iter().find_map(|e| match e.request {
        GroupRequest::Join {
            session_timeout_ms, ..
        } => Some(session_timeout_ms),
        _ => None,
    });
    assert_eq!(joined, Some(10_000), "aiokafka's default session timeout");
    let generations: Vec<i32> =
        tap.events(group)
            .into_iter()
            .filter_map(|e| match e.request {
                GroupRequest::Sync { generation, .. }
                | GroupRequest::Heartbeat { generation, .. } => Some(generation),
                _ => None,
            })
            .collect();
    assert!(
        !generations.is_empty() && generations.iter().all(|g| *g == 1),
        "a group's first generation is 1, as in Kafka: {generations:?}"
    );
    let listed = group_members(&bootstrap, group);
    runtime.block_on(infra.close()).unwrap();
    (member, seen(&tap, group).1, listed)
}

#[test]
fn a_killed_consumer_is_seen_joining_and_never_leaving() {
    let (member, left, _) = python_consumer("killed", End::Kill);
    assert!(!member.is_empty());
    assert!(left.is_empty(), "SIGKILL sends nothing: {left:?}");
}

/// A group's first generation is 1, as in Kafka (unpatched tansu 0.6.0 started at 0, and
/// aiokafka sends LeaveGroup only from generation 1: its clean close never left). An aiokafka
/// consumer closed cleanly leaves its group, seen on the wire.
#[test]
fn aiokafka_leaves_its_group_on_a_clean_close() {
    let (member, left, _) = python_consumer("closed", End::Close);
    assert_eq!(left, vec![member], "the member that closed left");
}

/// The members DescribeGroups lists for `group`.
fn group_members(bootstrap: &str, group: &str) -> Vec<String> {
    let consumer: rdkafka::consumer::BaseConsumer = kafka_config(bootstrap)
        .set("group.id", "quiesce-test-describe")
        .create()
        .unwrap();
    let list = consumer
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .unwrap();
    list.groups()
        .iter()
        .flat_map(|g| g.members().iter().map(|m| m.id().to_owned()))
        .collect()
}
