//! Media: `POST /media` streams an upload into object storage, `GET
//! /media/{conversation_id}/{name}` gives it back — to participants of that
//! conversation only.
//!
//! Objects live under `{conversation_id}/{uuid}.{ext}`; that path is the
//! `media_key` a `send` carries. The conversation in the key is what access
//! is checked against (by the conversation's owner node), so a key cannot be
//! replayed into another conversation to reach its media.
//!
//! The storage is the `object_store` crate: a local directory in the
//! embedded default (the router serves the bytes), S3 or MinIO in
//! production (the router answers with a redirect to a presigned URL).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::signer::Signer;
use object_store::{Attribute, ObjectStore, PutMultipartOptions, WriteMultipart};
use serde::{Deserialize, Serialize};
use turbochat_protocol::ids::ConversationId;
use turbochat_protocol::link::{ParticipantRequest, RecordMediaRequest};
use turbochat_protocol::ErrorCode;
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::http::ApiError;
use crate::App;

/// `[media]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Where objects go.
    #[serde(default)]
    pub backend: Backend,
    /// Directory of the `local` backend (created if missing).
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Largest upload accepted, in bytes (413 past it).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Content types accepted, checked against the bytes (415 otherwise).
    #[serde(default = "default_allowed")]
    pub allowed_types: Vec<String>,
    /// The `s3` backend.
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// Lifetime of presigned download URLs (`s3`).
    #[serde(default = "default_url_ttl", with = "humantime_serde")]
    pub url_ttl: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            backend: Backend::default(),
            dir: default_dir(),
            max_bytes: default_max_bytes(),
            allowed_types: default_allowed(),
            s3: None,
            url_ttl: default_url_ttl(),
        }
    }
}

/// The object store behind media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A local directory (embedded default).
    #[default]
    Local,
    /// S3 or an S3-compatible server (MinIO).
    S3,
}

/// `[media.s3]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Region (any value for MinIO).
    #[serde(default = "default_region")]
    pub region: String,
    /// Endpoint for S3-compatible servers; AWS when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Access key; the AWS environment/instance credentials when absent.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret key.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Allow a plain-HTTP endpoint (local MinIO).
    #[serde(default)]
    pub allow_http: bool,
}

fn default_dir() -> PathBuf {
    PathBuf::from("data/media")
}
fn default_max_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_allowed() -> Vec<String> {
    [
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "video/mp4",
    ]
    .map(String::from)
    .to_vec()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_url_ttl() -> Duration {
    Duration::from_secs(300)
}

/// Media storage could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The local directory cannot be created or used.
    #[error("media directory {dir}: {source}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The object store rejected its configuration.
    #[error("media store: {0}")]
    Store(#[from] object_store::Error),
    /// `backend = "s3"` without `[media.s3]`.
    #[error("media.backend is \"s3\" but [media.s3] is missing")]
    MissingS3,
}

/// The configured store.
#[derive(Clone)]
pub struct Media {
    config: Arc<MediaConfig>,
    store: Arc<dyn ObjectStore>,
    /// Presigns download URLs (S3); `None` means the router serves bytes.
    signer: Option<Arc<dyn Signer>>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("backend", &self.config.backend)
            .finish()
    }
}

impl Media {
    /// Opens the configured store.
    pub fn open(config: MediaConfig) -> Result<Self, MediaError> {
        let (store, signer): (Arc<dyn ObjectStore>, Option<Arc<dyn Signer>>) = match config.backend
        {
            Backend::Local => {
                std::fs::create_dir_all(&config.dir).map_err(|source| MediaError::Dir {
                    dir: config.dir.clone(),
                    source,
                })?;
                (
                    Arc::new(LocalFileSystem::new_with_prefix(&config.dir)?),
                    None,
                )
            }
            Backend::S3 => {
                let s3 = config.s3.as_ref().ok_or(MediaError::MissingS3)?;
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.allow_http);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let (Some(key), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                    builder = builder
                        .with_access_key_id(key)
                        .with_secret_access_key(secret);
                }
                let s3 = Arc::new(builder.build()?);
                (s3.clone(), Some(s3))
            }
        };
        Ok(Media {
            config: Arc::new(config),
            store,
            signer,
        })
    }
}

/// `POST /media` query.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    conversation_id: ConversationId,
}

