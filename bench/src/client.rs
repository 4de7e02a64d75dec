//! One simulated client: our real signaling over a WebSocket and real WebRTC (str0m:
//! ICE, DTLS-SRTP, RTCP) over its own UDP socket. It publishes synthetic audio and video
//! (VP8 frames, simulcast layers) whose frames carry a send timestamp, encrypted end to
//! end as a browser's are unless the run is `--plaintext` (keys handed to the others in
//! `e2ee` messages), subscribes to what it is told to, and records what it receives:
//! packets, sequence gaps, forwarding latency, first-media time, frames it could not
//! decrypt.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::e2ee::Codec as FrameCodec;
use crate::frames::{Assembly, Crypt, E2eeCounts, audio_frame, vp8_frame, vp8_packets};
use crate::ws::{next, send};

/// The rids of the simulcast layers, lowest quality first (as the web client names them).
pub const RIDS: [&str; 3] = ["q", "h", "f"];
/// Receive buffer asked for per client socket.
const SOCKET_BUFFER: usize = 1024 * 1024;

/// How often, and how long after a `server_busy` answer to a key message, a client sends
/// its key to everyone again.
const KEY_RESENDS: u32 = 10;
const KEY_RESEND_AFTER: Duration = Duration::from_millis(300);

/// How often, and how long after a `server_busy` or `rate_limited` answer to an offer, a
/// client sends it again (as the browser client library does).
const OFFER_RESENDS: u32 = 20;
const OFFER_RESEND_AFTER: Duration = Duration::from_millis(200);

/// What one client publishes and receives.
#[derive(Debug, Clone)]
pub struct Role {
    /// Audio: 50 packets/s while talking, speech-like spurts, RFC 6464 levels.
    pub audio: bool,
    /// The level (dBov) it talks at, in spurts of 2.5 s with 1.2 s pauses; `None`: it
    /// listens (DTX, one silent packet in 20), as most of a large meeting does.
    pub voice: Option<i8>,
    /// Video (camera or screen) at 30 frames/s: one bitrate (bits/s) per simulcast
    /// layer, lowest first (rids of [`RIDS`]); a single one is no simulcast, none no
    /// video.
    pub video_layers_bps: Vec<u64>,
    /// The video source name: `camera` or `screen`.
    pub video_source: &'static str,
    /// Keyframes at this interval (and whenever the server asks).
    pub keyframe_interval: Duration,
    /// Receives every track announced.
    pub subscribe: bool,
    /// Receives on this many audio and video slot m-lines (`offer.slots`), which the
    /// server fills, instead of one m-line per track.
    pub slots: Option<(usize, usize)>,
}

impl Role {
    pub fn publishes_video(&self) -> bool {
        !self.video_layers_bps.is_empty()
    }

    /// The rids it announces: none for a single layer.
    fn rids(&self) -> Vec<&'static str> {
        if self.video_layers_bps.len() < 2 {
            return Vec::new();
        }
        RIDS.iter()
            .take(self.video_layers_bps.len())
            .copied()
            .collect()
    }
}

/// What the run shares with every client.
#[derive(Clone)]
pub struct Shared {
    pub ws_url: String,
    /// The run's clock origin: payload timestamps are ns since it.
    pub epoch: Instant,
    /// Latency is recorded from then on (everyone joined, past the first keyframes).
    pub measure_from: Instant,
    /// Until when the clients run.
    pub until: Instant,
    /// Clients join with `e2ee` and encrypt every frame (not `--plaintext`).
    pub e2ee: bool,
}

