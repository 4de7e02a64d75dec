//! The JSON messages of the WebSocket protocol, as documented in `docs/protocol.md`.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::error::{ErrorCode, ErrorMessage};
use crate::grants::Grants;
pub use crate::server::*;

/// Largest message other than `offer`; larger ones get `message_too_large`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest `offer`: the SDP of a 70-person call runs to several hundred KiB.
pub const MAX_OFFER_BYTES: usize = 1024 * 1024;

/// Largest `data` of an `e2ee` message, in bytes; larger gets `message_too_large`.
pub const MAX_E2EE_DATA_BYTES: usize = 4096;

/// A participant, unique in the server for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(pub u64);

/// A published track, unique in the server for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrackId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// What kind of media a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Audio,
    Video,
}

/// Where a published track comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Microphone,
    Camera,
    Screen,
}

impl Source {
    /// The kind of media this source produces.
    pub fn kind(self) -> Kind {
        match self {
            Source::Microphone => Kind::Audio,
            Source::Camera | Source::Screen => Kind::Video,
        }
    }

    /// Whether `grants` allow publishing from this source.
    pub fn is_granted(self, grants: &Grants) -> bool {
        match self {
            Source::Microphone => grants.publish_audio,
            Source::Camera => grants.publish_video,
            Source::Screen => grants.publish_screen,
        }
    }

    /// The grant's name, for error messages.
    pub fn grant_name(self) -> &'static str {
        match self {
            Source::Microphone => "publish_audio",
            Source::Camera => "publish_video",
            Source::Screen => "publish_screen",
        }
    }
}

/// One m-line the client publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    pub mid: String,
    pub source: Source,
    /// Simulcast: the RTP stream ids (`a=rid`) the client sends on this m-line, lowest
    /// quality first. Empty for a single stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
}

/// Most entries in each list of a `view`.
pub const MAX_VIEW_ENTRIES: usize = 100;

/// Most simulcast layers of one track.
pub const MAX_LAYERS: usize = 3;

/// One m-line on which the client receives a track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    pub mid: String,
    pub track_id: TrackId,
}

/// The most a subscriber wants of a video track: a thumbnail, a mid-sized tile, or all.
/// With simulcast, `low` is the lowest layer, `high` the highest, `medium` the one
/// between (the highest of two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Low,
    Medium,
    #[default]
    High,
}

/// A subscriber's cap on one track's quality (`view`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackQuality {
    pub track_id: TrackId,
    pub quality: Quality,
}

/// How a client will reach the media server, which decides the ICE candidates it is offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Every way it may: UDP and ICE-TCP candidates (only ICE-TCP with the `force_tcp`
    /// grant), and the TURN servers of `ice_servers`.
    #[default]
    Auto,
    /// Only through a TURN relay (`iceTransportPolicy: "relay"`): the UDP candidates the
    /// relay reaches. With `force_tcp`, `ice_servers` has only TURN over TCP and TLS.
    Relay,
}

/// The `data` of an `e2ee` message: an opaque blob (key material, end-to-end encrypted
/// between two participants) that the server relays as it came and never reads. Its
/// `Debug` shows only its length, so that it never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct E2eeData(String);

impl E2eeData {
    pub fn new(data: impl Into<String>) -> Self {
        E2eeData(data.into())
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for E2eeData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E2eeData({} bytes)", self.0.len())
    }
}

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Join {
        /// The join token (docs/protocol.md). Absent is empty: `unauthorized`, like any
        /// token that does not verify.
        #[serde(default)]
        token: String,
        /// How the client will reach the media server; `auto` when absent.
        #[serde(default)]
        transport: Transport,
        /// A viewer that wants to hear of the rest of the audience (`participant_joined`
        /// and `participant_left` of other viewers, and them in `joined`); others always do.
        #[serde(default)]
        audience: bool,
        /// The client encrypts every frame it sends (SFrame, `docs/e2ee.md`). A join
        /// without it that may publish needs the `plaintext` grant (`e2ee_required`).
        #[serde(default)]
        e2ee: bool,
    },
    Offer {
        sdp: String,
        #[serde(default)]
        publish: Vec<Publish>,
        #[serde(default)]
        subscribe: Vec<Subscribe>,
        /// Receiving m-lines the server fills with the tracks it chose for this client
        /// (`slots` messages say which), instead of one m-line per track (`subscribe`).
        #[serde(default)]
        slots: Vec<String>,
    },
    Mute {
        track_id: TrackId,
        muted: bool,
    },
    /// What the client shows: tracks it pinned (always received, at the best quality the
    /// network allows) and caps on the quality of others. Replaces the previous `view`.
    View {
        #[serde(default)]
        pinned: Vec<TrackId>,
        #[serde(default)]
        quality: Vec<TrackQuality>,
    },
    /// Key exchange: `data` relayed as it is to participant `to` of the same room.
    E2ee {
        to: ParticipantId,
        data: E2eeData,
    },
    /// Asks the server to request a keyframe of a track the client receives (or of its
    /// own), after a key change say. Throttled like every keyframe request.
    Keyframe {
        track_id: TrackId,
    },
    Leave,
}

