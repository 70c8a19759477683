//! The floor: a bare, single-process WebSocket broadcast server with rooms
//! and no persistence, no auth and no limits. It speaks the subset of the
//! turbochat client protocol the bench uses (`welcome`, `subscribe` →
//! `subscribed`, `send` → `ack` + `message` to every room member, `ping` →
//! `pong`), so the same load runs against it unchanged. Whatever latency or
//! memory it shows is the cost of WebSockets, JSON and this machine: the
//! floor under any real system.
//!
//! Shape (as in mini-redis): [`serve`] is the accept loop, one task per
//! connection reads frames and one writes them, and [`Rooms`] is the only
//! shared state, behind a small handle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Rooms and their members' outgoing queues. Cloning shares them.
#[derive(Clone, Default)]
pub struct Rooms {
    inner: Arc<Mutex<HashMap<String, Room>>>,
}

#[derive(Default)]
struct Room {
    last_seq: u64,
    members: Vec<(u64, mpsc::UnboundedSender<Utf8Bytes>)>,
}

impl Rooms {
    /// Adds connection `id` to `room`; returns the room's last seq.
    fn join(&self, room: &str, id: u64, out: &mpsc::UnboundedSender<Utf8Bytes>) -> u64 {
        let mut rooms = self.inner.lock().expect("rooms lock");
        let room = rooms.entry(room.to_string()).or_default();
        if !room.members.iter().any(|(member, _)| *member == id) {
            room.members.push((id, out.clone()));
        }
        room.last_seq
    }

    /// Removes connection `id` from `room`.
    fn leave(&self, room: &str, id: u64) {
        let mut rooms = self.inner.lock().expect("rooms lock");
        if let Some(entry) = rooms.get_mut(room) {
            entry.members.retain(|(member, _)| *member != id);
        }
    }

    /// Gives the message the room's next seq and queues it to every member
    /// (the sender's other connections and the sender too, as turbochat
    /// does). Returns the seq.
    fn publish(&self, room: &str, build: impl FnOnce(u64) -> String) -> u64 {
        let mut rooms = self.inner.lock().expect("rooms lock");
        let room = rooms.entry(room.to_string()).or_default();
        room.last_seq += 1;
        let text = Utf8Bytes::from(build(room.last_seq));
        for (_, out) in &room.members {
            let _ = out.send(text.clone());
        }
        room.last_seq
    }
}

/// Client frames the floor understands.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Subscribe {
        conversation_id: String,
    },
    Unsubscribe {
        conversation_id: String,
    },
    Send {
        conversation_id: String,
        client_msg_id: String,
        body: String,
    },
    Ping {
        #[serde(default)]
        nonce: Option<serde_json::Value>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Welcome {
        user_id: &'a str,
        session_id: u64,
        max_frame_bytes: usize,
    },
    Subscribed {
        conversation_id: &'a str,
        last_seq: u64,
    },
    Message {
        conversation_id: &'a str,
        seq: u64,
        message_id: String,
        sender_id: &'a str,
        client_msg_id: &'a str,
        kind: &'a str,
        body: &'a str,
        created_at: u128,
    },
    Ack {
        conversation_id: &'a str,
        client_msg_id: &'a str,
        seq: u64,
        message_id: String,
        created_at: u128,
    },
    Pong {
        nonce: Option<serde_json::Value>,
    },
    Error {
        code: &'a str,
        message: String,
    },
}

impl ServerFrame<'_> {
    fn text(&self) -> Utf8Bytes {
        Utf8Bytes::from(serde_json::to_string(self).expect("frames serialize"))
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Accepts connections until the listener fails for good. Each connection
/// gets a read task (this loop spawns it) and a write task.
pub async fn serve(listener: TcpListener) {
    let rooms = Rooms::default();
    let ids = Arc::new(AtomicU64::new(1));
    let mut backoff = Duration::from_millis(1);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(1);
                let _ = stream.set_nodelay(true);
                let id = ids.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(stream, id, rooms.clone()));
            }
            Err(_) => {
                // Out of file descriptors or similar: back off, don't spin.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The `user` query parameter of the upgrade request (the floor has no
/// auth; turbochat takes the user from the token instead).
fn user_of(request: &Request) -> String {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("user="))
        .unwrap_or("anonymous")
        .to_string()
}

async fn connection(stream: TcpStream, id: u64, rooms: Rooms) {
    let mut user = String::new();
    // The callback's signature is tungstenite's (`Callback`), large error
    // type included.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        user = user_of(request);
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(crate::dial::ws_config()),
    )
    .await
    else {
        return;
    };
    let (sink, mut stream) = ws.split();
    let (out, queue) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_task(sink, queue));
    let welcome = ServerFrame::Welcome {
        user_id: &user,
        session_id: id,
        max_frame_bytes: 65536,
    };
    let _ = out.send(welcome.text());
    let mut joined: Vec<String> = Vec::new();
    while let Some(Ok(message)) = stream.next().await {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        let reply = match serde_json::from_str::<ClientFrame>(&text) {
            Ok(frame) => apply(frame, id, &user, &rooms, &out, &mut joined),
            Err(e) => Some(
                ServerFrame::Error {
                    code: "malformed_frame",
                    message: e.to_string(),
                }
                .text(),
            ),
        };
        if let Some(reply) = reply {
            let _ = out.send(reply);
        }
    }
    for room in &joined {
        rooms.leave(room, id);
    }
    drop(out);
    let _ = writer.await;
}

