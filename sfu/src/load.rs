//! Overload refusal: the server's limits, and what it carries against them.
//!
//! A join is turned away with `server_busy` (WHIP and WHEP: 503 with Retry-After) when
//! the server already carries `--max-participants` participants, `--max-tracks`
//! published tracks or sends `--max-egress-pps` packets a second, or when the shard its
//! room lives on spent more than `--max-load` of the last second working: better one
//! newcomer told to try later (a load balancer's next pick) than every call on the shard
//! degraded. Calls in progress are never cut: the limits turn newcomers away, and a
//! participant already in a call may still publish.
//!
//! Participants are counted exactly: a [`Place`] is taken when signaling hands a join
//! over and given back when its shard lets the participant go (it is dropped with the
//! participant's entry, or with the join if it never got that far), so joins at the same
//! moment cannot overshoot. Tracks, packets and load are the figures each shard thread
//! publishes once a second with its metrics: a burst of joins within a second can pass
//! them by what it adds.
//!
//! Metrics, read at each scrape: `sfu_shard_load{shard}` (that share, 0 to 1),
//! `sfu_load_participants` (places taken), `sfu_load_limit{limit}` (the limits set) and
//! `sfu_load_refused_total{limit}` (joins turned away, by the limit that did).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, IntGauge, Opts, Registry};

/// The limits of one server; 0 turns one off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Participants in all its rooms (viewers and WHIP/WHEP sessions included).
    pub participants: usize,
    /// Tracks published in all its rooms.
    pub tracks: usize,
    /// Packets it sends a second (media, RTCP, STUN).
    pub egress_pps: u64,
    /// The share of a shard thread's time spent working, from 0 to 1.
    pub load: f64,
}

/// The limit that turned a join away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Participants,
    Tracks,
    EgressPps,
    Load,
}

impl Limit {
    pub const ALL: [Limit; 4] = [
        Limit::Participants,
        Limit::Tracks,
        Limit::EgressPps,
        Limit::Load,
    ];

    /// Its name in metrics and logs: the flag's, without `--max-`.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Participants => "participants",
            Limit::Tracks => "tracks",
            Limit::EgressPps => "egress_pps",
            Limit::Load => "load",
        }
    }
}

/// What one shard carried over its last second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub tracks: usize,
    pub egress_pps: u64,
    /// The share of the second its thread spent working, from 0 to 1.
    pub busy: f64,
}

/// The limits and the server's figures: shared by signaling's threads (which admit) and
/// the shard threads (which publish and give places back).
pub struct Load {
    limits: Limits,
    participants: AtomicUsize,
    shards: Vec<Published>,
    /// Joins turned away, by limit.
    refused: [AtomicU64; 4],
}

impl std::fmt::Debug for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Load")
            .field("limits", &self.limits)
            .field("participants", &self.participants)
            .finish_non_exhaustive()
    }
}

/// A shard's figures, as it last published them.
#[derive(Debug, Default)]
struct Published {
    tracks: AtomicUsize,
    egress_pps: AtomicU64,
    /// `busy` in millionths.
    busy_ppm: AtomicU32,
    /// Reports so far: a heartbeat of the shard's thread.
    beats: AtomicU64,
}

