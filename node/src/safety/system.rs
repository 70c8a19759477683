//! System messages (kind `system`, e.g. "This car has been sold"), posted
//! by an operator: they go through the conversation's owner like any send
//! (numbered, stored, fanned out, pushed to who is offline), on an
//! in-process "router" link of the node's own whose answers (the ack, or
//! an error) this module hands back to the waiting request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use turbochat_protocol::ids::ConversationId;
use turbochat_protocol::link::{node_frame, DeliverKind};
use turbochat_protocol::{ErrorCode, MessageKind, ServerFrame};

use crate::fanout::{LinkItem, RouterLink, Routers};
use crate::owner::{Command, Owners, SendCommand};
use crate::ownership::Ownership;
use crate::refusal::Refusal;

/// The sender id of system messages.
pub const SYSTEM_SENDER: &str = "system";
/// How long a system message may take to be stored.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Posts system messages at this node's owners.
#[derive(Clone)]
pub struct SystemPost {
    owners: Owners,
    ownership: Ownership,
    link: RouterLink,
    pending: Arc<DashMap<u64, oneshot::Sender<ServerFrame>>>,
    next: Arc<AtomicU64>,
}

impl SystemPost {
    /// Registers the in-process link with `routers` and starts the task
    /// that hands answers back (on `tasks`, until `shutdown`).
    pub fn start(
        owners: Owners,
        ownership: Ownership,
        routers: &Routers,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let (link, _) = routers.attach(
            "internal:system",
            rand::random(),
            tx,
            shutdown.child_token(),
        );
        let post = SystemPost {
            owners,
            ownership,
            link,
            pending: Arc::new(DashMap::new()),
            next: Arc::new(AtomicU64::new(1)),
        };
        tasks.spawn(post.clone().answers(rx, shutdown));
        post
    }

    /// This node's conversation owners.
    pub(crate) fn owners(&self) -> &Owners {
        &self.owners
    }

    /// Stores `body` as a system message in `conversation` (owned here),
    /// idempotent by `client_msg_id`. Returns the `ack` frame.
    pub async fn post(
        &self,
        conversation: ConversationId,
        client_msg_id: String,
        body: String,
    ) -> Result<ServerFrame, Refusal> {
        if !self.ownership.owns(&conversation) {
            return Err(Refusal::unavailable(
                "the conversation is moving between nodes; retry",
            ));
        }
        let session_id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.insert(session_id, tx);
        let send = SendCommand {
            link: self.link.clone(),
            session_id,
            user_id: SYSTEM_SENDER.into(),
            client_msg_id,
            kind: MessageKind::System,
            body,
            media_key: None,
            received_at: Instant::now(),
            traceparent: String::new(),
            span: tracing::Span::none(),
            trusted: true,
        };
        if let Err(err) = self.owners.dispatch(conversation, Command::Send(send)) {
            self.pending.remove(&session_id);
            return Err(Refusal::unavailable(err.to_string()));
        }
        let answer = tokio::time::timeout(ANSWER_WITHIN, rx).await;
        self.pending.remove(&session_id);
        match answer {
            Ok(Ok(ack @ ServerFrame::Ack { .. })) => Ok(ack),
            Ok(Ok(ServerFrame::Error { code, message, .. })) => Err(Refusal::new(code, message)),
            Ok(Ok(_)) | Ok(Err(_)) => Err(Refusal::new(ErrorCode::Internal, "no answer")),
            Err(_) => Err(Refusal::unavailable(
                "the owner did not answer in time; retry",
            )),
        }
    }

    /// Hands each answer on the link to the request waiting for it.
    async fn answers(self, mut rx: mpsc::Receiver<LinkItem>, shutdown: CancellationToken) {
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                _ = shutdown.cancelled() => return,
            };
            let Some(Ok(frame)) = item else { return };
            let (sessions, answer) = match frame.frame {
                Some(node_frame::Frame::Deliver(d))
                    if d.kind == DeliverKind::Ack as i32 || d.kind == DeliverKind::Error as i32 =>
                {
                    let Ok(answer) = serde_json::from_slice::<ServerFrame>(&d.payload) else {
                        continue;
                    };
                    (d.session_ids, answer)
                }
                // The owner gave the conversation away meanwhile.
                Some(node_frame::Frame::Redirect(r)) => (
                    vec![r.session_id],
                    Refusal::unavailable("the conversation is moving between nodes; retry")
                        .frame(None, None),
                ),
                _ => continue,
            };
            for session in sessions {
                if let Some((_, waiting)) = self.pending.remove(&session) {
                    let _ = waiting.send(answer.clone());
                }
            }
        }
    }
}
