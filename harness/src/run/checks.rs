//! From what was observed to an outcome per check.

use std::path::PathBuf;
use std::time::Duration;

use crate::run::{Decided, Findings};
use crate::scenario::{Scenario, StopSignal};
use crate::target::{Phase, ReadyState, TargetExit, TargetRun};
use crate::verdict::{CheckName, CheckResult, Outcome};

/// Output lines that mean a task was leaked, whatever the scenario adds: what Python's asyncio
/// prints when a pending task is garbage-collected or its exception was never looked at.
pub const BUILTIN_LEAK_SIGNATURES: [&str; 2] = [
    "Task was destroyed but it is pending!",
    "Task exception was never retrieved",
];

/// How many matching lines a violation quotes.
const QUOTED_LINES: usize = 10;

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Decides every enabled check of `scenario` from `run`; the Kafka and Redis checks come
/// decided in `findings` (or with the reason they could not be).
pub fn evaluate(scenario: &Scenario, run: &TargetRun, findings: &Findings) -> Vec<CheckResult> {
    // A graph: the lifecycle checks per instance, the rest of the graph as a whole.
    if let crate::scenario::Target::Services(graph) = &scenario.target {
        let mut results = super::services::judge(scenario, graph, run);
        // The leader checks are the contending service's.
        let contending = scenario.redis.as_ref().and_then(|r| r.service.clone());
        results.extend(
            scenario
                .enabled_checks()
                .filter(|c| !CheckName::LIFECYCLE.contains(c))
                .map(|check| {
                    let mut result =
                        CheckResult::new(check, decide(check, scenario, run, findings));
                    if CheckName::REDIS.contains(&check) {
                        result.service.clone_from(&contending);
                    }
                    result
                }),
        );
        results.extend(findings.instances.iter().cloned());
        return results;
    }
    scenario
        .enabled_checks()
        .map(|check| CheckResult::new(check, decide(check, scenario, run, findings)))
        .collect()
}

fn decided_outcome(
    check: CheckName,
    run: &TargetRun,
    decided: Option<&Decided>,
    table: &str,
) -> Outcome {
    if let Some(reason) = not_ready_reason(&run.ready) {
        return Outcome::inconclusive(format!("{reason}, so there was nothing to judge"));
    }
    match decided {
        Some(Ok(outcomes)) => outcomes.get(&check).cloned().unwrap_or_else(|| {
            Outcome::inconclusive(format!("the [{table}] phase did not decide this check"))
        }),
        Some(Err(reason)) => Outcome::inconclusive(reason.clone()),
        None => Outcome::inconclusive(format!("the scenario has no [{table}] table")),
    }
}

fn not_ready_reason(ready: &ReadyState) -> Option<String> {
    match ready {
        ReadyState::Ready { .. } => None,
        ReadyState::Exited { status, .. } => {
            Some(format!("the target exited before it was ready ({status})"))
        }
        ReadyState::TimedOut { .. } => Some("the target never became ready".to_owned()),
        ReadyState::Interrupted => {
            Some("the run was interrupted before the target was ready".to_owned())
        }
    }
}

fn decide(check: CheckName, scenario: &Scenario, run: &TargetRun, findings: &Findings) -> Outcome {
    match check {
        CheckName::StartsWithin => starts_within(scenario, run),
        CheckName::StopsWithin => stops_within(scenario, run),
        CheckName::ExitCode => exit_code(scenario, run),
        CheckName::NoLeakedTasks => no_leaked_tasks(scenario, run),
        CheckName::NoLeakedThreads => no_leaked_threads(run),
        CheckName::NoOrphanProcesses => no_orphan_processes(run),
        CheckName::OffsetsCommitted
        | CheckName::NoMessageLoss
        | CheckName::NoRedelivery
        | CheckName::ProducerFlushed
        | CheckName::GroupLeft => decided_outcome(check, run, findings.kafka.as_ref(), "kafka"),
        CheckName::LockReleased | CheckName::SingleLeader | CheckName::JobsOncePerInterval => {
            decided_outcome(check, run, findings.redis.as_ref(), "redis")
        }
        CheckName::ReadinessTruthful => {
            decided_outcome(check, run, findings.readiness.as_ref(), "readiness")
        }
        CheckName::MemoryFlat => Outcome::inconclusive("judged by `quiesce soak` only"),
        CheckName::TakeoverWithin => {
            Outcome::inconclusive("judged per rolled-out service of a graph only")
        }
    }
}

