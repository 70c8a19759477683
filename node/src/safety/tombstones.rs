//! Unsend and delete: one tombstone path for a sender unsending their own
//! message (within `safety.unsend_window`) and for an operator deleting
//! any message (admin API, audited).
//!
//! At the conversation's owner node: the store replaces the message by its
//! tombstone (body emptied, media key dropped, read back as kind `deleted`)
//! and drops its push jobs not yet sent, in one transaction with the
//! operator's audit entry; then the owner task puts the tombstone in its
//! replay memory and tells every subscribed session (`message_deleted`).
//! History, replays and the conversation list read the tombstone from then
//! on. Reports keep their own copy of the message (see `reports.rs`).

use serde_json::{json, Value};
use turbochat_protocol::ids::{ConversationId, Seq, UserId};
use turbochat_protocol::safety::DeleteMessageRequest;
use turbochat_protocol::{DeletedBy, ErrorCode};
use turbochat_store::{AuditEntry, Tombstone, Tombstoned};

use super::admin::Admin;
use super::service::now_ms;
use super::Safety;
use crate::owner::Command;
use crate::refusal::Refusal;

/// Who asks for a message to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleter {
    /// Its sender, unsending it (must participate, within the window).
    Sender(UserId),
    /// An operator of the admin API, with the reason for the audit log.
    Operator {
        /// The operator's name.
        name: String,
        /// Why (audited).
        reason: String,
    },
    /// An erasure of the sender (audited once, for the whole erasure).
    Erasure,
}

impl Deleter {
    /// The deleter as a `DeleteMessage` call carries it.
    pub fn from_request(req: &DeleteMessageRequest) -> Result<Self, Refusal> {
        if req.erasure {
            return Ok(Deleter::Erasure);
        }
        match (req.user_id.is_empty(), req.operator.is_empty()) {
            (false, true) => Ok(Deleter::Sender(req.user_id.clone())),
            (true, false) => Ok(Deleter::Operator {
                name: req.operator.clone(),
                reason: req.reason.clone(),
            }),
            _ => Err(Refusal::invalid("a deletion names a sender or an operator")),
        }
    }

    fn to_request(&self, conversation: ConversationId, seq: Seq) -> DeleteMessageRequest {
        let (user_id, operator, reason) = match self {
            Deleter::Sender(user) => (user.clone(), String::new(), String::new()),
            Deleter::Operator { name, reason } => (String::new(), name.clone(), reason.clone()),
            Deleter::Erasure => (String::new(), String::new(), String::new()),
        };
        DeleteMessageRequest {
            conversation_id: conversation.to_string(),
            seq,
            user_id,
            operator,
            reason,
            erasure: matches!(self, Deleter::Erasure),
        }
    }
}

