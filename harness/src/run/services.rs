//! A cycle of a service graph (`[[services]]`): every service run and judged on its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{
    Cycle, Findings, RunError, RunOptions, Session, evaluate, run_folder, timeline_events,
};
use crate::scenario::{Scenario, ServiceGraph, StopPlan, Target};
use crate::signal::SignalHandler;
use crate::target::{GraphRun, ReadyState, ServicesContext, TargetRun, run_services};
use crate::verdict::{CheckResult, Outcome, Verdict};

impl Session {
    /// Runs the graph once and judges each instance's lifecycle checks as `name/check`.
    pub(super) async fn cycle_services(
        &mut self,
        scenario: &Scenario,
        graph: &ServiceGraph,
        options: &RunOptions,
        signals: &mut SignalHandler,
    ) -> Result<Cycle, RunError> {
        let begun = Instant::now();
        let (run_id, out_dir) = run_folder(scenario, options)?;
        let mut env: Vec<(String, String)> = self
            .endpoints
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        env.extend(options.env.iter().cloned());
        let ctx = ServicesContext {
            env,
            run_id: &run_id,
            out_dir: &out_dir,
            base_dir: &scenario.base_dir,
            ready_timeout: Duration::from_millis(scenario.checks.starts_within.params.deadline_ms),
        };
        let run = run_services(graph, &scenario.stop, ctx, signals)
            .await
            .map_err(|source| RunError::TargetSpawn {
                program: graph.services[0].command[0].clone(),
                source,
            })?;
        let verdict = Verdict {
            scenario: scenario.name.clone(),
            target: scenario.target.describe(),
            backend: self.backend.to_string(),
            results: judge(scenario, graph, &run),
            timeline: timeline_events(&run.timeline),
            interrupted: run.interrupted,
            target_log: Some(out_dir.display().to_string()),
            allowed_inconclusive: scenario.checks.allow_inconclusive.clone(),
        };
        let runs: Vec<&TargetRun> = run
            .instances
            .iter()
            .filter_map(|i| i.run.as_ref().ok())
            .collect();
        Ok(Cycle {
            verdict,
            ready: ready(&run),
            start: runs
                .iter()
                .map(|r| r.started_at.saturating_duration_since(begun))
                .min()
                .unwrap_or_default(),
            stopped_after: stopped_after(&runs),
            killed_by_harness: runs.iter().any(|r| r.killed_by_harness),
            hangs: run
                .instances
                .iter()
                .filter_map(|i| i.run.as_ref().ok())
                .flat_map(|r| r.hangs.iter().cloned())
                .collect(),
            interrupted: run.interrupted,
        })
    }
}

/// The scenario as one service's instance sees it: that service as the target, with its own
/// stop signal and kill deadline.
fn as_service(scenario: &Scenario, graph: &ServiceGraph, service: usize) -> Scenario {
    let spec = &graph.services[service];
    let own = spec.stop.as_ref();
    let mut one = scenario.clone();
    one.target = Target::Process(spec.process());
    one.stop = StopPlan {
        signal: own.and_then(|s| s.signal).unwrap_or(scenario.stop.signal),
        after_ms: scenario.stop.after_ms,
        kill_after_ms: own
            .and_then(|s| s.kill_after_ms)
            .unwrap_or(scenario.stop.kill_after_ms),
        order: Vec::new(),
    };
    one
}

/// Every instance's lifecycle checks, named by the instance; an instance never started has
/// each inconclusive with why (what it depended on is judged, and failed, on its own row).
fn judge(scenario: &Scenario, graph: &ServiceGraph, run: &GraphRun) -> Vec<CheckResult> {
    let mut results = Vec::new();
    let mut views = BTreeMap::new();
    for instance in &run.instances {
        let view = views
            .entry(instance.service)
            .or_insert_with(|| as_service(scenario, graph, instance.service));
        let judged = match &instance.run {
            Ok(observed) => evaluate(view, observed, &Findings::default()),
            Err(why) => view
                .enabled_checks()
                .map(|check| CheckResult::new(check, Outcome::inconclusive(why.clone())))
                .collect(),
        };
        results.extend(judged.into_iter().map(|mut r| {
            r.service = Some(instance.name.clone());
            r
        }));
    }
    results
}

/// The graph as a whole is ready once its last instance is; otherwise it is in the state of
/// the first that was not (one never started is not: what it waited on is).
fn ready(run: &GraphRun) -> ReadyState {
    if run.interrupted {
        return ReadyState::Interrupted;
    }
    let mut last = Duration::ZERO;
    for observed in run.instances.iter().filter_map(|i| i.run.as_ref().ok()) {
        match &observed.ready {
            ReadyState::Ready { after } => {
                let at = observed
                    .started_at
                    .saturating_duration_since(run.started_at)
                    + *after;
                last = last.max(at);
            }
            other => return other.clone(),
        }
    }
    ReadyState::Ready { after: last }
}

/// From the first stop signal sent to the last instance gone, when every instance went by
/// itself after its signal.
fn stopped_after(runs: &[&TargetRun]) -> Option<Duration> {
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for run in runs {
        let sent = run.started_at + run.stop_sent_at?;
        let gone = sent + run.stopped_after?;
        first = Some(first.map_or(sent, |f| f.min(sent)));
        last = Some(last.map_or(gone, |l| l.max(gone)));
    }
    Some(last?.saturating_duration_since(first?))
}
