//! The `sfu` binary: signaling and media in one process, with embedded defaults.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use protocol::{Grants, Role};
use sfu::driver::{MediaConfig, Plane};
use sfu::metrics::{Metrics, TurnMetrics};
use sfu_core::shard::ShardConfig;
use signaling::TokenKey;
use tracing::{info, warn};

/// A selective forwarding unit for end-to-end encrypted voice, video and screen share.
///
/// With no subcommand it serves: signaling, the demo page and metrics over HTTP, media over
/// UDP. Every option can also be set with the environment variable shown.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Print a join token signed with the server's secret.
    Token(TokenArgs),
    /// Run only the TURN relay (RFC 8656), for hosts that relay and carry no calls.
    Turn(TurnArgs),
}

#[derive(Args, Debug)]
struct TurnArgs {
    /// Address clients reach over UDP and TCP (repeatable).
    #[arg(
        long,
        env = "SFU_TURN_LISTEN",
        value_delimiter = ',',
        default_value = "0.0.0.0:3478"
    )]
    listen: Vec<SocketAddr>,
    /// Address for TURN over TLS (443 where only TLS gets through); needs --cert and --key.
    #[arg(long, env = "SFU_TURN_TLS_LISTEN", requires_all = ["cert", "key"])]
    tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS.
    #[arg(long, env = "SFU_TURN_CERT")]
    cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "SFU_TURN_KEY")]
    key: Option<PathBuf>,
    /// Realm of the long-term credentials.
    #[arg(long, env = "SFU_TURN_REALM", default_value = "sfu")]
    realm: String,
    /// A static user, as NAME:PASSWORD (repeatable).
    #[arg(
        long = "user",
        env = "SFU_TURN_USERS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    users: Vec<String>,
    /// A TURN REST API shared secret (coturn's use-auth-secret; repeatable, for rotation).
    #[arg(
        long = "auth-secret",
        env = "SFU_TURN_AUTH_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    auth_secrets: Vec<String>,
    /// Peers the relay may send to although the default policy denies them (repeatable
    /// CIDR): the SFU's own media addresses, or loopback in tests.
    #[arg(
        long = "allow-peer",
        env = "SFU_TURN_ALLOW_PEERS",
        value_delimiter = ','
    )]
    allow_peers: Vec<turn::policy::Cidr>,
    /// Public peers the relay must not send to (repeatable CIDR).
    #[arg(long = "deny-peer", env = "SFU_TURN_DENY_PEERS", value_delimiter = ',')]
    deny_peers: Vec<turn::policy::Cidr>,
    /// Relay ports, FIRST-LAST: one socket each, shared by many allocations.
    #[arg(long, env = "SFU_TURN_RELAY_PORTS", default_value = "49152-49251", value_parser = parse_ports)]
    relay_ports: RangeInclusive<u16>,
    /// IP given to peers in relayed addresses (repeatable: one IPv4 and one IPv6 serve
    /// both families). Default: this machine's first non-loopback IPv4 address (127.0.0.1
    /// if it has none).
    #[arg(long, env = "SFU_TURN_RELAY_IP", value_delimiter = ',')]
    relay_ip: Vec<IpAddr>,
    /// IP the relay sockets bind to.
    #[arg(long, env = "SFU_TURN_RELAY_BIND", default_value = "0.0.0.0")]
    relay_bind: IpAddr,
    /// Most allocations in all.
    #[arg(long, env = "SFU_TURN_MAX_ALLOCATIONS", default_value_t = 100_000)]
    max_allocations: usize,
    /// Most allocations per username.
    #[arg(long, env = "SFU_TURN_MAX_ALLOCATIONS_PER_USER", default_value_t = 100)]
    max_allocations_per_user: usize,
    /// Bytes per second each allocation may relay (0: unlimited).
    #[arg(long, env = "SFU_TURN_MAX_BYTES_PER_SEC", default_value_t = 0)]
    max_bytes_per_sec: u64,
    /// Address for HTTP `/metrics` (the `sfu_turn_*` counters) and `/healthz`; none by
    /// default.
    #[arg(long, env = "SFU_TURN_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "SFU_LOG", default_value = "info")]
    log: String,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address for HTTP: signaling WebSocket (/ws), demo page (/), /metrics, /healthz.
    #[arg(long, env = "SFU_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    http_listen: SocketAddr,

    /// UDP port range for media, as FIRST-LAST. One socket per port, many participants each.
    #[arg(long, env = "SFU_UDP_PORTS", default_value = "16384-16584", value_parser = parse_ports)]
    udp_ports: RangeInclusive<u16>,

    /// IP the media sockets (UDP and ICE-TCP) bind to.
    #[arg(long, env = "SFU_UDP_BIND", default_value = "0.0.0.0")]
    udp_bind: IpAddr,

    /// TCP port for ICE-TCP media (RFC 6544), for clients whose network drops UDP; 443 where
    /// only that port gets through. One listener, many participants.
    #[arg(long, env = "SFU_TCP_PORT", default_value_t = 16384)]
    tcp_port: u16,

    /// Turn ICE-TCP off (clients without UDP then need TURN over TCP or TLS).
    #[arg(long, env = "SFU_NO_ICE_TCP")]
    no_ice_tcp: bool,

    /// IP put in ICE candidates (repeatable, or comma-separated). Default: every non-loopback
    /// IPv4 address of this machine, or 127.0.0.1 if it has none. Behind NAT: the public IP.
    #[arg(long = "advertise-ip", env = "SFU_ADVERTISE_IP", value_delimiter = ',')]
    advertise_ip: Vec<IpAddr>,

    /// Secret that signs join tokens (HS256). Without it the server runs in dev mode: a random
    /// secret, and /dev/token gives anyone a token.
    #[arg(long, env = "SFU_SECRET", hide_env_values = true)]
    secret: Option<String>,

    /// Media threads (shards); each owns some of the ports and the rooms placed on it.
    #[arg(long, env = "SFU_SHARDS", default_value_t = default_shards())]
    shards: usize,

    /// Seconds without media before a participant is removed.
    #[arg(long, env = "SFU_PARTICIPANT_TIMEOUT", default_value_t = 20)]
    participant_timeout: u64,

    /// Most participants in one room (presenters count among them, viewers apart).
    #[arg(long, env = "SFU_ROOM_CAPACITY", default_value_t = 70)]
    room_capacity: usize,

    /// Most viewers (a broadcast's receive-only audience, role `viewer`) in one room.
    #[arg(long, env = "SFU_VIEWER_CAPACITY", default_value_t = 500)]
    viewer_capacity: usize,

    /// In rooms of more participants than this, each receives only the loudest
    /// microphones (and those it pinned), and other cameras than the speaker's as
    /// thumbnails.
    #[arg(long, env = "SFU_LOUDEST_THRESHOLD", default_value_t = 8)]
    loudest_threshold: usize,

    /// How many of the loudest microphones each participant of a large room receives.
    #[arg(long, env = "SFU_LOUDEST_N", default_value_t = 3)]
    loudest_n: usize,

    /// Most cameras a participant receives (besides pinned ones), by speaking order.
    #[arg(long, env = "SFU_LAST_N", default_value_t = 25)]
    last_n: usize,

    /// Log filter, in tracing's EnvFilter syntax (for example `info,sfu=debug`).
    #[arg(long, env = "SFU_LOG", default_value = "info")]
    log: String,

    /// Run the embedded TURN relay, for clients that cannot reach the media ports.
    #[arg(long, env = "SFU_TURN", default_value_t = true, action = clap::ArgAction::Set)]
    turn: bool,
    /// Addresses of the embedded TURN relay, UDP and TCP (repeatable).
    #[arg(
        long,
        env = "SFU_TURN_LISTEN",
        value_delimiter = ',',
        default_value = "0.0.0.0:3478"
    )]
    turn_listen: Vec<SocketAddr>,
    /// Address for TURN over TLS (443 where only TLS gets through); needs --turn-cert,
    /// --turn-key and --turn-tls-host.
    #[arg(long, env = "SFU_TURN_TLS_LISTEN", requires_all = ["turn_cert", "turn_key", "turn_tls_host"])]
    turn_tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TURN over TLS.
    #[arg(long, env = "SFU_TURN_CERT")]
    turn_cert: Option<PathBuf>,
    /// PEM private key for TURN over TLS.
    #[arg(long, env = "SFU_TURN_KEY")]
    turn_key: Option<PathBuf>,
    /// Host name in the turns: URL handed to clients (the certificate's name).
    #[arg(long, env = "SFU_TURN_TLS_HOST")]
    turn_tls_host: Option<String>,
    /// Relay ports of the embedded relay, FIRST-LAST.
    #[arg(long, env = "SFU_TURN_RELAY_PORTS", default_value = "49152-49251", value_parser = parse_ports)]
    turn_relay_ports: RangeInclusive<u16>,
    /// Secret for the TURN credentials handed to clients (TURN REST API). Default: random
    /// at each start; set it when a standalone `sfu turn` shares it.
    #[arg(long, env = "SFU_TURN_AUTH_SECRET", hide_env_values = true)]
    turn_auth_secret: Option<String>,
    /// Seconds the TURN credentials handed to a client stay valid (a call must end first).
    #[arg(long, env = "SFU_TURN_CREDENTIAL_TTL", default_value_t = 86_400)]
    turn_credential_ttl: u64,
    /// TURN URLs handed to clients instead of the ones derived from the options above
    /// (repeatable): for a relay elsewhere, or a public name.
    #[arg(long, env = "SFU_TURN_URL", value_delimiter = ',')]
    turn_url: Vec<String>,
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// Room the token admits to.
    #[arg(long)]
    room: String,
    /// Identity of the user.
    #[arg(long)]
    identity: String,
    /// Display name (default: the identity).
    #[arg(long)]
    name: Option<String>,
    /// Lifetime: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// Grants, comma-separated, out of publish_audio, publish_video, publish_screen,
    /// subscribe. Default: all of them.
    #[arg(long, value_delimiter = ',')]
    grants: Option<Vec<String>>,
    /// Offer this client only ICE-TCP and TURN over TCP/TLS (the "TCP calling" policy).
    #[arg(long)]
    force_tcp: bool,
    /// The participant's role: participant, presenter, or viewer (receive-only).
    #[arg(long, default_value = "participant", value_parser = parse_role)]
    role: Role,
    /// The server's secret.
    #[arg(long, env = "SFU_SECRET", hide_env_values = true)]
    secret: String,
}

fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn parse_ports(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|e| format!("bad first port: {e}"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|e| format!("bad last port: {e}"))?;
    if a == 0 || a > b {
        return Err(format!("{a}-{b} is not a port range"));
    }
    Ok(a..=b)
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "participant" => Ok(Role::Participant),
        "presenter" => Ok(Role::Presenter),
        "viewer" => Ok(Role::Viewer),
        _ => Err(format!(
            "{s:?} is not a role: participant, presenter or viewer"
        )),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(scale)))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(args)) => token(args),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Turn(args)) => relay(args),
        None => serve(cli.serve),
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let mut claims = TokenKey::claims(&args.room, &args.identity, args.name.as_deref(), args.ttl);
    if let Some(list) = args.grants {
        let mut grants = Grants {
            publish_audio: false,
            publish_video: false,
            publish_screen: false,
            subscribe: false,
            force_tcp: false,
            role: Role::Participant,
        };
        for g in list.iter().map(|g| g.trim()).filter(|g| !g.is_empty()) {
            match g {
                "publish_audio" => grants.publish_audio = true,
                "publish_video" => grants.publish_video = true,
                "publish_screen" => grants.publish_screen = true,
                "subscribe" => grants.subscribe = true,
                other => bail!("unknown grant {other:?}"),
            }
        }
        claims.grants = grants;
    }
    claims.grants.force_tcp = args.force_tcp;
    claims.grants.role = args.role;
    let token = TokenKey::new(args.secret.as_bytes()).issue(&claims)?;
    println!("{token}");
    Ok(())
}

