//! The command line of the `sfu` binary: its commands and their flags, each with its
//! environment variable, and the parsers of flag values. `sfu admin`'s are in
//! `cli/admin.rs`.
//!
//! The settings the server's embedded relay shares with `sfu turn` (where the relay
//! listens, its relay ports) and the log filter are declared once, in structs both commands
//! flatten; the server gives the relay's flags its `--turn-` names and wording
//! ([`embedded_turn`]). Their environment variables, defaults and types are one.
//!
//! Structs flattened into a command have `//` comments, not doc comments: clap would take
//! a doc comment for the command's description.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, Args, Parser, Subcommand};
use protocol::Role;

mod admin;

pub use admin::*;

/// A selective forwarding unit for end-to-end encrypted voice, video and screen share.
///
/// With no subcommand it serves: signaling, the demo page and metrics over HTTP, media over
/// UDP. Every option can also be set with the environment variable shown.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Made once, at start: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Print a join token signed with the server's secret.
    Token(TokenArgs),
    /// Run only the TURN relay (RFC 8656), for hosts that relay and carry no calls.
    Turn(TurnArgs),
    /// The admin API's side of the command line.
    #[command(subcommand)]
    Admin(AdminCommand),
}

// Where a TURN relay listens: shared by `sfu turn` and the embedded relay.
#[derive(Args, Debug)]
pub struct TurnListen {
    /// Address clients reach over UDP and TCP (repeatable).
    #[arg(
        long,
        env = "SFU_TURN_LISTEN",
        value_delimiter = ',',
        default_value = "0.0.0.0:3478"
    )]
    pub listen: Vec<SocketAddr>,
    /// Address for TURN over TLS (443 where only TLS gets through); needs --cert and --key.
    #[arg(long, env = "SFU_TURN_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS.
    #[arg(long, env = "SFU_TURN_CERT")]
    pub cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "SFU_TURN_KEY")]
    pub key: Option<PathBuf>,
}

// The relay ports of a TURN relay: shared by `sfu turn` and the embedded relay.
#[derive(Args, Debug)]
pub struct TurnRelayPorts {
    /// Relay ports, FIRST-LAST: one socket each, shared by many allocations.
    #[arg(long, env = "SFU_TURN_RELAY_PORTS", default_value = "49152-49251", value_parser = parse_ports)]
    pub relay_ports: RangeInclusive<u16>,
}

// The log filter: shared by the server and `sfu turn`.
#[derive(Args, Debug)]
pub struct Log {
    /// Log filter, in tracing's EnvFilter syntax (for example `info,sfu=debug`).
    #[arg(long, env = "SFU_LOG", default_value = "info")]
    pub log: String,
}

/// The names and wording the server gives the relay settings it shares with `sfu turn`.
/// (Help text set here has no final period: clap drops it from doc comments.)
fn embedded_turn(arg: Arg) -> Arg {
    match arg.get_id().as_str() {
        "listen" => arg
            .long("turn-listen")
            .value_name("TURN_LISTEN")
            .default_value(None::<&str>)
            .help(
                "Addresses of the embedded TURN relay, UDP and TCP (repeatable) [default: \
                 0.0.0.0:3478; 127.0.0.1:3478 in dev mode]",
            ),
        "tls_listen" => arg
            .long("turn-tls-listen")
            .value_name("TURN_TLS_LISTEN")
            .help(
                "Address for TURN over TLS (443 where only TLS gets through); needs \
                 --turn-cert, --turn-key and --turn-tls-host",
            ),
        "cert" => arg
            .long("turn-cert")
            .value_name("TURN_CERT")
            .help("PEM certificate chain for TURN over TLS"),
        "key" => arg
            .long("turn-key")
            .value_name("TURN_KEY")
            .help("PEM private key for TURN over TLS"),
        "relay_ports" => arg
            .long("turn-relay-ports")
            .value_name("TURN_RELAY_PORTS")
            .help("Relay ports of the embedded relay, FIRST-LAST"),
        _ => arg,
    }
}

