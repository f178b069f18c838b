//! Real Kafka and Redis for a scenario, each behind a fault proxy whose address never changes.
//!
//! [`Infra::start`] chooses a backend, puts a [`FaultProxy`] in front of each dependency, starts
//! the dependencies and waits until each answers its protocol. From then on the target is given
//! only the proxies' addresses ([`Endpoints`]), so every fault works the same whatever the
//! backend:
//!
//! | backend | Kafka | Redis | lifecycle faults |
//! |---|---|---|---|
//! | `local` | `tansu` broker, child process | `redis-server`, child process | signals to the process group |
//! | `containers` | image (`apache/kafka-native` or a tansu image) | image (`redis`) | Docker stop/start/kill/pause |
//! | `external` | existing cluster | existing server | none: proxy faults only |
//!
//! `auto` picks `containers` when a Docker daemon answers a ping and `local` otherwise, and
//! says why. Everything started is stopped by [`Infra::close`], and by `Drop` if the harness
//! unwinds.

pub mod api;
mod config;
mod containers;
mod external;
pub mod images;
mod local;
pub mod ready;

/// Where the local backend finds its programs (also used to build the local images).
pub mod local_programs {
    pub use super::local::{
        TANSU_VERSION, cached_tansu, find_redis_server, find_tansu, redis_args, tansu_args,
    };
}

pub use config::{
    BackendKind, ConfigError, DEFAULT_KAFKA_IMAGE, DEFAULT_REDIS_IMAGE, InfraConfig, KafkaConfig,
    KafkaFlavor, RedisConfig, load as load_config, parse as parse_config, parse_listen, toml_error,
};
pub use containers::{LABEL_OWNER, LABEL_RUN, docker_ping, sweep_leftover_containers};

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::fault::{FaultError, FaultProxy};

/// Grace period between SIGTERM (or `docker stop`) and SIGKILL for a dependency.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The dependencies quiesce provides.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DependencyKind {
    Kafka,
    Redis,
}

impl DependencyKind {
    pub const ALL: [DependencyKind; 2] = [DependencyKind::Kafka, DependencyKind::Redis];

    pub fn as_str(self) -> &'static str {
        match self {
            DependencyKind::Kafka => "kafka",
            DependencyKind::Redis => "redis",
        }
    }
}

impl fmt::Display for DependencyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DependencyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kafka" => Ok(DependencyKind::Kafka),
            "redis" => Ok(DependencyKind::Redis),
            _ => Err(format!(
                "unknown dependency `{s}` (expected kafka or redis)"
            )),
        }
    }
}

/// What can be done to a dependency itself (as opposed to the network in front of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LifecycleAction {
    /// Graceful stop: SIGTERM / `docker stop`.
    Stop,
    /// Start again after a stop or kill; clients keep the same address.
    Start,
    /// SIGKILL / `docker kill`: a crash.
    Kill,
    /// SIGSTOP / `docker pause`: alive, sockets open, answers nothing.
    Pause,
    /// SIGCONT / `docker unpause`.
    Resume,
}

impl LifecycleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleAction::Stop => "stop",
            LifecycleAction::Start => "start",
            LifecycleAction::Kill => "kill",
            LifecycleAction::Pause => "pause",
            LifecycleAction::Resume => "resume",
        }
    }
}

impl fmt::Display for LifecycleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LifecycleAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stop" => Ok(LifecycleAction::Stop),
            "start" => Ok(LifecycleAction::Start),
            "kill" => Ok(LifecycleAction::Kill),
            "pause" => Ok(LifecycleAction::Pause),
            "resume" => Ok(LifecycleAction::Resume),
            _ => Err(format!(
                "unknown action `{s}` (expected stop, start, kill, pause or resume)"
            )),
        }
    }
}

/// A Redis `url` with its host and port replaced by `addr` (user, password and database kept).
pub fn with_addr(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!("{scheme}://{}{addr}{path}", user.unwrap_or_default())
}

/// What a running infrastructure gives the target: the proxies' addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoints {
    /// `host:port` of the Kafka proxy; the broker advertises this address.
    pub kafka_bootstrap: String,
    /// `redis://…` URL of the Redis proxy (credentials and database of an external URL kept).
    pub redis_url: String,
}

