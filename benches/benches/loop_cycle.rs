//! One in-process cycle of `quiesce loop` on the correct `event-pipeline` graph: start,
//! ready, the stop and every lifecycle check, on a session (local Kafka and Redis) started
//! once. Cycles per second = 1 / the time per iteration.

use criterion::{Criterion, criterion_group, criterion_main};
use quiesce::run::{RunOptions, Session};
use quiesce::scenario::Scenario;
use quiesce::signal::SignalHandler;

fn in_process_cycle(c: &mut Criterion) {
    let rt = quiesce_benches::runtime();
    let mut scenario = Scenario::graph("event-pipeline-loop", event_pipeline::graph())
        .build()
        .expect("scenario");
    scenario.infra = quiesce_benches::local_backend();
    scenario.stop.after_ms = 0;
    let mut signals = SignalHandler::noop();
    let mut session = rt
        .block_on(Session::start(&scenario, &mut signals))
        .expect("local backend starts");
    let out = std::env::temp_dir().join(format!("quiesce-bench-loop-{}", std::process::id()));
    let options = RunOptions {
        env: Vec::new(),
        out_dir: Some(out.clone()),
    };
    let mut group = c.benchmark_group("loop");
    group.sample_size(20);
    group.bench_function("in_process_cycle_event_pipeline", |b| {
        b.iter(|| {
            let cycle = rt
                .block_on(session.cycle(&scenario, &options, &mut signals))
                .expect("a cycle");
            assert_eq!(cycle.verdict.violations(), 0, "the correct graph passes");
        })
    });
    group.finish();
    rt.block_on(session.close(&mut signals)).expect("stops");
    let _ = std::fs::remove_dir_all(out);
}

criterion_group!(benches, in_process_cycle);
criterion_main!(benches);
