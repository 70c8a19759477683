//! Development tokens, signed the way `configs/dev.toml` verifies them
//! (HS256 with a shared secret). For local runs and tests only: in
//! production the car app issues tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::token::{TokenError, TokenProvider};

/// The HS256 secret of `configs/dev.toml`.
pub const DEV_SECRET: &str = "dev-secret-change-me-0123456789abcdef";
/// The issuer `configs/dev.toml` expects.
pub const DEV_ISSUER: &str = "turbocar";
/// The audience `configs/dev.toml` expects.
pub const DEV_AUDIENCE: &str = "turbochat";

/// What to put in a dev token. `DevToken::new("alice")` matches the dev config.
#[derive(Debug, Clone)]
pub struct DevToken {
    /// The user id (`sub`).
    pub sub: String,
    /// HS256 secret.
    pub secret: String,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// Lifetime from now (`exp`).
    pub ttl: Duration,
    /// Display name (`name` claim), as the car app's tokens carry it.
    pub name: Option<String>,
    /// Picture URL (`picture` claim).
    pub picture: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    nbf: i64,
    iat: i64,
    iss: String,
    aud: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    picture: Option<String>,
}

impl DevToken {
    /// A one-hour token for `sub` with the dev config's secret, issuer and audience.
    pub fn new(sub: impl Into<String>) -> Self {
        DevToken {
            sub: sub.into(),
            secret: DEV_SECRET.into(),
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
            ttl: Duration::from_secs(3600),
            name: None,
            picture: None,
        }
    }

    /// The same token with a display name (`name` claim).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Signs a token valid from a minute ago (clock skew) for `ttl` from now.
    pub fn mint(&self) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(TokenError::new)?
            .as_secs() as i64;
        let claims = Claims {
            sub: self.sub.clone(),
            exp: now + self.ttl.as_secs().max(1) as i64,
            nbf: now - 60,
            iat: now,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            name: self.name.clone(),
            picture: self.picture.clone(),
        };
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .map_err(TokenError::new)
    }
}

/// A fresh token is minted at every call, so reconnects and refreshes
/// always get a new `exp`.
impl TokenProvider for DevToken {
    fn token(&self) -> crate::token::TokenFuture<'_> {
        let token = self.mint();
        Box::pin(async move { token })
    }
}

/// The `sub` of a JWT, read without checking the signature (to name a data
/// directory after the user, say). `None` if it is not a JWT with a `sub`.
pub fn unverified_subject(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Sub {
        sub: String,
    }
    jsonwebtoken::dangerous::insecure_decode::<Sub>(token)
        .ok()
        .map(|data| data.claims.sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_names_its_subject() {
        let token = DevToken::new("alice").mint().unwrap();
        assert_eq!(unverified_subject(&token).as_deref(), Some("alice"));
        assert_eq!(unverified_subject("not a token"), None);
    }
}
