//! [`SqlStore`]'s blocks and reports, written once over [`sqlx::Database`].

use sqlx::{Decode, Encode, Executor, FromRow, IntoArguments, Type};
use turbochat_protocol::ids::UserId;

use super::{seq_from_row, Backend, DbUuid, SqlStore};
use crate::safety::{AuditEntry, Ban, Block, NewReport, Report};
use crate::StoreError;

const INSERT_BLOCK: &str = "INSERT INTO user_blocks (blocker_id, blocked_id, created_at) \
     VALUES ($1, $2, $3) ON CONFLICT (blocker_id, blocked_id) DO NOTHING";
const DELETE_BLOCK: &str = "DELETE FROM user_blocks WHERE blocker_id = $1 AND blocked_id = $2";
const SELECT_BLOCKS: &str = "SELECT blocker_id, blocked_id, created_at FROM user_blocks \
     WHERE blocker_id = $1 ORDER BY created_at, blocked_id";
const SELECT_BLOCK_RELATIONS: &str =
    "SELECT blocker_id AS user_id FROM user_blocks WHERE blocked_id = $1 \
     UNION SELECT blocked_id AS user_id FROM user_blocks WHERE blocker_id = $1";
const INSERT_REPORT: &str = "INSERT INTO reports (reporter_id, reported_user_id, \
     conversation_id, reported_seq, reason, note, evidence, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";
macro_rules! report_columns {
    () => {
        "id, reporter_id, reported_user_id, conversation_id, reported_seq, reason, note, \
         evidence, status, resolution, resolved_by, resolved_at, created_at"
    };
}
const SELECT_REPORTS: &str = concat!(
    "SELECT ",
    report_columns!(),
    " FROM reports WHERE ($1 = '' OR status = $1) AND id > $2 ORDER BY id LIMIT $3"
);
const SELECT_REPORT: &str = concat!("SELECT ", report_columns!(), " FROM reports WHERE id = $1");
const INSERT_BAN: &str = "INSERT INTO user_bans (user_id, reason, banned_by, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO NOTHING";
const DELETE_BAN: &str = "DELETE FROM user_bans WHERE user_id = $1";
const SELECT_BANS: &str =
    "SELECT user_id, reason, banned_by, created_at FROM user_bans ORDER BY created_at, user_id";
pub(super) const INSERT_AUDIT: &str =
    "INSERT INTO admin_audit (operator, action, target, detail, created_at) \
     VALUES ($1, $2, $3, $4, $5)";
const SELECT_AUDIT: &str = "SELECT id, operator, action, target, detail, created_at \
     FROM admin_audit WHERE id < $1 ORDER BY id DESC LIMIT $2";
const RESOLVE_REPORT: &str = "UPDATE reports SET status = 'resolved', resolution = $2, \
     resolved_by = $3, resolved_at = $4 WHERE id = $1 AND status = 'open'";

#[derive(FromRow)]
pub(crate) struct BlockRow {
    blocker_id: String,
    blocked_id: String,
    created_at: i64,
}

#[derive(FromRow)]
pub(crate) struct BlockUserRow {
    user_id: String,
}

#[derive(FromRow)]
pub(crate) struct BanRow {
    user_id: String,
    reason: String,
    banned_by: String,
    created_at: i64,
}

#[derive(FromRow)]
pub(crate) struct AuditRow {
    id: i64,
    operator: String,
    action: String,
    target: String,
    detail: String,
    created_at: i64,
}

#[derive(FromRow)]
pub(crate) struct IdRow {
    id: i64,
}

#[derive(FromRow)]
pub(crate) struct ReportRow {
    id: i64,
    reporter_id: String,
    reported_user_id: String,
    conversation_id: Option<DbUuid>,
    reported_seq: Option<i64>,
    reason: String,
    note: Option<String>,
    evidence: String,
    status: String,
    resolution: Option<String>,
    resolved_by: Option<String>,
    resolved_at: Option<i64>,
    created_at: i64,
}

impl TryFrom<ReportRow> for Report {
    type Error = StoreError;

    fn try_from(row: ReportRow) -> Result<Self, StoreError> {
        Ok(Report {
            id: row.id,
            report: NewReport {
                reporter_id: row.reporter_id,
                reported_user_id: row.reported_user_id,
                conversation_id: row.conversation_id.map(|id| id.0),
                reported_seq: row.reported_seq.map(seq_from_row).transpose()?,
                reason: row.reason,
                note: row.note,
                evidence: row.evidence,
                created_at: row.created_at,
            },
            status: row.status,
            resolution: row.resolution,
            resolved_by: row.resolved_by,
            resolved_at: row.resolved_at,
        })
    }
}

