//! Bidirectional channels (Pulse's channels): a named line between the server and one connected
//! client, where both sides `on`, `emit` and `request` with a timeout, and either side closes.
//!
//! Handlers run when an event or request arrives: sync handlers inline, in arrival order;
//! async handlers in a task of their own, so a handler may itself `request` something from the
//! client without holding up the connection (replies are routed straight to the waiting request).

use crate::connection::Connection;
use crate::handlers::{self, EventHandler, HandlerOutput, Handlers, Remover};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// Why a channel operation failed (the seeds' `ChannelClosed` and `ChannelTimeout`, plus the
/// other side's error reply).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DuplexError {
    /// The channel is closed (by either side, or because the connection ended).
    #[error("channel '{0}' is closed")]
    Closed(String),
    /// No reply came within the timeout.
    #[error("request '{event}' on channel '{channel}' timed out after {timeout:?}")]
    Timeout {
        /// The channel.
        channel: String,
        /// The request's event.
        event: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The other side answered with an error.
    #[error("{0}")]
    Remote(String),
}

/// A bidirectional channel bound to one connection. Cheap to clone; all clones are the same channel.
#[derive(Clone)]
pub struct Duplex {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    connection: Connection,
    closed: AtomicBool,
    handlers: Arc<Handlers>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>,
    next_id: AtomicU64,
    closed_notify: Notify,
}

static LIVE: AtomicU64 = AtomicU64::new(0);

impl Drop for Inner {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Channels alive in this process (for leak checks and metrics).
pub fn live_channels() -> u64 {
    LIVE.load(Ordering::Relaxed)
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl Wire<'_> {
    fn send(&self, connection: &Connection) -> bool {
        serde_json::to_string(self).is_ok_and(|text| connection.ws().send_text(text).is_ok())
    }
}

impl Duplex {
    pub(crate) fn new(id: String, connection: Connection) -> Self {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Self {
            inner: Arc::new(Inner {
                id,
                connection,
                closed: AtomicBool::new(false),
                handlers: Arc::default(),
                pending: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                closed_notify: Notify::new(),
            }),
        }
    }

    /// The channel's id (its name on the wire).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The connection (session) this channel belongs to.
    pub fn connection(&self) -> &Connection {
        &self.inner.connection
    }

    /// The id of the connection (session).
    pub fn session_id(&self) -> u64 {
        self.inner.connection.id()
    }

    /// The path the connection was opened on.
    pub fn path(&self) -> &str {
        self.inner.connection.path()
    }

    /// True once closed by either side or by the end of the connection.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<(), DuplexError> {
        if self.is_closed() {
            Err(DuplexError::Closed(self.inner.id.clone()))
        } else {
            Ok(())
        }
    }

    fn add_handler(&self, event: &str, handler: EventHandler) -> Result<Remover, DuplexError> {
        self.check_open()?;
        Ok(self.inner.handlers.add(event, handler))
    }

    /// Registers an async handler for `event`. Several handlers per event run in registration
    /// order; for a request, the first that returns a value answers it.
    pub fn on<F, Fut, R>(&self, event: &str, handler: F) -> Result<Remover, DuplexError>
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerOutput,
    {
        self.add_handler(event, EventHandler::from_async(handler))
    }

    /// Registers a sync handler for `event`: it runs inline, in arrival order.
    pub fn on_sync<F, R>(&self, event: &str, handler: F) -> Result<Remover, DuplexError>
    where
        F: Fn(Value) -> R + Send + Sync + 'static,
        R: HandlerOutput,
    {
        self.add_handler(event, EventHandler::from_sync(handler))
    }

    /// Sends a fire-and-forget event to the client.
    pub fn emit(&self, event: &str, payload: impl Serialize) -> Result<(), DuplexError> {
        self.check_open()?;
        let payload = serde_json::to_value(payload).map_err(|e| DuplexError::Remote(e.to_string()))?;
        let wire = Wire {
            kind: "emit",
            channel: &self.inner.id,
            event: Some(event),
            payload: Some(&payload),
            id: None,
            error: None,
            reason: None,
        };
        if wire.send(&self.inner.connection) {
            Ok(())
        } else {
            Err(DuplexError::Closed(self.inner.id.clone()))
        }
    }

