//! leader-jobs: leader election on Redis with a heartbeat, and a recurrent leader-only job.
//!
//! The reference service of seeds 002 and 003, written the way their teams were reaching for:
//!
//! - **one lock, owned by name**: `SET key instance NX PX ttl` to lead, a heartbeat that extends
//!   the lock only while this instance still owns it (and steps down the moment it does not),
//!   and on the way out a release that deletes the key only if it is still ours;
//! - **a lease counted from the request**: leadership lasts a TTL from when the `SET` or the
//!   extension was *sent*, less a margin, not from when its answer came: an answer that comes
//!   late (a slow network) leaves less of the lease, never more;
//! - **one registration per job**: the job is registered once and runs once per interval, and
//!   only while this instance leads;
//! - **ready once it knows its role**: it says it is ready once its first try to lead has
//!   been answered (it leads or it follows), not before: what it does then is what it will do;
//! - **every task tracked**: the elector, the heartbeat and the job run on a `TaskTracker` and
//!   stop on one `CancellationToken`;
//! - **a connection that outlives a partition**: a `ConnectionManager`, which reconnects once
//!   Redis is reachable again.
//!
//! It follows quiesce's Redis contract: the leader key's value is the instance's name
//! (`QUIESCE_INSTANCE`), and every job run is pushed to the list `QUIESCE_REDIS_JOB_LOG` as
//! `{"instance": I, "job": J, "started_ms": S, "ended_ms": E}`.
//!
//! `QUIESCE_VARIANT` picks a deliberately broken variant, each a bug from the seeds (see
//! [`Variant`]); `VARIANTS.md` next to this crate says which verdict each must get.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The leader-only job's name in the job log.
pub const JOB: &str = "report";
/// How long a job run takes.
const JOB_TAKES: Duration = Duration::from_millis(50);
/// How often a follower tries to take the lock.
const ELECT_EVERY: Duration = Duration::from_millis(200);
/// How long before the lock's TTL runs out, counted from the request that took or extended
/// it, this instance stops taking itself for the leader.
fn lease(config: &Config) -> Duration {
    config.lock_ttl - config.lock_ttl / 10
}

/// Until when this instance leads: `None` while it follows.
type Lease = Option<Instant>;

/// How many times `duplicate-registration` registers the job.
const REGISTRATIONS: usize = 3;

/// Extends the lock only if this instance owns it: 1 if extended, 0 if not ours.
const EXTEND: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                      return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes the lock only if this instance owns it.
const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                       return redis.call('del', KEYS[1]) else return 0 end";

quiesce::variants! {
    /// The service's behaviour: the correct lifecycle, or one of the seeds' bugs.
    pub enum Variant {
        Correct => "correct",
        /// The lock is left to expire instead of released on the way out (seed 003): the next
        /// leader waits out the whole TTL.
        LockNotReleased => "lock-not-released",
        /// After its heartbeat fails (a partition from Redis), the old leader keeps running jobs
        /// (seed 003): two leaders at once. Shows with a partition: `leader-jobs-partition.toml`.
        IgnoresLostLeadership => "ignores-lost-leadership",
        /// The job is registered three times and runs three times per interval (seed 002).
        DuplicateRegistration => "duplicate-registration",
        /// The heartbeat is a fire-and-forget task that never looks at shutdown.
        HeartbeatLeak => "heartbeat-leak",
    }
}

/// Where the service coordinates, and how it behaves.
#[derive(Clone, Debug)]
pub struct Config {
    pub redis_url: String,
    pub leader_key: String,
    pub job_log: String,
    pub instance: String,
    pub interval: Duration,
    /// The lock's time to live; the heartbeat extends it every third of it.
    pub lock_ttl: Duration,
    pub variant: Variant,
}

