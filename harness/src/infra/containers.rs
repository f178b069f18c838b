//! The `containers` backend: Kafka and Redis as containers, through testcontainers.
//!
//! Containers use host networking and listen on a loopback port chosen by the harness. That
//! keeps the dependency's address the same across `docker stop` / `docker start` (with mapped
//! ports a restart can change the mapping, a known testcontainers pitfall), and keeps all
//! traffic on 127.0.0.1.
//!
//! Every container carries the labels [`LABEL_OWNER`] (this harness process, as pid and start
//! time) and [`LABEL_RUN`]. A harness that was killed before it could clean up leaves labelled
//! containers behind; the next start removes those whose owner is gone
//! ([`sweep_leftover_containers`]). testcontainers' own `watchdog` feature is not used: it ends
//! the process on SIGINT before our graceful stop has finished.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use testcontainers::bollard::Docker;
use testcontainers::bollard::query_parameters::{
    CreateImageOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::infra::local::{PORT_ATTEMPTS, redis_args, says_port_taken, tansu_args};
use crate::infra::{
    DependencyKind, InfraConfig, InfraError, KafkaFlavor, LifecycleAction, NodeState, free_port,
    run_id, wait_ready,
};

/// Label naming the harness process that owns a container: `PID:STARTTIME`.
pub const LABEL_OWNER: &str = "quiesce.owner";
/// Label naming the infrastructure run a container belongs to.
pub const LABEL_RUN: &str = "quiesce.run";
/// How long a missing image may take to pull before we give up on it.
const PULL_TIMEOUT: Duration = Duration::from_secs(60);
/// Seconds `docker stop` waits before it kills.
const STOP_TIMEOUT_SECS: i32 = 10;
/// How often a starting container is asked whether it is still running.
const EXIT_POLL: Duration = Duration::from_millis(250);

fn docker() -> Result<Docker, String> {
    Docker::connect_with_local_defaults().map_err(|e| e.to_string())
}

/// Pings the Docker daemon (2 s budget). Returns a description of it.
pub async fn docker_ping() -> Result<String, String> {
    let docker = docker()?;
    match tokio::time::timeout(Duration::from_secs(2), docker.version()).await {
        Ok(Ok(version)) => Ok(format!(
            "Docker {}",
            version
                .version
                .unwrap_or_else(|| "of unknown version".to_owned())
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".to_owned()),
    }
}

/// This process as an owner label value: pid and start time, so a reused pid is not mistaken
/// for us.
fn owner_label(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 of stat is starttime; `rest` starts at field 3.
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid}:{start}"))
}

fn owner_alive(label: &str) -> bool {
    let Some(pid) = label.split(':').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    owner_label(pid).as_deref() == Some(label)
}

/// Removes labelled containers whose owning harness process is gone. Never touches a
/// container of a harness that is still running. Errors are logged, not returned: a sweep
/// that cannot run must not stop a run.
pub async fn sweep_leftover_containers() -> usize {
    let Ok(docker) = docker() else { return 0 };
    let filters = HashMap::from([("label", vec![LABEL_OWNER])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(list) = docker.list_containers(Some(options)).await else {
        return 0;
    };
    let mut removed = 0;
    for container in list {
        let owner = container
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_OWNER))
            .cloned()
            .unwrap_or_default();
        let Some(id) = container.id else { continue };
        if owner_alive(&owner) {
            continue;
        }
        let remove = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(&id, Some(remove)).await {
            Ok(()) => {
                removed += 1;
                tracing::warn!(container = %id, owner = %owner, "removed a container left by a harness that is gone");
            }
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "could not remove a leftover container")
            }
        }
    }
    removed
}

/// Splits `repo[:tag]` (the repo may contain a registry `host:port/`).
pub(crate) fn split_image(image: &str) -> (String, String) {
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => (
            image[..slash + i].to_owned(),
            image[slash + i + 1..].to_owned(),
        ),
        None => (image.to_owned(), "latest".to_owned()),
    }
}

