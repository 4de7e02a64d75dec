//! The sans-IO TURN server: allocations, permissions, channels and authentication. It never
//! touches a socket or a clock: a message from a client or a datagram from a peer goes in,
//! with the time; what to send, and where, comes out.
//!
//! # Relay ports are shared
//!
//! Allocations share relay sockets: each new allocation gets the least loaded relay address,
//! so a small port range serves many more allocations than it has ports. A datagram from a
//! peer is delivered to the allocation that claimed that exact (relay address, peer address)
//! pair by sending to it, or else to the one allocation on that relay address with a
//! permission for the peer's IP. Two allocations on one relay address may therefore not
//! talk to the same peer address: the second one's Send, ChannelBind or ChannelData to it is
//! refused and counted (`tuple_conflict`), never delivered to the wrong client. With enough
//! ports every allocation gets one of its own and this never happens.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use stun_types::AddressFamily;
use stun_types::attribute::{
    AttributeStaticType, AttributeType, ErrorCode, MessageIntegrity, MessageIntegritySha256, Nonce,
    Realm, Software, Username, XorMappedAddress,
};
use stun_types::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass,
    MessageIntegrityCredentials, MessageWrite, MessageWriteExt, MessageWriteVec,
};
use turn_types::attribute::{
    ChannelNumber, Data, EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport,
    XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};

use crate::channel;
pub use crate::config::Config;
use crate::nonce::{NonceError, NonceKey};
use crate::ratelimit::{PrefixLimiter, TokenBucket};
pub use crate::report::{Action, Counters, Refusal};

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Stream transports pad ChannelData to four bytes.
    fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// A client's 5-tuple: its transport, its address, and the server address it talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    pub transport: Transport,
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

/// A permission or channel lifetime, and the allocation's own.
struct Allocation {
    client: Client,
    username: String,
    relay: SocketAddr,
    expires: Instant,
    permissions: Vec<(IpAddr, Instant)>,
    channels: Vec<Bound>,
    /// Peer addresses this allocation claimed on its relay address.
    claims: Vec<SocketAddr>,
    bucket: Option<TokenBucket>,
}

/// A channel binding.
#[derive(Debug, Clone, Copy)]
struct Bound {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

/// Comprehension-required attributes this server understands (RFC 8489 §14 and RFC 8656
/// §18): MAPPED-ADDRESS, USERNAME, MESSAGE-INTEGRITY, ERROR-CODE, UNKNOWN-ATTRIBUTES,
/// CHANNEL-NUMBER, LIFETIME, XOR-PEER-ADDRESS, DATA, REALM, NONCE, XOR-RELAYED-ADDRESS,
/// REQUESTED-ADDRESS-FAMILY, REQUESTED-TRANSPORT, XOR-MAPPED-ADDRESS,
/// MESSAGE-INTEGRITY-SHA256, PASSWORD-ALGORITHM, USERHASH, and EVEN-PORT (an even relay
/// port is chosen; a reservation of the next port is refused with 508). RESERVATION-TOKEN
/// and DONT-FRAGMENT are not among them (yet): a request with them gets 420.
const KNOWN: [u16; 19] = [
    0x0001, 0x0006, 0x0008, 0x0009, 0x000a, 0x000c, 0x000d, 0x0012, 0x0013, 0x0014, 0x0015, 0x0016,
    0x0017, 0x0018, 0x0019, 0x0020, 0x001c, 0x001d, 0x001e,
];

/// Most peer addresses one allocation claims; beyond, return traffic relies on the IP
/// permission alone.
const MAX_CLAIMS: usize = 64;

/// The smallest bandwidth burst: one full-size packet.
const MIN_BURST_BYTES: f64 = 1500.0;

/// Most permissions and channels per allocation.
const MAX_PERMISSIONS: usize = 64;
const MAX_CHANNELS: usize = 64;

/// The sans-IO TURN server.
pub struct Server {
    config: Config,
    nonces: NonceKey,
    unauthenticated: PrefixLimiter,
    start: Instant,
    unix_at_start: u64,
    allocations: Vec<Option<Allocation>>,
    free: Vec<usize>,
    by_client: HashMap<Client, usize>,
    by_pair: HashMap<(SocketAddr, SocketAddr), usize>,
    by_permission: HashMap<(SocketAddr, IpAddr), Vec<usize>>,
    per_user: HashMap<String, usize>,
    load: Vec<usize>,
    active: usize,
    next_sweep: Instant,
    pub counters: Counters,
}

impl Server {
    /// A server started at `now`, which is `unix_now` seconds after the Unix epoch.
    pub fn new(config: Config, now: Instant, unix_now: u64) -> Self {
        let nonces = NonceKey::random(config.nonce_lifetime);
        let per_prefix = config.unauthenticated_per_prefix;
        let total = config.unauthenticated_total;
        let load = vec![0; config.relays.len()];
        Server {
            nonces,
            unauthenticated: PrefixLimiter::new(per_prefix, per_prefix, total, total, 65_536),
            config,
            start: now,
            unix_at_start: unix_now,
            allocations: Vec::new(),
            free: Vec::new(),
            by_client: HashMap::new(),
            by_pair: HashMap::new(),
            by_permission: HashMap::new(),
            per_user: HashMap::new(),
            load,
            active: 0,
            next_sweep: now + Duration::from_secs(1),
            counters: Counters::default(),
        }
    }

