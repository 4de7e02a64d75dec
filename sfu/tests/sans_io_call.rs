//! Sans-IO integration tests: real str0m clients (full ICE, DTLS-SRTP, RTP) and the shard
//! core wired together in virtual time, with no socket and no clock.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::forwarder::DropReason;
use sfu::shard::{LocalCandidates, Shard, ShardConfig, ShardOutput};
use signaling::protocol::{
    ErrorCode, Kind, LeaveReason, ParticipantId, Publish, ServerMessage, Source, Subscribe,
    TrackId, TrackInfo, Transport,
};
use signaling::{Grants, Join, Request};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

const SERVER: &str = "192.0.2.1:16384";
const STEP: Duration = Duration::from_millis(5);

/// One packet as a client received it.
#[derive(Debug, Clone)]
struct Received {
    seq_no: u64,
    time: u32,
    /// The publisher's own sequence number, carried in the payload.
    source_seq: u64,
}

struct Client {
    name: String,
    addr: SocketAddr,
    /// UDP, or TCP for a client on ICE-TCP (an active candidate).
    proto: Protocol,
    rtc: Rtc,
    id: ParticipantId,
    /// Whether the network still carries its packets.
    online: bool,
    inbox: Vec<ServerMessage>,
    pending: Option<SdpPendingOffer>,
    publish: Vec<(Mid, Source)>,
    subscribe: Vec<(Mid, TrackId)>,
    /// Our own track ids, from `answer.published`.
    own_tracks: HashMap<Mid, TrackId>,
    received: HashMap<TrackId, Vec<Received>>,
    keyframe_requests: usize,
    next_seq: HashMap<Mid, u64>,
}

impl Client {
    fn pt(&self, codec: Codec) -> Pt {
        self.rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
            .expect("codec configured")
    }

    fn messages(&self) -> impl Iterator<Item = &ServerMessage> {
        self.inbox.iter()
    }

    fn error_codes(&self) -> Vec<ErrorCode> {
        self.messages()
            .filter_map(|m| match m {
                ServerMessage::Error(e) => Some(e.code),
                _ => None,
            })
            .collect()
    }

