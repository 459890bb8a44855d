//! Graceful shutdown, made explicit: one `Shutdown` is cloned into every part that must stop, and
//! triggering it (Ctrl-C, SIGTERM, or a test) makes each stop accepting and finish what it does.

use crate::ws::Sockets;
use std::sync::Arc;
use tokio::sync::watch;

/// A shutdown signal shared by the parts of a server.
#[derive(Clone, Debug)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: watch::Sender<bool>,
    /// Open WebSocket connections, closed with 1001 on trigger (a registry, not a future per
    /// connection: see `ws::Sockets`).
    sockets: Sockets,
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
            }),
        }
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

    /// Triggers the shutdown.
    pub fn trigger(&self) {
        self.inner.tx.send_replace(true);
        let _ = self.inner.sockets.close_all(1001, "server shutting down");
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

    /// The registry of the server's open WebSockets, closed with 1001 when the signal triggers.
    pub(crate) fn sockets(&self) -> &Sockets {
        &self.inner.sockets
    }
}
