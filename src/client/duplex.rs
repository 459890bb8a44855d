//! `ClientChannel`: the client's end of a bidirectional channel, the mirror of the server's
//! [`Duplex`](crate::Duplex): `on`/`on_sync` handlers, `emit`, `request` with a timeout, `close`.
//! Its handlers and its table of pending requests are the server's own (`crate::duplex`).

use super::state::ClientState;
use super::ClientError;
pub use crate::duplex::Remover;
use crate::duplex::{EventHandler, HandlerOutput, Handlers, Pending, Unanswered};
use crate::protocol::{text, ClientMessage, DuplexMessage};
use crate::ws::WebSocket;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where a channel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// The `open` was sent; the server has not answered yet.
    Opening,
    /// Open on the current connection.
    Open,
    /// The connection dropped; the channel is opened again (same name, same parameters) once the
    /// client has reconnected. Handlers stay registered.
    Reopening,
    /// Closed for good (by either side, refused on re-open, or the client closed).
    Closed,
}

/// A bidirectional channel seen from the client. Cheap to clone; all clones are the same channel.
///
/// Handlers registered with [`on`](Self::on) / [`on_sync`](Self::on_sync) answer the server's
/// events and requests; for a request, the first handler that returns a value answers it, an
/// error becomes the error reply, and a request with no handler is answered with the error
/// `No handler for event 'E'`.
#[derive(Clone)]
pub struct ClientChannel {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    /// The open parameters (client-opened channels, re-sent on re-open); `None` if the server
    /// opened the channel.
    params: Option<Value>,
    client: Weak<ClientState>,
    state: watch::Sender<ChannelState>,
    close_reason: Mutex<Option<String>>,
    handlers: Arc<Handlers>,
    pending: Pending<ClientError>,
}

