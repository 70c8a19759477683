//! `GET /ws`: the WebSocket endpoint. The token is verified by the
//! [`Authenticated`] extractor before the upgrade, so an unauthenticated
//! client gets a 401 and never a WebSocket.

mod session;

pub use session::CLOSE_GRACE;

use axum::extract::{State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use turbochat_protocol::ErrorCode;

use crate::auth::Authenticated;
use crate::http::ApiError;
use crate::App;

/// Bytes read from a socket at a time, held by every connection while it
/// is idle: a client frame is typically a few hundred bytes, and a larger
/// one grows the buffer to its length. At 4 KiB it was a third of the
/// router's heap per idle connection (heaptrack, 10,000 connections).
const READ_BUFFER: usize = 1024;
/// Bytes of outgoing frames buffered before a write is forced.
const WRITE_BUFFER: usize = 8 * 1024;

/// Upgrades an authenticated request to a session.
pub async fn upgrade(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    ws: WebSocketUpgrade,
) -> Response {
    if app.inner.bans.contains(&claims.sub) {
        metrics::counter!("turbochat_sessions_refused_total").increment(1);
        return ApiError::new(ErrorCode::Banned, "this account is banned").into_response();
    }
    let limits = &app.inner.limits;
    if app.inner.sessions.len() >= limits.max_sessions || app.inner.shutdown.is_cancelled() {
        metrics::counter!("turbochat_sessions_refused_total").increment(1);
        return ApiError::new(
            ErrorCode::Unavailable,
            "router is full or shutting down; connect to another router or retry",
        )
        .into_response();
    }
    let max = limits.max_frame_bytes;
    let tracker = app.inner.tracker.clone();
    // tungstenite's default 128 KiB read buffer per socket would dominate
    // an idle connection's memory; frames larger than the buffer still
    // work (they are assembled across reads).
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| tracker.track_future(session::run(app, claims, socket)))
}
