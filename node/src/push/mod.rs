//! Push notifications for participants with no live session (guarantee 6).
//!
//! The data path: an owner that commits a message writes one `push_outbox`
//! job per recipient with no session subscribed to the conversation (not
//! the sender, not muted) in the message's own transaction. Every node
//! runs a [`worker::Worker`] that claims due jobs with a lease, builds one
//! FCM message per device of the recipient ([`payload`]), and sends it
//! through the node's [`sink::Sink`]: FCM HTTP v1 ([`fcm`], with OAuth2
//! tokens from a service-account key, [`oauth`]) or, in the embedded
//! default, a JSON-lines file. What each answer means for the job —
//! done, retry with backoff ([`backoff`]), prune the token, failed for
//! good — is decided in [`job`].
//!
//! [`devices`] registers and removes device tokens for the link's
//! `RegisterDevice` / `UnregisterDevice` calls.

pub mod backoff;
pub mod config;
pub mod devices;
pub mod fcm;
pub mod job;
pub mod oauth;
pub mod payload;
pub mod settings;
pub mod sink;
pub mod worker;

use std::sync::Arc;

use turbochat_store::Store;

pub use config::{PushBackend, PushConfig};

use self::backoff::Backoff;
use self::fcm::FcmClient;
use self::job::Deliverer;
use self::oauth::{AuthError, ServiceAccountKey};
use self::payload::Style;
use self::sink::{FileSink, Sink};
use self::worker::Worker;

/// Why push could not start.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The service-account key is unusable. (Its cause is in the message,
    /// not chained: the key name leads.)
    #[error("push.fcm.service_account_file: {0}")]
    Key(AuthError),
    /// `push.backend = "fcm"` without a key file.
    #[error("push.fcm.service_account_file: must be set when push.backend = \"fcm\"")]
    NoKeyFile,
    /// No project to send for.
    #[error("push.fcm.project_id: not set, and the service-account key names none")]
    NoProject,
    /// The HTTP client could not be built (TLS setup).
    #[error("push: cannot build the HTTP client: {0}")]
    Http(String),
}

impl From<AuthError> for PushError {
    fn from(err: AuthError) -> Self {
        PushError::Key(err)
    }
}

/// The worker `config` asks for on node `node`, or `None` with
/// `push.backend = "off"`. Reads and checks the FCM key now, so a node with
/// a bad key does not start.
pub fn worker(
    config: &PushConfig,
    node: &str,
    store: Arc<dyn Store>,
) -> Result<Option<Worker>, PushError> {
    let sink = match config.backend {
        PushBackend::Off => return Ok(None),
        PushBackend::File => {
            tracing::info!(path = %config.file.path.display(), "push: writing pushes to a file");
            Sink::File(FileSink::new(config.file.path.clone()))
        }
        PushBackend::Fcm => {
            let path = config
                .fcm
                .service_account_file
                .as_deref()
                .ok_or(PushError::NoKeyFile)?;
            let key = ServiceAccountKey::load(path)?;
            let project = config
                .fcm
                .project_id
                .clone()
                .or_else(|| key.project_id.clone())
                .ok_or(PushError::NoProject)?;
            let token_url = config
                .fcm
                .token_url
                .clone()
                .or_else(|| key.token_uri.clone())
                .unwrap_or_else(|| config::GOOGLE_TOKEN_URL.to_string());
            let http = reqwest::Client::builder()
                .timeout(config.request_timeout)
                .connect_timeout(
                    config
                        .request_timeout
                        .min(std::time::Duration::from_secs(5)),
                )
                .pool_max_idle_per_host(config.concurrency)
                .user_agent(concat!("turbochat-node/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| PushError::Http(e.to_string()))?;
            tracing::info!(%project, account = %key.client_email, base = %config.fcm.base_url,
                "push: sending through FCM HTTP v1");
            Sink::Fcm(FcmClient::new(
                &key,
                &project,
                &config.fcm.base_url,
                token_url,
                http,
            )?)
        }
    };
    let deliverer = Deliverer {
        store: store.clone(),
        sink: Arc::new(sink),
        style: Style {
            body_max_chars: config.body_max_chars,
            link_base: config.link_base.clone(),
        },
        backoff: Backoff {
            base: config.backoff_base,
            max: config.backoff_max,
            max_retry_after: config.max_retry_after,
        },
        max_attempts: config.max_attempts,
    };
    Ok(Some(Worker {
        node: node.to_string(),
        store,
        deliverer: Arc::new(deliverer),
        concurrency: config.concurrency,
        poll_interval: config.poll_interval,
        lease: config.lease,
        retain_finished: config.retain_finished,
    }))
}
