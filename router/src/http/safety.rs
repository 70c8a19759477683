//! Blocks and reports: `POST /blocks`, `GET /blocks`, `DELETE
//! /blocks/{user_id}` (answered by the caller's home node, which keeps the
//! block lists and tells every node when one changes) and `POST /reports`
//! (answered by the conversation's owner, which copies the evidence);
//! `DELETE /conversations/{id}/messages/{seq}` (unsend, at the owner).
//!
//! These calls go over the node's `Safety` gRPC service on a channel of
//! their own per node (`proto/safety.proto`), beside the data-path link.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use dashmap::DashMap;
use serde::Deserialize;
use tonic::transport::{Channel, Endpoint};
use turbochat_protocol::ids::{ConversationId, Seq, UserId};
use turbochat_protocol::safety::safety_client::SafetyClient;
use turbochat_protocol::safety::{
    BlockRequest, DeleteMessageRequest, ListBlocksRequest, ReportRequest,
};

use super::{json, traced, ApiError};
use crate::auth::Authenticated;
use crate::link::NodeLink;
use crate::App;

/// `Safety` clients by node gRPC address, connected on first use.
#[derive(Default)]
pub struct SafetyClients {
    clients: DashMap<String, SafetyClient<Channel>>,
}

impl SafetyClients {
    fn client(&self, node: &NodeLink) -> Result<SafetyClient<Channel>, ApiError> {
        let grpc = &node.node.grpc;
        if let Some(client) = self.clients.get(grpc) {
            return Ok(client.clone());
        }
        let channel = Endpoint::from_shared(grpc.clone())
            .map_err(|_| ApiError::unavailable())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect_lazy();
        let client = SafetyClient::new(channel);
        self.clients.insert(grpc.clone(), client.clone());
        Ok(client)
    }
}

/// A `Safety` client for `node`, or 503 when there is none.
pub(crate) fn client_for(
    app: &App,
    node: Option<Arc<NodeLink>>,
) -> Result<SafetyClient<Channel>, ApiError> {
    let node = node.ok_or_else(ApiError::unavailable)?;
    app.inner.safety.client(&node)
}

/// Refuses a block, unblock, report or unsend beyond the user's rate.
fn check_rate(app: &App, user: &str) -> Result<(), ApiError> {
    if let Err(not_until) = app.inner.users.safety.check_key(&user.to_string()) {
        metrics::counter!("turbochat_safety_rate_limited_total").increment(1);
        return Err(ApiError::rate_limited(
            "too many blocks or reports; retry later",
            crate::limits::wait_ms(&not_until),
        ));
    }
    Ok(())
}

/// `POST /blocks` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockBody {
    /// Whom to block.
    user_id: UserId,
}

/// `POST /blocks`: the caller blocks `user_id` (idempotent). Answers
/// `{"user_id", "blocked": true}`.
pub async fn block(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    body: Result<Json<BlockBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_rate(&app, &claims.sub)?;
    let reply = client_for(&app, app.inner.links.home(&claims.sub))?
        .block(traced(BlockRequest {
            user_id: claims.sub,
            target_id: body.user_id,
        }))
        .await?;
    Ok(json(reply.into_inner().json))
}

/// `DELETE /blocks/{user_id}`: lifts a block (idempotent). Answers
/// `{"user_id", "blocked": false, "existed": bool}`.
pub async fn unblock(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    target: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(target) = target.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_rate(&app, &claims.sub)?;
    let reply = client_for(&app, app.inner.links.home(&claims.sub))?
        .unblock(traced(BlockRequest {
            user_id: claims.sub,
            target_id: target,
        }))
        .await?;
    Ok(json(reply.into_inner().json))
}

/// `GET /blocks`: `{"blocks": [{"user_id", "blocked_at"}]}`, oldest first.
pub async fn list(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
) -> Result<Response, ApiError> {
    let reply = client_for(&app, app.inner.links.home(&claims.sub))?
        .list_blocks(traced(ListBlocksRequest {
            user_id: claims.sub,
        }))
        .await?;
    Ok(json(reply.into_inner().json))
}

/// `POST /reports` body: a message (`conversation_id` + `seq`), or a user
/// (`user_id`, with the `conversation_id` they were met in if any).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    #[serde(default)]
    conversation_id: Option<ConversationId>,
    #[serde(default)]
    seq: Option<Seq>,
    #[serde(default)]
    user_id: Option<UserId>,
    reason: String,
    #[serde(default)]
    note: Option<String>,
}

/// `POST /reports`: files a report. Answers `{"report_id",
/// "reported_user_id", "evidence_messages"}`.
pub async fn report(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    body: Result<Json<ReportBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_rate(&app, &claims.sub)?;
    let node = match &body.conversation_id {
        Some(conversation) => app.inner.links.owner(conversation),
        None => app.inner.links.home(&claims.sub),
    };
    let reply = client_for(&app, node)?
        .report(traced(ReportRequest {
            user_id: claims.sub,
            conversation_id: body.conversation_id.map(|c| c.to_string()),
            seq: body.seq,
            target_id: body.user_id,
            reason: body.reason,
            note: body.note,
        }))
        .await?;
    Ok(json(reply.into_inner().json))
}

/// `DELETE /conversations/{conversation_id}/messages/{seq}`: the caller
/// unsends their own message (within the node's `safety.unsend_window`).
/// The conversation's owner replaces it by its tombstone and tells every
/// live session (`message_deleted`). Idempotent. Answers
/// `{"conversation_id", "seq", "message_id", "deleted_by", "already"}`.
pub async fn unsend(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    path: Result<Path<(ConversationId, Seq)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((conversation, seq)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_rate(&app, &claims.sub)?;
    let reply = client_for(&app, app.inner.links.owner(&conversation))?
        .delete_message(traced(DeleteMessageRequest {
            conversation_id: conversation.to_string(),
            seq,
            user_id: claims.sub,
            operator: String::new(),
            reason: String::new(),
            erasure: false,
        }))
        .await?;
    Ok(json(reply.into_inner().json))
}
