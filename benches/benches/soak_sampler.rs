//! What one soak sample costs: `sample_tree` of a process tree (the target and its children,
//! from /proc: status, smaps_rollup, fd), as a soak takes it every second. At 1 Hz the CPU
//! share is the time per sample divided by one second; the target is under 0.1% of a core,
//! i.e. under 1 ms per sample.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use criterion::{Criterion, criterion_group, criterion_main};

fn sampler(c: &mut Criterion) {
    // A small tree, as a service with a helper process has: a shell and two children.
    let mut tree = Command::new("sh")
        .args(["-c", "sleep 600 & sleep 600 & wait"])
        .stdout(Stdio::null())
        // Its own group, so that the whole tree is ended by one killpg below.
        .process_group(0)
        .spawn()
        .expect("sh starts");
    let root = tree.id();
    let mut group = c.benchmark_group("soak");
    group.bench_function("sample_tree_3_processes", |b| {
        b.iter(|| quiesce_soak::sample_tree(root).expect("the tree is alive"))
    });
    group.bench_function("sample_process_self", |b| {
        b.iter(|| quiesce_soak::sample_process(std::process::id()).expect("self is readable"))
    });
    group.finish();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(root as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = tree.kill();
    let _ = tree.wait();
}

criterion_group!(benches, sampler);
criterion_main!(benches);
