//! turbochat wire types.
//!
//! - [`frame`]: the JSON text frames a client exchanges with a router over the
//!   WebSocket (`docs/protocol.md` documents them for client authors).
//! - [`http`]: JSON bodies of the HTTP API (history, conversations).
//! - [`link`]: the gRPC link between routers and nodes (`proto/link.proto`).
//! - [`safety`]: blocks and reports between routers and nodes (`proto/safety.proto`).
//! - [`ids`]: identifiers shared by every crate, and how they are derived.
//! - [`local`]: the same link between a router and a node in one process.

pub mod error;
pub mod frame;
pub mod http;
pub mod ids;
pub mod local;

/// Generated from `proto/link.proto`.
pub mod link {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("turbochat.link.v1");
}

/// Generated from `proto/safety.proto`: blocks and reports.
pub mod safety {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("turbochat.safety.v1");
}

pub use error::ErrorCode;
pub use frame::{ClientFrame, DeletedBy, MessageKind, ServerFrame, TypingState};
pub use ids::{ConversationId, Seq, UserId};
