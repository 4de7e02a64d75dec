//! The server under test: started on loopback with a fresh secret, sampled from /proc and
//! its /metrics, stopped when dropped.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Server {
    child: Child,
    http: String,
}

/// The server at one instant.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    /// user + system CPU seconds of the server process.
    pub cpu_s: f64,
    pub rss_bytes: u64,
    /// The machine's count of UDP datagrams dropped for a full receive buffer.
    pub rcvbuf_errors: u64,
    /// Unlabelled samples of /metrics, and `name{labels}` for labelled ones.
    pub metrics: HashMap<String, f64>,
}

impl Sample {
    /// Several servers' samples as one, for the figures of a whole cluster: CPU, memory
    /// and every metric summed; the time and the machine's counter of the first.
    pub fn sum(samples: &[Sample]) -> Option<Sample> {
        let (first, rest) = samples.split_first()?;
        let mut sum = first.clone();
        for s in rest {
            sum.cpu_s += s.cpu_s;
            sum.rss_bytes += s.rss_bytes;
            for (name, v) in &s.metrics {
                *sum.metrics.entry(name.clone()).or_default() += v;
            }
        }
        Some(sum)
    }

    /// Process `pid`'s CPU time and memory now, with `metrics`.
    pub fn of_process(pid: u32, metrics: HashMap<String, f64>) -> anyhow::Result<Sample> {
        Ok(Sample {
            at: Instant::now(),
            cpu_s: cpu_seconds(&format!("/proc/{pid}/stat"))?,
            rss_bytes: rss_bytes(pid)?,
            rcvbuf_errors: rcvbuf_errors(),
            metrics,
        })
    }

    /// A metric's value; 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics.get(name).copied().unwrap_or(0.0)
    }

    /// A metric summed over its labels (`sfu_rooms{shard="0"}`, ...).
    pub fn total(&self, name: &str) -> f64 {
        self.metrics
            .iter()
            .filter(|(k, _)| {
                k.as_str() == name || k.strip_prefix(name).is_some_and(|r| r.starts_with('{'))
            })
            .map(|(_, v)| *v)
            .sum()
    }
}

/// Where a scenario runs the server and itself: the options every scenario shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Placement {
    /// The server binary (started by the bench, on loopback).
    #[arg(long, default_value = "target/release/sfu")]
    pub sfu_bin: std::path::PathBuf,
    /// CPUs for the server and for the generator (taskset lists); empty: no pinning.
    #[arg(long, default_value = "0")]
    pub server_cpus: String,
    #[arg(long, default_value = "1")]
    pub generator_cpus: String,
    /// The first port of the server's ranges (HTTP, then UDP media). Below the kernel's
    /// ephemeral range (32768-60999), where any outgoing connection of the machine may
    /// already hold a port.
    #[arg(long, default_value_t = 28000)]
    pub base_port: u16,
}

impl Placement {
    /// On a machine of one CPU, nothing is pinned; the generator pins itself, and gets
    /// a runtime of a thread per CPU it has.
    pub fn generator_runtime(&mut self) -> anyhow::Result<tokio::runtime::Runtime> {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            eprintln!("bench: one CPU only: server and generator run unpinned, side by side");
            self.server_cpus.clear();
            self.generator_cpus.clear();
        }
        pin_self(&self.generator_cpus);
        Ok(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.generator_cpus.split(',').count().max(1))
            .enable_all()
            .build()?)
    }
}

/// How a run starts the server.
pub struct Launch<'a> {
    pub bin: &'a Path,
    pub secret: &'a str,
    /// HTTP on it, UDP media on the next 8 ports, ICE-TCP (when on) on the 9th.
    pub base_port: u16,
    /// Participants a room may hold.
    pub capacity: usize,
    /// Its CPUs (a taskset list); empty: unpinned.
    pub cpus: &'a str,
    /// Media threads; `None`: the server's default.
    pub shards: Option<usize>,
    pub ice_tcp: bool,
    /// Seconds without media after which it removes a participant; `None`: its default.
    pub participant_timeout: Option<u64>,
    /// The cluster it is a node of; `None`: it runs alone.
    pub member: Option<Member<'a>>,
}

