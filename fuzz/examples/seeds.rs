//! The seed generator of the fuzz corpus (`fuzz/corpus/<target>/gen-*`): not a fuzz
//! target. It runs short sans-IO calls with real str0m clients and a real TURN exchange and
//! writes what crossed the wire, in each target's input format (`sfu_fuzz::input`; every
//! structured seed is decoded back and checked as it is written):
//!
//! - the SDP offers the clients made (publishing with simulcast, subscribing, slots), as
//!   shard offers, signaling messages and WHIP/WHEP bodies;
//! - the datagrams the clients sent the shard (STUN, DTLS, SRTP, SRTCP), as raw datagrams
//!   from their own and from unknown addresses; the ICE-TCP client's stream as it was;
//! - the RTP payloads and dependency descriptors the publisher sent, as the sans-IO tests
//!   send them (VP8 simulcast, VP9 and dependency-descriptor SVC), plus H.264 and AV1
//!   payload heads built per their RFCs, as RTP the publisher sends in `shard_datagram`;
//! - the TURN messages of an allocation's life, and the RFC 5769 vectors that
//!   `turn/tests/rfc5769.rs` writes (run it first: `fuzz/seeds.sh` does both).
//!
//! Run it with `fuzz/seeds.sh`. It replaces the `gen-*` files and leaves others alone.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use protocol::{Grants, Request, Source};
use sfu_core::shard::ShardConfig;
use sfu_fuzz::call::{Call, Peer, RtpOut, Wire, send_rtp, server};
use sfu_fuzz::input::Writer;
use sfu_fuzz::ops::{
    CallOp, DdHead, GrantsShape, Named, OfferShape, PublishShape, RtpShape, SourceShape,
    SubscribeShape, TurnMethod, TurnOp,
};
use sfu_fuzz::relay::{self, ALLOCATED, PEERS, Relay, tlvs, xor_peer_value};
use str0m::format::Codec;
use str0m::media::{Mid, Rid};
use str0m::net::Protocol;

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut seeds = Seeds::new(&corpus);
    let rfc5769 = seeds.rfc5769();
    turn(&mut seeds, &rfc5769);
    let recorded = record_two_party_call();
    offers(&mut seeds, &recorded);
    datagrams(&mut seeds, &recorded);
    payloads(&mut seeds, &recorded);
    ice_tcp(&mut seeds, &rfc5769);
    seeds.report();
}

/// Writes seeds, replacing the generator's earlier ones.
struct Seeds {
    corpus: PathBuf,
    cleared: Vec<String>,
    written: HashMap<String, (usize, usize)>,
}

impl Seeds {
    fn new(corpus: &Path) -> Seeds {
        Seeds {
            corpus: corpus.to_path_buf(),
            cleared: Vec::new(),
            written: HashMap::new(),
        }
    }

    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.corpus.join(target);
        if !self.cleared.iter().any(|t| t == target) {
            fs::create_dir_all(&dir).expect("corpus directory");
            for entry in fs::read_dir(&dir).expect("corpus directory").flatten() {
                if entry.file_name().to_string_lossy().starts_with("gen-") {
                    fs::remove_file(entry.path()).expect("an old seed removed");
                }
            }
            self.cleared.push(target.to_string());
        }
        fs::write(dir.join(format!("gen-{name}")), bytes).expect("a seed written");
        let count = self.written.entry(target.to_string()).or_default();
        count.0 += 1;
        count.1 += bytes.len();
    }

    /// The RFC 5769 vectors `turn/tests/rfc5769.rs` wrote.
    fn rfc5769(&self) -> Vec<Vec<u8>> {
        let dir = self.corpus.join("turn_datagram");
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p: &PathBuf| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("rfc5769-"))
        });
        names.sort();
        assert_eq!(
            names.len(),
            4,
            "run `cargo test -p turn --test rfc5769 -- --ignored write_fuzz_seeds` first"
        );
        names
            .iter()
            .map(|p| fs::read(p).expect("a vector"))
            .collect()
    }

    fn report(&self) {
        let mut targets: Vec<_> = self.written.iter().collect();
        targets.sort();
        for (target, (files, bytes)) in targets {
            println!("{target}: {files} seeds, {bytes} bytes");
        }
    }
}

// --- TURN -----------------------------------------------------------------------------

