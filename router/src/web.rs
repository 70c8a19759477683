//! The browser client, served at `/` from files built into the binary, so
//! running it needs no build step and no files next to the binary.
//!
//! The client is plain HTML, CSS and ES modules under `web/` (tests under
//! `web/tests/` are not served). Every response carries a strong `ETag`
//! computed at compile time, so a reload costs one `304` per file; the
//! page's content security policy allows only this origin, images from any
//! `https:` origin (listing photos, avatars), and what `[web.push]`
//! configures (see [`crate::web_push`]). `/sw.js` is the service worker
//! that shows web push notifications (scope `/`, so it needs no
//! `Service-Worker-Allowed`); `/client-config.json` tells the page the
//! web push settings.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::web_push::WebConfig;

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

/// The page's policy: this origin for scripts, styles, the API and the
/// WebSocket (`'self'` covers `ws:`/`wss:` to the same host); images also
/// from `https:` (listing photos and avatars are operator or identity
/// provider URLs); `scripts` and `connects` are what `[web.push]` adds.
fn content_security_policy(scripts: &[String], connects: &[String]) -> String {
    let with = |base: &str, extra: &[String]| {
        std::iter::once(base)
            .chain(extra.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "default-src 'self'; script-src {}; style-src 'self'; img-src 'self' data: blob: https:; \
         connect-src {}; object-src 'none'; base-uri 'none'; \
         frame-ancestors 'none'; form-action 'none'",
        with("'self'", scripts),
        with("'self'", connects),
    )
}

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
    asset!("/sw.js", "sw.js", JS),
    asset!("/js/api.js", "js/api.js", JS),
    asset!("/js/app.js", "js/app.js", JS),
    asset!("/js/backoff.js", "js/backoff.js", JS),
    asset!("/js/cards.js", "js/cards.js", JS),
    asset!("/js/chat-view.js", "js/chat-view.js", JS),
    asset!("/js/client.js", "js/client.js", JS),
    asset!("/js/connection.js", "js/connection.js", JS),
    asset!("/js/conversation.js", "js/conversation.js", JS),
    asset!("/js/dom.js", "js/dom.js", JS),
    asset!("/js/list-view.js", "js/list-view.js", JS),
    asset!("/js/login-view.js", "js/login-view.js", JS),
    asset!("/js/outbox.js", "js/outbox.js", JS),
    asset!("/js/push.js", "js/push.js", JS),
    asset!("/js/push-view.js", "js/push-view.js", JS),
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

/// `GET /`, `/style.css`, `/js/*.js`, `/sw.js`, ...: the browser client;
/// `GET /client-config.json`: what `config` tells it.
pub fn routes<S: Clone + Send + Sync + 'static>(config: &WebConfig) -> Router<S> {
    let (scripts, connects) = config.csp_sources();
    let csp = HeaderValue::from_str(&content_security_policy(&scripts, &connects))
        .expect("validated origins are header-safe");
    let client_config = bytes::Bytes::from(
        serde_json::to_vec(&config.client_config()).expect("plain strings serialize"),
    );
    let router = Router::new().route(
        "/client-config.json",
        get(move || {
            let body = client_config.clone();
            async move {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    body,
                )
            }
        }),
    );
    ASSETS.iter().fold(router, |router, asset| {
        let csp = csp.clone();
        router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, &csp, &headers) }),
        )
    })
}

fn serve(asset: &'static Asset, csp: &HeaderValue, request: &HeaderMap) -> Response {
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
        headers.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
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
    fn the_service_worker_is_served_at_the_root() {
        // Its scope is the directory it is served from: `/` needs `/sw.js`.
        assert!(ASSETS
            .iter()
            .any(|a| a.path == "/sw.js" && a.content_type == JS));
    }

    #[test]
    fn the_policy_adds_only_what_push_configures() {
        let plain = content_security_policy(&[], &[]);
        assert!(plain.contains("script-src 'self';"), "{plain}");
        assert!(plain.contains("connect-src 'self';"), "{plain}");
        assert!(
            plain.contains("img-src 'self' data: blob: https:;"),
            "{plain}"
        );
        let push = content_security_policy(
            &["https://www.gstatic.com".into()],
            &["https://fcmregistrations.googleapis.com".into()],
        );
        assert!(
            push.contains("script-src 'self' https://www.gstatic.com;"),
            "{push}"
        );
        assert!(
            push.contains("connect-src 'self' https://fcmregistrations.googleapis.com;"),
            "{push}"
        );
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
