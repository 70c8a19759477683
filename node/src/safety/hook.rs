//! The moderation hook: an operator's HTTP service asked about each text
//! message (and media caption) before it is stored, after the rules, with a
//! timeout (`[moderation.hook]`).
//!
//! Request: `POST {url}` with `Authorization: Bearer {secret}` when one is
//! configured, body `{"conversation_id", "sender_id", "client_msg_id",
//! "kind", "body"}` (the body as the rules left it). Answer `200` with
//! `{"action": "allow"}`, `{"action": "refuse", "message"?}` or
//! `{"action": "mask", "body"}`. Anything else — no answer within
//! `timeout`, a connection error, another status, an unreadable answer —
//! is a failure, decided by `on_failure`: `allow` (fail-open, the
//! default: the message is stored as the rules left it) or `refuse`
//! (fail-closed: the send is answered `unavailable`, retryable, and nothing
//! is stored).
//!
//! The call runs on the conversation's owner task, before the send may
//! join a batch: that conversation's commands wait for it (its sends go
//! one call at a time), never those of other conversations.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use turbochat_protocol::ids::ConversationId;

/// What to do when the hook fails (`moderation.hook.on_failure`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Fail-open: store the message as the rules left it.
    #[default]
    Allow,
    /// Fail-closed: refuse the send with `unavailable` (retryable).
    Refuse,
}

/// `[moderation.hook]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Where to `POST` (http or https).
    pub url: String,
    /// How long a send waits for the answer (default 500 ms, at most 10 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// What a failure means.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Sent as `Authorization: Bearer …` when set.
    #[serde(default)]
    pub secret: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_millis(500)
}

impl HookConfig {
    /// Checks the hook; a bad value names its key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok || reqwest::Url::parse(&self.url).is_err() {
            return Err(("moderation.hook.url", "must be an http(s) URL".into()));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(10) {
            return Err((
                "moderation.hook.timeout",
                "must be more than 0 and at most 10s".into(),
            ));
        }
        Ok(())
    }
}

/// What the hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookVerdict {
    /// Store as it is.
    Allow,
    /// Store this text instead.
    Mask(String),
    /// Refuse with `content_refused` and this message.
    Refuse(String),
    /// The hook failed and `on_failure = "refuse"`: answer `unavailable`.
    Unavailable,
}

/// The body of a hook call.
#[derive(Debug, Serialize)]
pub struct HookRequest<'a> {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The sender.
    pub sender_id: &'a str,
    /// The sender's idempotency key.
    pub client_msg_id: &'a str,
    /// `text` or `media`.
    pub kind: &'a str,
    /// The text (as the rules left it).
    pub body: &'a str,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Answer {
    Allow,
    Refuse {
        #[serde(default)]
        message: Option<String>,
    },
    Mask {
        body: String,
    },
}

/// A configured hook.
#[derive(Debug, Clone)]
pub struct Hook {
    http: reqwest::Client,
    config: HookConfig,
}

impl Hook {
    /// The hook of `config`.
    pub fn new(config: &HookConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .unwrap_or_default();
        Hook {
            http,
            config: config.clone(),
        }
    }

    /// Asks the hook about one message; a failure is decided by
    /// `on_failure`.
    pub async fn screen(&self, request: &HookRequest<'_>) -> HookVerdict {
        let started = Instant::now();
        let answer = tokio::time::timeout(self.config.timeout, self.call(request)).await;
        metrics::histogram!("turbochat_moderation_hook_seconds")
            .record(started.elapsed().as_secs_f64());
        let failure = match answer {
            Ok(Ok(verdict)) => return verdict,
            Ok(Err(why)) => why,
            Err(_) => "timeout",
        };
        metrics::counter!("turbochat_moderation_hook_failures_total", "reason" => failure)
            .increment(1);
        tracing::warn!(reason = failure, "moderation hook failed");
        match self.config.on_failure {
            OnFailure::Allow => HookVerdict::Allow,
            OnFailure::Refuse => HookVerdict::Unavailable,
        }
    }

    async fn call(&self, request: &HookRequest<'_>) -> Result<HookVerdict, &'static str> {
        let mut call = self.http.post(&self.config.url).json(request);
        if let Some(secret) = &self.config.secret {
            call = call.bearer_auth(secret);
        }
        let response = call.send().await.map_err(|_| "connection")?;
        if !response.status().is_success() {
            return Err("status");
        }
        let answer: Answer = response.json().await.map_err(|_| "answer")?;
        Ok(match answer {
            Answer::Allow => HookVerdict::Allow,
            Answer::Refuse { message } => HookVerdict::Refuse(
                message.unwrap_or_else(|| "this message cannot be sent".to_string()),
            ),
            Answer::Mask { body } if body.trim().is_empty() || body.contains('\0') => {
                return Err("answer")
            }
            Answer::Mask { body } => HookVerdict::Mask(body),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, timeout: Duration) -> HookConfig {
        HookConfig {
            url: url.into(),
            timeout,
            on_failure: OnFailure::default(),
            secret: None,
        }
    }

    #[test]
    fn the_hook_is_checked_by_key_and_fails_open_by_default() {
        let ok = config("http://127.0.0.1:9/check", Duration::from_millis(500));
        assert!(ok.validate().is_ok());
        assert_eq!(ok.on_failure, OnFailure::Allow);
        let ftp = config("ftp://host/x", Duration::from_millis(500));
        assert_eq!(ftp.validate().unwrap_err().0, "moderation.hook.url");
        let slow = config("https://host/x", Duration::from_secs(11));
        assert_eq!(slow.validate().unwrap_err().0, "moderation.hook.timeout");
        let unknown: Result<HookConfig, _> =
            serde_json::from_value(serde_json::json!({"url": "http://h/x", "retries": 3}));
        assert!(unknown.is_err(), "unknown keys are refused");
    }
}
