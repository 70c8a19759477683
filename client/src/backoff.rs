//! Reconnect and retry delays: the schedule shared by every turbochat
//! process (`turbochat-backoff`), re-exported for SDK users.

pub use turbochat_backoff::{Backoff, Reconnect};
