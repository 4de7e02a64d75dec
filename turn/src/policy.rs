//! Which peer addresses the relay may send to: secure by default, with allow and deny rules.
//!
//! A TURN server is an open door into whatever network it sits in: without a policy, any
//! authenticated client can make it send to `127.0.0.1`, to the cloud metadata service at
//! `169.254.169.254`, or to the private network behind it. [`PeerPolicy`] refuses every
//! address that is not globally reachable unicast, by class ([`PeerRefusal`]), before any
//! permission or channel is created.
//!
//! IPv6 addresses that carry an IPv4 address inside them are judged by that IPv4 address
//! too (the coturn CVE-2020-26262 and CVE-2026-27624 class): IPv4-mapped `::ffff:a.b.c.d`,
//! IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::/48` and
//! Teredo `2001:0:SSSS:SSSS:…:CCCC:CCCC` (server and obfuscated client address).
//!
//! The relay's own addresses ([`PeerPolicy::with_own`]) are refused too, whatever their
//! class and whatever the allow rules say, except on the ports it exists to reach (the
//! embedded relay's: the SFU's media ports): otherwise a client could relay to the relay's
//! own listener, nest an allocation in an allocation, or reach the signaling port.
//!
//! The order of judgement in [`PeerPolicy::check_addr`] (and [`PeerPolicy::check`],
//! which judges an address whatever its port, for permissions):
//! 1. an IPv4-mapped IPv6 address is turned into its IPv4 address (they name the same host);
//! 2. one of the relay's own addresses is admitted on its open ports only
//!    ([`PeerRefusal::OwnAddress`] otherwise; `check` admits it when it has any);
//! 3. an allow rule that contains the address admits it, whatever its class;
//! 4. an address of a special-purpose class is refused with that class;
//! 5. a deny rule that contains the address, or an IPv4 address embedded in it, refuses it
//!    as [`PeerRefusal::Denied`];
//! 6. everything else is admitted.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

pub use crate::cidr::{Cidr, CidrError};
use crate::cidr::{canonical, mask_v4, mask_v6};

/// Why the relay refuses to send to a peer address: the class it belongs to, or an
/// explicit deny rule. Each variant is a metrics label ([`PeerRefusal::as_str`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRefusal {
    /// `0.0.0.0` or `::`.
    Unspecified,
    /// `127.0.0.0/8` or `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`) and IPv6 unique local `fc00::/7`.
    Private,
    /// `169.254/16` and `fe80::/10`.
    LinkLocal,
    /// `100.64/10`, carrier-grade NAT (RFC 6598).
    SharedAddressSpace,
    /// `224/4` and `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18/15` and `2001:2::/48`.
    Benchmarking,
    /// Every other special-purpose or unallocated range that is not globally reachable:
    /// `0/8`, `192.0.0/24`, `192.88.99/24`, `240/4`, IPv4-compatible `::/96`, local-use
    /// NAT64 `64:ff9b:1::/48`, discard-only `100::/64`, the IETF protocol assignments in
    /// `2001::/23` (ORCHID included) other than the globally reachable ones, site-local
    /// `fec0::/10`, and all IPv6 outside `2000::/3` not named above.
    Reserved,
    /// An explicit deny rule matched.
    Denied,
    /// One of the relay's own addresses, on a port it may not reach there.
    OwnAddress,
}

impl PeerRefusal {
    /// Every variant, in declaration order (to register metrics up front).
    pub const ALL: [PeerRefusal; 12] = [
        PeerRefusal::Unspecified,
        PeerRefusal::Loopback,
        PeerRefusal::Private,
        PeerRefusal::LinkLocal,
        PeerRefusal::SharedAddressSpace,
        PeerRefusal::Multicast,
        PeerRefusal::Broadcast,
        PeerRefusal::Documentation,
        PeerRefusal::Benchmarking,
        PeerRefusal::Reserved,
        PeerRefusal::Denied,
        PeerRefusal::OwnAddress,
    ];

