//! Rate limits for unauthenticated answers (401 challenges, errors): a token bucket, and a
//! limiter with one bucket per source prefix plus a global bucket, in bounded memory.
//!
//! Time is an input (`now: Instant`); nothing here reads a clock. Time that goes backwards
//! neither panics nor mints tokens: a bucket only refills for time past the latest instant
//! it has seen.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The largest rate or burst taken as is; larger (and infinite) values are clamped, so the
/// arithmetic stays finite.
const MAX_PARAM: f64 = 1e12;

/// How often at most a full [`PrefixLimiter`] scans its table for idle entries, so that a
/// flood from many prefixes costs one scan per interval rather than one per packet.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Nano-tokens in one token: the bucket counts in integers so that refills add up
/// exactly (ten refills of 0.1 token make one token, not 0.999…).
const NANO: u128 = 1_000_000_000;

/// A token bucket: up to `burst` tokens, refilled at `rate_per_sec`; each allowed event
/// takes one (or `amount`, see [`TokenBucket::take`]). It starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate_per_sec: f64,
    /// Capacity, in nano-tokens.
    burst_nano: u128,
    /// Nano-tokens available as of `last`.
    tokens_nano: u128,
    /// The latest instant seen; `None` before the first call (the bucket is full).
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate_per_sec`. Negative or NaN values
    /// count as zero, values above 10¹² (infinity included) as 10¹². With `burst` below 1
    /// no single event is ever allowed.
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        let burst_nano = to_nano(sanitize(burst));
        Self {
            rate_per_sec: sanitize(rate_per_sec),
            burst_nano,
            tokens_nano: burst_nano,
            last: None,
        }
    }

    /// Takes a token if one is available at `now`.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.take(now, 1.0)
    }

    /// Takes `amount` tokens (bytes of a packet, say) if that many are available at `now`;
    /// otherwise takes none. An amount above the burst is never allowed; a negative or NaN
    /// amount is refused rather than minting tokens.
    pub fn take(&mut self, now: Instant, amount: f64) -> bool {
        self.refill(now);
        if amount.is_nan() || amount < 0.0 {
            return false;
        }
        let need = to_nano(amount.min(MAX_PARAM * 2.0));
        if self.tokens_nano >= need {
            self.tokens_nano -= need;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now`: it carries no history a fresh bucket
    /// lacks, so forgetting it loses nothing.
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens_at(now) >= self.burst_nano
    }

    /// Brings `tokens_nano` and `last` forward to `now` (never backward).
    fn refill(&mut self, now: Instant) {
        self.tokens_nano = self.tokens_at(now);
        self.last = Some(match self.last {
            Some(last) => last.max(now),
            None => now,
        });
    }

    /// Nano-tokens available at `now`, without taking any.
    fn tokens_at(&self, now: Instant) -> u128 {
        let Some(last) = self.last else {
            return self.tokens_nano;
        };
        let elapsed_ns = now.saturating_duration_since(last).as_nanos();
        // tokens/s × ns = nano-tokens. The float product is exact for whole rates over any
        // elapsed time below 2⁵³ ns (104 days); `as` saturates beyond.
        let added = (elapsed_ns as f64 * self.rate_per_sec) as u128;
        self.tokens_nano.saturating_add(added).min(self.burst_nano)
    }
}

/// Finite and non-negative: NaN and negatives become 0, large values [`MAX_PARAM`].
fn sanitize(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        0.0
    } else {
        x.min(MAX_PARAM)
    }
}

/// Tokens (finite, non-negative) to nano-tokens, rounding up so a fraction is never free.
fn to_nano(tokens: f64) -> u128 {
    (tokens * NANO as f64).ceil() as u128
}

/// The source prefix a client address is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Prefix {
    /// The top 24 bits of an IPv4 address (a /24).
    V4([u8; 3]),
    /// The top 64 bits of an IPv6 address (a /64).
    V6(u64),
}

