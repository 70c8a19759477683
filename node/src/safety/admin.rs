//! The admin API, on the node's operator listener (`node.http_listen`,
//! beside `/metrics` and `/cluster`): list and resolve reports, ban and
//! unban users, read the audit log. Every change writes an audit entry
//! (who, when, what) in the change's own transaction.
//!
//! Why on the node: the node holds the store (reports, bans, the audit log
//! live there) and is already an operator-only listener; routers hold no
//! database credentials and face clients.
//!
//! Authentication: `Authorization: Bearer <secret>`, one secret per
//! operator (`[[admin.operators]]`), compared in constant time. The
//! operator's `name` is who the audit log says acted. Never a user's JWT.
//! With no operator configured the API answers `401` to everything.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use turbochat_protocol::http::ErrorBody;
use turbochat_protocol::ids::{valid_user_id, UserId};
use turbochat_protocol::ErrorCode;
use turbochat_store::{AuditEntry, Ban, Report};

use super::service::now_ms;
use super::Safety;
use crate::refusal::Refusal;

/// Shortest accepted operator secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Largest page of reports or audit entries.
pub const MAX_PAGE: u32 = 500;
/// Longest reason or resolution, in characters.
pub const MAX_TEXT_CHARS: usize = 2_000;

/// `[admin]`: who may use the admin API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The operators. None by default: the API refuses everyone.
    #[serde(default)]
    pub operators: Vec<OperatorConfig>,
}

/// One operator (`[[admin.operators]]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Who the audit log says acted.
    pub name: String,
    /// The bearer secret (at least 32 bytes; e.g. `openssl rand -hex 32`).
    pub secret: String,
}

impl std::fmt::Debug for OperatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorConfig")
            .field("name", &self.name)
            .field("secret", &"…")
            .finish()
    }
}

impl AdminConfig {
    /// Checks the operators: a bad one names its index (`admin.operators[i]`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut names = std::collections::HashSet::new();
        for (i, op) in self.operators.iter().enumerate() {
            let key = format!("admin.operators[{i}]");
            if op.name.trim().is_empty()
                || op.name.len() > 64
                || op.name.chars().any(char::is_control)
            {
                return Err((key, "name must be 1 to 64 characters".into()));
            }
            if !names.insert(op.name.as_str()) {
                return Err((key, format!("name {:?} is used twice", op.name)));
            }
            if op.secret.len() < MIN_SECRET_LEN {
                return Err((
                    key,
                    format!("secret must be at least {MIN_SECRET_LEN} bytes"),
                ));
            }
        }
        Ok(())
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct Admin {
    pub(super) safety: Safety,
    operators: std::sync::Arc<Vec<OperatorConfig>>,
}

/// An admin API error: a [`Refusal`] as an HTTP answer.
#[derive(Debug)]
pub struct AdminError(Refusal);

impl From<Refusal> for AdminError {
    fn from(refusal: Refusal) -> Self {
        AdminError(refusal)
    }
}

impl From<turbochat_store::StoreError> for AdminError {
    fn from(err: turbochat_store::StoreError) -> Self {
        AdminError(Refusal::from(err))
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            code: self.0.code,
            message: self.0.message.to_string(),
            retry_after_ms: None,
        };
        let mut response = (status, Json(body)).into_response();
        if self.0.code == ErrorCode::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl Admin {
    /// The admin API of `safety`, for `config`'s operators.
    pub fn new(safety: Safety, config: &AdminConfig) -> Self {
        if config.operators.is_empty() {
            tracing::info!("admin API: no operator configured; it refuses every request");
        }
        Admin {
            safety,
            operators: std::sync::Arc::new(config.operators.clone()),
        }
    }

    /// The routes, under `/admin`.
    pub fn routes(self) -> axum::Router {
        axum::Router::new()
            .route("/admin/reports", get(list_reports))
            .route("/admin/reports/{id}/resolve", post(resolve_report))
            .route("/admin/bans", get(list_bans).post(ban))
            .route("/admin/bans/{user_id}", axum::routing::delete(unban))
            .route("/admin/audit", get(audit_log))
            .route(
                "/admin/users/{user_id}/export",
                get(super::data_rights::export),
            )
            .route(
                "/admin/users/{user_id}/erase",
                post(super::data_rights::erase),
            )
            .route(
                "/admin/conversations/{conversation_id}/messages",
                post(system_message),
            )
            .route(
                "/admin/conversations/{conversation_id}/messages/{seq}/delete",
                post(delete_message),
            )
            .route(
                "/admin/conversations/{conversation_id}/listing",
                axum::routing::put(super::listing::set_listing)
                    .delete(super::listing::clear_listing),
            )
            .with_state(self)
    }

    /// The operator named by the request's bearer secret. Every configured
    /// secret is compared (in constant time), whichever matches.
    pub(super) fn operator(&self, headers: &HeaderMap) -> Result<String, AdminError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        let mut found = None;
        for op in self.operators.iter() {
            if bool::from(op.secret.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(op.name.clone());
            }
        }
        found.ok_or_else(|| {
            metrics::counter!("turbochat_admin_unauthorized_total").increment(1);
            AdminError(Refusal::new(
                ErrorCode::Unauthorized,
                "an operator's bearer secret is required",
            ))
        })
    }

