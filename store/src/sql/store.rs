//! [`SqlStore`]: every operation of [`crate::Store`], written once over
//! [`sqlx::Database`] (appends, reads, conversations, devices and media
//! uploads, the push outbox).

use sqlx::{Decode, Encode, Executor, FromRow, IntoArguments, Pool, Type};
use turbochat_protocol::http::{ConversationView, MemberView, MessageView};
use turbochat_protocol::ids::{ConversationId, Seq, UserId};

use super::rows::*;
use super::statements::*;
use super::*;
use crate::{
    AppendError, Appended, ConversationBatch, ConversationState, Device, MediaUpload,
    NewConversation, PushJob, StoreError,
};

impl<DB> SqlStore<DB>
where
    DB: Backend + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> DbUuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'r> MessageRow: FromRow<'r, DB::Row>,
    for<'r> ConversationStateRow: FromRow<'r, DB::Row>,
    for<'r> MemberRow: FromRow<'r, DB::Row>,
    for<'r> ConversationListRow: FromRow<'r, DB::Row>,
    for<'r> DeviceRow: FromRow<'r, DB::Row>,
    for<'r> MediaUploadRow: FromRow<'r, DB::Row>,
    for<'r> UserRow: FromRow<'r, DB::Row>,
    for<'r> StateCountRow: FromRow<'r, DB::Row>,
    for<'r> ClaimedJobRow: FromRow<'r, DB::Row>,
    for<'r> CountRow: FromRow<'r, DB::Row>,
{
    /// Wraps a pool whose schema is (or will be) migrated.
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        SqlStore { pool }
    }

    /// See [`crate::Store::create_conversation`]: one write transaction that
    /// inserts the conversation and its participants unless the id exists,
    /// then reads the stored state back.
    pub(crate) async fn create_conversation(
        &self,
        new: &NewConversation,
    ) -> Result<ConversationState, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let created = sqlx::query(INSERT_CONVERSATION)
            .bind(DbUuid(new.conversation_id))
            .bind(new.kind.as_str())
            .bind(new.listing_id.as_deref())
            .bind(new.title.as_deref())
            .bind(new.created_at)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&created) == 1 && !new.participants.is_empty() {
            for (chunk, users) in new.participants.chunks(ROWS_PER_STATEMENT).enumerate() {
                let statement = format!(
                    "INSERT INTO conversation_participants \
                     (conversation_id, user_id, role, joined_at) VALUES {} \
                     ON CONFLICT (conversation_id, user_id) DO NOTHING",
                    placeholder_rows(users.len(), 4)
                );
                // A participant listed twice joins once (ON CONFLICT above).
                let mut insert = sqlx::query::<DB>(&statement).persistent(false);
                for (i, user) in users.iter().enumerate() {
                    let creator = chunk == 0 && i == 0;
                    insert = insert
                        .bind(DbUuid(new.conversation_id))
                        .bind(user.as_str())
                        .bind(if creator { ROLE_OWNER } else { ROLE_MEMBER })
                        .bind(new.created_at);
                }
                insert.execute(&mut *tx).await?;
            }
        }
        let state = Self::load_state(&mut tx, new.conversation_id)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "conversation {} vanished while being created",
                    new.conversation_id
                ))
            })?;
        tx.commit().await?;
        Ok(state)
    }

    /// See [`crate::Store::load_conversation`].
    pub(crate) async fn load_conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationState>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::load_state(&mut conn, id).await
    }

    async fn load_state(
        conn: &mut DB::Connection,
        id: ConversationId,
    ) -> Result<Option<ConversationState>, StoreError> {
        let mut rows = sqlx::query_as::<DB, ConversationStateRow>(SELECT_CONVERSATION_STATE)
            .bind(DbUuid(id))
            .fetch_all(&mut *conn)
            .await?;
        let mut participants = Vec::with_capacity(rows.len());
        for row in &mut rows {
            participants.extend(row.participant()?);
        }
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(ConversationState {
            conversation_id: row.id.0,
            kind: parse_conversation_kind(&row.kind)?,
            listing_id: row.listing_id,
            title: row.title,
            listing: listing_card_from_row(row.listing_card.as_deref())?,
            created_at: row.created_at,
            participants,
            last_seq: seq_from_row(row.last_seq)?,
        }))
    }

    /// See [`crate::Store::append`]. All batches go into one write
    /// transaction through [`Backend::write_fast`]. If the database rejects
    /// any of them, every batch is retried in its own transaction, so only
    /// the culprit fails and the others commit.
    pub(crate) async fn append(
        &self,
        batches: &[ConversationBatch],
    ) -> Result<Vec<Result<Vec<Appended>, AppendError>>, StoreError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        match self.write_together(batches).await {
            Ok(written) => Ok(written.into_iter().map(Ok).collect()),
            Err(WriteError::Store(err)) => Err(err),
            Err(WriteError::Rejected(reason)) => {
                tracing::debug!(%reason, batches = batches.len(), "group commit rejected; writing batch by batch");
                let mut results = Vec::with_capacity(batches.len());
                for batch in batches {
                    results.push(self.write_alone(batch).await);
                }
                Ok(results)
            }
        }
    }

    async fn write_together(
        &self,
        batches: &[ConversationBatch],
    ) -> Result<Vec<Vec<Appended>>, WriteError> {
        let fast = if DB::FAST_WRITE_IS_ONE_STATEMENT {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(WriteError::from_transaction)?;
            DB::write_fast(&mut conn, batches).await?
        } else {
            let mut tx = self.begin_write().await?;
            match DB::write_fast(&mut tx, batches).await? {
                Some(written) => {
                    tx.commit().await.map_err(WriteError::from_transaction)?;
                    Some(written)
                }
                None => {
                    tx.rollback().await.map_err(WriteError::from_transaction)?;
                    None
                }
            }
        };
        if let Some(written) = fast {
            return Ok(written);
        }
        // Nothing was written: step by step, in one transaction.
        let mut tx = self.begin_write().await?;
        let written = Self::write_stepwise(&mut tx, batches).await?;
        tx.commit().await.map_err(WriteError::from_transaction)?;
        Ok(written)
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, DB>, WriteError> {
        self.pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(WriteError::from_transaction)
    }

    async fn write_alone(&self, batch: &ConversationBatch) -> Result<Vec<Appended>, AppendError> {
        let attempt = async {
            let mut tx = self.begin_write().await?;
            let written = Self::write_batch_stepwise(&mut tx, batch).await?;
            tx.commit().await.map_err(WriteError::from_transaction)?;
            Ok::<_, WriteError>(written)
        };
        attempt.await.map_err(|err| match err {
            WriteError::Rejected(reason) => reason,
            WriteError::Store(err) => AppendError::Failed(err.to_string()),
        })
    }

    /// Writes the batches message by message inside the open write
    /// transaction `conn`: each insert either takes the next seq or finds
    /// its `(conversation, sender, client_msg_id)` already stored (earlier,
    /// or earlier in this very batch) and reads that message back. Stops at
    /// the first refused statement.
    pub(crate) async fn write_stepwise(
        conn: &mut DB::Connection,
        batches: &[ConversationBatch],
    ) -> Result<Vec<Vec<Appended>>, WriteError> {
        let mut written = Vec::with_capacity(batches.len());
        for batch in batches {
            written.push(Self::write_batch_stepwise(conn, batch).await?);
        }
        Ok(written)
    }

    async fn write_batch_stepwise(
        conn: &mut DB::Connection,
        batch: &ConversationBatch,
    ) -> Result<Vec<Appended>, WriteError> {
        let conversation = DbUuid(batch.conversation_id);
        let mut next = batch.first_seq;
        let mut appended = Vec::with_capacity(batch.messages.len());
        for message in &batch.messages {
            let seq = seq_to_store(next).map_err(WriteError::Rejected)?;
            let refused = |err| WriteError::classify::<DB>(err, batch.conversation_id, next);
            let inserted = sqlx::query(INSERT_MESSAGE)
                .bind(DbUuid(message.message_id))
                .bind(conversation)
                .bind(seq)
                .bind(message.sender_id.as_str())
                .bind(message.client_msg_id.as_str())
                .bind(message.kind.as_str())
                .bind(message.body.as_str())
                .bind(message.media_key.as_deref())
                .bind(message.created_at)
                .fetch_optional(&mut *conn)
                .await
                .map_err(refused)?;
            if inserted.is_none() {
                let stored = sqlx::query_as::<DB, MessageRow>(SELECT_BY_CLIENT_MSG_ID)
                    .bind(conversation)
                    .bind(message.sender_id.as_str())
                    .bind(message.client_msg_id.as_str())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(refused)?
                    .ok_or_else(|| {
                        WriteError::Rejected(AppendError::Failed(format!(
                            "client_msg_id {:?} of {} conflicted but is not stored",
                            message.client_msg_id, message.sender_id
                        )))
                    })?;
                appended.push(Appended::Duplicate(stored.try_into()?));
                continue;
            }
            for user in &message.push_to {
                sqlx::query(INSERT_OUTBOX)
                    .bind(DbUuid(message.message_id))
                    .bind(conversation)
                    .bind(seq)
                    .bind(user.as_str())
                    .bind(message.created_at)
                    .bind(message.created_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(refused)?;
            }
            appended.push(Appended::Inserted(inserted_view(
                batch.conversation_id,
                message,
                next,
            )));
            next += 1;
        }
        Ok(appended)
    }

    /// Runs `{select} ($1, ...) {order}` with `keys` bound to the list, in
    /// chunks that stay below either database's parameter limit; the rows of
    /// the chunks are concatenated.
    async fn select_in<R, K>(
        &self,
        select: &str,
        order: &str,
        keys: &[K],
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
        K: for<'q> Encode<'q, DB> + Type<DB> + Sync + 'static,
    {
        let mut rows = Vec::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let statement = format!("{select} ({}) {order}", placeholder_list(1, chunk.len()));
            // The text varies with the chunk size: not worth a cached statement.
            let mut query = sqlx::query_as::<DB, R>(&statement).persistent(false);
            for key in chunk {
                query = query.bind(key);
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(rows)
    }

    /// See [`crate::Store::messages_after`].
    pub(crate) async fn messages_after(
        &self,
        id: ConversationId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError> {
        self.messages(SELECT_AFTER, id, seq_bound(after), limit)
            .await
    }

    /// See [`crate::Store::history`].
    pub(crate) async fn history(
        &self,
        id: ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError> {
        let before = before.map_or(i64::MAX, seq_bound);
        self.messages(SELECT_BEFORE, id, before, limit).await
    }

    async fn messages(
        &self,
        statement: &'static str,
        id: ConversationId,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError> {
        sqlx::query_as::<DB, MessageRow>(statement)
            .bind(DbUuid(id))
            .bind(seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(MessageView::try_from)
            .collect()
    }

    /// See [`crate::Store::list_conversations`]: one query for the list, one
    /// for the participants of the listed conversations.
    pub(crate) async fn list_conversations(
        &self,
        user: &str,
        limit: u32,
    ) -> Result<Vec<ConversationView>, StoreError> {
        let rows = sqlx::query_as::<DB, ConversationListRow>(SELECT_CONVERSATION_LIST)
            .bind(user)
            .bind(i64::from(limit))
            .bind(UNREAD_CAP)
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<DbUuid> = rows.iter().map(|row| row.id).collect();
        let members: Vec<MemberRow> = self
            .select_in(
                "SELECT p.conversation_id, p.user_id, u.name, u.avatar_url \
                 FROM conversation_participants p \
                 LEFT JOIN user_profiles u ON u.user_id = p.user_id \
                 WHERE p.conversation_id IN",
                // participant_order!(), qualified.
                "ORDER BY p.conversation_id, p.joined_at, \
                 CASE WHEN p.role = 'owner' THEN 0 ELSE 1 END, p.user_id",
                &ids,
            )
            .await?;
        let mut participants = std::collections::HashMap::<Uuid, Vec<MemberView>>::new();
        for member in members {
            participants
                .entry(member.conversation_id.0)
                .or_default()
                .push(MemberView {
                    user_id: member.user_id,
                    name: member.name,
                    avatar_url: member.avatar_url,
                });
        }
        rows.into_iter()
            .map(|mut row| {
                let members = participants.remove(&row.id.0).unwrap_or_default();
                let last_message = row.last_message()?.map(MessageView::try_from).transpose()?;
                Ok(ConversationView {
                    conversation_id: row.id.0,
                    kind: parse_conversation_kind(&row.kind)?,
                    listing_id: row.listing_id,
                    title: row.title,
                    participants: members.iter().map(|m| m.user_id.clone()).collect(),
                    created_at: row.created_at,
                    last_seq: last_message.as_ref().map_or(0, |m| m.seq),
                    last_read_seq: seq_from_row(row.last_read_seq)?,
                    unread_count: u64::try_from(row.unread_count).map_err(|_| {
                        StoreError::Corrupt(format!("unread count {}", row.unread_count))
                    })?,
                    last_message,
                    listing: listing_card_from_row(row.listing_card.as_deref())?.map(Box::new),
                    members,
                    muted: row.muted,
                })
            })
            .collect()
    }

    /// See [`crate::Store::mark_read`].
    pub(crate) async fn mark_read(
        &self,
        id: ConversationId,
        user: &str,
        seq: Seq,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(MARK_READ)
            .bind(DbUuid(id))
            .bind(user)
            .bind(seq_bound(seq))
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// See [`crate::Store::contacts`].
    pub(crate) async fn contacts(&self, user: &str, limit: u32) -> Result<Vec<UserId>, StoreError> {
        let rows: Vec<UserRow> = sqlx::query_as(DB::CONTACTS)
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        let mut contacts: Vec<UserId> = rows.into_iter().map(|row| row.user_id).collect();
        contacts.sort_unstable();
        contacts.truncate(limit as usize);
        Ok(contacts)
    }

    /// See [`crate::Store::upsert_device`].
    pub(crate) async fn upsert_device(
        &self,
        user: &str,
        platform: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(DB::UPSERT_DEVICE)
            .bind(token)
            .bind(user)
            .bind(platform)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// See [`crate::Store::delete_device`].
    pub(crate) async fn delete_device(&self, user: &str, token: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(DELETE_DEVICE)
            .bind(user)
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// See [`crate::Store::devices_of`].
    pub(crate) async fn devices_of(&self, users: &[UserId]) -> Result<Vec<Device>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<DeviceRow> = self
            .select_in(
                "SELECT user_id, platform, token, updated_at FROM user_devices WHERE user_id IN",
                "ORDER BY user_id, token",
                users,
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Device {
                user_id: row.user_id,
                platform: row.platform,
                token: row.token,
                updated_at: row.updated_at,
            })
            .collect())
    }
    /// See [`crate::Store::record_media_upload`].
    pub(crate) async fn record_media_upload(&self, upload: &MediaUpload) -> Result<(), StoreError> {
        let size = i64::try_from(upload.size).map_err(|_| {
            StoreError::Corrupt(format!("upload size {} is out of range", upload.size))
        })?;
        sqlx::query(RECORD_MEDIA_UPLOAD)
            .bind(upload.media_key.as_str())
            .bind(DbUuid(upload.conversation_id))
            .bind(upload.uploader_id.as_str())
            .bind(upload.content_type.as_str())
            .bind(size)
            .bind(upload.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// See [`crate::Store::media_upload`].
    pub(crate) async fn media_upload(
        &self,
        conversation: ConversationId,
        media_key: &str,
    ) -> Result<Option<MediaUpload>, StoreError> {
        let row: Option<MediaUploadRow> = sqlx::query_as(SELECT_MEDIA_UPLOAD)
            .bind(DbUuid(conversation))
            .bind(media_key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(MediaUpload {
                media_key: row.media_key,
                conversation_id: conversation,
                uploader_id: row.uploader_id,
                content_type: row.content_type,
                size: u64::try_from(row.size)
                    .map_err(|_| StoreError::Corrupt(format!("upload size {}", row.size)))?,
                created_at: row.created_at,
            })
        })
        .transpose()
    }

    /// See [`crate::Store::delete_device_token`].
    pub(crate) async fn delete_device_token(&self, token: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(DELETE_DEVICE_TOKEN)
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// See [`crate::Store::claim_push_jobs`]: one statement claims the rows
    /// ([`Backend::CLAIM_PUSH_JOBS`]), one more reads their messages.
    pub(crate) async fn claim_push_jobs(
        &self,
        now: i64,
        limit: u32,
        lease: std::time::Duration,
    ) -> Result<Vec<PushJob>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let CountRow { count: due } = sqlx::query_as(ANY_DUE_PUSH_JOB)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        if due == 0 {
            return Ok(Vec::new());
        }
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let claim = Uuid::new_v4().to_string();
        let mut rows: Vec<ClaimedJobRow> = sqlx::query_as(DB::CLAIM_PUSH_JOBS)
            .bind(now)
            .bind(now.saturating_add(lease_ms.max(1)))
            .bind(claim.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        rows.sort_by_key(|row| row.id);
        let ids: Vec<DbUuid> = rows.iter().map(|row| row.message_id).collect();
        let messages: Vec<MessageRow> = self
            .select_in(
                concat!(
                    "SELECT ",
                    stored_message_columns!(),
                    " FROM messages WHERE id IN"
                ),
                "",
                &ids,
            )
            .await?;
        // Several jobs (recipients) may share a message.
        let messages: std::collections::HashMap<Uuid, MessageView> = messages
            .into_iter()
            .map(|row| MessageView::try_from(row).map(|m| (m.message_id, m)))
            .collect::<Result<_, _>>()?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let attempt = u32::try_from(row.attempts)
                .map_err(|_| StoreError::Corrupt(format!("push job {} attempts", row.id)))?;
            let done_tokens: Vec<String> = serde_json::from_str(&row.done_tokens).map_err(|e| {
                StoreError::Corrupt(format!("push job {} done_tokens: {e}", row.id))
            })?;
            let Some(message) = messages.get(&row.message_id.0).cloned() else {
                // The message is gone (the row cascades away with it; this
                // is the race with its deletion): nothing left to announce.
                sqlx::query(FINISH_PUSH_JOB)
                    .bind(row.id)
                    .bind(claim.as_str())
                    .bind(PUSH_FAILED)
                    .bind(now)
                    .bind(row.done_tokens.as_str())
                    .bind(Some("message no longer exists"))
                    .execute(&self.pool)
                    .await?;
                continue;
            };
            jobs.push(PushJob {
                id: row.id,
                claim: claim.clone(),
                attempt,
                user_id: row.user_id,
                message,
                done_tokens,
                created_at: row.created_at,
            });
        }
        Ok(jobs)
    }

    /// Writes the outcome of a claimed job; `false` if the claim is lost.
    pub(crate) async fn finish_push_job(
        &self,
        job: &PushJob,
        status: &str,
        at: i64,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done_tokens = serde_json::to_string(&job.done_tokens)
            .map_err(|e| StoreError::Corrupt(format!("done_tokens: {e}")))?;
        let done = sqlx::query(FINISH_PUSH_JOB)
            .bind(job.id)
            .bind(job.claim.as_str())
            .bind(status)
            .bind(at)
            .bind(done_tokens.as_str())
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// See [`crate::Store::complete_push_job`].
    pub(crate) async fn complete_push_job(&self, job: &PushJob) -> Result<bool, StoreError> {
        self.finish_push_job(job, PUSH_SENT, now_ms(), None).await
    }

    /// See [`crate::Store::fail_push_job`].
    pub(crate) async fn fail_push_job(
        &self,
        job: &PushJob,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.finish_push_job(job, PUSH_FAILED, now_ms(), Some(reason))
            .await
    }

    /// See [`crate::Store::reschedule_push_job`].
    pub(crate) async fn reschedule_push_job(
        &self,
        job: &PushJob,
        at: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.finish_push_job(job, PUSH_PENDING, at, Some(reason))
            .await
    }

    /// See [`crate::Store::purge_push_jobs`].
    pub(crate) async fn purge_push_jobs(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(PURGE_PUSH_JOBS)
            .bind(before)
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    /// See [`crate::Store::pending_push_jobs`].
    /// See [`crate::Store::push_jobs_by_state`].
    pub(crate) async fn push_jobs_by_state(
        &self,
        now: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<StateCountRow> = sqlx::query_as(COUNT_PUSH_JOBS_BY_STATE)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.state, u64::try_from(row.count).unwrap_or(0)))
            .collect())
    }

    pub(crate) async fn pending_push_jobs(&self) -> Result<u64, StoreError> {
        let CountRow { count } = sqlx::query_as(COUNT_PENDING_PUSH_JOBS)
            .fetch_one(&self.pool)
            .await?;
        u64::try_from(count).map_err(|_| StoreError::Corrupt(format!("pending count {count}")))
    }
}
