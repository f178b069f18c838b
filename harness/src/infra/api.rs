//! The fault API: Toxiproxy's HTTP API over a running infrastructure.
//!
//! `quiesce infra up` serves it so that faults can be injected by hand or from a script while
//! the infrastructure holds, with any Toxiproxy client. Toxiproxy's routes work as documented
//! there; the proxies' addresses are fixed, so a change of `listen` or `upstream` is refused.
//! Two routes are quiesce's own, for the dependencies themselves:
//!
//! | route | effect |
//! |---|---|
//! | `GET /version` | `{"version": …}` |
//! | `GET /proxies` | every proxy, by name |
//! | `GET /proxies/{proxy}` | one proxy with its toxics |
//! | `POST` or `PATCH /proxies/{proxy}` `{"enabled": false}` | down (or up with `true`) |
//! | `GET`, `POST /proxies/{proxy}/toxics` | list, add |
//! | `GET`, `DELETE /proxies/{proxy}/toxics/{toxic}` | show, remove |
//! | `POST /reset` | every proxy up, every toxic removed |
//! | `GET /dependencies` | what runs behind each proxy |
//! | `POST /dependencies/{dependency}/{action}` | `stop`, `start`, `kill`, `pause`, `resume` |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::fault::{FaultError, FaultProxy, Toxic};
use crate::infra::{DependencyKind, Infra, InfraError, LifecycleAction};

type Shared = Arc<Mutex<Infra>>;

/// A proxy in Toxiproxy's JSON shape.
#[derive(Serialize)]
struct ProxyJson {
    name: String,
    listen: String,
    upstream: String,
    enabled: bool,
    toxics: Vec<Toxic>,
}

impl From<&FaultProxy> for ProxyJson {
    fn from(proxy: &FaultProxy) -> Self {
        let status = proxy.status();
        ProxyJson {
            name: status.name,
            listen: status.listen.to_string(),
            upstream: status.upstream.to_string(),
            enabled: status.enabled,
            toxics: status.toxics,
        }
    }
}

/// An error in Toxiproxy's shape: `{"error": …, "status": …}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.1, "status": self.0.as_u16()});
        (self.0, Json(body)).into_response()
    }
}