    /// The store the admin API reads and writes.
    pub(super) fn store(&self) -> &dyn turbochat_store::Store {
        self.safety.store()
    }

    /// An audit entry of `operator` doing `action` to `target`, now (and
    /// counted and logged).
    pub(super) fn audit(operator: &str, action: &str, target: &str, detail: Value) -> AuditEntry {
        metrics::counter!("turbochat_admin_actions_total", "action" => action.to_string())
            .increment(1);
        tracing::info!(%operator, %action, %target, "admin action");
        AuditEntry {
            id: 0,
            operator: operator.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            detail: detail.to_string(),
            created_at: now_ms(),
        }
    }
}

pub(super) fn check_text(field: &str, text: &str) -> Result<(), AdminError> {
    if text.trim().is_empty() || text.chars().count() > MAX_TEXT_CHARS || text.contains('\0') {
        return Err(Refusal::invalid(format!(
            "{field} must be 1 to {MAX_TEXT_CHARS} characters without NUL"
        ))
        .into());
    }
    Ok(())
}

fn page(limit: Option<u32>, default: u32) -> Result<u32, AdminError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(Refusal::invalid(format!("limit must be 1 to {MAX_PAGE}")).into()),
    }
}

/// A report as the admin API shows it.
#[derive(Debug, Serialize)]
pub(super) struct ReportView {
    report_id: i64,
    reporter_id: String,
    reported_user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<uuid::Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reported_seq: Option<u64>,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// The copied messages, as they were when reported.
    evidence: Value,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolution: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved_at: Option<i64>,
    created_at: i64,
}

impl From<Report> for ReportView {
    fn from(r: Report) -> Self {
        ReportView {
            report_id: r.id,
            reporter_id: r.report.reporter_id,
            reported_user_id: r.report.reported_user_id,
            conversation_id: r.report.conversation_id,
            reported_seq: r.report.reported_seq,
            reason: r.report.reason,
            note: r.report.note,
            evidence: serde_json::from_str(&r.report.evidence).unwrap_or(Value::Null),
            status: r.status,
            resolution: r.resolution,
            resolved_by: r.resolved_by,
            resolved_at: r.resolved_at,
            created_at: r.report.created_at,
        }
    }
}