#[derive(Args, Debug)]
#[command(mut_arg("log", |a| a.help("Log filter, in tracing's EnvFilter syntax")))]
pub struct TurnArgs {
    /// TOML config file: its keys are these flags' long names with `_` for `-`
    /// (`relay_ports = "49152-49251"`); the environment and flags override it.
    #[arg(long, env = "SFU_TURN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub listen: TurnListen,
    /// Realm of the long-term credentials.
    #[arg(long, env = "SFU_TURN_REALM", default_value = "sfu")]
    pub realm: String,
    /// A static user, as NAME:PASSWORD (repeatable).
    #[arg(
        long = "user",
        env = "SFU_TURN_USERS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub users: Vec<String>,
    /// A TURN REST API shared secret (coturn's use-auth-secret; repeatable, for rotation).
    #[arg(
        long = "auth-secret",
        env = "SFU_TURN_AUTH_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub auth_secrets: Vec<String>,
    /// A file holding a shared secret, its first line (repeatable): kept off the command
    /// line, which every user of the machine can read.
    #[arg(
        long = "auth-secret-file",
        env = "SFU_TURN_AUTH_SECRET_FILES",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub auth_secret_files: Vec<PathBuf>,
    /// Peers the relay may send to although the default policy denies them (repeatable
    /// CIDR): the SFU's own media addresses, or loopback in tests.
    #[arg(
        long = "allow-peer",
        env = "SFU_TURN_ALLOW_PEERS",
        value_delimiter = ','
    )]
    pub allow_peers: Vec<turn::policy::Cidr>,
    /// Public peers the relay must not send to (repeatable CIDR).
    #[arg(long = "deny-peer", env = "SFU_TURN_DENY_PEERS", value_delimiter = ',')]
    pub deny_peers: Vec<turn::policy::Cidr>,
    /// Ports of the relay's own addresses (its relay IPs and listening IPs) that peers may
    /// be on, as FIRST-LAST: an SFU's media ports on the same host. None by default: the
    /// relay never sends to itself, whatever --allow-peer says.
    #[arg(long, env = "SFU_TURN_OWN_PEER_PORTS", value_parser = parse_ports)]
    pub own_peer_ports: Option<RangeInclusive<u16>>,
    #[command(flatten)]
    pub relay_ports: TurnRelayPorts,
    /// IP given to peers in relayed addresses (repeatable: one IPv4 and one IPv6 serve
    /// both families). Default: this machine's first non-loopback IPv4 address (127.0.0.1
    /// if it has none).
    #[arg(long, env = "SFU_TURN_RELAY_IP", value_delimiter = ',')]
    pub relay_ip: Vec<IpAddr>,
    /// IP the relay sockets bind to.
    #[arg(long, env = "SFU_TURN_RELAY_BIND", default_value = "0.0.0.0")]
    pub relay_bind: IpAddr,
    /// Most allocations in all.
    #[arg(long, env = "SFU_TURN_MAX_ALLOCATIONS", default_value_t = 100_000)]
    pub max_allocations: usize,
    /// Most allocations per username.
    #[arg(long, env = "SFU_TURN_MAX_ALLOCATIONS_PER_USER", default_value_t = 100)]
    pub max_allocations_per_user: usize,
    /// Bytes per second each allocation may relay (0: unlimited).
    #[arg(long, env = "SFU_TURN_MAX_BYTES_PER_SEC", default_value_t = 0)]
    pub max_bytes_per_sec: u64,
    /// Address for HTTP `/metrics` (the `sfu_turn_*` counters) and `/healthz`; none by
    /// default.
    #[arg(long, env = "SFU_TURN_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub log: Log,
}

