//! Serving WebSockets on a path of an HTTP application: the server side of the opening handshake.
//!
//! The handshake is checked here rather than left to the codec so that a bad request gets an HTTP
//! answer that says what is wrong (400 with the reason, 405 for a method other than GET), and so
//! the endpoint mounts on any axum/tower router beside ordinary routes.

use super::deflate::{self, Negotiated};
use super::frame::Role;
use super::io::Io;
use super::{driver, Config, Handler, Handshake, Sockets, WebSocket};
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use std::net::SocketAddr;
use std::sync::Arc;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Request headers with no use after the upgrade; not kept in [`Handshake::headers`].
const HANDSHAKE_ONLY: [header::HeaderName; 5] = [
    header::UPGRADE,
    header::CONNECTION,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_EXTENSIONS,
];

/// An HTTP answer refusing a WebSocket handshake before the upgrade (the factory of
/// [`endpoint_checked`] returns it): the status, and a `text/plain` body that says why.
///
/// Nothing is upgraded or registered for a refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The response status, e.g. 403 or 429.
    pub status: StatusCode,
    /// The response body (`text/plain; charset=utf-8`).
    pub body: String,
}

impl Rejection {
    /// A refusal with `status` and `body`.
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.body.trim_end())
    }
}

impl std::error::Error for Rejection {}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.body,
        )
            .into_response()
    }
}

/// An axum route that upgrades requests to WebSocket connections, each driven by a handler that
/// `factory` makes from the handshake.
///
/// Mount it like any route: `Router::new().route("/ws", endpoint(|_| MyHandler, Config::default()))`.
/// Requests that are not WebSocket upgrades get 400 (with the reason) or 405.
///
/// If a request carries a [`Sockets`] in its extensions (the server's registry of open sockets),
/// the socket it opens is registered there, so the server can close it with all the others.
pub fn endpoint<F, H, S>(factory: F, config: Config) -> MethodRouter<S>
where
    F: Fn(&Handshake) -> H + Send + Sync + 'static,
    H: Handler,
    S: Clone + Send + Sync + 'static,
{
    mount(move |handshake: &mut Handshake| Ok(factory(handshake)), config, None)
}

/// [`endpoint`] with a registry of its own: every socket it opens is registered in `sockets`,
/// whatever serves the application, so that its owner can count, close or
/// [drain](Sockets::drain) them — a `Node` does, for `Node::shutdown`.
///
/// If a request carries the server's [`Sockets`] in its extensions, `sockets` is linked to it:
/// the server's shutdown closes and waits for this endpoint's sockets too.
pub fn endpoint_with_sockets<F, H, S>(factory: F, config: Config, sockets: Sockets) -> MethodRouter<S>
where
    F: Fn(&Handshake) -> H + Send + Sync + 'static,
    H: Handler,
    S: Clone + Send + Sync + 'static,
{
    endpoint_checked(move |handshake: &mut Handshake| Ok(factory(handshake)), config, sockets)
}

/// [`endpoint_with_sockets`] whose `factory` may refuse a handshake: a request for which it
/// returns a [`Rejection`] gets that HTTP answer instead of the 101, and nothing is upgraded or
/// registered (an origin check, a rate limit).
///
/// The factory is called once the request is a valid WebSocket handshake (a malformed one still
/// gets 400 or 405 without calling it) and before the socket is counted in `sockets`. It may
/// also edit the handshake the connection keeps: take a credential out of the query, say, so
/// that it is not kept (nor shown to application code) for the connection's whole life.
pub fn endpoint_checked<F, H, S>(factory: F, config: Config, sockets: Sockets) -> MethodRouter<S>
where
    F: Fn(&mut Handshake) -> Result<H, Rejection> + Send + Sync + 'static,
    H: Handler,
    S: Clone + Send + Sync + 'static,
{
    mount(factory, config, Some(sockets))
}

