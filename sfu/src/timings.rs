//! The media plane's histograms, for percentiles on a dashboard: how long a join takes
//! to its media path and to its first media (delays the core records once per
//! participant, [`Milestone`]), and how long each turn of a shard's loop takes (timed by
//! the driver into a histogram local to the shard's thread, flushed once a second).
//!
//! A turn is one stretch of work a shard does without yielding: a batch of datagrams
//! read from a socket, a wake of its timer (the deadlines then due), one command from
//! signaling (a join, a request, an offer, a relayed message, an ICE-TCP connection), a
//! departure, or one ICE-TCP frame; each with the draining of the core's output and the
//! datagrams sent. A packet that arrives meanwhile waits up to that long: the turn's
//! length is the delay the shard adds, and its sum over a second the shard's busy time
//! (wall time: a turn the thread was preempted in counts that too).
//!
//! Timing a turn costs two clock reads and a local histogram's bucket search and
//! additions, about 58 ns where the turn's start is read for it (35 ns where the turn
//! read the clock anyway); a 20-party conference makes about 1,300 turns a second, so
//! this is a few hundredths of a percent of the shard's CPU time.

use std::time::{Duration, Instant};

use prometheus::local::LocalHistogram;
use prometheus::{CounterVec, Histogram, HistogramOpts, HistogramVec, Registry};

use crate::cpu::{ThreadCpu, shard_cpu};
use sfu_core::shard::{Delays, Milestone};

/// Bounds of the shard turn histogram (seconds): from a turn that reads one datagram
/// (microseconds) to one that joins a participant or answers an offer of hundreds of
/// m-lines (tens of milliseconds); beyond 100 ms a shard is in trouble.
pub const TURN_BUCKETS: [f64; 14] = [
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
    100e-3,
];

/// Bounds of the join histograms (seconds): a path up over a LAN takes tens of
/// milliseconds; across the world with TURN, a second or two; past 10 s a user gives up.
pub const JOIN_BUCKETS: [f64; 14] = [
    0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
];

/// The histograms of every shard, and the counters of their CPU time.
#[derive(Clone)]
pub struct Timings {
    connected: Histogram,
    /// By `direction`: `received` (the first packet from the participant), `forwarded`
    /// (the first to it).
    first_media: HistogramVec,
    turns: HistogramVec,
    shard_cpu: CounterVec,
}

impl Timings {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Timings> {
        let join =
            |name: &str, help: &str| HistogramOpts::new(name, help).buckets(JOIN_BUCKETS.to_vec());
        let t = Timings {
            connected: Histogram::with_opts(join(
                "sfu_join_connected_seconds",
                "From a join handed to the media plane to the participant's media path \
                 up (ICE and DTLS connected)",
            ))?,
            first_media: HistogramVec::new(
                join(
                    "sfu_first_media_seconds",
                    "From a join handed to the media plane to the first RTP packet received \
                     from the participant (direction received) or forwarded to it \
                     (direction forwarded)",
                ),
                &["direction"],
            )?,
            turns: HistogramVec::new(
                HistogramOpts::new(
                    "sfu_shard_turn_seconds",
                    "How long one turn of a shard's loop works before it yields (a batch \
                     of datagrams, a timer wake, a command), output sent",
                )
                .buckets(TURN_BUCKETS.to_vec()),
                &["shard"],
            )?,
            shard_cpu: shard_cpu()?,
        };
        registry.register(Box::new(t.connected.clone()))?;
        registry.register(Box::new(t.first_media.clone()))?;
        for m in Milestone::ALL {
            if let Some(direction) = direction(m) {
                t.first_media.with_label_values(&[direction]);
            }
        }
        registry.register(Box::new(t.turns.clone()))?;
        registry.register(Box::new(t.shard_cpu.clone()))?;
        Ok(t)
    }

    /// Observes the delays a shard's core recorded since it last flushed.
    pub fn observe(&self, delays: &Delays) {
        for m in Milestone::ALL {
            let histogram = match direction(m) {
                Some(direction) => self.first_media.with_label_values(&[direction]),
                None => self.connected.clone(),
            };
            for delay in delays.of(m) {
                histogram.observe(delay.as_secs_f64());
            }
        }
    }

    /// What shard `shard`'s thread times itself; make it on that thread.
    pub fn shard(&self, shard: &str) -> ShardTimings {
        ShardTimings {
            turns: self.turns.with_label_values(&[shard]).local(),
            cpu: ThreadCpu::new(&self.shard_cpu, shard),
        }
    }
}