/// What a client measured.
pub struct Stats {
    pub joined: bool,
    /// Token sent to first media packet received.
    pub join_to_first_media: Option<Duration>,
    /// Media connected (ICE and DTLS) to the first video packet received: the start of
    /// a keyframe, since the server starts a subscriber's video at one.
    pub connected_to_first_video: Option<Duration>,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// Sent from `measure_from` to `until`.
    pub window_packets_sent: u64,
    /// Per simulcast layer (lowest first): whether it was sending at the end, as the
    /// server's last `layers` message asked. Empty without simulcast.
    pub layers_sending: Vec<bool>,
    pub packets_received: u64,
    /// Received from `measure_from` to `until`.
    pub window_received: u64,
    pub bytes_received: u64,
    /// Packets missing from the rewritten sequence numbers, per incoming stream.
    pub lost: u64,
    pub keyframe_requests: u64,
    /// Keyframe requests from `measure_from` on.
    pub window_keyframe_requests: u64,
    /// Of those, the ones naming an audio m-line (a keyframe request means nothing for
    /// audio; a server asking for one is worth knowing about).
    pub window_audio_keyframe_requests: u64,
    /// Of those, the ones per simulcast layer (lowest first).
    pub window_layer_keyframe_requests: [u64; RIDS.len()],
    /// Forwarding latency (send to receive), microseconds, of every packet of the frames
    /// it received whole (and decrypted).
    pub latency_us: Histogram<u64>,
    /// Frames encrypted, decrypted, and those that were not.
    pub e2ee: E2eeCounts,
    pub error: Option<String>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            joined: false,
            join_to_first_media: None,
            connected_to_first_video: None,
            packets_sent: 0,
            bytes_sent: 0,
            window_packets_sent: 0,
            layers_sending: Vec::new(),
            packets_received: 0,
            window_received: 0,
            bytes_received: 0,
            lost: 0,
            keyframe_requests: 0,
            window_keyframe_requests: 0,
            window_audio_keyframe_requests: 0,
            window_layer_keyframe_requests: [0; RIDS.len()],
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            e2ee: E2eeCounts::default(),
            error: None,
        }
    }
}

/// Sequence tracking of one incoming stream: highest seen and how many arrived.
#[derive(Default)]
struct SeqTrack {
    first: u64,
    highest: u64,
    received: u64,
}

/// One of our published m-lines, as the offer announces it.
struct Publication {
    mid: Mid,
    source: &'static str,
    kind: MediaKind,
    /// Simulcast rids, lowest first; empty for a single stream.
    layers: Vec<&'static str>,
}

/// One synthetic RTP stream we send: an audio m-line, or one layer of a video m-line.
struct Outgoing {
    mid: Mid,
    /// The simulcast layer; `None` for audio and single-stream video.
    rid: Option<Rid>,
    pt: Pt,
    kind: MediaKind,
    /// Video bitrate of this stream, bits/s (unused for audio).
    bps: u64,
    seq: u64,
    frame: u64,
    /// The next video frame's VP8 picture id (15 bits).
    picture_id: u16,
    /// Video frames sent since the last keyframe.
    since_keyframe: u64,
    keyframe_due: bool,
    /// Whether it sends: a layer the server's `layers` message leaves out is paused, as
    /// a browser pauses an encoding (`RTCRtpEncodingParameters.active`).
    active: bool,
    /// Where its RTP clock is zero.
    t0: Instant,
    next_send: Instant,
}

/// Runs one client until `shared.until`; returns what it measured (errors included).
pub async fn run(shared: Arc<Shared>, token: String, role: Role) -> Stats {
    let mut stats = Stats::new();
    if let Err(e) = session(&shared, &token, &role, &mut stats).await {
        stats.error = Some(format!("{e:#}"));
    }
    stats
}

