//! A TURN relay (RFC 8656) that is secure by default: a sans-IO core that takes datagrams
//! and time and yields datagrams, and a tokio driver around it.
//!
//! Control messages are parsed and written with `stun-types`/`turn-types`; the relay's hot
//! path (ChannelData, Send and Data indications) is handled here without allocation
//! ([`channel`]).
//!
//! - [`server`]: the sans-IO core (allocations, permissions, channels, authentication,
//!   quotas). Its docs explain how relay ports are shared: many allocations per relay
//!   socket, so a small port range is not a small capacity. [`config`] says how it
//!   behaves, [`report`] what it reports (actions, refusals, counters).
//! - [`policy`]: which peers the relay may send to; denies every special-purpose range by
//!   default, IPv4-in-IPv6 forms included, and its own addresses but on open ports; with
//!   [`cidr`], the prefixes of its allow and deny rules.
//! - [`auth`], [`nonce`], [`ratelimit`]: long-term and TURN REST credentials, stateless
//!   nonces, limits on unauthenticated answers.
//! - [`driver`]: the tokio driver (UDP, TCP and TLS clients; relay sockets).

#![forbid(unsafe_code)]

pub mod auth;
pub mod channel;
pub mod cidr;
pub mod config;
pub mod driver;
pub mod nonce;
pub mod policy;
pub mod ratelimit;
pub mod report;
pub mod server;
