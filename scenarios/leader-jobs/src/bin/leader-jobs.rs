//! The leader-jobs service as a process: configured by the environment quiesce sets, stopped by
//! SIGTERM or SIGINT, reporting through quiesce's probe what was alive when it had stopped.

use leader_jobs::{Config, run};
use std::process::ExitCode;

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
    let (variant, instance) = (config.variant, config.instance.clone());
    let result = quiesce::catalogue::until_signal(|shutdown| {
        run(config, shutdown, move || {
            println!("leader-jobs: ready (variant {variant}, instance {instance})")
        })
    })
    .await;
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