/// The messages of an allocation's life, as a signed client sends them.
fn turn(seeds: &mut Seeds, rfc5769: &[Vec<u8>]) {
    let transport = tlvs(&[(0x0019, &[17, 0, 0, 0])]);
    let permit = tlvs(&[(0x0012, &xor_peer_value(PEERS[1]))]);
    let bind = tlvs(&[
        (0x000c, &[0x40, 0x00, 0, 0]),
        (0x0012, &xor_peer_value(PEERS[0])),
    ]);
    let refresh = tlvs(&[(0x000d, &600u32.to_be_bytes())]);
    let delete = tlvs(&[(0x000d, &0u32.to_be_bytes())]);
    let even = tlvs(&[(0x0019, &[17, 0, 0, 0]), (0x0018, &[0])]);
    let v6 = tlvs(&[(0x0019, &[17, 0, 0, 0]), (0x0017, &[2, 0, 0, 0])]);
    let mut r = Relay::new();
    // What a client sends: requests (signed with a nonce no server issued: they exercise
    // the nonce checks; `turn_session` signs with real ones), indications, ChannelData.
    let mut sent: Vec<(&str, Vec<u8>)> = vec![
        (
            "allocate-unsigned",
            r.request(turn_types::message::ALLOCATE, &transport, None, false),
        ),
        (
            "binding",
            r.request(stun_types::message::BINDING, &[], None, false),
        ),
    ];
    let signer = ("alice", "secret-pw", "a-nonce-of-another-run");
    for (name, method, attrs) in [
        ("allocate", turn_types::message::ALLOCATE, &transport),
        (
            "create-permission",
            turn_types::message::CREATE_PERMISSION,
            &permit,
        ),
        ("channel-bind", turn_types::message::CHANNEL_BIND, &bind),
        ("refresh", turn_types::message::REFRESH, &refresh),
    ] {
        sent.push((name, r.request(method, attrs, Some(signer), false)));
    }
    sent.push(("send-indication", send_indication(PEERS[0], b"hello peer")));
    let mut channel_data = vec![0x40, 0x00, 0x00, 0x0b];
    channel_data.extend_from_slice(b"hello again");
    sent.push(("channel-data", channel_data.clone()));
    let mut padded = channel_data.clone();
    padded.push(0);
    sent.push(("channel-data-padded", padded.clone()));
    for (name, bytes) in &sent {
        seeds.write("turn_datagram", &format!("client-{name}.bin"), bytes);
    }

    // Sessions: a UDP client's allocation from start to end; a TCP client's over its
    // stream; a REST user with SHA-256; quotas and refusals.
    let signed = |client: u8, method, user, sha256| TurnOp::Signed {
        client,
        method,
        user,
        sha256,
    };
    let life = |w: &mut Writer, client: u8, user: u8, sha256: bool| {
        w.head(&signed(client, TurnMethod::Allocate, user, sha256))
            .chunk(&transport);
        w.head(&signed(client, TurnMethod::CreatePermission, user, sha256))
            .chunk(&permit);
        w.head(&signed(client, TurnMethod::ChannelBind, user, sha256))
            .chunk(&bind);
    };
    let mut w = Writer::new();
    life(&mut w, 0, 0, false);
    w.head(&TurnOp::Raw { client: 0 }).chunk(&channel_data);
    w.head(&TurnOp::Raw { client: 0 })
        .chunk(&send_indication(PEERS[1], b"to the other"));
    w.head(&TurnOp::Peer { relay: 0, peer: 0 })
        .chunk(b"from the peer on the channel");
    w.head(&TurnOp::Peer { relay: 0, peer: 1 })
        .chunk(b"from the permitted peer");
    w.head(&TurnOp::Wait { seconds: 301 }).chunk(&[]);
    w.head(&TurnOp::Peer { relay: 0, peer: 1 })
        .chunk(b"after the permission expired");
    w.head(&signed(0, TurnMethod::Refresh, 0, false))
        .chunk(&refresh);
    w.head(&signed(0, TurnMethod::Refresh, 0, false))
        .chunk(&delete);
    seeds.write("turn_session", "udp-allocation-life.bin", &w.finish());

    let mut w = Writer::new();
    life(&mut w, 2, 1, false);
    let mut stream = Vec::new();
    stream.extend_from_slice(&padded);
    stream.extend_from_slice(&send_indication(PEERS[1], b"over tcp"));
    stream.extend_from_slice(&channel_data);
    w.head(&TurnOp::Stream { client: 2 }).chunk(&stream);
    w.head(&TurnOp::Peer { relay: 0, peer: 0 })
        .chunk(b"back over tcp");
    w.head(&TurnOp::Close { client: 2 }).chunk(&[]);
    seeds.write("turn_session", "tcp-allocation-closed.bin", &w.finish());

    let mut w = Writer::new();
    life(&mut w, 3, 2, true);
    w.head(&signed(3, TurnMethod::Allocate, 2, true)).chunk(&v6);
    w.head(&signed(1, TurnMethod::Allocate, 2, false))
        .chunk(&even);
    w.head(&signed(1, TurnMethod::Allocate, 3, false))
        .chunk(&transport);
    w.head(&signed(1, TurnMethod::Allocate, 5, false))
        .chunk(&transport);
    w.head(&signed(1, TurnMethod::Other(0x0fff), 0, false))
        .chunk(&tlvs(&[(0x0003, &[0; 4])]));
    w.head(&TurnOp::Wait { seconds: 3600 }).chunk(&[]);
    seeds.write(
        "turn_session",
        "rest-sha256-quota-refusals.bin",
        &w.finish(),
    );

    let mut w = Writer::new();
    for (i, v) in rfc5769.iter().enumerate() {
        w.head(&TurnOp::Raw { client: i as u8 }).chunk(v);
    }
    seeds.write("turn_session", "rfc5769-vectors.bin", &w.finish());
    let _ = (ALLOCATED, relay::users());
}