/// A participant's place on the server: given back when dropped.
#[derive(Debug)]
pub struct Place(Arc<Load>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.participants.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Load {
    pub fn new(limits: Limits, shards: usize) -> Arc<Load> {
        Arc::new(Load {
            limits,
            participants: AtomicUsize::new(0),
            shards: (0..shards).map(|_| Published::default()).collect(),
            refused: Default::default(),
        })
    }

    /// Registers its metrics in `registry`.
    pub fn register(self: &Arc<Self>, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(LoadMetrics::new(self.clone())?))
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A place for a participant joining a room on `shard`, or the limit that turns it
    /// away.
    pub fn admit(self: &Arc<Self>, shard: usize) -> Result<Place, Limit> {
        let max = self.limits.participants;
        let limit = match self.at_a_limit(|| self.busy(shard)) {
            Some(limit) => limit,
            None => {
                let taken =
                    self.participants
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            (max == 0 || n < max).then_some(n + 1)
                        });
                if taken.is_ok() {
                    return Ok(Place(self.clone()));
                }
                Limit::Participants
            }
        };
        self.refused[limit as usize].fetch_add(1, Ordering::Relaxed);
        Err(limit)
    }

    /// The limit the whole server is at, if any (its shards' mean load counting for
    /// load): a new room would be turned away, whichever shard it went to. What
    /// `/readyz` answers 503 for.
    pub fn saturated(&self) -> Option<Limit> {
        let mean = || {
            let n = self.shards.len().max(1) as f64;
            (0..self.shards.len()).map(|s| self.busy(s)).sum::<f64>() / n
        };
        let max = self.limits.participants;
        if max > 0 && self.participants() >= max {
            return Some(Limit::Participants);
        }
        self.at_a_limit(mean)
    }

    /// The first limit of tracks, packets or `load` reached.
    fn at_a_limit(&self, load: impl FnOnce() -> f64) -> Option<Limit> {
        let l = &self.limits;
        let sum = |f: fn(&Published) -> u64| self.shards.iter().map(f).sum::<u64>();
        if l.tracks > 0 && sum(|p| p.tracks.load(Ordering::Relaxed) as u64) >= l.tracks as u64 {
            return Some(Limit::Tracks);
        }
        if l.egress_pps > 0 && sum(|p| p.egress_pps.load(Ordering::Relaxed)) >= l.egress_pps {
            return Some(Limit::EgressPps);
        }
        if l.load > 0.0 && load() >= l.load {
            return Some(Limit::Load);
        }
        None
    }

    /// Shard `shard`'s figures of the last second.
    pub fn publish(&self, shard: usize, figures: Figures) {
        let Some(p) = self.shards.get(shard) else {
            return;
        };
        p.tracks.store(figures.tracks, Ordering::Relaxed);
        p.egress_pps.store(figures.egress_pps, Ordering::Relaxed);
        let ppm = (figures.busy.clamp(0.0, 1.0) * 1e6).round() as u32;
        p.busy_ppm.store(ppm, Ordering::Relaxed);
        p.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// How many reports shard `shard` has published: it moves once a second while the
    /// shard's thread runs.
    pub fn beats(&self, shard: usize) -> u64 {
        self.shards
            .get(shard)
            .map_or(0, |p| p.beats.load(Ordering::Relaxed))
    }

    /// The server's figures: its shards' tracks and packets summed, and the busy share
    /// of the busiest.
    pub fn figures(&self) -> Figures {
        let shards = &self.shards;
        Figures {
            tracks: shards
                .iter()
                .map(|p| p.tracks.load(Ordering::Relaxed))
                .sum(),
            egress_pps: shards
                .iter()
                .map(|p| p.egress_pps.load(Ordering::Relaxed))
                .sum(),
            busy: (0..shards.len()).map(|s| self.busy(s)).fold(0.0, f64::max),
        }
    }

    /// Participants with a place now.
    pub fn participants(&self) -> usize {
        self.participants.load(Ordering::Relaxed)
    }

    /// The share of its last second shard `shard` spent working.
    pub fn busy(&self, shard: usize) -> f64 {
        self.shards
            .get(shard)
            .map_or(0.0, |p| f64::from(p.busy_ppm.load(Ordering::Relaxed)) / 1e6)
    }
}

/// The metrics of a [`Load`], read from it at each scrape.
struct LoadMetrics {
    load: Arc<Load>,
    shard_load: GaugeVec,
    participants: IntGauge,
    limits: GaugeVec,
    refused: IntCounterVec,
}

impl LoadMetrics {
    fn new(load: Arc<Load>) -> prometheus::Result<LoadMetrics> {
        let m = LoadMetrics {
            shard_load: GaugeVec::new(
                Opts::new(
                    "sfu_shard_load",
                    "Share of its last second a shard thread spent working (0 to 1)",
                ),
                &["shard"],
            )?,
            participants: IntGauge::new(
                "sfu_load_participants",
                "Participants with a place on this server (what --max-participants limits)",
            )?,
            limits: GaugeVec::new(
                Opts::new(
                    "sfu_load_limit",
                    "The limits a join is checked against (0: none), by limit",
                ),
                &["limit"],
            )?,
            refused: refused_counter()?,
            load,
        };
        let l = m.load.limits;
        for (limit, value) in [
            (Limit::Participants, l.participants as f64),
            (Limit::Tracks, l.tracks as f64),
            (Limit::EgressPps, l.egress_pps as f64),
            (Limit::Load, l.load),
        ] {
            m.limits.with_label_values(&[limit.as_str()]).set(value);
        }
        Ok(m)
    }
}

impl Collector for LoadMetrics {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.shard_load.desc(),
            self.participants.desc(),
            self.limits.desc(),
            self.refused.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for shard in 0..self.load.shards.len() {
            let label = shard.to_string();
            let busy = self.load.busy(shard);
            self.shard_load.with_label_values(&[&label]).set(busy);
        }
        self.participants.set(self.load.participants() as i64);
        // A counter of its own at each scrape, set to the totals: two scrapes at once
        // cannot both add the same refusals.
        let refused = refused_counter().map(|counter| {
            for limit in Limit::ALL {
                let total = self.load.refused[limit as usize].load(Ordering::Relaxed);
                counter.with_label_values(&[limit.as_str()]).inc_by(total);
            }
            counter.collect()
        });
        [
            self.shard_load.collect(),
            self.participants.collect(),
            self.limits.collect(),
            refused.unwrap_or_default(),
        ]
        .concat()
    }
}

