//! The external backend: a Kafka broker and a Redis server the harness does not own (started
//! here by the test, as a staging cluster would be), reached through the proxies.

use std::net::SocketAddr;

use quiesce::infra::local_programs::{find_redis_server, find_tansu, redis_args, tansu_args};
use quiesce::infra::{BackendKind, DependencyKind, Infra, InfraConfig, LifecycleAction};
use quiesce::process::{ChildProcess, ProcessSpec};

use crate::util::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A "cluster" someone else runs: tansu advertising `advertised`, and redis-server.
struct Cluster {
    _dir: tempfile::TempDir,
    kafka: ChildProcess,
    redis: ChildProcess,
    kafka_addr: SocketAddr,
    redis_addr: SocketAddr,
}

async fn start_cluster(advertised: SocketAddr) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let config = InfraConfig::default();
    let tansu = find_tansu(&config).unwrap();
    let redis = find_redis_server(&config).unwrap();
    let (kp, rp) = (free_port(), free_port());
    let kafka = ChildProcess::spawn(
        &tansu_args(kp, advertised, &dir.path().join("data"))
            .into_iter()
            .fold(
                ProcessSpec::new(tansu, dir.path(), dir.path().join("kafka.log")),
                ProcessSpec::arg,
            ),
    )
    .unwrap();
    let redis = ChildProcess::spawn(
        &redis_args(rp, &dir.path().to_string_lossy())
            .into_iter()
            .fold(
                ProcessSpec::new(redis, dir.path(), dir.path().join("redis.log")),
                ProcessSpec::arg,
            ),
    )
    .unwrap();
    Cluster {
        _dir: dir,
        kafka,
        redis,
        kafka_addr: SocketAddr::from(([127, 0, 0, 1], kp)),
        redis_addr: SocketAddr::from(([127, 0, 0, 1], rp)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_and_proxy_faults_through_the_proxies() {
    // The cluster advertises the address the proxy will listen on, as a staging cluster set
    // up for quiesce would.
    let proxy_port = free_port();
    let proxy_addr = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    let mut cluster = start_cluster(proxy_addr).await;
    let mut config = InfraConfig {
        backend: BackendKind::External,
        ..InfraConfig::default()
    };
    config.kafka.external = Some(cluster.kafka_addr.to_string());
    config.kafka.listen = Some(proxy_addr);
    config.redis.external = Some(format!("redis://{}/0", cluster.redis_addr));
    let mut infra = Infra::start(&config)
        .await
        .expect("external backend starts");
    assert_eq!(infra.endpoints().kafka_bootstrap, proxy_addr.to_string());
    assert!(
        infra.endpoints().redis_url.ends_with("/0"),
        "{}",
        infra.endpoints().redis_url
    );

    let committed = kafka_round_trip(&infra.endpoints().kafka_bootstrap.clone(), "external").await;
    assert_eq!(committed.values().sum::<i64>(), 1_000);
    redis_set_get(&infra.endpoints().redis_url, "greeting", "hello")
        .await
        .unwrap();
    let through = infra.proxy(DependencyKind::Kafka).status().accepted;
    assert!(
        through >= 2,
        "kafka clients went through the proxy ({through} connections)"
    );

    // The harness owns nothing here: lifecycle actions are refused with a hint.
    let refused = infra
        .act(DependencyKind::Redis, LifecycleAction::Stop)
        .await
        .unwrap_err();
    assert_eq!(refused.exit_code(), quiesce::exit_codes::BAD_INPUT);
    assert!(
        refused.to_string().contains("use a proxy fault"),
        "{refused}"
    );
    proxy_faults_are_observable(&mut infra).await;

    infra.close().await.unwrap();
    // Closing the harness leaves the external cluster alone.
    assert!(cluster.kafka.try_exited().unwrap().is_none());
    assert!(cluster.redis.try_exited().unwrap().is_none());
    cluster.kafka.kill().await.unwrap();
    cluster.redis.kill().await.unwrap();
}

#[tokio::test]
async fn missing_addresses_are_bad_input() {
    let config = InfraConfig {
        backend: BackendKind::External,
        ..InfraConfig::default()
    };
    let err = Infra::start(&config).await.unwrap_err();
    assert_eq!(err.exit_code(), quiesce::exit_codes::BAD_INPUT);
    assert!(err.to_string().contains("QUIESCE_EXTERNAL_KAFKA"), "{err}");
}
