//! `bench soak`: a long run (30 minutes by default, never in CI) of rooms of mixed sizes
//! whose people join, leave, mute, change what they watch and vanish without a word, over
//! links that drop packets, with a slow reader over ICE-TCP. It samples the server's
//! memory and state throughout and checks, at the end, that its memory held steady,
//! that nothing was left behind, and that no client lost more than its own link dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use hdrhistogram::Histogram;
use protocol::Grants;
use serde_json::json;
use signaling::TokenKey;

use crate::client::{self, Role, Shared, Stats};
use crate::life::{Exit, Life};
use crate::link::{LinkConfig, Transport};
use crate::server::{self, Launch, Sample, Server};

/// The gauges that must all read 0 once everyone has gone.
const LEFTOVERS: [&str; 6] = [
    "sfu_rooms",
    "sfu_participants",
    "sfu_published_tracks",
    "sfu_signaling_sockets",
    "sfu_tcp_connections",
    "sfu_state_entries",
];
/// How much the server's memory may grow from 5 minutes in to the end.
const RSS_GROWTH_ALLOWED: f64 = 0.10;
/// When the memory the end is compared with is read.
const RSS_BASELINE_AT: Duration = Duration::from_secs(300);

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// Seconds it runs.
    #[arg(long, default_value_t = 1800)]
    duration: u64,
    /// The rooms, by how many people each holds at once (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,6,8")]
    rooms: Vec<usize>,
    /// Rooms of this size or more receive on slot m-lines (3 audio, 4 video); smaller
    /// ones on one m-line per track, renegotiated as people come.
    #[arg(long, default_value_t = 6)]
    slots_from: usize,
    /// How long each person stays, seconds, MIN:MAX (uniformly); then it leaves, closes
    /// its sockets or vanishes, in turns, and is back a moment later as someone new.
    #[arg(long, default_value = "20:180", value_parser = parse_range)]
    life: (u64, u64),
    /// Percent of the datagrams to each UDP client that its link drops.
    #[arg(long, default_value_t = 1.0)]
    loss_pct: f64,
    /// Each camera's simulcast layers, bits/s, lowest first.
    #[arg(long, value_delimiter = ',', default_value = "150k,500k", value_parser = crate::parse_rate)]
    layers: Vec<u64>,
    /// Receive-only clients over ICE-TCP in the largest room, for the whole run, reading
    /// slower than they are sent to.
    #[arg(long, default_value_t = 1)]
    slow_readers: usize,
    /// How fast a slow reader reads, bits/s.
    #[arg(long, default_value = "64k", value_parser = crate::parse_rate)]
    slow_read_rate: u64,
    /// 40 seconds, rooms of 2, 3 and 6, lives of 4 to 10 s: checks the harness and the
    /// end state (CI); the memory figures mean nothing.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    place: server::Placement,
    /// Where the JSON line of a full run goes (default `bench/results/soak.json`).
    #[arg(long)]
    results: Option<PathBuf>,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once(':').ok_or_else(|| format!("{s}: MIN:MAX"))?;
    let n = |x: &str| x.trim().parse::<u64>().map_err(|e| format!("{s}: {e}"));
    let (a, b) = (n(a)?, n(b)?);
    if a == 0 || a > b {
        return Err(format!("{s}: 0 < MIN <= MAX"));
    }
    Ok((a, b))
}

/// What every seat needs to make its people.
struct Plan {
    key: TokenKey,
    shared: Arc<Shared>,
    life: (Duration, Duration),
    loss: f64,
    layers: Vec<u64>,
    /// How long a vanished client holds its sockets: past the server's media timeout.
    vanish_hold: Duration,
}

/// One place in a room, taken by one person after another.
struct Seat {
    room: String,
    index: usize,
    slots: Option<(usize, usize)>,
    /// Its people talk (the first two of a room); the others listen.
    voice: Option<i8>,
}

/// What the people of the run did and measured, summed.
struct Totals {
    lives: u64,
    exits: [u64; 3],
    errors: Vec<String>,
    without_media: u64,
    received: u64,
    lost: u64,
    link_dropped: u64,
    /// Lives that lost more than their link dropped, and by how much in all.
    lost_beyond_link: u64,
    excess_lost: u64,
    undecryptable: u64,
    decrypted: u64,
    latency_us: Histogram<u64>,
}