impl Endpoints {
    /// The environment variables a target reads, in a stable order.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("QUIESCE_KAFKA_BOOTSTRAP", self.kafka_bootstrap.clone()),
            ("QUIESCE_REDIS_URL", self.redis_url.clone()),
        ]
    }

    /// `export NAME='value'` lines for a POSIX shell.
    pub fn shell_exports(&self) -> String {
        self.env()
            .into_iter()
            .map(|(k, v)| format!("export {k}='{}'\n", v.replace('\'', r"'\''")))
            .collect()
    }
}

/// Something the harness could not do. A failed check is never one of these.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{dependency}: program `{program}` not found (hint: {hint})")]
    ProgramMissing {
        dependency: DependencyKind,
        program: PathBuf,
        hint: String,
    },
    #[error("no Docker daemon answers: {reason} (hint: start Docker, or use --backend local)")]
    DockerUnavailable { reason: String },
    #[error(
        "{dependency}: image `{image}` is not present and could not be pulled: {reason} (hint: {hint})"
    )]
    ImageMissing {
        dependency: DependencyKind,
        image: String,
        reason: String,
        hint: String,
    },
    #[error("building image `{image}` failed: {reason}")]
    ImageBuild { image: String, reason: String },
    #[error("{dependency}: cannot start `{program}`: {source}")]
    Spawn {
        dependency: DependencyKind,
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("{dependency} exited during startup ({status}); last lines of {log}:\n{tail}")]
    ExitedEarly {
        dependency: DependencyKind,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "{dependency} did not answer its protocol within {timeout:?} (last attempt: {last}){tail}"
    )]
    NotReady {
        dependency: DependencyKind,
        timeout: Duration,
        last: String,
        /// The log tail, with its heading, or empty.
        tail: String,
    },
    #[error(
        "kafka advertises {advertised} instead of its proxy {proxy}: clients would bypass the proxy and its faults"
    )]
    AdvertisedAddress { advertised: String, proxy: String },
    #[error("{dependency}: {action} failed: {reason}")]
    Action {
        dependency: DependencyKind,
        action: LifecycleAction,
        reason: String,
    },
    #[error(
        "the {backend} backend cannot {action} {dependency}: it does not own it (hint: use a proxy fault such as `down` or `timeout`)"
    )]
    Unsupported {
        backend: BackendKind,
        dependency: DependencyKind,
        action: LifecycleAction,
    },
    #[error("{dependency}: external address `{address}`: {reason}")]
    External {
        dependency: DependencyKind,
        address: String,
        reason: String,
    },
    #[error("docker: {0}")]
    Docker(String),
    #[error("{dependency} proxy: {source}")]
    Proxy {
        dependency: DependencyKind,
        #[source]
        source: FaultError,
    },
    #[error("cannot create a working directory: {0}")]
    Workdir(#[source] std::io::Error),
    #[error("fault API: {0}")]
    Api(#[source] FaultError),
}

impl InfraError {
    /// The exit code the CLI reports for this error (see [`crate::exit_codes`]).
    pub fn exit_code(&self) -> i32 {
        use crate::exit_codes::*;
        match self {
            InfraError::Config(_)
            | InfraError::Unsupported { .. }
            | InfraError::External { .. } => BAD_INPUT,
            InfraError::ProgramMissing { .. }
            | InfraError::DockerUnavailable { .. }
            | InfraError::ImageMissing { .. } => PREREQUISITE_MISSING,
            InfraError::Proxy {
                source: FaultError::AddressInUse { .. },
                ..
            }
            | InfraError::Api(FaultError::AddressInUse { .. }) => ADDRESS_IN_USE,
            _ => INFRA_FAILED,
        }
    }
}

/// A dependency as the harness sees it now.
#[derive(Clone, Debug, Serialize)]
pub struct DependencyStatus {
    pub dependency: DependencyKind,
    /// The address clients use (the proxy).
    pub endpoint: SocketAddr,
    /// Where the proxy forwards to.
    pub upstream: SocketAddr,
    /// What runs it: `pid 1234`, `container 3f2a…`, or `external`.
    pub runner: String,
    /// The process, where the harness knows it (local: the child; containers: its main
    /// process as the host sees it).
    pub pid: Option<u32>,
    pub running: bool,
    pub paused: bool,
    /// Resident memory in bytes, where it can be read.
    pub rss_bytes: Option<u64>,
    pub proxy_enabled: bool,
}

/// What a node says of itself.
pub(crate) struct NodeState {
    pub(crate) runner: String,
    pub(crate) pid: Option<u32>,
    pub(crate) running: bool,
    pub(crate) paused: bool,
}

/// The thing behind a proxy, one variant per backend.
#[expect(
    clippy::large_enum_variant,
    reason = "an infrastructure holds two nodes; boxing would buy nothing"
)]
enum Node {
    Local(local::LocalNode),
    Container(containers::ContainerNode),
    External(external::ExternalNode),
}

