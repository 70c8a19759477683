//! Rust SDK for turbochat: a client that survives bad networks.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use turbochat_client::{connect, ClientConfig, DevToken, Event};
//!
//! let config = ClientConfig::new("http://127.0.0.1:8080", "/tmp/turbochat-alice");
//! let client = connect(config, DevToken::new("alice")).await?;
//! let mut events = client.events();
//! let chat = client.create_direct("bob", Some("car-42")).await?;
//! client.subscribe(chat.conversation_id).await?;
//! client.send(chat.conversation_id, "Is the Audi still for sale?").await?;
//! while let Some(event) = events.next().await {
//!     if let Event::Message(message) = event {
//!         println!("{}: {}", message.sender_id, message.body);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! What it guarantees:
//! - **Reconnect** by itself with exponential backoff, full jitter and a
//!   cap ([`backoff`]), reset after a stable connection; a fresh token from
//!   the [`TokenProvider`] at every connect, and an `auth` refresh before
//!   the session's token expires.
//! - **Offline queue on disk** ([`queue`]): [`Client::send`] returns once the
//!   message is fsync'd; it is sent (in order per conversation, with its
//!   original `client_msg_id`, so a retry never stores it twice) when
//!   connected, leaves the queue only on its `ack` or a permanent refusal,
//!   and survives a crash of the app. [`Event::MessageState`] reports
//!   pending → sent / failed.
//! - **Resume and dedupe**: every subscribed conversation is resumed from
//!   the last delivered seq after a reconnect; the app sees each
//!   `(conversation, seq)` once, in seq order ([`Event::Message`]).
//!
//! Module map: [`client`] (the handle), `connection` (the task that owns
//! the socket), [`backoff`], [`queue`] (disk) and `outbox` (send
//! scheduling), `timeline` (per-conversation dedupe/order), [`events`],
//! [`http`] (the HTTP API), [`token`] and [`dev_token`].

pub mod backoff;
pub mod client;
pub mod config;
mod connection;
pub mod dev_token;
pub mod error;
pub mod events;
pub mod http;
mod outbox;
pub mod queue;
mod timeline;
pub mod token;

pub use backoff::{Backoff, Reconnect};
pub use client::{connect, Client, ClientStats};
pub use config::ClientConfig;
pub use dev_token::DevToken;
pub use error::ClientError;
pub use events::{Event, Events, MessageState};
pub use http::{Api, HttpError, ReportTarget};
pub use queue::{QueueError, QueuedMessage};
pub use token::{StaticToken, TokenError, TokenProvider};
pub use turbochat_protocol::http::{ConversationView, HistoryPage, MessageView};
pub use turbochat_protocol::{ConversationId, ErrorCode, MessageKind, Seq, TypingState, UserId};
