//! The media plane of the SFU: a sans-IO core per shard ([`shard::Shard`]) around str0m,
//! the pure forwarding decision ([`forwarder`]), and the tokio driver that gives the cores
//! their sockets, timers and signaling ([`driver`]).

#![forbid(unsafe_code)]

pub mod driver;
pub mod forwarder;
pub mod metrics;
pub mod pacer;
pub mod selection;
pub mod shard;
pub mod svc;
