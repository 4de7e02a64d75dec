//! IP prefixes (`10.0.0.0/8`, `2001:db8::/32`), as the relay's peer policy takes them in
//! its allow and deny rules: parsed strictly, displayed, and matched against addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix such as `10.0.0.0/8` or `2001:db8::/32`.
///
/// Parsing accepts `ADDR/LEN` and a bare `ADDR` (a host prefix: `/32` or `/128`). It is
/// strict about host bits: `10.0.0.1/8` is an error ([`CidrError::HostBits`], which names
/// the network that was probably meant) rather than silently widened or narrowed, because a
/// typo in an allow rule would otherwise open more than the operator intended.
///
/// An IPv6 prefix inside the IPv4-mapped range `::ffff:0:0/96` with a length of at least 96
/// is stored as the IPv4 prefix it maps to, so `::ffff:127.0.0.1/128` and `127.0.0.1/32`
/// are the same rule, and [`Cidr::contains`] treats an IPv4-mapped address as its IPv4
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address, host bits zero; IPv4 for IPv4-mapped prefixes.
    addr: IpAddr,
    /// Number of leading bits that must match: at most 32 for IPv4, 128 for IPv6.
    prefix_len: u8,
}

/// Why a string is not a [`Cidr`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("not an IP address: {0:?}")]
    Address(String),
    /// The part after `/` is not a decimal number.
    #[error("not a prefix length: {0:?}")]
    PrefixSyntax(String),
    /// The prefix length is longer than the address.
    #[error("prefix length {len} is longer than the {max} bits of the address")]
    PrefixTooLong {
        /// The length given.
        len: u16,
        /// The number of bits in the address (32 or 128).
        max: u8,
    },
    /// Bits below the prefix length are set, as in `10.0.0.1/8`.
    #[error("{input:?} has bits set after the prefix; did you mean {network}?")]
    HostBits {
        /// The text given.
        input: String,
        /// The prefix with the host bits cleared.
        network: Cidr,
    },
}

