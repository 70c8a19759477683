//! A fake FCM HTTP v1 server (and its OAuth2 token endpoint) on
//! `127.0.0.1:0`, speaking the real request and response formats, with
//! fault injection. Nodes under test are pointed at it through
//! `push.fcm.base_url` and `push.fcm.token_url` (or the key's `token_uri`).
//!
//! - `POST /token`: the JWT bearer grant
//!   (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…`).
//!   The assertion must be an RS256 JWT signed with the service-account key
//!   [`FakeFcm::service_account`] hands out (generated here), with `iss` the
//!   account, `aud` this endpoint, the firebase.messaging `scope`, and a
//!   valid `exp`. Answers `{"access_token", "expires_in", "token_type"}`, or
//!   `400 {"error": "invalid_grant", ...}`.
//! - `POST /v1/projects/{project}/messages:send` with `Authorization: Bearer`
//!   and `{"message": {...}}`. Answers `{"name": "projects/…/messages/…"}`,
//!   or a `google.rpc.Status` error body with FCM's `errorCode` detail:
//!   401 `UNAUTHENTICATED` (unknown or expired access token), 403
//!   `PERMISSION_DENIED` (another project), 400 `INVALID_ARGUMENT` (a bad
//!   message, or a token marked invalid: with a `BadRequest` violation on
//!   `message.token`), 404 `UNREGISTERED` (a token marked unregistered),
//!   and the injected faults: 429 `QUOTA_EXCEEDED` / 503 `UNAVAILABLE`
//!   (with or without `Retry-After`), 500 `INTERNAL`, and hangs (no answer
//!   before the client's timeout; then a 503 nobody reads). Faults are
//!   drawn before the token is looked at.
//!
//! Every accepted message is recorded with the time it arrived.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json};
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};

/// The project the fake serves.
pub const PROJECT: &str = "turbochat-test";
/// The service account's e-mail.
pub const CLIENT_EMAIL: &str = "push@turbochat-test.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 `RESOURCE_EXHAUSTED` / `QUOTA_EXCEEDED`, with `Retry-After: n`.
    TooManyRequests(Option<u64>),
    /// 503 `UNAVAILABLE`, with `Retry-After: n`.
    Unavailable(Option<u64>),
    /// 500 `INTERNAL`.
    Internal,
    /// No answer for this long (longer than the client's timeout), then a
    /// 503; the message is not accepted.
    Hang(Duration),
}

impl Fault {
    /// Label in [`Stats::faults`].
    pub fn label(&self) -> &'static str {
        match self {
            Fault::TooManyRequests(Some(_)) => "429+retry-after",
            Fault::TooManyRequests(None) => "429",
            Fault::Unavailable(Some(_)) => "503+retry-after",
            Fault::Unavailable(None) => "503",
            Fault::Internal => "500",
            Fault::Hang(_) => "hang",
        }
    }
}

/// Which send requests fail, and how.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Fraction of send requests answered with a fault (0.0 to 1.0).
    pub rate: f64,
    /// Drawn uniformly for each faulty request.
    pub kinds: Vec<Fault>,
}

impl Faults {
    /// `rate` of requests fail, evenly mixed: 429 and 503 with and without
    /// `Retry-After: 1`, 500, and hangs of `hang`.
    pub fn mixed(rate: f64, hang: Duration) -> Self {
        Faults {
            rate,
            kinds: vec![
                Fault::TooManyRequests(Some(1)),
                Fault::TooManyRequests(None),
                Fault::Unavailable(Some(1)),
                Fault::Unavailable(None),
                Fault::Internal,
                Fault::Hang(hang),
            ],
        }
    }
}

/// A message the fake accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// `message.token`.
    pub token: String,
    /// The whole `message` object as sent.
    pub message: Value,
    /// When it arrived.
    pub at: Instant,
}

impl Accepted {
    /// `message.data[key]`.
    pub fn data(&self, key: &str) -> &str {
        self.message["data"][key].as_str().unwrap_or("")
    }
}

/// Counters of what the fake saw.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Token endpoint calls that got a token.
    pub tokens_issued: u64,
    /// Token endpoint calls refused.
    pub token_refusals: u64,
    /// Send requests, whatever their answer.
    pub send_requests: u64,
    /// Send requests answered with an injected fault, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Sends refused for an unknown or expired access token.
    pub unauthenticated: u64,
    /// Sends answered `UNREGISTERED`.
    pub unregistered: u64,
    /// Sends answered `INVALID_ARGUMENT` about the token.
    pub invalid_token: u64,
    /// Sends refused as malformed.
    pub malformed: u64,
}

