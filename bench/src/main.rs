//! `bench`: loads a real `sfu` server with simulated clients (real signaling, real WebRTC
//! through str0m) and reports what the server did: egress, CPU, memory, loss, forwarding
//! latency, join time. See bench/README.md.

mod ceiling;
mod client;
mod cluster;
mod cost;
mod e2ee;
mod flood;
mod frames;
mod janus;
mod life;
mod link;
mod mlines;
mod outgoing;
mod receive;
mod report;
mod server;
mod soak;
mod target;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use protocol::Grants;
use serde_json::json;
use signaling::TokenKey;

use crate::client::{Role, Shared};
use crate::cluster::{Deployment, PhaseStart};
use crate::flood::FloodStats;
use crate::janus::{Janus, JanusLaunch};
use crate::life::Life;
use crate::link::LinkConfig;
use crate::report::{Report, Section};
use crate::server::{Launch, Sample};
use crate::target::{Servers, Target};

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
        /// Participants in each room [default: 70 in one room, 4 in each of several].
        #[arg(long)]
        participants: Option<usize>,
        /// Rooms, joined in turns (the first of each, then the second, ...) [default: 1;
        /// with --nodes, 10 per node].
        #[arg(long)]
        rooms: Option<usize>,
        /// Servers: more than 1 makes them the nodes of a cluster on a redis-server the
        /// bench starts, every join sent to the first (which redirects it to the room's).
        #[arg(long, default_value_t = 1)]
        nodes: usize,
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
    /// The shard's own work per forwarded packet: instructions counted by callgrind over
    /// a fixed scenario in virtual time (bench/src/cost.rs).
    Cost(cost::CostArgs),
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
    /// The server loaded: ours, or Janus's VideoRoom (always in the clear: Janus has no
    /// way to carry the clients' keys; bench/README.md, "Side by side with Janus").
    #[arg(long, value_enum, default_value = "sfu")]
    target: Target,
    /// Janus's binary, for `--target janus`.
    #[arg(long, default_value = "janus")]
    janus_bin: PathBuf,
    /// Janus's `event_loops` (threads that carry all its peer connections); unset:
    /// Janus's default, a thread for each peer connection.
    #[arg(long)]
    janus_event_loops: Option<usize>,
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
    let (name, clients, common, video_layers_bps, layout) = match cli.scenario {
        Scenario::Conference {
            participants,
            rooms,
            nodes,
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
            if nodes == 0 || nodes > cluster::MAX_NODES {
                anyhow::bail!("--nodes: 1 to {}", cluster::MAX_NODES);
            }
            let rooms = match rooms {
                Some(0) => anyhow::bail!("--rooms: at least 1"),
                Some(r) => r,
                None if nodes > 1 && common.quick => 2 * nodes,
                None if nodes > 1 => 10 * nodes,
                None => 1,
            };
            let per_room = match (common.quick, rooms) {
                (true, 1) => 3,
                (true, _) => 2,
                (false, 1) => participants.unwrap_or(70),
                (false, _) => participants.unwrap_or(4),
            };
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
            // listen. Client i joins room i % rooms, so that every room opens early.
            let roles = (0..rooms * per_room)
                .map(|i| Role {
                    voice: [-25, -30, -35].get(i / rooms).copied(),
                    ..role.clone()
                })
                .collect();
            let layout = Layout {
                rooms,
                nodes,
                per_room,
            };
            ("conference", roles, common, layers, layout)
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
            let layout = Layout {
                rooms: 1,
                nodes: 1,
                per_room: n + 1,
            };
            ("broadcast", roles, common, vec![bitrate], layout)
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
        Scenario::Cost(args) => return cost::run(args),
        Scenario::Forward {
            listen,
            first_port,
            fanout,
            send_batch,
            seconds,
        } => return ceiling::forward(&listen, first_port, fanout, send_batch, seconds),
    };
    let mut common = common;
    if common.target == Target::Janus {
        let unsupported = [
            (layout.nodes > 1, "--nodes"),
            (clients.iter().any(|r| r.slots.is_some()), "--slots"),
            (common.offer_flood > 0, "--offer-flood"),
            (common.shards.is_some(), "--shards"),
        ];
        if let Some((_, flag)) = unsupported.iter().find(|(on, _)| *on) {
            anyhow::bail!("{flag} is ours alone: Janus has nothing like it");
        }
        common.plaintext = true;
    }
    let runtime = common.place.generator_runtime()?;
    let duration = Duration::from_secs(if common.quick {
        3
    } else {
        common.duration.max(1)
    });
    let secret = format!("bench-{:032x}", rand::random::<u128>());
    let servers = match common.target {
        Target::Sfu => Servers::Ours(Deployment::start(
            layout.nodes,
            &Launch {
                bin: &common.place.sfu_bin,
                secret: &secret,
                base_port: common.place.base_port,
                capacity: clients.len() + 1,
                cpus: &common.place.server_cpus,
                shards: common.shards,
                ice_tcp: false,
                participant_timeout: None,
                member: None,
            },
        )?),
        // A publishing and a receiving peer connection per client.
        Target::Janus => Servers::Janus(Janus::start(&JanusLaunch {
            bin: &common.janus_bin,
            base_port: common.place.base_port,
            peer_connections: 2 * clients.len(),
            cpus: &common.place.server_cpus,
            event_loops: common.janus_event_loops,
        })?),
    };
    let mut report = runtime.block_on(run(
        name,
        &servers,
        &secret,
        clients,
        layout,
        &common,
        duration,
        &video_layers_bps,
    ))?;
    drop(servers);
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
    // A cluster's runs, and Janus's, are not comparable with one server's: files of
    // their own.
    let file = match common.target {
        Target::Janus => format!("janus-{name}"),
        Target::Sfu if layout.nodes > 1 => "cluster".to_owned(),
        Target::Sfu => name.to_owned(),
    };
    let path = common
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("bench/results/{file}.json")));
    if !common.quick {
        report.append(&path)?;
        println!("appended to {}", path.display());
    }
    report.check_harness()
}

