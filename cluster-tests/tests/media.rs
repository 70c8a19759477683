//! Media upload and fetch through a real router and node (issue: realtime,
//! media), on the local-directory default and on a real S3-compatible
//! server (moto, from PyPI) started by the test.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use harness::tokens::valid;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);
/// The test routers accept at most this much.
const LIMIT: usize = 64 * 1024;

/// A small but real PNG (a 1x1 image) padded to `len` bytes with a text
/// chunk, so sizes are easy to choose.
fn png(len: usize) -> Vec<u8> {
    let mut bytes = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    // IHDR: 1x1, 8-bit RGBA.
    bytes.extend_from_slice(&[0, 0, 0, 13, b'I', b'H', b'D', b'R']);
    bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0]);
    bytes.extend_from_slice(&[0x1f, 0x15, 0xc4, 0x89]);
    while bytes.len() < len {
        bytes.push(b'x');
    }
    bytes
}

struct Media {
    /// Whether the router serves the bytes itself (the local backend) rather
    /// than redirecting to the object store.
    serves_bytes: bool,
    cluster: Cluster,
    api: Api,
    http: reqwest::Client,
    base: String,
    conversation: String,
}

impl Media {
    async fn start(router_env: BTreeMap<String, String>) -> Self {
        let serves_bytes = !router_env.contains_key("TURBOCHAT_MEDIA__BACKEND");
        let mut env = router_env;
        env.insert("TURBOCHAT_MEDIA__MAX_BYTES".into(), LIMIT.to_string());
        let options = Options {
            router_env: env,
            ..Options::default()
        };
        let cluster = Cluster::start(TestStore::sqlite(), options).await;
        let base = cluster.router_url(0);
        let api = Api::new(&base);
        let conversation = api.create_direct(&valid("alice"), "bob", None).await;
        Media {
            serves_bytes,
            cluster,
            api,
            http: reqwest::Client::new(),
            base,
            conversation,
        }
    }

    async fn upload(&self, user: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .http
            .post(format!(
                "{}/media?conversation_id={}",
                self.base, self.conversation
            ))
            .bearer_auth(valid(user))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Uploads without a Content-Length (chunked), as a phone streaming a
    /// file of unknown size does.
    async fn upload_streamed(&self, user: &str, body: Vec<u8>) -> u16 {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(4096).map(|c| Ok(c.to_vec())).collect();
        self.http
            .post(format!(
                "{}/media?conversation_id={}",
                self.base, self.conversation
            ))
            .bearer_auth(valid(user))
            .header("content-type", "image/png")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn fetch(&self, user: &str, url: &str) -> (u16, Vec<u8>, String) {
        let response = self
            .http
            .get(format!("{}{url}", self.base))
            .bearer_auth(valid(user))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (
            status,
            response.bytes().await.unwrap().to_vec(),
            content_type,
        )
    }

    /// The whole story, whatever the backend; `stored` counts the objects.
    async fn check(&self, stored: impl AsyncFn() -> usize) {
        let image = png(20_000);
        let (status, uploaded) = self.upload("alice", "image/png", image.clone()).await;
        assert_eq!(status, 201, "{uploaded}");
        let key = uploaded["media_key"].as_str().unwrap().to_string();
        assert!(key.starts_with(&format!("{}/", self.conversation)), "{key}");
        assert_eq!(uploaded["content_type"], "image/png");
        assert_eq!(uploaded["size"], image.len());
        assert_eq!(stored().await, 1);

        // Sent in a message, received by the other participant, fetched.
        let mut bob = WsClient::connect(&self.base, &valid("bob")).await.unwrap();
        bob.subscribe(&self.conversation, Some(0)).await;
        let mut alice = WsClient::connect(&self.base, &valid("alice"))
            .await
            .unwrap();
        alice
            .send(json!({"type": "send", "conversation_id": self.conversation,
                "client_msg_id": "photo-1", "kind": "media", "body": "", "media_key": key}))
            .await;
        let ack = alice.answer("photo-1", T).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        // A key uploaded for another conversation cannot be sent here.
        let foreign = format!("{}/{}.png", uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        alice
            .send(json!({"type": "send", "conversation_id": self.conversation,
                "client_msg_id": "photo-2", "kind": "media", "body": "", "media_key": foreign}))
            .await;
        let refused = alice.answer("photo-2", T).await;
        assert_eq!(refused["code"], "invalid_argument", "{refused}");
        // Nor a key of the right shape that was never uploaded, nor one that
        // walks out of the conversation: only a recorded upload is taken.
        let never = format!("{}/{}.png", self.conversation, uuid::Uuid::now_v7());
        let walking = format!("{}/../{}", self.conversation, key);
        for (id, bad) in [("photo-3", never), ("photo-4", walking)] {
            alice
                .send(json!({"type": "send", "conversation_id": self.conversation,
                    "client_msg_id": id, "kind": "media", "body": "", "media_key": bad}))
                .await;
            let refused = alice.answer(id, T).await;
            assert_eq!(refused["code"], "invalid_argument", "{bad}: {refused}");
        }
        let message = bob.expect("message", T).await;
        assert_eq!(message["kind"], "media");
        assert_eq!(message["media_key"], key.as_str());
        let url = uploaded["url"].as_str().unwrap();
        let (status, bytes, content_type) = self.fetch("bob", url).await;
        assert_eq!(status, 200);
        assert_eq!(bytes, image, "bob gets the very bytes");
        assert_eq!(content_type, "image/png");
        if self.serves_bytes {
            // Bytes from users, served from the app's origin: never sniffed
            // into a page, never scripted.
            let response = self
                .http
                .get(format!("{}{url}", self.base))
                .bearer_auth(valid("bob"))
                .send()
                .await
                .unwrap();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            assert_eq!(header("x-content-type-options"), "nosniff");
            assert!(header("content-security-policy").contains("sandbox"));
            assert!(header("content-disposition").starts_with("inline; filename="));
        }

        // Not a participant: no upload, no download (answered as for a
        // conversation that does not exist).
        let (status, body, _) = self.fetch("carol", url).await;
        assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
        let (status, body) = self.upload("carol", "image/png", png(100)).await;
        assert_eq!(status, 404, "{body}");
        // No media under a key that was never stored.
        let missing = format!("/media/{}/{}.png", self.conversation, uuid::Uuid::now_v7());
        assert_eq!(self.fetch("bob", &missing).await.0, 404);

        // Too large, declared or streamed: 413 and nothing stored.
        let (status, body) = self.upload("alice", "image/png", png(LIMIT + 1)).await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(self.upload_streamed("alice", png(LIMIT * 2)).await, 413);
        // A text file calling itself a JPEG: 415, nothing stored.
        let text = b"This is not a photo of a car, it is a text file.".to_vec();
        let (status, body) = self.upload("alice", "image/jpeg", text).await;
        assert_eq!(status, 415, "{body}");
        assert_eq!(stored().await, 1, "refused uploads leave nothing behind");
    }
}

fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test]
async fn media_on_the_local_directory() {
    let media = Media::start(BTreeMap::new()).await;
    let dir = media.cluster.media_dir();
    media.check(async || files_under(&dir)).await;
    let _ = &media.api;
}

/// A moto S3 server on a free port, stopped on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn moto() -> Option<Moto> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(err) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "moto_server is required in CI (pip install 'moto[server]'): {err}"
            );
            eprintln!("skipping the S3 half: moto_server not installed ({err})");
            return None;
        }
    };
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    harness::eventually("moto up", Duration::from_secs(30), || async {
        http.get(&moto.url).send().await.ok().map(|_| ())
    })
    .await;
    Some(moto)
}

