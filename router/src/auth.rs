//! JWT verification, done before a WebSocket upgrade or an HTTP call.
//!
//! The algorithm is pinned by configuration: a token whose header names any
//! other algorithm (including `none`) is refused, as are tokens with a bad
//! signature, past `exp`, future `nbf`, or the wrong `iss`/`aud`. Tokens are
//! never logged; errors say what was wrong, not what the token was.

use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use turbochat_protocol::ids::valid_user_id;
use turbochat_protocol::ErrorCode;

use crate::config::AuthConfig;
use crate::http::ApiError;

/// Why a token was refused. The `Display` text is safe to return to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in `?token=` or `Authorization: Bearer`.
    #[error("missing token")]
    Missing,
    /// Signature, format, algorithm or claims are wrong.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// `exp` is past.
    #[error("token expired")]
    Expired,
}

/// Why the `[auth]` section cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// Unknown algorithm name.
    #[error("unknown algorithm {0:?}")]
    Algorithm(String),
    /// HS* without a secret, or a short one.
    #[error("{0} needs auth.secret of at least 32 bytes")]
    Secret(String),
    /// Asymmetric algorithm without a readable PEM key.
    #[error("{alg} needs auth.public_key_file or auth.public_key_pem: {reason}")]
    PublicKey {
        /// The algorithm.
        alg: String,
        /// What went wrong.
        reason: String,
    },
    /// Issuer or audience empty.
    #[error("auth.issuer and auth.audience must be set")]
    Claims,
}

/// The HS256 secret of `configs/dev.toml`: public, so a router using it
/// accepts tokens anyone can mint. It warns at start.
pub const DEVELOPMENT_SECRET: &str = "dev-secret-change-me-0123456789abcdef";

/// The claims turbochat reads. Others are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Not before, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user's display name (kept as their profile; shown to others
    /// and in push titles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An `https://` URL of the user's picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
}

/// Verifies tokens with the configured algorithm and key.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Present for HS* so `mint-token` can make dev tokens.
    secret: Option<Vec<u8>>,
    algorithm: Algorithm,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds a verifier, checking the key material now rather than at the
    /// first connection.
    pub fn from_config(config: &AuthConfig) -> Result<Self, AuthConfigError> {
        let algorithm = Algorithm::from_str(&config.algorithm)
            .map_err(|_| AuthConfigError::Algorithm(config.algorithm.clone()))?;
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(AuthConfigError::Claims);
        }
        let (key, secret) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = config
                    .secret
                    .as_deref()
                    .filter(|s| s.len() >= 32)
                    .ok_or_else(|| AuthConfigError::Secret(config.algorithm.clone()))?;
                (
                    DecodingKey::from_secret(secret.as_bytes()),
                    Some(secret.as_bytes().to_vec()),
                )
            }
            _ => {
                let pem = match (&config.public_key_pem, &config.public_key_file) {
                    (Some(pem), _) => pem.clone().into_bytes(),
                    (None, Some(path)) => {
                        std::fs::read(path).map_err(|e| AuthConfigError::PublicKey {
                            alg: config.algorithm.clone(),
                            reason: format!("{}: {e}", path.display()),
                        })?
                    }
                    (None, None) => {
                        return Err(AuthConfigError::PublicKey {
                            alg: config.algorithm.clone(),
                            reason: "neither is set".into(),
                        })
                    }
                };
                let key = match algorithm {
                    Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512 => DecodingKey::from_rsa_pem(&pem),
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                    _ => DecodingKey::from_ed_pem(&pem),
                }
                .map_err(|e| AuthConfigError::PublicKey {
                    alg: config.algorithm.clone(),
                    reason: e.to_string(),
                })?;
                (key, None)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = config.leeway_secs;
        Ok(Verifier {
            key,
            validation,
            secret,
            algorithm,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet"),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::Invalid("algorithm not allowed")
                }
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer"),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience"),
                ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("missing claim"),
                _ => AuthError::Invalid("malformed"),
            })?;
        if !valid_user_id(&data.claims.sub) {
            return Err(AuthError::Invalid("bad subject"));
        }
        Ok(data.claims)
    }

    /// Makes a token for `sub` valid for `ttl`, signed with the HS* secret.
    /// For development and tests; production tokens come from the car app.
    pub fn mint(&self, sub: &str, ttl: std::time::Duration) -> Result<String, String> {
        self.mint_with_profile(sub, ttl, None, None)
    }

    /// [`Verifier::mint`] with `name` and `picture` claims.
    pub fn mint_with_profile(
        &self,
        sub: &str,
        ttl: std::time::Duration,
        name: Option<String>,
        picture: Option<String>,
    ) -> Result<String, String> {
        let secret = self
            .secret
            .as_ref()
            .ok_or("minting needs an HS256/HS384/HS512 secret in [auth]")?;
        let now = now_secs();
        let claims = Claims {
            sub: sub.to_string(),
            exp: now + ttl.as_secs() as i64,
            nbf: Some(now - 1),
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            name,
            picture,
        };
        encode(
            &Header::new(self.algorithm),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .map_err(|e| e.to_string())
    }
}

