//! `Sockets`: the registry of a server's open WebSockets, so that they can all be closed at once
//! (a server shutting down closes them with 1001) and a caller can wait for the last one to end.
//!
//! A registry rather than a future in each connection waiting for a signal: such a future would
//! cost every idle connection ~180 bytes of its task, an entry here costs ~20 (the socket's id
//! and a handle to it).
//!
//! A server hands its `Sockets` to the upgrade in the request extensions; [`super::endpoint`]
//! registers every socket it opens with the `Sockets` it finds there, if any.

use super::frame;
use super::{SendError, WebSocket};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use tokio::sync::Notify;

/// The open WebSockets of a server: closed all at once by [`Sockets::close_all`], counted by
/// [`Sockets::len`], awaited by [`Sockets::drained`].
///
/// A socket counts from when it opens (its handler's `on_open` has returned) until it has ended
/// (its handler's `on_close` has returned). Cloning gives another handle to the same registry.
#[derive(Clone, Default)]
pub struct Sockets {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// Wakes [`Sockets::drained`] when the last socket leaves.
    emptied: Notify,
}

#[derive(Default)]
struct State {
    open: HashMap<u64, WebSocket>,
    /// Set by [`Sockets::close_all`]: the close every socket that opens later gets at once.
    closing: Option<(u16, String)>,
}

impl Sockets {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the close handshake of every open socket with `code` and `reason`, and of every
    /// socket that opens later, at once. Each socket still ends as usual: its queued messages go
    /// out first, and the peer has the connection's close timeout to answer.
    ///
    /// Fails only if the close frame cannot be sent (see [`WebSocket::close`]); nothing is closed
    /// then. Calling it again closes nothing more: every open socket is closing already.
    pub fn close_all(&self, code: u16, reason: &str) -> Result<(), SendError> {
        if !frame::is_sendable_close_code(code) || reason.len() > 123 {
            return Err(SendError::InvalidClose(code));
        }
        let open: Vec<WebSocket> = {
            let mut state = self.inner.state.lock();
            state.closing.get_or_insert_with(|| (code, reason.to_owned()));
            state.open.values().cloned().collect()
        };
        // Outside the lock: a close takes the socket's own lock and wakes its task.
        for ws in open {
            let _ = ws.close(code, reason);
        }
        Ok(())
    }

    /// How many sockets are open.
    pub fn len(&self) -> usize {
        self.inner.state.lock().open.len()
    }

    /// True when no socket is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until no socket is open (at once if none is). After [`Sockets::close_all`], that is
    /// when every socket has finished its close handshake (or timed out) and its handler's
    /// `on_close` has returned; a socket that opens meanwhile is waited for too.
    pub async fn drained(&self) {
        loop {
            let emptied = self.inner.emptied.notified();
            tokio::pin!(emptied);
            // Registered before looking, so a socket leaving in between is not missed.
            emptied.as_mut().enable();
            if self.is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// Adds `ws`, which has just opened; closes it at once if [`Sockets::close_all`] was called.
    pub(super) fn register(&self, ws: &WebSocket) {
        let closing = {
            let mut state = self.inner.state.lock();
            state.open.insert(ws.id(), ws.clone());
            state.closing.clone()
        };
        if let Some((code, reason)) = closing {
            let _ = ws.close(code, &reason);
        }
    }

    /// Removes `ws`, which has ended.
    pub(super) fn leave(&self, ws: &WebSocket) {
        let emptied = {
            let mut state = self.inner.state.lock();
            let open = &mut state.open;
            let removed = open.remove(&ws.id()).is_some();
            // Give back the room of a past spike of connections.
            if open.capacity() > 1024 && open.len() < open.capacity() / 4 {
                open.shrink_to_fit();
            }
            removed && open.is_empty()
        };
        if emptied {
            self.inner.emptied.notify_waiters();
        }
    }
}

impl fmt::Debug for Sockets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("Sockets")
            .field("open", &state.open.len())
            .field("closing", &state.closing)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::Handshake;
    use std::time::Duration;

    fn socket() -> WebSocket {
        let handshake = Handshake {
            uri: http::Uri::from_static("/"),
            headers: http::HeaderMap::new(),
            peer: None,
        };
        WebSocket::new(handshake, 1024)
    }

    #[test]
    fn counts_the_sockets_between_register_and_leave() {
        let sockets = Sockets::new();
        let (a, b) = (socket(), socket());
        sockets.register(&a);
        sockets.register(&b);
        assert_eq!(sockets.len(), 2);
        sockets.leave(&a);
        assert_eq!(sockets.len(), 1);
        // Leaving twice, or a socket never registered, changes nothing.
        sockets.leave(&a);
        sockets.leave(&socket());
        assert_eq!(sockets.len(), 1);
        sockets.leave(&b);
        assert!(sockets.is_empty());
    }

    #[test]
    fn close_all_closes_the_open_sockets_and_every_later_one() {
        let sockets = Sockets::new();
        let open = socket();
        sockets.register(&open);
        assert_eq!(
            sockets.close_all(1000, "x".repeat(124).as_str()),
            Err(SendError::InvalidClose(1000))
        );
        assert_eq!(sockets.close_all(1005, ""), Err(SendError::InvalidClose(1005)));
        assert!(!open.is_closed(), "a refused close_all closes nothing");

        sockets.close_all(1001, "going away").expect("valid close");
        assert!(open.is_closed());
        // Closing sockets stay counted until they end.
        assert_eq!(sockets.len(), 1);

        let later = socket();
        sockets.register(&later);
        assert!(later.is_closed());
        assert_eq!(later.state.queue.lock().close, Some((1001, "going away".to_owned())));
        // A second call keeps the first close.
        sockets.close_all(1000, "again").expect("valid close");
        let last = socket();
        sockets.register(&last);
        assert_eq!(last.state.queue.lock().close, Some((1001, "going away".to_owned())));
    }

    #[tokio::test]
    async fn drained_waits_for_the_last_socket_to_leave() {
        let sockets = Sockets::new();
        // None open: at once.
        tokio::time::timeout(Duration::from_secs(1), sockets.drained())
            .await
            .expect("drained with no socket");

        let (a, b) = (socket(), socket());
        sockets.register(&a);
        sockets.register(&b);
        let waiter = tokio::spawn({
            let sockets = sockets.clone();
            async move { sockets.drained().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        sockets.leave(&a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one socket is still open");
        sockets.leave(&b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("drained once the last socket left")
            .expect("waiter task");
    }
}
