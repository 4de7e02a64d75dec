//! The server's drivers around the sans-IO media core (`sfu-core`): the media plane
//! signaling talks to ([`plane`]), the tokio driver that gives each shard its sockets,
//! timers and commands ([`driver`]), and the metrics it
//! exports ([`metrics`], with histograms in [`timings`] and CPU time in [`cpu`]); how it
//! stops ([`lifecycle`]); the limits that turn joins away ([`load`]); what an ICE-TCP connection's bytes mean ([`ice_tcp`]) and
//! where the acceptor hands it (`tcp_accept`); offers
//! read off the media threads ([`offers`]); the participants' event queues, where one
//! that falls behind is caught up ([`queues`]); and the test-only tap that records what
//! publishers send ([`tap`]).

#![forbid(unsafe_code)]

pub mod cpu;
pub mod driver;
pub mod ice_tcp;
pub mod lifecycle;
pub mod load;
pub mod metrics;
pub mod offers;
pub mod plane;
pub mod queues;
pub mod tap;
mod tcp_accept;
pub mod timings;
