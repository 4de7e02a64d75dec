//! What the server sends clients (`docs/protocol.md`): [`ServerMessage`], and the room
//! state its messages carry (participants, tracks, slots, ICE servers).

use serde::{Deserialize, Serialize};

use crate::error::ErrorMessage;
use crate::grants::{Grants, Role};
use crate::message::{E2eeData, Kind, ParticipantId, Source, TrackId};

/// Someone else in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub participant_id: ParticipantId,
    pub identity: String,
    pub name: String,
    /// Its token's role: a presenter's page shows its audience of viewers as a count,
    /// not as tiles.
    #[serde(default)]
    pub role: Role,
    /// It encrypts the frames it sends (it joined with `e2ee`); clients warn of a
    /// publisher that does not.
    #[serde(default)]
    pub e2ee: bool,
}

/// A track someone in the room publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub track_id: TrackId,
    pub participant_id: ParticipantId,
    pub kind: Kind,
    pub source: Source,
    pub muted: bool,
    /// Its simulcast layers (rids), lowest first; empty for a single stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
}

/// A slot m-line and the track it carries (`None`: nothing now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotTrack {
    pub mid: String,
    pub track_id: Option<TrackId>,
}

/// Which track id the server gave one of the client's published mids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub mid: String,
    pub track_id: TrackId,
}

/// An entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceServer {
    /// This server with only the URLs a client reaches over TCP (`turn:…?transport=tcp`)
    /// or TLS (`turns:`); `None` when none is left.
    pub fn tcp_only(&self) -> Option<IceServer> {
        let urls: Vec<String> = self
            .urls
            .iter()
            .filter(|u| is_tcp_url(u))
            .cloned()
            .collect();
        (!urls.is_empty()).then(|| IceServer {
            urls,
            ..self.clone()
        })
    }
}

/// Whether a STUN/TURN URL (RFC 7064, RFC 7065) is reached over TCP or TLS.
fn is_tcp_url(url: &str) -> bool {
    let url = url.to_ascii_lowercase();
    let Some((scheme, rest)) = url.split_once(':') else {
        return false;
    };
    let transport = rest
        .split_once('?')
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("transport=")));
    match scheme {
        // TLS runs over TCP only (DTLS transport is not used by browsers).
        "turns" | "stuns" => transport.is_none_or(|t| t == "tcp"),
        "turn" | "stun" => transport == Some("tcp"),
        _ => false,
    }
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It sent `leave` or closed its socket.
    Left,
    /// It never connected: no offer, or no media path, within the server's
    /// participant timeout.
    Timeout,
    /// Its media path was lost: its media stopped, or ICE consent expired.
    Network,
    /// The server removed it after an error.
    Error,
    /// An administrator removed it (the admin API), or its group may no longer call.
    Removed,
    /// An administrator ended the call.
    RoomEnded,
    /// The server stopped with the call still going (its drain ran out of time): join
    /// again, and another server takes the call.
    ServerShutdown,
}

/// A message to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined {
        participant_id: ParticipantId,
        room: String,
        identity: String,
        name: String,
        grants: Grants,
        /// This participant's own `join.e2ee`.
        e2ee: bool,
        participants: Vec<ParticipantInfo>,
        tracks: Vec<TrackInfo>,
        ice_servers: Vec<IceServer>,
    },
    Answer {
        sdp: String,
        published: Vec<Published>,
    },
    ParticipantJoined(ParticipantInfo),
    ParticipantLeft {
        participant_id: ParticipantId,
        reason: LeaveReason,
    },
    TrackPublished(TrackInfo),
    TrackUnpublished {
        track_id: TrackId,
    },
    TrackMuted {
        track_id: TrackId,
        muted: bool,
    },
    /// Who speaks now, loudest first (empty: nobody). Sent when it changes, at most
    /// every 300 ms.
    ActiveSpeakers {
        speakers: Vec<ParticipantId>,
    },
    /// To a publisher: the simulcast layers of its track that somebody receives. It may
    /// stop encoding the others until they are listed again.
    Layers {
        track_id: TrackId,
        active: Vec<String>,
    },
    /// To a client that offered `slots`: the track each of its slot m-lines carries now
    /// (`null`: none), every slot listed. Sent when that changes.
    Slots {
        slots: Vec<SlotTrack>,
    },
    /// Its grants changed: its group's policy changed during the call. Tracks it may no
    /// longer publish were unpublished (`track_unpublished`); publishing them again is
    /// refused (`forbidden`).
    Grants {
        grants: Grants,
    },
    /// The room as it is now, to a client that fell behind: its event queue overflowed,
    /// and messages about the others (who joined and left, their tracks, mutes, who
    /// speaks, key exchange) were dropped until it had room again. Replaces what the
    /// client knew of them. Its own `slots` and `layers` follow, as they are now.
    Resync {
        /// Everyone else in the room, as `joined` lists them.
        participants: Vec<ParticipantInfo>,
        /// Every track of the others.
        tracks: Vec<TrackInfo>,
        /// Who speaks now, as `active_speakers`.
        speakers: Vec<ParticipantId>,
    },
    /// Key exchange: what participant `from` sent this one in an `e2ee` message.
    E2ee {
        from: ParticipantId,
        data: E2eeData,
    },
    Left {
        reason: LeaveReason,
    },
    /// The answer to `join` when the room lives on another node of the cluster: join
    /// there instead, with the same token, on a new socket at `url`. The server closes
    /// this socket next.
    Redirect {
        /// The node's id.
        node: String,
        /// Its signaling WebSocket (`wss://…/ws`).
        url: String,
    },
    Error(ErrorMessage),
}

impl ServerMessage {
    /// Whether the server closes the socket once this message is sent.
    pub fn closes_socket(&self) -> bool {
        match self {
            ServerMessage::Left { .. } | ServerMessage::Redirect { .. } => true,
            ServerMessage::Error(e) => e.code.closes_socket(),
            _ => false,
        }
    }
}
