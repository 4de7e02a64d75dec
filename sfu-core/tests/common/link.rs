//! The network between the server and one client: a policer and seeded loss.

use std::time::Instant;

/// The network between the server and one client, towards the client: a policer (a
/// token bucket of `cap_bps` with 50 ms of burst) and random loss, both seeded.
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub cap_bps: Option<u64>,
    pub loss: f64,
    tokens: f64,
    last: Option<Instant>,
    /// Datagrams the link dropped, and the bytes it delivered.
    pub dropped: u64,
    pub delivered: u64,
}

impl Link {
    pub(crate) fn admit(&mut self, now: Instant, bytes: usize, rng: &mut u64) -> bool {
        let ok = self.police(now, bytes, rng);
        if ok {
            self.delivered += bytes as u64;
        }
        ok
    }

    pub(crate) fn police(&mut self, now: Instant, bytes: usize, rng: &mut u64) -> bool {
        if self.loss > 0.0 && next_random(rng) < self.loss {
            self.dropped += 1;
            return false;
        }
        let Some(cap) = self.cap_bps else {
            return true;
        };
        let burst = cap as f64 / 8.0 * 0.05;
        let elapsed = self
            .last
            .map_or(0.0, |l| now.saturating_duration_since(l).as_secs_f64());
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * cap as f64 / 8.0).min(burst);
        if self.tokens < bytes as f64 {
            self.dropped += 1;
            return false;
        }
        self.tokens -= bytes as f64;
        true
    }
}

/// A uniform number in [0, 1) from a xorshift state.
pub fn next_random(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}
