//! The router's live WebSocket sessions and their per-conversation cursors.
//!
//! A session's cursor for a conversation is the last seq the router
//! forwarded to it, and the node it is subscribed at. Cursors make delivery
//! exactly-once from the client's point of view: a `message` at or below the
//! cursor is a duplicate (replay overlap, fallback bus) and is dropped; one
//! beyond `cursor + 1` means something was missed, so the router
//! re-subscribes from the cursor and the owner replays the gap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use turbochat_protocol::ids::{ConversationId, Seq, UserId};
use turbochat_protocol::link::{Deliver, DeliverKind};

use crate::lanes::Lanes;
use crate::outbox::{Outbox, Refused};

/// What a session's write task sends.
#[derive(Debug)]
pub enum Outgoing {
    /// A JSON text frame.
    Text(Utf8Bytes),
    /// Close the socket with this code and reason, then stop.
    Close(u16, String),
}

/// Where a session stands in one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Last seq forwarded to the client (`None` until the node says).
    pub last_seq: Option<Seq>,
    /// Id of the node the subscription was made at.
    pub node: String,
    /// `last_seq` is the client's `since`, not yet confirmed by the owner:
    /// its `subscribed` may lower it (a `since` past the conversation's last
    /// seq would otherwise hide every later message).
    pub claimed: bool,
}

/// One live session, shared by its own tasks and the link readers.
#[derive(Debug)]
pub struct Session {
    /// Router-local id.
    pub id: u64,
    /// The authenticated user.
    pub user_id: UserId,
    /// Display name and avatar URL from the token's claims, if it had any.
    profile: Option<Box<Profile>>,
    out: Outbox<Outgoing>,
    cursors: Mutex<HashMap<ConversationId, Cursor>>,
    /// Nodes this session was registered at as its user's home.
    homes: Mutex<std::collections::HashSet<String>>,
    /// Its sends in flight, per conversation (see `lanes.rs`).
    lanes: Mutex<Lanes>,
    /// Cancelled when the session must close now, skipping what is queued
    /// (a slow consumer); the close frame is in `close_now`.
    pub closing: CancellationToken,
    close_now: Mutex<Option<(u16, String)>>,
}

/// Close code for a policy violation (a slow consumer, an expired token).
pub const CLOSE_POLICY: u16 = 1008;

/// What the link reader must do after a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followup {
    /// Nothing.
    None,
    /// The node still streams to a session this router no longer has (it
    /// closed while the link was down): tell the node to drop it.
    Gone {
        /// The unknown session.
        session_id: u64,
    },
    /// The owner answered one of this session's sends and others wait in
    /// its lane: they may go now.
    Answered {
        /// The session.
        session_id: u64,
    },
    /// Re-subscribe this session from this seq (a gap was seen).
    Resubscribe {
        /// The session.
        session_id: u64,
        /// Its user.
        user_id: UserId,
        /// Last seq it has.
        since: Seq,
    },
}

/// What a token says about its user besides the id (`name`, `picture`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Display name.
    pub name: String,
    /// Picture URL.
    pub avatar_url: String,
}

impl Profile {
    /// The profile in `claims`, if they carry any of it.
    pub fn from_claims(claims: &crate::auth::Claims) -> Option<Box<Profile>> {
        if claims.name.is_none() && claims.picture.is_none() {
            return None;
        }
        Some(Box::new(Profile {
            name: claims.name.clone().unwrap_or_default(),
            avatar_url: claims.picture.clone().unwrap_or_default(),
        }))
    }
}

impl Session {
    /// The frame registering this session with its user's home node (which
    /// keeps the profile it carries).
    pub fn opened_frame(&self) -> turbochat_protocol::link::SessionOpened {
        let profile = self.profile.as_deref().cloned().unwrap_or_default();
        turbochat_protocol::link::SessionOpened {
            session_id: self.id,
            user_id: self.user_id.clone(),
            name: profile.name,
            avatar_url: profile.avatar_url,
        }
    }

    /// Queues a frame for the client. A full queue means the client is not
    /// reading: the session is closed at once with 1008 `slow_consumer`
    /// (what is queued is dropped) and the client resumes by seq after
    /// reconnecting.
    pub fn push(&self, text: Utf8Bytes) -> bool {
        match self.out.push(Outgoing::Text(text)) {
            Ok(()) => true,
            Err(Refused::Full(_)) => {
                if !self.closing.is_cancelled() {
                    tracing::info!(session_id = self.id, user_id = %self.user_id,
                        "session queue full; closing as slow consumer");
                    metrics::counter!("turbochat_sessions_slow_total").increment(1);
                    self.close_now(CLOSE_POLICY, "slow_consumer");
                }
                false
            }
            Err(Refused::Closed(_)) => false,
        }
    }