fn init_log(filter: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("bad --log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    Ok(())
}

/// The TLS listener, when an address is given (clap makes sure certificate and key are).
fn tls_listener(
    listen: Option<SocketAddr>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Option<turn::driver::TlsListener>> {
    let (Some(listen), Some(cert), Some(key)) = (listen, cert, key) else {
        return Ok(None);
    };
    Ok(Some(turn::driver::TlsListener {
        listen,
        config: turn::driver::tls_config(cert, key)?,
    }))
}

/// The standalone relay: runs until SIGINT or SIGTERM.
fn relay(args: TurnArgs) -> anyhow::Result<()> {
    init_log(&args.log)?;
    let mut credentials = turn::auth::Credentials::new(args.realm.clone());
    for user in &args.users {
        let Some((name, password)) = user.split_once(':') else {
            bail!("--user takes NAME:PASSWORD, got {user:?}");
        };
        credentials.add_user(name, password);
    }
    for secret in &args.auth_secrets {
        credentials.add_secret(secret.as_bytes());
    }
    if args.users.is_empty() && args.auth_secrets.is_empty() {
        bail!("no --user and no --auth-secret: nobody could allocate");
    }
    let policy = turn::policy::PeerPolicy::new(args.allow_peers.clone(), args.deny_peers.clone());
    let mut config = turn::server::Config::new(credentials, policy, Vec::new());
    config.max_allocations = args.max_allocations;
    config.max_allocations_per_user = args.max_allocations_per_user;
    config.max_bytes_per_sec = (args.max_bytes_per_sec > 0).then_some(args.max_bytes_per_sec);
    let relay_ips = if args.relay_ip.is_empty() {
        default_advertise().into_iter().take(1).collect()
    } else {
        args.relay_ip.clone()
    };
    let handle = turn::driver::start(
        turn::driver::Listeners {
            listen: args.listen.clone(),
            relay_bind: args.relay_bind,
            relay_ips,
            relay_ports: args.relay_ports.clone(),
            tls: tls_listener(args.tls_listen, args.cert.as_deref(), args.key.as_deref())?,
        },
        config,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let Some(addr) = args.metrics_listen else {
        runtime.block_on(shutdown_signal());
        let c = handle.take_counters();
        info!(
            "relayed {} packets ({} bytes), {} allocations in all",
            c.relayed_packets, c.relayed_bytes, c.allocations_total
        );
        return Ok(());
    };
    let registry = prometheus::Registry::new();
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let metrics = TurnMetrics::new(&registry)?;
    runtime.block_on(async move {
        tokio::spawn(flush_turn_metrics(metrics, handle));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        info!("metrics on http://{}/metrics", listener.local_addr()?);
        signaling::serve(
            listener,
            signaling::metrics_router(registry),
            shutdown_signal(),
        )
        .await?;
        anyhow::Ok(())
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_log(&args.log)?;

    let (tokens, dev_mode) = match &args.secret {
        Some(secret) if !secret.is_empty() => (TokenKey::new(secret.as_bytes()), false),
        _ => {
            warn!(
                "dev mode: no SFU_SECRET set, so tokens are signed with a random secret and \
                 /dev/token gives one to anyone; set SFU_SECRET in production"
            );
            (TokenKey::random(), true)
        }
    };
    let advertise = if args.advertise_ip.is_empty() {
        default_advertise()
    } else {
        args.advertise_ip.clone()
    };
    info!("media candidates advertise {advertise:?}");

    let (ice_servers, relay) = if args.turn {
        let (source, handle) = embedded_relay(&args, &advertise)?;
        (Some(source), Some(handle))
    } else {
        (None, None)
    };

    let registry = prometheus::Registry::new();
    let turn_metrics = match &relay {
        Some(_) => Some(TurnMetrics::new(&registry)?),
        None => None,
    };
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let metrics = Metrics::new(&registry)?;
    let plane = Plane::start(
        MediaConfig {
            bind_ip: args.udp_bind,
            ports: args.udp_ports.clone(),
            advertise,
            tcp_port: (!args.no_ice_tcp).then_some(args.tcp_port),
            shards: args.shards,
            shard: ShardConfig {
                participant_timeout: Duration::from_secs(args.participant_timeout.max(1)),
                room_capacity: args.room_capacity.max(1),
                viewer_capacity: args.viewer_capacity,
                loudest_threshold: args.loudest_threshold,
                loudest_n: args.loudest_n,
                last_n: args.last_n,
                ..ShardConfig::default()
            },
        },
        metrics,
    )?;
    let router = signaling::router(
        Arc::new(plane),
        signaling::Config {
            tokens,
            dev_mode,
            ice_servers,
        },
        registry,
    )?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if let (Some(metrics), Some(relay)) = (turn_metrics, relay) {
            tokio::spawn(flush_turn_metrics(metrics, relay));
        }
        let listener = tokio::net::TcpListener::bind(args.http_listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.http_listen))?;
        info!("signaling on http://{}", listener.local_addr()?);
        signaling::serve(listener, router, shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

/// Moves the relay's counters into its metrics once a second.
async fn flush_turn_metrics(metrics: TurnMetrics, relay: turn::driver::Handle) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        metrics.flush(&relay);
    }
}

/// Starts the embedded TURN relay; returns what mints each client's TURN URLs and
/// credentials (TURN REST API, expiring).
fn embedded_relay(
    args: &ServeArgs,
    advertise: &[IpAddr],
) -> anyhow::Result<(signaling::IceServerSource, turn::driver::Handle)> {
    let secret = match &args.turn_auth_secret {
        Some(s) if !s.is_empty() => s.clone().into_bytes(),
        _ => {
            let mut s = [0u8; 32];
            rand::fill(&mut s);
            s.to_vec()
        }
    };
    let mut credentials = turn::auth::Credentials::new("sfu");
    credentials.add_secret(&secret);
    // The relay exists to reach this server's media ports: let it.
    let allow = advertise
        .iter()
        .map(|ip| turn::policy::Cidr::host(*ip))
        .collect();
    let policy = turn::policy::PeerPolicy::new(allow, Vec::new());
    let relay_ip = advertise
        .first()
        .copied()
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let handle = turn::driver::start(
        turn::driver::Listeners {
            listen: args.turn_listen.clone(),
            relay_bind: args.udp_bind,
            relay_ips: vec![relay_ip],
            relay_ports: args.turn_relay_ports.clone(),
            tls: tls_listener(
                args.turn_tls_listen,
                args.turn_cert.as_deref(),
                args.turn_key.as_deref(),
            )?,
        },
        turn::server::Config::new(credentials, policy, Vec::new()),
    )?;
    let urls = if args.turn_url.is_empty() {
        let mut urls = Vec::new();
        if let Some(listen) = args.turn_listen.first() {
            let port = listen.port();
            let host = match relay_ip {
                IpAddr::V6(ip) => format!("[{ip}]"),
                IpAddr::V4(ip) => ip.to_string(),
            };
            urls.push(format!("turn:{host}:{port}?transport=udp"));
            urls.push(format!("turn:{host}:{port}?transport=tcp"));
        }
        if let (Some(tls), Some(host)) = (args.turn_tls_listen, &args.turn_tls_host) {
            urls.push(format!("turns:{host}:{}?transport=tcp", tls.port()));
        }
        urls
    } else {
        args.turn_url.clone()
    };
    info!("TURN URLs for clients: {urls:?}");
    let ttl = Duration::from_secs(args.turn_credential_ttl.max(60));
    let source: signaling::IceServerSource = Arc::new(move |identity: &str| {
        let (username, credential) =
            turn::auth::rest_credentials(&secret, identity, signaling::token::unix_now(), ttl);
        vec![protocol::IceServer {
            urls: urls.clone(),
            username: Some(username),
            credential: Some(credential),
        }]
    });
    Ok((source, handle))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (systemd, Kubernetes).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        _ = term.recv() => info!("SIGTERM: shutting down"),
    }
}

/// Every up, non-loopback IPv4 address, or 127.0.0.1 when there is none.
fn default_advertise() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback() && i.ip().is_ipv4())
        .map(|i| i.ip())
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        ips.push(IpAddr::from([127, 0, 0, 1]));
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_port_ranges() {
        assert_eq!(parse_ports("16384-16584"), Ok(16384..=16584));
        assert_eq!(parse_ports("5000"), Ok(5000..=5000));
        assert!(parse_ports("9-1").is_err());
        assert!(parse_ports("0-10").is_err());
        assert!(parse_ports("a-b").is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
