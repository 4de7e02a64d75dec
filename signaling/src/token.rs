//! Join tokens: HS256 JWTs that say who may join which room and what they may do there.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use protocol::Grants;
use serde::{Deserialize, Serialize};

/// Longest room name and identity a token may carry, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// The claims of a join token (see `docs/protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Identity of the user, unique per user.
    pub sub: String,
    /// Display name; the identity when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The room this token admits to.
    pub room: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    #[serde(default)]
    pub grants: Grants,
    /// The user's security group, whose calling policy narrows the grants; the default
    /// group when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Claims {
    /// The display name, falling back to the identity.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.sub)
    }
}

/// Why a token was refused. Every variant ends in `unauthorized` on the wire.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The signature, the algorithm, the encoding or the expiry did not check out.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// The claims are well signed but unusable.
    #[error("invalid token claims: {0}")]
    Claims(&'static str),
}

/// Signs and verifies join tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from a shared secret.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Tokens are short-lived and minted by servers with synchronized clocks: an expired
        // token is refused at once.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenKey {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A key from 32 fresh random bytes, for dev mode.
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        TokenKey::new(&secret)
    }

    /// Signs `claims`.
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    /// Claims for `room` and `identity` that expire `ttl` from now, with every grant.
    pub fn claims(room: &str, identity: &str, name: Option<&str>, ttl: Duration) -> Claims {
        Claims {
            sub: identity.to_owned(),
            name: name.map(str::to_owned),
            room: room.to_owned(),
            exp: unix_now().saturating_add(ttl.as_secs().max(1)),
            grants: Grants::default(),
            group: None,
        }
    }

    /// Checks signature, algorithm and expiry, then the claims themselves.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        let claims = data.claims;
        check_name(&claims.room, "room")?;
        check_name(&claims.sub, "sub")?;
        if claims
            .name
            .as_ref()
            .is_some_and(|n| n.len() > MAX_NAME_BYTES)
        {
            return Err(TokenError::Claims("name is longer than 128 bytes"));
        }
        if claims
            .group
            .as_deref()
            .is_some_and(|g| !protocol::policy::valid_group_name(g))
        {
            return Err(TokenError::Claims(
                "group is not 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        Ok(claims)
    }
}

fn check_name(value: &str, what: &'static str) -> Result<(), TokenError> {
    if value.is_empty() {
        return Err(TokenError::Claims(match what {
            "room" => "room is empty",
            _ => "sub is empty",
        }));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(TokenError::Claims(match what {
            "room" => "room is longer than 128 bytes",
            _ => "sub is longer than 128 bytes",
        }));
    }
    Ok(())
}

/// The token of a request's `Authorization: Bearer <token>` header, if it has one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults_grants() {
        let key = TokenKey::new(b"secret");
        let claims = TokenKey::claims("room1", "alice", Some("Alice"), Duration::from_secs(60));
        let token = key.issue(&claims).unwrap();
        let back = key.verify(&token).unwrap();
        assert_eq!(back, claims);
        assert_eq!(back.display_name(), "Alice");
        assert!(back.grants.publish_screen);
    }

    #[test]
    fn refuses_forged_signature() {
        let token = TokenKey::new(b"other")
            .issue(&TokenKey::claims(
                "r",
                "mallory",
                None,
                Duration::from_secs(60),
            ))
            .unwrap();
        assert!(matches!(
            TokenKey::new(b"secret").verify(&token),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_expired_token() {
        let key = TokenKey::new(b"secret");
        let mut claims = TokenKey::claims("r", "alice", None, Duration::from_secs(60));
        claims.exp = unix_now() - 1;
        let token = key.issue(&claims).unwrap();
        assert!(matches!(key.verify(&token), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn refuses_alg_none_and_garbage() {
        let key = TokenKey::new(b"secret");
        // {"alg":"none","typ":"JWT"} . {"sub":"a","room":"r","exp":99999999999} . (empty)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
                    eyJzdWIiOiJhIiwicm9vbSI6InIiLCJleHAiOjk5OTk5OTk5OTk5fQ.";
        assert!(key.verify(none).is_err());
        assert!(key.verify("").is_err());
        assert!(key.verify("a.b.c").is_err());
    }

    #[test]
    fn refuses_empty_or_long_room() {
        let key = TokenKey::new(b"secret");
        let mut claims = TokenKey::claims("", "alice", None, Duration::from_secs(60));
        let token = key.issue(&claims).unwrap();
        assert!(matches!(key.verify(&token), Err(TokenError::Claims(_))));
        claims.room = "x".repeat(MAX_NAME_BYTES + 1);
        let token = key.issue(&claims).unwrap();
        assert!(matches!(key.verify(&token), Err(TokenError::Claims(_))));
    }

    #[test]
    fn absent_grants_mean_all_and_partial_grants_default_true() {
        let key = TokenKey::new(b"secret");
        let exp = unix_now() + 60;
        #[derive(Serialize)]
        struct Raw {
            sub: &'static str,
            room: &'static str,
            exp: u64,
            grants: serde_json::Value,
        }
        // The grants a token with these `grants` claims gets.
        let grants_of = |grants: serde_json::Value| {
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &Raw {
                    sub: "a",
                    room: "r",
                    exp,
                    grants,
                },
                &EncodingKey::from_secret(b"secret"),
            )
            .unwrap();
            key.verify(&token).unwrap().grants
        };
        let grants = grants_of(serde_json::json!({"publish_video": false}));
        assert!(!grants.publish_video);
        assert!(grants.publish_audio && grants.subscribe);
        assert!(!grants.force_tcp, "force_tcp is off unless granted");
        assert!(grants_of(serde_json::json!({"force_tcp": true})).force_tcp);
        assert!(!grants_of(serde_json::json!({"force_tcp": false})).force_tcp);
    }
}
