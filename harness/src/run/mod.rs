//! `quiesce run`: one scenario, start to verdict.
//!
//! Start the infrastructure, run the target through start, ready, the run and the stop, then
//! decide every enabled check from what was observed. A broker that fails to start is a
//! [`RunError`], never a verdict against the target.

mod checks;
mod kafka;

pub use checks::{BUILTIN_LEAK_SIGNATURES, evaluate};
pub use kafka::KafkaOutcomes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::infra::{BackendKind, Endpoints, Infra, InfraError, KafkaFlavor};
use crate::kafka::{KafkaError, StopKind};
use crate::scenario::{Scenario, StopPlan, StopSignal, Target};
use crate::signal::SignalHandler;
use crate::target::{Hooks, ReadyState, TargetRun, run_graph, run_process};
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
    /// The harness's Kafka work failed (topics, workload, read-back): never the target's fault.
    #[error("{0} (the broker, not the target: no verdict)")]
    Kafka(KafkaError),
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
            RunError::TargetSpawn { .. } | RunError::OutDir { .. } | RunError::Kafka(_) => {
                INFRA_FAILED
            }
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
    let endpoints = infra.endpoints().clone();
    // Only a known Apache Kafka serves a fetch that starts inside a batch correctly.
    let whole_batches_only = match infra.backend() {
        BackendKind::Containers => scenario.infra.kafka_flavor() != KafkaFlavor::Apache,
        BackendKind::Local | BackendKind::External | BackendKind::Auto => true,
    };
    let driven = drive(
        scenario,
        options,
        &run_id,
        &out_dir,
        endpoints,
        whole_batches_only,
        signals,
    )
    .await;
    // A second Ctrl-C during the close kills at once: dropping the infrastructure does that.
    let closed = tokio::select! {
        closed = infra.close() => closed,
        _ = signals.recv() => Ok(()),
    };
    let (observed, kafka) = driven?;
    closed?;

    let results = evaluate(scenario, &observed, kafka.as_ref());
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

