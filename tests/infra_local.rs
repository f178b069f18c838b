//! The local backend: real `redis-server` and tansu child processes behind the proxies.

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_the_proxies() {
    let mut infra = start_local().await;
    let pids = dependency_pids(&mut infra);
    assert_eq!(pids.len(), 2, "both dependencies run as child processes");
    round_trip_and_set_get(&infra).await;
    infra.close().await.unwrap();
    assert_all_gone(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_faults() {
    let mut infra = start_local().await;
    let first = dependency_pids(&mut infra);
    lifecycle_faults_are_observable(&mut infra).await;
    let last = dependency_pids(&mut infra);
    infra.close().await.unwrap();
    // Every process ever started, the restarted ones included, is gone.
    assert_all_gone(&first).await;
    assert_all_gone(&last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_faults() {
    let mut infra = start_local().await;
    let pids = dependency_pids(&mut infra);
    proxy_faults_are_observable(&mut infra).await;
    infra.close().await.unwrap();
    assert_all_gone(&pids).await;
}
