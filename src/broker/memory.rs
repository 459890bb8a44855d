//! The in-memory broker, the default: publications go straight to this node's hub; streams of
//! history topics are kept in the process (`stream.rs`), lost with it (a restarted node has new
//! epochs).

use super::stream::MemoryStreams;
use super::{Broker, BrokerError, Delivery, HistoryPolicy, StreamRead};
use crate::ws::Text;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use std::sync::OnceLock;

/// The default broker: delivers in-process, nothing to configure.
#[derive(Default)]
pub struct MemoryBroker {
    delivery: OnceLock<Delivery>,
    /// Streams, sharded by topic like the hub. A shard is held while a publication is appended
    /// *and delivered*, so that one topic's publications reach the hub in offset order.
    streams: [Mutex<MemoryStreams>; SHARDS],
}

const SHARDS: usize = 16;

impl MemoryBroker {
    /// A new in-memory broker.
    pub fn new() -> Self {
        Self::default()
    }

    fn streams(&self, topic: &str) -> &Mutex<MemoryStreams> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(topic, &mut hasher);
        &self.streams[std::hash::Hasher::finish(&hasher) as usize % SHARDS]
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

    fn publish_to_stream(
        &self,
        topic: &str,
        head: String,
        policy: HistoryPolicy,
    ) -> BoxFuture<'static, Result<u64, BrokerError>> {
        let mut streams = self.streams(topic).lock();
        let (offset, message) = streams.append(topic, &head, policy);
        if let Some(delivery) = self.delivery.get() {
            delivery.deliver_text(topic, &message);
        }
        drop(streams);
        Box::pin(std::future::ready(Ok(offset)))
    }

    fn read_stream(
        &self,
        topic: &str,
        since: Option<u64>,
        limit: usize,
        policy: HistoryPolicy,
    ) -> BoxFuture<'static, Result<StreamRead, BrokerError>> {
        let read = self.streams(topic).lock().read(topic, since, limit, policy);
        Box::pin(std::future::ready(Ok(read)))
    }

    fn history_in_memory(&self) -> Option<(usize, usize)> {
        let sizes = self.streams.iter().map(|shard| shard.lock().sizes());
        Some(sizes.fold((0, 0), |(streams, kept), (s, k)| (streams + s, kept + k)))
    }
}
