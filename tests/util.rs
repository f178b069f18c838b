//! Helpers shared by the end-to-end tests: real clients (rdkafka, redis) and leftover counters.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use quiesce::infra::{DependencyKind, Infra, InfraConfig, LifecycleAction};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Generous bound for anything a loaded 2-core machine should finish.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A client config for `bootstrap` with short timeouts, so faults show quickly.
pub fn kafka_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "3000")
        .set("message.timeout.ms", "20000")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500")
        .set("log_level", "3");
    config
}

/// Asks the cluster for its metadata within `timeout`: the client's view of "Kafka answers".
pub fn kafka_metadata(bootstrap: &str, timeout: Duration) -> Result<usize, String> {
    let consumer: rdkafka::consumer::BaseConsumer = kafka_config(bootstrap)
        .set("group.id", "quiesce-test-probe")
        .create()
        .map_err(|e| e.to_string())?;
    consumer
        .fetch_metadata(None, timeout)
        .map(|m| m.brokers().len())
        .map_err(|e| e.to_string())
}

/// [`eventually`] for a test without a runtime.
pub fn eventually_sync<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check() {
            Ok(value) => return value,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: still failing after {PATIENCE:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Waits until `check` holds, polling, for at most `PATIENCE`.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: still failing after {PATIENCE:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Creates a 3-partition topic, produces 1,000 keyed messages, consumes them in a group with
/// manual commits, and reads the committed offsets back from a second client in the group.
/// Returns the committed offset per partition.
pub async fn kafka_round_trip(bootstrap: &str, topic: &str) -> HashMap<i32, i64> {
    const MESSAGES: usize = 1_000;
    let admin: AdminClient<DefaultClientContext> = kafka_config(bootstrap).create().unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create_topics request");
    for result in created {
        result.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }

    let producer: FutureProducer = kafka_config(bootstrap).create().unwrap();
    let mut produced_per_partition: HashMap<i32, i64> = HashMap::new();
    let sends = (0..MESSAGES).map(|i| {
        let producer = &producer;
        async move {
            let key = format!("key-{i}");
            let payload = format!("seq-{i}");
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e.to_string())
        }
    });
    for delivery in futures::future::join_all(sends).await {
        let delivery = delivery.expect("every message is acknowledged");
        *produced_per_partition
            .entry(delivery.partition)
            .or_default() += 1;
    }
    assert_eq!(
        produced_per_partition.values().sum::<i64>(),
        MESSAGES as i64
    );
    assert!(
        produced_per_partition.len() > 1,
        "keys spread over partitions: {produced_per_partition:?}"
    );

    let group = format!("{topic}-group");
    let consumer: StreamConsumer = kafka_config(bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen: HashMap<i32, i64> = HashMap::new();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let deadline = Instant::now() + PATIENCE;
    while seen.values().sum::<i64>() < MESSAGES as i64 {
        assert!(
            Instant::now() < deadline,
            "consumed only {seen:?} of {MESSAGES}"
        );
        let message = tokio::time::timeout(PATIENCE, consumer.recv())
            .await
            .expect("a message within the deadline")
            .expect("no consumer error");
        *seen.entry(message.partition()).or_default() += 1;
        next.insert(message.partition(), message.offset() + 1);
    }
    let mut positions = TopicPartitionList::new();
    for (&partition, &offset) in &next {
        positions
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap();
    }
    consumer
        .commit(&positions, CommitMode::Sync)
        .expect("manual commit");
    assert_eq!(
        seen, produced_per_partition,
        "consumed exactly what was produced"
    );

    // A second client in the same group, not subscribed, reads what was committed.
    let reader: StreamConsumer = kafka_config(bootstrap)
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    for partition in 0..3 {
        wanted.add_partition(topic, partition);
    }
    let committed = reader
        .committed_offsets(wanted, Duration::from_secs(30))
        .expect("committed offsets");
    let committed: HashMap<i32, i64> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    assert_eq!(
        committed, next,
        "committed offsets read back by a second client"
    );
    committed
}

/// A Redis connection with a short response timeout, so pauses show as timeouts.
pub async fn redis_conn(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())
}

/// SET then GET on a fresh connection; the error says what the client saw.
pub async fn redis_set_get(url: &str, key: &str, value: &str) -> Result<(), String> {
    let mut conn = redis_conn(url).await?;
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let got: String = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if got == value {
        Ok(())
    } else {
        Err(format!("GET {key} returned {got:?}, expected {value:?}"))
    }
}

/// Pids of the processes the infrastructure runs (local backend: its children).
pub fn dependency_pids(infra: &mut Infra) -> Vec<u32> {
    infra.status().iter().filter_map(|s| s.pid).collect()
}

/// Whether `pid` is a live process (a zombie is dead).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

/// Asserts that none of `pids` is alive, waiting for the kernel to finish a kill.
pub async fn assert_all_gone(pids: &[u32]) {
    eventually("dependency processes gone", async || {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still alive: {left:?}"))
        }
    })
    .await;
}

/// Processes whose command line or working directory mentions `marker` (a unique temp dir).
pub fn processes_mentioning(marker: &Path) -> Vec<u32> {
    let marker = marker.to_string_lossy().into_owned();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(&marker)
                || cwd.to_string_lossy().contains(&marker)
        })
        .collect()
}

