//! Who is connected: a connection's [`Identity`], and the one hook that decides it.
//!
//! A node with [`Auth`] asks its authentication hook for an identity when a connection presents
//! credentials: a token on the URL (`?token=`), or a `connect` message (a token, or only the
//! handshake's cookies for the connect proxy). The hook answers an identity or a [`Refusal`], and the
//! session turns that into `connected`, an error reply, or a close code (PROTOCOL.md, "Identity").
//! Two hooks come ready: JWT verification ([`Jwt`], `jwt.rs`) and the connect proxy
//! ([`ConnectProxy`], `proxy.rs`) that asks the application's own HTTP backend.
//!
//! Expiry is enforced, not only checked at the handshake: `expiry.rs` keeps one timer per node
//! (not one task per connection) that closes a connection with 4005 when its identity expires
//! without a `refresh`.

mod backend;
mod expiry;
mod jwks;
mod jwt;
mod keys;
mod proxy;

pub(crate) use backend::Backend;
pub(crate) use expiry::{Deadline, Deadlines};
pub use jwt::{Jwt, JwtError};
pub use keys::JwtKeys;
pub use proxy::{ConnectProxy, Proxy};

use crate::ws::Handshake;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Who a connection is: a user id (empty for an anonymous connection), optional `info` that
/// others may see (presence), and when the credentials that proved it expire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    user: String,
    info: Option<Value>,
    expires_at: Option<u64>,
}

impl Identity {
    /// An anonymous connection: user `""`, no info, no expiry.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// A connection of user `user`.
    pub fn user(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            ..Self::default()
        }
    }

    /// With `info` (a JSON object that presence shows to others).
    pub fn with_info(mut self, info: Value) -> Self {
        self.info = Some(info);
        self
    }

    /// Expiring at `unix_secs` (seconds since the Unix epoch, a JWT's `exp`).
    pub fn expires_at(mut self, unix_secs: u64) -> Self {
        self.expires_at = Some(unix_secs);
        self
    }

    /// The user id; `""` for an anonymous connection.
    pub fn user_id(&self) -> &str {
        &self.user
    }

    /// True for an anonymous connection.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_empty()
    }

    /// The identity's `info`.
    pub fn info(&self) -> Option<&Value> {
        self.info.as_ref()
    }

    /// When the identity expires, in seconds since the Unix epoch.
    pub fn expiry(&self) -> Option<u64> {
        self.expires_at
    }

    /// Seconds left before expiry (0 once expired); `None` without expiry.
    pub fn expires_in(&self) -> Option<u64> {
        self.expires_at.map(|at| at.saturating_sub(unix_now()))
    }

    /// True once the expiry has passed.
    pub fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= unix_now())
    }
}

tokio::task_local! {
    /// The identity of the connection whose message is being handled.
    static CURRENT: Arc<Identity>;
}

impl Identity {
    /// The identity of the connection whose message is being handled: readable from a channel
    /// function or an action while it answers a client (`None` elsewhere, e.g. in a broadcast
    /// from a background task). Routes and authorization hooks also have
    /// [`Connection::identity`](crate::Connection::identity).
    ///
    /// ```
    /// use switchboard::{Identity, Router};
    /// let mut router = Router::new();
    /// router.action("whoami", |_: serde_json::Value| async move {
    ///     let who = Identity::current().unwrap_or_default();
    ///     Ok::<_, String>(serde_json::json!({ "user": who.user_id(), "info": who.info() }))
    /// });
    /// ```
    pub fn current() -> Option<Identity> {
        CURRENT.try_with(|identity| Identity::clone(identity)).ok()
    }
}

/// Runs `future` with `identity` as [`Identity::current`].
pub(crate) async fn scope<F: Future>(identity: Arc<Identity>, future: F) -> F::Output {
    CURRENT.scope(identity, future).await
}

/// Runs `f` with `identity` as [`Identity::current`].
pub(crate) fn sync_scope<R>(identity: Arc<Identity>, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(identity, f)
}

