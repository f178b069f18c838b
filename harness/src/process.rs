//! Child processes the harness starts: dependencies of the local backend, and later targets.
//!
//! Every child runs in its own process group, so a signal reaches its children too and nothing
//! it forks survives a kill of the group. The child also gets `PR_SET_PDEATHSIG = SIGKILL`: if
//! the harness itself is killed with SIGKILL and cannot clean up, the kernel ends the child.
//! Stopping is SIGTERM to the group, a grace period, then SIGKILL; [`Drop`] is the last line of
//! defence and kills the group.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use quiesce_stop::{Registration, Teardown};
use tokio::process::{Child, Command};

/// Every process group the harness started and has not yet seen gone. The last stop path,
/// when the CLI exits, stops what is left here (a task the runtime abandoned held it).
/// The pids of the processes this harness spawned (and has not dropped): its children that
/// are no orphan re-parented to it (see [`crate::target::orphans`]).
fn spawned() -> &'static std::sync::Mutex<std::collections::BTreeSet<u32>> {
    static SPAWNED: OnceLock<std::sync::Mutex<std::collections::BTreeSet<u32>>> = OnceLock::new();
    SPAWNED.get_or_init(Default::default)
}

/// Whether `pid` is a process this harness spawned and still holds.
pub fn is_spawned(pid: u32) -> bool {
    spawned()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(&pid)
}

/// Marks `pid` as spawned by the harness (for a child not started as a [`ChildProcess`]) until
/// [`forget_spawned`].
pub fn note_spawned(pid: u32) {
    spawned()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(pid);
}

pub fn forget_spawned(pid: u32) {
    spawned()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&pid);
}

pub fn teardown() -> &'static Teardown {
    static TEARDOWN: OnceLock<Teardown> = OnceLock::new();
    TEARDOWN.get_or_init(Teardown::new)
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; the child's own, since some programs read files from it.
    pub cwd: PathBuf,
    /// stdout (and stderr, unless `stderr` is set) go here, appended so that restarts keep
    /// the history.
    pub log: PathBuf,
    /// A separate file for stderr.
    pub stderr: Option<PathBuf>,
    /// Start from an empty environment (then `env` only).
    pub clear_env: bool,
}

impl ProcessSpec {
    pub fn new(
        program: impl Into<PathBuf>,
        cwd: impl Into<PathBuf>,
        log: impl Into<PathBuf>,
    ) -> Self {
        ProcessSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: cwd.into(),
            log: log.into(),
            stderr: None,
            clear_env: false,
        }
    }

    /// Sends stderr to its own file.
    pub fn stderr_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.stderr = Some(path.into());
        self
    }

    /// Starts the child with only the variables given by [`ProcessSpec::env`].
    pub fn clear_env(mut self) -> Self {
        self.clear_env = true;
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A running child in its own process group.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    pid: Pid,
    exited: Option<ExitStatus>,
    program: PathBuf,
    log: PathBuf,
    /// The group's SIGKILL, in [`teardown`]: run once, by whichever stop path comes first.
    registration: Option<Registration>,
    /// Set once the leader is reaped: its pid may then belong to someone else.
    reaped: Arc<AtomicBool>,
}

impl ChildProcess {
    /// Starts the child. The error is the OS's (`NotFound` for a missing program).
    pub fn spawn(spec: &ProcessSpec) -> std::io::Result<Self> {
        Self::spawn_in(spec, teardown())
    }

    /// [`ChildProcess::spawn`], registered in `teardown` rather than the process-wide one.
    pub(crate) fn spawn_in(spec: &ProcessSpec, teardown: &Teardown) -> std::io::Result<Self> {
        let log = open_log(&spec.log)?;
        let stderr = match &spec.stderr {
            Some(path) => open_log(path)?,
            None => log.try_clone()?,
        };
        let mut command = Command::new(&spec.program);
        if spec.clear_env {
            command.env_clear();
        }
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches only the new process.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        let pid = child
            .id()
            .map(|id| Pid::from_raw(id as i32))
            .ok_or_else(|| std::io::Error::other("child exited before its pid was read"))?;
        note_spawned(pid.as_raw() as u32);
        let reaped = Arc::new(AtomicBool::new(false));
        let gone = reaped.clone();
        let registration = teardown.register(
            format!("process group {pid} ({})", spec.program.display()),
            move || {
                if !gone.load(Ordering::SeqCst) {
                    let _ = killpg(pid, Signal::SIGKILL);
                }
            },
        );
        Ok(ChildProcess {
            child,
            pid,
            exited: None,
            program: spec.program.clone(),
            log: spec.log.clone(),
            registration: Some(registration),
            reaped,
        })
    }

    /// The leader was reaped: nothing may signal its pid any more.
    fn reaped(&mut self, status: ExitStatus) -> ExitStatus {
        self.exited = Some(status);
        self.reaped.store(true, Ordering::SeqCst);
        if let Some(registration) = self.registration.take() {
            registration.stop();
        }
        status
    }