/// `sfu_load_refused_total`, at zero.
fn refused_counter() -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(
        Opts::new(
            "sfu_load_refused_total",
            "Joins turned away with server_busy, by the limit reached",
        ),
        &["limit"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_exact_and_given_back_when_dropped() {
        let load = Load::new(
            Limits {
                participants: 2,
                ..Limits::default()
            },
            2,
        );
        let a = load.admit(0).unwrap();
        let b = load.admit(1).unwrap();
        assert_eq!(load.admit(0).unwrap_err(), Limit::Participants);
        assert_eq!(load.saturated(), Some(Limit::Participants));
        drop(a);
        assert_eq!(load.participants(), 1);
        assert_eq!(load.saturated(), None);
        let c = load.admit(1).unwrap();
        assert_eq!(load.participants(), 2);
        drop((b, c));
        assert_eq!(load.participants(), 0);
    }

    #[test]
    fn no_limit_turns_anyone_away() {
        let load = Load::new(Limits::default(), 1);
        load.publish(
            0,
            Figures {
                tracks: 1_000_000,
                egress_pps: u64::MAX,
                busy: 1.0,
            },
        );
        let places: Vec<Place> = (0..1000).map(|_| load.admit(0).unwrap()).collect();
        assert_eq!(load.participants(), places.len());
        assert_eq!(load.saturated(), None);
    }

    #[test]
    fn the_shards_figures_turn_joins_away() {
        let limits = Limits {
            tracks: 10,
            egress_pps: 50_000,
            load: 0.8,
            ..Limits::default()
        };
        let load = Load::new(limits, 2);
        let figures = |tracks, egress_pps, busy| Figures {
            tracks,
            egress_pps,
            busy,
        };
        load.publish(0, figures(5, 20_000, 0.1));
        load.publish(1, figures(4, 20_000, 0.1));
        assert!(load.admit(0).is_ok());
        // The tracks of both shards add up.
        load.publish(1, figures(5, 20_000, 0.1));
        assert_eq!(load.admit(0).unwrap_err(), Limit::Tracks);
        assert_eq!(load.saturated(), Some(Limit::Tracks));
        load.publish(1, figures(4, 30_000, 0.1));
        assert_eq!(load.admit(0).unwrap_err(), Limit::EgressPps);
        // A busy shard turns away the joins to its rooms only; the server is saturated
        // once its shards are, on average.
        load.publish(1, figures(4, 20_000, 0.9));
        assert_eq!(load.admit(1).unwrap_err(), Limit::Load);
        assert!(load.admit(0).is_ok());
        assert_eq!(load.saturated(), None);
        load.publish(0, figures(5, 20_000, 0.75));
        assert_eq!(load.saturated(), Some(Limit::Load));
        assert!((load.busy(1) - 0.9).abs() < 1e-6);
    }

    #[test]
    fn the_metrics_read_the_figures_at_each_scrape() {
        let registry = Registry::new();
        let limits = Limits {
            participants: 1,
            load: 0.5,
            ..Limits::default()
        };
        let load = Load::new(limits, 2);
        load.register(&registry).unwrap();
        let _place = load.admit(0).unwrap();
        assert_eq!(load.admit(0).unwrap_err(), Limit::Participants);
        load.publish(
            1,
            Figures {
                busy: 0.75,
                ..Figures::default()
            },
        );
        assert_eq!(load.admit(1).unwrap_err(), Limit::Load);
        assert_eq!(load.admit(1).unwrap_err(), Limit::Load);
        let mut text = String::new();
        for _ in 0..2 {
            // Twice: a counter read again does not count again.
            let families = registry.gather();
            text = prometheus::TextEncoder::new()
                .encode_to_string(&families)
                .unwrap();
        }
        for line in [
            "sfu_shard_load{shard=\"1\"} 0.75",
            "sfu_shard_load{shard=\"0\"} 0",
            "sfu_load_participants 1",
            "sfu_load_limit{limit=\"participants\"} 1",
            "sfu_load_limit{limit=\"load\"} 0.5",
            "sfu_load_limit{limit=\"tracks\"} 0",
            "sfu_load_refused_total{limit=\"participants\"} 1",
            "sfu_load_refused_total{limit=\"load\"} 2",
            "sfu_load_refused_total{limit=\"tracks\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
