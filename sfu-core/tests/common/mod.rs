//! The harness of the sans-IO integration tests: real str0m clients (full ICE,
//! DTLS-SRTP, RTP) and the shard core wired together in virtual time, with no socket and
//! no clock. Links to clients can be capped in bandwidth and lose packets (seeded).
//!
//! Publishers send 50 audio packets a second (with RFC 6464 levels) and 25 video frames a
//! second as VP8 payload descriptors, on each simulcast layer; a keyframe first and then
//! whenever the server asks (PLI). Every payload ends in the publisher's own sequence
//! number; video payloads carry their layer in byte 5.
//!
//! A publisher with `svc` set sends its cameras as one stream of three spatial layers
//! instead: each picture a frame of every layer, marked by a VP9 payload descriptor, or
//! (`Svc::Dd`) by a dependency descriptor over a payload the server cannot read, as an
//! end-to-end encrypting client's.

#![allow(dead_code, unused_imports)] // Each test crate uses part of the harness.

mod assertions;
mod client;
mod link;
mod media;
mod net;

pub use assertions::*;
pub use client::*;
pub use link::*;
pub use media::*;
pub use net::*;