/// Everything between the infrastructure's start and its close: topics, the target's run
/// with its workload, the restart, and the read-backs.
async fn drive(
    scenario: &Scenario,
    options: &RunOptions,
    run_id: &str,
    out_dir: &Path,
    endpoints: Endpoints,
    one_record_per_batch: bool,
    signals: &mut SignalHandler,
) -> Result<(TargetRun, Option<KafkaOutcomes>), RunError> {
    let bootstrap = endpoints.kafka_bootstrap.clone();
    let mut settings: Vec<(String, String)> = endpoints
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    if let Some(workload) = &scenario.kafka {
        tokio::select! {
            created = kafka::create_topics(&bootstrap, workload) => created.map_err(RunError::Kafka)?,
            _ = signals.recv() => return Err(RunError::Interrupted),
        }
        settings.extend(workload.env());
    }
    settings.extend(options.env.iter().cloned());

    let (producer, hooks) = match &scenario.kafka {
        Some(workload) => {
            let (producer, hooks) =
                kafka::Producer::start(&bootstrap, workload, run_id, one_record_per_batch);
            (Some(producer), hooks)
        }
        None => (None, Hooks::default()),
    };
    let mut observed = start_target(
        scenario,
        &scenario.stop,
        run_id,
        out_dir,
        &endpoints,
        &settings,
        hooks,
        signals,
    )
    .await?;
    let (Some(workload), Some(producer)) = (&scenario.kafka, producer) else {
        return Ok((observed, None));
    };
    let acked = producer.finish().await.map_err(RunError::Kafka)?;
    if !matches!(observed.ready, ReadyState::Ready { .. }) || observed.interrupted {
        return Ok((
            observed,
            Some(Err("the run ended before the workload did".to_owned())),
        ));
    }
    let first = tokio::select! {
        first = kafka::read_after_stop(&bootstrap, workload) => first.map_err(RunError::Kafka)?,
        _ = signals.recv() => {
            observed.interrupted = true;
            return Ok((observed, Some(Err("interrupted while reading Kafka back".to_owned()))));
        }
    };
    let stop = if observed.stop_signal == StopSignal::Kill || observed.killed_by_harness {
        StopKind::Kill
    } else {
        StopKind::Clean
    };
    let outputs_sent = match &observed.probe {
        Some(Ok(report)) => report.outputs_sent,
        _ => None,
    };
    let mut restart = Err("turned off: [kafka] restart = false".to_owned());
    if workload.restart && !acked.is_empty() {
        let again = StopPlan {
            signal: StopSignal::Term,
            after_ms: workload.restart_timeout_ms,
            kill_after_ms: scenario.stop.kill_after_ms,
        };
        let hooks = kafka::restart_hooks(&bootstrap, workload, &acked, first.processed.len());
        let restart_dir = out_dir.join("restart");
        std::fs::create_dir_all(&restart_dir).map_err(|source| RunError::OutDir {
            path: restart_dir.clone(),
            source,
        })?;
        let second = start_target(
            scenario,
            &again,
            run_id,
            &restart_dir,
            &endpoints,
            &settings,
            hooks,
            signals,
        )
        .await?;
        let offset = observed.timeline.last().map_or(0, |(at, _)| *at);
        observed.timeline.extend(
            second
                .timeline
                .iter()
                .map(|(at, what)| (offset + at, format!("restart: {what}"))),
        );
        observed.interrupted |= second.interrupted;
        restart = match second.ready {
            ReadyState::Ready { .. } if !second.interrupted => tokio::select! {
                after = kafka::read_after_stop(&bootstrap, workload) => Ok(after.map_err(RunError::Kafka)?),
                _ = signals.recv() => {
                    observed.interrupted = true;
                    Err("interrupted while reading Kafka back after the restart".to_owned())
                }
            },
            ReadyState::Ready { .. } => Err("the restart was interrupted".to_owned()),
            _ => Err(format!("the restart {}", second.ready.describe())),
        };
    }
    let evidence = kafka::KafkaRun {
        acked,
        stop,
        first,
        outputs_sent,
        restart,
    };
    let judged = kafka::judge(&evidence, workload.records);
    // The records behind the verdict, for a person to check; a failure to write them is noted,
    // not fatal.
    let dump = out_dir.join("kafka.json");
    match serde_json::to_vec(&evidence).map(|json| std::fs::write(&dump, json)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => observed.timeline.push((
            observed.timeline.last().map_or(0, |(at, _)| *at),
            format!("cannot write {}: {e}", dump.display()),
        )),
        Err(e) => observed
            .timeline
            .push((0, format!("cannot serialize the Kafka evidence: {e}"))),
    }
    Ok((observed, Some(Ok(judged))))
}

/// One run of the target, process or graph.
#[allow(clippy::too_many_arguments)]
async fn start_target(
    scenario: &Scenario,
    stop: &StopPlan,
    run_id: &str,
    out_dir: &Path,
    endpoints: &Endpoints,
    settings: &[(String, String)],
    hooks: Hooks,
    signals: &mut SignalHandler,
) -> Result<TargetRun, RunError> {
    let ready_timeout =
        std::time::Duration::from_millis(scenario.checks.starts_within.params.deadline_ms);
    let probe_file = out_dir.join("probe.json");
    // A probe file from an earlier run in the same folder must not speak for this one.
    let _ = std::fs::remove_file(&probe_file);
    let observed = match &scenario.target {
        Target::Process(target) => {
            let ctx = crate::target::ProcessContext {
                env: settings.to_vec(),
                run_id,
                out_dir,
                probe_file: &probe_file,
                base_dir: &scenario.base_dir,
                ready_timeout,
                hooks,
            };
            run_process(target, stop, ctx, signals).await
        }
        Target::Graph(graph) => {
            run_graph(
                graph,
                endpoints.clone(),
                stop,
                ready_timeout,
                settings.iter().cloned().collect(),
                hooks,
                signals,
            )
            .await
        }
    };
    observed.map_err(|source| RunError::TargetSpawn {
        program: match &scenario.target {
            Target::Process(p) => p.command[0].clone(),
            Target::Graph(g) => format!("graph {}", g.name()),
        },
        source,
    })
}
