//! What a conversation's owner can be asked to do. One variant per client
//! intent that reaches the owner; the link turns router frames into these.

use std::time::Instant;

use turbochat_protocol::http::MessageView;
use turbochat_protocol::ids::{Seq, UserId};
use turbochat_protocol::{DeletedBy, MessageKind};

use crate::fanout::RouterLink;

/// A command for one conversation's owner task. It travels boxed
/// ([`Letter`]): a command channel allocates room for 32 of what it carries
/// when an owner starts, and an idle conversation should pay for 32
/// pointers, not 32 sends.
#[derive(Debug)]
pub enum Command {
    /// Append a message (acked once durable).
    Send(SendCommand),
    /// Replay after `since`, then stream live messages to a session.
    Subscribe {
        /// The session's router.
        link: RouterLink,
        /// Router-local session id.
        session_id: u64,
        /// Who is subscribing (must participate).
        user_id: UserId,
        /// Last seq the session has.
        since: Option<Seq>,
    },
    /// Stop streaming to a session.
    Unsubscribe {
        /// Id of the link the session was subscribed through.
        link_id: u64,
        /// Router-local session id.
        session_id: u64,
    },
    /// Move a reader's cursor forward.
    Read {
        /// The session's router.
        link: RouterLink,
        /// Router-local session id.
        session_id: u64,
        /// The reader.
        user_id: UserId,
        /// Highest seq read.
        seq: Seq,
    },
    /// Typing started or stopped.
    Typing {
        /// The session's router.
        link: RouterLink,
        /// Router-local session id.
        session_id: u64,
        /// Who is typing.
        user_id: UserId,
        /// Started (true) or stopped.
        active: bool,
    },
    /// The conversation's participants changed in the store: reload them.
    Refresh,
    /// Retention emptied the messages created before `before` (unix ms):
    /// forget them from the replay memory.
    Expire {
        /// The cutoff, unix milliseconds.
        before: i64,
    },
    /// A message was replaced by its tombstone in the store: remember the
    /// tombstone for replays and tell every subscribed session
    /// (`message_deleted`).
    Tombstoned {
        /// The tombstone (kind `deleted`). Boxed: rare, and larger than
        /// a send.
        message: Box<MessageView>,
        /// Who deleted it.
        deleted_by: DeletedBy,
        /// When, unix milliseconds.
        deleted_at: i64,
    },
    /// This node no longer owns the conversation (ring change): finish the
    /// in-flight batch, redirect queued sends, drop subscribers and state,
    /// stop.
    Release,
    /// The ring changed and we kept the conversation, or the cluster
    /// declared us down: another node may have written it meanwhile. Read
    /// what it wrote and fan it out to our subscribers, who would otherwise
    /// wait for our next write to notice.
    CatchUp,
    /// Like `CatchUp`, but only if the owner has subscribers: while the
    /// cluster may be split (a member vanished without leaving), owners on
    /// both sides may write, and each reads the other's writes from the
    /// store for its subscribers (see `split_watch` in lib.rs).
    Poll,
}

/// A command as the owner's mailbox carries it.
pub type Letter = Box<Command>;

/// A `send` on its way to the store.
#[derive(Debug)]
pub struct SendCommand {
    /// The sender's router.
    pub link: RouterLink,
    /// Router-local session id of the sender.
    pub session_id: u64,
    /// The sender.
    pub user_id: UserId,
    /// Idempotency key.
    pub client_msg_id: String,
    /// `text` or `media`.
    pub kind: MessageKind,
    /// Text or caption.
    pub body: String,
    /// Attached media.
    pub media_key: Option<String>,
    /// When the node received it (for the send→ack histogram).
    pub received_at: Instant,
    /// The router's trace context (empty when tracing is off); kept for a
    /// redirect to another owner.
    pub traceparent: String,
    /// This send's span on the node, from receipt to its answer (disabled
    /// when tracing is off): the router's span is its parent.
    pub span: tracing::Span,
    /// Posted by an operator through the admin API (a system message), not
    /// by a client: it may be of kind `system` and its sender need not
    /// participate. Never set from a router's frame.
    pub trusted: bool,
}