/// A Send indication to `peer` carrying `data`.
fn send_indication(peer: &str, data: &[u8]) -> Vec<u8> {
    use stun_types::message::{Message, MessageWrite, MessageWriteExt, MessageWriteVec};
    use turn_types::attribute::{Data, XorPeerAddress};
    let mut w = Message::builder_indication(turn_types::message::SEND, MessageWriteVec::new());
    let t = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(relay::addr(peer), t))
        .expect("an attribute");
    w.add_attribute(&Data::new(data)).expect("an attribute");
    w.finish()
}

// --- A call -----------------------------------------------------------------------------

/// An RTP packet the publisher sent: the index of its m-line among those it publishes,
/// its simulcast layer, codec and payload.
struct Sent {
    publish: usize,
    layer: usize,
    codec: Codec,
    payload: Vec<u8>,
}

/// What a recorded call produced.
struct Recorded {
    /// Offers in the order they were made: (who, the request).
    offers: Vec<(&'static str, Request)>,
    wire: Vec<Wire>,
    /// The RTP the publisher sent.
    rtp: Vec<Sent>,
    publisher: std::net::SocketAddr,
    subscriber: std::net::SocketAddr,
}

/// The two-party call of `shard_datagram`, then one second of media as the sans-IO tests
/// send it (audio with levels, VP8 simulcast with keyframes when asked), recorded.
fn record_two_party_call() -> Recorded {
    let mut call = Call::two_party(true);
    let mut media = Media::default();
    let mut rtp = Vec::new();
    call.run(Duration::from_secs(1), |p, now, step| {
        media.step(p, now, step, &mut rtp)
    });
    // The call carried media: the harness and the shard work as the targets assume.
    let received = call.peers[1].received;
    println!(
        "two-party call: {} RTP packets sent, {received} received",
        rtp.len()
    );
    assert!(
        received > rtp.len() / 4,
        "the subscriber received little of the media"
    );
    let offers = vec![
        ("publisher", offer_of(&call, 0)),
        ("subscriber", offer_of(&call, 1)),
    ];
    Recorded {
        offers,
        wire: call.wire.take().expect("recorded"),
        rtp,
        publisher: call.peers[0].addr,
        subscriber: call.peers[1].addr,
    }
}

/// The offer client `i` made, rebuilt from what it negotiated (the shard has it as this).
fn offer_of(call: &Call, i: usize) -> Request {
    let p = &call.peers[i];
    Request::Offer {
        sdp: p.offer_sdp.clone().expect("an offer was made"),
        publish: p
            .publish
            .iter()
            .map(|(mid, source, rids)| protocol::Publish {
                mid: mid.to_string(),
                source: *source,
                layers: rids.clone(),
            })
            .collect(),
        subscribe: p
            .subscribe
            .iter()
            .map(|(mid, track_id)| protocol::Subscribe {
                mid: mid.to_string(),
                track_id: *track_id,
            })
            .collect(),
        slots: Vec::new(),
    }
}

/// A publisher's media, as the sans-IO tests send it: audio every 20 ms with its level,
/// a VP8 frame on each simulcast layer every 40 ms, a keyframe first and when asked.
#[derive(Default)]
struct Media {
    seq: HashMap<(Mid, usize), u64>,
    keyframe_due: HashMap<(Mid, usize), bool>,
    asked: usize,
}

impl Media {
    fn step(&mut self, p: &mut Peer, now: Instant, step: u64, sent: &mut Vec<Sent>) {
        if p.publish.is_empty() {
            return;
        }
        for (mid, rid) in p.keyframe_requests.drain(self.asked..).collect::<Vec<_>>() {
            let layers = p.publish.iter().find(|x| x.0 == mid).map(|x| x.2.clone());
            let layer = rid
                .and_then(|r| layers?.iter().position(|l| l.as_str() == &*r))
                .unwrap_or(0);
            self.keyframe_due.insert((mid, layer), true);
        }
        let (Some(opus), Some(vp8)) = (p.pt(Codec::Opus), p.pt(Codec::Vp8)) else {
            return;
        };
        for (index, (mid, source, rids)) in p.publish.clone().into_iter().enumerate() {
            let audio = source == Source::Microphone;
            if !step.is_multiple_of(if audio { 4 } else { 8 }) {
                continue;
            }
            for layer in 0..rids.len().max(1) {
                let key = (mid, layer);
                let keyframe =
                    std::mem::replace(self.keyframe_due.entry(key).or_insert(true), false);
                let seq = self.seq.entry(key).or_insert(1);
                let frame = (step / 8) as u16;
                let (pt, codec, time, payload) = if audio {
                    (
                        opus,
                        Codec::Opus,
                        (*seq as u32) * 960,
                        vec![0xfc, 0xff, 0xfe, 0x01, 0x02, 0x03],
                    )
                } else {
                    // X=1, S=1, PID=0; I=1 with a 15-bit picture id; the payload header's
                    // P bit clear on a keyframe; then the layer and filler.
                    let mut v = vec![0x90, 0x80, 0x80 | (frame >> 8) as u8 & 0x7f, frame as u8];
                    v.push(if keyframe { 0x00 } else { 0x01 });
                    v.push(layer as u8);
                    v.resize(200 * (layer + 1), 0xa5);
                    (vp8, Codec::Vp8, u32::from(frame) * 3600, v)
                };
                let rid = rids.get(layer).map(|r| Rid::from(r.as_str()));
                let packet = RtpOut {
                    mid,
                    rid,
                    pt,
                    seq: *seq,
                    time,
                    marker: true,
                    audio_level: audio.then_some(-30),
                    dd: None,
                    payload: &payload,
                };
                if send_rtp(p, now, &packet) {
                    *seq += 1;
                    sent.push(Sent {
                        publish: index,
                        layer,
                        codec,
                        payload,
                    });
                }
            }
        }
    }
}

// --- Offers ---------------------------------------------------------------------------

/// The call's offers, as shard offers, signaling messages and WHIP/WHEP bodies; and a
/// slots offer and a WHIP offer made by clients of their own.
fn offers(seeds: &mut Seeds, recorded: &Recorded) {
    let mut all: Vec<(String, Request)> = recorded
        .offers
        .iter()
        .map(|(who, r)| (who.to_string(), r.clone()))
        .collect();
    // A client that receives on slots (two audio, three video), and one that sends a
    // screen alone.
    let mut call = Call::new(ShardConfig::default());
    let p = call.join("slots", Grants::default(), Protocol::Udp);
    let slots = slots_offer(&mut call, p, 2, 3);
    all.push(("slots".into(), slots));
    let s = call.join("screen", Grants::default(), Protocol::Udp);
    all.push((
        "screen".into(),
        call.offer(s, &[(Source::Screen, &[][..])], false),
    ));

    for (who, request) in &all {
        let Request::Offer {
            sdp,
            publish,
            subscribe,
            slots,
        } = request
        else {
            continue;
        };
        let mids = sfu_fuzz::sdp::mids(sdp);
        let rids = sfu_fuzz::sdp::rids(sdp);
        let named = |name: &str, among: &[&str]| {
            Named::Nth(
                among
                    .iter()
                    .position(|m| *m == name)
                    .expect("a name of the SDP") as u8,
            )
        };
        let shape = OfferShape {
            grants: GrantsShape::ALL,
            publish: publish
                .iter()
                .map(|p| PublishShape {
                    mid: named(&p.mid, &mids),
                    source: match p.source {
                        Source::Microphone => SourceShape::Microphone,
                        Source::Camera => SourceShape::Camera,
                        Source::Screen => SourceShape::Screen,
                    },
                    layers: p.layers.iter().map(|l| named(l, &rids)).collect(),
                })
                .collect(),
            subscribe: subscribe
                .iter()
                // The publisher's tracks in `shard_offer` are 1 to 3, in this order.
                .map(|x| SubscribeShape {
                    mid: named(&x.mid, &mids),
                    track: x.track_id.0 as u8,
                })
                .collect(),
            slots: slots.iter().map(|m| named(m, &mids)).collect(),
        };
        let mut w = Writer::new();
        w.head(&shape).chunk(sdp.as_bytes());
        seeds.write("shard_offer", &format!("{who}.bin"), &w.finish());
        if who == "publisher" {
            // Offered again unchanged, then without the camera's rids listed.
            let mut w = Writer::new();
            w.head(&shape).chunk(sdp.as_bytes());
            w.head(&shape).chunk(sdp.as_bytes());
            let mut fewer = shape.clone();
            fewer.publish.iter_mut().for_each(|p| p.layers.clear());
            w.head(&fewer).chunk(sdp.as_bytes());
            seeds.write("shard_offer", "publisher-renegotiates.bin", &w.finish());
        }

        let json = serde_json::json!({
            "type": "offer",
            "sdp": sdp,
            "publish": publish,
            "subscribe": subscribe,
            "slots": slots,
        });
        seeds.write(
            "protocol_message",
            &format!("offer-{who}.json"),
            json.to_string().as_bytes(),
        );

        // As a WHIP body (first video as the camera, or the screen) or a WHEP one.
        let flags = if who == "publisher" { 1u8 } else { 0 };
        let mut body = vec![flags];
        body.extend_from_slice(sdp.as_bytes());
        seeds.write("whip_offer", &format!("{who}.sdp"), &body);
    }
    for (name, text) in [
        (
            "join",
            r#"{"type":"join","token":"eyJhbGciOiJIUzI1NiJ9.e30.x","transport":"relay","audience":true,"e2ee":true}"#,
        ),
        ("mute", r#"{"type":"mute","track_id":3,"muted":true}"#),
        (
            "view",
            r#"{"type":"view","pinned":[1,2],"quality":[{"track_id":2,"quality":"low"},{"track_id":5,"quality":"medium"}]}"#,
        ),
        (
            "e2ee",
            r#"{"type":"e2ee","to":5,"data":"AAECAwQFBgcICQ=="}"#,
        ),
        ("keyframe", r#"{"type":"keyframe","track_id":7}"#),
        ("leave", r#"{"type":"leave"}"#),
        (
            "unknown-type",
            r#"{"type":"ßßßßßßßßßßßßßßßßßßßßßßßßßßßßßßßß"}"#,
        ),
    ] {
        seeds.write("protocol_message", &format!("{name}.json"), text.as_bytes());
    }
}

/// A client that publishes a microphone and receives on `audio` and `video` slots.
fn slots_offer(call: &mut Call, i: usize, audio: usize, video: usize) -> Request {
    let request = call.offer(i, &[(Source::Microphone, &[][..])], false);
    let Request::Offer { sdp, publish, .. } = request else {
        unreachable!("an offer");
    };
    // Slots are receiving m-lines the client adds itself; str0m's API adds them in a
    // second negotiation, as the browser library does.
    let p = &mut call.peers[i];
    let mut api = p.rtc.sdp_api();
    let mut mids = Vec::new();
    for (kind, n) in [
        (str0m::media::MediaKind::Audio, audio),
        (str0m::media::MediaKind::Video, video),
    ] {
        for _ in 0..n {
            mids.push(api.add_media(kind, str0m::media::Direction::RecvOnly, None, None, None));
        }
    }
    let Some((offer, _pending)) = api.apply() else {
        return Request::Offer {
            sdp,
            publish,
            subscribe: Vec::new(),
            slots: Vec::new(),
        };
    };
    Request::Offer {
        sdp: offer.to_sdp_string(),
        publish,
        subscribe: Vec::new(),
        slots: mids.iter().map(|m| m.to_string()).collect(),
    }
}

// --- Datagrams ------------------------------------------------------------------------

/// What the clients sent the shard, as `shard_datagram` steps.
fn datagrams(seeds: &mut Seeds, recorded: &Recorded) {
    let to_server: Vec<&Wire> = recorded.wire.iter().filter(|w| w.to == server()).collect();
    let kind = |b: &[u8]| match b.first() {
        Some(0..=3) => "stun",
        Some(20..=63) => "dtls",
        Some(128..=191) if b.get(1).is_some_and(|x| (192..=223).contains(x)) => "rtcp",
        Some(128..=191) => "rtp",
        _ => "other",
    };
    let mut by_kind: HashMap<(&str, usize), Vec<&Wire>> = HashMap::new();
    for w in &to_server {
        let peer = usize::from(w.from == recorded.subscriber);
        by_kind.entry((kind(&w.bytes), peer)).or_default().push(w);
    }
    let mut keys: Vec<_> = by_kind.keys().copied().collect();
    keys.sort();
    for (k, peer) in keys {
        // A few of each kind: the first ones, and one from later in the call.
        let list = &by_kind[&(k, peer)];
        let picked: Vec<&&Wire> = list.iter().take(4).chain(list.last()).collect();
        let mut w = Writer::new();
        for d in &picked {
            w.head(&CallOp::FromPeer { peer: peer as u8 })
                .chunk(&d.bytes);
        }
        let who = ["publisher", "subscriber"][peer];
        seeds.write("shard_datagram", &format!("{who}-{k}.bin"), &w.finish());
        if k == "stun" {
            // A binding request replayed from an address the shard has not seen: it
            // names a participant's ufrag and authenticates, so the shard maps the address.
            let mut w = Writer::new();
            w.head(&CallOp::FromStranger {
                host: 9,
                tcp: peer == 1,
            })
            .chunk(&picked[0].bytes);
            w.head(&CallOp::FromStranger {
                host: 9,
                tcp: peer == 1,
            })
            .chunk(&picked[0].bytes);
            seeds.write(
                "shard_datagram",
                &format!("stranger-{who}-stun.bin"),
                &w.finish(),
            );
        }
    }

    // RTP through the publisher's session: the recorded media, then SVC and other codecs.
    let mut w = Writer::new();
    w.head(&CallOp::Wait { ms: 20 }).chunk(&[]);
    for sent in recorded.rtp.iter().take(12) {
        let shape = rtp_shape(sent.publish, sent.layer, sent.codec, false);
        w.head(&CallOp::Rtp(shape)).chunk(&sent.payload);
    }
    w.head(&CallOp::KeyframeRequest { fir: false }).chunk(&[]);
    w.head(&CallOp::View {
        quality: 0,
        pinned: true,
    })
    .chunk(&[]);
    w.head(&CallOp::Wait { ms: 300 }).chunk(&[]);
    seeds.write("shard_datagram", "publisher-vp8-simulcast.bin", &w.finish());

    for (name, codec, pictures) in [
        ("vp9-svc", Codec::Vp9, vp9_svc_pictures()),
        ("dd-svc", Codec::Vp8, dd_svc_pictures()),
        ("h264", Codec::H264, h264_frames()),
        ("av1", Codec::Av1, av1_frames()),
    ] {
        let mut w = Writer::new();
        for (seq, (dd, payload)) in pictures.iter().enumerate() {
            let mut shape = rtp_shape(1, 0, codec, dd.is_some());
            shape.seq = seq as u16 + 1;
            shape.time = (seq as u32 / 3) * 3000;
            w.head(&CallOp::Rtp(shape));
            if let Some(dd) = dd {
                w.chunk(dd);
            }
            w.chunk(payload);
        }
        w.head(&CallOp::Wait { ms: 100 }).chunk(&[]);
        seeds.write(
            "shard_datagram",
            &format!("publisher-{name}.bin"),
            &w.finish(),
        );
    }
    let _ = recorded.publisher;
}

/// The shape of an RTP packet of the two-party call's publisher on its `publish`-th
/// m-line (0 the microphone, 1 the camera with rids q, h, f) and simulcast `layer`.
fn rtp_shape(publish: usize, layer: usize, codec: Codec, dd: bool) -> RtpShape {
    let camera = publish == 1;
    RtpShape {
        mid: publish as u8,
        layer: layer as u8,
        pt: codec_index(codec),
        seq: 1,
        time: 0,
        marker: true,
        level: (!camera).then_some(-30),
        dd,
    }
}

/// The index of `codec` among a str0m client's default codecs.
fn codec_index(codec: Codec) -> u8 {
    let rtc = str0m::Rtc::new(Instant::now());
    rtc.codec_config()
        .params()
        .iter()
        .position(|p| p.spec().codec == codec)
        .expect("a default codec") as u8
}

// --- Payloads -------------------------------------------------------------------------

/// Writes bits, most significant first.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    bits: usize,
}

impl Bits {
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

/// A dependency descriptor of an L3T1 stream as the sans-IO tests write it (template id
/// = spatial layer), with the template structure on a keyframe's first packet.
fn dd_l3t1(spatial: u8, start: bool, end: bool, frame: u16, keyframe: bool) -> Vec<u8> {
    let mut w = Bits::default();
    w.put(1, start.into());
    w.put(1, end.into());
    w.put(6, spatial.into());
    w.put(16, frame.into());
    if keyframe && start && spatial == 0 {
        w.put(1, 1); // template_dependency_structure_present_flag
        w.put(4, 0); // active decode targets, custom dtis, fdiffs, chains: none
        w.put(6, 0); // template_id_offset
        w.put(5, 2); // three decode targets
        w.put(2, 2); // next template: next spatial layer
        w.put(2, 2);
        w.put(2, 3); // no more templates
        for t in 0..3 {
            for d in 0..3 {
                w.put(2, if d >= t { 3 } else { 0 }); // dtis: required, or not present
            }
        }
        for _ in 0..3 {
            w.put(1, 0); // no frame diffs
        }
        w.put(2, 0); // no chains
        w.put(1, 0); // no resolutions
    }
    w.bytes
}

/// An L1T3 structure (templates T0, T1, T2, T2) on a keyframe, as libwebrtc sends for
/// temporal scalability.
fn dd_l1t3_keyframe(frame: u16) -> Vec<u8> {
    let mut w = Bits::default();
    w.put(1, 1);
    w.put(1, 1);
    w.put(6, 0);
    w.put(16, frame.into());
    w.put(1, 1);
    w.put(4, 0);
    w.put(6, 0);
    w.put(5, 2);
    for idc in [1, 1, 0, 3] {
        w.put(2, idc);
    }
    w.bytes
}

/// Two SVC pictures (a keyframe, then a delta) of three spatial layers marked by
/// dependency descriptors over opaque payloads.
fn dd_svc_pictures() -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let mut out = Vec::new();
    for (picture, keyframe) in [(100u16, true), (101, false)] {
        for spatial in 0..3 {
            let dd = dd_l3t1(spatial, true, true, picture, keyframe);
            out.push((Some(dd), vec![0xff, 0xff, 0xff, 0xff, 0xff, spatial]));
        }
    }
    out
}

/// Two VP9 SVC pictures as the sans-IO tests send them: I=1 (15-bit picture id), P unless
/// a keyframe, L=1, B and E; TID 0, SID, D above layer 0; TL0PICIDX.
fn vp9_svc_pictures() -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let mut out = Vec::new();
    for (picture, keyframe) in [(7u16, true), (8, false)] {
        for spatial in 0..3u8 {
            let p = if keyframe { 0 } else { 0x40 };
            let payload = vec![
                0x80 | p | 0x20 | 0x08 | 0x04,
                0x80 | (picture >> 8) as u8 & 0x7f,
                picture as u8,
                (spatial << 1) | u8::from(spatial > 0),
                picture as u8,
                spatial,
            ];
            out.push((None, payload));
        }
    }
    out
}

/// H.264 (RFC 6184): a STAP-A with SPS and PPS, an FU-A start of an IDR slice, a single
/// non-IDR slice.
fn h264_frames() -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let sps = [0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8];
    let pps = [0x68, 0xce, 0x3c, 0x80];
    let mut stap = vec![0x78];
    for nalu in [&sps[..], &pps[..]] {
        stap.extend_from_slice(&(nalu.len() as u16).to_be_bytes());
        stap.extend_from_slice(nalu);
    }
    let fu_a_idr = vec![0x7c, 0x85, 0x88, 0x84, 0x00, 0x33, 0xff];
    let slice = vec![0x41, 0x9a, 0x02, 0x04, 0x00];
    vec![(None, stap), (None, fu_a_idr), (None, slice)]
}

/// AV1 (RTP payload format §4.4): an aggregation header with N=1 (a new coded video
/// sequence) and a sequence header OBU, then a continuation packet.
fn av1_frames() -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let keyframe = vec![
        0x18, 0x0a, 0x0b, 0x00, 0x00, 0x00, 0x24, 0xc4, 0xff, 0xdf, 0x00, 0x68,
    ];
    let delta = vec![0x10, 0x32, 0x00];
    vec![(None, keyframe), (None, delta)]
}

