//! Event handlers of a bidirectional channel, shared by the server's [`Duplex`](crate::Duplex) and
//! the client's `ClientChannel`: the same `on` semantics, and the same dispatch of events and
//! requests, on both sides of the wire.
//!
//! Several handlers per event run in registration order; for a request, the first that returns a
//! value (or an error) answers it. Sync handlers run inline, in arrival order; a list with an
//! async handler runs in a task of its own, so a handler may itself `request` something from the
//! other side without holding up the connection that must read the reply.

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// What a handler's return value means for a request: a value answers it, an error becomes the
/// error reply, `()` / `None` leaves it to the next handler.
pub trait HandlerOutput: Send + 'static {
    /// `Ok(Some(v))` answers, `Ok(None)` passes, `Err(text)` fails the request.
    fn into_reply(self) -> Result<Option<Value>, String>;
}

impl HandlerOutput for () {
    fn into_reply(self) -> Result<Option<Value>, String> {
        Ok(None)
    }
}

impl HandlerOutput for Value {
    fn into_reply(self) -> Result<Option<Value>, String> {
        Ok(Some(self))
    }
}

impl HandlerOutput for Option<Value> {
    fn into_reply(self) -> Result<Option<Value>, String> {
        Ok(self)
    }
}

impl<T: HandlerOutput, E: std::fmt::Display + Send + 'static> HandlerOutput for Result<T, E> {
    fn into_reply(self) -> Result<Option<Value>, String> {
        self.map_err(|e| e.to_string()).and_then(HandlerOutput::into_reply)
    }
}

pub(crate) type Reply = Result<Option<Value>, String>;

#[derive(Clone)]
pub(crate) enum EventHandler {
    Sync(Arc<dyn Fn(Value) -> Reply + Send + Sync>),
    Async(Arc<dyn Fn(Value) -> BoxFuture<'static, Reply> + Send + Sync>),
}

impl EventHandler {
    pub fn from_async<F, Fut, R>(handler: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerOutput,
    {
        EventHandler::Async(Arc::new(move |payload| {
            handler(payload).map(HandlerOutput::into_reply).boxed()
        }))
    }

    pub fn from_sync<F, R>(handler: F) -> Self
    where
        F: Fn(Value) -> R + Send + Sync + 'static,
        R: HandlerOutput,
    {
        EventHandler::Sync(Arc::new(move |payload| handler(payload).into_reply()))
    }
}

/// The handlers of one channel, by event.
#[derive(Default)]
pub(crate) struct Handlers {
    by_event: Mutex<HashMap<String, Vec<(u64, EventHandler)>>>,
    next_id: AtomicU64,
}

impl Handlers {
    pub fn add(self: &Arc<Self>, event: &str, handler: EventHandler) -> Remover {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.by_event
            .lock()
            .entry(event.to_owned())
            .or_default()
            .push((id, handler));
        Remover {
            handlers: Arc::downgrade(self),
            event: event.to_owned(),
            id,
        }
    }

    /// The handlers of `event`, in registration order (a snapshot: handlers may change meanwhile).
    pub fn of(&self, event: &str) -> Vec<EventHandler> {
        self.by_event
            .lock()
            .get(event)
            .map(|list| list.iter().map(|(_, h)| h.clone()).collect())
            .unwrap_or_default()
    }

    /// Drops every handler (on close; this also breaks handler → channel reference cycles).
    pub fn clear(&self) {
        self.by_event.lock().clear();
    }

    /// An event from the other side on `channel`: runs its handlers (there is no reply).
    pub fn dispatch_event(&self, channel: &str, event: &str, payload: Value) {
        let handlers = self.of(event);
        if handlers.is_empty() {
            tracing::debug!(channel, event, "event without handler dropped");
            return;
        }
        let channel = channel.to_owned();
        let event = event.to_owned();
        run(handlers, payload, move |reply| {
            if let Err(err) = reply {
                tracing::warn!(%channel, %event, %err, "event handler failed");
            }
        });
    }

    /// A request from the other side: runs its handlers and answers through `reply` with the
    /// first value (`null` if none gives one) or error; without handlers, with `no_handler`.
    pub fn dispatch_request(
        &self,
        event: &str,
        payload: Value,
        no_handler: impl FnOnce() -> String,
        reply: impl FnOnce(Result<Value, String>) + Send + 'static,
    ) {
        let handlers = self.of(event);
        if handlers.is_empty() {
            return reply(Err(no_handler()));
        }
        run(handlers, payload, move |answer| {
            reply(answer.map(|value| value.unwrap_or(Value::Null)))
        });
    }
}

/// Removes the handler it was returned for. Dropping it keeps the handler.
pub struct Remover {
    handlers: Weak<Handlers>,
    event: String,
    id: u64,
}

impl Remover {
    /// Unregisters the handler.
    pub fn remove(self) {
        if let Some(handlers) = self.handlers.upgrade() {
            let mut by_event = handlers.by_event.lock();
            if let Some(list) = by_event.get_mut(&self.event) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    by_event.remove(&self.event);
                }
            }
        }
    }
}

impl std::fmt::Debug for Remover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remover")
            .field("event", &self.event)
            .field("id", &self.id)
            .finish()
    }
}

/// Runs handlers in order until one returns a value or an error, then calls `done` with it.
fn run(handlers: Vec<EventHandler>, payload: Value, done: impl FnOnce(Reply) + Send + 'static) {
    // A panicking handler becomes an error reply: a request is always answered.
    let panicked = || Err("handler panicked".to_owned());
    if handlers.iter().all(|h| matches!(h, EventHandler::Sync(_))) {
        let mut reply = Ok(None);
        for handler in &handlers {
            if let EventHandler::Sync(f) = handler {
                reply =
                    std::panic::catch_unwind(AssertUnwindSafe(|| f(payload.clone()))).unwrap_or_else(|_| panicked());
                if !matches!(reply, Ok(None)) {
                    break;
                }
            }
        }
        return done(reply);
    }
    tokio::spawn(async move {
        let mut reply = Ok(None);
        for handler in &handlers {
            reply = match handler {
                EventHandler::Sync(f) => {
                    std::panic::catch_unwind(AssertUnwindSafe(|| f(payload.clone()))).unwrap_or_else(|_| panicked())
                }
                EventHandler::Async(f) => AssertUnwindSafe(f(payload.clone()))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| panicked()),
            };
            if !matches!(reply, Ok(None)) {
                break;
            }
        }
        done(reply);
    });
}
