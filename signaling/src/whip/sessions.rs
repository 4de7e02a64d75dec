//! The open WHIP and WHEP sessions, and the state their handlers share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use protocol::ParticipantId;

use crate::state::AppState;

/// Which of the two protocols a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Whip,
    Whep,
}

impl Protocol {
    pub(super) fn path(self) -> &'static str {
        match self {
            Protocol::Whip => "whip",
            Protocol::Whep => "whep",
        }
    }
}

/// What the WHIP and WHEP handlers share: the server's state and the open sessions.
pub(super) struct Endpoint {
    pub(super) app: Arc<AppState>,
    pub(super) sessions: Sessions,
}

/// The open WHIP and WHEP sessions, by the random id in their URL.
#[derive(Default)]
pub(super) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// One open session.
pub(super) struct Session {
    pub(super) protocol: Protocol,
    pub(super) participant: ParticipantId,
    pub(super) room: String,
    pub(super) identity: String,
    pub(super) etag: String,
    /// The client's ICE username fragment: a PATCH with another one is an ICE restart.
    pub(super) ice_ufrag: Option<String>,
    /// Reads the participant's events until it leaves.
    pub(super) task: tokio::task::AbortHandle,
}

impl Sessions {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves the map consistent (plain inserts and
        // removes), so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}