    fn tracks_announced(&self) -> Vec<TrackInfo> {
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

/// The shard and its clients on a lossless virtual network.
struct Net {
    now: Instant,
    shard: Shard,
    clients: Vec<Client>,
    next_id: u64,
    closed: Vec<ParticipantId>,
}

impl Net {
    fn new(config: ShardConfig) -> Net {
        let now = Instant::now();
        Net {
            now,
            shard: Shard::new(config, now),
            clients: Vec::new(),
            next_id: 1,
            closed: Vec::new(),
        }
    }

    fn server() -> SocketAddr {
        SERVER.parse().expect("address")
    }

    /// Joins a client over UDP; returns its index.
    fn join(&mut self, name: &str, grants: Grants) -> usize {
        self.join_with(name, grants, Transport::Auto, Protocol::Udp)
    }

    /// Joins a client that reaches the server over `proto`; returns its index.
    fn join_with(
        &mut self,
        name: &str,
        grants: Grants,
        transport: Transport,
        proto: Protocol,
    ) -> usize {
        let index = self.clients.len();
        let addr: SocketAddr = format!("198.51.100.{}:5000", index + 10)
            .parse()
            .expect("address");
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(self.now);
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
    fn negotiate(&mut self, i: usize, sources: &[Source]) {
        let c = &mut self.clients[i];
        let announced = c.tracks_announced();
        let mut api = c.rtc.sdp_api();
        for source in sources {
            let kind = match source.kind() {
                Kind::Audio => MediaKind::Audio,
                Kind::Video => MediaKind::Video,
            };
            let mid = api.add_media(kind, Direction::SendOnly, None, None, None);
            c.publish.push((mid, *source));
        }
        for t in announced {
            if t.participant_id == c.id || c.subscribe.iter().any(|(_, id)| *id == t.track_id) {
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
                    mid: mid.to_string(),
                    source: *source,
                })
                .collect(),
            subscribe: c
                .subscribe
                .iter()
                .map(|(mid, track_id)| Subscribe {
                    mid: mid.to_string(),
                    track_id: *track_id,
                })
                .collect(),
        };
        let id = c.id;
        self.shard.request(self.now, id, request);
        self.pump();
    }

    /// Delivers every pending output until the network is quiet at this instant.
    fn pump(&mut self) {
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
                        let Some(c) = self
                            .clients
                            .iter_mut()
                            .find(|c| c.addr == t.destination && c.online)
                        else {
                            continue;
                        };
                        assert_eq!(t.proto, c.proto, "{} is reached over {:?}", c.name, c.proto);
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
                    ShardOutput::Timeout(_) => break,
                }
            }
            if !moved {
                return;
            }
        }
        panic!("network never went quiet");
    }

    /// Advances virtual time by `duration`, publishers sending 50 audio and 25 video
    /// packets a second.
    fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        let mut tick = 0u64;
        while self.now < end {
            self.now += STEP;
            tick += 1;
            let now = self.now;
            for c in self
                .clients
                .iter_mut()
                .filter(|c| c.online && c.rtc.is_connected())
            {
                let _ = c.rtc.handle_input(Input::Timeout(now));
                let opus = c.pt(Codec::Opus);
                let vp8 = c.pt(Codec::Vp8);
                for (mid, source) in c.publish.clone() {
                    let (pt, every, clock) = match source.kind() {
                        Kind::Audio => (opus, 4, 960),
                        Kind::Video => (vp8, 8, 3600),
                    };
                    if !tick.is_multiple_of(every) {
                        continue;
                    }
                    let seq = c.next_seq.entry(mid).or_insert(1);
                    let mut api = c.rtc.direct_api();
                    let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                        continue;
                    };
                    let payload = seq.to_be_bytes().to_vec();
                    tx.write_rtp(
                        RtpWrite::new(pt, SeqNo::from(*seq), (*seq as u32) * clock, now, payload)
                            .marker(true)
                            .nackable(true),
                    );
                    *seq += 1;
                }
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

    fn client(&self, i: usize) -> &Client {
        &self.clients[i]
    }
}

fn everyone() -> Grants {
    Grants::default()
}

/// Checks that a subscriber's stream of one track has gap-free rewritten sequence numbers
/// that follow the source's, and unchanged timestamps.
fn assert_well_forwarded(received: &[Received], what: &str) {
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
fn assert_receives_exactly(net: &Net, i: usize, others: &[usize]) -> usize {
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

/// Three participants in one room each receive the others' audio and video.
fn three_party_call() -> Net {
    let mut net = Net::new(ShardConfig::default());
    let sources = [Source::Microphone, Source::Camera];
    for name in ["alice", "bob", "carol"] {
        let i = net.join(name, everyone());
        net.negotiate(i, &sources);
    }
    // Earlier joiners learned of later tracks: they renegotiate to receive them.
    net.negotiate(0, &[]);
    net.negotiate(1, &[]);
    net.run(Duration::from_secs(3));
    net
}

#[test]
fn three_clients_receive_each_others_audio_and_video() {
    let net = three_party_call();
    for i in 0..3 {
        let others: Vec<usize> = (0..3).filter(|o| *o != i).collect();
        let tracks = assert_receives_exactly(&net, i, &others);
        assert_eq!(tracks, 4, "two others publish two tracks each");
    }
    assert_eq!(net.shard.sizes(), (1, 3, 6));
}

#[test]
fn a_leaving_participant_is_announced_and_its_tracks_go() {
    let mut net = three_party_call();
    let carol = net.client(2).id;
    let carol_tracks: Vec<TrackId> = net.client(2).own_tracks.values().copied().collect();
    net.shard.leave(net.now, carol);
    net.clients[2].online = false;
    net.pump();
    assert!(net.closed.contains(&carol));
    for i in 0..2 {
        let c = net.client(i);
        assert!(c.messages().any(|m| matches!(m,
            ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Left }
                if *participant_id == carol)));
        for t in &carol_tracks {
            assert!(c.messages().any(|m| matches!(m,
                ServerMessage::TrackUnpublished { track_id } if track_id == t)));
        }
    }
    assert_eq!(net.shard.sizes(), (1, 2, 4));
    // The two who stay keep receiving each other.
    let before = net.client(0).received.values().map(Vec::len).sum::<usize>();
    net.run(Duration::from_secs(1));
    assert!(net.client(0).received.values().map(Vec::len).sum::<usize>() > before);
}

#[test]
fn a_vanished_participant_times_out_and_everyone_is_told() {
    let config = ShardConfig::default();
    let timeout = config.participant_timeout;
    let mut net = three_party_call();
    let bob = net.client(1).id;
    net.clients[1].online = false; // Its network drops everything from now on.
    net.run(timeout + Duration::from_secs(2));
    assert!(net.closed.contains(&bob), "bob removed within the timeout");
    for i in [0, 2] {
        assert!(net.client(i).messages().any(|m| matches!(m,
            ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Timeout }
                if *participant_id == bob)));
    }
    assert_eq!(net.shard.sizes().1, 2);
}

