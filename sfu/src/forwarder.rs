//! The per-subscriber forwarding decision: a pure function from an incoming packet's
//! sequence number and timestamp to the rewritten ones, or a reason to drop it.

use str0m::rtp::SeqNo;

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
    /// The socket's send buffer was full.
    SendBufferFull,
    /// The participant's signaling queue was full.
    SignalQueueFull,
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::index`].
    pub const ALL: [DropReason; 9] = [
        DropReason::UnknownSource,
        DropReason::Malformed,
        DropReason::Refused,
        DropReason::Undeclared,
        DropReason::BeforeStart,
        DropReason::NoCodec,
        DropReason::NoStream,
        DropReason::SendBufferFull,
        DropReason::SignalQueueFull,
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
            DropReason::SendBufferFull => "send_buffer_full",
            DropReason::SignalQueueFull => "signal_queue_full",
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

/// Sequence and timestamp rewriting for one subscriber of one source.
///
/// The subscriber's sequence numbers start at `first_seq` with the first packet it is sent
/// and follow the source's from there, so a loss upstream stays a visible gap (the
/// subscriber NACKs it) while nothing else ever makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarder {
    first_seq: u16,
    /// `(incoming, outgoing)` extended sequence numbers of the first forwarded packet.
    base: Option<(u64, u64)>,
    /// Added (wrapping) to every incoming timestamp.
    time_offset: u32,
}

impl Forwarder {
    /// A forwarder whose first outgoing packet gets sequence number `first_seq`.
    pub fn new(first_seq: u16) -> Self {
        Forwarder {
            first_seq,
            base: None,
            time_offset: 0,
        }
    }

    /// Decides for one incoming packet with extended sequence number `seq_no` and RTP
    /// timestamp `time`.
    pub fn decide(&mut self, seq_no: SeqNo, time: u32) -> Decision {
        let incoming = *seq_no;
        let (in_base, out_base) = *self
            .base
            .get_or_insert((incoming, u64::from(self.first_seq)));
        if incoming < in_base {
            return Decision::Drop(DropReason::BeforeStart);
        }
        Decision::Forward {
            seq_no: (incoming - in_base + out_base).into(),
            time: time.wrapping_add(self.time_offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(d: Decision) -> (u64, u32) {
        match d {
            Decision::Forward { seq_no, time } => (*seq_no, time),
            Decision::Drop(r) => panic!("dropped: {r:?}"),
        }
    }

    #[test]
    fn starts_at_first_seq_and_follows_the_source() {
        let mut f = Forwarder::new(100);
        assert_eq!(forwarded(f.decide(5000.into(), 90_000)), (100, 90_000));
        assert_eq!(forwarded(f.decide(5001.into(), 93_000)), (101, 93_000));
        // A loss upstream stays a gap, so the subscriber can NACK it.
        assert_eq!(forwarded(f.decide(5004.into(), 96_000)), (104, 96_000));
        // A late (reordered or retransmitted) packet slots back into its place.
        assert_eq!(forwarded(f.decide(5003.into(), 96_000)), (103, 96_000));
    }

    #[test]
    fn drops_packets_from_before_the_subscription() {
        let mut f = Forwarder::new(1);
        forwarded(f.decide(70_000.into(), 1));
        assert_eq!(
            f.decide(69_999.into(), 0),
            Decision::Drop(DropReason::BeforeStart)
        );
    }

    #[test]
    fn a_source_past_a_wrap_still_starts_the_subscriber_at_roc_zero() {
        // The source has wrapped its 16-bit sequence three times already.
        let mut f = Forwarder::new(65_000);
        let start = 3 * 65_536 + 10;
        assert_eq!(forwarded(f.decide(start.into(), 0)).0, 65_000);
        // The subscriber wraps on its own, with the extended counter carrying on.
        assert_eq!(forwarded(f.decide((start + 600).into(), 0)).0, 65_600);
    }

    #[test]
    fn timestamps_wrap() {
        let mut f = Forwarder::new(1);
        assert_eq!(forwarded(f.decide(1.into(), u32::MAX)).1, u32::MAX);
        assert_eq!(forwarded(f.decide(2.into(), 5)).1, 5);
    }

    #[test]
    fn drop_reason_indexes_are_dense() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
