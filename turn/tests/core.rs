//! The sans-IO TURN core driven by a client built from `stun-types`, in virtual time:
//! authentication, allocation lifecycle, permissions, channels, relaying both ways, peer
//! policy, quotas, expiry and shared relay ports.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_types::attribute::{
    AttributeStaticType, ErrorCode, Nonce, Realm, Username, XorMappedAddress,
};
use stun_types::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageWrite,
    MessageWriteExt, MessageWriteVec,
};
use turn::auth::Credentials;
use turn::policy::{Cidr, PeerPolicy};
use turn::server::{Action, Client, Config, Refusal, Server, Transport};
use turn_types::attribute::{
    ChannelNumber, Data, Lifetime, RequestedTransport, XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};

const REALM: &str = "example.org";
const PEER: &str = "198.51.100.20:9000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn relays() -> Vec<SocketAddr> {
    vec![addr("192.0.2.1:50000"), addr("192.0.2.1:50001")]
}

/// A server with user alice/secret-pw, a REST secret, and the documentation range
/// 198.51.100.0/24 allowed so that tests have a permitted peer.
fn server(f: impl FnOnce(&mut Config)) -> (Server, Instant) {
    let mut credentials = Credentials::new(REALM);
    credentials.add_user("alice", "secret-pw");
    credentials.add_user("bob", "bob-pw");
    credentials.add_secret(b"rest-secret");
    let policy = PeerPolicy::new(vec![Cidr::from_str_checked("198.51.100.0/24")], vec![]);
    let mut config = Config::new(credentials, policy, relays());
    f(&mut config);
    let now = Instant::now();
    (Server::new(config, now, 1_700_000_000), now)
}

trait CidrExt {
    fn from_str_checked(s: &str) -> Cidr;
}

impl CidrExt for Cidr {
    fn from_str_checked(s: &str) -> Cidr {
        s.parse().unwrap()
    }
}

/// A TURN client: it learns realm and nonce from the first 401.
struct TestClient {
    client: Client,
    username: String,
    password: String,
    nonce: Option<String>,
    algorithm: IntegrityAlgorithm,
}

impl TestClient {
    fn new(remote: &str, username: &str, password: &str) -> Self {
        TestClient {
            client: Client {
                transport: Transport::Udp,
                remote: addr(remote),
                local: addr("192.0.2.1:3478"),
            },
            username: username.into(),
            password: password.into(),
            nonce: None,
            algorithm: IntegrityAlgorithm::Sha1,
        }
    }

    fn build(
        &self,
        method: stun_types::message::Method,
        add: &dyn Fn(&mut MessageWriteVec),
    ) -> Vec<u8> {
        let mut w = Message::builder_request(method, MessageWriteVec::new());
        add(&mut w);
        if let Some(nonce) = &self.nonce {
            w.add_attribute(&Username::new(&self.username).unwrap())
                .unwrap();
            w.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
            w.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
            let credentials = LongTermKeyCredentials::new(
                self.username.clone(),
                self.password.clone(),
                REALM.into(),
            )
            .into();
            w.add_message_integrity(&credentials, self.algorithm)
                .unwrap();
        }
        w.add_fingerprint().unwrap();
        w.finish()
    }