impl Safety {
    /// Replaces message `seq` of `conversation` by its tombstone, at the
    /// conversation's owner (this node or another, over gRPC). Answers
    /// `{"conversation_id", "seq", "message_id", "deleted_by", "already"}`.
    pub(crate) async fn delete_message(
        &self,
        conversation: ConversationId,
        seq: Seq,
        deleter: Deleter,
    ) -> Result<Value, Refusal> {
        let Some(grpc) = self.remote_owner(conversation) else {
            return self.delete_message_here(conversation, seq, deleter).await;
        };
        let mut client = self
            .peer(&grpc)
            .ok_or_else(|| Refusal::unavailable("the owner cannot be reached; retry"))?;
        let reply = client
            .delete_message(deleter.to_request(conversation, seq))
            .await
            .map_err(|s| Refusal::new(ErrorCode::from_status(&s), s.message().to_string()))?;
        serde_json::from_slice(&reply.into_inner().json)
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))
    }

    /// [`Safety::delete_message`] for a conversation owned here.
    pub(crate) async fn delete_message_here(
        &self,
        conversation: ConversationId,
        seq: Seq,
        deleter: Deleter,
    ) -> Result<Value, Refusal> {
        let now = now_ms();
        let (deleted_by, audit) = match &deleter {
            Deleter::Sender(user) => {
                self.may_unsend(conversation, seq, user, now).await?;
                (DeletedBy::Sender, None)
            }
            Deleter::Operator { name, reason } => {
                if self.store().message(conversation, seq).await?.is_none() {
                    return Err(no_message());
                }
                let audit: AuditEntry = Admin::audit(
                    name,
                    "delete_message",
                    &format!("{conversation}/{seq}"),
                    json!({"reason": reason}),
                );
                (DeletedBy::Operator, Some(audit))
            }
            Deleter::Erasure => (DeletedBy::Operator, None),
        };
        let tombstone = Tombstone {
            conversation_id: conversation,
            seq,
            deleted_by,
            deleted_at: now,
        };
        let (message, already) = match self
            .store()
            .tombstone_message(&tombstone, audit.as_ref())
            .await?
        {
            Tombstoned::Now(message) => (message, false),
            Tombstoned::Already(message) => (message, true),
            Tombstoned::Missing => return Err(no_message()),
        };
        if !already {
            tracing::info!(conversation_id = %conversation, seq, by = deleted_by.as_str(), "message replaced by its tombstone");
            self.tell_owner(
                conversation,
                Command::Tombstoned {
                    message: Box::new(message.clone()),
                    deleted_by,
                    deleted_at: now,
                },
            );
        }
        Ok(json!({
            "conversation_id": conversation,
            "seq": seq,
            "message_id": message.message_id,
            "deleted_by": deleted_by,
            "already": already,
        }))
    }

    /// Refuses an unsend unless `user` participates in `conversation` and
    /// sent message `seq` no longer than `safety.unsend_window` ago.
    async fn may_unsend(
        &self,
        conversation: ConversationId,
        seq: Seq,
        user: &str,
        now: i64,
    ) -> Result<(), Refusal> {
        if self.is_banned(user) {
            return Err(super::banned());
        }
        let participates = self
            .store()
            .load_conversation(conversation)
            .await?
            .is_some_and(|c| c.participants.iter().any(|p| p.user_id == user));
        if !participates {
            return Err(Refusal::no_conversation());
        }
        let message = self
            .store()
            .message(conversation, seq)
            .await?
            .ok_or_else(no_message)?;
        if message.sender_id != user {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "only its sender can unsend a message",
            ));
        }
        if message.kind == turbochat_protocol::MessageKind::Deleted {
            return Ok(());
        }
        let window = self.inner.unsend_window;
        if window.is_zero() {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "unsending is turned off on this server",
            ));
        }
        let age_ms = now.saturating_sub(message.created_at);
        if age_ms > i64::try_from(window.as_millis()).unwrap_or(i64::MAX) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!(
                    "a message can be unsent for {} s after it was sent",
                    window.as_secs()
                ),
            ));
        }
        Ok(())
    }

    /// Makes the conversation's owner (here or on another node) re-read its
    /// participants. Best effort: an owner that is not told reloads them
    /// when it next starts.
    pub(super) async fn participants_changed(&self, conversation: ConversationId) {
        let Some(grpc) = self.remote_owner(conversation) else {
            self.tell_owner(conversation, Command::Refresh);
            return;
        };
        let Some(mut client) = self.peer(&grpc) else {
            return;
        };
        let request = turbochat_protocol::safety::ParticipantsChangedRequest {
            conversation_id: conversation.to_string(),
        };
        if let Err(status) = client.participants_changed(request).await {
            tracing::warn!(%status, "cannot tell an owner that its participants changed");
        }
    }

    /// Hands `command` to the conversation's owner task here, if it runs
    /// (with none running, no session is subscribed here).
    pub(super) fn tell_owner(&self, conversation: ConversationId, command: Command) {
        if let Some(post) = self.inner.system.get() {
            if let Err(err) = post.owners().dispatch(conversation, command) {
                tracing::debug!(%err, "the owner was not told of a tombstone");
            }
        }
    }
}

fn no_message() -> Refusal {
    Refusal::new(ErrorCode::NotFound, "no such message")
}
