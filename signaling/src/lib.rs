//! Control plane of the SFU: join tokens, the HTTP and WebSocket server, WHIP and WHEP,
//! and the browser client it serves. It knows the media plane only through
//! [`MediaPlane`]; the messages it speaks are the `protocol` crate's.

#![forbid(unsafe_code)]

mod plane;
mod router;
mod session;
mod state;
pub mod token;
pub mod web;
mod whip;

pub use plane::{EVENT_QUEUE, IceServerSource, MediaPlane};
pub use router::{metrics_router, router, serve};
pub use state::Config;
pub use token::{Claims, TokenKey};
