//! One run of a process target: start, ready, run, stop, watch it go.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::process::{ChildProcess, ProcessSpec};
use crate::scenario::{ProcessTarget, StopPlan, StopSignal};
use crate::signal::SignalHandler;
use crate::target::hang::{Hang, Phase as HangPhase, explain_process};
use crate::target::observed::{ReadyState, TargetExit, TargetRun};
use crate::target::orphans::{become_subreaper, find_orphans};
use crate::target::ready::wait_ready;

/// What a process target needs from the run around it.
pub struct ProcessContext<'a> {
    /// Variables on top of the target's own `env` (endpoints, run id, probe file, `--env`).
    pub env: Vec<(String, String)>,
    pub run_id: &'a str,
    /// Where stdout.log and stderr.log go.
    pub out_dir: &'a Path,
    /// Where the target-side probe writes (`QUIESCE_PROBE_FILE`).
    pub probe_file: &'a Path,
    /// The folder a relative `cwd` is resolved against.
    pub base_dir: &'a Path,
    pub ready_timeout: Duration,
    pub hooks: super::Hooks,
}

/// Looks at a stuck child before it is stopped or killed.
async fn explain(child: &ChildProcess, phase: HangPhase, target: &ProcessTarget) -> Hang {
    explain_process(child.pid(), phase, target.on_hang.as_deref()).await
}

/// An exit status in words: `exit code 3`, `killed by SIGTERM`.
pub fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => status.to_string(),
    }
}

/// Runs the target through start, ready, the run, the stop and the aftermath. Whatever
/// happens, nothing the target started is left running.
/// Where a start of a process target in `out_dir` writes its stdout and stderr.
pub fn log_files(out_dir: &Path) -> [PathBuf; 2] {
    [out_dir.join("stdout.log"), out_dir.join("stderr.log")]
}

pub async fn run_process(
    target: &ProcessTarget,
    stop: &StopPlan,
    ctx: ProcessContext<'_>,
    signals: &mut SignalHandler,
) -> std::io::Result<TargetRun> {
    let run_id = ctx.run_id;
    let result = drive_process(target, stop, ctx, signals).await;
    if result.is_err() {
        // The error left early: the child's Drop ends its group, this ends what left the group.
        find_orphans(run_id).await;
    }
    result
}

/// What happened, by time since the start, as the run goes.
struct Notes {
    started: Instant,
    entries: Vec<(u64, String)>,
}

impl Notes {
    fn note(&mut self, what: impl Into<String>) {
        let at = self.started.elapsed().as_millis() as u64;
        self.entries.push((at, what.into()));
    }
}

/// The four phases, each its own function: start and ready, the run, the stop, the aftermath.
async fn drive_process(
    target: &ProcessTarget,
    stop: &StopPlan,
    mut ctx: ProcessContext<'_>,
    signals: &mut SignalHandler,
) -> std::io::Result<TargetRun> {
    // Orphans of the target must come to us, not to init, to be seen and reaped.
    become_subreaper()?;
    let [stdout, stderr] = log_files(ctx.out_dir);
    let spec = spec_of(target, &ctx, &stdout, &stderr)?;
    let started = Instant::now();
    let mut notes = Notes {
        started,
        entries: Vec::new(),
    };
    let mut child = ChildProcess::spawn(&spec)?;
    notes.note(format!("started pid {}", child.pid()));
    if let Some(pid) = &ctx.hooks.pid {
        pid.report(Some(child.pid()));
    }
    let mut run = TargetRun {
        started_at: started,
        ready: ReadyState::Interrupted,
        exited_early: None,
        stop_sent_at: None,
        stop_signal: stop.signal,
        trigger: stop.signal.to_string(),
        stopped_after: None,
        killed_by_harness: false,
        exit: None,
        orphans: Some(Vec::new()),
        alive_at_kill: None,
        probe: None,
        stdout: Some(stdout.clone()),
        stderr: Some(stderr.clone()),
        interrupted: false,
        timeline: Vec::new(),
        hangs: Vec::new(),
        instances: Vec::new(),
    };
    let mut phase = Drive {
        target,
        child: &mut child,
        run: &mut run,
        notes: &mut notes,
        interrupted: false,
    };
    phase.ready(&mut ctx, &[&stdout, &stderr], signals).await?;
    let mut schedule_signals = ctx.hooks.signals.take();
    let scheduled = phase
        .run_for(stop, &mut ctx, &mut schedule_signals, signals)
        .await?;
    phase
        .stop(stop, &mut ctx, scheduled, &mut schedule_signals, signals)
        .await?;
    let interrupted = phase.interrupted;
    // Phase 4: anything still alive that it started (found, then killed).
    let mut orphans = find_orphans(ctx.run_id).await;
    // Anything left in its group without the run's mark (it cleared its environment): an
    // orphan all the same.
    for member in crate::target::orphans::kill_group_members(child.pid()).await {
        if !orphans.iter().any(|o| o.pid == member.pid) {
            orphans.push(member);
        }
    }
    for orphan in &orphans {
        notes.note(format!(
            "orphan pid {} `{}` killed",
            orphan.pid, orphan.command
        ));
    }
    run.orphans = Some(orphans);
    run.probe = crate::target::read_probe(ctx.probe_file);
    run.interrupted = interrupted;
    run.timeline = notes.entries;
    Ok(run)
}

