//! The sans-IO media core of one shard: the rooms it holds, the WebRTC session of each of
//! their participants, and the forwarding between them. It never touches a socket or a
//! clock: datagrams, commands and time go in, datagrams, signals and a deadline come out.
//!
//! Run loop, as in str0m: feed one input (`handle_datagram`, `join`, `request`, `offer`,
//! `resync`, `leave`, `handle_timeout`), then call [`Shard::poll_output`] until it returns
//! [`ShardOutput::Timeout`].
//!
//! Where things are:
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | [`Shard`]: its state, the inputs and `poll_output`, signalling helpers |
//! | `config.rs` | [`ShardConfig`]: capacities, loudest-N and last-N, timeouts |
//! | `output.rs` | [`ShardOutput`] and the [`Counters`] the driver reads |
//! | `admin.rs` | calls listed, and acted on, for the admin API; group policies applied |
//! | `admission.rs` | `join` (capacity, candidates, the participant's `Rtc`) and removal |
//! | `participant.rs` | a participant's state; who gets a TWCC estimate |
//! | `milestones.rs` | delays from a join to its media path up and its first media |
//! | `ice.rs` | candidates offered, remote addresses mapped by ICE ufrag, then by address |
//! | `offer.rs` | [`ReadOffer`]: an offer's SDP parsed and checked (mids, kinds, slots) |
//! | `negotiation.rs` | a read offer checked against grants, answered, applied |
//! | `publication.rs` | tracks published, changed, unpublished and muted |
//! | `track.rs` | a published track and its layers: rates, stalls, pauses, keyframe waits |
//! | `subscription.rs` | subscriptions and the track-to-subscribers index (its one owner) |
//! | `room.rs` | a call: members, tracks, speaking order |
//! | `speakers.rs` | speaking order, dominant speaker, `active_speakers` |
//! | `shown.rs` | the one rule for what a subscriber receives of each track |
//! | `slots.rs` | slot m-lines filled with the tracks chosen for the subscriber |
//! | `allocation.rs` | layers chosen per subscription within the subscriber's estimate |
//! | `loss.rs` | the loss-based estimate of receive-only participants |
//! | `announce.rs` | which layers publishers are told to send (the rest pause) |
//! | `keyframes.rs` | keyframe requests: awaited, throttled, repeated; asked by clients |
//! | `relay.rs` | `e2ee` messages relayed within a room; the reserve of the event queue |
//! | `resync.rs` | `resync`: the room as it is, to a participant whose queue overflowed |
//! | `rtc.rs` | draining a participant's `Rtc`: transmits, deadlines, events |
//! | `forward.rs` | the hot path: one RTP packet to every subscriber that receives it |
//! | `pacing.rs` | the rate viewers' pacers release at |
//! | `shaping.rs` | a link's rate as its losses prove it; its video paced to that |
//! | `timers.rs` | deadlines in one heap, the periodic tick, silent participants removed |
//!
//! A packet's way through: the driver calls [`Shard::handle_datagram`], which finds the
//! participant by address (`ice.rs`; an unknown address only through a STUN request
//! naming its ufrag) and hands the datagram to its `Rtc`; draining that `Rtc` (`rtc.rs`)
//! yields the decrypted RTP packet as an event, and `forward.rs` decides per
//! subscriber (the layer chosen for it by `allocation.rs`, the pure
//! [`Forwarder::decide`](crate::forwarder::Forwarder::decide)) and writes it to the
//! subscriber's `Rtc`, marking it dirty. [`Shard::poll_output`] drains the dirty `Rtc`s:
//! the encrypted datagrams leave as [`ShardOutput::Transmit`] (through the pacer for
//! viewers, `pacing.rs`).

mod admin;
mod admission;
mod allocation;
mod announce;
mod config;
mod forward;
mod ice;
mod keyframes;
mod loss;
mod milestones;
mod negotiation;
mod offer;
mod output;
mod pacing;
mod participant;
mod publication;
mod relay;
mod remb;
mod resync;
mod room;
mod rtc;
mod shaping;
mod shown;
mod slots;
mod speakers;
mod steer;
mod subscription;
mod timers;
mod track;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rustc_hash::FxHashMap;

use protocol::{
    ErrorCode, ErrorMessage, LeaveReason, ParticipantId, Request, RequestType, ServerMessage,
    TrackId,
};
use rand::rngs::StdRng;
use str0m::net::{Protocol, Receive};
use str0m::{Input, RtcError};
use tracing::{debug, info};

pub use config::ShardConfig;
pub use ice::{LocalCandidates, shard_of_ufrag};
pub use milestones::{Delays, MAX_DELAYS, Milestone};
pub use negotiation::follow_offer_codec_order;
pub use offer::{MAX_SLOTS, ReadOffer};
pub use output::{Counters, ShardOutput, TapRecord};
pub use relay::{RELAY_RESERVE, RelayDrop, relay_fits};

use crate::forwarder::DropReason;
use ice::Remote;
use participant::Participant;
use room::Room;
use speakers::TICK;
use track::Track;