fn mount<F, H, S>(factory: F, config: Config, own: Option<Sockets>) -> MethodRouter<S>
where
    F: Fn(&mut Handshake) -> Result<H, Rejection> + Send + Sync + 'static,
    H: Handler,
    S: Clone + Send + Sync + 'static,
{
    let factory = Arc::new(factory);
    let config = Arc::new(config);
    axum::routing::any(move |request: Request| {
        let factory = factory.clone();
        let config = config.clone();
        let own = own.clone();
        async move { upgrade(request, &*factory, &config, own) }
    })
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key);
    sha1.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes())
}

fn upgrade<F, H>(mut request: Request, factory: &F, config: &Arc<Config>, own: Option<Sockets>) -> Response
where
    F: Fn(&mut Handshake) -> Result<H, Rejection>,
    H: Handler,
{
    if request.method() != Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET")],
            "405 Method Not Allowed: a WebSocket endpoint accepts only GET with an upgrade handshake\n",
        )
            .into_response();
    }
    let key = match check_handshake(&request) {
        Ok(key) => key,
        Err(reason) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                format!("400 Bad Request: not a valid WebSocket handshake: {reason}\n"),
            )
                .into_response()
        }
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the HTTP server does not support connection upgrades (serve with hyper's upgrades enabled)\n",
        )
            .into_response();
    };
    // permessage-deflate, if configured and offered (answered in the 101 below).
    let deflate = deflate::negotiate(request.headers(), config);
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0);
    // The server's registry of open sockets, if it keeps one (to close them all when it shuts
    // down).
    let server = request.extensions().get::<Sockets>().cloned();
    if server.as_ref().is_some_and(Sockets::is_closing) {
        return (StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down\n").into_response();
    }
    let (parts, _body) = request.into_parts();
    // The headers that only served the handshake are not kept. The values still share hyper's
    // read buffer; the connection keeps a compact copy (`handshake.rs`), not these.
    let mut headers = parts.headers;
    for name in &HANDSHAKE_ONLY {
        headers.remove(name);
    }
    let uri = parts.uri;
    let mut handshake = Handshake { uri, headers, peer };
    // Before anything is counted: a refused request leaves no trace in the registries.
    let handler = match factory(&mut handshake) {
        Ok(handler) => handler,
        Err(rejection) => return rejection.into_response(),
    };
    // The endpoint's own registry, linked to the server's, if it has one.
    let sockets = match own {
        Some(own) => {
            if let Some(server) = &server {
                server.link(&own);
            }
            Some(own)
        }
        None => server,
    };
    // Counted from the 101 on, so that a drain starting before the socket opens waits for it.
    if let Some(sockets) = &sockets {
        sockets.upgrading();
    }
    let config = Config::clone(config);
    let (negotiated, response_extension) = deflate.unzip();
    let task = async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let shared = Negotiated::shared_threshold(negotiated);
                let ws = WebSocket::with_shared_deflate(handshake, config.max_backpressure, shared);
                let (io, prefix) = Io::from_upgraded(upgraded);
                // Its own task: this one's room for the upgrade (handshake, hyper's future) is freed.
                let run = driver::run(io, prefix, Role::Server, ws, handler, config, sockets, negotiated);
                tokio::spawn(run);
            }
            Err(err) => {
                tracing::debug!(%err, "websocket upgrade failed");
                if let Some(sockets) = &sockets {
                    sockets.abandon();
                }
            }
        }
    };
    tokio::spawn(task);
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(extension) = response_extension {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, extension);
    }
    response
}

/// Checks the RFC 6455 §4.2.1 requirements; returns the client's key.
fn check_handshake(request: &Request) -> Result<String, &'static str> {
    if request.version() != Version::HTTP_11 {
        return Err("WebSocket upgrades need HTTP/1.1");
    }
    let headers = request.headers();
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err("missing 'Upgrade: websocket' header");
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err("missing 'Connection: Upgrade' header");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        return Err("unsupported or missing Sec-WebSocket-Version (only 13 is supported)");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or("missing Sec-WebSocket-Key header")?;
    match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
        Ok(raw) if raw.len() == 16 => Ok(key.trim().to_owned()),
        _ => Err("Sec-WebSocket-Key must be 16 bytes in base64"),
    }
}

pub(crate) fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
