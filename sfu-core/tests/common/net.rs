//! The shard and its clients on a virtual network, stepped in virtual time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocol::{
    Grants, Join, Kind, LeaveReason, ParticipantId, Publish, Request, ServerMessage, Source,
    Subscribe, TrackId, TrackQuality, Transport,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sfu_core::forwarder::DropReason;
use sfu_core::shard::{
    LocalCandidates, RelayDrop, Shard, ShardConfig, ShardOutput, TapRecord, relay_fits,
};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Input, Rtc};

use super::*;

pub(crate) const SERVER: &str = "192.0.2.1:16384";

pub const STEP: Duration = Duration::from_millis(5);

/// The bound of a participant's event queue between the core and its signaling session
/// (signaling's `EVENT_QUEUE`), as the driver applies it: a signal that finds it full puts
/// the participant behind (messages about the others dropped, its own answers kept) until
/// it has room again, then `resync`; a relay is delivered only while [`relay_fits`], and
/// not while it is behind.
pub const EVENT_QUEUE: usize = 1024;

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
    /// How often `run` woke the shard for its own deadlines (a driver's wakes).
    pub wakes: u64,
    /// The next join asks to hear of the rest of the audience (`join.audience`).
    pub join_audience: bool,
    /// The next join says it sends frames in the clear (`join.e2ee` false); others
    /// say they encrypt.
    pub join_in_clear: bool,
    /// The next join's client negotiates no RTP header extensions (its packets carry a
    /// bare 12-byte header).
    pub join_without_extensions: bool,
    /// The next join's client negotiates no transport-wide congestion control: the
    /// server hears of its downlink only from the REMB it sends (as aiortc does).
    pub join_without_twcc: bool,
    /// The room of the next join; `room` when `None`.
    pub join_room: Option<String>,
    /// The group the next [`Net::join`] names (then the default group again), and its
    /// `max_participants`.
    pub join_group: Option<String>,
    pub join_max_participants: Option<u32>,
    /// What the shard's tap recorded (with `ShardConfig::tap`).
    pub tapped: Vec<TapRecord>,
    /// The call events the shard reported, in order.
    pub events: Vec<protocol::admin::CallEvent>,
    /// The longest run of datagrams the shard sent one address at one instant, one after
    /// the other: how long everyone else's waited behind it (its driver sends them in
    /// this order).
    pub longest_run: HashMap<SocketAddr, usize>,
    run: Option<(Instant, SocketAddr, usize)>,
    /// Media and time go into the shard through [`in_shard`] (`bench cost` counts the
    /// instructions there, the clients' own left out).
    pub measure: bool,
}

