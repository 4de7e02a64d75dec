//! A call in virtual time: the shard core and real str0m clients on a lossless virtual
//! network, wired as the sans-IO tests in `sfu-core/tests` wire them (full ICE, DTLS-SRTP,
//! RTP), but tolerant of whatever a fuzz input makes happen: nothing here panics on what
//! the server sends; it counts it, and the targets check what they mean to check. Every
//! link delays datagrams by [`LATENCY`]; signaling is not delayed.
//!
//! Everything random that a seed depends on is fixed: the shard's generator is seeded (so
//! its ICE credentials are the same on every run) and so are the clients' ICE
//! credentials, so a STUN request captured by the seed generator authenticates again
//! when the fuzzer replays it. DTLS keys are fresh each run, as in any real call.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use protocol::{
    Grants, Join, Kind, ParticipantId, Publish, Request, ServerMessage, Source, Subscribe, TrackId,
    Transport,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sfu_core::shard::{LocalCandidates, Shard, ShardConfig, ShardOutput};
use sfu_core::svc::{DD_EXTENSION_ID, DD_URI, DdExtension};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{Extension, ExtensionValues, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceCreds, Input, Output, Rtc};

/// The server's address, for UDP and for ICE-TCP.
pub const SERVER: &str = "192.0.2.1:16384";

/// The step of virtual time in which clients send media and timers run.
pub const STEP: Duration = Duration::from_millis(5);

/// Rounds of delivery at one instant before the network is declared never quiet.
const MAX_ROUNDS: usize = 1_000;

/// One-way latency of every link. Not zero: with a round-trip time of zero, str0m's
/// delay-based bandwidth estimator, once TWCC feedback pauses, polls every smoothed RTT,
/// that is at every instant, which no real network does (see README.md).
pub const LATENCY: Duration = Duration::from_millis(10);

/// Deadlines served within one [`Call::advance`] before time jumps to its end.
const MAX_EVENTS: usize = 5_000;

/// The server's address.
pub fn server() -> SocketAddr {
    SERVER.parse().expect("a socket address")
}

/// One client: a str0m `Rtc` and what it was told.
pub struct Peer {
    pub addr: SocketAddr,
    pub proto: Protocol,
    pub rtc: Rtc,
    pub id: ParticipantId,
    pending: Option<SdpPendingOffer>,
    /// The SDP of its last offer.
    pub offer_sdp: Option<String>,
    /// Its published m-lines: mid, source, simulcast rids (lowest first).
    pub publish: Vec<(Mid, Source, Vec<String>)>,
    /// Its receiving m-lines and the tracks they carry.
    pub subscribe: Vec<(Mid, TrackId)>,
    pub inbox: Vec<ServerMessage>,
    /// RTP packets it received.
    pub received: usize,
    /// Keyframe requests it received, per m-line and rid.
    pub keyframe_requests: Vec<(Mid, Option<Rid>)>,
    /// Errors of its `Rtc` (on what the server sent it).
    pub errors: usize,
    /// When its `Rtc` next wants time, as it last said.
    pub deadline: Instant,
}

impl Peer {
    /// The payload type of `codec` in its configuration.
    pub fn pt(&self, codec: Codec) -> Option<str0m::media::Pt> {
        self.rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
    }

    /// The tracks announced to it and not withdrawn.
    pub fn tracks_announced(&self) -> Vec<(TrackId, ParticipantId, Kind)> {
        let mut tracks = Vec::new();
        for m in &self.inbox {
            match m {
                ServerMessage::Joined { tracks: t, .. } => {
                    tracks.extend(t.iter().map(|t| (t.track_id, t.participant_id, t.kind)))
                }
                ServerMessage::TrackPublished(t) => {
                    tracks.push((t.track_id, t.participant_id, t.kind))
                }
                ServerMessage::TrackUnpublished { track_id } => tracks.retain(|t| t.0 != *track_id),
                _ => {}
            }
        }
        tracks
    }
}

