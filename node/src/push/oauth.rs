//! OAuth2 access tokens for FCM from a service-account key: the JWT bearer
//! grant (RFC 7523) as Google specifies it for server-to-server calls.
//!
//! The node signs a short-lived JWT with the key (RS256: `iss` = the
//! account's e-mail, `scope` = firebase.messaging, `aud` = the token
//! endpoint) and trades it at the token endpoint for an access token. The
//! token is cached and refreshed before it expires (5 minutes early, or
//! half its lifetime if that is shorter); concurrent sends share one
//! refresh. Tokens and keys are never logged.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The OAuth2 scope FCM HTTP v1 needs.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The grant type of the JWT bearer flow.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long a signed assertion is valid (Google's maximum).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// Refresh this long before expiry at most.
const REFRESH_EARLY: Duration = Duration::from_secs(300);

/// Why a key could not be used or a token not obtained.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The key file could not be read.
    #[error("cannot read service-account key {path}: {source}")]
    ReadKey {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is not a service-account key.
    #[error("service-account key {path} is invalid: {reason}")]
    BadKey {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The key's `private_key` is not a PEM RSA private key.
    #[error("private_key is not a PEM (PKCS#8 or PKCS#1) RSA private key: {0}")]
    PrivateKey(String),
    /// The assertion could not be signed.
    #[error("cannot sign the token request: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    /// The token endpoint could not be reached or timed out.
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    /// The token endpoint refused (`invalid_grant`, ...).
    #[error("token endpoint answered {status}: {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The OAuth2 `error` and `error_description`, if any.
        detail: String,
    },
}

/// The fields of a Firebase service-account key file that we use.
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    /// `service_account`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The Firebase project.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Key id (`kid` of the assertion).
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// PEM (PKCS#8) RSA private key.
    pub private_key: String,
    /// The account (`iss` of the assertion).
    pub client_email: String,
    /// The token endpoint the key is for.
    #[serde(default)]
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Reads and checks a key file.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::ReadKey {
            path: shown.clone(),
            source,
        })?;
        let key: ServiceAccountKey =
            serde_json::from_str(&text).map_err(|e| AuthError::BadKey {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        if let Some(kind) = &key.kind {
            if kind != "service_account" {
                return Err(AuthError::BadKey {
                    path: shown,
                    reason: format!("type is {kind:?}, not \"service_account\""),
                });
            }
        }
        Ok(key)
    }
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Serialize)]
struct TokenForm<'a> {
    grant_type: &'a str,
    assertion: &'a str,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize, Default)]
struct TokenErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

struct Cached {
    token: String,
    refresh_at: Instant,
    expires_at: Instant,
}

/// A cached access token for one service account, refreshed before expiry.
pub struct AccessTokens {
    http: reqwest::Client,
    token_url: String,
    client_email: String,
    key_id: Option<String>,
    key: EncodingKey,
    cached: Mutex<Option<Cached>>,
}

/// When to refresh a token that lives `lifetime` from now: 5 minutes
/// before it expires, or halfway for short-lived ones.
pub fn refresh_after(lifetime: Duration) -> Duration {
    lifetime - REFRESH_EARLY.min(lifetime / 2)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl AccessTokens {
    /// Tokens for `key` from `token_url`, fetched with `http`.
    pub fn new(
        key: &ServiceAccountKey,
        token_url: String,
        http: reqwest::Client,
    ) -> Result<Self, AuthError> {
        let encoding = EncodingKey::from_rsa_pem(key.private_key.as_bytes())
            .map_err(|e| AuthError::PrivateKey(e.to_string()))?;
        Ok(AccessTokens {
            http,
            token_url,
            client_email: key.client_email.clone(),
            key_id: key.private_key_id.clone(),
            key: encoding,
            cached: Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, or a new one when it is due
    /// for refresh. If a refresh fails while the cached token is still
    /// valid, the cached one is used.
    pub async fn get(&self) -> Result<String, AuthError> {
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        if let Some(c) = cached.as_ref() {
            if now < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        match self.fetch().await {
            Ok((token, lifetime)) => {
                metrics::counter!("turbochat_push_token_refreshes_total").increment(1);
                let now = Instant::now();
                *cached = Some(Cached {
                    token: token.clone(),
                    refresh_at: now + refresh_after(lifetime),
                    expires_at: now + lifetime,
                });
                Ok(token)
            }
            Err(err) => {
                metrics::counter!("turbochat_push_token_errors_total").increment(1);
                match cached.as_ref() {
                    Some(c) if Instant::now() < c.expires_at => {
                        tracing::warn!(%err, "access token refresh failed; using the current one");
                        Ok(c.token.clone())
                    }
                    _ => Err(err),
                }
            }
        }
    }

    /// Drops `token` from the cache (FCM refused it): the next `get` fetches.
    pub async fn invalidate(&self, token: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == token) {
            *cached = None;
        }
    }

    /// One JWT bearer grant: the token and how long it lives.
    async fn fetch(&self) -> Result<(String, Duration), AuthError> {
        let iat = unix_now();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let assertion = jsonwebtoken::encode(
            &header,
            &Assertion {
                iss: &self.client_email,
                scope: FCM_SCOPE,
                aud: &self.token_url,
                iat,
                exp: iat + ASSERTION_LIFETIME.as_secs(),
            },
            &self.key,
        )?;
        let response = self
            .http
            .post(&self.token_url)
            .form(&TokenForm {
                grant_type: JWT_BEARER_GRANT,
                assertion: &assertion,
            })
            .send()
            .await
            .map_err(|e| AuthError::Unreachable(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| AuthError::Unreachable(e.without_url().to_string()))?;
        if !status.is_success() {
            let error: TokenErrorBody = serde_json::from_slice(&body).unwrap_or_default();
            return Err(AuthError::Refused {
                status: status.as_u16(),
                detail: format!("{} {}", error.error, error.error_description)
                    .trim()
                    .to_string(),
            });
        }
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| AuthError::Refused {
                status: status.as_u16(),
                detail: format!("unreadable token response: {e}"),
            })?;
        // Google's tokens live an hour; assume so if the answer omits it.
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600).max(1));
        tracing::debug!(lifetime_s = lifetime.as_secs(), "access token obtained");
        Ok((token.access_token, lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_early_but_not_too_early() {
        assert_eq!(
            refresh_after(Duration::from_secs(3599)),
            Duration::from_secs(3299)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn key_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("tc-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key.json");
        std::fs::write(
            &path,
            r#"{"type":"authorized_user","private_key":"x","client_email":"a@b"}"#,
        )
        .unwrap();
        let err = ServiceAccountKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("service_account"), "{err}");
        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(
            ServiceAccountKey::load(&path),
            Err(AuthError::BadKey { .. })
        ));
        assert!(matches!(
            ServiceAccountKey::load(&dir.join("missing.json")),
            Err(AuthError::ReadKey { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