/// Makes sure `image` is present locally, pulling it (bounded in time) if it is not.
async fn ensure_image(
    docker: &Docker,
    kind: DependencyKind,
    image: &str,
) -> Result<(), InfraError> {
    if docker.inspect_image(image).await.is_ok() {
        return Ok(());
    }
    let (repo, tag) = split_image(image);
    let options = CreateImageOptionsBuilder::new()
        .from_image(&repo)
        .tag(&tag)
        .build();
    let pull = async {
        let mut stream = docker.create_image(Some(options), None, None);
        while let Some(step) = stream.next().await {
            step.map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    };
    let reason = match tokio::time::timeout(PULL_TIMEOUT, pull).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e,
        Err(_) => format!("the pull took longer than {PULL_TIMEOUT:?}"),
    };
    let var = match kind {
        DependencyKind::Kafka => "QUIESCE_KAFKA_IMAGE",
        DependencyKind::Redis => "QUIESCE_REDIS_IMAGE",
    };
    Err(InfraError::ImageMissing {
        dependency: kind,
        image: image.to_owned(),
        reason,
        hint: format!(
            "build local images with `quiesce images build` and set {var} to the one it prints, or use --backend local"
        ),
    })
}

/// Both container nodes; their images are checked (and pulled if they can be) before either
/// starts.
pub(super) async fn nodes(
    config: &InfraConfig,
    workdir: &Path,
) -> Result<(ContainerNode, ContainerNode), InfraError> {
    let docker = docker().map_err(|reason| InfraError::DockerUnavailable { reason })?;
    let kafka_image = config.kafka_image().to_owned();
    let redis_image = config.redis_image().to_owned();
    ensure_image(&docker, DependencyKind::Kafka, &kafka_image).await?;
    ensure_image(&docker, DependencyKind::Redis, &redis_image).await?;
    let me = std::process::id();
    let owner = owner_label(me).unwrap_or_else(|| format!("{me}:0"));
    let run = run_id(workdir);
    let labels = vec![(LABEL_OWNER.to_owned(), owner), (LABEL_RUN.to_owned(), run)];
    let node = |kind, image: String, flavor| ContainerNode {
        kind,
        image,
        flavor,
        port: 0,
        controller_port: 0,
        broker_port: 0,
        advertised: None,
        labels: labels.clone(),
        ready_timeout: config.ready_timeout(),
        log: workdir.join(format!("{kind}.log")),
        docker: docker.clone(),
        container: None,
        host_pid: None,
        paused: false,
        running: false,
    };
    Ok((
        node(
            DependencyKind::Kafka,
            kafka_image,
            Some(config.kafka_flavor()),
        ),
        node(DependencyKind::Redis, redis_image, None),
    ))
}

/// The `apache/kafka` image's settings (`KAFKA_*` variables, each a `server.properties` key
/// with `.` as `_`) for one KRaft node that is broker and controller: clients on `port`,
/// told to use `advertised` (the fault proxy); the broker's own traffic on `broker_port`,
/// advertised as itself, so it never crosses the proxy; the controller on `controller_port`.
fn apache_env(
    port: u16,
    broker_port: u16,
    controller_port: u16,
    advertised: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_NODE_ID", "1".to_owned()),
        ("KAFKA_PROCESS_ROLES", "broker,controller".to_owned()),
        (
            "KAFKA_LISTENERS",
            format!(
                "PLAINTEXT://127.0.0.1:{port},BROKER://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}"
            ),
        ),
        (
            "KAFKA_ADVERTISED_LISTENERS",
            format!("PLAINTEXT://{advertised},BROKER://127.0.0.1:{broker_port}"),
        ),
        (
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "CONTROLLER:PLAINTEXT,BROKER:PLAINTEXT,PLAINTEXT:PLAINTEXT".to_owned(),
        ),
        ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".to_owned()),
        ("KAFKA_INTER_BROKER_LISTENER_NAME", "BROKER".to_owned()),
        (
            "KAFKA_CONTROLLER_QUORUM_VOTERS",
            format!("1@127.0.0.1:{controller_port}"),
        ),
        ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1".to_owned()),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1".to_owned()),
        (
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "1".to_owned(),
        ),
        ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".to_owned()),
        ("CLUSTER_ID", "NDQzODg3NjI0NTA1MjM3Mz".to_owned()),
    ]
}

/// A dependency run as a container.
pub(super) struct ContainerNode {
    kind: DependencyKind,
    image: String,
    flavor: Option<KafkaFlavor>,
    /// The loopback port the dependency listens on (host networking), fixed at first start.
    port: u16,
    /// Apache Kafka's KRaft controller port.
    controller_port: u16,
    /// Apache Kafka's listener for its own traffic (inter-broker, transaction markers): never
    /// behind the fault proxy, so a Kafka fault cuts the clients off, not the broker itself.
    broker_port: u16,
    advertised: Option<SocketAddr>,
    labels: Vec<(String, String)>,
    ready_timeout: Duration,
    /// Where the container's output is saved when it fails or is closed.
    log: PathBuf,
    docker: Docker,
    container: Option<ContainerAsync<GenericImage>>,
    /// The container's main process as the host sees it, for memory readings.
    host_pid: Option<u32>,
    paused: bool,
    running: bool,
}