/// The media core of one shard. See the module docs for the run loop.
pub struct Shard {
    config: ShardConfig,
    /// The latest time seen in any input.
    now: Instant,
    // Looked up several times per packet forwarded: hashed with FxHash (rustc-hash), not
    // SipHash. Their keys are the shard's own ids (and addresses ICE has verified), which
    // no one outside chooses freely enough to flood a bucket.
    participants: FxHashMap<ParticipantId, Participant>,
    rooms: HashMap<String, Room>,
    tracks: FxHashMap<TrackId, Track>,
    by_ufrag: HashMap<String, ParticipantId>,
    by_remote: FxHashMap<Remote, ParticipantId>,
    /// Participants whose `Rtc` has output to drain, in order.
    dirty: VecDeque<ParticipantId>,
    /// Signals and closes waiting to be polled.
    outputs: VecDeque<ShardOutput>,
    /// When the next tick (speakers, layer choice, keyframe retries) is due.
    next_tick: Instant,
    ticks: u64,
    /// Each participant's `Rtc` deadline, earliest first. An entry whose time is no longer
    /// its participant's `rtc_timeout` is stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
    next_track: u64,
    /// Every random choice of the core (ICE credentials, first sequence numbers): seeded
    /// by whoever makes the shard, so that a test can replay a run.
    rng: StdRng,
    pub counters: Counters,
    /// Takes no new room ([`Shard::refuse_new_rooms`]).
    draining: bool,
}

impl Shard {
    /// A shard with no rooms yet. `rng` must be seeded from the operating system's
    /// randomness outside tests: it makes ICE passwords.
    pub fn new(config: ShardConfig, now: Instant, rng: StdRng) -> Self {
        Shard {
            config,
            now,
            participants: FxHashMap::default(),
            rooms: HashMap::new(),
            tracks: FxHashMap::default(),
            by_ufrag: HashMap::new(),
            by_remote: FxHashMap::default(),
            dirty: VecDeque::new(),
            outputs: VecDeque::new(),
            next_tick: now + TICK,
            ticks: 0,
            timers: BinaryHeap::new(),
            next_track: 1,
            rng,
            counters: Counters::default(),
            draining: false,
        }
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
                slots,
            } => match ReadOffer::read(sdp, publish, subscribe, slots) {
                Ok(read) => self.offer(now, id, read),
                Err(error) => self.signal(id, ServerMessage::Error(error)),
            },
            Request::Mute { track_id, muted } => self.mute(id, track_id, muted),
            Request::View { pinned, quality } => {
                if let Some(p) = self.participants.get_mut(&id) {
                    // Sorted, for lookups by track per subscription and allocation.
                    p.view.pinned = pinned;
                    p.view.pinned.sort_unstable();
                    p.view.quality = quality;
                    p.view.quality.sort_by_key(|q| q.track_id);
                }
                self.choose_for(id);
                self.request_awaited_keyframes();
            }
            Request::Subscribe { subscribe } => {
                if self
                    .participants
                    .get(&id)
                    .is_some_and(|p| p.grants.subscribe)
                {
                    self.apply_subscribe(id, &subscribe);
                }
            }
            Request::E2ee { to, data } => self.relay(id, to, data),
            Request::Keyframe { track_id } => self.keyframe_asked(id, track_id),
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
        p.bytes_received += data.len() as u64;
        if let Err(e) = p.rtc.handle_input(Input::Receive(now, receive)) {
            // Matched, not formatted: a flood of refused datagrams allocates nothing.
            if matches!(e, RtcError::Dtls(_)) && !p.dtls_failure_logged {
                // Once per participant: a client whose certificate the DTLS stack cannot
                // take fails every handshake datagram the same way.
                p.dtls_failure_logged = true;
                info!(participant = %id, "DTLS handshake refused: {e} (only ECDSA certificates are taken, as browsers make; GStreamer's webrtcbin makes RSA ones)");
            }
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
        self.fire_due_timers(now);
        if now >= self.next_tick {
            self.next_tick = (self.next_tick + TICK).max(now);
            self.expire_silent(now);
            self.tick();
        }
    }

    /// The next thing to do. Call until it returns `Timeout`.
    pub fn poll_output(&mut self) -> ShardOutput {
        loop {
            if let Some(out) = self.outputs.pop_front() {
                return out;
            }
            let Some(id) = self.dirty.pop_front() else {
                return ShardOutput::Timeout(self.next_deadline());
            };
            if self.participants.get(&id).is_some_and(|p| p.dirty) {
                self.drain_rtc(id);
            }
        }
    }

    /// Rooms, participants and published tracks held now.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.rooms.len(), self.participants.len(), self.tracks.len())
    }

    /// The entries of its lookup tables and queues, by table: every one empties once its
    /// last participant has gone and its timers have passed (a leak shows here first).
    pub fn entries(&self) -> [(&'static str, usize); 5] {
        [
            ("ufrags", self.by_ufrag.len()),
            ("remotes", self.by_remote.len()),
            ("timers", self.timers.len()),
            ("dirty", self.dirty.len()),
            ("outputs", self.outputs.len()),
        ]
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
        self.broadcast_to(room, except, message, true);
    }

    /// [`Shard::broadcast`], leaving out the viewers that did not ask to hear of the
    /// audience unless `viewers`.
    fn broadcast_to(
        &mut self,
        room: &str,
        except: ParticipantId,
        message: &ServerMessage,
        viewers: bool,
    ) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        for member in &room.members {
            let skip = !viewers
                && self
                    .participants
                    .get(member)
                    .is_some_and(|p| !p.hears_audience);
            if *member != except && !skip {
                self.outputs
                    .push_back(ShardOutput::Signal(*member, message.clone()));
            }
        }
    }
}
