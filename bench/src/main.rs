//! `bench`: loads a real `sfu` server with simulated clients (real signaling, real WebRTC
//! through str0m) and reports what the server did: egress, CPU, memory, loss, forwarding
//! latency, join time. See bench/README.md.

mod ceiling;
mod client;
mod e2ee;
mod flood;
mod frames;
mod life;
mod link;
mod mlines;
mod outgoing;
mod report;
mod server;
mod soak;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use protocol::Grants;
use signaling::TokenKey;

use crate::client::{Role, Shared};
use crate::life::Life;
use crate::link::LinkConfig;
use crate::report::Report;
use crate::server::{Launch, Server};

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Load the SFU with simulated WebRTC clients and report"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Everyone publishes audio and simulcast video and subscribes to everyone; the
    /// server picks what each receives (loudest audio, thumbnails, the speaker's top layer).
    Conference {
        /// Participants in the one room.
        #[arg(long, default_value_t = 70)]
        participants: usize,
        /// Each participant's video: the bitrates (bits/s, k and M suffixes) of its
        /// simulcast layers, lowest first, comma-separated, at most 3 (rids q, h, f); a
        /// single value is one stream, no simulcast (what `--bitrate` was).
        #[arg(
            long,
            alias = "bitrate",
            value_delimiter = ',',
            default_value = "150k,500k,1.5M",
            value_parser = parse_rate
        )]
        layers: Vec<u64>,
        /// Receive on slot m-lines, AUDIO:VIDEO of them (say 3:25), which the server
        /// fills with its choice, instead of one m-line per track.
        #[arg(long, value_parser = parse_slots)]
        slots: Option<(usize, usize)>,
        #[command(flatten)]
        common: Common,
    },
    /// One presenter shares a screen to receive-only viewers.
    Broadcast {
        #[arg(long, default_value_t = 500)]
        viewers: usize,
        /// The screen share's bitrate, bits/s (k and M suffixes).
        #[arg(long, default_value = "2.5M", value_parser = parse_rate)]
        bitrate: u64,
        #[command(flatten)]
        common: Common,
    },
    /// The raw ceiling alone: a UDP forwarder (no WebRTC, no crypto) receiving a packet
    /// once and sending it to N receivers with batched syscalls.
    Ceiling {
        /// Receivers each packet goes to.
        #[arg(long, default_value_t = 500)]
        fanout: usize,
        /// Packets per second into the forwarder.
        #[arg(long, default_value_t = 300.0)]
        pps: f64,
        /// Bytes per packet.
        #[arg(long, default_value_t = 1100)]
        size: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// CPUs of the forwarder (taskset list).
        #[arg(long, default_value = "0")]
        cpus: String,
        /// Destinations per sendmmsg (1 to 64): 1 is one system call per packet, as the
        /// server sends today.
        #[arg(long, default_value_t = 64)]
        send_batch: usize,
        #[arg(long, default_value_t = 28020)]
        base_port: u16,
    },
    /// Half an hour of rooms of mixed sizes whose people come and go, mute, change what
    /// they watch and vanish, over lossy links, with a slow reader over ICE-TCP; checks
    /// the server's memory held and nothing was left behind (bench/src/soak.rs).
    Soak(soak::SoakArgs),
    /// The forwarder process of `ceiling` (started by the bench itself).
    #[command(hide = true)]
    Forward {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        first_port: u16,
        #[arg(long)]
        fanout: u16,
        #[arg(long)]
        send_batch: usize,
        #[arg(long)]
        seconds: u64,
    },
}

#[derive(Args, Debug)]
struct Common {
    /// Clients joining per second.
    #[arg(long, default_value = "50/s", value_parser = parse_per_second)]
    join_rate: f64,
    /// Seconds of measurement, after everyone joined.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// A few clients for a few seconds: checks the harness works end to end (CI smoke
    /// test); its figures mean nothing.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    place: server::Placement,
    /// Where the JSON line of this run is appended.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Participants of another room who flood the server with the largest offers the
    /// protocol allows (bench/src/flood.rs) through the measurement window. With
    /// `--shards 1` their room shares the scenario's shard, the worst case.
    #[arg(long, default_value_t = 0)]
    offer_flood: usize,
    /// The server's media threads (its `--shards`); unset: the server's default.
    #[arg(long)]
    shards: Option<usize>,
    /// Clients send their frames in the clear (they join without `e2ee`, with tokens
    /// that grant `plaintext`) instead of encrypting every frame end to end (SFrame).
    #[arg(long)]
    plaintext: bool,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let (n, scale) = match s.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1e3),
        None => match s.strip_suffix('M') {
            Some(n) => (n, 1e6),
            None => (s, 1.0),
        },
    };
    let v: f64 = n.parse().map_err(|e| format!("{s}: {e}"))?;
    if v <= 0.0 {
        return Err(format!("{s}: must be positive"));
    }
    Ok((v * scale) as u64)
}

