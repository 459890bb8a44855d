//! `Connection`: what server code sees of one client connection — its id, its handshake, and
//! the bidirectional channels open on it.

use crate::auth::Identity;
use crate::duplex::{Duplex, DuplexError};
use crate::node::Node;
use crate::protocol::{text, ServerMessage};
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
    node: Node,
    /// The client id, as `connected` reports it.
    client: String,
    /// Who the connection is; replaced on `refresh`.
    identity: Mutex<Arc<Identity>>,
    /// Open channels by id. A channel leaves this map when it closes, which also breaks the
    /// channel → connection → channel reference cycle.
    /// `None` once the connection has ended: a channel registered after that would never be
    /// closed (and would keep the connection alive), so registration is refused under this lock.
    channels: Mutex<Option<HashMap<String, Duplex>>>,
}

impl Connection {
    pub(crate) fn new(ws: WebSocket, node: Node, client: String, identity: Arc<Identity>) -> Self {
        Self {
            inner: Arc::new(Inner {
                ws,
                node,
                client,
                identity: Mutex::new(identity),
                channels: Mutex::new(Some(HashMap::new())),
            }),
        }
    }

    /// The connection id: unique in this process, the same number as [`WebSocket::id`].
    pub fn id(&self) -> u64 {
        self.inner.ws.id()
    }

    /// The client id: unique across the nodes that share a broker, as `connected` reports it
    /// and presence lists it.
    pub fn client_id(&self) -> &str {
        &self.inner.client
    }

    /// Who is connected: the identity the authentication hook gave (anonymous on a node
    /// without authentication, or before `connected`).
    pub fn identity(&self) -> Identity {
        Identity::clone(&self.inner.identity.lock())
    }

    pub(crate) fn identity_arc(&self) -> Arc<Identity> {
        self.inner.identity.lock().clone()
    }

    pub(crate) fn set_identity(&self, identity: Arc<Identity>) {
        *self.inner.identity.lock() = identity;
    }

    /// Closes the connection with `code` and `reason` (at most 123 bytes): 4000–4499 tell the
    /// client to reconnect with backoff, 4500–4999 not to reconnect (PROTOCOL.md, "Close codes").
    pub fn close(&self, code: u16, reason: &str) -> Result<(), crate::ws::SendError> {
        self.inner.ws.close(code, reason)
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

    pub(crate) fn node(&self) -> &Node {
        &self.inner.node
    }

    /// Opens a channel from the server side, with `id` or a generated UUID, and announces it to
    /// the client (`{"type":"opened","channel":ID}`).
    pub fn open_channel(&self, id: Option<&str>) -> Result<Duplex, DuplexError> {
        let id = id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let channel = self
            .register(&id)
            .ok_or_else(|| DuplexError::Remote(text::already_open(&id)))?;
        let announce = ServerMessage::Opened {
            channel: id.clone(),
            id: None,
        };
        if self.inner.ws.send_text(announce.encode()).is_err() {
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
