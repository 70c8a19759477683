//! How a [`crate::Client`] connects, retries and where it keeps its queue.

use std::path::PathBuf;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::error::ClientError;

/// Client settings. [`ClientConfig::new`] gives the defaults; change fields
/// as needed before [`crate::connect`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL of a router: `http://host:port` (or `https://`). The
    /// WebSocket is `ws(s)://host:port/ws`.
    pub url: String,
    /// Directory of the offline queue (`queue.jsonl`). One per user and
    /// device; it is locked while a client has it open.
    pub data_dir: PathBuf,
    /// Delays between reconnect attempts, and between retries of a send
    /// that got a retryable error.
    pub backoff: Backoff,
    /// A connection that stayed up this long resets the reconnect backoff.
    pub stable_after: Duration,
    /// Limit on TCP connect + upgrade + `welcome`.
    pub connect_timeout: Duration,
    /// A send with no `ack` after this long is sent again (same
    /// `client_msg_id`, so never twice stored); also the limit on a
    /// `subscribe` without `subscribed`.
    pub ack_timeout: Duration,
    /// Limit on each HTTP request.
    pub request_timeout: Duration,
    /// After this long without any frame from the server, send a `ping`.
    pub ping_interval: Duration,
    /// A `ping` unanswered this long means the connection is dead.
    pub pong_timeout: Duration,
    /// Ask the token provider for a new token (sent as `auth`) this long
    /// before the session's token expires (at most half its remaining life).
    pub token_refresh_margin: Duration,
}

impl ClientConfig {
    /// Defaults: backoff 250 ms doubling to 30 s, stable after 10 s,
    /// connect timeout 10 s, ack timeout 10 s, HTTP timeout 15 s, ping
    /// after 20 s of silence, dead after 10 s more, refresh 60 s early.
    pub fn new(url: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        ClientConfig {
            url: url.into(),
            data_dir: data_dir.into(),
            backoff: Backoff::default(),
            stable_after: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(10),
            token_refresh_margin: Duration::from_secs(60),
        }
    }

    /// Checks the values; the error names the field and the reason.
    pub fn validate(&self) -> Result<(), ClientError> {
        self.ws_url()?;
        let positive = [
            ("backoff.initial", self.backoff.initial),
            ("backoff.max", self.backoff.max),
            ("connect_timeout", self.connect_timeout),
            ("ack_timeout", self.ack_timeout),
            ("request_timeout", self.request_timeout),
            ("ping_interval", self.ping_interval),
            ("pong_timeout", self.pong_timeout),
        ];
        for (field, value) in positive {
            if value.is_zero() {
                return Err(ClientError::Config {
                    field,
                    reason: "must be more than zero".into(),
                });
            }
        }
        if self.backoff.max < self.backoff.initial {
            return Err(ClientError::Config {
                field: "backoff.max",
                reason: "must not be below backoff.initial".into(),
            });
        }
        if !(self.backoff.multiplier >= 1.0 && self.backoff.multiplier.is_finite()) {
            return Err(ClientError::Config {
                field: "backoff.multiplier",
                reason: "must be a finite number >= 1".into(),
            });
        }
        Ok(())
    }

    /// The WebSocket URL derived from [`ClientConfig::url`].
    pub fn ws_url(&self) -> Result<String, ClientError> {
        let base = self.url.trim_end_matches('/');
        let rest = if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if base.starts_with("ws://") || base.starts_with("wss://") {
            base.to_string()
        } else {
            return Err(ClientError::Config {
                field: "url",
                reason: format!("{base:?} is not an http(s):// or ws(s):// URL"),
            });
        };
        if rest.ends_with("/ws") {
            Ok(rest)
        } else {
            Ok(format!("{rest}/ws"))
        }
    }

    /// The HTTP base URL derived from [`ClientConfig::url`].
    pub fn http_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        let base = base.strip_suffix("/ws").unwrap_or(base);
        if let Some(rest) = base.strip_prefix("ws://") {
            format!("http://{rest}")
        } else if let Some(rest) = base.strip_prefix("wss://") {
            format!("https://{rest}")
        } else {
            base.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_derived_both_ways() {
        let c = ClientConfig::new("http://127.0.0.1:8080/", "/tmp/x");
        assert_eq!(c.ws_url().unwrap(), "ws://127.0.0.1:8080/ws");
        assert_eq!(c.http_url(), "http://127.0.0.1:8080");
        let c = ClientConfig::new("wss://chat.example/ws", "/tmp/x");
        assert_eq!(c.ws_url().unwrap(), "wss://chat.example/ws");
        assert_eq!(c.http_url(), "https://chat.example");
        assert!(ClientConfig::new("chat.example", "/tmp/x")
            .validate()
            .is_err());
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut c = ClientConfig::new("http://h:1", "/tmp/x");
        c.ack_timeout = Duration::ZERO;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("ack_timeout"), "{err}");
    }
}