    /// The metrics label: snake_case, stable.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRefusal::Unspecified => "unspecified",
            PeerRefusal::Loopback => "loopback",
            PeerRefusal::Private => "private",
            PeerRefusal::LinkLocal => "link_local",
            PeerRefusal::SharedAddressSpace => "shared_address_space",
            PeerRefusal::Multicast => "multicast",
            PeerRefusal::Broadcast => "broadcast",
            PeerRefusal::Documentation => "documentation",
            PeerRefusal::Benchmarking => "benchmarking",
            PeerRefusal::Reserved => "reserved",
            PeerRefusal::Denied => "denied",
            PeerRefusal::OwnAddress => "own_address",
        }
    }
}

impl fmt::Display for PeerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRefusal::Denied => f.write_str("peer address denied by a rule"),
            PeerRefusal::OwnAddress => f.write_str("peer is the relay's own address"),
            other => write!(f, "peer address is {}", other.as_str().replace('_', " ")),
        }
    }
}

impl std::error::Error for PeerRefusal {}

/// The relay's peer policy: special-purpose classes refused, plus operator allow and deny
/// rules. See the [module docs](self) for the order of judgement.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Prefixes admitted whatever their class (the SFU's own media addresses, loopback in
    /// tests).
    allow: Vec<Cidr>,
    /// Prefixes refused even when globally reachable.
    deny: Vec<Cidr>,
    /// The relay's own addresses (canonical), refused but on `open_ports`.
    own: Vec<IpAddr>,
    /// The ports of its own addresses it may reach (the SFU's media ports); none for a
    /// standalone relay.
    open_ports: Vec<RangeInclusive<u16>>,
}

impl PeerPolicy {
    /// A policy with these allow and deny rules on top of the secure defaults.
    pub fn new(allow: Vec<Cidr>, deny: Vec<Cidr>) -> Self {
        Self {
            allow,
            deny,
            own: Vec::new(),
            open_ports: Vec::new(),
        }
    }

    /// The same policy, refusing the relay's own addresses `own` except on `open_ports`.
    /// Unspecified addresses (`0.0.0.0`, `::`) in `own` are left out: they name no host.
    pub fn with_own(mut self, own: &[IpAddr], open_ports: Vec<RangeInclusive<u16>>) -> Self {
        for ip in own.iter().map(|ip| canonical(*ip)) {
            if !ip.is_unspecified() && !self.own.contains(&ip) {
                self.own.push(ip);
            }
        }
        self.open_ports = open_ports;
        self
    }

    /// Ok if the relay may send to `peer`: [`PeerPolicy::check`], and on the relay's own
    /// addresses only to their open ports.
    pub fn check_addr(&self, peer: SocketAddr) -> Result<(), PeerRefusal> {
        let ip = canonical(peer.ip());
        if self.own.contains(&ip) {
            return self.check_own_port(peer);
        }
        self.check(ip)
    }

    /// The port part of [`PeerPolicy::check_addr`] alone: on one of the relay's own
    /// addresses, only its open ports; any port elsewhere. For datagrams to a peer whose
    /// address a permission already admitted ([`PeerPolicy::check`]): a few comparisons,
    /// no classification, per datagram.
    pub fn check_own_port(&self, peer: SocketAddr) -> Result<(), PeerRefusal> {
        if self.own.is_empty() || !self.own.contains(&canonical(peer.ip())) {
            return Ok(());
        }
        if self.open_ports.iter().any(|r| r.contains(&peer.port())) {
            Ok(())
        } else {
            Err(PeerRefusal::OwnAddress)
        }
    }

