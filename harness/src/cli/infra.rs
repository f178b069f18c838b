//! `quiesce infra up`: Kafka and Redis behind their fault proxies, held until Ctrl-C.

use std::time::Duration;

use clap::{Args, Subcommand};

use crate::exit_codes;
use crate::infra::{self, Infra, InfraError};
use crate::signal::{SignalEvent, SignalHandler};

use super::args::*;

#[derive(Debug, Subcommand)]
pub(super) enum InfraCommand {
    /// Start Kafka and Redis, print their endpoints, and hold until Ctrl-C.
    #[command(after_help = exit_codes::HELP)]
    Up(UpArgs),
}

#[derive(Debug, Args)]
pub(super) struct UpArgs {
    #[command(flatten)]
    pub(super) infra: InfraArgs,
    /// Print only the JSON line (no shell exports).
    #[arg(long)]
    pub(super) json: bool,
    /// Stop after this many seconds instead of waiting for Ctrl-C.
    #[arg(long, value_name = "SECS")]
    pub(super) hold: Option<u64>,
    /// Where the Toxiproxy-compatible fault API listens: PORT or IP:PORT (default: a free
    /// loopback port).
    #[arg(long, value_name = "ADDR", conflicts_with = "no_api")]
    pub(super) api: Option<String>,
    /// Do not serve the fault API.
    #[arg(long)]
    pub(super) no_api: bool,
}

pub(super) async fn infra_up(args: UpArgs) -> Result<i32, InfraError> {
    let config = resolve_config(&args.infra)?;
    let mut signals = SignalHandler::new().map_err(InfraError::Workdir)?;
    let Some(mut infra) = start_infra(&config, &mut signals).await? else {
        return Ok(exit_codes::INTERRUPTED);
    };
    let status = announce(&mut infra);
    let api_listen = match &args.api {
        Some(addr) => infra::parse_listen(addr).map_err(|message| {
            InfraError::Config(infra::ConfigError::Value {
                origin: "--api".to_owned(),
                message,
            })
        })?,
        None => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let endpoints = infra.endpoints().clone();
    let backend = infra.backend();
    let reason = infra.backend_reason().to_owned();
    let ready_secs = infra.started_in().as_secs_f64();
    let shared = std::sync::Arc::new(tokio::sync::Mutex::new(infra));
    let api_stop = tokio_util::sync::CancellationToken::new();
    let api = if args.no_api {
        None
    } else {
        match infra::api::serve(shared.clone(), api_listen, api_stop.clone()).await {
            Ok(served) => Some(served),
            Err(e) => {
                let _ = shared.lock().await.close().await;
                return Err(e);
            }
        }
    };
    let api_url = api.as_ref().map(|(addr, _)| format!("http://{addr}"));
    let json = serde_json::json!({
        "backend": backend,
        "backend_reason": reason,
        "endpoints": endpoints,
        "env": endpoints.env().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "fault_api": api_url,
        "ready_secs": ready_secs,
        "dependencies": status,
    });
    if let Some(url) = &api_url {
        eprintln!("quiesce: fault API (Toxiproxy-compatible) at {url}");
    }
    if !args.json {
        print!("{}", endpoints.shell_exports());
        if let Some(url) = &api_url {
            println!("export QUIESCE_FAULT_API='{url}'");
        }
    }
    println!("{json}");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    hold(args.hold, &mut signals).await;
    api_stop.cancel();
    let api_task = api.map(|(_, task)| task);
    let abort = api_task.as_ref().map(|t| t.abort_handle());
    let close = async {
        if let Some(task) = api_task {
            let _ = task.await;
        }
        shared.lock().await.close().await
    };
    tokio::select! {
        closed = close => closed?,
        _ = signals.recv() => {
            eprintln!("quiesce: second signal: killing everything now");
            // The API task holds a handle too; once it is gone, dropping ours drops the
            // infrastructure, which kills the processes and removes the containers.
            if let Some(abort) = abort {
                abort.abort();
            }
            tokio::task::yield_now().await;
            drop(shared);
            return Ok(exit_codes::INTERRUPTED);
        }
    }
    eprintln!("quiesce: stopped");
    Ok(exit_codes::OK)
}

/// Says what started: the backend and why, each dependency's endpoint, upstream, runner and
/// memory, the time to ready and where the logs are.
fn announce(infra: &mut Infra) -> Vec<infra::DependencyStatus> {
    eprintln!(
        "quiesce: backend {} ({})",
        infra.backend(),
        infra.backend_reason()
    );
    let status = infra.status();
    for dep in &status {
        eprintln!(
            "quiesce: {:<5} {} -> {} ({}, RSS {})",
            dep.dependency.as_str(),
            dep.endpoint,
            dep.upstream,
            dep.runner,
            mib(dep.rss_bytes),
        );
    }
    eprintln!(
        "quiesce: ready in {:.3} s; logs in {}",
        infra.started_in().as_secs_f64(),
        infra.workdir().display()
    );
    status
}

/// Holds the infrastructure up for `secs`, or until Ctrl-C or SIGTERM.
async fn hold(secs: Option<u64>, signals: &mut SignalHandler) {
    let held = match secs {
        Some(secs) => {
            eprintln!("quiesce: holding for {secs} s (Ctrl-C stops earlier)");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(secs)) => None,
                event = signals.recv() => Some(event),
            }
        }
        None => {
            eprintln!("quiesce: holding until Ctrl-C");
            Some(signals.recv().await)
        }
    };
    if let Some(event) = held {
        let name = match event {
            SignalEvent::Interrupt => "Ctrl-C",
            SignalEvent::Terminate => "SIGTERM",
        };
        eprintln!("quiesce: {name}: stopping (press Ctrl-C again to kill at once)");
    }
}

pub(super) fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_owned(), |b| {
        format!("{:.1} MiB", b as f64 / 1048576.0)
    })
}