    /// The child's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Sends `signal` to the child's whole process group. A group that is already gone is fine.
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        if self.exited.is_some() {
            return Ok(());
        }
        match killpg(self.pid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(std::io::Error::from(e)),
        }
    }

    /// Sends `signal` to the child alone, as `docker stop` and Kubernetes do: whatever it
    /// started must be stopped by the child itself.
    pub fn signal_leader(&self, signal: Signal) -> std::io::Result<()> {
        if self.exited.is_some() {
            return Ok(());
        }
        match nix::sys::signal::kill(self.pid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(std::io::Error::from(e)),
        }
    }

    /// The exit status, if the child has exited (reaps it).
    pub fn try_exited(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.exited.is_none()
            && let Some(status) = self.child.try_wait()?
        {
            self.reaped(status);
        }
        Ok(self.exited)
    }

    /// Waits for the child to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        Ok(self.reaped(status))
    }

    /// SIGTERM to the group, up to `grace` to exit, then SIGKILL. Returns how it ended.
    pub async fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        // A paused group would never act on SIGTERM.
        self.signal(Signal::SIGCONT)?;
        self.signal(Signal::SIGTERM)?;
        if let Ok(status) = tokio::time::timeout(grace, self.wait()).await {
            let status = status?;
            // The leader is gone; make sure nothing it forked stays behind.
            let _ = killpg(self.pid, Signal::SIGKILL);
            return Ok(status);
        }
        self.kill().await
    }

    /// SIGKILL to the group, then reaps the child.
    pub async fn kill(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        match killpg(self.pid, Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(std::io::Error::from(e)),
        }
        self.wait().await
    }

    /// SIGSTOP to the group: the process keeps its sockets but answers nothing.
    pub fn pause(&self) -> std::io::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT to the group.
    pub fn resume(&self) -> std::io::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// The last `lines` lines of the child's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // The group's SIGKILL, unless it ran already or the leader was reaped; tokio's
        // kill_on_drop then reaps the leader.
        drop(self.registration.take());
        forget_spawned(self.pid());
    }
}

/// The last `lines` lines of a file, or a note that it could not be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(log {} unreadable: {e})", path.display()),
    }
}

/// Whether a process with this pid exists (zombies count).
pub fn is_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Opens a log file for appending, creating its folder.
pub fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Finds `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn sh(script: &str, dir: &Path) -> ProcessSpec {
        ProcessSpec::new("/bin/sh", dir, dir.join("log"))
            .arg("-c")
            .arg(script)
    }

    #[tokio::test]
    async fn stop_ends_the_whole_group_including_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        // The grandchild ignores nothing, but the shell traps TERM and keeps running:
        // only the group kill after the grace period ends them both.
        let script = format!(
            "trap '' TERM; sleep 300 & echo $! > {}; wait",
            pidfile.display()
        );
        let mut child = ChildProcess::spawn(&sh(&script, dir.path())).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild never started"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let grandchild: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(is_alive(grandchild));
        let status = child.stop(Duration::from_millis(200)).await.unwrap();
        assert!(!status.success());
        // The grandchild was reparented; once killed, init reaps it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while is_alive(grandchild) && !is_zombie(grandchild) {
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild {grandchild} survived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn is_zombie(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn drop_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let child = ChildProcess::spawn(&sh("sleep 300", dir.path())).unwrap();
        let pid = child.pid();
        drop(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while is_alive(pid) && !is_zombie(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} survived drop"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The owner's kill and the stop-everything path race: the group is killed, and nothing
    /// is left for a later stop path to signal.
    #[tokio::test]
    async fn the_owner_and_stop_all_kill_a_group_once() {
        let dir = tempfile::tempdir().unwrap();
        let teardown = Teardown::new();
        let mut child = ChildProcess::spawn_in(&sh("sleep 30", dir.path()), &teardown).unwrap();
        let all = teardown.clone();
        let racing = std::thread::spawn(move || all.stop_all());
        let status = child.kill().await.unwrap();
        let by_stop_all = racing.join().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(by_stop_all <= 1);
        assert_eq!(
            teardown.stop_all(),
            0,
            "nothing left once the leader is reaped"
        );
    }

    /// A child that exited and was reaped is never signalled afterwards: its pid may be
    /// someone else's by then.
    #[tokio::test]
    async fn a_reaped_child_is_out_of_the_teardown() {
        let dir = tempfile::tempdir().unwrap();
        let teardown = Teardown::new();
        let mut child = ChildProcess::spawn_in(&sh("exit 3", dir.path()), &teardown).unwrap();
        assert_eq!(child.wait().await.unwrap().code(), Some(3));
        assert_eq!(teardown.stop_all(), 0);
        // Once everything was stopped, a child started late is killed as it registers.
        let mut late = ChildProcess::spawn_in(&sh("sleep 30", dir.path()), &teardown).unwrap();
        assert_eq!(late.wait().await.unwrap().signal(), Some(libc::SIGKILL));

        let teardown = Teardown::new();
        let mut running = ChildProcess::spawn_in(&sh("sleep 30", dir.path()), &teardown).unwrap();
        assert_eq!(
            teardown.stop_all(),
            1,
            "a running child is stopped by stop_all"
        );
        assert_eq!(running.wait().await.unwrap().signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn missing_program_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ProcessSpec::new(
            "/nonexistent/redis-server",
            dir.path(),
            dir.path().join("log"),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(async { ChildProcess::spawn(&spec).unwrap_err() });
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
