//! The TURN core as the turn targets drive it: a server configured as in `turn/tests/core.rs`,
//! clients on each transport, peers allowed and denied, and a client that signs its
//! requests with real long-term credentials, so that a fuzz input gets past
//! authentication to allocations, permissions and channels. Every action the core returns
//! is checked ([`Relay::check`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_types::attribute::{
    AttributeStaticType, AttributeType, ErrorCode, Fingerprint, MessageIntegrity,
    MessageIntegritySha256, Nonce, RawAttribute, Realm, Username,
};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageType, MessageWrite,
    MessageWriteExt, MessageWriteVec, Method, TransactionId,
};
use turn::auth::{Credentials, rest_password};
use turn::channel;
use turn::policy::PeerPolicy;
use turn::server::{Action, Client, Config, Server, Transport};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION};

pub const REALM: &str = "example.org";

/// The REST API secret (TURN REST credentials: `expiry:name`).
pub const REST_SECRET: &[u8] = b"rest-secret";

/// Relay addresses: two IPv4 ports (one even, one odd) and an IPv6 one.
pub const RELAYS: [&str; 3] = ["192.0.2.1:50000", "192.0.2.1:50001", "[2001:db8::1]:50000"];

/// Peers: allowed ones, private and loopback ones the policy denies, the relay itself,
/// IPv6 and IPv4-in-IPv6 forms.
pub const PEERS: [&str; 8] = [
    "198.51.100.20:9000",
    "198.51.100.21:9001",
    "10.0.0.1:80",
    "127.0.0.1:3478",
    "192.0.2.1:50001",
    "[2001:db8:1::20]:9000",
    "[::ffff:10.0.0.1]:80",
    "0.0.0.0:0",
];

/// Clients: two on UDP, one on TCP, one on TLS over IPv6.
pub const CLIENTS: [(Transport, &str); 4] = [
    (Transport::Udp, "203.0.113.7:4000"),
    (Transport::Udp, "203.0.113.8:4000"),
    (Transport::Tcp, "203.0.113.9:4001"),
    (Transport::Tls, "[2001:db8:2::7]:4002"),
];