impl From<FaultError> for ApiError {
    fn from(e: FaultError) -> Self {
        let status = match e {
            FaultError::UnknownToxic { .. } => StatusCode::NOT_FOUND,
            FaultError::DuplicateToxic { .. } => StatusCode::CONFLICT,
            FaultError::InvalidToxic { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl From<InfraError> for ApiError {
    fn from(e: InfraError) -> Self {
        let status = match e {
            InfraError::Unsupported { .. } => StatusCode::BAD_REQUEST,
            InfraError::Action { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

fn dependency(name: &str) -> Result<DependencyKind, ApiError> {
    name.parse()
        .map_err(|_| ApiError(StatusCode::NOT_FOUND, "proxy not found".to_owned()))
}

/// Serves the API on `listen` until `stop` is cancelled. Returns the bound address and the
/// server's task, which ends when `stop` is cancelled.
pub async fn serve(
    infra: Shared,
    listen: SocketAddr,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), InfraError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| {
            let source = if source.kind() == std::io::ErrorKind::AddrInUse {
                FaultError::AddressInUse { addr: listen }
            } else {
                FaultError::Bind {
                    addr: listen,
                    source,
                }
            };
            InfraError::Api(source)
        })?;
    let addr = listener.local_addr().map_err(|source| {
        InfraError::Api(FaultError::Bind {
            addr: listen,
            source,
        })
    })?;
    let app = Router::new()
        .route("/version", get(version))
        .route("/proxies", get(proxies))
        .route(
            "/proxies/{proxy}",
            get(proxy).post(update_proxy).patch(update_proxy),
        )
        .route("/proxies/{proxy}/toxics", get(toxics).post(add_toxic))
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(toxic).delete(remove_toxic),
        )
        .route("/reset", post(reset))
        .route("/dependencies", get(dependencies))
        .route("/dependencies/{dependency}/{action}", post(act))
        .with_state(infra);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the fault API stopped");
        }
    });
    Ok((addr, task))
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({"version": format!("quiesce {}", env!("CARGO_PKG_VERSION"))}))
}

async fn proxies(State(infra): State<Shared>) -> Json<BTreeMap<String, ProxyJson>> {
    let infra = infra.lock().await;
    Json(
        DependencyKind::ALL
            .iter()
            .map(|&kind| (kind.to_string(), ProxyJson::from(infra.proxy(kind))))
            .collect(),
    )
}

async fn proxy(
    State(infra): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<ProxyJson>, ApiError> {
    let kind = dependency(&name)?;
    Ok(Json(ProxyJson::from(infra.lock().await.proxy(kind))))
}

#[derive(Deserialize)]
struct ProxyUpdate {
    enabled: Option<bool>,
    listen: Option<String>,
    upstream: Option<String>,
}

async fn update_proxy(
    State(infra): State<Shared>,
    Path(name): Path<String>,
    Json(update): Json<ProxyUpdate>,
) -> Result<Json<ProxyJson>, ApiError> {
    let kind = dependency(&name)?;
    let infra = infra.lock().await;
    let proxy = infra.proxy(kind);
    let fixed = |field: &str, wanted: &Option<String>, actual: String| match wanted {
        Some(w) if *w != actual => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("the {field} of a quiesce proxy is fixed at {actual}"),
        )),
        _ => Ok(()),
    };
    fixed(
        "listen address",
        &update.listen,
        proxy.listen_addr().to_string(),
    )?;
    fixed("upstream", &update.upstream, proxy.upstream().to_string())?;
    match update.enabled {
        Some(false) => proxy.down(),
        Some(true) => proxy.up().await?,
        None => {}
    }
    Ok(Json(ProxyJson::from(proxy)))
}

async fn toxics(
    State(infra): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Vec<Toxic>>, ApiError> {
    let kind = dependency(&name)?;
    Ok(Json(infra.lock().await.proxy(kind).toxics()))
}

async fn add_toxic(
    State(infra): State<Shared>,
    Path(name): Path<String>,
    Json(toxic): Json<Toxic>,
) -> Result<Json<Toxic>, ApiError> {
    let kind = dependency(&name)?;
    Ok(Json(infra.lock().await.proxy(kind).add_toxic(toxic)?))
}

async fn toxic(
    State(infra): State<Shared>,
    Path((name, toxic)): Path<(String, String)>,
) -> Result<Json<Toxic>, ApiError> {
    let kind = dependency(&name)?;
    infra
        .lock()
        .await
        .proxy(kind)
        .toxics()
        .into_iter()
        .find(|t| t.name == toxic)
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "toxic not found".to_owned()))
}

async fn remove_toxic(
    State(infra): State<Shared>,
    Path((name, toxic)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let kind = dependency(&name)?;
    infra.lock().await.proxy(kind).remove_toxic(&toxic)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reset(State(infra): State<Shared>) -> Result<StatusCode, ApiError> {
    let infra = infra.lock().await;
    for kind in DependencyKind::ALL {
        infra.proxy(kind).reset().await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn dependencies(State(infra): State<Shared>) -> Json<serde_json::Value> {
    Json(serde_json::json!(infra.lock().await.status()))
}

async fn act(
    State(infra): State<Shared>,
    Path((name, action)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let kind: DependencyKind = name
        .parse()
        .map_err(|m| ApiError(StatusCode::NOT_FOUND, m))?;
    let action: LifecycleAction = action
        .parse()
        .map_err(|m| ApiError(StatusCode::BAD_REQUEST, m))?;
    infra.lock().await.act(kind, action).await?;
    Ok(StatusCode::NO_CONTENT)
}
