//! The router's HTTP API: conversation list, history, creating conversations.
//! Usable on its own (no WebSocket, no queue), e.g. by a CLI command.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use turbochat_protocol::http::{
    ConversationList, ConversationView, CreateConversation, ErrorBody, HistoryPage, MessageView,
};
use turbochat_protocol::{ConversationId, ErrorCode, Seq, UserId};

use crate::token::{TokenError, TokenProvider};

/// Largest page `GET /history` serves.
pub const MAX_HISTORY_PAGE: u32 = 200;

/// Why an HTTP call failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The token provider failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Connecting, sending or reading failed (or timed out).
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// The server answered with an error body.
    #[error("server refused ({status}): {code}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Stable code.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// The server answered something that is not the expected JSON.
    #[error("unexpected answer ({status}): {body}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// The body, cut to 512 bytes.
        body: String,
    },
}

impl HttpError {
    /// The stable code, if the server gave one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            HttpError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// An HTTP client for one router base URL (`http://host:port`). Cheap to
/// clone. Every request asks the token provider for a token.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    tokens: Arc<dyn TokenProvider>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish()
    }
}

impl Api {
    /// A client for the router at `base_url`, with a per-request `timeout`.
    pub fn new(base_url: &str, tokens: impl TokenProvider, timeout: Duration) -> Self {
        Self::with_provider(base_url, Arc::new(tokens), timeout)
    }