impl Net {
    pub fn new(config: ShardConfig) -> Net {
        // The shard's log, filtered as SANS_IO_LOG says (tracing's EnvFilter syntax).
        if let Ok(filter) = std::env::var("SANS_IO_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_timer(VirtualTime)
                .with_test_writer()
                .try_init();
        }
        let now = Instant::now();
        Net {
            now,
            // Seeded: a failing run can be replayed.
            shard: Shard::new(config, now, StdRng::seed_from_u64(0x5eed)),
            clients: Vec::new(),
            next_id: 1,
            closed: Vec::new(),
            video: VideoShape::default(),
            rng: 0x9e37_79b9_7f4a_7c15,
            step: 0,
            deadline: now,
            wakes: 0,
            join_audience: false,
            join_in_clear: false,
            join_without_extensions: false,
            join_without_twcc: false,
            join_room: None,
            join_group: None,
            join_max_participants: None,
            tapped: Vec::new(),
            events: Vec::new(),
            longest_run: HashMap::new(),
            run: None,
            measure: false,
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
        let mut builder = Rtc::builder().set_rtp_mode(true).set_extension(
            sfu_core::svc::DD_EXTENSION_ID,
            Extension::with_serializer(sfu_core::svc::DD_URI, sfu_core::svc::DdExtension),
        );
        if std::mem::take(&mut self.join_without_extensions) {
            builder = builder.clear_extension_map();
        }
        if std::mem::take(&mut self.join_without_twcc) {
            let mut exts = ExtensionMap::empty();
            for (id, e) in ExtensionMap::standard().iter() {
                if *e != Extension::TransportSequenceNumber {
                    exts.set(id, e.clone());
                }
            }
            builder = builder.set_extension_map(exts).set_extension(
                sfu_core::svc::DD_EXTENSION_ID,
                Extension::with_serializer(sfu_core::svc::DD_URI, sfu_core::svc::DdExtension),
            );
        }
        let mut rtc = builder.build(self.now);
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
            reading: true,
            queued: 0,
            behind: false,
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
            in_flight: VecDeque::new(),
            svc: None,
            slot_mids: Vec::new(),
            slot_messages: 0,
        });
        let join = Join {
            room: self.join_room.take().unwrap_or_else(|| "room".into()),
            identity: name.into(),
            name: name.to_uppercase(),
            grants,
            token_grants: grants,
            group: self
                .join_group
                .take()
                .unwrap_or_else(|| protocol::DEFAULT_GROUP.into()),
            max_participants: self.join_max_participants.take(),
            transport,
            ice_servers: vec![protocol::IceServer {
                urls: vec!["turn:192.0.2.1:3478?transport=udp".into()],
                username: Some(format!("9999999999:{name}")),
                credential: Some("pw".into()),
            }],
            audience: std::mem::take(&mut self.join_audience),
            e2ee: !std::mem::take(&mut self.join_in_clear),
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

    pub(crate) fn offer_with(
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
            // What a bottleneck held until now arrives first, in order.
            while c.in_flight.front().is_some_and(|(at, _)| *at <= self.now) {
                let Some((_, (proto, source, destination, data))) = c.in_flight.pop_front() else {
                    break;
                };
                let receive = Receive::new(proto, source, destination, &data)
                    .expect("server sends well-formed datagrams");
                let _ = c.rtc.handle_input(Input::Receive(self.now, receive));
                drain_client(c, &mut to_server);
            }
            drain_client(c, &mut to_server);
        }
        for _ in 0..10_000 {
            let mut moved = !to_server.is_empty();
            let (now, measure) = (self.now, self.measure);
            for (proto, destination, source, data) in to_server.drain(..) {
                shard_call(measure, &mut self.shard, |s| {
                    s.handle_datagram(now, proto, destination, source, &data);
                });
            }
            loop {
                match shard_call(measure, &mut self.shard, Shard::poll_output) {
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
                        let fate = c.downlink.admit(self.now, t.contents.len(), &mut self.rng);
                        if fate != Fate::Dropped {
                            let b = &t.contents;
                            tracing::trace!(target: "sans_io::link", to = %c.name,
                                len = b.len(), first = ?b.first(), second = ?b.get(1),
                                "datagram passed");
                        }
                        match fate {
                            Fate::Dropped => {
                                let b = &t.contents;
                                tracing::debug!(target: "sans_io::link", to = %c.name,
                                    len = b.len(), first = ?b.first(), second = ?b.get(1),
                                    "datagram dropped");
                                continue;
                            }
                            Fate::At(at) => {
                                let d = (t.proto, t.source, t.destination, t.contents.to_vec());
                                c.in_flight.push_back((at, d));
                                continue;
                            }
                            Fate::Now => {}
                        }
                        let receive = Receive::new(t.proto, t.source, t.destination, &t.contents)
                            .expect("server sends well-formed datagrams");
                        let _ = c.rtc.handle_input(Input::Receive(self.now, receive));
                        // One input, then drain: str0m keeps one pending RTP packet.
                        drain_client(c, &mut to_server);
                    }
                    ShardOutput::Relay(id, message) => {
                        moved = true;
                        let Some(c) = self.clients.iter_mut().find(|c| c.id == id) else {
                            self.shard.counters.drop_relay(RelayDrop::Gone);
                            continue;
                        };
                        if c.behind || (!c.reading && !relay_fits(EVENT_QUEUE - c.queued)) {
                            self.shard.counters.drop_relay(RelayDrop::QueueReserve);
                            continue;
                        }
                        if !c.reading {
                            c.queued += 1;
                        }
                        self.shard.counters.e2ee_relays += 1;
                        c.inbox.push(message);
                    }
                    ShardOutput::Signal(id, message) => {
                        moved = true;
                        let Some(c) = self.clients.iter_mut().find(|c| c.id == id) else {
                            continue;
                        };
                        if !c.reading {
                            // What the driver does with a queue that is full: the
                            // participant falls behind; messages about the others are
                            // dropped, its own answers kept (the driver holds them until
                            // it has room; here they come at once, in order).
                            let own = matches!(
                                message,
                                ServerMessage::Answer { .. }
                                    | ServerMessage::Error(_)
                                    | ServerMessage::Left { .. }
                            );
                            if !c.behind && c.queued == EVENT_QUEUE {
                                c.behind = true;
                            }
                            if c.behind && !own {
                                self.shard.counters.drop(DropReason::SignalQueueFull);
                                continue;
                            }
                            if !c.behind {
                                c.queued += 1;
                            }
                        }
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
                    ShardOutput::Tap(record) => self.tapped.push(record),
                    ShardOutput::Event(event) => self.events.push(event),
                    ShardOutput::Timeout(at) => {
                        self.deadline = at;
                        break;
                    }
                }
            }
            // Those behind with half their queue free again hear of the room anew.
            let caught_up: Vec<ParticipantId> = self
                .clients
                .iter_mut()
                .filter(|c| c.behind && (c.reading || EVENT_QUEUE - c.queued >= EVENT_QUEUE / 2))
                .map(|c| {
                    c.behind = false;
                    c.id
                })
                .collect();
            for id in caught_up {
                shard_call(measure, &mut self.shard, |s| s.resync(now, id));
                moved = true;
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
                self.wakes += 1;
                let now = self.now;
                shard_call(self.measure, &mut self.shard, |s| s.handle_timeout(now));
                self.pump();
            }
            self.now = step_end;
            self.step += 1;
            VIRTUAL_MS.store(self.step * STEP.as_millis() as u64, Ordering::Relaxed);
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
            shard_call(self.measure, &mut self.shard, |s| s.handle_timeout(now));
            self.pump();
        }
    }

