//! Serving an axum application over HTTP/1.1 with connection upgrades, the peer address, a
//! handshake (request head) timeout and graceful shutdown.
//!
//! `axum::serve` has no request-head timeout, which lets a client hold a socket forever without
//! sending a handshake; this loop uses hyper's `header_read_timeout` instead.

use crate::Shutdown;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long a client may take to send its request head (the WebSocket handshake included), by
/// default.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the kernel may hold waiting for `accept` (capped by `net.core.somaxconn`).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `addr` (e.g. `"127.0.0.1:8000"`, `"[::]:8000"`, `"localhost:8000"`) with a
/// backlog of [`LISTEN_BACKLOG`].
///
/// Prefer it to `tokio::net::TcpListener::bind`, whose backlog is 128: a burst of clients
/// connecting at once (every client reconnecting after a deploy, say) overflows that queue, and
/// each dropped SYN costs its client a one-second retransmission timeout.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let listener = switchboard::http::bind("127.0.0.1:8000").await?;
/// # Ok(()) }
/// ```
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match listen(addr) {
            Ok(listener) => return Ok(listener),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr}: no address to listen on"),
        )
    }))
}

fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std does: a restarted server can listen again while old connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `app` on `listener` until `shutdown` is triggered, with the default
/// [`HANDSHAKE_TIMEOUT`].
///
/// Requests carry [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo), so WebSocket handlers
/// see their peer's address, and the [`Shutdown`]'s registry of open WebSockets
/// ([`ws::Sockets`](crate::ws::Sockets)), so WebSockets close (1001) when it triggers.
pub async fn serve(listener: TcpListener, app: axum::Router, shutdown: Shutdown) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, HANDSHAKE_TIMEOUT).await
}

/// [`serve`] with another handshake timeout: a client that has not sent its whole request head
/// after `handshake_timeout` is disconnected.
pub async fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    shutdown: Shutdown,
    handshake_timeout: Duration,
) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.triggered() => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let sockets = shutdown.sockets().clone();
        let app = app
            .clone()
            .map_request(move |mut request: ::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(sockets.clone());
                request
            });
        let service = TowerToHyperService::new(app);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(handshake_timeout)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%err, %peer, "http connection error");
                    }
                }
                _ = shutdown.triggered() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}