#[test]
fn a_late_joiner_gets_existing_tracks_and_its_keyframe_request_reaches_publishers() {
    let mut net = three_party_call();
    let kf_before: Vec<usize> = net.clients.iter().map(|c| c.keyframe_requests).collect();
    let dave = net.join("dave", everyone());
    let joined_tracks = match net.client(dave).inbox.first() {
        Some(ServerMessage::Joined {
            tracks,
            participants,
            ice_servers,
            ..
        }) => {
            assert_eq!(ice_servers[0].username.as_deref(), Some("9999999999:dave"));
            assert_eq!(participants.len(), 3);
            tracks.len()
        }
        other => panic!("first message {other:?}"),
    };
    assert_eq!(joined_tracks, 6);
    net.negotiate(dave, &[]);
    net.run(Duration::from_secs(2));
    let d = net.client(dave);
    assert_eq!(d.received.len(), 6, "dave receives all six tracks");
    for (track, received) in &d.received {
        assert_well_forwarded(received, &format!("dave <- {track}"));
    }
    for (i, before) in kf_before.iter().enumerate().take(3) {
        assert!(
            net.client(i).keyframe_requests > *before,
            "{} was asked for a keyframe when dave subscribed",
            net.client(i).name
        );
    }
}

#[test]
fn keyframe_requests_are_throttled_per_source() {
    let mut net = three_party_call();
    let alice_video = *net
        .client(0)
        .own_tracks
        .iter()
        .find(|(mid, _)| {
            net.client(0)
                .publish
                .iter()
                .any(|(m, s)| m == *mid && *s == Source::Camera)
        })
        .map(|(_, t)| t)
        .expect("alice publishes video");
    let before = net.client(0).keyframe_requests;
    // Five late joiners within 50 ms all subscribe to alice's camera.
    for n in 0..5 {
        let i = net.join(&format!("late{n}"), everyone());
        net.negotiate(i, &[]);
        net.run(Duration::from_millis(10));
    }
    assert!(
        net.clients[3..]
            .iter()
            .all(|c| c.subscribe.iter().any(|(_, t)| *t == alice_video))
    );
    net.run(Duration::from_millis(150));
    let during = net.client(0).keyframe_requests - before;
    net.run(Duration::from_millis(400));
    let after = net.client(0).keyframe_requests - before;
    assert!(during <= 1, "one request in the first 200 ms, got {during}");
    assert!(
        after >= 2,
        "the pending request is sent when the interval ends, got {after}"
    );
}

