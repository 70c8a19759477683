//! What the app hears: typed events, delivered on a [`futures::Stream`].

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::sync::mpsc;
use turbochat_protocol::http::{ConversationView, MessageView};
use turbochat_protocol::{ConversationId, DeletedBy, ErrorCode, Seq, TypingState, UserId};
use uuid::Uuid;

/// Something that happened on the connection. Serializes as one JSON
/// object tagged by `"event"` (what `turbochat tail` prints).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A session is up (the server's `welcome`).
    Connected {
        /// The authenticated user.
        user_id: UserId,
        /// The router's id for this session.
        session_id: String,
    },
    /// The session ended, or a connect attempt failed; the client tries
    /// again by itself after `retry_in_ms`.
    Disconnected {
        /// Why (socket error, close frame, refused upgrade, ...).
        reason: String,
        /// Delay before the next attempt.
        retry_in_ms: u64,
    },
    /// A subscription is live: every message up to `last_seq` has been delivered.
    Subscribed {
        /// The conversation.
        conversation_id: ConversationId,
        /// The server's last seq at that moment.
        last_seq: Seq,
    },
    /// A message of a subscribed conversation. Each `(conversation_id, seq)`
    /// is delivered once, and in seq order within a conversation.
    Message(MessageView),
    /// A participant read up to `seq`.
    Read {
        /// The conversation.
        conversation_id: ConversationId,
        /// The reader.
        user_id: UserId,
        /// Highest seq read.
        seq: Seq,
    },
    /// A participant started or stopped typing.
    Typing {
        /// The conversation.
        conversation_id: ConversationId,
        /// Who.
        user_id: UserId,
        /// `start` or `stop`.
        state: TypingState,
    },
    /// A user you share a conversation with came online or went offline.
    Presence {
        /// Who.
        user_id: UserId,
        /// Whether they have a live session.
        online: bool,
    },
    /// You were added to a conversation.
    Conversation(ConversationView),
    /// A message was unsent by its sender or deleted by an operator: show
    /// its tombstone instead (history already has it, kind `deleted`).
    MessageDeleted {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message's seq.
        seq: Seq,
        /// The message's id.
        message_id: Uuid,
        /// `sender` or `operator`.
        deleted_by: DeletedBy,
    },
    /// An outgoing message moved: pending → sent, or pending → failed.
    MessageState {
        /// Its conversation.
        conversation_id: ConversationId,
        /// The id [`crate::Client::send`] returned.
        client_msg_id: String,
        /// Where it is now.
        #[serde(flatten)]
        state: MessageState,
    },
    /// The server refused something (`error` frame). Failures of sends also
    /// show up as [`Event::MessageState`].
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// The conversation concerned, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        conversation_id: Option<ConversationId>,
        /// The send concerned, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
    },
    /// The client stopped (after [`crate::Client::close`], or on a fatal
    /// error); the stream ends after this event.
    Closed {
        /// Why.
        reason: String,
    },
}

/// Where an outgoing message is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MessageState {
    /// On disk in the queue, not yet acked: it will be (re)sent with the same
    /// `client_msg_id` until the server acks or refuses it.
    Pending,
    /// Acked: durable on the server with this seq. Removed from the queue.
    Sent {
        /// The message's seq in its conversation.
        seq: Seq,
        /// The server's message id.
        message_id: Uuid,
        /// Commit time, unix milliseconds.
        created_at: i64,
    },
    /// Refused for good (not a participant, invalid, ...). Removed from the queue.
    Failed {
        /// What the server said.
        reason: String,
        /// Its stable code.
        code: ErrorCode,
    },
}

/// A stream of [`Event`]s. Ends after [`Event::Closed`].
///
/// Events are buffered without bound until read: read them.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl futures::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

impl Events {
    /// The next event; `None` once the client has stopped.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

/// Fans events out to every [`Events`] stream. The first stream is created
/// with the hub, so nothing that happens before the app asks is lost.
#[derive(Debug)]
pub(crate) struct EventHub {
    inner: Mutex<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    subscribers: Vec<mpsc::UnboundedSender<Event>>,
    first: Option<mpsc::UnboundedReceiver<Event>>,
}

impl EventHub {
    pub(crate) fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(EventHub {
            inner: Mutex::new(HubInner {
                subscribers: vec![tx],
                first: Some(rx),
            }),
        })
    }

    /// The first call gets every event since the client started; later
    /// calls get the events from now on.
    pub(crate) fn subscribe(&self) -> Events {
        let mut inner = self.inner.lock().expect("event hub lock");
        if let Some(rx) = inner.first.take() {
            return Events { rx };
        }
        let (tx, rx) = mpsc::unbounded_channel();
        inner.subscribers.push(tx);
        Events { rx }
    }

    pub(crate) fn emit(&self, event: Event) {
        let mut inner = self.inner.lock().expect("event hub lock");
        inner
            .subscribers
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Ends every stream (after the caller emitted [`Event::Closed`]).
    pub(crate) fn close(&self) {
        let mut inner = self.inner.lock().expect("event hub lock");
        inner.subscribers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_state_serializes_flat() {
        let event = Event::MessageState {
            conversation_id: Uuid::nil(),
            client_msg_id: "c1".into(),
            state: MessageState::Sent {
                seq: 3,
                message_id: Uuid::nil(),
                created_at: 5,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "message_state");
        assert_eq!(json["state"], "sent");
        assert_eq!(json["seq"], 3);
        assert_eq!(json["client_msg_id"], "c1");
    }

    #[tokio::test]
    async fn first_stream_sees_early_events_later_ones_do_not() {
        let hub = EventHub::new();
        hub.emit(Event::Closed { reason: "a".into() });
        let mut first = hub.subscribe();
        let mut second = hub.subscribe();
        hub.emit(Event::Closed { reason: "b".into() });
        hub.close();
        assert_eq!(
            first.recv().await,
            Some(Event::Closed { reason: "a".into() })
        );
        assert_eq!(
            first.recv().await,
            Some(Event::Closed { reason: "b".into() })
        );
        assert_eq!(first.recv().await, None);
        assert_eq!(
            second.recv().await,
            Some(Event::Closed { reason: "b".into() })
        );
        assert_eq!(second.recv().await, None);
    }
}
