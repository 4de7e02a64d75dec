//! Admin tokens: HS256 JWTs signed with a key of their own (`--admin-secret`), apart
//! from the join tokens' key, so that an application server that mints join tokens
//! cannot administer the server. They name their audience, `sfu-admin` (a join token is
//! refused even if both keys were set alike), and expire within [`MAX_ADMIN_TTL`].

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::token::{TokenError, unix_now};

/// The `aud` claim of every admin token.
pub const ADMIN_AUDIENCE: &str = "sfu-admin";

/// The longest an admin token may live: one that expires later is refused (a token
/// cannot be revoked but by changing the secret, so none may outlive this).
pub const MAX_ADMIN_TTL: Duration = Duration::from_secs(30 * 86_400);

/// The claims of an admin token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminClaims {
    /// Who acts (an operator, a deploy job): named in the log of each action.
    pub sub: String,
    /// Always [`ADMIN_AUDIENCE`].
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Signs and verifies admin tokens with their own HS256 secret.
#[derive(Clone)]
pub struct AdminKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(..)")
    }
}

impl AdminKey {
    pub fn new(secret: &[u8]) -> AdminKey {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_audience(&[ADMIN_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        AdminKey {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Claims for `sub`, valid for `ttl`.
    pub fn claims(sub: &str, ttl: Duration) -> AdminClaims {
        AdminClaims {
            sub: sub.to_owned(),
            aud: ADMIN_AUDIENCE.to_owned(),
            exp: unix_now().saturating_add(ttl.as_secs().max(1)),
        }
    }

    pub fn issue(&self, claims: &AdminClaims) -> Result<String, TokenError> {
        let header = Header::new(Algorithm::HS256);
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    pub fn verify(&self, token: &str) -> Result<AdminClaims, TokenError> {
        let claims = jsonwebtoken::decode::<AdminClaims>(token, &self.decoding, &self.validation)?;
        if claims.claims.sub.is_empty() {
            return Err(TokenError::Claims("sub is empty"));
        }
        if claims.claims.exp > unix_now().saturating_add(MAX_ADMIN_TTL.as_secs()) {
            return Err(TokenError::Claims("expires more than 30 days from now"));
        }
        Ok(claims.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::TokenKey;

    #[test]
    fn only_an_admin_token_of_its_key_passes() {
        let key = AdminKey::new(b"admin secret");
        let token = key
            .issue(&AdminKey::claims("ops", Duration::from_secs(60)))
            .unwrap();
        assert_eq!(key.verify(&token).unwrap().sub, "ops");
        // Another key's.
        let other =
            AdminKey::new(b"other").issue(&AdminKey::claims("ops", Duration::from_secs(60)));
        assert!(key.verify(&other.unwrap()).is_err());
        // Expired.
        let mut claims = AdminKey::claims("ops", Duration::from_secs(60));
        claims.exp = unix_now() - 1;
        assert!(key.verify(&key.issue(&claims).unwrap()).is_err());
        // Living longer than the longest an admin token may.
        let long = AdminKey::claims("ops", MAX_ADMIN_TTL + Duration::from_secs(3600));
        assert!(key.verify(&key.issue(&long).unwrap()).is_err());
        let month = AdminKey::claims("ops", MAX_ADMIN_TTL - Duration::from_secs(60));
        assert!(key.verify(&key.issue(&month).unwrap()).is_ok());
        // Another audience.
        claims = AdminKey::claims("ops", Duration::from_secs(60));
        claims.aud = "sfu".into();
        assert!(key.verify(&key.issue(&claims).unwrap()).is_err());
        // A join token, even signed with the same secret.
        let join = TokenKey::new(b"admin secret")
            .issue(&TokenKey::claims(
                "r",
                "alice",
                None,
                Duration::from_secs(60),
            ))
            .unwrap();
        assert!(key.verify(&join).is_err());
    }
}
