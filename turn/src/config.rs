//! How the sans-IO core behaves: its credentials, peer policy, relay addresses, lifetimes
//! and limits, with RFC 8656's defaults.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::Credentials;
use crate::policy::PeerPolicy;

/// How the server behaves.
#[derive(Debug)]
pub struct Config {
    pub credentials: Credentials,
    pub policy: PeerPolicy,
    /// The relay sockets' addresses, shared by allocations.
    pub relays: Vec<SocketAddr>,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub nonce_lifetime: Duration,
    /// Most allocations in all.
    pub max_allocations: usize,
    /// Most allocations per username.
    pub max_allocations_per_user: usize,
    /// Each allocation may relay at most this many bytes a second, both ways together;
    /// `None` is unlimited.
    pub max_bytes_per_sec: Option<u64>,
    /// Unauthenticated answers (401, 438) per second per source prefix, and in all.
    pub unauthenticated_per_prefix: f64,
    pub unauthenticated_total: f64,
    pub software: Option<String>,
}

impl Config {
    /// A configuration with RFC 8656's default lifetimes and generous limits.
    pub fn new(credentials: Credentials, policy: PeerPolicy, relays: Vec<SocketAddr>) -> Self {
        Config {
            credentials,
            policy,
            relays,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            max_allocations: 100_000,
            max_allocations_per_user: 100,
            max_bytes_per_sec: None,
            unauthenticated_per_prefix: 50.0,
            unauthenticated_total: 5_000.0,
            software: Some(concat!("sfu-turn/", env!("CARGO_PKG_VERSION")).into()),
        }
    }
}
