//! Brokers carry publications between nodes. The in-memory broker (the default) serves one
//! process; `broker_redis` shares channels between nodes through Redis pub/sub.
//!
//! A broker moves *encoded* publications: the node serializes a publication once, and every node
//! hands the same bytes to all its subscribers. A new broker (NATS, say) is one file implementing
//! [`Broker`]: publish bytes on a subject, subscribe to a subject when the node's hub asks, and hand
//! what arrives to [`Delivery::deliver`].

use crate::hub::Hub;
use crate::ws::Text;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::sync::{Arc, OnceLock};

/// Why a broker could not publish or subscribe.
#[derive(Debug, Clone, thiserror::Error)]
#[error("broker unavailable: {0}")]
pub struct BrokerError(pub String);

/// Hands publications that arrive from the broker to this node's local subscribers.
#[derive(Clone)]
pub struct Delivery {
    hub: Arc<Hub>,
}

impl Delivery {
    pub(crate) fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }

    /// Delivers an encoded publication (a protocol `data` message, UTF-8 JSON) to the local
    /// subscribers of `topic`; returns how many received it. Bytes that are not UTF-8 are dropped.
    pub fn deliver(&self, topic: &str, message: Bytes) -> usize {
        match Text::from_utf8(message) {
            Ok(text) => self.hub.deliver(topic, &text),
            Err(_) => {
                tracing::warn!(topic, "dropping a publication that is not UTF-8");
                0
            }
        }
    }

    /// True if this node has local interest in `topic` (one shard lookup, no copy).
    pub fn has_topic(&self, topic: &str) -> bool {
        self.hub.has_topic(topic)
    }

    /// The topics this node has local subscribers for (to restore subscriptions after a reconnect).
    pub fn topics(&self) -> Vec<String> {
        self.hub.topics()
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
    fn subscribe(&self, topic: &str) -> BoxFuture<'static, Result<(), BrokerError>>;

    /// This node no longer has subscribers for `topic`.
    fn unsubscribe(&self, topic: &str);
}

/// The default broker: delivers in-process, nothing to configure.
#[derive(Default)]
pub struct MemoryBroker {
    delivery: OnceLock<Delivery>,
}

impl MemoryBroker {
    /// A new in-memory broker.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Broker for MemoryBroker {
    fn start(&self, delivery: Delivery) {
        let _ = self.delivery.set(delivery);
    }

    fn publish(&self, topic: &str, message: Text) -> BoxFuture<'static, Result<(), BrokerError>> {
        if let Some(delivery) = self.delivery.get() {
            delivery.hub.deliver(topic, &message);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn subscribe(&self, _topic: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn unsubscribe(&self, _topic: &str) {}
}
