//! Time from `Infra::start` to both dependencies answering through their proxies, plus the
//! stop, on the local backend (the target: under 1 s once tansu is built).

use criterion::{Criterion, criterion_group, criterion_main};
use quiesce::infra::Infra;

fn local_start_to_ready(c: &mut Criterion) {
    let rt = quiesce_benches::runtime();
    let config = quiesce_benches::local_backend();
    let mut group = c.benchmark_group("infra");
    group.sample_size(10);
    group.bench_function("local_start_ready_close", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut infra = Infra::start(&config).await.expect("local backend starts");
                infra.close().await.expect("local backend stops");
            })
        })
    });
    group.finish();
}

criterion_group!(benches, local_start_to_ready);
criterion_main!(benches);