impl ContainerNode {
    pub(super) fn set_advertised(&mut self, addr: SocketAddr) {
        self.advertised = Some(addr);
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The container request for this dependency and flavor.
    fn request(&self) -> testcontainers::ContainerRequest<GenericImage> {
        let (repo, tag) = split_image(&self.image);
        let image = GenericImage::new(repo, tag).with_wait_for(WaitFor::Nothing);
        let port = self.port;
        let advertised = self
            .advertised
            .map_or_else(|| self.addr().to_string(), |a| a.to_string());
        let request = match (self.kind, self.flavor) {
            (DependencyKind::Redis, _) => {
                let mut cmd = vec!["redis-server".to_owned()];
                cmd.extend(redis_args(self.port, "/tmp"));
                image.with_cmd(cmd)
            }
            // The data in the container's own layer: kept across `docker stop` and start.
            (DependencyKind::Kafka, Some(KafkaFlavor::Tansu)) => image.with_cmd(tansu_args(
                self.port,
                self.advertised.unwrap_or(self.addr()),
                Path::new("/tmp/tansu"),
            )),
            // Apache Kafka in KRaft mode, one node that is broker and controller, as the
            // testcontainers Kafka modules configure it, advertising the proxy to clients.
            (DependencyKind::Kafka, _) => {
                let env = apache_env(port, self.broker_port, self.controller_port, &advertised);
                let mut request: testcontainers::ContainerRequest<GenericImage> = image.into();
                for (key, value) in env {
                    request = request.with_env_var(key, value);
                }
                request
            }
        };
        request
            .with_network("host")
            .with_labels(self.labels.clone())
            .with_startup_timeout(self.ready_timeout)
    }

    /// Creates and starts the container the first time, starts it again after a stop or kill,
    /// and waits until it answers. Returns its address.
    pub(super) async fn start(&mut self) -> Result<SocketAddr, InfraError> {
        if self.running {
            return Err(InfraError::Action {
                dependency: self.kind,
                action: LifecycleAction::Start,
                reason: "it is already running".to_owned(),
            });
        }
        if let Some(container) = &self.container {
            // A restart: the same ports (host networking), the proxy's upstream unchanged.
            container.start().await.map_err(|e| self.docker_error(e))?;
            return self.until_ready().await;
        }
        let mut lost = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port().map_err(InfraError::Workdir)?;
            self.controller_port = free_port().map_err(InfraError::Workdir)?;
            self.broker_port = free_port().map_err(InfraError::Workdir)?;
            let container = self
                .request()
                .start()
                .await
                .map_err(|e| self.docker_error(e))?;
            self.container = Some(container);
            match self.until_ready().await {
                Err(InfraError::ExitedEarly { tail, .. }) if says_port_taken(&tail) => {
                    // Another program took a port between the pick and the bind: dropping
                    // the container removes it; try fresh ports.
                    lost.push(self.port);
                    self.container = None;
                    self.running = false;
                }
                done => return done,
            }
        }
        Err(InfraError::Docker(format!(
            "{} ({}): lost the race for free ports {PORT_ATTEMPTS} times (ports {lost:?} were taken before the container bound them)",
            self.kind, self.image
        )))
    }

    /// Waits until the started container answers its protocol, or has exited (noticed within
    /// a quarter of a second, not at the end of the ready timeout), with its output saved.
    async fn until_ready(&mut self) -> Result<SocketAddr, InfraError> {
        self.running = true;
        self.paused = false;
        self.host_pid = self.read_host_pid().await;
        let addr = self.addr();
        let waited = tokio::select! {
            waited = wait_ready(self.kind, addr, self.ready_timeout, || None) => waited.map(|_| addr),
            exited = self.exited() => Err(exited),
        };
        match waited {
            Err(InfraError::NotReady {
                dependency,
                timeout,
                last,
                ..
            }) => {
                let tail = self.save_logs().await;
                Err(InfraError::NotReady {
                    dependency,
                    timeout,
                    last,
                    tail: format!("; last lines of the container's output:\n{tail}"),
                })
            }
            Err(e) => {
                self.running = false;
                Err(e)
            }
            ok => ok,
        }
    }