/// Exercises every lifecycle and proxy fault on a started infrastructure and checks that a real
/// client sees each one, and that each is undone. Shared by every backend that owns its
/// dependencies.
pub async fn lifecycle_faults_are_observable(infra: &mut Infra) {
    let url = infra.endpoints().redis_url.clone();
    let bootstrap = infra.endpoints().kafka_bootstrap.clone();
    redis_set_get(&url, "k", "before")
        .await
        .expect("redis works at first");

    // pause -> the client times out; resume -> it recovers. Each twice: the second does
    // nothing, on every backend.
    for _ in 0..2 {
        infra
            .act(DependencyKind::Redis, LifecycleAction::Pause)
            .await
            .unwrap();
    }
    let paused = redis_set_get(&url, "k", "paused").await;
    assert!(paused.is_err(), "a paused redis must not answer");
    for _ in 0..2 {
        infra
            .act(DependencyKind::Redis, LifecycleAction::Resume)
            .await
            .unwrap();
    }
    eventually("redis after resume", async || {
        redis_set_get(&url, "k", "resumed").await
    })
    .await;

    // stop -> refused; start -> the same URL works again.
    infra
        .act(DependencyKind::Redis, LifecycleAction::Stop)
        .await
        .unwrap();
    assert!(
        redis_set_get(&url, "k", "stopped").await.is_err(),
        "a stopped redis must not answer"
    );
    infra
        .act(DependencyKind::Redis, LifecycleAction::Start)
        .await
        .unwrap();
    redis_set_get(&url, "k", "restarted")
        .await
        .expect("same URL after start");

    // kill -> gone; start -> back.
    infra
        .act(DependencyKind::Redis, LifecycleAction::Kill)
        .await
        .unwrap();
    assert!(
        redis_set_get(&url, "k", "killed").await.is_err(),
        "a killed redis must not answer"
    );
    infra
        .act(DependencyKind::Redis, LifecycleAction::Start)
        .await
        .unwrap();
    redis_set_get(&url, "k", "again")
        .await
        .expect("same URL after kill and start");

    // Kafka: the same bootstrap address across pause/resume, stop/start and kill/start.
    let short = Duration::from_secs(3);
    kafka_metadata(&bootstrap, Duration::from_secs(30)).expect("kafka answers at first");
    infra
        .act(DependencyKind::Kafka, LifecycleAction::Pause)
        .await
        .unwrap();
    let b = bootstrap.clone();
    let paused = tokio::task::spawn_blocking(move || kafka_metadata(&b, short))
        .await
        .unwrap();
    assert!(paused.is_err(), "a paused broker must not answer metadata");
    infra
        .act(DependencyKind::Kafka, LifecycleAction::Resume)
        .await
        .unwrap();
    let b = bootstrap.clone();
    eventually("kafka after resume", async || {
        let b = b.clone();
        tokio::task::spawn_blocking(move || kafka_metadata(&b, short))
            .await
            .unwrap()
    })
    .await;
    for crash in [LifecycleAction::Stop, LifecycleAction::Kill] {
        infra.act(DependencyKind::Kafka, crash).await.unwrap();
        let b = bootstrap.clone();
        let down = tokio::task::spawn_blocking(move || kafka_metadata(&b, short))
            .await
            .unwrap();
        assert!(down.is_err(), "after {crash} the broker must not answer");
        infra
            .act(DependencyKind::Kafka, LifecycleAction::Start)
            .await
            .unwrap();
        let b = bootstrap.clone();
        eventually("kafka after start", async || {
            let b = b.clone();
            tokio::task::spawn_blocking(move || kafka_metadata(&b, short))
                .await
                .unwrap()
        })
        .await;
    }
}