    /// Closes after the frames already queued (a close frame is never
    /// dropped: with the queue full, the session closes now instead).
    pub fn close(&self, code: u16, reason: &str) {
        if let Err(Refused::Full(_)) = self.out.push(Outgoing::Close(code, reason.to_string())) {
            self.close_now(code, reason);
        }
    }

    /// The frames waiting for the client, for the session's write task.
    pub fn outgoing(&self) -> &Outbox<Outgoing> {
        &self.out
    }

    /// Closes at once with this code and reason, skipping queued frames.
    /// The first reason given wins.
    pub fn close_now(&self, code: u16, reason: &str) {
        let mut slot = self.close_now.lock().expect("close lock");
        if slot.is_none() {
            *slot = Some((code, reason.to_string()));
        }
        drop(slot);
        self.closing.cancel();
    }

    /// The close frame a [`Session::close_now`] asked for.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.close_now.lock().expect("close lock").clone()
    }

    /// Its sends in flight.
    pub fn lanes(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().expect("lanes lock")
    }

    /// Records a subscription; returns whether it is new.
    pub fn subscribe(&self, conversation: ConversationId, cursor: Cursor) -> bool {
        self.cursors
            .lock()
            .expect("cursor lock")
            .insert(conversation, cursor)
            .is_none()
    }

    /// Forgets a subscription; returns its node.
    pub fn unsubscribe(&self, conversation: &ConversationId) -> Option<String> {
        self.cursors
            .lock()
            .expect("cursor lock")
            .remove(conversation)
            .map(|c| c.node)
    }

    /// Points a subscription at another node; returns the old node and the
    /// last seq, or `None` if not subscribed or already there.
    pub fn move_cursor(
        &self,
        conversation: &ConversationId,
        node: &str,
    ) -> Option<(String, Option<Seq>)> {
        let mut cursors = self.cursors.lock().expect("cursor lock");
        let cursor = cursors.get_mut(conversation)?;
        if cursor.node == node {
            return None;
        }
        let old = std::mem::replace(&mut cursor.node, node.to_string());
        Some((old, cursor.last_seq))
    }

    /// The cursor of one conversation.
    pub fn cursor(&self, conversation: &ConversationId) -> Option<Cursor> {
        self.cursors
            .lock()
            .expect("cursor lock")
            .get(conversation)
            .cloned()
    }

    /// Records that the session is registered at `node` as its home;
    /// returns whether that is new.
    pub fn registered_home(&self, node: &str) -> bool {
        self.homes
            .lock()
            .expect("homes lock")
            .insert(node.to_string())
    }

    /// Every node this session is known to: its homes and its cursors' nodes.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .homes
            .lock()
            .expect("homes lock")
            .iter()
            .cloned()
            .collect();
        nodes.extend(self.cursors().into_iter().map(|(_, c)| c.node));
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Number of subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.cursors.lock().expect("cursor lock").len()
    }

    /// Snapshot of every cursor.
    pub fn cursors(&self) -> Vec<(ConversationId, Cursor)> {
        self.cursors
            .lock()
            .expect("cursor lock")
            .iter()
            .map(|(c, cur)| (*c, cur.clone()))
            .collect()
    }

    /// Applies a `Deliver` for this session: updates the cursor, forwards
    /// the payload unless it is a duplicate, and reports a gap.
    fn deliver(
        &self,
        conversation: ConversationId,
        kind: DeliverKind,
        seq: Seq,
        client_msg_id: &str,
        text: &Utf8Bytes,
    ) -> Followup {
        match kind {
            DeliverKind::Ack | DeliverKind::Error if !client_msg_id.is_empty() => {
                // The answer to a send: forwarded once, whichever copy of
                // the send (sent again after a lost node) it answers.
                let mut lanes = self.lanes();
                if !lanes.answered(&conversation, client_msg_id) {
                    metrics::counter!("turbochat_router_duplicate_answers_total").increment(1);
                    return Followup::None;
                }
                // Only a lane with sends waiting behind this one needs
                // planning again: most answers leave nothing to do.
                let behind = lanes.waiting(&conversation);
                drop(lanes);
                self.push(text.clone());
                return if behind {
                    Followup::Answered {
                        session_id: self.id,
                    }
                } else {
                    Followup::None
                };
            }
            DeliverKind::Message => {
                let mut cursors = self.cursors.lock().expect("cursor lock");
                let Some(cursor) = cursors.get_mut(&conversation) else {
                    // Unsubscribed meanwhile.
                    return Followup::None;
                };
                match cursor.last_seq {
                    Some(last) if seq <= last => {
                        metrics::counter!("turbochat_router_duplicates_dropped_total").increment(1);
                        return Followup::None;
                    }
                    Some(last) if seq > last + 1 => {
                        metrics::counter!("turbochat_router_gaps_total").increment(1);
                        return Followup::Resubscribe {
                            session_id: self.id,
                            user_id: self.user_id.clone(),
                            since: last,
                        };
                    }
                    _ => {
                        cursor.last_seq = Some(seq);
                        cursor.claimed = false;
                    }
                }
                drop(cursors);
                self.push(text.clone());
            }
            DeliverKind::Subscribed => {
                if let Some(cursor) = self
                    .cursors
                    .lock()
                    .expect("cursor lock")
                    .get_mut(&conversation)
                {
                    cursor.last_seq = Some(match cursor.last_seq {
                        // The owner has nothing past `seq`: the client's
                        // claim was wrong (or from the future).
                        Some(last) if cursor.claimed && last > seq => seq,
                        Some(last) => last.max(seq),
                        None => seq,
                    });
                    cursor.claimed = false;
                }
                self.push(text.clone());
            }
            _ => {
                self.push(text.clone());
            }
        }
        Followup::None
    }
}