#[derive(Args, Debug)]
#[command(mut_args(embedded_turn))]
pub struct ServeArgs {
    /// TOML config file: its keys are these flags' long names with `_` for `-`
    /// (`http_listen = "0.0.0.0:8080"`); the environment and flags override it. A sample
    /// with every key: deploy/sfu.example.toml.
    #[arg(long, env = "SFU_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address for HTTP: signaling WebSocket (/ws), demo page (/), /metrics, /healthz
    /// [default: 0.0.0.0:8080; 127.0.0.1:8080 in dev mode].
    #[arg(long, env = "SFU_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// PEM certificate chain for HTTPS: with --http-key, everything on --http-listen
    /// (signaling, WHIP and WHEP, the demo page, /metrics) is served over TLS, and only so.
    /// Reloaded on SIGHUP and when the files change; calls go on.
    #[arg(long, env = "SFU_HTTP_CERT", value_name = "FILE")]
    pub http_cert: Option<PathBuf>,

    /// PEM private key of --http-cert.
    #[arg(long, env = "SFU_HTTP_KEY", value_name = "FILE")]
    pub http_key: Option<PathBuf>,

    /// UDP port range for media, as FIRST-LAST. One socket per port, many participants each.
    #[arg(long, env = "SFU_UDP_PORTS", default_value = "16384-16584", value_parser = parse_ports)]
    pub udp_ports: RangeInclusive<u16>,

    /// IP the media sockets (UDP and ICE-TCP) bind to [default: 0.0.0.0; 127.0.0.1 in
    /// dev mode].
    #[arg(long, env = "SFU_UDP_BIND")]
    pub udp_bind: Option<IpAddr>,

    /// TCP port for ICE-TCP media (RFC 6544), for clients whose network drops UDP; 443 where
    /// only that port gets through. One listener, many participants.
    #[arg(long, env = "SFU_TCP_PORT", default_value_t = 16384)]
    pub tcp_port: u16,

    /// Turn ICE-TCP off (clients without UDP then need TURN over TCP or TLS).
    #[arg(long, env = "SFU_NO_ICE_TCP")]
    pub no_ice_tcp: bool,

    /// IP put in ICE candidates (repeatable, or comma-separated). Default: every non-loopback
    /// IPv4 address of this machine, or 127.0.0.1 if it has none. Behind NAT: the public IP.
    /// UDP answers leave from the advertised address the client reached.
    #[arg(long = "advertise-ip", env = "SFU_ADVERTISE_IP", value_delimiter = ',')]
    pub advertise_ip: Vec<IpAddr>,

    /// Open signaling WebSockets one client address may hold (0: no limit). Behind a reverse
    /// proxy every client has its address: raise it, or turn it off.
    #[arg(long, env = "SFU_SOCKETS_PER_ADDRESS", default_value_t = 256)]
    pub sockets_per_address: usize,

    /// Joins per second one client address may make, in bursts of five seconds' worth (0:
    /// no limit).
    #[arg(long, env = "SFU_JOINS_PER_ADDRESS", default_value_t = 10.0)]
    pub joins_per_address: f64,

    /// Secret that signs join tokens (HS256). Without it the server runs in dev mode: a random
    /// secret, /dev/token gives anyone a token, and what is not given an address listens
    /// on loopback only.
    #[arg(long, env = "SFU_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// File holding the secret (its first line) instead of --secret: kept off the command
    /// line, which every user of the machine can read.
    #[arg(long, env = "SFU_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,

    /// Secret that signs admin tokens (HS256), apart from --secret: with it the admin
    /// API (`/admin/...`) is on, for tokens of `sfu admin token` and the requests of
    /// `sfu admin rooms` and the like. Without it the API answers 403.
    #[arg(long, env = "SFU_ADMIN_SECRET", hide_env_values = true)]
    pub admin_secret: Option<String>,

    /// File holding --admin-secret (its first line).
    #[arg(long, env = "SFU_ADMIN_SECRET_FILE", value_name = "FILE")]
    pub admin_secret_file: Option<PathBuf>,

    /// This server's name in the admin API, call records and webhooks [default: the
    /// host name].
    #[arg(long, env = "SFU_NODE", value_name = "NAME")]
    pub node: Option<String>,

    /// The Redis of the cluster this server is one node of (docs/cluster.md):
    /// `redis://[:PASSWORD@]HOST:6379/DB`, or `redis+sentinel://[:PASSWORD@]HOST:26379,HOST:26379/NAME`
    /// for the master Sentinels name. Nodes register there, a room lives on the node that
    /// claimed it, and a join that reaches another node is redirected. Without it the
    /// server runs alone.
    #[arg(long, env = "SFU_REDIS", value_name = "URL", hide_env_values = true)]
    pub redis: Option<String>,

