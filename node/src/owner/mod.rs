//! Conversation owners: one task per conversation with traffic, the single
//! writer of its seqs (guarantee 1 and 5).
//!
//! [`Owners`] is the registry: it finds or starts the task for a
//! conversation and hands it a [`Command`]. A task that has been idle for
//! `owner.idle_timeout` leaves the registry before it stops, and commands
//! that raced with its exit are handed to its successor, so two tasks never
//! run for one conversation in this process.

mod command;
mod conversation;
mod validate;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use turbochat_protocol::ids::ConversationId;
use turbochat_store::{Store, Writer};

pub use command::{Command, SendCommand};
pub use validate::media_key_of;

use crate::config::OwnerConfig;

/// The mailbox of one owner task, with its count of queued sends.
#[derive(Clone)]
struct Mailbox {
    tx: mpsc::UnboundedSender<Command>,
    queued_sends: Arc<AtomicUsize>,
}

/// Why a command was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DispatchError {
    /// Too many sends are queued at this conversation.
    #[error("conversation is overloaded")]
    Overloaded,
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Handle on every owner task of this node. Cheap to clone.
#[derive(Clone)]
pub struct Owners {
    inner: Arc<Shared>,
}

struct Shared {
    tasks: DashMap<ConversationId, Mailbox>,
    store: Arc<dyn Store>,
    writer: Writer,
    config: OwnerConfig,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Owners {
    /// A registry whose tasks persist through `writer` and read `store`.
    pub fn new(
        store: Arc<dyn Store>,
        writer: Writer,
        config: OwnerConfig,
        shutdown: CancellationToken,
    ) -> Self {
        Owners {
            inner: Arc::new(Shared {
                tasks: DashMap::new(),
                store,
                writer,
                config,
                shutdown,
                tracker: TaskTracker::new(),
            }),
        }
    }

    /// Hands `command` to the conversation's owner task, starting it if needed.
    pub fn dispatch(
        &self,
        conversation: ConversationId,
        command: Command,
    ) -> Result<(), DispatchError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(DispatchError::ShuttingDown);
        }
        let is_send = matches!(command, Command::Send(_));
        // These only concern a running owner; starting one (a store read)
        // to handle them would be waste, and would keep a task alive on a
        // node that is giving the conversation up.
        let needs_running = matches!(
            command,
            Command::Unsubscribe { .. }
                | Command::Refresh
                | Command::Release
                | Command::CatchUp
                | Command::LinkLost { .. }
        );
        let mut command = command;
        loop {
            let mailbox = if needs_running {
                match self.inner.tasks.get(&conversation) {
                    Some(existing) => existing.clone(),
                    None => return Ok(()),
                }
            } else {
                self.mailbox(conversation)
            };
            if is_send {
                let queued = mailbox.queued_sends.fetch_add(1, Ordering::AcqRel);
                if queued >= self.inner.config.max_queued_sends {
                    mailbox.queued_sends.fetch_sub(1, Ordering::AcqRel);
                    metrics::counter!("turbochat_owner_overloaded_total").increment(1);
                    return Err(DispatchError::Overloaded);
                }
            }
            match mailbox.tx.send(command) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(returned)) => {
                    // The task stopped between lookup and send: forget it and
                    // start a successor.
                    if is_send {
                        mailbox.queued_sends.fetch_sub(1, Ordering::AcqRel);
                    }
                    self.inner
                        .tasks
                        .remove_if(&conversation, |_, m| m.tx.same_channel(&mailbox.tx));
                    command = returned;
                }
            }
        }
    }

    /// Asks every owner task whose conversation `keep` rejects to release
    /// its state and stop (see [`Command::Release`]). Returns how many.
    pub fn release_unless(&self, keep: impl Fn(&ConversationId) -> bool) -> usize {
        let doomed: Vec<ConversationId> = self
            .inner
            .tasks
            .iter()
            .map(|e| *e.key())
            .filter(|c| !keep(c))
            .collect();
        for conversation in &doomed {
            if let Some(mailbox) = self.inner.tasks.get(conversation).map(|m| m.clone()) {
                let _ = mailbox.tx.send(Command::Release);
            }
        }
        doomed.len()
    }

    /// Asks every running owner task to catch up with the store (see
    /// [`Command::CatchUp`]). Returns how many.
    pub fn catch_up_all(&self) -> usize {
        let mailboxes: Vec<Mailbox> = self.inner.tasks.iter().map(|e| e.value().clone()).collect();
        for mailbox in &mailboxes {
            let _ = mailbox.tx.send(Command::CatchUp);
        }
        mailboxes.len()
    }

    /// Number of conversations with a live owner task.
    pub fn active(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Waits until every owner task has stopped (after shutdown is signalled).
    pub async fn wait_stopped(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    fn mailbox(&self, conversation: ConversationId) -> Mailbox {
        if let Some(existing) = self.inner.tasks.get(&conversation) {
            return existing.clone();
        }
        self.inner
            .tasks
            .entry(conversation)
            .or_insert_with(|| self.spawn(conversation))
            .clone()
    }

    /// Runs a side task of an owner (e.g. a read-cursor write) on the
    /// owners' tracker, so shutdown waits for it.
    fn spawn_side(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.tracker.spawn(task);
    }

    fn spawn(&self, conversation: ConversationId) -> Mailbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let mailbox = Mailbox {
            tx,
            queued_sends: Arc::new(AtomicUsize::new(0)),
        };
        let task = conversation::Owner::new(
            conversation,
            self.clone(),
            mailbox.queued_sends.clone(),
            rx,
            // The task keeps a sender only to recognise its registry entry.
            mailbox.tx.clone(),
        );
        self.inner.tracker.spawn(task.run());
        metrics::gauge!("turbochat_owners_active").increment(1.0);
        mailbox
    }

    /// Removes the registry entry of `conversation` if it is still `tx`'s.
    fn retire(&self, conversation: ConversationId, tx: &mpsc::UnboundedSender<Command>) -> bool {
        self.inner
            .tasks
            .remove_if(&conversation, |_, m| m.tx.same_channel(tx))
            .is_some()
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    fn config(&self) -> &OwnerConfig {
        &self.inner.config
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}