#[test]
fn publishing_what_the_token_does_not_grant_is_forbidden() {
    let mut net = Net::new(ShardConfig::default());
    let grants = Grants {
        publish_video: false,
        ..Grants::default()
    };
    let i = net.join("eve", grants);
    net.negotiate(i, &[Source::Microphone, Source::Camera]);
    let c = net.client(i);
    assert_eq!(c.error_codes(), vec![ErrorCode::Forbidden]);
    assert!(
        !c.messages()
            .any(|m| matches!(m, ServerMessage::Answer { .. }))
    );
    assert_eq!(net.shard.sizes().2, 0, "nothing published");
}

#[test]
fn bad_sdp_is_refused_and_the_participant_stays() {
    let mut net = Net::new(ShardConfig::default());
    let i = net.join("mallory", everyone());
    let id = net.client(i).id;
    net.shard.request(
        net.now,
        id,
        Request::Offer {
            sdp: "v=0\r\nthis is not sdp".into(),
            publish: vec![],
            subscribe: vec![],
        },
    );
    net.pump();
    assert_eq!(net.client(i).error_codes(), vec![ErrorCode::BadSdp]);
    // Still in the call: a valid offer now works.
    net.negotiate(i, &[Source::Microphone]);
    assert!(
        net.client(i)
            .messages()
            .any(|m| matches!(m, ServerMessage::Answer { .. }))
    );
}

#[test]
fn the_room_refuses_a_participant_over_capacity() {
    let mut net = Net::new(ShardConfig {
        room_capacity: 2,
        ..ShardConfig::default()
    });
    net.join("a", everyone());
    net.join("b", everyone());
    let c = net.join("c", everyone());
    assert_eq!(net.client(c).error_codes(), vec![ErrorCode::RoomFull]);
    assert!(net.closed.contains(&net.client(c).id));
    assert_eq!(net.shard.sizes().1, 2);
    // The others were not told about the refused one.
    assert!(!net.client(0).messages().any(|m| matches!(m,
        ServerMessage::ParticipantJoined(p) if p.identity == "c")));
}

#[test]
fn garbage_datagrams_are_counted_and_harm_no_call() {
    let mut net = three_party_call();
    let before = net.client(0).received.values().map(Vec::len).sum::<usize>();
    let server = Net::server();
    let stranger: SocketAddr = "203.0.113.9:4000".parse().expect("address");
    let alice = net.client(0).addr;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for n in 0..500 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 1200) as usize;
        let data: Vec<u8> = (0..len).map(|k| (seed >> (k % 56)) as u8).collect();
        // From a stranger, and spoofed from a participant's own address.
        let from = if n % 2 == 0 { stranger } else { alice };
        net.shard
            .handle_datagram(net.now, Protocol::Udp, server, from, &data);
    }
    net.pump();
    let drops = net.shard.counters.drops;
    assert!(drops[DropReason::UnknownSource.index()] >= 250);
    net.run(Duration::from_secs(1));
    let after = net.client(0).received.values().map(Vec::len).sum::<usize>();
    assert!(
        after > before + 50,
        "media still flows: {before} -> {after}"
    );
    assert_eq!(net.shard.sizes(), (1, 3, 6));
}

/// A packet on its way to the server: transport, destination, source, contents.
type ToServer = (Protocol, SocketAddr, SocketAddr, Vec<u8>);

/// Polls a client until its timeout, queueing what it sends and recording what it gets.
fn drain_client(c: &mut Client, to_server: &mut Vec<ToServer>) {
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
                let source_seq = u64::from_be_bytes(p.payload[..8].try_into().expect("8 bytes"));
                c.received.entry(track).or_default().push(Received {
                    seq_no: *p.seq_no,
                    time: p.header.timestamp,
                    source_seq,
                });
            }
            Ok(Output::Event(Event::KeyframeRequest(_))) => c.keyframe_requests += 1,
            Ok(Output::Event(_)) => {}
            Ok(Output::Timeout(_)) => return,
            Err(e) => panic!("{}: {e}", c.name),
        }
    }
}

