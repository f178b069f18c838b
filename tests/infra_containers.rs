//! The containers backend, with images built locally from the local backend's binaries
//! (no registry is needed). Containers are labelled and removed on close.

use std::collections::HashMap;

use quiesce::infra::{BackendKind, Infra, InfraConfig, LABEL_OWNER, LABEL_RUN, images};
use testcontainers::bollard::Docker;
use testcontainers::bollard::query_parameters::ListContainersOptionsBuilder;

use crate::util::*;

/// Builds (or reuses) the local images and returns a config that uses them.
async fn containers_config() -> InfraConfig {
    let built = images::build_local_images(&InfraConfig::default())
        .await
        .expect("local images build");
    let mut config = InfraConfig {
        backend: BackendKind::Containers,
        ..InfraConfig::default()
    };
    for image in built {
        match image.env_var {
            "QUIESCE_KAFKA_IMAGE" => config.kafka.image = Some(image.name),
            "QUIESCE_REDIS_IMAGE" => config.redis.image = Some(image.name),
            other => panic!("unexpected image variable {other}"),
        }
    }
    config
}

/// Containers (running or not) labelled with this run.
async fn containers_of(run: &str) -> usize {
    let docker = Docker::connect_with_local_defaults().unwrap();
    let label = format!("{LABEL_RUN}={run}");
    let filters = HashMap::from([("label", vec![label.as_str()])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker.list_containers(Some(options)).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_the_proxies() {
    let mut infra = Infra::start(&containers_config().await)
        .await
        .expect("containers start");
    let run = infra.run_id();
    assert_eq!(containers_of(&run).await, 2);
    round_trip_and_set_get(&infra).await;
    infra.close().await.unwrap();
    assert_eq!(containers_of(&run).await, 0, "containers removed on close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_faults_keep_the_address_across_container_restarts() {
    let mut infra = Infra::start(&containers_config().await)
        .await
        .expect("containers start");
    let run = infra.run_id();
    lifecycle_faults_are_observable(&mut infra).await;
    proxy_faults_are_observable(&mut infra).await;
    infra.close().await.unwrap();
    assert_eq!(containers_of(&run).await, 0, "containers removed on close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_infra_removes_its_containers() {
    let infra = Infra::start(&containers_config().await)
        .await
        .expect("containers start");
    let run = infra.run_id();
    assert_eq!(containers_of(&run).await, 2);
    // No close: a harness that panics or returns early relies on Drop.
    drop(infra);
    eventually(
        "containers removed on drop",
        async || match containers_of(&run).await {
            0 => Ok(()),
            n => Err(format!("{n} left")),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_is_a_missing_prerequisite() {
    let config = InfraConfig {
        backend: BackendKind::Containers,
        redis: quiesce::infra::RedisConfig {
            image: Some("quiesce-local/no-such-redis:0".to_owned()),
            ..Default::default()
        },
        ..containers_config().await
    };
    let err = Infra::start(&config).await.unwrap_err();
    assert_eq!(
        err.exit_code(),
        quiesce::exit_codes::PREREQUISITE_MISSING,
        "{err}"
    );
    assert!(
        err.to_string().contains("quiesce-local/no-such-redis:0"),
        "{err}"
    );
}

/// A container that exited at once was noticed only when the whole ready timeout had passed,
/// and reported as not answering. Here the Redis container runs the local tansu image, whose
/// entrypoint is tansu: it takes `redis-server --port ...` for its own arguments, refuses
/// them and exits. The start must fail as an early exit, with the container's own words, and
/// leave no container behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_exits_at_once_is_reported_as_exited() {
    let mut config = containers_config().await;
    config.redis.image = config.kafka.image.clone();
    // Far longer than a loaded machine needs to notice an exit.
    config.ready_timeout_secs = Some(600);
    let err = Infra::start(&config)
        .await
        .expect_err("the container exits");
    let text = err.to_string();
    assert!(
        matches!(err, quiesce::infra::InfraError::ExitedEarly { .. }),
        "{text}"
    );
    assert!(
        text.contains("redis exited during startup (exit code 2)"),
        "{text}"
    );
    assert!(
        text.contains("unrecognized subcommand 'redis-server'"),
        "the container's own words: {text}"
    );
    let docker = Docker::connect_with_local_defaults().unwrap();
    let filters = HashMap::from([("label", vec![LABEL_OWNER])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let mine = std::process::id().to_string();
    let left: Vec<_> = docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_OWNER))
                .is_some_and(|owner| owner.starts_with(&format!("{mine}:")))
        })
        .collect();
    assert!(left.is_empty(), "containers left: {left:?}");
}