/// `GET /admin/reports` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportsQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    after_id: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /admin/reports?status=open&after_id=&limit=50`: oldest first.
async fn list_reports(
    State(admin): State<Admin>,
    headers: HeaderMap,
    query: Result<Query<ReportsQuery>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    admin.operator(&headers)?;
    let Query(query) = query.map_err(|e| Refusal::invalid(e.body_text()))?;
    if let Some(status) = query.status.as_deref() {
        if !matches!(status, "open" | "resolved") {
            return Err(Refusal::invalid("status must be open or resolved").into());
        }
    }
    let limit = page(query.limit, 50)?;
    let reports = admin
        .safety
        .store()
        .reports(query.status.as_deref(), query.after_id.unwrap_or(0), limit)
        .await?;
    let next_after_id = (reports.len() == limit as usize)
        .then(|| reports.last().map(|r| r.id))
        .flatten();
    let reports: Vec<ReportView> = reports.into_iter().map(ReportView::from).collect();
    Ok(Json(
        json!({"reports": reports, "next_after_id": next_after_id}),
    ))
}

/// `POST /admin/reports/{id}/resolve` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    resolution: String,
}

/// `POST /admin/reports/{id}/resolve`: closes an open report.
async fn resolve_report(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Result<Json<ResolveBody>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let operator = admin.operator(&headers)?;
    let Json(body) = body.map_err(|e| Refusal::invalid(e.body_text()))?;
    check_text("resolution", &body.resolution)?;
    let audit = Admin::audit(
        &operator,
        "resolve_report",
        &format!("report:{id}"),
        json!({"resolution": body.resolution}),
    );
    if !admin
        .safety
        .store()
        .resolve_report(id, &body.resolution, &audit)
        .await?
    {
        return Err(Refusal::new(ErrorCode::NotFound, "no such open report").into());
    }
    Ok(Json(
        json!({"report_id": id, "status": "resolved", "resolved_by": operator}),
    ))
}

/// `GET /admin/bans`: every banned user, oldest ban first.
async fn list_bans(
    State(admin): State<Admin>,
    headers: HeaderMap,
) -> Result<Json<Value>, AdminError> {
    admin.operator(&headers)?;
    let bans: Vec<Value> = admin
        .safety
        .store()
        .bans()
        .await?
        .into_iter()
        .map(|b| {
            json!({"user_id": b.user_id, "reason": b.reason, "banned_by": b.banned_by,
                   "banned_at": b.created_at})
        })
        .collect();
    Ok(Json(json!({ "bans": bans })))
}

/// `POST /admin/bans` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    user_id: UserId,
    reason: String,
}

/// `POST /admin/bans`: bans a user (idempotent). Every node refuses their
/// requests at once; routers close their sessions within `router.ban_poll`.
async fn ban(
    State(admin): State<Admin>,
    headers: HeaderMap,
    body: Result<Json<BanBody>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let operator = admin.operator(&headers)?;
    let Json(body) = body.map_err(|e| Refusal::invalid(e.body_text()))?;
    if !valid_user_id(&body.user_id) {
        return Err(Refusal::invalid("user_id is not a valid user id").into());
    }
    check_text("reason", &body.reason)?;
    let audit = Admin::audit(
        &operator,
        "ban",
        &body.user_id,
        json!({"reason": body.reason}),
    );
    let ban = Ban {
        user_id: body.user_id.clone(),
        reason: body.reason,
        banned_by: operator,
        created_at: audit.created_at,
    };
    let new = admin.safety.store().ban(&ban, &audit).await?;
    admin.safety.bans_changed().await?;
    Ok(Json(
        json!({"user_id": body.user_id, "banned": true, "new": new}),
    ))
}

/// `DELETE /admin/bans/{user_id}`: lifts a ban (idempotent).
async fn unban(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let operator = admin.operator(&headers)?;
    let audit = Admin::audit(&operator, "unban", &user, json!({}));
    let existed = admin.safety.store().unban(&user, &audit).await?;
    admin.safety.bans_changed().await?;
    Ok(Json(
        json!({"user_id": user, "banned": false, "existed": existed}),
    ))
}

/// `POST /admin/conversations/{id}/messages` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemBody {
    body: String,
    /// Idempotency key: a retry with the same one makes no second message.
    #[serde(default)]
    client_msg_id: Option<String>,
}