    /// Allocations alive now.
    pub fn allocations(&self) -> usize {
        self.active
    }

    /// A message from `client`: a STUN request or indication, or ChannelData (on streams,
    /// one framed message). Replies are written into `out`.
    pub fn handle_client(
        &mut self,
        now: Instant,
        client: Client,
        data: &[u8],
        out: &mut [u8],
    ) -> Action {
        if channel::is_channel_data(data) {
            return self.channel_data(now, client, data);
        }
        // The header's length must cover the message exactly: stun-types reads attributes to
        // the end of the buffer whatever the header says.
        let declared = data
            .get(2..4)
            .map(|l| 20 + usize::from(u16::from_be_bytes([l[0], l[1]])));
        let Some(msg) = (declared == Some(data.len()))
            .then(|| Message::from_bytes(data).ok())
            .flatten()
        else {
            self.counters.refuse(Refusal::Malformed);
            return Action::Nothing;
        };
        if msg.has_class(MessageClass::Indication) {
            return if msg.has_method(SEND) {
                self.send_indication(now, client, &msg)
            } else {
                Action::Nothing
            };
        }
        if !msg.has_class(MessageClass::Request) {
            return Action::Nothing;
        }
        let unknown: Vec<AttributeType> = msg
            .iter_attributes()
            .map(|(_, raw)| raw.header.get_type())
            .filter(|t| t.comprehension_required() && !KNOWN.contains(&t.value()))
            .collect();
        if !unknown.is_empty() {
            tracing::debug!(client = %client.remote, ?unknown, "unknown comprehension-required attributes");
            let reply = Message::unknown_attributes(&msg, &unknown, MessageWriteVec::new());
            return self.reply(client, out, self.finish(reply, None));
        }
        let reply = if msg.has_method(BINDING) {
            self.binding(client, &msg)
        } else if [ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND]
            .iter()
            .any(|m| msg.has_method(*m))
        {
            self.authenticated(now, client, &msg)
        } else {
            Some(self.error(&msg, ErrorCode::BAD_REQUEST, None))
        };
        self.reply(client, out, reply)
    }

    /// Copies a control reply into `out`.
    fn reply(&self, client: Client, out: &mut [u8], reply: Option<Vec<u8>>) -> Action {
        match reply {
            Some(bytes) if bytes.len() <= out.len() => {
                out[..bytes.len()].copy_from_slice(&bytes);
                Action::Reply {
                    to: client,
                    len: bytes.len(),
                }
            }
            _ => Action::Nothing,
        }
    }

