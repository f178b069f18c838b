//! The `local` backend: `redis-server` and the tansu Kafka broker as child processes.
//!
//! Each runs in its own process group and its own working directory (tansu reads `./.env`),
//! with an environment reduced to `PATH`, `HOME` and `TMPDIR` so that a stray variable cannot
//! reconfigure it. Every start picks a fresh loopback port; the proxy in front keeps the
//! address clients know, and tansu advertises that proxy address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::infra::{
    DependencyKind, InfraConfig, InfraError, LifecycleAction, NodeState, STOP_GRACE, cache_dir,
    free_port, wait_ready,
};
use crate::process::{ChildProcess, ProcessSpec, is_executable, which};

/// The tansu release the local backend and the local images are built from.
pub const TANSU_VERSION: &str = "0.6.0";

/// How many times a start is retried when another program took the chosen port first.
pub(super) const PORT_ATTEMPTS: usize = 3;

/// The tansu binary the set-up script installs: `<cache>/tansu-<version>/bin/tansu`.
pub fn cached_tansu() -> PathBuf {
    cache_dir()
        .join(format!("tansu-{TANSU_VERSION}"))
        .join("bin/tansu")
}

/// tansu's arguments: listen on 127.0.0.1:`port`, advertise `advertised`, keep its topics,
/// records, offsets and groups in the folder `data` (an absolute path), so that a broker
/// stopped and started again has them, as a Kafka broker does. The same for the local
/// backend, tansu images and clusters started by tests.
pub fn tansu_args(port: u16, advertised: SocketAddr, data: &Path) -> Vec<String> {
    [
        "broker".to_owned(),
        "--listener-url".to_owned(),
        format!("tcp://127.0.0.1:{port}"),
        "--advertised-listener-url".to_owned(),
        format!("tcp://{advertised}"),
        "--storage-engine".to_owned(),
        format!("file://{}", data.display()),
        "--silent".to_owned(),
    ]
    .into()
}

/// redis-server's arguments: listen on 127.0.0.1:`port`, never persist, scratch files in `dir`.
pub fn redis_args(port: u16, dir: &str) -> Vec<String> {
    let args = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir,
    ]
    .map(str::to_owned);
    args.into()
}

/// Finds the tansu binary: configured path, the set-up cache, then PATH.
pub fn find_tansu(config: &InfraConfig) -> Result<PathBuf, InfraError> {
    let hint = format!(
        "run ./scripts/setup (it builds tansu {TANSU_VERSION} with quiesce's patches, \
         patches/tansu-{TANSU_VERSION}/), or set QUIESCE_TANSU to the binary"
    );
    find_program(
        DependencyKind::Kafka,
        config.kafka.tansu.as_deref(),
        &[cached_tansu()],
        "tansu",
        hint,
    )
}

/// Finds redis-server: configured path, then PATH.
pub fn find_redis_server(config: &InfraConfig) -> Result<PathBuf, InfraError> {
    find_program(
        DependencyKind::Redis,
        config.redis.server.as_deref(),
        &[],
        "redis-server",
        "install Debian's redis-server package (./scripts/setup does), or set QUIESCE_REDIS_SERVER"
            .to_owned(),
    )
}

fn find_program(
    dependency: DependencyKind,
    configured: Option<&Path>,
    candidates: &[PathBuf],
    name: &str,
    hint: String,
) -> Result<PathBuf, InfraError> {
    if let Some(path) = configured {
        // A bare name is looked up on PATH, like a shell would.
        let found = if path.components().count() == 1 {
            which(&path.to_string_lossy())
        } else {
            is_executable(path).then(|| path.to_owned())
        };
        return found.ok_or_else(|| InfraError::ProgramMissing {
            dependency,
            program: path.to_owned(),
            hint,
        });
    }
    candidates
        .iter()
        .find(|c| is_executable(c))
        .cloned()
        .or_else(|| which(name))
        .ok_or_else(|| InfraError::ProgramMissing {
            dependency,
            program: PathBuf::from(name),
            hint,
        })
}

/// The two local nodes, with their programs resolved (so a missing one fails before any start).
pub(super) fn nodes(
    config: &InfraConfig,
    workdir: &Path,
) -> Result<(LocalNode, LocalNode), InfraError> {
    let tansu = find_tansu(config)?;
    let redis = find_redis_server(config)?;
    let timeout = config.ready_timeout();
    Ok((
        LocalNode::new(DependencyKind::Kafka, tansu, workdir, timeout)?,
        LocalNode::new(DependencyKind::Redis, redis, workdir, timeout)?,
    ))
}

/// A dependency run as a child process.
pub(super) struct LocalNode {
    kind: DependencyKind,
    program: PathBuf,
    /// The process's own working directory.
    cwd: PathBuf,
    log: PathBuf,
    /// The address Kafka advertises: its proxy's.
    advertised: Option<SocketAddr>,
    ready_timeout: Duration,
    child: Option<ChildProcess>,
    paused: bool,
}

impl LocalNode {
    fn new(
        kind: DependencyKind,
        program: PathBuf,
        workdir: &Path,
        ready_timeout: Duration,
    ) -> Result<Self, InfraError> {
        let cwd = workdir.join(kind.as_str());
        std::fs::create_dir_all(&cwd).map_err(InfraError::Workdir)?;
        Ok(LocalNode {
            kind,
            program,
            log: workdir.join(format!("{}.log", kind.as_str())),
            cwd,
            advertised: None,
            ready_timeout,
            child: None,
            paused: false,
        })
    }

    pub(super) fn set_advertised(&mut self, addr: SocketAddr) {
        self.advertised = Some(addr);
    }

