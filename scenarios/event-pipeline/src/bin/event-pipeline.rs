//! The event pipeline as a process: configured by the environment quiesce sets, stopped by
//! SIGTERM or SIGINT, reporting through quiesce's probe what was alive when it had stopped.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use event_pipeline::{Config, run};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let probe = quiesce_probe::Probe::start();
    let config = match Config::from_lookup(|key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("event-pipeline: {e}");
            return ExitCode::from(2);
        }
    };
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("event-pipeline: cannot listen for signals");
        return ExitCode::from(1);
    };
    // One shutdown trigger for the whole graph; the signals only cancel it.
    let shutdown = CancellationToken::new();
    let outputs = Arc::new(AtomicU64::new(0));
    let variant = config.variant;
    let pipeline = run(
        config,
        shutdown.clone(),
        move || println!("event-pipeline: ready (variant {variant})"),
        outputs.clone(),
    );
    tokio::pin!(pipeline);
    let result = tokio::select! {
        result = &mut pipeline => result,
        _ = term.recv() => { shutdown.cancel(); pipeline.await }
        _ = int.recv() => { shutdown.cancel(); pipeline.await }
    };
    probe.count_outputs(outputs).report().await;
    match result {
        Ok(()) => {
            println!("event-pipeline: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("event-pipeline: {e}");
            ExitCode::from(1)
        }
    }
}