/// `POST /admin/conversations/{id}/messages`: a system message (kind
/// `system`, sender `system`) into the conversation, through its owner:
/// every participant's live sessions get it, offline ones a push. The audit
/// entry is written first, so no message goes out without one (a failed
/// attempt stays in the log; its retry uses the same `client_msg_id`).
async fn system_message(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(conversation): Path<uuid::Uuid>,
    body: Result<Json<SystemBody>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let operator = admin.operator(&headers)?;
    let Json(body) = body.map_err(|e| Refusal::invalid(e.body_text()))?;
    check_text("body", &body.body)?;
    let client_msg_id = body
        .client_msg_id
        .unwrap_or_else(|| format!("system-{}", uuid::Uuid::now_v7()));
    if !turbochat_protocol::ids::valid_client_msg_id(&client_msg_id) {
        return Err(Refusal::invalid("client_msg_id must be 1 to 64 bytes").into());
    }
    if admin
        .safety
        .store()
        .load_conversation(conversation)
        .await?
        .is_none()
    {
        return Err(Refusal::no_conversation().into());
    }
    let audit = Admin::audit(
        &operator,
        "system_message",
        &conversation.to_string(),
        json!({"body": body.body, "client_msg_id": client_msg_id}),
    );
    admin.safety.store().record_audit(&audit).await?;
    let ack = admin
        .safety
        .post_system(conversation, client_msg_id, body.body)
        .await?;
    Ok(Json(ack))
}

/// `POST /admin/conversations/{id}/messages/{seq}/delete` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    reason: String,
}

/// `POST /admin/conversations/{id}/messages/{seq}/delete`: replaces the
/// message by its tombstone at the conversation's owner (every live session
/// is told, pending pushes are dropped), audited in the same transaction.
/// Idempotent: a second call answers `"already": true` and audits nothing.
async fn delete_message(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path((conversation, seq)): Path<(uuid::Uuid, u64)>,
    body: Result<Json<DeleteBody>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let operator = admin.operator(&headers)?;
    let Json(body) = body.map_err(|e| Refusal::invalid(e.body_text()))?;
    check_text("reason", &body.reason)?;
    let answer = admin
        .safety
        .delete_message(
            conversation,
            seq,
            super::Deleter::Operator {
                name: operator,
                reason: body.reason,
            },
        )
        .await?;
    Ok(Json(answer))
}

/// `GET /admin/audit` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    before_id: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /admin/audit?before_id=&limit=100`: newest first.
async fn audit_log(
    State(admin): State<Admin>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    admin.operator(&headers)?;
    let Query(query) = query.map_err(|e| Refusal::invalid(e.body_text()))?;
    let limit = page(query.limit, 100)?;
    let entries = admin
        .safety
        .store()
        .audit_log(query.before_id, limit)
        .await?;
    let next_before_id = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            json!({"id": e.id, "operator": e.operator, "action": e.action, "target": e.target,
                   "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::Null),
                   "at": e.created_at})
        })
        .collect();
    Ok(Json(
        json!({"entries": entries, "next_before_id": next_before_id}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str, secret: &str) -> OperatorConfig {
        OperatorConfig {
            name: name.into(),
            secret: secret.into(),
        }
    }

    #[test]
    fn operators_are_checked() {
        let long = "x".repeat(MIN_SECRET_LEN);
        assert!(AdminConfig::default().validate().is_ok());
        let ok = AdminConfig {
            operators: vec![op("ops-ana", &long), op("ops-ben", &"y".repeat(40))],
        };
        assert!(ok.validate().is_ok());
        let short = AdminConfig {
            operators: vec![op("ops-ana", "short")],
        };
        assert_eq!(short.validate().unwrap_err().0, "admin.operators[0]");
        let twice = AdminConfig {
            operators: vec![op("ops", &long), op("ops", &long)],
        };
        assert_eq!(twice.validate().unwrap_err().0, "admin.operators[1]");
        assert!(
            !format!("{:?}", ok.operators[0]).contains(&long),
            "secrets stay out of logs"
        );
    }
}
