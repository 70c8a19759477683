//! Stable error codes. A client may switch on these strings; they never
//! change meaning. `docs/protocol.md` lists when each is sent.

use serde::{Deserialize, Serialize};

/// The `code` of an `error` frame or HTTP error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not JSON, or not a known frame shape. The connection stays.
    MalformedFrame,
    /// A field has a value out of range (empty body, id too long, ...).
    InvalidArgument,
    /// The user does not participate in the conversation. Nothing was written.
    Forbidden,
    /// No such conversation (or not visible to this user).
    NotFound,
    /// Too many frames; `retry_after_ms` says when to try again.
    RateLimited,
    /// The owner of the conversation cannot be reached right now; retry with
    /// the same `client_msg_id` (idempotent).
    Unavailable,
    /// The session's token expired; send an `auth` frame with a fresh one.
    TokenExpired,
    /// The token in an `auth` frame is not valid (or names another user).
    Unauthorized,
    /// The session could not keep up with its stream and is being closed;
    /// reconnect and resume by seq.
    SlowConsumer,
    /// A bug or a store failure; nothing was acked.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