/// Carries out one client frame; returns the direct answer, if any.
fn apply(
    frame: ClientFrame,
    id: u64,
    user: &str,
    rooms: &Rooms,
    out: &mpsc::UnboundedSender<Utf8Bytes>,
    joined: &mut Vec<String>,
) -> Option<Utf8Bytes> {
    match frame {
        ClientFrame::Subscribe { conversation_id } => {
            let last_seq = rooms.join(&conversation_id, id, out);
            if !joined.contains(&conversation_id) {
                joined.push(conversation_id.clone());
            }
            Some(
                ServerFrame::Subscribed {
                    conversation_id: &conversation_id,
                    last_seq,
                }
                .text(),
            )
        }
        ClientFrame::Unsubscribe { conversation_id } => {
            rooms.leave(&conversation_id, id);
            joined.retain(|room| *room != conversation_id);
            None
        }
        ClientFrame::Send {
            conversation_id,
            client_msg_id,
            body,
        } => {
            let created_at = now_ms();
            let seq = rooms.publish(&conversation_id, |seq| {
                serde_json::to_string(&ServerFrame::Message {
                    conversation_id: &conversation_id,
                    seq,
                    message_id: format!("{conversation_id}/{seq}"),
                    sender_id: user,
                    client_msg_id: &client_msg_id,
                    kind: "text",
                    body: &body,
                    created_at,
                })
                .expect("frames serialize")
            });
            Some(
                ServerFrame::Ack {
                    conversation_id: &conversation_id,
                    client_msg_id: &client_msg_id,
                    seq,
                    message_id: format!("{conversation_id}/{seq}"),
                    created_at,
                }
                .text(),
            )
        }
        ClientFrame::Ping { nonce } => Some(ServerFrame::Pong { nonce }.text()),
    }
}

/// Writes queued frames, flushing once per burst rather than per frame.
async fn write_task<S>(mut sink: S, mut queue: mpsc::UnboundedReceiver<Utf8Bytes>)
where
    S: futures::Sink<Message> + Unpin,
{
    while let Some(text) = queue.recv().await {
        if sink.feed(Message::Text(text)).await.is_err() {
            return;
        }
        while let Ok(text) = queue.try_recv() {
            if sink.feed(Message::Text(text)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// Runs the floor as its own process: binds `listen`, prints the same kind
/// of JSON ready line turbochat's processes print, then serves forever.
pub fn run_process(listen: &str, threads: usize) -> anyhow::Result<()> {
    crate::dial::raise_file_limit(1 << 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("floor-worker")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen).await?;
        let ready = serde_json::json!({
            "event": "ready",
            "role": "floor",
            "http": listener.local_addr()?.to_string(),
        });
        println!("{ready}");
        serve(listener).await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    async fn next_json(ws: &mut crate::dial::Socket) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("a frame in time")
                .expect("socket open")
                .expect("no error");
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn broadcasts_to_room_members_and_acks_the_sender() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener));
        let source = std::net::Ipv4Addr::LOCALHOST;
        let mut alice = crate::dial::connect(&format!("ws://{addr}/ws?user=alice"), source)
            .await
            .unwrap();
        let mut bob = crate::dial::connect(&format!("ws://{addr}/ws?user=bob"), source)
            .await
            .unwrap();
        assert_eq!(next_json(&mut alice).await["user_id"], "alice");
        assert_eq!(next_json(&mut bob).await["type"], "welcome");
        for ws in [&mut alice, &mut bob] {
            let frame = json!({"type": "subscribe", "conversation_id": "c1"});
            ws.send(Message::Text(frame.to_string().into()))
                .await
                .unwrap();
            assert_eq!(next_json(ws).await["type"], "subscribed");
        }
        let send =
            json!({"type": "send", "conversation_id": "c1", "client_msg_id": "m1", "body": "hi"});
        alice
            .send(Message::Text(send.to_string().into()))
            .await
            .unwrap();
        let at_bob = next_json(&mut bob).await;
        assert_eq!(at_bob["type"], "message");
        assert_eq!(at_bob["sender_id"], "alice");
        assert_eq!(at_bob["client_msg_id"], "m1");
        assert_eq!(at_bob["seq"], 1);
        let mut at_alice = [next_json(&mut alice).await, next_json(&mut alice).await];
        at_alice.sort_by_key(|f| f["type"].as_str().unwrap().to_string());
        assert_eq!(at_alice[0]["type"], "ack");
        assert_eq!(at_alice[0]["seq"], 1);
        assert_eq!(at_alice[1]["type"], "message");
    }
}
