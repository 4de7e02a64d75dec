//! One simulated client: our real signaling over a WebSocket and real WebRTC (str0m:
//! ICE, DTLS-SRTP, RTCP) over its own UDP socket. It publishes synthetic audio and video
//! whose payloads carry a send timestamp, subscribes to what it is told to, and records
//! what it receives: packets, sequence gaps, forwarding latency, first-media time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

/// Marks our synthetic payloads: magic, then the send time in ns since the run's epoch.
const MAGIC: u32 = 0x5346_5542; // "SFUB"
const HEADER: usize = 12;
/// Receive buffer asked for per client socket.
const SOCKET_BUFFER: usize = 1024 * 1024;
/// Largest video packet payload.
const MTU_PAYLOAD: usize = 1100;

/// What one client publishes and receives.
#[derive(Debug, Clone)]
pub struct Role {
    /// Audio: 50 packets/s while talking, speech-like spurts, RFC 6464 levels.
    pub audio: bool,
    /// Video (camera or screen) at this bitrate, 30 frames/s.
    pub video_bps: Option<u64>,
    /// The video source name: `camera` or `screen`.
    pub video_source: &'static str,
    /// Keyframes at this interval (and whenever the server asks).
    pub keyframe_interval: Duration,
    /// Receives every track announced.
    pub subscribe: bool,
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
}

/// What a client measured.
pub struct Stats {
    pub joined: bool,
    /// Token sent to first media packet received.
    pub join_to_first_media: Option<Duration>,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// When it sent its first packet.
    pub sending_since: Option<Instant>,
    pub packets_received: u64,
    /// Received from `measure_from` to `until`.
    pub window_received: u64,
    pub bytes_received: u64,
    /// Packets missing from the rewritten sequence numbers, per incoming stream.
    pub lost: u64,
    pub keyframe_requests: u64,
    /// Keyframe requests from `measure_from` on.
    pub window_keyframe_requests: u64,
    /// Forwarding latency (send to receive), microseconds.
    pub latency_us: Histogram<u64>,
    pub error: Option<String>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            joined: false,
            join_to_first_media: None,
            packets_sent: 0,
            bytes_sent: 0,
            sending_since: None,
            packets_received: 0,
            window_received: 0,
            bytes_received: 0,
            lost: 0,
            keyframe_requests: 0,
            window_keyframe_requests: 0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
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

/// One of our published m-lines and its synthetic stream state.
struct Outgoing {
    mid: Mid,
    pt: Pt,
    kind: MediaKind,
    seq: u64,
    frame: u64,
    keyframe_due: bool,
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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
    send(&mut ws, json!({"type": "join", "token": token})).await?;
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
    for t in joined["tracks"].as_array().into_iter().flatten() {
        note_track(t, &mut announced);
    }

    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    // A browser's socket buffers are larger than the default 208 KiB: losses at the
    // generator's own sockets would be charged to the server.
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(SOCKET_BUFFER);
    let local = socket.local_addr()?;
    let now = Instant::now();
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp")?);

