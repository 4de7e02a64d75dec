//! A client as the tests model it: a real str0m `Rtc`, what it was told and what it received.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use protocol::{ErrorCode, ParticipantId, ServerMessage, Source, TrackId, TrackInfo};
use str0m::change::SdpPendingOffer;
use str0m::format::{Codec, detect_vp8_keyframe};
use str0m::media::{Mid, Pt};
use str0m::net::Protocol;
use str0m::{Event, Output, Rtc};

use super::*;

/// One packet as a client received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub seq_no: u64,
    pub time: u32,
    /// The publisher's own sequence number (of its layer's stream), from the payload.
    pub source_seq: u64,
    /// The simulcast layer it was sent on (0 for audio and single streams), or its spatial
    /// layer (SVC).
    pub layer: u8,
    /// The RTP marker bit: the last packet of a picture.
    pub marker: bool,
    /// Its VP8 temporal layer and picture id, when it names them.
    pub temporal: Option<(u8, u16)>,
    /// The first packet of a keyframe.
    pub keyframe: bool,
    /// The m-line it came on.
    pub mid: Option<Mid>,
}

pub struct Client {
    pub name: String,
    pub addr: SocketAddr,
    /// UDP, or TCP for a client on ICE-TCP (an active candidate).
    pub proto: Protocol,
    pub rtc: Rtc,
    pub id: ParticipantId,
    /// Whether the network still carries its packets.
    pub online: bool,
    /// Its signaling session reads its event queue as fast as messages come; when not,
    /// `queued` of them wait there (see [`EVENT_QUEUE`](super::EVENT_QUEUE)).
    pub reading: bool,
    pub queued: usize,
    /// Its queue overflowed: it is behind until it has room again, then gets `resync`.
    pub behind: bool,
    pub inbox: Vec<ServerMessage>,
    pub pending: Option<SdpPendingOffer>,
    pub publish: Vec<(Mid, Source)>,
    pub subscribe: Vec<(Mid, TrackId)>,
    /// Our own track ids, from `answer.published`.
    pub own_tracks: HashMap<Mid, TrackId>,
    pub received: HashMap<TrackId, Vec<Received>>,
    pub keyframe_requests: usize,
    /// Per (m-line, layer): the next sequence number, and whether a keyframe is due.
    pub(crate) next_seq: HashMap<(Mid, u8), u64>,
    pub(crate) keyframe_due: HashMap<(Mid, u8), bool>,
    /// Simulcast layers (rids) of published m-lines.
    pub layers: HashMap<Mid, Vec<String>>,
    /// The audio level its microphone sends (dBov, -127 is silence).
    pub level: i8,
    /// Sends no keyframe when asked (an encoder that is slow to answer).
    pub ignore_keyframe_requests: bool,
    /// The last `layers` message per track: which of its layers it sends.
    pub sending: HashMap<TrackId, Vec<String>>,
    pub downlink: Link,
    /// Datagrams its downlink's bottleneck holds, with when they arrive.
    pub in_flight: VecDeque<(Instant, ToClient)>,
    /// How its cameras are layered, if as one SVC stream.
    pub svc: Option<Svc>,
    /// Its slot m-lines (`offer.slots`), if it receives on slots; `subscribe` then
    /// follows the server's `slots` messages.
    pub slot_mids: Vec<Mid>,
    /// The `slots` messages it got.
    pub slot_messages: usize,
}

impl Client {
    pub fn pt(&self, codec: Codec) -> Pt {
        self.rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
            .expect("codec configured")
    }

    pub fn messages(&self) -> impl Iterator<Item = &ServerMessage> {
        self.inbox.iter()
    }

    pub fn error_codes(&self) -> Vec<ErrorCode> {
        self.messages()
            .filter_map(|m| match m {
                ServerMessage::Error(e) => Some(e.code),
                _ => None,
            })
            .collect()
    }

