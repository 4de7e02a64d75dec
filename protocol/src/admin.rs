//! The admin API's vocabulary: calls as it lists them ([`RoomSummary`], [`RoomDetail`]),
//! what happens in them as the media plane reports it ([`CallEvent`]), and what leaves
//! the server about them: webhook notices ([`Notice`]) and call records
//! ([`CallRecord`]). None of it carries media or key material.

use serde::{Deserialize, Serialize};

use crate::grants::Role;
use crate::message::{ParticipantId, Source, TrackId};
use crate::policy::Policy;
use crate::server::{LeaveReason, TrackInfo};

/// A call in progress, as `GET /admin/rooms` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomSummary {
    pub room: String,
    /// The group of the participant who opened it.
    pub group: String,
    /// The server it lives on.
    pub node: String,
    /// When it started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Members who are not viewers, and viewers.
    pub participants: u32,
    pub viewers: u32,
    pub tracks: u32,
}

/// A call in progress and who is in it (`GET /admin/rooms/{room}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomDetail {
    #[serde(flatten)]
    pub summary: RoomSummary,
    pub members: Vec<ParticipantDetail>,
}

/// A participant of a call in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantDetail {
    pub participant_id: ParticipantId,
    pub identity: String,
    pub name: String,
    pub group: String,
    pub role: Role,
    /// When it joined, milliseconds since the Unix epoch.
    pub joined_at_ms: u64,
    /// How its media reaches the server now; `None` before its media path is up.
    pub transport: Option<TransportKind>,
    /// What it publishes.
    pub tracks: Vec<TrackInfo>,
    pub quality: Quality,
}

/// How a participant's media reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// UDP, straight to the server's media ports.
    Udp,
    /// ICE-TCP (RFC 6544) to the server's TCP port.
    Tcp,
    /// Through this server's TURN relay (the client reaching it over UDP, TCP or TLS).
    Turn,
}

/// How well a participant's connection carries its calls, from what its receiver
/// reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub rating: Rating,
    /// Round trip to it, from its receiver reports.
    pub rtt_ms: Option<u32>,
    /// The fraction of what it was sent that it lost lately (0 to 1).
    pub loss: Option<f32>,
    /// What its downlink is estimated to carry, bit/s.
    pub estimate_bps: Option<u64>,
}

/// A connection's quality in a word: `good` (under 2 % loss and 300 ms round trip),
/// `poor` (over 10 % loss or 1 s), `fair` between; `unknown` before its first reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    Good,
    Fair,
    Poor,
    Unknown,
}

impl Quality {
    /// The quality of these measures, rated.
    pub fn rated(rtt_ms: Option<u32>, loss: Option<f32>, estimate_bps: Option<u64>) -> Quality {
        let rating = match (rtt_ms, loss) {
            (None, None) => Rating::Unknown,
            (rtt, loss) => {
                let (rtt, loss) = (rtt.unwrap_or(0), loss.unwrap_or(0.0));
                if loss > 0.10 || rtt > 1000 {
                    Rating::Poor
                } else if loss > 0.02 || rtt > 300 {
                    Rating::Fair
                } else {
                    Rating::Good
                }
            }
        };
        Quality {
            rating,
            rtt_ms,
            loss,
            estimate_bps,
        }
    }
}

/// What the admin API may do to a call in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Removes a participant: it is told (`left`, reason `removed`), and so is the room.
    Remove(ParticipantId),
    /// Mutes (or unmutes) a track: nothing of it is forwarded while muted, and
    /// everyone, its publisher too, is told (`track_muted`). Its publisher may unmute it.
    Mute { track_id: TrackId, muted: bool },
    /// Unpublishes a track; its publisher is told (`track_unpublished`) and may publish
    /// again with its next offer.
    Unpublish(TrackId),
    /// Ends the call: everyone is removed (`left`, reason `room_ended`).
    End,
}

