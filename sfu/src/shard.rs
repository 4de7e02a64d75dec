//! The sans-IO media core of one shard: the rooms it holds, the WebRTC session of each of
//! their participants, and the forwarding between them. It never touches a socket or a
//! clock: datagrams, commands and time go in, datagrams, signals and a deadline come out.
//!
//! Run loop, as in str0m: feed one input (`handle_datagram`, `join`, `request`, `leave`,
//! `handle_timeout`), then call [`Shard::poll_output`] until it returns
//! [`ShardOutput::Timeout`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use signaling::protocol::{
    ErrorCode, ErrorMessage, Kind, LeaveReason, MAX_LAYERS, ParticipantId, ParticipantInfo,
    Publish, Published, Quality, RequestType, ServerMessage, SlotTrack, Source, Subscribe, TrackId,
    TrackInfo, TrackQuality, Transport,
};
use signaling::{Grants, Join, Request};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::format::{Codec, PayloadParams};
use str0m::ice::StunMessage;
use str0m::media::Rid;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::rtp::{Extension, RtpPacket, RtpWrite, Ssrc, Vp8Descriptor};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcError};
use tracing::{debug, info, warn};

use crate::forwarder::{
    Decision, DropReason, Forwarder, Select, Vp8Continuity, keyframe_start, select, select_svc,
};
use crate::pacer::Pacer;
use crate::selection::{self, RateMeter, Speech, VideoItem};
use crate::svc::{
    DD_EXTENSION_ID, DD_URI, DdBytes, DdExtension, DdStructure, FrameNumbers, LayerInfo, parse_dd,
    vp9_layers,
};

/// How a shard behaves; the same for every shard of a server.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// A participant whose media sent nothing for this long is removed.
    pub participant_timeout: Duration,
    /// At most one keyframe request per source in this interval.
    pub keyframe_interval: Duration,
    /// Most participants in one room (presenters count among them; viewers do not).
    pub room_capacity: usize,
    /// Most viewers (receive-only audience of a broadcast) in one room.
    pub viewer_capacity: usize,
    /// In rooms of more participants than this, each subscriber receives only the
    /// `loudest_n` loudest microphones (and the pinned ones), and cameras other than the
    /// speaker's as thumbnails.
    pub loudest_threshold: usize,
    pub loudest_n: usize,
    /// Most cameras a subscriber receives (besides pinned ones), by speaking order.
    pub last_n: usize,
    /// This shard's index and the number of shards, to make track ids unique server-wide.
    pub index: u64,
    pub count: u64,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            participant_timeout: Duration::from_secs(20),
            keyframe_interval: Duration::from_millis(200),
            room_capacity: 70,
            viewer_capacity: 500,
            loudest_threshold: 8,
            loudest_n: 3,
            last_n: 25,
            index: 0,
            count: 1,
        }
    }
}

/// What the driver must do next.
#[derive(Debug)]
pub enum ShardOutput {
    /// Send a datagram from the socket bound to `source`'s port.
    Transmit(Transmit),
    /// Deliver a message to a participant's signaling session.
    Signal(ParticipantId, ServerMessage),
    /// The participant is gone: drop its signaling queue so its socket closes.
    Closed(ParticipantId),
    /// Nothing more to do before this instant (or before the next input).
    Timeout(Instant),
}

/// Plain counters, read and reset by the driver to feed the metrics.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// UDP datagrams and bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// ICE-TCP frames (RFC 4571) and their bytes, without the framing.
    pub tcp_rx_packets: u64,
    pub tcp_rx_bytes: u64,
    pub tcp_tx_packets: u64,
    pub tcp_tx_bytes: u64,
    pub rtp_forwarded: u64,
    pub calls_started: u64,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests: u64,
    /// A subscription moved to another layer (or resumed after a pause).
    pub layer_switches: u64,
    /// Dependency descriptors read, and those that could not be (the packet's payload
    /// was used).
    pub dd_read: u64,
    pub dd_unreadable: u64,
    pub drops: [u64; DropReason::ALL.len()],
}

impl Counters {
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }
}

/// The mids of an SDP's BUNDLE group.
fn bundled_mids(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=group:BUNDLE "))
        .flat_map(|l| l.split(' '))
        .collect()
}

/// Checks, before anything is applied, that every published mid is an m-line of the offer,
/// of its source's kind, on which the client sends. `sdp` is the offer's text, for its
/// BUNDLE group: a port-0 m-line in the group is bundle-only (GStreamer's webrtcbin offers
/// those with max-bundle), not rejected.
fn check_publish_kinds(offer: &SdpOffer, sdp: &str, publish: &[Publish]) -> Result<(), String> {
    let bundled = bundled_mids(sdp);
    for x in publish {
        let line = offer
            .media_lines
            .iter()
            .find(|m| m.mid().to_string() == x.mid);
        let Some(line) = line else {
            return Err(format!("mid {:?} is not in the offer", x.mid));
        };
        // str0m's media type is not nameable outside the crate; its Debug form is stable.
        let kind = match format!("{:?}", line.typ).as_str() {
            "Audio" => Some(Kind::Audio),
            "Video" => Some(Kind::Video),
            _ => None,
        };
        if kind != Some(x.source.kind()) {
            return Err(format!(
                "mid {:?} is a {:?} m-line, not {:?} as {:?} needs",
                x.mid,
                line.typ,
                x.source.kind(),
                x.source
            ));
        }
        if !x.layers.is_empty() {
            let rids = line.rids();
            if x.layers.len() > MAX_LAYERS || x.source.kind() != Kind::Video {
                return Err(format!(
                    "mid {:?}: at most {MAX_LAYERS} layers, and only for video",
                    x.mid
                ));
            }
            for (i, layer) in x.layers.iter().enumerate() {
                if x.layers[..i].contains(layer) || !rids.iter().any(|r| **r == **layer) {
                    return Err(format!(
                        "mid {:?}: layer {layer:?} is not one a=rid of the m-line, once",
                        x.mid
                    ));
                }
            }
        }
        let rejected = line.disabled && !bundled.contains(&x.mid.as_str());
        if rejected || !line.direction().is_sending() {
            return Err(format!(
                "mid {:?} is {} in the offer: the client does not send on it",
                x.mid,
                if rejected {
                    "rejected".to_string()
                } else {
                    line.direction().to_string()
                }
            ));
        }
    }
    Ok(())
}

/// Most slot m-lines one offer may list: a grid of 25 videos, the screens, the loudest
/// microphones and the pinned ones fit with room to spare.
const MAX_SLOTS: usize = 64;

/// The kind of each slot m-line (`offer.slots`), checked before anything is applied: an
/// m-line of the offer, audio or video, on which the client receives.
fn slot_kinds(offer: &SdpOffer, sdp: &str, slots: &[String]) -> Result<Vec<(Mid, Kind)>, String> {
    let bundled = bundled_mids(sdp);
    let mut kinds = Vec::with_capacity(slots.len());
    for mid in slots {
        let line = offer
            .media_lines
            .iter()
            .find(|m| m.mid().to_string() == *mid)
            .ok_or_else(|| format!("slot {mid:?} is not in the offer"))?;
        // str0m's media type is not nameable outside the crate; its Debug form is stable.
        let kind = match format!("{:?}", line.typ).as_str() {
            "Audio" => Kind::Audio,
            "Video" => Kind::Video,
            other => return Err(format!("slot {mid:?} is a {other} m-line")),
        };
        // A port-0 m-line in the BUNDLE group is bundle-only, not rejected.
        let rejected = line.disabled && !bundled.contains(&mid.as_str());
        if rejected || !line.direction().is_receiving() {
            return Err(format!(
                "slot {mid:?} is {} in the offer: the client does not receive on it",
                if rejected {
                    "rejected".to_string()
                } else {
                    line.direction().to_string()
                }
            ));
        }
        kinds.push((Mid::from(mid.as_str()), kind));
    }
    Ok(kinds)
}

/// The answer with each m-line's payload types in the order the offer gave them. str0m
/// answers in its own preference order, but a sender encodes with the first codec of the
/// answer: a client that put VP9 or AV1 first for its SVC camera
/// (`setCodecPreferences`) must get it first back. Video m-lines only. M-lines pair up by position (an
/// answer has the offer's m-lines, in order); payload types the offer did not list, and
/// anything unexpected, stay as they were.
pub fn follow_offer_codec_order(offer: &str, answer: &str) -> String {
    let formats = |line: &str| -> Option<Vec<String>> {
        let rest = line.strip_prefix("m=")?;
        Some(
            rest.split_whitespace()
                .skip(3)
                .map(str::to_string)
                .collect(),
        )
    };
    let offered: Vec<Vec<String>> = offer.lines().filter_map(formats).collect();
    let mut index = 0;
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive("\r\n") {
        let bare = line.trim_end_matches(['\r', '\n']);
        if let Some(mut pts) = formats(bare) {
            // (Audio keeps str0m's order, which puts RED before its codec as libwebrtc
            // needs.)
            if let Some(order) = offered.get(index).filter(|_| bare.starts_with("m=video")) {
                pts.sort_by_key(|pt| order.iter().position(|o| o == pt).unwrap_or(usize::MAX));
                let head: Vec<&str> = bare.split_whitespace().take(3).collect();
                out.push_str(&head.join(" "));
                for pt in &pts {
                    out.push(' ');
                    out.push_str(pt);
                }
                out.push_str(&line[bare.len()..]);
                index += 1;
                continue;
            }
            index += 1;
        }
        out.push_str(line);
    }
    out
}

/// How many remote addresses one participant may use at once (ICE candidates that
/// reached us, TCP connections included); more are refused rather than growing the map.
const MAX_REMOTES: usize = 8;

/// The local addresses a participant's ICE candidates are on: UDP ones on one port, and
/// passive ICE-TCP ones (RFC 6544) on the TCP media port. Either may be empty.
#[derive(Debug, Clone, Default)]
pub struct LocalCandidates {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
}

/// A remote address as the shard maps it: the transport, our address, theirs.
type Remote = (Protocol, SocketAddr, SocketAddr);

/// Our ICE ufrags start with the shard's index in 4 hex digits, so that whoever accepts an
/// ICE-TCP connection finds the shard from the first STUN request's USERNAME.
pub fn shard_of_ufrag(ufrag: &str) -> Option<u64> {
    let prefix = ufrag.get(..4)?;
    u64::from_str_radix(prefix, 16).ok()
}