async fn session(
    shared: &Shared,
    token: &str,
    role: &Role,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(shared.ws_url.as_str())
        .await
        .context("WebSocket")?;
    send(
        &mut ws,
        json!({"type": "join", "token": token, "e2ee": shared.e2ee}),
    )
    .await?;
    let joined = loop {
        let m = next(&mut ws)
            .await?
            .context("socket closed before joined")?;
        match m["type"].as_str() {
            Some("joined") => break m,
            Some("error") => bail!("join refused: {m}"),
            _ => {}
        }
    };
    stats.joined = true;
    let me = joined["participant_id"].as_u64().unwrap_or(0);
    let mut announced: Vec<(u64, MediaKind)> = Vec::new();
    let note_track = |t: &Value, announced: &mut Vec<(u64, MediaKind)>| {
        if t["participant_id"].as_u64() == Some(me) {
            return;
        }
        if let Some(id) = t["track_id"].as_u64() {
            let kind = if t["kind"] == "audio" {
                MediaKind::Audio
            } else {
                MediaKind::Video
            };
            announced.push((id, kind));
        }
    };
    // Who publishes each track: a received frame is decrypted with its sender's key.
    let mut owners: HashMap<u64, u64> = HashMap::new();
    let note_owner = |t: &Value, owners: &mut HashMap<u64, u64>| {
        if let (Some(t), Some(p)) = (t["track_id"].as_u64(), t["participant_id"].as_u64()) {
            owners.insert(t, p);
        }
    };
    for t in joined["tracks"].as_array().into_iter().flatten() {
        note_track(t, &mut announced);
        note_owner(t, &mut owners);
    }
    // Our key to everyone already here; newcomers get it when they are announced.
    let mut crypt = Crypt::new(shared.e2ee, role.audio || role.publishes_video())?;
    let mut peers: Vec<u64> = joined["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["participant_id"].as_u64())
        .collect();
    if let Some(key) = crypt.key_message() {
        for &id in &peers {
            send(&mut ws, json!({"type": "e2ee", "to": id, "data": key})).await?;
        }
    }
    // When the server could not queue a key message (`server_busy`, which does not say
    // which), everyone gets the key again a moment later, a bounded number of times.
    let mut key_resend: Option<Instant> = None;
    let mut key_resends = 0;

    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    // A browser's socket buffers are larger than the default 208 KiB: losses at the
    // generator's own sockets would be charged to the server.
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(SOCKET_BUFFER);
    let local = socket.local_addr()?;
    let now = Instant::now();
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp")?);

    // Our m-lines, then one recvonly per announced track.
    let mut publish: Vec<Publication> = Vec::new();
    let mut subscribed: HashMap<u64, Mid> = HashMap::new();
    let mut pending: Option<SdpPendingOffer> = None;
    let mut new_publish = Vec::new();
    if role.audio {
        new_publish.push((MediaKind::Audio, "microphone", Vec::new()));
    }
    if role.publishes_video() {
        new_publish.push((MediaKind::Video, role.video_source, role.rids()));
    }
    // Our track ids (the answers' `published`) to our m-lines, and the layers the
    // server's last `layers` message for each m-line listed.
    let mut track_mids: HashMap<u64, Mid> = HashMap::new();
    let mut wanted_layers: HashMap<Mid, Vec<Rid>> = HashMap::new();
    if !role.subscribe {
        announced.clear();
    }
    let mut slot_mids: Vec<Mid> = Vec::new();
    let mut m = MLines {
        publish: &mut publish,
        subscribed: &mut subscribed,
        slots: &mut slot_mids,
        want_slots: role.slots.filter(|_| role.subscribe),
    };
    // The offer in flight, sent again when the server could not take it now.
    let mut last_offer: Option<Value> = None;
    let mut offer_resend: Option<Instant> = None;
    let mut offer_resends = 0;
    if let Some((message, p)) = m.offer(&mut rtc, &new_publish, &mut announced) {
        pending = Some(p);
        last_offer = Some(message.clone());
        send(&mut ws, message).await?;
    }
    let mut offer_in_flight = pending.is_some();
    // The track each receiving m-line carries: from our subscriptions, or the server's
    // `slots` messages.
    let mut mid_tracks: HashMap<Mid, u64> = subscribed.iter().map(|(t, m)| (*m, *t)).collect();
    let mut assemblies: HashMap<Ssrc, Assembly> = HashMap::new();
    // Video tracks whose frames came before their sender's key, by sender: a keyframe is
    // asked for when the key comes.
    let mut key_wanted: HashMap<u64, Vec<u64>> = HashMap::new();

    let mut outgoing: Vec<Outgoing> = Vec::new();
    let mut tracks: HashMap<Ssrc, SeqTrack> = HashMap::new();
    let mut renegotiate = false;
    let mut buf = vec![0u8; 2000];
    let mut rtc_deadline;
    let mut talking = role.voice.is_some();
    let mut talk_switch = now + Duration::from_millis(1500);
    let mut first_media = false;
    let mut connected_at: Option<Instant> = None;
    loop {
        // Drain the Rtc: transmits out, events handled, its next deadline.
        loop {
            match rtc.poll_output()? {
                Output::Transmit(t) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Output::Timeout(at) => {
                    rtc_deadline = at;
                    break;
                }
                Output::Event(Event::RtpPacket(p)) => {
                    let at = Instant::now();
                    if !first_media {
                        first_media = true;
                        stats.join_to_first_media = Some(at - started);
                    }
                    if let (None, Some(connected)) = (stats.connected_to_first_video, connected_at)
                    {
                        let pt = p.header.payload_type;
                        let video = rtc
                            .codec_config()
                            .params()
                            .iter()
                            .any(|x| x.pt() == pt && x.spec().codec.is_video());
                        if video {
                            stats.connected_to_first_video = Some(at - connected);
                        }
                    }
                    stats.packets_received += 1;
                    if at >= shared.measure_from {
                        stats.window_received += 1;
                    }
                    stats.bytes_received += p.payload.len() as u64;
                    let seq = *p.seq_no;
                    let t = tracks.entry(p.header.ssrc).or_insert_with(|| SeqTrack {
                        first: seq,
                        highest: seq,
                        received: 0,
                    });
                    t.received += 1;
                    t.highest = t.highest.max(seq);
                    t.first = t.first.min(seq);
                    // The frame this packet completes, decrypted: its send time.
                    let pt = p.header.payload_type;
                    let codec = rtc
                        .codec_config()
                        .params()
                        .iter()
                        .find(|x| x.pt() == pt)
                        .map(|x| x.spec().codec);
                    let track = rtc
                        .direct_api()
                        .stream_rx(&p.header.ssrc)
                        .and_then(|rx| mid_tracks.get(&rx.mid()))
                        .copied();
                    let sender = track.and_then(|t| owners.get(&t)).copied();
                    let no_key = crypt.counts.no_key;
                    // When no key decrypts a frame: is a publisher's key still to come?
                    let waiting = |c: &Crypt| owners.values().any(|o| *o != me && !c.knows(*o));
                    let (sent, arrivals) = match codec {
                        Some(Codec::Opus) => (
                            crypt.open(FrameCodec::Opus, sender, &p.payload, waiting),
                            std::slice::from_ref(&at),
                        ),
                        Some(Codec::Vp8) => {
                            let assembly = assemblies.entry(p.header.ssrc).or_default();
                            let sent = assembly
                                .push(
                                    seq,
                                    p.header.timestamp,
                                    p.header.marker,
                                    &p.payload,
                                    at,
                                    &mut crypt.counts.incomplete,
                                )
                                .and_then(|frame| {
                                    crypt.open(FrameCodec::Vp8, sender, frame, waiting)
                                });
                            (sent, &assembly.arrivals[..])
                        }
                        _ => (None, &[][..]),
                    };
                    // A video frame that came before its sender's key: as a browser does,
                    // ask for a keyframe once the key is there.
                    if crypt.counts.no_key > no_key
                        && codec == Some(Codec::Vp8)
                        && let (Some(track), Some(sender)) = (track, sender)
                    {
                        let tracks = key_wanted.entry(sender).or_default();
                        if !tracks.contains(&track) {
                            tracks.push(track);
                        }
                    }
                    if let Some(sent) = sent {
                        for arrived in arrivals.iter().filter(|a| **a >= shared.measure_from) {
                            let ns = arrived.duration_since(shared.epoch).as_nanos() as u64;
                            let us = ns.saturating_sub(sent) / 1000;
                            let _ = stats.latency_us.record(us.max(1));
                        }
                    }
                }
                Output::Event(Event::KeyframeRequest(r)) => {
                    stats.keyframe_requests += 1;
                    if Instant::now() >= shared.measure_from {
                        stats.window_keyframe_requests += 1;
                        let audio = publish
                            .iter()
                            .any(|p| p.mid == r.mid && p.kind == MediaKind::Audio);
                        if audio {
                            stats.window_audio_keyframe_requests += 1;
                        }
                        let layer = r.rid.and_then(|rid| RIDS.iter().position(|x| *x == &*rid));
                        if let Some(i) = layer {
                            stats.window_layer_keyframe_requests[i] += 1;
                        }
                    }
                    if let Some(o) = outgoing
                        .iter_mut()
                        .find(|o| o.mid == r.mid && o.rid == r.rid)
                    {
                        o.keyframe_due = true;
                    }
                }
                Output::Event(Event::Connected) => connected_at = Some(Instant::now()),
                Output::Event(_) => {}
            }
        }
        if !rtc.is_alive() {
            bail!("WebRTC session ended");
        }
        if outgoing.is_empty() && rtc.is_connected() {
            let params: Vec<(Pt, Codec)> = rtc
                .codec_config()
                .params()
                .iter()
                .map(|p| (p.pt(), p.spec().codec))
                .collect();
            let pt_of = |c: Codec| params.iter().find(|(_, x)| *x == c).map(|(pt, _)| *pt);
            let t0 = Instant::now();
            for p in &publish {
                let pt = match p.kind {
                    MediaKind::Audio => pt_of(Codec::Opus),
                    MediaKind::Video => pt_of(Codec::Vp8),
                };
                let Some(pt) = pt else { continue };
                // One stream per layer; a single stream has no rid.
                let rids: Vec<Option<Rid>> = if p.layers.is_empty() {
                    vec![None]
                } else {
                    p.layers.iter().map(|r| Some(Rid::from(*r))).collect()
                };
                for (i, rid) in rids.into_iter().enumerate() {
                    let active = match (rid, wanted_layers.get(&p.mid)) {
                        (Some(rid), Some(wanted)) => wanted.contains(&rid),
                        _ => true,
                    };
                    outgoing.push(Outgoing {
                        mid: p.mid,
                        rid,
                        pt,
                        kind: p.kind,
                        bps: role.video_layers_bps.get(i).copied().unwrap_or(0),
                        seq: 1,
                        frame: 0,
                        picture_id: rand::random::<u16>() & 0x7fff,
                        since_keyframe: 0,
                        keyframe_due: true,
                        active,
                        t0,
                        next_send: t0,
                    });
                }
            }
        }
        let next_send = outgoing
            .iter()
            .filter(|o| o.active)
            .map(|o| o.next_send)
            .min();
        let wake = next_send
            .map_or(rtc_deadline, |s| s.min(rtc_deadline))
            .min(key_resend.unwrap_or(shared.until))
            .min(offer_resend.unwrap_or(shared.until))
            .min(shared.until);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, from): (usize, SocketAddr) = r?;
                if let Ok(receive) = Receive::new(Protocol::Udp, from, local, &buf[..n]) {
                    rtc.handle_input(Input::Receive(Instant::now(), receive))?;
                }
            }
            m = next(&mut ws) => {
                let Some(m) = m? else { bail!("signaling closed") };
                match m["type"].as_str() {
                    Some("answer") => {
                        let answer = SdpAnswer::from_sdp_string(m["sdp"].as_str().unwrap_or(""))?;
                        if let Some(p) = pending.take() {
                            rtc.sdp_api().accept_answer(p, answer)?;
                        }
                        offer_in_flight = false;
                        for p in m["published"].as_array().into_iter().flatten() {
                            let (mid, id) = (p["mid"].as_str(), p["track_id"].as_u64());
                            if let (Some(mid), Some(id)) = (mid, id) {
                                track_mids.insert(id, Mid::from(mid));
                            }
                        }
                    }
                    Some("layers") => {
                        let mid = m["track_id"].as_u64().and_then(|id| track_mids.get(&id));
                        if let Some(&mid) = mid {
                            let wanted: Vec<Rid> = m["active"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(Value::as_str)
                                .map(Rid::from)
                                .collect();
                            let now = Instant::now();
                            for o in outgoing.iter_mut().filter(|o| o.mid == mid) {
                                let Some(rid) = o.rid else { continue };
                                let on = wanted.contains(&rid);
                                if on && !o.active {
                                    // Resumes with a keyframe, as an encoder does.
                                    o.keyframe_due = true;
                                    o.next_send = now;
                                }
                                o.active = on;
                            }
                            wanted_layers.insert(mid, wanted);
                        }
                    }
                    // Slots need no new offer: the server fills them.
                    Some("track_published") => {
                        note_owner(&m, &mut owners);
                        if role.subscribe && role.slots.is_none() {
                            note_track(&m, &mut announced);
                            renegotiate = true;
                        }
                    }
                    // Fell behind (the server dropped messages that did not fit): the
                    // tracks it does not know of yet are announced, new participants
                    // get its key.
                    Some("resync") => {
                        for t in m["tracks"].as_array().into_iter().flatten() {
                            let known = t["track_id"]
                                .as_u64()
                                .is_some_and(|id| owners.contains_key(&id));
                            note_owner(t, &mut owners);
                            if !known && role.subscribe && role.slots.is_none() {
                                note_track(t, &mut announced);
                                renegotiate = true;
                            }
                        }
                        for p in m["participants"].as_array().into_iter().flatten() {
                            let Some(to) = p["participant_id"].as_u64() else {
                                continue;
                            };
                            if peers.contains(&to) {
                                continue;
                            }
                            peers.push(to);
                            if let Some(key) = crypt.key_message() {
                                send(&mut ws, json!({"type": "e2ee", "to": to, "data": key}))
                                    .await?;
                            }
                        }
                    }
                    Some("slots") => {
                        for slot in m["slots"].as_array().into_iter().flatten() {
                            let Some(mid) = slot["mid"].as_str().map(Mid::from) else {
                                continue;
                            };
                            match slot["track_id"].as_u64() {
                                Some(t) => mid_tracks.insert(mid, t),
                                None => mid_tracks.remove(&mid),
                            };
                        }
                    }
                    Some("participant_joined") => {
                        let to = m["participant_id"].as_u64();
                        peers.extend(to);
                        if let (Some(to), Some(key)) = (to, crypt.key_message()) {
                            send(&mut ws, json!({"type": "e2ee", "to": to, "data": key})).await?;
                        }
                    }
                    Some("e2ee") => {
                        let (from, data) = (m["from"].as_u64(), m["data"].as_str());
                        if let (Some(from), Some(data)) = (from, data) {
                            if !crypt.take_key(from, data) {
                                bail!("an e2ee message that is not a key from participant {from}");
                            }
                            for track in key_wanted.remove(&from).unwrap_or_default() {
                                send(&mut ws, json!({"type": "keyframe", "track_id": track})).await?;
                            }
                        }
                    }
                    Some("error") if m["request"] == "e2ee" => match m["code"].as_str() {
                        Some("server_busy") if key_resends < KEY_RESENDS => {
                            key_resend.get_or_insert(Instant::now() + KEY_RESEND_AFTER);
                        }
                        // Its recipient left meanwhile.
                        Some("bad_request") => {}
                        _ => bail!("server error: {m}"),
                    },
                    Some("error")
                        if m["request"] == "offer"
                            && matches!(m["code"].as_str(), Some("server_busy" | "rate_limited"))
                            && offer_resends < OFFER_RESENDS =>
                    {
                        offer_resends += 1;
                        offer_resend.get_or_insert(Instant::now() + OFFER_RESEND_AFTER);
                    }
                    Some("error") => bail!("server error: {m}"),
                    _ => {}
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if offer_resend.is_some_and(|at| now >= at) {
                    offer_resend = None;
                    if let Some(offer) = &last_offer {
                        send(&mut ws, offer.clone()).await?;
                    }
                }
                if key_resend.is_some_and(|at| now >= at) {
                    key_resend = None;
                    key_resends += 1;
                    if let Some(key) = crypt.key_message() {
                        for &id in &peers {
                            send(&mut ws, json!({"type": "e2ee", "to": id, "data": key})).await?;
                        }
                    }
                }
                if now >= shared.until {
                    let _ = send(&mut ws, json!({"type": "leave"})).await;
                    break;
                }
                if now >= talk_switch && role.voice.is_some() {
                    talking = !talking;
                    talk_switch = now + Duration::from_millis(if talking { 2500 } else { 1200 });
                }
                rtc.handle_input(Input::Timeout(now))?;
                for o in outgoing.iter_mut().filter(|o| o.active && o.next_send <= now) {
                    let (packets, bytes) =
                        send_media(&mut rtc, o, role, talking, shared.epoch, now, &mut crypt)?;
                    stats.packets_sent += packets;
                    stats.bytes_sent += bytes;
                    if now >= shared.measure_from {
                        stats.window_packets_sent += packets;
                    }
                }
            }
        }
        if renegotiate && !offer_in_flight {
            renegotiate = false;
            let mut m = MLines {
                publish: &mut publish,
                subscribed: &mut subscribed,
                slots: &mut slot_mids,
                want_slots: role.slots.filter(|_| role.subscribe),
            };
            if let Some((message, p)) = m.offer(&mut rtc, &[], &mut announced) {
                pending = Some(p);
                offer_in_flight = true;
                last_offer = Some(message.clone());
                send(&mut ws, message).await?;
            }
            for (t, m) in &subscribed {
                mid_tracks.insert(*m, *t);
            }
        }
    }
    stats.layers_sending = outgoing
        .iter()
        .filter(|o| o.rid.is_some())
        .map(|o| o.active)
        .collect();
    stats.lost = tracks
        .values()
        .map(|t| (t.highest - t.first + 1).saturating_sub(t.received))
        .sum();
    stats.e2ee = crypt.counts;
    Ok(())
}