impl Node {
    async fn start(&mut self) -> Result<SocketAddr, InfraError> {
        match self {
            Node::Local(n) => n.start().await,
            Node::Container(n) => n.start().await,
            Node::External(n) => Ok(n.upstream()),
        }
    }

    async fn act(&mut self, action: LifecycleAction) -> Result<Option<SocketAddr>, InfraError> {
        match (self, action) {
            (Node::External(n), action) => Err(InfraError::Unsupported {
                backend: BackendKind::External,
                dependency: n.kind(),
                action,
            }),
            (node, LifecycleAction::Start) => node.start().await.map(Some),
            (Node::Local(n), action) => n.act(action).await.map(|()| None),
            (Node::Container(n), action) => n.act(action).await.map(|()| None),
        }
    }

    fn describe(&mut self) -> NodeState {
        match self {
            Node::Local(n) => n.describe(),
            Node::Container(n) => n.describe(),
            Node::External(_) => NodeState {
                runner: "external".to_owned(),
                pid: None,
                running: true,
                paused: false,
            },
        }
    }

    async fn close(&mut self) -> Result<(), InfraError> {
        match self {
            Node::Local(n) => n.close().await,
            Node::Container(n) => n.close().await,
            Node::External(_) => Ok(()),
        }
    }
}

/// One dependency: its proxy and what runs behind it.
struct Dependency {
    kind: DependencyKind,
    proxy: FaultProxy,
    node: Node,
}

/// A running Kafka and Redis, each behind its fault proxy.
pub struct Infra {
    backend: BackendKind,
    reason: String,
    deps: Vec<Dependency>,
    endpoints: Endpoints,
    workdir: tempfile::TempDir,
    started_in: Duration,
    closed: bool,
}

impl fmt::Debug for Infra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Infra")
            .field("backend", &self.backend)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// The backend `auto` resolves to, and why.
pub async fn choose_backend(requested: BackendKind) -> Result<(BackendKind, String), InfraError> {
    match requested {
        BackendKind::Auto => match docker_ping().await {
            Ok(daemon) => Ok((
                BackendKind::Containers,
                format!("auto: a Docker daemon answered ({daemon})"),
            )),
            Err(reason) => Ok((
                BackendKind::Local,
                format!("auto: no Docker daemon answered ({reason})"),
            )),
        },
        BackendKind::Containers => match docker_ping().await {
            Ok(daemon) => Ok((
                BackendKind::Containers,
                format!("requested; Docker answered ({daemon})"),
            )),
            Err(reason) => Err(InfraError::DockerUnavailable { reason }),
        },
        other => Ok((other, "requested".to_owned())),
    }
}