/// Users a request can sign as: `(username, password)`. Alice and bob are long-term
/// users, carol has REST credentials that expire in 2286, dave's expired in 1970;
/// mallory is unknown, and the last signs as alice with a wrong password.
pub fn users() -> Vec<(String, String)> {
    let carol = "9999999999:carol";
    let dave = "1:dave";
    vec![
        ("alice".into(), "secret-pw".into()),
        ("bob".into(), "bob-pw".into()),
        (carol.into(), rest_password(REST_SECRET, carol)),
        (dave.into(), rest_password(REST_SECRET, dave)),
        ("mallory".into(), "x".into()),
        ("alice".into(), "wrong".into()),
    ]
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

pub fn client(i: usize) -> Client {
    let (transport, remote) = CLIENTS[i % CLIENTS.len()];
    let local = match transport {
        Transport::Tls => "[2001:db8::1]:5349",
        Transport::Tcp => "192.0.2.1:3478",
        Transport::Udp => "192.0.2.1:3478",
    };
    Client {
        transport,
        remote: addr(remote),
        local: addr(local),
    }
}

/// The TURN core, its clock, and the nonces its clients learned.
pub struct Relay {
    pub server: Server,
    pub now: Instant,
    nonces: HashMap<Client, String>,
    /// The output buffer, as large as the driver's.
    pub out: Vec<u8>,
    /// Transaction ids of signed requests count up from here.
    transactions: u128,
}

impl Relay {
    /// A server with the users above and the documentation ranges allowed as peers.
    pub fn new() -> Relay {
        let mut credentials = Credentials::new(REALM);
        credentials.add_user("alice", "secret-pw");
        credentials.add_user("bob", "bob-pw");
        credentials.add_secret(REST_SECRET);
        let allow = ["198.51.100.0/24", "2001:db8:1::/48"]
            .iter()
            .map(|c| c.parse().expect("a prefix"))
            .collect();
        let relays: Vec<SocketAddr> = RELAYS.iter().map(|r| addr(r)).collect();
        let own: Vec<_> = relays.iter().map(SocketAddr::ip).collect();
        let policy = PeerPolicy::new(allow, vec![]).with_own(&own, vec![50_000..=50_001]);
        let mut config = Config::new(credentials, policy, relays);
        config.max_allocations_per_user = 2;
        config.max_bytes_per_sec = Some(100_000);
        let now = Instant::now();
        Relay {
            server: Server::new(config, now, 1_700_000_000),
            now,
            nonces: HashMap::new(),
            out: vec![0u8; 65_536 + 64],
            transactions: 0x0102_0304_0506_0708_090a_0b0c,
        }
    }

    /// A message from client `c`; the action, checked.
    pub fn from_client(&mut self, c: Client, data: &[u8]) -> Action {
        let action = self.server.handle_client(self.now, c, data, &mut self.out);
        self.check(&action, data.len(), Some(c));
        if let Action::Reply { len, .. } = action
            && let Ok(msg) = Message::from_bytes(&self.out[..len])
            && let Ok(nonce) = msg.attribute::<Nonce>()
        {
            self.nonces.insert(c, nonce.nonce().to_owned());
        }
        action
    }

    /// A datagram from `peer` on relay address `relay`; the action, checked.
    pub fn from_peer(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) -> Action {
        let action = self
            .server
            .handle_peer(self.now, relay, peer, data, &mut self.out);
        self.check(&action, data.len(), None);
        if let Action::Reply { len, .. } = action {
            // What goes to the client carries the peer's datagram as it was.
            let reply = &self.out[..len];
            let carried = if channel::is_channel_data(reply) {
                channel::parse(reply).map(|(_, range)| reply[range].to_vec())
            } else {
                Message::from_bytes(reply).ok().and_then(|m| {
                    m.attribute::<turn_types::attribute::Data>()
                        .ok()
                        .map(|d| d.data().to_vec())
                })
            };
            assert_eq!(
                carried.as_deref(),
                Some(data),
                "a peer's datagram is relayed as it came"
            );
        }
        action
    }

    /// Time passes; the core expires what is due.
    pub fn wait(&mut self, seconds: u16) {
        self.now += Duration::from_secs(u64::from(seconds));
        if self.now >= self.server.poll_timeout() {
            self.server.handle_timeout(self.now);
        }
    }

    /// A request of `method` from client `c`, signed as `user` (an index into [`users`])
    /// with the nonce the client last learned (after asking for one if it has none), with
    /// the attributes in `tlvs` (type, one-byte length, value; integrity and fingerprint
    /// types are left out: they are the signer's).
    pub fn signed(
        &mut self,
        c: Client,
        method: Method,
        user: usize,
        sha256: bool,
        tlvs: &[u8],
    ) -> Action {
        if !self.nonces.contains_key(&c) {
            let ask = self.request(method, tlvs, None, sha256);
            self.from_client(c, &ask);
        }
        let users = users();
        let (name, password) = &users[user % users.len()];
        let nonce = self.nonces.get(&c).cloned().unwrap_or_default();
        let signed = self.request(method, tlvs, Some((name, password, &nonce)), sha256);
        self.from_client(c, &signed)
    }

    /// Builds a request; signed when given a user, password and nonce.
    pub fn request(
        &mut self,
        method: Method,
        tlvs: &[u8],
        signer: Option<(&str, &str, &str)>,
        sha256: bool,
    ) -> Vec<u8> {
        self.transactions += 1;
        let mtype = MessageType::from_class_method(MessageClass::Request, method);
        let mut w = Message::builder(
            mtype,
            TransactionId::from(self.transactions),
            MessageWriteVec::new(),
        );
        for (atype, value) in attributes(tlvs) {
            let _ = w.add_attribute(&RawAttribute::new(atype, value));
        }
        if let Some((name, password, nonce)) = signer {
            if let (Ok(u), Ok(r), Ok(n)) =
                (Username::new(name), Realm::new(REALM), Nonce::new(nonce))
            {
                let _ = w.add_attribute(&u);
                let _ = w.add_attribute(&r);
                let _ = w.add_attribute(&n);
            }
            let credentials =
                LongTermKeyCredentials::new(name.into(), password.into(), REALM.into()).into();
            let algorithm = if sha256 {
                IntegrityAlgorithm::Sha256
            } else {
                IntegrityAlgorithm::Sha1
            };
            let _ = w.add_message_integrity(&credentials, algorithm);
        }
        let _ = w.add_fingerprint();
        w.finish()
    }

    /// Checks what the core says to do: a reply fits the buffer and is well-formed STUN
    /// with a FINGERPRINT (or ChannelData), goes back to the client that asked (for a
    /// client's message), and a relayed range lies within the input.
    pub fn check(&self, action: &Action, input_len: usize, asked: Option<Client>) {
        match action {
            Action::Nothing => {}
            Action::Reply { to, len } => {
                assert!(*len <= self.out.len());
                let reply = &self.out[..*len];
                if channel::is_channel_data(reply) {
                    assert!(
                        channel::parse(reply).is_some(),
                        "ChannelData the core wrote parses"
                    );
                    assert!(asked.is_none(), "ChannelData goes only to a peer's client");
                } else {
                    let msg = Message::from_bytes(reply).expect("a reply the core wrote parses");
                    let response =
                        msg.has_class(MessageClass::Success) || msg.has_class(MessageClass::Error);
                    if asked.is_some() {
                        assert!(response, "a client is answered with a response");
                        assert!(msg.has_attribute(Fingerprint::TYPE));
                        if let Ok(e) = msg.attribute::<ErrorCode>() {
                            assert!((300..700).contains(&e.code()));
                        }
                    }
                }
                if let Some(asked) = asked {
                    assert_eq!(*to, asked, "a reply goes to the client that asked");
                }
            }
            Action::Relay { range, .. } => {
                assert!(
                    asked.is_some(),
                    "only a client's message is relayed to a peer"
                );
                assert!(range.start <= range.end && range.end <= input_len);
            }
        }
    }
}

/// Allocations the datagram target starts from: `(client, peer with a permission and
/// channel, its channel number, peer with a permission only)`.
pub const ALLOCATED: [(usize, usize, u16, usize); 2] = [(0, 0, 0x4000, 1), (2, 1, 0x4001, 0)];

impl Relay {
    /// A server where client 0 (UDP) and client 2 (TCP) allocated, each permitted two
    /// peers and bound a channel to one ([`ALLOCATED`]), so that ChannelData, Send
    /// indications and peers' datagrams reach the relay path. Panics if the core refuses
    /// any of it: then the fixed setup itself is broken.
    pub fn allocated() -> Relay {
        let mut relay = Relay::new();
        for (c, channel_peer, number, other_peer) in ALLOCATED {
            let c = client(c);
            let transport = tlvs(&[(0x0019, &[17, 0, 0, 0])]);
            let steps = [
                (ALLOCATE, transport),
                (
                    CREATE_PERMISSION,
                    tlvs(&[(0x0012, &xor_peer_value(PEERS[other_peer]))]),
                ),
                (
                    CHANNEL_BIND,
                    tlvs(&[
                        (0x000c, &[(number >> 8) as u8, number as u8, 0, 0]),
                        (0x0012, &xor_peer_value(PEERS[channel_peer])),
                    ]),
                ),
            ];
            for (method, attributes) in steps {
                let action = relay.signed(c, method, 0, false, &attributes);
                let Action::Reply { len, .. } = action else {
                    panic!("setup: {method:?} unanswered");
                };
                let msg = Message::from_bytes(&relay.out[..len]).expect("a reply");
                assert!(
                    msg.has_class(MessageClass::Success),
                    "setup: {method:?} refused"
                );
            }
        }
        relay
    }
}

/// The value of an IPv4 XOR-PEER-ADDRESS (RFC 8489 §14.2: port and address XORed with
/// the magic cookie, so the same in every transaction).
pub fn xor_peer_value(peer: &str) -> Vec<u8> {
    let SocketAddr::V4(v4) = addr(peer) else {
        panic!("an IPv4 peer");
    };
    let mut v = vec![0, 0x01];
    v.extend_from_slice(&(v4.port() ^ 0x2112).to_be_bytes());
    v.extend_from_slice(&(u32::from(*v4.ip()) ^ 0x2112_a442).to_be_bytes());
    v
}

impl Default for Relay {
    fn default() -> Self {
        Relay::new()
    }
}

/// Attributes from `tlvs`: two bytes of type, one of length, then the value (cut where
/// the bytes end). Integrity and fingerprint types are skipped: only the signer adds them.
pub fn attributes(tlvs: &[u8]) -> Vec<(AttributeType, &[u8])> {
    let mut out = Vec::new();
    let mut rest = tlvs;
    while let [t0, t1, len, tail @ ..] = rest {
        let atype = AttributeType::new(u16::from_be_bytes([*t0, *t1]));
        let len = usize::from(*len).min(tail.len());
        let (value, tail) = tail.split_at(len);
        rest = tail;
        if [
            MessageIntegrity::TYPE,
            MessageIntegritySha256::TYPE,
            Fingerprint::TYPE,
        ]
        .contains(&atype)
        {
            continue;
        }
        out.push((atype, value));
    }
    out
}

/// Writes attributes in the format [`attributes`] reads.
pub fn tlvs(attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (atype, value) in attributes {
        out.extend_from_slice(&atype.to_be_bytes());
        out.push(u8::try_from(value.len()).expect("a value of at most 255 bytes"));
        out.extend_from_slice(value);
    }
    out
}