    /// This node's region, with --redis: new rooms go to a node of the region of the node
    /// the first join reached, while one there takes them.
    #[arg(long, env = "SFU_REGION", value_name = "NAME")]
    pub region: Option<String>,

    /// The base URL clients reach this node's signaling at, with --redis: where joins for
    /// its rooms are redirected (`https://sfu-2.example.com`) [default: http(s)://, the
    /// first advertised address and the HTTP port].
    #[arg(long, env = "SFU_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Where webhooks POST notices of calls (room started and finished, participants
    /// joined and left, tracks published and unpublished, policies changed): http or
    /// https URLs, repeatable (each gets every notice). Needs --webhook-secret(-file).
    #[arg(
        long,
        env = "SFU_WEBHOOK_URL",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub webhook_url: Vec<String>,

    /// The key webhooks are signed with (Standard Webhooks: `whsec_` then base64 of 24
    /// to 64 bytes; `sfu admin webhook-secret` makes one).
    #[arg(long, env = "SFU_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// File holding --webhook-secret (its first line).
    #[arg(long, env = "SFU_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// Finished calls whose records the admin API keeps (`GET /admin/records`), the
    /// newest; older ones are forgotten.
    #[arg(long, env = "SFU_CALL_RECORDS", default_value_t = 1000)]
    pub call_records: usize,

    /// Media threads (shards); each owns some of the ports and the rooms placed on it.
    #[arg(long, env = "SFU_SHARDS", default_value_t = default_shards())]
    pub shards: usize,

    /// Seconds without media before a participant is removed.
    #[arg(long, env = "SFU_PARTICIPANT_TIMEOUT", default_value_t = 20)]
    pub participant_timeout: u64,

    /// Seconds a drain (SIGTERM) lets the calls in progress go on before it ends them,
    /// telling their participants to join again. Give systemd's TimeoutStopSec or
    /// Kubernetes' terminationGracePeriodSeconds a little more.
    #[arg(long, env = "SFU_DRAIN_TIMEOUT", default_value_t = 3600)]
    pub drain_timeout: u64,

    /// Most participants on this server, in all its rooms (viewers and WHIP/WHEP
    /// sessions count); the next join gets `server_busy` (0: no limit).
    #[arg(long, env = "SFU_MAX_PARTICIPANTS", default_value_t = 0)]
    pub max_participants: usize,

    /// Most tracks published on this server; past it joins get `server_busy` (0: no
    /// limit). Calls in progress may still publish.
    #[arg(long, env = "SFU_MAX_TRACKS", default_value_t = 0)]
    pub max_tracks: usize,

    /// Most packets this server sends a second; past it joins get `server_busy` (0: no
    /// limit).
    #[arg(long, env = "SFU_MAX_EGRESS_PPS", default_value_t = 0)]
    pub max_egress_pps: u64,

    /// Most share of a media thread's time spent working, from 0 to 1 (0: no limit): a
    /// join to a room on a shard busier than that over the last second gets
    /// `server_busy`, and `/readyz` answers 503 once the shards are on average.
    #[arg(long, env = "SFU_MAX_LOAD", default_value_t = 0.9, value_parser = parse_share)]
    pub max_load: f64,

    /// Most participants in one room (presenters count among them, viewers apart).
    #[arg(long, env = "SFU_ROOM_CAPACITY", default_value_t = 70)]
    pub room_capacity: usize,

    /// Most viewers (a broadcast's receive-only audience, role `viewer`) in one room.
    #[arg(long, env = "SFU_VIEWER_CAPACITY", default_value_t = 500)]
    pub viewer_capacity: usize,

    /// In rooms of more participants than this, each receives only the loudest
    /// microphones (and those it pinned), and other cameras than the speaker's as
    /// thumbnails.
    #[arg(long, env = "SFU_LOUDEST_THRESHOLD", default_value_t = 8)]
    pub loudest_threshold: usize,