/// One participant's WebRTC session and what it publishes and receives.
struct Participant {
    info: ParticipantInfo,
    room: String,
    grants: Grants,
    rtc: Rtc,
    /// Our ICE username fragment for this participant, the key of the first STUN request.
    ufrag: String,
    /// The local UDP port its candidates are on (datagrams for it must arrive there), and
    /// the TCP one; `None` where it was offered no candidate of that transport.
    udp_port: Option<u16>,
    tcp_port: Option<u16>,
    /// Remote addresses mapped to it, to unmap on removal.
    remotes: Vec<Remote>,
    /// Removed when this passes without a datagram; `None` until its first offer.
    media_deadline: Option<Instant>,
    /// When its `Rtc` wants `Input::Timeout` next, as queued in the shard\'s timers
    /// (`None`: not queued; the next drain queues it).
    rtc_timeout: Option<Instant>,
    /// In the shard's dirty queue: its `Rtc` has output to drain.
    dirty: bool,
    /// Paces what it is sent, where its `Rtc` does not (no TWCC estimator: a viewer).
    pacer: Option<Pacer>,
    /// When its pacer lets the next datagram go, as queued in the shard's timers.
    pace_at: Option<Instant>,
    publications: Vec<Publication>,
    /// Slots: a track's subscriber list names a slot, which stays put while it lives.
    subscriptions: Vec<Option<Subscription>>,
    /// Incoming SSRC to track and layer, filled as packets arrive.
    ssrc_tracks: Vec<(Ssrc, TrackId, u8)>,
    /// Forwarders of m-lines that carry nothing now, kept so that the stream continues
    /// when the m-line is given another track. At most one per m-line.
    idle_forwarders: Vec<(Mid, IdleStream)>,
    /// Hears of the viewers of its room: presenters and participants do, a viewer if it
    /// asked (`join.audience`).
    hears_audience: bool,
    /// Its DTLS handshake failed and the log said why (once, not per datagram).
    dtls_failure_logged: bool,
    /// Its slot m-lines (`offer.slots`), which the server fills with the tracks it
    /// chose, and what the last `slots` message said they carry. Empty: it subscribes
    /// per track.
    slot_mids: Vec<(Mid, Kind)>,
    slots_sent: Vec<(Mid, Option<TrackId>)>,
    /// What it shows (`view`).
    pinned: Vec<TrackId>,
    quality: Vec<TrackQuality>,
    /// Its estimated downlink (bit/s): transport-wide congestion control, else REMB; for
    /// a receive-only participant (no TWCC), the losses its receiver reports tell
    /// ([`Shard::on_egress_loss`]), `None` while it has lost nothing to speak of.
    estimate: Option<u64>,
    estimate_is_twcc: bool,
    /// No layer goes up before this instant (set when one fell for lack of bandwidth).
    upgrade_hold: Option<Instant>,
    /// The minimum and desired bitrates last given to its bandwidth estimator.
    bwe_bitrates: (u64, u64),
    /// What the last choice sends it (bit/s), and what it would receive with bandwidth
    /// to spare: where a loss-based estimate starts, and where it stops climbing.
    chosen_bps: u64,
    ideal_bps: u64,
    /// What the lowest layers of everything it is shown take: a loss-based estimate does
    /// not fall below it (a viewer keeps the screen, at its lowest, rather than nothing).
    lowest_bps: u64,
    /// The stats round being read (str0m reports every m-line at one instant) and the
    /// most any of its m-lines lost: a round decides when the next one begins.
    loss_round: Option<(Instant, f32)>,
    /// After a fall, the rounds until then are not read: their reports still count what
    /// was lost before it.
    loss_hold: Option<Instant>,
    /// What was sent when losses last made its estimate fall, and until when the estimate
    /// stays below that; the wait doubles while falls recur.
    loss_ceiling: Option<(u64, Instant)>,
    loss_backoff: Duration,
}

impl Participant {
    fn subscription_on(&self, mid: Mid) -> Option<(usize, &Subscription)> {
        self.subscriptions
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.as_ref().filter(|s| s.mid == mid).map(|s| (i, s)))
    }

    /// Ends the subscription on `mid`, keeping its forwarder for the m-line's next track.
    fn retire_subscription(&mut self, mid: Mid) {
        let Some((i, _)) = self.subscription_on(mid) else {
            return;
        };
        let Some(s) = self.subscriptions[i].take() else {
            return;
        };
        while self.subscriptions.last().is_some_and(Option::is_none) {
            self.subscriptions.pop();
        }
        self.idle_forwarders.retain(|(m, _)| *m != mid);
        let idle = IdleStream {
            forwarder: s.forwarder,
            vp8: s.vp8,
            frames: s.frames,
        };
        self.idle_forwarders.push((mid, idle));
    }

    /// Adds a subscription in a free slot; returns the slot.
    fn add_subscription(&mut self, s: Subscription) -> usize {
        match self.subscriptions.iter().position(Option::is_none) {
            Some(i) => {
                self.subscriptions[i] = Some(s);
                i
            }
            None => {
                self.subscriptions.push(Some(s));
                self.subscriptions.len() - 1
            }
        }
    }
}

/// A track this participant publishes, on one of its m-lines.
#[derive(Debug, Clone, Copy)]
struct Publication {
    mid: Mid,
    track_id: TrackId,
}

/// What an m-line's stream was at when its track went: continued by its next track.
struct IdleStream {
    forwarder: Forwarder,
    vp8: Vp8Continuity,
    frames: FrameNumbers,
}

/// A track this participant receives, on one of its m-lines.
struct Subscription {
    mid: Mid,
    track_id: TrackId,
    forwarder: Forwarder,
    /// The publisher's payload type to ours, filled as packets arrive.
    pts: Vec<(Pt, Pt)>,
    /// Its send stream's retransmission cache is sized (on the first packet forwarded).
    rtx_sized: bool,
    /// The layer forwarded now (`None`: nothing flows), and the one chosen for it, which
    /// it switches to at that layer's next keyframe.
    current: Option<u8>,
    target: Option<u8>,
    /// VP8 picture ids and TL0PICIDX, continued across layers like sequence numbers.
    vp8: Vp8Continuity,
    /// Dependency descriptor frame numbers, likewise.
    frames: FrameNumbers,
}

/// Whether a participant's downlink is estimated by TWCC, with str0m's pacer: for those
/// who may publish, the members of a conference. Receive-only participants (a
/// broadcast's audience) are not: the pacer's cost per packet would cap a 500-viewer
/// fan-out at a third of its rate on this hardware (`bench broadcast`). Their estimate
/// comes from the losses their receiver reports, read once a second, which costs nothing
/// per packet ([`Shard::on_egress_loss`]): a viewer on a weak network gets a lower layer.
fn estimates(grants: &Grants) -> bool {
    grants.publish_audio || grants.publish_video || grants.publish_screen
}

/// How fast a participant without a str0m pacer is sent to: this many times what it
/// should receive (its loss-based estimate, else everything it is shown at the best
/// layer), so that a burst of retransmissions goes out over a few frame intervals, not
/// at once. (libwebrtc paces at 2.5 times its estimate too.)
const PACE_FACTOR: f64 = 2.5;

/// What a participant is paced at, however little it is shown (its first keyframe is
/// not held back before its layers are known).
const PACE_MIN_BPS: u64 = 1_000_000;

/// The rate its pacer lets a participant's video through, from its estimate and what
/// it should get (`Participant::{estimate, ideal_bps, chosen_bps}`).
fn pace_rate(estimate: Option<u64>, ideal_bps: u64, chosen_bps: u64) -> u64 {
    let should_get = estimate.unwrap_or(ideal_bps).max(chosen_bps);
    (should_get.max(PACE_MIN_BPS) as f64 * PACE_FACTOR) as u64
}

/// Counts a datagram and queues it for the driver to send.
fn emit(counters: &mut Counters, outputs: &mut VecDeque<ShardOutput>, t: Transmit) {
    if t.proto == Protocol::Udp {
        counters.tx_packets += 1;
        counters.tx_bytes += t.contents.len() as u64;
    } else {
        counters.tcp_tx_packets += 1;
        counters.tcp_tx_bytes += t.contents.len() as u64;
    }
    outputs.push_back(ShardOutput::Transmit(t));
}

/// A subscriber whose oldest unsent packet waited this long in its pacer (a keyframe
/// burst at a low estimate takes a good part of it) gets nothing
/// more until a keyframe after its queue drained.
const MAX_PACER_DELAY: Duration = Duration::from_secs(1);

/// Where a subscriber's bandwidth estimate starts: enough for a 2.5 Mbit/s screen share
/// or a speaker and a dozen thumbnails. It grows as the estimator probes, and falls at
/// the first losses. (str0m paces each subscriber at 1.1 times its estimate.)
const INITIAL_ESTIMATE_BPS: u64 = 3_000_000;

/// How long forwarded packets are kept for retransmission on NACK: later than this a
/// resent packet arrives too late to be played. str0m keeps 3 s (1024 packets) by default,
/// about 1 MiB per subscriber of a 2.5 Mbit/s stream.
const RTX_MAX_AGE: Duration = Duration::from_secs(1);
const RTX_MAX_PACKETS: usize = 512;

/// A published track and who receives it.
struct Track {
    info: TrackInfo,
    room: String,
    /// The publisher's m-line.
    mid: Mid,
    /// Subscribers and their subscription's slot.
    subscribers: Vec<(ParticipantId, usize)>,
    /// One per simulcast layer, lowest first; one for a single stream; one per spatial
    /// layer of an SVC stream.
    layers: Vec<Layer>,
    /// One stream of spatial layers (SVC), learnt from its packets: a subscriber receives
    /// the layers up to the one chosen for it, and they cannot be paused one by one.
    svc: bool,
    /// Audio: how loud it has been lately.
    speech: Speech,
    /// The publisher's place in the room's speaking order (0: spoke last), and whether it
    /// is the dominant speaker; refreshed every tick.
    rank: usize,
    dominant: bool,
    /// The layers last announced to the publisher as received (`layers`), a bit each.
    announced: Option<u8>,
}

/// One simulcast layer (or the single stream) of a track.
#[derive(Debug, Clone)]
struct Layer {
    rid: Option<Rid>,
    rate: RateMeter,
    last_packet: Option<Instant>,
    /// The publisher was told nobody receives it.
    paused: bool,
    /// Since when it is expected (published, or resumed): it may take a moment to start.
    expected_since: Instant,
    /// Someone waits for its keyframe: ask the publisher, throttled, until it comes.
    waiting: bool,
    last_request: Option<Instant>,
    /// When a subscriber last received it or switched to it.
    needed_at: Option<Instant>,
    /// Expected but silent since then (the publisher stopped sending it on its own, for
    /// lack of uplink or CPU): not chosen again for a while even when paused.
    stalled_at: Option<Instant>,
    /// The dependency descriptor structure its stream last sent (the first layer's, for
    /// an SVC stream).
    dd: Option<DdStructure>,
}

/// Default bitrates of simulcast layers not measured yet, lowest first, and of a single
/// video stream.
const NOMINAL_LAYER_BPS: [u64; MAX_LAYERS] = [150_000, 500_000, 1_500_000];
const NOMINAL_VIDEO_BPS: u64 = 1_000_000;
const NOMINAL_AUDIO_BPS: u64 = 40_000;

/// A layer that sent nothing for this long is not chosen (unless paused by us).
const LAYER_SILENCE: Duration = Duration::from_millis(1500);

/// After a subscriber's layer went down for lack of bandwidth, nothing goes up for this
/// long. (Doubling it while falls recur kept receivers off the top layer for minutes
/// after the estimate's start-up swings, in Chromium.)
const UPGRADE_HOLD: Duration = Duration::from_secs(8);

/// How often a receive-only participant's losses are read, from its receiver reports:
/// the estimate of those without TWCC, which costs nothing per packet.
const LOSS_INTERVAL: Duration = Duration::from_secs(1);

