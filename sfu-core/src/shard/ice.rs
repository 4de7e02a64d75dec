//! ICE as the shard does it: the local candidates a participant is offered, and the
//! mapping of remote addresses to participants (by ICE username on the first STUN
//! request, then by address in O(1)).

use std::net::SocketAddr;

use protocol::admin::TransportKind;
use protocol::{ParticipantId, Transport};
use str0m::ice::StunMessage;
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Input, Rtc};
use tracing::{debug, warn};

use super::Shard;

/// How many remote addresses one participant may use at once (ICE candidates that
/// reached us, TCP connections included); more are refused rather than growing the map.
pub(super) const MAX_REMOTES: usize = 8;

/// The local addresses a participant's ICE candidates are on: UDP ones on one port, and
/// passive ICE-TCP ones (RFC 6544) on the TCP media port. Either may be empty.
#[derive(Debug, Clone, Default)]
pub struct LocalCandidates {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
}

/// A remote address as the shard maps it: the transport, our address, theirs.
pub(super) type Remote = (Protocol, SocketAddr, SocketAddr);

impl LocalCandidates {
    /// Those a client gets: a `relay` join only UDP ones (what a TURN relay reaches), a
    /// `force_tcp` one only ICE-TCP ones (so it never waits on UDP), any other all.
    pub(super) fn for_client(&self, transport: Transport, force_tcp: bool) -> LocalCandidates {
        let (udp, tcp) = match (transport, force_tcp) {
            (Transport::Relay, _) => (true, false),
            (Transport::Auto, true) => (false, true),
            (Transport::Auto, false) => (true, true),
        };
        LocalCandidates {
            udp: if udp { self.udp.clone() } else { Vec::new() },
            tcp: if tcp { self.tcp.clone() } else { Vec::new() },
        }
    }

    /// Adds them to a participant's `Rtc`: UDP host candidates, and passive TCP ones (the
    /// client connects), which rank below host UDP ones (type preference 90 against
    /// 126), so UDP wins wherever it works.
    pub(super) fn add_to(&self, rtc: &mut Rtc) {
        for addr in &self.udp {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => warn!(%addr, "bad candidate address: {e}"),
            }
        }
        for addr in &self.tcp {
            let candidate = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build();
            match candidate {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => warn!(%addr, "bad TCP candidate address: {e}"),
            }
        }
    }
}

/// Our ICE ufrags start with the shard's index in 4 hex digits, so that whoever accepts an
/// ICE-TCP connection finds the shard from the first STUN request's USERNAME.
pub fn shard_of_ufrag(ufrag: &str) -> Option<u64> {
    let prefix = ufrag.get(..4)?;
    u64::from_str_radix(prefix, 16).ok()
}

impl Shard {
    /// A datagram from an unmapped address: a STUN binding request naming one of our
    /// participants (by its ufrag, on a port and transport it was offered) maps the
    /// address to it.
    pub(super) fn claim_remote(
        &mut self,
        proto: Protocol,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> Option<ParticipantId> {
        let stun = StunMessage::parse(data).ok()?;
        if !stun.is_binding_request() {
            return None;
        }
        let (ours, _theirs) = stun.split_username()?;
        let id = *self.by_ufrag.get(ours)?;
        let p = self.participants.get_mut(&id)?;
        let port = match proto {
            Protocol::Udp => p.udp_port,
            _ => p.tcp_port,
        };
        if port != Some(local.port()) || p.remotes.len() >= MAX_REMOTES {
            return None;
        }
        let receive = Receive::new(proto, remote, local, data).ok()?;
        if !p.rtc.accepts(&Input::Receive(self.now, receive)) {
            return None;
        }
        debug!(participant = %id, %remote, ?proto, "remote address mapped");
        p.remotes.push((proto, local, remote));
        let kind =
            match proto {
                Protocol::Udp
                    if self.config.turn_relays.iter().any(|(ip, ports)| {
                        *ip == remote.ip() && ports.contains(&remote.port())
                    }) =>
                {
                    TransportKind::Turn
                }
                Protocol::Udp => TransportKind::Udp,
                _ => TransportKind::Tcp,
            };
        // The newest last: the way it uses now.
        p.transports.retain(|k| *k != kind);
        p.transports.push(kind);
        self.by_remote.insert((proto, local, remote), id);
        Some(id)
    }

    /// Who a remote address is mapped to: after a STUN request over a new ICE-TCP
    /// connection, whether the shard took the connection.
    pub fn owner_of(
        &self,
        proto: Protocol,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<ParticipantId> {
        self.by_remote.get(&(proto, local, remote)).copied()
    }

    /// The remote address is gone (its ICE-TCP connection closed): unmap it, freeing one
    /// of its participant's `MAX_REMOTES`.
    pub fn forget_remote(&mut self, proto: Protocol, local: SocketAddr, remote: SocketAddr) {
        let key = (proto, local, remote);
        if let Some(id) = self.by_remote.remove(&key)
            && let Some(p) = self.participants.get_mut(&id)
        {
            p.remotes.retain(|r| *r != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transport_gets_the_candidates_it_can_use() {
        let all = LocalCandidates {
            udp: vec!["192.0.2.1:16384".parse().unwrap()],
            tcp: vec!["192.0.2.1:443".parse().unwrap()],
        };
        let auto = all.for_client(Transport::Auto, false);
        assert_eq!((auto.udp.len(), auto.tcp.len()), (1, 1));
        // Forced TCP: never waits on UDP.
        let forced = all.for_client(Transport::Auto, true);
        assert_eq!((forced.udp.len(), forced.tcp.len()), (0, 1));
        // Through a TURN relay, which reaches UDP only, whatever the grant.
        let relay = all.for_client(Transport::Relay, true);
        assert_eq!((relay.udp.len(), relay.tcp.len()), (1, 0));
    }

    #[test]
    fn a_ufrag_names_its_shard_in_four_hex_digits() {
        assert_eq!(shard_of_ufrag("000a1234567890abcdef"), Some(10));
        assert_eq!(shard_of_ufrag("zz"), None);
        assert_eq!(shard_of_ufrag("xyz0123"), None);
    }
}
