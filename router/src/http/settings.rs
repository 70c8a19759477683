//! A user's notification settings: `GET|PUT /settings/notifications`,
//! answered by the user's home node, which checks and stores them (see
//! `node/src/push/settings.rs` for what they do).

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use turbochat_protocol::link::NotificationSettingsRequest;

use super::{home_client, json, ApiError};
use crate::auth::Authenticated;
use crate::App;

/// `GET /settings/notifications`: `{"mode", "hide_text", "quiet_hours"?}`
/// (the defaults until the user sets them).
pub async fn get(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
) -> Result<Response, ApiError> {
    let reply = home_client(&app, &claims.sub)?
        .get_notification_settings(NotificationSettingsRequest {
            user_id: claims.sub,
            json: Bytes::new(),
        })
        .await?;
    Ok(json(reply.into_inner().json))
}

/// `PUT /settings/notifications`: replaces the settings (absent fields take
/// their defaults; unknown ones are refused). Answers the stored settings.
pub async fn put(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    body: Bytes,
) -> Result<Response, ApiError> {
    let reply = home_client(&app, &claims.sub)?
        .set_notification_settings(NotificationSettingsRequest {
            user_id: claims.sub,
            json: body,
        })
        .await?;
    Ok(json(reply.into_inner().json))
}
