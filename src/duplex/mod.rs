//! Bidirectional channels (Pulse's channels): a named line between the server and one connected
//! client, where both sides `on`, `emit` and `request` with a timeout, and either side closes.
//!
//! * [`Duplex`] (this file): the server's end of one channel;
//! * `handlers.rs`: the `on` handlers and the dispatch of events and requests to them;
//! * `pending.rs`: requests waiting for their reply.
//!
//! The last two are shared with the client's end (`client::ClientChannel`), so both sides of the
//! wire behave the same. Handlers run when an event or request arrives: sync handlers inline, in
//! arrival order; async handlers in a task of their own, so a handler may itself `request`
//! something from the other side without holding up the connection (replies are routed straight
//! to the waiting request).

mod handlers;
mod pending;

pub(crate) use handlers::{EventHandler, Handlers};
pub use handlers::{HandlerOutput, Remover};
pub(crate) use pending::{Pending, Unanswered, Waiter};

use crate::protocol::{text, DuplexMessage};
use crate::session::Connection;
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

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
    pending: Pending<DuplexError>,
    closed_notify: Notify,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let counters = &self.connection.node().inner.counters;
        counters.duplex_channels.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Duplex {
    pub(crate) fn new(id: String, connection: Connection) -> Self {
        let counters = &connection.node().inner.counters;
        counters.duplex_channels.fetch_add(1, Ordering::Relaxed);
        Self {
            inner: Arc::new(Inner {
                id,
                connection,
                closed: AtomicBool::new(false),
                handlers: Arc::default(),
                pending: Pending::default(),
                closed_notify: Notify::new(),
            }),
        }
    }

    /// The channel's id (its name on the wire).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The connection this channel belongs to.
    pub fn connection(&self) -> &Connection {
        &self.inner.connection
    }

    /// The id of the connection this channel belongs to ([`Connection::id`]).
    pub fn connection_id(&self) -> u64 {
        self.inner.connection.id()
    }

    /// The id of the connection this channel belongs to.
    #[deprecated(note = "the same number as `connection_id`, which names it as the rest of the API does")]
    pub fn session_id(&self) -> u64 {
        self.connection_id()
    }

    /// The path the connection was opened on.
    pub fn path(&self) -> &str {
        self.inner.connection.path()
    }

    /// True once closed by either side or by the end of the connection.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn closed_error(&self) -> DuplexError {
        DuplexError::Closed(self.inner.id.clone())
    }

    fn check_open(&self) -> Result<(), DuplexError> {
        if self.is_closed() {
            Err(self.closed_error())
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

    /// Queues a message to the client; false if the connection is closed.
    fn send(&self, message: DuplexMessage) -> bool {
        self.inner.connection.ws().send_text(message.encode()).is_ok()
    }

    /// Sends a fire-and-forget event to the client.
    pub fn emit(&self, event: &str, payload: impl Serialize) -> Result<(), DuplexError> {
        self.check_open()?;
        let payload = serde_json::to_value(payload).map_err(|e| DuplexError::Remote(e.to_string()))?;
        let message = DuplexMessage::Emit {
            channel: self.inner.id.clone(),
            event: event.to_owned(),
            payload,
            id: None,
        };
        if self.send(message) {
            Ok(())
        } else {
            Err(self.closed_error())
        }
    }

    /// Sends a request to the client and waits for its reply, at most `timeout`.
    pub async fn request(&self, event: &str, payload: impl Serialize, timeout: Duration) -> Result<Value, DuplexError> {
        self.check_open()?;
        let payload = serde_json::to_value(payload).map_err(|e| DuplexError::Remote(e.to_string()))?;
        let deadline = Instant::now() + timeout;
        let waiter = self.inner.pending.register().ok_or_else(|| self.closed_error())?;
        let id = waiter.id;
        let message = DuplexMessage::Request {
            channel: self.inner.id.clone(),
            event: event.to_owned(),
            payload,
            id: Value::from(id),
        };
        if !self.send(message) {
            self.inner.pending.forget(id);
            return Err(self.closed_error());
        }
        match self.inner.pending.wait(waiter, deadline).await {
            Ok(answer) => answer,
            Err(Unanswered::Dropped) => Err(self.closed_error()),
            Err(Unanswered::TimedOut) => Err(DuplexError::Timeout {
                channel: self.inner.id.clone(),
                event: event.to_owned(),
                timeout,
            }),
        }
    }

    /// Closes the channel: pending requests fail with `Closed`, handlers are dropped, the client is told.
    pub fn close(&self) {
        self.close_with("closed by server");
    }

    /// Closes with a reason the client sees.
    pub fn close_with(&self, reason: &str) {
        if self.shut() {
            self.send(DuplexMessage::Close {
                channel: self.inner.id.clone(),
                reason: Some(reason.to_owned()),
            });
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
        self.inner.pending.close(|| self.closed_error());
        self.inner.handlers.clear();
        self.inner.connection.forget_channel(&self.inner.id);
        self.inner.closed_notify.notify_waiters();
        true
    }

    /// An event from the client: run its handlers (no reply).
    pub(crate) fn dispatch_event(&self, event: &str, payload: Value) {
        self.inner.handlers.dispatch_event(&self.inner.id, event, payload);
    }

    /// A request from the client: run its handlers and reply with the first value, or an error.
    pub(crate) fn dispatch_request(&self, event: &str, payload: Value, id: Value) {
        let channel = self.clone();
        let no_handler = || text::no_handler(event, Some(&self.inner.id));
        self.inner
            .handlers
            .dispatch_request(event, payload, no_handler, move |answer| channel.send_reply(id, answer));
    }

    /// A reply from the client to one of our requests.
    pub(crate) fn resolve(&self, id: &Value, reply: Result<Value, String>) {
        if !self.inner.pending.resolve(id, reply.map_err(DuplexError::Remote)) {
            tracing::debug!(channel = %self.inner.id, %id, "reply to no pending request (late or unknown)");
        }
    }

    pub(crate) fn send_reply(&self, id: Value, outcome: Result<Value, String>) {
        self.send(DuplexMessage::Reply {
            channel: self.inner.id.clone(),
            id,
            outcome,
        });
    }
}

impl std::fmt::Debug for Duplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Duplex")
            .field("id", &self.inner.id)
            .field("connection", &self.connection_id())
            .field("closed", &self.is_closed())
            .finish()
    }
}
