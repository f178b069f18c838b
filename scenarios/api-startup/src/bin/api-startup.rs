//! The api-startup service as a process: configured by the environment quiesce sets, stopped by
//! SIGTERM or SIGINT, reporting through quiesce's probe what was alive when it had stopped.

use api_startup::{Config, run};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let probe = quiesce_probe::Probe::start();
    let config = match Config::from_lookup(|key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("api-startup: {e}");
            return ExitCode::from(2);
        }
    };
    let (variant, port) = (config.variant, config.port);
    let result = quiesce::catalogue::until_signal(|shutdown| {
        run(config, shutdown, move || {
            println!("api-startup: ready (variant {variant}, port {port})")
        })
    })
    .await;
    probe.report().await;
    match result {
        Ok(()) => {
            println!("api-startup: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("api-startup: {e}");
            ExitCode::from(1)
        }
    }
}