/// How to start the fake.
#[derive(Debug, Clone)]
pub struct Options {
    /// `expires_in` of the access tokens it issues.
    pub token_lifetime: Duration,
    /// Faults from the start.
    pub faults: Faults,
    /// Seed of the fault draws.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token_lifetime: Duration::from_secs(3600),
            faults: Faults::default(),
            seed: 7,
        }
    }
}

struct Shared {
    public_key: jsonwebtoken::DecodingKey,
    token_url: String,
    token_lifetime: Duration,
    access_tokens: Mutex<HashMap<String, Instant>>,
    faults: Mutex<(Faults, rand::rngs::StdRng)>,
    unregistered: Mutex<HashSet<String>>,
    invalid: Mutex<HashSet<String>>,
    accepted: Mutex<Vec<Accepted>>,
    attempts: Mutex<HashMap<String, u64>>,
    stats: Mutex<Stats>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A running fake FCM. Stops when dropped.
pub struct FakeFcm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    private_pem: String,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// An RSA key pair (PKCS#8 private PEM, SPKI public PEM), made once per
/// test process: 2048-bit key generation is slow in debug builds.
fn key_pair() -> &'static (String, String) {
    static KEYS: OnceLock<(String, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let private =
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate an RSA key");
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encode private key")
            .to_string();
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("encode public key");
        (private_pem, public_pem)
    })
}

impl FakeFcm {
    /// Starts the fake on a free loopback port.
    pub async fn start(options: Options) -> FakeFcm {
        let (private_pem, public_pem) = key_pair().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake FCM");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            public_key: jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes())
                .expect("public key"),
            token_url: format!("http://{addr}/token"),
            token_lifetime: options.token_lifetime,
            access_tokens: Mutex::new(HashMap::new()),
            faults: Mutex::new((
                options.faults,
                rand::rngs::StdRng::seed_from_u64(options.seed),
            )),
            unregistered: Mutex::new(HashSet::new()),
            invalid: Mutex::new(HashSet::new()),
            accepted: Mutex::new(Vec::new()),
            attempts: Mutex::new(HashMap::new()),
            stats: Mutex::new(Stats::default()),
            next_id: std::sync::atomic::AtomicU64::new(1),
        });
        let app = axum::Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/messages:send", post(send))
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeFcm {
            addr,
            shared,
            private_pem,
            stop,
        }
    }

    /// `http://127.0.0.1:port`: the FCM base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        self.shared.token_url.clone()
    }

    /// A service-account key file's content for this fake (as the Firebase
    /// console would download it; `token_uri` is the fake's).
    pub fn service_account(&self) -> Value {
        json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "fake-key-1",
            "private_key": self.private_pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_url(),
        })
    }

    /// Writes [`FakeFcm::service_account`] to `dir/service-account.json`.
    pub fn write_service_account(&self, dir: &Path) -> PathBuf {
        let path = dir.join("service-account.json");
        std::fs::write(&path, self.service_account().to_string()).expect("write key file");
        path
    }

    /// What a node needs to push through this fake (push on, the FCM
    /// backend, a service account written to `dir`, polled every 50 ms).
    pub fn node_env(&self, dir: &Path) -> std::collections::BTreeMap<String, String> {
        let key = self.write_service_account(dir);
        [
            ("TURBOCHAT_OWNER__PUSH_ENABLED", "true".to_string()),
            ("TURBOCHAT_PUSH__BACKEND", "fcm".into()),
            (
                "TURBOCHAT_PUSH__FCM__SERVICE_ACCOUNT_FILE",
                key.display().to_string(),
            ),
            ("TURBOCHAT_PUSH__FCM__BASE_URL", self.base_url()),
            ("TURBOCHAT_PUSH__FCM__TOKEN_URL", self.token_url()),
            ("TURBOCHAT_PUSH__POLL_INTERVAL", "50ms".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Changes the faults from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.lock().unwrap().0 = faults;
    }

    /// From now on `token` is answered `UNREGISTERED` (404).
    pub fn mark_unregistered(&self, token: &str) {
        self.shared
            .unregistered
            .lock()
            .unwrap()
            .insert(token.to_string());
    }

    /// From now on `token` is answered `INVALID_ARGUMENT` on `message.token`.
    pub fn mark_invalid(&self, token: &str) {
        self.shared
            .invalid
            .lock()
            .unwrap()
            .insert(token.to_string());
    }

    /// Every accepted message, in arrival order.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.shared.accepted.lock().unwrap().clone()
    }

    /// Accepted messages for one token.
    pub fn accepted_for(&self, token: &str) -> Vec<Accepted> {
        self.shared
            .accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.token == token)
            .cloned()
            .collect()
    }

    /// How many accepted messages there are.
    pub fn accepted_count(&self) -> usize {
        self.shared.accepted.lock().unwrap().len()
    }

    /// Send requests that named `token` (authenticated and well-formed),
    /// whatever their answer.
    pub fn attempts_for(&self, token: &str) -> u64 {
        self.shared
            .attempts
            .lock()
            .unwrap()
            .get(token)
            .copied()
            .unwrap_or(0)
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().unwrap().clone()
    }

    /// Stops serving.
    pub fn stop(self) {
        let _ = self.stop.send(());
    }
}

