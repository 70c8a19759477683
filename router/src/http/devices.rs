//! Device tokens for push: `PUT /devices` (on login and whenever the app's
//! FCM token changes) and `DELETE /devices/{token}` (on logout). Both are
//! answered by the caller's home node, which checks the values and stores
//! them; a token another user had moves to the caller.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use turbochat_protocol::link::{
    ListDevicesRequest, RegisterDeviceRequest, UnregisterDeviceRequest,
};

use super::{home_client, json, ApiError};
use crate::auth::Authenticated;
use crate::App;

/// `PUT /devices` body.
#[derive(Debug, Deserialize)]
pub struct DeviceBody {
    /// The FCM registration token.
    token: String,
    /// `android`, `ios` or `web`.
    platform: String,
}

/// `GET /devices`: the caller's registered devices
/// (`{"devices": [{"token", "platform", "updated_at"}]}`).
pub async fn list(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
) -> Result<Response, ApiError> {
    let reply = home_client(&app, &claims.sub)?
        .list_devices(ListDevicesRequest {
            user_id: claims.sub,
        })
        .await?;
    Ok(json(reply.into_inner().json))
}

/// `PUT /devices`: registers the caller's device token (an upsert).
/// Answers `{"token", "platform"}`.
pub async fn register(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    body: Result<Json<DeviceBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let reply = home_client(&app, &claims.sub)?
        .register_device(RegisterDeviceRequest {
            user_id: claims.sub,
            token: body.token,
            platform: body.platform,
        })
        .await?;
    Ok(json(reply.into_inner().json))
}

/// `DELETE /devices/{token}`: the caller's device no longer gets pushes.
/// Idempotent; answers `{"deleted": bool}`.
pub async fn unregister(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    token: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(token) = token.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let reply = home_client(&app, &claims.sub)?
        .unregister_device(UnregisterDeviceRequest {
            user_id: claims.sub,
            token,
        })
        .await?;
    Ok(json(reply.into_inner().json))
}