    fn spec(&self, port: u16) -> ProcessSpec {
        let mut spec = ProcessSpec::new(&self.program, &self.cwd, &self.log).clear_env();
        for key in ["PATH", "HOME", "TMPDIR"] {
            if let Some(value) = std::env::var_os(key) {
                spec = spec.env(key, value);
            }
        }
        let args = match self.kind {
            DependencyKind::Redis => redis_args(port, &self.cwd.to_string_lossy()),
            DependencyKind::Kafka => tansu_args(
                port,
                self.advertised
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], port))),
                &self.cwd.join("data"),
            ),
        };
        args.into_iter().fold(spec, ProcessSpec::arg)
    }

    /// Starts the process on a fresh port and waits until it answers. Returns its address.
    pub(super) async fn start(&mut self) -> Result<SocketAddr, InfraError> {
        if let Some(child) = &mut self.child
            && child.try_exited().ok().flatten().is_none()
        {
            return Err(InfraError::Action {
                dependency: self.kind,
                action: LifecycleAction::Start,
                reason: format!("it is already running (pid {})", child.pid()),
            });
        }
        self.child = None;
        self.paused = false;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port().map_err(InfraError::Workdir)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let log_start = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
            let child =
                ChildProcess::spawn(&self.spec(port)).map_err(|source| InfraError::Spawn {
                    dependency: self.kind,
                    program: self.program.clone(),
                    source,
                })?;
            self.child = Some(child);
            let kind = self.kind;
            let log = self.log.clone();
            let child = self.child.as_mut().expect("just set");
            let waited = wait_ready(kind, addr, self.ready_timeout, || {
                let status = child.try_exited().ok().flatten()?;
                Some(InfraError::ExitedEarly {
                    dependency: kind,
                    status: status.to_string(),
                    log: log.clone(),
                    tail: child.log_tail(20),
                })
            })
            .await;
            match waited {
                Ok(_) => return Ok(addr),
                Err(InfraError::ExitedEarly { tail, .. })
                    if lost_port_race(&self.log, log_start) =>
                {
                    last = Some(tail);
                    self.child = None;
                }
                Err(InfraError::NotReady {
                    dependency,
                    timeout,
                    last,
                    ..
                }) => {
                    let tail = self
                        .child
                        .as_ref()
                        .map(|c| c.log_tail(20))
                        .unwrap_or_default();
                    self.kill_now().await;
                    return Err(InfraError::NotReady {
                        dependency,
                        timeout,
                        last,
                        tail: format!("; last lines of {}:\n{tail}", self.log.display()),
                    });
                }
                Err(e) => {
                    self.kill_now().await;
                    return Err(e);
                }
            }
        }
        Err(InfraError::Action {
            dependency: self.kind,
            action: LifecycleAction::Start,
            reason: format!(
                "lost the race for a free port {PORT_ATTEMPTS} times: {}",
                last.unwrap_or_default()
            ),
        })
    }

    async fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    pub(super) async fn act(&mut self, action: LifecycleAction) -> Result<(), InfraError> {
        let kind = self.kind;
        let failed = |reason: String| InfraError::Action {
            dependency: kind,
            action,
            reason,
        };
        let Some(child) = self.child.as_mut() else {
            return Err(failed("it is not running".to_owned()));
        };
        if child.try_exited().ok().flatten().is_some() {
            return Err(failed("it is not running".to_owned()));
        }
        match action {
            LifecycleAction::Stop => {
                child
                    .stop(STOP_GRACE)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                self.paused = false;
            }
            LifecycleAction::Kill => {
                child.kill().await.map_err(|e| failed(e.to_string()))?;
                self.paused = false;
            }
            LifecycleAction::Pause => {
                child.pause().map_err(|e| failed(e.to_string()))?;
                self.paused = true;
            }
            LifecycleAction::Resume => {
                child.resume().map_err(|e| failed(e.to_string()))?;
                self.paused = false;
            }
            LifecycleAction::Start => unreachable!("start is handled by Node::act"),
        }
        Ok(())
    }

    pub(super) fn describe(&mut self) -> NodeState {
        let alive = self
            .child
            .as_mut()
            .is_some_and(|child| child.try_exited().ok().flatten().is_none());
        match self.child.as_ref().filter(|_| alive) {
            Some(child) => NodeState {
                runner: format!("pid {}", child.pid()),
                pid: Some(child.pid()),
                running: true,
                paused: self.paused,
            },
            None => NodeState {
                runner: "not running".to_owned(),
                pid: None,
                running: false,
                paused: false,
            },
        }
    }

    pub(super) async fn close(&mut self) -> Result<(), InfraError> {
        if let Some(mut child) = self.child.take() {
            child
                .stop(STOP_GRACE)
                .await
                .map_err(|e| InfraError::Action {
                    dependency: self.kind,
                    action: LifecycleAction::Stop,
                    reason: e.to_string(),
                })?;
        }
        Ok(())
    }
}

/// Whether the log written since `from` says the port was taken.
fn lost_port_race(log: &Path, from: u64) -> bool {
    std::fs::read(log)
        .map(|bytes| {
            says_port_taken(&String::from_utf8_lossy(
                &bytes[(from as usize).min(bytes.len())..],
            ))
        })
        .unwrap_or(false)
}

/// Whether a dependency's output says the port it was given was taken by the time it bound:
/// the race between picking a free port and binding it, lost to another program.
pub(super) fn says_port_taken(output: &str) -> bool {
    let text = output.to_ascii_lowercase();
    text.contains("address already in use") || text.contains("addrinuse")
}
