//! `/admin/rooms...`: the calls in progress and their members, and what an administrator
//! may do to them: remove a participant, mute or unpublish a track, end the call.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::admin::Action;
use protocol::{ParticipantId, TrackId};
use serde::Deserialize;
use tracing::info;

use super::{ApiError, Authorized, object};
use crate::state::AppState;

/// `GET /admin/rooms`: `{"rooms": [RoomSummary]}`, by name.
pub(super) async fn rooms(
    _: Authorized,
    State(state): State<Arc<AppState>>,
) -> Result<Response, ApiError> {
    let mut rooms = state.plane.rooms().await.map_err(ApiError::unavailable)?;
    rooms.sort_by(|a, b| a.room.cmp(&b.room));
    Ok(Json(serde_json::json!({ "rooms": rooms })).into_response())
}

/// `GET /admin/rooms/{room}`: the call and its members.
pub(super) async fn room(
    _: Authorized,
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(room) = path.map_err(bad_path)?;
    match state.plane.room(&room).await {
        Ok(Some(detail)) => Ok(Json(detail).into_response()),
        Ok(None) => Err(no_room(&room)),
        Err(e) => Err(ApiError::unavailable(e)),
    }
}

/// `GET /admin/rooms/{room}/participants`: `{"participants": [ParticipantDetail]}`.
pub(super) async fn participants(
    _: Authorized,
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(room) = path.map_err(bad_path)?;
    match state.plane.room(&room).await {
        Ok(Some(detail)) => {
            Ok(Json(serde_json::json!({ "participants": detail.members })).into_response())
        }
        Ok(None) => Err(no_room(&room)),
        Err(e) => Err(ApiError::unavailable(e)),
    }
}

/// `DELETE /admin/rooms/{room}`: ends the call for everyone (204).
pub(super) async fn end(
    Authorized(admin): Authorized,
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(room) = path.map_err(bad_path)?;
    act(&state, &admin.sub, &room, Action::End, || no_room(&room)).await
}

/// `DELETE /admin/rooms/{room}/participants/{participant}`: removes it (204).
pub(super) async fn remove(
    Authorized(admin): Authorized,
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, u64)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((room, participant)) = path.map_err(bad_path)?;
    let id = ParticipantId(participant);
    let missing = || ApiError::not_found(format!("no participant {participant} in room {room:?}"));
    act(&state, &admin.sub, &room, Action::Remove(id), missing).await
}

/// `DELETE /admin/rooms/{room}/tracks/{track}`: unpublishes it (204).
pub(super) async fn unpublish(
    Authorized(admin): Authorized,
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, u64)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((room, track)) = path.map_err(bad_path)?;
    let track_id = TrackId(track);
    let missing = || ApiError::not_found(format!("no track {track} in room {room:?}"));
    act(
        &state,
        &admin.sub,
        &room,
        Action::Unpublish(track_id),
        missing,
    )
    .await
}

/// The body of `POST .../mute`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Mute {
    muted: bool,
}

/// `POST /admin/rooms/{room}/tracks/{track}/mute` with `{"muted": bool}` (204).
pub(super) async fn mute(
    Authorized(admin): Authorized,
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, u64)>, PathRejection>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path((room, track)) = path.map_err(bad_path)?;
    let Mute { muted } = object(body)?;
    let track_id = TrackId(track);
    let missing = || ApiError::not_found(format!("no track {track} in room {room:?}"));
    let action = Action::Mute { track_id, muted };
    act(&state, &admin.sub, &room, action, missing).await
}

/// The query of `GET /admin/records`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordsQuery {
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
    /// Only this room's.
    room: Option<String>,
}

/// `GET /admin/records`: `{"records": [CallRecord]}`, newest first.
pub(super) async fn records(
    _: Authorized,
    State(state): State<Arc<AppState>>,
    query: Result<Query<RecordsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(100).min(1000);
    let records = state.config.ledger.records(limit, query.room.as_deref());
    Ok(Json(serde_json::json!({ "records": records })).into_response())
}

/// Asks the media plane to act on `room`: 204 when done, `missing()` when what it
/// names is not there.
async fn act(
    state: &AppState,
    admin: &str,
    room: &str,
    action: Action,
    missing: impl FnOnce() -> ApiError,
) -> Result<Response, ApiError> {
    info!(admin, room, ?action, "admin API");
    match state.plane.act(room, action).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(missing()),
        Err(e) => Err(ApiError::unavailable(e)),
    }
}

fn no_room(room: &str) -> ApiError {
    ApiError::not_found(format!("no call in room {room:?}"))
}

pub(super) fn bad_path(e: PathRejection) -> ApiError {
    ApiError::bad_request(e.body_text())
}
