//! The offline queue on disk: every outgoing message is written (and
//! fsync'd) here before it is sent, and leaves only when the server acks or
//! refuses it for good. A crash of the app loses none.
//!
//! Format: `queue.jsonl` in the data directory, an append-only log of JSON
//! lines — `{"op":"add",...}` for a queued message, `{"op":"remove",...}`
//! when it is done, `{"op":"owner",...}` for the user the queue belongs to.
//! Each append is fsync'd. On open, and when removed entries pile up, the
//! log is rewritten with only the live entries (temp file, fsync, rename,
//! fsync of the directory), so a crash mid-rewrite leaves either the old or
//! the new log. A torn last line (a crash mid-append) is ignored: that
//! append was never acknowledged to the caller.
//!
//! The directory is locked (`flock`) while open, so two processes never
//! share one queue.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use turbochat_protocol::{ConversationId, MessageKind, UserId};

/// File name of the log inside the data directory.
pub const QUEUE_FILE: &str = "queue.jsonl";
const LOCK_FILE: &str = "lock";
/// Rewrite the log once this many removals accumulated (and they outnumber
/// the live entries).
const COMPACT_AFTER: usize = 256;

/// A message waiting for its ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// Target conversation.
    pub conversation_id: ConversationId,
    /// Idempotency key, the same on every attempt.
    pub client_msg_id: String,
    /// `text` or `media`.
    pub kind: MessageKind,
    /// Text or caption.
    pub body: String,
    /// Object key, for media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_key: Option<String>,
    /// When the app queued it, unix milliseconds.
    pub queued_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Add(QueuedMessage),
    Remove {
        conversation_id: ConversationId,
        client_msg_id: String,
    },
    Owner {
        user_id: UserId,
    },
}

