//! The hub: which local connections subscribe to which topic, and delivery to them.
//!
//! Delivery holds a read lock while it appends the shared message to each subscriber's queue;
//! appending never waits (a slow subscriber is cut off by its own byte budget), so one lock hold
//! is bounded by the number of subscribers, and no lock is ever held across an `.await`.
//! The map is sharded by topic hash so unrelated topics do not contend.

use crate::ws::{PreparedMessage, Text, WebSocket};
use parking_lot::RwLock;
use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

const SHARDS: usize = 16;

#[derive(Default)]
struct Topic {
    subscribers: HashMap<u64, WebSocket>,
    /// Subscriptions waiting for the broker to confirm; they keep the broker subscription alive.
    pending: usize,
}

#[derive(Default)]
pub(crate) struct Hub {
    shards: [RwLock<HashMap<String, Topic>>; SHARDS],
    pub deliveries: AtomicU64,
    pub subscriptions: AtomicU64,
}

impl Hub {
    fn shard(&self, topic: &str) -> &RwLock<HashMap<String, Topic>> {
        let mut hasher = DefaultHasher::new();
        topic.hash(&mut hasher);
        &self.shards[hasher.finish() as usize % SHARDS]
    }

    /// Announces a subscription about to be made, so the topic's broker subscription stays alive
    /// while the broker confirms. Returns true if the topic had no local interest before.
    pub fn reserve(&self, topic: &str) -> bool {
        let mut shard = self.shard(topic).write();
        let entry = shard.entry(topic.to_owned()).or_default();
        entry.pending += 1;
        entry.pending == 1 && entry.subscribers.is_empty()
    }

    /// Completes a reservation: adds `ws` and, under the same lock, queues `ack` to it, so no
    /// publication is delivered between the two (the client sees the ack first).
    /// Returns false if `ws` was already subscribed (the ack is queued all the same).
    pub fn commit(&self, topic: &str, ws: &WebSocket, ack: Text) -> bool {
        let mut shard = self.shard(topic).write();
        let entry = shard.entry(topic.to_owned()).or_default();
        entry.pending = entry.pending.saturating_sub(1);
        let added = entry.subscribers.insert(ws.id(), ws.clone()).is_none();
        let _ = ws.send_text(ack);
        if added {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        added
    }

    /// Cancels a reservation. Returns true if the topic has no local interest left.
    pub fn release(&self, topic: &str) -> bool {
        let mut shard = self.shard(topic).write();
        Self::drop_if_unused(&mut shard, topic, |t| t.pending = t.pending.saturating_sub(1))
    }

    /// Removes `conn` from `topic`. Returns true if that was the topic's last local interest.
    pub fn unsubscribe(&self, topic: &str, conn: u64) -> bool {
        let mut shard = self.shard(topic).write();
        let mut removed = false;
        let last = Self::drop_if_unused(&mut shard, topic, |t| removed = t.subscribers.remove(&conn).is_some());
        if removed {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        last
    }

    fn drop_if_unused(shard: &mut HashMap<String, Topic>, topic: &str, change: impl FnOnce(&mut Topic)) -> bool {
        match shard.entry(topic.to_owned()) {
            Entry::Occupied(mut entry) => {
                change(entry.get_mut());
                if entry.get().subscribers.is_empty() && entry.get().pending == 0 {
                    entry.remove();
                    true
                } else {
                    false
                }
            }
            Entry::Vacant(_) => false,
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

    /// True if `topic` has local subscribers or pending subscriptions.
    pub fn has_topic(&self, topic: &str) -> bool {
        self.shard(topic).read().contains_key(topic)
    }

    /// The topics with local subscribers (used by a broker to restore its subscriptions).
    pub fn topics(&self) -> Vec<String> {
        self.shards
            .iter()
            .flat_map(|s| s.read().keys().cloned().collect::<Vec<_>>())
            .collect()
    }
}
