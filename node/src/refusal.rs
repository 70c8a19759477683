//! Why the node said no: one type for every refusal, whichever way it
//! leaves — as a gRPC status on a unary call (the router turns it into an
//! HTTP answer) or as an `error` frame to one session over a router link.
//!
//! The code is the client's [`ErrorCode`]; its HTTP status and gRPC code
//! come from the table in `turbochat_protocol::error`, never from here.

use std::borrow::Cow;

use turbochat_protocol::ids::ConversationId;
use turbochat_protocol::{ErrorCode, ServerFrame};
use turbochat_store::{AppendError, StoreError};

/// A refused request: a stable code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    /// What the client switches on.
    pub code: ErrorCode,
    /// What a person reads.
    pub message: Cow<'static, str>,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// `invalid_argument`: the request breaks a rule.
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Refusal::new(ErrorCode::InvalidArgument, message)
    }

    /// `unavailable`: retry later (same `client_msg_id` for a send).
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Refusal::new(ErrorCode::Unavailable, message)
    }

    /// `not_found` for a conversation that does not exist **or** that the
    /// caller is not in: the two are answered alike, so a client cannot
    /// learn whether two other users talk by probing derivable ids.
    pub fn no_conversation() -> Self {
        Refusal::new(ErrorCode::NotFound, "no such conversation")
    }

    /// The `error` frame this refusal is to one session.
    pub fn frame(
        &self,
        conversation_id: Option<ConversationId>,
        client_msg_id: Option<String>,
    ) -> ServerFrame {
        ServerFrame::Error {
            code: self.code,
            message: self.message.to_string(),
            client_msg_id,
            conversation_id,
            retry_after_ms: None,
        }
    }
}

impl From<Refusal> for tonic::Status {
    fn from(refusal: Refusal) -> Self {
        refusal.code.to_status(refusal.message)
    }
}

/// The store failed us: the client may retry; the cause is logged here
/// (once), never sent.
impl From<StoreError> for Refusal {
    fn from(err: StoreError) -> Self {
        tracing::error!(%err, "store error");
        Refusal::unavailable("store unavailable; retry")
    }
}

/// A batch the store refused. Only a batch of one message is answered with
/// this (larger ones are retried message by message first), so the code is
/// about the one message it names.
impl From<AppendError> for Refusal {
    fn from(err: AppendError) -> Self {
        match err {
            AppendError::Invalid(reason) => {
                tracing::info!(%reason, "the store refused a message's data");
                Refusal::invalid("the message holds a value the store cannot keep")
            }
            AppendError::Failed(reason) => {
                tracing::error!(%reason, "append failed");
                Refusal::new(ErrorCode::Internal, "message not stored; retry")
            }
            AppendError::SeqTaken { .. } => {
                Refusal::unavailable("conversation is moving between nodes; retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_its_code_across_grpc() {
        let status: tonic::Status = Refusal::no_conversation().into();
        assert_eq!(ErrorCode::from_status(&status), ErrorCode::NotFound);
        assert_eq!(status.message(), "no such conversation");
    }

    #[test]
    fn store_data_errors_are_the_clients_and_others_are_retryable() {
        let bad: Refusal = AppendError::Invalid("22021".into()).into();
        assert_eq!(bad.code, ErrorCode::InvalidArgument);
        let failed: Refusal = AppendError::Failed("disk".into()).into();
        assert!(failed.code.retryable());
    }
}
