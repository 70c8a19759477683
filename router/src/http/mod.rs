//! The HTTP API: history, the conversation list, creating conversations;
//! devices ([`devices`]); blocks and reports ([`safety`]).
//! Every call is authenticated and answered by the node that owns the data:
//! the conversation's owner, or the caller's home node for the list.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tonic::transport::Channel;
use turbochat_protocol::http::{CreateConversation, ErrorBody};
use turbochat_protocol::ids::{direct_conversation_id, ConversationId, Seq};
use turbochat_protocol::link::link_client::LinkClient;
use turbochat_protocol::link::{
    CreateConversationRequest, HistoryRequest, ListConversationsRequest,
};
use turbochat_protocol::ErrorCode;
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::App;

pub mod devices;
pub mod membership;
pub mod safety;
pub mod settings;

/// An HTTP error answer: a stable code (its status comes from
/// [`ErrorCode::http_status`]), a message, and for `rate_limited` the delay.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    retry_after_ms: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidArgument, message)
    }

    pub(crate) fn unavailable() -> Self {
        ApiError::new(
            ErrorCode::Unavailable,
            "no node is available for this request; retry",
        )
    }

    pub(crate) fn rate_limited(message: impl Into<String>, retry_after_ms: u64) -> Self {
        ApiError {
            code: ErrorCode::RateLimited,
            message: message.into(),
            retry_after_ms: Some(retry_after_ms),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        ApiError::new(ErrorCode::from_status(&status), status.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("turbochat_client_errors_total", "code" => self.code.as_str())
            .increment(1);
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self
            .retry_after_ms
            .map(|ms| ms.div_ceil(1000).max(1).to_string());
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            retry_after_ms: self.retry_after_ms,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after.and_then(|s| header::HeaderValue::from_str(&s).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        response
    }
}

/// A client for the owner of `conversation` on our ring, or 503.
pub(crate) fn owner_client(
    app: &App,
    conversation: &ConversationId,
) -> Result<LinkClient<Channel>, ApiError> {
    let owner = app.inner.links.owner(conversation);
    owner
        .map(|link| link.client())
        .ok_or_else(ApiError::unavailable)
}

/// A client for `user`'s home node on our ring, or 503.
pub(crate) fn home_client(app: &App, user: &str) -> Result<LinkClient<Channel>, ApiError> {
    let home = app.inner.links.home(user);
    home.map(|link| link.client())
        .ok_or_else(ApiError::unavailable)
}

/// A call to a node carrying the current span's trace context (none when
/// tracing is off), so the node's span joins the request's trace.
pub(crate) fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    turbochat_service::telemetry::inject_metadata(request.metadata_mut());
    request
}

fn json(bytes: bytes::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// `GET /history` query.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    conversation_id: ConversationId,
    #[serde(default)]
    before_seq: Option<Seq>,
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /history?conversation_id=&before_seq=&limit=`: newest first.
pub async fn history(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit(query.limit, 50)?;
    let reply = owner_client(&app, &query.conversation_id)?
        .history(traced(HistoryRequest {
            user_id: claims.sub,
            conversation_id: query.conversation_id.to_string(),
            before_seq: query.before_seq,
            limit,
        }))
        .await?;
    Ok(json(reply.into_inner().json))
}

/// `GET /conversations` query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /conversations`: the caller's conversations, most recent first.
pub async fn list_conversations(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit(query.limit, 100)?;
    let reply = home_client(&app, &claims.sub)?
        .list_conversations(traced(ListConversationsRequest {
            user_id: claims.sub,
            limit,
        }))
        .await?;
    Ok(json(reply.into_inner().json))
}

/// `POST /conversations`: a direct conversation (idempotent: the same pair
/// and listing always give the same conversation) or a new group.
pub async fn create_conversation(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    body: Result<Json<CreateConversation>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Err(not_until) = app.inner.users.creates.check_key(&claims.sub) {
        metrics::counter!("turbochat_conversations_rate_limited_total").increment(1);
        return Err(ApiError::rate_limited(
            "creating conversations too fast; retry later",
            crate::limits::wait_ms(&not_until),
        ));
    }
    let (id, request) = match body {
        CreateConversation::Direct {
            peer_id,
            listing_id,
        } => {
            if peer_id == claims.sub {
                return Err(ApiError::bad_request(
                    "cannot start a conversation with yourself",
                ));
            }
            let id = direct_conversation_id(&claims.sub, &peer_id, listing_id.as_deref());
            (
                id,
                CreateConversationRequest {
                    user_id: claims.sub,
                    conversation_id: id.to_string(),
                    kind: "direct".into(),
                    participants: vec![peer_id],
                    listing_id,
                    title: None,
                },
            )
        }
        CreateConversation::Group {
            participants,
            title,
        } => {
            let id = Uuid::now_v7();
            (
                id,
                CreateConversationRequest {
                    user_id: claims.sub,
                    conversation_id: id.to_string(),
                    kind: "group".into(),
                    participants,
                    listing_id: None,
                    title,
                },
            )
        }
    };
    let reply = owner_client(&app, &id)?
        .create_conversation(traced(request))
        .await?;
    Ok(json(reply.into_inner().json))
}

/// Fallback for unknown paths: a JSON 404.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

/// A page size: `default` when absent; 0 is refused (the node's own
/// maximum is checked there).
fn page_limit(limit: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(default),
        Some(0) => Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(query: &str) -> bool {
        match axum::http::Uri::try_from(format!("/x?{query}")) {
            Ok(uri) => Query::<T>::try_from_uri(&uri).is_ok(),
            Err(_) => false,
        }
    }

    #[test]
    fn queries_parse_as_documented() {
        let id = uuid::Uuid::now_v7();
        assert!(parse::<HistoryQuery>(&format!(
            "conversation_id={id}&limit=5"
        )));
        assert!(!parse::<HistoryQuery>("conversation_id=nope"));
        assert!(!parse::<HistoryQuery>(&format!(
            "conversation_id={id}&before_seq=-1"
        )));
        assert!(parse::<ListQuery>(""));
        assert!(page_limit(Some(0), 50).is_err());
        assert_eq!(page_limit(None, 50).unwrap(), 50);
    }

    proptest::proptest! {
        #[test]
        fn any_query_is_parsed_or_refused_without_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse::<HistoryQuery>(&text);
            let _ = parse::<ListQuery>(&text);
            let _ = parse::<crate::media::UploadQuery>(&text);
        }

        #[test]
        fn query_shaped_garbage_is_parsed_or_refused_without_panic(
            key in "(conversation_id|before_seq|limit|token|[a-z]{0,6})",
            value in "[%0-9a-fA-F\\-.&=+]{0,48}",
        ) {
            let text = format!("{key}={value}&limit={value}&before_seq={value}");
            let _ = parse::<HistoryQuery>(&text);
            let _ = parse::<ListQuery>(&text);
            let _ = parse::<crate::media::UploadQuery>(&text);
        }
    }
}
