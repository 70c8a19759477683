//! The browser client, served at `/` from files built into the binary, so
//! running it needs no build step and no files next to the binary.
//!
//! The client is plain HTML, CSS and ES modules under `web/` (tests under
//! `web/tests/` are not served). Every response carries a strong `ETag`
//! computed at compile time, so a reload costs one `304` per file; the
//! page's content security policy allows only this origin.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One file of the client.
struct Asset {
    /// URL path.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// `"<hash>"`, computed at compile time from `body`.
    etag: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Only this origin: scripts, styles, images, and the API and WebSocket
/// (`'self'` covers `ws:`/`wss:` to the same host).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'none'";

macro_rules! asset {
    ($path:literal, $file:literal, $content_type:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!("../../web/", $file));
        const TAG: [u8; 18] = etag(BODY);
        Asset {
            path: $path,
            content_type: $content_type,
            body: BODY,
            // Quotes and hex digits: always UTF-8.
            etag: match std::str::from_utf8(&TAG) {
                Ok(tag) => tag,
                Err(_) => panic!("an etag is ASCII"),
            },
        }
    }};
}

/// Every served file. `web/js/*.js` must all be here (a test checks).
const ASSETS: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("/index.html", "index.html", HTML),
    asset!("/style.css", "style.css", CSS),
    asset!("/favicon.svg", "favicon.svg", SVG),
    asset!("/js/api.js", "js/api.js", JS),
    asset!("/js/app.js", "js/app.js", JS),
    asset!("/js/backoff.js", "js/backoff.js", JS),
    asset!("/js/chat-view.js", "js/chat-view.js", JS),
    asset!("/js/client.js", "js/client.js", JS),
    asset!("/js/connection.js", "js/connection.js", JS),
    asset!("/js/conversation.js", "js/conversation.js", JS),
    asset!("/js/dom.js", "js/dom.js", JS),
    asset!("/js/list-view.js", "js/list-view.js", JS),
    asset!("/js/login-view.js", "js/login-view.js", JS),
    asset!("/js/outbox.js", "js/outbox.js", JS),
    asset!("/js/session.js", "js/session.js", JS),
    asset!("/js/status-view.js", "js/status-view.js", JS),
];

/// `"` + 16 hex digits of FNV-1a 64 + `"`.
const fn etag(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    let hex = b"0123456789abcdef";
    let mut tag = [b'"'; 18];
    let mut j = 0;
    while j < 16 {
        tag[1 + j] = hex[((hash >> (60 - 4 * j)) & 0xf) as usize];
        j += 1;
    }
    tag
}

/// `GET /`, `/style.css`, `/js/*.js`, ...: the browser client.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, &headers) }),
        )
    })
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = HeaderValue::from_static(asset.etag);
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    // Revalidate every time (cheap: a 304), so a new router version is
    // picked up on the next load.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type == HTML {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == asset.etag || tag.trim() == "*");
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_module_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/js");
        for entry in std::fs::read_dir(&dir).expect("web/js exists") {
            let name = entry.expect("readable").file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".js") {
                let path = format!("/js/{name}");
                assert!(
                    ASSETS.iter().any(|a| a.path == path),
                    "web/js/{name} is not in web.rs ASSETS"
                );
            }
        }
    }

    #[test]
    fn etags_differ_by_content_and_look_like_etags() {
        assert_ne!(etag(b"a"), etag(b"b"));
        for asset in ASSETS {
            assert_eq!(asset.etag.len(), 18);
            assert!(asset.etag.starts_with('"') && asset.etag.ends_with('"'));
        }
    }
}
