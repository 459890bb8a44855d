//! The hub: which local connections subscribe to which topic, joining and leaving topics, and
//! delivery to the subscribers.
//!
//! **Joining and leaving are serialised per topic.** The broker subscribes to a topic when the
//! node's first subscriber joins and unsubscribes when the last one leaves. The hub makes those
//! broker calls while it holds the topic's lock, in the same step that adds or removes the
//! subscriber, so the broker sees one topic's subscribe and unsubscribe calls in exactly the order
//! of the hub's changes: a join can never find the broker's subscription still there and then lose
//! it to the unsubscribe of a leave that happened just before. (Only the *start* of a broker
//! subscription runs under the lock — it registers the interest and queues the command; waiting
//! for the broker's confirmation happens outside it.)
//!
//! **Delivery** holds a read lock while it appends the shared message to each subscriber's queue;
//! appending never waits (a slow subscriber is cut off by its own byte budget), so one lock hold
//! is bounded by the number of subscribers, and no lock is ever held across an `.await`.
//! The map is sharded by topic hash so unrelated topics do not contend.

use crate::broker::{Broker, BrokerError};
use crate::ws::{PreparedMessage, Text, WebSocket};
use parking_lot::RwLock;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

const SHARDS: usize = 16;

type Shard = HashMap<String, Topic>;

#[derive(Default)]
struct Topic {
    subscribers: HashMap<u64, WebSocket>,
    /// Joins waiting for the broker to confirm; they keep the topic (and its broker
    /// subscription) alive meanwhile.
    joining: usize,
}

impl Topic {
    fn is_unused(&self) -> bool {
        self.subscribers.is_empty() && self.joining == 0
    }
}

#[derive(Default)]
pub(crate) struct Hub {
    shards: [RwLock<Shard>; SHARDS],
    pub deliveries: AtomicU64,
    pub subscriptions: AtomicU64,
}

impl Hub {
    fn shard(&self, topic: &str) -> &RwLock<Shard> {
        let mut hasher = DefaultHasher::new();
        topic.hash(&mut hasher);
        &self.shards[hasher.finish() as usize % SHARDS]
    }

    /// Adds `ws` to `topic` once `broker` carries the topic, queueing `ack` to it under the same
    /// lock (no publication reaches it before the acknowledgement). Joining a topic `ws` is
    /// already in queues the acknowledgement again. On a broker error nothing changes.
    pub async fn join(&self, topic: &str, ws: &WebSocket, ack: Text, broker: &dyn Broker) -> Result<(), BrokerError> {
        let confirmed = {
            let mut shard = self.shard(topic).write();
            shard.entry(topic.to_owned()).or_default().joining += 1;
            broker.subscribe(topic)
        };
        // If this future is dropped while waiting, the guard still withdraws the join.
        let mut pending = Joining {
            hub: self,
            topic,
            broker,
            done: false,
        };
        let result = confirmed.await;
        pending.done = true;
        let mut shard = self.shard(topic).write();
        let Some(entry) = shard.get_mut(topic) else {
            // Unreachable: the pending join keeps the entry.
            return Err(BrokerError("the topic vanished while joining".into()));
        };
        entry.joining -= 1;
        match result {
            Ok(()) => {
                if entry.subscribers.insert(ws.id(), ws.clone()).is_none() {
                    self.subscriptions.fetch_add(1, Ordering::Relaxed);
                }
                let _ = ws.send_text(ack);
                Ok(())
            }
            Err(err) => {
                Self::release_if_unused(&mut shard, topic, broker);
                Err(err)
            }
        }
    }

    /// Removes connection `conn` from `topic`; the broker drops the topic with its last local
    /// subscriber.
    pub fn leave(&self, topic: &str, conn: u64, broker: &dyn Broker) {
        let mut shard = self.shard(topic).write();
        let Some(entry) = shard.get_mut(topic) else { return };
        if entry.subscribers.remove(&conn).is_some() {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        Self::release_if_unused(&mut shard, topic, broker);
    }

    /// Forgets `topic` and tells the broker, if nobody is subscribed or joining. Runs under the
    /// shard's write lock: that is what serialises a topic's broker calls.
    fn release_if_unused(shard: &mut Shard, topic: &str, broker: &dyn Broker) {
        if shard.get(topic).is_some_and(Topic::is_unused) {
            shard.remove(topic);
            broker.unsubscribe(topic);
        }
    }

    /// Queues `message` to every local subscriber of `topic`; returns how many got it.
    pub fn deliver(&self, topic: &str, message: &Text) -> usize {
        let shard = self.shard(topic).read();
        let Some(entry) = shard.get(topic) else { return 0 };
        let mut delivered = 0;
        // Framed once here; every subscriber queues the same bytes.
        let prepared = PreparedMessage::text(message);
        for ws in entry.subscribers.values() {
            if ws.send_prepared(&prepared).is_ok() {
                delivered += 1;
            }
        }
        drop(shard);
        self.deliveries.fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }
}

/// A join waiting for the broker. Dropped before it is done (the joining task was cancelled), it
/// withdraws the join.
struct Joining<'a> {
    hub: &'a Hub,
    topic: &'a str,
    broker: &'a dyn Broker,
    done: bool,
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut shard = self.hub.shard(self.topic).write();
        if let Some(entry) = shard.get_mut(self.topic) {
            entry.joining -= 1;
        }
        Hub::release_if_unused(&mut shard, self.topic, self.broker);
    }
}