/// What happened in a call, as the media plane reports it to the control plane, which
/// keeps the records and sends the webhooks. In the order it happened, per room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum CallEvent {
    RoomStarted {
        room: String,
        group: String,
    },
    RoomFinished {
        room: String,
    },
    ParticipantJoined(Joined),
    ParticipantLeft {
        room: String,
        participant_id: ParticipantId,
        identity: String,
        reason: LeaveReason,
        /// The ways its media took, in the order first used.
        transports: Vec<TransportKind>,
        /// Bytes it sent the server, and the server sent it (media and RTCP, encrypted).
        bytes_received: u64,
        bytes_sent: u64,
    },
    TrackPublished(TrackEvent),
    TrackUnpublished(TrackEvent),
}

/// Someone joined a call (a call event, and a webhook's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub room: String,
    pub participant_id: ParticipantId,
    pub identity: String,
    pub group: String,
    pub role: Role,
}

/// A track published or unpublished (a call event, and a webhook's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackEvent {
    pub room: String,
    pub participant_id: ParticipantId,
    pub identity: String,
    pub track_id: TrackId,
    pub source: Source,
}

/// What a webhook tells: a call event, or a finished call's record, or a policy change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    RoomStarted {
        room: String,
        group: String,
    },
    /// The call ended; its record.
    RoomFinished(CallRecord),
    ParticipantJoined(Joined),
    ParticipantLeft {
        room: String,
        participant_id: ParticipantId,
        identity: String,
        reason: LeaveReason,
    },
    TrackPublished(TrackEvent),
    TrackUnpublished(TrackEvent),
    /// A group's policy was set (or, `None`, removed), by the config file or the admin
    /// API.
    PolicyChanged {
        group: String,
        policy: Option<Policy>,
    },
}

/// The body of a webhook POST: an event, where and when it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// Unique per notice: a receiver that gets one twice (a retry whose answer was lost)
    /// knows it by this (also the `webhook-id` header).
    pub id: String,
    /// When it happened, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The server it happened on.
    pub node: String,
    #[serde(flatten)]
    pub event: Event,
}

/// What is kept of a finished call: who was in it, when, how, and how much it carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub room: String,
    pub group: String,
    pub node: String,
    /// Milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    /// The most members at once, and how many joins in all.
    pub peak_participants: u32,
    pub total_participants: u32,
    /// Bytes the server sent its members, and received from them.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Every join, in order (one identity joining twice is there twice).
    pub participants: Vec<ParticipantRecord>,
}

/// One participant's part in a finished call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantRecord {
    pub participant_id: ParticipantId,
    pub identity: String,
    pub group: String,
    pub role: Role,
    pub joined_at_ms: u64,
    pub left_at_ms: u64,
    pub reason: LeaveReason,
    pub transports: Vec<TransportKind>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_follow_loss_and_round_trip() {
        assert_eq!(Quality::rated(None, None, None).rating, Rating::Unknown);
        assert_eq!(
            Quality::rated(Some(40), Some(0.0), None).rating,
            Rating::Good
        );
        assert_eq!(Quality::rated(Some(400), None, None).rating, Rating::Fair);
        assert_eq!(
            Quality::rated(Some(40), Some(0.05), None).rating,
            Rating::Fair
        );
        assert_eq!(Quality::rated(None, Some(0.2), None).rating, Rating::Poor);
        assert_eq!(
            Quality::rated(Some(1500), Some(0.0), None).rating,
            Rating::Poor
        );
    }

    #[test]
    fn a_notice_reads_as_documented() {
        let notice = Notice {
            id: "n1".into(),
            timestamp_ms: 1,
            node: "a".into(),
            event: Event::ParticipantLeft {
                room: "r".into(),
                participant_id: ParticipantId(7),
                identity: "alice".into(),
                reason: LeaveReason::Removed,
            },
        };
        let json = serde_json::to_value(&notice).unwrap();
        assert_eq!(json["type"], "participant_left");
        assert_eq!(json["data"]["reason"], "removed");
        assert_eq!(json["data"]["participant_id"], 7);
        let back: Notice = serde_json::from_value(json).unwrap();
        assert_eq!(back, notice);
    }
}