/// What an upload returns.
#[derive(Debug, Serialize)]
pub struct Uploaded {
    /// Put this in a `send` with `kind: "media"`.
    pub media_key: String,
    /// Where participants fetch it (on this router).
    pub url: String,
    /// The type found in the bytes.
    pub content_type: String,
    /// Bytes stored.
    pub size: u64,
}

/// Bytes read before the type is decided.
const SNIFF_BYTES: usize = 64;
/// Upload part size (S3's minimum for all but the last part is 5 MiB).
const PART_BYTES: usize = 5 * 1024 * 1024;

/// `POST /media?conversation_id=`: the body is the file.
pub async fn upload(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut stream = body.into_data_stream();
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A client that waits for `100 Continue` sends nothing until we read:
    // a refusal needs no draining then (reading would invite the body).
    let expects_continue = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let stored = match query {
        Ok(Query(query)) => {
            store_upload(&app, &claims.sub, query, declared_length, &mut stream).await
        }
        Err(e) => Err(ApiError::bad_request(e.body_text())),
    };
    match stored {
        Ok(uploaded) => Ok((StatusCode::CREATED, Json(uploaded)).into_response()),
        Err(err) => {
            if !expects_continue {
                let bound = app.inner.media.config.max_bytes.saturating_mul(2) + DRAIN_SLACK;
                drain(&mut stream, bound).await;
            }
            Err(err)
        }
    }
}

/// Bytes of a refused upload read and dropped before answering, beyond
/// twice the size limit (an upload a little over the limit is drained
/// whole, so its client reads the 413).
const DRAIN_SLACK: u64 = 1024 * 1024;
/// Time spent on that at most.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads and drops what is left of a refused upload, up to `bound` bytes,
/// so a client still sending reads our answer (413, 415, 404...) rather
/// than a connection reset: closing a socket with unread data resets it.
/// Past the bound the connection is closed anyway.
async fn drain(stream: &mut axum::body::BodyDataStream, bound: u64) {
    let mut left = bound;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// Checks and stores one upload.
async fn store_upload(
    app: &App,
    user: &str,
    query: UploadQuery,
    declared_length: Option<u64>,
    stream: &mut axum::body::BodyDataStream,
) -> Result<Uploaded, ApiError> {
    let media = &app.inner.media;
    let limit = media.config.max_bytes;
    if declared_length.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    check_participant(app, user, query.conversation_id).await?;
    // Read enough to tell what the bytes are before storing any.
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let mut rest = Vec::new();
    while head.len() < SNIFF_BYTES {
        match stream.next().await {
            Some(chunk) => {
                let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload: {e}")))?;
                let take = (SNIFF_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
                rest.extend_from_slice(&chunk[take..]);
            }
            None => break,
        }
    }
    if head.is_empty() {
        return Err(ApiError::bad_request("empty upload"));
    }
    let kind = infer::get(&head)
        .filter(|kind| {
            media
                .config
                .allowed_types
                .iter()
                .any(|t| t == kind.mime_type())
        })
        .ok_or_else(|| {
            metrics::counter!("turbochat_media_rejected_total", "reason" => "type").increment(1);
            ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "unsupported media type; allowed: {}",
                    media.config.allowed_types.join(", ")
                ),
            )
        })?;

    let key = format!(
        "{}/{}.{}",
        query.conversation_id,
        Uuid::now_v7(),
        kind.extension()
    );
    let path = object_store::path::Path::from(key.as_str());
    let mut options = PutMultipartOptions::default();
    if media.signer.is_some() {
        // S3 keeps the type and serves it with presigned downloads (the
        // local backend stores no attributes: the extension tells).
        options
            .attributes
            .insert(Attribute::ContentType, kind.mime_type().into());
    }
    let upload = media
        .store
        .put_multipart_opts(&path, options)
        .await
        .map_err(store_error)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut size = (head.len() + rest.len()) as u64;
    writer.write(&head);
    writer.write(&rest);
    let outcome: Result<(), ApiError> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large(limit));
            }
            writer.wait_for_capacity(2).await.map_err(store_error)?;
            writer.write(&chunk);
        }
        if size > limit {
            return Err(too_large(limit));
        }
        Ok(())
    }
    .await;
    if let Err(err) = outcome {
        if let Err(abort) = writer.abort().await {
            tracing::warn!(%abort, "aborting a refused upload failed");
        }
        return Err(err);
    }
    writer.finish().await.map_err(store_error)?;
    // Only a recorded upload may be sent: the owner checks `send`s against it.
    crate::http::owner_client(app, &query.conversation_id)?
        .record_media(RecordMediaRequest {
            user_id: user.to_string(),
            conversation_id: query.conversation_id.to_string(),
            media_key: key.clone(),
            content_type: kind.mime_type().to_string(),
            size,
        })
        .await?;
    metrics::counter!("turbochat_media_uploaded_total").increment(1);
    metrics::counter!("turbochat_media_uploaded_bytes_total").increment(size);
    tracing::info!(conversation_id = %query.conversation_id, size, content_type = kind.mime_type(), "media stored");
    Ok(Uploaded {
        url: format!("/media/{key}"),
        media_key: key,
        content_type: kind.mime_type().to_string(),
        size,
    })
}