/// Exercises every proxy fault on Redis through a real client.
pub async fn proxy_faults_are_observable(infra: &mut Infra) {
    use quiesce::fault::{Stream, Toxic, ToxicKind};
    let url = infra.endpoints().redis_url.clone();
    let proxy = infra.proxy(DependencyKind::Redis);

    // down -> refused; up -> works on the same address.
    proxy.down();
    assert!(
        redis_set_get(&url, "p", "down").await.is_err(),
        "proxy down must refuse"
    );
    proxy.up().await.unwrap();
    redis_set_get(&url, "p", "up").await.expect("proxy up");

    // latency -> slower by at least the latency; removed -> not.
    proxy
        .add_toxic(Toxic::new(ToxicKind::Latency {
            latency: 400,
            jitter: 0,
        }))
        .unwrap();
    let mut conn = redis_conn(&url).await.unwrap();
    let started = Instant::now();
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    proxy.remove_toxic("latency_downstream").unwrap();

    // timeout(0) -> the client times out; removed -> a new connection works.
    proxy
        .add_toxic(Toxic::new(ToxicKind::Timeout { timeout: 0 }))
        .unwrap();
    let blackholed = redis::cmd("PING").query_async::<String>(&mut conn).await;
    assert!(blackholed.is_err(), "blackholed PING must time out");
    proxy.remove_toxic("timeout_downstream").unwrap();
    redis_set_get(&url, "p", "after-timeout")
        .await
        .expect("after timeout removed");

    // reset_peer -> connection reset; removed -> works.
    proxy
        .add_toxic(Toxic::on(
            Stream::Upstream,
            ToxicKind::ResetPeer { timeout: 0 },
        ))
        .unwrap();
    let reset = redis_set_get(&url, "p", "reset").await.unwrap_err();
    assert!(
        reset.to_lowercase().contains("reset")
            || reset.to_lowercase().contains("closed")
            || reset.to_lowercase().contains("broken"),
        "a reset must surface as a connection error: {reset}"
    );
    proxy.remove_toxic("reset_peer_upstream").unwrap();
    redis_set_get(&url, "p", "after-reset")
        .await
        .expect("after reset removed");

    // bandwidth 100 KB/s -> a 60 KB value takes about 0.6 s to come back.
    let big = "x".repeat(60_000);
    redis_set_get(&url, "big", &big).await.unwrap();
    proxy
        .add_toxic(Toxic::new(ToxicKind::Bandwidth { rate: 100 }))
        .unwrap();
    let mut conn = redis_conn(&url).await.unwrap();
    let started = Instant::now();
    let got: String = redis::cmd("GET")
        .arg("big")
        .query_async(&mut conn)
        .await
        .unwrap();
    let slow = started.elapsed();
    proxy.remove_toxic("bandwidth_downstream").unwrap();
    assert_eq!(got.len(), big.len());
    assert!(
        slow >= Duration::from_millis(450),
        "60 KB at 100 KB/s took {slow:?}"
    );
}