/// How the target is started: its command and env with this start's values, its folder, its
/// logs (an earlier run's in the same folder removed first).
fn spec_of(
    target: &ProcessTarget,
    ctx: &ProcessContext<'_>,
    stdout: &Path,
    stderr: &Path,
) -> std::io::Result<ProcessSpec> {
    let cwd = match &target.cwd {
        Some(dir) if dir.is_absolute() => dir.clone(),
        Some(dir) => ctx.base_dir.join(dir),
        None => std::env::current_dir()?,
    };
    // This run's output only: a ready line or a leak message from an earlier run in the same
    // folder must not speak for this one.
    for log in [stdout, stderr] {
        match std::fs::remove_file(log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let mut run_env = ctx.env.clone();
    run_env.push(("QUIESCE_RUN_ID".to_owned(), ctx.run_id.to_owned()));
    run_env.push((
        "QUIESCE_PROBE_FILE".to_owned(),
        ctx.probe_file.display().to_string(),
    ));
    run_env.push((
        "QUIESCE_OUT_DIR".to_owned(),
        ctx.out_dir.display().to_string(),
    ));
    // `{kafka}`, `{port}`, ... in the command and env become this start's values.
    let (command, env) = crate::scenario::template::command_and_env(target, &run_env);
    let program = resolve_program(&command[0], ctx.base_dir);
    let mut spec = ProcessSpec::new(program, cwd, stdout).stderr_to(stderr);
    for arg in &command[1..] {
        spec = spec.arg(arg);
    }
    for (k, v) in &env {
        spec = spec.env(k, v);
    }
    Ok(spec)
}

/// The run of one started target, phase by phase.
struct Drive<'p> {
    target: &'p ProcessTarget,
    child: &'p mut ChildProcess,
    run: &'p mut TargetRun,
    notes: &'p mut Notes,
    /// Ctrl-C came.
    interrupted: bool,
}

impl Drive<'_> {
    /// Phase 1: ready, or exited, or timed out, or Ctrl-C.
    async fn ready(
        &mut self,
        ctx: &mut ProcessContext<'_>,
        logs: &[&Path],
        signals: &mut SignalHandler,
    ) -> std::io::Result<()> {
        let started = self.run.started_at;
        let child = &mut *self.child;
        let ready = tokio::select! {
            ready = wait_ready(&self.target.ready, logs, ctx.ready_timeout, || child.try_exited().ok().flatten().is_some()) => Some(ready),
            _ = signals.recv() => None,
        };
        self.run.ready = match ready {
            None => ReadyState::Interrupted,
            Some(true) => ReadyState::Ready {
                after: started.elapsed(),
            },
            Some(false) => match self.child.try_exited()? {
                Some(status) => ReadyState::Exited {
                    after: started.elapsed(),
                    status: describe_status(&status),
                },
                None => ReadyState::TimedOut {
                    deadline: ctx.ready_timeout,
                },
            },
        };
        match &self.run.ready {
            ReadyState::Ready { .. } => {
                self.notes.note("ready");
                ctx.hooks.ready();
            }
            ReadyState::Exited { status, .. } => {
                self.notes.note(format!("exited before ready ({status})"))
            }
            ReadyState::TimedOut { .. } => {
                self.notes.note("not ready by the deadline");
                let hang = explain(self.child, HangPhase::Ready, self.target).await;
                self.notes.note(hang.headline());
                self.run.hangs.push(hang);
            }
            ReadyState::Interrupted => self.notes.note("interrupted (Ctrl-C)"),
        }
        self.interrupted = matches!(self.run.ready, ReadyState::Interrupted);
        Ok(())
    }

    /// Phase 2: run for `after`, unless it exits, an early stop or a scheduled signal comes, or a
    /// Ctrl-C does. Returns the scheduled signal that ended it.
    async fn run_for(
        &mut self,
        stop: &StopPlan,
        ctx: &mut ProcessContext<'_>,
        schedule_signals: &mut super::ScheduledSignals,
        signals: &mut SignalHandler,
    ) -> std::io::Result<Option<StopSignal>> {
        let mut scheduled = None;
        if !matches!(self.run.ready, ReadyState::Ready { .. }) {
            return Ok(None);
        }
        tokio::select! {
            () = tokio::time::sleep(stop.after()) => {}
            reason = ctx.hooks.stop_early() => self.notes.note(reason),
            signal = super::next_scheduled(schedule_signals) => scheduled = Some(signal),
            status = self.child.wait() => {
                let status = status?;
                self.notes.note(format!("exited by itself ({})", describe_status(&status)));
                self.run.exited_early = Some(TargetExit::Process(status));
            }
            _ = signals.recv() => {
                self.interrupted = true;
                self.notes.note("interrupted (Ctrl-C)");
            }
        }
        Ok(scheduled)
    }

    /// Phase 3, the stop: the scenario's signal, or SIGTERM when the run did not get that far; killed
    /// at `kill_after`, or at once on a second Ctrl-C.
    async fn stop(
        &mut self,
        stop: &StopPlan,
        ctx: &mut ProcessContext<'_>,
        scheduled: Option<StopSignal>,
        schedule_signals: &mut super::ScheduledSignals,
        signals: &mut SignalHandler,
    ) -> std::io::Result<()> {
        if self.child.try_exited()?.is_some() {
            self.run.exit = self.child.try_exited()?.map(TargetExit::Process);
            return Ok(());
        }
        let ready = matches!(self.run.ready, ReadyState::Ready { .. });
        let signal = match (ready, self.interrupted) {
            (true, false) => scheduled.unwrap_or(stop.signal),
            _ => StopSignal::Term,
        };
        if let (Some(signal), false) = (scheduled, self.interrupted) {
            self.run.stop_signal = signal;
            self.run.trigger = format!("{signal} (the fault schedule's)");
        }
        let sent = Instant::now();
        // Whoever watches the pid (a soak's sampler) is told the stop has begun.
        if let Some(pid) = &ctx.hooks.pid {
            pid.report(None);
        }
        // To the target alone: stopping what it started is its job, and the orphan check
        // sees whether it did.
        self.child.signal_leader(signal.as_nix())?;
        ctx.hooks.stopping(sent);
        self.notes.note(format!("sent {signal}"));
        if ready && !self.interrupted {
            self.run.stop_sent_at = Some(sent.duration_since(self.run.started_at));
        }
        let deadline = tokio::time::Instant::now() + stop.kill_after();
        let exited = loop {
            tokio::select! {
                status = tokio::time::timeout_at(deadline, self.child.wait()) => break status.ok(),
                // A second SIGTERM, or a SIGKILL during the drain.
                more = super::next_scheduled(schedule_signals) => {
                    let sent = self.child.signal_leader(more.as_nix());
                    self.notes.note(match sent {
                        Ok(()) => format!("sent {more} (the fault schedule's)"),
                        Err(e) => format!("could not send {more} (the fault schedule's): {e}"),
                    });
                    if more == StopSignal::Kill && self.run.stop_sent_at.is_some() {
                        self.run.stop_signal = StopSignal::Kill;
                    }
                }
                _ = signals.recv() => {
                    self.interrupted = true;
                    self.notes.note("second signal: killing at once");
                    break None;
                }
            }
        };
        let status = match exited {
            Some(status) => status?,
            None => {
                self.run.killed_by_harness = !self.interrupted;
                if !self.interrupted {
                    let hang = explain(self.child, HangPhase::Stop, self.target).await;
                    self.notes.note(hang.headline());
                    self.run.hangs.push(hang);
                }
                // Seen before the group goes: a stuck target's children die with it.
                self.run.alive_at_kill = Some(crate::target::orphans::descendants(
                    ctx.run_id,
                    self.child.pid(),
                ));
                self.notes.note("SIGKILL to the process group");
                self.child.kill().await?
            }
        };
        if self.run.stop_sent_at.is_some() && !self.run.killed_by_harness {
            self.run.stopped_after = Some(sent.elapsed());
        }
        self.notes
            .note(format!("exited ({})", describe_status(&status)));
        self.run.exit = Some(TargetExit::Process(status));
        Ok(())
    }
}

