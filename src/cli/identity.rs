//! `serve`'s identity settings: how connections authenticate (`[auth]`), the application's
//! backends (`[proxy]`), who may connect and how much (`[limits]`, `allowed_origins`). Flags win
//! over the file.
//!
//! ```toml
//! allowed_origins = ["https://app.example.com"]   # default: the page's own host
//! [auth]
//! hmac_secret = "change-me"          # HS256/384/512 (also SWITCHBOARD_HMAC_SECRET)
//! rsa_public_key = "keys/rsa.pem"    # RS256
//! ec_public_key = "keys/ec.pem"      # ES256
//! jwks_url = "http://keys.internal/.well-known/jwks.json"
//! audience = "my-app"                # optional: tokens must carry it
//! issuer = "https://auth.example.com"
//! anonymous = false                  # true: connections may stay anonymous until they connect
//! [proxy]
//! connect = "http://backend.internal/switchboard/connect"
//! subscribe = "http://backend.internal/switchboard/subscribe"
//! action = "http://backend.internal/switchboard/action"
//! timeout_ms = 2000
//! [limits]
//! messages_per_sec = 10000         # a rate without its burst: bursts of one second's worth
//! message_burst = 20000
//! subscriptions_per_connection = 10000
//! connections_per_user = 1000
//! connections_per_ip_per_sec = 1000
//! connection_burst_per_ip = 20000
//! ```

use clap::Args;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use switchboard::{Auth, ConnectProxy, Jwt, JwtKeys, Limits, Origins, Proxy};

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub hmac_secret: Option<String>,
    pub rsa_public_key: Option<PathBuf>,
    pub ec_public_key: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub anonymous: Option<bool>,
}

/// `[proxy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    pub connect: Option<String>,
    pub subscribe: Option<String>,
    pub action: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// `[limits]` (0 turns one off).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub messages_per_sec: Option<u32>,
    pub message_burst: Option<u32>,
    pub subscriptions_per_connection: Option<usize>,
    pub connections_per_user: Option<usize>,
    pub connections_per_ip_per_sec: Option<u32>,
    pub connection_burst_per_ip: Option<u32>,
}

/// The flags of the same settings.
#[derive(Args, Debug, Default)]
pub struct IdentityArgs {
    /// Authenticate connections with HS256/HS384/HS512 tokens signed with this secret.
    #[arg(long, env = "SWITCHBOARD_HMAC_SECRET")]
    hmac_secret: Option<String>,
    /// Authenticate with RS256 tokens: the RSA public key (PEM file).
    #[arg(long, value_name = "FILE")]
    rsa_public_key: Option<PathBuf>,
    /// Authenticate with ES256 tokens: the P-256 public key (PEM file).
    #[arg(long, value_name = "FILE")]
    ec_public_key: Option<PathBuf>,
    /// Authenticate with the keys of this JWKS URL.
    #[arg(long, value_name = "URL")]
    jwks_url: Option<String>,
    /// Let connections stay anonymous until they send `connect`.
    #[arg(long)]
    anonymous: bool,
    /// Ask this URL who a connection is (POST, JSON; PROTOCOL.md, "Proxies").
    #[arg(long, value_name = "URL")]
    connect_proxy: Option<String>,
    /// Forward actions the server does not declare to this URL.
    #[arg(long, value_name = "URL")]
    action_proxy: Option<String>,
    /// Origins allowed to open WebSockets (repeatable; `*` for any) [default: the page's own host].
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// Messages per second one connection may send (0: no limit) [default: 10000].
    #[arg(long)]
    messages_per_sec: Option<u32>,
    /// Messages one connection may send at once above that rate [default: 20000].
    #[arg(long)]
    message_burst: Option<u32>,
    /// Subscriptions per connection (0: no limit) [default: 10000].
    #[arg(long)]
    max_subscriptions: Option<usize>,
    /// Connections per user on this node (0: no limit) [default: 10000].
    #[arg(long)]
    max_connections_per_user: Option<usize>,
    /// New connections per second from one client address (0: no limit) [default: 1000, bursts of 20000].
    #[arg(long)]
    max_connections_per_ip_per_sec: Option<u32>,
}