    pub fn tracks_announced(&self) -> Vec<TrackInfo> {
        let mut tracks = Vec::new();
        for m in self.messages() {
            match m {
                ServerMessage::Joined { tracks: t, .. } => tracks.extend(t.iter().cloned()),
                ServerMessage::TrackPublished(t) => tracks.push(t.clone()),
                ServerMessage::TrackUnpublished { track_id } => {
                    tracks.retain(|t| t.track_id != *track_id)
                }
                _ => {}
            }
        }
        tracks
    }
}

/// A packet on its way to the server: transport, destination, source, contents.
pub type ToServer = (Protocol, SocketAddr, SocketAddr, Vec<u8>);

/// A packet on its way to a client: transport, source, destination, contents.
pub type ToClient = (Protocol, SocketAddr, SocketAddr, Vec<u8>);

/// Polls a client until its timeout, queueing what it sends and recording what it gets.
pub fn drain_client(c: &mut Client, to_server: &mut Vec<ToServer>) {
    let server = Net::server();
    loop {
        match c.rtc.poll_output() {
            Ok(Output::Transmit(t)) => {
                assert_eq!(t.destination, server);
                to_server.push((t.proto, t.destination, t.source, t.contents.to_vec()));
            }
            Ok(Output::Event(Event::RtpPacket(p))) => {
                let mid = c
                    .rtc
                    .direct_api()
                    .stream_rx(&p.header.ssrc)
                    .map(|s| s.mid());
                let track =
                    mid.and_then(|m| c.subscribe.iter().find(|(x, _)| *x == m).map(|(_, t)| *t));
                let track = track.expect("media arrives only on subscribed m-lines");
                let n = p.payload.len();
                let source_seq =
                    u64::from_be_bytes(p.payload[n - 8..].try_into().expect("8 bytes"));
                let video = n > 8;
                let dd = p
                    .header
                    .ext_vals
                    .user_values
                    .get::<sfu_core::svc::DdBytes>();
                let keyframe = if let Some(dd) = dd {
                    // The structure rides on a keyframe's first packet.
                    dd.0.len() > 3 && dd.0[3] & 0x80 != 0 && dd.0[0] & 0x80 != 0
                } else if p.header.payload_type == c.pt(Codec::Vp9) {
                    sfu_core::svc::vp9_layers(&p.payload).is_some_and(|l| l.keyframe)
                } else {
                    video && detect_vp8_keyframe(&p.payload)
                };
                let vp8 = video && dd.is_none() && p.header.payload_type == c.pt(Codec::Vp8);
                let temporal = vp8
                    .then(|| sfu_core::vp8::temporal(&p.payload))
                    .flatten()
                    .map(|t| {
                        let pid = (u16::from(p.payload[2] & 0x7f) << 8) | u16::from(p.payload[3]);
                        (t.tid, pid)
                    });
                c.received.entry(track).or_default().push(Received {
                    at: p.timestamp,
                    seq_no: *p.seq_no,
                    time: p.header.timestamp,
                    source_seq,
                    layer: if !video {
                        0
                    } else if temporal.is_some() {
                        p.payload[7]
                    } else {
                        p.payload[5]
                    },
                    marker: p.header.marker,
                    temporal,
                    keyframe,
                    mid,
                });
            }
            Ok(Output::Event(Event::KeyframeRequest(req))) => {
                c.keyframe_requests += 1;
                if !c.ignore_keyframe_requests {
                    let layer = req
                        .rid
                        .and_then(|r| {
                            c.layers
                                .get(&req.mid)?
                                .iter()
                                .position(|x| x.as_str() == &*r)
                        })
                        .unwrap_or(0);
                    c.keyframe_due.insert((req.mid, layer as u8), true);
                }
            }
            Ok(Output::Event(_)) => {}
            Ok(Output::Timeout(_)) => return,
            Err(e) => panic!("{}: {e}", c.name),
        }
    }
}
