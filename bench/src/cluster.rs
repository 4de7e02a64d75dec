//! The servers a run loads: one `sfu`, or (`bench conference --nodes N`) a cluster of N
//! nodes on a redis-server of its own, every join sent to the first node (the entry),
//! which places new rooms on the least loaded node and redirects the joins of rooms that
//! live elsewhere; and what the cluster's part of the report says: where the rooms went,
//! a redirected join's time against a direct one's, the Redis commands a join costs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::Stats;
use crate::report::Section;
use crate::server::{Launch, Member, Sample, Server};

/// How often a node beats (the `cluster` crate's `BEAT`): it writes its report, renews
/// its rooms' claims, reads the others' reports, and only then brings its
/// `sfu_cluster_redis_commands_total` up to date. Beats are periodic, so any span of k
/// beats' length holds exactly k beats of each node.
pub const BEAT: Duration = Duration::from_secs(2);

/// Ports from one node's range to the next's: HTTP on the first, UDP media on the next 8.
const NODE_PORTS: u16 = 10;

/// The most nodes a run starts (their ports follow each other from `--base-port`).
pub const MAX_NODES: usize = 9;

/// How long a start (Redis listening, every node seeing the others) may take.
const START_BOUND: Duration = Duration::from_secs(15);

/// The servers under test.
pub struct Deployment {
    /// The nodes, `n1` first: the entry, where every join goes.
    pub nodes: Vec<Server>,
    /// The cluster's Redis; declared after the nodes, so killed after them.
    redis: Option<Redis>,
}

