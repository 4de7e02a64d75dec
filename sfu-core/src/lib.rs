//! The sans-IO media core of the SFU: a core per shard ([`shard::Shard`]) around str0m,
//! the pure forwarding decision ([`forwarder`]), the choice of layers ([`selection`],
//! [`adaptation`], [`svc`]) and per-viewer pacing ([`pacer`]). It never touches a socket or a clock;
//! the `sfu` crate's driver gives it datagrams, signaling and time. It depends on the
//! `protocol` crate's vocabulary and on nothing of the web stack.

#![forbid(unsafe_code)]

pub mod adaptation;
pub mod forwarder;
pub mod pacer;
pub mod recent;
pub mod selection;
pub mod shard;
pub mod svc;
pub mod temporal;
pub mod vp8;
