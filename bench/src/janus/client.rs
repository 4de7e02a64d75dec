//! One simulated client of Janus's VideoRoom, doing what our own client does (the same
//! str0m peer, the same synthetic media, the same measurements: `receive`) through
//! Janus's API: it joins the room as a publisher (which also tells it who publishes),
//! publishes on one peer connection, and receives every other publisher's streams on a
//! second one, a multistream subscription that Janus offers and it answers, grown as
//! publishers come. Janus has no end-to-end encryption keys to carry: its runs are in the
//! clear.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::MediaKind;
use str0m::net::Receive;
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::client::{Role, Shared, Stats};
use crate::frames::Crypt;
use crate::link::Link;
use crate::mlines::{MLines, Publication};
use crate::outgoing::{Outgoing, send_due};
use crate::receive::{Receiving, keyframe_requested};

use super::api::Session;

/// Where a client goes in Janus.
#[derive(Debug, Clone)]
pub struct Place {
    /// Janus's WebSocket, `ws://127.0.0.1:PORT/`.
    pub url: String,
    pub room: u64,
    /// Its display name, `c0`, `c1`, ...
    pub name: String,
    /// Simulcast: the publisher whose top layer it receives; every other one's lowest
    /// (what our server chooses by itself in a conference where that one speaks
    /// loudest). `None`: Janus's default layer.
    pub top_layer_of: Option<String>,
}

/// One peer connection: its str0m peer, its own socket, its next deadline.
struct Peer {
    rtc: Rtc,
    link: Link,
    deadline: Instant,
}

impl Peer {
    async fn open(role: &Role) -> anyhow::Result<Peer> {
        let link = Link::open(role.link).await?;
        let now = Instant::now();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        rtc.add_local_candidate(link.candidate()?);
        Ok(Peer {
            rtc,
            link,
            deadline: now,
        })
    }

    /// Sends what str0m transmits; its events, until its next deadline.
    fn drain(&mut self) -> anyhow::Result<Vec<Event>> {
        let mut events = Vec::new();
        loop {
            match self.rtc.poll_output()? {
                Output::Transmit(t) => self.link.send(t.destination, &t.contents),
                Output::Timeout(at) => {
                    self.deadline = at;
                    return Ok(events);
                }
                Output::Event(e) => events.push(e),
            }
        }
    }

    fn receive(&mut self, from: SocketAddr, data: &[u8]) -> anyhow::Result<()> {
        let (proto, local) = (self.link.protocol(), self.link.local());
        if let Ok(receive) = Receive::new(proto, from, local, data) {
            self.rtc
                .handle_input(Input::Receive(Instant::now(), receive))?;
        }
        Ok(())
    }

    /// Takes Janus's offer; the answer to send back.
    fn answer(&mut self, jsep: Option<Value>) -> anyhow::Result<Value> {
        let sdp = jsep
            .as_ref()
            .and_then(|j| j["sdp"].as_str())
            .context("Janus sent no offer")?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(sdp)?)?;
        Ok(json!({"type": "answer", "sdp": answer.to_sdp_string()}))
    }

    /// A candidate Janus trickled.
    fn trickled(&mut self, candidate: &Value) {
        if let Some(c) = candidate["candidate"].as_str()
            && let Ok(c) = Candidate::from_sdp_string(c)
        {
            self.rtc.add_remote_candidate(c);
        }
    }
}