/// The identity of every connection of a node without authentication.
pub(crate) fn anonymous() -> Arc<Identity> {
    static ANONYMOUS: std::sync::OnceLock<Arc<Identity>> = std::sync::OnceLock::new();
    ANONYMOUS.get_or_init(|| Arc::new(Identity::anonymous())).clone()
}

/// Seconds since the Unix epoch now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What the authentication hook is asked about.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// The connection's client id (as `connected` reports it).
    pub client: String,
    /// The opening handshake: headers (cookies, `Authorization`, `Origin`), query, peer address.
    pub handshake: Handshake,
    /// The token: `?token=` on the URL, or the `connect` (or `refresh`) message's `token`.
    pub token: Option<String>,
    /// The `connect` message's `data`, if any.
    pub data: Option<Value>,
    /// True for a `refresh`: the connection is already authenticated and presents a new token.
    pub refresh: bool,
}

/// Why the authentication hook refuses a connection, and so what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The credentials have expired: closed with 4005 ("token expired": get a new token,
    /// reconnect).
    #[error("token expired")]
    Expired,
    /// The token is not valid (bad signature, malformed, wrong algorithm, not yet valid…):
    /// closed with 4500 ("invalid token": do not retry with the same token).
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// An error reply to the `connect` (the connection stays and may try again), e.g. the
    /// connect proxy's `{"error":{"code","message"}}`.
    #[error("{message}")]
    Error {
        /// The application's error code (0 when it gave none).
        code: u32,
        /// The text sent in the error reply.
        message: String,
    },
    /// The connection is closed with this code and reason (the connect proxy's `disconnect`).
    #[error("disconnect {code}: {reason}")]
    Disconnect {
        /// A close code, 4000–4999.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The authentication backend could not answer (down, slow, garbage): an error reply, and a
    /// log line on the server.
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

type Hook = Arc<dyn Fn(AuthRequest) -> BoxFuture<'static, Result<Identity, Refusal>> + Send + Sync>;

/// How a node authenticates connections: the hook, whether authentication is required, and what
/// verifies subscription tokens.
///
/// ```
/// use switchboard::{Auth, Identity, Refusal};
/// let auth = Auth::new(|request: switchboard::AuthRequest| async move {
///     match request.token.as_deref() {
///         Some("let-me-in") => Ok(Identity::user("42")),
///         _ => Err(Refusal::InvalidToken("unknown token".into())),
///     }
/// });
/// # let _ = auth;
/// ```
#[derive(Clone)]
pub struct Auth {
    pub(crate) hook: Hook,
    pub(crate) required: bool,
    pub(crate) subscription_tokens: Option<Arc<crate::auth::Jwt>>,
}

impl Auth {
    /// Authentication by `hook`, required (see [`optional`](Self::optional)).
    pub fn new<F, Fut>(hook: F) -> Self
    where
        F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Identity, Refusal>> + Send + 'static,
    {
        Self {
            hook: Arc::new(move |request| hook(request).boxed()),
            required: true,
            subscription_tokens: None,
        }
    }

    /// Connections may stay anonymous (user `""`) until they send `connect`; by default every
    /// message before `connected` is refused.
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }

    /// Verifies subscription tokens (a `subscribe` with a `token`) with `jwt`, for a node whose
    /// hook is something else (the connect proxy, say). [`Jwt::into_auth`] sets it already.
    pub fn subscription_tokens(mut self, jwt: Jwt) -> Self {
        self.subscription_tokens = Some(Arc::new(jwt));
        self
    }

    pub(crate) fn authenticate(&self, request: AuthRequest) -> BoxFuture<'static, Result<Identity, Refusal>> {
        (self.hook)(request)
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("required", &self.required)
            .field("subscription_tokens", &self.subscription_tokens.is_some())
            .finish()
    }
}

/// The default time a backend (connect, subscribe or action proxy; a JWKS URL) has to answer.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(2);
