//! Processes a target left behind.
//!
//! Everything a target starts inherits its environment, so it carries the run's
//! `QUIESCE_RUN_ID`; that finds descendants even when they left the process group (`setsid`) or
//! were double-forked away from the target. The harness is also a child subreaper, so such
//! orphans are re-parented to it rather than to init and can be reaped once killed; and so is
//! one that cleared its environment and left the group both: a child of the harness it never
//! spawned is an orphan of a run.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

/// A process that outlived the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrphanProcess {
    pub pid: u32,
    pub ppid: u32,
    /// The command line, arguments joined by spaces.
    pub command: String,
}

/// Marks the harness as a child subreaper: orphaned descendants are re-parented to it.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and affects only this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a variable of `pid`'s environment (`NAME=value`) is one `wanted` takes.
fn environ_any(pid: u32, wanted: impl Fn(&[u8]) -> bool) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(wanted))
        .unwrap_or(false)
}

/// Every process's pid, from `/proc`.
fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

fn describe(pid: u32) -> Option<OrphanProcess> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    // Dead, only not reaped yet; unless its main thread alone exited (`pthread_exit`) and
    // others run on, which leaves the leader a zombie and the process alive.
    if (state == "Z" || state == "X") && threads(pid) <= 1 {
        return None;
    }
    let ppid = fields.next()?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let command = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Some(OrphanProcess { pid, ppid, command })
}

/// How many threads `pid` has (0 if it is gone).
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// The process group of `pid`.
fn pgid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields after the name: state, ppid, pgrp.
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Live processes carrying `QUIESCE_RUN_ID=run_id`.
fn marked(run_id: &str) -> Vec<OrphanProcess> {
    let marker = format!("QUIESCE_RUN_ID={run_id}").into_bytes();
    let me = std::process::id();
    let mut found: Vec<OrphanProcess> = pids()
        .into_iter()
        .filter(|pid| *pid != me && environ_any(*pid, |var| var == marker))
        .filter_map(describe)
        .collect();
    found.sort_by_key(|o| o.pid);
    found
}

/// Live children of the harness it did not spawn: descendants of a target re-parented to it,
/// the subreaper, when their parent exited, that no run can claim: without any run's mark
/// (a marked one is its own run's to find) and outside the process group of a process the
/// harness spawned and still holds (a helper a running service started and still manages).
fn reparented() -> Vec<OrphanProcess> {
    let me = std::process::id();
    pids()
        .into_iter()
        .filter(|pid| *pid != me && !crate::process::is_spawned(*pid))
        .filter_map(describe)
        .filter(|o| o.ppid == me)
        .filter(|o| !pgid(o.pid).is_some_and(crate::process::is_spawned))
        .filter(|o| !environ_any(o.pid, |var| var.starts_with(b"QUIESCE_RUN_ID=")))
        .collect()
}

/// The run's marked processes and the harness's re-parented ones.
fn left_behind(run_id: &str) -> Vec<OrphanProcess> {
    let mut found = marked(run_id);
    for orphan in reparented() {
        if !found.iter().any(|o| o.pid == orphan.pid) {
            found.push(orphan);
        }
    }
    found.sort_by_key(|o| o.pid);
    found
}

/// The processes in process group `pgid` other than its leader.
fn group_members(pgid: u32) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| *pid != pgid && self::pgid(*pid) == Some(pgid))
        .collect()
}

/// Kills (and reaps, where they are ours) the processes still in process group `pgid` once its
/// leader is gone, and returns them: each outlived the target, whether or not it kept the
/// run's mark (a child that cleared its environment did not). A process whose pid *is* `pgid`
/// is not a member but a newcomer that got the recycled pid, and is left alone.
pub async fn kill_group_members(pgid: u32) -> Vec<OrphanProcess> {
    let members = group_members(pgid);
    let described: Vec<OrphanProcess> = members.iter().filter_map(|pid| describe(*pid)).collect();
    kill_and_reap(&members).await;
    described
}

/// Every process of the run but the target itself, alive now: those carrying the run's mark
/// and those in the target's process group. What a stuck target still had running when the
/// harness had to kill it.
pub fn descendants(run_id: &str, pgid: u32) -> Vec<OrphanProcess> {
    let mut found: Vec<OrphanProcess> = marked(run_id)
        .into_iter()
        .filter(|o| o.pid != pgid)
        .collect();
    for pid in group_members(pgid) {
        if !found.iter().any(|o| o.pid == pid)
            && let Some(o) = describe(pid)
        {
            found.push(o);
        }
    }
    found.sort_by_key(|o| o.pid);
    found
}

async fn kill_and_reap(pids: &[u32]) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    // Reap the ones re-parented to us; they are zombies until then. Only these pids: a wait
    // on any child would steal exits that tokio is waiting for.
    for pid in pids {
        let pid = Pid::from_raw(*pid as i32);
        for _ in 0..50 {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                _ => break,
            }
        }
    }
}

/// After the target exited: the processes of this run still alive once a settle budget has
/// passed (goleak's approach: up to 20 looks, at most 100 ms apart, so a child finishing its
/// own shutdown is not blamed). Every survivor is then killed and, where it is ours, reaped.
pub async fn find_orphans(run_id: &str) -> Vec<OrphanProcess> {
    let mut pause = Duration::from_millis(1);
    let mut found = left_behind(run_id);
    for _ in 0..20 {
        if found.is_empty() {
            return found;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
        found = left_behind(run_id);
    }
    let pids: Vec<u32> = found.iter().map(|o| o.pid).collect();
    kill_and_reap(&pids).await;
    found
}