    /// Sends one request; returns the reply's bytes, if any.
    fn send(&self, server: &mut Server, now: Instant, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; 2048];
        match server.handle_client(now, self.client, bytes, &mut out) {
            Action::Reply { to, len } => {
                assert_eq!(to, self.client);
                Some(out[..len].to_vec())
            }
            Action::Nothing => None,
            other => panic!("a request was relayed: {other:?}"),
        }
    }

    /// A request, retried once with credentials after a 401 or 438.
    fn call(
        &mut self,
        server: &mut Server,
        now: Instant,
        method: stun_types::message::Method,
        add: &dyn Fn(&mut MessageWriteVec),
    ) -> Vec<u8> {
        for _ in 0..2 {
            let reply = self.send(server, now, &self.build(method, add)).unwrap();
            let msg = Message::from_bytes(&reply).unwrap();
            let code = msg.attribute::<ErrorCode>().map(|e| e.code()).ok();
            if matches!(code, Some(401) | Some(438)) && msg.attribute::<Nonce>().is_ok() {
                let nonce = msg.attribute::<Nonce>().unwrap().nonce().to_owned();
                if self.nonce.as_deref() != Some(&nonce) {
                    self.nonce = Some(nonce);
                    continue;
                }
            }
            return reply;
        }
        panic!("no answer after authenticating");
    }

    fn allocate(&mut self, server: &mut Server, now: Instant) -> Result<SocketAddr, u16> {
        let reply = self.call(server, now, ALLOCATE, &|w| {
            w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
        });
        let msg = Message::from_bytes(&reply).unwrap();
        if let Ok(e) = msg.attribute::<ErrorCode>() {
            return Err(e.code());
        }
        assert!(msg.has_class(MessageClass::Success));
        let credentials =
            LongTermKeyCredentials::new(self.username.clone(), self.password.clone(), REALM.into())
                .into();
        msg.validate_integrity(&credentials)
            .expect("the response is signed");
        let mapped = msg.attribute::<XorMappedAddress>().unwrap();
        assert_eq!(mapped.addr(msg.transaction_id()), self.client.remote);
        assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), 600);
        Ok(msg
            .attribute::<XorRelayedAddress>()
            .unwrap()
            .addr(msg.transaction_id()))
    }

    fn permit(&mut self, server: &mut Server, now: Instant, peer: SocketAddr) -> Result<(), u16> {
        let reply = self.call(server, now, CREATE_PERMISSION, &|w| {
            let t = w.transaction_id();
            w.add_attribute(&XorPeerAddress::new(peer, t)).unwrap();
        });
        error_of(&reply)
    }

    fn bind(
        &mut self,
        server: &mut Server,
        now: Instant,
        number: u16,
        peer: SocketAddr,
    ) -> Result<(), u16> {
        let reply = self.call(server, now, CHANNEL_BIND, &|w| {
            let t = w.transaction_id();
            w.add_attribute(&ChannelNumber::new(number)).unwrap();
            w.add_attribute(&XorPeerAddress::new(peer, t)).unwrap();
        });
        error_of(&reply)
    }

    fn send_indication(&self, peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut w = Message::builder_indication(SEND, MessageWriteVec::new());
        let t = w.transaction_id();
        w.add_attribute(&XorPeerAddress::new(peer, t)).unwrap();
        w.add_attribute(&Data::new(payload)).unwrap();
        w.finish()
    }
}

fn error_of(reply: &[u8]) -> Result<(), u16> {
    let msg = Message::from_bytes(reply).unwrap();
    match msg.attribute::<ErrorCode>() {
        Ok(e) => Err(e.code()),
        Err(_) => Ok(()),
    }
}

fn refusals(server: &Server, r: Refusal) -> u64 {
    server.counters.refusals.get(&r).copied().unwrap_or(0)
}

#[test]
fn binding_requests_are_answered_without_credentials() {
    let (mut server, now) = server(|_| {});
    let c = TestClient::new("203.0.113.7:4000", "alice", "x");
    let request = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
    let reply = c.send(&mut server, now, &request).unwrap();
    let msg = Message::from_bytes(&reply).unwrap();
    assert!(msg.has_class(MessageClass::Success));
    let mapped = msg.attribute::<XorMappedAddress>().unwrap();
    assert_eq!(mapped.addr(msg.transaction_id()), c.client.remote);
}

#[test]
fn allocate_needs_credentials_and_answers_with_a_relay_address() {
    let (mut server, now) = server(|_| {});
    let mut c = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    // Unauthenticated: 401 with realm and nonce.
    let reply = c
        .send(&mut server, now, &c.build(ALLOCATE, &|_| {}))
        .unwrap();
    let msg = Message::from_bytes(&reply).unwrap();
    assert_eq!(msg.attribute::<ErrorCode>().unwrap().code(), 401);
    assert_eq!(msg.attribute::<Realm>().unwrap().realm(), REALM);
    assert!(msg.attribute::<Nonce>().is_ok());
    let relay = c.allocate(&mut server, now).unwrap();
    assert!(relays().contains(&relay));
    assert_eq!(server.allocations(), 1);
    assert_eq!(server.counters.allocations_total, 1);
    // A second Allocate on the same 5-tuple is a mismatch.
    assert_eq!(c.allocate(&mut server, now), Err(437));
    assert_eq!(refusals(&server, Refusal::AllocationMismatch), 1);
    // Another user on the same 5-tuple (a NAT's port handed on): 441, whatever it asks.
    let mut other = TestClient::new("203.0.113.7:4000", "bob", "bob-pw");
    assert_eq!(other.allocate(&mut server, now), Err(441));
    assert_eq!(refusals(&server, Refusal::WrongCredentials), 1);
    assert_eq!(server.allocations(), 1);
}

