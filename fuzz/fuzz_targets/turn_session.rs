//! A TURN session of several clients, peers and time, driven through the core
//! (`turn::server::Server`) step by step (`sfu_fuzz::ops::TurnOp`): raw messages from
//! clients, stream bytes cut into messages as the driver's reader cuts them
//! (`turn::driver::frame_len`), requests signed with real long-term and REST credentials
//! (so allocations, refreshes, permissions and channel bindings happen), datagrams from
//! allowed and denied peers, expiry and closed connections. Every action is checked
//! (`sfu_fuzz::relay::Relay::check`), and allocations never outnumber clients.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu_fuzz::input::Reader;
use sfu_fuzz::ops::TurnOp;
use sfu_fuzz::relay::{CLIENTS, PEERS, RELAYS, Relay, addr, client};
use turn::driver::{Frame, frame_len};

/// Steps per input: enough for any lifecycle, few enough to stay fast.
const MAX_STEPS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut relay = Relay::new();
    let mut r = Reader::new(data);
    for _ in 0..MAX_STEPS {
        let Some(op) = r.head::<TurnOp>() else {
            break;
        };
        let chunk = r.chunk();
        match op {
            TurnOp::Raw { client: c } => {
                relay.from_client(client(c.into()), chunk);
            }
            TurnOp::Stream { client: c } => {
                let mut rest = chunk;
                while let Frame::Complete(len) = frame_len(rest) {
                    assert!(len > 0 && len <= rest.len());
                    relay.from_client(client(c.into()), &rest[..len]);
                    rest = &rest[len..];
                }
            }
            TurnOp::Signed {
                client: c,
                method,
                user,
                sha256,
            } => {
                relay.signed(
                    client(c.into()),
                    method.method(),
                    user.into(),
                    sha256,
                    chunk,
                );
            }
            TurnOp::Peer { relay: at, peer } => {
                let at = addr(RELAYS[usize::from(at) % RELAYS.len()]);
                let peer = addr(PEERS[usize::from(peer) % PEERS.len()]);
                relay.from_peer(at, peer, chunk);
            }
            TurnOp::Wait { seconds } => relay.wait(seconds),
            TurnOp::Close { client: c } => relay.server.client_closed(client(c.into())),
        }
        // One allocation per client 5-tuple at most.
        assert!(relay.server.allocations() <= CLIENTS.len());
    }
});