fn parse_per_second(s: &str) -> Result<f64, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    let v: f64 = n.parse().map_err(|e| format!("{s}: {e}"))?;
    if v <= 0.0 {
        return Err(format!("{s}: must be positive"));
    }
    Ok(v)
}

/// `A:V`: audio and video slot counts.
fn parse_slots(s: &str) -> Result<(usize, usize), String> {
    let (a, v) = s
        .split_once(':')
        .ok_or_else(|| format!("{s}: AUDIO:VIDEO, say 3:25"))?;
    let n = |x: &str| x.trim().parse::<usize>().map_err(|e| format!("{s}: {e}"));
    Ok((n(a)?, n(v)?))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (name, clients, common, video_layers_bps) = match cli.scenario {
        Scenario::Conference {
            participants,
            layers,
            slots,
            common,
        } => {
            if layers.is_empty() || layers.len() > client::RIDS.len() {
                anyhow::bail!(
                    "--layers: 1 to {} bitrates, lowest first",
                    client::RIDS.len()
                );
            }
            let n = if common.quick { 3 } else { participants };
            let role = Role {
                audio: true,
                voice: None,
                video_layers_bps: layers.clone(),
                video_source: "camera",
                keyframe_interval: Duration::from_secs(3),
                subscribe: true,
                slots,
                life: Life::default(),
                link: LinkConfig::default(),
            };
            // A meeting: three people talk (at different levels, in spurts), the rest
            // listen.
            let roles = (0..n)
                .map(|i| Role {
                    voice: [-25, -30, -35].get(i).copied(),
                    ..role.clone()
                })
                .collect();
            ("conference", roles, common, layers)
        }
        Scenario::Broadcast {
            viewers,
            bitrate,
            common,
        } => {
            let n = if common.quick { 3 } else { viewers };
            let presenter = Role {
                audio: false,
                voice: None,
                video_layers_bps: vec![bitrate],
                video_source: "screen",
                keyframe_interval: Duration::from_secs(5),
                subscribe: false,
                slots: None,
                life: Life::default(),
                link: LinkConfig::default(),
            };
            let viewer = Role {
                audio: false,
                voice: None,
                video_layers_bps: Vec::new(),
                video_source: "screen",
                keyframe_interval: Duration::from_secs(5),
                subscribe: true,
                slots: None,
                life: Life::default(),
                link: LinkConfig::default(),
            };
            let mut roles = vec![presenter];
            roles.extend(std::iter::repeat_n(viewer, n));
            ("broadcast", roles, common, vec![bitrate])
        }
        Scenario::Ceiling {
            fanout,
            pps,
            size,
            duration,
            cpus,
            base_port,
            send_batch,
        } => {
            let c = ceiling::run(fanout, pps, size, duration, base_port, &cpus, send_batch)?;
            println!(
                "ceiling: fanout {}, {:.0} packets/s of {size} bytes in, {send_batch} per sendmmsg: egress {:.0} packets/s on {:.2} cores = {:.0} packets/s per core, loss {:.3} %",
                c.fanout,
                c.offered_pps,
                c.egress_pps,
                c.cores,
                c.pps_per_core(),
                c.loss_pct
            );
            return Ok(());
        }
        Scenario::Soak(args) => return soak::run(args),
        Scenario::Forward {
            listen,
            first_port,
            fanout,
            send_batch,
            seconds,
        } => return ceiling::forward(&listen, first_port, fanout, send_batch, seconds),
    };
    let mut common = common;
    let runtime = common.place.generator_runtime()?;
    let duration = Duration::from_secs(if common.quick {
        3
    } else {
        common.duration.max(1)
    });
    let secret = format!("bench-{:032x}", rand::random::<u128>());
    let server = Server::start(&Launch {
        bin: &common.place.sfu_bin,
        secret: &secret,
        base_port: common.place.base_port,
        capacity: clients.len() + 1,
        cpus: &common.place.server_cpus,
        shards: common.shards,
        ice_tcp: false,
        participant_timeout: None,
    })?;
    let mut report = runtime.block_on(run(
        name,
        &server,
        &secret,
        clients,
        &common,
        duration,
        &video_layers_bps,
    ))?;
    drop(server);
    drop(runtime);
    // The raw forwarder under the same shape: the publishers' packets in, each to every
    // receiver of it, where the server ran.
    if let Some((fanout, pps, size)) = report.shape() {
        let seconds = if common.quick {
            2
        } else {
            duration.as_secs().min(10)
        };
        match ceiling::run(
            fanout,
            pps,
            size,
            seconds,
            common.place.base_port + 20,
            &common.place.server_cpus,
            64,
        ) {
            Ok(c) => report.add_ceiling(&c),
            Err(e) => eprintln!("bench: the ceiling run failed: {e:#}"),
        }
    }
    report.print();
    let path = common
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("bench/results/{name}.json")));
    if !common.quick {
        report.append(&path)?;
        println!("appended to {}", path.display());
    }
    report.check_harness()
}

