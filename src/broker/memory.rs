//! The in-memory broker, the default: publications go straight to this node's hub.

use super::{Broker, BrokerError, Delivery};
use crate::ws::Text;
use futures_util::future::BoxFuture;
use std::sync::OnceLock;

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
            delivery.deliver_text(topic, &message);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn subscribe(&self, _topic: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn unsubscribe(&self, _topic: &str) {}
}
