//! Stable error codes, and the one table that pairs each with its HTTP
//! status and gRPC code. A client may switch on these strings; they never
//! change meaning. `docs/protocol.md` lists when each is sent.
//!
//! Handlers never pick a status or a gRPC code themselves: they name an
//! [`ErrorCode`], and [`ErrorCode::http_status`], [`ErrorCode::to_status`] and
//! [`ErrorCode::from_status`] say the rest. A code crosses the router ↔ node
//! link exactly (it rides in the `turbochat-code` metadata of the gRPC status),
//! so what the node decided is what the client sees.

use serde::{Deserialize, Serialize};

/// The `code` of an `error` frame or HTTP error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame or body cannot be read: not JSON, not an object, an unknown
    /// `type`, a required field missing or of the wrong JSON type, or a value
    /// outside an enumeration. The connection stays.
    MalformedFrame,
    /// A readable request whose value breaks a rule (empty text, id too long,
    /// a NUL character, a limit out of range, ...).
    InvalidArgument,
    /// No such conversation, or the caller does not participate in it (the two
    /// are answered alike, so ids cannot be probed). Nothing was written.
    NotFound,
    /// Too many requests; `retry_after_ms` says when to try again.
    RateLimited,
    /// The owner of the conversation cannot be reached right now, or it is
    /// overloaded or restarting; retry with the same `client_msg_id`
    /// (idempotent).
    Unavailable,
    /// The session's token expired; send an `auth` frame with a fresh one.
    TokenExpired,
    /// The token is missing or not valid (or names another user).
    Unauthorized,
    /// The session could not keep up with its stream and is being closed;
    /// reconnect and resume by seq.
    SlowConsumer,
    /// An upload is larger than the configured limit.
    TooLarge,
    /// An upload's bytes are not one of the accepted media types.
    UnsupportedMediaType,
    /// A bug or a store failure; nothing was acked.
    Internal,
    /// One participant of this direct conversation blocked the other: the
    /// send (or the new conversation) is refused and nothing was stored.
    /// The message says which side blocked. Not retryable until unblocked.
    Blocked,
    /// A moderation rule refused the message's content (e.g. a phone number
    /// or a link where the operator forbids them). Nothing was stored; the
    /// message names the rule. Sending the same text again fails again.
    ContentRefused,
    /// An operator banned this user: every request is refused and the
    /// sessions are closed (1008, reason `banned`). Not retryable.
    Banned,
    /// The caller participates, but this action is not theirs to take:
    /// unsending another user's message, unsending after the unsend window,
    /// adding or removing members of a group they did not create.
    /// Nothing changed. Not retryable.
    Forbidden,
}

/// gRPC metadata key that carries the exact [`ErrorCode`] of a refusal.
pub const CODE_METADATA: &str = "turbochat-code";

impl ErrorCode {
    /// Every code, in the order of the error table in `docs/protocol.md`.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::MalformedFrame,
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::TokenExpired,
        ErrorCode::Unauthorized,
        ErrorCode::SlowConsumer,
        ErrorCode::TooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Blocked,
        ErrorCode::ContentRefused,
        ErrorCode::Banned,
        ErrorCode::Forbidden,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Internal => "internal",
            ErrorCode::Blocked => "blocked",
            ErrorCode::ContentRefused => "content_refused",
            ErrorCode::Banned => "banned",
            ErrorCode::Forbidden => "forbidden",
        }
    }

    /// Parses the wire form.
    pub fn parse(code: &str) -> Option<Self> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// Whether retrying the same request later may succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal
        )
    }

    /// The HTTP status an HTTP answer with this code has.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::MalformedFrame | ErrorCode::InvalidArgument => 400,
            ErrorCode::TokenExpired | ErrorCode::Unauthorized => 401,
            ErrorCode::Blocked | ErrorCode::Banned | ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::ContentRefused => 422,
            ErrorCode::TooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RateLimited | ErrorCode::SlowConsumer => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    /// The gRPC code a refusal with this code travels as between processes.
    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            ErrorCode::MalformedFrame
            | ErrorCode::InvalidArgument
            | ErrorCode::UnsupportedMediaType => Code::InvalidArgument,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::RateLimited | ErrorCode::SlowConsumer => Code::ResourceExhausted,
            ErrorCode::TooLarge => Code::OutOfRange,
            ErrorCode::Unavailable => Code::Unavailable,
            ErrorCode::TokenExpired | ErrorCode::Unauthorized => Code::Unauthenticated,
            ErrorCode::Internal => Code::Internal,
            ErrorCode::Blocked | ErrorCode::Banned | ErrorCode::Forbidden => Code::PermissionDenied,
            ErrorCode::ContentRefused => Code::FailedPrecondition,
        }
    }

    /// A gRPC status for a refusal with this code: the gRPC code from
    /// [`ErrorCode::grpc_code`], the message for the client, and the exact
    /// code in [`CODE_METADATA`].
    pub fn to_status(self, message: impl Into<String>) -> tonic::Status {
        let mut status = tonic::Status::new(self.grpc_code(), message);
        status.metadata_mut().insert(
            CODE_METADATA,
            tonic::metadata::MetadataValue::from_static(self.as_str()),
        );
        status
    }

    /// The code of a gRPC status: exact when the other side named it in
    /// [`CODE_METADATA`], else inferred from the gRPC code (a transport
    /// failure, a deadline, a cancelled call are all `unavailable`: retry).
    pub fn from_status(status: &tonic::Status) -> Self {
        if let Some(code) = status
            .metadata()
            .get(CODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::parse)
        {
            return code;
        }
        use tonic::Code;
        match status.code() {
            Code::InvalidArgument | Code::FailedPrecondition => ErrorCode::InvalidArgument,
            Code::NotFound | Code::PermissionDenied => ErrorCode::NotFound,
            Code::ResourceExhausted => ErrorCode::RateLimited,
            Code::OutOfRange => ErrorCode::TooLarge,
            Code::Unauthenticated => ErrorCode::Unauthorized,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Internal,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_form_and_grpc() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let status = code.to_status("why");
            assert_eq!(status.message(), "why");
            assert_eq!(ErrorCode::from_status(&status), code, "{code}");
        }
    }

    #[test]
    fn statuses_from_elsewhere_are_inferred() {
        let transport = tonic::Status::unknown("connection reset");
        assert_eq!(ErrorCode::from_status(&transport), ErrorCode::Unavailable);
        let deadline = tonic::Status::deadline_exceeded("slow");
        assert_eq!(ErrorCode::from_status(&deadline), ErrorCode::Unavailable);
        let bug = tonic::Status::internal("oops");
        assert_eq!(ErrorCode::from_status(&bug), ErrorCode::Internal);
    }

    #[test]
    fn only_transient_codes_are_retryable() {
        let retryable: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| c.retryable())
            .collect();
        assert_eq!(
            retryable,
            [
                ErrorCode::RateLimited,
                ErrorCode::Unavailable,
                ErrorCode::Internal
            ]
        );
    }
}