/// How a scenario's clients are spread: over rooms, and the rooms over nodes.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Client i joins room i % rooms.
    rooms: usize,
    /// Servers; more than one are a cluster's nodes.
    nodes: usize,
    /// Clients in each room.
    per_room: usize,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    name: &'static str,
    servers: &Servers,
    secret: &str,
    roles: Vec<Role>,
    layout: Layout,
    common: &Common,
    duration: Duration,
    video_layers_bps: &[u64],
) -> anyhow::Result<Report> {
    let key = TokenKey::new(secret.as_bytes());
    let room_name = |r: usize| {
        if layout.rooms == 1 {
            format!("bench-{name}")
        } else {
            format!("bench-{name}-{r}")
        }
    };
    let seats: Vec<usize> = (0..roles.len()).map(|i| i % layout.rooms).collect();
    let interval = Duration::from_secs_f64(1.0 / common.join_rate);
    let ramp = interval * roles.len() as u32 + Duration::from_secs(2);
    // A cluster's counters just before the first join.
    let phase_start = match servers.cluster() {
        Some(cluster) => Some(PhaseStart::read(cluster).await?),
        None => None,
    };
    // Janus's rooms are made before anyone joins; ours open at their first join.
    if let Servers::Janus(janus) = servers {
        let rooms: Vec<u64> = (0..layout.rooms).map(janus_room).collect();
        janus.create_rooms(&rooms, layout.per_room).await?;
    }
    let start = Instant::now();
    let shared = Arc::new(Shared {
        ws_url: servers.entry_url(),
        epoch: start,
        measure_from: start + ramp,
        until: start + ramp + duration,
        e2ee: !common.plaintext,
        joins_settled: Default::default(),
    });
    let mut tasks = Vec::new();
    for (i, role) in roles.iter().enumerate() {
        let room = room_name(seats[i]);
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
        // In Janus, each watches the top layer of its room's loudest (client r of room r,
        // who talks at -25 dBov) and the lowest of the others, as our server would choose;
        // the loudest itself watches the next loudest's (client r + rooms).
        let speaker = if i == seats[i] {
            i + layout.rooms
        } else {
            seats[i]
        };
        let place = janus::client::Place {
            url: shared.ws_url.clone(),
            room: janus_room(seats[i]),
            name: format!("c{i}"),
            top_layer_of: (role.video_layers_bps.len() > 1).then(|| format!("c{speaker}")),
        };
        let target = common.target;
        let (shared, role) = (shared.clone(), role.clone());
        let at = start + interval * i as u32;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            match target {
                Target::Sfu => client::run(shared, token, role).await,
                Target::Janus => janus::client::run(shared, place, role).await,
            }
        }));
    }
    // The join phase's end is read while the run goes on.
    let phase = async {
        match phase_start {
            Some(p) => {
                let settled = &shared.joins_settled;
                let cluster = servers.cluster().context("a cluster")?;
                p.finish(cluster, settled, roles.len(), shared.until)
                    .await
                    .map(Some)
            }
            None => Ok(None),
        }
    };
    let (phase, window) = tokio::join!(phase, measure(servers, &shared, common, &key, name));
    let (phase, window) = (phase?, window?);
    let mut stats = Vec::new();
    for t in tasks {
        stats.push(t.await?);
    }
    let (before, after) = (&window.before[..], &window.after[..]);
    let section = phase.and_then(|phase| {
        let cluster = servers.cluster()?;
        Some(cluster::section(
            cluster,
            &stats,
            &seats,
            (before, after),
            &phase,
        ))
    });
    let mut report = Report::new(
        name,
        &roles,
        stats,
        Sample::sum(before).context("no server sampled")?,
        Sample::sum(after).context("no server sampled")?,
        window.generator_cpu_s,
        common,
        video_layers_bps,
    );
    if layout.rooms > 1 {
        report.add_section(Section {
            key: "rooms",
            lines: vec![format!(
                "rooms            {} of {} clients each",
                layout.rooms, layout.per_room
            )],
            json: json!({"rooms": layout.rooms, "per_room": layout.per_room}),
            problems: Vec::new(),
        });
    }
    if let Some(section) = section {
        report.add_section(section);
    }
    if common.offer_flood > 0 {
        report.add_flood(&window.floods);
    }
    Ok(report)
}