/// `GET /media/{conversation_id}/{name}` (token in `Authorization: Bearer`
/// or `?token=`, so an `<img>` can show it).
pub async fn fetch(
    State(app): State<App>,
    Authenticated(claims): Authenticated,
    Path((conversation, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let conversation: ConversationId = conversation.parse().map_err(|_| not_found())?;
    if !valid_name(&name) {
        return Err(not_found());
    }
    check_participant(&app, &claims.sub, conversation).await?;
    let media = &app.inner.media;
    let path = object_store::path::Path::from(format!("{conversation}/{name}"));
    if let Some(signer) = &media.signer {
        // Existence first: a presigned URL for nothing would be a 404 later.
        media.store.head(&path).await.map_err(store_error)?;
        let url = signer
            .signed_url(axum::http::Method::GET, &path, media.config.url_ttl)
            .await
            .map_err(store_error)?;
        return Ok(Redirect::temporary(url.as_str()).into_response());
    }
    let object = media.store.get(&path).await.map_err(store_error)?;
    let size = object.meta.size;
    let content_type = name
        .rsplit_once('.')
        .and_then(|(_, ext)| mime_of(ext))
        .unwrap_or("application/octet-stream");
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CACHE_CONTROL, "private, max-age=3600".to_string()),
            // User bytes served from the app's origin: never sniffed into
            // HTML, never scripted, even when opened on their own (a
            // GIF/HTML polyglot stays a picture).
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; img-src 'self'; media-src 'self'; sandbox".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(object.into_stream()),
    )
        .into_response())
}

async fn check_participant(
    app: &App,
    user: &str,
    conversation: ConversationId,
) -> Result<(), ApiError> {
    crate::http::owner_client(app, &conversation)?
        .check_participant(ParticipantRequest {
            user_id: user.to_string(),
            conversation_id: conversation.to_string(),
        })
        .await?;
    Ok(())
}

/// `{uuid}.{ext}` only: nothing that could walk out of the conversation.
fn valid_name(name: &str) -> bool {
    match name.split_once('.') {
        Some((id, ext)) => {
            Uuid::parse_str(id).is_ok()
                && !ext.is_empty()
                && ext.len() <= 8
                && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        }
        None => false,
    }
}

fn mime_of(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "jpg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "pdf" => "application/pdf",
        "mov" => "video/quicktime",
        "heic" => "image/heic",
        _ => return None,
    })
}

fn too_large(limit: u64) -> ApiError {
    metrics::counter!("turbochat_media_rejected_total", "reason" => "size").increment(1);
    ApiError::new(
        ErrorCode::TooLarge,
        format!("upload is larger than {limit} bytes"),
    )
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such media")
}

fn store_error(err: object_store::Error) -> ApiError {
    match err {
        object_store::Error::NotFound { .. } => not_found(),
        other => {
            tracing::error!(err = %other, "media store failed");
            ApiError::new(ErrorCode::Unavailable, "media storage unavailable; retry")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_conversation() {
        assert!(valid_name("0192f3a0-0000-7000-8000-000000000000.jpg"));
        assert!(!valid_name("../etc/passwd"));
        assert!(!valid_name("0192f3a0-0000-7000-8000-000000000000"));
        assert!(!valid_name("0192f3a0-0000-7000-8000-000000000000.j/g"));
        assert!(!valid_name("x.jpg"));
    }
}
