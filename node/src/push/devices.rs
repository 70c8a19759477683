//! Device tokens (`PUT /devices`, `DELETE /devices/{token}`), as the user's
//! home node handles them: checked, then stored in `user_devices`. A token
//! is unique across users: registering one that another user had moves it
//! (a shared phone, a new login), so it pushes only to its latest user.

use serde::Serialize;
use turbochat_protocol::ids::valid_user_id;
use turbochat_store::{Store, StoreError};

use crate::refusal::Refusal;

/// Longest token accepted (FCM tokens are about 160 bytes).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Platforms a device can be.
pub const PLATFORMS: [&str; 3] = ["android", "ios", "web"];

/// Why a device call failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A bad user id, token or platform.
    #[error("{0}")]
    Invalid(&'static str),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl From<DeviceError> for Refusal {
    fn from(err: DeviceError) -> Self {
        match err {
            DeviceError::Invalid(reason) => Refusal::invalid(reason),
            DeviceError::Store(err) => Refusal::from(err),
        }
    }
}

impl From<DeviceError> for tonic::Status {
    fn from(err: DeviceError) -> Self {
        Refusal::from(err).into()
    }
}

/// `PUT /devices` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registered {
    /// The token.
    pub token: String,
    /// Its platform.
    pub platform: String,
}

/// One device in the `GET /devices` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    /// The token.
    pub token: String,
    /// Its platform.
    pub platform: String,
    /// Last registration, unix milliseconds.
    pub updated_at: i64,
}

/// `GET /devices` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceList {
    /// The caller's devices, by token.
    pub devices: Vec<DeviceView>,
}

/// `DELETE /devices/{token}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unregistered {
    /// Whether the caller had this token.
    pub deleted: bool,
}

fn check_token(token: &str) -> Result<(), DeviceError> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(DeviceError::Invalid("token must be 1 to 4096 bytes"));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(DeviceError::Invalid(
            "token must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

fn check_user(user: &str) -> Result<(), DeviceError> {
    if valid_user_id(user) {
        Ok(())
    } else {
        Err(DeviceError::Invalid("invalid user id"))
    }
}

/// Registers `token` for `user` (an upsert; see the module docs).
pub async fn register(
    store: &dyn Store,
    user: &str,
    token: &str,
    platform: &str,
) -> Result<Registered, DeviceError> {
    check_user(user)?;
    check_token(token)?;
    if !PLATFORMS.contains(&platform) {
        return Err(DeviceError::Invalid("platform must be android, ios or web"));
    }
    store.upsert_device(user, platform, token).await?;
    metrics::counter!("turbochat_push_devices_registered_total").increment(1);
    tracing::debug!(user_id = %user, %platform, "device registered");
    Ok(Registered {
        token: token.to_string(),
        platform: platform.to_string(),
    })
}

/// The devices `user` registered.
pub async fn list(store: &dyn Store, user: &str) -> Result<DeviceList, DeviceError> {
    check_user(user)?;
    let devices = store.devices_of(&[user.to_string()]).await?;
    Ok(DeviceList {
        devices: devices
            .into_iter()
            .map(|d| DeviceView {
                token: d.token,
                platform: d.platform,
                updated_at: d.updated_at,
            })
            .collect(),
    })
}

/// Removes `user`'s `token` (a token now belonging to someone else stays).
pub async fn unregister(
    store: &dyn Store,
    user: &str,
    token: &str,
) -> Result<Unregistered, DeviceError> {
    check_user(user)?;
    check_token(token)?;
    let deleted = store.delete_device(user, token).await?;
    tracing::debug!(user_id = %user, deleted, "device unregistered");
    Ok(Unregistered { deleted })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked() {
        assert!(check_token("fcm-token_1:APA91b").is_ok());
        assert!(check_token("").is_err());
        assert!(check_token("has space").is_err());
        assert!(check_token("new\nline").is_err());
        assert!(check_token(&"x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        assert!(check_token(&"x".repeat(MAX_TOKEN_BYTES)).is_ok());
    }
}