impl Prefix {
    fn of(ip: IpAddr) -> Self {
        let v4 = match ip {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => return Prefix::V6((u128::from(v6) >> 64) as u64),
            },
        };
        let [a, b, c, _] = v4.octets();
        Prefix::V4([a, b, c])
    }
}

/// Per-source-prefix token buckets (a /24 for IPv4, a /64 for IPv6; IPv4-mapped IPv6 counts
/// as IPv4) plus one global bucket; an event is allowed only when both allow it.
///
/// Memory is bounded: at most `max_prefixes` buckets are kept. When the table is full and a
/// new prefix shows up, buckets that are full again (idle; forgetting them loses nothing)
/// are evicted, scanning at most once per second of `now`. If none can be evicted, the new
/// prefix is judged by the global bucket alone until room appears, so a flood from many
/// prefixes is still held to the global rate.
#[derive(Debug, Clone)]
pub struct PrefixLimiter {
    /// Rate of each new prefix bucket, in events per second.
    per_prefix_rate: f64,
    /// Burst of each new prefix bucket, in events.
    per_prefix_burst: f64,
    /// Caps the total over every prefix.
    global: TokenBucket,
    /// One bucket per recently seen prefix.
    prefixes: HashMap<Prefix, TokenBucket>,
    /// The most entries `prefixes` may hold.
    max_prefixes: usize,
    /// When the table was last scanned for idle entries.
    last_sweep: Option<Instant>,
}

impl PrefixLimiter {
    /// Buckets of `per_prefix_burst` refilled at `per_prefix_rate` per second for each
    /// prefix, one global bucket of `global_burst` at `global_rate`, at most `max_prefixes`
    /// prefixes tracked at once (0: the global bucket alone decides).
    pub fn new(
        per_prefix_rate: f64,
        per_prefix_burst: f64,
        global_rate: f64,
        global_burst: f64,
        max_prefixes: usize,
    ) -> Self {
        Self {
            per_prefix_rate,
            per_prefix_burst,
            global: TokenBucket::new(global_rate, global_burst),
            prefixes: HashMap::new(),
            max_prefixes,
            last_sweep: None,
        }
    }