    /// Yields once the container is no longer running: how it ended and its last output.
    async fn exited(&self) -> InfraError {
        loop {
            tokio::time::sleep(EXIT_POLL).await;
            let Some(container) = &self.container else {
                continue;
            };
            let Ok(inspect) = self.docker.inspect_container(container.id(), None).await else {
                continue;
            };
            let Some(state) = inspect.state else { continue };
            if state.running == Some(false) && state.restarting != Some(true) {
                return InfraError::ExitedEarly {
                    dependency: self.kind,
                    status: match state.exit_code {
                        Some(code) => format!("exit code {code}"),
                        None => "exited".to_owned(),
                    },
                    log: self.log.clone(),
                    tail: self.save_logs().await,
                };
            }
        }
    }

    fn docker_error(&self, e: impl std::fmt::Display) -> InfraError {
        InfraError::Docker(format!("{} ({}): {e}", self.kind, self.image))
    }

    async fn read_host_pid(&self) -> Option<u32> {
        let id = self.container.as_ref()?.id();
        let inspect = self.docker.inspect_container(id, None).await.ok()?;
        let pid = inspect.state?.pid?;
        (pid > 0).then_some(pid as u32)
    }

    /// Writes the container's output to its log file and returns the last lines.
    async fn save_logs(&self) -> String {
        let Some(container) = &self.container else {
            return String::new();
        };
        let mut out = container.stdout_to_vec().await.unwrap_or_default();
        out.extend(container.stderr_to_vec().await.unwrap_or_default());
        let _ = std::fs::write(&self.log, &out);
        crate::process::log_tail(&self.log, 20)
    }

    pub(super) async fn act(&mut self, action: LifecycleAction) -> Result<(), InfraError> {
        let kind = self.kind;
        let failed = |reason: String| InfraError::Action {
            dependency: kind,
            action,
            reason,
        };
        let Some(container) = &self.container else {
            return Err(failed("it was never started".to_owned()));
        };
        if !self.running {
            return Err(failed("it is not running".to_owned()));
        }
        match action {
            LifecycleAction::Stop => {
                if self.paused {
                    container
                        .unpause()
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                }
                container
                    .stop_with_timeout(Some(STOP_TIMEOUT_SECS))
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                self.running = false;
                self.paused = false;
            }
            LifecycleAction::Kill => {
                let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
                self.docker
                    .kill_container(container.id(), Some(options))
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                self.running = false;
                self.paused = false;
            }
            // Pausing what is paused and resuming what runs do nothing, as on the local
            // backend (Docker itself refuses both), so a schedule plays the same on either.
            LifecycleAction::Pause if self.paused => {}
            LifecycleAction::Resume if !self.paused => {}
            LifecycleAction::Pause => {
                container.pause().await.map_err(|e| failed(e.to_string()))?;
                self.paused = true;
            }
            LifecycleAction::Resume => {
                container
                    .unpause()
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                self.paused = false;
            }
            LifecycleAction::Start => unreachable!("start is handled by Node::act"),
        }
        Ok(())
    }

    pub(super) fn describe(&mut self) -> NodeState {
        let Some(container) = &self.container else {
            return NodeState {
                runner: "no container".to_owned(),
                pid: None,
                running: false,
                paused: false,
            };
        };
        let id: String = container.id().chars().take(12).collect();
        NodeState {
            runner: format!("container {id}"),
            pid: self.host_pid,
            running: self.running,
            paused: self.paused,
        }
    }

