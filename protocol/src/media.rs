//! What signaling hands the media plane: a participant admitted by its token, and the
//! requests it makes once joined. The answers travel back as
//! [`ServerMessage`](crate::message::ServerMessage)s.

use crate::grants::Grants;
use crate::message::{
    E2eeData, IceServer, ParticipantId, Publish, Subscribe, TrackId, TrackQuality, Transport,
};

/// A participant admitted by a valid token, as the media plane receives it.
#[derive(Debug, Clone)]
pub struct Join {
    pub room: String,
    pub identity: String,
    pub name: String,
    /// What it may do: its token's grants narrowed by its group's policy.
    pub grants: Grants,
    /// Its token's grants as they were (for its role), before any policy: a change of
    /// its group's policy narrows these anew.
    pub token_grants: Grants,
    /// Its group (its token's `group` claim, else [`DEFAULT_GROUP`](crate::DEFAULT_GROUP)).
    pub group: String,
    /// Most participants (viewers apart) in the room, if it opens it (its group's
    /// `max_participants`).
    pub max_participants: Option<u32>,
    /// How the client will reach the media server.
    pub transport: Transport,
    /// Handed to the client in `joined` (TURN URLs with credentials minted for it; only
    /// those over TCP and TLS with `force_tcp`).
    pub ice_servers: Vec<IceServer>,
    /// A viewer that asked to hear of the other viewers.
    pub audience: bool,
    /// It encrypts the frames it sends (`join.e2ee`), as the room is told.
    pub e2ee: bool,
}

/// What a joined participant asks of the media plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Offer {
        sdp: String,
        publish: Vec<Publish>,
        subscribe: Vec<Subscribe>,
        /// Slot m-lines (`offer.slots`): the media plane maps its choice of tracks onto
        /// them.
        slots: Vec<String>,
    },
    Mute {
        track_id: TrackId,
        muted: bool,
    },
    View {
        pinned: Vec<TrackId>,
        quality: Vec<TrackQuality>,
    },
    /// Puts other tracks on m-lines negotiated before, without a new offer (WHEP, whose
    /// clients never offer again): each m-line goes on with its stream, now carrying the
    /// listed track; m-lines not listed go idle.
    Subscribe {
        subscribe: Vec<Subscribe>,
    },
    /// Key exchange (`e2ee`): relay `data` to participant `to`, of the same room.
    E2ee {
        to: ParticipantId,
        data: E2eeData,
    },
    /// A keyframe of a track the participant receives, or of its own (`keyframe`).
    Keyframe {
        track_id: TrackId,
    },
}