impl Config {
    /// From quiesce's variables (`QUIESCE_REDIS_URL`, `QUIESCE_REDIS_LEADER_KEY`,
    /// `QUIESCE_REDIS_JOB_LOG`, `QUIESCE_JOB_INTERVAL_MS`, `QUIESCE_INSTANCE`,
    /// `QUIESCE_VARIANT`) and the service's own `LEADER_JOBS_LOCK_TTL_MS` (default 3000),
    /// looked up by `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let redis_url = get("QUIESCE_REDIS_URL")
            .ok_or("QUIESCE_REDIS_URL is not set (redis://host:port of a Redis server)")?;
        let number = |key: &str, default: u64| -> Result<u64, String> {
            get(key).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| format!("{key} = `{v}` is not a whole number"))
            })
        };
        Ok(Config {
            redis_url,
            leader_key: get("QUIESCE_REDIS_LEADER_KEY")
                .unwrap_or_else(|| "quiesce:leader".to_owned()),
            job_log: get("QUIESCE_REDIS_JOB_LOG").unwrap_or_else(|| "quiesce:jobs".to_owned()),
            instance: get("QUIESCE_INSTANCE")
                .unwrap_or_else(|| format!("leader-jobs-{}", std::process::id())),
            interval: Duration::from_millis(number("QUIESCE_JOB_INTERVAL_MS", 500)?.max(1)),
            lock_ttl: Duration::from_millis(number("LEADER_JOBS_LOCK_TTL_MS", 3_000)?.max(30)),
            variant: get("QUIESCE_VARIANT")
                .map(|v| v.parse())
                .transpose()?
                .unwrap_or(Variant::Correct),
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Tries to take the lock; true if this instance now leads.
async fn try_lead(redis: &mut ConnectionManager, config: &Config) -> bool {
    let taken: redis::RedisResult<Option<String>> = redis::cmd("SET")
        .arg(&config.leader_key)
        .arg(&config.instance)
        .arg("NX")
        .arg("PX")
        .arg(config.lock_ttl.as_millis() as u64)
        .query_async(redis)
        .await;
    matches!(taken, Ok(Some(_)))
}

/// Extends the lock if it is still ours; false if it is not (or Redis cannot be reached).
async fn extend(redis: &mut ConnectionManager, config: &Config) -> bool {
    let extended: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg(EXTEND)
        .arg(1)
        .arg(&config.leader_key)
        .arg(&config.instance)
        .arg(config.lock_ttl.as_millis() as u64)
        .query_async(redis)
        .await;
    extended == Ok(1)
}

/// The elector: follows until it takes the lock, then heartbeats until it loses it or the
/// service stops. `leading` says until when it leads; `tried` is told once its first try has
/// been answered.
async fn elect(
    mut redis: ConnectionManager,
    config: Config,
    leading: watch::Sender<Lease>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    tried: tokio::sync::oneshot::Sender<()>,
) {
    let mut tried = Some(tried);
    while !shutdown.is_cancelled() {
        let sent = Instant::now();
        // Given up at the shutdown: the way out must not wait for a slow reply (the release
        // after it deletes the key if that take went through).
        let follows = leading.borrow().is_none();
        let took = follows
            && tokio::select! {
                took = try_lead(&mut redis, &config) => took,
                () = shutdown.cancelled() => false,
            };
        if took {
            leading.send_replace(Some(sent + lease(&config)));
        }
        if let Some(tried) = tried.take() {
            let _ = tried.send(());
        }
        if took {
            if config.variant == Variant::HeartbeatLeak {
                // The bug: a heartbeat on its own, beating whatever happens.
                let (mut redis, config, leading) = (redis.clone(), config.clone(), leading.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(config.lock_ttl / 3).await;
                        let sent = Instant::now();
                        if extend(&mut redis, &config).await {
                            leading.send_replace(Some(sent + lease(&config)));
                        }
                    }
                });
            } else {
                let (redis, config, leading, shutdown) = (
                    redis.clone(),
                    config.clone(),
                    leading.clone(),
                    shutdown.clone(),
                );
                tracker.spawn(heartbeat(redis, config, leading, shutdown));
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(ELECT_EVERY) => {}
        }
    }
}

/// Extends the lock every third of its TTL; steps down the moment it is no longer ours.
async fn heartbeat(
    mut redis: ConnectionManager,
    config: Config,
    leading: watch::Sender<Lease>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(config.lock_ttl / 3) => {}
        }
        let sent = Instant::now();
        let held = tokio::time::timeout(config.lock_ttl / 3, extend(&mut redis, &config)).await;
        if held != Ok(true) {
            leading.send_replace(None);
            return;
        }
        leading.send_replace(Some(sent + lease(&config)));
    }
}

