//! The `error` message: its stable codes (`docs/protocol.md`, "Errors") and its body.

use serde::{Deserialize, Serialize};

use crate::message::RequestType;

/// The stable error codes of `docs/protocol.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    BadRequest,
    UnknownType,
    BadSdp,
    MessageTooLarge,
    NotJoined,
    AlreadyJoined,
    RoomFull,
    ServerBusy,
    /// The server is draining (stopping, for an upgrade): it takes no new room. Join
    /// again: behind a load balancer, another server takes it.
    ServerDraining,
    /// A join that may publish said it sends frames in the clear (`e2ee: false`), and
    /// its token has no `plaintext` grant.
    E2eeRequired,
    /// Over a rate limit (`e2ee` messages); the message was dropped.
    RateLimited,
    /// The server cannot reach the cluster's coordination (Redis) to place a new room:
    /// try again in a moment. Calls it carries go on.
    ClusterUnavailable,
    Internal,
}

impl ErrorCode {
    /// Every code (the metrics register their labels up front); a new code goes here too.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::BadSdp,
        ErrorCode::MessageTooLarge,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::RoomFull,
        ErrorCode::ServerBusy,
        ErrorCode::ServerDraining,
        ErrorCode::E2eeRequired,
        ErrorCode::RateLimited,
        ErrorCode::ClusterUnavailable,
        ErrorCode::Internal,
    ];

    /// Whether the server closes the socket after this error.
    pub fn closes_socket(self) -> bool {
        matches!(
            self,
            ErrorCode::Unauthorized
                | ErrorCode::RoomFull
                | ErrorCode::ServerDraining
                | ErrorCode::E2eeRequired
                | ErrorCode::ClusterUnavailable
                | ErrorCode::Internal
        )
    }

    /// The code as it appears on the wire and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::ServerDraining => "server_draining",
            ErrorCode::E2eeRequired => "e2ee_required",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ClusterUnavailable => "cluster_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// The body of an `error` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ErrorMessage {
    pub code: ErrorCode,
    pub message: String,
    /// The client message this answers, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestType>,
}

impl ErrorMessage {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorMessage {
            code,
            message: message.into(),
            request: None,
        }
    }

    /// The same error, marked as the answer to a `request` message.
    pub fn answering(mut self, request: RequestType) -> Self {
        self.request = Some(request);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_each_code_once() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
