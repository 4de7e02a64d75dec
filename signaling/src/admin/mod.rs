//! The admin API (`/admin/...`, described in `docs/openapi.yaml`): who may call it, its
//! routes, and the answers they share.
//!
//! Every route takes an admin token ([`AdminKey`]) as a Bearer token. With no admin key
//! the API is off: every request gets 403. Otherwise anything but a valid admin token
//! gets 401: none, a bad signature, another audience, expired (logged at debug level
//! only: anyone may knock). Errors are JSON: `{"error": <code>, "message": <why>}`.
//!
//! | file | routes |
//! |---|---|
//! | `key.rs` | (admin tokens: [`AdminKey`], [`AdminClaims`]) |
//! | `calls.rs` | `/admin/rooms...`: calls in progress, their members; remove, mute, unpublish, end; `/admin/records` |
//! | `groups.rs` | `/admin/groups...`: the groups' calling policies |
//! | `relay.rs` | (across a cluster: each request run where it belongs, [`AdminRelay`]) |
//! | `mod.rs` | `POST /admin/drain` |

mod calls;
mod groups;
mod key;
mod relay;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use tracing::{debug, info};

pub use key::{ADMIN_AUDIENCE, AdminClaims, AdminKey, MAX_ADMIN_TTL};
pub use relay::{AdminRelay, Answered, RELAYED_HEADER, Relayed, answer};

use crate::state::AppState;
use crate::token::bearer;

/// What the admin API may do, given by the server.
pub struct Admin {
    pub key: AdminKey,
    /// Starts a drain, as SIGTERM does; says whether this call started it (false: one
    /// was under way).
    pub drain: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// Every route of the admin API; in a cluster, each request run where it belongs.
pub(crate) fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/drain", post(drain))
        .route("/admin/rooms", get(calls::rooms))
        .route("/admin/rooms/{room}", get(calls::room).delete(calls::end))
        .route("/admin/rooms/{room}/participants", get(calls::participants))
        .route(
            "/admin/rooms/{room}/participants/{participant}",
            delete(calls::remove),
        )
        .route(
            "/admin/rooms/{room}/tracks/{track}",
            delete(calls::unpublish),
        )
        .route("/admin/rooms/{room}/tracks/{track}/mute", post(calls::mute))
        .route("/admin/records", get(calls::records))
        .route("/admin/groups", get(groups::list))
        .route(
            "/admin/groups/{group}",
            get(groups::one).put(groups::set).delete(groups::remove),
        )
        // What is not a route, or not a method of one, is told in the API's own shape.
        .route("/admin", any(no_route))
        .route("/admin/", any(no_route))
        .route("/admin/{*rest}", any(no_route))
        .method_not_allowed_fallback(no_method)
        .route_layer(axum::middleware::from_fn_with_state(state, relay::relay))
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such admin API route (docs/openapi.yaml lists them)")
}

async fn no_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this admin API route does not take that method (docs/openapi.yaml)",
    )
}

/// `POST /admin/drain`: 202 with `{"draining": true, "started": <this request began
/// it>}`.
async fn drain(State(state): State<Arc<AppState>>, Authorized(claims): Authorized) -> Response {
    let Some(admin) = state.config.admin.as_ref() else {
        return Refusal::Off.into_response();
    };
    let started = (admin.drain)();
    info!(admin = %claims.sub, started, "admin API: drain");
    let body = serde_json::json!({ "draining": true, "started": started });
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// An admin request's caller, once its token checked out. Taken first by every handler,
/// so that nothing else of a request is read before it is authorized.
pub(crate) struct Authorized(pub(crate) AdminClaims);

impl FromRequestParts<Arc<AppState>> for Authorized {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let admin = state.config.admin.as_ref().ok_or(Refusal::Off)?;
        let token = bearer(&parts.headers)
            .ok_or_else(|| Refusal::Unauthorized("send an admin token as a Bearer token".into()))?;
        match admin.key.verify(token) {
            Ok(claims) => Ok(Authorized(claims)),
            Err(e) => {
                // Anyone may knock: a flood of them must not flood the log (the caller
                // reads why in the answer).
                debug!("admin API refused: {e}");
                Err(Refusal::Unauthorized(e.to_string()))
            }
        }
    }
}

/// Why an admin request is refused before it is read.
pub(crate) enum Refusal {
    /// No admin key: the API is off.
    Off,
    /// No valid admin token, and why.
    Unauthorized(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Off => ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_api_off",
                "the admin API is off: start the server with --admin-secret-file",
            )
            .into_response(),
            Refusal::Unauthorized(why) => {
                let mut response =
                    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why).into_response();
                let bearer = HeaderValue::from_static("Bearer");
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, bearer);
                response
            }
        }
    }
}

/// A JSON body that must be an object (serde would read a struct from an array too,
/// field by field), read as `T`.
pub(crate) fn object<T: serde::de::DeserializeOwned>(
    body: Result<axum::Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    let axum::Json(value) =
        body.map_err(|e| ApiError::new(e.status(), "bad_request", e.body_text()))?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_request",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_request",
            e.to_string(),
        )
    })
}

/// An admin request that failed: its status, and `{"error": code, "message": why}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// The media plane could not answer (its queues are full, or a shard stopped).
    pub(crate) fn unavailable(error: protocol::ErrorMessage) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            error.message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}