    /// Sends a request to the client and waits for its reply, at most `timeout`.
    pub async fn request(&self, event: &str, payload: impl Serialize, timeout: Duration) -> Result<Value, DuplexError> {
        self.check_open()?;
        let payload = serde_json::to_value(payload).map_err(|e| DuplexError::Remote(e.to_string()))?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().insert(id, tx);
        // close() may have run between check_open and insert: it drained `pending` before we added.
        if self.is_closed() {
            self.inner.pending.lock().remove(&id);
            return Err(DuplexError::Closed(self.inner.id.clone()));
        }
        let wire_id = Value::from(id);
        let wire = Wire {
            kind: "request",
            channel: &self.inner.id,
            event: Some(event),
            payload: Some(&payload),
            id: Some(&wire_id),
            error: None,
            reason: None,
        };
        if !wire.send(&self.inner.connection) {
            self.inner.pending.lock().remove(&id);
            return Err(DuplexError::Closed(self.inner.id.clone()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(text))) => Err(DuplexError::Remote(text)),
            Ok(Err(_)) => Err(DuplexError::Closed(self.inner.id.clone())),
            Err(_) => {
                self.inner.pending.lock().remove(&id);
                Err(DuplexError::Timeout {
                    channel: self.inner.id.clone(),
                    event: event.to_owned(),
                    timeout,
                })
            }
        }
    }

    /// Closes the channel: pending requests fail with `Closed`, handlers are dropped, the client is told.
    pub fn close(&self) {
        self.close_with("closed by server");
    }

    /// Closes with a reason the client sees.
    pub fn close_with(&self, reason: &str) {
        if self.shut() {
            let wire = Wire {
                kind: "close",
                channel: &self.inner.id,
                event: None,
                payload: None,
                id: None,
                error: None,
                reason: Some(reason),
            };
            wire.send(&self.inner.connection);
        }
    }

    /// Waits until the channel is closed.
    pub async fn closed(&self) {
        let notified = self.inner.closed_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    /// Marks closed, fails pending requests, drops handlers, leaves the connection's registry.
    /// Returns false if it was already closed.
    pub(crate) fn shut(&self) -> bool {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.inner.pending.lock().clear();
        self.inner.handlers.clear();
        self.inner.connection.forget_channel(&self.inner.id);
        self.inner.closed_notify.notify_waiters();
        true
    }

    /// An event from the client: run its handlers (no reply).
    pub(crate) fn dispatch_event(&self, event: &str, payload: Value) {
        let handlers = self.inner.handlers.of(event);
        if handlers.is_empty() {
            tracing::debug!(channel = %self.inner.id, event, "event without handler dropped");
            return;
        }
        let channel = self.inner.id.clone();
        let event = event.to_owned();
        handlers::run(handlers, payload, move |reply| {
            if let Err(err) = reply {
                tracing::warn!(%channel, %event, %err, "event handler failed");
            }
        });
    }

    /// A request from the client: run its handlers and reply with the first value, or an error.
    pub(crate) fn dispatch_request(&self, event: &str, payload: Value, id: Value) {
        let handlers = self.inner.handlers.of(event);
        if handlers.is_empty() {
            let error = format!("No handler for event '{event}' on channel '{}'", self.inner.id);
            self.send_reply(&id, Err(error));
            return;
        }
        let channel = self.clone();
        handlers::run(handlers, payload, move |reply| {
            channel.send_reply(&id, reply.map(|value| value.unwrap_or(Value::Null)));
        });
    }

    /// A reply from the client to one of our requests.
    pub(crate) fn resolve(&self, id: &Value, reply: Result<Value, String>) {
        let waiter = id.as_u64().and_then(|id| self.inner.pending.lock().remove(&id));
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(reply);
            }
            None => tracing::debug!(channel = %self.inner.id, %id, "reply to no pending request (late or unknown)"),
        }
    }

    pub(crate) fn send_reply(&self, id: &Value, reply: Result<Value, String>) {
        let (payload, error) = match &reply {
            Ok(value) => (Some(value), None),
            Err(text) => (None, Some(text.as_str())),
        };
        let wire = Wire {
            kind: "reply",
            channel: &self.inner.id,
            event: None,
            payload,
            id: Some(id),
            error,
            reason: None,
        };
        wire.send(&self.inner.connection);
    }
}

impl std::fmt::Debug for Duplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Duplex")
            .field("id", &self.inner.id)
            .field("session", &self.session_id())
            .field("closed", &self.is_closed())
            .finish()
    }
}