/// Where the target was stuck in `phase`, as the harness saw it before stopping it.
fn hang_evidence(run: &TargetRun, phase: Phase) -> Vec<String> {
    run.hangs
        .iter()
        .filter(|h| h.phase == phase)
        .flat_map(|h| h.lines())
        .collect()
}

fn log_tail_evidence(run: &TargetRun) -> Vec<String> {
    let mut evidence = Vec::new();
    let streams = [("stdout", &run.stdout), ("stderr", &run.stderr)];
    for (name, path) in streams
        .into_iter()
        .filter_map(|(n, p)| Some((n, p.as_ref()?)))
    {
        let tail = crate::process::log_tail(path, 5);
        if !tail.trim().is_empty() {
            evidence.push(format!("last lines of {name} ({}):", path.display()));
            evidence.extend(tail.lines().map(|l| format!("  {l}")));
        }
    }
    evidence
}

fn starts_within(scenario: &Scenario, run: &TargetRun) -> Outcome {
    let deadline = scenario.checks.starts_within.params.deadline_ms;
    // Without a ready probe, "ready" is only "started": no evidence of readiness at all.
    if let (crate::scenario::Target::Process(target), ReadyState::Ready { .. }) =
        (&scenario.target, &run.ready)
        && matches!(target.ready, crate::scenario::ReadyProbe::Started(_))
    {
        return Outcome::inconclusive(
            "the target has no ready probe, so it counted as ready once started: nothing \
             showed it ready (give [target] ready = { http = ... } or { log = ... } or \
             { tcp = ... }, or turn starts_within off)",
        );
    }
    match &run.ready {
        ReadyState::Ready { after } => Outcome::pass(format!(
            "ready in {} ms (deadline {deadline} ms)",
            ms(*after)
        )),
        ReadyState::Exited { after, status } => {
            let mut evidence = vec![format!("exited after {} ms with {status}", ms(*after))];
            evidence.extend(log_tail_evidence(run));
            Outcome::violation("exited before it was ready", evidence)
        }
        ReadyState::TimedOut { deadline } => {
            let mut evidence = match &scenario.target {
                crate::scenario::Target::Process(p) => vec![format!("ready probe: {:?}", p.ready)],
                crate::scenario::Target::Graph(_) => {
                    vec!["the graph never called ctx.ready()".to_owned()]
                }
                // Judged per service, each as a process target.
                crate::scenario::Target::Services(_) => Vec::new(),
            };
            evidence.extend(hang_evidence(run, Phase::Ready));
            evidence.extend(log_tail_evidence(run));
            Outcome::violation(format!("not ready within {} ms", ms(*deadline)), evidence)
        }
        ReadyState::Interrupted => {
            Outcome::inconclusive("the run was interrupted before the target was ready")
        }
    }
}

fn stops_within(scenario: &Scenario, run: &TargetRun) -> Outcome {
    let deadline = scenario.checks.stops_within.params.deadline_ms;
    if let Some(reason) = not_ready_reason(&run.ready) {
        return Outcome::inconclusive(format!("{reason}, so it was never asked to stop"));
    }
    if let Some(exit) = &run.exited_early {
        return Outcome::inconclusive(format!(
            "the target ended by itself before it was asked to stop ({})",
            exit.describe()
        ));
    }
    if run.interrupted {
        return Outcome::inconclusive("the run was interrupted before the stop");
    }
    if run.killed_by_harness {
        return Outcome::violation(
            format!(
                "still running {} ms after {}; the harness killed it",
                scenario.stop.kill_after_ms, run.trigger
            ),
            std::iter::once(format!(
                "deadline {deadline} ms; exceeded by at least {} ms",
                scenario.stop.kill_after_ms.saturating_sub(deadline)
            ))
            .chain(hang_evidence(run, Phase::Stop))
            .collect(),
        );
    }
    let Some(measured) = run.stopped_after else {
        return Outcome::inconclusive("the stop was not timed");
    };
    // The whole stop counts: a probe's settle wait is the target's own tasks still finishing,
    // and a probe's word for how long it waited is not evidence the harness can check.
    let settle = match &run.probe {
        Some(Ok(report)) if report.settle_ms > 0 => format!(
            " (of which its probe reports {} ms waiting for its tasks to finish)",
            report.settle_ms
        ),
        _ => String::new(),
    };
    if ms(measured) <= u128::from(deadline) {
        Outcome::pass(format!(
            "stopped {} ms after {}{settle} (deadline {deadline} ms)",
            ms(measured),
            run.trigger
        ))
    } else {
        Outcome::violation(
            format!(
                "stopped {} ms after {}{settle}, {} ms over the {deadline} ms deadline",
                ms(measured),
                run.trigger,
                ms(measured) - u128::from(deadline)
            ),
            Vec::new(),
        )
    }
}

