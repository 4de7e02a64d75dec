//! `DELETE` and `PATCH` on a session's URL (`/whip/{id}`, `/whep/{id}`): leave, or
//! trickle candidates.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::info;

use super::offer::scan_offer;
use super::refusal::{Refused, authorize, content_type_is, refused};
use super::sessions::{Endpoint, Protocol};

/// The session at `/{protocol}/{id}`, if the request's token is its owner's.
fn owned_session(
    state: &Endpoint,
    protocol: Protocol,
    id: &str,
    headers: &HeaderMap,
) -> Result<(), Refused> {
    let not_found = || refused(StatusCode::NOT_FOUND, "no such session");
    let claims = authorize(&state.app, headers)?;
    let sessions = state.sessions.lock();
    let session = sessions
        .get(id)
        .filter(|s| s.protocol == protocol)
        .ok_or_else(not_found)?;
    if session.room != claims.room || session.identity != claims.sub {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "forbidden: the session is another identity's",
        ));
    }
    Ok(())
}

/// `DELETE /whip/{id}` and `/whep/{id}`: leave.
pub(super) async fn remove(
    state: Arc<Endpoint>,
    protocol: Protocol,
    id: String,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    owned_session(&state, protocol, &id, &headers)?;
    let Some(session) = state.sessions.lock().remove(&id) else {
        return Err(refused(StatusCode::NOT_FOUND, "no such session"));
    };
    session.task.abort();
    state.app.plane.leave(session.participant);
    info!(participant = %session.participant, session = %id, "session deleted by the client");
    Ok(StatusCode::OK.into_response())
}

/// `PATCH /whip/{id}` and `/whep/{id}`: trickled candidates, which the ICE-lite server
/// does not need; ICE restarts are not supported.
pub(super) async fn patch(
    state: Arc<Endpoint>,
    protocol: Protocol,
    id: String,
    headers: HeaderMap,
    body: String,
) -> Result<Response, Refused> {
    owned_session(&state, protocol, &id, &headers)?;
    if !content_type_is(&headers, "application/trickle-ice-sdpfrag") {
        return Err(refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a PATCH carries application/trickle-ice-sdpfrag",
        ));
    }
    let (etag, ufrag) = match state.sessions.lock().get(&id) {
        Some(s) => (s.etag.clone(), s.ice_ufrag.clone()),
        None => return Err(refused(StatusCode::NOT_FOUND, "no such session")),
    };
    let (_, fragment_ufrag) = scan_offer(&body);
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    let restart = if_match == Some("*") || fragment_ufrag.is_some_and(|u| Some(u) != ufrag);
    if restart {
        return Err(refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ICE restarts are not supported: DELETE the session and POST a new offer",
        ));
    }
    if if_match.is_some_and(|m| m != etag) {
        return Err(refused(
            StatusCode::PRECONDITION_FAILED,
            "the ETag does not match the session's",
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
