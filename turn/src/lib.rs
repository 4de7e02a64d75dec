//! A TURN relay (RFC 8656) that is secure by default: a sans-IO core that takes datagrams
//! and time and yields datagrams, and a tokio driver around it.
//!
//! Control messages are parsed and written with `stun-types`; the relay's hot path
//! (ChannelData, Send and Data indications) is handled here without allocation.

#![forbid(unsafe_code)]

pub mod auth;
pub mod channel;
pub mod driver;
pub mod nonce;
pub mod policy;
pub mod ratelimit;
pub mod server;