impl Totals {
    fn new() -> Totals {
        Totals {
            lives: 0,
            exits: [0; 3],
            errors: Vec::new(),
            without_media: 0,
            received: 0,
            lost: 0,
            link_dropped: 0,
            lost_beyond_link: 0,
            excess_lost: 0,
            undecryptable: 0,
            decrypted: 0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        }
    }

    fn add(&mut self, exit: Exit, s: &Stats) {
        self.lives += 1;
        self.exits[match exit {
            Exit::Leave => 0,
            Exit::Close => 1,
            Exit::Vanish(_) => 2,
        }] += 1;
        if let Some(e) = &s.error {
            self.errors.push(e.clone());
        }
        if s.packets_received == 0 {
            self.without_media += 1;
        }
        self.received += s.packets_received;
        self.lost += s.lost;
        self.link_dropped += s.link_dropped;
        if s.lost > s.link_dropped {
            self.lost_beyond_link += 1;
            self.excess_lost += s.lost - s.link_dropped;
        }
        self.undecryptable += s.e2ee.failed;
        self.decrypted += s.e2ee.decrypted;
        let _ = self.latency_us.add(&s.latency_us);
    }

    fn merge(&mut self, other: Totals) {
        self.lives += other.lives;
        for (a, b) in self.exits.iter_mut().zip(other.exits) {
            *a += b;
        }
        self.errors.extend(other.errors);
        self.without_media += other.without_media;
        self.received += other.received;
        self.lost += other.lost;
        self.link_dropped += other.link_dropped;
        self.lost_beyond_link += other.lost_beyond_link;
        self.excess_lost += other.excess_lost;
        self.undecryptable += other.undecryptable;
        self.decrypted += other.decrypted;
        let _ = self.latency_us.add(&other.latency_us);
    }
}

/// The server's memory and state at one point of the run.
struct Point {
    at: Duration,
    rss_mb: f64,
    participants: f64,
    tracks: f64,
    sockets: f64,
    cpu_s: f64,
}

pub fn run(mut args: SoakArgs) -> anyhow::Result<()> {
    if args.quick {
        args.duration = 40;
        args.life = (4, 10);
        args.rooms = vec![2, 3, 6];
    }
    if args.rooms.is_empty() || args.rooms.contains(&0) {
        bail!("--rooms: sizes of at least 1");
    }
    if args.layers.is_empty() || args.layers.len() > client::RIDS.len() {
        bail!("--layers: 1 to {} bitrates", client::RIDS.len());
    }
    let runtime = args.place.generator_runtime()?;
    // Short in a quick run, so that the vanished are gone before it ends.
    let participant_timeout = if args.quick { 4 } else { 20 };
    let secret = format!("bench-{:032x}", rand::random::<u128>());
    let capacity = args.rooms.iter().max().copied().unwrap_or(1) * 2 + args.slow_readers + 1;
    let server = Server::start(&Launch {
        bin: &args.place.sfu_bin,
        secret: &secret,
        base_port: args.place.base_port,
        capacity,
        cpus: &args.place.server_cpus,
        shards: None,
        ice_tcp: true,
        participant_timeout: Some(participant_timeout),
        member: None,
    })?;
    runtime.block_on(soak(&args, &server, &secret, participant_timeout))
}

