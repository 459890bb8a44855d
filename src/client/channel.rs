//! `ClientChannel`: the client's end of a bidirectional channel, the mirror of the server's
//! [`Duplex`](crate::Duplex): `on`/`on_sync` handlers, `emit`, `request` with a timeout, `close`.

use super::shared::Shared;
use super::ClientError;
pub use crate::handlers::Remover;
use crate::handlers::{self, EventHandler, HandlerOutput, Handlers};
use crate::ws::WebSocket;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

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
    client: Weak<Shared>,
    state: watch::Sender<ChannelState>,
    close_reason: Mutex<Option<String>>,
    handlers: Arc<Handlers>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, ClientError>>>>,
    next_id: AtomicU64,
}

impl ClientChannel {
    pub(crate) fn new(name: String, params: Option<Value>, client: Weak<Shared>, state: ChannelState) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                params,
                client,
                state: watch::channel(state).0,
                close_reason: Mutex::new(None),
                handlers: Arc::default(),
                pending: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
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
    fn check_open(&self) -> Result<Arc<Shared>, ClientError> {
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
        client.send(&json!({ "type": "emit", "channel": self.inner.name, "event": event, "payload": payload }))
    }

    /// Sends a request to the server and waits for its reply, at most `timeout`.
    ///
    /// Fails with [`ClientError::Timeout`], [`ClientError::Closed`] (the channel closed meanwhile,
    /// from either side), [`ClientError::Disconnected`] (the connection dropped meanwhile) or
    /// [`ClientError::Remote`] (the server's error reply, e.g. `Denied`).
    pub async fn request(&self, event: &str, payload: impl Serialize, timeout: Duration) -> Result<Value, ClientError> {
        let client = self.check_open()?;
        let payload = serde_json::to_value(payload).map_err(|e| ClientError::Encode(e.to_string()))?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().insert(id, tx);
        // A close or a disconnect between check_open and insert drained `pending` before we added.
        if !self.is_open() {
            self.inner.pending.lock().remove(&id);
            return Err(self.check_open().err().unwrap_or_else(|| self.closed_error()));
        }
        let message =
            json!({ "type": "request", "channel": self.inner.name, "event": event, "payload": payload, "id": id });
        if let Err(err) = client.send(&message) {
            self.inner.pending.lock().remove(&id);
            return Err(err);
        }
        drop(client);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => {
                self.inner.pending.lock().remove(&id);
                Err(ClientError::Timeout {
                    what: format!("request '{event}' on channel '{}'", self.inner.name),
                    timeout,
                })
            }
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
                let _ = client.send(&json!({ "type": "close", "channel": self.inner.name, "reason": reason }));
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
        let error = match error {
            ClientError::Disconnected => ClientError::Disconnected,
            _ => self.closed_error(),
        };
        for (_, waiter) in self.inner.pending.lock().drain() {
            let _ = waiter.send(Err(error.clone()));
        }
        self.inner.handlers.clear();
        true
    }

    /// The connection dropped: pending requests fail with `Disconnected`; the channel waits to be
    /// re-opened.
    pub(crate) fn disconnected(&self) {
        self.set_state(ChannelState::Reopening);
        for (_, waiter) in self.inner.pending.lock().drain() {
            let _ = waiter.send(Err(ClientError::Disconnected));
        }
    }

    /// A reply from the server to one of our requests.
    pub(crate) fn resolve(&self, id: Option<&Value>, reply: Result<Value, String>) {
        let waiter = id
            .and_then(Value::as_u64)
            .and_then(|id| self.inner.pending.lock().remove(&id));
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(reply.map_err(ClientError::Remote));
            }
            None => tracing::debug!(channel = %self.inner.name, ?id, "reply to no pending request (late or unknown)"),
        }
    }

    /// An event from the server: run its handlers (no reply).
    pub(crate) fn dispatch_event(&self, event: &str, payload: Value) {
        let handlers = self.inner.handlers.of(event);
        if handlers.is_empty() {
            tracing::debug!(channel = %self.inner.name, event, "event without handler dropped");
            return;
        }
        let channel = self.inner.name.clone();
        let event = event.to_owned();
        handlers::run(handlers, payload, move |reply| {
            if let Err(err) = reply {
                tracing::warn!(%channel, %event, %err, "event handler failed");
            }
        });
    }

    /// A request from the server: run its handlers and reply on the connection it came on (a
    /// reply computed after a reconnect is not sent: the request belonged to the old connection).
    pub(crate) fn dispatch_request(&self, ws: &WebSocket, event: &str, payload: Value, id: Value) {
        let handlers = self.inner.handlers.of(event);
        if handlers.is_empty() {
            send_reply(
                ws,
                &self.inner.name,
                &id,
                Err(format!("No handler for event '{event}'")),
            );
            return;
        }
        let ws = ws.clone();
        let channel = self.inner.name.clone();
        handlers::run(handlers, payload, move |reply| {
            send_reply(&ws, &channel, &id, reply.map(|value| value.unwrap_or(Value::Null)));
        });
    }
}

/// `{"type":"reply",...}` with the payload or the error.
pub(crate) fn send_reply(ws: &WebSocket, channel: &str, id: &Value, reply: Result<Value, String>) {
    let message = match reply {
        Ok(payload) => json!({ "type": "reply", "channel": channel, "id": id, "payload": payload }),
        Err(error) => json!({ "type": "reply", "channel": channel, "id": id, "error": error }),
    };
    // A connection that ended has nobody left to answer.
    let _ = ws.send_text(message.to_string());
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
