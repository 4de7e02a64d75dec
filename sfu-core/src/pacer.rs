//! Pacing for the participants whose `Rtc` does not pace: a broadcast's audience, which
//! has no TWCC estimator (and so no str0m pacer) because its cost per packet would cap a
//! 500-viewer fan-out. Without a pacer, whatever str0m makes for one viewer at one
//! instant leaves at that instant: a burst of retransmissions answering a long NACK, say,
//! which overflows the viewer's own bottleneck and, sent by the one thread that serves
//! every viewer of the shard, makes all the others' packets wait behind it.
//!
//! What is paced is what the server makes for one viewer alone: its retransmissions
//! (RTX payload types, which the shard names). Forwarded media is the same for every
//! viewer, interleaved between them, and already paced by its publisher; holding it back
//! only adds to the delay of a server that fell behind (`bench broadcast` lost packets
//! when a first version paced it too).
//!
//! A token bucket per participant, fed at a rate the shard gives (a multiple of what the
//! viewer should receive) and drawn on by everything it is sent, lets a retransmission
//! through while the bucket holds a little burst and queues the rest, in order, until it
//! refills. Sans-IO: the shard offers each datagram ([`Pacer::offer`]), which also lets
//! go what waited, and calls [`Pacer::release`] at the instant it was told.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use str0m::net::Transmit;

/// How much a viewer may send at once above its rate: this long at its rate.
const BURST: Duration = Duration::from_millis(10);

/// What waits is let go in rounds this far apart (what the rate gives in this time
/// leaves together): a timer per datagram would cost more than the sending.
const ROUND: Duration = Duration::from_millis(5);

/// The burst is never less than this many bytes (eight full datagrams), so that a slow
/// viewer still gets a small frame in one go.
const MIN_BURST_BYTES: f64 = 8.0 * 1200.0;

/// Most datagrams a participant's queue holds; the next is dropped (counted): about a
/// second at the lowest rate the shard paces at, later than which a retransmission is
/// of no use.
pub const MAX_QUEUED: usize = 256;

#[derive(Debug)]
pub struct Pacer {
    /// Bytes that may leave now: up to a burst, below zero after a datagram larger than
    /// what was left.
    budget: f64,
    /// When `budget` was last brought up to date.
    last: Instant,
    /// Datagrams waiting their turn, oldest first.
    queue: VecDeque<Transmit>,
    /// The payload types it paces (a bit each): the participant's RTX ones.
    paced_pts: u128,
}

impl Pacer {
    pub fn new(now: Instant) -> Self {
        Pacer {
            budget: MIN_BURST_BYTES,
            last: now,
            queue: VecDeque::new(),
            paced_pts: 0,
        }
    }

    /// RTP of payload type `pt` (a retransmission's) is paced.
    pub fn pace_payload_type(&mut self, pt: u8) {
        self.paced_pts |= 1u128 << (pt & 0x7f);
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether a datagram waits its turn: RTP of a paced payload type. Media, RTCP,
    /// STUN and DTLS go at once (RFC 7983 tells them apart by their first byte, RFC 5761
    /// RTP from RTCP by the second; SRTP does not encrypt the RTP header).
    fn paced(&self, contents: &[u8]) -> bool {
        if contents.len() < 12 || contents[0] >> 6 != 2 {
            return false;
        }
        let pt = contents[1] & 0x7f;
        !(64..96).contains(&pt) && self.paced_pts & (1u128 << pt) != 0
    }

    fn refill(&mut self, now: Instant, rate_bps: u64) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        let bytes_per_s = rate_bps as f64 / 8.0;
        let burst = (bytes_per_s * BURST.as_secs_f64()).max(MIN_BURST_BYTES);
        self.budget = (self.budget + elapsed * bytes_per_s).min(burst);
    }

    /// A datagram the participant's `Rtc` made at `now`, to be sent at `rate_bps`: hands
    /// `send` what may leave now, this one or those that waited before it (the queue
    /// drains as datagrams come, whether or not its timer was served on time). Returns
    /// false when the queue is full and the datagram was dropped.
    pub fn offer(
        &mut self,
        now: Instant,
        rate_bps: u64,
        t: Transmit,
        mut send: impl FnMut(Transmit),
    ) -> bool {
        self.refill(now, rate_bps);
        if !self.paced(&t.contents) || (self.queue.is_empty() && self.budget > 0.0) {
            self.budget -= t.contents.len() as f64;
            send(t);
            return true;
        }
        let kept = self.queue.len() < MAX_QUEUED;
        if kept {
            self.queue.push_back(t);
        }
        self.drain(send);
        kept
    }

    /// Hands `send` what may leave at `now`, oldest first; returns when the next may, if
    /// any still waits.
    pub fn release(
        &mut self,
        now: Instant,
        rate_bps: u64,
        send: impl FnMut(Transmit),
    ) -> Option<Instant> {
        self.refill(now, rate_bps);
        self.drain(send);
        self.next_release(now, rate_bps)
    }