/// A program named with a slash is relative to the scenario's folder; a bare name is looked
/// up on PATH by the OS. The path is made absolute: with a `cwd`, a relative one would be
/// looked up from there (`../../target/x` from `scenarios/graph/scenarios/graph`).
pub fn resolve_program(program: &str, base_dir: &Path) -> PathBuf {
    let path = Path::new(program);
    if path.is_absolute() || !program.contains('/') {
        path.to_owned()
    } else {
        let joined = base_dir.join(path);
        std::path::absolute(&joined).unwrap_or(joined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program relative to a scenario in a relative folder, run with a `cwd`: the child
    /// must not look for it from its `cwd` (the graph's `readiness.toml` could not start
    /// `../../target/release/api-startup`).
    #[test]
    fn a_relative_program_is_resolved_to_an_absolute_path() {
        let program = resolve_program("../../bin/svc", Path::new("scenarios/graph"));
        assert!(program.is_absolute(), "{program:?}");
        assert!(
            program.ends_with("scenarios/graph/../../bin/svc"),
            "{program:?}"
        );
        assert_eq!(
            resolve_program("python3", Path::new("x")),
            Path::new("python3")
        );
        assert_eq!(
            resolve_program("/bin/sh", Path::new("x")),
            Path::new("/bin/sh")
        );
    }
}