    // Our m-lines, then one recvonly per announced track.
    let mut publish: Vec<(Mid, &'static str, MediaKind)> = Vec::new();
    let mut subscribed: HashMap<u64, Mid> = HashMap::new();
    let mut pending: Option<SdpPendingOffer> = None;
    let mut new_publish = Vec::new();
    if role.audio {
        new_publish.push((MediaKind::Audio, "microphone"));
    }
    if role.video_bps.is_some() {
        new_publish.push((MediaKind::Video, role.video_source));
    }
    if !role.subscribe {
        announced.clear();
    }
    let mut m = MLines {
        publish: &mut publish,
        subscribed: &mut subscribed,
    };
    if let Some((message, p)) = m.offer(&mut rtc, &new_publish, &mut announced) {
        pending = Some(p);
        send(&mut ws, message).await?;
    }
    let mut offer_in_flight = pending.is_some();

    let mut outgoing: Vec<Outgoing> = Vec::new();
    let mut tracks: HashMap<Ssrc, SeqTrack> = HashMap::new();
    let mut renegotiate = false;
    let mut buf = vec![0u8; 2000];
    let mut rtc_deadline;
    let mut talking = true;
    let mut talk_switch = now + Duration::from_millis(1500);
    let mut first_media = false;
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
                    if at >= shared.measure_from
                        && p.payload.len() >= HEADER
                        && u32::from_be_bytes(p.payload[..4].try_into().unwrap_or_default())
                            == MAGIC
                    {
                        let sent =
                            u64::from_be_bytes(p.payload[4..12].try_into().unwrap_or_default());
                        let now_ns = at.duration_since(shared.epoch).as_nanos() as u64;
                        let us = now_ns.saturating_sub(sent) / 1000;
                        let _ = stats.latency_us.record(us.max(1));
                    }
                }
                Output::Event(Event::KeyframeRequest(r)) => {
                    stats.keyframe_requests += 1;
                    if Instant::now() >= shared.measure_from {
                        stats.window_keyframe_requests += 1;
                    }
                    if let Some(o) = outgoing.iter_mut().find(|o| o.mid == r.mid) {
                        o.keyframe_due = true;
                    }
                }
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
            for (mid, _, kind) in &publish {
                let pt = match kind {
                    MediaKind::Audio => pt_of(Codec::Opus),
                    MediaKind::Video => pt_of(Codec::Vp8),
                };
                if let Some(pt) = pt {
                    outgoing.push(Outgoing {
                        mid: *mid,
                        pt,
                        kind: *kind,
                        seq: 1,
                        frame: 0,
                        keyframe_due: true,
                        next_send: t0,
                    });
                }
            }
        }
        let next_send = outgoing.iter().map(|o| o.next_send).min();
        let wake = next_send
            .map_or(rtc_deadline, |s| s.min(rtc_deadline))
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
                    }
                    Some("track_published") if role.subscribe => {
                        note_track(&m, &mut announced);
                        renegotiate = true;
                    }
                    Some("error") => bail!("server error: {m}"),
                    _ => {}
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if now >= shared.until {
                    let _ = send(&mut ws, json!({"type": "leave"})).await;
                    break;
                }
                if now >= talk_switch {
                    talking = !talking;
                    talk_switch = now + Duration::from_millis(if talking { 2500 } else { 1200 });
                }
                rtc.handle_input(Input::Timeout(now))?;
                for o in outgoing.iter_mut().filter(|o| o.next_send <= now) {
                    let (packets, bytes) = send_media(&mut rtc, o, role, talking, shared.epoch, now);
                    stats.packets_sent += packets;
                    stats.bytes_sent += bytes;
                    stats.sending_since.get_or_insert(now);
                }
            }
        }
        if renegotiate && !offer_in_flight {
            renegotiate = false;
            let mut m = MLines {
                publish: &mut publish,
                subscribed: &mut subscribed,
            };
            if let Some((message, p)) = m.offer(&mut rtc, &[], &mut announced) {
                pending = Some(p);
                offer_in_flight = true;
                send(&mut ws, message).await?;
            }
        }
    }
    stats.lost = tracks
        .values()
        .map(|t| (t.highest - t.first + 1).saturating_sub(t.received))
        .sum();
    Ok(())
}

