//! Reports: a user reports a message or a user; the moderation rules flag
//! a message. Either way the report keeps a copy of the evidence as it was
//! when reported, so a message deleted later stays reviewable.

use serde::Serialize;
use turbochat_protocol::ids::{valid_user_id, ConversationId, Seq, UserId};
use turbochat_store::NewReport;

use super::Safety;
use crate::owner::SendCommand;
use crate::refusal::Refusal;

/// Reasons a user may give, as documented in `docs/protocol.md`.
pub const REASONS: [&str; 5] = ["spam", "scam", "harassment", "inappropriate", "other"];
/// The reporter of reports opened by the moderation rules.
pub const MODERATION_REPORTER: &str = "system:moderation";
/// Messages before the reported one copied into a report.
pub const CONTEXT_BEFORE: u32 = 5;
/// Messages copied into a report about a user met in a conversation.
pub const CONTEXT_FOR_USER: u32 = 10;
/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 1_000;

/// A report as a user files it.
#[derive(Debug, Clone)]
pub struct ReportDraft {
    /// The reporter.
    pub reporter: UserId,
    /// Where the message or user was met.
    pub conversation: Option<ConversationId>,
    /// The reported message.
    pub seq: Option<Seq>,
    /// The reported user (else the message's sender).
    pub target: Option<UserId>,
    /// One of [`REASONS`].
    pub reason: String,
    /// Free text.
    pub note: Option<String>,
}

/// What `POST /reports` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Filed {
    /// The report's id.
    pub report_id: i64,
    /// Whom it is about.
    pub reported_user_id: UserId,
    /// How many messages were copied into it.
    pub evidence_messages: usize,
}

impl Safety {
    /// Checks and stores a user's report, with its evidence.
    pub async fn file_report(&self, draft: ReportDraft) -> Result<Filed, Refusal> {
        if !REASONS.contains(&draft.reason.as_str()) {
            return Err(Refusal::invalid(format!(
                "reason must be one of {}",
                REASONS.join(", ")
            )));
        }
        if let Some(note) = &draft.note {
            if note.chars().count() > MAX_NOTE_CHARS || note.contains('\0') {
                return Err(Refusal::invalid(format!(
                    "note must be at most {MAX_NOTE_CHARS} characters without NUL"
                )));
            }
        }
        if let Some(target) = &draft.target {
            if !valid_user_id(target) {
                return Err(Refusal::invalid("invalid user id"));
            }
        }
        let (reported, evidence) = match (draft.conversation, draft.seq) {
            (Some(conversation), Some(seq)) => {
                self.message_evidence(&draft, conversation, seq).await?
            }
            (Some(conversation), None) => self.user_evidence(&draft, conversation).await?,
            (None, Some(_)) => {
                return Err(Refusal::invalid(
                    "a reported message needs its conversation_id",
                ))
            }
            (None, None) => match &draft.target {
                Some(target) => (target.clone(), Vec::new()),
                None => return Err(Refusal::invalid("name a message or a user to report")),
            },
        };
        if reported == draft.reporter {
            return Err(Refusal::invalid("you cannot report yourself"));
        }
        let evidence_messages = evidence.len();
        let report = NewReport {
            reporter_id: draft.reporter,
            reported_user_id: reported.clone(),
            conversation_id: draft.conversation,
            reported_seq: draft.seq,
            reason: draft.reason,
            note: draft.note,
            evidence: serde_json::to_string(&evidence).unwrap_or_else(|_| "[]".into()),
            created_at: super::service::now_ms(),
        };
        let report_id = self.store().insert_report(&report).await?;
        metrics::counter!("turbochat_reports_total", "reason" => report.reason.clone())
            .increment(1);
        tracing::info!(report_id, reported_user_id = %reported, reason = %report.reason, "report filed");
        Ok(Filed {
            report_id,
            reported_user_id: reported,
            evidence_messages,
        })
    }

    /// The reported message and the [`CONTEXT_BEFORE`] ones before it.
    async fn message_evidence(
        &self,
        draft: &ReportDraft,
        conversation: ConversationId,
        seq: Seq,
    ) -> Result<(UserId, Vec<turbochat_protocol::http::MessageView>), Refusal> {
        self.participant(conversation, &draft.reporter).await?;
        let mut messages = self
            .store()
            .history(
                conversation,
                Some(seq.saturating_add(1)),
                CONTEXT_BEFORE + 1,
            )
            .await?;
        messages.reverse();
        let Some(reported) = messages.last().filter(|m| m.seq == seq) else {
            return Err(Refusal::new(
                turbochat_protocol::ErrorCode::NotFound,
                "no such message",
            ));
        };
        let sender = reported.sender_id.clone();
        if draft.target.as_ref().is_some_and(|t| *t != sender) {
            return Err(Refusal::invalid(
                "target_id must be the reported message's sender (or absent)",
            ));
        }
        Ok((sender, messages))
    }

    /// The [`CONTEXT_FOR_USER`] newest messages of the conversation.
    async fn user_evidence(
        &self,
        draft: &ReportDraft,
        conversation: ConversationId,
    ) -> Result<(UserId, Vec<turbochat_protocol::http::MessageView>), Refusal> {
        let Some(target) = draft.target.clone() else {
            return Err(Refusal::invalid(
                "name a message (seq) or a user (target_id)",
            ));
        };
        let participants = self.participant(conversation, &draft.reporter).await?;
        if !participants.contains(&target) {
            return Err(Refusal::invalid(
                "target_id does not participate in this conversation",
            ));
        }
        let mut messages = self
            .store()
            .history(conversation, None, CONTEXT_FOR_USER)
            .await?;
        messages.reverse();
        Ok((target, messages))
    }

    /// The participants, if `user` is one of them (else `not_found`).
    async fn participant(
        &self,
        conversation: ConversationId,
        user: &str,
    ) -> Result<Vec<UserId>, Refusal> {
        let state = self
            .store()
            .load_conversation(conversation)
            .await?
            .ok_or_else(Refusal::no_conversation)?;
        let users: Vec<UserId> = state.participants.into_iter().map(|p| p.user_id).collect();
        if !users.iter().any(|u| u == user) {
            return Err(Refusal::no_conversation());
        }
        Ok(users)
    }

    /// Opens a review report for a message the `flag` rules matched. Runs
    /// in the background: the send is not held up. The message is named by
    /// its sender and `client_msg_id` (its seq is not known yet); should the
    /// send not be stored after all, the report says what was attempted.
    pub(super) fn flag(
        &self,
        conversation: ConversationId,
        send: &SendCommand,
        rules: Vec<String>,
    ) {
        metrics::counter!("turbochat_moderation_flagged_total").increment(1);
        let evidence = serde_json::json!([{
            "conversation_id": conversation,
            "sender_id": send.user_id,
            "client_msg_id": send.client_msg_id,
            "kind": send.kind,
            "body": send.body,
            "media_key": send.media_key,
        }]);
        let report = NewReport {
            reporter_id: MODERATION_REPORTER.into(),
            reported_user_id: send.user_id.clone(),
            conversation_id: Some(conversation),
            reported_seq: None,
            reason: "moderation".into(),
            note: Some(format!("rules: {}", rules.join(", "))),
            evidence: evidence.to_string(),
            created_at: super::service::now_ms(),
        };
        let safety = self.clone();
        self.inner.tasks.spawn(async move {
            if let Err(err) = safety.store().insert_report(&report).await {
                metrics::counter!("turbochat_moderation_flags_lost_total").increment(1);
                tracing::error!(%err, "cannot store a moderation flag");
            }
        });
    }
}