    /// How many of the loudest microphones each participant of a large room receives.
    #[arg(long, env = "SFU_LOUDEST_N", default_value_t = 3)]
    pub loudest_n: usize,

    /// Most cameras a participant receives (besides pinned ones), by speaking order.
    #[arg(long, env = "SFU_LAST_N", default_value_t = 25)]
    pub last_n: usize,

    #[command(flatten)]
    pub log: Log,

    /// Test only: append one JSON line per RTP packet received from a publisher, its
    /// payload included, to FILE (at most 200 000 lines). Hidden: it records media.
    #[arg(long, hide = true, value_name = "FILE")]
    pub tap: Option<PathBuf>,
    /// Test only, with `--tap`: record only the rooms whose name starts with PREFIX (a
    /// test suite's), so that one tap serves a whole run without filling up.
    #[arg(long, hide = true, value_name = "PREFIX", default_value = "")]
    pub tap_rooms: String,

    /// Run the embedded TURN relay, for clients that cannot reach the media ports.
    #[arg(long, env = "SFU_TURN", default_value_t = true, action = clap::ArgAction::Set)]
    pub turn: bool,
    #[command(flatten)]
    pub turn_listen: TurnListen,
    /// Host name in the turns: URL handed to clients (the certificate's name).
    #[arg(long, env = "SFU_TURN_TLS_HOST")]
    pub turn_tls_host: Option<String>,
    #[command(flatten)]
    pub turn_relay_ports: TurnRelayPorts,
    /// Secret for the TURN credentials handed to clients (TURN REST API). Default: random
    /// at each start; set it when a standalone `sfu turn` shares it.
    #[arg(long, env = "SFU_TURN_AUTH_SECRET", hide_env_values = true)]
    pub turn_auth_secret: Option<String>,
    /// File holding --turn-auth-secret (its first line).
    #[arg(long, env = "SFU_TURN_AUTH_SECRET_FILE", value_name = "FILE")]
    pub turn_auth_secret_file: Option<PathBuf>,
    /// Seconds the TURN credentials handed to a client stay valid (a call must end first).
    #[arg(long, env = "SFU_TURN_CREDENTIAL_TTL", default_value_t = 86_400)]
    pub turn_credential_ttl: u64,
    /// TURN URLs handed to clients instead of the ones derived from the options above
    /// (repeatable): for a relay elsewhere, or a public name.
    #[arg(long, env = "SFU_TURN_URL", value_delimiter = ',')]
    pub turn_url: Vec<String>,
}

impl TurnListen {
    /// TLS needs a certificate and its key. Checked here, not with clap's `requires`,
    /// which takes what a config file gives for absent (clap sees its values as
    /// defaults). `names` are the flags' names in the command (listen, cert, key).
    pub fn check_tls(&self, names: [&str; 3]) -> Result<(), String> {
        let [listen, cert, key] = names;
        if self.tls_listen.is_some() && (self.cert.is_none() || self.key.is_none()) {
            return Err(format!("--{listen} needs --{cert} and --{key}"));
        }
        Ok(())
    }
}

