//! The HTTP router: pages and assets, the WebSocket, WHIP and WHEP, health, metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use prometheus::Registry;
use protocol::Role;
use serde::Deserialize;

use crate::addresses::Addresses;
use crate::admin;
use crate::plane::MediaPlane;
use crate::session::websocket;
use crate::state::{AppState, Config, Metrics};
use crate::token::{MAX_NAME_BYTES, TokenKey};

/// Builds the HTTP router: demo page, client library, WebSocket, health (`/healthz`: the
/// process answers), readiness (`/readyz`: it takes new calls), metrics, and in dev mode
/// `/dev/token`. Registers the control plane's own metrics in `registry`.
pub fn router(
    plane: Arc<dyn MediaPlane>,
    config: Config,
    registry: Registry,
) -> prometheus::Result<Router> {
    let metrics = Metrics::new(&registry)?;
    let dev_mode = config.dev_mode;
    let addresses = Arc::new(Addresses::new(config.address_limits));
    let state = Arc::new(AppState {
        plane,
        config,
        registry,
        metrics,
        addresses,
    });
    let mut router = Router::new()
        .route("/", get(|| async { Html(crate::web::INDEX_HTML) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/ws", get(websocket))
        .merge(crate::whip::routes(state.clone()))
        .merge(admin::routes(state.clone()));
    for asset in crate::web::ASSETS {
        let response =
            move || async move { ([(header::CONTENT_TYPE, asset.content_type)], asset.body) };
        router = router.route(asset.path, get(response));
    }
    if dev_mode {
        router = router.route("/dev/token", get(dev_token));
    }
    Ok(router.with_state(state))
}

/// A router with only `/healthz` and `/metrics` (of `registry`), for processes that carry
/// no calls (the standalone TURN relay).
pub fn metrics_router(registry: Registry) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { encode_metrics(&registry) }
            }),
        )
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match (state.config.readiness)() {
        None => "ready\n".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    encode_metrics(&state.registry)
}

fn encode_metrics(registry: &Registry) -> Response {
    let families = registry.gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct DevTokenQuery {
    room: String,
    identity: String,
    name: Option<String>,
    /// `participant` (default), `presenter` or `viewer`.
    role: Option<Role>,
    /// `1`: the token has the `plaintext` grant (the client may send frames in the
    /// clear).
    plaintext: Option<String>,
}

async fn dev_token(State(state): State<Arc<AppState>>, Query(q): Query<DevTokenQuery>) -> Response {
    let too_long = |s: &str| s.is_empty() || s.len() > MAX_NAME_BYTES;
    if too_long(&q.room) || too_long(&q.identity) || q.name.as_deref().is_some_and(too_long) {
        return (
            StatusCode::BAD_REQUEST,
            "room, identity and name must be 1 to 128 bytes\n",
        )
            .into_response();
    }
    let mut claims = TokenKey::claims(
        &q.room,
        &q.identity,
        q.name.as_deref(),
        Duration::from_secs(3600),
    );
    claims.grants.role = q.role.unwrap_or_default();
    claims.grants.plaintext = match q.plaintext.as_deref() {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(_) => {
            return (StatusCode::BAD_REQUEST, "plaintext must be 1 or 0\n").into_response();
        }
    };
    match state.config.tokens.issue(&claims) {
        Ok(token) => axum::Json(serde_json::json!({ "token": token })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serves `router` on `listener` (a `tokio::net::TcpListener`, or a
/// [`crate::tls::TlsListener`] for HTTPS) until `shutdown` resolves, then lets open
/// requests finish.
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    // The peer's address goes with each request: the per-address limits need it. axum
    // hands it to handlers (ConnectInfo) for a tapped listener of any kind: hence the
    // tap that does nothing.
    use axum::serve::ListenerExt;
    axum::serve(
        listener.tap_io(|_| ()),
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