/// Above this fraction lost, a loss-based estimate falls to what was sent times
/// (1 - loss / 2); below the next, it climbs by an eighth a second (GCC's loss-based
/// controller, draft-ietf-rmcat-gcc section 6). Between, it holds.
const LOSS_HIGH: f32 = 0.10;
const LOSS_LOW: f32 = 0.02;

/// After losses made a loss-based estimate fall, it climbs back to no more than 0.9 of
/// what was sent then for this long, doubled each time it falls again within twice the
/// wait, up to the maximum: one retry of a layer the network cannot carry, not one every
/// few seconds.
const LOSS_BACKOFF_MIN: Duration = Duration::from_secs(10);
const LOSS_BACKOFF_MAX: Duration = Duration::from_secs(80);

/// A loss-based estimate never falls below this (the lowest layer of a screen share).
const MIN_LOSS_ESTIMATE_BPS: u64 = 100_000;

/// A layer nobody receives is paused only after this long.
const PAUSE_AFTER: Duration = Duration::from_secs(3);

/// A layer that stalled is tried again (resumed if someone wants it) after this long.
const STALLED_RETRY: Duration = Duration::from_secs(10);

impl Track {
    /// The layer whose keyframe a subscriber of `layer` waits for: an SVC stream's
    /// keyframes start in its first layer (and one request serves them all).
    fn keyframe_layer(&self, layer: u8) -> u8 {
        if self.svc { 0 } else { layer }
    }

    /// Learns an SVC stream's layers from one of its packets: a single stream (no rids)
    /// that shows a spatial layer above the first is SVC, with that many layers (at most
    /// [`MAX_LAYERS`]).
    fn learn_layers(&mut self, info: &LayerInfo, now: Instant) {
        if (self.layers.len() > 1 && !self.svc) || self.layers[0].rid.is_some() {
            return;
        }
        let described = self.layers[0]
            .dd
            .as_ref()
            .map_or(1, DdStructure::spatial_layers);
        let count = usize::from(described.max(info.spatial + 1)).min(MAX_LAYERS);
        if count > self.layers.len() {
            self.svc = true;
            while self.layers.len() < count {
                self.layers.push(Layer::new(None, now));
            }
            debug!(track = %self.info.track_id, layers = count, "SVC stream");
        }
    }
}

impl Layer {
    fn new(rid: Option<Rid>, now: Instant) -> Self {
        Layer {
            rid,
            rate: RateMeter::default(),
            last_packet: None,
            paused: false,
            expected_since: now,
            waiting: false,
            last_request: None,
            stalled_at: None,
            needed_at: None,
            dd: None,
        }
    }

    /// Whether a subscriber may be given this layer: it arrives, or will once asked.
    fn usable(&self, now: Instant) -> bool {
        let recent = |t: Instant| now.saturating_duration_since(t) < LAYER_SILENCE;
        let resumable = self
            .stalled_at
            .is_none_or(|at| now.saturating_duration_since(at) >= STALLED_RETRY);
        (self.paused && resumable)
            || self.last_packet.is_some_and(recent)
            || recent(self.expected_since)
    }
}

/// The speaking order and speakers are refreshed this often.
const TICK: Duration = Duration::from_millis(selection::SPEECH_WINDOW_MS);

/// `active_speakers` goes out at most this often.
const SPEAKERS_INTERVAL: Duration = Duration::from_millis(300);

/// A call: who is in it and what they publish.
#[derive(Default)]
struct Room {
    members: Vec<ParticipantId>,
    tracks: Vec<TrackId>,
    /// Members, who spoke most recently first; those who never spoke in joining order.
    recent: Vec<ParticipantId>,
    dominant: Option<ParticipantId>,
    /// The last `active_speakers` sent, and when.
    speakers: Vec<ParticipantId>,
    speakers_sent: Option<Instant>,
}

impl Room {
    /// Whether the room is large (above `loudest_threshold`: only the loudest microphones
    /// are forwarded, other cameras as thumbnails), and `id`'s place in the speaking order.
    fn standing(&self, id: ParticipantId, loudest_threshold: usize) -> (bool, usize) {
        let large = self.members.len() > loudest_threshold;
        let rank = self
            .recent
            .iter()
            .position(|m| *m == id)
            .unwrap_or(usize::MAX);
        (large, rank)
    }
}

/// What a subscriber (`large` room, its own place `my_rank` in the speaking order)
/// receives of the track `t`, `pinned` or not: for a microphone, `Some(0)` if it hears
/// it (every one in a small room; in a large one the loudest `loudest_n` and the pinned);
/// for a video, its importance, most important first (screens, pinned, the dominant
/// speaker's camera, then the cameras of the last `last_n` to speak, in speaking order).
/// `None`: not received. The one rule both `fill_slots` and `choose_for` follow.
fn shown(
    t: &Track,
    pinned: bool,
    (large, my_rank): (bool, usize),
    config: &ShardConfig,
) -> Option<u32> {
    // The publisher's place among the others (this subscriber left out).
    let rank = if t.rank > my_rank { t.rank - 1 } else { t.rank };
    if t.info.kind == Kind::Audio {
        (!large || pinned || rank < config.loudest_n).then_some(0)
    } else if t.info.source == Source::Screen {
        Some(0)
    } else if pinned {
        Some(1)
    } else if t.dominant {
        Some(2)
    } else if rank < config.last_n {
        u32::try_from(rank).ok().map(|r| r.saturating_add(3))
    } else {
        None
    }
}

/// The media core of one shard. See the module docs for the run loop.
pub struct Shard {
    config: ShardConfig,
    /// The latest time seen in any input.
    now: Instant,
    participants: HashMap<ParticipantId, Participant>,
    rooms: HashMap<String, Room>,
    tracks: HashMap<TrackId, Track>,
    by_ufrag: HashMap<String, ParticipantId>,
    by_remote: HashMap<Remote, ParticipantId>,
    /// Participants whose `Rtc` has output to drain, in order.
    dirty: VecDeque<ParticipantId>,
    /// Signals and closes waiting to be polled.
    outputs: VecDeque<ShardOutput>,
    /// When the next tick (speakers, layer choice, keyframe retries) is due.
    next_tick: Instant,
    ticks: u64,
    /// Each participant's `Rtc` deadline, earliest first. An entry whose time is no longer
    /// its participant's `rtc_timeout` is stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
    next_track: u64,
    pub counters: Counters,
}

impl Shard {
    pub fn new(config: ShardConfig, now: Instant) -> Self {
        Shard {
            config,
            now,
            participants: HashMap::new(),
            rooms: HashMap::new(),
            tracks: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_remote: HashMap::new(),
            dirty: VecDeque::new(),
            outputs: VecDeque::new(),
            next_tick: now + TICK,
            ticks: 0,
            timers: BinaryHeap::new(),
            next_track: 1,
            counters: Counters::default(),
        }
    }

