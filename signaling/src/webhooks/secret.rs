//! The key that signs webhook notices, in the Standard Webhooks form (`whsec_` then the
//! base64 key), and the signature it makes.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// What precedes the base64 key in a secret's text form.
const SECRET_PREFIX: &str = "whsec_";
/// The shortest and longest key the Standard Webhooks spec allows, in bytes.
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;
/// The size of a key [`WebhookSecret::generate`] makes.
const GENERATED_KEY_BYTES: usize = 32;

/// Why a webhook secret was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// It does not start with `whsec_`.
    #[error("a webhook secret starts with `whsec_`")]
    NoPrefix,
    /// What follows `whsec_` is not standard base64.
    #[error("the part of a webhook secret after `whsec_` is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The key is shorter than 24 bytes.
    #[error("a webhook secret's key is {0} bytes, under the least of {MIN_KEY_BYTES}")]
    TooShort(usize),
    /// The key is longer than 64 bytes.
    #[error("a webhook secret's key is {0} bytes, over the most of {MAX_KEY_BYTES}")]
    TooLong(usize),
}

/// The key that signs notices, written `whsec_<base64 key>` as Standard Webhooks have it.
/// Its `Display` gives that form (the secret itself: print it only for the operator);
/// its `Debug` hides the key.
#[derive(Clone)]
pub struct WebhookSecret {
    /// The HMAC-SHA256 key, 24 to 64 bytes.
    key: Vec<u8>,
}

impl WebhookSecret {
    /// A new secret of 32 random bytes, for the operator to give the receivers.
    pub fn generate() -> WebhookSecret {
        let mut key = vec![0; GENERATED_KEY_BYTES];
        rand::fill(&mut key[..]);
        WebhookSecret { key }
    }

    /// The `webhook-signature` value of a notice: `v1,` then the base64 HMAC-SHA256 of
    /// `{id}.{timestamp_s}.{body}`.
    pub fn sign(&self, id: &str, timestamp_s: u64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        let mut context = hmac::Context::with_key(&key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp_s.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        format!("v1,{}", BASE64.encode(context.sign().as_ref()))
    }
}

impl FromStr for WebhookSecret {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<WebhookSecret, SecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::NoPrefix)?;
        let key = BASE64.decode(encoded)?;
        if key.len() < MIN_KEY_BYTES {
            return Err(SecretError::TooShort(key.len()));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(SecretError::TooLong(key.len()));
        }
        Ok(WebhookSecret { key })
    }
}

impl fmt::Display for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}{}", BASE64.encode(&self.key))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSecret")
            .field("key_bytes", &self.key.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;

    /// The test vector of the Standard Webhooks reference libraries (the Python and PHP
    /// libraries' `sign` tests).
    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let secret: WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    /// The Rust reference library's own vector.
    #[test]
    fn signs_the_rust_reference_vector() {
        let secret: WebhookSecret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".parse().unwrap();
        assert_eq!(
            secret.sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn a_generated_secret_reads_back_and_hides_in_debug() {
        let secret = WebhookSecret::generate();
        let text = secret.to_string();
        assert!(text.starts_with("whsec_"));
        let back: WebhookSecret = text.parse().unwrap();
        assert_eq!(back.key, secret.key);
        assert_eq!(back.key.len(), GENERATED_KEY_BYTES);
        assert_ne!(WebhookSecret::generate().key, secret.key);
        let debug = format!("{secret:?}");
        assert!(!debug.contains(&text["whsec_".len()..]), "{debug}");
        assert_eq!(debug, "WebhookSecret { key_bytes: 32, .. }");
    }

    #[test]
    fn secrets_are_refused_with_the_reason() {
        let key = |bytes: usize| format!("whsec_{}", BASE64.encode(vec![7u8; bytes]));
        assert!(matches!(
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse::<WebhookSecret>(),
            Err(SecretError::NoPrefix)
        ));
        assert!(matches!(
            "whsec_not base64!".parse::<WebhookSecret>(),
            Err(SecretError::Base64(_))
        ));
        assert!(matches!(
            key(23).parse::<WebhookSecret>(),
            Err(SecretError::TooShort(23))
        ));
        assert!(matches!(
            key(65).parse::<WebhookSecret>(),
            Err(SecretError::TooLong(65))
        ));
        assert!(key(24).parse::<WebhookSecret>().is_ok());
        assert!(key(64).parse::<WebhookSecret>().is_ok());
    }
}