impl Infra {
    /// Chooses the backend, starts both dependencies behind their proxies and waits until both
    /// answer. On error, whatever was started is stopped before returning.
    pub async fn start(config: &InfraConfig) -> Result<Infra, InfraError> {
        let began = Instant::now();
        let (backend, reason) = choose_backend(config.backend).await?;
        let workdir = tempfile::Builder::new()
            .prefix("quiesce-infra-")
            .tempdir()
            .map_err(InfraError::Workdir)?;

        // Resolve everything that can fail on bad input before anything starts.
        let mut nodes = match backend {
            BackendKind::Local => {
                let (kafka, redis) = local::nodes(config, workdir.path())?;
                vec![Node::Local(kafka), Node::Local(redis)]
            }
            BackendKind::Containers => {
                containers::sweep_leftover_containers().await;
                let (kafka, redis) = containers::nodes(config, workdir.path()).await?;
                vec![Node::Container(kafka), Node::Container(redis)]
            }
            BackendKind::External => {
                let (kafka, redis) = external::nodes(config).await?;
                vec![Node::External(kafka), Node::External(redis)]
            }
            BackendKind::Auto => unreachable!("choose_backend never returns auto"),
        };

        let listen = [config.kafka.listen, config.redis.listen];
        let mut proxies = Vec::with_capacity(2);
        for (kind, listen) in DependencyKind::ALL.into_iter().zip(listen) {
            let listen = listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
            // Until the dependency runs, the proxy forwards to a closed port: clients that come
            // early see their connection closed, as with a dependency that is down.
            let placeholder = SocketAddr::from(([127, 0, 0, 1], 1));
            let proxy = FaultProxy::start(kind.as_str(), listen, placeholder)
                .await
                .map_err(|source| InfraError::Proxy {
                    dependency: kind,
                    source,
                })?;
            proxies.push(proxy);
        }
        for (node, proxy) in nodes.iter_mut().zip(&proxies) {
            match node {
                Node::Local(n) => n.set_advertised(proxy.listen_addr()),
                Node::Container(n) => n.set_advertised(proxy.listen_addr()),
                Node::External(_) => {}
            }
        }

        let deps: Vec<Dependency> = DependencyKind::ALL
            .into_iter()
            .zip(proxies)
            .zip(nodes)
            .map(|((kind, proxy), node)| Dependency { kind, proxy, node })
            .collect();

        let endpoints = Endpoints {
            kafka_bootstrap: deps[0].proxy.listen_addr().to_string(),
            redis_url: match &deps[1].node {
                Node::External(n) => n.client_url(deps[1].proxy.listen_addr()),
                _ => format!("redis://{}", deps[1].proxy.listen_addr()),
            },
        };

        let mut infra = Infra {
            backend,
            reason,
            deps,
            endpoints,
            workdir,
            started_in: Duration::ZERO,
            closed: false,
        };
        // Both dependencies start at once; the first error wins and everything is stopped.
        let (kafka, redis) = {
            let (a, b) = infra.deps.split_at_mut(1);
            tokio::join!(a[0].node.start(), b[0].node.start())
        };
        let started = kafka.and_then(|k| redis.map(|r| (k, r)));
        let (kafka_up, redis_up) = match started {
            Ok(pair) => pair,
            Err(e) => {
                let _ = infra.close().await;
                return Err(e);
            }
        };
        infra.deps[0].proxy.set_upstream(kafka_up);
        infra.deps[1].proxy.set_upstream(redis_up);
        if let Err(e) = infra.check_advertised(config.ready_timeout()).await {
            let _ = infra.close().await;
            return Err(e);
        }
        infra.started_in = began.elapsed();
        Ok(infra)
    }

    /// The broker must advertise the proxy, or clients bypass it after bootstrap. The local
    /// and containers backends configure that; for an external cluster it is reported.
    async fn check_advertised(&self, timeout: Duration) -> Result<(), InfraError> {
        let proxy = self.deps[0].proxy.listen_addr();
        let ready = wait_ready(DependencyKind::Kafka, proxy, timeout, || None).await?;
        let Some(brokers) = ready.brokers else {
            return Ok(());
        };
        let wrong: Vec<String> = brokers
            .iter()
            .map(|b| b.address())
            .filter(|a| *a != proxy.to_string())
            .collect();
        if wrong.is_empty() {
            return Ok(());
        }
        if self.backend == BackendKind::External {
            tracing::warn!(
                "external kafka advertises {}; proxy faults reach only the bootstrap connection",
                wrong.join(", ")
            );
            return Ok(());
        }
        Err(InfraError::AdvertisedAddress {
            advertised: wrong.join(", "),
            proxy: proxy.to_string(),
        })
    }