impl ServeArgs {
    /// The settings that need others (HTTPS's pair, [`TurnListen::check_tls`]), whatever
    /// their source.
    pub fn check(&self) -> Result<(), String> {
        match (&self.http_cert, &self.http_key) {
            (Some(_), None) => return Err("--http-cert needs --http-key".into()),
            (None, Some(_)) => return Err("--http-key needs --http-cert".into()),
            _ => {}
        }
        let names = ["turn-tls-listen", "turn-cert", "turn-key"];
        self.turn_listen.check_tls(names)?;
        if self.turn_listen.tls_listen.is_some() && self.turn_tls_host.is_none() {
            return Err("--turn-tls-listen needs --turn-tls-host".into());
        }
        if !self.webhook_url.is_empty()
            && self.webhook_secret.is_none()
            && self.webhook_secret_file.is_none()
        {
            return Err("--webhook-url needs --webhook-secret-file (or --webhook-secret)".into());
        }
        if self.redis.is_none() && (self.region.is_some() || self.public_url.is_some()) {
            return Err("--region and --public-url are a cluster node's: they need --redis".into());
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!("--public-url {url:?}: an http:// or https:// URL"));
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Room the token admits to.
    #[arg(long)]
    pub room: String,
    /// Identity of the user.
    #[arg(long)]
    pub identity: String,
    /// Display name (default: the identity).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Grants, comma-separated, out of publish_audio, publish_video, publish_screen,
    /// subscribe, plaintext (may send frames unencrypted, for WHIP ingest). Default: all
    /// of them but plaintext.
    #[arg(long, value_delimiter = ',')]
    pub grants: Option<Vec<String>>,
    /// Offer this client only ICE-TCP and TURN over TCP/TLS (the "TCP calling" policy).
    #[arg(long)]
    pub force_tcp: bool,
    /// The participant's role: participant, presenter, or viewer (receive-only).
    #[arg(long, default_value = "participant", value_parser = parse_role)]
    pub role: Role,
    /// The user's group, whose calling policy (the server's `[groups.NAME]`) narrows
    /// the grants (default: the default group).
    #[arg(long)]
    pub group: Option<String>,
    /// The server's secret.
    #[arg(long, env = "SFU_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// File holding the server's secret (its first line).
    #[arg(long, env = "SFU_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
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

/// A share from 0 to 1 (`--max-load`).
fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a share from 0 to 1")),
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

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
    fn parses_shares() {
        assert_eq!(parse_share("0.9"), Ok(0.9));
        assert_eq!(parse_share("0"), Ok(0.0));
        assert_eq!(parse_share("1"), Ok(1.0));
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("-0.1").is_err());
        assert!(parse_share("NaN").is_err());
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
    fn the_relay_settings_take_each_command_s_names() {
        let ip = |s: &str| s.parse::<SocketAddr>().unwrap();
        let cli = Cli::try_parse_from([
            "sfu",
            "--turn-listen",
            "192.0.2.1:3478",
            "--turn-relay-ports",
            "5000-5009",
        ])
        .unwrap();
        assert_eq!(cli.serve.turn_listen.listen, [ip("192.0.2.1:3478")]);
        assert_eq!(cli.serve.turn_relay_ports.relay_ports, 5000..=5009);
        assert!(Cli::try_parse_from(["sfu", "--listen", "192.0.2.1:3478"]).is_err());
        let cli = Cli::try_parse_from([
            "sfu",
            "turn",
            "--listen",
            "192.0.2.2:3478",
            "--relay-ports",
            "6000-6001",
        ])
        .unwrap();
        let Some(Command::Turn(turn)) = cli.command else {
            panic!("not the turn command");
        };
        assert_eq!(turn.listen.listen, [ip("192.0.2.2:3478")]);
        assert_eq!(turn.relay_ports.relay_ports, 6000..=6001);
    }

    #[test]
    fn tls_needs_a_host_name_only_in_the_server() {
        let tls = [
            "--turn-tls-listen",
            "0.0.0.0:443",
            "--turn-cert",
            "c",
            "--turn-key",
            "k",
        ];
        let serve = |extra: &[&str]| {
            let cli = Cli::try_parse_from(["sfu"].iter().chain(&tls).chain(extra)).unwrap();
            cli.serve.check()
        };
        let err = serve(&[]).unwrap_err();
        assert!(err.contains("--turn-tls-host"), "{err}");
        assert!(serve(&["--turn-tls-host", "turn.example"]).is_ok());
        let turn = [
            "sfu",
            "turn",
            "--tls-listen",
            "0.0.0.0:443",
            "--cert",
            "c",
            "--key",
            "k",
        ];
        let check = |args: &[&str]| {
            let Some(Command::Turn(t)) = Cli::try_parse_from(args).unwrap().command else {
                panic!("not the turn command");
            };
            t.listen.check_tls(["tls-listen", "cert", "key"])
        };
        assert!(check(&turn).is_ok());
        let err = check(&turn[..6]).unwrap_err();
        assert_eq!(err, "--tls-listen needs --cert and --key");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
