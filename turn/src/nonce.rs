//! Stateless NONCEs that expire: the server keeps no per-client memory, so a flood of
//! unauthenticated requests costs nothing but the MAC.
//!
//! A nonce is 48 lowercase hex digits: the expiry (`u64`, big-endian, 16 digits) followed by
//! the first 16 bytes (32 digits) of
//! `HMAC-SHA256(secret, "turn-nonce-v1" || expiry || client IP)`, where the client IP is 4
//! bytes for IPv4 (an IPv4-mapped IPv6 address counts as IPv4) and 16 for IPv6. It is a
//! valid `qdtext`, far below the 128 characters RFC 8489 allows, and can never start with
//! the `obMatJos2` cookie of the STUN security feature set.
//!
//! Time is whole seconds on whatever monotonic scale the caller keeps (seconds since the
//! process started is fine), the same scale for [`NonceKey::issue`] and [`NonceKey::check`].
//! A nonce issued at `t` is good while `t <= now < t + lifetime`: stale from `t + lifetime`
//! on, and also stale when checked before `t` (the time scale restarted under the same
//! secret).
//! Servers that share one secret can check each other's nonces only if they share the time
//! scale too (Unix seconds, say).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

/// Domain separation: a secret reused elsewhere cannot produce a valid nonce by accident.
const LABEL: &[u8] = b"turn-nonce-v1";
/// Bytes of the expiry in a nonce.
const EXPIRY_LEN: usize = 8;
/// Bytes of the MAC kept in a nonce (128 bits).
const MAC_LEN: usize = 16;
/// Characters in a nonce: both parts in hex.
const NONCE_LEN: usize = 2 * (EXPIRY_LEN + MAC_LEN);

/// The secret that signs nonces, and how long they last.
///
/// `Debug` shows the lifetime, never the secret.
#[derive(Clone)]
pub struct NonceKey {
    /// HMAC-SHA256 already keyed with the secret; cloned per nonce so the key schedule runs
    /// once.
    mac: Hmac<Sha256>,
    /// How long a nonce is good for, in whole seconds.
    lifetime_secs: u64,
}

/// Why a nonce is not accepted.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// Well formed and ours, but expired: answer 438 Stale Nonce. Also a nonce of ours
    /// whose expiry lies further ahead than a fresh one's would (the caller's time scale
    /// restarted while the secret stayed): a new nonce fixes both.
    #[error("stale nonce")]
    Stale,
    /// Not ours, tampered, for another client, or malformed.
    #[error("invalid nonce")]
    Invalid,
}

impl NonceKey {
    /// A key from `secret` (share it between servers that must accept each other's nonces);
    /// nonces last `lifetime`, rounded down to whole seconds.
    pub fn new(secret: [u8; 32], lifetime: Duration) -> Self {
        Self {
            mac: hmac_sha256(&secret),
            lifetime_secs: lifetime.as_secs(),
        }
    }

    /// A key from a fresh random secret (nonces do not survive a restart).
    pub fn random(lifetime: Duration) -> Self {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret[..]);
        Self::new(secret, lifetime)
    }

    /// How long a nonce is good for.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.lifetime_secs)
    }

    /// A nonce for a client at `ip`, issued at `now_secs` (seconds on any monotonic scale the
    /// caller keeps; the same scale for check).
    pub fn issue(&self, ip: IpAddr, now_secs: u64) -> String {
        let expiry = now_secs.saturating_add(self.lifetime_secs);
        let tag = self.tag(expiry, ip).finalize().into_bytes();
        let mut nonce = String::with_capacity(NONCE_LEN);
        push_hex(&mut nonce, &expiry.to_be_bytes());
        push_hex(&mut nonce, &tag[..MAC_LEN]);
        nonce
    }

    /// Whether `nonce` was issued by this key to `ip` and is still fresh at `now_secs`.
    /// Never panics, whatever the input.
    pub fn check(&self, nonce: &str, ip: IpAddr, now_secs: u64) -> Result<(), NonceError> {
        let bytes = nonce.as_bytes();
        if bytes.len() != NONCE_LEN {
            return Err(NonceError::Invalid);
        }
        let mut raw = [0u8; EXPIRY_LEN + MAC_LEN];
        for (out, pair) in raw.iter_mut().zip(bytes.chunks_exact(2)) {
            let (Some(hi), Some(lo)) = (hex_value(pair[0]), hex_value(pair[1])) else {
                return Err(NonceError::Invalid);
            };
            *out = (hi << 4) | lo;
        }
        let (expiry_bytes, mac) = raw.split_at(EXPIRY_LEN);
        let mut expiry = [0u8; EXPIRY_LEN];
        expiry.copy_from_slice(expiry_bytes);
        let expiry = u64::from_be_bytes(expiry);
        // Constant time: the MAC is checked before anything about it is revealed.
        if self.tag(expiry, ip).verify_truncated_left(mac).is_err() {
            return Err(NonceError::Invalid);
        }
        if now_secs >= expiry || expiry - now_secs > self.lifetime_secs {
            return Err(NonceError::Stale);
        }
        Ok(())
    }

    /// The MAC state over everything a nonce vouches for.
    fn tag(&self, expiry: u64, ip: IpAddr) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(LABEL);
        mac.update(&expiry.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => mac.update(&v4.octets()),
                None => mac.update(&v6.octets()),
            },
        }
        mac
    }
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceKey")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

