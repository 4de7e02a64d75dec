//! The per-subscriber forwarding decision: a pure function from an incoming packet's
//! sequence number and timestamp to the rewritten ones, or a reason to drop it.

use std::time::Instant;

use str0m::format::{
    Codec, detect_av1_keyframe, detect_h264_nalu, detect_vp8_keyframe, detect_vp9_keyframe,
};
use str0m::rtp::SeqNo;

use crate::svc::LayerInfo;

/// Why a packet was not forwarded. Every drop is counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A datagram from an address no participant uses, and not a STUN request naming one.
    UnknownSource,
    /// A datagram that is neither STUN, DTLS, RTP nor RTCP.
    Malformed,
    /// The participant's WebRTC stack refused the datagram.
    Refused,
    /// RTP on an m-line the participant did not declare in `publish` (or was not granted).
    Undeclared,
    /// The packet precedes the start of this subscription.
    BeforeStart,
    /// The subscriber negotiated no codec matching the packet's payload type.
    NoCodec,
    /// The subscriber has no send stream for the m-line (not negotiated yet).
    NoStream,
    /// The subscriber's transport (ICE + DTLS) is not up yet; it gets a keyframe when it is.
    NotConnected,
    /// The socket's send buffer was full.
    SendBufferFull,
    /// The participant's signaling queue was full.
    SignalQueueFull,
    /// The ICE-TCP connection's send queue was full: its client reads too slowly.
    TcpQueueFull,
    /// A packet for an ICE-TCP connection that has closed.
    TcpClosed,
    /// The subscriber's pacer held packets longer than allowed: it is behind, and waits
    /// for the next keyframe.
    PacerBacklog,
    /// An RTP payload larger than any subscriber's packet can carry (see
    /// `MAX_FORWARDED_PAYLOAD` in `shard/forward.rs`).
    Oversized,
    /// A packet of a track an administrator muted (the admin API).
    Muted,
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::index`].
    pub const ALL: [DropReason; 15] = [
        DropReason::UnknownSource,
        DropReason::Malformed,
        DropReason::Refused,
        DropReason::Undeclared,
        DropReason::BeforeStart,
        DropReason::NoCodec,
        DropReason::NoStream,
        DropReason::NotConnected,
        DropReason::SendBufferFull,
        DropReason::SignalQueueFull,
        DropReason::TcpQueueFull,
        DropReason::TcpClosed,
        DropReason::PacerBacklog,
        DropReason::Oversized,
        DropReason::Muted,
    ];

    /// A dense index for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownSource => "unknown_source",
            DropReason::Malformed => "malformed",
            DropReason::Refused => "refused",
            DropReason::Undeclared => "undeclared",
            DropReason::BeforeStart => "before_start",
            DropReason::NoCodec => "no_codec",
            DropReason::NoStream => "no_stream",
            DropReason::NotConnected => "not_connected",
            DropReason::SendBufferFull => "send_buffer_full",
            DropReason::SignalQueueFull => "signal_queue_full",
            DropReason::TcpQueueFull => "tcp_queue_full",
            DropReason::TcpClosed => "tcp_closed",
            DropReason::PacerBacklog => "pacer_backlog",
            DropReason::Oversized => "oversized",
            DropReason::Muted => "muted",
        }
    }
}

/// What to do with one packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it with these rewritten fields.
    Forward {
        /// Extended outgoing sequence number; starts below 65536 so the ROC starts at 0.
        seq_no: SeqNo,
        /// Outgoing RTP timestamp, in the codec's clock.
        time: u32,
    },
    /// Do not send it.
    Drop(DropReason),
}

/// What to do with a packet of one layer for a subscription (see [`select`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// It is the layer the subscription receives: send it.
    Forward,
    /// The subscription switches to this layer here: continue its stream, then send.
    Switch,
    /// Not for this subscription now; no loss (nothing of it was promised).
    Skip,
}

/// Layer selection for one subscription: `current` is the layer it receives (`None`:
/// nothing), `target` the one chosen for it. A switch happens only at the first packet of
/// a keyframe of the target layer (`keyframe`; true for every audio packet); until then
/// the current layer keeps flowing. A target of `None` pauses at once.
pub fn select(current: &mut Option<u8>, target: Option<u8>, layer: u8, keyframe: bool) -> Select {
    let Some(target) = target else {
        *current = None;
        return Select::Skip;
    };
    if *current == Some(layer) {
        return Select::Forward;
    }
    if target == layer && keyframe {
        *current = Some(layer);
        return Select::Switch;
    }
    Select::Skip
}

/// Layer selection for a subscription to an SVC stream, where `current` is the highest
/// spatial layer forwarded (`None`: nothing) and every layer up to it goes out. Down to a
/// lower target at the start of any picture (no layer depends on a higher one); up, or
/// from nothing, only at a keyframe. A target of `None` pauses at once.
pub fn select_svc(current: &mut Option<u8>, target: Option<u8>, info: &LayerInfo) -> Select {
    let Some(target) = target else {
        *current = None;
        return Select::Skip;
    };
    let picture_start = info.start && info.spatial == 0;
    let switch = match *current {
        None => info.keyframe,
        Some(c) if target < c => picture_start,
        Some(c) if target > c => info.keyframe,
        Some(_) => false,
    };
    if switch {
        *current = Some(target);
    }
    match *current {
        Some(c) if info.spatial <= c => {
            if switch {
                Select::Switch
            } else {
                Select::Forward
            }
        }
        _ => Select::Skip,
    }
}

/// Whether an RTP payload is the first packet of a keyframe, from the codec's payload
/// descriptor (the few bytes end-to-end encrypting clients leave in the clear). H.264
/// keyframes start at the SPS that precedes the IDR picture, or at the IDR picture.
pub fn keyframe_start(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => detect_vp8_keyframe(payload),
        // P = 0 (not inter-picture predicted) and B = 1 (a frame's first packet), in the
        // lowest spatial layer (L: SID = 0 when the layer index is present).
        Codec::Vp9 => detect_vp9_keyframe(payload) && vp9_starts_lowest_layer(payload),
        Codec::H264 => detect_h264_nalu(payload, 7) || detect_h264_nalu(payload, 5),
        Codec::Av1 => detect_av1_keyframe(payload),
        _ => false,
    }
}

/// VP9 (RFC 9628): whether the packet starts a frame (B) of the lowest spatial layer.
fn vp9_starts_lowest_layer(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let (has_picture_id, has_layers, begins) = (b0 & 0x80 != 0, b0 & 0x20 != 0, b0 & 0x08 != 0);
    if !begins {
        return false;
    }
    if !has_layers {
        return true;
    }
    let mut at = 1;
    if has_picture_id {
        let long = payload.get(1).is_some_and(|b| b & 0x80 != 0);
        at += if long { 2 } else { 1 };
    }
    // Layer indices: TID (3) | U | SID (3) | D.
    payload.get(at).is_some_and(|l| (l >> 1) & 0x07 == 0)
}

/// Sequence and timestamp rewriting for one subscriber's m-line.
///
/// The subscriber's sequence numbers start at `first_seq` with the first packet it is sent
/// and follow the source's from there, so a loss upstream stays a visible gap (the
/// subscriber NACKs it) while nothing else ever makes one. When the m-line switches to
/// another source ([`Forwarder::switch_source`]), the stream goes on where it was: the next
/// sequence number, and a timestamp advanced by the wallclock time since the last packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarder {
    first_seq: u16,
    /// `(incoming, outgoing)` extended sequence numbers of the current source's first packet.
    base: Option<(u64, u64)>,
    /// Added (wrapping) to every incoming timestamp of the current source.
    time_offset: u32,
    /// The highest packet sent so far.
    last: Option<Sent>,
    /// Packets of the current source left out on purpose (layers above the one
    /// forwarded): the outgoing numbers close over them, so the subscriber sees no loss.
    skipped: Skipped,
    /// The highest incoming number of the current source forwarded.
    highest_in: Option<u64>,
}

/// The incoming sequence numbers skipped on purpose, as a count below any number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Skipped {
    /// Skipped numbers too old to keep apart, all below those in `recent`.
    old: u64,
    /// The latest skipped numbers, ascending.
    recent: std::collections::VecDeque<u64>,
}

/// How many skipped numbers are kept apart: reordering within this many is numbered right.
const SKIPPED_KEPT: usize = 256;

impl Skipped {
    fn below(&self, seq: u64) -> u64 {
        self.old + self.recent.partition_point(|s| *s < seq) as u64
    }

    fn add(&mut self, seq: u64) {
        let at = self.recent.partition_point(|s| *s < seq);
        if self.recent.get(at) == Some(&seq) {
            return; // Skipped already (a retransmission of it).
        }
        self.recent.insert(at, seq);
        if self.recent.len() > SKIPPED_KEPT {
            self.recent.pop_front();
            self.old += 1;
        }
    }
}

/// The highest packet a forwarder has sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    seq_no: u64,
    time: u32,
    at: Instant,
}

impl Forwarder {
    /// A forwarder whose first outgoing packet gets sequence number `first_seq`.
    pub fn new(first_seq: u16) -> Self {
        Forwarder {
            first_seq,
            base: None,
            time_offset: 0,
            last: None,
            skipped: Skipped::default(),
            highest_in: None,
        }
    }

    /// The next packet comes from another source: continue the stream from there.
    pub fn switch_source(&mut self) {
        self.base = None;
        self.skipped = Skipped::default();
        self.highest_in = None;
    }

    /// The packet `seq_no` of the current source is left out on purpose (a layer this
    /// subscriber does not receive): later packets are numbered as if it never was.
    /// Before the first forwarded packet there is nothing to close over, and below the
    /// highest one forwarded the numbers are given already (a late packet of a picture
    /// left out after it went, say: it stays a gap, as a loss would).
    pub fn skip(&mut self, seq_no: SeqNo) {
        if let Some((in_base, _)) = self.base
            && *seq_no >= in_base
            && self.highest_in.is_none_or(|h| *seq_no > h)
        {
            self.skipped.add(*seq_no);
        }
    }

    /// Decides for one incoming packet with extended sequence number `seq_no` and RTP
    /// timestamp `time` (clock `clock_hz`), received at `now`.
    pub fn decide(&mut self, seq_no: SeqNo, time: u32, now: Instant, clock_hz: u32) -> Decision {
        let incoming = *seq_no;
        let (in_base, out_base) = match self.base {
            Some(base) => base,
            None => {
                let (out_base, time_offset) = match self.last {
                    None => (u64::from(self.first_seq), 0),
                    Some(last) => {
                        let elapsed = now.saturating_duration_since(last.at);
                        let ticks = elapsed.as_micros() * u128::from(clock_hz) / 1_000_000;
                        let ticks = u32::try_from(ticks).unwrap_or(u32::MAX).max(1);
                        let out_time = last.time.wrapping_add(ticks);
                        (last.seq_no + 1, out_time.wrapping_sub(time))
                    }
                };
                self.time_offset = time_offset;
                *self.base.insert((incoming, out_base))
            }
        };
        if incoming < in_base {
            return Decision::Drop(DropReason::BeforeStart);
        }
        self.highest_in = Some(self.highest_in.map_or(incoming, |h| h.max(incoming)));
        let skipped = self.skipped.below(incoming);
        let out = (incoming - in_base + out_base).saturating_sub(skipped);
        let out_time = time.wrapping_add(self.time_offset);
        if self.last.is_none_or(|l| out > l.seq_no) {
            self.last = Some(Sent {
                seq_no: out,
                time: out_time,
                at: now,
            });
        }
        Decision::Forward {
            seq_no: out.into(),
            time: out_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const HZ: u32 = 90_000;

    fn forwarded(d: Decision) -> (u64, u32) {
        match d {
            Decision::Forward { seq_no, time } => (*seq_no, time),
            Decision::Drop(r) => panic!("dropped: {r:?}"),
        }
    }

    #[test]
    fn starts_at_first_seq_and_follows_the_source() {
        let mut f = Forwarder::new(100);
        assert_eq!(
            forwarded(f.decide(5000.into(), 90_000, t0(), HZ)),
            (100, 90_000)
        );
        assert_eq!(
            forwarded(f.decide(5001.into(), 93_000, t0(), HZ)),
            (101, 93_000)
        );
        // A loss upstream stays a gap, so the subscriber can NACK it.
        assert_eq!(
            forwarded(f.decide(5004.into(), 96_000, t0(), HZ)),
            (104, 96_000)
        );
        // A late (reordered or retransmitted) packet slots back into its place.
        assert_eq!(
            forwarded(f.decide(5003.into(), 96_000, t0(), HZ)),
            (103, 96_000)
        );
    }

    #[test]
    fn drops_packets_from_before_the_subscription() {
        let mut f = Forwarder::new(1);
        forwarded(f.decide(70_000.into(), 1, t0(), HZ));
        assert_eq!(
            f.decide(69_999.into(), 0, t0(), HZ),
            Decision::Drop(DropReason::BeforeStart)
        );
    }

    #[test]
    fn a_source_past_a_wrap_still_starts_the_subscriber_at_roc_zero() {
        // The source has wrapped its 16-bit sequence three times already.
        let mut f = Forwarder::new(65_000);
        let start = 3 * 65_536 + 10;
        assert_eq!(forwarded(f.decide(start.into(), 0, t0(), HZ)).0, 65_000);
        // The subscriber wraps on its own, with the extended counter carrying on.
        assert_eq!(
            forwarded(f.decide((start + 600).into(), 0, t0(), HZ)).0,
            65_600
        );
    }

    #[test]
    fn timestamps_wrap() {
        let mut f = Forwarder::new(1);
        assert_eq!(
            forwarded(f.decide(1.into(), u32::MAX, t0(), HZ)).1,
            u32::MAX
        );
        assert_eq!(forwarded(f.decide(2.into(), 5, t0(), HZ)).1, 5);
    }

    fn t0() -> Instant {
        use std::sync::OnceLock;
        static T0: OnceLock<Instant> = OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    #[test]
    fn a_source_switch_continues_the_stream() {
        let mut f = Forwarder::new(10);
        let t = t0();
        assert_eq!(forwarded(f.decide(500.into(), 1_000, t, HZ)), (10, 1_000));
        assert_eq!(forwarded(f.decide(501.into(), 4_000, t, HZ)), (11, 4_000));
        f.switch_source();
        // Another source, with its own numbering, 100 ms later.
        let later = t + Duration::from_millis(100);
        assert_eq!(
            forwarded(f.decide(90_000.into(), 7, later, HZ)),
            (12, 4_000 + 9_000)
        );
        assert_eq!(
            forwarded(f.decide(90_001.into(), 3_007, later, HZ)),
            (13, 4_000 + 9_000 + 3_000)
        );
        // Packets of the new source from before the switch are not sent.
        assert_eq!(
            f.decide(89_999.into(), 0, later, HZ),
            Decision::Drop(DropReason::BeforeStart)
        );
    }

    #[test]
    fn skipped_packets_leave_no_gap_and_reordering_keeps_its_place() {
        let mut f = Forwarder::new(1);
        let t = t0();
        assert_eq!(forwarded(f.decide(100.into(), 0, t, HZ)).0, 1);
        f.skip(101.into());
        f.skip(102.into());
        assert_eq!(forwarded(f.decide(103.into(), 0, t, HZ)).0, 2);
        // A real loss (104) stays a gap; 106 is skipped, 107 follows 105.
        f.skip(106.into());
        assert_eq!(forwarded(f.decide(105.into(), 0, t, HZ)).0, 4);
        assert_eq!(forwarded(f.decide(107.into(), 0, t, HZ)).0, 5);
        // The lost packet, retransmitted late, fills its own gap.
        assert_eq!(forwarded(f.decide(104.into(), 0, t, HZ)).0, 3);
        // A retransmission of a skipped packet is skipped again without counting twice.
        f.skip(106.into());
        assert_eq!(forwarded(f.decide(108.into(), 0, t, HZ)).0, 6);
        // Many skips later, the count still holds.
        for s in 109..1000 {
            f.skip(s.into());
        }
        assert_eq!(forwarded(f.decide(1000.into(), 0, t, HZ)).0, 7);
        // A packet forwarded already, left out when it comes again: nothing moves.
        f.skip(1000.into());
        f.skip(999.into());
        assert_eq!(forwarded(f.decide(1001.into(), 0, t, HZ)).0, 8);
    }

    #[test]
    fn a_switch_after_a_late_packet_continues_after_the_highest_sent() {
        let mut f = Forwarder::new(1);
        let t = t0();
        forwarded(f.decide(10.into(), 0, t, HZ));
        forwarded(f.decide(12.into(), 6_000, t, HZ));
        forwarded(f.decide(11.into(), 3_000, t, HZ)); // Late, below the highest.
        f.switch_source();
        assert_eq!(forwarded(f.decide(1.into(), 0, t, HZ)).0, 4);
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_target_and_a_pause_is_immediate() {
        let mut current = None;
        // Nothing flows until the target layer's keyframe.
        assert_eq!(select(&mut current, Some(2), 2, false), Select::Skip);
        assert_eq!(select(&mut current, Some(2), 0, true), Select::Skip);
        assert_eq!(select(&mut current, Some(2), 2, true), Select::Switch);
        assert_eq!(current, Some(2));
        assert_eq!(select(&mut current, Some(2), 2, false), Select::Forward);
        // Down to layer 0: layer 2 flows until layer 0's keyframe.
        assert_eq!(select(&mut current, Some(0), 0, false), Select::Skip);
        assert_eq!(select(&mut current, Some(0), 2, false), Select::Forward);
        assert_eq!(select(&mut current, Some(0), 0, true), Select::Switch);
        assert_eq!(select(&mut current, Some(0), 2, true), Select::Skip);
        // Paused: nothing, and resuming needs a keyframe again.
        assert_eq!(select(&mut current, None, 0, false), Select::Skip);
        assert_eq!(current, None);
        assert_eq!(select(&mut current, Some(0), 0, false), Select::Skip);
        assert_eq!(select(&mut current, Some(0), 0, true), Select::Switch);
    }

    #[test]
    fn an_svc_subscription_goes_down_at_a_picture_and_up_at_a_keyframe() {
        let at = |spatial, start, keyframe| LayerInfo {
            spatial,
            temporal: 0,
            start,
            end: false,
            keyframe,
        };
        let mut current = None;
        // Nothing until a keyframe; then every layer up to the target.
        assert_eq!(
            select_svc(&mut current, Some(1), &at(0, true, false)),
            Select::Skip
        );
        assert_eq!(
            select_svc(&mut current, Some(1), &at(0, true, true)),
            Select::Switch
        );
        assert_eq!(
            select_svc(&mut current, Some(1), &at(1, true, false)),
            Select::Forward
        );
        assert_eq!(
            select_svc(&mut current, Some(1), &at(2, true, false)),
            Select::Skip
        );
        // Up to 2 waits for a keyframe; 1 keeps flowing.
        assert_eq!(
            select_svc(&mut current, Some(2), &at(0, true, false)),
            Select::Forward
        );
        assert_eq!(
            select_svc(&mut current, Some(2), &at(2, true, false)),
            Select::Skip
        );
        assert_eq!(
            select_svc(&mut current, Some(2), &at(0, true, true)),
            Select::Switch
        );
        assert_eq!(
            select_svc(&mut current, Some(2), &at(2, true, false)),
            Select::Forward
        );
        // Down to 0 at the next picture's first packet, not in the middle of one.
        assert_eq!(
            select_svc(&mut current, Some(0), &at(1, true, false)),
            Select::Forward
        );
        assert_eq!(
            select_svc(&mut current, Some(0), &at(0, false, false)),
            Select::Forward
        );
        assert_eq!(
            select_svc(&mut current, Some(0), &at(0, true, false)),
            Select::Switch
        );
        assert_eq!(
            select_svc(&mut current, Some(0), &at(1, true, false)),
            Select::Skip
        );
        assert_eq!(current, Some(0));
        // Paused at once.
        assert_eq!(
            select_svc(&mut current, None, &at(0, true, true)),
            Select::Skip
        );
        assert_eq!(current, None);
    }

    #[test]
    fn keyframe_starts_by_codec() {
        // VP8 (RFC 7741): X=1 S=1 PID=0; I=1 with a 15-bit picture id; then the payload
        // header, whose low bit P is 0 for a keyframe.
        let vp8_key = [0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00];
        let vp8_delta = [0x90, 0x80, 0x81, 0x23, 0x11, 0x02, 0x00];
        let vp8_middle = [0x80, 0x80, 0x81, 0x23, 0x10]; // S=0: not a frame's first packet.
        assert!(keyframe_start(Codec::Vp8, &vp8_key));
        assert!(!keyframe_start(Codec::Vp8, &vp8_delta));
        assert!(!keyframe_start(Codec::Vp8, &vp8_middle));
        // VP9 (RFC 9628): I=1 (one byte picture id follows) P=0 B=1.
        assert!(keyframe_start(Codec::Vp9, &[0x88, 0x05, 0x00]));
        assert!(!keyframe_start(Codec::Vp9, &[0xc8, 0x05, 0x00])); // P=1
        assert!(!keyframe_start(Codec::Vp9, &[0x80, 0x05, 0x00])); // B=0
        // L=1: the layer index byte after the picture id; SID (bits 3..1) must be 0.
        assert!(keyframe_start(Codec::Vp9, &[0xa8, 0x05, 0x00, 0x00]));
        assert!(!keyframe_start(Codec::Vp9, &[0xa8, 0x05, 0x02, 0x00]));
        // H.264 (RFC 6184): an SPS, an IDR, a STAP-A with both, a P slice.
        assert!(keyframe_start(Codec::H264, &[0x67, 0x42]));
        assert!(keyframe_start(Codec::H264, &[0x65, 0x88]));
        assert!(keyframe_start(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x65, 0x88]
        ));
        assert!(!keyframe_start(Codec::H264, &[0x41, 0x9a]));
        // AV1: the aggregation header's N bit.
        assert!(keyframe_start(Codec::Av1, &[0x18]));
        assert!(!keyframe_start(Codec::Av1, &[0x10]));
        assert!(!keyframe_start(Codec::Vp8, &[]));
    }

    #[test]
    fn drop_reason_indexes_are_dense() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
