//! Where tokens come from: the app's login layer, asked again at every
//! (re)connect and before the current token expires.

use std::future::Future;
use std::pin::Pin;

/// A boxed future yielding a token.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send + 'a>>;

/// Gives a fresh JWT for the user. Called before every WebSocket connect,
/// before every HTTP request, and shortly before the session's token
/// expires (the answer is sent as an `auth` frame). Cache inside the
/// provider if getting a token is expensive.
///
/// Any `Fn() -> impl Future<Output = Result<String, TokenError>>` closure
/// is a provider; [`StaticToken`] is one for a fixed token.
pub trait TokenProvider: Send + Sync + 'static {
    /// A token that is valid now.
    fn token(&self) -> TokenFuture<'_>;
}

impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, TokenError>> + Send + 'static,
{
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self())
    }
}

/// Always the same token (it cannot be refreshed: the session ends when it
/// expires, and reconnecting fails until the process gets a new one).
#[derive(Clone)]
pub struct StaticToken(pub String);

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        f.write_str("StaticToken(..)")
    }
}

impl TokenProvider for StaticToken {
    fn token(&self) -> TokenFuture<'_> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}

/// The provider could not give a token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no token: {0}")]
pub struct TokenError(pub String);

impl TokenError {
    /// An error with this explanation.
    pub fn new(reason: impl std::fmt::Display) -> Self {
        TokenError(reason.to_string())
    }
}