    /// Admits a participant, offering it those of `available` its transport and grants
    /// call for: a `relay` join only UDP ones (what a TURN relay reaches), a `force_tcp`
    /// one only ICE-TCP ones (so it never waits on UDP), any other all of them.
    pub fn join(
        &mut self,
        now: Instant,
        id: ParticipantId,
        mut join: Join,
        available: &LocalCandidates,
    ) {
        self.advance(now);
        // (Signaling applies it already; a viewer never publishes, whoever calls.)
        join.grants = join.grants.effective();
        let (udp, tcp) = match (join.transport, join.grants.force_tcp) {
            (Transport::Relay, _) => (true, false),
            (Transport::Auto, true) => (false, true),
            (Transport::Auto, false) => (true, true),
        };
        let candidates = LocalCandidates {
            udp: if udp {
                available.udp.clone()
            } else {
                Vec::new()
            },
            tcp: if tcp {
                available.tcp.clone()
            } else {
                Vec::new()
            },
        };
        let viewer = join.grants.is_viewer();
        let (viewers, others) = self.rooms.get(&join.room).map_or((0, 0), |r| {
            let viewers = r
                .members
                .iter()
                .filter(|m| {
                    self.participants
                        .get(m)
                        .is_some_and(|p| p.grants.is_viewer())
                })
                .count();
            (viewers, r.members.len() - viewers)
        });
        let (count, capacity, what) = if viewer {
            (viewers, self.config.viewer_capacity, "viewers")
        } else {
            (others, self.config.room_capacity, "participants")
        };
        if count >= capacity {
            info!(participant = %id, room = %join.room, what, "room full");
            let error = ErrorMessage::new(
                ErrorCode::RoomFull,
                format!("room has its {capacity} {what}"),
            );
            self.signal(id, ServerMessage::Error(error.answering(RequestType::Join)));
            self.outputs.push_back(ShardOutput::Closed(id));
            return;
        }
        let udp_port = candidates.udp.first().map(SocketAddr::port);
        let tcp_port = candidates.tcp.first().map(SocketAddr::port);
        if udp_port.is_none() && tcp_port.is_none() {
            let message = if join.grants.force_tcp && available.tcp.is_empty() {
                "TCP is forced for this client and ICE-TCP is off here: join with transport \"relay\""
            } else {
                "no media address for this transport"
            };
            warn!(participant = %id, "join refused: {message}");
            self.signal(
                id,
                ServerMessage::Error(
                    ErrorMessage::new(ErrorCode::Internal, message).answering(RequestType::Join),
                ),
            );
            self.outputs.push_back(ShardOutput::Closed(id));
            return;
        }
        let ufrag = format!("{:04x}{:016x}", self.config.index, rand::random::<u64>());
        let creds = IceCreds {
            ufrag: ufrag.clone(),
            pass: format!("{:032x}", rand::random::<u128>()),
        };
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(creds)
            .enable_bwe(estimates(&join.grants).then(|| Bitrate::bps(INITIAL_ESTIMATE_BPS)))
            .set_stats_interval((!estimates(&join.grants)).then_some(LOSS_INTERVAL))
            .set_extension(
                DD_EXTENSION_ID,
                Extension::with_serializer(DD_URI, DdExtension),
            )
            .build(now);
        for addr in &candidates.udp {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => warn!(%addr, "bad candidate address: {e}"),
            }
        }
        // Passive: the client connects. Host TCP candidates rank below host UDP ones
        // (type preference 90 against 126), so UDP wins wherever it works.
        for addr in &candidates.tcp {
            let candidate = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build();
            match candidate {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => warn!(%addr, "bad TCP candidate address: {e}"),
            }
        }
        let info = ParticipantInfo {
            participant_id: id,
            identity: join.identity,
            name: join.name,
            role: join.grants.role,
        };
        let room = self.rooms.entry(join.room.clone()).or_default();
        if room.members.is_empty() {
            self.counters.calls_started += 1;
            info!(room = %join.room, "call started");
        }
        let others: Vec<ParticipantId> = room.members.clone();
        room.members.push(id);
        room.recent.push(id);
        let tracks = room
            .tracks
            .iter()
            .filter_map(|t| self.tracks.get(t).map(|t| t.info.clone()))
            .collect();
        // A viewer learns of the presenters and participants, not of the rest of the
        // audience (hundreds of entries, and of no use to it), unless it asked.
        let hears_audience = !viewer || join.audience;
        let participants = others
            .iter()
            .filter_map(|p| self.participants.get(p))
            .filter(|p| hears_audience || !p.grants.is_viewer())
            .map(|p| p.info.clone())
            .collect();
        info!(participant = %id, identity = %info.identity, room = %join.room, "joined");
        self.signal(
            id,
            ServerMessage::Joined {
                participant_id: id,
                room: join.room.clone(),
                identity: info.identity.clone(),
                name: info.name.clone(),
                grants: join.grants,
                participants,
                tracks,
                ice_servers: join.ice_servers,
            },
        );
        for other in others {
            // A viewer is announced to presenters and participants, and to the viewers
            // that asked.
            if viewer
                && self
                    .participants
                    .get(&other)
                    .is_some_and(|p| !p.hears_audience)
            {
                continue;
            }
            self.signal(other, ServerMessage::ParticipantJoined(info.clone()));
        }
        self.by_ufrag.insert(ufrag.clone(), id);
        self.participants.insert(
            id,
            Participant {
                info,
                room: join.room,
                grants: join.grants,
                hears_audience,
                rtc,
                ufrag,
                udp_port,
                tcp_port,
                remotes: Vec::new(),
                media_deadline: None,
                rtc_timeout: None,
                dirty: false,
                pacer: (!estimates(&join.grants)).then(|| Pacer::new(now)),
                pace_at: None,
                publications: Vec::new(),
                subscriptions: Vec::new(),
                ssrc_tracks: Vec::new(),
                idle_forwarders: Vec::new(),
                dtls_failure_logged: false,
                slot_mids: Vec::new(),
                slots_sent: Vec::new(),
                pinned: Vec::new(),
                quality: Vec::new(),
                estimate: None,
                estimate_is_twcc: false,
                bwe_bitrates: (0, 0),
                upgrade_hold: None,
                chosen_bps: 0,
                ideal_bps: 0,
                lowest_bps: 0,
                loss_round: None,
                loss_hold: None,
                loss_ceiling: None,
                loss_backoff: LOSS_BACKOFF_MIN,
            },
        );
        self.mark_dirty(id);
    }

    /// Handles a joined participant's request.
    pub fn request(&mut self, now: Instant, id: ParticipantId, request: Request) {
        self.advance(now);
        if !self.participants.contains_key(&id) {
            return; // Left already; the session is closing.
        }
        match request {
            Request::Offer {
                sdp,
                publish,
                subscribe,
                slots,
            } => self.offer(now, id, &sdp, publish, subscribe, slots),
            Request::Mute { track_id, muted } => self.mute(id, track_id, muted),
            Request::View { pinned, quality } => {
                if let Some(p) = self.participants.get_mut(&id) {
                    // Sorted, for lookups by track per subscription and allocation.
                    p.pinned = pinned;
                    p.pinned.sort_unstable();
                    p.quality = quality;
                    p.quality.sort_by_key(|q| q.track_id);
                }
                self.choose_for(id);
                self.request_awaited_keyframes();
            }
            Request::Subscribe { subscribe } => {
                if self
                    .participants
                    .get(&id)
                    .is_some_and(|p| p.grants.subscribe)
                {
                    self.apply_subscribe(id, &subscribe);
                }
            }
        }
    }

    /// The participant left or its signaling socket closed.
    pub fn leave(&mut self, now: Instant, id: ParticipantId) {
        self.remove(now, id, LeaveReason::Left);
    }

    /// Removes a participant for `reason`: its tracks, its subscriptions, its addresses;
    /// tells the room, and the participant itself unless it left on its own.
    pub fn remove(&mut self, now: Instant, id: ParticipantId, reason: LeaveReason) {
        self.advance(now);
        self.remove_participant(id, reason);
    }

    /// A datagram (UDP) or frame (ICE-TCP, without its RFC 4571 length) arrived at `local`
    /// from `remote`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        proto: Protocol,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) {
        self.advance(now);
        if proto == Protocol::Udp {
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += data.len() as u64;
        } else {
            self.counters.tcp_rx_packets += 1;
            self.counters.tcp_rx_bytes += data.len() as u64;
        }
        let id = match self.by_remote.get(&(proto, local, remote)) {
            Some(id) => *id,
            None => match self.claim_remote(proto, local, remote, data) {
                Some(id) => id,
                None => {
                    self.counters.drop(DropReason::UnknownSource);
                    return;
                }
            },
        };
        let Ok(receive) = Receive::new(proto, remote, local, data) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        if let Err(e) = p.rtc.handle_input(Input::Receive(now, receive)) {
            // Matched, not formatted: a flood of refused datagrams allocates nothing.
            if matches!(e, RtcError::Dtls(_)) && !p.dtls_failure_logged {
                // Once per participant: a client whose certificate the DTLS stack cannot
                // take fails every handshake datagram the same way.
                p.dtls_failure_logged = true;
                info!(participant = %id, "DTLS handshake refused: {e} (only ECDSA certificates are taken, as browsers make; GStreamer's webrtcbin makes RSA ones)");
            }
            debug!(participant = %id, "input refused: {e}");
            self.counters.drop(DropReason::Refused);
        }
        if p.media_deadline.is_some() {
            p.media_deadline = Some(now + self.config.participant_timeout);
        }
        // str0m keeps one received RTP packet until the next poll: drain before the next
        // datagram, or it is lost.
        self.drain_rtc(id);
    }

    /// Time passed; call at (or after) the last polled `Timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            if p.pace_at == Some(at) {
                p.pace_at = None;
                self.release_paced(id);
            }
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            if p.rtc_timeout != Some(at) {
                continue; // Stale: its deadline moved since (or a pacer's).
            }
            p.rtc_timeout = None;
            if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                debug!(participant = %id, "timeout refused: {e}");
            }
            self.mark_dirty(id);
        }
        if now >= self.next_tick {
            self.next_tick = (self.next_tick + TICK).max(now);
            let expired: Vec<ParticipantId> = self
                .participants
                .iter()
                .filter(|(_, p)| p.media_deadline.is_some_and(|d| d <= now))
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                info!(participant = %id, "no media for {:?}", self.config.participant_timeout);
                self.remove_participant(id, LeaveReason::Timeout);
            }
            self.tick();
        }
    }

    /// The next thing to do. Call until it returns `Timeout`.
    pub fn poll_output(&mut self) -> ShardOutput {
        loop {
            if let Some(out) = self.outputs.pop_front() {
                return out;
            }
            let Some(id) = self.dirty.pop_front() else {
                return ShardOutput::Timeout(self.next_deadline());
            };
            if self.participants.get(&id).is_some_and(|p| p.dirty) {
                self.drain_rtc(id);
            }
        }
    }

    /// Polls one participant's `Rtc` until its timeout: transmits are queued, events
    /// handled (forwarding marks subscribers dirty).
    fn drain_rtc(&mut self, id: ParticipantId) {
        loop {
            let Some(p) = self.participants.get_mut(&id) else {
                return;
            };
            if !p.rtc.is_alive() {
                info!(participant = %id, "WebRTC session ended");
                self.remove_participant(id, LeaveReason::Timeout);
                return;
            }
            match p.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let Some(pacer) = p.pacer.as_mut() else {
                        emit(&mut self.counters, &mut self.outputs, t);
                        continue;
                    };
                    let rate = pace_rate(p.estimate, p.ideal_bps, p.chosen_bps);
                    let (counters, outputs) = (&mut self.counters, &mut self.outputs);
                    if !pacer.offer(self.now, rate, t, |t| emit(counters, outputs, t)) {
                        self.counters.drop(DropReason::PacerBacklog);
                    }
                    if p.pace_at.is_none() {
                        p.pace_at = pacer.next_release(self.now, rate);
                        if let Some(at) = p.pace_at {
                            self.timers.push(Reverse((at, id)));
                        }
                    }
                }
                Ok(Output::Timeout(at)) => {
                    p.dirty = false;
                    if p.rtc_timeout != Some(at) {
                        p.rtc_timeout = Some(at);
                        self.timers.push(Reverse((at, id)));
                        if self.timers.len() > 8 * self.participants.len() + 1024 {
                            self.rebuild_timers();
                        }
                    }
                    return;
                }
                Ok(Output::Event(event)) => self.on_event(id, event),
                Err(e) => {
                    warn!(participant = %id, "WebRTC error: {e}");
                    self.remove_participant(id, LeaveReason::Error);
                    return;
                }
            }
        }
    }

    /// Who a remote address is mapped to: after a STUN request over a new ICE-TCP
    /// connection, whether the shard took the connection.
    pub fn owner_of(
        &self,
        proto: Protocol,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<ParticipantId> {
        self.by_remote.get(&(proto, local, remote)).copied()
    }

    /// The remote address is gone (its ICE-TCP connection closed): unmap it, freeing one
    /// of its participant's `MAX_REMOTES`.
    pub fn forget_remote(&mut self, proto: Protocol, local: SocketAddr, remote: SocketAddr) {
        let key = (proto, local, remote);
        if let Some(id) = self.by_remote.remove(&key)
            && let Some(p) = self.participants.get_mut(&id)
        {
            p.remotes.retain(|r| *r != key);
        }
    }

    /// Rooms, participants and published tracks held now.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.rooms.len(), self.participants.len(), self.tracks.len())
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn mark_dirty(&mut self, id: ParticipantId) {
        if let Some(p) = self.participants.get_mut(&id)
            && !p.dirty
        {
            p.dirty = true;
            self.dirty.push_back(id);
        }
    }

    fn signal(&mut self, id: ParticipantId, message: ServerMessage) {
        self.outputs.push_back(ShardOutput::Signal(id, message));
    }

    /// Answers a client's `request` with an error.
    fn error(
        &mut self,
        id: ParticipantId,
        request: RequestType,
        code: ErrorCode,
        message: impl Into<String>,
    ) {
        let error = ErrorMessage::new(code, message).answering(request);
        self.signal(id, ServerMessage::Error(error));
    }

    /// Signals every member of `room` but `except`.
    fn broadcast(&mut self, room: &str, except: ParticipantId, message: &ServerMessage) {
        self.broadcast_to(room, except, message, true);
    }

    /// [`Shard::broadcast`], leaving out the viewers that did not ask to hear of the
    /// audience unless `viewers`.
    fn broadcast_to(
        &mut self,
        room: &str,
        except: ParticipantId,
        message: &ServerMessage,
        viewers: bool,
    ) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        for member in &room.members {
            let skip = !viewers
                && self
                    .participants
                    .get(member)
                    .is_some_and(|p| !p.hears_audience);
            if *member != except && !skip {
                self.outputs
                    .push_back(ShardOutput::Signal(*member, message.clone()));
            }
        }
    }

    /// A datagram from an unmapped address: a STUN binding request naming one of our
    /// participants (by its ufrag, on a port and transport it was offered) maps the
    /// address to it.
    fn claim_remote(
        &mut self,
        proto: Protocol,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> Option<ParticipantId> {
        let stun = StunMessage::parse(data).ok()?;
        if !stun.is_binding_request() {
            return None;
        }
        let (ours, _theirs) = stun.split_username()?;
        let id = *self.by_ufrag.get(ours)?;
        let p = self.participants.get_mut(&id)?;
        let port = match proto {
            Protocol::Udp => p.udp_port,
            _ => p.tcp_port,
        };
        if port != Some(local.port()) || p.remotes.len() >= MAX_REMOTES {
            return None;
        }
        let receive = Receive::new(proto, remote, local, data).ok()?;
        if !p.rtc.accepts(&Input::Receive(self.now, receive)) {
            return None;
        }
        debug!(participant = %id, %remote, ?proto, "remote address mapped");
        p.remotes.push((proto, local, remote));
        self.by_remote.insert((proto, local, remote), id);
        Some(id)
    }

    fn offer(
        &mut self,
        now: Instant,
        id: ParticipantId,
        sdp: &str,
        publish: Vec<Publish>,
        subscribe: Vec<Subscribe>,
        slots: Vec<String>,
    ) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        // Refuse what is not granted before applying anything.
        if !p.grants.subscribe && (!subscribe.is_empty() || !slots.is_empty()) {
            self.error(
                id,
                RequestType::Offer,
                ErrorCode::Forbidden,
                "token does not grant subscribe",
            );
            return;
        }
        if !slots.is_empty() && !subscribe.is_empty() {
            self.error(
                id,
                RequestType::Offer,
                ErrorCode::BadRequest,
                "an offer lists subscribe or slots, not both",
            );
            return;
        }
        if slots.len() > MAX_SLOTS {
            let message = format!("at most {MAX_SLOTS} slots");
            self.error(id, RequestType::Offer, ErrorCode::BadRequest, message);
            return;
        }
        if let Some(denied) = publish.iter().find(|x| !x.source.is_granted(&p.grants)) {
            let message = format!("token does not grant {}", denied.source.grant_name());
            self.error(id, RequestType::Offer, ErrorCode::Forbidden, message);
            return;
        }
        let mut mids: Vec<&str> = publish
            .iter()
            .map(|x| x.mid.as_str())
            .chain(subscribe.iter().map(|x| x.mid.as_str()))
            .chain(slots.iter().map(String::as_str))
            .collect();
        mids.sort_unstable();
        if mids.windows(2).any(|w| w[0] == w[1]) {
            self.error(
                id,
                RequestType::Offer,
                ErrorCode::BadRequest,
                "a mid is listed twice",
            );
            return;
        }
        let offer = match SdpOffer::from_sdp_string(sdp) {
            Ok(offer) => offer,
            Err(e) => {
                self.error(
                    id,
                    RequestType::Offer,
                    ErrorCode::BadSdp,
                    format!("cannot parse offer: {e}"),
                );
                return;
            }
        };
        if let Err(message) = check_publish_kinds(&offer, sdp, &publish) {
            self.error(id, RequestType::Offer, ErrorCode::BadRequest, message);
            return;
        }
        let slot_mids = match slot_kinds(&offer, sdp, &slots) {
            Ok(s) => s,
            Err(message) => {
                self.error(id, RequestType::Offer, ErrorCode::BadRequest, message);
                return;
            }
        };
        let answer = match p.rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => answer,
            Err(e) => {
                self.error(
                    id,
                    RequestType::Offer,
                    ErrorCode::BadSdp,
                    format!("cannot accept offer: {e}"),
                );
                return;
            }
        };
        if p.media_deadline.is_none() {
            p.media_deadline = Some(now + self.config.participant_timeout);
        }
        let published = self.apply_publish(id, &publish);
        if let Some(p) = self.participants.get_mut(&id) {
            p.slot_mids = slot_mids;
            if p.slot_mids.is_empty() {
                p.slots_sent.clear();
            }
        }
        self.signal(
            id,
            ServerMessage::Answer {
                sdp: follow_offer_codec_order(sdp, &answer.to_sdp_string()),
                published,
            },
        );
        if slots.is_empty() {
            self.apply_subscribe(id, &subscribe);
        } else {
            // The slots are filled as the choice of what it receives is made.
            self.choose_for(id);
            self.request_awaited_keyframes();
        }
        self.mark_dirty(id);
    }

    /// Brings the participant's publications in line with `publish`, announcing changes.
    fn apply_publish(&mut self, id: ParticipantId, publish: &[Publish]) -> Vec<Published> {
        let Some(p) = self.participants.get_mut(&id) else {
            return Vec::new();
        };
        let mut keep = Vec::new();
        let mut added = Vec::new();
        let mut refused = Vec::new();
        for x in publish {
            let mid = Mid::from(x.mid.as_str());
            let kind_ok = p.rtc.media(mid).is_some_and(|m| {
                let kind = match m.kind() {
                    MediaKind::Audio => Kind::Audio,
                    MediaKind::Video => Kind::Video,
                };
                kind == x.source.kind() && m.direction().is_receiving()
            });
            if !kind_ok {
                refused.push(x.mid.clone());
                continue;
            }
            let existing = p.publications.iter().find(|pb| pb.mid == mid).copied();
            match existing.and_then(|pb| self.tracks.get(&pb.track_id).map(|t| (pb, t))) {
                Some((pb, t)) if t.info.source == x.source && t.info.layers == x.layers => {
                    keep.push(pb)
                }
                _ => added.push((mid, x.source, x.layers.clone())),
            }
        }
        let removed: Vec<TrackId> = p
            .publications
            .iter()
            .filter(|pb| !keep.iter().any(|k| k.track_id == pb.track_id))
            .map(|pb| pb.track_id)
            .collect();
        p.publications = keep;
        for track_id in removed {
            self.unpublish(track_id);
        }
        for (mid, source, layers) in added {
            self.publish(id, mid, source, layers);
        }
        if !refused.is_empty() {
            // check_publish_kinds refused such offers before they were applied.
            warn!(participant = %id, "published mids {refused:?} do not match their m-lines");
        }
        self.participants
            .get(&id)
            .map(|p| {
                p.publications
                    .iter()
                    .map(|pb| Published {
                        mid: pb.mid.to_string(),
                        track_id: pb.track_id,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn publish(&mut self, id: ParticipantId, mid: Mid, source: Source, layers: Vec<String>) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let track_id = TrackId(self.next_track * self.config.count + self.config.index);
        self.next_track += 1;
        p.publications.push(Publication { mid, track_id });
        p.ssrc_tracks.clear();
        let info = TrackInfo {
            track_id,
            participant_id: id,
            kind: source.kind(),
            source,
            muted: false,
            layers,
        };
        let room = p.room.clone();
        info!(participant = %id, track = %track_id, ?source, layers = ?info.layers, "track published");
        let now = self.now;
        let layers = if info.layers.is_empty() {
            vec![Layer::new(None, now)]
        } else {
            info.layers
                .iter()
                .map(|r| Layer::new(Some(Rid::from(r.as_str())), now))
                .collect()
        };
        let rank = self
            .rooms
            .get(&room)
            .and_then(|r| r.recent.iter().position(|m| *m == id))
            .unwrap_or(usize::MAX);
        self.tracks.insert(
            track_id,
            Track {
                info: info.clone(),
                room: room.clone(),
                mid,
                subscribers: Vec::new(),
                layers,
                svc: false,
                speech: Speech::default(),
                rank,
                dominant: false,
                announced: None,
            },
        );
        if let Some(r) = self.rooms.get_mut(&room) {
            r.tracks.push(track_id);
        }
        self.broadcast(&room, id, &ServerMessage::TrackPublished(info));
    }

    /// Removes a track, its subscriptions, and tells the room.
    fn unpublish(&mut self, track_id: TrackId) {
        let Some(track) = self.tracks.remove(&track_id) else {
            return;
        };
        info!(track = %track_id, "track unpublished");
        for (sub, slot) in &track.subscribers {
            if let Some(s) = self.participants.get_mut(sub)
                && let Some(mid) = s
                    .subscriptions
                    .get(*slot)
                    .and_then(|x| x.as_ref())
                    .map(|x| x.mid)
            {
                s.retire_subscription(mid);
            }
        }
        if let Some(owner) = self.participants.get_mut(&track.info.participant_id) {
            owner.publications.retain(|pb| pb.track_id != track_id);
            owner.ssrc_tracks.clear();
        }
        if let Some(r) = self.rooms.get_mut(&track.room) {
            r.tracks.retain(|t| *t != track_id);
        }
        self.broadcast(
            &track.room,
            track.info.participant_id,
            &ServerMessage::TrackUnpublished { track_id },
        );
    }

    /// Brings the participant's subscriptions in line with `subscribe`.
    fn apply_subscribe(&mut self, id: ParticipantId, subscribe: &[Subscribe]) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let mut wanted: Vec<(Mid, TrackId)> = Vec::new();
        if !p.slot_mids.is_empty() {
            return; // The server fills its slots.
        }
        for x in subscribe {
            let mid = Mid::from(x.mid.as_str());
            let Some(track) = self.tracks.get(&x.track_id) else {
                continue; // Unpublished meanwhile; the m-line stays idle.
            };
            let sendable = p.rtc.media(mid).is_some_and(|m| {
                m.direction().is_sending()
                    && matches!(
                        (m.kind(), track.info.kind),
                        (MediaKind::Audio, Kind::Audio) | (MediaKind::Video, Kind::Video)
                    )
            });
            if track.room == p.room && track.info.participant_id != id && sendable {
                wanted.push((mid, x.track_id));
            }
        }
        self.set_subscriptions(id, &wanted);
        // Choose what flows; a subscriber whose transport is up gets keyframes asked for
        // now, one still connecting when it connects (a keyframe sent before is lost).
        self.choose_for(id);
        self.request_awaited_keyframes();
    }

    /// Puts on a slotted participant's slot m-lines the tracks it should receive, by the
    /// order `choose_for` serves them: microphones pinned, then by speaking order (in a
    /// large room only the loudest `loudest_n` and the pinned); videos screens first,
    /// then pinned, the dominant speaker's camera, the cameras of the last `last_n` to
    /// speak. A track keeps its slot while it stays chosen; one newly chosen takes a free
    /// slot. The client hears of changes in a `slots` message.
    fn fill_slots(&mut self, id: ParticipantId) {
        let config = &self.config;
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        if p.slot_mids.is_empty() {
            return;
        }
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let standing = room.standing(id, config.loudest_threshold);
        // (order, track) of the tracks it should receive, per kind: microphones pinned
        // first, then by speaking order.
        let mut audio: Vec<(usize, TrackId)> = Vec::new();
        let mut video: Vec<(usize, TrackId)> = Vec::new();
        for track_id in &room.tracks {
            let Some(t) = self.tracks.get(track_id) else {
                continue;
            };
            if t.info.participant_id == id {
                continue;
            }
            let pinned = p.pinned.binary_search(track_id).is_ok();
            let Some(order) = shown(t, pinned, standing, config) else {
                continue;
            };
            if t.info.kind == Kind::Audio {
                let order = if pinned { 0 } else { t.rank.saturating_add(1) };
                audio.push((order, *track_id));
            } else {
                video.push((order as usize, *track_id));
            }
        }
        audio.sort_unstable();
        video.sort_unstable();
        let count = |kind: Kind| p.slot_mids.iter().filter(|(_, k)| *k == kind).count();
        audio.truncate(count(Kind::Audio));
        video.truncate(count(Kind::Video));
        let chosen = |kind: Kind| -> Vec<TrackId> {
            let list = if kind == Kind::Audio { &audio } else { &video };
            list.iter().map(|(_, t)| *t).collect()
        };
        let (audio, video) = (chosen(Kind::Audio), chosen(Kind::Video));
        // Chosen tracks keep their slots (one each: a track a per-track offer had put on
        // two m-lines keeps the first); the others fill the free ones, in slot order.
        let mut kept: Vec<TrackId> = Vec::new();
        let mut mapping: Vec<(Mid, Option<TrackId>)> = p
            .slot_mids
            .iter()
            .map(|(mid, kind)| {
                let list = if *kind == Kind::Audio { &audio } else { &video };
                let on = p
                    .subscription_on(*mid)
                    .map(|(_, s)| s.track_id)
                    .filter(|t| list.contains(t) && !kept.contains(t));
                kept.extend(on);
                (*mid, on)
            })
            .collect();
        for (kind, list) in [(Kind::Audio, &audio), (Kind::Video, &video)] {
            let placed: Vec<TrackId> = mapping.iter().filter_map(|(_, on)| *on).collect();
            let mut waiting = list.iter().filter(|t| !placed.contains(t));
            for (i, (mid, k)) in p.slot_mids.iter().enumerate() {
                if *k == kind && mapping[i].1.is_none() {
                    match waiting.next() {
                        Some(t) => mapping[i] = (*mid, Some(*t)),
                        None => break,
                    }
                }
            }
        }
        let wanted: Vec<(Mid, TrackId)> = mapping
            .iter()
            .filter_map(|(mid, t)| t.map(|t| (*mid, t)))
            .collect();
        let changed = mapping != p.slots_sent;
        self.set_subscriptions(id, &wanted);
        if changed {
            if let Some(p) = self.participants.get_mut(&id) {
                p.slots_sent = mapping.clone();
            }
            let slots = mapping
                .into_iter()
                .map(|(mid, track_id)| SlotTrack {
                    mid: mid.to_string(),
                    track_id,
                })
                .collect();
            self.signal(id, ServerMessage::Slots { slots });
        }
    }

    /// Makes the participant's subscriptions `wanted` (m-line, track), which must be
    /// m-lines it receives on of the track's kind. One no longer wanted ends, its
    /// forwarder kept for its m-line's next track; a new one goes on with the stream its
    /// m-line carried before.
    fn set_subscriptions(&mut self, id: ParticipantId, wanted: &[(Mid, TrackId)]) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let dropped: Vec<(Mid, TrackId, usize)> = p
            .subscriptions
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
            .filter(|(_, s)| !wanted.contains(&(s.mid, s.track_id)))
            .map(|(i, s)| (s.mid, s.track_id, i))
            .collect();
        for (track_id, slot) in dropped.iter().map(|(_, t, i)| (*t, *i)) {
            if let Some(t) = self.tracks.get_mut(&track_id) {
                t.subscribers.retain(|s| *s != (id, slot));
            }
        }
        for (mid, _, _) in &dropped {
            p.retire_subscription(*mid);
        }
        for &(mid, track_id) in wanted {
            if p.subscription_on(mid).is_none() {
                // An m-line that carried another track before goes on with its stream.
                // Its VP8 picture ids and descriptor frame numbers go on too: a receiver
                // takes pictures numbered behind the last it decoded for old ones, and
                // drops them (for minutes, until the numbers catch up).
                let idle = match p.idle_forwarders.iter().position(|(m, _)| *m == mid) {
                    Some(i) => {
                        let mut idle = p.idle_forwarders.swap_remove(i).1;
                        idle.forwarder.switch_source();
                        idle.frames.switch_source();
                        idle
                    }
                    None => IdleStream {
                        forwarder: Forwarder::new(rand::random::<u16>() & 0x7fff),
                        vp8: Vp8Continuity::default(),
                        frames: FrameNumbers::default(),
                    },
                };
                let slot = p.add_subscription(Subscription {
                    mid,
                    track_id,
                    forwarder: idle.forwarder,
                    pts: Vec::new(),
                    rtx_sized: false,
                    current: None,
                    target: None,
                    vp8: idle.vp8,
                    frames: idle.frames,
                });
                if let Some(t) = self.tracks.get_mut(&track_id) {
                    t.subscribers.push((id, slot));
                }
            }
        }
    }

    fn mute(&mut self, id: ParticipantId, track_id: TrackId, muted: bool) {
        match self.tracks.get_mut(&track_id) {
            Some(t) if t.info.participant_id == id => {
                if t.info.muted != muted {
                    t.info.muted = muted;
                    let room = t.room.clone();
                    self.broadcast(&room, id, &ServerMessage::TrackMuted { track_id, muted });
                }
            }
            _ => self.error(
                id,
                RequestType::Mute,
                ErrorCode::Forbidden,
                format!("{track_id} is not yours"),
            ),
        }
    }

    /// Every `TICK`: who speaks (announced at most every `SPEAKERS_INTERVAL`) and the
    /// speaking order; every other tick the layer rates, each participant's choice of what
    /// it receives and the layers announced to publishers; then awaited keyframes.
    fn tick(&mut self) {
        self.ticks += 1;
        let now = self.now;
        for room in self.rooms.values_mut() {
            let mut scores: Vec<(ParticipantId, f32)> = Vec::new();
            for track_id in &room.tracks {
                let Some(t) = self.tracks.get_mut(track_id) else {
                    continue;
                };
                if t.info.kind != Kind::Audio {
                    continue;
                }
                let score = t.speech.tick();
                let owner = t.info.participant_id;
                match scores.iter_mut().find(|(p, _)| *p == owner) {
                    Some(x) => x.1 = x.1.max(score),
                    None => scores.push((owner, score)),
                }
            }
            room.dominant = selection::dominant(room.dominant, &scores);
            let mut speaking: Vec<(ParticipantId, f32)> = scores
                .into_iter()
                .filter(|(_, s)| selection::is_speaking(*s))
                .collect();
            speaking.sort_by(|a, b| b.1.total_cmp(&a.1));
            let speakers: Vec<ParticipantId> = speaking.iter().map(|(p, _)| *p).collect();
            // Speakers move to the front of the speaking order, loudest first; those
            // already among the first few (who receive-loudest-N picks from) keep their
            // places, so that steady talkers do not trade places every tick.
            let settled = (self.config.loudest_n + 1).min(room.recent.len());
            let moving: Vec<ParticipantId> = speakers
                .iter()
                .copied()
                .filter(|p| !room.recent[..settled].contains(p))
                .collect();
            room.recent.retain(|m| !moving.contains(m));
            room.recent.splice(0..0, moving);
            if speakers != room.speakers
                && room
                    .speakers_sent
                    .is_none_or(|at| now >= at + SPEAKERS_INTERVAL)
            {
                for member in &room.members {
                    self.outputs.push_back(ShardOutput::Signal(
                        *member,
                        ServerMessage::ActiveSpeakers {
                            speakers: speakers.clone(),
                        },
                    ));
                }
                room.speakers = speakers;
                room.speakers_sent = Some(now);
            }
            for track_id in &room.tracks {
                if let Some(t) = self.tracks.get_mut(track_id) {
                    let owner = t.info.participant_id;
                    t.rank = room
                        .recent
                        .iter()
                        .position(|m| *m == owner)
                        .unwrap_or(usize::MAX);
                    t.dominant = room.dominant == Some(owner);
                }
            }
        }
        if self.ticks.is_multiple_of(2) {
            let secs = 2.0 * TICK.as_secs_f64();
            for t in self.tracks.values_mut() {
                for l in &mut t.layers {
                    if !l.paused {
                        l.rate.tick(secs);
                    }
                    let silent = |at: Instant| now.saturating_duration_since(at) >= LAYER_SILENCE;
                    if !l.paused
                        && l.last_packet.is_none_or(silent)
                        && silent(l.expected_since)
                        && l.stalled_at.is_none()
                    {
                        l.stalled_at = Some(now);
                    }
                }
            }
            let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
            for id in ids {
                self.choose_for(id);
            }
            self.announce_layers();
        }
        self.request_awaited_keyframes();
    }

    /// Chooses what flows on each of a participant's subscriptions: which microphones
    /// (all, or the loudest and the pinned in a large room), which cameras and at which
    /// layer (by importance, within its bandwidth estimate). Keyframes are awaited for
    /// the layers it must switch to.
    fn choose_for(&mut self, id: ParticipantId) {
        self.fill_slots(id);
        let config = &self.config;
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let now = self.now;
        let standing = room.standing(id, config.loudest_threshold);
        let mut items: Vec<VideoItem> = Vec::new();
        let mut slots: Vec<usize> = Vec::new();
        let mut audio_bps = 0;
        let mut ideal_bps = 0;
        for (slot, s) in p.subscriptions.iter_mut().enumerate() {
            let Some(s) = s else {
                continue;
            };
            let Some(t) = self.tracks.get(&s.track_id) else {
                continue;
            };
            let pinned = p.pinned.binary_search(&s.track_id).is_ok();
            let order = shown(t, pinned, standing, config);
            if t.info.kind == Kind::Audio {
                s.target = order.map(|_| 0);
                if order.is_some() {
                    audio_bps += t.layers[0].rate.bps().unwrap_or(NOMINAL_AUDIO_BPS);
                }
                continue;
            }
            let top = t.layers.len() as u8 - 1;
            let cap = match p
                .quality
                .binary_search_by_key(&s.track_id, |q| q.track_id)
                .map_or(Quality::High, |i| p.quality[i].quality)
            {
                Quality::Low => 0,
                Quality::Medium => top.min(1),
                Quality::High => top,
            };
            // Screens, pinned and the dominant speaker's camera at the top layer; in a
            // large room the other cameras as thumbnails.
            let (large, _) = standing;
            let wanted = order.map(|o| if o > 2 && large { 0 } else { top });
            let priority = order.unwrap_or(u32::MAX);
            let mut wanted = wanted.map(|w| w.min(cap));
            // Holding after a fall for lack of bandwidth: nothing goes up.
            if p.upgrade_hold.is_some_and(|until| now < until) {
                wanted = wanted.map(|w| w.min(s.current.unwrap_or(0)));
            }
            let mut item = VideoItem {
                priority,
                wanted,
                rates: [0; MAX_LAYERS],
                usable: [false; MAX_LAYERS],
                layers: top + 1,
                current: s.current,
            };
            let mut below = 0;
            for (i, l) in t.layers.iter().enumerate() {
                let rate = l.rate.bps().filter(|b| *b > 0).unwrap_or(if top > 0 {
                    NOMINAL_LAYER_BPS[i]
                } else {
                    NOMINAL_VIDEO_BPS
                });
                // An SVC layer comes with every layer below it.
                item.rates[i] = below + rate;
                if t.svc {
                    below += rate;
                }
                item.usable[i] = top == 0 || l.usable(now);
            }
            if let Some(w) = wanted {
                ideal_bps += item.rates[usize::from(w)];
            }
            items.push(item);
            slots.push(slot);
        }
        let budget = p.estimate.map(|e| e.saturating_sub(audio_bps));
        let targets = selection::allocate(budget, &items);
        // A video that went down (or paused) while still wanted higher fell for lack of
        // bandwidth: hold every upgrade for a while (an estimate that climbs back only to
        // fall again would otherwise switch up and down).
        let fell = items.iter().zip(&targets).any(|(it, t)| {
            it.current
                .is_some_and(|c| t.is_none_or(|t| t < c) && it.wanted.is_some_and(|w| w >= c))
        });
        if fell {
            p.upgrade_hold = Some(now + UPGRADE_HOLD);
            debug!(participant = %id, "layer down for bandwidth: upgrades held");
        }
        let (allocated, step_up) = selection::next_step(&items, &targets);
        p.chosen_bps = audio_bps + allocated;
        p.ideal_bps = audio_bps + ideal_bps;
        p.lowest_bps = audio_bps
            + items
                .iter()
                .filter(|it| it.wanted.is_some())
                .map(|it| it.rates[0])
                .sum::<u64>();
        let connected = p.rtc.is_connected();
        let mut awaited: Vec<(TrackId, u8)> = Vec::new();
        for (slot, target) in slots.into_iter().zip(targets) {
            if let Some(Some(s)) = p.subscriptions.get_mut(slot) {
                s.target = target;
                // (An SVC stream goes down at any picture; only up needs a keyframe.)
                let svc = self.tracks.get(&s.track_id).is_some_and(|t| t.svc);
                if let Some(l) = target
                    && connected
                    && s.current != target
                    && (!svc || s.current.is_none_or(|c| l > c))
                {
                    awaited.push((s.track_id, l));
                }
            }
        }
        // Let the estimator find out whether the next layer up fits: padding up to it
        // (never above the estimate), and probing towards what this subscriber would
        // receive with bandwidth to spare.
        let desired = (audio_bps + ideal_bps).max(NOMINAL_AUDIO_BPS);
        let minimum = step_up.map_or(0, |step| (audio_bps + allocated + step).min(desired));
        let differs = |a: u64, b: u64| a.abs_diff(b) > b / 10;
        if differs(desired, p.bwe_bitrates.1) || differs(minimum, p.bwe_bitrates.0) {
            p.bwe_bitrates = (minimum, desired);
            p.rtc
                .bwe()
                .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
            self.mark_dirty(id);
        }
        for (track_id, layer) in awaited {
            if let Some(t) = self.tracks.get_mut(&track_id) {
                let layer = usize::from(t.keyframe_layer(layer));
                if let Some(l) = t.layers.get_mut(layer) {
                    l.waiting = true;
                }
            }
        }
    }

    /// A receive-only participant's receiver reports say one of its m-lines lost `loss` of
    /// what it was sent. The most lost on any m-line in a stats round makes its estimate
    /// fall, climb or hold when the round is over (the next begins), and its layers follow.
    fn on_egress_loss(&mut self, id: ParticipantId, loss: Option<f32>) {
        let now = self.now;
        let Some(loss) = loss else {
            return;
        };
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        if estimates(&p.grants) {
            return;
        }
        let loss = match p.loss_round {
            Some((at, most)) if at == now => {
                p.loss_round = Some((at, most.max(loss)));
                return;
            }
            Some((_, most)) => {
                p.loss_round = Some((now, loss));
                most
            }
            None => {
                p.loss_round = Some((now, loss));
                return;
            }
        };
        // The reports just after a fall still count what was lost before it.
        if p.loss_hold.is_some_and(|until| now < until) {
            return;
        }
        let next = if loss > LOSS_HIGH {
            p.loss_hold = Some(now + LOSS_INTERVAL * 2);
            let sent = p.estimate.map_or(p.chosen_bps, |e| e.min(p.chosen_bps));
            let fallen = (sent as f64 * (1.0 - 0.5 * f64::from(loss))) as u64;
            // Falling again soon after the last fall: wait longer before the next retry.
            p.loss_backoff = match p.loss_ceiling {
                Some((_, until)) if now < until + p.loss_backoff => {
                    (p.loss_backoff * 2).min(LOSS_BACKOFF_MAX)
                }
                _ => LOSS_BACKOFF_MIN,
            };
            p.loss_ceiling = Some((sent, now + p.loss_backoff));
            Some(
                fallen
                    .max(MIN_LOSS_ESTIMATE_BPS)
                    .max(p.lowest_bps + p.lowest_bps / 10),
            )
        } else if loss < LOSS_LOW {
            let ceiling = match p.loss_ceiling {
                Some((sent, until)) if now < until => sent / 10 * 9,
                _ => u64::MAX,
            };
            // Climbing past twice what it would receive unlimited, it is unlimited again.
            p.estimate
                .map(|e| (e + e / 8).min(ceiling.max(e)))
                .filter(|e| *e < p.ideal_bps.saturating_mul(2))
        } else {
            p.estimate
        };
        if next != p.estimate {
            debug!(participant = %id, loss, estimate = ?next, "loss-based estimate");
            p.estimate = next;
            self.choose_for(id);
            self.request_awaited_keyframes();
        }
    }

    /// Tells each publisher of a simulcast track which of its layers somebody receives
    /// (or is switching to), when that changes; the others may be paused.
    fn announce_layers(&mut self) {
        let now = self.now;
        for (track_id, t) in &mut self.tracks {
            if t.layers.len() < 2 || t.svc {
                continue;
            }
            let mut mask = 0u8;
            for (sub, slot) in &t.subscribers {
                let s = self
                    .participants
                    .get(sub)
                    .and_then(|p| p.subscriptions.get(*slot))
                    .and_then(Option::as_ref);
                if let Some(s) = s {
                    for l in [s.current, s.target].into_iter().flatten() {
                        mask |= 1 << l;
                    }
                }
            }
            // A layer stays on for a while after its last receiver left it: resuming
            // costs a keyframe, and choices near a bandwidth limit come and go.
            for (i, l) in t.layers.iter_mut().enumerate() {
                if mask & (1 << i) != 0 {
                    l.needed_at = Some(now);
                } else if l.needed_at.is_some_and(|at| now < at + PAUSE_AFTER) {
                    mask |= 1 << i;
                }
            }
            if t.announced == Some(mask) {
                continue;
            }
            t.announced = Some(mask);
            let mut active = Vec::new();
            for (i, l) in t.layers.iter_mut().enumerate() {
                let on = mask & (1 << i) != 0;
                if on && l.paused {
                    l.expected_since = now;
                }
                l.paused = !on;
                if on {
                    active.push(t.info.layers[i].clone());
                }
            }
            debug!(track = %track_id, ?active, "layers received");
            self.outputs.push_back(ShardOutput::Signal(
                t.info.participant_id,
                ServerMessage::Layers {
                    track_id: *track_id,
                    active,
                },
            ));
        }
    }

    /// Marks a layer of `track_id` as awaiting a keyframe and asks its publisher now if
    /// the throttle allows (otherwise a later tick does, until the keyframe arrives).
    fn want_keyframe(&mut self, track_id: TrackId, layer: u8) {
        let Some(t) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let layer = t.keyframe_layer(layer);
        if let Some(l) = t.layers.get_mut(usize::from(layer)) {
            l.waiting = true;
        }
        self.request_keyframe(track_id, layer);
    }

    /// Asks for every awaited keyframe whose throttle interval has passed.
    fn request_awaited_keyframes(&mut self) {
        let now = self.now;
        let interval = self.config.keyframe_interval;
        let due: Vec<(TrackId, u8)> = self
            .tracks
            .iter()
            .flat_map(|(id, t)| {
                t.layers.iter().enumerate().filter_map(move |(i, l)| {
                    let free = l.last_request.is_none_or(|at| now >= at + interval);
                    (l.waiting && free).then_some((*id, i as u8))
                })
            })
            .collect();
        for (track_id, layer) in due {
            self.request_keyframe(track_id, layer);
        }
    }

    /// Sends a keyframe request (PLI) for one layer of a track, at most one per layer per
    /// `keyframe_interval`.
    fn request_keyframe(&mut self, track_id: TrackId, layer: u8) {
        let now = self.now;
        let interval = self.config.keyframe_interval;
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let Some(l) = track.layers.get_mut(usize::from(layer)) else {
            return;
        };
        if l.last_request.is_some_and(|at| now < at + interval) {
            return;
        }
        l.last_request = Some(now);
        let rid = l.rid;
        let owner = track.info.participant_id;
        let mid = track.mid;
        if let Some(p) = self.participants.get_mut(&owner)
            && let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, rid)
        {
            debug!(track = %track_id, layer, "keyframe requested");
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.counters.keyframe_requests += 1;
        }
        self.mark_dirty(owner);
    }

    fn on_event(&mut self, id: ParticipantId, event: Event) {
        match event {
            Event::RtpPacket(packet) => self.forward(id, packet),
            Event::KeyframeRequest(req) => {
                // The subscriber lost a picture: the layer it receives needs a keyframe.
                let wanted = self
                    .participants
                    .get(&id)
                    .and_then(|p| p.subscription_on(req.mid))
                    .and_then(|(_, s)| s.current.map(|l| (s.track_id, l)));
                if let Some((track_id, layer)) = wanted {
                    self.want_keyframe(track_id, layer);
                }
            }
            Event::MediaEgressStats(stats) => self.on_egress_loss(id, stats.loss),
            Event::EgressBitrateEstimate(estimate) => {
                if let Some(p) = self.participants.get_mut(&id) {
                    match estimate {
                        BweKind::Twcc { estimate, .. } => {
                            p.estimate = Some(estimate.as_u64());
                            p.estimate_is_twcc = true;
                        }
                        BweKind::Remb { estimate, .. } if !p.estimate_is_twcc => {
                            p.estimate = Some(estimate.as_u64());
                        }
                        _ => {}
                    }
                }
            }
            Event::IceConnectionStateChange(state) => {
                debug!(participant = %id, ?state, "ICE state");
                if state == IceConnectionState::Disconnected
                    && let Some(p) = self.participants.get_mut(&id)
                {
                    // Consent lost: give it the usual grace to come back, then remove.
                    let deadline = self.now + self.config.participant_timeout;
                    p.media_deadline = Some(p.media_deadline.map_or(deadline, |d| d.min(deadline)));
                }
            }
            Event::Connected => {
                info!(participant = %id, "media connected");
                self.choose_for(id);
                self.request_awaited_keyframes();
            }
            _ => {}
        }
    }

    /// Sends one incoming RTP packet to every subscriber of its track that receives its
    /// layer now, or switches to it at this packet (a keyframe's first).
    fn forward(&mut self, from: ParticipantId, packet: RtpPacket) {
        let Some(p) = self.participants.get_mut(&from) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let found = match p.ssrc_tracks.iter().find(|(s, _, _)| *s == ssrc) {
            Some((_, t, l)) => Some((*t, *l)),
            None => {
                let rx = p
                    .rtc
                    .direct_api()
                    .stream_rx(&ssrc)
                    .map(|rx| (rx.mid(), rx.rid()));
                let found = rx.and_then(|(mid, rid)| {
                    let pb = p.publications.iter().find(|pb| pb.mid == mid)?;
                    let track = self.tracks.get(&pb.track_id)?;
                    let layer = if track.layers.len() == 1 {
                        0
                    } else {
                        // A rid the client did not list in `layers` is not forwarded.
                        track
                            .layers
                            .iter()
                            .position(|l| l.rid.is_some() && l.rid == rid)?
                    };
                    Some((pb.track_id, layer as u8))
                });
                if let Some((t, l)) = found {
                    p.ssrc_tracks.push((ssrc, t, l));
                }
                found
            }
        };
        let Some((track_id, layer)) = found else {
            self.counters.drop(DropReason::Undeclared);
            return;
        };
        let Some(track) = self.tracks.get_mut(&track_id) else {
            self.counters.drop(DropReason::Undeclared);
            return;
        };
        let pt_in = packet.header.payload_type;
        // str0m hands the payload over shared (an `Arc`): every subscriber's write clones
        // the pointer, not the bytes.
        let payload = packet.payload;
        let params: Option<PayloadParams> = p
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|x| x.pt() == pt_in)
            .copied();
        let clock_hz = params.map_or(90_000, |x| x.spec().clock_rate.get());
        let video = track.info.kind == Kind::Video;
        let codec = params.map(|x| x.spec().codec);
        // Where the packet sits in its stream's layers: from the dependency descriptor
        // where negotiated (nothing of the payload read), else from a VP9 descriptor.
        let dd = packet.header.ext_vals.user_values.get::<DdBytes>().cloned();
        let mut info: Option<LayerInfo> = None;
        if video {
            if let Some(dd) = &dd {
                match parse_dd(&dd.0, &mut track.layers[usize::from(layer)].dd) {
                    Ok(i) => {
                        self.counters.dd_read += 1;
                        info = Some(i);
                    }
                    Err(e) => {
                        self.counters.dd_unreadable += 1;
                        debug!(track = %track_id, ?e, "dependency descriptor not understood");
                    }
                }
            }
            if info.is_none() && codec == Some(Codec::Vp9) {
                info = vp9_layers(&payload);
            }
            if let Some(i) = &info {
                track.learn_layers(i, self.now);
            }
        }
        // From the descriptor's attached structure, or from the payload where it can be
        // read (a publisher need not attach the structure to every keyframe).
        let payload_keyframe = video && codec.is_some_and(|c| keyframe_start(c, &payload));
        let keyframe = !video || payload_keyframe || info.is_some_and(|i| i.keyframe);
        if payload_keyframe && dd.is_some() && !info.is_some_and(|i| i.keyframe) {
            debug!(track = %track_id, layer, "keyframe without a dependency structure");
        }
        let vp8 = (codec == Some(Codec::Vp8))
            .then(|| Vp8Descriptor::parse(&payload).ok())
            .flatten();
        if !video {
            track.speech.packet(packet.header.ext_vals.audio_level);
        }
        let svc = track.svc;
        // An SVC packet's layer is its spatial layer (its stream is the first's).
        let spatial = info.map_or(0, |i| i.spatial.min(track.layers.len() as u8 - 1));
        let layer = if svc { spatial } else { layer };
        let l = &mut track.layers[usize::from(layer)];
        l.rate.add(payload.len());
        l.last_packet = Some(self.now);
        l.stalled_at = None;
        if keyframe {
            let k = usize::from(track.keyframe_layer(layer));
            track.layers[k].waiting = false;
        }
        let mut ext_vals = packet.header.ext_vals.clone();
        ext_vals.mid = None;
        ext_vals.rid = None;
        let svc_info = info.unwrap_or(LayerInfo {
            spatial,
            temporal: 0,
            start: false,
            end: false,
            keyframe,
        });
        for (sub_id, slot) in &track.subscribers {
            let Some(sub) = self.participants.get_mut(sub_id) else {
                continue;
            };
            let Some(Some(s)) = sub.subscriptions.get_mut(*slot) else {
                continue;
            };
            let choice = if svc {
                select_svc(&mut s.current, s.target, &svc_info)
            } else {
                select(&mut s.current, s.target, layer, keyframe)
            };
            match choice {
                Select::Skip => {
                    if svc {
                        // Left out on purpose: the subscriber's numbering closes over it.
                        s.forwarder.skip(packet.seq_no);
                    }
                    continue;
                }
                Select::Forward => {}
                Select::Switch if svc => self.counters.layer_switches += 1,
                Select::Switch => {
                    s.forwarder.switch_source();
                    if let Some(d) = &vp8 {
                        s.vp8.switch_source(d);
                    }
                    s.frames.switch_source();
                    self.counters.layer_switches += 1;
                }
            }
            if !sub.rtc.is_connected() {
                self.counters.drop(DropReason::NotConnected);
                continue;
            }
            let pt_out = match s.pts.iter().find(|(i, _)| *i == pt_in) {
                Some((_, o)) => Some(*o),
                None => {
                    let matched = params.and_then(|x| sub.rtc.codec_config().match_params(x));
                    if let Some(m) = matched {
                        s.pts.push((pt_in, m.pt()));
                        if let (Some(rtx), Some(pacer)) = (m.resend(), sub.pacer.as_mut()) {
                            pacer.pace_payload_type(*rtx);
                        }
                    }
                    matched.map(|m| m.pt())
                }
            };
            let Some(pt_out) = pt_out else {
                self.counters.drop(DropReason::NoCodec);
                continue;
            };
            let mut api = sub.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(s.mid, None) else {
                self.counters.drop(DropReason::NoStream);
                continue;
            };
            // Its pacer holds more than it can send (the estimate fell below a stream
            // that has no lower layer, or it stopped reading): stop feeding it; it
            // resumes at a keyframe once its queue has drained. (Before the forwarder
            // numbers the packet: a cut leaves no gap.)
            let backlog = tx.queue_info().and_then(|q| q.first_unsent());
            if backlog.is_some_and(|at| self.now.saturating_duration_since(at) > MAX_PACER_DELAY) {
                s.current = None;
                self.counters.drop(DropReason::PacerBacklog);
                continue;
            }
            let decision = s.forwarder.decide(
                packet.seq_no,
                packet.header.timestamp,
                packet.timestamp,
                clock_hz,
            );
            let (seq_no, time) = match decision {
                Decision::Forward { seq_no, time } => (seq_no, time),
                Decision::Drop(reason) => {
                    self.counters.drop(reason);
                    continue;
                }
            };
            if !s.rtx_sized {
                s.rtx_sized = true;
                tx.set_rtx_cache(RTX_MAX_PACKETS, RTX_MAX_AGE, Some(0.15));
            }

            // Above the layers it receives, the frame ends with the highest one it gets.
            let marker = packet.header.marker
                || (svc && svc_info.end && s.current == Some(svc_info.spatial));
            let mut ext = ext_vals.clone();
            if let Some(d) = dd.as_ref().and_then(|d| s.frames.rewrite(&d.0)) {
                ext.user_values.set(d);
            }
            let mut write = RtpWrite::new(pt_out, seq_no, time, packet.timestamp, payload.clone())
                .marker(marker)
                .ext_vals(ext)
                .nackable(video);
            if let Some(patch) = vp8.as_ref().and_then(|d| s.vp8.rewrite(d)) {
                write = write.vp8_patch(patch);
            }
            tx.write_rtp(write);
            self.counters.rtp_forwarded += 1;
            if !sub.dirty {
                sub.dirty = true;
                self.dirty.push_back(*sub_id);
            }
        }
    }

    fn remove_participant(&mut self, id: ParticipantId, reason: LeaveReason) {
        let Some(mut p) = self.participants.remove(&id) else {
            return;
        };
        info!(participant = %id, ?reason, "removed");
        p.rtc.disconnect();
        self.by_ufrag.remove(&p.ufrag);
        for key in &p.remotes {
            self.by_remote.remove(key);
        }
        for (slot, s) in p.subscriptions.iter().enumerate() {
            if let Some(s) = s
                && let Some(t) = self.tracks.get_mut(&s.track_id)
            {
                t.subscribers.retain(|x| *x != (id, slot));
            }
        }
        let publications = p.publications.clone();
        for pb in publications {
            self.unpublish(pb.track_id);
        }
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.members.retain(|m| *m != id);
            room.recent.retain(|m| *m != id);
            if room.dominant == Some(id) {
                room.dominant = None;
            }
        }
        if reason != LeaveReason::Left {
            self.signal(id, ServerMessage::Left { reason });
        }
        // Viewers hear only of presenters and participants.
        self.broadcast_to(
            &p.room,
            id,
            &ServerMessage::ParticipantLeft {
                participant_id: id,
                reason,
            },
            !p.grants.is_viewer(),
        );
        if self
            .rooms
            .get(&p.room)
            .is_some_and(|r| r.members.is_empty())
        {
            info!(room = %p.room, "call ended");
            self.rooms.remove(&p.room);
        }
        self.outputs.push_back(ShardOutput::Closed(id));
    }

    /// Its pacer's time came: what may leave now goes, and the next release is queued.
    fn release_paced(&mut self, id: ParticipantId) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let rate = pace_rate(p.estimate, p.ideal_bps, p.chosen_bps);
        let Some(pacer) = p.pacer.as_mut() else {
            return;
        };
        let (counters, outputs) = (&mut self.counters, &mut self.outputs);
        p.pace_at = pacer.release(self.now, rate, |t| emit(counters, outputs, t));
        if let Some(at) = p.pace_at {
            self.timers.push(Reverse((at, id)));
        }
    }

    /// Drops the stale entries of the timer heap (deadlines that moved since they were
    /// queued), which otherwise wait there until their time.
    fn rebuild_timers(&mut self) {
        self.timers = self
            .participants
            .iter()
            .flat_map(|(id, p)| {
                [p.rtc_timeout, p.pace_at]
                    .into_iter()
                    .flatten()
                    .map(|at| Reverse((at, *id)))
            })
            .collect();
    }

    /// The earliest of the next tick (which also removes participants whose media
    /// stopped) and the participants' `Rtc` deadlines; stale timer entries are dropped.
    fn next_deadline(&mut self) -> Instant {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if self
                .participants
                .get(&id)
                .is_some_and(|p| p.rtc_timeout == Some(at) || p.pace_at == Some(at))
            {
                return at.min(self.next_tick);
            }
            self.timers.pop();
        }
        self.next_tick
    }
}

#[cfg(test)]
mod tests {
    use super::follow_offer_codec_order;

    #[test]
    fn the_answer_keeps_the_offers_codec_order_per_m_line() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=mid:0\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97 45\r\na=mid:1\r\n";
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\na=mid:0\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 45 127\r\na=mid:1\r\n";
        assert_eq!(
            follow_offer_codec_order(offer, answer),
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\na=mid:0\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97 45 127\r\na=mid:1\r\n"
        );
        // An answer with more m-lines than the offer keeps the extra ones as they are.
        let extra = format!("{answer}m=video 9 UDP/TLS/RTP/SAVPF 96 98\r\n");
        assert!(follow_offer_codec_order(offer, &extra).ends_with("SAVPF 96 98\r\n"));
    }
}
