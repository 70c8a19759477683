//! `[push]`: how the node sends push notifications (guarantee 6).
//!
//! Owners write push jobs to the outbox when `owner.push_enabled` is on;
//! this section says how the node's worker sends them: not at all (`off`,
//! another node sends), to a local file (`file`, the embedded default: no
//! Firebase account needed), or through FCM HTTP v1 (`fcm`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use turbochat_service::config::ConfigError;

/// Where pushes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushBackend {
    /// No worker on this node (jobs wait for a node that has one).
    Off,
    /// Append each push, as FCM would receive it, to `push.file.path`.
    File,
    /// FCM HTTP v1 with a service-account key.
    Fcm,
}

/// `[push]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct PushConfig {
    /// `off`, `file` or `fcm`.
    pub backend: PushBackend,
    /// How often an idle worker looks for due jobs.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Jobs in flight at once on this node.
    pub concurrency: usize,
    /// How long a claimed job is this worker's; a worker that dies holding
    /// it delays that job by at most this much. Must cover one attempt (an
    /// access-token fetch and one send, each bounded by `request_timeout`).
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Attempts before a job that keeps failing transiently is marked failed.
    pub max_attempts: u32,
    /// First retry delay bound; each attempt doubles it (full jitter).
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Largest retry delay bound.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// A `Retry-After` longer than this is cut to it.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Timeout of one HTTP request (token endpoint or FCM send).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest notification body, in characters (longer text is cut, `…`).
    pub body_max_chars: usize,
    /// Prefix of the deep link (`{link_base}/#/c/{conversation_id}`); empty:
    /// a relative link. An `https://` base also sets the web-push link.
    pub link_base: String,
    /// Sent and failed jobs are deleted from the outbox after this long.
    #[serde(with = "humantime_serde")]
    pub retain_finished: Duration,
    /// `file` backend.
    pub file: FileSinkConfig,
    /// `fcm` backend.
    pub fcm: FcmConfig,
}

/// `[push.file]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct FileSinkConfig {
    /// JSON lines are appended here (directories are created).
    pub path: PathBuf,
}

/// `[push.fcm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct FcmConfig {
    /// The Firebase service-account key (JSON, as the console downloads it).
    pub service_account_file: Option<PathBuf>,
    /// Firebase project; default: the key's `project_id`.
    pub project_id: Option<String>,
    /// OAuth2 token endpoint; default: the key's `token_uri`, else Google's.
    pub token_url: Option<String>,
    /// FCM API base; sends go to `{base_url}/v1/projects/{project}/messages:send`.
    pub base_url: String,
}

/// Google's OAuth2 token endpoint.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// FCM's API base.
pub const FCM_BASE_URL: &str = "https://fcm.googleapis.com";

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            backend: PushBackend::Off,
            poll_interval: Duration::from_millis(250),
            concurrency: 32,
            lease: Duration::from_secs(60),
            max_attempts: 10,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(10),
            body_max_chars: 100,
            link_base: String::new(),
            retain_finished: Duration::from_secs(24 * 3600),
            file: FileSinkConfig::default(),
            fcm: FcmConfig::default(),
        }
    }
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        FileSinkConfig {
            path: PathBuf::from("data/push.jsonl"),
        }
    }
}

impl Default for FcmConfig {
    fn default() -> Self {
        FcmConfig {
            service_account_file: None,
            project_id: None,
            token_url: None,
            base_url: FCM_BASE_URL.to_string(),
        }
    }
}

impl PushConfig {
    /// Checks values serde cannot; every bad value names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(ConfigError::key("push.concurrency", "must be at least 1"));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::key("push.max_attempts", "must be at least 1"));
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::key("push.poll_interval", "must be positive"));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::key("push.request_timeout", "must be positive"));
        }
        if self.backoff_base.is_zero() || self.backoff_max < self.backoff_base {
            return Err(ConfigError::key(
                "push.backoff_base",
                "must be positive and at most push.backoff_max",
            ));
        }
        // One attempt is a token fetch plus a send, each up to the timeout.
        if self.lease <= self.request_timeout * 2 {
            return Err(ConfigError::key(
                "push.lease",
                format!(
                    "must be longer than two request timeouts ({:?}): a slow attempt would lose its lease",
                    self.request_timeout * 2
                ),
            ));
        }
        if self.body_max_chars == 0 {
            return Err(ConfigError::key(
                "push.body_max_chars",
                "must be at least 1",
            ));
        }
        if !self.link_base.is_empty() && !self.link_base.starts_with("http") {
            return Err(ConfigError::key(
                "push.link_base",
                "must be empty or an http(s):// URL",
            ));
        }
        match self.backend {
            PushBackend::Off => {}
            PushBackend::File => {
                if self.file.path.as_os_str().is_empty() {
                    return Err(ConfigError::key("push.file.path", "must be set"));
                }
            }
            PushBackend::Fcm => {
                if self.fcm.service_account_file.is_none() {
                    return Err(ConfigError::key(
                        "push.fcm.service_account_file",
                        "must be set when push.backend = \"fcm\"",
                    ));
                }
                if reqwest::Url::parse(&self.fcm.base_url).is_err() {
                    return Err(ConfigError::key("push.fcm.base_url", "is not a URL"));
                }
                if let Some(url) = &self.fcm.token_url {
                    if reqwest::Url::parse(url).is_err() {
                        return Err(ConfigError::key("push.fcm.token_url", "is not a URL"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_off() {
        let config = PushConfig::default();
        assert_eq!(config.backend, PushBackend::Off);
        config.validate().unwrap();
    }

    #[test]
    fn fcm_needs_a_key_file() {
        let config = PushConfig {
            backend: PushBackend::Fcm,
            ..PushConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("push.fcm.service_account_file"), "{err}");
    }

    #[test]
    fn lease_must_cover_an_attempt() {
        let config = PushConfig {
            lease: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            ..PushConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("push.lease"), "{err}");
    }
}