fn exit_code(scenario: &Scenario, run: &TargetRun) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let expected = scenario.checks.exit_code.params.expected;
    if let Some(reason) = not_ready_reason(&run.ready) {
        return Outcome::inconclusive(reason);
    }
    if let Some(exit) = &run.exited_early {
        return Outcome::violation(
            format!(
                "ended by itself before it was told to stop ({})",
                exit.describe()
            ),
            log_tail_evidence(run),
        );
    }
    if run.interrupted {
        return Outcome::inconclusive("the run was interrupted before the stop");
    }
    if run.stop_signal == StopSignal::Kill {
        return Outcome::inconclusive("stopped with SIGKILL: there is no clean exit to check");
    }
    if run.killed_by_harness {
        return Outcome::violation(
            format!(
                "did not stop after {}; the harness had to kill it",
                run.trigger
            ),
            Vec::new(),
        );
    }
    let Some(exit) = &run.exit else {
        return Outcome::inconclusive("no exit status was recorded");
    };
    let status = match exit {
        TargetExit::Graph(Ok(())) => {
            return Outcome::pass(format!("the graph returned Ok after {}", run.trigger));
        }
        TargetExit::Graph(Err(e)) => {
            return Outcome::violation(
                format!("the graph returned an error after {}", run.trigger),
                vec![e.clone()],
            );
        }
        TargetExit::Process(status) => status,
    };
    match (status.code(), status.signal()) {
        (Some(code), _) if code == expected => {
            Outcome::pass(format!("exit code {code} after {}", run.trigger))
        }
        (Some(code), _) => Outcome::violation(
            format!(
                "exit code {code} after {}, expected {expected}",
                run.trigger
            ),
            log_tail_evidence(run),
        ),
        (None, Some(_)) => Outcome::violation(
            format!(
                "{} after {}: it does not handle the signal, so nothing ran on the way out",
                exit.describe(),
                run.trigger
            ),
            Vec::new(),
        ),
        _ => Outcome::inconclusive(format!("unrecognised exit status {status}")),
    }
}

/// Lines of `path` that contain one of `signatures`, as `file:line: text`.
fn matching_lines(path: Option<&PathBuf>, signatures: &[String]) -> Vec<String> {
    let Some(path) = path else {
        return Vec::new();
    };
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .enumerate()
        .filter(|(_, line)| signatures.iter().any(|s| line.contains(s.as_str())))
        .map(|(i, line)| format!("{}:{}: {}", path.display(), i + 1, line.trim()))
        .collect()
}

/// The probe's verdict on tasks or threads, when it wrote one.
fn from_probe(run: &TargetRun, what: &str) -> Option<Outcome> {
    let report = match run.probe.as_ref()? {
        Ok(report) => report,
        Err(e) => {
            return Some(Outcome::inconclusive(format!(
                "the probe file is unreadable: {e}"
            )));
        }
    };
    let (alive, evidence): (u64, Vec<String>) = if what == "tasks" {
        let items = report.tasks.items.iter().flat_map(|t| {
            let head = format!("task `{}` at {}", t.name, t.location);
            std::iter::once(head).chain(t.stack.iter().map(|f| format!("  {f}")))
        });
        (report.tasks.alive, items.take(4 * QUOTED_LINES).collect())
    } else {
        let items = report.threads.items.iter().map(|t| {
            format!(
                "thread `{}`{}",
                t.name,
                if t.daemon { " (daemon)" } else { "" }
            )
        });
        (report.threads.alive, items.take(QUOTED_LINES).collect())
    };
    Some(if alive == 0 {
        Outcome::pass(format!(
            "0 {what} alive when shutdown completed ({} probe)",
            report.runtime
        ))
    } else {
        Outcome::violation(
            format!("{alive} {what} still alive when shutdown completed"),
            evidence,
        )
    })
}