    /// Removes the container (force), keeping its output in the log file.
    pub(super) async fn close(&mut self) -> Result<(), InfraError> {
        if self.container.is_some() {
            self.save_logs().await;
        }
        if let Some(container) = self.container.take() {
            let id = container.id().to_owned();
            // Removal through bollard, so that a daemon error is ours to report; then the
            // handle must not try again on drop.
            let options = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            let removed = self.docker.remove_container(&id, Some(options)).await;
            std::mem::forget(container);
            self.running = false;
            removed.map_err(|e| {
                InfraError::Docker(format!("removing {} container {id}: {e}", self.kind))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::apache_env;
    use crate::infra::ready::AdvertisedBroker;

    /// The image's settings as the `server.properties` keys it writes them to.
    fn properties(env: &[(&str, String)]) -> std::collections::BTreeMap<String, String> {
        env.iter()
            .filter_map(|(k, v)| {
                let key = k
                    .strip_prefix("KAFKA_")?
                    .to_ascii_lowercase()
                    .replace('_', ".");
                Some((key, v.clone()))
            })
            .collect()
    }

    /// name -> host:port of a `listeners`-style list.
    fn listeners(list: &str) -> std::collections::BTreeMap<String, String> {
        list.split(',')
            .map(|l| {
                let (name, addr) = l.split_once("://").expect("NAME://host:port");
                (name.to_owned(), addr.to_owned())
            })
            .collect()
    }

    /// The broker's own traffic once went through its advertised address, the fault proxy: a
    /// Kafka fault then cut the broker off from itself (transaction markers among it).
    #[test]
    fn the_apache_broker_talks_to_itself_past_the_proxy() {
        let props = properties(&apache_env(9092, 9093, 9094, "127.0.0.1:7000"));
        let bound = listeners(&props["listeners"]);
        let advertised = listeners(&props["advertised.listeners"]);
        let protocols: Vec<&str> = props["listener.security.protocol.map"]
            .split(',')
            .map(|p| p.split(':').next().unwrap())
            .collect();
        // Every listener has a protocol; the controller is bound but never advertised.
        for name in bound.keys() {
            assert!(protocols.contains(&name.as_str()), "{name} has no protocol");
        }
        assert!(!advertised.contains_key("CONTROLLER"));
        assert_eq!(
            advertised["PLAINTEXT"], "127.0.0.1:7000",
            "clients use the proxy"
        );
        let inter = &props["inter.broker.listener.name"];
        assert_eq!(
            advertised[inter], bound[inter],
            "the broker's own listener is itself"
        );
        assert_ne!(advertised[inter], advertised["PLAINTEXT"]);
        // The controller named in the quorum is the one bound.
        let voters = &props["controller.quorum.voters"];
        assert_eq!(voters, &format!("1@{}", bound["CONTROLLER"]));
        assert_eq!(props["controller.listener.names"], "CONTROLLER");
        assert_eq!(props["process.roles"], "broker,controller");
    }

    /// A proxy on [::1] never matched the `::1:p` the broker's metadata was printed as.
    #[test]
    fn an_ipv6_advertised_address_compares_as_a_socket_address_prints() {
        let broker = AdvertisedBroker {
            node_id: 1,
            host: "::1".to_owned(),
            port: 9092,
        };
        let proxy: std::net::SocketAddr = "[::1]:9092".parse().unwrap();
        assert_eq!(broker.address(), proxy.to_string());
        let v4 = AdvertisedBroker {
            node_id: 1,
            host: "127.0.0.1".to_owned(),
            port: 9092,
        };
        assert_eq!(v4.address(), "127.0.0.1:9092");
    }

    #[test]
    fn a_lost_port_race_is_told_from_other_early_exits() {
        use crate::infra::local::says_port_taken;
        assert!(says_port_taken(
            "ERROR Socket server failed to bind to 127.0.0.1:9092: Address already in use."
        ));
        assert!(says_port_taken(
            "Warning: Could not create server TCP listening socket 127.0.0.1:6379: bind: Address already in use"
        ));
        assert!(!says_port_taken(
            "ERROR Exiting Kafka due to fatal exception"
        ));
    }

    use super::*;

    #[test]
    fn image_names_split_at_the_tag_only() {
        assert_eq!(split_image("redis:7"), ("redis".into(), "7".into()));
        assert_eq!(
            split_image("apache/kafka-native:3.8.0"),
            ("apache/kafka-native".into(), "3.8.0".into())
        );
        assert_eq!(
            split_image("registry.local:5000/redis"),
            ("registry.local:5000/redis".into(), "latest".into())
        );
        assert_eq!(
            split_image("registry.local:5000/redis:7"),
            ("registry.local:5000/redis".into(), "7".into())
        );
    }

    #[test]
    fn owner_label_recognises_only_a_live_owner() {
        let me = owner_label(std::process::id()).unwrap();
        assert!(owner_alive(&me));
        let (pid, _) = me.split_once(':').unwrap();
        assert!(
            !owner_alive(&format!("{pid}:1")),
            "same pid, other start time"
        );
        assert!(!owner_alive("4294967295:1"));
        assert!(!owner_alive(""));
    }
}
