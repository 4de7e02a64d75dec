//! Refused WHIP and WHEP requests, and the checks that refuse them: the bearer token,
//! the content type, the media plane's errors.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use protocol::{ErrorCode, ErrorMessage};
use tracing::info;

use crate::state::AppState;
use crate::token::{Claims, bearer};

/// A refused request: its status and a plain-text reason. A `401` says how to
/// authenticate, a `503` when to try again.
pub(super) struct Refused {
    status: StatusCode,
    message: String,
}

pub(super) fn refused(status: StatusCode, message: impl std::fmt::Display) -> Refused {
    Refused {
        status,
        message: message.to_string(),
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        let h = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// The HTTP status for a media-plane error.
pub(super) fn plane_error(e: &ErrorMessage) -> Refused {
    let status = match e.code {
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden | ErrorCode::E2eeRequired => StatusCode::FORBIDDEN,
        ErrorCode::BadRequest | ErrorCode::BadSdp | ErrorCode::UnknownType => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RoomFull
        | ErrorCode::ServerBusy
        | ErrorCode::ServerDraining
        | ErrorCode::ClusterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::NotJoined | ErrorCode::AlreadyJoined | ErrorCode::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    refused(status, format_args!("{}: {}", e.code.as_str(), e.message))
}

/// The claims of the request's bearer token.
pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Claims, Refused> {
    let token = bearer(headers).ok_or_else(|| {
        refused(
            StatusCode::UNAUTHORIZED,
            "unauthorized: send the join token as a Bearer token",
        )
    })?;
    state.config.tokens.verify(token).map_err(|e| {
        info!("whip/whep refused: {e}");
        refused(StatusCode::UNAUTHORIZED, format_args!("unauthorized: {e}"))
    })
}

/// Whether the request's body is of `media_type` (parameters ignored).
pub(super) fn content_type_is(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(media_type))
}
