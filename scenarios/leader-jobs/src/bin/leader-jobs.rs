//! The leader-jobs service as a process: configured by the environment quiesce sets, stopped by
//! SIGTERM or SIGINT, reporting through quiesce's probe what was alive when it had stopped.

use std::process::ExitCode;

use leader_jobs::{Config, run};

#[tokio::main]
async fn main() -> ExitCode {
    let probe = quiesce_probe::Probe::start();
    let config = Config::from_lookup(|key| std::env::var(key).ok());
    quiesce::catalogue::serve("leader-jobs", probe, config, |config, shutdown| {
        let (variant, instance) = (config.variant, config.instance.clone());
        run(config, shutdown, move || {
            println!("leader-jobs: ready (variant {variant}, instance {instance})")
        })
    })
    .await
}
