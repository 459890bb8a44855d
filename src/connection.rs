//! `Connection`: what server code sees of one client connection — its identity, its handshake,
//! and the bidirectional channels open on it.

use crate::duplex::{Duplex, DuplexError};
use crate::ws::{Handshake, WebSocket};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// One client connection. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    ws: WebSocket,
    /// Open channels by id. A channel leaves this map when it closes, which also breaks the
    /// channel → connection → channel reference cycle.
    /// `None` once the connection has ended: a channel registered after that would never be
    /// closed (and would keep the connection alive), so registration is refused under this lock.
    channels: Mutex<Option<HashMap<String, Duplex>>>,
}

impl Connection {
    pub(crate) fn new(ws: WebSocket) -> Self {
        Self {
            inner: Arc::new(Inner {
                ws,
                channels: Mutex::new(Some(HashMap::new())),
            }),
        }
    }

    /// The connection's (session's) id, unique in this process.
    pub fn id(&self) -> u64 {
        self.inner.ws.id()
    }

    /// The path the connection was opened on.
    pub fn path(&self) -> &str {
        self.inner.ws.handshake().path()
    }

    /// The opening handshake: path, query, headers, peer address.
    pub fn handshake(&self) -> &Handshake {
        self.inner.ws.handshake()
    }

    pub(crate) fn ws(&self) -> &WebSocket {
        &self.inner.ws
    }

    /// Opens a channel from the server side, with `id` or a generated UUID, and announces it to
    /// the client (`{"type":"opened","channel":ID}`).
    pub fn open_channel(&self, id: Option<&str>) -> Result<Duplex, DuplexError> {
        let id = id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let channel = self
            .register(&id)
            .ok_or_else(|| DuplexError::Remote(format!("Channel '{id}' is already open.")))?;
        let announce = serde_json::json!({ "type": "opened", "channel": id }).to_string();
        if self.inner.ws.send_text(announce).is_err() {
            channel.shut();
            return Err(DuplexError::Closed(id));
        }
        Ok(channel)
    }

    /// Creates and registers a channel; `None` if one with that id is open already.
    pub(crate) fn register(&self, id: &str) -> Option<Duplex> {
        if self.inner.ws.is_closed() {
            return None;
        }
        let mut guard = self.inner.channels.lock();
        let channels = guard.as_mut()?;
        if channels.contains_key(id) {
            return None;
        }
        let channel = Duplex::new(id.to_owned(), self.clone());
        channels.insert(id.to_owned(), channel.clone());
        Some(channel)
    }

    /// The open channel with this id.
    pub fn channel(&self, id: &str) -> Option<Duplex> {
        self.inner
            .channels
            .lock()
            .as_ref()
            .and_then(|channels| channels.get(id).cloned())
    }

    pub(crate) fn forget_channel(&self, id: &str) {
        if let Some(channels) = self.inner.channels.lock().as_mut() {
            channels.remove(id);
        }
    }

    /// Closes every channel without telling the client (the connection is gone).
    pub(crate) fn close_all(&self) {
        let channels = self.inner.channels.lock().take().unwrap_or_default();
        for channel in channels.into_values() {
            channel.shut();
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id())
            .field("path", &self.path())
            .finish()
    }
}
