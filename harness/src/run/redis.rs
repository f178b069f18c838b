//! The Redis side of a run: watch the leader key through the run, run a standby instance for
//! the failover, read the job log, and judge `lock_released`, `single_leader` and
//! `jobs_once_per_interval`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::fault::{FaultProxy, ProxySwitch};
use crate::kafka::StopKind;
use crate::process::{ChildProcess, ProcessSpec};
use crate::run::Decided;
use crate::run::lock_tap::{Attribution, Holder, LockTap, Side, Writers};
use crate::scenario::{ProcessTarget, RedisLeadership};
use crate::signal::SignalHandler;
use crate::target::{Hooks, ReadyState, TargetRun};
use crate::verdict::{CheckName, Outcome};

/// The target's instance name; the standby's is [`STANDBY`].
pub const PRIMARY: &str = "primary";
pub const STANDBY: &str = "standby";
/// How often the leader key is read.
const POLL: Duration = Duration::from_millis(10);
/// How many items evidence lists before it summarises.
const LISTED: usize = 10;

/// Who held the leader key, from when (only changes are kept).
pub type Owners = Vec<(Instant, Option<String>)>;

/// For each change of [`Owners`] (same index), the last time-to-live read of the key before
/// it (when the read was sent, and PTTL in ms: -1 for no expiry): how the harness tells a key
/// deleted or handed over from one that expired. The server counted that PTTL at or after the
/// send, so the send plus the PTTL is the earliest the key could expire; the time its answer
/// came can be later by however long a loaded harness took to read it.
pub type Ttls = Vec<Option<(Instant, i64)>>;

/// What the watch of the leader key saw.
#[derive(Debug, Default)]
pub struct Watched {
    pub owners: Owners,
    pub ttls: Ttls,
    /// The first read: a value held then was there before the run.
    pub first_read: Option<Instant>,
}

/// Watches the leader key until stopped.
pub struct Watcher {
    task: tokio::task::JoinHandle<Watched>,
    owner: watch::Receiver<Option<String>>,
    stop: CancellationToken,
}

impl Watcher {
    /// Reads `key` at `url`; with `past`, the proxy behind `url`, at that proxy's upstream
    /// instead (as it is at each reconnect): the harness's reads must meet none of the faults
    /// played on the proxy, or a read a latency held back would date an old holder after the
    /// write that replaced it.
    pub fn start(url: &str, key: &str, past: Option<ProxySwitch>) -> Result<Watcher, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis {url}: {e}"))?;
        let url = url.to_owned();
        let key = key.to_owned();
        let stop = CancellationToken::new();
        let (owner_tx, owner) = watch::channel(None);
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut seen = Watched::default();
                let mut last_ttl = None;
                let mut connection = None;
                while !stop.is_cancelled() {
                    if connection.is_none() {
                        let direct = past.as_ref().map(|p| {
                            redis::Client::open(crate::infra::with_addr(&url, p.upstream()))
                        });
                        // Never through the proxy when there is one: better no reading
                        // than a late one.
                        connection = match direct {
                            Some(Ok(direct)) => {
                                direct.get_multiplexed_async_connection().await.ok()
                            }
                            Some(Err(_)) => None,
                            None => client.get_multiplexed_async_connection().await.ok(),
                        };
                    }
                    if let Some(c) = connection.as_mut() {
                        // The value and its time to live in one round trip, in a transaction:
                        // read apart, the key could expire, or be taken by another value,
                        // between the two, and the time to live would be another hold's.
                        let sent = Instant::now();
                        let read: redis::RedisResult<(Option<String>, i64)> = redis::pipe()
                            .atomic()
                            .cmd("GET")
                            .arg(&key)
                            .cmd("PTTL")
                            .arg(&key)
                            .query_async(c)
                            .await;
                        match read {
                            Ok((value, ttl)) => {
                                let now = Instant::now();
                                seen.first_read.get_or_insert(now);
                                if seen.owners.last().is_none_or(|(_, last)| *last != value) {
                                    seen.owners.push((now, value.clone()));
                                    seen.ttls.push(last_ttl);
                                    owner_tx.send_replace(value.clone());
                                }
                                // A value read with no key left (-2) ran out as it was read:
                                // none of its time to live was left.
                                let ttl = if ttl == -2 { 0 } else { ttl };
                                last_ttl = value.is_some().then_some((sent, ttl));
                            }
                            Err(_) => connection = None,
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(POLL) => {}
                        () = stop.cancelled() => {}
                    }
                }
                seen
            }
        });
        Ok(Watcher { task, owner, stop })
    }

    /// The current owner, as it changes.
    pub fn owner(&self) -> watch::Receiver<Option<String>> {
        self.owner.clone()
    }

    pub async fn finish(self) -> Watched {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// What the standby did.
#[derive(Debug, Default)]
pub struct StandbyRun {
    pub started: bool,
    /// When it was started.
    pub started_at: Option<Instant>,
    /// Why it did not start, or how it ended.
    pub notes: Vec<String>,
    /// What it left running once stopped (killed then): the service's orphans as much as
    /// the target's would be.
    pub orphans: Vec<crate::target::OrphanProcess>,
}

/// A second instance of a process target, started once the target leads and stopped at the
/// end of the run. Everything it starts is found and ended by its own run id.
pub struct Standby {
    task: tokio::task::JoinHandle<StandbyRun>,
    done: CancellationToken,
}

/// What the standby is started from.
pub struct StandbySpec<'a> {
    pub target: &'a ProcessTarget,
    pub base_dir: &'a Path,
    pub out_dir: &'a Path,
    pub env: Vec<(String, String)>,
    pub run_id: String,
    pub grace: Duration,
}

impl Standby {
    /// Starts the standby's waiting; `hooks` tell it when the target is ready.
    pub fn start(
        spec: StandbySpec<'_>,
        mut owner: watch::Receiver<Option<String>>,
        lead_within: Duration,
    ) -> (Standby, Hooks) {
        let (ready_tx, ready_rx) = oneshot::channel();
        let done = CancellationToken::new();
        let cwd = match &spec.target.cwd {
            Some(dir) if dir.is_absolute() => dir.clone(),
            Some(dir) => spec.base_dir.join(dir),
            None => std::env::current_dir().unwrap_or_else(|_| ".".into()),
        };
        let mut run_env = spec.env.clone();
        run_env.extend([
            ("QUIESCE_INSTANCE".to_owned(), STANDBY.to_owned()),
            (
                "QUIESCE_OUT_DIR".to_owned(),
                spec.out_dir.display().to_string(),
            ),
            ("QUIESCE_RUN_ID".to_owned(), spec.run_id.clone()),
            (
                "QUIESCE_PROBE_FILE".to_owned(),
                spec.out_dir
                    .join("standby-probe.json")
                    .display()
                    .to_string(),
            ),
        ]);
        // The standby's own values: `{instance}` is `standby` here.
        let (command, env) = crate::scenario::template::command_and_env(spec.target, &run_env);
        let program = crate::target::resolve_program(&command[0], spec.base_dir);
        let mut process = ProcessSpec::new(program, cwd, spec.out_dir.join("standby-stdout.log"))
            .stderr_to(spec.out_dir.join("standby-stderr.log"));
        for arg in &command[1..] {
            process = process.arg(arg);
        }
        for (k, v) in &env {
            process = process.env(k, v);
        }
        let run_id = spec.run_id.clone();
        let grace = spec.grace;
        let task = tokio::spawn({
            let done = done.clone();
            async move {
                let mut run = StandbyRun::default();
                tokio::select! {
                    ready = ready_rx => if ready.is_err() { return run },
                    () = done.cancelled() => return run,
                }
                // Held, whatever its value: a real lock's value is the service's own.
                let leads = tokio::time::timeout(lead_within, owner.wait_for(Option::is_some));
                tokio::select! {
                    led = leads => if !matches!(led, Ok(Ok(_))) {
                        run.notes.push(format!(
                            "not started: the target did not take the leader key within {} ms",
                            lead_within.as_millis()
                        ));
                        return run;
                    },
                    () = done.cancelled() => return run,
                }
                let mut child = match ChildProcess::spawn(&process) {
                    Ok(child) => child,
                    Err(e) => {
                        run.notes.push(format!("not started: {e}"));
                        return run;
                    }
                };
                run.started = true;
                run.started_at = Some(Instant::now());
                done.cancelled().await;
                match child.stop(grace).await {
                    Ok(status) => run.notes.push(format!(
                        "standby stopped ({})",
                        crate::target::describe_status(&status)
                    )),
                    Err(e) => run.notes.push(format!("standby: {e}")),
                }
                run.orphans = crate::target::find_orphans(&run_id).await;
                run
            }
        });
        let hooks = Hooks {
            on_ready: vec![ready_tx],
            ..Hooks::default()
        };
        (Standby { task, done }, hooks)
    }

    pub async fn finish(self) -> StandbyRun {
        self.done.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// Hooks that report when the target was asked to stop.
fn stop_time() -> (Hooks, oneshot::Receiver<Instant>) {
    let (tx, rx) = oneshot::channel();
    (
        Hooks {
            on_stop: vec![tx],
            ..Hooks::default()
        },
        rx,
    )
}

/// One run of a leader-only job, from the job log.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct JobRun {
    pub instance: String,
    pub job: String,
    pub started_ms: u64,
    pub ended_ms: u64,
}

/// A connection to the Redis at `url`.
async fn connect(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    redis::Client::open(url)
        .map_err(|e| format!("redis {url}: {e}"))?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("redis {url}: {e}"))
}

/// Before the target starts: the job log emptied (each run's jobs are its own: the log is
/// evidence, not the service's state), and a leader key an earlier run left behind waited
/// out (kept, as a redeploy finds it, but this run is judged alone). Returns what was seen of
/// that key, for the timeline.
pub async fn prepare(url: &str, config: &RedisLeadership) -> Result<Option<String>, String> {
    if let Some(log) = &config.job_log {
        clear_jobs(url, log).await?;
    }
    outwait_key(url, &config.leader_key).await
}

/// The address of the Redis at `url`.
fn redis_addr(url: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let client = redis::Client::open(url).map_err(|e| format!("redis {url}: {e}"))?;
    let redis::ConnectionAddr::Tcp(host, port) = client.get_connection_info().addr.clone() else {
        return Err(format!("redis {url}: not a TCP address"));
    };
    (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut all| all.next())
        .ok_or_else(|| format!("redis {url}: {host}:{port} does not resolve"))
}

/// How often the instances' output is read for job lines.
const JOB_TAIL: Duration = Duration::from_millis(10);

/// Runs of leader-only jobs, read from the instances' output as it is written: each line
/// `job_line` matches is one run, at the time the harness read it.
struct JobLines {
    task: tokio::task::JoinHandle<LineRuns>,
    done: CancellationToken,
}

#[derive(Debug, Default)]
pub struct LineRuns {
    pub runs: Vec<JobRun>,
    /// The most job lines one read of one file brought, and when (ms into the run).
    pub largest_read: (usize, u64),
}

