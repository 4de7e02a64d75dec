//! The harness of the sans-IO integration tests: real str0m clients (full ICE,
//! DTLS-SRTP, RTP) and the shard core wired together in virtual time, with no socket and
//! no clock. Links to clients can be capped in bandwidth and lose packets (seeded).
//!
//! Publishers send 50 audio packets a second (with RFC 6464 levels) and 25 video frames a
//! second as VP8 payload descriptors, on each simulcast layer; a keyframe first and then
//! whenever the server asks (PLI). Every payload ends in the publisher's own sequence
//! number; video payloads carry their layer in byte 5.
//!
//! A publisher with `svc` set sends its cameras as one stream of three spatial layers
//! instead: each picture a frame of every layer, marked by a VP9 payload descriptor, or
//! (`Svc::Dd`) by a dependency descriptor over a payload the server cannot read, as an
//! end-to-end encrypting client's.

#![allow(dead_code)] // Each test crate uses part of the harness.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::shard::{LocalCandidates, Shard, ShardConfig, ShardOutput};
use signaling::protocol::{
    ErrorCode, Kind, ParticipantId, Publish, ServerMessage, Source, Subscribe, TrackId, TrackInfo,
    TrackQuality, Transport,
};
use signaling::{Grants, Join, Request};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::{Codec, detect_vp8_keyframe};
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{Extension, ExtensionValues, RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

const SERVER: &str = "192.0.2.1:16384";
pub const STEP: Duration = Duration::from_millis(5);

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
    /// The first packet of a keyframe.
    pub keyframe: bool,
    /// The m-line it came on.
    pub mid: Option<Mid>,
}

/// How publishers send video: packets per frame and bytes per packet, per layer.
#[derive(Debug, Clone, Copy)]
pub struct VideoShape {
    pub packets: [usize; 3],
    pub bytes: [usize; 3],
    /// A frame every this many steps of `STEP` (8: 25 frames a second).
    pub frame_every: u64,
}

impl Default for VideoShape {
    /// About 200 kbit/s, 400 kbit/s and 1 Mbit/s.
    fn default() -> Self {
        VideoShape {
            packets: [1, 2, 5],
            bytes: [1000, 1000, 1000],
            frame_every: 8,
        }
    }
}

/// The network between the server and one client, towards the client: a policer (a
/// token bucket of `cap_bps` with 50 ms of burst) and random loss, both seeded.
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub cap_bps: Option<u64>,
    pub loss: f64,
    tokens: f64,
    last: Option<Instant>,
    /// Datagrams the link dropped, and the bytes it delivered.
    pub dropped: u64,
    pub delivered: u64,
}

impl Link {
    fn admit(&mut self, now: Instant, bytes: usize, rng: &mut u64) -> bool {
        let ok = self.police(now, bytes, rng);
        if ok {
            self.delivered += bytes as u64;
        }
        ok
    }

    fn police(&mut self, now: Instant, bytes: usize, rng: &mut u64) -> bool {
        if self.loss > 0.0 && next_random(rng) < self.loss {
            self.dropped += 1;
            return false;
        }
        let Some(cap) = self.cap_bps else {
            return true;
        };
        let burst = cap as f64 / 8.0 * 0.05;
        let elapsed = self
            .last
            .map_or(0.0, |l| now.saturating_duration_since(l).as_secs_f64());
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * cap as f64 / 8.0).min(burst);
        if self.tokens < bytes as f64 {
            self.dropped += 1;
            return false;
        }
        self.tokens -= bytes as f64;
        true
    }
}