/// A server's place in a cluster: its Redis and its node id. Its public URL (where joins
/// for its rooms are redirected) is its own HTTP address.
#[derive(Clone, Copy)]
pub struct Member<'a> {
    /// `redis://127.0.0.1:PORT/`.
    pub redis: &'a str,
    /// Unique in the cluster: `n1`, `n2`, ...
    pub node: &'a str,
}

impl Server {
    /// Starts the server on 127.0.0.1 as `launch` says, without TURN.
    pub fn start(launch: &Launch) -> anyhow::Result<Server> {
        let Launch {
            bin,
            secret,
            base_port,
            capacity,
            cpus,
            shards,
            ice_tcp,
            participant_timeout,
            member,
        } = *launch;
        if !bin.exists() {
            bail!(
                "no server binary at {} (cargo build --release -p sfu, or --sfu-bin)",
                bin.display()
            );
        }
        let http = format!("127.0.0.1:{base_port}");
        let udp = format!("{}-{}", base_port + 1, base_port + 8);
        let mut cmd = if cpus.is_empty() {
            Command::new(bin)
        } else {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(bin);
            c
        };
        cmd.args([
            "--http-listen",
            &http,
            "--udp-ports",
            &udp,
            "--udp-bind",
            "127.0.0.1",
        ])
        .args(["--advertise-ip", "127.0.0.1", "--turn", "false"])
        .args(["--room-capacity", &capacity.to_string(), "--log", "warn"])
        .env("SFU_SECRET", secret)
        // Every client comes from 127.0.0.1: no per-address limits (an environment
        // variable, which servers built before those limits ignore).
        .env("SFU_SOCKETS_PER_ADDRESS", "0")
        .env("SFU_JOINS_PER_ADDRESS", "0")
        // The bench measures how much the server carries: no join turned away for load.
        .env("SFU_MAX_LOAD", "0")
        .envs(shards.map(|n| ("SFU_SHARDS", n.to_string())))
        .envs(participant_timeout.map(|s| ("SFU_PARTICIPANT_TIMEOUT", s.to_string())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        if let Some(Member { redis, node }) = member {
            let public = format!("http://{http}");
            cmd.args(["--redis", redis, "--node", node, "--public-url", &public]);
        }
        if ice_tcp {
            cmd.args(["--tcp-port", &(base_port + 9).to_string()]);
        } else {
            cmd.arg("--no-ice-tcp");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Server { child, http };
        let deadline = Instant::now() + Duration::from_secs(10);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited at start: {status}");
            }
            if rt.block_on(server.get("/healthz")).is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("the server did not answer /healthz within 10 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    /// Its HTTP address, `127.0.0.1:PORT`.
    pub fn authority(&self) -> &str {
        &self.http
    }

    /// Its CPU time, memory and metrics now.
    pub async fn sample(&self) -> anyhow::Result<Sample> {
        let text = self.get("/metrics").await?;
        let mut metrics = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((name, value)) = line.rsplit_once(' ')
                && let Ok(v) = value.parse::<f64>()
            {
                metrics.insert(name.to_string(), v);
            }
        }
        Sample::of_process(self.child.id(), metrics)
    }

    /// A plain HTTP/1.0 GET on the server; the body.
    async fn get(&self, path: &str) -> anyhow::Result<String> {
        let mut s = tokio::net::TcpStream::connect(&self.http).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.http).as_bytes())
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        let (head, body) = out.split_once("\r\n\r\n").context("no HTTP header end")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
        }
        Ok(body.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// user + system seconds from a /proc stat file.
fn cpu_seconds(path: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(path)?;
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse::<u64>()?;
    Ok(kb * 1024)
}

/// `RcvbufErrors` of /proc/net/snmp (0 when unreadable).
fn rcvbuf_errors() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// This process's CPU seconds.
pub fn self_cpu_seconds() -> f64 {
    cpu_seconds("/proc/self/stat").unwrap_or(0.0)
}

/// Pins this process (and the threads it starts from now on) to `cpus`.
pub fn pin_self(cpus: &str) {
    if cpus.is_empty() {
        return;
    }
    let pid = std::process::id().to_string();
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("bench: could not pin the generator to CPUs {cpus}: it runs unpinned");
    }
}