    /// Ok if the relay may send to `ip` on some port (a permission names no port): one of
    /// its own addresses if it has open ports there. Allow rules win over every deny class
    /// (they let loopback through in tests); explicit deny rules apply to otherwise-public
    /// addresses, and also match an IPv4 address embedded in an IPv6 one.
    pub fn check(&self, ip: IpAddr) -> Result<(), PeerRefusal> {
        let ip = canonical(ip);
        if self.own.contains(&ip) {
            return if self.open_ports.is_empty() {
                Err(PeerRefusal::OwnAddress)
            } else {
                Ok(())
            };
        }
        if self.allow.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        if let Some(refusal) = classify(ip) {
            return Err(refusal);
        }
        if !self.deny.is_empty() {
            let embedded = embedded_v4(ip);
            let candidates =
                std::iter::once(ip).chain(embedded.into_iter().flatten().map(IpAddr::V4));
            for candidate in candidates {
                if self.deny.iter().any(|c| c.contains(candidate)) {
                    return Err(PeerRefusal::Denied);
                }
            }
        }
        Ok(())
    }

    /// The allow rules.
    pub fn allow(&self) -> &[Cidr] {
        &self.allow
    }

    /// The deny rules.
    pub fn deny(&self) -> &[Cidr] {
        &self.deny
    }

    /// The relay's own addresses, and the ports open on them.
    pub fn own(&self) -> (&[IpAddr], &[RangeInclusive<u16>]) {
        (&self.own, &self.open_ports)
    }
}

/// Whether the top `len` bits of `ip` equal those of `net` (a literal written in the table).
fn in_v4(ip: u32, net: [u8; 4], len: u8) -> bool {
    ip & mask_v4(len) == u32::from_be_bytes(net)
}

fn in_v6(ip: u128, net: u128, len: u8) -> bool {
    ip & mask_v6(len) == net
}

/// The special-purpose class of `ip` (already canonical), or `None` if globally reachable.
fn classify(ip: IpAddr) -> Option<PeerRefusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// The IANA IPv4 Special-Purpose Address Registry, as far as it concerns a relay: every
/// block that is not globally reachable unicast.
fn classify_v4(ip: Ipv4Addr) -> Option<PeerRefusal> {
    use PeerRefusal::*;
    let a = u32::from(ip);
    // Most specific first: 0.0.0.0/32 inside 0/8, 255.255.255.255 inside 240/4.
    const TABLE: &[([u8; 4], u8, PeerRefusal)] = &[
        ([0, 0, 0, 0], 32, Unspecified),
        ([255, 255, 255, 255], 32, Broadcast),
        ([0, 0, 0, 0], 8, Reserved), // "this network" (RFC 791)
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, SharedAddressSpace),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        // IETF protocol assignments: DS-Lite, PCP/TURN anycast, NAT64 discovery, … A relay
        // has no business with any of them, the anycast ones included.
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved), // deprecated 6to4 relay anycast (RFC 7526)
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved), // future use (RFC 1112)
    ];
    TABLE
        .iter()
        .find(|(net, len, _)| in_v4(a, *net, *len))
        .map(|(_, _, class)| *class)
}

