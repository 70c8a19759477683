//! Where a push goes: FCM, or (embedded default) a local file that records
//! what would have been sent, one JSON line per push, so a dev setup needs
//! no Firebase account: `{"at": unix_ms, "message": <FCM v1 message>}`.

use std::path::PathBuf;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::fcm::{FcmClient, SendError};
use super::payload::Message;

/// The push backend of this node.
pub enum Sink {
    /// FCM HTTP v1.
    Fcm(FcmClient),
    /// A JSON-lines file.
    File(FileSink),
}

impl Sink {
    /// Sends one push; `Ok` once accepted (FCM) or written (file).
    pub async fn send(&self, message: &Message) -> Result<(), SendError> {
        match self {
            Sink::Fcm(client) => client.send(message).await,
            Sink::File(file) => file.append(message).await,
        }
    }
}

/// Appends pushes to a file, opened (and its directory created) on the
/// first push.
pub struct FileSink {
    path: PathBuf,
    file: Mutex<Option<tokio::fs::File>>,
}

#[derive(Serialize)]
struct Line<'a> {
    at: i64,
    message: &'a Message,
}

impl FileSink {
    /// A sink writing to `path`.
    pub fn new(path: PathBuf) -> Self {
        FileSink {
            path,
            file: Mutex::new(None),
        }
    }

    async fn append(&self, message: &Message) -> Result<(), SendError> {
        let failed = |e: std::io::Error| SendError::Retry {
            label: "file",
            reason: format!("cannot write {}: {e}", self.path.display()),
            retry_after: None,
        };
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut line = serde_json::to_vec(&Line { at, message })
            .map_err(|e| SendError::Rejected(e.to_string()))?;
        line.push(b'\n');
        let mut file = self.file.lock().await;
        if file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir).await.map_err(failed)?;
            }
            let opened = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .map_err(failed)?;
            *file = Some(opened);
        }
        let handle = file.as_mut().expect("opened above");
        let written = async {
            handle.write_all(&line).await?;
            handle.flush().await
        }
        .await;
        if let Err(err) = written {
            // Reopen next time (the file may have been rotated away).
            *file = None;
            return Err(failed(err));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::payload::{build, Style};
    use turbochat_protocol::http::MessageView;
    use turbochat_protocol::MessageKind;

    #[tokio::test]
    async fn file_sink_appends_json_lines() {
        let dir = std::env::temp_dir().join(format!("tc-sink-{}", uuid::Uuid::new_v4()));
        let path = dir.join("nested/push.jsonl");
        let sink = Sink::File(FileSink::new(path.clone()));
        let message = MessageView {
            conversation_id: uuid::Uuid::new_v4(),
            seq: 1,
            message_id: uuid::Uuid::new_v4(),
            sender_id: "alice".into(),
            client_msg_id: "c".into(),
            kind: MessageKind::Text,
            body: "hi".into(),
            media_key: None,
            created_at: 1,
        };
        let style = Style {
            body_max_chars: 100,
            link_base: String::new(),
        };
        sink.send(&build(&message, "t1", &style, &Default::default()))
            .await
            .unwrap();
        sink.send(&build(&message, "t2", &style, &Default::default()))
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["message"]["token"], "t1");
        assert_eq!(lines[1]["message"]["notification"]["body"], "hi");
        assert!(lines[1]["at"].as_i64().unwrap() > 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