/// Whether a peer's socket has a datagram: which one, from where.
async fn recv_either(
    a: Option<&mut Peer>,
    b: Option<&mut Peer>,
) -> anyhow::Result<(bool, SocketAddr, Vec<u8>)> {
    async fn one(p: Option<&mut Peer>) -> anyhow::Result<(SocketAddr, Vec<u8>)> {
        match p {
            Some(p) => {
                let (from, data) = p.link.recv().await?;
                Ok((from, data.to_vec()))
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        r = one(a) => { let (f, d) = r?; Ok((true, f, d)) }
        r = one(b) => { let (f, d) = r?; Ok((false, f, d)) }
    }
}

/// Runs one client until `shared.until`; returns what it measured (errors included).
pub async fn run(shared: Arc<Shared>, place: Place, role: Role) -> Stats {
    let mut stats = Stats::new();
    if let Err(e) = session(&shared, &place, &role, &mut stats).await {
        stats.error = Some(format!("{e:#}"));
    }
    stats
}

/// The publishers a `joined` or `event` of the VideoRoom lists: id and display name.
fn publishers(data: &Value) -> Vec<(u64, String)> {
    data["publishers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let id = p["id"].as_u64()?;
            Some((id, p["display"].as_str().unwrap_or_default().to_owned()))
        })
        .collect()
}

/// Publishers `found` not seen before: named, and waiting to be subscribed to.
fn note(found: Vec<(u64, String)>, names: &mut HashMap<u64, String>, waiting: &mut BTreeSet<u64>) {
    for (id, name) in found {
        if names.insert(id, name).is_none() {
            waiting.insert(id);
        }
    }
}

async fn session(
    shared: &Shared,
    place: &Place,
    role: &Role,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let joined = async {
        let mut janus = Session::create(&place.url).await?;
        let handle = janus.attach().await?;
        let join = json!({"request": "join", "ptype": "publisher", "room": place.room, "display": place.name});
        let joined = janus.request(handle, join, None).await?;
        anyhow::Ok((janus, handle, joined))
    }
    .await;
    shared.joins_settled.fetch_add(1, Ordering::Relaxed);
    let (mut janus, publisher, joined) = joined?;
    stats.joined = true;
    stats.node = Some(crate::ws::authority(&place.url).to_owned());
    stats.join_to_joined = Some(started.elapsed());
    // Publishers not subscribed to yet, and every one's display name.
    let mut waiting: BTreeSet<u64> = BTreeSet::new();
    let mut names: HashMap<u64, String> = HashMap::new();
    if role.subscribe {
        note(publishers(&joined.data), &mut names, &mut waiting);
    }

    let mut crypt = Crypt::new(false, false)?;
    let mut receiving = Receiving::new(started);
    let mut publish: Vec<Publication> = Vec::new();
    let mut outgoing: Vec<Outgoing> = Vec::new();
    // The peer we publish on.
    let mut sending = None;
    if role.audio || role.publishes_video() {
        let mut peer = Peer::open(role).await?;
        let mut new_publish = Vec::new();
        if role.audio {
            new_publish.push((MediaKind::Audio, "microphone", Vec::new()));
        }
        if role.publishes_video() {
            let rids = if role.video_layers_bps.len() > 1 {
                crate::client::RIDS[..role.video_layers_bps.len()].to_vec()
            } else {
                Vec::new()
            };
            new_publish.push((MediaKind::Video, role.video_source, rids));
        }
        let (mut subscribed, mut slots) = (HashMap::new(), Vec::new());
        let mut m = MLines {
            publish: &mut publish,
            subscribed: &mut subscribed,
            slots: &mut slots,
            want_slots: None,
        };
        let (offer, pending) = m
            .offer(&mut peer.rtc, &new_publish, &mut Vec::new())
            .context("nothing to publish")?;
        // Our rids come lowest first; Janus takes the first for the highest unless told.
        let jsep = json!({"type": "offer", "sdp": offer["sdp"], "rid_order": "lmh"});
        let reply = janus
            .request(publisher, json!({"request": "publish"}), Some(jsep))
            .await?;
        let sdp = reply.jsep.as_ref().and_then(|j| j["sdp"].as_str());
        let answer = SdpAnswer::from_sdp_string(sdp.context("Janus sent no answer")?)?;
        peer.rtc.sdp_api().accept_answer(pending, answer)?;
        sending = Some(peer);
    }
    // The peer we receive on, and its handle, once there is someone to receive.
    let mut receiving_peer: Option<(Peer, u64)> = None;

    let ends = shared.until;
    let mut talking = role.voice.is_some();
    let mut talk_switch = Instant::now() + Duration::from_millis(1500);
    loop {
        if !waiting.is_empty() {
            subscribe(
                &mut janus,
                &mut receiving_peer,
                &mut waiting,
                &names,
                place,
                role,
            )
            .await?;
        }
        if let Some(peer) = sending.as_mut() {
            for e in peer.drain()? {
                match e {
                    Event::KeyframeRequest(r) => {
                        keyframe_requested(&r, &publish, &mut outgoing, shared, stats);
                    }
                    Event::Connected if outgoing.is_empty() => {
                        outgoing = Outgoing::streams(&peer.rtc, &publish, &HashMap::new(), role);
                    }
                    _ => {}
                }
            }
            if !peer.rtc.is_alive() {
                bail!("the publishing peer connection ended");
            }
        }
        if let Some((peer, _)) = receiving_peer.as_mut() {
            for e in peer.drain()? {
                match e {
                    Event::RtpPacket(p) => {
                        receiving.packet(&peer.rtc, &p, shared, stats, &mut crypt, None, |_| false);
                    }
                    Event::Connected => receiving.connected_at = Some(Instant::now()),
                    _ => {}
                }
            }
            if !peer.rtc.is_alive() {
                bail!("the receiving peer connection ended");
            }
        }
        let next_send = outgoing
            .iter()
            .filter(|o| o.active)
            .map(|o| o.next_send)
            .min();
        let wake = [
            next_send,
            sending.as_ref().map(|p| p.deadline),
            receiving_peer.as_ref().map(|(p, _)| p.deadline),
            Some(janus.keepalive_at),
        ]
        .into_iter()
        .flatten()
        .fold(ends, Instant::min);
        tokio::select! {
            r = recv_either(sending.as_mut(), receiving_peer.as_mut().map(|(p, _)| p)) => {
                let (first, from, data) = r?;
                let peer = if first { sending.as_mut() } else { receiving_peer.as_mut().map(|(p, _)| p) };
                if let Some(peer) = peer {
                    peer.receive(from, &data)?;
                }
            }
            e = janus.next_event() => {
                let e = e?.context("Janus closed the socket")?;
                let subscriber = receiving_peer.as_ref().map(|(_, h)| *h);
                match e["janus"].as_str() {
                    // Janus offers again by itself (a publisher left): answered as its
                    // other offers are.
                    Some("event") if e.get("jsep").is_some() && e["sender"].as_u64() == subscriber => {
                        if let Some((peer, handle)) = receiving_peer.as_mut() {
                            let answer = peer.answer(e.get("jsep").cloned())?;
                            janus.request(*handle, json!({"request": "start"}), Some(answer)).await?;
                        }
                    }
                    Some("event") if role.subscribe && e["sender"].as_u64() == Some(publisher) => {
                        note(publishers(&e["plugindata"]["data"]), &mut names, &mut waiting);
                    }
                    Some("trickle") => {
                        let peer = if e["sender"].as_u64() == Some(publisher) {
                            sending.as_mut()
                        } else {
                            receiving_peer.as_mut().map(|(p, _)| p)
                        };
                        if let Some(peer) = peer {
                            peer.trickled(&e["candidate"]);
                        }
                    }
                    Some("hangup") => bail!("Janus hung up: {}", e["reason"]),
                    _ => {}
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                // Its socket closing ends its Janus session, and with it both peers.
                if now >= ends {
                    break;
                }
                janus.keepalive().await?;
                if now >= talk_switch && role.voice.is_some() {
                    talking = !talking;
                    talk_switch = now + Duration::from_millis(if talking { 2500 } else { 1200 });
                }
                for peer in sending.iter_mut().chain(receiving_peer.iter_mut().map(|(p, _)| p)) {
                    peer.rtc.handle_input(Input::Timeout(now))?;
                }
                if let Some(peer) = sending.as_mut() {
                    let rtc = &mut peer.rtc;
                    send_due(rtc, &mut outgoing, role, talking, shared, now, &mut crypt, stats)?;
                }
            }
        }
    }
    stats.finish(&outgoing, &receiving, crypt.counts);
    Ok(())
}

/// Subscribes to the publishers `waiting` (emptied): the first time on a new handle and
/// peer (`join` as a subscriber), later by growing that subscription (`subscribe`); either
/// way Janus offers, the peer answers (`start`), and with simulcast the layers are chosen.
async fn subscribe(
    janus: &mut Session,
    peer: &mut Option<(Peer, u64)>,
    waiting: &mut BTreeSet<u64>,
    names: &HashMap<u64, String>,
    place: &Place,
    role: &Role,
) -> anyhow::Result<()> {
    let streams: Vec<Value> = waiting.iter().map(|id| json!({"feed": id})).collect();
    waiting.clear();
    let reply = match peer {
        Some((_, handle)) => {
            let body = json!({"request": "subscribe", "streams": streams});
            janus.request(*handle, body, None).await?
        }
        None => {
            let handle = janus.attach().await?;
            let body = json!({"request": "join", "ptype": "subscriber", "room": place.room, "streams": streams});
            let reply = janus.request(handle, body, None).await?;
            *peer = Some((Peer::open(role).await?, handle));
            reply
        }
    };
    let (p, handle) = peer.as_mut().context("no subscriber")?;
    let answer = p.answer(reply.jsep)?;
    janus
        .request(*handle, json!({"request": "start"}), Some(answer))
        .await?;
    if let Some(top) = &place.top_layer_of {
        let top_layer = role.video_layers_bps.len().saturating_sub(1);
        let layers: Vec<Value> = reply.data["streams"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["type"] == "video" && s["active"] != false)
            .filter_map(|s| {
                let feed = s["feed_id"].as_u64()?;
                let substream = if names.get(&feed) == Some(top) {
                    top_layer
                } else {
                    0
                };
                Some(json!({"mid": s["mid"], "substream": substream}))
            })
            .collect();
        if !layers.is_empty() {
            let body = json!({"request": "configure", "streams": layers});
            janus.request(*handle, body, None).await?;
        }
    }
    Ok(())
}
