//! Serving an axum application over HTTP/1.1 with connection upgrades, the peer address, a
//! handshake (request head) timeout and graceful shutdown: on [`Shutdown`], the WebSockets are
//! closed in jittered batches and waited for, with the HTTP requests under way, for a bounded time.
//!
//! `axum::serve` has no request-head timeout, which lets a client hold a socket forever without
//! sending a handshake; this loop uses hyper's `header_read_timeout` instead.

use crate::Shutdown;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
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
/// ([`ws::Sockets`](crate::ws::Sockets)), so that the shutdown reaches them.
///
/// When `shutdown` triggers, it stops accepting, closes every WebSocket as the signal's
/// [`Drain`](crate::ws::Drain) says (1001 "server shutting down" by default, in jittered batches
/// when there are many), lets the HTTP requests under way finish (hyper's graceful shutdown), and
/// returns once both are done — or once the drain timeout (10 s by default:
/// [`Shutdown::with_drain_timeout`]) has passed. It logs how many WebSockets it closed and
/// whether the drain completed.
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
    let connections = Connections::default();
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
            _ = shutdown.triggered() => break,
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
        // Held while hyper serves the connection: until it is upgraded (the WebSocket is then
        // the registry's) or ends.
        let open = connections.open();
        tokio::spawn(async move {
            let _open = open;
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
    // New clients are refused from here on.
    drop(listener);
    drain(&shutdown, &connections).await;
    Ok(())
}

/// Closes the WebSockets and waits for them and the HTTP connections, at most the drain timeout.
async fn drain(shutdown: &Shutdown, connections: &Connections) {
    let settings = shutdown.drain_settings();
    let (code, _) = settings.close();
    let (sockets, http_done) = tokio::join!(
        shutdown.drain(),
        tokio::time::timeout(settings.timeout(), connections.closed())
    );
    let http_open = connections.count();
    if sockets.completed() && http_done.is_ok() {
        tracing::info!(
            closed = sockets.closed,
            code,
            "drain completed in {:?}: {} websocket connections closed",
            sockets.elapsed,
            sockets.closed
        );
    } else {
        tracing::warn!(
            closed = sockets.closed,
            code,
            websockets_open = sockets.remaining,
            http_open,
            "drain timed out after {:?}: {} websocket connections closed, {} websockets and {} http connections still open",
            settings.timeout(),
            sockets.closed,
            sockets.remaining,
            http_open
        );
    }
}

/// The HTTP connections being served (counted, not listed: nothing per connection but the
/// guard in its task).
#[derive(Clone, Default)]
struct Connections {
    inner: Arc<ConnectionsInner>,
}

#[derive(Default)]
struct ConnectionsInner {
    count: AtomicUsize,
    closed: Notify,
}

/// One connection being served, until dropped.
struct Open(Arc<ConnectionsInner>);

impl Connections {
    fn open(&self) -> Open {
        self.inner.count.fetch_add(1, Ordering::AcqRel);
        Open(self.inner.clone())
    }

    fn count(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    /// Waits until no connection is being served.
    async fn closed(&self) {
        loop {
            let closed = self.inner.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            closed.await;
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}
