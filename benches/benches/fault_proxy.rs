//! What the fault proxy adds to every request a target makes: a small request/response round
//! trip and a 1 MiB transfer, directly and through a proxy with no toxics.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiesce::fault::FaultProxy;
use quiesce_benches::{echo_server, round_trip};
use tokio::net::TcpStream;

fn proxy_overhead(c: &mut Criterion) {
    let rt = quiesce_benches::runtime();
    let upstream = rt.block_on(echo_server());
    let proxy = rt.block_on(async {
        FaultProxy::start("bench", "127.0.0.1:0".parse().unwrap(), upstream)
            .await
            .expect("proxy")
    });
    let mut direct = rt.block_on(TcpStream::connect(upstream)).expect("connect");
    let mut proxied = rt
        .block_on(TcpStream::connect(proxy.listen_addr()))
        .expect("connect");
    direct.set_nodelay(true).unwrap();
    proxied.set_nodelay(true).unwrap();

    let small = [7u8; 64];
    let mut buf = vec![0u8; 1 << 20];
    let mut group = c.benchmark_group("round_trip_64B");
    group.bench_function("direct", |b| {
        b.iter(|| rt.block_on(round_trip(&mut direct, &small, &mut buf)))
    });
    group.bench_function("through_proxy", |b| {
        b.iter(|| rt.block_on(round_trip(&mut proxied, &small, &mut buf)))
    });
    group.finish();

    let big = vec![7u8; 1 << 20];
    let mut group = c.benchmark_group("transfer_1MiB");
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("direct", |b| {
        b.iter(|| rt.block_on(round_trip(&mut direct, &big, &mut buf)))
    });
    group.bench_function("through_proxy", |b| {
        b.iter(|| rt.block_on(round_trip(&mut proxied, &big, &mut buf)))
    });
    group.finish();
    rt.block_on(proxy.close());
}

criterion_group!(benches, proxy_overhead);
criterion_main!(benches);
