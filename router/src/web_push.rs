//! `[web]`: what the browser client is told at `GET /client-config.json`,
//! and what its content security policy must allow for it.
//!
//! Today that is web push only (`[web.push]`): the Firebase web app's
//! settings, the VAPID key of the project's web push certificate, and where
//! the page loads the Firebase JS SDK from. Without the section the client
//! says push is not configured, and the page's policy stays `'self'` only
//! for scripts and connections. With it, the policy allows scripts from the
//! SDK's origin and connections to `connect_src` (Firebase's installation
//! and registration endpoints, which the SDK calls to mint a token), and
//! nothing else.

use serde::{Deserialize, Deserializer, Serialize};
use turbochat_service::config::ConfigError;

/// Where the Firebase JS SDK's ES modules are (`firebase-app.js`,
/// `firebase-messaging.js`) unless `web.push.sdk_url` says otherwise.
pub const DEFAULT_SDK_URL: &str = "https://www.gstatic.com/firebasejs/12.0.0";

/// What the SDK's `getToken` calls: Firebase Installations, then FCM's
/// registration API.
pub const DEFAULT_CONNECT_SRC: [&str; 2] = [
    "https://firebaseinstallations.googleapis.com",
    "https://fcmregistrations.googleapis.com",
];

/// `[web]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Web push through FCM; absent: the client offers no notifications.
    #[serde(default)]
    pub push: Option<WebPushConfig>,
}

/// `[web.push]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushConfig {
    /// The Firebase web app (Firebase console, project settings, "Your
    /// apps"), handed to the SDK's `initializeApp` as it is.
    pub firebase: FirebaseAppConfig,
    /// Public key of the project's web push certificate (Cloud Messaging,
    /// "Web configuration"), base64url: `getToken`'s `vapidKey`.
    pub vapid_key: String,
    /// URL prefix the page `import()`s `firebase-app.js` and
    /// `firebase-messaging.js` from; its origin joins the page's
    /// `script-src`.
    #[serde(default = "default_sdk_url")]
    pub sdk_url: String,
    /// Origins the SDK connects to; they join the page's `connect-src`.
    #[serde(default = "default_connect_src")]
    pub connect_src: Vec<String>,
}

/// `[web.push.firebase]`: snake_case here, camelCase (as the SDK wants it)
/// in `/client-config.json`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all(serialize = "camelCase"))]
pub struct FirebaseAppConfig {
    /// `apiKey`.
    pub api_key: String,
    /// `projectId`.
    pub project_id: String,
    /// `messagingSenderId` (digits; a number in an environment variable is
    /// taken as the string it spells).
    #[serde(deserialize_with = "string_or_number")]
    pub messaging_sender_id: String,
    /// `appId`.
    pub app_id: String,
    /// `authDomain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_domain: Option<String>,
    /// `storageBucket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bucket: Option<String>,
    /// `measurementId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement_id: Option<String>,
}

fn default_sdk_url() -> String {
    DEFAULT_SDK_URL.to_string()
}

fn default_connect_src() -> Vec<String> {
    DEFAULT_CONNECT_SRC.iter().map(|s| s.to_string()).collect()
}

/// `TURBOCHAT_WEB__PUSH__FIREBASE__MESSAGING_SENDER_ID=905412345678`
/// arrives as a number.
fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Spelt {
        Text(String),
        Number(u64),
    }
    Ok(match Spelt::deserialize(deserializer)? {
        Spelt::Text(text) => text,
        Spelt::Number(number) => number.to_string(),
    })
}

/// `GET /client-config.json`: `{"push": null}` or `{"push": {"firebase":
/// {...}, "vapid_key", "sdk_url"}}`.
#[derive(Debug, Serialize)]
pub struct ClientConfig<'a> {
    /// Web push settings, when configured.
    pub push: Option<ClientPush<'a>>,
}

/// The page's part of `[web.push]` (not the CSP's `connect_src`).
#[derive(Debug, Serialize)]
pub struct ClientPush<'a> {
    /// For `initializeApp`.
    pub firebase: &'a FirebaseAppConfig,
    /// For `getToken`.
    pub vapid_key: &'a str,
    /// Without a trailing `/`.
    pub sdk_url: &'a str,
}