/// One datagram on the virtual wire, as the seed generator records it.
#[derive(Debug, Clone)]
pub struct Wire {
    pub proto: Protocol,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// The shard and its clients.
pub struct Call {
    pub now: Instant,
    pub shard: Shard,
    pub peers: Vec<Peer>,
    /// The shard's next deadline, as it last said.
    pub deadline: Instant,
    /// Datagrams on their way, with their arrival time (in order: every link has the
    /// same latency).
    in_flight: VecDeque<(Instant, Wire)>,
    /// Everything that was put on the wire, when recording (the seed generator).
    pub wire: Option<Vec<Wire>>,
    pub closed: Vec<ParticipantId>,
    /// Datagrams the server sent to addresses no client here has: the targets read them.
    pub elsewhere: Vec<Wire>,
    /// Signals to participants that have no client here ([`Call::join_bare`]).
    pub signals: Vec<(ParticipantId, ServerMessage)>,
    /// Datagrams the server sent that no WebRTC stack could classify.
    pub malformed_from_server: usize,
    /// Answers a client could not parse or accept.
    pub bad_answers: usize,
    /// Whether the network was ever found not quiet after `MAX_ROUNDS` deliveries.
    pub never_quiet: bool,
    next_id: u64,
}

impl Call {
    pub fn new(config: ShardConfig) -> Call {
        let now = Instant::now();
        Call {
            now,
            // Seeded: the shard's ICE credentials are the same on every run.
            shard: Shard::new(config, now, StdRng::seed_from_u64(0x5eed)),
            peers: Vec::new(),
            deadline: now,
            in_flight: VecDeque::new(),
            wire: None,
            closed: Vec::new(),
            elsewhere: Vec::new(),
            signals: Vec::new(),
            malformed_from_server: 0,
            bad_answers: 0,
            never_quiet: false,
            next_id: 1,
        }
    }

    /// Joins a client reaching the server over `proto` (a client on TCP has an active
    /// candidate); returns its index.
    pub fn join(&mut self, name: &str, grants: Grants, proto: Protocol) -> usize {
        let index = self.peers.len();
        let addr: SocketAddr = format!("198.51.100.{}:5000", 10 + index)
            .parse()
            .expect("a socket address");
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_local_ice_credentials(IceCreds {
                ufrag: format!("client{index}"),
                pass: format!("client-password-{index}-0123456789"),
            })
            .set_extension(
                DD_EXTENSION_ID,
                Extension::with_serializer(DD_URI, DdExtension),
            )
            .build(self.now);
        let candidate = match proto {
            Protocol::Udp => Candidate::host(addr, "udp"),
            _ => Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(TcpType::Active)
                .build(),
        };
        rtc.add_local_candidate(candidate.expect("a candidate"));
        let id = ParticipantId(self.next_id);
        self.next_id += 1;
        self.peers.push(Peer {
            addr,
            proto,
            rtc,
            id,
            pending: None,
            offer_sdp: None,
            publish: Vec::new(),
            subscribe: Vec::new(),
            inbox: Vec::new(),
            received: 0,
            keyframe_requests: Vec::new(),
            errors: 0,
            deadline: self.now,
        });
        self.join_shard(id, name, grants);
        index
    }

    /// Joins a participant without a client (its signals go to `signals`, its
    /// datagrams nowhere); returns its id.
    pub fn join_bare(&mut self, name: &str, grants: Grants) -> ParticipantId {
        let id = ParticipantId(self.next_id);
        self.next_id += 1;
        self.join_shard(id, name, grants);
        id
    }

    fn join_shard(&mut self, id: ParticipantId, name: &str, grants: Grants) {
        let join = Join {
            room: "room".into(),
            identity: name.into(),
            name: name.into(),
            grants,
            token_grants: grants,
            group: protocol::DEFAULT_GROUP.into(),
            max_participants: None,
            transport: Transport::Auto,
            ice_servers: Vec::new(),
            audience: false,
            e2ee: true,
        };
        let available = LocalCandidates {
            udp: vec![server()],
            tcp: vec![server()],
        };
        self.shard.join(self.now, id, join, &available);
        self.pump();
    }

