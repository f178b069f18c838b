//! A target stuck past a phase's deadline, explained before it is killed.
//!
//! When the target is not ready by the ready deadline, or not gone by the stop deadline, the
//! harness looks at it once more while it is still stuck: whether it used any CPU over a short
//! look (stuck, waiting for something that never comes, or merely slow), and where it is.
//!
//! - An in-process graph: every live task with the line that spawned it (`--cfg
//!   tokio_unstable`) and its stack (a task dump, with the `taskdump` feature).
//! - A process: each thread's name, state, wait channel and kernel stack from `/proc` (the
//!   stack needs `CAP_SYS_ADMIN`; where it is unreadable the explanation says so), and the
//!   output of the scenario's `on_hang` command (e.g. `py-spy dump --pid {pid}`), which
//!   sees user-space stacks.

use std::time::Duration;

use serde::Serialize;

/// How long the harness watches a stuck target's CPU time.
pub const LOOK: Duration = Duration::from_millis(500);
/// How long an `on_hang` command may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of the command's output is kept.
const HOOK_OUTPUT: usize = 64 * 1024;

/// The phase a target was stuck in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Started, not ready by the ready deadline.
    Ready,
    /// Asked to stop, not gone by the stop deadline.
    Stop,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Ready => "ready",
            Phase::Stop => "stop",
        })
    }
}

/// What a stuck target was doing when its deadline passed.
#[derive(Clone, Debug, Serialize)]
pub struct Hang {
    pub phase: Phase,
    /// CPU time the target used over [`LOOK`], in ms; `None` where it could not be read.
    pub cpu_ms: Option<u64>,
    /// Where it is: tasks with their spawn locations and stacks, or threads with their
    /// kernel stacks, one entry each.
    pub stacks: Vec<Stuck>,
    /// What is missing from `stacks`, and why (a build without spawn locations, an
    /// unreadable kernel stack).
    pub limits: Vec<String>,
    /// The `on_hang` command's run, if the scenario has one.
    pub hook: Option<HookRun>,
}

impl Hang {
    /// Used under a tenth of one core over the look: waiting for something that never
    /// comes (a deadlock, a lost wake-up), rather than slow. A timer or a health check
    /// still ticking is allowed for; a loop that spins is not.
    pub fn idle(&self) -> bool {
        self.cpu_ms
            .is_some_and(|ms| ms * 10 < LOOK.as_millis() as u64)
    }

    /// One line: `stuck at ready (idle over 500 ms): 2 task(s)`.
    pub fn headline(&self) -> String {
        let how = match self.cpu_ms {
            Some(ms) => format!(
                "{}: {ms} ms of CPU over {} ms",
                if self.idle() { "idle" } else { "busy" },
                LOOK.as_millis()
            ),
            None => "CPU time unknown".to_owned(),
        };
        format!(
            "stuck at {} ({how}): {}",
            self.phase,
            self.stacks
                .iter()
                .map(|s| s.what.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )
    }

    /// Every line of the explanation, for a verdict's evidence or a report.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![self.headline()];
        for stuck in &self.stacks {
            lines.push(stuck.what.clone());
            lines.extend(stuck.stack.iter().map(|l| format!("    {l}")));
        }
        lines.extend(self.limits.iter().map(|l| format!("note: {l}")));
        if let Some(hook) = &self.hook {
            lines.push(format!("`{}`: {}", hook.command, hook.status));
            lines.extend(hook.output.lines().map(|l| format!("    {l}")));
        }
        lines
    }
}

/// One task or thread of a stuck target.
#[derive(Clone, Debug, Serialize)]
pub struct Stuck {
    /// `task spawned at src/lib.rs:212:9`, `thread 4312 "api-startup" (S, futex_wait_queue)`.
    pub what: String,
    pub stack: Vec<String>,
}

/// The run of an `on_hang` command.
#[derive(Clone, Debug, Serialize)]
pub struct HookRun {
    /// The command as run, `{pid}` filled in.
    pub command: String,
    /// `exit code 0`, `killed after 10 s`, `cannot start: …`.
    pub status: String,
    /// Its stdout and stderr, cut to 64 KiB.
    pub output: String,
}

/// utime + stime of every thread of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(entry.ok()?.path().join("stat")).ok()?;
        total += stat_ticks(&stat)?;
    }
    Some(total)
}

/// utime + stime from a `/proc/…/stat` line.
fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start after the last `)`.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // Fields 14 and 15 of the line (utime, stime) are 11 and 12 after the command name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// CPU time used by the given threads of this process over [`LOOK`], in ms.
pub async fn own_threads_cpu(tids: &[u32]) -> Option<u64> {
    let read = |tids: &[u32]| -> Option<u64> {
        tids.iter()
            .map(|tid| {
                std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
                    .ok()
                    .and_then(|s| stat_ticks(&s))
            })
            .sum()
    };
    let before = read(tids)?;
    tokio::time::sleep(LOOK).await;
    let after = read(tids)?;
    Some(after.saturating_sub(before) * 1000 / ticks_per_second())
}