/// The payload and descriptor parsers' seeds.
fn payloads(seeds: &mut Seeds, recorded: &Recorded) {
    let mut w = Writer::new();
    let vp8 = recorded.rtp.iter().filter(|r| r.codec == Codec::Vp8);
    for (i, sent) in vp8.take(16).enumerate() {
        // A switch of layer halfway.
        w.head(&(i == 6)).chunk(&sent.payload);
    }
    seeds.write("payload_descriptor", "vp8-simulcast.bin", &w.finish());
    for (name, frames) in [
        ("vp9-svc", vp9_svc_pictures()),
        ("h264", h264_frames()),
        ("av1", av1_frames()),
    ] {
        let mut w = Writer::new();
        for (_, payload) in frames {
            w.head(&false).chunk(&payload);
        }
        seeds.write("payload_descriptor", &format!("{name}.bin"), &w.finish());
    }

    let mut w = Writer::new();
    for (i, (dd, _)) in dd_svc_pictures().into_iter().enumerate() {
        let head = DdHead {
            switch: i == 3,
            target: Some(2),
        };
        w.head(&head).chunk(&dd.expect("a descriptor"));
    }
    seeds.write("dependency_descriptor", "l3t1.bin", &w.finish());
    let mut w = Writer::new();
    let head = DdHead {
        switch: false,
        target: Some(0),
    };
    w.head(&head).chunk(&dd_l1t3_keyframe(5));
    for t in 1..4u16 {
        let mut b = Bits::default();
        b.put(1, 1);
        b.put(1, 1);
        b.put(6, t.into());
        b.put(16, 5 + u32::from(t));
        w.head(&head).chunk(&b.bytes);
    }
    seeds.write("dependency_descriptor", "l1t3.bin", &w.finish());
}

