//! The network between the server and one client: a policer or a bottleneck's queue, and
//! seeded loss.

use std::time::{Duration, Instant};

/// The network between the server and one client, towards the client, with seeded random
/// loss and a capacity of `cap_bps`: a policer (a token bucket with 50 ms of burst, at
/// least a datagram's) unless `queue` makes it a bottleneck, whose queue delays what it
/// holds and drops what would wait longer than that (drop-tail).
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub cap_bps: Option<u64>,
    pub loss: f64,
    pub queue: Option<Duration>,
    tokens: f64,
    last: Option<Instant>,
    /// When the bottleneck will have sent everything it holds.
    busy_until: Option<Instant>,
    /// Datagrams the link dropped, and the bytes and datagrams it delivered (or will).
    pub dropped: u64,
    pub delivered: u64,
    pub packets: u64,
}

/// What a link does with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Now,
    /// Delivered then, after its time in the bottleneck's queue.
    At(Instant),
    Dropped,
}

impl Link {
    pub(crate) fn admit(&mut self, now: Instant, bytes: usize, rng: &mut u64) -> Fate {
        let fate = self.pass(now, bytes, rng);
        if fate == Fate::Dropped {
            self.dropped += 1;
        } else {
            self.delivered += bytes as u64;
            self.packets += 1;
        }
        fate
    }

    fn pass(&mut self, now: Instant, bytes: usize, rng: &mut u64) -> Fate {
        if self.loss > 0.0 && next_random(rng) < self.loss {
            return Fate::Dropped;
        }
        let Some(cap) = self.cap_bps else {
            return Fate::Now;
        };
        if let Some(longest) = self.queue {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            if start - now > longest {
                return Fate::Dropped;
            }
            let done = start + Duration::from_secs_f64(bytes as f64 * 8.0 / cap as f64);
            self.busy_until = Some(done);
            return Fate::At(done);
        }
        // A slow link is slow, it does not refuse large datagrams.
        let burst = (cap as f64 / 8.0 * 0.05).max(1500.0);
        let elapsed = self
            .last
            .map_or(0.0, |l| now.saturating_duration_since(l).as_secs_f64());
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * cap as f64 / 8.0).min(burst);
        if self.tokens < bytes as f64 {
            return Fate::Dropped;
        }
        self.tokens -= bytes as f64;
        Fate::Now
    }
}

/// A uniform number in [0, 1) from a xorshift state.
pub fn next_random(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}
