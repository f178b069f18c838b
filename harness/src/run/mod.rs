//! `quiesce run`: one scenario, start to verdict.
//!
//! Start the infrastructure, run the target through start, ready, the run and the stop, then
//! decide every enabled check from what was observed. A broker that fails to start is a
//! [`RunError`], never a verdict against the target.

mod checks;

pub use checks::{BUILTIN_LEAK_SIGNATURES, evaluate};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::infra::{Infra, InfraError};
use crate::scenario::Scenario;
use crate::scenario::Target;
use crate::signal::SignalHandler;
use crate::target::{TargetRun, run_graph, run_process};
use crate::verdict::{TimelineEvent, Verdict};

/// Settings of one run that are not part of the scenario.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Extra variables for the target (`--env KEY=VALUE`), over the scenario's.
    pub env: Vec<(String, String)>,
    /// Where the target's output is kept; default: a new folder under the temp dir.
    pub out_dir: Option<PathBuf>,
}

/// Why a run produced no verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Infra(#[from] InfraError),
    #[error("target: cannot start `{program}`: {source} (hint: check [target] command and cwd)")]
    TargetSpawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot create the output folder {path}: {source}")]
    OutDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("interrupted while starting the infrastructure; everything started was stopped")]
    Interrupted,
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        use crate::exit_codes::*;
        match self {
            RunError::Infra(e) => e.exit_code(),
            RunError::TargetSpawn { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                PREREQUISITE_MISSING
            }
            RunError::TargetSpawn { .. } | RunError::OutDir { .. } => INFRA_FAILED,
            RunError::Interrupted => INTERRUPTED,
        }
    }
}

/// A run id unique on this machine: the harness pid, a counter and the time.
fn new_run_id(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{clean}-{}-{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff_ffff
    )
}

/// Runs `scenario` once and returns its verdict.
pub async fn run(
    scenario: &Scenario,
    options: &RunOptions,
    signals: &mut SignalHandler,
) -> Result<Verdict, RunError> {
    let run_id = new_run_id(&scenario.name);
    let out_dir = options
        .out_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("quiesce-run-{run_id}")));
    std::fs::create_dir_all(&out_dir).map_err(|source| RunError::OutDir {
        path: out_dir.clone(),
        source,
    })?;

    let mut infra = tokio::select! {
        started = Infra::start(&scenario.infra) => started?,
        _ = signals.recv() => return Err(RunError::Interrupted),
    };
    let mut env: Vec<(String, String)> = infra
        .endpoints()
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let probe_file = out_dir.join("probe.json");
    // A probe file from an earlier run in the same folder must not speak for this one.
    let _ = std::fs::remove_file(&probe_file);
    env.extend(options.env.iter().cloned());
    let ready_timeout =
        std::time::Duration::from_millis(scenario.checks.starts_within.params.deadline_ms);
    let observed = match &scenario.target {
        Target::Process(target) => {
            let ctx = crate::target::ProcessContext {
                env,
                run_id: &run_id,
                out_dir: &out_dir,
                probe_file: &probe_file,
                base_dir: &scenario.base_dir,
                ready_timeout,
            };
            run_process(target, &scenario.stop, ctx, signals).await
        }
        Target::Graph(graph) => {
            let endpoints = infra.endpoints().clone();
            run_graph(graph, endpoints, &scenario.stop, ready_timeout, signals).await
        }
    };
    // A second Ctrl-C during the close kills at once: dropping the infrastructure does that.
    let closed = tokio::select! {
        closed = infra.close() => closed,
        _ = signals.recv() => Ok(()),
    };
    let observed: TargetRun = observed.map_err(|source| RunError::TargetSpawn {
        program: match &scenario.target {
            Target::Process(p) => p.command[0].clone(),
            Target::Graph(g) => format!("graph {}", g.name()),
        },
        source,
    })?;
    closed?;

    let results = evaluate(scenario, &observed);
    Ok(Verdict {
        scenario: scenario.name.clone(),
        target: scenario.target.describe(),
        backend: infra.backend().to_string(),
        results,
        timeline: observed
            .timeline
            .iter()
            .map(|(at_ms, event)| TimelineEvent {
                at_ms: *at_ms,
                event: event.clone(),
            })
            .collect(),
        interrupted: observed.interrupted,
        target_log: Some(out_dir.display().to_string()),
    })
}
