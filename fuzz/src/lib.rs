//! What the fuzz targets share (not part of the server): the fixed sans-IO setups they
//! drive, and the format of their structured inputs.
//!
//! - [`input`]: how a structured input is cut (heads decoded with `arbitrary`, raw chunks)
//!   and how the seed generator writes one, checked against the decoder.
//! - [`relay`]: the TURN core with clients, peers and a signing client.
//! - [`call`]: the shard core and real str0m clients on a virtual network.
//! - [`ops`]: the structured inputs of the targets that take them.
//! - [`sdp`]: the mids and rids of an SDP, to aim structured choices at it.

pub mod call;
pub mod input;
pub mod ops;
pub mod relay;
pub mod sdp;