impl ClientChannel {
    pub(crate) fn new(name: String, params: Option<Value>, client: Weak<ClientState>, state: ChannelState) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                params,
                client,
                state: watch::channel(state).0,
                close_reason: Mutex::new(None),
                handlers: Arc::default(),
                pending: Pending::default(),
            }),
        }
    }

    /// The channel's name (its id on the wire).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// True if the server opened this channel (announced with `{"type":"opened"}`).
    pub fn is_server_opened(&self) -> bool {
        self.inner.params.is_none()
    }

    /// The parameters it was opened with (`Null` for a server-opened channel).
    pub fn params(&self) -> Value {
        self.inner.params.clone().unwrap_or(Value::Null)
    }

    /// The current state.
    pub fn state(&self) -> ChannelState {
        *self.inner.state.borrow()
    }

    /// A receiver of the state, to watch it change.
    pub fn watch_state(&self) -> watch::Receiver<ChannelState> {
        self.inner.state.subscribe()
    }

    /// True while open on the current connection.
    pub fn is_open(&self) -> bool {
        self.state() == ChannelState::Open
    }

    /// True once closed for good.
    pub fn is_closed(&self) -> bool {
        self.state() == ChannelState::Closed
    }

    /// Why it closed (the server's `reason`, the re-open refusal, ...), once closed.
    pub fn close_reason(&self) -> Option<String> {
        self.inner.close_reason.lock().clone()
    }

    /// Waits until the channel is closed for good.
    pub async fn closed(&self) {
        let mut rx = self.inner.state.subscribe();
        let _ = rx.wait_for(|s| *s == ChannelState::Closed).await;
    }

    /// Waits until the channel is open (e.g. re-opened after a reconnect), at most `timeout`.
    pub async fn ready(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut rx = self.inner.state.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| matches!(s, ChannelState::Open | ChannelState::Closed)),
        )
        .await;
        match waited {
            Ok(Ok(state)) if *state == ChannelState::Open => Ok(()),
            Ok(_) => Err(self.closed_error()),
            Err(_) => Err(ClientError::Timeout {
                what: format!("opening channel '{}'", self.inner.name),
                timeout,
            }),
        }
    }

    pub(crate) fn same(&self, other: &ClientChannel) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn set_state(&self, state: ChannelState) {
        self.inner.state.send_if_modified(|current| {
            // Closed is final.
            if *current == ChannelState::Closed || *current == state {
                return false;
            }
            *current = state;
            true
        });
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed(self.inner.name.clone())
    }

    /// Checks the channel may send now.
    fn check_open(&self) -> Result<Arc<ClientState>, ClientError> {
        match self.state() {
            ChannelState::Open => self.inner.client.upgrade().ok_or_else(|| self.closed_error()),
            ChannelState::Closed => Err(self.closed_error()),
            ChannelState::Opening | ChannelState::Reopening => Err(ClientError::NotOpen(self.inner.name.clone())),
        }
    }

    fn add_handler(&self, event: &str, handler: EventHandler) -> Result<Remover, ClientError> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        Ok(self.inner.handlers.add(event, handler))
    }

    /// Registers an async handler for `event` (it runs in a task of its own). Several handlers
    /// per event run in registration order; for a request, the first value answers it.
    pub fn on<F, Fut, R>(&self, event: &str, handler: F) -> Result<Remover, ClientError>
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerOutput,
    {
        self.add_handler(event, EventHandler::from_async(handler))
    }

    /// Registers a sync handler for `event`: it runs on the connection's task, in arrival order.
    pub fn on_sync<F, R>(&self, event: &str, handler: F) -> Result<Remover, ClientError>
    where
        F: Fn(Value) -> R + Send + Sync + 'static,
        R: HandlerOutput,
    {
        self.add_handler(event, EventHandler::from_sync(handler))
    }

    /// Sends a fire-and-forget event to the server.
    pub fn emit(&self, event: &str, payload: impl Serialize) -> Result<(), ClientError> {
        let client = self.check_open()?;
        let payload = serde_json::to_value(payload).map_err(|e| ClientError::Encode(e.to_string()))?;
        client.send(&ClientMessage::Duplex(DuplexMessage::Emit {
            channel: self.inner.name.clone(),
            event: event.to_owned(),
            payload,
            id: None,
        }))
    }

    /// Sends a request to the server and waits for its reply, at most `timeout`.
    ///
    /// Fails with [`ClientError::Timeout`], [`ClientError::Closed`] (the channel closed meanwhile,
    /// from either side), [`ClientError::Disconnected`] (the connection dropped meanwhile) or
    /// [`ClientError::Remote`] (the server's error reply, e.g. `Denied`).
    pub async fn request(&self, event: &str, payload: impl Serialize, timeout: Duration) -> Result<Value, ClientError> {
        let client = self.check_open()?;
        let payload = serde_json::to_value(payload).map_err(|e| ClientError::Encode(e.to_string()))?;
        let deadline = Instant::now() + timeout;
        let waiter = self.inner.pending.register().ok_or_else(|| self.closed_error())?;
        let id = waiter.id;
        // A disconnect between check_open and register failed the waiters before this one.
        if !self.is_open() {
            self.inner.pending.forget(id);
            return Err(self.check_open().err().unwrap_or_else(|| self.closed_error()));
        }
        let message = ClientMessage::Duplex(DuplexMessage::Request {
            channel: self.inner.name.clone(),
            event: event.to_owned(),
            payload,
            id: Value::from(id),
        });
        if let Err(err) = client.send(&message) {
            self.inner.pending.forget(id);
            return Err(err);
        }
        drop(client);
        match self.inner.pending.wait(waiter, deadline).await {
            Ok(answer) => answer,
            Err(Unanswered::Dropped) => Err(self.closed_error()),
            Err(Unanswered::TimedOut) => Err(ClientError::Timeout {
                what: format!("request '{event}' on channel '{}'", self.inner.name),
                timeout,
            }),
        }
    }

    /// Closes the channel: pending requests fail with `Closed`, handlers are dropped, the server
    /// is told (its pending requests fail with `Closed` at once).
    pub fn close(&self) {
        self.close_with("closed by client");
    }

    /// Closes with a reason the server sees.
    pub fn close_with(&self, reason: &str) {
        if self.shut(self.closed_error(), reason) {
            if let Some(client) = self.inner.client.upgrade() {
                client.forget_channel(self);
                let _ = client.send(&ClientMessage::Duplex(DuplexMessage::Close {
                    channel: self.inner.name.clone(),
                    reason: Some(reason.to_owned()),
                }));
            }
        }
    }

    /// Marks closed, fails pending requests with `error`, drops handlers. False if already closed.
    pub(crate) fn shut(&self, error: ClientError, reason: &str) -> bool {
        let mut changed = false;
        self.inner.state.send_if_modified(|state| {
            changed = *state != ChannelState::Closed;
            *state = ChannelState::Closed;
            changed
        });
        if !changed {
            return false;
        }
        *self.inner.close_reason.lock() = Some(reason.to_owned());
        // Pending requests learn whether the connection dropped or the server closed it for good.
        let error = match error {
            ClientError::Disconnected | ClientError::ServerClosed(_) => error,
            _ => self.closed_error(),
        };
        self.inner.pending.close(|| error.clone());
        self.inner.handlers.clear();
        true
    }

    /// The connection dropped: pending requests fail with `Disconnected`; the channel waits to be
    /// re-opened.
    pub(crate) fn disconnected(&self) {
        self.set_state(ChannelState::Reopening);
        self.inner.pending.fail_all(|| ClientError::Disconnected);
    }

    /// A reply from the server to one of our requests.
    pub(crate) fn resolve(&self, id: &Value, reply: Result<Value, String>) {
        if !self.inner.pending.resolve(id, reply.map_err(ClientError::Remote)) {
            tracing::debug!(channel = %self.inner.name, %id, "reply to no pending request (late or unknown)");
        }
    }

    /// An event from the server: run its handlers (no reply).
    pub(crate) fn dispatch_event(&self, event: &str, payload: Value) {
        self.inner.handlers.dispatch_event(&self.inner.name, event, payload);
    }

    /// A request from the server: run its handlers and reply on the connection it came on (a
    /// reply computed after a reconnect is not sent: the request belonged to the old connection).
    pub(crate) fn dispatch_request(&self, ws: &WebSocket, event: &str, payload: Value, id: Value) {
        let ws = ws.clone();
        let channel = self.inner.name.clone();
        let no_handler = || text::no_handler(event, None);
        self.inner
            .handlers
            .dispatch_request(event, payload, no_handler, move |outcome| {
                send_reply(&ws, channel, id, outcome)
            });
    }
}

/// Answers a request of the server on `ws`.
pub(crate) fn send_reply(ws: &WebSocket, channel: String, id: Value, outcome: Result<Value, String>) {
    let reply = ClientMessage::Duplex(DuplexMessage::Reply { channel, id, outcome });
    // A connection that ended has nobody left to answer.
    let _ = ws.send_text(reply.encode());
}

impl std::fmt::Debug for ClientChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientChannel")
            .field("name", &self.inner.name)
            .field("server_opened", &self.is_server_opened())
            .field("state", &self.state())
            .finish()
    }
}
