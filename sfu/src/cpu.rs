//! CPU time to the microsecond, from getrusage(2): the process's, read at each scrape
//! (`sfu_cpu_seconds_total`), and each shard thread's, read by the thread itself once a
//! second (`sfu_shard_cpu_seconds_total`). The process collector's
//! `process_cpu_seconds_total` counts whole seconds: over a short window its rate is
//! mostly rounding.

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeVal;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, CounterVec, Opts, Registry};

/// Seconds of CPU time spent in user mode and in the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    pub user: f64,
    pub system: f64,
}

impl CpuTime {
    /// The whole process's CPU time (every thread, ended ones included); zero if
    /// getrusage fails (it does not for `RUSAGE_SELF`).
    pub fn process() -> CpuTime {
        CpuTime::of(UsageWho::RUSAGE_SELF)
    }

    /// The calling thread's CPU time.
    pub fn thread() -> CpuTime {
        CpuTime::of(UsageWho::RUSAGE_THREAD)
    }

    fn of(who: UsageWho) -> CpuTime {
        getrusage(who).map_or(CpuTime::default(), |usage| CpuTime {
            user: seconds(usage.user_time()),
            system: seconds(usage.system_time()),
        })
    }
}

/// A `timeval` in seconds.
fn seconds(t: TimeVal) -> f64 {
    t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6
}

/// Moves `counter` up to `total`, which only grows: never down, if a reading is behind.
fn advance(counter: &Counter, total: f64) {
    let delta = total - counter.get();
    if delta > 0.0 {
        counter.inc_by(delta);
    }
}

/// The process's CPU time, read at each scrape, by mode (`user`, `system`).
#[derive(Clone)]
pub struct ProcessCpu {
    /// The metric's description; each scrape makes the values afresh.
    seconds: CounterVec,
}

impl ProcessCpu {
    /// Creates the metric and registers it in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<()> {
        let seconds = process_cpu()?;
        registry.register(Box::new(ProcessCpu { seconds }))
    }
}

impl Collector for ProcessCpu {
    fn desc(&self) -> Vec<&Desc> {
        self.seconds.desc()
    }

    /// A counter of its own at each scrape, set to the totals: two scrapes at once
    /// cannot both add the same time.
    fn collect(&self) -> Vec<MetricFamily> {
        let now = CpuTime::process();
        process_cpu().map_or_else(
            |_| Vec::new(),
            |seconds| {
                seconds.with_label_values(&["user"]).inc_by(now.user);
                seconds.with_label_values(&["system"]).inc_by(now.system);
                seconds.collect()
            },
        )
    }
}

/// `sfu_cpu_seconds_total`, at zero.
fn process_cpu() -> prometheus::Result<CounterVec> {
    CounterVec::new(
        Opts::new(
            "sfu_cpu_seconds_total",
            "CPU time of the server process, user and system, to the microsecond \
             (getrusage), read at each scrape",
        ),
        &["mode"],
    )
}

/// One thread's CPU time, moved into `sfu_shard_cpu_seconds_total` by that thread.
pub struct ThreadCpu {
    user: Counter,
    system: Counter,
}

impl ThreadCpu {
    /// The counters of thread `shard` in `seconds` (the vec [`shard_cpu`] makes).
    pub fn new(seconds: &CounterVec, shard: &str) -> ThreadCpu {
        ThreadCpu {
            user: seconds.with_label_values(&[shard, "user"]),
            system: seconds.with_label_values(&[shard, "system"]),
        }
    }

    /// Reads the calling thread's CPU time into the counters: call it on the thread
    /// they are for.
    pub fn flush(&self) {
        let now = CpuTime::thread();
        advance(&self.user, now.user);
        advance(&self.system, now.system);
    }
}

/// The per-shard CPU time counters, by shard and mode.
pub fn shard_cpu() -> prometheus::Result<CounterVec> {
    CounterVec::new(
        Opts::new(
            "sfu_shard_cpu_seconds_total",
            "CPU time of each shard thread, user and system, to the microsecond \
             (getrusage), read by the thread once a second",
        ),
        &["shard", "mode"],
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The calling thread's CPU time as the scheduler counts it (nanoseconds, the first
    /// field of /proc/thread-self/schedstat): a reading apart from getrusage.
    fn scheduled() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        let ns = stat.split_whitespace().next().unwrap().parse().unwrap();
        Duration::from_nanos(ns)
    }

    /// Keeps the calling thread on the CPU until it has had `d` of it (however busy the
    /// machine is: other tests, other builds).
    fn spin(d: Duration) {
        let start = scheduled();
        let mut x = 0u64;
        while scheduled() - start < d {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    }

    fn family_sum(families: &[MetricFamily]) -> f64 {
        families
            .iter()
            .flat_map(|f| f.get_metric().iter())
            .map(|m| m.get_counter().get_value())
            .sum()
    }

    #[test]
    fn a_timeval_is_read_to_the_microsecond() {
        assert_eq!(seconds(TimeVal::new(3, 250_000)), 3.25);
        assert_eq!(seconds(TimeVal::new(0, 1)), 1e-6);
    }

    #[test]
    fn a_counter_follows_a_total_up_and_never_down() {
        let c = Counter::new("c", "c").unwrap();
        advance(&c, 1.5);
        advance(&c, 1.25);
        assert_eq!(c.get(), 1.5);
        advance(&c, 2.0);
        assert_eq!(c.get(), 2.0);
    }

    #[test]
    fn the_process_cpu_time_shows_a_tenth_of_a_second_of_work() {
        let registry = Registry::new();
        ProcessCpu::register(&registry).unwrap();
        let before = family_sum(&registry.gather());
        spin(Duration::from_millis(150));
        let after = family_sum(&registry.gather());
        // Whole seconds would show 0 or 1; other tests' threads may add to it. A
        // thread's time is brought up to date at a tick or when it is switched out: a
        // few milliseconds of slack.
        assert!(after - before >= 0.13, "{before} -> {after}");
        assert!(after - before < 5.0, "{before} -> {after}");
    }

    #[test]
    fn a_thread_counts_its_own_cpu_time_only() {
        let seconds = shard_cpu().unwrap();
        let busy = {
            let seconds = seconds.clone();
            std::thread::spawn(move || {
                let cpu = ThreadCpu::new(&seconds, "0");
                spin(Duration::from_millis(150));
                cpu.flush();
            })
        };
        let idle = {
            let seconds = seconds.clone();
            std::thread::spawn(move || {
                let cpu = ThreadCpu::new(&seconds, "1");
                std::thread::sleep(Duration::from_millis(150));
                cpu.flush();
            })
        };
        busy.join().unwrap();
        idle.join().unwrap();
        let of = |shard: &str| {
            ["user", "system"]
                .iter()
                .map(|mode| seconds.with_label_values(&[shard, mode]).get())
                .sum::<f64>()
        };
        assert!((0.13..0.5).contains(&of("0")), "busy: {}", of("0"));
        assert!(of("1") < 0.02, "idle: {}", of("1"));
    }
}