/// What the node is built with.
pub struct Identity {
    pub auth: Option<Auth>,
    pub proxy: Option<Proxy>,
    pub limits: Limits,
    pub origins: Origins,
    /// Keys to verify tokens (and so subscription tokens) are configured.
    pub token_keys: bool,
    /// A subscribe proxy is configured.
    pub subscribe_proxy: bool,
}

/// The keys of `[auth]` and the flags (flags win), as one verifier (none configured: `None`).
fn keys(args: &IdentityArgs, file: &AuthSection) -> Result<Option<Jwt>, String> {
    let keys = JwtKeys {
        hmac_secret: args.hmac_secret.clone().or_else(|| file.hmac_secret.clone()),
        rsa_public_key: args.rsa_public_key.clone().or_else(|| file.rsa_public_key.clone()),
        ec_public_key: args.ec_public_key.clone().or_else(|| file.ec_public_key.clone()),
        jwks_url: args.jwks_url.clone().or_else(|| file.jwks_url.clone()),
    };
    Ok(keys.load()?.map(|mut jwt| {
        if let Some(audience) = &file.audience {
            jwt = jwt.audience(audience.clone());
        }
        if let Some(issuer) = &file.issuer {
            jwt = jwt.issuer(issuer.clone());
        }
        jwt
    }))
}

/// The settings from the flags and the file.
pub fn build(
    args: &IdentityArgs,
    auth: &AuthSection,
    proxy: &ProxySection,
    limits: &LimitsSection,
    origins: Option<&Vec<String>>,
) -> Result<Identity, String> {
    let timeout = Duration::from_millis(proxy.timeout_ms.unwrap_or(2000));
    let jwt = keys(args, auth)?;
    let token_keys = jwt.is_some();
    let connect = args.connect_proxy.as_ref().or(proxy.connect.as_ref());
    let mut built = match (connect, jwt) {
        (Some(url), jwt) => {
            let auth = ConnectProxy::new(url.clone()).timeout(timeout).into_auth();
            Some(match jwt {
                Some(jwt) => auth.subscription_tokens(jwt),
                None => auth,
            })
        }
        (None, Some(jwt)) => Some(jwt.into_auth()),
        (None, None) => None,
    };
    if args.anonymous || auth.anonymous == Some(true) {
        built = built.map(Auth::optional);
    }
    let mut backends = Proxy::new().timeout(timeout);
    let mut any_backend = false;
    if let Some(url) = &proxy.subscribe {
        backends = backends.subscribe(url.clone());
        any_backend = true;
    }
    if let Some(url) = args.action_proxy.as_ref().or(proxy.action.as_ref()) {
        backends = backends.action(url.clone());
        any_backend = true;
    }
    let mut limit = Limits::default();
    let set = |value: Option<u32>, flag: Option<u32>, field: &mut u32| {
        if let Some(n) = flag.or(value) {
            *field = n;
        }
    };
    set(
        limits.messages_per_sec,
        args.messages_per_sec,
        &mut limit.messages_per_sec,
    );
    set(limits.message_burst, args.message_burst, &mut limit.message_burst);
    set(
        limits.connections_per_ip_per_sec,
        args.max_connections_per_ip_per_sec,
        &mut limit.connections_per_ip_per_sec,
    );
    set(limits.connection_burst_per_ip, None, &mut limit.connection_burst_per_ip);
    if let Some(n) = args.max_subscriptions.or(limits.subscriptions_per_connection) {
        limit.subscriptions_per_connection = n;
    }
    if let Some(n) = args.max_connections_per_user.or(limits.connections_per_user) {
        limit.connections_per_user = n;
    }
    let allowed = if args.allowed_origins.is_empty() {
        origins.cloned().unwrap_or_default()
    } else {
        args.allowed_origins.clone()
    };
    Ok(Identity {
        token_keys,
        subscribe_proxy: proxy.subscribe.is_some(),
        auth: built,
        proxy: any_backend.then_some(backends),
        limits: limit,
        origins: if allowed.is_empty() {
            Origins::same_host()
        } else {
            Origins::list(allowed)
        },
    })
}
