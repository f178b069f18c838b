//! api-startup: staged startup over a declared dependency graph, with `/health` and `/ready`
//! that tell the truth.
//!
//! The reference service of seeds 001 and 004, written the way their teams were reaching for:
//!
//! - **a declared order**: configuration, then Kafka (required), then Redis (optional: without
//!   it the service runs degraded), then the HTTP server; each provider is built once;
//! - **liveness is not readiness**: `/health` is 200 while the process can answer at all;
//!   `/ready` is 200 only while every required dependency answers, and 503 from the moment the
//!   shutdown begins;
//! - **shutdown mirrors startup**: not ready first, a short pause for load balancers to notice,
//!   the server drains, then the dependency checkers stop, in reverse order.
//!
//! `QUIESCE_VARIANT` picks a deliberately broken variant, each a bug from the seeds (see
//! [`Variant`]); `VARIANTS.md` next to this crate says which verdict each must get.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the dependencies are checked.
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// How long a dependency check may take.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// Not ready, still serving, for this long before the server drains: load balancers notice.
const DRAIN_PAUSE: Duration = Duration::from_millis(300);

quiesce::variants! {
    /// The service's behaviour: the correct lifecycle, or one of the seeds' bugs.
    pub enum Variant {
        Correct => "correct",
        /// Two providers wait on each other on some startups (a race), so a share of startups
        /// hang (seed 001's "10–20% startup failure rate"); `API_STARTUP_CIRCULAR_PERCENT` sets
        /// the share (default 20).
        CircularInit => "circular-init",
        /// `/ready` answers 200 whatever the dependencies, and while draining (seed 004).
        ReadyAlways200 => "ready-always-200",
        /// Redis is treated as required: not ready without it, and no start without it.
        RedisRequired => "redis-required",
        /// A metrics exporter started during startup is never stopped on the way out (seed 001).
        UnmirroredShutdown => "unmirrored-shutdown",
    }
}

/// Where the service listens and what it depends on.
#[derive(Clone, Debug)]
pub struct Config {
    pub port: u16,
    pub kafka_bootstrap: String,
    pub redis_url: String,
    pub variant: Variant,
    /// `circular-init`: the share of startups that deadlock, in percent.
    pub circular_percent: u32,
}

impl Config {
    /// From quiesce's variables (`QUIESCE_HTTP_PORT`, `QUIESCE_KAFKA_BOOTSTRAP`,
    /// `QUIESCE_REDIS_URL`, `QUIESCE_VARIANT`) and the service's own
    /// `API_STARTUP_CIRCULAR_PERCENT`, looked up by `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let port = get("QUIESCE_HTTP_PORT").ok_or("QUIESCE_HTTP_PORT is not set")?;
        let port = port
            .parse()
            .map_err(|_| format!("QUIESCE_HTTP_PORT = `{port}` is not a port"))?;
        let circular_percent = match get("API_STARTUP_CIRCULAR_PERCENT") {
            None => 20,
            Some(v) => v.parse::<u32>().ok().filter(|p| *p <= 100).ok_or(format!(
                "API_STARTUP_CIRCULAR_PERCENT = `{v}` is not 0..=100"
            ))?,
        };
        Ok(Config {
            port,
            kafka_bootstrap: get("QUIESCE_KAFKA_BOOTSTRAP")
                .ok_or("QUIESCE_KAFKA_BOOTSTRAP is not set")?,
            redis_url: get("QUIESCE_REDIS_URL").ok_or("QUIESCE_REDIS_URL is not set")?,
            variant: get("QUIESCE_VARIANT")
                .map(|v| v.parse())
                .transpose()?
                .unwrap_or(Variant::Correct),
            circular_percent,
        })
    }
}

/// What `/health` and `/ready` answer from.
#[derive(Default)]
struct Status {
    kafka: AtomicBool,
    redis: AtomicBool,
    draining: AtomicBool,
}

#[derive(Clone)]
struct App {
    status: Arc<Status>,
    variant: Variant,
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn ready(State(app): State<App>) -> (StatusCode, &'static str) {
    let status = &app.status;
    if app.variant == Variant::ReadyAlways200 {
        return (StatusCode::OK, "ready");
    }
    if status.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if !status.kafka.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "kafka unreachable");
    }
    if !status.redis.load(Ordering::SeqCst) {
        if app.variant == Variant::RedisRequired {
            return (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable");
        }
        return (StatusCode::OK, "degraded: redis unreachable");
    }
    (StatusCode::OK, "ready")
}

/// Whether Kafka's bootstrap address accepts a connection.
async fn kafka_answers(bootstrap: &str) -> bool {
    let first = bootstrap.split(',').next().unwrap_or_default();
    matches!(
        tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(first)).await,
        Ok(Ok(_))
    )
}