fn no_leaked_tasks(scenario: &Scenario, run: &TargetRun) -> Outcome {
    let from_probe = from_probe(run, "tasks");
    if let Some(outcome @ Outcome::Violation { .. }) = &from_probe {
        return outcome.clone();
    }
    let signatures: Vec<String> = BUILTIN_LEAK_SIGNATURES
        .iter()
        .map(|s| s.to_string())
        .chain(
            scenario
                .checks
                .no_leaked_tasks
                .params
                .signatures
                .iter()
                .cloned(),
        )
        .collect();
    if run.stdout.is_none() && from_probe.is_none() {
        return Outcome::inconclusive(GRAPH_NOT_INSPECTED);
    }
    let mut hits = matching_lines(run.stdout.as_ref(), &signatures);
    hits.extend(matching_lines(run.stderr.as_ref(), &signatures));
    if hits.is_empty() {
        if let Some(outcome) = from_probe {
            return outcome;
        }
        if run.killed_by_harness || run.stop_signal == StopSignal::Kill {
            return Outcome::inconclusive(
                "the target was killed, so it printed nothing on the way out (and wrote no probe file)",
            );
        }
        if run.interrupted {
            return Outcome::inconclusive("the run was interrupted; shutdown output is incomplete");
        }
        return Outcome::Pass {
            detail: format!("no leak signature in the target's output ({} signatures)", signatures.len()),
            limits: Some(
                "tasks inside a process are counted only by a target-side probe writing QUIESCE_PROBE_FILE; \
                 this target wrote none"
                    .to_owned(),
            ),
        };
    }
    let total = hits.len();
    let mut evidence: Vec<String> = hits.into_iter().take(QUOTED_LINES).collect();
    if total > QUOTED_LINES {
        evidence.push(format!("… and {} more", total - QUOTED_LINES));
    }
    Outcome::violation(
        format!("{total} leak signature line(s) in the target's output"),
        evidence,
    )
}

/// Why an in-process graph's tasks and threads could not be counted.
const GRAPH_NOT_INSPECTED: &str = "the graph did not return by itself: the harness killed it \
     (dropped its future, as SIGKILL ends a process), so nothing ran on its way out to count";

fn no_leaked_threads(run: &TargetRun) -> Outcome {
    if let Some(outcome) = from_probe(run, "threads") {
        return outcome;
    }
    if run.stdout.is_none() {
        return Outcome::inconclusive(GRAPH_NOT_INSPECTED);
    }
    if run.interrupted {
        return Outcome::inconclusive("the run was interrupted");
    }
    Outcome::inconclusive(
        "the threads of a process target are visible only to a target-side probe writing \
         QUIESCE_PROBE_FILE when its shutdown completes; this target wrote none",
    )
}

fn no_orphan_processes(run: &TargetRun) -> Outcome {
    let Some(orphans) = &run.orphans else {
        return Outcome::inconclusive(
            "child processes of an in-process graph are not tracked (they share the harness's environment)",
        );
    };
    let list = |procs: &[crate::target::OrphanProcess]| -> Vec<String> {
        procs
            .iter()
            .map(|o| match o.ppid == std::process::id() {
                // The harness is a subreaper: its parent exited, leaving it to the harness.
                true => format!("pid {} (re-parented to the harness): {}", o.pid, o.command),
                false => format!("pid {} (parent {}): {}", o.pid, o.ppid, o.command),
            })
            .collect()
    };
    if let Some(alive) = &run.alive_at_kill {
        // The target never got to stop its children: whether it would have is unknown.
        return match alive.is_empty() {
            true => Outcome::pass(
                "nothing else of the run was alive when the harness had to kill the stuck target",
            ),
            false => Outcome::inconclusive(format!(
                "the harness had to kill the stuck target while {} other process(es) of its run \
                 were alive, so whether it would have stopped them is unknown: {}",
                alive.len(),
                list(alive).join("; ")
            )),
        };
    }
    if orphans.is_empty() {
        return Outcome::pass(
            "nothing the target started outlived it: no process with its QUIESCE_RUN_ID, none \
             left in its process group",
        );
    }
    Outcome::violation(
        format!(
            "{} process(es) outlived the target (killed by the harness)",
            orphans.len()
        ),
        list(orphans),
    )
}
