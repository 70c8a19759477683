//! Leaving and membership of groups, and archiving a conversation:
//! `POST /conversations/{id}/leave`, `POST /conversations/{id}/members`,
//! `DELETE /conversations/{id}/members/{user_id}`,
//! `PUT|DELETE /conversations/{id}/archive`. Answered by the
//! conversation's owner, which posts every membership change as a system
//! message (see `node/src/safety/membership.rs`).

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use turbochat_protocol::ids::{ConversationId, UserId};
use turbochat_protocol::safety::membership_request::Action;
use turbochat_protocol::safety::MembershipRequest;

use super::safety::client_for;
use super::{json, traced, ApiError};
use crate::auth::Authenticated;
use crate::App;

async fn change(
    app: &App,
    user: UserId,
    conversation: ConversationId,
    action: Action,
    target: UserId,
) -> Result<Response, ApiError> {
    let reply = client_for(app, app.inner.links.owner(&conversation))?
        .membership(traced(MembershipRequest {
            conversation_id: conversation.to_string(),
            user_id: user,
            action: action as i32,
            target_id: target,
        }))
        .await?;
    Ok(json(reply.into_inner().json))
}

/// `POST /conversations/{id}/leave`: the caller leaves a group. Answers
/// `{"conversation_id", "left": true, "system_seq"}`.
pub async fn leave(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    path: Result<Path<ConversationId>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(conversation) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    change(&app, claims.sub, conversation, Action::Leave, String::new()).await
}

/// `POST /conversations/{id}/members` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    user_id: UserId,
}

/// `POST /conversations/{id}/members`: the group's creator adds `user_id`.
/// Answers `{"conversation_id", "user_id", "added", "system_seq"?}`.
pub async fn add(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    path: Result<Path<ConversationId>, PathRejection>,
    body: Result<Json<AddBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(conversation) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    change(&app, claims.sub, conversation, Action::Add, body.user_id).await
}

/// `DELETE /conversations/{id}/members/{user_id}`: the group's creator
/// removes a member. Answers `{"conversation_id", "user_id", "removed",
/// "system_seq"?}`.
pub async fn remove(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    path: Result<Path<(ConversationId, UserId)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((conversation, user)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    change(&app, claims.sub, conversation, Action::Remove, user).await
}

/// `PUT /conversations/{id}/archive`: hides the conversation from the
/// caller's list until a newer message arrives. `{"conversation_id",
/// "archived": true}`.
pub async fn archive(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    path: Result<Path<ConversationId>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(conversation) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    change(
        &app,
        claims.sub,
        conversation,
        Action::Archive,
        String::new(),
    )
    .await
}

/// `DELETE /conversations/{id}/archive`: shows it again.
pub async fn unarchive(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    path: Result<Path<ConversationId>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(conversation) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    change(
        &app,
        claims.sub,
        conversation,
        Action::Unarchive,
        String::new(),
    )
    .await
}

/// `PUT /conversations/{id}/mute`: the caller gets no pushes from the
/// conversation (live frames still arrive). `{"conversation_id", "muted": true}`.
pub async fn mute(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    path: Result<Path<ConversationId>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(conversation) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    change(&app, claims.sub, conversation, Action::Mute, String::new()).await
}

/// `DELETE /conversations/{id}/mute`: pushes again. `{"conversation_id", "muted": false}`.
pub async fn unmute(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    path: Result<Path<ConversationId>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(conversation) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    change(
        &app,
        claims.sub,
        conversation,
        Action::Unmute,
        String::new(),
    )
    .await
}