impl ClientMessage {
    /// Parses one text frame. The error says which code to answer with.
    pub fn parse(text: &str) -> Result<ClientMessage, ErrorMessage> {
        let too_large = |limit: usize| {
            ErrorMessage::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "message of {} bytes is over the limit of {limit}",
                    text.len()
                ),
            )
        };
        if text.len() > MAX_OFFER_BYTES {
            return Err(too_large(MAX_OFFER_BYTES));
        }
        #[derive(Deserialize)]
        struct Envelope {
            #[serde(rename = "type")]
            kind: String,
        }
        let envelope: Envelope = serde_json::from_str(text)
            .map_err(|e| ErrorMessage::new(ErrorCode::BadRequest, format!("not a message: {e}")))?;
        let Some(request) = RequestType::from_name(&envelope.kind) else {
            // At most 64 bytes of it, cut between characters.
            let mut shown = envelope.kind;
            let cut = (0..=shown.len().min(64))
                .rev()
                .find(|i| shown.is_char_boundary(*i))
                .unwrap_or(0);
            shown.truncate(cut);
            return Err(ErrorMessage::new(
                ErrorCode::UnknownType,
                format!("unknown message type {shown:?}"),
            ));
        };
        if request != RequestType::Offer && text.len() > MAX_MESSAGE_BYTES {
            return Err(too_large(MAX_MESSAGE_BYTES));
        }
        let message: ClientMessage = serde_json::from_str(text).map_err(|e| {
            ErrorMessage::new(ErrorCode::BadRequest, format!("malformed message: {e}"))
                .answering(request)
        })?;
        if let ClientMessage::View { pinned, quality } = &message
            && pinned.len().max(quality.len()) > MAX_VIEW_ENTRIES
        {
            return Err(ErrorMessage::new(
                ErrorCode::BadRequest,
                format!("a view lists at most {MAX_VIEW_ENTRIES} tracks in each list"),
            )
            .answering(request));
        }
        if let ClientMessage::Offer {
            sdp,
            publish,
            subscribe,
            ..
        } = &message
        {
            crate::offer::check(sdp, publish, subscribe).map_err(|e| e.answering(request))?;
        }
        if let ClientMessage::E2ee { data, .. } = &message
            && data.len() > MAX_E2EE_DATA_BYTES
        {
            return Err(ErrorMessage::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "e2ee data of {} bytes is over the limit of {MAX_E2EE_DATA_BYTES}",
                    data.len()
                ),
            )
            .answering(request));
        }
        Ok(message)
    }

    /// The type of this message, as errors name it.
    pub fn request_type(&self) -> RequestType {
        match self {
            ClientMessage::Join { .. } => RequestType::Join,
            ClientMessage::Offer { .. } => RequestType::Offer,
            ClientMessage::Mute { .. } => RequestType::Mute,
            ClientMessage::View { .. } => RequestType::View,
            ClientMessage::E2ee { .. } => RequestType::E2ee,
            ClientMessage::Keyframe { .. } => RequestType::Keyframe,
            ClientMessage::Leave => RequestType::Leave,
        }
    }
}

/// The type of a client message, named in the errors that answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestType {
    Join,
    Offer,
    Mute,
    View,
    E2ee,
    Keyframe,
    Leave,
}

