//! Long-term credentials for TURN: static users and the TURN REST API scheme (coturn's
//! `use-auth-secret`).
//!
//! [`Credentials::passwords`] answers "which passwords may this USERNAME have now?"; the
//! caller then checks MESSAGE-INTEGRITY with each (RFC 8489 §9.2: the key is
//! `MD5(username ":" realm ":" password)`, or SHA-256 of the same for
//! MESSAGE-INTEGRITY-SHA256).
//!
//! # The REST scheme
//!
//! Signaling and the relay share a secret. Signaling hands a client a username
//! `EXPIRY:USER` (`EXPIRY` in Unix seconds, first, as coturn does by default) and the
//! password `base64(HMAC-SHA1(secret, username))` ([`rest_credentials`]). The relay needs no
//! user database: it recomputes the password from the username. Several secrets may be
//! active at once so a secret can be rotated without cutting off credentials already
//! handed out. Only the timestamp-first form is accepted (`EXPIRY:USER`, or a bare
//! `EXPIRY`); the rest of the username after the first `:` is opaque and may hold more
//! colons.
//!
//! A REST username is valid until its expiry (a Unix time in seconds) and
//! [`AuthFailure::Expired`] from that second on: with clocks read in whole seconds, never
//! a moment late. There is no leeway, so the clocks of signaling and relay hosts should be
//! synchronized.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac as _};
use sha1::{Digest as _, Sha1};

/// The longest USERNAME STUN allows (RFC 8489 §14.3), in bytes.
pub const MAX_USERNAME_LEN: usize = 513;

/// The longest decimal expiry accepted: `u64::MAX` has 20 digits.
const MAX_EXPIRY_DIGITS: usize = 20;

/// The realm and everything needed to find the passwords of a USERNAME: static users and
/// REST shared secrets.
///
/// `Debug` shows the realm and counts, never a password or secret.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The REALM the server announces; part of every long-term key.
    realm: String,
    /// Static long-term users, name to password. Checked before the REST scheme.
    users: HashMap<String, String>,
    /// REST shared secrets in the order added; each gives one candidate password.
    secrets: Vec<Vec<u8>>,
}

/// Why a USERNAME has no password.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthFailure {
    /// Neither a static user nor a REST username this server can check: not a number
    /// before the first `:`, or no REST secret configured.
    #[error("unknown user")]
    UnknownUser,
    /// A REST username whose expiry is in the past.
    #[error("credentials expired")]
    Expired,
    /// Longer than STUN allows, or a REST expiry too large for 64 bits.
    #[error("malformed username")]
    Malformed,
}

impl AuthFailure {
    /// Every variant, in declaration order (to register metrics up front).
    pub const ALL: [AuthFailure; 3] = [
        AuthFailure::UnknownUser,
        AuthFailure::Expired,
        AuthFailure::Malformed,
    ];

    /// The metrics label: snake_case, stable.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::Expired => "expired",
            AuthFailure::Malformed => "malformed",
        }
    }
}

impl Credentials {
    /// No users and no secrets yet, for `realm`.
    pub fn new(realm: impl Into<String>) -> Self {
        Self {
            realm: realm.into(),
            users: HashMap::new(),
            secrets: Vec::new(),
        }
    }

    /// Adds (or replaces) a static long-term user.
    pub fn add_user(&mut self, name: &str, password: &str) {
        self.users.insert(name.to_owned(), password.to_owned());
    }

