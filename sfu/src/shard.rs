//! The sans-IO media core of one shard: the rooms it holds, the WebRTC session of each of
//! their participants, and the forwarding between them. It never touches a socket or a
//! clock: datagrams, commands and time go in, datagrams, signals and a deadline come out.
//!
//! Run loop, as in str0m: feed one input (`handle_datagram`, `join`, `request`, `leave`,
//! `handle_timeout`), then call [`Shard::poll_output`] until it returns
//! [`ShardOutput::Timeout`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use signaling::protocol::{
    ErrorCode, ErrorMessage, Kind, LeaveReason, ParticipantId, ParticipantInfo, Publish, Published,
    RequestType, ServerMessage, Source, Subscribe, TrackId, TrackInfo, Transport,
};
use signaling::{Grants, Join, Request};
use str0m::change::SdpOffer;
use str0m::format::PayloadParams;
use str0m::ice::StunMessage;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::rtp::{RtpPacket, RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};
use tracing::{debug, info, warn};

use crate::forwarder::{Decision, DropReason, Forwarder};

/// How a shard behaves; the same for every shard of a server.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// A participant whose media sent nothing for this long is removed.
    pub participant_timeout: Duration,
    /// At most one keyframe request per source in this interval.
    pub keyframe_interval: Duration,
    /// Most participants in one room.
    pub room_capacity: usize,
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
    pub drops: [u64; DropReason::ALL.len()],
}

impl Counters {
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }
}

/// Checks, before anything is applied, that every published mid is an m-line of the offer,
/// of its source's kind, on which the client sends.
fn check_publish_kinds(offer: &SdpOffer, publish: &[Publish]) -> Result<(), String> {
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
        if line.disabled || !line.direction().is_sending() {
            return Err(format!(
                "mid {:?} is {} in the offer: the client does not send on it",
                x.mid,
                if line.disabled {
                    "rejected".to_string()
                } else {
                    line.direction().to_string()
                }
            ));
        }
    }
    Ok(())
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
    /// When its `Rtc` wants `Input::Timeout` next.
    rtc_timeout: Instant,
    /// In the shard's dirty queue: its `Rtc` has output to drain.
    dirty: bool,
    publications: Vec<Publication>,
    subscriptions: Vec<Subscription>,
    /// Incoming SSRC to track, filled as packets arrive.
    ssrc_tracks: Vec<(Ssrc, TrackId)>,
    /// Forwarders of m-lines that carry nothing now, kept so that the stream continues
    /// when the m-line is given another track. At most one per m-line.
    idle_forwarders: Vec<(Mid, Forwarder)>,
}

impl Participant {
    /// Ends the subscription on `mid`, keeping its forwarder for the m-line's next track.
    fn retire_subscription(&mut self, mid: Mid) {
        let Some(i) = self.subscriptions.iter().position(|s| s.mid == mid) else {
            return;
        };
        let s = self.subscriptions.swap_remove(i);
        self.idle_forwarders.retain(|(m, _)| *m != mid);
        self.idle_forwarders.push((mid, s.forwarder));
    }
}

/// A track this participant publishes, on one of its m-lines.
#[derive(Debug, Clone, Copy)]
struct Publication {
    mid: Mid,
    track_id: TrackId,
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
}

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
    subscribers: Vec<(ParticipantId, Mid)>,
    keyframe: KeyframeThrottle,
}