impl RequestType {
    fn from_name(name: &str) -> Option<RequestType> {
        Some(match name {
            "join" => RequestType::Join,
            "offer" => RequestType::Offer,
            "mute" => RequestType::Mute,
            "view" => RequestType::View,
            "e2ee" => RequestType::E2ee,
            "keyframe" => RequestType::Keyframe,
            "leave" => RequestType::Leave,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::Role;

    fn code_of(text: &str) -> ErrorCode {
        ClientMessage::parse(text)
            .expect_err("must be refused")
            .code
    }

    #[test]
    fn parses_each_client_message() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"join","token":"abc"}"#).unwrap(),
            ClientMessage::Join {
                token: "abc".into(),
                transport: Transport::Auto,
                audience: false,
                e2ee: false,
            }
        );
        assert_eq!(
            ClientMessage::parse(
                r#"{"type":"join","token":"abc","transport":"relay","audience":true,"e2ee":true}"#
            )
            .unwrap(),
            ClientMessage::Join {
                token: "abc".into(),
                transport: Transport::Relay,
                audience: true,
                e2ee: true,
            }
        );
        assert_eq!(
            code_of(r#"{"type":"join","token":"abc","transport":"carrier-pigeon"}"#),
            ErrorCode::BadRequest
        );
        let offer = ClientMessage::parse(
            r#"{"type":"offer","sdp":"v=0","publish":[{"mid":"0","source":"screen"},
                {"mid":"2","source":"camera","layers":["q","h","f"]}],
                "subscribe":[{"mid":"1","track_id":7}]}"#,
        )
        .unwrap();
        assert_eq!(
            offer,
            ClientMessage::Offer {
                sdp: "v=0".into(),
                publish: vec![
                    Publish {
                        mid: "0".into(),
                        source: Source::Screen,
                        layers: Vec::new(),
                    },
                    Publish {
                        mid: "2".into(),
                        source: Source::Camera,
                        layers: vec!["q".into(), "h".into(), "f".into()],
                    }
                ],
                subscribe: vec![Subscribe {
                    mid: "1".into(),
                    track_id: TrackId(7)
                }],
                slots: Vec::new(),
            }
        );
        let slotted = ClientMessage::parse(r#"{"type":"offer","sdp":"v=0","slots":["3","4"]}"#);
        assert!(
            matches!(&slotted, Ok(ClientMessage::Offer { slots, subscribe, .. })
                if slots == &["3", "4"] && subscribe.is_empty()),
            "{slotted:?}"
        );
        assert_eq!(
            serde_json::to_value(ServerMessage::Slots {
                slots: vec![
                    SlotTrack {
                        mid: "3".into(),
                        track_id: Some(TrackId(7))
                    },
                    SlotTrack {
                        mid: "4".into(),
                        track_id: None
                    },
                ]
            })
            .unwrap(),
            serde_json::json!({"type": "slots", "slots": [
                {"mid": "3", "track_id": 7}, {"mid": "4", "track_id": null}]})
        );
        assert_eq!(
            ClientMessage::parse(
                r#"{"type":"view","pinned":[7],"quality":[{"track_id":9,"quality":"low"}]}"#
            )
            .unwrap(),
            ClientMessage::View {
                pinned: vec![TrackId(7)],
                quality: vec![TrackQuality {
                    track_id: TrackId(9),
                    quality: Quality::Low
                }],
            }
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"view"}"#).unwrap(),
            ClientMessage::View {
                pinned: Vec::new(),
                quality: Vec::new()
            }
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"leave"}"#).unwrap(),
            ClientMessage::Leave
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"mute","track_id":3,"muted":true}"#).unwrap(),
            ClientMessage::Mute {
                track_id: TrackId(3),
                muted: true
            }
        );
    }

    #[test]
    fn tells_bad_request_from_unknown_type() {
        assert_eq!(code_of("{not json"), ErrorCode::BadRequest);
        assert_eq!(code_of(r#"{"token":"x"}"#), ErrorCode::BadRequest);
        assert_eq!(code_of(r#"[1,2]"#), ErrorCode::BadRequest);
        assert_eq!(code_of(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code_of(r#"{"type":"join","token":5}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code_of(r#"{"type":"offer","sdp":"x","publish":[{"mid":"0","source":"tv"}]}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code_of(r#"{"type":"view","quality":[{"track_id":1,"quality":"huge"}]}"#),
            ErrorCode::BadRequest
        );
        let many: Vec<String> = (0..=MAX_VIEW_ENTRIES).map(|i| i.to_string()).collect();
        let e = ClientMessage::parse(&format!(
            r#"{{"type":"view","pinned":[{}]}}"#,
            many.join(",")
        ))
        .unwrap_err();
        assert_eq!(
            (e.code, e.request),
            (ErrorCode::BadRequest, Some(RequestType::View))
        );
    }

    #[test]
    fn an_unknown_type_is_shown_cut_at_a_character_not_inside_one() {
        // Found by the fuzz target protocol_message: after one ASCII byte, two-byte
        // characters put the 64th byte inside a character, and cutting there panicked.
        let kind = format!("b{}", "\u{df}".repeat(40));
        let e = ClientMessage::parse(&format!(r#"{{"type":"{kind}"}}"#)).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownType);
        let shown = format!("{:?}", &kind[..63]);
        assert!(e.message.ends_with(&shown), "{}", e.message);
    }

    #[test]
    fn limits_offers_to_a_mebibyte_and_the_rest_to_64_kib() {
        let big = format!(
            r#"{{"type":"join","token":"{}"}}"#,
            "a".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(code_of(&big), ErrorCode::MessageTooLarge);
        let offer = format!(
            r#"{{"type":"offer","sdp":"{}"}}"#,
            "a".repeat(MAX_MESSAGE_BYTES * 4)
        );
        assert!(ClientMessage::parse(&offer).is_ok());
        let huge = format!(
            r#"{{"type":"offer","sdp":"{}"}}"#,
            "a".repeat(MAX_OFFER_BYTES)
        );
        assert_eq!(code_of(&huge), ErrorCode::MessageTooLarge);
    }

    #[test]
    fn errors_name_the_request_when_its_type_is_known() {
        let e = ClientMessage::parse(r#"{"type":"mute","track_id":"x"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.request),
            (ErrorCode::BadRequest, Some(RequestType::Mute))
        );
        assert_eq!(
            serde_json::to_value(&e).unwrap()["request"],
            serde_json::json!("mute")
        );
        let e = ClientMessage::parse("{").unwrap_err();
        assert_eq!(e.request, None);
        assert!(serde_json::to_value(&e).unwrap().get("request").is_none());
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let msg = ServerMessage::ParticipantLeft {
            participant_id: ParticipantId(13),
            reason: LeaveReason::Timeout,
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"participant_left","participant_id":13,"reason":"timeout"}"#
        );
        let msg = ServerMessage::Error(ErrorMessage::new(ErrorCode::RoomFull, "full"));
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"error","code":"room_full","message":"full"}"#
        );
        assert!(msg.closes_socket());
        let msg = ServerMessage::TrackPublished(TrackInfo {
            track_id: TrackId(22),
            participant_id: ParticipantId(13),
            kind: Kind::Video,
            source: Source::Screen,
            muted: false,
            layers: Vec::new(),
        });
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"track_published","track_id":22,"participant_id":13,"kind":"video","source":"screen","muted":false}"#
        );
        let msg = ServerMessage::Layers {
            track_id: TrackId(22),
            active: vec!["q".into()],
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"layers","track_id":22,"active":["q"]}"#
        );
        let msg = ServerMessage::ActiveSpeakers {
            speakers: vec![ParticipantId(13), ParticipantId(11)],
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"active_speakers","speakers":[13,11]}"#
        );
    }

    #[test]
    fn e2ee_relays_keyframe_requests_and_their_limits() {
        let data = "k".repeat(MAX_E2EE_DATA_BYTES);
        let text = format!(r#"{{"type":"e2ee","to":12,"data":"{data}"}}"#);
        assert_eq!(
            ClientMessage::parse(&text).unwrap(),
            ClientMessage::E2ee {
                to: ParticipantId(12),
                data: E2eeData::new(data.clone()),
            }
        );
        let over = format!(r#"{{"type":"e2ee","to":12,"data":"{data}x"}}"#);
        let e = ClientMessage::parse(&over).unwrap_err();
        assert_eq!(
            (e.code, e.request),
            (ErrorCode::MessageTooLarge, Some(RequestType::E2ee))
        );
        assert!(!e.message.contains("kkk"), "{}", e.message);
        // Bytes, not characters: 2049 two-byte characters are over.
        let wide = format!(r#"{{"type":"e2ee","to":12,"data":"{}"}}"#, "é".repeat(2049));
        assert_eq!(code_of(&wide), ErrorCode::MessageTooLarge);
        assert_eq!(
            code_of(r#"{"type":"e2ee","to":12,"data":{"key":1}}"#),
            ErrorCode::BadRequest,
            "data is a string"
        );
        assert_eq!(
            code_of(r#"{"type":"e2ee","data":"x"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code_of(r#"{"type":"e2ee","to":12,"data":"x","from":3}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"keyframe","track_id":7}"#).unwrap(),
            ClientMessage::Keyframe {
                track_id: TrackId(7)
            }
        );
        let e = ClientMessage::parse(r#"{"type":"keyframe"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.request),
            (ErrorCode::BadRequest, Some(RequestType::Keyframe))
        );
        let relayed = ServerMessage::E2ee {
            from: ParticipantId(11),
            data: E2eeData::new("opaque"),
        };
        assert_eq!(
            serde_json::to_string(&relayed).unwrap(),
            r#"{"type":"e2ee","from":11,"data":"opaque"}"#
        );
    }

    #[test]
    fn e2ee_data_never_shows_in_debug_output() {
        let secret = "c2VjcmV0LWtleS1ibG9i";
        let message =
            ClientMessage::parse(&format!(r#"{{"type":"e2ee","to":5,"data":"{secret}"}}"#))
                .unwrap();
        let shown = format!("{message:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("20 bytes"), "{shown}");
        let relayed = ServerMessage::E2ee {
            from: ParticipantId(5),
            data: E2eeData::new(secret),
        };
        assert!(!format!("{relayed:?}").contains(secret));
        assert!(!format!("{relayed:#?}").contains(secret));
    }

    #[test]
    fn e2ee_flags_and_errors_have_the_documented_shape() {
        let info = ParticipantInfo {
            participant_id: ParticipantId(13),
            identity: "carol".into(),
            name: "Carol".into(),
            role: Role::Participant,
            e2ee: true,
        };
        assert_eq!(
            serde_json::to_string(&ServerMessage::ParticipantJoined(info.clone())).unwrap(),
            r#"{"type":"participant_joined","participant_id":13,"identity":"carol","name":"Carol","role":"participant","e2ee":true}"#
        );
        let joined = serde_json::to_value(ServerMessage::Joined {
            participant_id: ParticipantId(12),
            room: "r".into(),
            identity: "a".into(),
            name: "A".into(),
            grants: Grants::default(),
            e2ee: true,
            participants: vec![info],
            tracks: Vec::new(),
            ice_servers: Vec::new(),
        })
        .unwrap();
        assert_eq!(joined["e2ee"], true);
        assert_eq!(joined["participants"][0]["e2ee"], true);
        assert_eq!(joined["grants"]["plaintext"], false);
        let required = ServerMessage::Error(ErrorMessage::new(ErrorCode::E2eeRequired, "x"));
        assert!(required.closes_socket());
        assert_eq!(
            serde_json::to_value(&required).unwrap()["code"],
            "e2ee_required"
        );
        let limited = ServerMessage::Error(ErrorMessage::new(ErrorCode::RateLimited, "x"));
        assert!(!limited.closes_socket());
        assert_eq!(ErrorCode::RateLimited.as_str(), "rate_limited");
        assert_eq!(
            serde_json::to_value(ErrorCode::RateLimited).unwrap(),
            "rate_limited"
        );
    }

    #[test]
    fn tcp_only_keeps_the_urls_reached_over_tcp_or_tls() {
        let server = IceServer {
            urls: vec![
                "turn:relay.example.com:3478?transport=udp".into(),
                "turn:relay.example.com:3478".into(),
                "TURN:relay.example.com:3478?transport=TCP".into(),
                "turns:relay.example.com:443?transport=tcp".into(),
                "turns:relay.example.com:443".into(),
                "stun:relay.example.com:3478".into(),
                "turns:relay.example.com:443?transport=udp".into(),
            ],
            username: Some("1700000000:alice".into()),
            credential: Some("secret".into()),
        };
        let tcp = server.tcp_only().expect("some URLs are TCP");
        assert_eq!(
            tcp.urls,
            [
                "TURN:relay.example.com:3478?transport=TCP",
                "turns:relay.example.com:443?transport=tcp",
                "turns:relay.example.com:443",
            ]
        );
        assert_eq!(tcp.username, server.username);
        assert_eq!(tcp.credential, server.credential);
        let udp_only = IceServer {
            urls: vec!["turn:relay.example.com:3478?transport=udp".into()],
            username: None,
            credential: None,
        };
        assert_eq!(udp_only.tcp_only(), None);
    }
}