/// An error body as Google APIs send it (`google.rpc.Status`), with FCM's
/// `errorCode` detail when given and extra details.
fn rpc_error(
    status: StatusCode,
    rpc_status: &str,
    message: &str,
    fcm_code: Option<&str>,
    mut extra: Vec<Value>,
) -> Response {
    let mut details = Vec::new();
    if let Some(code) = fcm_code {
        details.push(json!({
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": code,
        }));
    }
    details.append(&mut extra);
    let body = json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "status": rpc_status,
        "details": details,
    }});
    (status, Json(body)).into_response()
}

fn bad_request(field: &str, description: &str) -> Response {
    rpc_error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        description,
        Some("INVALID_ARGUMENT"),
        vec![json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": description}],
        })],
    )
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    assertion: String,
}

#[derive(Deserialize)]
struct AssertionClaims {
    scope: String,
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(State(shared): State<Arc<Shared>>, Form(form): Form<TokenForm>) -> Response {
    let refused = |error: &str, description: &str| {
        shared.stats.lock().unwrap().token_refusals += 1;
        oauth_error(error, description)
    };
    if form.grant_type != JWT_BEARER {
        return refused("unsupported_grant_type", "Invalid grant_type");
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[shared.token_url.as_str()]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    let claims = match jsonwebtoken::decode::<AssertionClaims>(
        &form.assertion,
        &shared.public_key,
        &validation,
    ) {
        Ok(data) => data.claims,
        Err(err) => return refused("invalid_grant", &format!("Invalid JWT: {err}")),
    };
    if !claims.scope.split(' ').any(|s| s == SCOPE) {
        return refused("invalid_scope", "The firebase.messaging scope is required");
    }
    let access = format!("ya29.fake-{}", uuid::Uuid::new_v4().simple());
    shared
        .access_tokens
        .lock()
        .unwrap()
        .insert(access.clone(), Instant::now() + shared.token_lifetime);
    shared.stats.lock().unwrap().tokens_issued += 1;
    Json(json!({
        "access_token": access,
        "expires_in": shared.token_lifetime.as_secs(),
        "token_type": "Bearer",
    }))
    .into_response()
}

/// Checks the parts of a v1 message the fake cares about: one target (a
/// token), string-valued `data`, string notification fields. A violation
/// is `(field, description)`.
fn check_message(message: &Value) -> Result<String, (String, &'static str)> {
    let Some(object) = message.as_object() else {
        return Err((
            "message".to_string(),
            "Request contains an invalid argument.",
        ));
    };
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|k| object.contains_key(**k))
        .count();
    if targets != 1 {
        return Err((
            "message".to_string(),
            "Exactly one of token, topic or condition must be specified.",
        ));
    }
    let Some(token) = object.get("token").and_then(Value::as_str) else {
        return Err((
            "message.token".to_string(),
            "The registration token is not a valid FCM registration token",
        ));
    };
    if token.is_empty() {
        return Err((
            "message.token".to_string(),
            "The registration token is not a valid FCM registration token",
        ));
    }
    if let Some(data) = object.get("data") {
        let all_strings = data
            .as_object()
            .is_some_and(|d| d.values().all(Value::is_string));
        if !all_strings {
            return Err((
                "message.data".to_string(),
                "Invalid value at 'message.data': values must be strings",
            ));
        }
    }
    if let Some(reserved) = object.get("data").and_then(Value::as_object).and_then(|d| {
        d.keys().find(|k| {
            ["from", "notification", "message_type"].contains(&k.as_str())
                || k.starts_with("google.")
                || k.starts_with("gcm.")
        })
    }) {
        return Err((
            format!("message.data.{reserved}"),
            "Invalid data payload key: reserved",
        ));
    }
    if let Some(count) = object
        .get("android")
        .and_then(|a| a.get("notification"))
        .and_then(|n| n.get("notification_count"))
    {
        if !count.is_u64() {
            return Err((
                "message.android.notification.notification_count".to_string(),
                "Invalid value: must be an integer",
            ));
        }
    }
    if let Some(headers) = object.get("webpush").and_then(|w| w.get("headers")) {
        if !headers
            .as_object()
            .is_some_and(|h| h.values().all(Value::is_string))
        {
            return Err((
                "message.webpush.headers".to_string(),
                "Invalid value: must be strings",
            ));
        }
    }
    if let Some(notification) = object.get("notification") {
        for field in ["title", "body", "image"] {
            if notification.get(field).is_some_and(|v| !v.is_string()) {
                return Err((
                    format!("message.notification.{field}"),
                    "Invalid value: must be a string",
                ));
            }
        }
    }
    if let Some(headers) = object.get("apns").and_then(|a| a.get("headers")) {
        if !headers
            .as_object()
            .is_some_and(|h| h.values().all(Value::is_string))
        {
            return Err((
                "message.apns.headers".to_string(),
                "Invalid value: must be strings",
            ));
        }
    }
    Ok(token.to_string())
}

async fn send(
    State(shared): State<Arc<Shared>>,
    UrlPath(project): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    shared.stats.lock().unwrap().send_requests += 1;
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let valid = shared
        .access_tokens
        .lock()
        .unwrap()
        .get(bearer)
        .is_some_and(|expires| Instant::now() < *expires);
    if !valid {
        shared.stats.lock().unwrap().unauthenticated += 1;
        return rpc_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            None,
            vec![],
        );
    }
    if project != PROJECT {
        return rpc_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission 'cloudmessaging.messages.create' denied on resource",
            None,
            vec![],
        );
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(_) => {
            shared.stats.lock().unwrap().malformed += 1;
            return bad_request("", "Invalid JSON payload received.");
        }
    };
    let message = request.get("message").cloned().unwrap_or(Value::Null);
    let token = match check_message(&message) {
        Ok(token) => token,
        Err((field, description)) => {
            shared.stats.lock().unwrap().malformed += 1;
            return bad_request(&field, description);
        }
    };
    *shared
        .attempts
        .lock()
        .unwrap()
        .entry(token.clone())
        .or_default() += 1;

    let fault = {
        let mut guard = shared.faults.lock().unwrap();
        let (faults, rng) = &mut *guard;
        if !faults.kinds.is_empty() && rng.random_bool(faults.rate.clamp(0.0, 1.0)) {
            Some(faults.kinds[rng.random_range(0..faults.kinds.len())])
        } else {
            None
        }
    };
    if let Some(fault) = fault {
        *shared
            .stats
            .lock()
            .unwrap()
            .faults
            .entry(fault.label())
            .or_default() += 1;
        return fault_response(fault).await;
    }

    if shared.unregistered.lock().unwrap().contains(&token) {
        shared.stats.lock().unwrap().unregistered += 1;
        return rpc_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Requested entity was not found.",
            Some("UNREGISTERED"),
            vec![],
        );
    }
    if shared.invalid.lock().unwrap().contains(&token) {
        shared.stats.lock().unwrap().invalid_token += 1;
        return bad_request(
            "message.token",
            "The registration token is not a valid FCM registration token",
        );
    }

    let id = shared
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared.accepted.lock().unwrap().push(Accepted {
        token,
        message,
        at: Instant::now(),
    });
    Json(json!({"name": format!("projects/{PROJECT}/messages/0:{id}%fake")})).into_response()
}

async fn fault_response(fault: Fault) -> Response {
    let with_retry_after = |mut response: Response, after: Option<u64>| {
        if let Some(after) = after {
            response
                .headers_mut()
                .insert("retry-after", after.to_string().parse().expect("header"));
        }
        response
    };
    match fault {
        Fault::TooManyRequests(after) => with_retry_after(
            rpc_error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Send requests'.",
                Some("QUOTA_EXCEEDED"),
                vec![],
            ),
            after,
        ),
        Fault::Unavailable(after) => with_retry_after(
            rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                Some("UNAVAILABLE"),
                vec![],
            ),
            after,
        ),
        Fault::Internal => rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Internal error encountered.",
            Some("INTERNAL"),
            vec![],
        ),
        Fault::Hang(duration) => {
            tokio::time::sleep(duration).await;
            rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                Some("UNAVAILABLE"),
                vec![],
            )
        }
    }
}