async fn run(
    name: &'static str,
    server: &Server,
    secret: &str,
    roles: Vec<Role>,
    common: &Common,
    duration: Duration,
    video_layers_bps: &[u64],
) -> anyhow::Result<Report> {
    let key = TokenKey::new(secret.as_bytes());
    let room = format!("bench-{name}");
    let interval = Duration::from_secs_f64(1.0 / common.join_rate);
    let ramp = interval * roles.len() as u32 + Duration::from_secs(2);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        ws_url: server.ws_url(),
        epoch: start,
        measure_from: start + ramp,
        until: start + ramp + duration,
        e2ee: !common.plaintext,
    });
    let mut tasks = Vec::new();
    for (i, role) in roles.iter().enumerate() {
        let mut claims = TokenKey::claims(&room, &format!("c{i}"), None, Duration::from_secs(3600));
        claims.grants = Grants {
            publish_audio: role.audio,
            publish_video: role.publishes_video() && role.video_source == "camera",
            publish_screen: role.publishes_video() && role.video_source == "screen",
            subscribe: role.subscribe,
            force_tcp: false,
            plaintext: common.plaintext,
            ..Grants::default()
        };
        let token = key.issue(&claims)?;
        let (shared, role) = (shared.clone(), role.clone());
        let at = start + interval * i as u32;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            client::run(shared, token, role).await
        }));
    }
    tokio::time::sleep_until(shared.measure_from.into()).await;
    let mut floods = Vec::new();
    for i in 0..common.offer_flood {
        let mut claims = TokenKey::claims(
            &format!("{room}-flood"),
            &format!("f{i}"),
            None,
            Duration::from_secs(3600),
        );
        claims.grants = Grants {
            publish_audio: true,
            publish_video: true,
            publish_screen: true,
            subscribe: true,
            plaintext: common.plaintext,
            ..Grants::default()
        };
        let token = key.issue(&claims)?;
        let (url, e2ee, until) = (shared.ws_url.clone(), shared.e2ee, shared.until);
        floods.push(tokio::spawn(flood::run(url, token, e2ee, until)));
    }
    let before = server.sample().await?;
    let gen_before = server::self_cpu_seconds();
    tokio::time::sleep_until(shared.until.into()).await;
    let after = server.sample().await?;
    let gen_after = server::self_cpu_seconds();
    let mut stats = Vec::new();
    for t in tasks {
        stats.push(t.await?);
    }
    let mut flooded = Vec::new();
    for f in floods {
        flooded.push(f.await?);
    }
    let mut report = Report::new(
        name,
        &roles,
        stats,
        before,
        after,
        gen_after - gen_before,
        common,
        video_layers_bps,
    );
    if common.offer_flood > 0 {
        report.add_flood(&flooded);
    }
    Ok(report)
}