/// At most one keyframe request per source per interval; a request inside the interval is
/// sent when it ends.
#[derive(Debug, Clone, Copy, Default)]
struct KeyframeThrottle {
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeThrottle {
    /// Whether to send a request now; otherwise one is left pending.
    fn request(&mut self, now: Instant, interval: Duration) -> bool {
        match self.last_sent {
            Some(last) if now < last + interval => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// When a pending request is due.
    fn due(&self, interval: Duration) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (true, Some(last)) => Some(last + interval),
            _ => None,
        }
    }
}

/// A call: who is in it and what they publish.
#[derive(Default)]
struct Room {
    members: Vec<ParticipantId>,
    tracks: Vec<TrackId>,
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
    /// Tracks with a keyframe request pending.
    pending_keyframes: Vec<TrackId>,
    /// No deadline is earlier than this (it may be earlier than needed: a spurious wakeup).
    earliest: Instant,
    /// `earliest` must be recomputed from scratch before it is next returned.
    rescan: bool,
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
            pending_keyframes: Vec::new(),
            earliest: now + Duration::from_secs(1),
            rescan: false,
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
        join: Join,
        available: &LocalCandidates,
    ) {
        self.advance(now);
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
        let members = self.rooms.get(&join.room).map_or(0, |r| r.members.len());
        if members >= self.config.room_capacity {
            info!(participant = %id, room = %join.room, "room full");
            let error = ErrorMessage::new(
                ErrorCode::RoomFull,
                format!("room has its {} participants", self.config.room_capacity),
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
        };
        let room = self.rooms.entry(join.room.clone()).or_default();
        if room.members.is_empty() {
            self.counters.calls_started += 1;
            info!(room = %join.room, "call started");
        }
        let others: Vec<ParticipantId> = room.members.clone();
        room.members.push(id);
        let tracks = room
            .tracks
            .iter()
            .filter_map(|t| self.tracks.get(t).map(|t| t.info.clone()))
            .collect();
        let participants = others
            .iter()
            .filter_map(|p| self.participants.get(p).map(|p| p.info.clone()))
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
            self.signal(other, ServerMessage::ParticipantJoined(info.clone()));
        }
        self.by_ufrag.insert(ufrag.clone(), id);
        self.participants.insert(
            id,
            Participant {
                info,
                room: join.room,
                grants: join.grants,
                rtc,
                ufrag,
                udp_port,
                tcp_port,
                remotes: Vec::new(),
                media_deadline: None,
                rtc_timeout: now,
                dirty: false,
                publications: Vec::new(),
                subscriptions: Vec::new(),
                ssrc_tracks: Vec::new(),
                idle_forwarders: Vec::new(),
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
            } => self.offer(now, id, &sdp, publish, subscribe),
            Request::Mute { track_id, muted } => self.mute(id, track_id, muted),
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
        let mut expired = Vec::new();
        let mut due = Vec::new();
        for (id, p) in &mut self.participants {
            if p.media_deadline.is_some_and(|d| d <= now) {
                expired.push(*id);
            } else if p.rtc_timeout <= now {
                if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                    debug!(participant = %id, "timeout refused: {e}");
                }
                due.push(*id);
            }
        }
        for id in due {
            self.mark_dirty(id);
        }
        for id in expired {
            info!(participant = %id, "no media for {:?}", self.config.participant_timeout);
            self.remove_participant(id, LeaveReason::Timeout);
        }
        let interval = self.config.keyframe_interval;
        let pending = std::mem::take(&mut self.pending_keyframes);
        for track_id in pending {
            let Some(track) = self.tracks.get(&track_id) else {
                continue;
            };
            match track.keyframe.due(interval) {
                Some(at) if at <= now => self.request_keyframe(track_id),
                Some(_) => self.pending_keyframes.push(track_id),
                None => {}
            }
        }
        // Rescan once the due participants are drained and their deadlines are fresh.
        self.rescan = true;
    }

