//! The admin API: its tokens, and `POST /admin/drain`.
//!
//! Admin tokens are HS256 JWTs signed with a key of their own (`--admin-secret`), apart
//! from the join tokens' key, so that an application server that mints join tokens
//! cannot administer the server; they name their audience, `sfu-admin` (a join token
//! is refused even if both keys were set alike), and expire. With no admin key the API
//! is off: every admin request gets 403. Otherwise anything but a valid admin token
//! gets 401: none, a bad signature, another audience, expired (logged at debug level
//! only: anyone may knock).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::state::AppState;
use crate::token::{TokenError, bearer, unix_now};

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

/// What the admin API may do, given by the server.
pub struct Admin {
    pub key: AdminKey,
    /// Starts a drain, as SIGTERM does; says whether this call started it (false: one
    /// was under way).
    pub drain: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// `POST /admin/drain`: 202 with `{"draining": true, "started": <this request began
/// it>}`.
pub(crate) async fn drain(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (admin, claims) = match authorize(&state, &headers) {
        Ok(ok) => ok,
        Err(refusal) => return refusal.into_response(),
    };
    let started = (admin.drain)();
    info!(admin = %claims.sub, started, "admin API: drain");
    let body = serde_json::json!({ "draining": true, "started": started });
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// Why an admin request is refused.
enum Refusal {
    /// No admin key: the API is off.
    Off,
    /// No valid admin token, and why.
    Unauthorized(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Off => {
                let message = "the admin API is off: start the server with --admin-secret-file\n";
                (StatusCode::FORBIDDEN, message).into_response()
            }
            Refusal::Unauthorized(why) => {
                let body = format!("unauthorized: {why}\n");
                let mut response = (StatusCode::UNAUTHORIZED, body).into_response();
                let bearer = HeaderValue::from_static("Bearer");
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, bearer);
                response
            }
        }
    }
}

/// The admin API and the caller's claims, or why not.
fn authorize<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
) -> Result<(&'a Admin, AdminClaims), Refusal> {
    let admin = state.config.admin.as_ref().ok_or(Refusal::Off)?;
    let token = bearer(headers)
        .ok_or_else(|| Refusal::Unauthorized("send an admin token as a Bearer token".into()))?;
    match admin.key.verify(token) {
        Ok(claims) => Ok((admin, claims)),
        Err(e) => {
            // Anyone may knock: a flood of them must not flood the log (the caller
            // reads why in the answer).
            debug!("admin API refused: {e}");
            Err(Refusal::Unauthorized(e.to_string()))
        }
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