/// Why the queue cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Reading, writing or syncing the log failed.
    #[error("queue {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process has the directory open.
    #[error("queue {0} is in use by another process")]
    Locked(PathBuf),
    /// The queue holds messages of another user.
    #[error("queue holds {pending} unsent message(s) of user {owner:?}, not of {user:?}; use another data directory")]
    OtherUser {
        /// Whose messages are queued.
        owner: UserId,
        /// Who connected.
        user: UserId,
        /// How many.
        pending: usize,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The open queue: the log file plus its live entries in memory, in the
/// order they were queued.
#[derive(Debug)]
pub struct DiskQueue {
    dir: PathBuf,
    path: PathBuf,
    log: File,
    entries: Vec<QueuedMessage>,
    owner: Option<UserId>,
    removed: usize,
    _lock: DirLock,
}

impl DiskQueue {
    /// Opens (creating if needed) the queue in `dir`, locks the directory,
    /// loads the live entries and rewrites the log compactly.
    pub fn open(dir: &Path) -> Result<Self, QueueError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = DirLock::acquire(dir)?;
        let path = dir.join(QUEUE_FILE);
        let (entries, owner) = load(&path)?;
        let log = rewrite(dir, &path, &entries, owner.as_deref())?;
        Ok(DiskQueue {
            dir: dir.to_path_buf(),
            path,
            log,
            entries,
            owner,
            removed: 0,
            _lock: lock,
        })
    }

    /// Live entries, oldest first.
    pub fn entries(&self) -> &[QueuedMessage] {
        &self.entries
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `message`; when this returns `Ok`, it is on disk.
    pub fn push(&mut self, message: QueuedMessage) -> Result<(), QueueError> {
        self.append(&Record::Add(message.clone()))?;
        self.entries.push(message);
        Ok(())
    }

    /// Removes an entry (acked or failed for good); `None` if it was not queued.
    pub fn remove(
        &mut self,
        conversation_id: &ConversationId,
        client_msg_id: &str,
    ) -> Result<Option<QueuedMessage>, QueueError> {
        let Some(index) = self.entries.iter().position(|m| {
            m.conversation_id == *conversation_id && m.client_msg_id == client_msg_id
        }) else {
            return Ok(None);
        };
        self.append(&Record::Remove {
            conversation_id: *conversation_id,
            client_msg_id: client_msg_id.to_string(),
        })?;
        let message = self.entries.remove(index);
        self.removed += 1;
        if self.removed >= COMPACT_AFTER && self.removed > self.entries.len() {
            self.log = rewrite(&self.dir, &self.path, &self.entries, self.owner.as_deref())?;
            self.removed = 0;
        }
        Ok(Some(message))
    }

    /// Records that `user` owns the queue. Fails if messages of another
    /// user are still queued (sending them as `user` would be wrong).
    pub fn claim(&mut self, user: &str) -> Result<(), QueueError> {
        match &self.owner {
            Some(owner) if owner == user => Ok(()),
            Some(owner) if !self.entries.is_empty() => Err(QueueError::OtherUser {
                owner: owner.clone(),
                user: user.to_string(),
                pending: self.entries.len(),
            }),
            _ => {
                self.append(&Record::Owner {
                    user_id: user.to_string(),
                })?;
                self.owner = Some(user.to_string());
                Ok(())
            }
        }
    }

    fn append(&mut self, record: &Record) -> Result<(), QueueError> {
        let mut line = serde_json::to_vec(record).expect("queue records serialize");
        line.push(b'\n');
        self.log.write_all(&line).map_err(io(&self.path))?;
        self.log.sync_data().map_err(io(&self.path))
    }
}

/// Reads the log: live entries in order, and the owner.
fn load(path: &Path) -> Result<(Vec<QueuedMessage>, Option<UserId>), QueueError> {
    let mut text = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut text).map_err(io(path))?;
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io(path)(err)),
    }
    let mut entries: Vec<QueuedMessage> = Vec::new();
    let mut owner = None;
    let complete = match text.iter().rposition(|b| *b == b'\n') {
        Some(last) => &text[..=last],
        None => &text[..0],
    };
    if complete.len() < text.len() {
        tracing::warn!(path = %path.display(), "ignoring a torn last line in the queue");
    }
    for (number, line) in complete.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(Record::Add(message)) => {
                let duplicate = entries.iter().any(|m| {
                    m.conversation_id == message.conversation_id
                        && m.client_msg_id == message.client_msg_id
                });
                if !duplicate {
                    entries.push(message);
                }
            }
            Ok(Record::Remove {
                conversation_id,
                client_msg_id,
            }) => entries.retain(|m| {
                !(m.conversation_id == conversation_id && m.client_msg_id == client_msg_id)
            }),
            Ok(Record::Owner { user_id }) => owner = Some(user_id),
            Err(err) => {
                tracing::warn!(path = %path.display(), line = number + 1, %err, "skipping an unreadable queue line");
            }
        }
    }
    Ok((entries, owner))
}

