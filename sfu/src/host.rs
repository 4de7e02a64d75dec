//! What the process learns from its host: its addresses, and the signals that stop it.

use std::net::IpAddr;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

/// Every up, non-loopback IPv4 address, or 127.0.0.1 when there is none.
pub fn default_advertise() -> Vec<IpAddr> {
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

/// SIGTERM's stream (systemd, Kubernetes, `docker stop`); none, said in the log, where
/// the process cannot listen for it.
pub fn sigterm() -> Option<Signal> {
    signal(SignalKind::terminate())
        .inspect_err(|e| warn!("cannot listen for SIGTERM: {e}"))
        .ok()
}

/// Takes SIGHUP for ever, saying in the log that there is nothing to reload (`what`):
/// a process without a certificate to reload is not ended by it (its default action),
/// whatever sends it (`systemctl reload`, a log rotation). The handler is installed
/// before this returns (call it in the runtime): from then on SIGHUP is safe.
pub fn hangups_ignored(what: &'static str) -> impl Future<Output = ()> + Send {
    let hangup = signal(SignalKind::hangup())
        .inspect_err(|e| warn!("cannot listen for SIGHUP: {e}"))
        .ok();
    async move {
        let Some(mut hangup) = hangup else { return };
        while hangup.recv().await.is_some() {
            info!("SIGHUP: {what}");
        }
    }
}

/// This machine's host name, or `sfu` when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "sfu".to_owned())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let Some(mut term) = sigterm() else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        _ = term.recv() => info!("SIGTERM: shutting down"),
    }
}