/// The `direction` label of a first-media milestone; `None` for the other.
fn direction(m: Milestone) -> Option<&'static str> {
    match m {
        Milestone::Connected => None,
        Milestone::FirstReceived => Some("received"),
        Milestone::FirstForwarded => Some("forwarded"),
    }
}

/// What a shard's thread times itself: its turns, into a histogram of its own (plain
/// additions, no atomic), and its CPU time.
pub struct ShardTimings {
    turns: LocalHistogram,
    cpu: ThreadCpu,
}

impl ShardTimings {
    /// Ends a turn that began at `started`.
    #[inline]
    pub fn turn(&self, started: Instant) {
        self.turns.observe(started.elapsed().as_secs_f64());
    }

    /// Moves the turns observed into the shared histogram, and reads the thread's CPU
    /// time; call it on the shard's thread (once a second). Returns how long the turns
    /// since the last flush took in all: the time the shard spent working.
    pub fn flush(&self) -> Duration {
        let busy = Duration::from_secs_f64(self.turns.get_sample_sum().max(0.0));
        self.turns.flush();
        self.cpu.flush();
        busy
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn histogram<'a>(
        families: &'a [prometheus::proto::MetricFamily],
        name: &str,
        label: Option<&str>,
    ) -> &'a prometheus::proto::Histogram {
        families
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .find(|m| label.is_none_or(|v| m.get_label().iter().any(|l| l.value() == v)))
            .map(|m| m.get_histogram())
            .unwrap_or_else(|| panic!("{name} {label:?} not found"))
    }

    /// The cumulative counts of a histogram's buckets, by upper bound.
    fn cumulative(h: &prometheus::proto::Histogram) -> Vec<(f64, u64)> {
        h.get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect()
    }

    #[test]
    fn bounds_rise() {
        for bounds in [&TURN_BUCKETS[..], &JOIN_BUCKETS[..]] {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        }
    }

    #[test]
    fn delays_land_in_their_buckets_by_milestone() {
        let registry = Registry::new();
        let timings = Timings::new(&registry).unwrap();
        let mut delays = Delays::default();
        for (m, ms) in [
            (Milestone::Connected, 40),
            (Milestone::Connected, 400),
            (Milestone::FirstReceived, 90),
            (Milestone::FirstForwarded, 2_000),
        ] {
            delays.record(m, Duration::from_millis(ms));
        }
        timings.observe(&delays);
        timings.observe(&Delays::default());
        let families = registry.gather();
        let connected = histogram(&families, "sfu_join_connected_seconds", None);
        assert_eq!(connected.get_sample_count(), 2);
        assert!((connected.get_sample_sum() - 0.44).abs() < 1e-9);
        let c = cumulative(connected);
        assert!(c.contains(&(0.025, 0)) && c.contains(&(0.05, 1)) && c.contains(&(0.3, 1)));
        assert!(c.contains(&(0.5, 2)));
        let received = histogram(&families, "sfu_first_media_seconds", Some("received"));
        assert_eq!(received.get_sample_count(), 1);
        assert!(cumulative(received).contains(&(0.1, 1)));
        let forwarded = histogram(&families, "sfu_first_media_seconds", Some("forwarded"));
        assert_eq!(
            cumulative(forwarded)[..9].iter().map(|b| b.1).sum::<u64>(),
            0
        );
        assert!(cumulative(forwarded).contains(&(2.0, 1)));
    }

    #[test]
    fn turns_are_counted_locally_until_the_flush() {
        let registry = Registry::new();
        let timings = Timings::new(&registry).unwrap();
        let shard = timings.shard("0");
        let long_ago = Instant::now() - Duration::from_millis(3);
        shard.turn(Instant::now());
        shard.turn(long_ago);
        let families = registry.gather();
        assert_eq!(
            histogram(&families, "sfu_shard_turn_seconds", Some("0")).get_sample_count(),
            0,
            "nothing shared before the flush"
        );
        shard.flush();
        let families = registry.gather();
        let turns = histogram(&families, "sfu_shard_turn_seconds", Some("0"));
        assert_eq!(turns.get_sample_count(), 2);
        let c = cumulative(turns);
        assert!(c.contains(&(1e-3, 1)), "{c:?}");
        assert!(c.contains(&(5e-3, 2)), "{c:?}");
        let cpu_modes = families
            .iter()
            .filter(|f| f.name() == "sfu_shard_cpu_seconds_total")
            .flat_map(|f| f.get_metric().iter())
            .count();
        assert_eq!(cpu_modes, 2, "the shard's CPU time, user and system");
    }
}
