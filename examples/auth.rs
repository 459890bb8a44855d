//! Identity and access: authenticated connections, a channel keyed by user, a channel that needs
//! subscription tokens, origins and limits.
//!
//! `cargo run --release --example auth -- --bind 127.0.0.1:8000 [--hmac-secret SECRET]
//! [--connect-proxy URL] [--allowed-origin ORIGIN]…` (at least one of the first two)
//!
//! Authentication is required. Serves at `/` (and `POST /_broadcast`, `GET /metrics`):
//! * channel `news` (no parameters): `{"text"}`;
//! * channel `inbox`, keyed by the authenticated user: subscribers send no parameters and get
//!   only their own user's messages; `{"channel":"inbox","data":{"user":"42","text":"hi"}}` on
//!   `/_broadcast` reaches user 42's connections only;
//! * channel `room`: needs a subscription token (`{"sub": USER, "channel": "room", "exp": …}`
//!   signed with the same keys) in `subscribe`;
//! * action `whoami` → `{"user": SUB, "info": INFO}`;
//! * action `send_inbox {user, text}` broadcasts `{"user", "text"}` on `inbox` to that user.
//!
//! With `--hmac-secret` (or `--rsa-public-key`, `--ec-public-key`, `--jwks-url`) connections
//! authenticate with JWTs (`?token=` or `{"type":"connect","token":…}`); with `--connect-proxy`
//! the node asks that URL instead (the keys then verify only subscription tokens).

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use switchboard::{Auth, Channel, ConnectProxy, Identity, JwtKeys, Limits, Node, Origins, Proxy, Router};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    bind: String,
    /// Verify HS256/HS384/HS512 tokens with this secret.
    #[arg(long, env = "SWITCHBOARD_HMAC_SECRET")]
    hmac_secret: Option<String>,
    /// Verify RS256 tokens with this PEM public key.
    #[arg(long, value_name = "FILE")]
    rsa_public_key: Option<PathBuf>,
    /// Verify ES256 tokens with this PEM public key.
    #[arg(long, value_name = "FILE")]
    ec_public_key: Option<PathBuf>,
    /// Verify tokens with the keys of this JWKS URL (fetched, cached, refreshed on an unknown kid).
    #[arg(long, value_name = "URL")]
    jwks_url: Option<String>,
    /// Ask this URL who a connection is (POST, JSON; see PROTOCOL.md, "Proxies").
    #[arg(long, value_name = "URL")]
    connect_proxy: Option<String>,
    /// Ask this URL about subscriptions to `news` (POST, JSON).
    #[arg(long, value_name = "URL")]
    subscribe_proxy: Option<String>,
    /// Forward actions the node does not declare to this URL (POST, JSON).
    #[arg(long, value_name = "URL")]
    action_proxy: Option<String>,
    /// Milliseconds a proxy has to answer.
    #[arg(long, default_value_t = 2000)]
    proxy_timeout_ms: u64,
    /// Origins allowed to open WebSockets (repeatable; `*` for any) [default: the page's own host].
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// Messages per second a connection may send (token bucket; 0: no limit).
    #[arg(long)]
    messages_per_sec: Option<u32>,
    /// Messages a connection may send at once above that rate.
    #[arg(long)]
    message_burst: Option<u32>,
    /// Subscriptions per connection (0: no limit).
    #[arg(long)]
    max_subscriptions: Option<usize>,
    /// Connections per user on this node (0: no limit).
    #[arg(long)]
    max_connections_per_user: Option<usize>,
    /// New connections per second from one client address (0: no limit).
    #[arg(long)]
    max_connections_per_ip_per_sec: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct News {
    #[serde(default)]
    text: String,
}

#[derive(Serialize, Deserialize)]
struct Inbox {
    user: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct Nothing {}

fn router(subscribe_proxy: bool) -> Router {
    let mut router = Router::new();
    let mut news = Channel::new("news", |p: News| async move {
        Ok::<_, String>(serde_json::json!({ "text": p.text }))
    });
    if subscribe_proxy {
        news = news.subscribe_proxy();
    }
    router.channel(news);
    let inbox = router.channel(
        Channel::new("inbox", |p: Inbox| async move {
            Ok::<_, String>(serde_json::json!({ "user": p.user, "text": p.text }))
        })
        .keyed_by_user("user"),
    );
    router.channel(
        Channel::new("room", |p: News| async move {
            Ok::<_, String>(serde_json::json!({ "text": p.text }))
        })
        .token_required(),
    );
    router.action("whoami", |_: Nothing| async move {
        let who = Identity::current().unwrap_or_default();
        Ok::<_, String>(serde_json::json!({ "user": who.user_id(), "info": who.info() }))
    });
    router.action("send_inbox", move |p: Inbox| {
        let inbox = inbox.clone();
        async move { inbox.broadcast(p).await.map_err(|e| e.to_string()) }
    });
    router
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let timeout = Duration::from_millis(args.proxy_timeout_ms);
    let keys = JwtKeys {
        hmac_secret: args.hmac_secret.clone(),
        rsa_public_key: args.rsa_public_key.clone(),
        ec_public_key: args.ec_public_key.clone(),
        jwks_url: args.jwks_url.clone(),
    };
    let jwt = keys.load()?;
    let auth: Auth = match (&args.connect_proxy, jwt) {
        (Some(url), jwt) => {
            let auth = ConnectProxy::new(url.clone()).timeout(timeout).into_auth();
            match jwt {
                Some(jwt) => auth.subscription_tokens(jwt),
                None => auth,
            }
        }
        (None, Some(jwt)) => jwt.into_auth(),
        (None, None) => {
            eprintln!("auth: give --hmac-secret (or --rsa-public-key, --ec-public-key, --jwks-url) or --connect-proxy");
            std::process::exit(2);
        }
    };
    let mut proxy = Proxy::new().timeout(timeout);
    if let Some(url) = &args.subscribe_proxy {
        proxy = proxy.subscribe(url.clone());
    }
    if let Some(url) = &args.action_proxy {
        proxy = proxy.action(url.clone());
    }
    let mut limits = Limits::default()
        .with_message_rate(args.messages_per_sec, args.message_burst)
        .with_connection_rate(args.max_connections_per_ip_per_sec, None);
    if let Some(n) = args.max_subscriptions {
        limits.subscriptions_per_connection = n;
    }
    if let Some(n) = args.max_connections_per_user {
        limits.connections_per_user = n;
    }
    let origins = if args.allowed_origins.is_empty() {
        Origins::same_host()
    } else {
        Origins::list(args.allowed_origins.clone())
    };
    let node = Node::builder(router(args.subscribe_proxy.is_some()))
        .auth(auth)
        .proxy(proxy)
        .limits(limits)
        .allowed_origins(origins)
        .build();
    let listener = switchboard::http::bind(&args.bind).await?;
    println!("auth listening on ws://{}/", listener.local_addr()?);
    switchboard::http::serve(listener, node.app(), switchboard::Shutdown::on_signals()).await?;
    Ok(())
}
