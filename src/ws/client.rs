//! The client side: connect to a `ws://` URL and drive the connection with the same [`Handler`].

use super::{connection, Config, Handler, Handshake, WebSocket};
use http::Uri;

/// Why a client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not a `ws://host[:port]/path` URL.
    #[error("invalid WebSocket URL '{0}': expected ws://host[:port]/path")]
    InvalidUrl(String),
    /// The server did not complete the handshake within the configured timeout.
    #[error("the WebSocket handshake with {0} timed out")]
    Timeout(String),
    /// The TCP connection or the handshake failed.
    #[error("could not connect to {url}: {source}")]
    Failed {
        /// The URL.
        url: String,
        /// What went wrong.
        source: tokio_websockets::Error,
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
    if uri.scheme_str() != Some("ws") || uri.host().is_none() {
        return Err(ConnectError::InvalidUrl(url.to_owned()));
    }
    let builder = tokio_websockets::ClientBuilder::from_uri(uri.clone())
        .limits(config.limits())
        .config(config.codec());
    let (stream, response) = tokio::time::timeout(config.handshake_timeout, builder.connect())
        .await
        .map_err(|_| ConnectError::Timeout(url.to_owned()))?
        .map_err(|source| ConnectError::Failed {
            url: url.to_owned(),
            source,
        })?;
    #[allow(unreachable_patterns)]
    let peer = match stream.get_ref() {
        tokio_websockets::MaybeTlsStream::Plain(tcp) => tcp.peer_addr().ok(),
        _ => None,
    };
    let handshake = Handshake {
        uri,
        headers: response.headers().clone(),
        peer,
    };
    let ws = WebSocket::new(handshake, config.max_backpressure);
    let task_ws = ws.clone();
    tokio::spawn(connection::run(stream, task_ws, handler, config, None));
    Ok(ws)
}