/// Sends what is due on one outgoing stream, each frame encrypted by `crypt` (unless the
/// run is in the clear) before it is split into packets; returns how many packets and
/// payload bytes.
fn send_media(
    rtc: &mut Rtc,
    o: &mut Outgoing,
    role: &Role,
    talking: bool,
    epoch: Instant,
    now: Instant,
    crypt: &mut Crypt,
) -> anyhow::Result<(u64, u64)> {
    let mut api = rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(o.mid, o.rid) else {
        o.next_send = now + Duration::from_millis(20);
        return Ok((0, 0));
    };
    let ns = now.duration_since(epoch).as_nanos() as u64;
    match o.kind {
        MediaKind::Audio => {
            // Opus at 20 ms; while silent, DTX: one packet in 20.
            let ext = ExtensionValues {
                audio_level: Some(if talking {
                    role.voice.unwrap_or(-127)
                } else {
                    -127
                }),
                voice_activity: Some(talking),
                ..ExtensionValues::default()
            };
            let size = if talking { 80 } else { 10 };
            let time = (o.frame * 960) as u32;
            o.frame += if talking { 1 } else { 20 };
            o.next_send = now + Duration::from_millis(if talking { 20 } else { 400 });
            let frame = audio_frame(size, ns);
            let payload = crypt.seal(FrameCodec::Opus, &frame)?.to_vec();
            let bytes = payload.len() as u64;
            let write = RtpWrite::new(o.pt, SeqNo::from(o.seq), time, now, payload)
                .marker(true)
                .ext_vals(ext);
            tx.write_rtp(write);
            o.seq += 1;
            Ok((1, bytes))
        }
        MediaKind::Video => {
            let frames_between = (role.keyframe_interval.as_millis() as u64 * 30 / 1000).max(1);
            let keyframe = o.keyframe_due || o.since_keyframe >= frames_between;
            o.keyframe_due = false;
            o.since_keyframe = if keyframe { 1 } else { o.since_keyframe + 1 };
            let mut bytes = (o.bps / 8 / 30) as usize;
            if keyframe {
                bytes *= 4;
            }
            let frame = vp8_frame(keyframe, bytes, ns);
            let sealed = crypt.seal(FrameCodec::Vp8, &frame)?;
            // 90 kHz from the frame's scheduled capture time: all layers of a frame share it.
            let time = (o.next_send.duration_since(o.t0).as_micros() * 9 / 100) as u32;
            let (mut packets, mut sent) = (0u64, 0u64);
            let mut payloads = vp8_packets(sealed, o.picture_id).peekable();
            while let Some(payload) = payloads.next() {
                sent += payload.len() as u64;
                let last = payloads.peek().is_none();
                let write = RtpWrite::new(o.pt, SeqNo::from(o.seq), time, now, payload)
                    .marker(last)
                    .nackable(true);
                tx.write_rtp(write);
                o.seq += 1;
                packets += 1;
            }
            o.frame += 1;
            o.picture_id = (o.picture_id + 1) & 0x7fff;
            o.next_send += Duration::from_micros(33_333);
            if o.next_send < now {
                o.next_send = now + Duration::from_micros(33_333);
            }
            Ok((packets, sent))
        }
    }
}