/// One registration of the job: runs it every interval while this instance leads.
async fn job(
    mut redis: ConnectionManager,
    config: Config,
    mut leading: watch::Receiver<Lease>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut led_once = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // A run must end inside the lease: the lock may be another's right after it.
        let leads =
            (*leading.borrow_and_update()).is_some_and(|until| Instant::now() + JOB_TAKES < until);
        led_once |= leads;
        // The bug of `ignores-lost-leadership`: having led once is taken for leading now.
        let run = if config.variant == Variant::IgnoresLostLeadership {
            led_once
        } else {
            leads
        };
        if !run {
            continue;
        }
        let started_ms = now_ms();
        tokio::time::sleep(JOB_TAKES).await;
        let entry = serde_json::json!({
            "instance": config.instance,
            "job": JOB,
            "started_ms": started_ms,
            "ended_ms": now_ms(),
        });
        let _: redis::RedisResult<i64> = redis::cmd("RPUSH")
            .arg(&config.job_log)
            .arg(entry.to_string())
            .query_async(&mut redis)
            .await;
    }
}

/// Runs the service until `shutdown` is cancelled, then stops it. `ready` is called once it
/// is connected and its tasks run (leading or following).
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(),
) -> Result<(), String> {
    let client = redis::Client::open(config.redis_url.as_str())
        .map_err(|e| format!("redis {}: {e}", config.redis_url))?;
    // A connection that comes back by itself after a partition, as a service needs.
    let redis = ConnectionManager::new(client)
        .await
        .map_err(|e| format!("redis {}: {e}", config.redis_url))?;
    let tracker = TaskTracker::new();
    let (leading, leads) = watch::channel(None);
    let (tried, first_try) = tokio::sync::oneshot::channel();
    tracker.spawn(elect(
        redis.clone(),
        config.clone(),
        leading,
        shutdown.clone(),
        tracker.clone(),
        tried,
    ));
    let registrations = if config.variant == Variant::DuplicateRegistration {
        REGISTRATIONS
    } else {
        1
    };
    for _ in 0..registrations {
        tracker.spawn(job(
            redis.clone(),
            config.clone(),
            leads.clone(),
            shutdown.clone(),
        ));
    }
    // Ready once its first try to lead has been answered: leading or following.
    tokio::select! {
        _ = first_try => ready(),
        () = shutdown.cancelled() => {}
    }

    shutdown.cancelled().await;
    // The way out: tasks stopped and awaited (no job runs after this), then the lock given
    // back, if it is still ours, so the next leader need not wait out its TTL.
    tracker.close();
    tracker.wait().await;
    if config.variant != Variant::LockNotReleased {
        let mut redis = redis;
        let released: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(&config.leader_key)
            .arg(&config.instance)
            .query_async(&mut redis)
            .await;
        released.map_err(|e| format!("releasing {}: {e}", config.leader_key))?;
    }
    Ok(())
}

/// The service as an in-process graph for quiesce, configured by the settings quiesce passes
/// (the same names as the environment of the binary).
pub fn graph() -> quiesce::target::Graph {
    quiesce::target::Graph::new("leader-jobs", |mut ctx| async move {
        let settings = ctx.settings.clone();
        let config = Config::from_lookup(|key| settings.get(key).cloned())?;
        let shutdown = ctx.shutdown.clone();
        run(config, shutdown, move || ctx.ready()).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_by_name_and_unknown_ones_are_named() {
        for variant in Variant::ALL {
            assert_eq!(variant.as_str().parse::<Variant>(), Ok(variant));
        }
        let err = "leaky".parse::<Variant>().unwrap_err();
        assert!(
            err.contains("`leaky`") && err.contains("heartbeat-leak"),
            "{err}"
        );
    }

    #[test]
    fn config_needs_redis_and_takes_defaults() {
        let err = Config::from_lookup(|_| None).unwrap_err();
        assert!(err.contains("QUIESCE_REDIS_URL"), "{err}");
        let config = Config::from_lookup(|key| {
            (key == "QUIESCE_REDIS_URL").then(|| "redis://127.0.0.1:6379".to_owned())
        })
        .unwrap();
        assert_eq!(config.variant, Variant::Correct);
        assert_eq!(config.interval, Duration::from_millis(500));
        assert_eq!(config.lock_ttl, Duration::from_secs(3));
    }
}
