//! `switchboard serve`: the standalone server.

use super::config::FileConfig;
use super::demo;
use axum::extract::Request;
use axum::response::{Html, IntoResponse, Response};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use switchboard::{ws, Api, Node, RedisBroker, Shutdown};
use tower::ServiceExt;

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const CLIENT_JS: &str = include_str!("../../assets/switchboard.js");

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8000].
    #[arg(long)]
    bind: Option<String>,
    /// A TOML file with the settings below (flags win over the file).
    #[arg(long)]
    config: Option<PathBuf>,
    /// `memory` (default, one process) or `redis://host:port` to share channels between nodes.
    #[arg(long)]
    broker: Option<String>,
    /// Client addresses allowed to POST /_broadcast (repeatable) [default: loopback only].
    #[arg(long = "broadcast-allowed-host")]
    broadcast_allowed_hosts: Vec<String>,
    /// Require `Authorization: Bearer TOKEN` on /_broadcast.
    #[arg(long, env = "SWITCHBOARD_BROADCAST_TOKEN")]
    broadcast_token: Option<String>,
    /// Interval of the demo `ticker` channel, in milliseconds [default: 1000].
    #[arg(long)]
    ticker_interval_ms: Option<u64>,
    /// On SIGTERM/Ctrl-C, how long to wait at most for the connections to end, in seconds
    /// (WebSockets are closed with 1001, in jittered batches when there are many) [default: 10].
    #[arg(long)]
    drain_timeout_secs: Option<u64>,
    /// With the Redis broker: seconds the presence of a node that stopped (died) still counts
    /// [default: 30].
    #[arg(long)]
    presence_ttl_secs: Option<u64>,
    /// The server HTTP API's key: callers send `Authorization: apikey KEY` to /api/<method>.
    #[arg(long, env = "SWITCHBOARD_API_KEY")]
    api_key: Option<String>,
    /// Turns on the admin page at /admin, signed in with this password (or the API key).
    #[arg(long, env = "SWITCHBOARD_ADMIN_PASSWORD")]
    admin_password: Option<String>,
    /// permessage-deflate: `off`, `on` (without context takeover) or `context-takeover`
    /// [default: off].
    #[arg(long)]
    compression: Option<ws::Compression>,
    #[command(flatten)]
    identity: super::identity::IdentityArgs,
}