/// What the measured window saw.
struct Window {
    /// Every server at its start and at its end.
    before: Vec<Sample>,
    after: Vec<Sample>,
    /// The generator's CPU seconds over it.
    generator_cpu_s: f64,
    /// What the offer flood's participants did.
    floods: Vec<FloodStats>,
}

/// The measured window: waits for it, starts the offer flood if any, and samples every
/// server at both ends and the generator's CPU over it.
async fn measure(
    servers: &Servers,
    shared: &Shared,
    common: &Common,
    key: &TokenKey,
    name: &str,
) -> anyhow::Result<Window> {
    tokio::time::sleep_until(shared.measure_from.into()).await;
    let mut floods = Vec::new();
    for i in 0..common.offer_flood {
        let mut claims = TokenKey::claims(
            &format!("bench-{name}-flood"),
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
    let before = servers.sample().await?;
    let gen_before = server::self_cpu_seconds();
    tokio::time::sleep_until(shared.until.into()).await;
    let after = servers.sample().await?;
    let gen_after = server::self_cpu_seconds();
    let mut flooded = Vec::new();
    for f in floods {
        flooded.push(f.await?);
    }
    Ok(Window {
        before,
        after,
        generator_cpu_s: gen_after - gen_before,
        floods: flooded,
    })
}

/// Janus's number for room `r` of a run.
fn janus_room(r: usize) -> u64 {
    1000 + r as u64
}