/// The IANA IPv6 Special-Purpose Address Registry plus the IPv6 Address Space registry:
/// only `2000::/3` is global unicast; inside it the listed blocks are refused; addresses
/// with an embedded IPv4 address are judged by it.
fn classify_v6(ip: Ipv6Addr) -> Option<PeerRefusal> {
    use PeerRefusal::*;
    let a = u128::from(ip);

    if a == 0 {
        return Some(Unspecified);
    }
    if a == 1 {
        return Some(Loopback);
    }
    // Forms that carry an IPv4 address: a non-public embedded address decides the class.
    if let Some(class) = embedded_v4(IpAddr::V6(ip))
        .into_iter()
        .flatten()
        .find_map(classify_v4)
    {
        return Some(class);
    }

    // IPv4-compatible (::/96, deprecated by RFC 4291) with a public IPv4 address inside:
    // no host is reachable that way. IPv4-mapped never gets here (made canonical first).
    if in_v6(a, 0, 96) {
        return Some(Reserved);
    }
    // Well-known NAT64 prefix (RFC 6052): globally reachable when the IPv4 address is.
    if in_v6(a, 0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        return None;
    }
    if in_v6(a, 0xfe80 << 112, 10) {
        return Some(LinkLocal);
    }
    if in_v6(a, 0xfc00 << 112, 7) {
        return Some(Private);
    }
    if in_v6(a, 0xff00 << 112, 8) {
        return Some(Multicast);
    }
    // Everything else outside global unicast 2000::/3: site-local fec0::/10, discard-only
    // 100::/64, local-use NAT64 64:ff9b:1::/48, IPv4-translated ::ffff:0:0:0/96, SRv6 SIDs
    // 5f00::/16, and unallocated space.
    if !in_v6(a, 0x2000 << 112, 3) {
        return Some(Reserved);
    }

    if in_v6(a, 0x2001_0db8 << 96, 32) || in_v6(a, 0x3fff << 112, 20) {
        return Some(Documentation);
    }
    if in_v6(a, 0x2001_0002 << 96, 48) {
        return Some(Benchmarking);
    }
    if in_v6(a, 0x2001 << 112, 23) {
        return classify_ietf_assignment(a);
    }
    // 6to4 (2002::/16) was judged by its IPv4 address above.
    None
}

/// Inside `2001::/23` (IETF protocol assignments, not globally reachable by default): the
/// blocks the registry marks globally reachable, and Teredo (judged by its IPv4 addresses
/// already), are admitted; everything else (ORCHID, ORCHIDv2, unassigned) is reserved.
fn classify_ietf_assignment(a: u128) -> Option<PeerRefusal> {
    const GLOBAL: &[(u128, u8)] = &[
        (0x2001_0000 << 96, 32),                          // Teredo (RFC 4380)
        (0x2001_0001_0000_0000_0000_0000_0000_0001, 128), // PCP anycast (RFC 7723)
        (0x2001_0001_0000_0000_0000_0000_0000_0002, 128), // TURN anycast (RFC 8155)
        (0x2001_0001_0000_0000_0000_0000_0000_0003, 128), // DNS-SD SRP anycast (RFC 9665)
        (0x2001_0003 << 96, 32),                          // AMT (RFC 7450)
        (0x2001_0004_0112 << 80, 48),                     // AS112-v6 (RFC 7535)
        (0x2001_0030 << 96, 28),                          // DRIP entity tags (RFC 9374)
    ];
    if GLOBAL.iter().any(|(net, len)| in_v6(a, *net, *len)) {
        None
    } else {
        Some(PeerRefusal::Reserved)
    }
}

