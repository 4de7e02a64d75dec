//! The server (`sfu`, `sfu serve`): the media plane, signaling over HTTP and the embedded
//! TURN relay, composed in one process; runs until SIGINT, or SIGTERM and a drain
//! ([`crate::stop`]).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sfu::lifecycle::Lifecycle;
use sfu::load::Limits;
use sfu::metrics::{Metrics, TurnMetrics};
use sfu::plane::{MediaConfig, Plane};
use sfu::tap::{TAP_LINES, Tap};
use sfu_core::shard::ShardConfig;
use signaling::TokenKey;
use signaling::tls::TlsListener;
use tracing::{info, warn};

use crate::cli::ServeArgs;
use crate::cluster::ClusterNode;
use crate::config;
use crate::host::default_advertise;
use crate::{groups, relay, stop};

pub fn run(mut args: ServeArgs) -> anyhow::Result<()> {
    args.check().map_err(anyhow::Error::msg)?;
    let https = match (&args.http_cert, &args.http_key) {
        (Some(cert), Some(key)) => Some(netio::tls::Certificate::load(cert, key)?),
        _ => None,
    };
    args.secret = config::secret(args.secret, args.secret_file.as_deref(), "secret")?;
    args.turn_auth_secret = config::secret(
        args.turn_auth_secret,
        args.turn_auth_secret_file.as_deref(),
        "turn-auth-secret",
    )?;
    args.admin_secret = config::secret(
        args.admin_secret,
        args.admin_secret_file.as_deref(),
        "admin-secret",
    )?;
    args.webhook_secret = config::secret(
        args.webhook_secret,
        args.webhook_secret_file.as_deref(),
        "webhook-secret",
    )?;
    let admin_key = match args.admin_secret.as_deref().filter(|s| !s.is_empty()) {
        Some(admin) => {
            anyhow::ensure!(
                args.secret.as_deref() != Some(admin),
                "the admin secret is the join tokens' secret: whoever mints join tokens could \
                 administer this server; give --admin-secret(-file) a secret of its own"
            );
            Some(signaling::admin::AdminKey::new(admin.as_bytes()))
        }
        None => None,
    };
    let (tokens, dev_mode) = match &args.secret {
        Some(secret) if !secret.is_empty() => (TokenKey::new(secret.as_bytes()), false),
        _ => (TokenKey::random(), true),
    };
    let places = Places::of(&args, dev_mode, default_advertise);
    if dev_mode {
        for line in places.dev_banner() {
            warn!("{line}");
        }
    }
    let advertise = places.advertise.clone();
    info!("media candidates advertise {advertise:?}");

    let (ice_servers, relay) = if args.turn {
        let (source, handle) = relay::embedded(&args, &places)?;
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
    let https = match https {
        Some(certificate) => Some((certificate, https_failures(&registry)?)),
        None => None,
    };
    let tap = match &args.tap {
        Some(path) => {
            warn!(
                "--tap: recording the payload of every RTP packet publishers send to {} \
                 (at most {TAP_LINES} lines); a test-only tap, never for production",
                path.display()
            );
            let tap = Tap::create(path, TAP_LINES)
                .with_context(|| format!("cannot open the tap {}", path.display()))?;
            Some(Arc::new(tap))
        }
        None => None,
    };
    let lifecycle = Arc::new(Lifecycle::default());
    let node = args.node.clone().unwrap_or_else(crate::host::host_name);
    let (events, call_events) = tokio::sync::mpsc::channel(signaling::records::EVENT_QUEUE);
    let turn_relays = match &relay {
        Some(_) => vec![(
            relay::relay_ip(&places),
            args.turn_relay_ports.relay_ports.clone(),
        )],
        None => Vec::new(),
    };
    let plane = Plane::start(
        MediaConfig {
            bind_ip: places.udp_bind,
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
                tap: tap.is_some().then(|| args.tap_rooms.clone()),
                turn_relays,
                ..ShardConfig::default()
            },
            tap,
            lifecycle: lifecycle.clone(),
            limits: Limits {
                participants: args.max_participants,
                tracks: args.max_tracks,
                egress_pps: args.max_egress_pps,
                load: args.max_load,
            },
            node: node.clone(),
            events: Some(events),
        },
        metrics,
    )?;
    let plane = Arc::new(plane);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let groups = match &args.config {
        Some(path) => config::groups(path)?,
        None => Default::default(),
    };
    let ledger = Arc::new(signaling::Ledger::new(
        &node,
        args.call_records,
        &registry,
        groups.keys(),
        webhooks_of(&args, &registry, runtime.handle())?,
    )?);
    let policies = {
        let ledger = ledger.clone();
        let told = Arc::new(move |group: &str, policy: Option<&protocol::Policy>| {
            ledger.policy_changed(sfu::driver::wall_ms(), group, policy);
        });
        groups::policies(groups, plane.clone(), told)?
    };
    let load = plane.load().clone();
    load.register(&registry)?;
    let cluster_node = match &args.redis {
        Some(redis) => {
            let url = args.public_url.clone().unwrap_or_else(|| {
                let ip = places
                    .advertise
                    .first()
                    .copied()
                    .unwrap_or(places.http.ip());
                places.signaling_url(SocketAddr::new(ip, places.http.port()))
            });
            let region = args.region.clone();
            let advertise = &places.advertise;
            let node = ClusterNode::new(
                redis,
                &node,
                region,
                url,
                advertise,
                plane.clone(),
                &registry,
            )?;
            Some(Arc::new(node))
        }
        None => None,
    };
    let router = signaling::router(
        plane.clone(),
        signaling::Config {
            tokens,
            dev_mode,
            ice_servers,
            address_limits: signaling::AddressLimits {
                sockets: args.sockets_per_address,
                joins_per_second: args.joins_per_address,
            },
            admin: admin_key.map(|key| signaling::admin::Admin {
                key,
                drain: {
                    let lifecycle = lifecycle.clone();
                    Arc::new(move || lifecycle.drain())
                },
            }),
            // Draining first: a draining server takes no new room, whatever its load.
            policies: policies.clone(),
            ledger: ledger.clone(),
            placement: cluster_node
                .clone()
                .map(|node| node as Arc<dyn signaling::Placement>),
            admin_relay: cluster_node
                .clone()
                .map(|node| node as Arc<dyn signaling::admin::AdminRelay>),
            readiness: {
                let cluster_node = cluster_node.clone();
                Arc::new(move || {
                    if lifecycle.is_draining() {
                        Some("draining")
                    } else if cluster_node.as_ref().is_some_and(|n| !n.reachable()) {
                        Some("redis_unreachable")
                    } else {
                        load.saturated().map(|_| "overloaded")
                    }
                })
            },
        },
        registry,
    )?;

    runtime.block_on(async move {
        if let (Some(metrics), Some(relay)) = (turn_metrics, relay) {
            tokio::spawn(relay::flush_metrics(metrics, relay));
        }
        tokio::spawn(ledger.run(call_events));
        if let Some(node) = &cluster_node {
            tokio::spawn(node.clone().run());
            tokio::spawn(node.clone().listen(router.clone()));
        }
        let listener = tokio::net::TcpListener::bind(places.http)
            .await
            .with_context(|| format!("cannot listen on {}", places.http))?;
        if let Some(node) = &cluster_node {
            node.serving();
        }
        info!(
            "signaling on {}",
            places.signaling_url(listener.local_addr()?)
        );
        let (stop_serving, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let mut serving: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match https {
            Some((certificate, failures)) => {
                let config = certificate.server_config(&[b"http/1.1"])?;
                tokio::spawn(certificate.watch("HTTPS"));
                let path = args.config.clone();
                tokio::spawn(groups::reload_on_hangup(path, policies, Some("HTTPS")));
                let listener = TlsListener::new(listener, Arc::new(config), failures)?;
                Box::pin(signaling::serve(listener, router, stopped))
            }
            None => {
                let path = args.config.clone();
                tokio::spawn(groups::reload_on_hangup(path, policies, None));
                Box::pin(signaling::serve(listener, router, stopped))
            }
        };
        // Ready once signaling listens and SIGHUP is taken (a `systemctl reload` at once
        // must not end the process).
        tokio::spawn(crate::notify::watch(plane.clone()));
        let drain_timeout = Duration::from_secs(args.drain_timeout);
        tokio::select! {
            served = &mut serving => served?,
            () = stop::until_stopped(plane, drain_timeout) => {
                let _ = stop_serving.send(());
                // Requests under way finish; open WebSockets end with the process.
                let _ = tokio::time::timeout(HTTP_GRACE, serving).await;
            }
        }
        if let Some(node) = &cluster_node {
            node.leave().await;
        }
        anyhow::Ok(())
    })
}

/// What sends the webhooks, if receivers are given: a sink for the ledger's notices.
/// Their tasks run on `runtime`.
fn webhooks_of(
    args: &ServeArgs,
    registry: &prometheus::Registry,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Option<signaling::records::NoticeSink>> {
    use signaling::webhooks::{WebhookConfig, WebhookSecret, Webhooks};
    if args.webhook_url.is_empty() {
        return Ok(None);
    }
    let secret: WebhookSecret = args
        .webhook_secret
        .as_deref()
        .unwrap_or_default()
        .parse()
        .context("--webhook-secret")?;
    let config = WebhookConfig::new(args.webhook_url.clone(), secret)?;
    info!("webhooks to {} receivers", config.urls.len());
    let _runtime = runtime.enter();
    let webhooks = Webhooks::start(config, registry)?;
    Ok(Some(Arc::new(move |notice: &protocol::admin::Notice| {
        webhooks.send(notice)
    })))
}

/// Counts the HTTPS handshakes that failed or timed out, in `registry`.
fn https_failures(registry: &prometheus::Registry) -> prometheus::Result<prometheus::IntCounter> {
    let failures = prometheus::IntCounter::new(
        "sfu_https_handshake_failures_total",
        "HTTPS connections whose TLS handshake failed, timed out, or was refused (too many \
         under way from one address)",
    )?;
    registry.register(Box::new(failures.clone()))?;
    Ok(failures)
}

/// Where the server listens and what it advertises: as given, else the defaults, which in
/// dev mode (no secret, tokens for anyone) keep to this machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Places {
    pub http: SocketAddr,
    /// Signaling is served over TLS (--http-cert).
    pub https: bool,
    pub udp_bind: IpAddr,
    pub turn_listen: Vec<SocketAddr>,
    pub advertise: Vec<IpAddr>,
    /// Dev mode, and which of those were left at loopback for it.
    defaulted_to_loopback: Vec<&'static str>,
}

impl Places {
    /// `host_addresses` gives the machine's addresses to advertise when none is given.
    pub fn of(args: &ServeArgs, dev_mode: bool, host_addresses: fn() -> Vec<IpAddr>) -> Places {
        let any = IpAddr::from([0, 0, 0, 0]);
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let default_ip = if dev_mode { loopback } else { any };
        let mut defaulted = Vec::new();
        let mut note = |what: &'static str, given: bool| {
            if dev_mode && !given {
                defaulted.push(what);
            }
        };
        note("--http-listen", args.http_listen.is_some());
        note("--udp-bind", args.udp_bind.is_some());
        note("--turn-listen", !args.turn_listen.listen.is_empty());
        note("--advertise-ip", !args.advertise_ip.is_empty());
        let udp_bind = args.udp_bind.unwrap_or(default_ip);
        Places {
            http: args
                .http_listen
                .unwrap_or(SocketAddr::new(default_ip, DEFAULT_HTTP_PORT)),
            https: args.http_cert.is_some(),
            udp_bind,
            turn_listen: if args.turn_listen.listen.is_empty() {
                vec![SocketAddr::new(default_ip, DEFAULT_TURN_PORT)]
            } else {
                args.turn_listen.listen.clone()
            },
            advertise: if !args.advertise_ip.is_empty() {
                args.advertise_ip.clone()
            } else if dev_mode && udp_bind.is_loopback() {
                // Media bound to loopback is reached there and nowhere else.
                vec![loopback]
            } else {
                host_addresses()
            },
            defaulted_to_loopback: defaulted,
        }
    }

    /// Where signaling is, as a URL (of the address it listens on, not yet bound).
    pub fn signaling_url(&self, http: SocketAddr) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{http}")
    }

    /// The lines dev mode starts with: what it means, where it listens, how to open it.
    pub fn dev_banner(&self) -> Vec<String> {
        let mut lines = vec![
            "DEV MODE: no SFU_SECRET, so join tokens are signed with a random secret and \
             /dev/token gives one to anyone, for any room and role"
                .to_string(),
            format!(
                "DEV MODE: signaling on {}, media on {} (advertised {:?}), TURN on {:?}",
                self.signaling_url(self.http),
                self.udp_bind,
                self.advertise,
                self.turn_listen
            ),
        ];
        if self.defaulted_to_loopback.is_empty() {
            lines.push(
                "DEV MODE: every address was given: other machines may reach this server and \
                 get tokens; set SFU_SECRET for anything but a trial"
                    .to_string(),
            );
        } else {
            lines.push(format!(
                "DEV MODE: only this machine can join (loopback, as {} were not given); to \
                 try it from others, give them (e.g. --http-listen 0.0.0.0:8080 --udp-bind \
                 0.0.0.0 --turn-listen 0.0.0.0:3478 --advertise-ip <this host's IP>); set \
                 SFU_SECRET in production",
                self.defaulted_to_loopback.join(", ")
            ));
        }
        lines
    }
}

