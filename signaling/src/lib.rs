//! Control plane of the SFU: the WebSocket protocol, join tokens, the HTTP server and the
//! browser client it serves. It knows the media plane only through [`MediaPlane`].

#![forbid(unsafe_code)]

pub mod protocol;
pub mod server;
pub mod token;
pub mod web;
mod whip;

pub use protocol::{ErrorCode, ErrorMessage, ParticipantId, ServerMessage, TrackId};
pub use server::{
    Config, IceServerSource, Join, MediaPlane, Request, metrics_router, router, serve,
};
pub use token::{Claims, Grants, Role, TokenKey};