#[test]
fn a_wrong_password_never_allocates() {
    let (mut server, now) = server(|_| {});
    let mut c = TestClient::new("203.0.113.7:4000", "alice", "wrong");
    let reply = c.call(&mut server, now, ALLOCATE, &|w| {
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    });
    assert_eq!(error_of(&reply), Err(401));
    assert_eq!(server.allocations(), 0);
    assert!(refusals(&server, Refusal::BadIntegrity) >= 1);
    let mut c = TestClient::new("203.0.113.7:4001", "mallory", "x");
    assert_eq!(c.allocate(&mut server, now), Err(401));
    assert!(refusals(&server, Refusal::Auth(turn::auth::AuthFailure::UnknownUser)) >= 1);
}

#[test]
fn unknown_comprehension_required_attributes_get_420() {
    let (mut server, now) = server(|_| {});
    let mut c = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    let reply = c.call(&mut server, now, ALLOCATE, &|w| {
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        w.add_attribute(&turn_types::attribute::DontFragment::new())
            .unwrap();
    });
    assert_eq!(error_of(&reply), Err(420));
    assert_eq!(server.allocations(), 0);
}

#[test]
fn even_port_gets_an_even_relay_port_and_reservations_are_refused() {
    let (mut server, now) = server(|c| {
        c.relays = vec![
            addr("192.0.2.1:50001"),
            addr("192.0.2.1:50002"),
            addr("192.0.2.1:50003"),
        ]
    });
    for port in 0..3 {
        let mut c = TestClient::new(
            &format!("203.0.113.7:{}", 4000 + port),
            "alice",
            "secret-pw",
        );
        let reply = c.call(&mut server, now, ALLOCATE, &|w| {
            w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
            w.add_attribute(&turn_types::attribute::EvenPort::new(false))
                .unwrap();
        });
        assert_eq!(error_of(&reply), Ok(()), "allocation {port}");
        let msg = Message::from_bytes(&reply).unwrap();
        let relay = msg
            .attribute::<XorRelayedAddress>()
            .unwrap()
            .addr(msg.transaction_id());
        assert_eq!(relay.port(), 50002, "the only even port, shared");
    }
    let mut c = TestClient::new("203.0.113.7:5000", "alice", "secret-pw");
    let reply = c.call(&mut server, now, ALLOCATE, &|w| {
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        w.add_attribute(&turn_types::attribute::EvenPort::new(true))
            .unwrap();
    });
    assert_eq!(error_of(&reply), Err(508));
}

#[test]
fn rest_credentials_work_until_they_expire() {
    let (mut server, now) = server(|_| {});
    let (user, pass) = turn::auth::rest_credentials(
        b"rest-secret",
        "carol",
        1_700_000_000,
        Duration::from_secs(60),
    );
    let mut c = TestClient::new("203.0.113.8:4000", &user, &pass);
    assert!(c.allocate(&mut server, now).is_ok());
    // Past its expiry the same username is refused.
    let later = now + Duration::from_secs(120);
    let mut d = TestClient::new("203.0.113.8:4001", &user, &pass);
    assert_eq!(d.allocate(&mut server, later), Err(401));
}

#[test]
fn stale_nonces_get_438_and_a_fresh_nonce() {
    let (mut server, now) = server(|c| c.nonce_lifetime = Duration::from_secs(30));
    let mut c = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    c.allocate(&mut server, now).unwrap();
    let old = c.nonce.clone();
    let later = now + Duration::from_secs(60);
    let stale = c.build(REFRESH, &|_| {});
    let reply = c.send(&mut server, later, &stale).unwrap();
    assert_eq!(error_of(&reply), Err(438));
    // The client retries with the new nonce and succeeds.
    let reply = c.call(&mut server, later, REFRESH, &|_| {});
    assert_eq!(error_of(&reply), Ok(()));
    assert_ne!(c.nonce, old);
}