impl JobLines {
    /// Reads from when the target is ready (the hooks say): the logs are this start's by then,
    /// an earlier run's in the same folder removed.
    fn start(pattern: regex::Regex, out_dir: &Path) -> (JobLines, Hooks) {
        let (ready_tx, ready_rx) = oneshot::channel();
        let [stdout, stderr] = crate::target::log_files(out_dir);
        let files = [
            (PRIMARY, stdout),
            (PRIMARY, stderr),
            (STANDBY, out_dir.join("standby-stdout.log")),
            (STANDBY, out_dir.join("standby-stderr.log")),
        ];
        let done = CancellationToken::new();
        let task = tokio::spawn({
            let done = done.clone();
            async move {
                let mut found = LineRuns::default();
                tokio::select! {
                    ready = ready_rx => if ready.is_err() { return found },
                    () = done.cancelled() => return found,
                }
                let started = Instant::now();
                let mut tails: Vec<_> = files
                    .into_iter()
                    .map(|(who, path)| (who, crate::kafka::log::Tail::new(path)))
                    .collect();
                loop {
                    // One last read once told to stop: lines written on the way out count.
                    let last = done.is_cancelled();
                    let now = unix_ms();
                    for (who, tail) in &mut tails {
                        let mut read = 0;
                        for line in tail.new_lines() {
                            let Some(captures) = pattern.captures(&line) else {
                                continue;
                            };
                            let Some(job) = captures.name("job").or_else(|| captures.get(1)) else {
                                continue;
                            };
                            read += 1;
                            found.runs.push(JobRun {
                                instance: (*who).to_owned(),
                                job: job.as_str().to_owned(),
                                started_ms: now,
                                ended_ms: now,
                            });
                        }
                        if read > found.largest_read.0 {
                            found.largest_read = (read, started.elapsed().as_millis() as u64);
                        }
                    }
                    if last {
                        return found;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(JOB_TAIL) => {}
                        () = done.cancelled() => {}
                    }
                }
            }
        });
        let hooks = Hooks {
            on_ready: vec![ready_tx],
            ..Hooks::default()
        };
        (JobLines { task, done }, hooks)
    }

    async fn finish(self) -> LineRuns {
        self.done.cancel();
        self.task.await.unwrap_or_default()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The Redis side of one run while the target runs: the leader key watched, the commands on
/// it read from the wire, the standby started once the key is held, and the job lines read.
/// [`Leader::finish`] decides the checks.
pub struct Leader<'a> {
    config: &'a RedisLeadership,
    watcher: Watcher,
    tap: Option<Arc<LockTap>>,
    /// The standby's way to Redis, read by the tap apart from the target's.
    standby_proxy: Option<FaultProxy>,
    lines: Option<JobLines>,
    stop_at: oneshot::Receiver<Instant>,
    /// The standby, or why there is none.
    standby: Result<Standby, &'static str>,
    /// A service graph's contending instances' ways to Redis, each with a proxy of its own.
    per_instance: Option<crate::target::RedisPerInstance>,
}

/// Where the Redis side of a run reaches Redis.
pub struct RedisReach<'b> {
    /// The URL the target and the harness use.
    pub url: &'b str,
    /// The proxy behind that URL, if the harness has one: the tap reads it.
    pub shared: Option<ProxySwitch>,
    pub out_dir: &'b Path,
    /// For a service graph: the index of the service whose instances contend for the lock.
    pub contenders: Option<usize>,
}

impl<'a> Leader<'a> {
    /// Starts watching the key, and the standby (`Err`: why there is none).
    pub async fn start(
        config: &'a RedisLeadership,
        reach: RedisReach<'_>,
        standby: Result<StandbySpec<'_>, &'static str>,
    ) -> Result<(Leader<'a>, Hooks), String> {
        let watcher = Watcher::start(reach.url, &config.leader_key, reach.shared.clone())?;
        let (mut hooks, stop_at) = stop_time();
        // The key's database: the URL's (`redis://host:port/N`), 0 by default.
        let db = redis::Client::open(reach.url)
            .map(|c| c.get_connection_info().redis.db)
            .unwrap_or(0);
        if let Some(service) = reach.contenders {
            // A graph's contenders each reach Redis through a proxy of their own, in front of
            // the shared one (whose faults they still meet): the tap reads only those.
            let tap = LockTap::new(&config.leader_key, db);
            let upstream = match &reach.shared {
                Some(shared) => shared.listen_addr(),
                None => redis_addr(reach.url)?,
            };
            let observer = {
                let tap = tap.clone();
                Arc::new(move |k: u32| tap.side(Side::Instance(k)))
            };
            let lines = config.job_pattern().map(|pattern| {
                let (lines, more) = JobLines::start(pattern, reach.out_dir);
                hooks = std::mem::take(&mut hooks).merge(more);
                lines
            });
            let leader = Leader {
                config,
                watcher,
                tap: Some(tap),
                standby_proxy: None,
                lines,
                stop_at,
                standby: Err("a service graph has no standby: its replicas contend"),
                per_instance: Some(crate::target::RedisPerInstance {
                    service,
                    upstream,
                    observer,
                }),
            };
            return Ok((leader, hooks));
        }
        let tap = reach.shared.as_ref().map(|shared| {
            let tap = LockTap::new(&config.leader_key, db);
            shared.observe(tap.side(Side::Shared));
            tap
        });
        let mut standby_proxy = None;
        let standby = match standby {
            Ok(mut spec) => {
                // The standby reaches Redis through a proxy of its own, in front of the shared
                // one (whose faults it still meets), so the tap tells its commands apart.
                if let (Some(tap), Some(shared)) = (&tap, &reach.shared) {
                    let proxy = FaultProxy::start(
                        "redis (the standby's own)",
                        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                        shared.listen_addr(),
                    )
                    .await
                    .map_err(|e| format!("the standby's Redis proxy: {e}"))?;
                    proxy.observe(tap.side(Side::Standby));
                    for (key, value) in &mut spec.env {
                        if key == "QUIESCE_REDIS_URL" {
                            *value = crate::infra::with_addr(value, proxy.listen_addr());
                        }
                    }
                    standby_proxy = Some(proxy);
                }
                let (standby, more) = Standby::start(
                    spec,
                    watcher.owner(),
                    Duration::from_millis(config.lead_within_ms),
                );
                hooks = std::mem::take(&mut hooks).merge(more);
                Ok(standby)
            }
            Err(why) => Err(why),
        };
        let lines = config.job_pattern().map(|pattern| {
            let (lines, more) = JobLines::start(pattern, reach.out_dir);
            hooks = std::mem::take(&mut hooks).merge(more);
            lines
        });
        Ok((
            Leader {
                config,
                watcher,
                tap,
                standby_proxy,
                lines,
                stop_at,
                standby,
                per_instance: None,
            },
            hooks,
        ))
    }

    /// For a service graph: how its contending instances reach Redis.
    pub fn per_instance(&self) -> Option<crate::target::RedisPerInstance> {
        self.per_instance.clone()
    }

    /// Once the target has stopped: watches on until the standby leads (or, without one,
    /// the key is gone), bounded by the failover time or how long the key may outlive the
    /// stop; then reads the job evidence and decides the checks.
    pub async fn finish(
        self,
        observed: &mut TargetRun,
        stop: StopKind,
        url: &str,
        signals: &mut SignalHandler,
    ) -> Decided {
        let Leader {
            config,
            watcher,
            tap,
            standby_proxy,
            lines,
            stop_at,
            standby,
            per_instance,
        } = self;
        let stop_at = stop_at.await.ok();
        let mut owner = watcher.owner();
        let contenders = per_instance.map(|p| contenders(observed, p.service));
        if let Some(contenders) = &contenders {
            // A graph has stopped whole by now: the key is watched until it is gone, up to the
            // release deadline after the last contender's stop.
            let last = contenders.iter().filter_map(|c| c.stop_at).max();
            if let Some(last) = last {
                let bound = last + Duration::from_millis(config.release_within_ms) + POLL * 5;
                tokio::select! {
                    _ = tokio::time::timeout_at(bound.into(), owner.wait_for(Option::is_none)) => {}
                    _ = signals.recv() => observed.interrupted = true,
                }
            }
        } else if let Some(stop_at) = stop_at {
            let failover = match standby {
                Ok(_) => Duration::from_secs(10),
                Err(_) => Duration::ZERO,
            };
            let bound = stop_at + Duration::from_millis(config.release_within_ms) + failover;
            let has_standby = standby.is_ok();
            // Settled: the key holds a value the standby wrote (seen on its own proxy), or,
            // without a standby, nobody holds it.
            let settled = owner.wait_for(|o| match (has_standby, o, &tap) {
                (true, Some(value), Some(tap)) => tap.wrote(Side::Standby, value),
                (true, _, _) => false,
                (false, o, _) => o.is_none(),
            });
            tokio::select! {
                _ = tokio::time::timeout_at(bound.into(), settled) => {}
                _ = signals.recv() => observed.interrupted = true,
            }
        }
        let standby = match standby {
            Ok(standby) => standby.finish().await,
            Err(_) if contenders.is_some() => StandbyRun::default(),
            Err(why) => StandbyRun {
                notes: vec![why.to_owned()],
                ..StandbyRun::default()
            },
        };
        if let Some(proxy) = standby_proxy {
            proxy.close().await;
        }
        for note in &standby.notes {
            let at = observed.timeline.last().map_or(0, |(at, _)| *at);
            observed.timeline.push((at, note.clone()));
        }
        // The standby runs the target's own code: what it leaves behind fails
        // no_orphan_processes as the target's would, named as the standby's.
        if let Some(orphans) = &mut observed.orphans {
            orphans.extend(
                standby
                    .orphans
                    .iter()
                    .map(|o| crate::target::OrphanProcess {
                        command: format!("{} (left by the standby)", o.command),
                        ..o.clone()
                    }),
            );
        }
        let watched = watcher.finish().await;
        let (commands, lost) = tap.map(|t| t.commands()).unwrap_or_default();
        let names: Vec<String> = observed.instances.iter().map(|i| i.name.clone()).collect();
        let writers = match &contenders {
            Some(_) => Writers::Instances(&names),
            None => Writers::Pair {
                standby_from: standby.started_at,
            },
        };
        let attribution = Attribution::learn(
            &watched.owners,
            &commands,
            lost,
            watched.first_read,
            writers,
        );
        let jobs = match (&config.job_log, lines) {
            (Some(log), _) => Jobs::Listed(read_jobs(url, log).await),
            (None, Some(lines)) => Jobs::Lines(lines.finish().await),
            (None, None) => Jobs::Off,
        };
        let evidence = RedisRun {
            config,
            owners: watched.owners,
            ttls: watched.ttls,
            attribution,
            stop_at,
            stop,
            standby,
            jobs,
            clock: (Instant::now(), unix_ms()),
            contenders,
        };
        if matches!(observed.ready, ReadyState::Ready { .. }) {
            Ok(judge(&evidence))
        } else {
            Err("the target was never ready".to_owned())
        }
    }
}

/// How long past its TTL a leftover leader key may take to go.
const EXPIRY_SLACK: Duration = Duration::from_secs(2);

