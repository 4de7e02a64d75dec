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
//!
//! A conference member gets one too once its losses proved its link's rate
//! (`shard/shaping.rs`, [`Pacer::shaping`]): it then paces all its video, resends and
//! padding at that rate, a datagram at a time, and drops what waited too long.

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

/// The burst of a pacer that shapes a link to a rate its losses proved
/// ([`Pacer::shaping`]): one full datagram. (Eight let a keyframe through at once, which
/// a policer's burst did not hold.)
const SHAPING_BURST_BYTES: f64 = 1200.0;

/// What waited this long in a shaping pacer is dropped (counted): a picture that late is
/// of no use, and a video paused meanwhile would go on arriving for seconds. (Above
/// the shard's cut of a stream, `SHAPED_MAX_DELAY`: what is dropped is what waited on
/// after the cut, not the keyframe it waits for.)
pub const SHAPING_MAX_WAIT: Duration = Duration::from_secs(3);

/// Most datagrams a participant's queue holds; the next is dropped (counted): about a
/// second at the lowest rate the shard paces a viewer at, later than which a
/// retransmission is of no use. (A shaping pacer's queue is bounded in time first,
/// [`SHAPING_MAX_WAIT`].)
pub const MAX_QUEUED: usize = 256;

#[derive(Debug)]
pub struct Pacer {
    /// Bytes that may leave now: up to a burst, below zero after a datagram larger than
    /// what was left.
    budget: f64,
    /// When `budget` was last brought up to date.
    last: Instant,
    /// Datagrams waiting their turn, oldest first, with when they came.
    queue: VecDeque<(Instant, Transmit)>,
    /// The payload types it paces (a bit each): the participant's RTX ones (a shaping
    /// pacer's: its video ones too).
    paced_pts: u128,
    /// The least burst it allows (bytes), and the burst at the last rate.
    min_burst: f64,
    burst: f64,
    /// It shapes a link ([`Pacer::shaping`]): its video, resends and padding wait, but
    /// for the SSRCs exempted, which go at once and draw nothing.
    shaping: bool,
    exempt: Vec<u32>,
    /// Datagrams a shaping pacer dropped for waiting too long, not yet counted.
    expired: u64,
    /// Datagrams that waited their turn (paced) and left, and that it dropped (too long
    /// waited, or its queue full), since it was made.
    paced_total: u64,
    dropped_total: u64,
}

/// What a pacer does with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Waits its turn.
    Paced,
    /// Goes at once, and draws on the budget.
    Drawn,
    /// Goes at once, as if it were not sent.
    Free,
}

impl Pacer {
    pub fn new(now: Instant) -> Self {
        Pacer {
            budget: MIN_BURST_BYTES,
            last: now,
            queue: VecDeque::new(),
            paced_pts: 0,
            min_burst: MIN_BURST_BYTES,
            burst: MIN_BURST_BYTES,
            shaping: false,
            exempt: Vec::new(),
            expired: 0,
            paced_total: 0,
            dropped_total: 0,
        }
    }

    /// A pacer that shapes a link to a rate proven by its losses: its bursts are a
    /// datagram, not eight, and a datagram waits until the budget holds all of it;
    /// padding and probes (RTP with the padding bit set) wait too: above the rate they
    /// would take a policer's tokens from the video (steering asks str0m for no more
    /// than the rate, `shard/steer.rs`).
    pub fn shaping(now: Instant) -> Self {
        Pacer {
            budget: SHAPING_BURST_BYTES,
            min_burst: SHAPING_BURST_BYTES,
            shaping: true,
            ..Pacer::new(now)
        }
    }

    /// RTP of these SSRCs goes at once and draws nothing (a shaping pacer's): a stream
    /// the shard sends past the rate on purpose.
    pub fn exempt(&mut self, ssrcs: &[u32]) {
        self.exempt.clear();
        self.exempt.extend_from_slice(ssrcs);
    }