#[test]
fn data_flows_both_ways_through_send_and_data_indications() {
    let (mut server, now) = server(|_| {});
    let mut c = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    let relay = c.allocate(&mut server, now).unwrap();
    let peer = addr(PEER);
    let send = c.send_indication(peer, b"hello peer");
    let mut out = vec![0u8; 2048];
    // No permission yet: dropped.
    assert_eq!(
        server.handle_client(now, c.client, &send, &mut out),
        Action::Nothing
    );
    c.permit(&mut server, now, peer).unwrap();
    match server.handle_client(now, c.client, &send, &mut out) {
        Action::Relay {
            relay: r,
            peer: p,
            range,
        } => {
            assert_eq!((r, p), (relay, peer));
            assert_eq!(&send[range], b"hello peer");
        }
        other => panic!("{other:?}"),
    }
    // The peer answers: a Data indication to the client.
    match server.handle_peer(now, relay, peer, b"hello client", &mut out) {
        Action::Reply { to, len } => {
            assert_eq!(to, c.client);
            let msg = Message::from_bytes(&out[..len]).unwrap();
            assert!(msg.has_method(DATA) && msg.has_class(MessageClass::Indication));
            assert_eq!(msg.attribute::<Data>().unwrap().data(), b"hello client");
            let from = msg.attribute::<XorPeerAddress>().unwrap();
            assert_eq!(from.addr(msg.transaction_id()), peer);
        }
        other => panic!("{other:?}"),
    }
    // Another peer IP, never permitted, is dropped.
    let stranger = addr("198.51.100.99:9000");
    assert_eq!(
        server.handle_peer(now, relay, stranger, b"x", &mut out),
        Action::Nothing
    );
    assert!(refusals(&server, Refusal::NoPermission) >= 1);
}