/// Every live session of this router.
#[derive(Debug)]
pub struct Sessions {
    map: DashMap<u64, Arc<Session>>,
    next_id: AtomicU64,
}

impl Default for Sessions {
    /// Session ids start at a random point, so a restarted router never
    /// reuses an id that a node may still hold a subscription for.
    fn default() -> Self {
        Sessions {
            map: DashMap::new(),
            next_id: AtomicU64::new(rand::random::<u64>() >> 2),
        }
    }
}

impl Sessions {
    /// Registers a new session for `user_id` whose outgoing queue holds at
    /// most `queue` frames (see [`Session::outgoing`]).
    pub fn open(
        &self,
        user_id: UserId,
        profile: Option<Box<Profile>>,
        queue: usize,
    ) -> Arc<Session> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Arc::new(Session {
            id,
            user_id,
            profile,
            out: Outbox::new(queue),
            cursors: Mutex::new(HashMap::new()),
            homes: Mutex::new(std::collections::HashSet::new()),
            lanes: Mutex::new(Lanes::default()),
            closing: CancellationToken::new(),
            close_now: Mutex::new(None),
        });
        self.map.insert(id, session.clone());
        metrics::gauge!("turbochat_sessions").increment(1.0);
        session
    }

    /// Removes a session.
    pub fn close(&self, id: u64) {
        if self.map.remove(&id).is_some() {
            metrics::gauge!("turbochat_sessions").decrement(1.0);
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A live session by id.
    pub fn get(&self, id: u64) -> Option<Arc<Session>> {
        self.map.get(&id).map(|s| s.clone())
    }

    /// Every live session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map.iter().map(|e| e.value().clone()).collect()
    }

    /// Applies a node's `Deliver` to its sessions; returns the follow-ups.
    pub fn deliver(&self, deliver: Deliver) -> Vec<(ConversationId, Followup)> {
        let Ok(conversation) = deliver.conversation_id.parse::<ConversationId>() else {
            tracing::warn!("node sent a deliver with a bad conversation id");
            return Vec::new();
        };
        let kind = DeliverKind::try_from(deliver.kind).unwrap_or(DeliverKind::Event);
        let Ok(text) = Utf8Bytes::try_from(deliver.payload) else {
            tracing::warn!("node sent a non-UTF-8 payload");
            return Vec::new();
        };
        let mut followups = Vec::new();
        for session_id in deliver.session_ids {
            let Some(session) = self.map.get(&session_id).map(|s| s.clone()) else {
                if kind == DeliverKind::Message {
                    followups.push((conversation, Followup::Gone { session_id }));
                }
                continue;
            };
            let client_msg_id = if deliver.client_msg_id.is_empty()
                && matches!(kind, DeliverKind::Ack | DeliverKind::Error)
            {
                // A node from before answers named their send: read it
                // from the frame (only while a cluster is upgraded).
                answered_send(&text)
            } else {
                deliver.client_msg_id.clone()
            };
            match session.deliver(conversation, kind, deliver.seq, &client_msg_id, &text) {
                Followup::None => {}
                other => followups.push((conversation, other)),
            }
        }
        followups
    }
}

