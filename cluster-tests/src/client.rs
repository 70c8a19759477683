//! A client as a test drives one: a WebSocket speaking the JSON frames, and
//! the HTTP API.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What the socket gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A JSON text frame.
    Frame(Value),
    /// The server closed with this code (None: no close frame).
    Closed(Option<u16>),
}

/// Why a connection was refused.
#[derive(Debug)]
pub enum Refused {
    /// The HTTP answer to the upgrade (e.g. 401).
    Status(u16),
    /// Anything else.
    Other(String),
}

/// A connected WebSocket client.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `welcome` frame.
    pub welcome: Value,
    pending: VecDeque<Value>,
}

fn ws_url(base: &str) -> String {
    base.replacen("http://", "ws://", 1)
}

impl WsClient {
    /// Connects with `?token=`.
    pub async fn connect(base: &str, token: &str) -> Result<Self, Refused> {
        Self::open(format!("{}/ws?token={token}", ws_url(base)), None).await
    }

    /// Connects with `Authorization: Bearer`.
    pub async fn connect_bearer(base: &str, token: &str) -> Result<Self, Refused> {
        Self::open(format!("{}/ws", ws_url(base)), Some(token)).await
    }

    /// Connects with no token at all.
    pub async fn connect_anonymous(base: &str) -> Result<Self, Refused> {
        Self::open(format!("{}/ws", ws_url(base)), None).await
    }

    async fn open(url: String, bearer: Option<&str>) -> Result<Self, Refused> {
        let mut request = url
            .into_client_request()
            .map_err(|e| Refused::Other(e.to_string()))?;
        if let Some(token) = bearer {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header value"),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(response) => Refused::Status(response.status().as_u16()),
                other => Refused::Other(other.to_string()),
            })?;
        let mut client = WsClient {
            ws,
            welcome: Value::Null,
            pending: VecDeque::new(),
        };
        client.welcome = client.expect("welcome", Duration::from_secs(5)).await;
        Ok(client)
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("socket open");
    }

    /// Sends raw text (for malformed-frame tests).
    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("socket open");
    }

    /// The next frame or close, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Event> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(Event::Frame(frame));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    let value = serde_json::from_str(&text).expect("server sends JSON");
                    return Some(Event::Frame(value));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Event::Closed(frame.map(|f| u16::from(f.code))));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Event::Closed(None)),
            }
        }
    }

    /// Waits for the next frame of `kind`, keeping the others for later.
    pub async fn expect(&mut self, kind: &str, timeout: Duration) -> Value {
        self.expect_where(kind, timeout, |_| true).await
    }

    /// Waits for a frame of `kind` matching `pred`, keeping the others.
    pub async fn expect_where(
        &mut self,
        kind: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(i) = self
            .pending
            .iter()
            .position(|f| f["type"] == kind && pred(f))
        {
            return self.pending.remove(i).expect("index valid");
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {kind} frame within {timeout:?}; kept {:?}",
                        self.pending
                    )
                });
            match message {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("server sends JSON");
                    if value["type"] == kind && pred(&value) {
                        return value;
                    }
                    self.pending.push_back(value);
                }
                Some(Ok(Message::Close(frame))) => {
                    panic!("socket closed ({frame:?}) while waiting for {kind}")
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error while waiting for {kind}: {e}"),
                None => panic!("socket ended while waiting for {kind}"),
            }
        }
    }

    /// Frames received and not yet taken by `expect`, of `kind`.
    pub fn take_pending(&mut self, kind: &str) -> Vec<Value> {
        let (taken, kept): (Vec<Value>, Vec<Value>) =
            self.pending.drain(..).partition(|f| f["type"] == kind);
        self.pending = kept.into();
        taken
    }

    /// Subscribes and returns the `subscribed` frame's `last_seq`.
    pub async fn subscribe(&mut self, conversation: &str, since: Option<u64>) -> u64 {
        let mut frame = json!({"type": "subscribe", "conversation_id": conversation});
        if let Some(since) = since {
            frame["since"] = json!(since);
        }
        self.send(frame).await;
        let subscribed = self
            .expect_where("subscribed", Duration::from_secs(10), |f| {
                f["conversation_id"] == conversation
            })
            .await;
        subscribed["last_seq"].as_u64().expect("last_seq")
    }

    /// Sends a text message and waits for its `ack` (or panics on `error`).
    pub async fn send_message(
        &mut self,
        conversation: &str,
        client_msg_id: &str,
        body: &str,
    ) -> Value {
        self.send(json!({
            "type": "send", "conversation_id": conversation,
            "client_msg_id": client_msg_id, "body": body,
        }))
        .await;
        self.answer(client_msg_id, Duration::from_secs(10)).await
    }

    /// The `ack` or `error` answering `client_msg_id`.
    pub async fn answer(&mut self, client_msg_id: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.pending.iter().position(|f| {
                (f["type"] == "ack" || f["type"] == "error") && f["client_msg_id"] == client_msg_id
            }) {
                return self.pending.remove(i).expect("index valid");
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_raw(left).await {
                Some(value) => self.pending.push_back(value),
                None => panic!("no answer to {client_msg_id} within {timeout:?}"),
            }
        }
    }

    async fn next_raw(&mut self, timeout: Duration) -> Option<Value> {
        match tokio::time::timeout(timeout, self.ws.next()).await.ok()? {
            Some(Ok(Message::Text(text))) => serde_json::from_str(&text).ok(),
            Some(Ok(_)) => Some(Value::Null),
            _ => None,
        }
    }

    /// Closes the socket.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The HTTP API of one router.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// For the router at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        Api {
            base: base.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// `POST /conversations` for a direct conversation; returns its id.
    pub async fn create_direct(&self, token: &str, peer: &str, listing: Option<&str>) -> String {
        let mut body = json!({"kind": "direct", "peer_id": peer});
        if let Some(listing) = listing {
            body["listing_id"] = json!(listing);
        }
        let (status, value) = self.post("/conversations", token, body).await;
        assert_eq!(status, 200, "create conversation: {value}");
        value["conversation_id"].as_str().expect("id").to_string()
    }

    /// `POST` with a JSON body; returns status and JSON.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("router reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `PUT` with a JSON body; returns status and JSON.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("router reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `DELETE` with the token as bearer; returns status and JSON.
    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        let response = self
            .http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("router reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET` with the token as bearer (or none); returns status and JSON.
    pub async fn get(&self, path_and_query: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path_and_query}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("router reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Every message of a conversation, ascending by seq (pages through history).
    pub async fn all_messages(&self, token: &str, conversation: &str) -> Vec<Value> {
        let mut messages = Vec::new();
        let mut before: Option<u64> = None;
        loop {
            let mut path = format!("/history?conversation_id={conversation}&limit=200");
            if let Some(b) = before {
                path.push_str(&format!("&before_seq={b}"));
            }
            let (status, page) = self.get(&path, Some(token)).await;
            assert_eq!(status, 200, "history: {page}");
            messages.extend(page["messages"].as_array().cloned().unwrap_or_default());
            match page["next_before_seq"].as_u64() {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        messages.reverse();
        messages
    }

    /// `GET /conversations` for the token's user.
    pub async fn conversations(&self, token: &str) -> Vec<Value> {
        let (status, value) = self.get("/conversations", Some(token)).await;
        assert_eq!(status, 200, "conversations: {value}");
        value["conversations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}
