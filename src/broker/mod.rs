//! Brokers carry publications between nodes. The in-memory broker (`memory.rs`, the default)
//! serves one process; the Redis broker (`redis.rs`, cargo feature `redis`) shares channels
//! between nodes through Redis pub/sub.
//!
//! A broker moves *encoded* publications: the node serializes a publication once, and every node
//! hands the same bytes to all its subscribers. A broker keeps no subscriber bookkeeping of its
//! own: the node's hub decides when a topic is wanted, and calls [`Broker::subscribe`] and
//! [`Broker::unsubscribe`] for one topic in order, never two at once. A new broker (NATS, say) is
//! one file implementing [`Broker`]: publish bytes on a subject, subscribe to a subject when the
//! node asks, and hand what arrives to [`Delivery::deliver`].

mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_presence;
mod stream;

pub use memory::MemoryBroker;
#[cfg(feature = "redis")]
pub use redis::RedisBroker;
pub use stream::{HistoryPolicy, StreamPosition, StreamRead};

use crate::node::Hub;
use crate::ws::Text;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// Why a broker could not publish or subscribe.
#[derive(Debug, Clone, thiserror::Error)]
#[error("broker unavailable: {0}")]
pub struct BrokerError(pub String);

/// Hands publications that arrive from the broker to this node's local subscribers.
#[derive(Clone)]
pub struct Delivery {
    hub: Arc<Hub>,
    /// What handles the node's control topic (`node/control.rs`).
    control: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Delivery {
    pub(crate) fn new(hub: Arc<Hub>, control: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            hub,
            control: Arc::new(control),
        }
    }

    /// Delivers an encoded publication (a protocol `data` message, UTF-8 JSON) to the local
    /// subscribers of `topic`; returns how many received it. Bytes that are not UTF-8 are dropped.
    pub fn deliver(&self, topic: &str, message: Bytes) -> usize {
        match Text::from_utf8(message) {
            Ok(text) => self.deliver_text(topic, &text),
            Err(_) => {
                tracing::warn!(topic, "dropping a publication that is not UTF-8");
                0
            }
        }
    }

    /// Delivers a publication already known to be text (the in-process path). Timed once per
    /// publication, not per subscriber (`switchboard_fanout_seconds`).
    pub(crate) fn deliver_text(&self, topic: &str, message: &Text) -> usize {
        if topic == crate::node::CONTROL_TOPIC {
            (self.control)(message.as_str());
            return 0;
        }
        let started = std::time::Instant::now();
        let delivered = self.hub.deliver(topic, message);
        self.hub.metrics.fanned_out(topic, delivered, started.elapsed());
        delivered
    }

    /// The broker's link to the other nodes was down and is up again: publications made meanwhile
    /// never reached this node. Closes the connections of every history topic here with 4010
    /// (`missed publications: reconnect and recover`), so their clients recover from the stream
    /// at once rather than at the topic's next publication; topics without history are untouched.
    /// Returns how many connections were closed.
    pub fn link_restored(&self) -> usize {
        self.hub.close_stream_topics()
    }
}

/// Moves publications between the nodes that share channels.
pub trait Broker: Send + Sync + 'static {
    /// Called once when the node starts, with the way to deliver to its subscribers.
    fn start(&self, delivery: Delivery);

    /// Sends an encoded publication to every node subscribed to `topic`, this one included, in
    /// publish order. Fails when the broker cannot take it (the caller reports the error).
    fn publish(&self, topic: &str, message: Text) -> BoxFuture<'static, Result<(), BrokerError>>;

    /// This node wants `topic`'s publications. Idempotent; the future completes when they flow.
    ///
    /// The call itself must not block: the node makes it while it holds the topic's lock (so that
    /// one topic's subscribe and unsubscribe calls reach the broker in order). Register the
    /// interest and queue the work in the call; wait in the returned future.
    fn subscribe(&self, topic: &str) -> BoxFuture<'static, Result<(), BrokerError>>;

    /// This node no longer has subscribers for `topic`. Must not block (called under the topic's
    /// lock, like [`subscribe`](Self::subscribe)).
    fn unsubscribe(&self, topic: &str);

    /// Publishes on a topic that keeps history: in one atomic step, assigns the stream's next
    /// offset `N`, completes the message as `head` + `,"offset":N}`, appends it to the stream
    /// (trimmed to `policy`) and sends it to every node subscribed to `topic`, in offset order.
    /// `head` is an encoded `data` message without its closing brace. Returns `N`.
    ///
    /// A broker without history keeps the default, which refuses.
    fn publish_to_stream(
        &self,
        topic: &str,
        head: String,
        policy: HistoryPolicy,
    ) -> BoxFuture<'static, Result<u64, BrokerError>> {
        let _ = (topic, head, policy);
        Box::pin(std::future::ready(Err(BrokerError(
            "this broker keeps no history".into(),
        ))))
    }

    /// Reads `topic`'s stream: the publications after offset `since` (all kept ones if `None`),
    /// at most `limit` (the newest `limit` when `since` is `None`), oldest first, and the stream's
    /// position. An unknown topic is an empty stream with a new epoch.
    ///
    /// When this node is subscribed to `topic`, the returned future completes only once every
    /// publication up to the position read that will reach this node has been handed to
    /// [`Delivery::deliver`]: the hub adds a joiner after its read, and an older publication
    /// arriving later would reach it twice (or look like a gap).
    fn read_stream(
        &self,
        topic: &str,
        since: Option<u64>,
        limit: usize,
        policy: HistoryPolicy,
    ) -> BoxFuture<'static, Result<StreamRead, BrokerError>> {
        let _ = (topic, since, limit, policy);
        Box::pin(std::future::ready(Err(BrokerError(
            "this broker keeps no history".into(),
        ))))
    }

    /// Whether the broker can serve the node now (`GET /readyz`): `Err` names the problem. The
    /// default, for a broker in the process, is always ready. Should answer within about a second.
    fn ready(&self) -> BoxFuture<'static, Result<(), BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// The history streams this broker keeps in this process and the publications in them, for
    /// `/metrics`; `None` (the default) when it keeps none here (Redis keeps them in Redis).
    /// Called at scrape time: it may walk its streams, but must not block.
    fn history_in_memory(&self) -> Option<(usize, usize)> {
        None
    }

    /// True when the broker shares presence between nodes (PROTOCOL.md, "Presence"): the node
    /// then records its members here and reads a topic's members from here. A broker that keeps
    /// the defaults shares none, and each node's own members are all there are.
    fn shares_presence(&self) -> bool {
        false
    }

    /// `client` is a member of `topic`; `member` is its JSON (`user`, `info`, `node`, `at`).
    fn presence_add(&self, topic: &str, client: &str, member: String) -> BoxFuture<'static, Result<(), BrokerError>> {
        let _ = (topic, client, member);
        Box::pin(std::future::ready(Ok(())))
    }

    /// `client` is no longer a member of `topic`.
    fn presence_remove(&self, topic: &str, client: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        let _ = (topic, client);
        Box::pin(std::future::ready(Ok(())))
    }

    /// The node named `node` is alive for `ttl` more: its members count until then, and no
    /// longer once it stops saying so (it died).
    fn presence_alive(&self, node: &str, ttl: std::time::Duration) -> BoxFuture<'static, Result<(), BrokerError>> {
        let _ = (node, ttl);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Every member of `topic` on a live node, as (client, member JSON), in the order they
    /// joined; the entries of dead nodes are dropped.
    fn presence_members(&self, topic: &str) -> BoxFuture<'static, Result<Vec<(String, String)>, BrokerError>> {
        let _ = topic;
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}
