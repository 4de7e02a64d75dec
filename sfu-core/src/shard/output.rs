//! What a shard hands its driver: datagrams to send, signals, closes and its next
//! deadline; and the counters the driver reads into its metrics.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use protocol::admin::CallEvent;
use protocol::{Kind, ParticipantId, ServerMessage, TrackId};
use str0m::format::Codec;
use str0m::media::Rid;
use str0m::net::{Protocol, Transmit};
use str0m::rtp::Ssrc;

use super::milestones::Delays;
use super::relay::RelayDrop;
use crate::adaptation::{Cause, Frozen};
use crate::forwarder::DropReason;

/// What the driver must do next.
#[derive(Debug)]
pub enum ShardOutput {
    /// Send a datagram from the socket bound to `source`'s port.
    Transmit(Transmit),
    /// Deliver a message to a participant's signaling session.
    Signal(ParticipantId, ServerMessage),
    /// Deliver a message another client sent it (`e2ee`), only if its signaling queue
    /// keeps its reserve free after it ([`relay_fits`](super::relay_fits)); otherwise
    /// drop it and count [`RelayDrop::QueueReserve`]. Never a reason to remove it.
    Relay(ParticipantId, ServerMessage),
    /// The participant is gone: drop its signaling queue so its socket closes.
    Closed(ParticipantId),
    /// Something happened in a call that the control plane records and tells webhooks
    /// of (never a reason to slow down: drop it if its queue is full, and count it).
    Event(CallEvent),
    /// Test only ([`ShardConfig::tap`](super::ShardConfig::tap)): an RTP packet as a
    /// publisher sent it, to record.
    Tap(TapRecord),
    /// Nothing more to do before this instant (or before the next input).
    Timeout(Instant),
}

/// One RTP packet received from a publisher, as the test-only tap records it.
#[derive(Debug, Clone)]
pub struct TapRecord {
    pub track_id: TrackId,
    pub participant_id: ParticipantId,
    pub kind: Kind,
    /// The codec of its payload type, as negotiated; `None` for one not negotiated.
    pub codec: Option<Codec>,
    pub ssrc: Ssrc,
    /// The RTP header's sequence number and timestamp, as sent.
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    /// Its simulcast layer; `None` for a single stream.
    pub rid: Option<Rid>,
    /// The RTP payload (shared with the forwarded packets, not copied).
    pub payload: Arc<[u8]>,
}

/// Plain counters, read and reset by the driver to feed the metrics.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// UDP datagrams and bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// ICE-TCP frames (RFC 4571) and their bytes, without the framing.
    pub tcp_rx_packets: u64,
    pub tcp_rx_bytes: u64,
    pub tcp_tx_packets: u64,
    pub tcp_tx_bytes: u64,
    pub rtp_forwarded: u64,
    pub calls_started: u64,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests: u64,
    /// A subscription moved to another layer (or resumed after a pause).
    pub layer_switches: u64,
    /// Packets of temporal layers left out of a subscriber's stream to fit its link.
    pub thinned: u64,
    /// A subscription's chosen layer changed, by cause (it switches at the next keyframe).
    pub layer_choices: [u64; Cause::ALL.len()],
    /// Milliseconds that videos shown to a subscriber delivered no picture, by reason.
    pub video_frozen_ms: [u64; Frozen::ALL.len()],
    /// Dependency descriptors read, and those that could not be (the packet's payload
    /// was used).
    pub dd_read: u64,
    pub dd_unreadable: u64,
    pub drops: [u64; DropReason::ALL.len()],
    /// `e2ee` messages delivered to their recipient's queue, and those dropped, by reason
    /// (the driver counts both: it delivers them).
    pub e2ee_relays: u64,
    pub e2ee_relays_dropped: [u64; RelayDrop::ALL.len()],
    /// Delays from joins to their milestones (media path up, first media each way).
    pub milestones: Delays,
}

impl Counters {
    pub fn drop(&mut self, reason: DropReason) {
        self.drop_many(reason, 1);
    }

    pub fn drop_many(&mut self, reason: DropReason, n: u64) {
        self.drops[reason.index()] += n;
    }

    pub fn drop_relay(&mut self, reason: RelayDrop) {
        self.e2ee_relays_dropped[reason.index()] += 1;
    }
}

/// Counts a datagram and queues it for the driver to send.
pub(super) fn emit(counters: &mut Counters, outputs: &mut VecDeque<ShardOutput>, t: Transmit) {
    if t.proto == Protocol::Udp {
        counters.tx_packets += 1;
        counters.tx_bytes += t.contents.len() as u64;
    } else {
        counters.tcp_tx_packets += 1;
        counters.tcp_tx_bytes += t.contents.len() as u64;
    }
    outputs.push_back(ShardOutput::Transmit(t));
}