/// The IPv4 addresses embedded in an IPv6 address, by the transition mechanism its prefix
/// names: IPv4-mapped and IPv4-compatible (last 32 bits), NAT64 `64:ff9b::/96` (last 32
/// bits), 6to4 `2002::/16` (bits 16..48), Teredo `2001::/32` (server in bits 32..64,
/// client XOR `0xffffffff` in the last 32 bits). `::` and `::1` embed nothing.
fn embedded_v4(ip: IpAddr) -> [Option<Ipv4Addr>; 2] {
    let IpAddr::V6(v6) = ip else {
        return [None, None];
    };
    let a = u128::from(v6);
    let low32 = Ipv4Addr::from((a & 0xffff_ffff) as u32);
    if a > 1 && in_v6(a, 0, 96) {
        return [Some(low32), None]; // IPv4-compatible
    }
    if in_v6(a, 0xffff << 32, 96) {
        return [Some(low32), None]; // IPv4-mapped
    }
    if in_v6(a, 0x0064_ff9b << 96, 96) {
        return [Some(low32), None]; // NAT64 well-known prefix
    }
    if in_v6(a, 0x2002 << 112, 16) {
        return [Some(Ipv4Addr::from((a >> 80) as u32)), None]; // 6to4
    }
    if in_v6(a, 0x2001_0000 << 96, 32) {
        let server = Ipv4Addr::from((a >> 64) as u32);
        let client = Ipv4Addr::from(!((a & 0xffff_ffff) as u32));
        return [Some(server), Some(client)]; // Teredo
    }
    [None, None]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_addresses_are_open_only_on_their_open_ports() {
        // The embedded relay: its own addresses reach the media ports and nothing else,
        // even where an allow rule covers them, and whatever their class.
        let own = [ip("127.0.0.1"), ip("203.0.113.7"), ip("0.0.0.0")];
        let policy =
            PeerPolicy::new(vec![cidr("127.0.0.0/8")], vec![]).with_own(&own, vec![16384..=16584]);
        for peer in [
            "127.0.0.1:16384",
            "127.0.0.1:16584",
            "[::ffff:203.0.113.7]:16400",
        ] {
            assert_eq!(policy.check_addr(addr(peer)), Ok(()), "{peer}");
        }
        for peer in [
            "127.0.0.1:3478",
            "127.0.0.1:16383",
            "127.0.0.1:16585",
            "203.0.113.7:8080",
            "[::ffff:127.0.0.1]:5349",
        ] {
            assert_eq!(
                policy.check_addr(addr(peer)),
                Err(PeerRefusal::OwnAddress),
                "{peer}"
            );
        }
        // A permission names no port: an own address with open ports may have one.
        assert_eq!(policy.check(ip("203.0.113.7")), Ok(()));
        // Other addresses are judged as before: the allow rule, then the classes.
        assert_eq!(policy.check_addr(addr("127.0.0.2:3478")), Ok(()));
        assert_eq!(
            policy.check_addr(addr("10.0.0.1:16400")),
            Err(PeerRefusal::Private)
        );
        // The port alone, as each Send indication is judged after its permission.
        assert_eq!(policy.check_own_port(addr("127.0.0.1:16400")), Ok(()));
        assert_eq!(
            policy.check_own_port(addr("[::ffff:203.0.113.7]:3478")),
            Err(PeerRefusal::OwnAddress)
        );
        assert_eq!(
            policy.check_own_port(addr("10.0.0.1:3478")),
            Ok(()),
            "not its own"
        );
        // The unspecified address is no host: it stays refused by class.
        assert_eq!(policy.own().0, &[ip("127.0.0.1"), ip("203.0.113.7")]);
    }

    #[test]
    fn a_standalone_relay_refuses_its_own_addresses_on_every_port() {
        let policy = PeerPolicy::new(vec![cidr("198.51.100.0/24")], vec![])
            .with_own(&[ip("198.51.100.9"), ip("2001:db8::9")], vec![]);
        assert_eq!(
            policy.check(ip("198.51.100.9")),
            Err(PeerRefusal::OwnAddress)
        );
        assert_eq!(
            policy.check_addr(addr("[2001:db8::9]:3478")),
            Err(PeerRefusal::OwnAddress)
        );
        assert_eq!(policy.check(ip("198.51.100.10")), Ok(()));
    }

    fn default_check(s: &str) -> Result<(), PeerRefusal> {
        PeerPolicy::default().check(ip(s))
    }

    #[track_caller]
    fn refused(s: &str, want: PeerRefusal) {
        assert_eq!(default_check(s), Err(want), "{s}");
    }

    #[track_caller]
    fn admitted(s: &str) {
        assert_eq!(default_check(s), Ok(()), "{s}");
    }

    #[test]
    fn required_refusals() {
        use PeerRefusal::*;
        refused("127.0.0.1", Loopback);
        refused("10.0.0.1", Private);
        refused("172.16.5.4", Private);
        refused("192.168.1.1", Private);
        refused("169.254.169.254", LinkLocal);
        refused("100.64.0.1", SharedAddressSpace);
        refused("0.0.0.0", Unspecified);
        refused("255.255.255.255", Broadcast);
        refused("224.0.0.1", Multicast);
        refused("::1", Loopback);
        refused("::", Unspecified);
        refused("fe80::1", LinkLocal);
        refused("fc00::1", Private);
        refused("ff02::1", Multicast);
        refused("::ffff:127.0.0.1", Loopback);
        refused("::ffff:10.0.0.1", Private);
        refused("::ffff:169.254.169.254", LinkLocal);
        refused("::127.0.0.1", Loopback);
        refused("64:ff9b::7f00:1", Loopback);
        refused("2002:7f00:1::1", Loopback);
        refused("2001:db8::1", Documentation);
    }

    #[test]
    fn required_admissions() {
        admitted("8.8.8.8");
        admitted("1.1.1.1");
        admitted("2606:4700:4700::1111");
        admitted("::ffff:8.8.8.8");
    }

    #[test]
    fn ipv4_special_purpose_registry() {
        use PeerRefusal::*;
        for (addr, want) in [
            ("0.1.2.3", Reserved),
            ("0.255.255.255", Reserved),
            ("10.255.255.255", Private),
            ("100.127.255.255", SharedAddressSpace),
            ("127.255.255.254", Loopback),
            ("169.254.0.1", LinkLocal),
            ("172.31.255.255", Private),
            ("192.0.0.1", Reserved),
            ("192.0.0.9", Reserved),
            ("192.0.0.10", Reserved),
            ("192.0.0.170", Reserved),
            ("192.0.2.1", Documentation),
            ("192.88.99.1", Reserved),
            ("192.168.255.255", Private),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("224.0.0.251", Multicast),
            ("239.255.255.250", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.254", Reserved),
        ] {
            refused(addr, want);
        }
        // Just outside the blocks.
        for addr in [
            "1.0.0.0",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.0.3.0",
            "192.31.196.1", // AS112, globally reachable
            "192.52.193.1", // AMT, globally reachable
            "192.167.255.255",
            "192.169.0.0",
            "192.175.48.1", // AS112 direct delegation
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "203.0.112.255",
            "223.255.255.255",
        ] {
            admitted(addr);
        }
    }

    #[test]
    fn ipv6_special_purpose_registry() {
        use PeerRefusal::*;
        for (addr, want) in [
            ("::2", Reserved),                // IPv4-compatible of 0.0.0.2 ("this network")
            ("::8.8.8.8", Reserved),          // IPv4-compatible, public inside: still no
            ("::ffff:0:808:808", Reserved),   // IPv4-translated
            ("64:ff9b:1::808:808", Reserved), // local-use NAT64
            ("100::1", Reserved),             // discard-only
            ("2001:2::1", Benchmarking),
            ("2001:10::1", Reserved), // ORCHID (deprecated)
            ("2001:20::1", Reserved), // ORCHIDv2
            ("2001:1::4", Reserved),  // IETF assignment, not global
            ("2001:5::1", Reserved),
            ("2001:1ff:ffff::1", Reserved), // still inside 2001::/23
            ("2001:db8:ffff::1", Documentation),
            ("3fff::1", Documentation),
            ("3fff:fff:ffff::1", Documentation),
            ("5f00::1", Reserved), // SRv6 SIDs
            ("4000::1", Reserved), // unallocated
            ("fd12:3456::1", Private),
            ("fdff:ffff::1", Private),
            ("fe80::1:2", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", Reserved), // site-local (deprecated)
            ("ff05::1:3", Multicast),
            ("ff0e::1", Multicast),
        ] {
            refused(addr, want);
        }
        for addr in [
            "2001:200::1", // first regular allocation after 2001::/23
            "2001:1::1",   // PCP anycast
            "2001:1::2",   // TURN anycast
            "2001:3::1",   // AMT
            "2001:4:112::1",
            "2001:30::1",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
            "2620:4f:8000::1",
            "3ffe::1",
            "3fff:1000::1", // just after 3fff::/20
            "64:ff9b::808:808",
        ] {
            admitted(addr);
        }
    }

    #[test]
    fn embedded_ipv4_forms_are_judged_by_the_ipv4_address() {
        use PeerRefusal::*;
        // IPv4-mapped, every class.
        refused("::ffff:0.0.0.0", Unspecified);
        refused("::ffff:172.16.0.1", Private);
        refused("::ffff:192.168.0.1", Private);
        refused("::ffff:100.64.0.1", SharedAddressSpace);
        refused("::ffff:224.0.0.1", Multicast);
        refused("::ffff:255.255.255.255", Broadcast);
        refused("::ffff:192.0.2.1", Documentation);
        refused("::ffff:198.18.0.1", Benchmarking);
        refused("::ffff:240.0.0.1", Reserved);
        refused("::ffff:7f00:1", Loopback); // the same address written in hex
        // IPv4-compatible.
        refused("::10.0.0.1", Private);
        refused("::169.254.169.254", LinkLocal);
        refused("::0.0.0.2", Reserved);
        // NAT64 well-known prefix.
        refused("64:ff9b::10.0.0.1", Private);
        refused("64:ff9b::a9fe:a9fe", LinkLocal);
        refused("64:ff9b::", Unspecified);
        refused("64:ff9b::ffff:ffff", Broadcast);
        // 6to4: 2002:AABB:CCDD::/48.
        refused("2002:a00:1::1", Private);
        refused("2002:a9fe:a9fe::", LinkLocal);
        refused("2002:c0a8:101:1::1", Private);
        refused("2002::1", Unspecified);
        admitted("2002:808:808::1");
        // Teredo: server 127.0.0.1 in bits 32..64.
        refused("2001:0:7f00:1::1", Loopback);
        // Teredo: client 10.0.0.1 obfuscated in the last 32 bits (!0x0a000001 = f5ff:fffe).
        refused("2001:0:808:808:0:0:f5ff:fffe", Private);
        // Teredo: client 127.0.0.1 = !0x7f000001 = 80ff:fffe.
        refused("2001:0:808:808::80ff:fffe", Loopback);
        // Teredo with public server and client (client 8.8.4.4 = !0x08080404 = f7f7:fbfb).
        admitted("2001:0:808:808:8000:f227:f7f7:fbfb");
        // Teredo with an all-zero client is 255.255.255.255 once de-obfuscated.
        refused("2001:0:808:808::", Broadcast);
    }

    #[test]
    fn allow_rules_win_and_match_the_mapped_form() {
        let policy = PeerPolicy::new(vec![cidr("127.0.0.0/8")], vec![]);
        assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("127.8.9.10")), Ok(()));
        // Only the mapped form is the same host; other embeddings are not admitted by it.
        assert_eq!(
            policy.check(ip("64:ff9b::7f00:1")),
            Err(PeerRefusal::Loopback)
        );
        assert_eq!(
            policy.check(ip("2002:7f00:1::1")),
            Err(PeerRefusal::Loopback)
        );
        assert_eq!(policy.check(ip("::1")), Err(PeerRefusal::Loopback));
        assert_eq!(policy.check(ip("10.0.0.1")), Err(PeerRefusal::Private));

        // An allow rule written in mapped form is the IPv4 rule.
        let policy = PeerPolicy::new(vec![cidr("::ffff:10.1.2.0/120")], vec![]);
        assert_eq!(policy.check(ip("10.1.2.3")), Ok(()));
        assert_eq!(policy.check(ip("::ffff:10.1.2.3")), Ok(()));
        assert_eq!(policy.check(ip("10.1.3.3")), Err(PeerRefusal::Private));

        // IPv6 allow.
        let policy = PeerPolicy::new(vec![cidr("::1")], vec![]);
        assert_eq!(policy.check(ip("::1")), Ok(()));
        assert_eq!(policy.check(ip("127.0.0.1")), Err(PeerRefusal::Loopback));

        // Allow also beats a deny rule.
        let policy = PeerPolicy::new(vec![cidr("8.8.8.8")], vec![cidr("8.8.8.0/24")]);
        assert_eq!(policy.check(ip("8.8.8.8")), Ok(()));
        assert_eq!(policy.check(ip("8.8.8.9")), Err(PeerRefusal::Denied));
    }

    #[test]
    fn deny_rules_refuse_public_addresses_in_every_form() {
        let policy = PeerPolicy::new(vec![], vec![cidr("8.8.8.0/24"), cidr("2606:4700::/32")]);
        assert_eq!(policy.check(ip("8.8.8.8")), Err(PeerRefusal::Denied));
        assert_eq!(policy.check(ip("::ffff:8.8.8.8")), Err(PeerRefusal::Denied));
        assert_eq!(
            policy.check(ip("64:ff9b::808:808")),
            Err(PeerRefusal::Denied)
        );
        assert_eq!(
            policy.check(ip("2002:808:808::1")),
            Err(PeerRefusal::Denied)
        );
        assert_eq!(
            policy.check(ip("2001:0:808:808:8000:f227:f7f7:fbfb")),
            Err(PeerRefusal::Denied)
        );
        assert_eq!(
            policy.check(ip("2606:4700:4700::1111")),
            Err(PeerRefusal::Denied)
        );
        assert_eq!(policy.check(ip("8.8.4.4")), Ok(()));
        assert_eq!(policy.check(ip("2606:4701::1")), Ok(()));
        // A class refusal is reported as the class, not as Denied.
        let policy = PeerPolicy::new(vec![], vec![cidr("10.0.0.0/8")]);
        assert_eq!(policy.check(ip("10.0.0.1")), Err(PeerRefusal::Private));
        // A /0 deny rule refuses everything of that family.
        let policy = PeerPolicy::new(vec![], vec![cidr("0.0.0.0/0")]);
        assert_eq!(policy.check(ip("1.1.1.1")), Err(PeerRefusal::Denied));
        assert_eq!(policy.check(ip("2606:4700:4700::1111")), Ok(()));
    }

    #[test]
    fn refusal_labels() {
        let labels: Vec<&str> = PeerRefusal::ALL.iter().map(|r| r.as_str()).collect();
        let mut unique = labels.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), PeerRefusal::ALL.len());
        for label in labels {
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
        }
        assert_eq!(PeerRefusal::LinkLocal.as_str(), "link_local");
        assert_eq!(
            PeerRefusal::LinkLocal.to_string(),
            "peer address is link local"
        );
        assert_eq!(
            PeerRefusal::Denied.to_string(),
            "peer address denied by a rule"
        );
    }

    #[test]
    fn matches_std_classification_where_std_has_one() {
        // A sweep of one address per /8 (IPv4) checked against std's stable predicates:
        // anything std calls loopback/private/link-local/multicast/broadcast/documentation
        // or unspecified must be refused.
        for first in 0..=255u8 {
            for addr in [
                Ipv4Addr::new(first, 0, 0, 0),
                Ipv4Addr::new(first, 16, 2, 1),
                Ipv4Addr::new(first, 168, 100, 1),
                Ipv4Addr::new(first, 254, 255, 255),
            ] {
                let special = addr.is_loopback()
                    || addr.is_private()
                    || addr.is_link_local()
                    || addr.is_multicast()
                    || addr.is_broadcast()
                    || addr.is_documentation()
                    || addr.is_unspecified();
                let v4 = PeerPolicy::default().check(IpAddr::V4(addr));
                let mapped = PeerPolicy::default().check(IpAddr::V6(addr.to_ipv6_mapped()));
                let nat64 = PeerPolicy::default().check(IpAddr::V6(Ipv6Addr::from(
                    (0x0064_ff9b_u128 << 96) | u128::from(u32::from(addr)),
                )));
                if special {
                    assert!(v4.is_err(), "{addr}");
                }
                assert_eq!(v4, mapped, "{addr}");
                assert_eq!(v4, nat64, "{addr}");
            }
        }
    }
}
