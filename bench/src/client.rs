//! One simulated client: our real signaling over a WebSocket and real WebRTC (str0m:
//! ICE, DTLS-SRTP, RTCP) over its own UDP socket or ICE-TCP (`link`). It publishes synthetic audio and video
//! (VP8 frames, simulcast layers) whose frames carry a send timestamp, encrypted end to
//! end as a browser's are unless the run is `--plaintext` (keys handed to the others in
//! `e2ee` messages), subscribes to what it is told to, and records what it receives:
//! packets, sequence gaps, forwarding latency, first-media time, frames it could not
//! decrypt.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::net::Receive;
use str0m::{Event, Input, Output, Rtc};

use crate::frames::{Crypt, E2eeCounts};
use crate::life::{Exit, Habits, Life};
use crate::link::{Link, LinkConfig};
use crate::mlines::{MLines, Publication};
use crate::outgoing::{Outgoing, send_due};
use crate::receive::{Receiving, keyframe_requested};
use crate::ws::{self, next, send};

/// The rids of the simulcast layers, lowest quality first (as the web client names them).
pub const RIDS: [&str; 3] = ["q", "h", "f"];

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
    /// When and how it goes, and what it changes meanwhile (`bench soak`).
    pub life: Life,
    pub link: LinkConfig,
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
    /// Clients whose join was answered (`joined`, or refused), so far.
    pub joins_settled: Arc<AtomicUsize>,
}

/// What a client measured.
pub struct Stats {
    pub joined: bool,
    /// The `host:port` of the node whose socket accepted the join.
    pub node: Option<String>,
    /// Redirects its join followed (a cluster's entry node sends it to the room's).
    pub redirects: u32,
    /// Socket opened to `joined`, redirects included.
    pub join_to_joined: Option<Duration>,
    /// Token sent to first media packet received.
    pub join_to_first_media: Option<Duration>,
    /// Media connected (ICE and DTLS) to the first packet of a keyframe received: when
    /// its first picture can be decoded.
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
    /// Datagrams its simulated downlink dropped on purpose.
    pub link_dropped: u64,
    pub error: Option<String>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            joined: false,
            node: None,
            redirects: 0,
            join_to_joined: None,
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
            link_dropped: 0,
            error: None,
        }
    }
}

impl Stats {
    /// What a client's run leaves at its end: the layers it was sending, the packets
    /// missing from what it received, its frames' counts.
    pub fn finish(&mut self, outgoing: &[Outgoing], receiving: &Receiving, counts: E2eeCounts) {
        self.layers_sending = outgoing
            .iter()
            .filter(|o| o.rid.is_some())
            .map(|o| o.active)
            .collect();
        self.lost = receiving.lost();
        self.e2ee = counts;
    }
}