pub async fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let bind = args
        .bind
        .or(file.bind.clone())
        .unwrap_or_else(|| "127.0.0.1:8000".into());
    let broker = args.broker.or(file.broker.clone()).unwrap_or_else(|| "memory".into());
    let mut ws_config = ws::Config {
        max_message_size: 1 << 20,
        ..Default::default()
    };
    if let Some(size) = file.max_message_size {
        ws_config.max_message_size = size;
    }
    if let Some(bytes) = file.max_backpressure {
        ws_config.max_backpressure = bytes;
    }
    if let Some(secs) = file.ping_interval_secs {
        ws_config.ping_interval = (secs > 0).then(|| Duration::from_secs(secs));
    }
    if let Some(secs) = file.idle_timeout_secs {
        ws_config.idle_timeout = Duration::from_secs(secs);
    }
    match (args.compression, file.compression.as_deref()) {
        (Some(compression), _) => ws_config.compression = compression,
        (None, Some(compression)) => ws_config.compression = compression.parse()?,
        (None, None) => {}
    }

    let identity = super::identity::build(
        &args.identity,
        &file.auth,
        &file.proxy,
        &file.limits,
        file.allowed_origins.as_ref(),
    )?;
    let namespaces = file.namespaces(super::config::Requirements {
        token_keys: identity.token_keys,
        subscribe_proxy: identity.subscribe_proxy,
        publish_proxy: identity.publish_proxy,
    })?;
    // The demo's channels and page: by default only when the file declares no namespaces.
    let with_demo = file.demo.unwrap_or(namespaces.is_empty());
    let (mut router, ticker) = match with_demo {
        true => {
            let (router, ticker) = demo::router();
            (router, Some(ticker))
        }
        false => (switchboard::Router::new(), None),
    };
    for namespace in namespaces {
        router.namespace(namespace);
    }
    let presence_ttl = args.presence_ttl_secs.or(file.presence_ttl_secs).unwrap_or(30).max(1);
    let mut builder = Node::builder(router)
        .ws_config(ws_config)
        .presence_ttl(Duration::from_secs(presence_ttl))
        .limits(identity.limits)
        .allowed_origins(identity.origins);
    if let Some(auth) = identity.auth {
        builder = builder.auth(auth);
    }
    if let Some(proxy) = identity.proxy {
        builder = builder.proxy(proxy);
    }
    let hosts = if args.broadcast_allowed_hosts.is_empty() {
        file.broadcast_allowed_hosts
    } else {
        Some(args.broadcast_allowed_hosts)
    };
    if let Some(hosts) = hosts {
        builder = builder.broadcast_allowed_hosts(hosts);
    }
    if let Some(token) = args.broadcast_token.or(file.broadcast_token) {
        builder = builder.broadcast_token(token);
    }
    builder = match broker.as_str() {
        "memory" => builder,
        url if url.starts_with("redis://") => builder.broker(RedisBroker::connect(url).await?),
        other => return Err(format!("unknown broker '{other}': use 'memory' or 'redis://host:port'").into()),
    };
    let node = builder.build();

    let interval = Duration::from_millis(
        args.ticker_interval_ms
            .or(file.ticker_interval_ms)
            .unwrap_or(1000)
            .max(10),
    );
    if let Some(ticker) = ticker {
        tokio::spawn(demo::run_ticker(ticker, interval));
    }
    let mut api = match args.api_key.or(file.api_key) {
        Some(key) => Api::new(key),
        None => Api::disabled(),
    };
    if let Some(password) = args.admin_password.or(file.admin_password) {
        api = api.admin_password(password);
    }

    let socket = node.endpoint();
    let (presence, presence_stats) = node.presence_endpoints();
    let (healthz, readyz) = node.health_endpoints();
    let app = axum::Router::new()
        // `/` serves the page to browsers and the WebSocket to clients that ask for one (SocketAPI's path).
        .route(
            "/",
            axum::routing::any(move |request: Request| root(request, socket.clone(), with_demo)),
        )
        .route("/ws", node.endpoint())
        .route(
            "/switchboard.js",
            axum::routing::get(|| async { ([(http::header::CONTENT_TYPE, "text/javascript")], CLIENT_JS) }),
        )
        .route("/_broadcast", node.broadcast_endpoint())
        .route("/_presence", presence)
        .route("/_presence_stats", presence_stats)
        .route("/metrics", node.metrics_endpoint())
        .route("/healthz", healthz)
        .route("/readyz", readyz)
        .merge(node.api_router(api));

    let listener = switchboard::http::bind(&bind)
        .await
        .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    let address = listener.local_addr()?;
    tracing::info!(broker = %broker, "switchboard serving on http://{address}/ (WebSocket at ws://{address}/ws and ws://{address}/)");
    println!("switchboard listening on http://{address}/");
    let handshake_timeout = Duration::from_secs(file.handshake_timeout_secs.unwrap_or(10).max(1));
    let mut drain = ws::Drain::default();
    if let Some(secs) = args.drain_timeout_secs.or(file.drain_timeout_secs) {
        drain = drain.with_timeout(Duration::from_secs(secs));
    }
    if let Some(ms) = file.drain_window_ms {
        drain = drain.with_window(Duration::from_millis(ms));
    }
    let shutdown = Shutdown::on_signals().with_drain(drain);
    switchboard::http::serve_with(listener, app, shutdown, handshake_timeout).await?;
    Ok(())
}

async fn root(request: Request, socket: axum::routing::MethodRouter, with_demo: bool) -> Response {
    if request.headers().contains_key(http::header::UPGRADE) {
        return match socket.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    if with_demo {
        Html(INDEX_HTML).into_response()
    } else {
        "switchboard: WebSocket at /ws (and /), the server API at POST /api/<method>, /metrics\n".into_response()
    }
}
