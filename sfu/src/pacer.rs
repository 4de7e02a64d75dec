//! Pacing for the participants whose `Rtc` does not pace: a broadcast's audience, which
//! has no TWCC estimator (and so no str0m pacer) because its cost per packet would cap a
//! 500-viewer fan-out. Without a pacer, whatever str0m makes for one viewer at one
//! instant leaves at that instant: a burst of retransmissions answering a long NACK, say,
//! which overflows the viewer's own bottleneck and, sent by the one thread that serves
//! every viewer of the shard, makes all the others' packets wait behind it.
//!
//! A token bucket per participant, fed at a rate the shard gives (a multiple of what the
//! viewer should receive), lets its video through while the bucket holds a little burst
//! and queues the rest, in order, until the bucket refills. Audio, RTCP, STUN and DTLS
//! never wait. Nothing is done per packet beyond a subtraction unless the viewer bursts.
//! Sans-IO: the shard asks [`Pacer::offer`] for each datagram and calls
//! [`Pacer::release`] at the instant it said.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use str0m::net::Transmit;

/// How much a viewer may send at once above its rate: this long at its rate.
const BURST: Duration = Duration::from_millis(10);

/// The burst is never less than this many bytes (eight full datagrams), so that a slow
/// viewer still gets a small frame in one go.
const MIN_BURST_BYTES: f64 = 8.0 * 1200.0;

/// Most datagrams a participant's queue holds; the next is dropped (counted). Forwarding
/// to a participant stops long before (when its oldest waited a second, see the
/// shard's `MAX_PACER_DELAY`): this bounds what retransmissions can add.
pub const MAX_QUEUED: usize = 256;

/// What became of a datagram offered to the pacer.
#[derive(Debug)]
pub enum Offer {
    /// It may leave now.
    Send(Transmit),
    /// It waits in the queue; [`Pacer::release`] lets it go.
    Queued,
    /// The queue is full: it is dropped.
    Dropped,
}

#[derive(Debug)]
pub struct Pacer {
    /// Bytes that may leave now: up to a burst, below zero after a datagram larger than
    /// what was left.
    budget: f64,
    /// When `budget` was last brought up to date.
    last: Instant,
    /// Datagrams waiting their turn, oldest first, with when each was offered.
    queue: VecDeque<(Instant, Transmit)>,
    /// The participant's audio payload types (a bit each), which are not paced.
    audio_pts: u128,
}

impl Pacer {
    pub fn new(now: Instant) -> Self {
        Pacer {
            budget: MIN_BURST_BYTES,
            last: now,
            queue: VecDeque::new(),
            audio_pts: 0,
        }
    }

    /// RTP of payload type `pt` is audio: it is not paced.
    pub fn mark_audio(&mut self, pt: u8) {
        self.audio_pts |= 1u128 << (pt & 0x7f);
    }

    /// When the oldest waiting datagram was offered.
    pub fn oldest(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _)| *at)
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether a datagram waits its turn: RTP other than audio (video, its
    /// retransmissions). RTCP, STUN, DTLS and audio go at once (RFC 7983 tells them apart
    /// by their first byte, RFC 5761 RTP from RTCP by the second; the RTP header is not
    /// encrypted by SRTP).
    fn paced(&self, contents: &[u8]) -> bool {
        if contents.len() < 12 || contents[0] >> 6 != 2 {
            return false;
        }
        let pt = contents[1] & 0x7f;
        !(64..96).contains(&pt) && self.audio_pts & (1u128 << pt) == 0
    }

    fn refill(&mut self, now: Instant, rate_bps: u64) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        let bytes_per_s = rate_bps as f64 / 8.0;
        let burst = (bytes_per_s * BURST.as_secs_f64()).max(MIN_BURST_BYTES);
        self.budget = (self.budget + elapsed * bytes_per_s).min(burst);
    }

    /// A datagram the participant's `Rtc` made at `now`, to be sent at `rate_bps`.
    pub fn offer(&mut self, now: Instant, rate_bps: u64, t: Transmit) -> Offer {
        self.refill(now, rate_bps);
        if !self.paced(&t.contents) {
            self.budget -= t.contents.len() as f64;
            return Offer::Send(t);
        }
        if self.queue.is_empty() && self.budget > 0.0 {
            self.budget -= t.contents.len() as f64;
            return Offer::Send(t);
        }
        if self.queue.len() >= MAX_QUEUED {
            return Offer::Dropped;
        }
        self.queue.push_back((now, t));
        Offer::Queued
    }

    /// Hands `send` what may leave at `now`, oldest first; returns when the next may, if
    /// any still waits.
    pub fn release(
        &mut self,
        now: Instant,
        rate_bps: u64,
        mut send: impl FnMut(Transmit),
    ) -> Option<Instant> {
        self.refill(now, rate_bps);
        while self.budget > 0.0 {
            let (_, t) = self.queue.pop_front()?;
            self.budget -= t.contents.len() as f64;
            send(t);
        }
        self.next_release(now, rate_bps)
    }

    /// When the budget is back above zero, if anything waits for it.
    pub fn next_release(&self, now: Instant, rate_bps: u64) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        let deficit = (-self.budget).max(0.0);
        let wait = deficit / (rate_bps.max(1) as f64 / 8.0);
        // A microsecond more: the budget is above zero then, not at it.
        Some(now + Duration::from_secs_f64(wait) + Duration::from_micros(1))
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
        let mut sent_at: Vec<Instant> = Vec::new();
        for _ in 0..100 {
            if let Offer::Send(_) = pacer.offer(start, rate, datagram(96, 1000)) {
                sent_at.push(start);
            }
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
            took >= Duration::from_millis(89) && took <= Duration::from_millis(92),
            "90 datagrams queued at 1000 bytes/ms took {took:?}"
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
    fn audio_rtcp_and_handshakes_never_wait() {
        let now = Instant::now();
        let mut pacer = Pacer::new(now);
        pacer.mark_audio(111);
        let rate = 1_000_000;
        while let Offer::Send(_) = pacer.offer(now, rate, datagram(96, 1200)) {}
        assert_eq!(pacer.queued(), 1, "video waits once the burst is spent");
        assert!(matches!(
            pacer.offer(now, rate, datagram(111, 200)),
            Offer::Send(_)
        ));
        // RTCP (a receiver report: packet type 201, second byte 0xc9).
        assert!(matches!(
            pacer.offer(now, rate, datagram(0xc9, 60)),
            Offer::Send(_)
        ));
        // A STUN binding response (first byte 0x01) and a DTLS record (22).
        let mut stun = datagram(0, 80);
        stun.contents = [0x01, 0x01, 0, 60].repeat(20).into();
        assert!(matches!(pacer.offer(now, rate, stun), Offer::Send(_)));
        let mut dtls = datagram(0, 80);
        dtls.contents = vec![22u8; 80].into();
        assert!(matches!(pacer.offer(now, rate, dtls), Offer::Send(_)));
        // And video still waits behind the first.
        assert!(matches!(
            pacer.offer(now, rate, datagram(97, 300)),
            Offer::Queued
        ));
        assert_eq!(pacer.oldest(), Some(now));
    }

    #[test]
    fn a_full_queue_drops() {
        let now = Instant::now();
        let mut pacer = Pacer::new(now);
        let mut dropped = 0;
        for _ in 0..MAX_QUEUED + 50 {
            if let Offer::Dropped = pacer.offer(now, 1_000_000, datagram(96, 1200)) {
                dropped += 1;
            }
        }
        assert_eq!(pacer.queued(), MAX_QUEUED);
        assert!(dropped > 0 && dropped < 50, "{dropped} dropped");
    }
}