async fn soak(
    args: &SoakArgs,
    server: &Server,
    secret: &str,
    participant_timeout: u64,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let duration = Duration::from_secs(args.duration.max(10));
    let shared = Arc::new(Shared {
        ws_url: server.ws_url(),
        epoch: start,
        measure_from: start,
        until: start + duration,
        e2ee: true,
        joins_settled: Default::default(),
    });
    let plan = Arc::new(Plan {
        key: TokenKey::new(secret.as_bytes()),
        shared: shared.clone(),
        life: (
            Duration::from_secs(args.life.0),
            Duration::from_secs(args.life.1),
        ),
        loss: args.loss_pct / 100.0,
        layers: args.layers.clone(),
        vanish_hold: Duration::from_secs(participant_timeout + 10),
    });
    println!(
        "soak: {} s, rooms of {:?}, lives of {}-{} s, {} % downlink loss, {} slow reader(s) over ICE-TCP at {} bit/s",
        duration.as_secs(),
        args.rooms,
        args.life.0,
        args.life.1,
        args.loss_pct,
        args.slow_readers,
        args.slow_read_rate
    );
    let mut seats = Vec::new();
    for (r, &size) in args.rooms.iter().enumerate() {
        let slots = (size >= args.slots_from).then_some((3, 4));
        for index in 0..size {
            let seat = Seat {
                room: format!("soak-{r}-of-{size}"),
                index,
                slots,
                voice: [-25, -32].get(index).copied(),
            };
            let plan = plan.clone();
            seats.push(tokio::spawn(async move { occupy(&plan, seat).await }));
        }
    }
    let largest = args.rooms.iter().enumerate().max_by_key(|(_, s)| **s);
    let mut slow = Vec::new();
    if let Some((r, &size)) = largest {
        for i in 0..args.slow_readers {
            let room = format!("soak-{r}-of-{size}");
            let slots = (size >= args.slots_from).then_some((3, 4));
            let token = slow_reader_token(&plan.key, &room, i)?;
            let role = Role {
                subscribe: true,
                slots,
                life: Life {
                    view_every: Some(Duration::from_secs(7)),
                    ..Life::default()
                },
                link: LinkConfig {
                    transport: Transport::Tcp {
                        read_bytes_per_s: Some(args.slow_read_rate / 8),
                    },
                    downlink_loss: 0.0,
                },
                ..listener()
            };
            slow.push(tokio::spawn(client::run(shared.clone(), token, role)));
        }
    }

    // The server's memory and state every 10 s; a line every minute (10 s when quick).
    let every = Duration::from_secs(10);
    let print_every = if args.quick { 1 } else { 6 };
    let mut points: Vec<Point> = Vec::new();
    println!("  time   RSS MB  participants  tracks  sockets  CPU s");
    let mut next = start + every;
    while next <= shared.until {
        tokio::time::sleep_until(next.into()).await;
        let s = server.sample().await?;
        let p = point(start, &s);
        if points.len() % print_every == print_every - 1 {
            println!(
                "{:>5.0}s {:>8.1} {:>13.0} {:>7.0} {:>8.0} {:>6.1}",
                p.at.as_secs_f64(),
                p.rss_mb,
                p.participants,
                p.tracks,
                p.sockets,
                p.cpu_s
            );
        }
        points.push(p);
        next += every;
    }
    let loaded = server.sample().await?;

    let mut totals = Totals::new();
    for s in seats {
        totals.merge(s.await?);
    }
    let mut slow_stats = Vec::new();
    for s in slow {
        slow_stats.push(s.await?);
    }
    // Everyone has gone; the vanished are timed out. Nothing may stay.
    let deadline = Instant::now() + Duration::from_secs(participant_timeout + 30);
    let mut end = server.sample().await?;
    while leftovers(&end).iter().any(|(_, n)| *n != 0.0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        end = server.sample().await?;
    }
    let report = Outcome {
        args,
        points: &points,
        loaded: &loaded,
        end: &end,
        totals: &totals,
        slow: &slow_stats,
    };
    report.print();
    if !args.quick {
        let path = args
            .results
            .clone()
            .unwrap_or_else(|| PathBuf::from("bench/results/soak.json"));
        report.append(&path)?;
        println!("appended to {}", path.display());
    }
    report.check()
}