/// Atomically replaces the log with one holding only `entries`, and
/// returns it opened for appending.
fn rewrite(
    dir: &Path,
    path: &Path,
    entries: &[QueuedMessage],
    owner: Option<&str>,
) -> Result<File, QueueError> {
    let tmp = dir.join(format!("{QUEUE_FILE}.tmp"));
    {
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        let mut text = Vec::new();
        let owner = owner.map(|user_id| Record::Owner {
            user_id: user_id.to_string(),
        });
        let adds = entries.iter().cloned().map(Record::Add);
        for record in owner.into_iter().chain(adds) {
            serde_json::to_writer(&mut text, &record).expect("queue records serialize");
            text.push(b'\n');
        }
        file.write_all(&text).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(dir)?;
    OpenOptions::new().append(true).open(path).map_err(io(path))
}

/// Makes a rename or a creation in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// An exclusive lock on the data directory, held while the queue is open.
#[derive(Debug)]
struct DirLock {
    #[cfg(unix)]
    _lock: nix::fcntl::Flock<File>,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<Self, QueueError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        #[cfg(unix)]
        {
            use nix::fcntl::{Flock, FlockArg};
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => Ok(DirLock { _lock: lock }),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    Err(QueueError::Locked(dir.to_path_buf()))
                }
                Err((_, errno)) => Err(io(&path)(std::io::Error::from(errno))),
            }
        }
        #[cfg(not(unix))]
        {
            drop(file);
            Ok(DirLock {})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn message(conversation: ConversationId, id: &str) -> QueuedMessage {
        QueuedMessage {
            conversation_id: conversation,
            client_msg_id: id.to_string(),
            kind: MessageKind::Text,
            body: format!("body of {id}"),
            media_key: None,
            queued_at: 1,
        }
    }

    fn ids(queue: &DiskQueue) -> Vec<&str> {
        queue
            .entries()
            .iter()
            .map(|m| m.client_msg_id.as_str())
            .collect()
    }

    #[test]
    fn entries_survive_reopen_in_order_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = Uuid::now_v7();
        {
            let mut queue = DiskQueue::open(dir.path()).unwrap();
            for id in ["a", "b", "c", "d"] {
                queue.push(message(c, id)).unwrap();
            }
            assert_eq!(queue.remove(&c, "b").unwrap().unwrap().client_msg_id, "b");
            assert_eq!(queue.remove(&c, "nope").unwrap(), None);
            // Dropped without any shutdown step, as a crash would.
        }
        let mut queue = DiskQueue::open(dir.path()).unwrap();
        assert_eq!(ids(&queue), ["a", "c", "d"]);
        queue.remove(&c, "a").unwrap();
        queue.push(message(c, "e")).unwrap();
        drop(queue);
        let queue = DiskQueue::open(dir.path()).unwrap();
        assert_eq!(ids(&queue), ["c", "d", "e"]);
        assert_eq!(queue.entries()[0].body, "body of c");
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let c = Uuid::now_v7();
        {
            let mut queue = DiskQueue::open(dir.path()).unwrap();
            queue.push(message(c, "a")).unwrap();
        }
        let path = dir.path().join(QUEUE_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"op":"add","conversation_id":"#)
            .unwrap();
        drop(file);
        let mut queue = DiskQueue::open(dir.path()).unwrap();
        assert_eq!(ids(&queue), ["a"]);
        // The rewrite on open dropped the torn bytes: appends stay readable.
        queue.push(message(c, "b")).unwrap();
        drop(queue);
        assert_eq!(ids(&DiskQueue::open(dir.path()).unwrap()), ["a", "b"]);
    }

    #[test]
    fn compaction_keeps_live_entries() {
        let dir = tempfile::tempdir().unwrap();
        let c = Uuid::now_v7();
        let mut queue = DiskQueue::open(dir.path()).unwrap();
        queue.push(message(c, "keep")).unwrap();
        for i in 0..(COMPACT_AFTER + 10) {
            let id = format!("m{i}");
            queue.push(message(c, &id)).unwrap();
            queue.remove(&c, &id).unwrap();
        }
        let size = std::fs::metadata(queue.path()).unwrap().len();
        assert!(size < 4096, "the log was compacted ({size} bytes)");
        drop(queue);
        assert_eq!(ids(&DiskQueue::open(dir.path()).unwrap()), ["keep"]);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _queue = DiskQueue::open(dir.path()).unwrap();
        assert!(matches!(
            DiskQueue::open(dir.path()),
            Err(QueueError::Locked(_))
        ));
    }

    #[test]
    fn another_user_cannot_take_over_pending_messages() {
        let dir = tempfile::tempdir().unwrap();
        let c = Uuid::now_v7();
        let mut queue = DiskQueue::open(dir.path()).unwrap();
        queue.push(message(c, "a")).unwrap();
        queue.claim("alice").unwrap();
        drop(queue);
        let mut queue = DiskQueue::open(dir.path()).unwrap();
        assert!(matches!(
            queue.claim("bob"),
            Err(QueueError::OtherUser { pending: 1, .. })
        ));
        queue.claim("alice").unwrap();
        queue.remove(&c, "a").unwrap();
        // Empty: anyone may use it now.
        queue.claim("bob").unwrap();
    }
}