    /// The backend in use (never `auto`).
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// Why this backend was chosen.
    pub fn backend_reason(&self) -> &str {
        &self.reason
    }

    /// What to give the target.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// How long `start` took, from the call to both dependencies answering through the proxies.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Where logs of the dependencies are written (removed when the `Infra` is dropped).
    pub fn workdir(&self) -> &std::path::Path {
        self.workdir.path()
    }

    /// This run's id: the value of the [`LABEL_RUN`] label on its containers.
    pub fn run_id(&self) -> String {
        run_id(self.workdir.path())
    }

    fn dep(&mut self, kind: DependencyKind) -> &mut Dependency {
        self.deps
            .iter_mut()
            .find(|d| d.kind == kind)
            .expect("every dependency kind is present")
    }

    /// The fault proxy in front of `kind`.
    pub fn proxy(&self, kind: DependencyKind) -> &FaultProxy {
        &self
            .deps
            .iter()
            .find(|d| d.kind == kind)
            .expect("every dependency kind is present")
            .proxy
    }

    /// Stops, starts, kills, pauses or resumes a dependency. `start` waits until it answers
    /// again, behind the same proxy address.
    pub async fn act(
        &mut self,
        kind: DependencyKind,
        action: LifecycleAction,
    ) -> Result<(), InfraError> {
        let dep = self.dep(kind);
        if let Some(upstream) = dep.node.act(action).await? {
            dep.proxy.set_upstream(upstream);
        }
        Ok(())
    }

    /// Each dependency's state now.
    pub fn status(&mut self) -> Vec<DependencyStatus> {
        self.deps
            .iter_mut()
            .map(|d| {
                let state = d.node.describe();
                let rss_bytes = state
                    .pid
                    .filter(|_| state.running)
                    .and_then(quiesce_soak::sample_process)
                    .map(|s| s.rss_bytes);
                DependencyStatus {
                    dependency: d.kind,
                    endpoint: d.proxy.listen_addr(),
                    upstream: d.proxy.upstream(),
                    runner: state.runner,
                    pid: state.pid,
                    running: state.running,
                    paused: state.paused,
                    rss_bytes,
                    proxy_enabled: d.proxy.is_enabled(),
                }
            })
            .collect()
    }

    /// Stops every dependency and proxy. Idempotent; the first error is returned after
    /// everything was tried.
    pub async fn close(&mut self) -> Result<(), InfraError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let mut first = Ok(());
        for dep in &mut self.deps {
            dep.proxy.close().await;
            if let Err(e) = dep.node.close().await
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

/// Polls the protocol at `addr` until it answers, `exited` reports the process gone, or
/// `timeout` passes. Backs off from 10 ms to 200 ms between attempts.
pub(crate) async fn wait_ready(
    kind: DependencyKind,
    addr: SocketAddr,
    timeout: Duration,
    mut exited: impl FnMut() -> Option<InfraError>,
) -> Result<ready::KafkaReady, InfraError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        let attempt = match kind {
            DependencyKind::Kafka => ready::kafka_metadata(addr).await,
            DependencyKind::Redis => ready::redis_ping(addr)
                .await
                .map(|()| ready::KafkaReady { brokers: None }),
        };
        let last = match attempt {
            Ok(ready) => return Ok(ready),
            Err(e) => e.to_string(),
        };
        if let Some(e) = exited() {
            return Err(e);
        }
        if tokio::time::Instant::now() + pause > deadline {
            return Err(InfraError::NotReady {
                dependency: kind,
                timeout,
                last,
                tail: String::new(),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// The run id of an infrastructure whose working directory is `workdir`.
pub(crate) fn run_id(workdir: &std::path::Path) -> String {
    workdir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A free TCP port on 127.0.0.1 (bound, then released; a caller that loses the race retries).
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The cache folder quiesce and its set-up script share: `$XDG_CACHE_HOME/quiesce` or
/// `~/.cache/quiesce`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("QUIESCE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("quiesce")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/quiesce")))
        .unwrap_or_else(|| PathBuf::from("/tmp/quiesce-cache"))
}
