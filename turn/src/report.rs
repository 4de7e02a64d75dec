//! What the sans-IO core reports: the action to take after each input, and the counters
//! of what it relayed and refused (each refusal under its reason, a metrics label).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;

use crate::auth::AuthFailure;
use crate::policy::PeerRefusal;
use crate::server::Client;

/// What to do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to send.
    Nothing,
    /// Send the first `len` bytes of the output buffer to the client.
    Reply { to: Client, len: usize },
    /// Send `range` of the input from relay address `relay` to `peer`.
    Relay {
        relay: SocketAddr,
        peer: SocketAddr,
        range: Range<usize>,
    },
}

/// Why something was refused or dropped; each is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The peer address is not allowed (see [`PeerPolicy`](crate::policy::PeerPolicy)).
    Peer(PeerRefusal),
    /// An unknown, expired (REST) or malformed username.
    Auth(AuthFailure),
    /// A known username with the wrong password (the integrity check failed).
    BadIntegrity,
    /// A nonce that is not ours (not merely stale).
    BadNonce,
    /// Unauthenticated answers over their rate: not answered at all.
    RateLimited,
    /// The user's or the server's allocation quota is full.
    Quota,
    /// The allocation's bandwidth cap.
    Bandwidth,
    /// Another allocation on the same relay address uses that peer address.
    TupleConflict,
    /// A request or datagram that names no allocation of this client.
    NoAllocation,
    /// An Allocate from a client that already holds one (437).
    AllocationMismatch,
    /// A request under another username than its client's allocation's (441).
    WrongCredentials,
    /// Data for a peer without a permission.
    NoPermission,
    /// Not STUN, not ChannelData, or a malformed request.
    Malformed,
}

impl Refusal {
    /// Every refusal, each peer and auth reason apart: the labels to register up front.
    pub fn all() -> impl Iterator<Item = Refusal> {
        let peer = PeerRefusal::ALL.into_iter().map(Refusal::Peer);
        let auth = AuthFailure::ALL.into_iter().map(Refusal::Auth);
        peer.chain(auth).chain([
            Refusal::BadIntegrity,
            Refusal::BadNonce,
            Refusal::RateLimited,
            Refusal::Quota,
            Refusal::Bandwidth,
            Refusal::TupleConflict,
            Refusal::NoAllocation,
            Refusal::AllocationMismatch,
            Refusal::WrongCredentials,
            Refusal::NoPermission,
            Refusal::Malformed,
        ])
    }

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Peer(p) => p.as_str(),
            Refusal::Auth(f) => f.as_str(),
            Refusal::BadIntegrity => "bad_integrity",
            Refusal::BadNonce => "bad_nonce",
            Refusal::RateLimited => "rate_limited",
            Refusal::Quota => "quota",
            Refusal::Bandwidth => "bandwidth",
            Refusal::TupleConflict => "tuple_conflict",
            Refusal::NoAllocation => "no_allocation",
            Refusal::AllocationMismatch => "allocation_mismatch",
            Refusal::WrongCredentials => "wrong_credentials",
            Refusal::NoPermission => "no_permission",
            Refusal::Malformed => "malformed",
        }
    }
}

/// Plain counters, read and reset by the driver.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub allocations_total: u64,
    pub relayed_packets: u64,
    pub relayed_bytes: u64,
    pub refusals: HashMap<Refusal, u64>,
}

impl Counters {
    pub(crate) fn refuse(&mut self, r: Refusal) {
        *self.refusals.entry(r).or_default() += 1;
    }
}