/// Starts the local backend with default settings.
pub async fn start_local() -> Infra {
    let config = InfraConfig {
        backend: quiesce::infra::BackendKind::Local,
        ..InfraConfig::default()
    };
    Infra::start(&config).await.expect("local backend starts")
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
pub fn http(base: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("API reachable");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The `quiesce` binary under test.
pub const QUIESCE: &str = env!("CARGO_BIN_EXE_quiesce");

/// Runs `quiesce ARGS` with `env`, its temp files under `tmp` (so leftovers can be found);
/// returns (exit code, stdout, stderr).
/// Starts `quiesce args` with its temp dir in `tmp` and its stdout piped, once `ready` holds
/// (polled for at most `PATIENCE`) returns it, to be interrupted.
pub fn quiesce_until(tmp: &Path, args: &[&str], ready: impl Fn() -> bool) -> std::process::Child {
    let child = std::process::Command::new(QUIESCE)
        .args(args)
        .env("TMPDIR", tmp)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("quiesce starts");
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "quiesce {args:?}: never got going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Sends SIGINT to `child`, as Ctrl-C does, and waits for it: its exit code and stdout.
pub fn interrupt(child: std::process::Child) -> (Option<i32>, String) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = child.wait_with_output().expect("quiesce ends");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

pub fn quiesce(tmp: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(QUIESCE)
        .args(args)
        .env("TMPDIR", tmp)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("quiesce runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Kafka round trip (1,000 records, committed offsets read back) and a Redis SET/GET, both
/// through the proxies of a started infrastructure.
pub async fn round_trip_and_set_get(infra: &Infra) {
    let committed =
        kafka_round_trip(&infra.endpoints().kafka_bootstrap.clone(), "round-trip").await;
    assert_eq!(committed.values().sum::<i64>(), 1_000);
    redis_set_get(&infra.endpoints().redis_url, "greeting", "hello")
        .await
        .unwrap();
}

/// What `quiesce run FILE --json` concluded: the exit code, each check's outcome by name
/// (`pass`, `violation`, `inconclusive`; `service/check` for a graph's), its timeline, and the
/// whole output for assertion messages.
pub struct Judged {
    pub code: i32,
    pub outcomes: std::collections::BTreeMap<String, String>,
    pub timeline: Vec<(u64, String)>,
    pub output: String,
}

impl Judged {
    /// The outcome of `check`, or a panic that shows the whole output.
    pub fn outcome(&self, check: &str) -> &str {
        match self.outcomes.get(check) {
            Some(outcome) => outcome,
            None => panic!("no `{check}` in the verdict:\n{}", self.output),
        }
    }
}

/// Runs the scenario `file` (relative to the repository's `scenarios/hostile/`, or absolute)
/// with the real binary, `--json`, and `args` after it.
pub fn judge_hostile(file: &str, args: &[&str], env: &[(&str, &str)]) -> Judged {
    let dir = tempfile::tempdir().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/hostile")
        .join(file);
    let path = path.to_str().unwrap().to_owned();
    let mut all = vec!["run", path.as_str(), "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = quiesce(dir.path(), &all, env);
    let output = format!("exit {code}\n--- stdout\n{out}\n--- stderr\n{err}");
    let json: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("not a JSON verdict ({e}):\n{output}"));
    let outcomes = json["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results:\n{output}"))
        .iter()
        .map(|r| {
            let check = r["check"].as_str().unwrap_or_default();
            // A graph's results are per service: `worker#2/stops_within`.
            let name = match r["service"].as_str() {
                Some(service) => format!("{service}/{check}"),
                None => check.to_owned(),
            };
            (name, r["outcome"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let timeline = json["timeline"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    let at = e["at_ms"].as_u64().unwrap_or_default();
                    (at, e["event"].as_str().unwrap_or_default().to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    Judged {
        code,
        outcomes,
        timeline,
        output,
    }
}

/// `file` run through the `quiesce` binary on the containers backend, with the local images
/// built (none can be pulled here) and `env` besides.
pub fn judge_on_containers(file: &Path, env: &[(&str, &str)]) -> Judged {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let built = runtime
        .block_on(quiesce::infra::images::build_local_images(
            &quiesce::infra::InfraConfig::default(),
        ))
        .expect("local images build");
    let mut all: Vec<(&str, &str)> = built
        .iter()
        .map(|image| (image.env_var, image.name.as_str()))
        .collect();
    all.extend_from_slice(env);
    judge_hostile(file.to_str().unwrap(), &["--backend", "containers"], &all)
}

/// A binary of the workspace (a reference service), beside the quiesce binary the tests run:
/// the build the test command made, not a release build that may or may not be there.
pub fn workspace_bin(name: &str) -> String {
    let quiesce = Path::new(env!("CARGO_BIN_EXE_quiesce"));
    let bin = quiesce.with_file_name(name);
    assert!(
        bin.is_file(),
        "{} is not built (hint: cargo build -p {name}; scripts/test builds the workspace)",
        bin.display()
    );
    bin.display().to_string()
}