/// Whether Redis answers PING.
async fn redis_answers(client: &redis::Client) -> bool {
    let ping = async {
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .ok()
    };
    matches!(tokio::time::timeout(CHECK_TIMEOUT, ping).await, Ok(Some(_)))
}

/// A provider that checks one dependency until the service stops.
async fn check_forever(
    stop: CancellationToken,
    mut check: impl AsyncFnMut() -> bool,
    flag: impl Fn(bool),
) {
    loop {
        flag(check().await);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

/// `circular-init`: two providers each wait for the other on a share of startups. Each is a
/// task of its own, as providers that initialise concurrently are, so a stuck startup shows
/// both by the line that spawned them.
async fn circular(tracker: &TaskTracker, percent: u32) {
    let roll = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        % 100;
    if roll < percent {
        let (a_tx, a_rx) = oneshot::channel::<()>();
        let (b_tx, b_rx) = oneshot::channel::<()>();
        // The metrics provider waits for the cache provider, and the cache for the metrics.
        let metrics = tracker.spawn(async move {
            let _ = b_rx.await;
            let _ = a_tx.send(());
        });
        let cache = tracker.spawn(async move {
            let _ = a_rx.await;
            let _ = b_tx.send(());
        });
        let _ = tokio::join!(metrics, cache);
    }
}

/// Runs the service until `shutdown` is cancelled, then stops it. `ready` is called once the
/// server listens (whether `/ready` says 200 is the dependencies' business).
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready_cb: impl FnOnce(),
) -> Result<(), String> {
    let status = Arc::new(Status::default());
    let tracker = TaskTracker::new();
    // Stops the providers after the server: the reverse of startup.
    let providers = CancellationToken::new();

    // 1. Kafka, required: its first check decides nothing, the provider keeps checking.
    let bootstrap = config.kafka_bootstrap.clone();
    let s = status.clone();
    tracker.spawn(check_forever(
        providers.clone(),
        async move || kafka_answers(&bootstrap).await,
        move |up| s.kafka.store(up, Ordering::SeqCst),
    ));
    // 2. Redis, optional (or required, in `redis-required`).
    let client = redis::Client::open(config.redis_url.as_str())
        .map_err(|e| format!("redis {}: {e}", config.redis_url))?;
    if config.variant == Variant::RedisRequired && !redis_answers(&client).await {
        return Err(format!("redis {} does not answer", config.redis_url));
    }
    let s = status.clone();
    tracker.spawn(check_forever(
        providers.clone(),
        async move || redis_answers(&client).await,
        move |up| s.redis.store(up, Ordering::SeqCst),
    ));
    match config.variant {
        Variant::CircularInit => circular(&tracker, config.circular_percent).await,
        Variant::UnmirroredShutdown => {
            // Started with the rest, stopped by nothing.
            tokio::spawn(async {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            });
        }
        _ => {}
    }
    // 3. The HTTP server.
    let app = App {
        status: status.clone(),
        variant: config.variant,
    };
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(app);
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listen on {addr}: {e}"))?;
    ready_cb();
    let draining = {
        let (shutdown, status) = (shutdown.clone(), status.clone());
        async move {
            shutdown.cancelled().await;
            // Not ready first, still serving, so load balancers stop sending work.
            status.draining.store(true, Ordering::SeqCst);
            tokio::time::sleep(DRAIN_PAUSE).await;
        }
    };
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(draining)
        .await
        .map_err(|e| format!("http: {e}"));
    // The way out mirrors the way in: server (done), then the providers.
    providers.cancel();
    tracker.close();
    tracker.wait().await;
    served
}

/// The service as an in-process graph for quiesce, configured by the settings quiesce passes.
pub fn graph() -> quiesce::target::Graph {
    quiesce::target::Graph::new("api-startup", |mut ctx| async move {
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
        let err = "flaky".parse::<Variant>().unwrap_err();
        assert!(
            err.contains("`flaky`") && err.contains("circular-init"),
            "{err}"
        );
    }

    #[test]
    fn config_needs_a_port_and_its_dependencies() {
        let err = Config::from_lookup(|_| None).unwrap_err();
        assert!(err.contains("QUIESCE_HTTP_PORT"), "{err}");
        let config = Config::from_lookup(|key| match key {
            "QUIESCE_HTTP_PORT" => Some("8080".to_owned()),
            "QUIESCE_KAFKA_BOOTSTRAP" => Some("127.0.0.1:9092".to_owned()),
            "QUIESCE_REDIS_URL" => Some("redis://127.0.0.1:6379".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!((config.port, config.circular_percent), (8080, 20));
        let err = Config::from_lookup(|key| match key {
            "QUIESCE_HTTP_PORT" => Some("http".to_owned()),
            _ => None,
        })
        .unwrap_err();
        assert!(err.contains("`http` is not a port"), "{err}");
    }
}