    /// Whether an event from `ip` at `now` is allowed: its prefix bucket and the global
    /// bucket must both have a token. A refusal by the prefix bucket does not spend a global
    /// token, so one noisy prefix cannot starve the others; a refusal by the global bucket
    /// does not spend the prefix's token either.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let prefix = Prefix::of(ip);
        if !self.prefixes.contains_key(&prefix) && self.prefixes.len() >= self.max_prefixes {
            self.sweep(now);
        }
        let bucket =
            if self.prefixes.len() < self.max_prefixes {
                Some(self.prefixes.entry(prefix).or_insert_with(|| {
                    TokenBucket::new(self.per_prefix_rate, self.per_prefix_burst)
                }))
            } else {
                self.prefixes.get_mut(&prefix)
            };
        match bucket {
            Some(bucket) => {
                bucket.refill(now);
                if bucket.tokens_nano < NANO || !self.global.allow(now) {
                    return false;
                }
                bucket.tokens_nano -= NANO;
                true
            }
            None => self.global.allow(now),
        }
    }

    /// How many prefixes are tracked now (for a gauge).
    pub fn prefix_count(&self) -> usize {
        self.prefixes.len()
    }

    /// Drops idle buckets, at most once per [`SWEEP_INTERVAL`].
    fn sweep(&mut self, now: Instant) {
        if let Some(last) = self.last_sweep
            && now.saturating_duration_since(last) < SWEEP_INTERVAL
        {
            return;
        }
        self.last_sweep = Some(match self.last_sweep {
            Some(last) => last.max(now),
            None => now,
        });
        self.prefixes.retain(|_, bucket| !bucket.is_full(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn count(n: usize, mut f: impl FnMut() -> bool) -> usize {
        (0..n).filter(|_| f()).count()
    }

    #[test]
    fn burst_then_refill_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0);
        assert!(b.is_full(t0));
        assert_eq!(count(100, || b.allow(t0)), 5);
        assert!(!b.is_full(t0));
        // 10 per second: one token per 100 ms.
        assert!(!b.allow(ms(t0, 99)));
        assert!(b.allow(ms(t0, 100)));
        assert!(!b.allow(ms(t0, 100)));
        // Over the next second, exactly 10 (no more than the rate).
        let mut allowed = 0;
        for step in 1..=100 {
            if b.allow(ms(t0, 100 + step * 10)) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 10);
        // A long idle period refills to the burst, not beyond.
        assert!(b.is_full(ms(t0, 60_000)));
        assert_eq!(count(100, || b.allow(ms(t0, 60_000))), 5);
    }

    #[test]
    fn take_amounts_for_byte_budgets() {
        let t0 = Instant::now();
        // 1000 bytes per second, burst 1500 bytes.
        let mut b = TokenBucket::new(1000.0, 1500.0);
        assert!(b.take(t0, 1200.0));
        assert!(!b.take(t0, 400.0)); // 300 left: refused, nothing taken
        assert!(b.take(t0, 300.0));
        assert!(!b.take(t0, 1.0));
        assert!(b.take(ms(t0, 500), 500.0));
        // More than the burst never passes, however long the wait.
        assert!(!b.take(ms(t0, 100_000), 1501.0));
        assert!(b.take(ms(t0, 100_000), 1500.0));
        // Zero is always fine; negative and NaN amounts mint nothing.
        assert!(b.take(ms(t0, 100_000), 0.0));
        assert!(!b.take(ms(t0, 100_000), -1e9));
        assert!(!b.take(ms(t0, 100_000), f64::NAN));
        assert!(!b.take(ms(t0, 100_000), 1.0));
    }

    #[test]
    fn fractional_rates() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.5, 1.0);
        assert!(b.allow(t0));
        assert!(!b.allow(ms(t0, 1999)));
        assert!(b.allow(ms(t0, 2000)));
    }

    #[test]
    fn backwards_time_neither_panics_nor_mints() {
        let t0 = Instant::now();
        let t = ms(t0, 10_000);
        let mut b = TokenBucket::new(1.0, 2.0);
        assert!(b.allow(t));
        assert!(b.allow(t));
        assert!(!b.allow(t));
        // Going back, then forward to where we were: no tokens gained.
        assert!(!b.allow(t0));
        assert!(!b.allow(ms(t0, 5_000)));
        assert!(!b.allow(ms(t0, 9_999)));
        assert!(!b.allow(t));
        // Refill is measured from the latest instant seen.
        assert!(b.allow(ms(t0, 11_000)));
        assert!(!b.allow(ms(t0, 11_000)));
        // is_full with an earlier instant does not panic either.
        assert!(!b.is_full(t0));
    }

    #[test]
    fn odd_parameters_are_tamed() {
        let t0 = Instant::now();
        let mut nothing = TokenBucket::new(f64::NAN, -3.0);
        assert!(!nothing.allow(t0));
        assert!(!nothing.allow(ms(t0, 1_000_000)));
        let mut zero_rate = TokenBucket::new(0.0, 2.0);
        assert_eq!(count(5, || zero_rate.allow(t0)), 2);
        assert!(!zero_rate.allow(ms(t0, 1_000_000)));
        let mut sub_one = TokenBucket::new(100.0, 0.5);
        assert!(!sub_one.allow(ms(t0, 1_000)));
        let mut huge = TokenBucket::new(f64::INFINITY, f64::INFINITY);
        assert_eq!(count(10_000, || huge.allow(t0)), 10_000);
        assert!(huge.allow(ms(t0, 1)));
        let mut nan_burst = TokenBucket::new(1.0, f64::NAN);
        assert!(!nan_burst.allow(ms(t0, 10_000)));
    }

    #[test]
    fn prefixes_are_isolated() {
        let t0 = Instant::now();
        let mut l = PrefixLimiter::new(1.0, 3.0, 1000.0, 1000.0, 100);
        // Same /24: one bucket.
        assert!(l.allow(ip("198.51.100.1"), t0));
        assert!(l.allow(ip("198.51.100.2"), t0));
        assert!(l.allow(ip("198.51.100.3"), t0));
        assert!(!l.allow(ip("198.51.100.4"), t0));
        // IPv4-mapped is the same /24.
        assert!(!l.allow(ip("::ffff:198.51.100.9"), t0));
        // Another /24 is untouched.
        assert_eq!(count(10, || l.allow(ip("198.51.101.1"), t0)), 3);
        // Same /64: one bucket; another /64 is separate.
        assert_eq!(count(10, || l.allow(ip("2001:db8:0:1::1"), t0)), 3);
        assert!(!l.allow(ip("2001:db8:0:1:ffff::2"), t0));
        assert_eq!(count(10, || l.allow(ip("2001:db8:0:2::1"), t0)), 3);
        assert_eq!(l.prefix_count(), 4);
        // Refill per prefix.
        assert!(l.allow(ip("198.51.100.1"), ms(t0, 1000)));
        assert!(!l.allow(ip("198.51.100.1"), ms(t0, 1000)));
    }

    #[test]
    fn global_cap_holds_across_many_prefixes() {
        let t0 = Instant::now();
        let mut l = PrefixLimiter::new(10.0, 5.0, 10.0, 100.0, 10_000);
        let allowed = count(1000, {
            let mut i = 0u32;
            move || {
                i += 1;
                l.allow(IpAddr::V4((i << 8).into()), t0)
            }
        });
        assert_eq!(allowed, 100);
        // After one second: 10 more in total, whichever prefixes ask.
        let mut l = PrefixLimiter::new(10.0, 5.0, 10.0, 100.0, 10_000);
        for i in 0..1000u32 {
            l.allow(IpAddr::V4((i << 8).into()), t0);
        }
        let t1 = ms(t0, 1000);
        let allowed = (0..1000u32)
            .filter(|i| l.allow(IpAddr::V4(((i + 5000) << 8).into()), t1))
            .count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn a_refused_prefix_does_not_spend_global_tokens() {
        let t0 = Instant::now();
        let mut l = PrefixLimiter::new(0.0, 2.0, 0.0, 5.0, 100);
        assert_eq!(count(1000, || l.allow(ip("203.0.113.1"), t0)), 2);
        // The global bucket still has 3 for others.
        assert_eq!(count(10, || l.allow(ip("192.0.2.1"), t0)), 2);
        assert_eq!(count(10, || l.allow(ip("192.0.3.1"), t0)), 1);
        // And a global refusal does not spend the prefix's token.
        let mut l = PrefixLimiter::new(0.0, 2.0, 1.0, 1.0, 100);
        assert!(l.allow(ip("192.0.2.1"), t0));
        assert!(!l.allow(ip("198.51.100.1"), t0)); // global empty
        assert!(l.allow(ip("198.51.100.1"), ms(t0, 1000)));
        assert!(l.allow(ip("198.51.100.1"), ms(t0, 2000))); // its second token, kept
        assert!(!l.allow(ip("198.51.100.1"), ms(t0, 3000)));
    }

    #[test]
    fn memory_bound_under_100k_prefixes() {
        let t0 = Instant::now();
        let max = 1000;
        let mut l = PrefixLimiter::new(1.0, 5.0, 1e9, 1e9, max);
        for i in 0..100_000u32 {
            let now = ms(t0, u64::from(i)); // 1000 new prefixes per second
            let v4 = IpAddr::V4((i << 8).into());
            assert!(l.allow(v4, now));
            let v6 = IpAddr::V6((u128::from(i) << 64 | 1).into());
            l.allow(v6, now);
            assert!(l.prefix_count() <= max);
        }
        assert!(l.prefix_count() <= max);
        assert!(l.prefixes.capacity() < 4 * max);
    }

    #[test]
    fn full_table_evicts_idle_entries_or_falls_back_to_global() {
        let t0 = Instant::now();
        let mut l = PrefixLimiter::new(1.0, 2.0, 1e6, 1e6, 2);
        // Two busy prefixes fill the table.
        assert!(l.allow(ip("192.0.2.1"), t0));
        assert!(l.allow(ip("198.51.100.1"), t0));
        assert_eq!(l.prefix_count(), 2);
        // A third one is judged by the global bucket alone (not tracked).
        assert_eq!(count(10, || l.allow(ip("203.0.113.1"), t0)), 10);
        assert_eq!(l.prefix_count(), 2);
        // The tracked ones keep their limits.
        assert!(l.allow(ip("192.0.2.1"), t0));
        assert!(!l.allow(ip("192.0.2.1"), t0));
        // Once both are idle (full again) and a sweep is due, the newcomer gets a bucket.
        let later = ms(t0, 5_000);
        assert!(l.allow(ip("203.0.113.1"), later));
        assert_eq!(l.prefix_count(), 1);
        assert!(l.allow(ip("203.0.113.1"), later));
        assert!(!l.allow(ip("203.0.113.1"), later));
    }

    #[test]
    fn sweeps_are_rate_limited() {
        let t0 = Instant::now();
        let mut l = PrefixLimiter::new(1000.0, 1.0, 1e6, 1e6, 1);
        assert!(l.allow(ip("192.0.2.1"), t0));
        // The entry is idle again after 1 ms, but the sweep at t0 already ran.
        assert!(l.allow(ip("198.51.100.1"), t0)); // sweeps at t0: nothing idle
        assert!(l.allow(ip("198.51.100.1"), ms(t0, 10)));
        assert!(l.prefixes.contains_key(&Prefix::of(ip("192.0.2.1"))));
        // After the interval, the idle entry is swept and the newcomer tracked.
        assert!(l.allow(ip("198.51.100.1"), ms(t0, 1_010)));
        assert!(l.prefixes.contains_key(&Prefix::of(ip("198.51.100.1"))));
        assert_eq!(l.prefix_count(), 1);
    }

    #[test]
    fn zero_max_prefixes_uses_global_only() {
        let t0 = Instant::now();
        let mut l = PrefixLimiter::new(0.0, 0.0, 0.0, 3.0, 0);
        assert_eq!(count(10, || l.allow(ip("192.0.2.1"), t0)), 3);
        assert_eq!(l.prefix_count(), 0);
    }

    #[test]
    fn limiter_backwards_time() {
        let t0 = Instant::now();
        let t = ms(t0, 10_000);
        let mut l = PrefixLimiter::new(1.0, 1.0, 1.0, 1.0, 1);
        assert!(l.allow(ip("192.0.2.1"), t));
        assert!(!l.allow(ip("192.0.2.1"), t0));
        assert!(!l.allow(ip("198.51.100.1"), t0));
        assert!(!l.allow(ip("192.0.2.1"), t));
        assert!(l.allow(ip("192.0.2.1"), ms(t0, 11_000)));
    }

    #[test]
    fn prefix_keys() {
        assert_eq!(Prefix::of(ip("192.0.2.1")), Prefix::V4([192, 0, 2]));
        assert_eq!(
            Prefix::of(ip("::ffff:192.0.2.255")),
            Prefix::V4([192, 0, 2])
        );
        assert_eq!(
            Prefix::of(ip("2001:db8:1:2:3:4:5:6")),
            Prefix::V6(0x2001_0db8_0001_0002)
        );
        assert_ne!(Prefix::of(ip("::192.0.2.1")), Prefix::of(ip("192.0.2.1")));
    }
}