    /// A datagram from `peer` arrived on relay address `relay`. What goes to the client is
    /// written into `out`.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        out: &mut [u8],
    ) -> Action {
        let slot = match self.by_pair.get(&(relay, peer)) {
            Some(slot) => Some(*slot),
            None => match self
                .by_permission
                .get(&(relay, peer.ip()))
                .map(Vec::as_slice)
            {
                Some([only]) => Some(*only),
                Some([_, _, ..]) => {
                    self.counters.refuse(Refusal::TupleConflict);
                    return Action::Nothing;
                }
                _ => None,
            },
        };
        let Some(a) = slot
            .and_then(|s| self.allocations.get_mut(s))
            .and_then(Option::as_mut)
        else {
            self.counters.refuse(Refusal::NoPermission);
            return Action::Nothing;
        };
        if !a
            .permissions
            .iter()
            .any(|(ip, exp)| *ip == peer.ip() && *exp > now)
        {
            self.counters.refuse(Refusal::NoPermission);
            return Action::Nothing;
        }
        if let Some(bucket) = &mut a.bucket
            && !bucket.take(now, data.len() as f64)
        {
            self.counters.refuse(Refusal::Bandwidth);
            return Action::Nothing;
        }
        let to = a.client;
        let channel = a
            .channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
            .map(|c| c.number);
        let len = match channel {
            Some(number) => channel::write(out, number, data, to.transport.is_stream()),
            None => {
                let mut transaction = [0u8; 12];
                rand::fill(&mut transaction);
                channel::write_data_indication(out, transaction, peer, data)
            }
        };
        match len {
            Some(len) => {
                self.counters.relayed_packets += 1;
                self.counters.relayed_bytes += data.len() as u64;
                Action::Reply { to, len }
            }
            None => Action::Nothing,
        }
    }

