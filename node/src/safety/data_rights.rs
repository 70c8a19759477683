//! Data rights on the admin API: export everything stored about a user
//! (`GET /admin/users/{user_id}/export`, JSON) and erase a user
//! (`POST /admin/users/{user_id}/erase`), both audited.
//!
//! Erasing: every message of the user goes through the tombstone path at
//! its conversation's owner (live sessions get `message_deleted`, unsent
//! pushes are dropped), then one transaction removes what is left — the
//! messages' sender becomes an anonymous id, their push jobs, read cursors
//! (they leave every conversation), devices and blocks go, the reports
//! they filed and their uploads are kept under the anonymous id — with the
//! audit entry; then each of their conversations' owners re-reads its
//! participants (their subscriptions end with `not_found`). Reports about
//! them (the operator's evidence) and a ban of them are kept. Idempotent: a
//! second call finds nothing left to erase.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use turbochat_protocol::ids::valid_user_id;
use turbochat_protocol::MessageKind;

use super::admin::{Admin, AdminError, ReportView};
use super::service::now_ms;
use super::tombstones::Deleter;
use crate::refusal::Refusal;

fn check_user(user: &str) -> Result<(), AdminError> {
    if !valid_user_id(user) {
        return Err(Refusal::invalid("user_id is not a valid user id").into());
    }
    Ok(())
}

/// `GET /admin/users/{user_id}/export`: everything stored about the user.
pub(super) async fn export(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let operator = admin.operator(&headers)?;
    check_user(&user)?;
    let store = admin.safety.store();
    let audit = Admin::audit(&operator, "export_user", &user, json!({}));
    store.record_audit(&audit).await?;
    let conversations = store.participations_of(&user).await?;
    let messages = store.messages_of(&user).await?;
    let devices: Vec<Value> = store
        .devices_of(std::slice::from_ref(&user))
        .await?
        .into_iter()
        .map(|d| json!({"platform": d.platform, "token": d.token, "updated_at": d.updated_at}))
        .collect();
    let blocks: Vec<Value> = store
        .blocks_of(&user)
        .await?
        .into_iter()
        .map(|b| json!({"user_id": b.blocked_id, "blocked_at": b.created_at}))
        .collect();
    let blocked: std::collections::HashSet<String> = blocks
        .iter()
        .filter_map(|b| b["user_id"].as_str().map(str::to_string))
        .collect();
    let mut blocked_by: Vec<String> = store
        .block_relations(&user)
        .await?
        .into_iter()
        .filter(|u| !blocked.contains(u))
        .collect();
    blocked_by.sort();
    let reports: Vec<ReportView> = store
        .reports_involving(&user)
        .await?
        .into_iter()
        .map(ReportView::from)
        .collect();
    let ban = store
        .bans()
        .await?
        .into_iter()
        .find(|b| b.user_id == user)
        .map(|b| json!({"reason": b.reason, "banned_by": b.banned_by, "banned_at": b.created_at}));
    Ok(Json(json!({
        "user_id": user,
        "exported_at": audit.created_at,
        "conversations": conversations,
        "messages": messages,
        "devices": devices,
        "blocks": blocks,
        "blocked_by": blocked_by,
        "reports": reports,
        "ban": ban,
    })))
}

/// `POST /admin/users/{user_id}/erase`: erases the user (see the module
/// docs). Answers `{"user_id", "anonymous_id", "tombstoned", "erased"}`.
pub(super) async fn erase(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let operator = admin.operator(&headers)?;
    check_user(&user)?;
    let safety = &admin.safety;
    let mut tombstoned = 0u64;
    for message in safety.store().messages_of(&user).await? {
        if message.kind == MessageKind::Deleted {
            continue;
        }
        safety
            .delete_message(message.conversation_id, message.seq, Deleter::Erasure)
            .await?;
        tombstoned += 1;
    }
    let conversations = safety.store().participations_of(&user).await?;
    let anonymous = format!("erased-{}", uuid::Uuid::new_v4().simple());
    let audit = Admin::audit(
        &operator,
        "erase_user",
        &user,
        json!({"anonymous_id": anonymous, "tombstoned": tombstoned}),
    );
    let erased = safety.store().erase_user(&user, &anonymous, &audit).await?;
    safety.blocks_changed(&user);
    // Their sessions end and their place goes at every running owner.
    for participation in &conversations {
        safety
            .participants_changed(participation.conversation_id)
            .await;
    }
    tracing::info!(user_id = %user, tombstoned, at = now_ms(), "user erased");
    Ok(Json(json!({
        "user_id": user,
        "anonymous_id": anonymous,
        "tombstoned": tombstoned,
        "erased": erased,
    })))
}