#[test]
fn a_reused_m_line_continues_its_stream_across_tracks() {
    let mut net = three_party_call();
    let carol = net.client(2).id;
    let track_of = |c: &Client, source: Source| {
        c.publish
            .iter()
            .find(|(_, s)| *s == source)
            .and_then(|(mid, _)| c.own_tracks.get(mid).copied())
            .expect("published")
    };
    let carol_audio = track_of(net.client(2), Source::Microphone);
    let carol_video = track_of(net.client(2), Source::Camera);
    let mid = net
        .client(0)
        .subscribe
        .iter()
        .find(|(_, t)| *t == carol_audio)
        .map(|(m, _)| *m)
        .expect("alice receives carol's audio");
    net.shard.leave(net.now, carol);
    net.clients[2].online = false;
    net.pump();
    let dave = net.join("dave", everyone());
    net.negotiate(dave, &[Source::Microphone, Source::Camera]);
    let dave_id = net.client(dave).id;
    let dave_audio = net
        .client(0)
        .tracks_announced()
        .iter()
        .find(|t| t.participant_id == dave_id && t.kind == Kind::Audio)
        .map(|t| t.track_id)
        .expect("alice was told of dave's audio");
    net.run(Duration::from_millis(500));
    // Alice receives dave's audio on the m-line that carried carol's, like the browser
    // client does, and leaves carol's video m-line idle.
    let alice = &mut net.clients[0];
    alice.subscribe.retain(|(_, t)| *t != carol_video);
    for entry in &mut alice.subscribe {
        if entry.0 == mid {
            entry.1 = dave_audio;
        }
    }
    net.negotiate(0, &[]);
    net.run(Duration::from_secs(2));
    let alice = net.client(0);
    let old = alice.received.get(&carol_audio).expect("carol's audio");
    let new = alice.received.get(&dave_audio).expect("dave's audio");
    let (last, first) = (old.last().expect("packets"), &new[0]);
    assert_eq!(
        first.seq_no,
        last.seq_no + 1,
        "the m-line's sequence goes on"
    );
    let advance = first.time.wrapping_sub(last.time);
    assert!(
        (48_000 / 2..48_000 * 2).contains(&advance),
        "timestamp advanced by the ~1 s between the tracks, in 48 kHz ticks: {advance}"
    );
    assert_well_forwarded(new, "alice <- dave's audio on a reused m-line");
    assert_eq!(
        alice.subscribe.len(),
        4,
        "one m-line reused, one new for dave's video, carol's video idle and out of the list"
    );
}

#[test]
fn a_publish_of_the_wrong_kind_is_refused_before_anything_is_applied() {
    let mut net = Net::new(ShardConfig::default());
    let i = net.join("trudy", everyone());
    let c = &mut net.clients[i];
    let mut api = c.rtc.sdp_api();
    let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    let id = c.id;
    let sdp = offer.to_sdp_string();
    for (mid, source) in [
        (video.to_string(), Source::Microphone),
        ("nope".into(), Source::Camera),
    ] {
        net.shard.request(
            net.now,
            id,
            Request::Offer {
                sdp: sdp.clone(),
                publish: vec![Publish { mid, source }],
                subscribe: vec![],
            },
        );
        net.pump();
    }
    let c = net.client(i);
    let replies: Vec<&ServerMessage> = c
        .messages()
        .filter(|m| matches!(m, ServerMessage::Error(_) | ServerMessage::Answer { .. }))
        .collect();
    assert_eq!(replies.len(), 2, "exactly one reply per offer: {replies:?}");
    for r in replies {
        assert!(matches!(r, ServerMessage::Error(e)
            if e.code == ErrorCode::BadRequest
                && e.request == Some(signaling::protocol::RequestType::Offer)));
    }
    assert_eq!(net.shard.sizes().2, 0, "nothing published");
}

