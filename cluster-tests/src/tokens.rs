//! Dev tokens as `configs/dev.toml` accepts them, and broken variants.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

/// The dev secret from `configs/dev.toml`.
pub const DEV_SECRET: &str = "dev-secret-change-me-0123456789abcdef";

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: i64,
    nbf: i64,
    iat: i64,
    iss: &'a str,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    picture: Option<&'a str>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Ways to make a token wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// A valid token.
    None,
    /// Signed with another secret.
    BadSignature,
    /// Expired an hour ago.
    Expired,
    /// Audience `someone-else`.
    WrongAudience,
    /// Issuer `someone-else`.
    WrongIssuer,
    /// Valid only from an hour from now.
    NotYetValid,
    /// `alg: none`, no signature.
    AlgNone,
}

/// A token for `sub`, valid for an hour unless `flaw` says otherwise.
pub fn token(sub: &str, flaw: Flaw) -> String {
    let now = now();
    let claims = Claims {
        sub,
        exp: if flaw == Flaw::Expired {
            now - 3600
        } else {
            now + 3600
        },
        nbf: if flaw == Flaw::NotYetValid {
            now + 3600
        } else {
            now - 60
        },
        iat: now,
        iss: if flaw == Flaw::WrongIssuer {
            "someone-else"
        } else {
            "turbocar"
        },
        aud: if flaw == Flaw::WrongAudience {
            "someone-else"
        } else {
            "turbochat"
        },
        name: None,
        picture: None,
    };
    if flaw == Flaw::AlgNone {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64(serde_json::to_string(&claims).unwrap().as_bytes());
        return format!("{header}.{payload}.");
    }
    let secret = if flaw == Flaw::BadSignature {
        "not-the-secret-not-the-secret-not-the-secret"
    } else {
        DEV_SECRET
    };
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode token")
}

/// A token for `sub` whose `exp` is `seconds` from now (negative: in the
/// past, yet within the routers' 30 s leeway, so it is accepted and the
/// session learns at once that it expired).
pub fn expiring(sub: &str, seconds: i64) -> String {
    let now = now();
    let claims = Claims {
        sub,
        exp: now + seconds,
        nbf: now - 60,
        iat: now - 60,
        iss: "turbocar",
        aud: "turbochat",
        name: None,
        picture: None,
    };
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(DEV_SECRET.as_bytes()),
    )
    .expect("encode token")
}

/// A valid token for `sub`.
pub fn valid(sub: &str) -> String {
    token(sub, Flaw::None)
}

/// A valid token for `sub` whose `name` and `picture` claims carry a
/// profile, as the car app's tokens do.
pub fn with_profile(sub: &str, name: &str, picture: Option<&str>) -> String {
    let now = now();
    let claims = Claims {
        sub,
        exp: now + 3600,
        nbf: now - 60,
        iat: now,
        iss: "turbocar",
        aud: "turbochat",
        name: Some(name),
        picture,
    };
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(DEV_SECRET.as_bytes()),
    )
    .expect("encode token")
}