    pub fn client(&self, i: usize) -> &Client {
        &self.clients[i]
    }
}

/// Calls `f` on the shard: through [`in_shard`] when `measure` is on.
fn shard_call<R>(measure: bool, shard: &mut Shard, f: impl FnOnce(&mut Shard) -> R) -> R {
    if measure {
        in_shard(shard, f)
    } else {
        f(shard)
    }
}

/// The shard's own work, apart from its clients': while [`Net::measure`] is on, the run's
/// every call into the shard (datagrams, timeouts, outputs) goes through this function,
/// the one that `bench cost` has callgrind count (`--toggle-collect=*in_shard*`). Never
/// inlined, so that it stays a function of its own.
#[inline(never)]
pub fn in_shard<R>(shard: &mut Shard, f: impl FnOnce(&mut Shard) -> R) -> R {
    f(shard)
}

/// A room of `n` (above the loudest-N threshold of 8), everyone publishing a microphone
/// and a simulcast camera (`q`, `h`, `f`), everyone receiving everyone.
pub fn large_room(n: usize, video: VideoShape) -> Net {
    let mut net = Net::new(ShardConfig::default());
    net.video = video;
    for k in 0..n {
        let i = net.join(&format!("p{k}"), everyone());
        net.negotiate_layers(
            i,
            &[
                (Source::Microphone, &[]),
                (Source::Camera, &["q", "h", "f"]),
            ],
        );
    }
    // Earlier joiners learned of later tracks: they renegotiate to receive them.
    for i in 0..n - 1 {
        net.negotiate(i, &[]);
    }
    net
}

pub fn everyone() -> Grants {
    Grants::default()
}

/// The virtual time of the newest net's steps, ms: what its log lines show.
static VIRTUAL_MS: AtomicU64 = AtomicU64::new(0);

/// Log lines stamped with virtual time, seconds since the net started.
struct VirtualTime;

impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let ms = VIRTUAL_MS.load(Ordering::Relaxed);
        write!(w, "{:4}.{:03}", ms / 1000, ms % 1000)
    }
}
