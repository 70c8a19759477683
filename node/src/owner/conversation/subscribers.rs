//! Subscribers and fan-out: who is subscribed through which router link,
//! replays after `since` (from memory when recent, else the store), the
//! fan-out of each committed message, and catching up with what another
//! writer committed.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::time::Instant;
use turbochat_protocol::frame::ServerFrame;
use turbochat_protocol::http::MessageView;
use turbochat_protocol::ids::{Seq, UserId};
use turbochat_protocol::link::DeliverKind;
use turbochat_store::StoreError;

use super::state::{LinkSubscribers, State};
use super::{Owner, FRESH_READ, REPLAY_PAGE, REPLAY_PATIENCE};
use crate::fanout::{Delivery, RouterLink};
use crate::refusal::Refusal;

impl Owner<'_> {
    /// Reads what other writers committed after our last seq and fans it out.
    /// Never called with a batch of ours in flight (`state.writing`): its
    /// rows would be taken for another writer's.
    pub(super) async fn catch_up(&self, state: &mut State) -> Result<(), StoreError> {
        loop {
            state.read_at = Instant::now();
            let page = self
                .owners
                .store()
                .messages_after(self.id, state.committed, REPLAY_PAGE)
                .await?;
            if page.is_empty() {
                return Ok(());
            }
            for message in page {
                if message.seq == state.committed + 1 {
                    state.committed = message.seq;
                    self.fan_out(state, &message);
                }
            }
        }
    }

    /// Sends a committed message to every subscribed session, one frame per
    /// router, and remembers it for cheap replays.
    pub(super) fn fan_out(&self, state: &mut State, message: &MessageView) {
        let payload = Bytes::from(ServerFrame::Message(message.clone()).to_json());
        // A router we cannot reach keeps its subscriptions: it re-subscribes
        // from its cursors when back, or they are purged after the link grace.
        for subs in state.links.values() {
            let sessions: Vec<u64> = subs.sessions.keys().copied().collect();
            subs.link.deliver(
                sessions,
                self.id,
                message.seq,
                DeliverKind::Message,
                payload.clone(),
            );
        }
        state
            .recent
            .push_back((message.seq, message.created_at, payload));
        while state.recent.len() > self.owners.config().recent_messages {
            state.recent.pop_front();
        }
    }

    pub(super) async fn subscribe(
        &mut self,
        state: &mut State,
        link: RouterLink,
        session_id: u64,
        user_id: UserId,
        since: Option<Seq>,
    ) {
        if !state.participants.contains_key(&user_id) {
            link.refuse(session_id, self.id, &Refusal::no_conversation(), None);
            return;
        }
        // Our committed seq can be stale if another node wrote meanwhile
        // (we were frozen or cut off): catch up before answering, unless
        // we read it from the store a moment ago (see [`FRESH_READ`]).
        // With a batch of ours in flight, its outcome tells instead: it
        // commits (we were current, and the new subscriber gets its
        // fan-out) or finds its seq taken, and then catches up.
        if !state.writing && state.read_at.elapsed() >= FRESH_READ {
            if let Err(err) = self.catch_up(state).await {
                tracing::warn!(%err, "cannot check the store before a subscribe");
            }
        }
        if let Some(since) = since {
            match self.replay(state, &link, session_id, since).await {
                Ok(Delivery::Queued) => {}
                Ok(Delivery::Gone) => return,
                Err(err) => {
                    tracing::error!(%err, "replay failed");
                    link.refuse(
                        session_id,
                        self.id,
                        &Refusal::unavailable("cannot read history; subscribe again"),
                        None,
                    );
                    return;
                }
            }
        }
        tracing::debug!(session_id, router = %link.router_id(), ?since, last_seq = state.committed, "session subscribed");
        let subscribed = ServerFrame::Subscribed {
            conversation_id: self.id,
            last_seq: state.committed,
        };
        link.to_session(
            session_id,
            self.id,
            state.committed,
            DeliverKind::Subscribed,
            &subscribed,
        );
        // The read-state snapshot: where every other participant has read
        // to, so "seen" marks show when a chat opens, not only once the
        // other reads again. (Typing is live-only; it expires in seconds.)
        for (user, participant) in &state.participants {
            if *user == user_id || participant.last_read_seq == 0 {
                continue;
            }
            let read = ServerFrame::Read {
                conversation_id: self.id,
                user_id: user.clone(),
                seq: participant.last_read_seq,
            };
            link.to_session(session_id, self.id, 0, DeliverKind::Event, &read);
        }
        state
            .links
            .entry(link.id())
            .or_insert_with(|| LinkSubscribers {
                link: link.clone(),
                sessions: HashMap::new(),
            })
            .sessions
            .insert(session_id, user_id);
    }

    /// Sends the session every committed message after `since` (at most
    /// `max_replay` of the newest), from memory when recent, else the store.
    pub(super) async fn replay(
        &self,
        state: &State,
        link: &RouterLink,
        session_id: u64,
        since: Seq,
    ) -> Result<Delivery, StoreError> {
        let end = state.committed;
        let max_replay = self.owners.config().max_replay;
        let mut cursor = since.max(end.saturating_sub(max_replay));
        let first_recent = state.recent.front().map(|(seq, _, _)| *seq);
        let from_store_until = match first_recent {
            Some(first) => first.saturating_sub(1).min(end),
            None => end,
        };
        while cursor < from_store_until {
            let want = (from_store_until - cursor).min(REPLAY_PAGE as u64) as u32;
            let page = self
                .owners
                .store()
                .messages_after(self.id, cursor, want)
                .await?;
            if page.is_empty() {
                break;
            }
            for message in page {
                if message.seq > from_store_until {
                    break;
                }
                cursor = message.seq;
                let payload = Bytes::from(ServerFrame::Message(message).to_json());
                if self.replay_one(link, session_id, cursor, payload).await == Delivery::Gone {
                    return Ok(Delivery::Gone);
                }
            }
        }
        for (seq, _, payload) in &state.recent {
            if *seq > cursor && *seq <= end {
                cursor = *seq;
                if self
                    .replay_one(link, session_id, *seq, payload.clone())
                    .await
                    == Delivery::Gone
                {
                    return Ok(Delivery::Gone);
                }
            }
        }
        Ok(Delivery::Queued)
    }

    pub(super) async fn replay_one(
        &self,
        link: &RouterLink,
        session_id: u64,
        seq: Seq,
        payload: Bytes,
    ) -> Delivery {
        metrics::counter!("turbochat_replayed_messages_total").increment(1);
        link.deliver_patiently(
            vec![session_id],
            self.id,
            seq,
            DeliverKind::Message,
            payload,
            REPLAY_PATIENCE,
        )
        .await
    }

    /// Retention emptied the messages created before `before` (unix ms) in
    /// the store: replays take them from there, not from memory.
    pub(super) fn expire(&self, state: &mut State, before: i64) {
        while state
            .recent
            .front()
            .is_some_and(|(_, created_at, _)| *created_at < before)
        {
            state.recent.pop_front();
        }
    }

    /// Ends the subscriptions of users who no longer participate (they left
    /// or were removed): each session is answered `not_found` for the
    /// conversation and gets nothing more from it. Their typing ends.
    pub(super) fn drop_non_participants(&self, state: &mut State) {
        let refusal = Refusal::no_conversation();
        let mut gone_typists = Vec::new();
        for subs in state.links.values_mut() {
            let participants = &state.participants;
            subs.sessions.retain(|session, user| {
                if participants.contains_key(user) {
                    return true;
                }
                subs.link.refuse(*session, self.id, &refusal, None);
                false
            });
        }
        state.links.retain(|_, subs| !subs.sessions.is_empty());
        for user in state.typing.keys() {
            if !state.participants.contains_key(user) {
                gone_typists.push(user.clone());
            }
        }
        for user in gone_typists {
            state.typing.remove(&user);
            self.announce_typing(state, &user, false);
        }
    }

    /// A message became a tombstone in the store: replays from memory show
    /// the tombstone from now on, and every subscribed session is told.
    /// Replays from the store read it there already.
    pub(super) fn tombstoned(
        &self,
        state: &mut State,
        message: MessageView,
        deleted_by: turbochat_protocol::DeletedBy,
        deleted_at: i64,
    ) {
        if let Some((_, _, payload)) = state.recent.iter_mut().find(|(s, _, _)| *s == message.seq) {
            *payload = Bytes::from(ServerFrame::Message(message.clone()).to_json());
        }
        let frame = ServerFrame::MessageDeleted {
            conversation_id: self.id,
            seq: message.seq,
            message_id: message.message_id,
            deleted_by,
            deleted_at,
        };
        metrics::counter!("turbochat_messages_deleted_total", "by" => deleted_by.as_str())
            .increment(1);
        self.broadcast(state, &frame, None);
    }

    /// Sends an event to every subscribed session, except those of `skip_user`.
    pub(super) fn broadcast(
        &self,
        state: &mut State,
        frame: &ServerFrame,
        skip_user: Option<&str>,
    ) {
        let payload = Bytes::from(frame.to_json());
        for subs in state.links.values() {
            let sessions: Vec<u64> = subs
                .sessions
                .iter()
                .filter(|(_, user)| Some(user.as_str()) != skip_user)
                .map(|(session, _)| *session)
                .collect();
            if !sessions.is_empty() {
                subs.link
                    .deliver(sessions, self.id, 0, DeliverKind::Event, payload.clone());
            }
        }
    }
}