    /// Adds a REST shared secret; several may be active at once (rotation). Adding a secret
    /// that is already present does nothing.
    pub fn add_secret(&mut self, secret: &[u8]) {
        if !self.secrets.iter().any(|s| s.as_slice() == secret) {
            self.secrets.push(secret.to_vec());
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The passwords that `username` may have at `now_unix` (seconds since the Unix epoch):
    /// one for a static user; one per secret, in the order added, for a REST username; or
    /// why none.
    ///
    /// A static user whose name matches wins over REST parsing. A name that is not a static
    /// user and does not start with a decimal expiry is [`AuthFailure::UnknownUser`] (it
    /// is most likely a static name we do not know, not an attack on the format); so is
    /// every non-static name when no secret is configured.
    pub fn passwords(&self, username: &str, now_unix: u64) -> Result<Vec<String>, AuthFailure> {
        if username.len() > MAX_USERNAME_LEN {
            return Err(AuthFailure::Malformed);
        }
        if let Some(password) = self.users.get(username) {
            return Ok(vec![password.clone()]);
        }
        if self.secrets.is_empty() {
            return Err(AuthFailure::UnknownUser);
        }
        let expiry = rest_expiry(username)?;
        // `now_unix` is the current second, rounded down: from the expiry second on, the
        // expiry has passed (`<` would accept it for up to a second more).
        if expiry <= now_unix {
            return Err(AuthFailure::Expired);
        }
        Ok(self
            .secrets
            .iter()
            .map(|secret| rest_password(secret, username))
            .collect())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

/// The REST password for `username`: `base64(HMAC-SHA1(secret, username))`, standard
/// alphabet with padding (coturn-compatible).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = hmac_sha1(secret);
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Username and password for `user`, valid for `ttl` from `now_unix`, signed with `secret`:
/// what signaling hands to clients.
///
/// The username is `EXPIRY:USER`, or a bare `EXPIRY` when `user` is empty; `EXPIRY` is
/// `now_unix + ttl` in whole seconds (saturating). Keep `user` short: with the expiry it
/// must fit the 513 bytes of a STUN USERNAME, or the relay refuses it as malformed.
pub fn rest_credentials(
    secret: &[u8],
    user: &str,
    now_unix: u64,
    ttl: Duration,
) -> (String, String) {
    let expiry = now_unix.saturating_add(ttl.as_secs());
    let username = if user.is_empty() {
        expiry.to_string()
    } else {
        format!("{expiry}:{user}")
    };
    let password = rest_password(secret, &username);
    (username, password)
}

/// The expiry of a REST username: the decimal number before the first `:` (or the whole
/// name).
fn rest_expiry(username: &str) -> Result<u64, AuthFailure> {
    let digits = match username.split_once(':') {
        Some((expiry, _user)) => expiry,
        None => username,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthFailure::UnknownUser);
    }
    if digits.len() > MAX_EXPIRY_DIGITS {
        return Err(AuthFailure::Malformed);
    }
    digits.parse().map_err(|_| AuthFailure::Malformed)
}

/// HMAC-SHA1 keyed with `secret`.
///
/// HMAC zero-pads a key shorter than the hash's 64-byte block and hashes a longer one
/// first (RFC 2104 §2); doing that here gives a full-block key, so the infallible
/// `KeyInit::new` can be used instead of `new_from_slice` and its impossible error.
fn hmac_sha1(secret: &[u8]) -> Hmac<Sha1> {
    let mut block = [0u8; 64];
    if secret.len() > block.len() {
        let digest = Sha1::digest(secret);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..secret.len()].copy_from_slice(secret);
    }
    <Hmac<Sha1> as KeyInit>::new(&block.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_types::attribute::{Nonce, Realm, Username};
    use stun_types::message::{
        BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageIntegrityCredentials,
        MessageWriteVec, ValidateError,
    };
    use stun_types::prelude::*;

    /// `printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac north -binary | base64`
    const ALICE_NORTH: &str = "Cd/49soE35ICqcJF/bCTn8Z4OyE=";

    #[test]
    fn rest_password_matches_openssl() {
        assert_eq!(rest_password(b"north", "1700000000:alice"), ALICE_NORTH);
        // printf '%s' '' | openssl dgst -sha1 -hmac '' -binary | base64
        assert_eq!(rest_password(b"", ""), "+9sdGxiqbAgyS31ktx+3Y3BpDh0=");
        // A secret longer than the 64-byte block is hashed first:
        // printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac "$(printf 'k%.0s' $(seq 100))" -binary | base64
        let long_secret = [b'k'; 100];
        assert_eq!(
            rest_password(&long_secret, "1700000000:alice"),
            "rFHfMfnsTxKQBO9SCPwZhY4zjT0="
        );
        // Exactly one block: used as is.
        // printf '%s' 'x' | openssl dgst -sha1 -hmac "$(printf 'b%.0s' $(seq 64))" -binary | base64
        assert_eq!(
            rest_password(&[b'b'; 64], "x"),
            "6kwgtMxuoGK5MHc70F+jJrSxQMA="
        );
        // The key bytes are raw, not text: a secret with a NUL and high bytes.
        assert_ne!(rest_password(&[0, 0xff], "u"), rest_password(&[0xff], "u"));
    }

    #[test]
    fn rest_credentials_shape() {
        let (user, pass) =
            rest_credentials(b"north", "alice", 1_699_999_000, Duration::from_secs(1000));
        assert_eq!(user, "1700000000:alice");
        assert_eq!(pass, ALICE_NORTH);
        let (user, _) = rest_credentials(b"north", "", 10, Duration::from_millis(5999));
        assert_eq!(user, "15");
        let (user, _) = rest_credentials(b"north", "a:b", u64::MAX - 1, Duration::from_secs(10));
        assert_eq!(user, format!("{}:a:b", u64::MAX));
    }

    #[test]
    fn rest_username_round_trip() {
        let mut creds = Credentials::new("example.org");
        creds.add_secret(b"north");
        assert_eq!(creds.realm(), "example.org");
        let now = 1_700_000_000;
        let (user, pass) = rest_credentials(b"north", "alice", now, Duration::from_secs(3600));
        assert_eq!(creds.passwords(&user, now), Ok(vec![pass.clone()]));
        assert_eq!(creds.passwords(&user, now + 3599), Ok(vec![pass]));
        assert_eq!(
            creds.passwords(&user, now + 3600),
            Err(AuthFailure::Expired)
        );
        assert_eq!(creds.passwords(&user, u64::MAX), Err(AuthFailure::Expired));
        // A bare expiry (valid until its second).
        assert_eq!(
            creds.passwords("1700000000", now - 1),
            Ok(vec![rest_password(b"north", "1700000000")])
        );
        // Only timestamp-first: "alice:1700000000" is not a REST name.
        assert_eq!(
            creds.passwords("alice:1700000000", now),
            Err(AuthFailure::UnknownUser)
        );
        // More colons after the first belong to the user part.
        assert_eq!(
            creds.passwords("1700000000:a:b:c", now - 1),
            Ok(vec![rest_password(b"north", "1700000000:a:b:c")])
        );
        // Empty user part.
        assert_eq!(
            creds.passwords("1700000000:", now - 1),
            Ok(vec![rest_password(b"north", "1700000000:")])
        );
        // Leading zeros are a number like any other (the MAC covers the exact text).
        assert_eq!(
            creds.passwords("01700000000:alice", now - 1),
            Ok(vec![rest_password(b"north", "01700000000:alice")])
        );
    }

    #[test]
    fn expired_has_no_leeway() {
        let mut creds = Credentials::new("r");
        creds.add_secret(b"s");
        // Valid in the second before its expiry; refused from the expiry second on (the
        // clock rounds down: at 100.9 s it reads 100, and 100:u has expired).
        assert_eq!(creds.passwords("100:u", 99).map(|p| p.len()), Ok(1));
        assert_eq!(creds.passwords("100:u", 100), Err(AuthFailure::Expired));
        assert_eq!(creds.passwords("100:u", 101), Err(AuthFailure::Expired));
        assert_eq!(creds.passwords("0:u", 0), Err(AuthFailure::Expired));
    }

    #[test]
    fn rotation_returns_one_password_per_secret() {
        let mut creds = Credentials::new("r");
        creds.add_secret(b"old");
        creds.add_secret(b"new");
        creds.add_secret(b"old"); // duplicate: ignored
        let now = 1_700_000_000;
        let (user, pass_new) = rest_credentials(b"new", "bob", now, Duration::from_secs(60));
        let got = creds.passwords(&user, now).unwrap();
        assert_eq!(got, vec![rest_password(b"old", &user), pass_new.clone()]);
        assert!(got.contains(&pass_new));
    }

    #[test]
    fn static_users_take_precedence() {
        let mut creds = Credentials::new("r");
        creds.add_secret(b"north");
        creds.add_user("alice", "wonderland");
        // A static user whose name looks like a REST name, even an expired one.
        creds.add_user("1:alice", "static");
        assert_eq!(
            creds.passwords("alice", 5),
            Ok(vec!["wonderland".to_owned()])
        );
        assert_eq!(
            creds.passwords("1:alice", 1_000),
            Ok(vec!["static".to_owned()])
        );
        // Replacing a user.
        creds.add_user("alice", "rabbit");
        assert_eq!(creds.passwords("alice", 5), Ok(vec!["rabbit".to_owned()]));
        // Unknown static name with secrets configured.
        assert_eq!(creds.passwords("mallory", 5), Err(AuthFailure::UnknownUser));
        assert_eq!(creds.passwords("", 5), Err(AuthFailure::UnknownUser));
        assert_eq!(creds.passwords(":alice", 5), Err(AuthFailure::UnknownUser));
        assert_eq!(
            creds.passwords("12a:alice", 5),
            Err(AuthFailure::UnknownUser)
        );
        assert_eq!(
            creds.passwords("-5:alice", 5),
            Err(AuthFailure::UnknownUser)
        );
        assert_eq!(
            creds.passwords("+5:alice", 5),
            Err(AuthFailure::UnknownUser)
        );
        assert_eq!(
            creds.passwords(" 5:alice", 5),
            Err(AuthFailure::UnknownUser)
        );
    }

    #[test]
    fn without_secrets_rest_names_are_unknown() {
        let mut creds = Credentials::new("r");
        creds.add_user("alice", "pw");
        assert_eq!(
            creds.passwords("1700000000:alice", 0),
            Err(AuthFailure::UnknownUser)
        );
        assert_eq!(
            Credentials::new("r").passwords("alice", 0),
            Err(AuthFailure::UnknownUser)
        );
    }

    #[test]
    fn long_and_odd_usernames() {
        let mut creds = Credentials::new("r");
        creds.add_secret(b"s");
        // 513 bytes exactly is allowed.
        let user = format!("9999999999:{}", "u".repeat(MAX_USERNAME_LEN - 11));
        assert_eq!(user.len(), MAX_USERNAME_LEN);
        assert_eq!(creds.passwords(&user, 0).map(|p| p.len()), Ok(1));
        // One more byte is malformed, even for a static user.
        let too_long = format!("{user}u");
        creds.add_user(&too_long, "pw");
        assert_eq!(creds.passwords(&too_long, 0), Err(AuthFailure::Malformed));
        // Counted in bytes, not characters.
        let wide = "é".repeat(257); // 514 bytes
        assert_eq!(creds.passwords(&wide, 0), Err(AuthFailure::Malformed));
        // An expiry that overflows u64.
        assert_eq!(
            creds.passwords("18446744073709551616:u", 0),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            creds.passwords(&format!("{}:u", "9".repeat(400)), 0),
            Err(AuthFailure::Malformed)
        );
        // u64::MAX itself is fine.
        assert_eq!(
            creds
                .passwords("18446744073709551615:u", u64::MAX - 1)
                .map(|p| p.len()),
            Ok(1)
        );
        // Non-ASCII and control characters in the user part are opaque.
        for name in ["99:ü", "99:\u{0}", "99:\r\n", "99:🙂:🙂"] {
            assert_eq!(
                creds.passwords(name, 0),
                Ok(vec![rest_password(b"s", name)])
            );
        }
        // Non-ASCII digits are not digits.
        assert_eq!(creds.passwords("١٢٣:u", 0), Err(AuthFailure::UnknownUser));
    }

    #[test]
    fn labels_and_debug() {
        let labels: Vec<&str> = AuthFailure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(labels, ["unknown_user", "expired", "malformed"]);
        assert_eq!(AuthFailure::Expired.to_string(), "credentials expired");
        let mut creds = Credentials::new("realm");
        creds.add_user("alice", "hunter2");
        creds.add_secret(b"topsecret");
        let debug = format!("{creds:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("topsecret"),
            "{debug}"
        );
        assert!(debug.contains("realm"), "{debug}");
    }

    /// How the core checks MESSAGE-INTEGRITY with the passwords from `passwords`: one key per
    /// candidate password; any that validates admits the request.
    fn validate(msg: &Message<'_>, username: &str, creds: &Credentials, now: u64) -> bool {
        let Ok(passwords) = creds.passwords(username, now) else {
            return false;
        };
        passwords.into_iter().any(|password| {
            let lt = LongTermKeyCredentials::new(
                username.to_owned(),
                password,
                creds.realm().to_owned(),
            );
            msg.validate_integrity(&MessageIntegrityCredentials::from(lt))
                .is_ok()
        })
    }

    fn signed_request(
        username: &str,
        password: &str,
        realm: &str,
        algo: IntegrityAlgorithm,
    ) -> Vec<u8> {
        let mut msg = Message::builder_request(BINDING, MessageWriteVec::new());
        msg.add_attribute(&Username::new(username).unwrap())
            .unwrap();
        msg.add_attribute(&Realm::new(realm).unwrap()).unwrap();
        msg.add_attribute(&Nonce::new("abcdef").unwrap()).unwrap();
        let creds =
            LongTermKeyCredentials::new(username.to_owned(), password.to_owned(), realm.to_owned());
        msg.add_message_integrity(&creds.into(), algo).unwrap();
        msg.finish()
    }

    #[test]
    fn stun_message_integrity_with_rest_and_static_passwords() {
        let now = 1_700_000_000;
        let mut creds = Credentials::new("example.org");
        creds.add_secret(b"old");
        creds.add_secret(b"new");
        creds.add_user("alice", "wonderland");
        let (user, pass) = rest_credentials(b"new", "bob", now, Duration::from_secs(600));

        for algo in [IntegrityAlgorithm::Sha1, IntegrityAlgorithm::Sha256] {
            let data = signed_request(&user, &pass, "example.org", algo);
            let msg = Message::from_bytes(&data).unwrap();
            let name = msg.attribute::<Username>().unwrap();
            assert_eq!(name.username(), user);
            assert!(validate(&msg, name.username(), &creds, now));
            assert!(!validate(&msg, name.username(), &creds, now + 600));

            let data = signed_request("alice", "wonderland", "example.org", algo);
            let msg = Message::from_bytes(&data).unwrap();
            assert!(validate(&msg, "alice", &creds, now));

            let data = signed_request("alice", "wrong", "example.org", algo);
            let msg = Message::from_bytes(&data).unwrap();
            assert!(!validate(&msg, "alice", &creds, now));

            // Wrong realm in the key: fails.
            let data = signed_request("alice", "wonderland", "other.org", algo);
            let msg = Message::from_bytes(&data).unwrap();
            assert!(!validate(&msg, "alice", &creds, now));
        }

        // With a precomputed key (cacheable per username+password): the SHA-1 key only
        // looks at MESSAGE-INTEGRITY.
        let data = signed_request(&user, &pass, "example.org", IntegrityAlgorithm::Sha1);
        let msg = Message::from_bytes(&data).unwrap();
        let key = LongTermKeyCredentials::new(user.clone(), pass.clone(), "example.org".to_owned())
            .make_key(IntegrityAlgorithm::Sha1);
        assert_eq!(
            msg.validate_integrity_with_key(&key).unwrap(),
            IntegrityAlgorithm::Sha1
        );
        let wrong =
            LongTermKeyCredentials::new(user.clone(), "x".to_owned(), "example.org".to_owned())
                .make_key(IntegrityAlgorithm::Sha1);
        assert!(matches!(
            msg.validate_integrity_with_key(&wrong),
            Err(ValidateError::IntegrityFailed)
        ));
        // A SHA-256 key against a message with only MESSAGE-INTEGRITY: a parse error, not a
        // mismatch.
        let key256 = LongTermKeyCredentials::new(user, pass, "example.org".to_owned())
            .make_key(IntegrityAlgorithm::Sha256);
        assert!(matches!(
            msg.validate_integrity_with_key(&key256),
            Err(ValidateError::Parse(_))
        ));
    }
}
