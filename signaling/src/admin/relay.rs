//! The admin API across a cluster: a request about a call another node hosts is run by
//! that node, the lists (calls, records) are gathered from every node, and a group set or
//! removed through one node is set or removed on all. Requests travel between nodes as
//! they came ([`Relayed`], their admin token with them), through [`AdminRelay`], and the
//! node that runs one checks it as it checks its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::ApiError;
use crate::plane::Answer;
use crate::state::AppState;
use crate::token::bearer;

/// Marks a request another node relayed: it is run here and never relayed again.
pub const RELAYED_HEADER: &str = "x-sfu-relayed";

/// Largest body of an admin request or answer passed between nodes.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// An admin request as it came, to run on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `authorization` and `content-type`, when present.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What the node that ran a [`Relayed`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// The other nodes of the cluster, as the admin API reaches them.
pub trait AdminRelay: Send + Sync + 'static {
    /// This node's id.
    fn me(&self) -> String;
    /// The node `room` lives on, if any.
    fn owner(&self, room: &str) -> Answer<Option<String>>;
    /// The other live nodes.
    fn peers(&self) -> Vec<String>;
    /// Runs `request` on `node`.
    fn ask(&self, node: &str, request: Relayed) -> Answer<Answered>;
}

/// Runs a request another node relayed on this node's `router` (only `/admin/` ones).
pub fn answer(router: Router, request: Relayed) -> Pin<Box<dyn Future<Output = Answered> + Send>> {
    Box::pin(async move {
        if !request.path.starts_with("/admin/") {
            return Answered {
                status: 404,
                content_type: None,
                body: "only admin requests are relayed\n".into(),
            };
        }
        let mut builder = axum::http::Request::builder()
            .method(request.method.as_str())
            .uri(request.path.as_str())
            .header(RELAYED_HEADER, "1");
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let Ok(http) = builder.body(Body::from(request.body)) else {
            return Answered {
                status: 400,
                content_type: None,
                body: "unreadable relayed request\n".into(),
            };
        };
        match router.oneshot(http).await {
            Ok(response) => answered(response).await,
            Err(never) => match never {},
        }
    })
}

/// The middleware of the admin routes: runs a request here, or where it belongs.
pub(super) async fn relay(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(relay) = state.config.admin_relay.clone() else {
        return next.run(request).await;
    };
    // Relayed already, or not an administrator's (the handlers say why): run here.
    let authorized = state.config.admin.as_ref().is_some_and(|admin| {
        bearer(request.headers()).is_some_and(|token| admin.key.verify(token).is_ok())
    });
    if request.headers().contains_key(RELAYED_HEADER) || !authorized {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::bad_request("the request body is too large").into_response();
    };
    let relayed = Relayed {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: [header::AUTHORIZATION, header::CONTENT_TYPE]
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(name)?.to_str().ok()?;
                Some((name.as_str().to_owned(), value.to_owned()))
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let path = parts.uri.path().to_owned();
    let method = parts.method.clone();
    let here = || next.run(Request::from_parts(parts, Body::from(body)));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["admin", "rooms"]) => gather(here().await, &*relay, relayed, "rooms").await,
        (&Method::GET, ["admin", "records"]) => {
            gather(here().await, &*relay, relayed, "records").await
        }
        (_, ["admin", "rooms", room, ..]) => {
            let room = percent_decode(room);
            match relay.owner(&room).await {
                Ok(Some(owner)) if owner != relay.me() => match relay.ask(&owner, relayed).await {
                    Ok(answer) => into_response(answer),
                    Err(e) => ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "node_unreachable",
                        format!(
                            "node {owner} hosts the call but did not answer: {}",
                            e.message
                        ),
                    )
                    .into_response(),
                },
                Ok(_) => here().await,
                Err(e) => ApiError::unavailable(e).into_response(),
            }
        }
        (&Method::PUT | &Method::DELETE, ["admin", "groups", _]) => {
            let response = here().await;
            if response.status().is_success() {
                for peer in relay.peers() {
                    if let Err(e) = relay.ask(&peer, relayed.clone()).await {
                        warn!(node = %peer, "admin API: group change not relayed: {}", e.message);
                    }
                }
            }
            response
        }
        _ => here().await,
    }
}

/// This node's list (`{key: [...]}`) with those of the other nodes added; nodes that did
/// not answer are named in `missing_nodes`.
async fn gather(local: Response, relay: &dyn AdminRelay, request: Relayed, key: &str) -> Response {
    if !local.status().is_success() {
        return local;
    }
    let local = answered(local).await;
    let Ok(mut merged) = serde_json::from_str::<Value>(&local.body) else {
        return into_response(local);
    };
    let mut missing = Vec::new();
    for peer in relay.peers() {
        let theirs = match relay.ask(&peer, request.clone()).await {
            Ok(answer) if (200..300).contains(&answer.status) => {
                serde_json::from_str::<Value>(&answer.body).ok()
            }
            Ok(answer) => {
                debug!(node = %peer, status = answer.status, "admin API: a node refused a list");
                None
            }
            Err(e) => {
                debug!(node = %peer, "admin API: a node did not answer: {}", e.message);
                None
            }
        };
        match theirs.and_then(|mut v| v.get_mut(key).map(Value::take)) {
            Some(Value::Array(items)) => {
                if let Some(Value::Array(all)) = merged.get_mut(key) {
                    all.extend(items);
                }
            }
            _ => missing.push(Value::String(peer)),
        }
    }
    if let Some(Value::Array(all)) = merged.get_mut(key) {
        order(key, all, &request.path);
    }
    if !missing.is_empty() {
        merged["missing_nodes"] = Value::Array(missing);
    }
    axum::Json(merged).into_response()
}

/// Calls by name; records newest first, as many as the request's `limit` (100, at
/// most 1000) as one node gives.
fn order(key: &str, items: &mut Vec<Value>, path: &str) {
    let text = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if key == "rooms" {
        items.sort_by_key(|v| text(v, "room"));
        return;
    }
    items.sort_by_key(|v| std::cmp::Reverse(v.get("ended_at_ms").and_then(Value::as_u64)));
    let limit = path
        .split_once('?')
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(100)
        .min(1000);
    items.truncate(limit);
}

fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

async fn answered(response: Response) -> Answered {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = to_bytes(response.into_body(), MAX_BODY_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Answered {
        status,
        content_type,
        body,
    }
}

fn into_response(answer: Answered) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, answer.body).into_response();
    if let Some(value) = answer
        .content_type
        .and_then(|c| HeaderValue::try_from(c).ok())
    {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}