// --- ICE-TCP ----------------------------------------------------------------------------

/// The stream a str0m client on ICE-TCP sent, as `ice_tcp`'s setup expects it (the first
/// participant of the shard; its ICE credentials fixed); and an RFC 5769 request framed.
fn ice_tcp(seeds: &mut Seeds, rfc5769: &[Vec<u8>]) {
    let mut call = Call::new(ShardConfig::default());
    call.wire = Some(Vec::new());
    let p = call.join("tcp", Grants::default(), Protocol::Tcp);
    call.offer(
        p,
        &[(Source::Microphone, &[][..]), (Source::Camera, &[][..])],
        false,
    );
    for _ in 0..100 {
        if call.all_connected() {
            break;
        }
        call.run(Duration::from_millis(10), |_, _, _| {});
    }
    let mut stream = Vec::new();
    for w in call
        .wire
        .as_ref()
        .expect("recorded")
        .iter()
        .filter(|w| w.to == server())
    {
        stream.extend_from_slice(&(w.bytes.len() as u16).to_be_bytes());
        stream.extend_from_slice(&w.bytes);
    }
    seeds.write("ice_tcp", "client-stream.bin", &stream);
    let mut framed = (rfc5769[0].len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&rfc5769[0]);
    seeds.write("ice_tcp", "rfc5769-request.bin", &framed);
}