/// Runs one client until `shared.until` (or the end of its `life`); returns what it measured (errors included).
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
    let join = json!({"type": "join", "token": token, "e2ee": shared.e2ee});
    let answered = ws::join(&shared.ws_url, &join).await;
    shared.joins_settled.fetch_add(1, Ordering::Relaxed);
    let ws::Joined {
        mut ws,
        joined,
        url,
        redirects,
        took,
    } = answered?;
    stats.joined = true;
    stats.node = Some(ws::authority(&url).to_owned());
    stats.redirects = redirects;
    stats.join_to_joined = Some(took);
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
    // The others' video tracks, which its `view` messages name.
    let mut video_tracks: BTreeSet<u64> = BTreeSet::new();
    let note_owner = |t: &Value, owners: &mut HashMap<u64, u64>, videos: &mut BTreeSet<u64>| {
        if let (Some(id), Some(p)) = (t["track_id"].as_u64(), t["participant_id"].as_u64()) {
            owners.insert(id, p);
            if p != me && t["kind"] == "video" {
                videos.insert(id);
            }
        }
    };
    for t in joined["tracks"].as_array().into_iter().flatten() {
        note_track(t, &mut announced);
        note_owner(t, &mut owners, &mut video_tracks);
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

    let mut link = Link::open(role.link).await?;
    let (proto, local) = (link.protocol(), link.local());
    let now = Instant::now();
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
    rtc.add_local_candidate(link.candidate()?);
    let mut habits = Habits::new(role.life.clone(), now);
    let ends = habits.ends(shared.until);

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
    // Video tracks whose frames came before their sender's key, by sender: a keyframe is
    // asked for when the key comes.
    let mut key_wanted: HashMap<u64, Vec<u64>> = HashMap::new();

    let mut outgoing: Vec<Outgoing> = Vec::new();
    let mut renegotiate = false;
    let mut rtc_deadline;
    let mut talking = role.voice.is_some();
    let mut talk_switch = now + Duration::from_millis(1500);
    let mut receiving = Receiving::new(started);
    loop {
        // Drain the Rtc: transmits out, events handled, its next deadline.
        loop {
            match rtc.poll_output()? {
                Output::Transmit(t) => {
                    link.send(t.destination, &t.contents);
                }
                Output::Timeout(at) => {
                    rtc_deadline = at;
                    break;
                }
                Output::Event(Event::RtpPacket(p)) => {
                    let track = rtc
                        .direct_api()
                        .stream_rx(&p.header.ssrc)
                        .and_then(|rx| mid_tracks.get(&rx.mid()))
                        .copied();
                    let sender = track.and_then(|t| owners.get(&t)).copied();
                    let no_key = crypt.counts.no_key;
                    // When no key decrypts a frame: is a publisher's key still to come?
                    let waiting = |c: &Crypt| owners.values().any(|o| *o != me && !c.knows(*o));
                    let codec =
                        receiving.packet(&rtc, &p, shared, stats, &mut crypt, sender, waiting);
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
                }
                Output::Event(Event::KeyframeRequest(r)) => {
                    keyframe_requested(&r, &publish, &mut outgoing, shared, stats);
                }
                Output::Event(Event::Connected) => receiving.connected_at = Some(Instant::now()),
                Output::Event(_) => {}
            }
        }
        if !rtc.is_alive() {
            bail!("WebRTC session ended");
        }
        if outgoing.is_empty() && rtc.is_connected() {
            outgoing = Outgoing::streams(&rtc, &publish, &wanted_layers, role);
        }
        let next_send = outgoing
            .iter()
            .filter(|o| o.active)
            .map(|o| o.next_send)
            .min();
        let wake = next_send
            .map_or(rtc_deadline, |s| s.min(rtc_deadline))
            .min(key_resend.unwrap_or(ends))
            .min(offer_resend.unwrap_or(ends))
            .min(habits.next_wake().unwrap_or(ends))
            .min(ends);
        tokio::select! {
            r = link.recv() => {
                let (from, data): (SocketAddr, &[u8]) = r?;
                if let Ok(receive) = Receive::new(proto, from, local, data) {
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
                    Some("track_unpublished") => {
                        if let Some(id) = m["track_id"].as_u64() {
                            video_tracks.remove(&id);
                        }
                    }
                    // Slots need no new offer: the server fills them.
                    Some("track_published") => {
                        note_owner(&m, &mut owners, &mut video_tracks);
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
                            note_owner(t, &mut owners, &mut video_tracks);
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
                if now >= ends {
                    stats.link_dropped = link.dropped;
                    match habits.exit() {
                        Exit::Leave => {
                            let _ = send(&mut ws, json!({"type": "leave"})).await;
                        }
                        Exit::Close => {}
                        // Holds its sockets, reading nothing, until the server gives up.
                        Exit::Vanish(hold) => tokio::time::sleep(hold).await,
                    }
                    break;
                }
                let own = track_mids.keys().copied();
                for message in habits.due(now, own, &video_tracks) {
                    send(&mut ws, message).await?;
                }
                for o in &mut outgoing {
                    o.muted = habits.muted;
                }
                if now >= talk_switch && role.voice.is_some() {
                    talking = !talking;
                    talk_switch = now + Duration::from_millis(if talking { 2500 } else { 1200 });
                }
                rtc.handle_input(Input::Timeout(now))?;
                send_due(&mut rtc, &mut outgoing, role, talking, shared, now, &mut crypt, stats)?;
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
    stats.finish(&outgoing, &receiving, crypt.counts);
    Ok(())
}
