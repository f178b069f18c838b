//! What the harness saw of one run of a target, whatever kind of target it was.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::scenario::StopSignal;
use crate::target::{Hang, OrphanProcess, ProbeReport};

/// How the wait for readiness ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyState {
    Ready {
        after: Duration,
    },
    /// It exited (or the graph returned) before it was ready.
    Exited {
        after: Duration,
        status: String,
    },
    /// Not ready by the deadline.
    TimedOut {
        deadline: Duration,
    },
    /// Ctrl-C came first.
    Interrupted,
}

impl ReadyState {
    /// In words, for reports: `ready after 163 ms`, `exited before it was ready (exit code 1)`.
    pub fn describe(&self) -> String {
        match self {
            ReadyState::Ready { after } => format!("ready after {} ms", after.as_millis()),
            ReadyState::Exited { after, status } => format!(
                "exited before it was ready ({status}, after {} ms)",
                after.as_millis()
            ),
            ReadyState::TimedOut { deadline } => {
                format!("not ready within {} ms", deadline.as_millis())
            }
            ReadyState::Interrupted => "interrupted before it was ready".to_owned(),
        }
    }
}

/// How a target ended.
#[derive(Debug)]
pub enum TargetExit {
    /// A process's exit status.
    Process(ExitStatus),
    /// What an in-process graph returned.
    Graph(Result<(), String>),
}

impl TargetExit {
    /// The same ending again (an exit status is a value; a graph's result is copied).
    pub fn same(&self) -> TargetExit {
        match self {
            TargetExit::Process(status) => TargetExit::Process(*status),
            TargetExit::Graph(result) => TargetExit::Graph(result.clone()),
        }
    }

    /// In words: `exit code 3`, `killed by SIGTERM`, `returned Ok`, `returned an error: …`.
    pub fn describe(&self) -> String {
        match self {
            TargetExit::Process(status) => crate::target::process::describe_status(status),
            TargetExit::Graph(Ok(())) => "returned Ok".to_owned(),
            TargetExit::Graph(Err(e)) => format!("returned an error: {e}"),
        }
    }
}

/// Everything observed about one run of a target.
#[derive(Debug)]
pub struct TargetRun {
    /// When the process was spawned, or the graph's thread started.
    pub started_at: std::time::Instant,
    pub ready: ReadyState,
    /// Ended on its own after ready and before the stop.
    pub exited_early: Option<TargetExit>,
    /// When the stop was asked for, counted from the start.
    pub stop_sent_at: Option<Duration>,
    pub stop_signal: StopSignal,
    /// How the stop was asked for, in reports: `SIGTERM`, `the shutdown token`.
    pub trigger: String,
    /// From the stop request to the target gone (a process exited, a graph returned).
    pub stopped_after: Option<Duration>,
    /// The target did not stop by `kill_after`: a process was killed, a graph's future dropped.
    pub killed_by_harness: bool,
    pub exit: Option<TargetExit>,
    /// Processes that outlived the target; `None` where they are not tracked.
    pub orphans: Option<Vec<OrphanProcess>>,
    /// When the harness had to kill a stuck target: what else of the run was alive just
    /// before it killed the target's process group (looked at first, so that a hung target's
    /// children are seen, not silently killed with it).
    pub alive_at_kill: Option<Vec<OrphanProcess>>,
    /// What was alive when shutdown completed: the probe file of a process, or the harness's
    /// own count for an in-process graph. An unreadable probe file is an error text.
    pub probe: Option<Result<ProbeReport, String>>,
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
    /// Ctrl-C cut the run short.
    pub interrupted: bool,
    /// Where it was stuck when the ready or the stop deadline passed, looked at before it
    /// was stopped or killed.
    pub hangs: Vec<Hang>,
    /// (ms since start, what happened)
    pub timeline: Vec<(u64, String)>,
    /// A service graph's instances, each judged on its own; this run is then the whole graph
    /// (ready once every instance is, stopped once the last is gone).
    pub instances: Vec<crate::target::InstanceRun>,
}