/// Waits until the leader key is gone, if it has a TTL: a key an earlier run left behind
/// (a lock not released) expires before this run starts. Returns what it saw, for the
/// timeline. A key without a TTL never goes: that is said, and the run goes ahead.
async fn outwait_key(url: &str, key: &str) -> Result<Option<String>, String> {
    let mut connection = connect(url).await?;
    let (owner, ttl): (Option<String>, i64) = redis::pipe()
        .cmd("GET")
        .arg(key)
        .cmd("PTTL")
        .arg(key)
        .query_async(&mut connection)
        .await
        .map_err(|e| format!("reading the leader key `{key}`: {e}"))?;
    let Some(owner) = owner else {
        return Ok(None);
    };
    if ttl < 0 {
        return Ok(Some(format!(
            "the leader key `{key}` is held by `{owner}` from an earlier run and never expires"
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ttl as u64) + EXPIRY_SLACK;
    let started = tokio::time::Instant::now();
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("reading the leader key `{key}`: {e}"))?;
        if !exists || tokio::time::Instant::now() >= deadline {
            return Ok(Some(format!(
                "the leader key `{key}` was held by `{owner}` from an earlier run (TTL {ttl} ms): \
                 {} after {} ms",
                if exists { "still there" } else { "expired" },
                started.elapsed().as_millis()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Empties the job log, so a cycle's jobs are judged alone.
async fn clear_jobs(url: &str, key: &str) -> Result<(), String> {
    let mut connection = connect(url).await?;
    redis::cmd("DEL")
        .arg(key)
        .query_async::<()>(&mut connection)
        .await
        .map_err(|e| format!("clearing the job log `{key}`: {e}"))
}

/// Reads the job log: every entry, in order.
pub async fn read_jobs(url: &str, key: &str) -> Result<Vec<JobRun>, String> {
    let mut connection = connect(url).await?;
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut connection)
        .await
        .map_err(|e| format!("reading the job log `{key}`: {e}"))?;
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            serde_json::from_str(entry).map_err(|e| {
                format!(
                    "job log `{key}` entry {i} is not a job run ({e}): `{entry}`; expected \
                     {{\"instance\": I, \"job\": J, \"started_ms\": S, \"ended_ms\": E}}"
                )
            })
        })
        .collect()
}

/// Where the job checks' evidence came from.
#[derive(Debug)]
pub enum Jobs {
    /// The service's job log (a Redis list), or why it could not be read.
    Listed(Result<Vec<JobRun>, String>),
    /// Lines of the instances' output.
    Lines(LineRuns),
    /// No evidence named: the checks are off.
    Off,
}

/// Everything the Redis checks are decided from.
pub struct RedisRun<'a> {
    pub config: &'a RedisLeadership,
    pub owners: Owners,
    pub ttls: Ttls,
    /// Whose each value of the key was.
    pub attribution: Attribution,
    pub stop_at: Option<Instant>,
    pub stop: StopKind,
    pub standby: StandbyRun,
    pub jobs: Jobs,
    /// The same moment on both clocks: the watcher's (`Instant`) and the job runs' (Unix ms).
    pub clock: (Instant, u64),
    /// For a service graph: the instances that contend for the lock, each judged at its stop.
    pub contenders: Option<Vec<Contender>>,
}

/// An instance of a graph's contending service.
#[derive(Clone, Debug)]
pub struct Contender {
    pub name: String,
    /// When it was sent its stop (the graph's, a restart's, a rollout's).
    pub stop_at: Option<Instant>,
    /// It was killed (SIGKILL), or past its grace: only the key's expiry could release it.
    pub killed: bool,
}

/// The instances of service `service` in `observed`, a graph's run.
fn contenders(observed: &TargetRun, service: usize) -> Vec<Contender> {
    (observed.instances.iter())
        .filter(|i| i.service == service)
        .map(|i| {
            let run = i.run.as_ref().ok();
            Contender {
                name: i.name.clone(),
                stop_at: run.and_then(|r| Some(r.started_at + r.stop_sent_at?)),
                killed: run.is_some_and(|r| {
                    r.stop_signal == crate::scenario::StopSignal::Kill || r.killed_by_harness
                }),
            }
        })
        .collect()
}

/// How long before a job run the lock must already have been another's for the run to count
/// as led by two: a job line is read up to a poll after it was written.
const HELD_SLACK_MS: u64 = 100;

/// Who held the lock, in the job runs' clock (Unix ms).
#[derive(Debug, Default)]
pub struct Held {
    /// Each change of the key's holder.
    pub changes: Vec<(u64, Holder)>,
    /// The target's runs after this are not compared: job lines read after its stop may be
    /// a buffer flushed at exit, dated after the hand-over.
    pub primary_until: Option<u64>,
}

fn held_unix(run: &RedisRun<'_>) -> Held {
    let (now, now_ms) = run.clock;
    let unix =
        |t: Instant| now_ms.saturating_sub(now.saturating_duration_since(t).as_millis() as u64);
    Held {
        changes: holders(run)
            .into_iter()
            .map(|(t, h)| (unix(t), h))
            .collect(),
        primary_until: match run.jobs {
            Jobs::Lines(_) => run.stop_at.map(unix),
            _ => None,
        },
    }
}

/// A job line burst larger than this many runs per job in one read is buffered output: when
/// each run happened is then unknown. (A job registered three times writes three lines at
/// once, which must stay a finding.)
const BURST_PER_JOB: usize = 3;

/// Decides the Redis checks.
pub fn judge(run: &RedisRun<'_>) -> BTreeMap<CheckName, Outcome> {
    let mut outcomes = BTreeMap::new();
    let released = match &run.contenders {
        Some(contenders) => contenders_released(run, contenders),
        None => lock_released(run),
    };
    outcomes.insert(CheckName::LockReleased, released);
    let config = run.config;
    let (jobs, source) = match &run.jobs {
        Jobs::Off => return outcomes,
        Jobs::Listed(Err(why)) => {
            outcomes.insert(CheckName::SingleLeader, Outcome::inconclusive(why));
            outcomes.insert(CheckName::JobsOncePerInterval, Outcome::inconclusive(why));
            return outcomes;
        }
        Jobs::Listed(Ok(jobs)) => (
            jobs.as_slice(),
            format!(
                "the job log `{}`",
                config.job_log.as_deref().unwrap_or_default()
            ),
        ),
        Jobs::Lines(lines) => (
            lines.runs.as_slice(),
            format!(
                "lines matching `{}` (each run timed when read, every {} ms)",
                config.job_line.as_deref().unwrap_or_default(),
                JOB_TAIL.as_millis()
            ),
        ),
    };
    let why = if jobs.is_empty() {
        Some(format!("no leader-only job ran (no entry in {source})"))
    } else if let Jobs::Lines(lines) = &run.jobs
        && let (read, at) = lines.largest_read
        && read
            > BURST_PER_JOB
                * jobs
                    .iter()
                    .map(|j| &j.job)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
    {
        Some(format!(
            "one read of an instance's output brought {read} job lines at once (+{at} ms): \
             its output is buffered, so when each job ran is unknown (hint: flush each line, \
             e.g. PYTHONUNBUFFERED=1 or line-buffered stdout)"
        ))
    } else {
        None
    };
    // Runs are set against who held the lock by the instance they name.
    let known: Vec<&str> = match &run.contenders {
        Some(contenders) => contenders.iter().map(|c| c.name.as_str()).collect(),
        None => vec![PRIMARY, STANDBY],
    };
    let strangers: std::collections::BTreeSet<&str> = (jobs.iter())
        .map(|j| j.instance.as_str())
        .filter(|i| !known.contains(i))
        .collect();
    let (single, once) = match why {
        Some(why) => (Outcome::inconclusive(&why), Outcome::inconclusive(why)),
        None if !strangers.is_empty() => (
            Outcome::inconclusive(format!(
                "runs name {}, no instance the harness started ({}): who ran them cannot be \
                 set against who held the lock (hint: name each run by `{{instance}}` or \
                 QUIESCE_INSTANCE)",
                strangers
                    .iter()
                    .map(|i| format!("`{i}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                known
                    .iter()
                    .map(|i| format!("`{i}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            jobs_once_per_interval(jobs, config.interval_ms, matches!(run.jobs, Jobs::Lines(_))),
        ),
        None => (
            single_leader(jobs, config.interval_ms, &held_unix(run)),
            jobs_once_per_interval(jobs, config.interval_ms, matches!(run.jobs, Jobs::Lines(_))),
        ),
    };
    let from =
        |outcome: Outcome| outcome.sourced(&format!(", from {source}"), format!("from {source}"));
    outcomes.insert(CheckName::SingleLeader, from(single));
    outcomes.insert(CheckName::JobsOncePerInterval, from(once));
    outcomes
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// A holder as evidence names it.
fn named(holder: &Holder) -> String {
    match holder {
        Holder::Nobody => "nobody".to_owned(),
        Holder::Primary => format!("`{PRIMARY}`"),
        Holder::Standby => format!("`{STANDBY}`"),
        Holder::Instance(name) => format!("`{name}`"),
        Holder::Unknown(value) => format!(
            "a value no instance was seen writing (`{}`)",
            crate::run::lock_tap::short(value)
        ),
    }
}

/// One change of the key's holder.
#[derive(Clone, Debug)]
struct Change {
    at: Instant,
    holder: Holder,
    /// The last time to live read before it (when, and PTTL in ms), for a change the watcher
    /// saw: how an expiry is told from a delete.
    ttl: Option<(Instant, i64)>,
    /// For a change the wire saw (dated by the write's send), when the write's answer came:
    /// the server had run it by then. `None` for a change the watcher saw (dated by its
    /// read's answer).
    answered: Option<Instant>,
}

/// The key's holders through the run: each change the watcher saw, its value attributed,
/// merged with each write and delete the wire says the server took (which the watcher may
/// not see: the same value written by the next holder, a delete and a take within one look).
fn changes(run: &RedisRun<'_>) -> Vec<Change> {
    let mut all: Vec<Change> = run
        .owners
        .iter()
        .zip(&run.attribution.holders)
        .zip(&run.ttls)
        .map(|(((at, _), holder), ttl)| Change {
            at: *at,
            holder: holder.clone(),
            ttl: *ttl,
            answered: None,
        })
        .chain(
            (run.attribution.events.iter()).map(|(at, holder, answered)| Change {
                at: *at,
                holder: holder.clone(),
                ttl: None,
                answered: Some(*answered),
            }),
        )
        .collect();
    all.sort_by_key(|c| c.at);
    // A read the server ran before a write can be answered after the write was sent: then
    // the watcher's older sight (the key gone, say) sorts after the write it came before. When
    // the watcher's next sights after a write are of other holders and then of the write's
    // own, those reads ran first: the write moves after them. Both are dated no later than
    // the write's answer, by which the server had run it (and so the reads before it).
    let watched = |c: &Change| c.answered.is_none();
    let mut i = 0;
    while i < all.len() {
        if let Some(answered) = all[i].answered {
            let others = (all[i + 1..].iter())
                .take_while(|c| watched(c) && c.holder != all[i].holder)
                .count();
            let confirmed = all
                .get(i + 1 + others)
                .is_some_and(|c| watched(c) && c.holder == all[i].holder);
            if others > 0 && confirmed {
                let mut write = all.remove(i);
                for sight in &mut all[i..i + others] {
                    sight.at = sight.at.min(answered);
                }
                write.at = all[i + others - 1].at;
                all.insert(i + others, write);
                i += others;
            }
        }
        i += 1;
    }
    // One change per hand-over: the wire's record of it comes first (a command is seen
    // before the server runs it); the watcher's, after, brings the time to live read before.
    all.dedup_by(|later, earlier| {
        let same = later.holder == earlier.holder;
        if same && earlier.ttl.is_none() {
            earlier.ttl = later.ttl;
        }
        same
    });
    all
}

/// The latest `holder`'s hold, on since `from`, can have ended, for the test of its expiry:
/// the key was seen changing to `next` at `went`, and `next`'s own `NX` take of it was
/// answered by then (the server ran it between the tap's read of it and the answer; a loaded
/// harness forwards a command late). Only `went` where `holder` itself sent a delete or a
/// release between `from` and `went`: a take's answer can come seconds late (a latency played
/// on Redis), and a hold that was released must not pass for one that ran out.
fn gone_by(
    run: &RedisRun<'_>,
    holder: &Holder,
    from: Instant,
    went: Instant,
    next: &Holder,
) -> Instant {
    let released =
        (run.attribution.lets_go.iter()).any(|(t, by, _)| *t >= from && *t <= went && by == holder);
    if released {
        return went;
    }
    (run.attribution.takes.iter())
        .rfind(|(t, by, nx, _)| *nx && *t >= from && *t <= went && by == next)
        .map_or(went, |(_, _, _, answered)| (*answered).max(went))
}

/// The key's holders through the run.
fn holders(run: &RedisRun<'_>) -> Vec<(Instant, Holder)> {
    changes(run).into_iter().map(|c| (c.at, c.holder)).collect()
}

/// When the target was asked to stop, if it held the key then; else why the check cannot say.
fn held_at_stop(run: &RedisRun<'_>, holders: &[(Instant, Holder)]) -> Result<Instant, Outcome> {
    let key = &run.config.leader_key;
    if !holders.iter().any(|(_, h)| *h == Holder::Primary) {
        let values: Vec<String> = run
            .owners
            .iter()
            .filter_map(|(_, o)| o.as_deref().map(crate::run::lock_tap::short))
            .collect();
        return Err(Outcome::inconclusive(format!(
            "the target never held the leader key `{key}`: no value it was seen writing (its \
             `SET` on the wire) or that the key held while it ran alone{}",
            match values.is_empty() {
                true => " (the key was never held)".to_owned(),
                false => format!(" (values seen: {})", values.join(", ")),
            }
        )));
    }
    let Some(stop_at) = run.stop_at else {
        return Err(Outcome::inconclusive("the target was never asked to stop"));
    };
    let at_stop = holders
        .iter()
        .rev()
        .find(|(t, _)| *t <= stop_at)
        .map_or(Holder::Nobody, |(_, h)| h.clone());
    if at_stop != Holder::Primary {
        return Err(Outcome::inconclusive(format!(
            "the target did not hold `{key}` when it was stopped (held by {})",
            named(&at_stop)
        )));
    }
    Ok(stop_at)
}

/// The failover, in words: when the standby took over, or why it was not measured.
fn failover_text(run: &RedisRun<'_>, failover: Option<Duration>) -> String {
    match (failover, run.standby.started) {
        (Some(after), _) => format!("the standby took over {} ms after the stop", ms(after)),
        (None, true) => "the standby never took over".to_owned(),
        (None, false) => format!(
            "failover not measured: no standby ran{}",
            run.standby
                .notes
                .first()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
    }
}

/// After the target let go (holder `i`): the key expired rather than being deleted (its last
/// time to live ran out when it went), or the target took it back.
fn let_go_wrongly(
    run: &RedisRun<'_>,
    holders: &[(Instant, Holder)],
    i: usize,
    stop_at: Instant,
    evidence: &[String],
) -> Option<Outcome> {
    let key = &run.config.leader_key;
    let went = holders[i].0;
    if let Some((read_at, ttl)) = changes(run).get(i).and_then(|c| c.ttl)
        && ttl >= 0
        && gone_by(run, &Holder::Primary, stop_at, went, &holders[i].1) + POLL * 3
            >= read_at + Duration::from_millis(ttl as u64)
    {
        let mut all = vec![format!(
            "{} ms before it went, its time to live was {ttl} ms: it went {} ms after the stop, \
             when that ran out, not when the target deleted it",
            ms(went.saturating_duration_since(read_at)),
            ms(went.duration_since(stop_at))
        )];
        all.extend_from_slice(evidence);
        return Some(Outcome::violation(
            format!("leader key `{key}` expired instead of being released"),
            all,
        ));
    }
    let (back, _) = holders[i..].iter().find(|(_, h)| *h == Holder::Primary)?;
    Some(Outcome::violation(
        format!("`{PRIMARY}` took leader key `{key}` back after the stop"),
        vec![
            format!(
                "it let go {} ms after the stop and held the key again {} ms after the stop",
                ms(went.duration_since(stop_at)),
                ms(back.duration_since(stop_at))
            ),
            evidence.last().cloned().unwrap_or_default(),
        ],
    ))
}

fn lock_released(run: &RedisRun<'_>) -> Outcome {
    let key = &run.config.leader_key;
    let deadline = Duration::from_millis(run.config.release_within_ms);
    let holders = holders(run);
    let stop_at = match held_at_stop(run, &holders) {
        Ok(stop_at) => stop_at,
        Err(undecided) => return undecided,
    };
    let how = format!("the target's value: {}", run.attribution.how.join("; "));
    let released_at = holders
        .iter()
        .position(|(t, h)| *t > stop_at && *h != Holder::Primary);
    // A value nobody was seen writing, in the target's place: whether it let go is unknown.
    if let Some(i) = released_at
        && let Holder::Unknown(value) = &holders[i].1
    {
        return Outcome::inconclusive(format!(
            "{} ms after the stop `{key}` held `{}`, a value no instance was seen writing (a \
             script, a command the harness does not read, another client): whether the target \
             let go is unknown; {how}",
            ms(holders[i].0.duration_since(stop_at)),
            crate::run::lock_tap::short(value)
        ));
    }
    // The standby deleting the key the target still held is no release by the target.
    if let Some(i) = released_at
        && let Some(deleted) = run
            .attribution
            .standby_deletes
            .iter()
            .find(|d| **d >= stop_at && **d <= holders[i].0)
    {
        return Outcome::violation(
            format!("the standby, not the target, removed leader key `{key}` after the stop"),
            vec![
                format!(
                    "the standby deleted the key {} ms after the stop; it went {} ms after: the \
                     target never released it",
                    ms(deleted.duration_since(stop_at)),
                    ms(holders[i].0.duration_since(stop_at))
                ),
                how,
            ],
        );
    }
    let released = released_at.map(|i| {
        let (t, h) = &holders[i];
        (t.duration_since(stop_at), h.clone())
    });
    let failover = holders
        .iter()
        .find(|(t, h)| *t > stop_at && *h == Holder::Standby)
        .map(|(t, _)| t.duration_since(stop_at));
    let failover_text = failover_text(run, failover);
    if run.stop == StopKind::Kill {
        let went = released.map_or(
            "was still held at the end of the run".to_owned(),
            |(after, _)| format!("went {} ms after", ms(after)),
        );
        return Outcome::inconclusive(format!(
            "the target was killed, so only the key's expiry can release it: it {went}; {failover_text}"
        ));
    }
    if let Some(wrong) = released_at.and_then(|i| {
        let_go_wrongly(
            run,
            &holders,
            i,
            stop_at,
            &[failover_text.clone(), how.clone()],
        )
    }) {
        return wrong;
    }
    match released {
        Some((after, by)) if after <= deadline => {
            let how_released = match by {
                Holder::Nobody => "released".to_owned(),
                other => format!("taken over by {}", named(&other)),
            };
            let detail = format!(
                "`{key}` {how_released} {} ms after the stop (deadline {} ms); {failover_text}; {how}",
                ms(after),
                ms(deadline)
            );
            if run.standby.started || failover.is_some() {
                Outcome::pass(detail)
            } else {
                Outcome::Pass {
                    detail,
                    limits: Some(failover_text),
                }
            }
        }
        released => Outcome::violation(
            format!(
                "leader key `{key}` still held by `{PRIMARY}` {} ms after the stop",
                ms(deadline)
            ),
            vec![
                match released {
                    Some((after, _)) => format!(
                        "the key went {} ms after the stop: its expiry, not the service, released it",
                        ms(after)
                    ),
                    None => "the key was still held when the run ended".to_owned(),
                },
                failover_text,
                how,
            ],
        ),
    }
}

/// `lock_released` on a service graph: every contender that held the key when it was sent its
/// stop (or took it after) let go of it within the deadline, by deleting it or handing it to
/// another instance: never left it to expire, never had another instance remove it, never
/// took it back. Each holding is judged from the wire (who wrote and deleted) and the watch
/// (when the key changed, its time to live before).
fn contenders_released(run: &RedisRun<'_>, contenders: &[Contender]) -> Outcome {
    let key = &run.config.leader_key;
    let deadline = Duration::from_millis(run.config.release_within_ms);
    let all = changes(run);
    let holders: Vec<(Instant, Holder)> = all.iter().map(|c| (c.at, c.holder.clone())).collect();
    let how = format!("values learnt: {}", run.attribution.how.join("; "));
    let held_by = |name: &str| holders.iter().any(|(_, h)| h.instance() == Some(name));
    if !contenders.iter().any(|c| held_by(&c.name)) {
        let values: Vec<String> = (run.owners.iter())
            .filter_map(|(_, o)| o.as_deref().map(crate::run::lock_tap::short))
            .collect();
        return Outcome::inconclusive(format!(
            "no instance of the contending service was seen holding the leader key `{key}` \
             (a write of it on the instance's own link){}",
            match values.is_empty() {
                true => " (the key was never held)".to_owned(),
                false => format!(" (values seen: {})", values.join(", ")),
            }
        ));
    }
    let (mut released, mut wrong, mut unsure) = (Vec::new(), Vec::new(), Vec::new());
    // A value no instance was seen writing, held once a contender was stopped: an instance
    // may have reached Redis around its proxy (an address Redis announces) and taken it back.
    if let Some(first_stop) = contenders.iter().filter_map(|c| c.stop_at).min() {
        for (i, (at, holder)) in holders.iter().enumerate() {
            let until = holders.get(i + 1).map(|(t, _)| *t);
            if let Holder::Unknown(value) = holder
                && until.is_none_or(|t| t > first_stop)
            {
                unsure.push(format!(
                    "`{}`, a value no instance was seen writing, was held from {} the first \
                     stop: an instance may have reached Redis around its proxy",
                    crate::run::lock_tap::short(value),
                    match at.checked_duration_since(first_stop) {
                        Some(d) => format!("{} ms after", ms(d)),
                        None => format!("{} ms before", ms(first_stop.duration_since(*at))),
                    }
                ));
            }
        }
    }
    for c in contenders {
        let name = &c.name;
        let Some(stop_at) = c.stop_at else {
            if held_by(name) {
                unsure.push(format!(
                    "`{name}` held the key and was never sent a stop (it exited by itself)"
                ));
            }
            continue;
        };
        let after = |t: Instant| ms(t.saturating_duration_since(stop_at));
        let mut let_go = false;
        for (i, (at, holder)) in holders.iter().enumerate() {
            if holder.instance() != Some(name) {
                continue;
            }
            let end = (holders[i + 1..].iter())
                .position(|(_, h)| h != holder)
                .map(|j| i + 1 + j);
            if end.is_some_and(|j| holders[j].0 <= stop_at) {
                continue;
            }
            if *at > stop_at && let_go {
                wrong.push(format!(
                    "`{name}` took the key back {} ms after its stop, having let go of it",
                    after(*at)
                ));
                continue;
            }
            let from = (*at).max(stop_at);
            let took = match *at > stop_at {
                true => format!(" (it took the key {} ms after its stop)", after(*at)),
                false => String::new(),
            };
            let Some(j) = end else {
                wrong.push(format!(
                    "`{name}` still held the key {} ms after its stop, when the watch ended{took}",
                    after(Instant::now().min(from + deadline + POLL * 5))
                ));
                continue;
            };
            let (went, next) = (&holders[j].0, &holders[j].1);
            let_go = true;
            if c.killed {
                unsure.push(format!(
                    "`{name}` was killed, so only the key's expiry could release it: it went {} \
                     ms after its stop",
                    after(*went)
                ));
                continue;
            }
            if let Holder::Unknown(value) = next {
                unsure.push(format!(
                    "{} ms after `{name}`'s stop the key held `{}`, a value no instance was seen \
                     writing: whether `{name}` let go is unknown",
                    after(*went),
                    crate::run::lock_tap::short(value)
                ));
                continue;
            }
            if let Some((deleted, by)) = (run.attribution.deletes.iter())
                .find(|(t, by)| *t >= from && *t <= *went && by.instance() != Some(name))
            {
                wrong.push(format!(
                    "{}, not `{name}`, deleted the key {} ms after `{name}`'s stop: `{name}` \
                     never released it",
                    named(by),
                    after(*deleted)
                ));
                continue;
            }
            if let Some((read_at, ttl)) = all[j].ttl
                && ttl >= 0
                && gone_by(run, holder, from, *went, next) + POLL * 3
                    >= read_at + Duration::from_millis(ttl as u64)
            {
                wrong.push(format!(
                    "`{name}`'s hold expired {} ms after its stop: {} ms before it went its time \
                     to live was {ttl} ms, so it ran out, nobody deleted it{took}",
                    after(*went),
                    ms(went.saturating_duration_since(read_at))
                ));
                continue;
            }
            // Another instance's value in its place: taken only if the key had gone (an `NX`
            // write the server took); any other write is an overwrite, not a hand-over.
            if let Holder::Instance(_) = next {
                match (run.attribution.takes.iter())
                    .rfind(|(t, by, _, _)| *t >= from && *t <= *went && by == next)
                {
                    Some((_, _, true, _)) => {}
                    Some((at, _, false, _)) => {
                        wrong.push(format!(
                            "{} overwrote the key {} ms after `{name}`'s stop (a write that does \
                             not need the key gone): `{name}`'s hold did not end by its own \
                             release{took}",
                            named(next),
                            after(*at)
                        ));
                        continue;
                    }
                    None => {
                        unsure.push(format!(
                            "{} held the key {} ms after `{name}`'s stop with no write of it \
                             seen: whether `{name}`'s hold had gone first is unknown{took}",
                            named(next),
                            after(*went)
                        ));
                        continue;
                    }
                }
            }
            // Its own delete, or a release script that deleted, between its stop and the key's
            // change: the evidence that it let go, not that a link went unread.
            let Some((sent, _, command)) = (run.attribution.lets_go.iter())
                .rfind(|(t, by, _)| *t >= from && *t <= *went && by.instance() == Some(name))
            else {
                let what = match next {
                    Holder::Nobody => "the key went".to_owned(),
                    other => format!("{} took the key", named(other)),
                };
                // What the watch read of its time to live, for whoever reads why it was not
                // taken for an expiry.
                let read = match all[j].ttl {
                    Some((read_at, ttl)) => format!(
                        " (its last time to live read: {ttl} ms, the read sent {} ms after the \
                         stop)",
                        after(read_at)
                    ),
                    None => " (no time to live of it was read)".to_owned(),
                };
                unsure.push(format!(
                    "{what} {} ms after `{name}`'s stop, and `{name}` sent no delete or script \
                     that deleted it before that{took}{read}",
                    after(*went)
                ));
                continue;
            };
            let took_for = went.saturating_duration_since(from);
            if took_for > deadline {
                wrong.push(format!(
                    "`{name}` let go of the key {} ms after its stop, past the deadline of {} \
                     ms{took}",
                    after(*went),
                    ms(deadline)
                ));
                continue;
            }
            let next_leader = (holders[j..].iter())
                .find(|(t, h)| *t >= *went && h.instance().is_some())
                .map(|(t, h)| format!("{} led {} ms after that stop", named(h), after(*t)))
                .unwrap_or_else(|| "nobody led after it".to_owned());
            released.push(format!(
                "`{name}` released the key {} ms after its stop (its `{command}` at +{} ms){took}; \
                 {next_leader}",
                after(*went),
                after(*sent)
            ));
        }
    }
    if !wrong.is_empty() {
        let summary = format!(
            "{} hold(s) of leader key `{key}` not released by the instance at its stop",
            wrong.len()
        );
        let mut evidence = wrong;
        evidence.extend(released);
        evidence.extend(unsure);
        evidence.push(how);
        return Outcome::violation(summary, evidence);
    }
    if released.is_empty() || !unsure.is_empty() {
        let mut why = unsure;
        if released.is_empty() && why.is_empty() {
            why.push(format!(
                "no instance held leader key `{key}` when it was sent its stop"
            ));
        }
        why.extend(released);
        return Outcome::inconclusive(format!("{}; {how}", why.join("; ")));
    }
    Outcome::pass(format!(
        "{} (deadline {} ms); {how}",
        released.join("; "),
        ms(deadline)
    ))
}

/// No two instances lead at once: no two runs by different instances overlap in time, and no
/// instance runs between two runs of another that are each within one interval of it (both
/// running the job every interval: a leader that lost its lock and kept going).
///
/// And no instance runs a job while the lock is held, throughout the run, by the other one
/// (`held`: each change of the key's holder, in Unix ms): the lock says who leads.
fn single_leader(jobs: &[JobRun], interval_ms: u64, held: &Held) -> Outcome {
    let origin = jobs.iter().map(|j| j.started_ms).min().unwrap_or(0);
    let mut overlaps = Vec::new();
    let compared = jobs.iter().filter(|r| {
        r.instance != PRIMARY || held.primary_until.is_none_or(|until| r.started_ms <= until)
    });
    let held = held.changes.as_slice();
    for r in compared {
        let from = r.started_ms.saturating_sub(HELD_SLACK_MS);
        let start = held.iter().rposition(|(t, _)| *t <= from);
        let Some(start) = start else { continue };
        let during: Vec<&Holder> = held[start..]
            .iter()
            .take_while(|(t, _)| *t <= r.ended_ms)
            .map(|(_, h)| h)
            .collect();
        let other = |h: &&Holder| h.instance().is_some_and(|i| i != r.instance);
        if during.iter().all(other)
            && let Some(holder) = during.first().and_then(|h| h.instance())
        {
            overlaps.push(format!(
                "`{}` by {} at +{} ms ran while the lock was {holder}'s (held by it from +{} ms \
                 and throughout the run)",
                r.job,
                r.instance,
                r.started_ms - origin,
                held[start].0.saturating_sub(origin)
            ));
        }
    }
    for r in jobs {
        let near = |before: bool| {
            jobs.iter().filter(|o| o.instance != r.instance).find(|o| {
                if before {
                    o.started_ms < r.started_ms && r.started_ms - o.started_ms <= interval_ms
                } else {
                    o.started_ms > r.started_ms && o.started_ms - r.started_ms <= interval_ms
                }
            })
        };
        if let (Some(a), Some(b)) = (near(true), near(false))
            && a.instance == b.instance
        {
            overlaps.push(format!(
                "`{}` by {} at +{} ms ran between runs by {} at +{} and +{} ms, each within \
                 one interval ({interval_ms} ms): both were leading",
                r.job,
                r.instance,
                r.started_ms - origin,
                a.instance,
                a.started_ms - origin,
                b.started_ms - origin
            ));
        }
    }
    for (i, a) in jobs.iter().enumerate() {
        for b in &jobs[i + 1..] {
            if a.instance != b.instance && a.started_ms < b.ended_ms && b.started_ms < a.ended_ms {
                overlaps.push(format!(
                    "`{}` by {} at +{}..{} ms overlaps `{}` by {} at +{}..{} ms",
                    a.job,
                    a.instance,
                    a.started_ms - origin,
                    a.ended_ms - origin,
                    b.job,
                    b.instance,
                    b.started_ms - origin,
                    b.ended_ms - origin
                ));
            }
        }
    }
    if overlaps.is_empty() {
        let instances: std::collections::BTreeSet<_> = jobs.iter().map(|j| &j.instance).collect();
        return Outcome::pass(format!(
            "{} leader-only job run(s) by {} instance(s), none overlapping",
            jobs.len(),
            instances.len()
        ));
    }
    let total = overlaps.len();
    overlaps.truncate(LISTED);
    Outcome::violation(
        format!(
            "{total} run(s) overlap or interleave with another instance's: two leaders at once"
        ),
        overlaps,
    )
}

/// A job runs once per interval: never twice within half of one, and never more often than
/// one per interval over the whole run (a job every 300 ms of a 500 ms interval is never two
/// within 250 ms, and runs five times in three intervals). `one_read`: runs with the same
/// time and instance came in one read of its output (job lines), so their times are the
/// read's: a cluster of those is buffered output, not a finding, unless the count says so.
fn jobs_once_per_interval(jobs: &[JobRun], interval_ms: u64, one_read: bool) -> Outcome {
    let origin = jobs.iter().map(|j| j.started_ms).min().unwrap_or(0);
    let mut unsure = Vec::new();
    let mut by_job: BTreeMap<&str, Vec<&JobRun>> = BTreeMap::new();
    for job in jobs {
        by_job.entry(&job.job).or_default().push(job);
    }
    let close = interval_ms / 2;
    let mut clusters = Vec::new();
    let mut extra = 0;
    for (name, runs) in &mut by_job {
        runs.sort_by_key(|j| j.started_ms);
        // How many runs the span allows, once per interval (half an interval of jitter). Runs
        // read at once may have begun up to that many intervals before the first read.
        let span = runs.last().map_or(0, |r| r.started_ms) - runs[0].started_ms;
        let per_read = match one_read {
            true => runs
                .chunk_by(|a, b| (a.started_ms, &a.instance) == (b.started_ms, &b.instance))
                .map(<[_]>::len)
                .max()
                .unwrap_or(1) as u64,
            false => 1,
        };
        let allowed = (span + (per_read - 1) * interval_ms + interval_ms / 2) / interval_ms + 1;
        let too_many = runs.len() as u64 > allowed;
        let mut found = Vec::new();
        let mut surplus = 0;
        let mut i = 0;
        while i < runs.len() {
            let mut j = i + 1;
            while j < runs.len() && runs[j].started_ms - runs[j - 1].started_ms < close {
                j += 1;
            }
            let read_at_once = one_read
                && runs[i..j].iter().all(|r| {
                    (r.started_ms, &r.instance) == (runs[i].started_ms, &runs[i].instance)
                });
            if j - i > 1 && read_at_once && !too_many {
                unsure.push(format!(
                    "{} lines of `{name}` came in one read of {}'s output at +{} ms",
                    j - i,
                    runs[i].instance,
                    runs[i].started_ms - origin
                ));
            } else if j - i > 1 {
                surplus += j - i - 1;
                let who: Vec<&str> = runs[i..j].iter().map(|r| r.instance.as_str()).collect();
                found.push(format!(
                    "`{name}` ran {} times at +{} ms ({})",
                    j - i,
                    runs[i].started_ms - origin,
                    who.join(", ")
                ));
            }
            i = j;
        }
        if too_many {
            surplus = surplus.max(runs.len() - allowed as usize);
            found.insert(
                0,
                format!(
                    "`{name}` ran {} times over {span} ms: {allowed} at most at one per \
                     {interval_ms} ms",
                    runs.len()
                ),
            );
        }
        extra += surplus;
        clusters.extend(found);
    }
    if clusters.is_empty() && !unsure.is_empty() {
        return Outcome::inconclusive(format!(
            "{}: output held back and written at once (buffered), or runs at the same moment; \
             which is unknown, and their count is within one per interval (hint: flush each line)",
            unsure.join("; ")
        ));
    }
    if clusters.is_empty() {
        return Outcome::pass(format!(
            "{} run(s) of {} job(s), never two within {close} ms (half the {interval_ms} ms \
             interval), never more than one per interval over the run",
            jobs.len(),
            by_job.len()
        ));
    }
    clusters.truncate(LISTED);
    Outcome::violation(
        format!("{extra} extra run(s): a job ran more than once per interval"),
        clusters,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holders as the values name them (`primary`, `standby`), as a test states them.
    fn by_name(owners: &Owners) -> Attribution {
        Attribution {
            holders: owners
                .iter()
                .map(|(_, o)| match o.as_deref() {
                    None => Holder::Nobody,
                    Some(PRIMARY) => Holder::Primary,
                    Some(STANDBY) => Holder::Standby,
                    Some(other) => Holder::Unknown(other.to_owned()),
                })
                .collect(),
            ..Attribution::default()
        }
    }

    /// The standby ran its job while the lock was the target's the whole time: two leaders,
    /// though no two runs overlap (job lines have no length) and none lies between two of the
    /// other's within an interval.
    #[test]
    fn a_run_while_the_other_holds_the_lock_is_two_leaders() {
        let mut jobs: Vec<_> = (0..5)
            .map(|i| job("primary", 1_000 + i * 1_100, 1_000 + i * 1_100))
            .collect();
        jobs.extend((0..5).map(|i| job("standby", 1_550 + i * 1_100, 1_550 + i * 1_100)));
        let held = Held {
            changes: vec![(900, Holder::Primary)],
            primary_until: None,
        };
        assert!(matches!(
            single_leader(&jobs, 500, &Held::default()),
            Outcome::Pass { .. }
        ));
        let Outcome::Violation { evidence, .. } = single_leader(&jobs, 500, &held) else {
            panic!("the standby ran under the target's lock")
        };
        assert!(
            evidence[0].contains("by standby at +550 ms ran while the lock was primary's"),
            "{evidence:?}"
        );
        // A clean hand-over: the standby runs only once the lock is its own.
        let handed = Held {
            changes: vec![
                (900, Holder::Primary),
                (1_500, Holder::Nobody),
                (1_540, Holder::Standby),
            ],
            primary_until: None,
        };
        let clean: Vec<_> = jobs
            .iter()
            .filter(|j| j.instance == "standby" || j.started_ms < 1_500)
            .cloned()
            .collect();
        assert!(matches!(
            single_leader(&clean, 500, &handed),
            Outcome::Pass { .. }
        ));
    }

    /// Every 300 ms against a 500 ms interval: never two within 250 ms, yet five runs in three
    /// intervals.
    #[test]
    fn a_job_run_too_often_is_counted() {
        let fast: Vec<_> = (0..10)
            .map(|i| job("primary", i * 300, i * 300 + 5))
            .collect();
        let Outcome::Violation { evidence, .. } = jobs_once_per_interval(&fast, 500, false) else {
            panic!("too often")
        };
        assert!(
            evidence[0].contains("ran 10 times over 2700 ms: 6 at most"),
            "{evidence:?}"
        );
        // On time with jitter either way: within the count.
        let jittered: Vec<_> = (0..7)
            .map(|i| {
                job(
                    "primary",
                    i * 500 + [0, 30, 0, 45][i as usize % 4],
                    i * 500 + 60,
                )
            })
            .collect();
        assert!(matches!(
            jobs_once_per_interval(&jittered, 500, false),
            Outcome::Pass { .. }
        ));
    }

    /// Two lines per read, a run per interval: a buffer flushed every second interval, not a
    /// job run twice. Inconclusive for job lines; a finding for a job log (its own times).
    #[test]
    fn runs_read_at_once_are_no_finding_when_their_count_fits() {
        let buffered: Vec<_> = (0..4)
            .flat_map(|i| {
                [
                    job("primary", i * 1_000, i * 1_000),
                    job("primary", i * 1_000, i * 1_000),
                ]
            })
            .collect();
        let outcome = jobs_once_per_interval(&buffered, 500, true);
        assert!(
            matches!(&outcome, Outcome::Inconclusive { reason } if reason.contains("came in one read")),
            "{outcome:?}"
        );
        assert!(matches!(
            jobs_once_per_interval(&buffered, 500, false),
            Outcome::Violation { .. }
        ));
        // Three a read, every interval: too many by the count, whatever the reads.
        let tripled: Vec<_> = (0..6)
            .flat_map(|i| [0, 0, 0].map(|_| job("primary", i * 500, i * 500)))
            .collect();
        assert!(matches!(
            jobs_once_per_interval(&tripled, 500, true),
            Outcome::Violation { .. }
        ));
    }

    fn job(instance: &str, start: u64, end: u64) -> JobRun {
        JobRun {
            instance: instance.into(),
            job: "report".into(),
            started_ms: start,
            ended_ms: end,
        }
    }

    #[test]
    fn overlapping_runs_of_two_instances_are_two_leaders() {
        let jobs = [job("primary", 0, 50), job("standby", 500, 550)];
        assert!(matches!(
            single_leader(&jobs, 500, &Held::default()),
            Outcome::Pass { .. }
        ));
        let jobs = [job("primary", 0, 50), job("standby", 30, 80)];
        let Outcome::Violation { evidence, .. } = single_leader(&jobs, 500, &Held::default())
        else {
            panic!("overlap")
        };
        assert_eq!(
            evidence,
            ["`report` by primary at +0..50 ms overlaps `report` by standby at +30..80 ms"]
        );
    }

    #[test]
    fn a_leader_that_keeps_running_beside_the_new_one_is_two_leaders() {
        // A clean failover: the primary's runs, then the standby's, even a short gap apart.
        let mut failover: Vec<_> = (0..4)
            .map(|i| job("primary", i * 500, i * 500 + 50))
            .collect();
        failover.extend((0..4).map(|i| job("standby", 1_600 + i * 500, 1_650 + i * 500)));
        assert!(matches!(
            single_leader(&failover, 500, &Held::default()),
            Outcome::Pass { .. }
        ));
        // The primary keeps going after the standby took over: interleaved, never overlapping.
        let mut split = failover.clone();
        split.extend((0..3).map(|i| job("primary", 1_850 + i * 500, 1_900 + i * 500)));
        let Outcome::Violation { summary, evidence } = single_leader(&split, 500, &Held::default())
        else {
            panic!("two leaders")
        };
        assert!(summary.contains("two leaders at once"), "{summary}");
        assert!(
            evidence
                .iter()
                .any(|e| e.contains("by primary at +1850 ms ran between runs by standby")),
            "{evidence:?}"
        );
    }

    #[test]
    fn runs_closer_than_half_an_interval_are_duplicates() {
        let steady: Vec<_> = (0..5)
            .map(|i| job("primary", i * 500, i * 500 + 20))
            .collect();
        assert!(matches!(
            jobs_once_per_interval(&steady, 500, false),
            Outcome::Pass { .. }
        ));
        let mut tripled = steady.clone();
        for i in 0..5 {
            tripled.push(job("primary", i * 500 + 1, i * 500 + 21));
            tripled.push(job("primary", i * 500 + 2, i * 500 + 22));
        }
        let Outcome::Violation { summary, evidence } = jobs_once_per_interval(&tripled, 500, false)
        else {
            panic!("three runs per interval")
        };
        assert_eq!(
            summary,
            "10 extra run(s): a job ran more than once per interval"
        );
        assert_eq!(
            evidence[..2],
            [
                "`report` ran 15 times over 2002 ms: 5 at most at one per 500 ms",
                "`report` ran 3 times at +0 ms (primary, primary, primary)"
            ]
        );
    }

    /// A target and its standby, the target stopped cleanly 1000 ms after `t0`.
    fn paired(
        config: &RedisLeadership,
        t0: Instant,
        owners: Owners,
        attribution: Attribution,
    ) -> RedisRun<'_> {
        RedisRun {
            config,
            ttls: vec![None; owners.len()],
            attribution,
            owners,
            clock: (t0, 0),
            stop_at: Some(t0 + Duration::from_millis(1_000)),
            stop: StopKind::Clean,
            standby: StandbyRun {
                started: true,
                ..StandbyRun::default()
            },
            jobs: Jobs::Off,
            contenders: None,
        }
    }

    /// The standby's take passes two proxies, its own and then the shared one: on a loaded
    /// harness the watcher's sight of the key gone can fall between the two. Counted once,
    /// by the copy that reached the server, the key is seen to run out, and not taken over
    /// while the target still held it (a CI run judged a key left to expire "still held
    /// 1000 ms after the stop", the failover's write dated by its first copy).
    #[test]
    fn a_take_seen_on_two_proxies_is_one_hand_over() {
        let config = RedisLeadership::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let command = |ms, side, value: &str, answered| crate::run::lock_tap::KeyCommand {
            at: at(ms),
            side,
            name: "SET".into(),
            values: vec![value.into()],
            written: crate::run::lock_tap::Written::Yes,
            only_if_absent: true,
            answer: None,
            answered: Some(at(answered)),
        };
        let commands = [
            command(0, Side::Shared, "p-token", 1),
            // Read by the standby's proxy at 3720; by the shared one, 25 ms later, after the
            // watcher's read that found the key gone (answered at 3740).
            command(3_720, Side::Standby, "s-token", 3_750),
            command(3_745, Side::Shared, "s-token", 3_747),
        ];
        let owners: Owners = vec![
            (at(2), Some("p-token".into())),
            (at(3_740), None),
            (at(3_760), Some("s-token".into())),
        ];
        let writers = Writers::Pair {
            standby_from: Some(at(500)),
        };
        let attribution = Attribution::learn(&owners, &commands, 0, Some(at(2)), writers);
        let mut run = paired(&config, t0, owners, attribution);
        // Its time to live, read 40 ms before the key went: 30 ms.
        run.ttls[1] = Some((at(3_700), 30));
        let Outcome::Violation { summary, evidence } = lock_released(&run) else {
            panic!("left to expire: {:?}", lock_released(&run))
        };
        assert!(
            summary.contains("expired instead of being released"),
            "{summary}: {evidence:?}"
        );
        assert!(
            evidence
                .iter()
                .any(|e| e.contains("took over 2745 ms after the stop")),
            "{evidence:?}"
        );
        assert_eq!(
            (run.attribution.takes.iter())
                .map(|t| t.0)
                .collect::<Vec<_>>(),
            [at(0), at(3_745)],
            "one take each, the standby's by its copy that reached the server"
        );
    }

    #[test]
    fn the_lock_must_go_within_the_deadline() {
        let config = RedisLeadership::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let run = |owners: Owners| {
            let attribution = by_name(&owners);
            paired(&config, t0, owners, attribution)
        };
        let released = run(vec![
            (at(0), Some(PRIMARY.into())),
            (at(1_050), None),
            (at(1_100), Some(STANDBY.into())),
        ]);
        let Outcome::Pass { detail, .. } = lock_released(&released) else {
            panic!("released in 50 ms")
        };
        assert!(
            detail.contains("released 50 ms after the stop")
                && detail.contains("took over 100 ms after"),
            "{detail}"
        );
        let expired = run(vec![
            (at(0), Some(PRIMARY.into())),
            (at(4_000), Some(STANDBY.into())),
        ]);
        let Outcome::Violation { evidence, .. } = lock_released(&expired) else {
            panic!("held for 3 s")
        };
        assert!(
            evidence[0].contains("went 3000 ms after the stop"),
            "{evidence:?}"
        );
        let never = run(vec![(at(0), Some(STANDBY.into()))]);
        assert!(matches!(
            lock_released(&never),
            Outcome::Inconclusive { .. }
        ));

        // A key left to expire within release_within_ms passed as released: its last time to
        // live, read 10 ms before it went, said 10 ms.
        let mut lapsed = run(vec![
            (at(0), Some(PRIMARY.into())),
            (at(1_300), None),
            (at(1_310), Some(STANDBY.into())),
        ]);
        lapsed.ttls[1] = Some((at(1_290), 10));
        let Outcome::Violation { summary, evidence } = lock_released(&lapsed) else {
            panic!("expired, not released")
        };
        assert!(
            summary.contains("expired instead of being released"),
            "{summary}"
        );
        assert!(
            evidence[0].contains("its time to live was 10 ms"),
            "{evidence:?}"
        );
        // Deleted with 25 s of its lease left: released.
        let mut deleted = lapsed;
        deleted.ttls[1] = Some((at(1_290), 25_000));
        assert!(matches!(lock_released(&deleted), Outcome::Pass { .. }));

        // A value nobody was seen writing, in the target's place: not a release.
        let disguised = run(vec![
            (at(0), Some(PRIMARY.into())),
            (at(1_020), Some("primary:draining".into())),
        ]);
        let outcome = lock_released(&disguised);
        assert!(
            matches!(&outcome, Outcome::Inconclusive { reason } if reason.contains("no instance was seen writing")),
            "{outcome:?}"
        );
        // The standby deleted the key and took it: the target released nothing.
        let mut stolen = run(vec![
            (at(0), Some(PRIMARY.into())),
            (at(1_030), Some(STANDBY.into())),
        ]);
        stolen.attribution.standby_deletes = vec![at(1_025)];
        let Outcome::Violation { summary, .. } = lock_released(&stolen) else {
            panic!("stolen, not released")
        };
        assert!(summary.contains("the standby, not the target"), "{summary}");

        // A primary that takes the key back after letting go passed.
        let retaken = run(vec![
            (at(0), Some(PRIMARY.into())),
            (at(1_050), None),
            (at(1_400), Some(PRIMARY.into())),
        ]);
        let Outcome::Violation { summary, .. } = lock_released(&retaken) else {
            panic!("taken back")
        };
        assert!(summary.contains("took leader key"), "{summary}");
    }

    /// A graph's contenders, each judged at its own stop: every way a hold can end wrongly,
    /// as a hostile scheduler would end it, and the hand-over that passes.
    #[test]
    fn each_contender_lets_go_at_its_own_stop() {
        let config = RedisLeadership::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let one = |n: u32| Holder::Instance(format!("s#{n}"));
        let contenders = vec![
            Contender {
                name: "s#1".into(),
                stop_at: Some(at(1_000)),
                killed: false,
            },
            Contender {
                name: "s#2".into(),
                stop_at: Some(at(5_000)),
                killed: false,
            },
        ];
        // Each change: when, and who (`None`: nobody).
        let run = |changes: &[(u64, Option<u32>)]| RedisRun {
            config: &config,
            owners: (changes.iter())
                .map(|(t, h)| (at(*t), h.map(|n| format!("token-{n}"))))
                .collect(),
            ttls: vec![None; changes.len()],
            attribution: Attribution {
                holders: (changes.iter())
                    .map(|(_, h)| h.map_or(Holder::Nobody, one))
                    .collect(),
                how: vec!["each value's SET on its instance's own link".into()],
                ..Attribution::default()
            },
            clock: (t0, 0),
            stop_at: Some(at(5_000)),
            stop: StopKind::Clean,
            standby: StandbyRun::default(),
            jobs: Jobs::Off,
            contenders: Some(contenders.clone()),
        };
        let judge = |run: &RedisRun<'_>| contenders_released(run, &contenders);
        // Its release script or delete, seen on its own link.
        let let_go = |run: &mut RedisRun<'_>, lets_go: &[(u64, u32, &str)]| {
            run.attribution.lets_go = (lets_go.iter())
                .map(|(t, n, what)| (at(*t), one(*n), (*what).to_owned()))
                .collect();
        };
        // The writes that took the key: (when, who, `NX`), answered at once.
        let took = |run: &mut RedisRun<'_>, takes: &[(u64, u32, bool)]| {
            run.attribution.takes = (takes.iter())
                .map(|(t, n, nx)| (at(*t), one(*n), *nx, at(*t)))
                .collect();
        };
        // s#1 leads, released 40 ms after its stop; s#2 takes over 60 ms after it, and
        // releases 30 ms after its own.
        let mut good = run(&[(0, Some(1)), (1_040, None), (1_060, Some(2)), (5_030, None)]);
        let_go(&mut good, &[(1_035, 1, "DEL"), (5_025, 2, "EVALSHA")]);
        took(&mut good, &[(0, 1, true), (1_055, 2, true)]);
        let Outcome::Pass { detail, .. } = judge(&good) else {
            panic!("both released: {:?}", judge(&good))
        };
        assert!(
            detail.contains(
                "`s#1` released the key 40 ms after its stop (its `DEL` at +35 ms); `s#2` led \
                 60 ms after that stop"
            ) && detail.contains("`s#2` released the key 30 ms after its stop (its `EVALSHA`"),
            "{detail}"
        );
        // Handed straight to s#2: released by its script, taken (`NX`) within one look.
        let mut handed = run(&[(0, Some(1)), (1_040, Some(2)), (5_030, None)]);
        let_go(&mut handed, &[(1_035, 1, "EVALSHA"), (5_025, 2, "EVALSHA")]);
        took(&mut handed, &[(1_038, 2, true)]);
        assert!(
            matches!(judge(&handed), Outcome::Pass { .. }),
            "{:?}",
            judge(&handed)
        );
        // The same, but s#2's write was a plain `SET` (no `NX`): an overwrite, whatever
        // s#1's script did.
        let mut overwritten = run(&[(0, Some(1)), (1_040, Some(2)), (5_030, None)]);
        let_go(
            &mut overwritten,
            &[(1_035, 1, "EVALSHA"), (5_025, 2, "EVALSHA")],
        );
        took(&mut overwritten, &[(1_038, 2, false)]);
        let Outcome::Violation { evidence, .. } = judge(&overwritten) else {
            panic!("overwritten")
        };
        assert!(
            evidence[0].contains("`s#2` overwrote the key 38 ms after `s#1`'s stop"),
            "{evidence:?}"
        );
        // Taken (`NX`) by s#2 with no release of s#1's seen (its script deleted nothing):
        // whether s#1 let go is unknown.
        let mut no_release = run(&[(0, Some(1)), (1_040, Some(2)), (5_030, None)]);
        took(&mut no_release, &[(1_038, 2, true)]);
        let_go(&mut no_release, &[(5_025, 2, "EVALSHA")]);
        let outcome = judge(&no_release);
        assert!(
            matches!(&outcome, Outcome::Inconclusive { reason } if reason.contains("`s#1` sent no delete or script that deleted it")),
            "{outcome:?}"
        );
        // Gone with nothing of s#1's seen (a link unread): whether it let go is unknown.
        let mut unseen = run(&[(0, Some(1)), (1_040, None), (1_060, Some(2)), (5_030, None)]);
        let_go(&mut unseen, &[(5_025, 2, "EVALSHA")]);
        took(&mut unseen, &[(1_055, 2, true)]);
        assert!(matches!(judge(&unseen), Outcome::Inconclusive { .. }));
        // Released, then a value no instance wrote: taken back around the proxy, maybe.
        let mut around = run(&[(0, Some(1)), (1_040, None), (1_140, Some(3)), (4_140, None)]);
        around.attribution.holders[2] = Holder::Unknown("token-3".into());
        let_go(&mut around, &[(1_035, 1, "EVALSHA")]);
        let outcome = judge(&around);
        assert!(
            matches!(&outcome, Outcome::Inconclusive { reason } if reason.contains("`token-3`, a value no instance was seen writing, was held from 140 ms after")),
            "{outcome:?}"
        );
        // Left to expire: its last time to live ran out when it went.
        let mut expired = run(&[(0, Some(1)), (2_990, None), (3_000, Some(2)), (5_030, None)]);
        expired.ttls[1] = Some((at(2_980), 10));
        let Outcome::Violation { evidence, .. } = judge(&expired) else {
            panic!("expired")
        };
        assert!(
            evidence[0].contains("`s#1`'s hold expired 1990 ms"),
            "{evidence:?}"
        );
        // The same expiry, s#2's `NX` take read by the tap 100 ms before the key's time to
        // live ran out and forwarded late (a loaded harness): the server took it only once the
        // key had gone, by its answer, 20 ms after the expiry. Still an expiry (it was
        // inconclusive, "sent no delete", in CI).
        let mut late_take = run(&[(0, Some(1)), (2_890, Some(2)), (5_030, None)]);
        late_take.ttls[1] = Some((at(1_990), 1_000));
        took(&mut late_take, &[(2_890, 2, true)]);
        late_take.attribution.takes[0].3 = at(3_010);
        let Outcome::Violation { evidence, .. } = judge(&late_take) else {
            panic!("expired, taken late: {:?}", judge(&late_take))
        };
        assert!(
            evidence[0].contains("`s#1`'s hold expired 1890 ms"),
            "{evidence:?}"
        );
        // Answered before the time to live could have run out: not an expiry.
        late_take.attribution.takes[0].3 = at(2_900);
        assert!(
            matches!(judge(&late_take), Outcome::Inconclusive { .. }),
            "{:?}",
            judge(&late_take)
        );
        // Released by its own script 2 ms before s#2's take, whose answer a latency on Redis
        // held back 2 s: that lateness is no expiry (the review's hostile case).
        let mut released_late = run(&[(0, Some(1)), (1_022, Some(2)), (5_030, None)]);
        released_late.ttls[1] = Some((at(1_015), 1_985));
        took(&mut released_late, &[(1_022, 2, true)]);
        released_late.attribution.takes[0].3 = at(3_022);
        let_go(
            &mut released_late,
            &[(1_020, 1, "EVALSHA"), (5_025, 2, "EVALSHA")],
        );
        let Outcome::Pass { detail, .. } = judge(&released_late) else {
            panic!("released, taken late: {:?}", judge(&released_late))
        };
        assert!(
            detail.contains("`s#1` released the key 22 ms after its stop"),
            "{detail}"
        );
        // The same expiry, the watcher's read that saw the key gone answered 10 ms after the
        // tap read s#2's take (the server ran the read first): the wire's take sorted before
        // the watcher's sight of no holder, between s#1 and s#2, and the expiry was "sent no
        // delete" (in a loaded run), with no time to live to judge it by.
        let mut read_late = run(&[(0, Some(1)), (3_010, None), (3_030, Some(2)), (5_030, None)]);
        read_late.ttls[1] = Some((at(2_980), 10));
        read_late.attribution.events = vec![(at(3_000), one(2), at(3_020))];
        took(&mut read_late, &[(3_000, 2, true)]);
        let Outcome::Violation { evidence, .. } = judge(&read_late) else {
            panic!("expired, seen gone late: {:?}", judge(&read_late))
        };
        assert!(
            evidence[0].contains("`s#1`'s hold expired 2010 ms"),
            "{evidence:?}"
        );
        // The watcher's late sights move the write after them, but never past its answer: a
        // hand-over whose sight of no holder was answered 30 ms late still gives s#2 the key
        // when its job, 10 ms after its take, ran (a review's hostile case: it was "s#2 ran
        // while the lock was s#1's")...
        let mut handed_late = run(&[(0, Some(1)), (3_030, None), (3_045, Some(2)), (5_030, None)]);
        handed_late.clock = (at(10_000), 10_000);
        handed_late.attribution.events = vec![(at(3_000), one(2), at(3_001))];
        took(&mut handed_late, &[(3_000, 2, true)]);
        let jobs = [
            job("s#1", 2_000, 2_000),
            job("s#1", 2_500, 2_500),
            job("s#2", 3_010, 3_010),
            job("s#2", 3_510, 3_510),
        ];
        let outcome = single_leader(&jobs, 500, &held_unix(&handed_late));
        assert!(matches!(outcome, Outcome::Pass { .. }), "{outcome:?}");
        // ... and s#1 running a job 150 ms after s#2's take was answered, the sight of no
        // holder answered 300 ms late, is still two leaders (the same review: it passed).
        let mut led = run(&[(0, Some(1)), (3_300, None), (3_310, Some(2)), (5_030, None)]);
        led.clock = (at(10_000), 10_000);
        led.attribution.events = vec![(at(3_000), one(2), at(3_002))];
        let jobs = [
            job("s#1", 2_650, 2_650),
            job("s#1", 3_150, 3_150),
            job("s#2", 3_400, 3_400),
        ];
        let outcome = single_leader(&jobs, 500, &held_unix(&led));
        assert!(matches!(outcome, Outcome::Violation { .. }), "{outcome:?}");
        // A release 950 ms after the stop, the key taken at once, seen gone 50 ms late: in
        // time, dated by the take's answer, not by the late sight (the deadline is 1000 ms).
        let mut in_time = run(&[(0, Some(1)), (2_010, None), (2_020, Some(2)), (5_030, None)]);
        in_time.attribution.events = vec![(at(1_960), one(2), at(1_961))];
        took(&mut in_time, &[(1_960, 2, true)]);
        let_go(
            &mut in_time,
            &[(1_950, 1, "EVALSHA"), (5_025, 2, "EVALSHA")],
        );
        let Outcome::Pass { detail, .. } = judge(&in_time) else {
            panic!("released in time, seen late: {:?}", judge(&in_time))
        };
        assert!(
            detail.contains("`s#1` released the key 961 ms after its stop"),
            "{detail}"
        );
        // Held past the deadline, whatever made it go.
        let mut late = run(&[(0, Some(1)), (2_500, None), (2_510, Some(2)), (5_030, None)]);
        let_go(&mut late, &[(2_495, 1, "DEL"), (5_025, 2, "DEL")]);
        let Outcome::Violation { evidence, .. } = judge(&late) else {
            panic!("late")
        };
        assert!(
            evidence[0].contains("1500 ms after its stop, past the deadline"),
            "{evidence:?}"
        );
        // Never let go: still s#2's when the watch ended.
        let kept = run(&[(0, Some(2))]);
        let Outcome::Violation { evidence, .. } = judge(&kept) else {
            panic!("kept")
        };
        assert!(
            evidence[0].contains("`s#2` still held the key"),
            "{evidence:?}"
        );
        // Deleted by the other contender, which then took it: s#1 released nothing.
        let mut stolen = run(&[(0, Some(1)), (1_030, Some(2)), (5_020, None)]);
        stolen.attribution.deletes = vec![(at(1_025), one(2)), (at(5_020), one(2))];
        let Outcome::Violation { evidence, .. } = judge(&stolen) else {
            panic!("stolen")
        };
        assert!(
            evidence[0].contains("`s#2`, not `s#1`, deleted the key"),
            "{evidence:?}"
        );
        // Let go at its stop, then taken back.
        let mut back = run(&[(0, Some(1)), (1_040, None), (1_300, Some(1)), (1_340, None)]);
        let_go(&mut back, &[(1_035, 1, "DEL"), (1_335, 1, "DEL")]);
        let Outcome::Violation { evidence, .. } = judge(&back) else {
            panic!("taken back")
        };
        assert!(
            evidence[0].contains("`s#1` took the key back 300 ms"),
            "{evidence:?}"
        );
        // Replaced by a value nobody was seen writing: whether it let go is unknown.
        let mut unknown = run(&[(0, Some(1)), (1_020, Some(3))]);
        unknown.attribution.holders[1] = Holder::Unknown("token-3".into());
        assert!(matches!(judge(&unknown), Outcome::Inconclusive { .. }));
        // Killed: only the key's expiry could release it.
        let mut killed = run(&[(0, Some(1)), (3_000, None)]);
        let mut with_kill = contenders.clone();
        with_kill[0].killed = true;
        killed.contenders = Some(with_kill.clone());
        let outcome = contenders_released(&killed, &with_kill);
        assert!(
            matches!(&outcome, Outcome::Inconclusive { reason } if reason.contains("was killed")),
            "{outcome:?}"
        );
        // Held only by an instance never sent a stop, or by nobody at all: nothing judged.
        let never = run(&[(0, None)]);
        assert!(matches!(judge(&never), Outcome::Inconclusive { .. }));
        let before = run(&[(0, Some(1)), (500, None)]);
        let outcome = judge(&before);
        assert!(
            matches!(&outcome, Outcome::Inconclusive { reason } if reason.contains("when it was sent its stop")),
            "{outcome:?}"
        );
    }

    /// Runs named by something no instance is called (a pid, a hostname): they cannot be set
    /// against the lock's holders, so `single_leader` cannot say two led; once per interval
    /// still can.
    #[test]
    fn runs_named_by_no_instance_are_not_two_leaders() {
        let config = RedisLeadership::default();
        let t0 = Instant::now();
        let jobs: Vec<JobRun> = (0..4)
            .map(|i| job("scheduler-28114", i * 500, i * 500))
            .collect();
        let run = RedisRun {
            config: &config,
            owners: vec![(t0, Some("token".into()))],
            ttls: vec![None],
            attribution: Attribution {
                holders: vec![Holder::Instance("scheduler#2".into())],
                ..Attribution::default()
            },
            clock: (t0, 0),
            stop_at: None,
            stop: StopKind::Clean,
            standby: StandbyRun::default(),
            jobs: Jobs::Listed(Ok(jobs)),
            contenders: Some(vec![Contender {
                name: "scheduler#2".into(),
                stop_at: None,
                killed: false,
            }]),
        };
        let outcomes = judge(&run);
        let single = &outcomes[&CheckName::SingleLeader];
        assert!(
            matches!(single, Outcome::Inconclusive { reason } if reason.contains("`scheduler-28114`, no instance the harness started (`scheduler#2`)")),
            "{single:?}"
        );
        assert!(matches!(
            outcomes[&CheckName::JobsOncePerInterval],
            Outcome::Pass { .. }
        ));
    }

    /// A Redis enough for the watcher: `GET` answers `value`, `PTTL` 1000 ms, anything else
    /// `+OK`.
    async fn fake_redis(
        value: Arc<std::sync::Mutex<Option<String>>>,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        fake_redis_with(value, Duration::ZERO, None).await
    }

    /// [`fake_redis`], answering each batch of commands `delay` after it ran them, and `PTTL`
    /// as the time left until `expires` when given (-2, no key, from then on).
    async fn fake_redis_with(
        value: Arc<std::sync::Mutex<Option<String>>>,
        delay: Duration,
        expires: Option<Instant>,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut link, _)) = listener.accept().await {
                let value = value.clone();
                tokio::spawn(async move {
                    let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
                    let mut queued: Option<Vec<Vec<u8>>> = None;
                    while let Ok(n @ 1..) = link.read(&mut chunk).await {
                        buf.extend_from_slice(&chunk[..n]);
                        // Whole commands only: `*N` then N `$len` arguments.
                        let mut replies = Vec::new();
                        while let Some((name, used)) = command(&buf) {
                            buf.drain(..used);
                            // A transaction queues its commands and answers them at EXEC.
                            match (name.as_str(), queued.as_mut()) {
                                ("MULTI", _) => {
                                    queued = Some(Vec::new());
                                    replies.extend(b"+OK\r\n");
                                    continue;
                                }
                                ("EXEC", Some(answers)) => {
                                    replies.extend(format!("*{}\r\n", answers.len()).into_bytes());
                                    replies.append(&mut answers.concat());
                                    queued = None;
                                    continue;
                                }
                                _ => {}
                            }
                            let reply = match name.as_str() {
                                "GET" => match value.lock().unwrap().as_deref() {
                                    Some(v) => format!("${}\r\n{v}\r\n", v.len()),
                                    None => "$-1\r\n".to_owned(),
                                },
                                // Past `expires` the key is gone, whatever GET said: -2.
                                "PTTL" => match expires {
                                    Some(at) if Instant::now() >= at => ":-2\r\n".to_owned(),
                                    Some(at) => format!(
                                        ":{}\r\n",
                                        at.saturating_duration_since(Instant::now()).as_millis()
                                    ),
                                    None => ":1000\r\n".to_owned(),
                                },
                                _ => "+OK\r\n".to_owned(),
                            };
                            match queued.as_mut() {
                                Some(answers) => {
                                    answers.push(reply.into_bytes());
                                    replies.extend(b"+QUEUED\r\n");
                                }
                                None => replies.extend(reply.into_bytes()),
                            }
                        }
                        tokio::time::sleep(delay).await;
                        if link.write_all(&replies).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    /// The first whole command in `buf`: its name, upper case, and its length.
    fn command(buf: &[u8]) -> Option<(String, usize)> {
        let text = std::str::from_utf8(buf).ok()?;
        let mut lines = text.split_inclusive("\r\n");
        let count: usize = lines.next()?.strip_prefix('*')?.trim_end().parse().ok()?;
        let mut used = text.find("\r\n")? + 2;
        let mut name = None;
        for _ in 0..count {
            let len = lines.next().filter(|l| l.ends_with("\r\n"))?;
            let arg = lines.next().filter(|l| l.ends_with("\r\n"))?;
            name.get_or_insert_with(|| arg.trim_end().to_ascii_uppercase());
            used += len.len() + arg.len();
        }
        Some((name?, used))
    }

    /// The harness's reads of the key meet none of the faults played on the shared proxy: a
    /// latency held a read back and dated it late, so an old holder was taken for one that
    /// came after the write that replaced it (two leaders at once, wrongly).
    #[tokio::test]
    async fn the_watcher_reads_past_the_faults_of_the_shared_proxy() {
        let value = Arc::new(std::sync::Mutex::new(Some(PRIMARY.to_owned())));
        let (redis, _server) = fake_redis(value.clone()).await;
        let proxy = FaultProxy::start("redis", "127.0.0.1:0".parse().unwrap(), redis)
            .await
            .unwrap();
        proxy
            .add_toxic(crate::fault::Toxic::new(crate::fault::ToxicKind::Latency {
                latency: 20_000,
                jitter: 0,
            }))
            .unwrap();
        let config = RedisLeadership {
            leader_key: "k".to_owned(),
            job_log: None,
            job_line: None,
            interval_ms: 500,
            release_within_ms: 1_000,
            lead_within_ms: 10_000,
            standby: false,
            service: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let url = format!("redis://{}", proxy.listen_addr());
        let reach = RedisReach {
            url: &url,
            shared: Some(proxy.switch()),
            out_dir: dir.path(),
            contenders: None,
        };
        let (leader, _hooks) = Leader::start(&config, reach, Err("none")).await.unwrap();
        let mut owner = leader.watcher.owner();
        let seen = |want: &'static str| move |o: &Option<String>| o.as_deref() == Some(want);
        // Far under the proxy's latency, far over a read on a loaded machine.
        let quick = Duration::from_millis(10_000);
        tokio::time::timeout(quick, owner.wait_for(seen(PRIMARY)))
            .await
            .expect("the key read within 10 s, not after the proxy's 20 s")
            .unwrap();
        // The standby takes the key: the watcher sees it at once, and dates it then.
        *value.lock().unwrap() = Some(STANDBY.to_owned());
        let taken = Instant::now();
        tokio::time::timeout(quick, owner.wait_for(seen(STANDBY)))
            .await
            .expect("the change read within 10 s, not after the proxy's 20 s")
            .unwrap();
        let watched = leader.watcher.finish().await;
        let (at, _) = watched.owners.last().unwrap();
        assert!(at.duration_since(taken) < quick, "{:?}", watched.owners);
        proxy.close().await;
    }

    /// A time to live is dated by when its read was sent: the server counted it then or later,
    /// whereas the answer can come late (a loaded harness). Dated by the answer, 300 ms late
    /// here, a key that expired right on time was read as living 300 ms longer, and a graph's
    /// `lock_released` took a hold that expired for one that might have been deleted (CI).
    #[tokio::test]
    async fn a_time_to_live_is_dated_by_its_read_not_its_late_answer() {
        let expires = Instant::now() + Duration::from_millis(1_500);
        let delay = Duration::from_millis(300);
        let (read_at, ttl) = last_time_to_live(expires, delay, expires).await;
        let expiry = read_at + Duration::from_millis(ttl as u64);
        // At most the key's real expiry (a millisecond of rounding aside).
        assert!(
            expiry <= expires + Duration::from_millis(2),
            "read {} ms after the real expiry",
            expiry.saturating_duration_since(expires).as_millis()
        );
    }

    /// The watcher on a fake Redis whose key expires at `expires` (answers `delay` late) and
    /// whose value goes at `gone`: the last time to live it read before it saw the key go.
    async fn last_time_to_live(expires: Instant, delay: Duration, gone: Instant) -> (Instant, i64) {
        let value = Arc::new(std::sync::Mutex::new(Some(PRIMARY.to_owned())));
        let (redis, _server) = fake_redis_with(value.clone(), delay, Some(expires)).await;
        let watcher = Watcher::start(&format!("redis://{redis}"), "k", None).unwrap();
        let mut owner = watcher.owner();
        let deadline = Duration::from_secs(30);
        tokio::time::timeout(deadline, owner.wait_for(|o| o.is_some()))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep_until(gone.into()).await;
        *value.lock().unwrap() = None;
        tokio::time::timeout(deadline, owner.wait_for(|o| o.is_none()))
            .await
            .expect("the key's going seen")
            .unwrap();
        let watched = watcher.finish().await;
        let i = (watched.owners.iter())
            .position(|(_, o)| o.is_none())
            .expect("a change to no holder");
        watched.ttls[i].expect("a time to live read before it")
    }

    /// A key that runs out between the read of its value and of its time to live answers a
    /// value and -2 (no key): it had none of its time left, which dates its expiry by that
    /// read. Taken as "no time to live known", an expiry read that way was never told from
    /// a hold left to another instance.
    #[tokio::test]
    async fn a_value_read_as_its_key_runs_out_had_no_time_left() {
        let expires = Instant::now() + Duration::from_millis(300);
        // The value stays readable past its expiry: every read then answers it with -2.
        let gone = expires + Duration::from_millis(100);
        let (read_at, ttl) = last_time_to_live(expires, Duration::ZERO, gone).await;
        assert_eq!(ttl, 0, "the last read's time to live");
        assert!(
            read_at >= expires,
            "the last read was sent after the expiry"
        );
    }
}
