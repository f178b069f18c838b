//! The leader-jobs service as a process: configured by the environment quiesce sets, stopped by
//! SIGTERM or SIGINT, reporting through quiesce's probe what was alive when it had stopped.

use std::process::ExitCode;

use leader_jobs::{Config, run};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let probe = quiesce_probe::Probe::start();
    let config = match Config::from_lookup(|key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("leader-jobs: {e}");
            return ExitCode::from(2);
        }
    };
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("leader-jobs: cannot listen for signals");
        return ExitCode::from(1);
    };
    // One shutdown trigger for the whole graph; the signals only cancel it.
    let shutdown = CancellationToken::new();
    let (variant, instance) = (config.variant, config.instance.clone());
    let pipeline = run(config, shutdown.clone(), move || {
        println!("leader-jobs: ready (variant {variant}, instance {instance})")
    });
    tokio::pin!(pipeline);
    let result = tokio::select! {
        result = &mut pipeline => result,
        _ = term.recv() => { shutdown.cancel(); pipeline.await }
        _ = int.recv() => { shutdown.cancel(); pipeline.await }
    };
    probe.report().await;
    match result {
        Ok(()) => {
            println!("leader-jobs: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("leader-jobs: {e}");
            ExitCode::from(1)
        }
    }
}
