//! Graceful shutdown, made explicit: one `Shutdown` is cloned into every part that must stop, and
//! triggering it (Ctrl-C, SIGTERM, or a test) makes each stop accepting and finish what it does.

use crate::ws::{Drain, DrainReport, Sockets};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A shutdown signal shared by the parts of a server.
///
/// When it triggers, [`http::serve`](crate::http::serve) stops accepting connections, closes its
/// WebSockets as the signal's [`Drain`] says (by default: 1001 "server shutting down", in jittered
/// batches over 2 s when there are more than 100) and returns once they and the HTTP requests
/// under way have ended — after 10 s at most by default ([`Shutdown::with_drain_timeout`]).
///
/// ```no_run
/// # async fn run(app: axum::Router) -> std::io::Result<()> {
/// use std::time::Duration;
/// use switchboard::Shutdown;
/// let shutdown = Shutdown::on_signals().with_drain_timeout(Duration::from_secs(30));
/// let listener = switchboard::http::bind("127.0.0.1:8000").await?;
/// switchboard::http::serve(listener, app, shutdown).await
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: watch::Sender<bool>,
    /// Open WebSocket connections, drained on trigger (a registry, not a future per connection:
    /// see `ws::Sockets`).
    sockets: Sockets,
    /// How they are drained.
    drain: Mutex<Drain>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                tx: watch::channel(false).0,
                sockets: Sockets::new(),
                drain: Mutex::new(Drain::default()),
            }),
        }
    }

    /// Drains the WebSockets as `drain` says: close code and reason, batches, window, timeout
    /// (see [`Drain`]). Applies to every clone of this signal.
    pub fn with_drain(self, drain: Drain) -> Self {
        *self.inner.drain.lock() = drain;
        self
    }

    /// Waits at most `timeout` (default 10 s) for the WebSockets and the HTTP requests under way
    /// to end once triggered; the closes are spread over at most half of it. Shorthand for
    /// [`Shutdown::with_drain`] with only the timeout changed.
    pub fn with_drain_timeout(self, timeout: Duration) -> Self {
        {
            let mut drain = self.inner.drain.lock();
            *drain = drain.clone().with_timeout(timeout);
        }
        self
    }

    /// How the WebSockets are drained when the signal triggers.
    pub fn drain_settings(&self) -> Drain {
        self.inner.drain.lock().clone()
    }

    /// A signal triggered by Ctrl-C or SIGTERM.
    pub fn on_signals() -> Self {
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        trigger.trigger();
                        return;
                    }
                };
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            tracing::info!("shutting down");
            trigger.trigger();
        });
        shutdown
    }

    /// Triggers the shutdown: the servers serving with this signal stop accepting and drain their
    /// connections (see [`Shutdown`]).
    pub fn trigger(&self) {
        self.inner.tx.send_replace(true);
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        *self.inner.tx.borrow()
    }

    /// Waits until triggered.
    pub async fn triggered(&self) {
        let mut rx = self.inner.tx.subscribe();
        let _ = rx.wait_for(|triggered| *triggered).await;
    }

    /// The registry of the server's open WebSockets, drained when the signal triggers.
    pub(crate) fn sockets(&self) -> &Sockets {
        &self.inner.sockets
    }

    /// Closes the WebSockets as the signal's [`Drain`] says and waits for them, at most its
    /// timeout.
    pub(crate) async fn drain(&self) -> DrainReport {
        let drain = self.drain_settings();
        self.inner.sockets.drain(&drain).await
    }
}