impl<DB> SqlStore<DB>
where
    DB: Backend + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<DbUuid>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'r> BlockRow: FromRow<'r, DB::Row>,
    for<'r> BlockUserRow: FromRow<'r, DB::Row>,
    for<'r> IdRow: FromRow<'r, DB::Row>,
    for<'r> ReportRow: FromRow<'r, DB::Row>,
    for<'r> BanRow: FromRow<'r, DB::Row>,
    for<'r> AuditRow: FromRow<'r, DB::Row>,
{
    /// Writes `audit` inside `tx`: every admin change goes with its entry.
    async fn audit_in(
        tx: &mut sqlx::Transaction<'static, DB>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        sqlx::query(INSERT_AUDIT)
            .bind(audit.operator.as_str())
            .bind(audit.action.as_str())
            .bind(audit.target.as_str())
            .bind(audit.detail.as_str())
            .bind(audit.created_at)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// See [`crate::Store::record_audit`].
    pub(crate) async fn record_audit(&self, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        Self::audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// See [`crate::Store::audit_log`].
    pub(crate) async fn audit_log(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(SELECT_AUDIT)
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                operator: r.operator,
                action: r.action,
                target: r.target,
                detail: r.detail,
                created_at: r.created_at,
            })
            .collect())
    }

    /// See [`crate::Store::ban`].
    pub(crate) async fn ban(&self, ban: &Ban, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let done = sqlx::query(INSERT_BAN)
            .bind(ban.user_id.as_str())
            .bind(ban.reason.as_str())
            .bind(ban.banned_by.as_str())
            .bind(ban.created_at)
            .execute(&mut *tx)
            .await?;
        Self::audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// See [`crate::Store::unban`].
    pub(crate) async fn unban(&self, user: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let done = sqlx::query(DELETE_BAN).bind(user).execute(&mut *tx).await?;
        Self::audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// See [`crate::Store::bans`].
    pub(crate) async fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        let rows: Vec<BanRow> = sqlx::query_as(SELECT_BANS).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| Ban {
                user_id: r.user_id,
                reason: r.reason,
                banned_by: r.banned_by,
                created_at: r.created_at,
            })
            .collect())
    }

    /// See [`crate::Store::block`].
    pub(crate) async fn block(
        &self,
        blocker: &str,
        blocked: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(INSERT_BLOCK)
            .bind(blocker)
            .bind(blocked)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// See [`crate::Store::unblock`].
    pub(crate) async fn unblock(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(DELETE_BLOCK)
            .bind(blocker)
            .bind(blocked)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// See [`crate::Store::blocks_of`].
    pub(crate) async fn blocks_of(&self, blocker: &str) -> Result<Vec<Block>, StoreError> {
        let rows: Vec<BlockRow> = sqlx::query_as(SELECT_BLOCKS)
            .bind(blocker)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Block {
                blocker_id: row.blocker_id,
                blocked_id: row.blocked_id,
                created_at: row.created_at,
            })
            .collect())
    }

    /// See [`crate::Store::block_relations`].
    pub(crate) async fn block_relations(&self, user: &str) -> Result<Vec<UserId>, StoreError> {
        let rows: Vec<BlockUserRow> = sqlx::query_as(SELECT_BLOCK_RELATIONS)
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|row| row.user_id).collect())
    }

    /// See [`crate::Store::insert_report`].
    pub(crate) async fn insert_report(&self, report: &NewReport) -> Result<i64, StoreError> {
        let seq = report
            .reported_seq
            .map(|seq| i64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("seq {seq}"))))
            .transpose()?;
        let row: IdRow = sqlx::query_as(INSERT_REPORT)
            .bind(report.reporter_id.as_str())
            .bind(report.reported_user_id.as_str())
            .bind(report.conversation_id.map(DbUuid))
            .bind(seq)
            .bind(report.reason.as_str())
            .bind(report.note.as_deref())
            .bind(report.evidence.as_str())
            .bind(report.created_at)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.id)
    }

    /// See [`crate::Store::reports`].
    pub(crate) async fn reports(
        &self,
        status: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Report>, StoreError> {
        let rows: Vec<ReportRow> = sqlx::query_as(SELECT_REPORTS)
            .bind(status.unwrap_or(""))
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(Report::try_from).collect()
    }

    /// See [`crate::Store::report`].
    pub(crate) async fn report(&self, id: i64) -> Result<Option<Report>, StoreError> {
        let row: Option<ReportRow> = sqlx::query_as(SELECT_REPORT)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Report::try_from).transpose()
    }

    /// See [`crate::Store::resolve_report`].
    pub(crate) async fn resolve_report(
        &self,
        id: i64,
        resolution: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let done = sqlx::query(RESOLVE_REPORT)
            .bind(id)
            .bind(resolution)
            .bind(audit.operator.as_str())
            .bind(audit.created_at)
            .execute(&mut *tx)
            .await?;
        let resolved = DB::rows_affected(&done) > 0;
        if resolved {
            Self::audit_in(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(resolved)
    }
}
