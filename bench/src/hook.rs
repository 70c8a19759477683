//! A moderation hook for measuring what the node's call to one costs: it
//! answers every `POST` with `{"action":"allow"}` at once (the protocol of
//! `[moderation.hook]` in docs/operations.md). Run it as its own process
//! (`turbochat-bench hook`), so its CPU is neither the load generator's nor
//! the servers'.

use axum::routing::post;
use axum::Json;
use serde_json::{json, Value};

/// Serves the hook on `listen` until the process is stopped; prints the
/// address it listens on first.
pub async fn serve(listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("hook listening on http://{}/check", listener.local_addr()?);
    let app = axum::Router::new().route("/check", post(allow));
    axum::serve(listener, app).await?;
    Ok(())
}

async fn allow(Json(_message): Json<Value>) -> Json<Value> {
    Json(json!({"action": "allow"}))
}
