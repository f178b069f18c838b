//! The api-startup service as a process: configured by the environment quiesce sets, stopped by
//! SIGTERM or SIGINT, reporting through quiesce's probe what was alive when it had stopped.

use std::process::ExitCode;

use api_startup::{Config, run};

#[tokio::main]
async fn main() -> ExitCode {
    let probe = quiesce_probe::Probe::start();
    let config = Config::from_lookup(|key| std::env::var(key).ok());
    quiesce::catalogue::serve("api-startup", probe, config, |config, shutdown| {
        let (variant, port) = (config.variant, config.port);
        run(config, shutdown, move || {
            println!("api-startup: ready (variant {variant}, port {port})")
        })
    })
    .await
}