/// The transports of the candidates in the answer a client got.
fn answered_candidate_transports(c: &Client) -> Vec<String> {
    let sdp = c
        .messages()
        .find_map(|m| match m {
            ServerMessage::Answer { sdp, .. } => Some(sdp.clone()),
            _ => None,
        })
        .expect("an answer");
    let mut transports: Vec<String> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .map(|l| {
            let transport = l.split_whitespace().nth(2).expect("transport field");
            let tcptype = l
                .split(" tcptype ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .map(|t| format!(" {t}"));
            format!(
                "{}{}",
                transport.to_lowercase(),
                tcptype.unwrap_or_default()
            )
        })
        .collect();
    transports.sort();
    transports.dedup();
    transports
}

#[test]
fn offered_candidates_follow_the_transport_and_the_force_tcp_grant() {
    let mut net = Net::new(ShardConfig::default());
    let forced = Grants {
        force_tcp: true,
        ..everyone()
    };
    let auto = net.join("auto", everyone());
    let tcp = net.join_with("tcp", forced, Transport::Auto, Protocol::Tcp);
    let relay = net.join_with("relay", everyone(), Transport::Relay, Protocol::Udp);
    let forced_relay = net.join_with("forced-relay", forced, Transport::Relay, Protocol::Udp);
    for i in [auto, tcp, relay, forced_relay] {
        net.negotiate(i, &[Source::Microphone]);
    }
    assert_eq!(
        answered_candidate_transports(net.client(auto)),
        ["tcp passive", "udp"],
        "UDP and passive ICE-TCP; UDP ranks first by priority"
    );
    assert_eq!(
        answered_candidate_transports(net.client(tcp)),
        ["tcp passive"],
        "force_tcp: no UDP candidate at all"
    );
    assert_eq!(answered_candidate_transports(net.client(relay)), ["udp"]);
    assert_eq!(
        answered_candidate_transports(net.client(forced_relay)),
        ["udp"],
        "force_tcp falling back to TURN over TCP/TLS: the relay reaches UDP"
    );
    // Candidate priorities: the UDP host candidate outranks the TCP one.
    let sdp = net
        .client(auto)
        .messages()
        .find_map(|m| match m {
            ServerMessage::Answer { sdp, .. } => Some(sdp.clone()),
            _ => None,
        })
        .unwrap();
    let priority = |transport: &str| -> u32 {
        sdp.lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .find(|l| {
                l.split_whitespace()
                    .nth(2)
                    .unwrap()
                    .eq_ignore_ascii_case(transport)
            })
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(priority("udp") > priority("tcp"), "{sdp}");
}

#[test]
fn a_call_between_an_ice_tcp_client_and_a_udp_client_carries_media_both_ways() {
    let mut net = Net::new(ShardConfig::default());
    let sources = [Source::Microphone, Source::Camera];
    let forced = Grants {
        force_tcp: true,
        ..everyone()
    };
    let udp = net.join("udp", everyone());
    net.negotiate(udp, &sources);
    let tcp = net.join_with("tcp", forced, Transport::Auto, Protocol::Tcp);
    net.negotiate(tcp, &sources);
    net.negotiate(udp, &[]);
    net.run(Duration::from_secs(3));
    for (i, other) in [(udp, tcp), (tcp, udp)] {
        assert_receives_exactly(&net, i, &[other]);
    }
    // The TCP client's packets went both ways over TCP (`pump` checks each transmit's
    // transport against its client's).
    let counters = &net.shard.counters;
    assert!(counters.tcp_rx_packets > 100, "{counters:?}");
    assert!(counters.tcp_tx_packets > 100, "{counters:?}");
    assert!(counters.rx_packets > 100, "{counters:?}");
}
