//! The event pipeline as a process: configured by the environment quiesce sets, stopped by
//! SIGTERM or SIGINT, reporting through quiesce's probe what was alive when it had stopped.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use event_pipeline::{Config, run};

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
    let outputs = Arc::new(AtomicU64::new(0));
    let variant = config.variant;
    let counted = outputs.clone();
    let result = quiesce::catalogue::until_signal(|shutdown| {
        run(
            config,
            shutdown,
            move || println!("event-pipeline: ready (variant {variant})"),
            counted,
        )
    })
    .await;
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
