//! The socket layer of the drivers: what the media plane (`sfu`) and the TURN relay
//! (`turn`) both need from the operating system, written once.
//!
//! It knows sockets, not protocols: what a datagram or a stream frame means stays with the
//! driver, which hands in a closure for it. Nothing here allocates or sends on a channel
//! per datagram.
//!
//! - [`udp`]: sockets with large buffers, read in batches (recvmmsg, GRO, through
//!   quinn-udp) and written in batches (sendmmsg, GSO).
//! - [`gso`]: which datagrams of a run go as one segmented message.
//! - [`tcp`]: listeners and the accept loop.
//! - [`stream`]: the bounded write queue of one stream connection (TCP or TLS), so that
//!   a client that does not read loses packets instead of stalling its thread.
//! - [`tls`]: a TLS server certificate from PEM files, replaced while the server runs
//!   (SIGHUP, or the files changed) without touching connections already open.
//! - [`runtime`]: a thread running one current-thread tokio runtime, as each driver thread
//!   does.

#![forbid(unsafe_code)]

pub mod gso;
pub mod runtime;
pub mod stream;
pub mod tcp;
pub mod tls;
pub mod udp;