    /// Offers, for client `i`, sending m-lines for `sources` (with simulcast rids where
    /// given, lowest first) and, with `subscribe`, a receiving one for every track
    /// announced to it; returns the offer as sent.
    pub fn offer(&mut self, i: usize, sources: &[(Source, &[&str])], subscribe: bool) -> Request {
        let p = &mut self.peers[i];
        let announced = p.tracks_announced();
        let mut api = p.rtc.sdp_api();
        for (source, rids) in sources {
            let kind = match source.kind() {
                Kind::Audio => MediaKind::Audio,
                Kind::Video => MediaKind::Video,
            };
            let simulcast = (!rids.is_empty()).then(|| {
                let mut s = Simulcast::new();
                for rid in *rids {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            let mid = api.add_media(kind, Direction::SendOnly, None, None, simulcast);
            let rids = rids.iter().map(|r| r.to_string()).collect();
            p.publish.push((mid, *source, rids));
        }
        if subscribe {
            for (track_id, from, kind) in announced {
                if from == p.id || p.subscribe.iter().any(|(_, t)| *t == track_id) {
                    continue;
                }
                let kind = match kind {
                    Kind::Audio => MediaKind::Audio,
                    Kind::Video => MediaKind::Video,
                };
                let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
                p.subscribe.push((mid, track_id));
            }
        }
        let (offer, pending) = api.apply().expect("changes to offer");
        p.pending = Some(pending);
        p.offer_sdp = Some(offer.to_sdp_string());
        let request = Request::Offer {
            sdp: offer.to_sdp_string(),
            publish: p
                .publish
                .iter()
                .map(|(mid, source, rids)| Publish {
                    mid: mid.to_string(),
                    source: *source,
                    layers: rids.clone(),
                })
                .collect(),
            subscribe: p
                .subscribe
                .iter()
                .map(|(mid, track_id)| Subscribe {
                    mid: mid.to_string(),
                    track_id: *track_id,
                })
                .collect(),
            slots: Vec::new(),
        };
        let id = p.id;
        self.shard.request(self.now, id, request.clone());
        self.pump();
        request
    }

    /// Delivers what is due and everything it causes until the network is quiet at this
    /// instant (datagrams in flight arrive later); false (and `never_quiet` set) if it
    /// never is.
    pub fn pump(&mut self) -> bool {
        let now = self.now;
        for i in 0..self.peers.len() {
            self.drain_peer(i);
        }
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            while self.in_flight.front().is_some_and(|(at, _)| *at <= now) {
                let Some((_, w)) = self.in_flight.pop_front() else {
                    break;
                };
                moved = true;
                self.deliver(w);
            }
            loop {
                match self.shard.poll_output() {
                    ShardOutput::Transmit(t) => {
                        moved = true;
                        if Receive::new(t.proto, t.source, t.destination, &t.contents).is_err() {
                            self.malformed_from_server += 1;
                            continue;
                        }
                        let w = Wire {
                            proto: t.proto,
                            from: t.source,
                            to: t.destination,
                            bytes: t.contents.to_vec(),
                        };
                        if self
                            .peers
                            .iter()
                            .any(|p| p.addr == w.to && p.proto == w.proto)
                        {
                            self.send(w);
                        } else {
                            self.elsewhere.push(w);
                        }
                    }
                    ShardOutput::Signal(id, message) => {
                        moved = true;
                        self.signal(id, message);
                    }
                    ShardOutput::Relay(..) | ShardOutput::Tap(_) | ShardOutput::Event(_) => {
                        moved = true
                    }
                    ShardOutput::Closed(id) => {
                        moved = true;
                        self.closed.push(id);
                    }
                    ShardOutput::Timeout(at) => {
                        self.deadline = at;
                        break;
                    }
                }
            }
            if !moved {
                return true;
            }
        }
        self.never_quiet = true;
        false
    }

    /// Puts a datagram on the wire: it arrives `LATENCY` later.
    fn send(&mut self, w: Wire) {
        if let Some(wire) = &mut self.wire {
            wire.push(w.clone());
        }
        self.in_flight.push_back((self.now + LATENCY, w));
    }

    /// A datagram arrives: at the shard, or at the client it is for.
    fn deliver(&mut self, w: Wire) {
        if w.to == server() {
            self.shard
                .handle_datagram(self.now, w.proto, w.to, w.from, &w.bytes);
            return;
        }
        let Some(i) = self
            .peers
            .iter()
            .position(|p| p.addr == w.to && p.proto == w.proto)
        else {
            return;
        };
        let p = &mut self.peers[i];
        let Ok(receive) = Receive::new(w.proto, w.from, w.to, &w.bytes) else {
            return;
        };
        if p.rtc
            .handle_input(Input::Receive(self.now, receive))
            .is_err()
        {
            p.errors += 1;
        }
        // One input, then drain: str0m keeps one pending RTP packet.
        self.drain_peer(i);
    }

    /// A signal reaches a client (signaling is not delayed): an answer is applied.
    fn signal(&mut self, id: ParticipantId, message: ServerMessage) {
        let Some(i) = self.peers.iter().position(|p| p.id == id) else {
            self.signals.push((id, message));
            return;
        };
        let p = &mut self.peers[i];
        if let ServerMessage::Answer { sdp, .. } = &message
            && let Some(pending) = p.pending.take()
        {
            let accepted = SdpAnswer::from_sdp_string(sdp)
                .ok()
                .and_then(|a| p.rtc.sdp_api().accept_answer(pending, a).ok());
            if accepted.is_none() {
                self.bad_answers += 1;
            }
        }
        if let ServerMessage::Error(_) = &message {
            // An offer refused: it is no longer pending.
            p.pending = None;
        }
        p.inbox.push(message);
        self.drain_peer(i);
    }

    /// Polls client `i` until its timeout: what it sends goes on the wire.
    fn drain_peer(&mut self, i: usize) {
        loop {
            let p = &mut self.peers[i];
            match p.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let w = Wire {
                        proto: t.proto,
                        from: t.source,
                        to: t.destination,
                        bytes: t.contents.to_vec(),
                    };
                    self.send(w);
                }
                Ok(Output::Event(Event::RtpPacket(_))) => p.received += 1,
                Ok(Output::Event(Event::KeyframeRequest(req))) => {
                    p.keyframe_requests.push((req.mid, req.rid));
                }
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(at)) => {
                    p.deadline = at;
                    return;
                }
                Err(_) => {
                    p.errors += 1;
                    return;
                }
            }
        }
    }