    fn drain(&mut self, mut send: impl FnMut(Transmit)) {
        while self.budget > 0.0 {
            let Some(t) = self.queue.pop_front() else {
                return;
            };
            self.budget -= t.contents.len() as f64;
            send(t);
        }
    }

    /// When the budget is a round's worth above zero, if anything waits for it.
    pub fn next_release(&self, now: Instant, rate_bps: u64) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        let bytes_per_s = rate_bps.max(1) as f64 / 8.0;
        let round = (bytes_per_s * ROUND.as_secs_f64()).max(1200.0);
        let wait = (round - self.budget).max(0.0) / bytes_per_s;
        Some(now + Duration::from_secs_f64(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::net::Protocol;

    fn datagram(pt: u8, len: usize) -> Transmit {
        let mut contents = vec![0u8; len];
        contents[0] = 0x80;
        contents[1] = pt;
        Transmit {
            proto: Protocol::Udp,
            source: "192.0.2.1:16384".parse().expect("address"),
            destination: "198.51.100.7:5000".parse().expect("address"),
            contents: contents.into(),
        }
    }

    /// 1000-byte video datagrams offered all at once leave at the rate, after a burst.
    #[test]
    fn a_burst_is_spread_at_the_rate() {
        let start = Instant::now();
        let rate = 8_000_000; // 1000 bytes a millisecond
        let mut pacer = Pacer::new(start);
        pacer.pace_payload_type(97);
        let mut sent_at: Vec<Instant> = Vec::new();
        for _ in 0..100 {
            pacer.offer(start, rate, datagram(97, 1000), |_| sent_at.push(start));
        }
        // The first burst: 10 ms at the rate (10,000 bytes), one datagram over.
        assert_eq!(sent_at.len(), 10, "sent at once");
        assert_eq!(pacer.queued(), 90);
        let mut now = start;
        while let Some(at) = pacer.next_release(now, rate) {
            assert!(at > now, "the next release is later");
            now = at;
            pacer.release(now, rate, |_| sent_at.push(now));
        }
        assert_eq!(sent_at.len(), 100, "everything queued leaves");
        let took = now - start;
        assert!(
            took >= Duration::from_millis(85) && took <= Duration::from_millis(95),
            "90 datagrams queued at 1000 bytes/ms took {took:?}"
        );
        let rounds: std::collections::BTreeSet<Instant> = sent_at.iter().copied().collect();
        assert!(
            rounds.len() <= 20,
            "released in rounds (5 ms apart), not one by one: {} instants",
            rounds.len()
        );
        // Never more than the burst in any 10 ms.
        for (i, at) in sent_at.iter().enumerate() {
            let within = sent_at[i..]
                .iter()
                .take_while(|x| **x < *at + Duration::from_millis(10))
                .count();
            assert!(within <= 21, "{within} datagrams within 10 ms of {at:?}");
        }
    }

    #[test]
    fn media_rtcp_and_handshakes_never_wait() {
        let now = Instant::now();
        let mut pacer = Pacer::new(now);
        pacer.pace_payload_type(97);
        pacer.pace_payload_type(99);
        let rate = 1_000_000;
        while pacer.queued() == 0 {
            pacer.offer(now, rate, datagram(97, 1200), |_| {});
        }
        // Each of these leaves at once (the count of what was sent goes up by one).
        let mut stun = datagram(0, 80);
        stun.contents = [0x01, 0x01, 0, 60].repeat(20).into();
        let mut dtls = datagram(0, 80);
        dtls.contents = vec![22u8; 80].into();
        let unpaced = [
            datagram(96, 1200), // video
            datagram(111, 200), // audio
            datagram(0xc9, 60), // RTCP (a receiver report, packet type 201)
            stun,               // a STUN binding response (first byte 1)
            dtls,               // a DTLS record (content type 22)
        ];
        for t in unpaced {
            let mut sent = 0;
            assert!(pacer.offer(now, rate, t, |_| sent += 1));
            assert_eq!(sent, 1);
        }
        // And a retransmission still waits behind the first.
        let mut sent = 0;
        assert!(pacer.offer(now, rate, datagram(99, 300), |_| sent += 1));
        assert_eq!((sent, pacer.queued()), (0, 2));
        // A datagram offered later lets those that waited go first, timer or not.
        let later = now + Duration::from_millis(50);
        let mut order = Vec::new();
        pacer.offer(later, rate, datagram(97, 100), |t| {
            order.push(t.contents[1])
        });
        assert_eq!(order, [97, 99, 97]);
    }

    #[test]
    fn a_full_queue_drops() {
        let now = Instant::now();
        let mut pacer = Pacer::new(now);
        pacer.pace_payload_type(97);
        let mut dropped = 0;
        for _ in 0..MAX_QUEUED + 50 {
            if !pacer.offer(now, 1_000_000, datagram(97, 1200), |_| {}) {
                dropped += 1;
            }
        }
        assert_eq!(pacer.queued(), MAX_QUEUED);
        assert!(dropped > 0 && dropped < 50, "{dropped} dropped");
    }
}