/// Sends what is due on one outgoing stream; returns how many packets and payload bytes.
fn send_media(
    rtc: &mut Rtc,
    o: &mut Outgoing,
    role: &Role,
    talking: bool,
    epoch: Instant,
    now: Instant,
) -> (u64, u64) {
    let mut api = rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(o.mid, None) else {
        o.next_send = now + Duration::from_millis(20);
        return (0, 0);
    };
    let stamp = |size: usize| -> Vec<u8> {
        let mut payload = vec![0u8; size.max(HEADER)];
        payload[..4].copy_from_slice(&MAGIC.to_be_bytes());
        let ns = now.duration_since(epoch).as_nanos() as u64;
        payload[4..12].copy_from_slice(&ns.to_be_bytes());
        payload
    };
    match o.kind {
        MediaKind::Audio => {
            // Opus at 20 ms; while silent, DTX: one packet in 20.
            let ext = ExtensionValues {
                audio_level: Some(if talking { -30 } else { -127 }),
                voice_activity: Some(talking),
                ..ExtensionValues::default()
            };
            let size = if talking { 80 } else { 10 };
            let time = (o.frame * 960) as u32;
            o.frame += if talking { 1 } else { 20 };
            o.next_send = now + Duration::from_millis(if talking { 20 } else { 400 });
            let write = RtpWrite::new(o.pt, SeqNo::from(o.seq), time, now, stamp(size))
                .marker(true)
                .ext_vals(ext);
            tx.write_rtp(write);
            o.seq += 1;
            (1, size as u64)
        }
        MediaKind::Video => {
            let bps = role.video_bps.unwrap_or(0);
            let frames_between = (role.keyframe_interval.as_millis() as u64 * 30 / 1000).max(1);
            let keyframe = o.keyframe_due || o.frame.is_multiple_of(frames_between);
            o.keyframe_due = false;
            let mut bytes = (bps / 8 / 30) as usize;
            if keyframe {
                bytes *= 4;
            }
            let packets = bytes.div_ceil(MTU_PAYLOAD).max(1);
            let time = (o.frame * 3000) as u32;
            for i in 0..packets {
                let size = (bytes / packets).max(HEADER);
                let write = RtpWrite::new(o.pt, SeqNo::from(o.seq), time, now, stamp(size))
                    .marker(i + 1 == packets)
                    .nackable(true);
                tx.write_rtp(write);
                o.seq += 1;
            }
            o.frame += 1;
            o.next_send += Duration::from_micros(33_333);
            if o.next_send < now {
                o.next_send = now + Duration::from_micros(33_333);
            }
            (
                packets as u64,
                (packets * (bytes / packets).max(HEADER)) as u64,
            )
        }
    }
}

/// The client's m-lines: what it publishes, and the track each receiving one carries.
struct MLines<'a> {
    publish: &'a mut Vec<(Mid, &'static str, MediaKind)>,
    subscribed: &'a mut HashMap<u64, Mid>,
}

impl MLines<'_> {
    /// Adds sendonly m-lines for `new_publish` and a recvonly one per track of `announced`
    /// (emptied), then makes the offer: its `offer` message and pending state, or `None`
    /// when nothing changed.
    fn offer(
        &mut self,
        rtc: &mut Rtc,
        new_publish: &[(MediaKind, &'static str)],
        announced: &mut Vec<(u64, MediaKind)>,
    ) -> Option<(Value, SdpPendingOffer)> {
        let mut api = rtc.sdp_api();
        for (kind, source) in new_publish {
            let mid = api.add_media(*kind, Direction::SendOnly, None, None, None);
            self.publish.push((mid, source, *kind));
        }
        for (id, kind) in announced.drain(..) {
            let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
            self.subscribed.insert(id, mid);
        }
        let (offer, pending) = api.apply()?;
        let message = offer_message(offer.to_sdp_string(), self.publish, self.subscribed);
        Some((message, pending))
    }
}

fn offer_message(
    sdp: String,
    publish: &[(Mid, &'static str, MediaKind)],
    subscribed: &HashMap<u64, Mid>,
) -> Value {
    json!({
        "type": "offer",
        "sdp": sdp,
        "publish": publish.iter().map(|(mid, source, _)| json!({"mid": mid.to_string(), "source": source})).collect::<Vec<_>>(),
        "subscribe": subscribed.iter().map(|(id, mid)| json!({"mid": mid.to_string(), "track_id": id})).collect::<Vec<_>>(),
    })
}

async fn send(ws: &mut Ws, v: Value) -> anyhow::Result<()> {
    ws.send(Message::text(v.to_string())).await?;
    Ok(())
}

/// The next JSON message; `None` when the socket closed.
async fn next(ws: &mut Ws) -> anyhow::Result<Option<Value>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(Some(serde_json::from_str(&t)?)),
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        }
    }
}
