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

pub use command::{Command, Letter, SendCommand};
pub use validate::media_key_of;

use crate::config::OwnerConfig;
use crate::safety::Safety;

/// The mailbox of one owner task, with what waits in it.
#[derive(Clone)]
struct Mailbox {
    tx: mpsc::UnboundedSender<Letter>,
    backlog: Arc<Backlog>,
}

/// What waits at one owner: the mailbox is bounded by these counts, so a
/// stalled owner (a slow store) refuses clients instead of growing without
/// limit. Internal commands (release, catch-up, link loss) are never
/// refused and are not counted.
#[derive(Default)]
pub(crate) struct Backlog {
    /// Sends in the mailbox or queued for the next batch.
    pub(crate) sends: AtomicUsize,
    /// Subscribes, reads and typing in the mailbox.
    pub(crate) others: AtomicUsize,
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
    safety: Safety,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Owners {
    /// A registry whose tasks persist through `writer` and read `store`,
    /// and screen sends with `safety` (blocks, moderation).
    pub fn new(
        store: Arc<dyn Store>,
        writer: Writer,
        config: OwnerConfig,
        safety: Safety,
        shutdown: CancellationToken,
    ) -> Self {
        Owners {
            inner: Arc::new(Shared {
                tasks: DashMap::new(),
                store,
                writer,
                config,
                safety,
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
        let is_other_client = matches!(
            command,
            Command::Subscribe { .. } | Command::Read { .. } | Command::Typing { .. }
        );
        // These only concern a running owner; starting one (a store read)
        // to handle them would be waste, and would keep a task alive on a
        // node that is giving the conversation up.
        let needs_running = matches!(
            command,
            Command::Unsubscribe { .. }
                | Command::Refresh
                | Command::Tombstoned { .. }
                | Command::Expire { .. }
                | Command::Release
                | Command::CatchUp
                | Command::Poll
        );
        let mut command = Box::new(command);
        loop {
            let mailbox = if needs_running {
                match self.inner.tasks.get(&conversation) {
                    Some(existing) => existing.clone(),
                    None => return Ok(()),
                }
            } else {
                self.mailbox(conversation)
            };
            let counter = if is_send {
                Some((&mailbox.backlog.sends, self.inner.config.max_queued_sends))
            } else if is_other_client {
                Some((
                    &mailbox.backlog.others,
                    self.inner.config.max_queued_commands,
                ))
            } else {
                None
            };
            if let Some((counter, limit)) = counter {
                let queued = counter.fetch_add(1, Ordering::AcqRel);
                if queued >= limit {
                    counter.fetch_sub(1, Ordering::AcqRel);
                    metrics::counter!("turbochat_owner_overloaded_total").increment(1);
                    return Err(DispatchError::Overloaded);
                }
            }
            match mailbox.tx.send(command) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(returned)) => {
                    // The task stopped between lookup and send: forget it and
                    // start a successor.
                    if let Some((counter, _)) = counter {
                        counter.fetch_sub(1, Ordering::AcqRel);
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
                let _ = mailbox.tx.send(Box::new(Command::Release));
            }
        }
        doomed.len()
    }

    /// Asks every running owner task to catch up with the store (see
    /// [`Command::CatchUp`]). Returns how many.
    pub fn catch_up_all(&self) -> usize {
        let mailboxes: Vec<Mailbox> = self.inner.tasks.iter().map(|e| e.value().clone()).collect();
        for mailbox in &mailboxes {
            let _ = mailbox.tx.send(Box::new(Command::CatchUp));
        }
        mailboxes.len()
    }

    /// Asks every running owner task with subscribers to read what others
    /// wrote (see [`Command::Poll`]). Returns how many were asked.
    pub fn poll_all(&self) -> usize {
        let mailboxes: Vec<Mailbox> = self.inner.tasks.iter().map(|e| e.value().clone()).collect();
        for mailbox in &mailboxes {
            let _ = mailbox.tx.send(Box::new(Command::Poll));
        }
        mailboxes.len()
    }

    /// Asks every running owner task to forget from its replay memory the
    /// messages created before `before` (see [`Command::Expire`]).
    pub fn expire_all(&self, before: i64) {
        let mailboxes: Vec<Mailbox> = self.inner.tasks.iter().map(|e| e.value().clone()).collect();
        for mailbox in &mailboxes {
            let _ = mailbox.tx.send(Box::new(Command::Expire { before }));
        }
    }

    /// Whether `conversation` has a live owner task here now.
    pub fn is_running(&self, conversation: ConversationId) -> bool {
        self.inner.tasks.contains_key(&conversation)
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
            backlog: Arc::default(),
        };
        self.inner.tracker.spawn(conversation::supervise(
            conversation,
            self.clone(),
            mailbox.backlog.clone(),
            rx,
            // The task keeps a sender only to recognise its registry entry.
            mailbox.tx.clone(),
        ));
        metrics::gauge!("turbochat_owners_active").increment(1.0);
        mailbox
    }

    /// Removes the registry entry of `conversation` if it is still `tx`'s.
    fn retire(&self, conversation: ConversationId, tx: &mpsc::UnboundedSender<Letter>) -> bool {
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

    /// Blocks and moderation, asked before a send joins a batch.
    pub(crate) fn safety(&self) -> &Safety {
        &self.inner.safety
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::fanout::Routers;

    /// An owner that has not run yet (this runtime has one thread and the
    /// test never yields) is a stalled owner: its mailbox fills up.
    #[tokio::test]
    async fn a_stalled_owner_refuses_clients_beyond_its_mailbox_bound_but_never_internal_commands()
    {
        let store = turbochat_store::open("sqlite::memory:", 1).await.unwrap();
        let shutdown = CancellationToken::new();
        let (writer, _task) = Writer::spawn(store.clone(), Default::default(), shutdown.clone());
        let config = OwnerConfig {
            max_queued_commands: 3,
            ..OwnerConfig::default()
        };
        let safety = Safety::new(
            "node-1".into(),
            &Default::default(),
            &Default::default(),
            store.clone(),
            None,
            crate::peers::Peers::default(),
            TaskTracker::new(),
        )
        .unwrap();
        let owners = Owners::new(store, writer, config, safety, shutdown.clone());
        let (tx, _rx) = mpsc::channel(8);
        let (link, _) = Routers::new(None).attach("router-1", 1, tx, CancellationToken::new());
        let conversation = ConversationId::new_v4();
        let typing = |session_id| Command::Typing {
            link: link.clone(),
            session_id,
            user_id: "alice".into(),
            active: true,
        };
        for session in 0..3 {
            assert_eq!(owners.dispatch(conversation, typing(session)), Ok(()));
        }
        assert_eq!(
            owners.dispatch(conversation, typing(3)),
            Err(DispatchError::Overloaded)
        );
        assert_eq!(owners.dispatch(conversation, Command::CatchUp), Ok(()));
        assert_eq!(owners.dispatch(conversation, Command::Refresh), Ok(()));
        shutdown.cancel();
        owners.wait_stopped().await;
    }
}