    /// The next thing to do. Call until it returns `Timeout`.
    pub fn poll_output(&mut self) -> ShardOutput {
        loop {
            if let Some(out) = self.outputs.pop_front() {
                return out;
            }
            let Some(id) = self.dirty.pop_front() else {
                if self.rescan {
                    self.rescan = false;
                    self.earliest = self.scan_deadlines();
                }
                return ShardOutput::Timeout(self.earliest);
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
                    if t.proto == Protocol::Udp {
                        self.counters.tx_packets += 1;
                        self.counters.tx_bytes += t.contents.len() as u64;
                    } else {
                        self.counters.tcp_tx_packets += 1;
                        self.counters.tcp_tx_bytes += t.contents.len() as u64;
                    }
                    self.outputs.push_back(ShardOutput::Transmit(t));
                }
                Ok(Output::Timeout(at)) => {
                    p.rtc_timeout = at;
                    p.dirty = false;
                    self.earliest = self.earliest.min(at);
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
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        for member in &room.members {
            if *member != except {
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
    ) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        // Refuse what is not granted before applying anything.
        if let Some(denied) = publish.iter().find(|x| !x.source.is_granted(&p.grants)) {
            let message = format!("token does not grant {}", denied.source.grant_name());
            self.error(id, RequestType::Offer, ErrorCode::Forbidden, message);
            return;
        }
        if !p.grants.subscribe && !subscribe.is_empty() {
            self.error(
                id,
                RequestType::Offer,
                ErrorCode::Forbidden,
                "token does not grant subscribe",
            );
            return;
        }
        let mut mids: Vec<&str> = publish
            .iter()
            .map(|x| x.mid.as_str())
            .chain(subscribe.iter().map(|x| x.mid.as_str()))
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
        if let Err(message) = check_publish_kinds(&offer, &publish) {
            self.error(id, RequestType::Offer, ErrorCode::BadRequest, message);
            return;
        }
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
            self.earliest = self.earliest.min(now + self.config.participant_timeout);
        }
        let published = self.apply_publish(id, &publish);
        self.apply_subscribe(id, &subscribe);
        self.signal(
            id,
            ServerMessage::Answer {
                sdp: answer.to_sdp_string(),
                published,
            },
        );
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
                Some((pb, t)) if t.info.source == x.source => keep.push(pb),
                _ => added.push((mid, x.source)),
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
        for (mid, source) in added {
            self.publish(id, mid, source);
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

    fn publish(&mut self, id: ParticipantId, mid: Mid, source: Source) {
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
        };
        let room = p.room.clone();
        info!(participant = %id, track = %track_id, ?source, "track published");
        self.tracks.insert(
            track_id,
            Track {
                info: info.clone(),
                room: room.clone(),
                mid,
                subscribers: Vec::new(),
                keyframe: KeyframeThrottle::default(),
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
        for (sub, mid) in &track.subscribers {
            if let Some(s) = self.participants.get_mut(sub) {
                s.retire_subscription(*mid);
            }
        }
        if let Some(owner) = self.participants.get_mut(&track.info.participant_id) {
            owner.publications.retain(|pb| pb.track_id != track_id);
            owner.ssrc_tracks.clear();
        }
        if let Some(r) = self.rooms.get_mut(&track.room) {
            r.tracks.retain(|t| *t != track_id);
        }
        self.pending_keyframes.retain(|t| *t != track_id);
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
        let dropped: Vec<(Mid, TrackId)> = p
            .subscriptions
            .iter()
            .filter(|s| !wanted.contains(&(s.mid, s.track_id)))
            .map(|s| (s.mid, s.track_id))
            .collect();
        for (mid, _) in &dropped {
            p.retire_subscription(*mid);
        }
        let mut new = Vec::new();
        for (mid, track_id) in wanted {
            if !p.subscriptions.iter().any(|s| s.mid == mid) {
                // An m-line that carried another track before goes on with its stream.
                let forwarder = match p.idle_forwarders.iter().position(|(m, _)| *m == mid) {
                    Some(i) => {
                        let mut f = p.idle_forwarders.swap_remove(i).1;
                        f.switch_source();
                        f
                    }
                    None => Forwarder::new(rand::random::<u16>() & 0x7fff),
                };
                p.subscriptions.push(Subscription {
                    mid,
                    track_id,
                    forwarder,
                    pts: Vec::new(),
                    rtx_sized: false,
                });
                new.push((mid, track_id));
            }
        }
        for (mid, track_id) in dropped {
            if let Some(t) = self.tracks.get_mut(&track_id) {
                t.subscribers.retain(|s| *s != (id, mid));
            }
        }
        // A subscriber whose transport is up needs a keyframe now; one still connecting
        // gets its keyframes when it connects (a keyframe sent before would be lost).
        let connected = p.rtc.is_connected();
        for (mid, track_id) in new {
            if let Some(t) = self.tracks.get_mut(&track_id) {
                t.subscribers.push((id, mid));
                if connected && t.info.kind == Kind::Video {
                    self.request_keyframe(track_id);
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

    /// Asks the publisher of `track_id` for a keyframe, throttled per source.
    fn request_keyframe(&mut self, track_id: TrackId) {
        let now = self.now;
        let interval = self.config.keyframe_interval;
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        if !track.keyframe.request(now, interval) {
            if !self.pending_keyframes.contains(&track_id) {
                self.pending_keyframes.push(track_id);
                self.earliest = self.earliest.min(now + interval);
            }
            return;
        }
        let owner = track.info.participant_id;
        let mid = track.mid;
        if let Some(p) = self.participants.get_mut(&owner)
            && let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, None)
        {
            debug!(track = %track_id, "keyframe requested");
            rx.request_keyframe(KeyframeRequestKind::Pli);
        }
        self.mark_dirty(owner);
    }

    fn on_event(&mut self, id: ParticipantId, event: Event) {
        match event {
            Event::RtpPacket(packet) => self.forward(id, packet),
            Event::KeyframeRequest(req) => {
                let track_id = self
                    .participants
                    .get(&id)
                    .and_then(|p| p.subscriptions.iter().find(|s| s.mid == req.mid))
                    .map(|s| s.track_id);
                if let Some(track_id) = track_id {
                    self.request_keyframe(track_id);
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
                let video: Vec<TrackId> = self
                    .participants
                    .get(&id)
                    .map(|p| p.subscriptions.iter().map(|s| s.track_id).collect())
                    .unwrap_or_default();
                for track_id in video {
                    if self
                        .tracks
                        .get(&track_id)
                        .is_some_and(|t| t.info.kind == Kind::Video)
                    {
                        self.request_keyframe(track_id);
                    }
                }
            }
            _ => {}
        }
    }

    /// Sends one incoming RTP packet to every subscriber of its track.
    fn forward(&mut self, from: ParticipantId, packet: RtpPacket) {
        let Some(p) = self.participants.get_mut(&from) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let track_id = match p.ssrc_tracks.iter().find(|(s, _)| *s == ssrc) {
            Some((_, t)) => Some(*t),
            None => {
                let mid = p.rtc.direct_api().stream_rx(&ssrc).map(|rx| rx.mid());
                let track = mid.and_then(|mid| p.publications.iter().find(|pb| pb.mid == mid));
                if let Some(pb) = track {
                    p.ssrc_tracks.push((ssrc, pb.track_id));
                }
                track.map(|pb| pb.track_id)
            }
        };
        let Some(track) = track_id.and_then(|t| self.tracks.get(&t)) else {
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
        let nackable = track.info.kind == Kind::Video;
        let mut ext_vals = packet.header.ext_vals.clone();
        ext_vals.mid = None;
        ext_vals.rid = None;
        for (sub_id, mid) in &track.subscribers {
            let Some(sub) = self.participants.get_mut(sub_id) else {
                continue;
            };
            let Some(s) = sub.subscriptions.iter_mut().find(|s| s.mid == *mid) else {
                continue;
            };
            if !sub.rtc.is_connected() {
                self.counters.drop(DropReason::NotConnected);
                continue;
            }
            let pt_out = match s.pts.iter().find(|(i, _)| *i == pt_in) {
                Some((_, o)) => Some(*o),
                None => {
                    let out = params
                        .and_then(|x| sub.rtc.codec_config().match_params(x))
                        .map(|x| x.pt());
                    if let Some(o) = out {
                        s.pts.push((pt_in, o));
                    }
                    out
                }
            };
            let Some(pt_out) = pt_out else {
                self.counters.drop(DropReason::NoCodec);
                continue;
            };
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
            let mut api = sub.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(*mid, None) else {
                self.counters.drop(DropReason::NoStream);
                continue;
            };
            if !s.rtx_sized {
                s.rtx_sized = true;
                tx.set_rtx_cache(RTX_MAX_PACKETS, RTX_MAX_AGE, Some(0.15));
            }
            tx.write_rtp(
                RtpWrite::new(pt_out, seq_no, time, packet.timestamp, payload.clone())
                    .marker(packet.header.marker)
                    .ext_vals(ext_vals.clone())
                    .nackable(nackable),
            );
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
        for s in &p.subscriptions {
            if let Some(t) = self.tracks.get_mut(&s.track_id) {
                t.subscribers.retain(|x| *x != (id, s.mid));
            }
        }
        let publications = p.publications.clone();
        for pb in publications {
            self.unpublish(pb.track_id);
        }
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.members.retain(|m| *m != id);
        }
        if reason != LeaveReason::Left {
            self.signal(id, ServerMessage::Left { reason });
        }
        self.broadcast(
            &p.room,
            id,
            &ServerMessage::ParticipantLeft {
                participant_id: id,
                reason,
            },
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

    /// The exact earliest deadline over every participant and pending keyframe request.
    fn scan_deadlines(&self) -> Instant {
        let far = self.now + Duration::from_secs(1);
        let participants = self
            .participants
            .values()
            .flat_map(|p| std::iter::once(p.rtc_timeout).chain(p.media_deadline));
        let keyframes = self
            .pending_keyframes
            .iter()
            .filter_map(|t| self.tracks.get(t))
            .filter_map(|t| t.keyframe.due(self.config.keyframe_interval));
        participants.chain(keyframes).fold(far, Instant::min)
    }
}