    /// RTP of payload type `pt` (a retransmission's) is paced.
    pub fn pace_payload_type(&mut self, pt: u8) {
        self.paced_pts |= 1u128 << (pt & 0x7f);
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The datagrams it dropped for waiting longer than [`SHAPING_MAX_WAIT`] since last
    /// asked.
    pub fn take_expired(&mut self) -> u64 {
        std::mem::take(&mut self.expired)
    }

    /// Datagrams of the paced kind it let go and that it dropped since it was made: what
    /// it dropped, str0m had numbered, and the receiver counts lost.
    pub fn totals(&self) -> (u64, u64) {
        (self.paced_total, self.dropped_total)
    }

    /// (A shaping pacer's.)
    fn expire(&mut self, now: Instant) {
        while self.shaping
            && self
                .queue
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > SHAPING_MAX_WAIT)
        {
            self.queue.pop_front();
            self.expired += 1;
            self.dropped_total += 1;
        }
    }

    /// When the oldest datagram that waits came.
    pub fn oldest(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _)| *at)
    }

    /// What becomes of a datagram: RTP of a paced payload type waits its turn; media,
    /// RTCP, STUN and DTLS go at once (RFC 7983 tells them apart by their first byte,
    /// RFC 5761 RTP from RTCP by the second; SRTP does not encrypt the RTP header); a
    /// shaping pacer's padding waits, and its exempted streams go at once as if not
    /// sent.
    fn class(&self, contents: &[u8]) -> Class {
        if contents.len() < 12 || contents[0] >> 6 != 2 {
            return Class::Drawn;
        }
        let pt = contents[1] & 0x7f;
        if (64..96).contains(&pt) {
            return Class::Drawn;
        }
        if self.shaping {
            // (Padding first: on the exempted stream's resend SSRC too, it waits.)
            if contents[0] & 0x20 != 0 {
                return Class::Paced;
            }
            let ssrc = u32::from_be_bytes([contents[8], contents[9], contents[10], contents[11]]);
            if self.exempt.contains(&ssrc) {
                return Class::Free;
            }
        }
        if self.paced_pts & (1u128 << pt) != 0 {
            Class::Paced
        } else {
            Class::Drawn
        }
    }

    fn refill(&mut self, now: Instant, rate_bps: u64) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        let bytes_per_s = rate_bps as f64 / 8.0;
        self.burst = (bytes_per_s * BURST.as_secs_f64()).max(self.min_burst);
        self.budget = (self.budget + elapsed * bytes_per_s).min(self.burst);
    }

    /// What the budget must hold for a datagram of `len` bytes to leave: a shaping
    /// pacer's, all of it (or its whole burst, for one larger: the budget never holds
    /// more); another's, anything above zero.
    fn needs(&self, len: usize) -> f64 {
        if self.shaping {
            (len as f64).min(self.burst)
        } else {
            f64::MIN_POSITIVE
        }
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
        self.expire(now);
        let len = t.contents.len();
        let class = self.class(&t.contents);
        if class == Class::Free {
            send(t);
            return true;
        }
        if class == Class::Drawn || (self.queue.is_empty() && self.budget >= self.needs(len)) {
            self.budget -= len as f64;
            self.paced_total += u64::from(class == Class::Paced);
            send(t);
            return true;
        }
        let kept = self.queue.len() < MAX_QUEUED;
        if kept {
            self.queue.push_back((now, t));
        } else {
            self.dropped_total += 1;
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
        self.expire(now);
        self.drain(send);
        self.next_release(now, rate_bps)
    }

    fn drain(&mut self, mut send: impl FnMut(Transmit)) {
        // (Shaping, a datagram waits for its whole size: two at once overran a
        // policer's burst.)
        while let Some((_, t)) = self.queue.front()
            && self.budget >= self.needs(t.contents.len())
        {
            let Some((_, t)) = self.queue.pop_front() else {
                return;
            };
            self.budget -= t.contents.len() as f64;
            self.paced_total += 1;
            send(t);
        }
    }

    /// When the budget holds a round's worth (and, shaping, what the first datagram that
    /// waits needs, at most the burst), if anything waits; never at once.
    pub fn next_release(&self, now: Instant, rate_bps: u64) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        let bytes_per_s = rate_bps.max(1) as f64 / 8.0;
        let round = (bytes_per_s * ROUND.as_secs_f64()).max(1200.0);
        let head = self.queue.front().map_or(0, |(_, t)| t.contents.len());
        let needs = round.max(self.needs(head)).min(self.burst.max(round));
        // (Never at once: the release would find what this one did, again and again.)
        let wait = ((needs - self.budget) / bytes_per_s).max(0.001);
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

    fn datagram_of(pt: u8, ssrc: u32, first: u8, len: usize) -> Transmit {
        let mut t = datagram(pt, len);
        let mut contents = t.contents.to_vec();
        contents[0] = first;
        contents[8..12].copy_from_slice(&ssrc.to_be_bytes());
        t.contents = contents.into();
        t
    }

    /// Runs a pacer's releases until its queue is empty (bounded), returning when each
    /// datagram left.
    fn release_all(pacer: &mut Pacer, mut now: Instant, rate: u64, sent: &mut Vec<Instant>) {
        for _ in 0..100_000 {
            let Some(at) = pacer.next_release(now, rate) else {
                return;
            };
            assert!(at > now, "the next release is later, never at once");
            now = at;
            pacer.release(now, rate, |_| sent.push(now));
        }
        panic!("the queue never drained");
    }

    /// A shaping pacer lets one datagram go at a time, at the rate, even datagrams
    /// larger than its burst, and drops what waited too long.
    #[test]
    fn a_shaping_pacer_sends_one_datagram_at_a_time_and_never_stalls() {
        let start = Instant::now();
        let rate = 200_000; // 25 bytes a millisecond: a burst of one datagram
        let mut pacer = Pacer::shaping(start);
        pacer.pace_payload_type(96);
        let mut sent: Vec<Instant> = Vec::new();
        // A keyframe of 20 datagrams of 1400 bytes (larger than the burst) at once.
        for _ in 0..20 {
            pacer.offer(start, rate, datagram(96, 1400), |_| sent.push(start));
        }
        assert!(sent.len() <= 1, "{} sent at once", sent.len());
        release_all(&mut pacer, start, rate, &mut sent);
        assert_eq!(sent.len(), 20);
        for w in sent.windows(2) {
            assert!(w[1] > w[0], "one at a time: {:?}", w[1] - w[0]);
        }
        let took = *sent.last().unwrap() - start;
        // 19 x 1400 bytes after the first, at 25 bytes a millisecond: about 1.06 s.
        assert!(
            took >= Duration::from_millis(1000) && took <= Duration::from_millis(1200),
            "{took:?}"
        );
        // Past SHAPING_MAX_WAIT, what still waits is dropped, counted.
        let mut pacer = Pacer::shaping(start);
        pacer.pace_payload_type(96);
        let mut left = 0;
        for _ in 0..40 {
            pacer.offer(start, rate, datagram(96, 1400), |_| left += 1);
        }
        let late = start + SHAPING_MAX_WAIT + Duration::from_millis(1);
        pacer.release(late, rate, |_| left += 1);
        assert_eq!(pacer.queued(), 0);
        assert_eq!(pacer.take_expired() + left, 40);
        assert_eq!(pacer.take_expired(), 0, "counted once");
    }

    #[test]
    fn shaping_paces_padding_too_and_leaves_exempted_streams_alone() {
        let now = Instant::now();
        let rate = 200_000;
        let mut pacer = Pacer::shaping(now);
        pacer.pace_payload_type(96);
        pacer.pace_payload_type(97);
        pacer.exempt(&[0x1234]);
        while pacer.queued() == 0 {
            pacer.offer(now, rate, datagram_of(96, 1, 0x80, 1200), |_| {});
        }
        // The exempted stream's video goes at once ...
        let mut sent = 0;
        pacer.offer(now, rate, datagram_of(96, 0x1234, 0x80, 1200), |_| {
            sent += 1
        });
        assert_eq!((sent, pacer.queued()), (1, 1));
        // ... padding (the P bit) waits like a retransmission: above the shaped rate it
        // would take the policer's tokens from the video.
        pacer.offer(now, rate, datagram_of(97, 2, 0xa0, 300), |_| sent += 1);
        pacer.offer(now, rate, datagram_of(97, 2, 0x80, 300), |_| sent += 1);
        assert_eq!((sent, pacer.queued()), (1, 3));
        // What waited its turn and left, and what it dropped, are counted.
        let (paced, dropped) = pacer.totals();
        assert!(paced >= 1 && dropped == 0, "{paced} {dropped}");
        pacer.release(now + SHAPING_MAX_WAIT * 2, rate, |_| {});
        assert_eq!(pacer.totals(), (paced, 3));
    }
}