/// Explains a stuck process: its CPU over [`LOOK`], its threads from `/proc`, and the
/// `on_hang` command's output.
pub async fn explain_process(pid: u32, phase: Phase, on_hang: Option<&str>) -> Hang {
    let before = cpu_ticks(pid);
    tokio::time::sleep(LOOK).await;
    let after = cpu_ticks(pid);
    let cpu_ms = match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) * 1000 / ticks_per_second()),
        _ => None,
    };
    let mut limits = Vec::new();
    let mut stacks = Vec::new();
    let mut unreadable = None;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    for task in tasks {
        let tid = task
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let read = |name: &str| std::fs::read_to_string(task.join(name)).unwrap_or_default();
        let comm = read("comm").trim().to_owned();
        let stat = read("stat");
        let state = stat
            .rfind(')')
            .and_then(|i| stat.get(i + 2..i + 3))
            .unwrap_or("?")
            .to_owned();
        let wchan = match read("wchan").trim() {
            "" | "0" => "running".to_owned(),
            w => w.to_owned(),
        };
        let stack = match std::fs::read_to_string(task.join("stack")) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) => {
                unreadable.get_or_insert(e.to_string());
                Vec::new()
            }
        };
        stacks.push(Stuck {
            what: format!("thread {tid} \"{comm}\" ({state}, {wchan})"),
            stack,
        });
    }
    if stacks.is_empty() {
        limits.push(format!("/proc/{pid}/task could not be read"));
    }
    if let Some(e) = unreadable {
        limits.push(format!(
            "kernel stacks unreadable ({e}): /proc/PID/task/TID/stack needs CAP_SYS_ADMIN; \
             the wait channel is shown instead"
        ));
    }
    if on_hang.is_none() {
        limits.push(
            "no user-space stacks: set [target] on_hang (e.g. \"py-spy dump --pid {pid}\", \
             \"gdb -p {pid} -batch -ex 'thread apply all bt'\")"
                .to_owned(),
        );
    }
    let hook = match on_hang {
        Some(command) => Some(run_hook(command, pid).await),
        None => None,
    };
    Hang {
        phase,
        cpu_ms,
        stacks,
        limits,
        hook,
    }
}

/// Runs `command` (with `{pid}` filled in) through `sh -c`, in a process group of its own,
/// bounded by [`HOOK_TIMEOUT`].
async fn run_hook(command: &str, pid: u32) -> HookRun {
    let command = command.replace("{pid}", &pid.to_string());
    let mut child = tokio::process::Command::new("sh");
    child
        .arg("-c")
        .arg(&command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = match child.spawn() {
        Ok(child) => child,
        Err(e) => {
            return HookRun {
                command,
                status: format!("cannot start: {e}"),
                output: String::new(),
            };
        }
    };
    let group = child.id();
    // A child of the harness, not an orphan of the target (see `orphans::reparented`).
    if let Some(pid) = group {
        crate::process::note_spawned(pid);
    }
    let waited = tokio::time::timeout(HOOK_TIMEOUT, child.wait_with_output()).await;
    if let Some(pid) = group {
        // What the hook left running is the harness's to stop, not the target's orphan.
        crate::target::orphans::kill_group_members(pid).await;
        crate::process::forget_spawned(pid);
    }
    let (status, output) = match waited {
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            (crate::target::describe_status(&out.status), text)
        }
        Ok(Err(e)) => (format!("failed: {e}"), String::new()),
        Err(_) => {
            // The child itself was killed on drop; what it started goes with its group.
            if let Some(group) = group {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(group as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            (
                format!("killed after {} s", HOOK_TIMEOUT.as_secs()),
                String::new(),
            )
        }
    };
    let mut output = output;
    if output.len() > HOOK_OUTPUT {
        let mut cut = HOOK_OUTPUT;
        while !output.is_char_boundary(cut) {
            cut -= 1;
        }
        output.truncate(cut);
        output.push_str("\n[cut at 64 KiB]");
    }
    HookRun {
        command,
        status,
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_reads_utime_and_stime_past_a_name_with_spaces() {
        let stat = "4312 (a (b) c) S 1 4312 4312 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(stat_ticks(stat), Some(12));
    }

    #[tokio::test]
    async fn a_sleeping_process_is_idle_and_its_hook_runs_with_its_pid() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let hang = explain_process(pid, Phase::Ready, Some("echo looking at {pid}")).await;
        let _ = child.kill();
        let _ = child.wait();
        assert!(hang.idle(), "{:?}", hang.cpu_ms);
        assert_eq!(hang.stacks.len(), 1, "{hang:?}");
        assert!(hang.stacks[0].what.contains("\"sleep\""), "{hang:?}");
        let hook = hang.hook.expect("hook ran");
        assert_eq!(hook.output.trim(), format!("looking at {pid}"));
        assert_eq!(hook.status, "exit code 0");
    }

    #[tokio::test]
    async fn a_spinning_process_is_not_idle() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh");
        let hang = explain_process(child.id(), Phase::Stop, None).await;
        let _ = child.kill();
        let _ = child.wait();
        assert!(!hang.idle(), "{:?}", hang.cpu_ms);
        assert!(
            hang.limits.iter().any(|l| l.contains("on_hang")),
            "{:?}",
            hang.limits
        );
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_killed() {
        let hook = tokio::time::timeout(Duration::from_secs(30), run_hook("sleep 60", 1))
            .await
            .expect("bounded");
        assert!(hook.status.contains("killed after"), "{}", hook.status);
    }
}
