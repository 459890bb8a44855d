//! The client side: connect to a `ws://` URL and drive the connection with the same [`Handler`].
//!
//! The opening handshake is a single HTTP/1.1 request and response (RFC 6455 §4.1), done here so
//! that the bytes a server sends right behind its 101 are kept for the frame decoder.

use super::deflate::{self, Negotiated};
use super::frame::Role;
use super::io::Io;
use super::upgrade::{accept_key, header_has_token};
use super::{driver, Config, Handler, Handshake, WebSocket};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest handshake response accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why a client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not a `ws://host[:port]/path` URL.
    #[error("invalid WebSocket URL '{0}': expected ws://host[:port]/path")]
    InvalidUrl(String),
    /// The server did not complete the handshake within the configured timeout.
    #[error("the WebSocket handshake with {0} timed out")]
    Timeout(String),
    /// The TCP connection failed or broke during the handshake.
    #[error("could not connect to {url}: {source}")]
    Failed {
        /// The URL.
        url: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The server answered, but not with a valid WebSocket upgrade.
    #[error("{url} refused the WebSocket upgrade: {reason}")]
    Rejected {
        /// The URL.
        url: String,
        /// The status line or the header that was wrong.
        reason: String,
    },
}

/// Connects to `url` and runs the connection in a background task with `handler`.
///
/// Returns once the handshake has completed; the returned handle sends, and
/// [`WebSocket::closed`] waits for the end.
///
/// ```no_run
/// # async fn run() -> Result<(), switchboard::ws::ConnectError> {
/// use switchboard::ws::{self, Handler, Text, WebSocket};
/// struct Print;
/// impl Handler for Print {
///     async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
///         println!("{text}");
///     }
/// }
/// let ws = ws::connect("ws://127.0.0.1:9001/", Print, ws::Config::default()).await?;
/// ws.send_text("hello").ok();
/// # Ok(()) }
/// ```
pub async fn connect<H: Handler>(url: &str, handler: H, config: Config) -> Result<WebSocket, ConnectError> {
    let uri: Uri = url.parse().map_err(|_| ConnectError::InvalidUrl(url.to_owned()))?;
    let Some(host) = uri.host().filter(|_| uri.scheme_str() == Some("ws")) else {
        return Err(ConnectError::InvalidUrl(url.to_owned()));
    };
    let port = uri.port_u16().unwrap_or(80);
    let (io, prefix, headers, peer, negotiated) =
        tokio::time::timeout(config.handshake_timeout, handshake(&uri, host, port, &config))
            .await
            .map_err(|_| ConnectError::Timeout(url.to_owned()))?
            .map_err(|err| match err {
                HandshakeError::Io(source) => ConnectError::Failed {
                    url: url.to_owned(),
                    source,
                },
                HandshakeError::Rejected(reason) => ConnectError::Rejected {
                    url: url.to_owned(),
                    reason,
                },
            })?;
    let handshake = Handshake { uri, headers, peer };
    let ws = WebSocket::new(handshake, config.max_backpressure);
    let task_ws = ws.clone();
    tokio::spawn(driver::run(
        io,
        prefix,
        Role::Client,
        task_ws,
        handler,
        config,
        None,
        negotiated,
    ));
    Ok(ws)
}

enum HandshakeError {
    Io(std::io::Error),
    Rejected(String),
}

impl From<std::io::Error> for HandshakeError {
    fn from(err: std::io::Error) -> Self {
        HandshakeError::Io(err)
    }
}

/// What the opening handshake gives the connection: the stream, bytes read past the response,
/// the response headers, the peer and the permessage-deflate agreement.
type Opened = (Io, Bytes, HeaderMap, Option<std::net::SocketAddr>, Option<Negotiated>);

async fn handshake(uri: &Uri, host: &str, port: u16, config: &Config) -> Result<Opened, HandshakeError> {
    // An IPv6 literal comes bracketed in the URL; connect() wants it bare.
    let mut tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await?;
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().ok();
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let extensions = deflate::offer(config)
        .map(|offer| format!("Sec-WebSocket-Extensions: {offer}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;

    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if tcp.read_buf(&mut buf).await? == 0 {
            return Err(HandshakeError::Rejected(
                "connection closed during the handshake".into(),
            ));
        }
        let mut header_storage = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut header_storage);
        let head_len = match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err(HandshakeError::Rejected("response head too large".into())),
            Err(err) => return Err(HandshakeError::Rejected(format!("invalid HTTP response: {err}"))),
        };
        if response.code != Some(101) {
            return Err(HandshakeError::Rejected(format!(
                "expected 101 Switching Protocols, got {} {}",
                response.code.unwrap_or(0),
                response.reason.unwrap_or("")
            )));
        }
        let mut headers = HeaderMap::new();
        for h in response.headers.iter() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                headers.append(name, value);
            }
        }
        check_response(&headers, &key)?;
        let negotiated = deflate::accept_response(&headers, config).map_err(HandshakeError::Rejected)?;
        let rest = buf.split_off(head_len);
        return Ok((Io::Tcp(tcp), rest.freeze(), headers, peer, negotiated));
    }
}

/// RFC 6455 §4.1: the server must agree to upgrade and prove it read our key.
fn check_response(headers: &HeaderMap, key: &str) -> Result<(), HandshakeError> {
    if !header_has_token(headers, http::header::UPGRADE, "websocket") {
        return Err(HandshakeError::Rejected("missing 'Upgrade: websocket' header".into()));
    }
    if !header_has_token(headers, http::header::CONNECTION, "upgrade") {
        return Err(HandshakeError::Rejected("missing 'Connection: Upgrade' header".into()));
    }
    // We offer no subprotocol, so the server may not pick one (RFC 6455 §4.1); the extension is
    // checked against our offer by `deflate::accept_response`.
    if headers.contains_key(http::header::SEC_WEBSOCKET_PROTOCOL) {
        return Err(HandshakeError::Rejected(format!(
            "the server chose a {} we did not offer",
            http::header::SEC_WEBSOCKET_PROTOCOL
        )));
    }
    let expected = accept_key(key.as_bytes());
    if headers
        .get(http::header::SEC_WEBSOCKET_ACCEPT)
        .map(HeaderValue::as_bytes)
        != Some(expected.as_bytes())
    {
        return Err(HandshakeError::Rejected("wrong or missing Sec-WebSocket-Accept".into()));
    }
    Ok(())
}