#[tokio::test]
async fn media_on_s3() {
    let Some(moto) = moto().await else { return };
    let http = reqwest::Client::new();
    let bucket = format!("media-{}", uuid::Uuid::new_v4().simple());
    let created = http
        .put(format!("{}/{bucket}", moto.url))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "bucket: {}",
        created.status()
    );
    let env: BTreeMap<String, String> = [
        ("TURBOCHAT_MEDIA__BACKEND", "s3".to_string()),
        ("TURBOCHAT_MEDIA__S3__BUCKET", bucket.clone()),
        ("TURBOCHAT_MEDIA__S3__ENDPOINT", moto.url.clone()),
        ("TURBOCHAT_MEDIA__S3__ALLOW_HTTP", "true".into()),
        ("TURBOCHAT_MEDIA__S3__ACCESS_KEY_ID", "test".into()),
        ("TURBOCHAT_MEDIA__S3__SECRET_ACCESS_KEY", "test".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let media = Media::start(env).await;
    let list = format!("{}/{bucket}?list-type=2", moto.url);
    media
        .check(async || {
            let xml = http.get(&list).send().await.unwrap().text().await.unwrap();
            xml.matches("<Key>").count()
        })
        .await;
}

/// An upload over the default 10 MiB limit, declared by its Content-Length
/// and sent whole without waiting for `100 Continue` (as most HTTP clients
/// do): the client reads a 413, not a connection reset.
#[tokio::test]
async fn an_upload_over_the_default_limit_is_answered_413() {
    let cluster = Cluster::start(TestStore::sqlite(), Options::default()).await;
    let base = cluster.router_url(0);
    let conversation = Api::new(&base)
        .create_direct(&valid("alice"), "bob", None)
        .await;
    let response = reqwest::Client::new()
        .post(format!("{base}/media?conversation_id={conversation}"))
        .bearer_auth(valid("alice"))
        .header("content-type", "image/png")
        .body(png(11 * 1024 * 1024))
        .send()
        .await
        .expect("an answer, not a reset");
    assert_eq!(response.status().as_u16(), 413);
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["code"], "too_large", "{body}");
    assert_eq!(files_under(&cluster.media_dir()), 0);
}