impl Cidr {
    /// A prefix of `prefix_len` bits at `addr`; `addr` must have no bits set after the prefix.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        let max = max_len(addr);
        if prefix_len > max {
            return Err(CidrError::PrefixTooLong {
                len: u16::from(prefix_len),
                max,
            });
        }
        let network = Self::masked(addr, prefix_len);
        if network.addr != addr {
            return Err(CidrError::HostBits {
                input: format!("{addr}/{prefix_len}"),
                network: network.normalized(),
            });
        }
        Ok(network.normalized())
    }

    /// A host prefix (`/32` or `/128`) for `addr`.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix_len: max_len(addr),
        }
        .normalized()
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The number of leading bits that must match.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies in this prefix. An IPv4-mapped IPv6 address is judged as its IPv4
    /// address; other families never match.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_v4(self.prefix_len);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_v6(self.prefix_len);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }

    /// `addr/prefix_len` with the host bits cleared; `prefix_len` must be in range.
    fn masked(addr: IpAddr, prefix_len: u8) -> Self {
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(prefix_len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(prefix_len))),
        };
        Self { addr, prefix_len }
    }

    /// An IPv6 prefix of at least 96 bits inside `::ffff:0:0/96` becomes the IPv4 prefix.
    fn normalized(self) -> Self {
        match self.addr {
            IpAddr::V6(a) if self.prefix_len >= 96 => match a.to_ipv4_mapped() {
                Some(v4) => Self {
                    addr: IpAddr::V4(v4),
                    prefix_len: self.prefix_len - 96,
                },
                None => self,
            },
            _ => self,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_text, len_text) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::Address(addr_text.to_owned()))?;
        let Some(len_text) = len_text else {
            return Ok(Self::host(addr));
        };
        // Digits only: `u16::from_str` would also take a sign ("+8").
        if len_text.is_empty()
            || len_text.len() > 3
            || !len_text.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(CidrError::PrefixSyntax(len_text.to_owned()));
        }
        let len: u16 = len_text
            .parse()
            .map_err(|_| CidrError::PrefixSyntax(len_text.to_owned()))?;
        let max = max_len(addr);
        let prefix_len = match u8::try_from(len) {
            Ok(l) if l <= max => l,
            _ => return Err(CidrError::PrefixTooLong { len, max }),
        };
        Self::new(addr, prefix_len).map_err(|e| match e {
            CidrError::HostBits { network, .. } => CidrError::HostBits {
                input: s.to_owned(),
                network,
            },
            other => other,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address; anything else unchanged.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

pub(crate) fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

pub(crate) fn mask_v4(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

pub(crate) fn mask_v6(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len.min(128)))
        .unwrap_or(0)
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

    #[test]
    fn cidr_parses_and_displays() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("::1/128").to_string(), "::1/128");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        assert_eq!(cidr("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::/0").to_string(), "::/0");
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("::ffff:127.0.0.1").to_string(), "127.0.0.1/32");
        assert_eq!(cidr("::ffff:0:0/96").to_string(), "0.0.0.0/0");
        // A prefix shorter than /96 that covers the mapped range stays IPv6.
        assert_eq!(cidr("::/80").to_string(), "::/80");
        assert!(!cidr("::/80").contains(ip("::ffff:1.2.3.4")));
        // Round trip through Display.
        for s in ["10.0.0.0/8", "fe80::/10", "1.2.3.4/32", "::/0", "ff00::/8"] {
            assert_eq!(cidr(&cidr(s).to_string()), cidr(s));
        }
        let c = cidr("172.16.0.0/12");
        assert_eq!(c.addr(), ip("172.16.0.0"));
        assert_eq!(c.prefix_len(), 12);
        assert_eq!(Cidr::new(ip("10.0.0.0"), 8), Ok(cidr("10.0.0.0/8")));
        assert_eq!(Cidr::host(ip("::1")), cidr("::1/128"));
    }

    #[test]
    fn cidr_errors() {
        let err = |s: &str| s.parse::<Cidr>().unwrap_err();
        assert_eq!(
            err("10.0.0.0/33"),
            CidrError::PrefixTooLong { len: 33, max: 32 }
        );
        assert_eq!(
            err("::/129"),
            CidrError::PrefixTooLong { len: 129, max: 128 }
        );
        assert_eq!(
            err("10.0.0.0/999"),
            CidrError::PrefixTooLong { len: 999, max: 32 }
        );
        assert!(matches!(err("10.0.0.0/1000"), CidrError::PrefixSyntax(_)));
        assert!(matches!(err("10.0.0.0/"), CidrError::PrefixSyntax(_)));
        assert!(matches!(err("10.0.0.0/+8"), CidrError::PrefixSyntax(_)));
        assert!(matches!(err("10.0.0.0/-1"), CidrError::PrefixSyntax(_)));
        assert!(matches!(err("10.0.0.0/8/8"), CidrError::PrefixSyntax(_)));
        assert!(matches!(err("10.0.0.0/ 8"), CidrError::PrefixSyntax(_)));
        assert!(matches!(err(""), CidrError::Address(_)));
        assert!(matches!(err("garbage"), CidrError::Address(_)));
        assert!(matches!(err("/8"), CidrError::Address(_)));
        assert!(matches!(err("10.0.0/8"), CidrError::Address(_)));
        assert!(matches!(err("256.0.0.0/8"), CidrError::Address(_)));
        assert!(matches!(err("fe80::1%eth0/64"), CidrError::Address(_)));
        assert!(matches!(err(" 10.0.0.0/8"), CidrError::Address(_)));
        assert!(matches!(err("[::1]/128"), CidrError::Address(_)));
        assert!(matches!(err("10.0.0.0\u{0}/8"), CidrError::Address(_)));
        assert!(matches!(err("ü/8"), CidrError::Address(_)));
        // Host bits set: rejected, naming the network.
        match err("10.0.0.1/8") {
            CidrError::HostBits { input, network } => {
                assert_eq!(input, "10.0.0.1/8");
                assert_eq!(network, cidr("10.0.0.0/8"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(err("fe80::1/10"), CidrError::HostBits { .. }));
        assert!(matches!(
            err("::ffff:10.0.0.1/104"),
            CidrError::HostBits { .. }
        ));
        assert_eq!(
            Cidr::new(ip("10.0.0.1"), 40),
            Err(CidrError::PrefixTooLong { len: 40, max: 32 })
        );
        // Messages are readable.
        assert_eq!(
            err("10.0.0.1/8").to_string(),
            "\"10.0.0.1/8\" has bits set after the prefix; did you mean 10.0.0.0/8?"
        );
    }

    #[test]
    fn cidr_contains() {
        let c = cidr("10.0.0.0/8");
        assert!(c.contains(ip("10.0.0.0")));
        assert!(c.contains(ip("10.255.255.255")));
        assert!(c.contains(ip("::ffff:10.1.1.1")));
        assert!(!c.contains(ip("11.0.0.0")));
        assert!(!c.contains(ip("::10.1.1.1")));
        assert!(!c.contains(ip("::1")));
        let all4 = cidr("0.0.0.0/0");
        assert!(all4.contains(ip("255.255.255.255")));
        assert!(!all4.contains(ip("::")));
        let all6 = cidr("::/0");
        assert!(all6.contains(ip("ffff::")));
        assert!(!all6.contains(ip("1.2.3.4")));
        // The mapped form of an IPv4 address is judged as IPv4, not as IPv6.
        assert!(!all6.contains(ip("::ffff:1.2.3.4")));
        let host = cidr("2001:db8::1");
        assert!(host.contains(ip("2001:db8::1")));
        assert!(!host.contains(ip("2001:db8::2")));
        let odd = cidr("2001:db8:8000::/33");
        assert!(odd.contains(ip("2001:db8:ffff::1")));
        assert!(!odd.contains(ip("2001:db8:7fff::1")));
    }
}
