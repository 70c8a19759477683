//! Errors of the client handle.

use crate::queue::QueueError;

/// Why a [`crate::Client`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A [`crate::ClientConfig`] value is unusable.
    #[error("config {field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The offline queue could not be opened or written; the message was
    /// not queued.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// An argument is out of range (checked before anything is queued).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
}
