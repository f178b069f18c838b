//! The event pipeline as a process: configured by the environment quiesce sets, stopped by
//! SIGTERM or SIGINT, reporting through quiesce's probe what was alive when it had stopped
//! and how many outputs it sent.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use event_pipeline::{Config, run};

#[tokio::main]
async fn main() -> ExitCode {
    let outputs = Arc::new(AtomicU64::new(0));
    let probe = quiesce_probe::Probe::start().count_outputs(outputs.clone());
    let config = Config::from_lookup(|key| std::env::var(key).ok());
    quiesce::catalogue::serve("event-pipeline", probe, config, |config, shutdown| {
        let variant = config.variant;
        run(
            config,
            shutdown,
            move || println!("event-pipeline: ready (variant {variant})"),
            outputs,
        )
    })
    .await
}