/// A uniform number in [0, 1) from a xorshift state.
pub fn next_random(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
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
    pub inbox: Vec<ServerMessage>,
    pub pending: Option<SdpPendingOffer>,
    pub publish: Vec<(Mid, Source)>,
    pub subscribe: Vec<(Mid, TrackId)>,
    /// Our own track ids, from `answer.published`.
    pub own_tracks: HashMap<Mid, TrackId>,
    pub received: HashMap<TrackId, Vec<Received>>,
    pub keyframe_requests: usize,
    /// Per (m-line, layer): the next sequence number, and whether a keyframe is due.
    next_seq: HashMap<(Mid, u8), u64>,
    keyframe_due: HashMap<(Mid, u8), bool>,
    /// Simulcast layers (rids) of published m-lines.
    pub layers: HashMap<Mid, Vec<String>>,
    /// The audio level its microphone sends (dBov, -127 is silence).
    pub level: i8,
    /// Sends no keyframe when asked (an encoder that is slow to answer).
    pub ignore_keyframe_requests: bool,
    /// The last `layers` message per track: which of its layers it sends.
    pub sending: HashMap<TrackId, Vec<String>>,
    pub downlink: Link,
    /// How its cameras are layered, if as one SVC stream.
    pub svc: Option<Svc>,
    /// Its slot m-lines (`offer.slots`), if it receives on slots; `subscribe` then
    /// follows the server's `slots` messages.
    pub slot_mids: Vec<Mid>,
    /// The `slots` messages it got.
    pub slot_messages: usize,
}

/// How an SVC publisher marks its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Svc {
    /// VP9 payload descriptors with layer indices (RFC 9628).
    Vp9,
    /// Dependency descriptors (an L3T1 structure on keyframes); payloads opaque.
    Dd,
}

/// Spatial layers of an SVC publisher.
pub const SVC_LAYERS: u8 = 3;

/// Writes bits, most significant first.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    fn put(&mut self, n: usize, v: u32) {
        for i in (0..n).rev() {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            let bit = ((v >> i) & 1) as u8;
            *self.bytes.last_mut().expect("a byte") |= bit << (7 - self.bits % 8);
            self.bits += 1;
        }
    }
}

/// A dependency descriptor of an L3T1 stream (template id = spatial layer), with the
/// template structure on a keyframe's first packet.
pub fn dd_l3t1(spatial: u8, start: bool, end: bool, frame: u16, keyframe: bool) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.put(1, start.into());
    w.put(1, end.into());
    w.put(6, spatial.into());
    w.put(16, frame.into());
    if keyframe && start && spatial == 0 {
        w.put(1, 1); // template_dependency_structure_present_flag
        w.put(4, 0); // active decode targets, custom dtis, fdiffs, chains: none
        w.put(6, 0); // template_id_offset
        w.put(5, u32::from(SVC_LAYERS - 1)); // a decode target per spatial layer
        for _ in 1..SVC_LAYERS {
            w.put(2, 2); // the next template is of the next spatial layer
        }
        w.put(2, 3); // no more templates
        for t in 0..SVC_LAYERS {
            for d in 0..SVC_LAYERS {
                w.put(2, if d >= t { 3 } else { 0 }); // required, or not present
            }
        }
        for _ in 0..SVC_LAYERS {
            w.put(1, 0); // no frame diffs
        }
        w.put(2, 0); // ns(DtCnt + 1) = 0: no chains
        w.put(1, 0); // no resolutions
    }
    w.bytes
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

/// The shard and its clients on a virtual network (lossless unless a link says otherwise).
pub struct Net {
    pub now: Instant,
    pub shard: Shard,
    pub clients: Vec<Client>,
    next_id: u64,
    pub closed: Vec<ParticipantId>,
    pub video: VideoShape,
    rng: u64,
    step: u64,
    /// The shard's next deadline, as it last said.
    deadline: Instant,
    /// The next join asks to hear of the rest of the audience (`join.audience`).
    pub join_audience: bool,
    /// The longest run of datagrams the shard sent one address at one instant, one after
    /// the other: how long everyone else's waited behind it (its driver sends them in
    /// this order).
    pub longest_run: HashMap<SocketAddr, usize>,
    run: Option<(Instant, SocketAddr, usize)>,
}

impl Net {
    pub fn new(config: ShardConfig) -> Net {
        let now = Instant::now();
        Net {
            now,
            shard: Shard::new(config, now),
            clients: Vec::new(),
            next_id: 1,
            closed: Vec::new(),
            video: VideoShape::default(),
            rng: 0x9e37_79b9_7f4a_7c15,
            step: 0,
            deadline: now,
            join_audience: false,
            longest_run: HashMap::new(),
            run: None,
        }
    }