/// One seat's people, one after another, until the run ends.
async fn occupy(plan: &Plan, seat: Seat) -> Totals {
    let mut totals = Totals::new();
    let until = plan.shared.until;
    for n in 0usize.. {
        let now = Instant::now();
        if now + plan.life.0 > until {
            break;
        }
        let (min, max) = plan.life;
        let lives = min + (max - min).mul_f64(rand::random::<f64>());
        // In turns: three leave, one closes its sockets, one vanishes.
        let exit = match (seat.index + n) % 5 {
            3 => Exit::Close,
            4 => Exit::Vanish(plan.vanish_hold),
            _ => Exit::Leave,
        };
        let identity = format!("{}-s{}-{n}", seat.room, seat.index);
        let Ok(token) = person_token(&plan.key, &seat.room, &identity) else {
            break;
        };
        let role = Role {
            audio: true,
            voice: seat.voice,
            video_layers_bps: plan.layers.clone(),
            slots: seat.slots,
            life: Life {
                ends: Some(now + lives),
                exit,
                mute_every: Some(Duration::from_secs(7 + (seat.index as u64 * 5) % 17)),
                view_every: Some(Duration::from_secs(4 + (seat.index as u64 * 3) % 9)),
            },
            link: LinkConfig {
                transport: Transport::Udp,
                downlink_loss: plan.loss,
            },
            ..listener()
        };
        let stats = client::run(plan.shared.clone(), token, role).await;
        totals.add(exit, &stats);
        // A moment before the next person takes the seat.
        let gap = Duration::from_millis(500 + rand::random::<u64>() % 2500);
        tokio::time::sleep(gap).await;
    }
    totals
}

/// A receive-only client that stays, the base of every role here.
fn listener() -> Role {
    Role {
        audio: false,
        voice: None,
        video_layers_bps: Vec::new(),
        video_source: "camera",
        keyframe_interval: Duration::from_secs(3),
        subscribe: true,
        slots: None,
        life: Life::default(),
        link: LinkConfig::default(),
    }
}

fn person_token(key: &TokenKey, room: &str, identity: &str) -> anyhow::Result<String> {
    let mut claims = TokenKey::claims(room, identity, None, Duration::from_secs(7200));
    claims.grants = Grants {
        publish_audio: true,
        publish_video: true,
        subscribe: true,
        ..Grants::default()
    };
    Ok(key.issue(&claims)?)
}

/// A token whose holder only receives, and only over TCP.
fn slow_reader_token(key: &TokenKey, room: &str, i: usize) -> anyhow::Result<String> {
    let mut claims = TokenKey::claims(room, &format!("slow-{i}"), None, Duration::from_secs(7200));
    claims.grants = Grants {
        subscribe: true,
        force_tcp: true,
        ..Grants::default()
    };
    Ok(key.issue(&claims)?)
}

fn leftovers(s: &Sample) -> Vec<(&'static str, f64)> {
    LEFTOVERS.iter().map(|n| (*n, s.total(n))).collect()
}

fn point(start: Instant, s: &Sample) -> Point {
    Point {
        at: s.at - start,
        rss_mb: s.rss_bytes as f64 / 1e6,
        participants: s.total("sfu_participants"),
        tracks: s.total("sfu_published_tracks"),
        sockets: s.total("sfu_signaling_sockets"),
        cpu_s: s.cpu_s,
    }
}

/// The run's figures and verdict.
struct Outcome<'a> {
    args: &'a SoakArgs,
    points: &'a [Point],
    /// The server just before the end, and once everyone had gone.
    loaded: &'a Sample,
    end: &'a Sample,
    totals: &'a Totals,
    slow: &'a [Stats],
}

