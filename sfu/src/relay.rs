//! The TURN relay as the `sfu` binary runs it: embedded in the server, with the URLs and
//! expiring credentials handed to its clients, or standalone (`sfu turn`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sfu::metrics::TurnMetrics;
use tracing::info;

use crate::cli::{ServeArgs, TurnArgs, TurnListen};
use crate::host::{default_advertise, shutdown_signal};
use crate::serve::Places;

/// Starts the embedded TURN relay; returns what mints each client's TURN URLs and
/// credentials (TURN REST API, expiring).
/// The address the embedded relay relays from: the first advertised one.
pub fn relay_ip(places: &Places) -> IpAddr {
    places
        .advertise
        .first()
        .copied()
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

pub fn embedded(
    args: &ServeArgs,
    places: &Places,
) -> anyhow::Result<(signaling::IceServerSource, turn::driver::Handle)> {
    let advertise = &places.advertise;
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
    let relay_ip = relay_ip(places);
    let listen = &args.turn_listen;
    // The relay exists to reach this server's media ports: on its own addresses, those
    // and nothing else (not its own listeners or relay ports, nor signaling).
    let own: Vec<IpAddr> = own_addresses(advertise, &places.turn_listen, listen.tls_listen);
    let policy = turn::policy::PeerPolicy::new(Vec::new(), Vec::new())
        .with_own(&own, vec![args.udp_ports.clone()]);
    info!(
        "TURN relay: peers on its own addresses {own:?} only on UDP ports {:?}",
        args.udp_ports
    );
    let handle = turn::driver::start(
        turn::driver::Listeners {
            listen: places.turn_listen.clone(),
            relay_bind: places.udp_bind,
            relay_ips: vec![relay_ip],
            relay_ports: args.turn_relay_ports.relay_ports.clone(),
            tls: tls_listener(listen)?,
        },
        turn::server::Config::new(credentials, policy, Vec::new()),
    )?;
    let urls = if args.turn_url.is_empty() {
        let tls = listen.tls_listen.zip(args.turn_tls_host.as_deref());
        urls(&places.turn_listen, relay_ip, tls)
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

/// The relay's own addresses, which its peer policy refuses but on the ports it exists to
/// reach: the addresses it gives out (advertised or relay IPs) and those it listens on
/// (an unspecified listening address names no host and is left out by the policy).
fn own_addresses(given: &[IpAddr], listen: &[SocketAddr], tls: Option<SocketAddr>) -> Vec<IpAddr> {
    let mut own: Vec<IpAddr> = given.to_vec();
    let listening: Vec<IpAddr> = listen
        .iter()
        .chain(tls.iter())
        .map(SocketAddr::ip)
        .collect();
    // A listener on 0.0.0.0 or :: is reached at every address of the host.
    if listening.iter().any(IpAddr::is_unspecified) {
        own.extend(
            if_addrs::get_if_addrs()
                .unwrap_or_default()
                .iter()
                .map(if_addrs::Interface::ip),
        );
    }
    own.extend(listening);
    own.sort();
    own.dedup();
    own
}

/// The TURN URLs for clients of the embedded relay: UDP and TCP at `relay_ip` on the
/// first listening port, and TLS at the certificate's host name when there is a TLS
/// listener.
fn urls(listen: &[SocketAddr], relay_ip: IpAddr, tls: Option<(SocketAddr, &str)>) -> Vec<String> {
    let mut urls = Vec::new();
    if let Some(listen) = listen.first() {
        let port = listen.port();
        let host = match relay_ip {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        urls.push(format!("turn:{host}:{port}?transport=udp"));
        urls.push(format!("turn:{host}:{port}?transport=tcp"));
    }
    if let Some((tls, host)) = tls {
        urls.push(format!("turns:{host}:{}?transport=tcp", tls.port()));
    }
    urls
}

/// The standalone relay (`sfu turn`): runs until SIGINT or SIGTERM.
pub fn standalone(mut args: TurnArgs) -> anyhow::Result<()> {
    args.listen
        .check_tls(["tls-listen", "cert", "key"])
        .map_err(anyhow::Error::msg)?;
    for file in &args.auth_secret_files {
        args.auth_secrets.push(crate::config::read_secret(file)?);
    }
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
        bail!("no --user and no --auth-secret(-file): nobody could allocate");
    }
    let relay_ips: Vec<IpAddr> = if args.relay_ip.is_empty() {
        default_advertise().into_iter().take(1).collect()
    } else {
        args.relay_ip.clone()
    };
    let own = own_addresses(&relay_ips, &args.listen.listen, args.listen.tls_listen);
    let policy = turn::policy::PeerPolicy::new(args.allow_peers.clone(), args.deny_peers.clone())
        .with_own(&own, args.own_peer_ports.clone().into_iter().collect());
    let mut config = turn::server::Config::new(credentials, policy, Vec::new());
    config.max_allocations = args.max_allocations;
    config.max_allocations_per_user = args.max_allocations_per_user;
    config.max_bytes_per_sec = (args.max_bytes_per_sec > 0).then_some(args.max_bytes_per_sec);
    let handle = turn::driver::start(
        turn::driver::Listeners {
            listen: args.listen.listen.clone(),
            relay_bind: args.relay_bind,
            relay_ips,
            relay_ports: args.relay_ports.relay_ports.clone(),
            tls: tls_listener(&args.listen)?,
        },
        config,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // SIGHUP ends no relay: its TLS certificate's watcher (in the relay's thread) or
    // this takes it.
    let what = "nothing to reload here but a TURN over TLS certificate";
    let hangups = {
        let _in_runtime = runtime.enter();
        crate::host::hangups_ignored(what)
    };
    runtime.spawn(hangups);
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
        tokio::spawn(flush_metrics(metrics, handle));
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

/// Moves the relay's counters into its metrics once a second.
pub async fn flush_metrics(metrics: TurnMetrics, relay: turn::driver::Handle) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        metrics.flush(&relay);
    }
}

/// The TLS listener, when an address is given (clap makes sure certificate and key are).
fn tls_listener(listen: &TurnListen) -> anyhow::Result<Option<turn::driver::TlsListener>> {
    let (Some(addr), Some(cert), Some(key)) = (listen.tls_listen, &listen.cert, &listen.key) else {
        return Ok(None);
    };
    Ok(Some(turn::driver::TlsListener {
        listen: addr,
        certificate: netio::tls::Certificate::load(cert, key)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_relay_ip_and_the_tls_host() {
        let listen = [SocketAddr::from(([0, 0, 0, 0], 3478))];
        let tls = SocketAddr::from(([0, 0, 0, 0], 443));
        assert_eq!(
            urls(
                &listen,
                IpAddr::from([192, 0, 2, 7]),
                Some((tls, "turn.example"))
            ),
            [
                "turn:192.0.2.7:3478?transport=udp",
                "turn:192.0.2.7:3478?transport=tcp",
                "turns:turn.example:443?transport=tcp",
            ]
        );
        let v6 = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            urls(&listen, v6, None),
            [
                "turn:[2001:db8::1]:3478?transport=udp",
                "turn:[2001:db8::1]:3478?transport=tcp",
            ]
        );
        assert!(urls(&[], v6, None).is_empty());
    }
}