    /// The track a client publishes from `source`.
    pub fn track_of(&self, i: usize, source: Source) -> TrackId {
        let c = self.client(i);
        c.publish
            .iter()
            .find(|(_, s)| *s == source)
            .and_then(|(mid, _)| c.own_tracks.get(mid).copied())
            .expect("published")
    }

    /// Sends a `view` for client `i`.
    pub fn view(&mut self, i: usize, pinned: Vec<TrackId>, quality: Vec<TrackQuality>) {
        let id = self.clients[i].id;
        self.shard
            .request(self.now, id, Request::View { pinned, quality });
        self.pump();
    }

    pub fn server() -> SocketAddr {
        SERVER.parse().expect("address")
    }

    /// Joins a client over UDP; returns its index.
    pub fn join(&mut self, name: &str, grants: Grants) -> usize {
        self.join_with(name, grants, Transport::Auto, Protocol::Udp)
    }

    /// Joins a client that reaches the server over `proto`; returns its index.
    pub fn join_with(
        &mut self,
        name: &str,
        grants: Grants,
        transport: Transport,
        proto: Protocol,
    ) -> usize {
        let index = self.clients.len();
        let addr: SocketAddr = format!("198.51.{}.{}:5000", 100 + index / 200, index % 200 + 10)
            .parse()
            .expect("address");
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_extension(
                sfu::svc::DD_EXTENSION_ID,
                Extension::with_serializer(sfu::svc::DD_URI, sfu::svc::DdExtension),
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
        rtc.add_local_candidate(candidate.expect("candidate"));
        let id = ParticipantId(self.next_id);
        self.next_id += 1;
        self.clients.push(Client {
            name: name.into(),
            addr,
            proto,
            rtc,
            id,
            online: true,
            inbox: Vec::new(),
            pending: None,
            publish: Vec::new(),
            subscribe: Vec::new(),
            own_tracks: HashMap::new(),
            received: HashMap::new(),
            keyframe_requests: 0,
            next_seq: HashMap::new(),
            keyframe_due: HashMap::new(),
            layers: HashMap::new(),
            level: -127,
            ignore_keyframe_requests: false,
            sending: HashMap::new(),
            downlink: Link::default(),
            svc: None,
            slot_mids: Vec::new(),
            slot_messages: 0,
        });
        let join = Join {
            room: "room".into(),
            identity: name.into(),
            name: name.to_uppercase(),
            grants,
            transport,
            ice_servers: vec![signaling::protocol::IceServer {
                urls: vec!["turn:192.0.2.1:3478?transport=udp".into()],
                username: Some(format!("9999999999:{name}")),
                credential: Some("pw".into()),
            }],
            audience: std::mem::take(&mut self.join_audience),
        };
        let available = LocalCandidates {
            udp: vec![Net::server()],
            tcp: vec![Net::server()],
        };
        self.shard.join(self.now, id, join, &available);
        self.pump();
        index
    }

    /// Adds sendonly m-lines for `sources` and recvonly ones for every track announced and
    /// not yet subscribed, then offers (like the browser client library).
    pub fn negotiate(&mut self, i: usize, sources: &[Source]) {
        let sources: Vec<(Source, &[&str])> = sources.iter().map(|s| (*s, &[][..])).collect();
        self.negotiate_layers(i, &sources);
    }

    /// [`Net::negotiate`], with simulcast layers (rids, lowest first) for some sources.
    pub fn negotiate_layers(&mut self, i: usize, sources: &[(Source, &[&str])]) {
        self.offer_with(i, sources, None);
    }

    /// Adds sendonly m-lines for `sources` and, the first time, `audio` and `video` slot
    /// m-lines (recvonly), then offers them as `slots`: the server fills them.
    pub fn negotiate_slots(
        &mut self,
        i: usize,
        sources: &[(Source, &[&str])],
        audio: usize,
        video: usize,
    ) {
        self.offer_with(i, sources, Some((audio, video)));
    }

    fn offer_with(
        &mut self,
        i: usize,
        sources: &[(Source, &[&str])],
        slots: Option<(usize, usize)>,
    ) {
        let c = &mut self.clients[i];
        let announced = c.tracks_announced();
        let mut api = c.rtc.sdp_api();
        for (source, layers) in sources {
            let kind = match source.kind() {
                Kind::Audio => MediaKind::Audio,
                Kind::Video => MediaKind::Video,
            };
            let simulcast = (!layers.is_empty()).then(|| {
                let mut s = Simulcast::new();
                for rid in *layers {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            let mid = api.add_media(kind, Direction::SendOnly, None, None, simulcast);
            c.publish.push((mid, *source));
            if !layers.is_empty() {
                c.layers
                    .insert(mid, layers.iter().map(|s| s.to_string()).collect());
            }
        }
        if let Some((audio, video)) = slots
            && c.slot_mids.is_empty()
        {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let n = if kind == MediaKind::Audio {
                    audio
                } else {
                    video
                };
                for _ in 0..n {
                    let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
                    c.slot_mids.push(mid);
                }
            }
        }
        for t in announced {
            if slots.is_some()
                || t.participant_id == c.id
                || c.subscribe.iter().any(|(_, id)| *id == t.track_id)
            {
                continue;
            }
            let kind = match t.kind {
                Kind::Audio => MediaKind::Audio,
                Kind::Video => MediaKind::Video,
            };
            let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
            c.subscribe.push((mid, t.track_id));
        }
        let (offer, pending) = api.apply().expect("changes to offer");
        c.pending = Some(pending);
        let request = Request::Offer {
            sdp: offer.to_sdp_string(),
            publish: c
                .publish
                .iter()
                .map(|(mid, source)| Publish {
                    layers: c.layers.get(mid).cloned().unwrap_or_default(),
                    mid: mid.to_string(),
                    source: *source,
                })
                .collect(),
            subscribe: if slots.is_some() {
                Vec::new()
            } else {
                c.subscribe
                    .iter()
                    .map(|(mid, track_id)| Subscribe {
                        mid: mid.to_string(),
                        track_id: *track_id,
                    })
                    .collect()
            },
            slots: if slots.is_some() {
                c.slot_mids.iter().map(|m| m.to_string()).collect()
            } else {
                Vec::new()
            },
        };
        let id = c.id;
        self.shard.request(self.now, id, request);
        self.pump();
    }

    /// Delivers every pending output until the network is quiet at this instant.
    pub fn pump(&mut self) {
        let mut to_server: Vec<ToServer> = Vec::new();
        for c in self.clients.iter_mut().filter(|c| c.online) {
            drain_client(c, &mut to_server);
        }
        for _ in 0..10_000 {
            let mut moved = !to_server.is_empty();
            for (proto, destination, source, data) in to_server.drain(..) {
                self.shard
                    .handle_datagram(self.now, proto, destination, source, &data);
            }
            loop {
                match self.shard.poll_output() {
                    ShardOutput::Transmit(t) => {
                        moved = true;
                        let run = match self.run {
                            Some((at, to, n)) if at == self.now && to == t.destination => n + 1,
                            _ => 1,
                        };
                        self.run = Some((self.now, t.destination, run));
                        let longest = self.longest_run.entry(t.destination).or_default();
                        *longest = (*longest).max(run);
                        let Some(c) = self
                            .clients
                            .iter_mut()
                            .find(|c| c.addr == t.destination && c.online)
                        else {
                            continue;
                        };
                        assert_eq!(t.proto, c.proto, "{} is reached over {:?}", c.name, c.proto);
                        if !c.downlink.admit(self.now, t.contents.len(), &mut self.rng) {
                            continue;
                        }
                        let receive = Receive::new(t.proto, t.source, t.destination, &t.contents)
                            .expect("server sends well-formed datagrams");
                        let _ = c.rtc.handle_input(Input::Receive(self.now, receive));
                        // One input, then drain: str0m keeps one pending RTP packet.
                        drain_client(c, &mut to_server);
                    }
                    ShardOutput::Signal(id, message) => {
                        moved = true;
                        let Some(c) = self.clients.iter_mut().find(|c| c.id == id) else {
                            continue;
                        };
                        if let ServerMessage::Layers { track_id, active } = &message {
                            c.sending.insert(*track_id, active.clone());
                        }
                        if let ServerMessage::Slots { slots } = &message {
                            c.slot_messages += 1;
                            // A slot emptied keeps its last track: a packet of it may
                            // still be on its way.
                            for s in slots {
                                let (mid, Some(track)) = (Mid::from(s.mid.as_str()), s.track_id)
                                else {
                                    continue;
                                };
                                c.subscribe.retain(|(m, _)| *m != mid);
                                c.subscribe.push((mid, track));
                            }
                        }
                        if let ServerMessage::Answer { sdp, published } = &message {
                            let answer = SdpAnswer::from_sdp_string(sdp).expect("answer parses");
                            let pending = c.pending.take().expect("an offer was pending");
                            c.rtc
                                .sdp_api()
                                .accept_answer(pending, answer)
                                .expect("answer accepted");
                            for p in published {
                                c.own_tracks.insert(Mid::from(p.mid.as_str()), p.track_id);
                            }
                            drain_client(c, &mut to_server);
                        }
                        c.inbox.push(message);
                    }
                    ShardOutput::Closed(id) => self.closed.push(id),
                    ShardOutput::Timeout(at) => {
                        self.deadline = at;
                        break;
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("network never went quiet");
    }

    /// Advances virtual time by `duration`, publishers sending their audio and video.
    pub fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            // The shard's own deadlines inside the step (its pacers ask for the next
            // packet microseconds later), then the step's media.
            let step_end = self.now + STEP;
            while self.deadline < step_end {
                // Time always moves on, if only by a microsecond, as it does in a driver.
                self.now = self.deadline.max(self.now + Duration::from_micros(1));
                self.shard.handle_timeout(self.now);
                self.pump();
            }
            self.now = step_end;
            self.step += 1;
            let (now, step, video) = (self.now, self.step, self.video);
            for c in self
                .clients
                .iter_mut()
                .filter(|c| c.online && c.rtc.is_connected())
            {
                let _ = c.rtc.handle_input(Input::Timeout(now));
                send_media(c, now, step, &video);
            }
            for c in self
                .clients
                .iter_mut()
                .filter(|c| c.online && !c.rtc.is_connected())
            {
                let _ = c.rtc.handle_input(Input::Timeout(now));
            }
            self.shard.handle_timeout(now);
            self.pump();
        }
    }

    pub fn client(&self, i: usize) -> &Client {
        &self.clients[i]
    }
}

pub fn everyone() -> Grants {
    Grants::default()
}

/// Checks that a subscriber's stream of one track has gap-free rewritten sequence numbers
/// that follow the source's, and unchanged timestamps.
pub fn assert_well_forwarded(received: &[Received], what: &str) {
    assert!(
        received.len() > 10,
        "{what}: only {} packets",
        received.len()
    );
    let first = &received[0];
    for pair in received.windows(2) {
        assert_eq!(pair[1].seq_no, pair[0].seq_no + 1, "{what}: sequence gap");
    }
    for r in received {
        assert_eq!(
            r.seq_no - first.seq_no,
            r.source_seq - first.source_seq,
            "{what}: rewritten sequence does not follow the source"
        );
    }
    assert!(first.seq_no < 65_536, "{what}: must start with ROC 0");
    assert!(
        received.windows(2).all(|w| w[1].time > w[0].time),
        "{what}: timestamps must advance"
    );
}

/// Checks that client `i` got no error and receives exactly the tracks `others` publish,
/// each well forwarded; returns how many tracks that is.
pub fn assert_receives_exactly(net: &Net, i: usize, others: &[usize]) -> usize {
    let c = net.client(i);
    assert!(
        c.error_codes().is_empty(),
        "{}: {:?}",
        c.name,
        c.error_codes()
    );
    let mut expected: Vec<TrackId> = others
        .iter()
        .flat_map(|o| net.client(*o).own_tracks.values().copied())
        .collect();
    expected.sort();
    let mut got: Vec<TrackId> = c.received.keys().copied().collect();
    got.sort();
    assert_eq!(
        got, expected,
        "{} receives exactly the others' tracks",
        c.name
    );
    for (track, received) in &c.received {
        assert_well_forwarded(received, &format!("{} <- {track}", c.name));
    }
    expected.len()
}

/// A packet on its way to the server: transport, destination, source, contents.
pub type ToServer = (Protocol, SocketAddr, SocketAddr, Vec<u8>);

/// One step of a publisher: an audio packet every 20 ms, a video frame on each layer the
/// server wants (all of them before its first `layers`) every `frame_every` steps.
fn send_media(c: &mut Client, now: Instant, step: u64, video: &VideoShape) {
    let opus = c.pt(Codec::Opus);
    let vp8 = c.pt(Codec::Vp8);
    for (mid, source) in c.publish.clone() {
        let audio = source.kind() == Kind::Audio;
        if !step.is_multiple_of(if audio { 4 } else { video.frame_every }) {
            continue;
        }
        if let (false, Some(svc)) = (audio, c.svc) {
            send_svc_picture(c, now, step, video, mid, svc);
            continue;
        }
        let rids = c.layers.get(&mid).cloned().unwrap_or_default();
        let track = c.own_tracks.get(&mid).copied();
        let wanted = track.and_then(|t| c.sending.get(&t)).cloned();
        for layer in 0..rids.len().max(1) {
            let rid = rids.get(layer).map(|r| Rid::from(r.as_str()));
            if let (Some(r), Some(wanted)) = (rids.get(layer), &wanted)
                && !wanted.contains(r)
            {
                continue; // Paused by the server.
            }
            let key = (mid, layer as u8);
            let keyframe = std::mem::replace(c.keyframe_due.entry(key).or_insert(true), false);
            let count = if audio { 1 } else { video.packets[layer] };
            for k in 0..count {
                let seq = c.next_seq.entry(key).or_insert(1);
                let mut payload = Vec::new();
                let (pt, clock) = if audio {
                    (opus, 960)
                } else {
                    // X=1, S at a frame's first packet, PID=0; I=1 with a 15-bit picture id;
                    // the payload header's P bit clear on a keyframe.
                    let start = if k == 0 { 0x10 } else { 0 };
                    let p_bit = if keyframe && k == 0 { 0 } else { 1 };
                    payload.extend_from_slice(&[
                        0x80 | start,
                        0x80,
                        0x80,
                        0x01,
                        p_bit,
                        layer as u8,
                    ]);
                    payload.resize(video.bytes[layer].saturating_sub(8).max(6), 0);
                    (vp8, 3600)
                };
                payload.extend_from_slice(&seq.to_be_bytes());
                let frame = if audio {
                    *seq
                } else {
                    step / video.frame_every
                };
                let exts = ExtensionValues {
                    audio_level: audio.then_some(c.level),
                    voice_activity: audio.then_some(c.level > -127),
                    ..ExtensionValues::default()
                };
                let mut api = c.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, rid) else {
                    continue;
                };
                tx.write_rtp(
                    RtpWrite::new(pt, SeqNo::from(*seq), (frame as u32) * clock, now, payload)
                        .marker(k + 1 == count)
                        .ext_vals(exts)
                        .nackable(!audio),
                );
                *seq += 1;
            }
        }
    }
}

/// One picture of an SVC camera: a frame of each spatial layer, `video.packets[s]`
/// packets each, in one stream (one sequence); the marker on the picture's last packet.
fn send_svc_picture(
    c: &mut Client,
    now: Instant,
    step: u64,
    video: &VideoShape,
    mid: Mid,
    svc: Svc,
) {
    let pt = c.pt(match svc {
        Svc::Vp9 => Codec::Vp9,
        Svc::Dd => Codec::Vp8,
    });
    let key = (mid, 0);
    let keyframe = std::mem::replace(c.keyframe_due.entry(key).or_insert(true), false);
    let picture = step / video.frame_every;
    for spatial in 0..SVC_LAYERS {
        let count = video.packets[usize::from(spatial)];
        for k in 0..count {
            let (start, end) = (k == 0, k + 1 == count);
            let seq = c.next_seq.entry(key).or_insert(1);
            let mut exts = ExtensionValues::default();
            let mut payload = match svc {
                Svc::Vp9 => {
                    // I=1 (15-bit picture id), P (inter-picture) unless a keyframe, L=1,
                    // B and E at the layer frame's ends; TID 0, SID, D for layers above 0;
                    // TL0PICIDX; byte 5 (our layer mark) is payload.
                    let p = if keyframe { 0 } else { 0x40 };
                    let b = if start { 0x08 } else { 0 };
                    let e = if end { 0x04 } else { 0 };
                    let d = u8::from(spatial > 0);
                    vec![
                        0x80 | p | 0x20 | b | e,
                        0x80 | (picture >> 8) as u8 & 0x7f,
                        picture as u8,
                        (spatial << 1) | d,
                        picture as u8,
                        spatial,
                    ]
                }
                Svc::Dd => {
                    let dd = dd_l3t1(spatial, start, end, picture as u16, keyframe);
                    exts.user_values.set(sfu::svc::DdBytes(dd.into()));
                    // Opaque (encrypted) bytes, but for our layer mark in byte 5.
                    vec![0xff, 0xff, 0xff, 0xff, 0xff, spatial]
                }
            };
            payload.resize(
                video.bytes[usize::from(spatial)].saturating_sub(8).max(6),
                0xee,
            );
            payload.extend_from_slice(&seq.to_be_bytes());
            let mut api = c.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                return;
            };
            tx.write_rtp(
                RtpWrite::new(pt, SeqNo::from(*seq), (picture as u32) * 3600, now, payload)
                    .marker(end && spatial + 1 == SVC_LAYERS)
                    .ext_vals(exts)
                    .nackable(true),
            );
            *seq += 1;
        }
    }
}

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
                let dd = p.header.ext_vals.user_values.get::<sfu::svc::DdBytes>();
                let keyframe = if let Some(dd) = dd {
                    // The structure rides on a keyframe's first packet.
                    dd.0.len() > 3 && dd.0[3] & 0x80 != 0 && dd.0[0] & 0x80 != 0
                } else if p.header.payload_type == c.pt(Codec::Vp9) {
                    sfu::svc::vp9_layers(&p.payload).is_some_and(|l| l.keyframe)
                } else {
                    video && detect_vp8_keyframe(&p.payload)
                };
                c.received.entry(track).or_default().push(Received {
                    at: p.timestamp,
                    seq_no: *p.seq_no,
                    time: p.header.timestamp,
                    source_seq,
                    layer: if video { p.payload[5] } else { 0 },
                    marker: p.header.marker,
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

/// The layers a subscriber received in the window, in order, each once per run.
pub fn layer_runs(received: &[Received]) -> Vec<u8> {
    let mut runs: Vec<u8> = Vec::new();
    for r in received {
        if runs.last() != Some(&r.layer) {
            runs.push(r.layer);
        }
    }
    runs
}

pub fn between(received: &[Received], from: Instant, to: Instant) -> Vec<Received> {
    received
        .iter()
        .filter(|r| r.at >= from && r.at < to)
        .cloned()
        .collect()
}

/// Every switch from one layer to another (or a resumption) lands on a keyframe's first
/// packet, and the subscriber's sequence numbers have no gap beyond what its link lost.
pub fn assert_switches_at_keyframes(received: &[Received], link_losses: u64, what: &str) {
    let mut in_order = received.to_vec();
    in_order.sort_by_key(|r| r.seq_no);
    in_order.dedup_by_key(|r| r.seq_no);
    // Where the link lost the packets before, the keyframe's first may be among them.
    for pair in in_order
        .windows(2)
        .filter(|w| w[1].seq_no == w[0].seq_no + 1)
    {
        if pair[1].layer != pair[0].layer {
            assert!(
                pair[1].keyframe,
                "{what}: switched {} -> {} off a keyframe",
                pair[0].layer, pair[1].layer
            );
        }
    }
    let mut seqs: Vec<u64> = received.iter().map(|r| r.seq_no).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let span = seqs.last().unwrap() - seqs.first().unwrap() + 1;
    let missing = span - seqs.len() as u64;
    assert!(
        missing <= link_losses,
        "{what}: {missing} sequence numbers never arrived, the link lost only {link_losses}"
    );
}

/// Each of `clients` received nothing but the top layer (2) of `track` since `from`.
pub fn assert_on_top_layer(net: &Net, clients: &[usize], track: TrackId, from: Instant) {
    for &i in clients {
        let got = between(&net.client(i).received[&track], from, net.now);
        assert_eq!(
            layer_runs(&got),
            vec![2],
            "{} on the top layer",
            net.client(i).name
        );
    }
}