/// The `client_msg_id` an `ack` or `error` frame names, if any.
fn answered_send(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(default)]
        client_msg_id: Option<String>,
    }
    serde_json::from_str::<Named>(text)
        .ok()
        .and_then(|n| n.client_msg_id)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use turbochat_protocol::link;

    use super::*;

    fn deliver(conversation: ConversationId, session: u64, kind: DeliverKind, seq: Seq) -> Deliver {
        Deliver {
            session_ids: vec![session],
            conversation_id: conversation.to_string(),
            seq,
            kind: kind as i32,
            payload: bytes::Bytes::from(format!("{{\"seq\":{seq}}}")),
            client_msg_id: String::new(),
        }
    }

    fn received(session: &Session) -> Vec<String> {
        let mut texts = Vec::new();
        while let Some(Outgoing::Text(text)) = session.outgoing().try_pop() {
            texts.push(text.to_string());
        }
        texts
    }

    #[test]
    fn a_cursor_drops_duplicates_and_asks_for_a_gap_again() {
        let sessions = Sessions::default();
        let session = sessions.open("bob".into(), None, 16);
        let c = ConversationId::new_v4();
        session.subscribe(
            c,
            Cursor {
                last_seq: Some(0),
                node: "n1".into(),
                claimed: false,
            },
        );
        let go = |seq| sessions.deliver(deliver(c, session.id, DeliverKind::Message, seq));
        assert!(go(1).is_empty());
        assert!(go(1).is_empty(), "a duplicate is dropped");
        assert_eq!(received(&session), ["{\"seq\":1}"]);
        let followups = go(3);
        assert_eq!(
            followups,
            vec![(
                c,
                Followup::Resubscribe {
                    session_id: session.id,
                    user_id: "bob".into(),
                    since: 1
                }
            )],
            "a gap is asked for again from the cursor"
        );
        assert!(
            received(&session).is_empty(),
            "nothing past the gap is forwarded"
        );
        assert!(go(2).is_empty());
        assert_eq!(received(&session), ["{\"seq\":2}"]);
        // A session the router no longer has: the node is told.
        assert_eq!(
            sessions.deliver(deliver(c, 999, DeliverKind::Message, 4)),
            vec![(c, Followup::Gone { session_id: 999 })]
        );
    }

    #[test]
    fn a_send_is_answered_once_whatever_copy_is_answered() {
        let sessions = Sessions::default();
        let session = sessions.open("alice".into(), None, 16);
        let c = ConversationId::new_v4();
        let push = |id: &str| {
            let send = link::Send {
                client_msg_id: id.into(),
                ..Default::default()
            };
            session.lanes().push(c, send, Instant::now(), 8).unwrap();
        };
        push("m-1");
        push("m-2");
        let mut ack = deliver(c, session.id, DeliverKind::Ack, 7);
        ack.client_msg_id = "m-1".into();
        assert_eq!(
            sessions.deliver(ack.clone()),
            vec![(
                c,
                Followup::Answered {
                    session_id: session.id
                }
            )]
        );
        assert!(
            sessions.deliver(ack).is_empty(),
            "the second answer is dropped"
        );
        assert_eq!(received(&session), ["{\"seq\":7}"]);
        // An answer from a node that does not name its send: read from the frame.
        push("m-3");
        let mut old = deliver(c, session.id, DeliverKind::Ack, 8);
        old.payload = bytes::Bytes::from_static(b"{\"type\":\"ack\",\"client_msg_id\":\"m-2\"}");
        assert_eq!(sessions.deliver(old).len(), 1);
        // The last answer leaves nothing waiting: nothing to plan.
        let mut last = deliver(c, session.id, DeliverKind::Ack, 9);
        last.client_msg_id = "m-3".into();
        assert!(sessions.deliver(last).is_empty());
        assert_eq!(session.lanes().in_flight(), 0);
    }
}