impl Outcome<'_> {
    /// The memory the end is compared with: 5 minutes in (a fifth of a shorter run).
    fn baseline(&self) -> Option<&Point> {
        let at = RSS_BASELINE_AT.min(Duration::from_secs(self.args.duration / 5));
        self.points.iter().find(|p| p.at >= at)
    }

    fn growth(&self) -> Option<f64> {
        let base = self.baseline()?;
        Some(self.loaded.rss_bytes as f64 / 1e6 / base.rss_mb - 1.0)
    }

    fn print(&self) {
        let t = self.totals;
        println!(
            "lives            {:>10}  (left {}, closed {}, vanished {})",
            t.lives, t.exits[0], t.exits[1], t.exits[2]
        );
        println!("errors           {:>10}", t.errors.len());
        for e in t.errors.iter().take(10) {
            println!("  {e}");
        }
        println!("lives no media   {:>10}", t.without_media);
        println!(
            "received         {:>10} packets, lost {} with {} dropped by the links",
            t.received, t.lost, t.link_dropped
        );
        println!(
            "lost beyond link {:>10} lives, {} packets",
            t.lost_beyond_link, t.excess_lost
        );
        println!(
            "frames           {:>10} decrypted, {} did not decrypt",
            t.decrypted, t.undecryptable
        );
        let q = |x: f64| t.latency_us.value_at_quantile(x) as f64 / 1000.0;
        println!(
            "latency          {:>10.1} ms p50, {:.1} p99, {:.1} max",
            q(0.5),
            q(0.99),
            t.latency_us.max() as f64 / 1000.0
        );
        for (i, s) in self.slow.iter().enumerate() {
            println!(
                "slow reader {i}    {:>10} packets received, error {:?}",
                s.packets_received, s.error
            );
        }
        let tcp_full = self
            .loaded
            .total("sfu_dropped_total{reason=\"tcp_queue_full\"}");
        println!("tcp queue full   {tcp_full:>10} packets dropped for slow readers");
        if let (Some(base), Some(g)) = (self.baseline(), self.growth()) {
            println!(
                "RSS              {:>10.1} MB at {:.0} s, {:.1} at the end ({:+.1} %), {:.1} once all had gone",
                base.rss_mb,
                base.at.as_secs_f64(),
                self.loaded.rss_bytes as f64 / 1e6,
                g * 100.0,
                self.end.rss_bytes as f64 / 1e6
            );
        }
        let left: Vec<String> = leftovers(self.end)
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        println!("left at the end  {}", left.join(", "));
    }

    fn append(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let t = self.totals;
        let line = json!({
            "scenario": "soak",
            "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "duration_s": self.args.duration,
            "rooms": self.args.rooms,
            "loss_pct": self.args.loss_pct,
            "lives": t.lives,
            "exits": {"leave": t.exits[0], "close": t.exits[1], "vanish": t.exits[2]},
            "errors": t.errors.len(),
            "received": t.received,
            "lost": t.lost,
            "link_dropped": t.link_dropped,
            "lost_beyond_link_lives": t.lost_beyond_link,
            "rss_mb": self.points.iter().map(|p| json!([p.at.as_secs(), (p.rss_mb * 10.0).round() / 10.0])).collect::<Vec<_>>(),
            "rss_growth_pct": self.growth().map(|g| g * 100.0),
            "rss_idle_mb": self.end.rss_bytes as f64 / 1e6,
            "leftovers": leftovers(self.end).iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
        });
        crate::report::append_line(path, &line)
    }

    /// Fails the run on what must hold: no client failed, nothing left behind, no frame
    /// that did not decrypt; in a full run also the memory and the losses.
    fn check(&self) -> anyhow::Result<()> {
        let t = self.totals;
        let mut failures = Vec::new();
        if !t.errors.is_empty() {
            failures.push(format!("{} clients failed", t.errors.len()));
        }
        if t.received == 0 {
            failures.push("no client received anything".into());
        }
        for s in self.slow {
            if let Some(e) = &s.error {
                failures.push(format!("a slow reader failed: {e}"));
            }
        }
        for (name, v) in leftovers(self.end) {
            if v != 0.0 {
                failures.push(format!("{name} is {v} once everyone has gone"));
            }
        }
        if t.undecryptable > 0 {
            failures.push(format!("{} frames did not decrypt", t.undecryptable));
        }
        if !self.args.quick {
            if let Some(g) = self.growth().filter(|g| *g > RSS_GROWTH_ALLOWED) {
                failures.push(format!("RSS grew {:.1} % after 5 minutes", g * 100.0));
            }
            if t.without_media > 0 {
                failures.push(format!("{} lives received no media", t.without_media));
            }
            if t.lost_beyond_link > 0 {
                failures.push(format!(
                    "{} lives lost {} packets more than their links dropped",
                    t.lost_beyond_link, t.excess_lost
                ));
            }
        }
        if failures.is_empty() {
            println!("soak: passed");
            Ok(())
        } else {
            bail!("soak failed: {}", failures.join("; "))
        }
    }
}
