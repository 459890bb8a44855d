//! Graceful shutdown, made explicit: one `Shutdown` is cloned into every part that must stop, and
//! triggering it (Ctrl-C, SIGTERM, or a test) makes each stop accepting and finish what it does.

use crate::ws::WebSocket;
use parking_lot::Mutex;
use std::collections::HashMap;
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
    /// Open WebSocket connections, closed with 1001 on trigger. A registry rather than a future
    /// in each connection waiting for the signal: that future would cost every idle connection
    /// ~180 bytes, an entry here costs ~20.
    sockets: Mutex<HashMap<u64, WebSocket>>,
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
                sockets: Mutex::new(HashMap::new()),
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
        let sockets = std::mem::take(&mut *self.inner.sockets.lock());
        for ws in sockets.into_values() {
            let _ = ws.close(1001, "server shutting down");
        }
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

    /// Closes `ws` with 1001 when the signal triggers (at once if it has).
    pub(crate) fn track(&self, ws: &WebSocket) {
        {
            let mut sockets = self.inner.sockets.lock();
            if !self.is_triggered() {
                sockets.insert(ws.id(), ws.clone());
                return;
            }
        }
        let _ = ws.close(1001, "server shutting down");
    }

    /// Forgets `ws`, which has ended.
    pub(crate) fn untrack(&self, ws: &WebSocket) {
        let mut sockets = self.inner.sockets.lock();
        sockets.remove(&ws.id());
        // Give back the room of a past spike of connections.
        if sockets.capacity() > 1024 && sockets.len() < sockets.capacity() / 4 {
            sockets.shrink_to_fit();
        }
    }
}