#[test]
fn channels_relay_both_ways_and_pad_on_streams() {
    let (mut server, now) = server(|_| {});
    let mut c = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    c.client.transport = Transport::Tcp;
    let relay = c.allocate(&mut server, now).unwrap();
    let peer = addr(PEER);
    c.bind(&mut server, now, 0x4001, peer).unwrap();
    // ChannelData from the client, padded as on TCP.
    let frame = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0];
    let mut out = vec![0u8; 2048];
    match server.handle_client(now, c.client, &frame, &mut out) {
        Action::Relay { peer: p, range, .. } => {
            assert_eq!(p, peer);
            assert_eq!(&frame[range], b"abc");
        }
        other => panic!("{other:?}"),
    }
    match server.handle_peer(now, relay, peer, b"xyz12", &mut out) {
        Action::Reply { len, .. } => {
            assert_eq!(
                &out[..len],
                &[
                    0x40, 0x01, 0x00, 0x05, b'x', b'y', b'z', b'1', b'2', 0, 0, 0
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // A channel number out of range, or rebinding the channel to another peer, is refused.
    assert_eq!(c.bind(&mut server, now, 0x3fff, peer), Err(400));
    assert_eq!(c.bind(&mut server, now, 0x7fff, peer), Err(400));
    assert_eq!(
        c.bind(&mut server, now, 0x4001, addr("198.51.100.21:9000")),
        Err(400)
    );
    // Refreshing the same binding is fine.
    assert_eq!(c.bind(&mut server, now, 0x4001, peer), Ok(()));
}

#[test]
fn forbidden_peers_are_refused_with_403_and_counted() {
    let (mut server, now) = server(|_| {});
    let mut c = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    c.allocate(&mut server, now).unwrap();
    for peer in [
        "127.0.0.1:80",
        "10.0.0.1:80",
        "169.254.169.254:80",
        "0.0.0.0:80",
        "192.0.2.1:50000",
    ] {
        assert_eq!(c.permit(&mut server, now, addr(peer)), Err(403), "{peer}");
        assert_eq!(
            c.bind(&mut server, now, 0x4000, addr(peer)),
            Err(403),
            "{peer}"
        );
    }
    let refused: u64 = server
        .counters
        .refusals
        .iter()
        .filter(|(r, _)| matches!(r, Refusal::Peer(_)))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(refused, 10);
}

#[test]
fn ipv6_forbidden_peers_are_refused_on_an_ipv6_relay() {
    let (mut server, now) = server(|c| c.relays = vec![addr("[2001:db8::1]:50000")]);
    let mut c = TestClient::new("[2001:db8::7]:4000", "alice", "secret-pw");
    let reply = c.call(&mut server, now, ALLOCATE, &|w| {
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        w.add_attribute(&turn_types::attribute::RequestedAddressFamily::new(
            stun_types::AddressFamily::IPV6,
        ))
        .unwrap();
    });
    assert_eq!(error_of(&reply), Ok(()));
    for peer in [
        "[::1]:80",
        "[::ffff:127.0.0.1]:80",
        "[::]:80",
        "[fe80::1]:80",
    ] {
        assert_eq!(c.permit(&mut server, now, addr(peer)), Err(403), "{peer}");
    }
    // An IPv4 peer on an IPv6 relay is a family mismatch.
    assert_eq!(c.permit(&mut server, now, addr(PEER)), Err(443));
}

#[test]
fn quotas_hold_per_user_and_in_all() {
    let (mut server, now) = server(|c| {
        c.max_allocations_per_user = 2;
        c.max_allocations = 3;
    });
    for port in 0..2 {
        let mut c = TestClient::new(
            &format!("203.0.113.7:{}", 4000 + port),
            "alice",
            "secret-pw",
        );
        c.allocate(&mut server, now).unwrap();
    }
    let mut c = TestClient::new("203.0.113.7:4002", "alice", "secret-pw");
    assert_eq!(c.allocate(&mut server, now), Err(486));
    let mut b = TestClient::new("203.0.113.9:4000", "bob", "bob-pw");
    b.allocate(&mut server, now).unwrap();
    let mut b2 = TestClient::new("203.0.113.9:4001", "bob", "bob-pw");
    assert_eq!(b2.allocate(&mut server, now), Err(486), "three in all");
    assert_eq!(refusals(&server, Refusal::Quota), 2);
}

#[test]
fn allocations_and_permissions_expire_and_refresh_zero_deletes() {
    let (mut server, now) = server(|_| {});
    let mut c = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    let relay = c.allocate(&mut server, now).unwrap();
    let peer = addr(PEER);
    c.permit(&mut server, now, peer).unwrap();
    let mut out = vec![0u8; 2048];
    // The permission lapses after 300 s; the allocation lives on.
    let t = now + Duration::from_secs(301);
    server.handle_timeout(t);
    assert_eq!(
        server.handle_peer(t, relay, peer, b"x", &mut out),
        Action::Nothing
    );
    assert_eq!(server.allocations(), 1);
    // The allocation lapses after 600 s.
    let t = now + Duration::from_secs(601);
    server.handle_timeout(t);
    assert_eq!(server.allocations(), 0);
    // Refresh with lifetime 0 deletes at once.
    let t = t + Duration::from_secs(2);
    let mut d = TestClient::new("203.0.113.7:4001", "alice", "secret-pw");
    d.allocate(&mut server, t).unwrap();
    let reply = d.call(&mut server, t, REFRESH, &|w| {
        w.add_attribute(&Lifetime::new(0)).unwrap();
    });
    assert_eq!(error_of(&reply), Ok(()));
    assert_eq!(server.allocations(), 0);
    // Without an allocation, Refresh is a mismatch.
    let reply = d.call(&mut server, t, REFRESH, &|_| {});
    assert_eq!(error_of(&reply), Err(437));
}

#[test]
fn shared_relay_ports_never_deliver_to_the_wrong_client() {
    // One relay port for everyone.
    let (mut server, now) = server(|c| c.relays = vec![addr("192.0.2.1:50000")]);
    let mut a = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    let mut b = TestClient::new("203.0.113.9:4000", "bob", "bob-pw");
    let relay = a.allocate(&mut server, now).unwrap();
    assert_eq!(
        b.allocate(&mut server, now).unwrap(),
        relay,
        "one port, shared"
    );
    let p1 = addr("198.51.100.20:9000");
    let p2 = addr("198.51.100.21:9000");
    a.permit(&mut server, now, p1).unwrap();
    b.permit(&mut server, now, p2).unwrap();
    let mut out = vec![0u8; 2048];
    let deliver = |server: &mut Server, peer, out: &mut Vec<u8>| match server
        .handle_peer(now, relay, peer, b"x", out)
    {
        Action::Reply { to, .. } => Some(to),
        _ => None,
    };
    assert_eq!(deliver(&mut server, p1, &mut out), Some(a.client));
    assert_eq!(deliver(&mut server, p2, &mut out), Some(b.client));
    // Both permit the same peer IP: exact claims decide; unclaimed ports are ambiguous.
    a.permit(&mut server, now, p2).unwrap();
    let send = a.send_indication(addr("198.51.100.21:7000"), b"from a");
    assert!(matches!(
        server.handle_client(now, a.client, &send, &mut out),
        Action::Relay { .. }
    ));
    assert_eq!(
        deliver(&mut server, addr("198.51.100.21:7000"), &mut out),
        Some(a.client)
    );
    assert_eq!(
        deliver(&mut server, addr("198.51.100.21:7001"), &mut out),
        None
    );
    // Bob may not use a peer address alice claimed on this relay address.
    let send = b.send_indication(addr("198.51.100.21:7000"), b"from b");
    assert_eq!(
        server.handle_client(now, b.client, &send, &mut out),
        Action::Nothing
    );
    assert!(refusals(&server, Refusal::TupleConflict) >= 2);
}

#[test]
fn a_bandwidth_cap_drops_the_excess() {
    let (mut server, now) = server(|c| c.max_bytes_per_sec = Some(1000));
    let mut c = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    c.allocate(&mut server, now).unwrap();
    let peer = addr(PEER);
    c.permit(&mut server, now, peer).unwrap();
    let send = c.send_indication(peer, &[0u8; 400]);
    let mut out = vec![0u8; 2048];
    let relayed = (0..10)
        .filter(|_| {
            matches!(
                server.handle_client(now, c.client, &send, &mut out),
                Action::Relay { .. }
            )
        })
        .count();
    assert_eq!(
        relayed, 3,
        "a burst of one MTU, 1500 bytes: three 400-byte packets"
    );
    assert_eq!(refusals(&server, Refusal::Bandwidth), 7);
    let later = now + Duration::from_secs(1);
    assert!(matches!(
        server.handle_client(later, c.client, &send, &mut out),
        Action::Relay { .. }
    ));
}

#[test]
fn unauthenticated_answers_are_rate_limited() {
    let (mut server, now) = server(|c| {
        c.unauthenticated_per_prefix = 5.0;
        c.unauthenticated_total = 1000.0;
    });
    let c = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    let request = c.build(ALLOCATE, &|_| {});
    let answered = (0..50)
        .filter(|_| c.send(&mut server, now, &request).is_some())
        .count();
    assert_eq!(answered, 5);
    assert_eq!(refusals(&server, Refusal::RateLimited), 45);
    // Another prefix is not affected.
    let other = TestClient::new("198.18.0.1:4000", "alice", "secret-pw");
    assert!(other.send(&mut server, now, &request).is_some());
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let (mut server, now) = server(|_| {});
    let c = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    let mut out = vec![0u8; 2048];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 300) as usize;
        let mut data: Vec<u8> = (0..len).map(|k| (seed >> (k % 57)) as u8).collect();
        if len > 8 && seed.is_multiple_of(3) {
            // Make some of it look like STUN or ChannelData to get past the first check.
            data[0] = if seed.is_multiple_of(2) { 0x00 } else { 0x40 };
            data[4..8].copy_from_slice(&0x2112_a442u32.to_be_bytes());
        }
        let _ = server.handle_client(now, c.client, &data, &mut out);
        let _ = server.handle_peer(now, relays()[0], addr(PEER), &data, &mut out);
    }
    assert!(refusals(&server, Refusal::Malformed) > 0);
}

#[test]
fn a_header_length_that_does_not_cover_the_message_is_malformed() {
    let (mut server, now) = server(|_| {});
    let c = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    let request = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
    let mut out = vec![0u8; 2048];
    let mut longer = request.clone();
    longer.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]); // a SOFTWARE the header omits
    assert_eq!(
        server.handle_client(now, c.client, &longer, &mut out),
        Action::Nothing
    );
    let mut shorter = request.clone();
    shorter[3] = 0x04; // claims 4 bytes of attributes that are not there
    assert_eq!(
        server.handle_client(now, c.client, &shorter, &mut out),
        Action::Nothing
    );
    assert_eq!(refusals(&server, Refusal::Malformed), 2);
    assert!(
        c.send(&mut server, now, &request).is_some(),
        "the exact one is answered"
    );
}

#[test]
fn message_integrity_sha256_is_validated_and_answered_in_kind() {
    let (mut server, now) = server(|_| {});
    let mut c = TestClient::new("203.0.113.7:4000", "alice", "secret-pw");
    c.algorithm = IntegrityAlgorithm::Sha256;
    c.allocate(&mut server, now).unwrap();
    let reply = c.call(&mut server, now, REFRESH, &|_| {});
    let msg = Message::from_bytes(&reply).unwrap();
    assert!(msg.has_attribute(stun_types::attribute::MessageIntegritySha256::TYPE));
    assert!(!msg.has_attribute(stun_types::attribute::MessageIntegrity::TYPE));
    // A SHA-256 request with the wrong password is refused like a SHA-1 one.
    let mut d = TestClient::new("203.0.113.7:4001", "alice", "wrong");
    d.algorithm = IntegrityAlgorithm::Sha256;
    assert_eq!(d.allocate(&mut server, now), Err(401));
}