/// HMAC-SHA256 keyed with `secret`.
///
/// HMAC zero-pads a key shorter than the hash's 64-byte block and hashes a longer one
/// first (RFC 2104 §2); doing that here gives a full-block key, so the infallible
/// `KeyInit::new` can be used instead of `new_from_slice` and its impossible error.
fn hmac_sha256(secret: &[u8]) -> Hmac<Sha256> {
    let mut block = [0u8; 64];
    if secret.len() > block.len() {
        let digest = Sha256::digest(secret);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..secret.len()].copy_from_slice(secret);
    }
    <Hmac<Sha256> as KeyInit>::new(&block.into())
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// The value of a lowercase hex digit; uppercase is refused so each nonce has one spelling.
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIME: Duration = Duration::from_secs(3600);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key() -> NonceKey {
        NonceKey::new([7; 32], LIFETIME)
    }

    #[test]
    fn known_vector() {
        // python3: import hmac,hashlib,struct,ipaddress
        // e = 1000 + 3600
        // hmac.new(bytes([7]*32), b"turn-nonce-v1" + struct.pack(">Q", e)
        //          + ipaddress.ip_address("192.0.2.1").packed, hashlib.sha256).hexdigest()[:32]
        let nonce = key().issue(ip("192.0.2.1"), 1000);
        assert_eq!(nonce, "00000000000011f8fee3cfd448c54b01deadb873daafd1fb");
    }

    #[test]
    fn round_trip() {
        let k = key();
        for addr in [
            "192.0.2.1",
            "2001:db8::1",
            "::",
            "0.0.0.0",
            "255.255.255.255",
        ] {
            let nonce = k.issue(ip(addr), 1000);
            assert_eq!(nonce.len(), NONCE_LEN);
            assert!(
                nonce
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert_eq!(k.check(&nonce, ip(addr), 1000), Ok(()));
            assert_eq!(k.check(&nonce, ip(addr), 1000 + 3599), Ok(()));
        }
        // Clones check each other's nonces; so does a key from the same secret.
        let nonce = k.issue(ip("192.0.2.1"), 5);
        assert_eq!(k.clone().check(&nonce, ip("192.0.2.1"), 6), Ok(()));
        assert_eq!(key().check(&nonce, ip("192.0.2.1"), 6), Ok(()));
        assert_eq!(k.lifetime(), LIFETIME);
    }

    #[test]
    fn stale_after_lifetime_boundary_exclusive() {
        let k = key();
        let nonce = k.issue(ip("192.0.2.1"), 1000);
        assert_eq!(k.check(&nonce, ip("192.0.2.1"), 4599), Ok(()));
        // Exactly `issued + lifetime` is stale.
        assert_eq!(
            k.check(&nonce, ip("192.0.2.1"), 4600),
            Err(NonceError::Stale)
        );
        assert_eq!(
            k.check(&nonce, ip("192.0.2.1"), 10_000),
            Err(NonceError::Stale)
        );
        assert_eq!(
            k.check(&nonce, ip("192.0.2.1"), u64::MAX),
            Err(NonceError::Stale)
        );
        // A zero lifetime gives nonces that are stale at once.
        let zero = NonceKey::new([7; 32], Duration::from_millis(999));
        let nonce = zero.issue(ip("192.0.2.1"), 1000);
        assert_eq!(
            zero.check(&nonce, ip("192.0.2.1"), 1000),
            Err(NonceError::Stale)
        );
    }

    #[test]
    fn nonce_from_the_future_is_stale() {
        // Issued at 10_000 on a scale that then restarted at 0: ours, but too far ahead.
        let k = key();
        let nonce = k.issue(ip("192.0.2.1"), 10_000);
        assert_eq!(k.check(&nonce, ip("192.0.2.1"), 0), Err(NonceError::Stale));
        // Even one second ahead is refused: a client only sees nonces of the server it
        // talks to, so there is no clock skew to tolerate.
        assert_eq!(k.check(&nonce, ip("192.0.2.1"), 10_000), Ok(()));
        assert_eq!(
            k.check(&nonce, ip("192.0.2.1"), 10_000 - 1),
            Err(NonceError::Stale)
        );
        // Saturation at the end of the scale.
        let nonce = k.issue(ip("192.0.2.1"), u64::MAX - 10);
        assert_eq!(k.check(&nonce, ip("192.0.2.1"), u64::MAX - 10), Ok(()));
        assert_eq!(
            k.check(&nonce, ip("192.0.2.1"), u64::MAX),
            Err(NonceError::Stale)
        );
    }

    #[test]
    fn another_ip_is_invalid() {
        let k = key();
        let nonce = k.issue(ip("192.0.2.1"), 1000);
        assert_eq!(
            k.check(&nonce, ip("192.0.2.2"), 1000),
            Err(NonceError::Invalid)
        );
        assert_eq!(
            k.check(&nonce, ip("2001:db8::1"), 1000),
            Err(NonceError::Invalid)
        );
        // The IPv4-mapped form is the same client.
        assert_eq!(k.check(&nonce, ip("::ffff:192.0.2.1"), 1000), Ok(()));
        // IPv4-compatible is not.
        assert_eq!(
            k.check(&nonce, ip("::192.0.2.1"), 1000),
            Err(NonceError::Invalid)
        );
        let nonce6 = k.issue(ip("2001:db8::1"), 1000);
        assert_eq!(
            k.check(&nonce6, ip("2001:db8::2"), 1000),
            Err(NonceError::Invalid)
        );
    }

    #[test]
    fn tampered_expiry_is_invalid() {
        let k = key();
        let nonce = k.issue(ip("192.0.2.1"), 1000);
        // Push the expiry forward by rewriting the hex: the MAC no longer matches.
        let later = format!("{:016x}{}", 1000u64 + 3600 + 3600, &nonce[16..]);
        assert_eq!(
            k.check(&later, ip("192.0.2.1"), 5000),
            Err(NonceError::Invalid)
        );
        // Every single-digit change is caught.
        for i in 0..nonce.len() {
            let mut bytes = nonce.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let changed = String::from_utf8(bytes).unwrap();
            assert_eq!(
                k.check(&changed, ip("192.0.2.1"), 1000),
                Err(NonceError::Invalid),
                "{i}"
            );
        }
    }

    #[test]
    fn malformed_is_invalid_without_panic() {
        let k = key();
        let good = k.issue(ip("192.0.2.1"), 1000);
        let upper = good.to_ascii_uppercase();
        let too_long = format!("{good}0");
        let too_short = &good[..NONCE_LEN - 1];
        let non_ascii = format!("{}é", &good[..NONCE_LEN - 2]); // 48 bytes, 47 chars
        let multibyte_start = format!("é{}", &good[2..]);
        let huge = "a".repeat(100_000);
        for bad in [
            "",
            "0",
            "not a nonce",
            too_short,
            &too_long,
            &upper,
            &non_ascii,
            &multibyte_start,
            &huge,
            &"g".repeat(NONCE_LEN),
            &" ".repeat(NONCE_LEN),
            &"\0".repeat(NONCE_LEN),
            &"0".repeat(NONCE_LEN),
            &"f".repeat(NONCE_LEN),
            "obMatJos2AAABfffffffffffffffffffffffffffffffffffff",
        ] {
            assert_eq!(
                k.check(bad, ip("192.0.2.1"), 1000),
                Err(NonceError::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(non_ascii.len(), NONCE_LEN);
    }

    #[test]
    fn another_key_is_invalid() {
        let nonce = key().issue(ip("192.0.2.1"), 1000);
        let other = NonceKey::new([8; 32], LIFETIME);
        assert_eq!(
            other.check(&nonce, ip("192.0.2.1"), 1000),
            Err(NonceError::Invalid)
        );
        let random = NonceKey::random(LIFETIME);
        assert_eq!(
            random.check(&nonce, ip("192.0.2.1"), 1000),
            Err(NonceError::Invalid)
        );
        let own = random.issue(ip("192.0.2.1"), 1000);
        assert_eq!(random.check(&own, ip("192.0.2.1"), 1000), Ok(()));
        assert_ne!(NonceKey::random(LIFETIME).issue(ip("192.0.2.1"), 1000), own);
        // A different lifetime with the same secret still recognizes the nonce.
        let short = NonceKey::new([7; 32], Duration::from_secs(60));
        assert_eq!(
            short.check(&nonce, ip("192.0.2.1"), 1000),
            Err(NonceError::Stale)
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let debug = format!("{:?}", key());
        assert_eq!(debug, "NonceKey { lifetime_secs: 3600, .. }");
    }
}
