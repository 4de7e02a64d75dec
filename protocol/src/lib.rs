//! The vocabulary that signaling, the media core and clients share: the JSON messages of
//! the WebSocket protocol (`docs/protocol.md`) and their errors, the grants a join token
//! carries and the group policies that narrow them, the admin API's calls, events and
//! records, and what signaling hands the media plane. Plain data with serde, no I/O: the
//! sans-IO core depends on this crate and on nothing of the web stack.

#![forbid(unsafe_code)]

pub mod admin;
pub mod error;
pub mod grants;
pub mod media;
pub mod message;
pub mod offer;
pub mod policy;
pub mod server;

pub use grants::{Grants, Role};
pub use media::{Join, Request};
pub use message::*;
pub use policy::{DEFAULT_GROUP, Policy};