const DEFAULT_HTTP_PORT: u16 = 8080;
const DEFAULT_TURN_PORT: u16 = 3478;

/// How long HTTP requests under way may take to finish once the server stops.
const HTTP_GRACE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn places(args: &[&str], dev_mode: bool) -> Places {
        let cli = Cli::try_parse_from(std::iter::once("sfu").chain(args.iter().copied())).unwrap();
        Places::of(&cli.serve, dev_mode, || vec![IpAddr::from([192, 0, 2, 7])])
    }

    #[test]
    fn dev_mode_keeps_to_loopback_what_was_not_given() {
        let dev = places(&[], true);
        assert_eq!(dev.http, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(dev.udp_bind, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(dev.turn_listen, ["127.0.0.1:3478".parse().unwrap()]);
        assert_eq!(dev.advertise, [IpAddr::from([127, 0, 0, 1])]);
        let banner = dev.dev_banner().join("\n");
        assert!(banner.contains("only this machine"), "{banner}");
        assert!(banner.contains("http://127.0.0.1:8080"), "{banner}");
    }

    #[test]
    fn with_a_secret_or_given_addresses_nothing_is_narrowed() {
        let served = places(&[], false);
        assert_eq!(served.http, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(served.udp_bind, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(served.turn_listen, ["0.0.0.0:3478".parse().unwrap()]);
        assert_eq!(served.advertise, [IpAddr::from([192, 0, 2, 7])]);
        // Dev mode with every address given: as given, and the banner says it is open.
        let open = places(
            &[
                "--http-listen",
                "0.0.0.0:9000",
                "--udp-bind",
                "0.0.0.0",
                "--turn-listen",
                "0.0.0.0:3479",
                "--advertise-ip",
                "198.51.100.4",
            ],
            true,
        );
        assert_eq!(open.http, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(open.udp_bind, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(open.turn_listen, ["0.0.0.0:3479".parse().unwrap()]);
        assert_eq!(open.advertise, [IpAddr::from([198, 51, 100, 4])]);
        assert!(
            open.dev_banner()
                .join("\n")
                .contains("other machines may reach")
        );
        // Dev mode with media given an address advertises the host's.
        let media = places(&["--udp-bind", "0.0.0.0"], true);
        assert_eq!(media.advertise, [IpAddr::from([192, 0, 2, 7])]);
        assert_eq!(media.http, "127.0.0.1:8080".parse().unwrap());
    }
}
