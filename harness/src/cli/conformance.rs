//! `quiesce conformance`: the Kafka client conformance table against the broker of a backend.

use std::path::PathBuf;

use clap::Args;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::conformance::{self, Case, Client, Disrupt, Outcome, Row, Tools};
use crate::exit_codes;
use crate::infra::{DependencyKind, Infra, InfraError, LifecycleAction, cache_dir};
use crate::process::which;
use crate::signal::SignalHandler;

use super::CliError;
use super::args::*;

#[derive(Debug, Args)]
pub(super) struct ConformanceArgs {
    #[command(flatten)]
    pub(super) infra: InfraArgs,
    /// The clients to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "CLIENT")]
    pub(super) client: Vec<Client>,
    /// The cases to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "CASE")]
    pub(super) case: Vec<Case>,
    /// Records each case produces.
    #[arg(long, default_value_t = 600, value_name = "N")]
    pub(super) records: usize,
    /// Print the rows as JSON lines instead of a table.
    #[arg(long)]
    pub(super) json: bool,
}

pub(super) async fn conformance(args: ConformanceArgs) -> Result<i32, CliError> {
    let config = resolve_config(&args.infra)?;
    let mut signals = SignalHandler::new().map_err(InfraError::Workdir)?;
    let clients = if args.client.is_empty() {
        Client::ALL.to_vec()
    } else {
        args.client.clone()
    };
    let cases = if args.case.is_empty() {
        Case::ALL.to_vec()
    } else {
        args.case.clone()
    };
    let Some(mut infra) = start_infra(&config, &mut signals).await? else {
        return Ok(exit_codes::INTERRUPTED);
    };
    eprintln!(
        "quiesce: Kafka on the {} backend at {}",
        infra.backend().as_str(),
        infra.endpoints().kafka_bootstrap
    );
    let tools = Tools {
        python: which("python3").unwrap_or_else(|| PathBuf::from("python3")),
        python_path: vec![
            cache_dir().join("python-conformance"),
            cache_dir().join("python"),
        ],
        kcat: which("kcat"),
        workdir: infra.workdir().to_path_buf(),
    };
    let bootstrap = infra.endpoints().kafka_bootstrap.clone();
    let run_id = infra.run_id();
    let total = clients.len() * cases.len();
    let mut rows: Vec<Row> = Vec::with_capacity(total);
    let mut interrupted = false;
    'all: for client in &clients {
        for case in &cases {
            eprintln!(
                "quiesce: [{}/{total}] {} {}",
                rows.len() + 1,
                client.as_str(),
                case.as_str()
            );
            let mut away = Away(&mut infra);
            let row = tokio::select! {
                row = conformance::run_case(&tools, &bootstrap, *client, *case, args.records, &run_id, &mut away) => row,
                _ = signals.recv() => { interrupted = true; break 'all; }
            };
            if args.json {
                println!("{}", serde_json::to_string(&row).unwrap_or_default());
            } else {
                print!("{}", conformance::table(std::slice::from_ref(&row)));
            }
            rows.push(row);
        }
    }
    infra.close().await?;
    if interrupted {
        eprintln!("quiesce: interrupted; everything started was stopped");
        return Ok(exit_codes::INTERRUPTED);
    }
    let failed = rows.iter().filter(|r| r.outcome == Outcome::Fail).count();
    let passed = rows.iter().filter(|r| r.outcome == Outcome::Pass).count();
    eprintln!(
        "quiesce: conformance on the {} backend: {passed} passed, {failed} failed, {} not applicable",
        infra.backend().as_str(),
        rows.len() - passed - failed
    );
    Ok(if failed > 0 {
        exit_codes::VIOLATION
    } else {
        exit_codes::OK
    })
}

/// Takes the backend's broker away: its fault proxy down and up for an outage, the broker
/// stopped and started again for a restart.
struct Away<'a>(&'a mut Infra);

impl Away<'_> {
    async fn act(&mut self, action: LifecycleAction) -> Result<(), String> {
        self.0
            .act(DependencyKind::Kafka, action)
            .await
            .map_err(|e| format!("the broker's {}: {e}", action.as_str()))
    }
}

impl Disrupt for Away<'_> {
    fn away(&mut self, case: Case) -> BoxFuture<'_, Result<(), String>> {
        async move {
            match case {
                Case::Restart => self.act(LifecycleAction::Stop).await,
                _ => {
                    self.0.proxy(DependencyKind::Kafka).switch().down();
                    Ok(())
                }
            }
        }
        .boxed()
    }

    fn back(&mut self, case: Case) -> BoxFuture<'_, Result<(), String>> {
        async move {
            match case {
                Case::Restart => self.act(LifecycleAction::Start).await,
                _ => {
                    let switch = self.0.proxy(DependencyKind::Kafka).switch();
                    switch
                        .up()
                        .await
                        .map_err(|e| format!("the proxy's up: {e}"))
                }
            }
        }
        .boxed()
    }
}