impl Deployment {
    /// `nodes` servers as `launch` says: one alone, or a cluster on a Redis of its own
    /// (pinned like the servers), node `i` (from 0) on the ports from `base_port + 10 i`;
    /// returns once every node sees all of them.
    pub fn start(nodes: usize, launch: &Launch) -> anyhow::Result<Deployment> {
        if nodes <= 1 {
            let server = Server::start(launch)?;
            return Ok(Deployment {
                nodes: vec![server],
                redis: None,
            });
        }
        if nodes > MAX_NODES {
            bail!("--nodes: at most {MAX_NODES}");
        }
        let redis = Redis::start(launch.cpus)?;
        let url = redis.url();
        let mut servers = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let id = node_id(i);
            servers.push(Server::start(&Launch {
                base_port: launch.base_port + NODE_PORTS * i as u16,
                member: Some(Member {
                    redis: &url,
                    node: &id,
                }),
                ..*launch
            })?);
        }
        let deployment = Deployment {
            nodes: servers,
            redis: Some(redis),
        };
        deployment.await_cluster()?;
        Ok(deployment)
    }

    /// Where every client sends its join.
    pub fn entry(&self) -> &Server {
        &self.nodes[0]
    }

    pub fn is_cluster(&self) -> bool {
        self.redis.is_some()
    }

    /// Every node's sample, in node order.
    pub async fn sample(&self) -> anyhow::Result<Vec<Sample>> {
        let mut samples = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            samples.push(node.sample().await?);
        }
        Ok(samples)
    }

    /// Redis's own count of the commands it processed; 0 without a cluster.
    async fn redis_commands(&self) -> anyhow::Result<u64> {
        match &self.redis {
            Some(redis) => redis.commands().await,
            None => Ok(0),
        }
    }

    /// Waits until every node reaches Redis and has seen every node at a beat: placements
    /// before that would leave out the nodes not seen yet.
    fn await_cluster(&self) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let deadline = Instant::now() + START_BOUND;
        let n = self.nodes.len() as f64;
        loop {
            let samples = rt.block_on(self.sample())?;
            let ready = samples.iter().all(|s| {
                s.metric("sfu_cluster_nodes") == n && s.metric("sfu_cluster_redis_reachable") == 1.0
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let seen: Vec<f64> = samples
                    .iter()
                    .map(|s| s.metric("sfu_cluster_nodes"))
                    .collect();
                bail!(
                    "the cluster did not form within {START_BOUND:?}: nodes seen by each {seen:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A node's id: `n1` for the first.
fn node_id(i: usize) -> String {
    format!("n{}", i + 1)
}

/// A `redis-server` on a free loopback port, nothing saved to disk; killed when dropped.
pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(cpus: &str) -> anyhow::Result<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = if cpus.is_empty() {
            Command::new("redis-server")
        } else {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus, "redis-server"]);
            c
        };
        let child = cmd
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server (Debian's package redis-server)")?;
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + START_BOUND;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = redis.child.try_wait()? {
                bail!("redis-server exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("redis-server did not listen on {port} within {START_BOUND:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `total_commands_processed` of `INFO stats`: every command so far, this `INFO`
    /// only from the next one on.
    async fn commands(&self) -> anyhow::Result<u64> {
        let query = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            s.write_all(b"INFO stats\r\n").await?;
            // A bulk string: `$LENGTH\r\n`, then LENGTH bytes.
            let mut reply = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    bail!("redis-server closed the connection");
                }
                reply.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&reply);
                if let Some((head, body)) = text.split_once("\r\n") {
                    let length: usize = head
                        .strip_prefix('$')
                        .and_then(|l| l.parse().ok())
                        .with_context(|| format!("INFO answered {head:?}"))?;
                    if body.len() >= length {
                        break body.to_string();
                    }
                }
            };
            body.lines()
                .find_map(|l| l.strip_prefix("total_commands_processed:"))
                .and_then(|v| v.trim().parse().ok())
                .context("no total_commands_processed in INFO stats")
        };
        tokio::time::timeout(Duration::from_secs(5), query)
            .await
            .context("redis-server did not answer INFO within 5 s")?
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The counters at the start of the join phase, just before the first client starts.
pub struct PhaseStart {
    at: Instant,
    nodes: Vec<Sample>,
    redis: u64,
}

/// The join phase, from just before the first join to whole beats after the last one
/// was answered (so that every node's counter holds every placement, and exactly `beats`
/// of its heartbeats), then whole beats without joins, which measure the heartbeats.
pub struct JoinPhase {
    /// Each node's counters at the start, at the end, and `idle_beats` after the end.
    before: Vec<Sample>,
    after: Vec<Sample>,
    idle: Vec<Sample>,
    /// Redis's own count at the start and the end.
    redis: (u64, u64),
    beats: u32,
    idle_beats: u32,
}

impl PhaseStart {
    pub async fn read(d: &Deployment) -> anyhow::Result<PhaseStart> {
        let at = Instant::now();
        let redis = d.redis_commands().await?;
        let nodes = d.sample().await?;
        Ok(PhaseStart { at, nodes, redis })
    }

    /// Waits until all `clients` joins were answered (or `until`), then for the end of the
    /// first whole number of beats from the start that leaves every node a beat after the
    /// last join, and reads the counters; then, for the heartbeats' cost, for as many whole
    /// beats more as fit before `until` (1 to 5, one even past `until`).
    pub async fn finish(
        self,
        d: &Deployment,
        settled: &AtomicUsize,
        clients: usize,
        until: Instant,
    ) -> anyhow::Result<JoinPhase> {
        while settled.load(Ordering::Relaxed) < clients && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A placement shows in its node's counter at the end of that node's next beat.
        let needed = self.at.elapsed() + BEAT + Duration::from_millis(300);
        let beats = (needed.as_secs_f64() / BEAT.as_secs_f64()).ceil() as u32;
        let end = self.at + BEAT * beats;
        tokio::time::sleep_until(end.into()).await;
        let redis = d.redis_commands().await?;
        let after = d.sample().await?;
        let left = until.saturating_duration_since(end).as_secs_f64() / BEAT.as_secs_f64();
        let idle_beats = (left.floor() as u32).clamp(1, 5);
        tokio::time::sleep_until((end + BEAT * idle_beats).into()).await;
        let idle = d.sample().await?;
        Ok(JoinPhase {
            before: self.nodes,
            after,
            idle,
            redis: (self.redis, redis),
            beats,
            idle_beats,
        })
    }
}

fn percentile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// Join times of one group of clients, microseconds.
struct JoinTimes {
    clients: usize,
    joined: Histogram<u64>,
    first_media: Histogram<u64>,
}

impl JoinTimes {
    fn new() -> JoinTimes {
        let h = || Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
        JoinTimes {
            clients: 0,
            joined: h(),
            first_media: h(),
        }
    }

    fn add(&mut self, s: &Stats) {
        self.clients += 1;
        if let Some(d) = s.join_to_joined {
            let _ = self.joined.record((d.as_micros() as u64).max(1));
        }
        if let Some(d) = s.join_to_first_media {
            let _ = self.first_media.record((d.as_micros() as u64).max(1));
        }
    }

    fn line(&self, h: &Histogram<u64>) -> String {
        format!(
            "{} clients, p50 {} ms p99 {} ms",
            self.clients,
            fmt_ms(percentile_ms(h, 0.5)),
            fmt_ms(percentile_ms(h, 0.99))
        )
    }

    fn json(&self) -> Value {
        let q = |h: &Histogram<u64>| json!({"p50": percentile_ms(h, 0.5), "p99": percentile_ms(h, 0.99), "max": percentile_ms(h, 1.0)});
        json!({"clients": self.clients, "joined_ms": q(&self.joined), "first_media_ms": q(&self.first_media)})
    }
}

/// The cluster's part of the report. `rooms`: each client's room; `window`: the nodes'
/// samples at both ends of the measured window.
pub fn section(
    d: &Deployment,
    stats: &[Stats],
    rooms: &[usize],
    window: (&[Sample], &[Sample]),
    phase: &JoinPhase,
) -> Section {
    let n = d.nodes.len();
    let index: HashMap<&str, usize> = d
        .nodes
        .iter()
        .enumerate()
        .map(|(i, s)| (s.authority(), i))
        .collect();
    // Where the clients ended, as they saw it, and where each room went.
    let mut clients_on = vec![0usize; n];
    let mut rooms_on = vec![BTreeSet::new(); n];
    let mut room_nodes: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    let (mut direct, mut redirected) = (JoinTimes::new(), JoinTimes::new());
    let mut redirected_again = 0usize;
    for (s, room) in stats.iter().zip(rooms) {
        let Some(node) = s.node.as_deref().and_then(|a| index.get(a)) else {
            continue;
        };
        clients_on[*node] += 1;
        rooms_on[*node].insert(*room);
        room_nodes.entry(*room).or_default().insert(*node);
        if s.redirects == 0 {
            direct.add(s);
        } else {
            redirected.add(s);
            redirected_again += usize::from(s.redirects > 1);
        }
    }
    let joined = direct.clients + redirected.clients;
    let all_rooms: BTreeSet<usize> = rooms.iter().copied().collect();
    let (before, after) = window;
    let seconds = after[0]
        .at
        .duration_since(before[0].at)
        .as_secs_f64()
        .max(1e-3);
    let delta = |a: &Sample, b: &Sample, name: &str| b.metric(name) - a.metric(name);
    const COMMANDS: &str = "sfu_cluster_redis_commands_total";
    // Each node's commands per heartbeat, over the beats after the join phase (no joins
    // then: only heartbeats send commands).
    let per_beat: Vec<f64> = (0..n)
        .map(|i| delta(&phase.after[i], &phase.idle[i], COMMANDS) / f64::from(phase.idle_beats))
        .collect();
    let span_s = (BEAT * phase.beats).as_secs_f64();
    let phase_commands: Vec<f64> = (0..n)
        .map(|i| delta(&phase.before[i], &phase.after[i], COMMANDS))
        .collect();
    let net: Vec<f64> = (0..n)
        .map(|i| phase_commands[i] - per_beat[i] * f64::from(phase.beats))
        .collect();
    let gross_total: f64 = phase_commands.iter().sum();
    let net_total: f64 = net.iter().sum();
    let redis_counted = phase.redis.1.saturating_sub(phase.redis.0 + 1);
    let per = |x: f64, joins: usize| (joins > 0).then(|| x / joins as f64);
    let fmt_per = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}"));

    let mut lines = vec![format!(
        "cluster          {n} nodes on one redis-server, every join sent to n1 (the entry); {} rooms",
        all_rooms.len()
    )];
    let mut nodes_json = Vec::new();
    for i in 0..n {
        let (b, a) = (&before[i], &after[i]);
        let egress = delta(b, a, "sfu_udp_tx_packets_total") / seconds;
        let cores = (a.cpu_s - b.cpu_s) / seconds;
        let (server_rooms, participants) = (b.total("sfu_rooms"), b.total("sfu_participants"));
        lines.push(format!(
            "node {:<11} {:>3} rooms, {:>4} participants (server, at the window's start; {} rooms, {} clients as the clients saw it), egress {egress:.0} packets/s, {cores:.2} cores, Redis {:.0} commands in the join phase, {:.1} per heartbeat",
            node_id(i),
            server_rooms,
            participants,
            rooms_on[i].len(),
            clients_on[i],
            phase_commands[i],
            per_beat[i],
        ));
        nodes_json.push(json!({
            "node": node_id(i),
            "rooms": server_rooms,
            "participants": participants,
            "client_rooms": rooms_on[i].len(),
            "clients": clients_on[i],
            "egress_pps": egress,
            "cores": cores,
            "join_phase_redis_commands": phase_commands[i],
            "redis_commands_per_heartbeat": per_beat[i],
        }));
    }
    lines.push(format!(
        "joined           direct (room on the entry): {}; redirected: {}{}  (socket opened to `joined`)",
        direct.line(&direct.joined),
        redirected.line(&redirected.joined),
        if redirected_again > 0 {
            format!(", {redirected_again} of them more than once")
        } else {
            String::new()
        }
    ));
    lines.push(format!(
        "first media      direct: {}; redirected: {}  (token sent to first media packet)",
        direct.line(&direct.first_media),
        redirected.line(&redirected.first_media)
    ));
    lines.push(format!(
        "Redis commands   {gross_total:.0} in the join phase ({span_s:.0} s, {} beats of each node) = {} per join, heartbeats included; less the heartbeats ({:.1} commands a beat, all nodes, over {} beats after) {} per join: entry {} per join, the other nodes {} per redirected join; redis-server processed {redis_counted} in the phase (its count includes the commands scripts call)",
        phase.beats,
        fmt_per(per(gross_total, joined)),
        per_beat.iter().sum::<f64>(),
        phase.idle_beats,
        fmt_per(per(net_total, joined)),
        fmt_per(per(net[0], joined)),
        fmt_per(per(net[1..].iter().sum(), redirected.clients)),
    ));
    let mut problems = Vec::new();
    let empty: Vec<String> = (0..n)
        .filter(|i| rooms_on[*i].is_empty())
        .map(node_id)
        .collect();
    if !empty.is_empty() {
        problems.push(format!(
            "the {} rooms did not spread: no client joined on {}",
            all_rooms.len(),
            empty.join(", ")
        ));
    }
    let split: Vec<String> = room_nodes
        .iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(room, nodes)| {
            let ids: Vec<String> = nodes.iter().map(|i| node_id(*i)).collect();
            format!("room {room} on {}", ids.join(" and "))
        })
        .collect();
    if !split.is_empty() {
        problems.push(format!(
            "rooms whose clients ended on several nodes: {}",
            split.join(", ")
        ));
    }
    let json = json!({
        "nodes": nodes_json,
        "rooms": all_rooms.len(),
        "direct": direct.json(),
        "redirected": redirected.json(),
        "redirected_more_than_once": redirected_again,
        "redis": {
            "join_phase_s": span_s,
            "beats": phase.beats,
            "commands": gross_total,
            "per_join_with_heartbeats": per(gross_total, joined),
            "per_heartbeat": per_beat.iter().sum::<f64>(),
            "heartbeats_measured": phase.idle_beats,
            "per_join": per(net_total, joined),
            "entry_per_join": per(net[0], joined),
            "others_per_redirected_join": per(net[1..].iter().sum(), redirected.clients),
            "redis_server_processed": redis_counted,
        },
    });
    Section {
        key: "cluster",
        lines,
        json,
        problems,
    }
}