impl WebConfig {
    /// Checks values serde cannot; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(push) = &self.push else {
            return Ok(());
        };
        let firebase = &push.firebase;
        for (key, value) in [
            ("web.push.firebase.api_key", &firebase.api_key),
            ("web.push.firebase.project_id", &firebase.project_id),
            (
                "web.push.firebase.messaging_sender_id",
                &firebase.messaging_sender_id,
            ),
            ("web.push.firebase.app_id", &firebase.app_id),
        ] {
            if value.trim().is_empty() || value.chars().any(char::is_control) {
                return Err(ConfigError::key(
                    key,
                    "must be set, without control characters",
                ));
            }
        }
        let key = &push.vapid_key;
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
        {
            return Err(ConfigError::key(
                "web.push.vapid_key",
                "must be the web push certificate's public key, base64url",
            ));
        }
        origin(&push.sdk_url).map_err(|why| ConfigError::key("web.push.sdk_url", why))?;
        for (i, source) in push.connect_src.iter().enumerate() {
            origin(source)
                .map_err(|why| ConfigError::key(&format!("web.push.connect_src[{i}]"), why))?;
        }
        Ok(())
    }

    /// What `/client-config.json` answers.
    pub fn client_config(&self) -> ClientConfig<'_> {
        ClientConfig {
            push: self.push.as_ref().map(|push| ClientPush {
                firebase: &push.firebase,
                vapid_key: &push.vapid_key,
                sdk_url: push.sdk_url.trim_end_matches('/'),
            }),
        }
    }

    /// Origins to add to the page's `script-src` and `connect-src`
    /// (validated: safe to write into the policy).
    pub fn csp_sources(&self) -> (Vec<String>, Vec<String>) {
        let Some(push) = &self.push else {
            return (Vec::new(), Vec::new());
        };
        let scripts = origin(&push.sdk_url).into_iter().collect();
        let connects = push
            .connect_src
            .iter()
            .filter_map(|s| origin(s).ok())
            .collect();
        (scripts, connects)
    }
}

/// `https://host[:port]` of an `https://` URL, or why it is not one. The
/// host may hold letters, digits, `-` and `.` only, so the origin can go
/// into a policy as it is.
pub fn origin(url: &str) -> Result<String, &'static str> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("must be an https:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if !host_ok || !port_ok {
        return Err("must be an https:// URL with a plain host name (letters, digits, - and .)");
    }
    if rest[authority.len()..].contains(|c: char| c.is_whitespace() || c == ';' || c == ',') {
        return Err("may not hold spaces, ';' or ','");
    }
    Ok(format!("https://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push() -> WebPushConfig {
        WebPushConfig {
            firebase: FirebaseAppConfig {
                api_key: "AIza-test".into(),
                project_id: "turbocar".into(),
                messaging_sender_id: "905412345678".into(),
                app_id: "1:905412345678:web:abc".into(),
                auth_domain: None,
                storage_bucket: None,
                measurement_id: None,
            },
            vapid_key: "BExample_key-0123".into(),
            sdk_url: DEFAULT_SDK_URL.into(),
            connect_src: default_connect_src(),
        }
    }

    #[test]
    fn origins_are_https_with_plain_hosts() {
        assert_eq!(
            origin("https://www.gstatic.com/firebasejs/12.0.0").unwrap(),
            "https://www.gstatic.com"
        );
        assert_eq!(
            origin("https://sdk.example.test:8443/x/").unwrap(),
            "https://sdk.example.test:8443"
        );
        assert!(origin("http://www.gstatic.com/x").is_err());
        assert!(origin("https://evil.test; script-src *").is_err());
        assert!(origin("https://a.test/x;y").is_err());
        assert!(origin("https://user@a.test/").is_err());
        assert!(origin("https://").is_err());
        assert!(origin("https://a.test:/").is_err());
    }

    #[test]
    fn without_push_nothing_is_added_and_the_client_is_told_so() {
        let config = WebConfig::default();
        config.validate().unwrap();
        assert_eq!(config.csp_sources(), (vec![], vec![]));
        assert_eq!(
            serde_json::to_value(config.client_config()).unwrap(),
            serde_json::json!({"push": null})
        );
    }

    #[test]
    fn push_adds_the_sdk_origin_and_firebase_endpoints_only() {
        let config = WebConfig { push: Some(push()) };
        config.validate().unwrap();
        let (scripts, connects) = config.csp_sources();
        assert_eq!(scripts, vec!["https://www.gstatic.com".to_string()]);
        assert_eq!(connects, default_connect_src());
        assert_eq!(
            serde_json::to_value(config.client_config()).unwrap(),
            serde_json::json!({"push": {
                "firebase": {"apiKey": "AIza-test", "projectId": "turbocar",
                             "messagingSenderId": "905412345678",
                             "appId": "1:905412345678:web:abc"},
                "vapid_key": "BExample_key-0123",
                "sdk_url": "https://www.gstatic.com/firebasejs/12.0.0",
            }})
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut bad = push();
        bad.vapid_key = "not a key".into();
        let err = WebConfig { push: Some(bad) }.validate().unwrap_err();
        assert!(err.to_string().contains("web.push.vapid_key"), "{err}");
        let mut bad = push();
        bad.sdk_url = "http://cdn.test/sdk".into();
        let err = WebConfig { push: Some(bad) }.validate().unwrap_err();
        assert!(err.to_string().contains("web.push.sdk_url"), "{err}");
        let mut bad = push();
        bad.connect_src.push("*".into());
        let err = WebConfig { push: Some(bad) }.validate().unwrap_err();
        assert!(err.to_string().contains("web.push.connect_src[2]"), "{err}");
        let mut bad = push();
        bad.firebase.app_id = " ".into();
        let err = WebConfig { push: Some(bad) }.validate().unwrap_err();
        assert!(
            err.to_string().contains("web.push.firebase.app_id"),
            "{err}"
        );
    }
}