    /// Advances virtual time by `duration` from one event to the next (the shard's and
    /// the clients' deadlines, datagrams arriving), without media.
    pub fn advance(&mut self, duration: Duration) {
        let end = self.now + duration;
        for _ in 0..MAX_EVENTS {
            let arrival = self.in_flight.front().map(|(at, _)| *at);
            let next = self
                .peers
                .iter()
                .map(|p| p.deadline)
                .chain(arrival)
                .fold(self.deadline, Instant::min);
            if next >= end {
                break;
            }
            // Time always moves on, if only by a microsecond, as it does in a driver.
            self.now = next.max(self.now + Duration::from_micros(1));
            self.fire();
        }
        self.now = end;
        self.fire();
    }

    /// Hands the time to every `Rtc` whose deadline passed and to the shard, then pumps.
    fn fire(&mut self) {
        for p in &mut self.peers {
            if p.deadline <= self.now {
                let _ = p.rtc.handle_input(Input::Timeout(self.now));
            }
        }
        self.shard.handle_timeout(self.now);
        self.pump();
    }

    /// Advances virtual time by `duration` in steps of [`STEP`], each client that is
    /// connected sending its media (`media`) at every step.
    pub fn run(&mut self, duration: Duration, mut media: impl FnMut(&mut Peer, Instant, u64)) {
        let end = self.now + duration;
        let mut step = 0u64;
        while self.now < end {
            self.advance(STEP.min(end - self.now));
            step += 1;
            for p in &mut self.peers {
                if p.rtc.is_connected() {
                    media(p, self.now, step);
                }
            }
            self.pump();
        }
    }

    /// Whether every client's transport (ICE and DTLS) is up.
    pub fn all_connected(&self) -> bool {
        self.peers.iter().all(|p| p.rtc.is_connected())
    }

    /// The call the datagram targets start from: a publisher on UDP (a microphone and a
    /// camera in three simulcast layers) and a subscriber on ICE-TCP that receives both,
    /// connected. `record` keeps what crosses the wire (the seed generator).
    pub fn two_party(record: bool) -> Call {
        let mut call = Call::new(ShardConfig::default());
        if record {
            call.wire = Some(Vec::new());
        }
        let publisher = call.join("publisher", Grants::default(), Protocol::Udp);
        call.offer(
            publisher,
            &[
                (Source::Microphone, &[][..]),
                (Source::Camera, &["q", "h", "f"][..]),
            ],
            false,
        );
        let subscriber = call.join("subscriber", Grants::default(), Protocol::Tcp);
        call.offer(subscriber, &[], true);
        for _ in 0..200 {
            if call.all_connected() {
                break;
            }
            call.advance(Duration::from_millis(10));
        }
        assert!(
            call.all_connected() && call.bad_answers == 0,
            "the fixed call of the fuzz targets did not connect"
        );
        call
    }
}

/// An RTP packet a client sends through its own `Rtc` (so it goes out encrypted).
#[derive(Debug, Clone)]
pub struct RtpOut<'a> {
    pub mid: Mid,
    pub rid: Option<Rid>,
    pub pt: str0m::media::Pt,
    pub seq: u64,
    pub time: u32,
    pub marker: bool,
    pub audio_level: Option<i8>,
    pub dd: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// Writes `packet` on the client's send stream of its m-line and layer; false if it has
/// none.
pub fn send_rtp(p: &mut Peer, now: Instant, packet: &RtpOut) -> bool {
    let mut exts = ExtensionValues {
        audio_level: packet.audio_level,
        voice_activity: packet.audio_level.map(|l| l > -127),
        ..ExtensionValues::default()
    };
    if let Some(dd) = packet.dd {
        exts.user_values.set(sfu_core::svc::DdBytes(dd.into()));
    }
    let mut api = p.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(packet.mid, packet.rid) else {
        return false;
    };
    tx.write_rtp(
        RtpWrite::new(
            packet.pt,
            SeqNo::from(packet.seq),
            packet.time,
            now,
            packet.payload.to_vec(),
        )
        .marker(packet.marker)
        .ext_vals(exts)
        .nackable(true),
    );
    true
}