    /// A stream client's connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn client_closed(&mut self, client: Client) {
        if let Some(slot) = self.by_client.get(&client).copied() {
            self.delete(slot);
        }
    }

    /// When to call [`Server::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_sweep
    }

    /// Expires allocations, permissions and channels whose lifetime passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + Duration::from_secs(1);
        for slot in 0..self.allocations.len() {
            let Some(a) = self.allocations[slot].as_mut() else {
                continue;
            };
            if a.expires <= now {
                self.delete(slot);
                continue;
            }
            let relay = a.relay;
            let mut gone: Vec<IpAddr> = Vec::new();
            a.permissions.retain(|(ip, exp)| {
                let keep = *exp > now;
                if !keep {
                    gone.push(*ip);
                }
                keep
            });
            a.channels.retain(|c| c.expires > now);
            for ip in gone {
                a.claims.retain(|p| {
                    let keep = p.ip() != ip;
                    if !keep {
                        self.by_pair.remove(&(relay, *p));
                    }
                    keep
                });
                if let Some(v) = self.by_permission.get_mut(&(relay, ip)) {
                    v.retain(|s| *s != slot);
                    if v.is_empty() {
                        self.by_permission.remove(&(relay, ip));
                    }
                }
            }
        }
    }

    fn unix_now(&self, now: Instant) -> u64 {
        self.unix_at_start + now.saturating_duration_since(self.start).as_secs()
    }

    fn nonce_clock(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    fn binding(&mut self, client: Client, msg: &Message) -> Option<Vec<u8>> {
        let mut w = Message::builder_success(msg, MessageWriteVec::new());
        let mapped = XorMappedAddress::new(client.remote, msg.transaction_id());
        w.add_attribute(&mapped).ok()?;
        self.finish(w, None)
    }

    /// The four methods that need long-term credentials.
    fn authenticated(&mut self, now: Instant, client: Client, msg: &Message) -> Option<Vec<u8>> {
        let has_integrity = msg.has_attribute(MessageIntegrity::TYPE)
            || msg.has_attribute(MessageIntegritySha256::TYPE);
        if !has_integrity {
            return self.challenge(now, client, msg, ErrorCode::UNAUTHORIZED);
        }
        let (Ok(username), Ok(_realm), Ok(nonce)) = (
            msg.attribute::<Username>(),
            msg.attribute::<Realm>(),
            msg.attribute::<Nonce>(),
        ) else {
            self.counters.refuse(Refusal::Malformed);
            return Some(self.error(msg, ErrorCode::BAD_REQUEST, None));
        };
        match self
            .nonces
            .check(nonce.nonce(), client.remote.ip(), self.nonce_clock(now))
        {
            Ok(()) => {}
            Err(NonceError::Stale) => {
                return self.challenge(now, client, msg, ErrorCode::STALE_NONCE);
            }
            Err(_) => {
                self.counters.refuse(Refusal::BadNonce);
                return self.challenge(now, client, msg, ErrorCode::STALE_NONCE);
            }
        }
        let username = username.username().to_owned();
        let realm = self.config.credentials.realm().to_owned();
        let passwords = match self
            .config
            .credentials
            .passwords(&username, self.unix_now(now))
        {
            Ok(p) => p,
            Err(failure) => {
                self.counters.refuse(Refusal::Auth(failure));
                return self.challenge(now, client, msg, ErrorCode::UNAUTHORIZED);
            }
        };
        let password = passwords.into_iter().find(|p| {
            let credentials: MessageIntegrityCredentials =
                LongTermKeyCredentials::new(username.clone(), p.clone(), realm.clone()).into();
            msg.validate_integrity(&credentials).is_ok()
        });
        let Some(password) = password else {
            self.counters.refuse(Refusal::BadIntegrity);
            return self.challenge(now, client, msg, ErrorCode::UNAUTHORIZED);
        };
        let algorithm = if msg.has_attribute(MessageIntegritySha256::TYPE) {
            IntegrityAlgorithm::Sha256
        } else {
            IntegrityAlgorithm::Sha1
        };
        let key = Key {
            credentials: LongTermKeyCredentials::new(username.clone(), password, realm).into(),
            algorithm,
        };
        let slot = self.by_client.get(&client).copied();
        if let Some(slot) = slot {
            let owner = self.allocations[slot].as_ref().map(|a| a.username.as_str());
            if owner != Some(username.as_str()) {
                self.counters.refuse(Refusal::WrongCredentials);
                return Some(self.error(msg, ErrorCode::WRONG_CREDENTIALS, Some(&key)));
            }
        }
        if msg.has_method(ALLOCATE) {
            self.allocate(now, client, msg, username, &key)
        } else {
            let Some(slot) = slot else {
                self.counters.refuse(Refusal::NoAllocation);
                return Some(self.error(msg, ErrorCode::ALLOCATION_MISMATCH, Some(&key)));
            };
            if msg.has_method(REFRESH) {
                self.refresh(now, slot, msg, &key)
            } else if msg.has_method(CREATE_PERMISSION) {
                self.create_permission(now, slot, msg, &key)
            } else {
                self.channel_bind(now, slot, msg, &key)
            }
        }
    }

    /// A 401 or 438 with a fresh nonce, unless unauthenticated answers are over their rate.
    fn challenge(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Message,
        code: u16,
    ) -> Option<Vec<u8>> {
        if !self.unauthenticated.allow(client.remote.ip(), now) {
            self.counters.refuse(Refusal::RateLimited);
            return None;
        }
        let nonce = self.nonces.issue(client.remote.ip(), self.nonce_clock(now));
        let mut w = Message::builder_error(msg, MessageWriteVec::new());
        w.add_attribute(&ErrorCode::builder(code).build().ok()?)
            .ok()?;
        w.add_attribute(&Realm::new(self.config.credentials.realm()).ok()?)
            .ok()?;
        w.add_attribute(&Nonce::new(&nonce).ok()?).ok()?;
        self.finish(w, None)
    }

    fn allocate(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Message,
        username: String,
        key: &Key,
    ) -> Option<Vec<u8>> {
        if self.by_client.contains_key(&client) {
            self.counters.refuse(Refusal::AllocationMismatch);
            return Some(self.error(msg, ErrorCode::ALLOCATION_MISMATCH, Some(key)));
        }
        match msg.attribute::<RequestedTransport>() {
            Ok(t) if t.protocol() == RequestedTransport::UDP => {}
            Ok(_) => {
                return Some(self.error(msg, ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL, Some(key)));
            }
            Err(_) => return Some(self.error(msg, ErrorCode::BAD_REQUEST, Some(key))),
        }
        let even = match msg.attribute::<EvenPort>() {
            Ok(e) if e.requested() => {
                // Reserving the next port means nothing when ports are shared.
                return Some(self.error(msg, ErrorCode::INSUFFICIENT_CAPACITY, Some(key)));
            }
            Ok(_) => true,
            Err(_) => false,
        };
        let family = msg
            .attribute::<RequestedAddressFamily>()
            .map(|f| f.family())
            .unwrap_or(AddressFamily::IPV4);
        let v6 = family == AddressFamily::IPV6;
        let relay = (0..self.config.relays.len())
            .filter(|i| self.config.relays[*i].is_ipv6() == v6)
            .filter(|i| !even || self.config.relays[*i].port().is_multiple_of(2))
            .min_by_key(|i| self.load[*i]);
        let Some(relay_index) = relay else {
            return Some(self.error(msg, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED, Some(key)));
        };
        let user_count = self.per_user.get(&username).copied().unwrap_or(0);
        if self.active >= self.config.max_allocations
            || user_count >= self.config.max_allocations_per_user
        {
            self.counters.refuse(Refusal::Quota);
            return Some(self.error(msg, ErrorCode::ALLOCATION_QUOTA_REACHED, Some(key)));
        }
        let lifetime = self.lifetime(msg);
        let relay = self.config.relays[relay_index];
        let allocation = Allocation {
            client,
            username: username.clone(),
            relay,
            expires: now + lifetime,
            permissions: Vec::new(),
            channels: Vec::new(),
            claims: Vec::new(),
            bucket: self
                .config
                .max_bytes_per_sec
                // A burst of at least one full-size packet, or those could never pass.
                .map(|b| TokenBucket::new(b as f64, (b as f64).max(MIN_BURST_BYTES))),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.allocations[slot] = Some(allocation);
                slot
            }
            None => {
                self.allocations.push(Some(allocation));
                self.allocations.len() - 1
            }
        };
        self.by_client.insert(client, slot);
        *self.per_user.entry(username).or_default() += 1;
        self.load[relay_index] += 1;
        self.active += 1;
        self.counters.allocations_total += 1;
        let mut w = Message::builder_success(msg, MessageWriteVec::new());
        let t = msg.transaction_id();
        w.add_attribute(&XorRelayedAddress::new(relay, t)).ok()?;
        w.add_attribute(&Lifetime::new(lifetime.as_secs() as u32))
            .ok()?;
        w.add_attribute(&XorMappedAddress::new(client.remote, t))
            .ok()?;
        self.finish(w, Some(key))
    }

    /// The granted lifetime: the requested one, at least the default, at most the maximum.
    fn lifetime(&self, msg: &Message) -> Duration {
        let requested = msg
            .attribute::<Lifetime>()
            .map(|l| Duration::from_secs(u64::from(l.seconds())))
            .unwrap_or(self.config.default_lifetime);
        requested
            .max(self.config.default_lifetime)
            .min(self.config.max_lifetime)
    }

    fn refresh(&mut self, now: Instant, slot: usize, msg: &Message, key: &Key) -> Option<Vec<u8>> {
        let requested = msg.attribute::<Lifetime>().map(|l| l.seconds()).ok();
        let seconds = if requested == Some(0) {
            self.delete(slot);
            0
        } else {
            let lifetime = self.lifetime(msg);
            if let Some(a) = self.allocations[slot].as_mut() {
                a.expires = now + lifetime;
            }
            lifetime.as_secs() as u32
        };
        let mut w = Message::builder_success(msg, MessageWriteVec::new());
        w.add_attribute(&Lifetime::new(seconds)).ok()?;
        self.finish(w, Some(key))
    }

    fn create_permission(
        &mut self,
        now: Instant,
        slot: usize,
        msg: &Message,
        key: &Key,
    ) -> Option<Vec<u8>> {
        let t = msg.transaction_id();
        let peers: Vec<SocketAddr> = (0..MAX_PERMISSIONS)
            .map_while(|n| msg.nth_attribute::<XorPeerAddress>(n).ok())
            .map(|x| x.addr(t))
            .collect();
        if peers.is_empty() {
            return Some(self.error(msg, ErrorCode::BAD_REQUEST, Some(key)));
        }
        for peer in &peers {
            if let Some(code) = self.check_peer(slot, *peer, false) {
                return Some(self.error(msg, code, Some(key)));
            }
        }
        for peer in peers {
            if !self.permit(now, slot, peer.ip()) {
                return Some(self.error(msg, ErrorCode::INSUFFICIENT_CAPACITY, Some(key)));
            }
        }
        let w = Message::builder_success(msg, MessageWriteVec::new());
        self.finish(w, Some(key))
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        slot: usize,
        msg: &Message,
        key: &Key,
    ) -> Option<Vec<u8>> {
        let t = msg.transaction_id();
        let (Ok(number), Ok(peer)) = (
            msg.attribute::<ChannelNumber>(),
            msg.attribute::<XorPeerAddress>(),
        ) else {
            return Some(self.error(msg, ErrorCode::BAD_REQUEST, Some(key)));
        };
        let (number, peer) = (number.channel(), peer.addr(t));
        if !channel::CHANNELS.contains(&number) {
            return Some(self.error(msg, ErrorCode::BAD_REQUEST, Some(key)));
        }
        if let Some(code) = self.check_peer(slot, peer, true) {
            return Some(self.error(msg, code, Some(key)));
        }
        let a = self.allocations[slot].as_ref()?;
        // A channel is bound to one peer, and a peer to one channel, for its lifetime.
        let clash = a
            .channels
            .iter()
            .any(|c| (c.number == number) != (c.peer == peer));
        if clash {
            return Some(self.error(msg, ErrorCode::BAD_REQUEST, Some(key)));
        }
        if !self.claim(slot, peer) {
            self.counters.refuse(Refusal::TupleConflict);
            return Some(self.error(msg, ErrorCode::INSUFFICIENT_CAPACITY, Some(key)));
        }
        if !self.permit(now, slot, peer.ip()) {
            return Some(self.error(msg, ErrorCode::INSUFFICIENT_CAPACITY, Some(key)));
        }
        let expires = now + self.config.channel_lifetime;
        let a = self.allocations[slot].as_mut()?;
        let count = a.channels.len();
        match a.channels.iter_mut().find(|c| c.number == number) {
            Some(c) => c.expires = expires,
            None if count < MAX_CHANNELS => a.channels.push(Bound {
                number,
                peer,
                expires,
            }),
            None => return Some(self.error(msg, ErrorCode::INSUFFICIENT_CAPACITY, Some(key))),
        }
        let w = Message::builder_success(msg, MessageWriteVec::new());
        self.finish(w, Some(key))
    }

    /// The error code refusing `peer` for allocation `slot`, if any: a family other than
    /// the relay's (443), or an address the policy denies (403, counted). A permission
    /// (`with_port` false) names no port: its peer is judged whatever the port.
    fn check_peer(&mut self, slot: usize, peer: SocketAddr, with_port: bool) -> Option<u16> {
        let relay = self.allocations[slot].as_ref()?.relay;
        if relay.is_ipv6() != peer.is_ipv6() {
            return Some(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        let judged = if with_port {
            self.config.policy.check_addr(peer)
        } else {
            self.config.policy.check(peer.ip())
        };
        match judged {
            Ok(()) => None,
            Err(refusal) => {
                self.counters.refuse(Refusal::Peer(refusal));
                Some(ErrorCode::FORBIDDEN)
            }
        }
    }

    /// Installs or refreshes a permission; false when the allocation has too many.
    fn permit(&mut self, now: Instant, slot: usize, ip: IpAddr) -> bool {
        let expires = now + self.config.permission_lifetime;
        let Some(a) = self.allocations[slot].as_mut() else {
            return false;
        };
        if let Some(p) = a.permissions.iter_mut().find(|(p, _)| *p == ip) {
            p.1 = expires;
            return true;
        }
        if a.permissions.len() >= MAX_PERMISSIONS {
            return false;
        }
        a.permissions.push((ip, expires));
        self.by_permission
            .entry((a.relay, ip))
            .or_default()
            .push(slot);
        true
    }

    /// Claims (relay, peer) for allocation `slot`; false if another allocation holds it.
    fn claim(&mut self, slot: usize, peer: SocketAddr) -> bool {
        let Some(a) = self.allocations[slot].as_mut() else {
            return false;
        };
        match self.by_pair.get(&(a.relay, peer)) {
            Some(owner) => *owner == slot,
            None => {
                if a.claims.len() < MAX_CLAIMS {
                    a.claims.push(peer);
                    self.by_pair.insert((a.relay, peer), slot);
                }
                true
            }
        }
    }

    fn send_indication(&mut self, now: Instant, client: Client, msg: &Message) -> Action {
        let Some(&slot) = self.by_client.get(&client) else {
            self.counters.refuse(Refusal::NoAllocation);
            return Action::Nothing;
        };
        let t = msg.transaction_id();
        let Ok(peer) = msg.attribute::<XorPeerAddress>().map(|p| p.addr(t)) else {
            self.counters.refuse(Refusal::Malformed);
            return Action::Nothing;
        };
        let Some((offset, data)) = msg.raw_attribute_and_offset(Data::TYPE) else {
            self.counters.refuse(Refusal::Malformed);
            return Action::Nothing;
        };
        // The permission admitted the peer's address; its port is judged here (the
        // relay's own addresses are open on some ports only).
        if let Err(refusal) = self.config.policy.check_own_port(peer) {
            self.counters.refuse(Refusal::Peer(refusal));
            return Action::Nothing;
        }
        let start = offset + 4;
        let range = start..start + data.value.len();
        self.relay_out(now, slot, peer, range)
    }

    fn channel_data(&mut self, now: Instant, client: Client, data: &[u8]) -> Action {
        let Some((number, range)) = channel::parse(data) else {
            self.counters.refuse(Refusal::Malformed);
            return Action::Nothing;
        };
        let Some(&slot) = self.by_client.get(&client) else {
            self.counters.refuse(Refusal::NoAllocation);
            return Action::Nothing;
        };
        let peer = self.allocations[slot].as_ref().and_then(|a| {
            a.channels
                .iter()
                .find(|c| c.number == number && c.expires > now)
                .map(|c| c.peer)
        });
        let Some(peer) = peer else {
            self.counters.refuse(Refusal::NoPermission);
            return Action::Nothing;
        };
        self.relay_out(now, slot, peer, range)
    }

    /// Relays `range` of the client's message to `peer`, if permitted.
    fn relay_out(
        &mut self,
        now: Instant,
        slot: usize,
        peer: SocketAddr,
        range: Range<usize>,
    ) -> Action {
        if !self.claim(slot, peer) {
            self.counters.refuse(Refusal::TupleConflict);
            return Action::Nothing;
        }
        let Some(a) = self.allocations[slot].as_mut() else {
            return Action::Nothing;
        };
        if !a
            .permissions
            .iter()
            .any(|(ip, exp)| *ip == peer.ip() && *exp > now)
        {
            self.counters.refuse(Refusal::NoPermission);
            return Action::Nothing;
        }
        let len = range.len();
        if let Some(bucket) = &mut a.bucket
            && !bucket.take(now, len as f64)
        {
            self.counters.refuse(Refusal::Bandwidth);
            return Action::Nothing;
        }
        self.counters.relayed_packets += 1;
        self.counters.relayed_bytes += len as u64;
        Action::Relay {
            relay: a.relay,
            peer,
            range,
        }
    }

    /// Removes an allocation and everything that points at it.
    fn delete(&mut self, slot: usize) {
        let Some(a) = self.allocations.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.by_client.remove(&a.client);
        for peer in &a.claims {
            self.by_pair.remove(&(a.relay, *peer));
        }
        for (ip, _) in &a.permissions {
            if let Some(v) = self.by_permission.get_mut(&(a.relay, *ip)) {
                v.retain(|s| *s != slot);
                if v.is_empty() {
                    self.by_permission.remove(&(a.relay, *ip));
                }
            }
        }
        if let Some(n) = self.per_user.get_mut(&a.username) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&a.username);
            }
        }
        if let Some(i) = self.config.relays.iter().position(|r| *r == a.relay) {
            self.load[i] = self.load[i].saturating_sub(1);
        }
        self.active -= 1;
        self.free.push(slot);
    }

    /// An error response, signed when the request was authenticated.
    fn error(&self, msg: &Message, code: u16, key: Option<&Key>) -> Vec<u8> {
        let mut w = Message::builder_error(msg, MessageWriteVec::new());
        if let Ok(e) = ErrorCode::builder(code).build() {
            let _ = w.add_attribute(&e);
        }
        self.finish(w, key).unwrap_or_default()
    }

    /// Adds SOFTWARE, MESSAGE-INTEGRITY (when authenticated) and FINGERPRINT.
    fn finish(&self, mut w: MessageWriteVec, key: Option<&Key>) -> Option<Vec<u8>> {
        if let Some(software) = &self.config.software {
            w.add_attribute(&Software::new(software).ok()?).ok()?;
        }
        if let Some(key) = key {
            w.add_message_integrity(&key.credentials, key.algorithm)
                .ok()?;
        }
        w.add_fingerprint().ok()?;
        Some(w.finish())
    }
}

/// The credentials a request authenticated with, to sign its response alike.
struct Key {
    credentials: MessageIntegrityCredentials,
    algorithm: IntegrityAlgorithm,
}