/// Current unix time in seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Finds the token: `Authorization: Bearer ...` first, then `?token=`.
pub fn token_from_parts(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    token_from_query(parts.uri.query()?)
}

/// The `token` parameter of a query string, percent-decoded (JWTs are
/// base64url and dots, but clients may encode them). Any input is taken:
/// a bad escape stays as it is, bytes that are not UTF-8 become U+FFFD,
/// and the verifier refuses what is left.
pub fn token_from_query(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
}

/// An authenticated caller, extracted from a request before any handler runs.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

/// Something that can verify tokens (the router's shared state).
pub trait HasVerifier {
    /// The verifier.
    fn verifier(&self) -> &Verifier;
}

impl<S> FromRequestParts<S> for Authenticated
where
    S: HasVerifier + Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = token_from_parts(parts).ok_or_else(|| reject(AuthError::Missing))?;
        match state.verifier().verify(&token) {
            Ok(claims) => Ok(Authenticated(claims)),
            Err(err) => {
                metrics::counter!("turbochat_auth_rejected_total").increment(1);
                // A client's mistake: counted, and logged for debugging only.
                tracing::debug!(reason = %err, "request refused");
                Err(reject(err))
            }
        }
    }
}

fn reject(err: AuthError) -> Response {
    let mut response = ApiError::new(ErrorCode::Unauthorized, err.to_string()).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            algorithm: "HS256".into(),
            secret: Some("0123456789abcdef0123456789abcdef".into()),
            public_key_file: None,
            public_key_pem: None,
            issuer: "turbocar".into(),
            audience: "turbochat".into(),
            leeway_secs: 0,
        }
    }

    #[test]
    fn the_development_secret_is_the_one_of_the_builtin_config() {
        assert!(turbochat_service::config::BUILTIN
            .contains(&format!("secret = \"{DEVELOPMENT_SECRET}\"")));
    }

    #[test]
    fn minted_token_verifies() {
        let v = Verifier::from_config(&config()).unwrap();
        let token = v.mint("alice", std::time::Duration::from_secs(60)).unwrap();
        assert_eq!(v.verify(&token).unwrap().sub, "alice");
    }

    #[test]
    fn short_secret_is_refused_at_start() {
        let mut c = config();
        c.secret = Some("short".into());
        assert!(Verifier::from_config(&c).is_err());
    }

    #[test]
    fn wrong_audience_and_issuer_are_refused() {
        let v = Verifier::from_config(&config()).unwrap();
        let mut other = config();
        other.audience = "else".into();
        let token = Verifier::from_config(&other)
            .unwrap()
            .mint("alice", std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(v.verify(&token), Err(AuthError::Invalid("wrong audience")));
        let mut other = config();
        other.issuer = "else".into();
        let token = Verifier::from_config(&other)
            .unwrap()
            .mint("alice", std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(v.verify(&token), Err(AuthError::Invalid("wrong issuer")));
    }

    #[test]
    fn percent_encoded_query_token() {
        assert_eq!(token_from_query("token=a%2Eb").as_deref(), Some("a.b"));
        assert_eq!(token_from_query("x=1&token=abc%").as_deref(), Some("abc%"));
        assert_eq!(token_from_query("x=1"), None);
        // A bad escape before a multi-byte character (this once panicked,
        // slicing inside the character).
        assert_eq!(
            token_from_query("token=%a\u{e9}").as_deref(),
            Some("%a\u{e9}")
        );
        assert_eq!(
            token_from_query("token=%a<\u{e9}>").as_deref(),
            Some("%a<\u{e9}>")
        );
    }

    proptest::proptest! {
        #[test]
        fn any_query_is_taken_without_panic(query in ".*") {
            let _ = token_from_query(&query);
        }

        #[test]
        fn any_query_bytes_are_taken_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = token_from_query(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn any_request_head_is_taken_without_panic(
            query in "(token=)?[ -~\\u{80}-\\u{10ffff}]{0,64}",
            header in proptest::collection::vec(proptest::num::u8::ANY, 0..128),
        ) {
            let mut request = axum::http::Request::builder();
            if let Ok(value) = axum::http::HeaderValue::from_bytes(&header) {
                request = request.header(header::AUTHORIZATION, value);
            }
            let uri = format!("/ws?{}", utf8_percent_encode_loose(&query));
            if let Ok(request) = request.uri(uri).body(()) {
                let (parts, ()) = request.into_parts();
                if let Some(token) = token_from_parts(&parts) {
                    let verifier = Verifier::from_config(&config()).unwrap();
                    proptest::prop_assert!(verifier.verify(&token).is_err());
                }
            }
        }
    }

    /// Escapes what a URI cannot hold, leaving `%` and the rest as they
    /// are (so broken escapes reach the parser).
    fn utf8_percent_encode_loose(text: &str) -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '#' {
                    c.to_string()
                } else {
                    let mut buf = [0u8; 4];
                    c.encode_utf8(&mut buf)
                        .bytes()
                        .map(|b| format!("%{b:02X}"))
                        .collect()
                }
            })
            .collect()
    }
}