    pub(crate) fn with_provider(
        base_url: &str,
        tokens: Arc<dyn TokenProvider>,
        timeout: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Api {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            tokens,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /conversations`: the caller's conversations, most recently
    /// active first, with last message and unread count.
    pub async fn conversations(
        &self,
        limit: Option<u32>,
    ) -> Result<Vec<ConversationView>, HttpError> {
        let mut request = self.http.get(format!("{}/conversations", self.base));
        if let Some(limit) = limit {
            request = request.query(&[("limit", limit)]);
        }
        let list: ConversationList = self.call(request).await?;
        Ok(list.conversations)
    }

    /// `GET /history`: a page of messages with seq below `before_seq` (or
    /// the newest), newest first.
    pub async fn history(
        &self,
        conversation_id: ConversationId,
        before_seq: Option<Seq>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, HttpError> {
        let mut query = vec![("conversation_id", conversation_id.to_string())];
        if let Some(before) = before_seq {
            query.push(("before_seq", before.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        let request = self
            .http
            .get(format!("{}/history", self.base))
            .query(&query);
        self.call(request).await
    }

    /// Every message with seq in `from..=to`, oldest first (paging
    /// `GET /history` backwards from `to`). Messages the server no longer
    /// has are simply absent.
    pub async fn messages_between(
        &self,
        conversation_id: ConversationId,
        from: Seq,
        to: Seq,
    ) -> Result<Vec<MessageView>, HttpError> {
        let mut found = Vec::new();
        let mut before = to.saturating_add(1);
        while before > from {
            let want = (before - from).min(MAX_HISTORY_PAGE as u64) as u32;
            let page = self
                .history(conversation_id, Some(before), Some(want))
                .await?;
            let oldest = page.messages.iter().map(|m| m.seq).min();
            found.extend(
                page.messages
                    .into_iter()
                    .filter(|m| m.seq >= from && m.seq <= to),
            );
            match (oldest, page.next_before_seq) {
                (Some(oldest), Some(next)) if oldest > from && next < before => before = next,
                _ => break,
            }
        }
        found.sort_by_key(|m| m.seq);
        found.dedup_by_key(|m| m.seq);
        Ok(found)
    }

    /// `POST /conversations` for a direct conversation with `peer`,
    /// optionally about a listing. Idempotent: the same pair and listing
    /// always give the same conversation.
    pub async fn create_direct(
        &self,
        peer: &str,
        listing_id: Option<&str>,
    ) -> Result<ConversationView, HttpError> {
        self.create(&CreateConversation::Direct {
            peer_id: peer.to_string(),
            listing_id: listing_id.map(str::to_string),
        })
        .await
    }

    /// `POST /conversations` for a new group of the caller and `participants`.
    pub async fn create_group(
        &self,
        participants: Vec<UserId>,
        title: Option<String>,
    ) -> Result<ConversationView, HttpError> {
        self.create(&CreateConversation::Group {
            participants,
            title,
        })
        .await
    }

    /// `POST /blocks`: from now on `user` reaches you through no channel in
    /// direct conversations (idempotent).
    pub async fn block(&self, user: &str) -> Result<(), HttpError> {
        let request = self
            .http
            .post(format!("{}/blocks", self.base))
            .json(&serde_json::json!({ "user_id": user }));
        self.call::<serde_json::Value>(request).await.map(|_| ())
    }

    /// `DELETE /blocks/{user}`: lifts a block; says whether there was one.
    pub async fn unblock(&self, user: &str) -> Result<bool, HttpError> {
        let request = self.http.delete(format!("{}/blocks/{user}", self.base));
        let answer: serde_json::Value = self.call(request).await?;
        Ok(answer["existed"].as_bool().unwrap_or(false))
    }

    /// `GET /blocks`: the users you block, oldest block first.
    pub async fn blocks(&self) -> Result<Vec<UserId>, HttpError> {
        let request = self.http.get(format!("{}/blocks", self.base));
        let answer: serde_json::Value = self.call(request).await?;
        Ok(answer["blocks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["user_id"].as_str().map(str::to_string))
            .collect())
    }

    /// `POST /reports`: reports `target` for `reason` (`spam`, `scam`,
    /// `harassment`, `inappropriate`, `other`); returns the report's id.
    pub async fn report(
        &self,
        target: &ReportTarget,
        reason: &str,
        note: Option<&str>,
    ) -> Result<i64, HttpError> {
        let mut body = match target {
            ReportTarget::Message {
                conversation_id,
                seq,
            } => serde_json::json!({"conversation_id": conversation_id, "seq": seq}),
            ReportTarget::User {
                user_id,
                conversation_id,
            } => serde_json::json!({"user_id": user_id, "conversation_id": conversation_id}),
        };
        body["reason"] = reason.into();
        if let Some(note) = note {
            body["note"] = note.into();
        }
        if body["conversation_id"].is_null() {
            body.as_object_mut().map(|b| b.remove("conversation_id"));
        }
        let request = self.http.post(format!("{}/reports", self.base)).json(&body);
        let answer: serde_json::Value = self.call(request).await?;
        Ok(answer["report_id"].as_i64().unwrap_or_default())
    }

    /// `DELETE /conversations/{id}/messages/{seq}`: unsends your own
    /// message (within the server's unsend window). Returns whether it was
    /// already unsent.
    pub async fn unsend(
        &self,
        conversation_id: ConversationId,
        seq: Seq,
    ) -> Result<bool, HttpError> {
        let request = self.http.delete(format!(
            "{}/conversations/{conversation_id}/messages/{seq}",
            self.base
        ));
        let answer: serde_json::Value = self.call(request).await?;
        Ok(answer["already"].as_bool().unwrap_or(false))
    }

    async fn create(&self, body: &CreateConversation) -> Result<ConversationView, HttpError> {
        let request = self
            .http
            .post(format!("{}/conversations", self.base))
            .json(body);
        self.call(request).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, HttpError> {
        let token = self.tokens.token().await?;
        let response = request.bearer_auth(token).send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|_| unexpected(status, &bytes));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody { code, message, .. }) => Err(HttpError::Server {
                status,
                code,
                message,
            }),
            Err(_) => Err(unexpected(status, &bytes)),
        }
    }
}

/// What a report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    /// One message (its sender is the reported user).
    Message {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message's seq.
        seq: Seq,
    },
    /// A user, perhaps met in a conversation.
    User {
        /// Whom.
        user_id: UserId,
        /// Where they were met, if anywhere.
        conversation_id: Option<ConversationId>,
    },
}

fn unexpected(status: u16, bytes: &[u8]) -> HttpError {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
    HttpError::Unexpected { status, body: text }
}
