//! One message from a TURN client into the core (`turn::server::Server::handle_client`),
//! as the driver hands over a UDP datagram, after that client allocated, was permitted two
//! peers and bound a channel to one of them, so that ChannelData and Send indications
//! reach the relay path. The same bytes then arrive: as the start of a TCP client's stream
//! (framed by `turn::driver::frame_len`, as the driver's reader frames it), and from both
//! permitted peers (`handle_peer`, relayed back as ChannelData or a Data indication).
//! Raw bytes: STUN, ChannelData, or anything.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu_fuzz::relay::{ALLOCATED, PEERS, RELAYS, Relay, addr, client};
use turn::channel;
use turn::driver::{Frame, frame_len};
use turn::server::Action;

fuzz_target!(|data: &[u8]| {
    let mut relay = Relay::allocated();
    let udp = client(ALLOCATED[0].0);
    let action = relay.from_client(udp, data);
    if let Some((number, range)) = channel::parse(data) {
        // ChannelData on the bound channel, to the permitted peer: relayed, and all of it.
        if number == ALLOCATED[0].2
            && let Action::Relay {
                peer,
                range: relayed,
                ..
            } = &action
        {
            assert_eq!(*peer, addr(PEERS[ALLOCATED[0].1]));
            assert_eq!(*relayed, range);
        }
    }
    let tcp = client(ALLOCATED[1].0);
    match frame_len(data) {
        Frame::Complete(len) => {
            assert!(len <= data.len());
            relay.from_client(tcp, &data[..len]);
        }
        Frame::Incomplete => assert!(data.len() < 4 || data[0] >> 6 <= 1),
        Frame::Garbage => assert!(data[0] >> 6 >= 2),
    }
    for (i, (_, channel_peer, _, other_peer)) in ALLOCATED.iter().enumerate() {
        let relay_addr = addr(RELAYS[i]);
        for peer in [channel_peer, other_peer] {
            relay.from_peer(relay_addr, addr(PEERS[*peer]), data);
        }
    }
});
