//! `/admin/groups...`: the groups' calling policies, read and changed. A change applies
//! to calls in progress within moments (the policies' listener passes it on), and lasts
//! until the config file is reloaded or the server restarts: write it into the config
//! file to keep it.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::Policy;
use tracing::info;

use super::calls::bad_path;
use super::{ApiError, Authorized, object};
use crate::policy::PolicyError;
use crate::state::AppState;

/// `GET /admin/groups`: `{"groups": {name: Policy}}`.
pub(super) async fn list(_: Authorized, State(state): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({ "groups": state.config.policies.all() })).into_response()
}

/// `GET /admin/groups/{group}`: its policy.
pub(super) async fn one(
    _: Authorized,
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(group) = path.map_err(bad_path)?;
    named(&group)?;
    match state.config.policies.of(Some(&group)) {
        Some((_, policy)) => Ok(Json(policy).into_response()),
        None => Err(no_group(&group)),
    }
}

/// `PUT /admin/groups/{group}` with a policy: sets it, adding the group if new.
/// Answers `{"group", "policy", "changed"}`.
pub(super) async fn set(
    Authorized(admin): Authorized,
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(group) = path.map_err(bad_path)?;
    let policy: Policy = object(body)?;
    let changed = state
        .config
        .policies
        .set(&group, Some(policy))
        .map_err(refused)?;
    info!(admin = %admin.sub, group, ?policy, changed, "admin API: policy set");
    let body = serde_json::json!({ "group": group, "policy": policy, "changed": changed });
    Ok(Json(body).into_response())
}

/// `DELETE /admin/groups/{group}`: removes the group (204); tokens that name it are
/// refused from then on, while its members' calls in progress go on as they are. The
/// default group cannot be removed (409).
pub(super) async fn remove(
    Authorized(admin): Authorized,
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(group) = path.map_err(bad_path)?;
    named(&group)?;
    match state.config.policies.set(&group, None) {
        Ok(true) => {
            info!(admin = %admin.sub, group, "admin API: group removed");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Ok(false) => Err(no_group(&group)),
        Err(e) => Err(refused(e)),
    }
}

/// A group name the server could have, or 400 (as `PUT` answers).
fn named(group: &str) -> Result<(), ApiError> {
    if protocol::policy::valid_group_name(group) {
        Ok(())
    } else {
        Err(refused(PolicyError::BadName(group.to_owned())))
    }
}

fn no_group(group: &str) -> ApiError {
    ApiError::not_found(format!("no group {group:?}"))
}

fn refused(e: PolicyError) -> ApiError {
    match e {
        PolicyError::DefaultRemoved => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        e => ApiError::bad_request(e.to_string()),
    }
}