/// The client's m-lines: what it publishes, and the track each receiving one carries.
struct MLines<'a> {
    publish: &'a mut Vec<Publication>,
    subscribed: &'a mut HashMap<u64, Mid>,
    /// Slot m-lines, added at the first offer when `want_slots` (audio, video) says so.
    slots: &'a mut Vec<Mid>,
    want_slots: Option<(usize, usize)>,
}

impl MLines<'_> {
    /// Adds sendonly m-lines for `new_publish` (kind, source, simulcast rids) and a
    /// recvonly one per track of `announced` (emptied), then makes the offer: its `offer`
    /// message and pending state, or `None` when nothing changed.
    fn offer(
        &mut self,
        rtc: &mut Rtc,
        new_publish: &[(MediaKind, &'static str, Vec<&'static str>)],
        announced: &mut Vec<(u64, MediaKind)>,
    ) -> Option<(Value, SdpPendingOffer)> {
        let mut api = rtc.sdp_api();
        for (kind, source, layers) in new_publish {
            let simulcast = (!layers.is_empty()).then(|| {
                let mut s = Simulcast::new();
                for rid in layers {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            let mid = api.add_media(*kind, Direction::SendOnly, None, None, simulcast);
            self.publish.push(Publication {
                mid,
                source,
                kind: *kind,
                layers: layers.clone(),
            });
        }
        if let Some((audio, video)) = self.want_slots {
            announced.clear();
            if self.slots.is_empty() {
                for (kind, n) in [(MediaKind::Audio, audio), (MediaKind::Video, video)] {
                    for _ in 0..n {
                        let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
                        self.slots.push(mid);
                    }
                }
            }
        }
        for (id, kind) in announced.drain(..) {
            let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
            self.subscribed.insert(id, mid);
        }
        let (offer, pending) = api.apply()?;
        let mut message = offer_message(offer.to_sdp_string(), self.publish, self.subscribed);
        if !self.slots.is_empty() {
            message["slots"] = json!(self.slots.iter().map(|m| m.to_string()).collect::<Vec<_>>());
        }
        Some((message, pending))
    }
}

fn offer_message(sdp: String, publish: &[Publication], subscribed: &HashMap<u64, Mid>) -> Value {
    let publish: Vec<Value> = publish
        .iter()
        .map(|p| {
            let mut entry = json!({"mid": p.mid.to_string(), "source": p.source});
            if !p.layers.is_empty() {
                entry["layers"] = json!(p.layers);
            }
            entry
        })
        .collect();
    json!({
        "type": "offer",
        "sdp": sdp,
        "publish": publish,
        "subscribe": subscribed.iter().map(|(id, mid)| json!({"mid": mid.to_string(), "track_id": id})).collect::<Vec<_>>(),
    })
}
