//! The FCM HTTP v1 client: `POST {base}/v1/projects/{project}/messages:send`
//! with a bearer token from [`AccessTokens`], and what each answer means
//! for the device (FCM's error codes, `google.rpc.Status` error bodies).
//!
//! The legacy FCM API (and the `fcm` crate that speaks it) is shut down;
//! this speaks v1 over `reqwest`.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::backoff::parse_retry_after;
use super::oauth::{AccessTokens, AuthError, ServiceAccountKey};
use super::payload::{Message, SendRequest};

/// What became of one device's push, when not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The token is dead (`UNREGISTERED`, 404, or an `INVALID_ARGUMENT`
    /// about the token): delete the device.
    #[error("token no longer valid: {0}")]
    DeadToken(String),
    /// Try again later (429, 500, 503, timeouts, connection errors, an
    /// access token refused), not before `retry_after` if given.
    #[error("{reason}")]
    Retry {
        /// Short label for metrics (`429`, `503`, `timeout`, ...).
        label: &'static str,
        /// What happened.
        reason: String,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Will never work for this device (e.g. `SENDER_ID_MISMATCH`, a
    /// payload FCM refuses): give up on it, keep the token.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl SendError {
    fn retry(label: &'static str, reason: impl Into<String>) -> Self {
        SendError::Retry {
            label,
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// `{"error": google.rpc.Status}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: RpcStatus,
}

#[derive(Debug, Default, Deserialize)]
struct RpcStatus {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

/// A `details` entry: `FcmError` (`errorCode`) or `BadRequest`
/// (`fieldViolations`); other kinds are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDetail {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    field_violations: Vec<FieldViolation>,
}

#[derive(Debug, Default, Deserialize)]
struct FieldViolation {
    #[serde(default)]
    field: String,
}

/// What an FCM answer means for the device. `retry_after` is the parsed
/// `Retry-After` header; `body` the response body.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Result<(), SendError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let error = parsed.error;
    let code = error
        .details
        .iter()
        .find_map(|d| d.error_code.clone())
        .unwrap_or_else(|| {
            if error.status.is_empty() {
                format!("HTTP {status}")
            } else {
                error.status.clone()
            }
        });
    let about_token = error
        .details
        .iter()
        .flat_map(|d| &d.field_violations)
        .any(|v| v.field == "message.token")
        || error.message.contains("registration token");
    let reason = if error.message.is_empty() {
        format!("{code} ({status})")
    } else {
        format!("{code} ({status}): {}", error.message)
    };
    match (status, code.as_str()) {
        (_, "UNREGISTERED") | (404, _) => Err(SendError::DeadToken(reason)),
        (400, "INVALID_ARGUMENT") if about_token => Err(SendError::DeadToken(reason)),
        (429, _) | (_, "QUOTA_EXCEEDED") => Err(SendError::Retry {
            label: "429",
            reason,
            retry_after,
        }),
        (500, _) | (_, "INTERNAL") => Err(SendError::Retry {
            label: "500",
            reason,
            retry_after,
        }),
        (503, _) | (_, "UNAVAILABLE") => Err(SendError::Retry {
            label: "503",
            reason,
            retry_after,
        }),
        (502 | 504, _) => Err(SendError::Retry {
            label: "5xx",
            reason,
            retry_after,
        }),
        (401, _) => Err(SendError::retry("auth", reason)),
        _ => Err(SendError::Rejected(reason)),
    }
}

/// Sends pushes through FCM HTTP v1 for one Firebase project.
pub struct FcmClient {
    http: reqwest::Client,
    send_url: String,
    tokens: AccessTokens,
}

impl FcmClient {
    /// A client for `project` at `base_url`, authenticated with `key`
    /// against `token_url`. `http` carries the request timeout.
    pub fn new(
        key: &ServiceAccountKey,
        project: &str,
        base_url: &str,
        token_url: String,
        http: reqwest::Client,
    ) -> Result<Self, AuthError> {
        Ok(FcmClient {
            send_url: format!(
                "{}/v1/projects/{project}/messages:send",
                base_url.trim_end_matches('/')
            ),
            tokens: AccessTokens::new(key, token_url, http.clone())?,
            http,
        })
    }

    /// Sends one message; `Ok` once FCM accepted it.
    pub async fn send(&self, message: &Message) -> Result<(), SendError> {
        let access = self
            .tokens
            .get()
            .await
            .map_err(|e| SendError::retry("auth", format!("no access token: {e}")))?;
        let started = std::time::Instant::now();
        let sent = self
            .http
            .post(&self.send_url)
            .bearer_auth(&access)
            .json(&SendRequest { message })
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                let label = if err.is_timeout() {
                    "timeout"
                } else {
                    "network"
                };
                return Err(SendError::retry(label, err.without_url().to_string()));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => {
                let label = if err.is_timeout() {
                    "timeout"
                } else {
                    "network"
                };
                return Err(SendError::retry(label, err.without_url().to_string()));
            }
        };
        metrics::histogram!("turbochat_push_send_seconds").record(started.elapsed().as_secs_f64());
        let outcome = classify(status, retry_after, &body);
        if status == 401 {
            // Revoked or expired early: fetch a new one for the retry.
            self.tokens.invalidate(&access).await;
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: u16, status: &str, fcm: Option<&str>, extra: serde_json::Value) -> Vec<u8> {
        let mut details = vec![];
        if let Some(fcm) = fcm {
            details.push(serde_json::json!({
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": fcm,
            }));
        }
        if !extra.is_null() {
            details.push(extra);
        }
        serde_json::to_vec(&serde_json::json!({"error": {
            "code": code, "message": "something", "status": status, "details": details,
        }}))
        .unwrap()
    }

    #[test]
    fn success() {
        assert_eq!(
            classify(200, None, br#"{"name":"projects/p/messages/1"}"#),
            Ok(())
        );
    }

    #[test]
    fn dead_tokens() {
        let unregistered = error(
            404,
            "NOT_FOUND",
            Some("UNREGISTERED"),
            serde_json::Value::Null,
        );
        assert!(matches!(
            classify(404, None, &unregistered),
            Err(SendError::DeadToken(r)) if r.starts_with("UNREGISTERED (404)")
        ));
        assert!(matches!(
            classify(404, None, b"not json"),
            Err(SendError::DeadToken(_))
        ));
        let bad_token = error(
            400,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
            serde_json::json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.token", "description": "bad"}],
            }),
        );
        assert!(matches!(
            classify(400, None, &bad_token),
            Err(SendError::DeadToken(_))
        ));
    }

    #[test]
    fn invalid_payload_is_rejected_not_pruned() {
        let bad_payload = error(
            400,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
            serde_json::json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.android.ttl"}],
            }),
        );
        assert!(matches!(
            classify(400, None, &bad_payload),
            Err(SendError::Rejected(_))
        ));
        let mismatch = error(
            403,
            "PERMISSION_DENIED",
            Some("SENDER_ID_MISMATCH"),
            serde_json::Value::Null,
        );
        assert!(matches!(
            classify(403, None, &mismatch),
            Err(SendError::Rejected(r)) if r.starts_with("SENDER_ID_MISMATCH")
        ));
    }

    #[test]
    fn retryable_keep_retry_after() {
        let quota = error(
            429,
            "RESOURCE_EXHAUSTED",
            Some("QUOTA_EXCEEDED"),
            serde_json::Value::Null,
        );
        assert_eq!(
            classify(429, Some(Duration::from_secs(7)), &quota),
            Err(SendError::Retry {
                label: "429",
                reason: "QUOTA_EXCEEDED (429): something".into(),
                retry_after: Some(Duration::from_secs(7)),
            })
        );
        for (status, label) in [(503, "503"), (500, "500"), (502, "5xx"), (401, "auth")] {
            match classify(status, None, b"") {
                Err(SendError::Retry { label: l, .. }) => assert_eq!(l, label),
                other => panic!("{status}: {other:?}"),
            }
        }
    }
}
