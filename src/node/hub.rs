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
//! **History topics** (streams) add two duties. A joiner gets the stream's position with its
//! acknowledgement and, when it asks to recover, the publications it missed; publications that
//! arrive while it joins are held in its own buffer and delivered after those, so it sees every
//! offset once, in order. And the hub watches each stream's offsets on the live path: a jump (or a
//! restart, a new epoch) means this node missed publications, so it delivers nothing newer and
//! closes the topic's connections with 4010; their clients reconnect and recover from the stream.
//!
//! **Delivery** holds a read lock while it appends the shared message to each subscriber's queue;
//! appending never waits (a slow subscriber is cut off by its own byte budget), so one lock hold
//! is bounded by the number of subscribers, and no lock is ever held across an `.await`.
//! The map is sharded by topic hash so unrelated topics do not contend.

use crate::broker::{Broker, BrokerError, HistoryPolicy, StreamPosition, StreamRead};
use crate::ws::{PreparedMessage, Text, WebSocket};
use parking_lot::{Mutex, RwLock};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The close code and reason for the subscribers of a stream whose offsets jumped on this node.
pub(crate) const MISSED: (u16, &str) = (4010, "missed publications: reconnect and recover");

const SHARDS: usize = 16;

type Shard = HashMap<String, Topic>;

#[derive(Default)]
struct Topic {
    subscribers: HashMap<u64, WebSocket>,
    /// Joins waiting for the broker to confirm; they keep the topic (and its broker
    /// subscription) alive meanwhile.
    joining: usize,
    /// For a history topic: the offsets seen, and the joiners' buffers. Boxed: most topics have
    /// no history, and their entries stay as small as before.
    stream: Option<Box<TopicStream>>,
}

#[derive(Default)]
struct TopicStream {
    /// The newest offset delivered on this node (0: none yet).
    last: AtomicU64,
    /// Publications that arrived while each joiner was reading the stream, by connection.
    joiners: Mutex<HashMap<u64, Vec<(u64, Text)>>>,
}

/// Makes a history joiner's acknowledgement from the stream's position and, when it recovers,
/// whether the recovery worked.
pub(crate) type StreamAck = Box<dyn FnOnce(&StreamPosition, Option<bool>) -> Text + Send>;

/// How a joiner of a history topic is acknowledged.
pub(crate) struct StreamJoin {
    pub policy: HistoryPolicy,
    /// The position the client recovers from, if it asked to.
    pub recover: Option<StreamPosition>,
    /// The most publications a recovery may replay.
    pub recovery_limit: usize,
    /// The acknowledgement, from the stream's position and (when recovering) whether it worked.
    pub ack: StreamAck,
}

/// What a join acknowledges with.
pub(crate) enum Ack {
    /// A topic without history: this message.
    Plain(Text),
    /// A history topic.
    Stream(StreamJoin),
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
    /// What `/metrics` counts beyond these (by namespace, fan-out times, broker errors).
    pub metrics: std::sync::Arc<super::metrics::Metrics>,
}

impl Hub {
    fn shard(&self, topic: &str) -> &RwLock<Shard> {
        let mut hasher = DefaultHasher::new();
        topic.hash(&mut hasher);
        &self.shards[hasher.finish() as usize % SHARDS]
    }

    /// Adds `ws` to `topic` once `broker` carries the topic, queueing the acknowledgement to it
    /// under the same lock (no publication reaches it before the acknowledgement). On a history
    /// topic the acknowledgement carries the stream's position, followed by the recovered
    /// publications and those that arrived meanwhile. On a broker error nothing changes.
    pub async fn join(&self, topic: &str, ws: &WebSocket, ack: Ack, broker: &dyn Broker) -> Result<(), BrokerError> {
        let conn = ws.id();
        let confirmed = {
            let mut shard = self.shard(topic).write();
            let entry = shard.entry(topic.to_owned()).or_default();
            entry.joining += 1;
            if let Ack::Stream(_) = ack {
                let stream = entry.stream.get_or_insert_with(Box::default);
                stream.joiners.lock().insert(conn, Vec::new());
            }
            broker.subscribe(topic)
        };
        // If this future is dropped while waiting, the guard still withdraws the join.
        let mut pending = Joining {
            hub: self,
            topic,
            conn,
            broker,
            done: false,
        };
        let mut result = confirmed.await;
        // A history topic: read the stream once publications flow (those after the read are in
        // the joiner's buffer).
        let mut read = None;
        if let (Ok(()), Ack::Stream(join)) = (&result, &ack) {
            let (since, limit) = match &join.recover {
                // One more than the limit: "too many missed" is then visible.
                Some(position) => (Some(position.offset), join.recovery_limit.saturating_add(1)),
                None => (None, 0),
            };
            match broker.read_stream(topic, since, limit, join.policy).await {
                Ok(stream) => read = Some(stream),
                Err(err) => result = Err(err),
            }
        }
        pending.done = true;
        let mut shard = self.shard(topic).write();
        let Some(entry) = shard.get_mut(topic) else {
            // Unreachable: the pending join keeps the entry.
            return Err(BrokerError("the topic vanished while joining".into()));
        };
        entry.joining -= 1;
        let buffered = entry.stream.as_ref().and_then(|s| s.joiners.lock().remove(&conn));
        let stream_join = match (result, ack, read) {
            (Ok(()), Ack::Plain(ack), _) => {
                let _ = ws.send_text(ack);
                None
            }
            (Ok(()), Ack::Stream(join), Some(read)) => Some((join, read)),
            // A failure — or a history join without its read, which a confirmed join cannot be —
            // leaves the topic as it was.
            (outcome, _, _) => {
                Self::release_if_unused(&mut shard, topic, broker);
                return Err(outcome
                    .err()
                    .unwrap_or_else(|| BrokerError("the stream was not read".into())));
            }
        };
        if let Some((join, read)) = stream_join {
            if let Some(stream) = &entry.stream {
                // The first joiner on this node tells it where the stream is.
                let _ = stream
                    .last
                    .compare_exchange(0, read.position.offset, Ordering::AcqRel, Ordering::Acquire);
            }
            Self::acknowledge_stream(ws, join, read, buffered.unwrap_or_default());
        }
        if entry.subscribers.insert(conn, ws.clone()).is_none() {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Queues a history joiner's acknowledgement, the publications it recovers, and those that
    /// arrived while it joined (each offset once, in order).
    fn acknowledge_stream(ws: &WebSocket, join: StreamJoin, read: StreamRead, buffered: Vec<(u64, Text)>) {
        let StreamRead {
            position,
            publications,
            complete,
        } = read;
        let recovered = join.recover.as_ref().map(|from| {
            from.epoch == position.epoch
                && from.offset <= position.offset
                && complete
                && publications.len() <= join.recovery_limit
        });
        let _ = ws.send_text((join.ack)(&position, recovered));
        let mut sent = position.offset;
        if recovered == Some(true) {
            for (_, message) in publications {
                let _ = ws.send_text(message);
            }
        }
        for (offset, message) in buffered {
            if offset > sent {
                sent = offset;
                let _ = ws.send_text(message);
            }
        }
    }

    /// How many topics have local subscribers.
    pub fn topic_count(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().values().filter(|t| !t.subscribers.is_empty()).count())
            .sum()
    }

    /// Every topic with local subscribers, and how many.
    pub fn topic_counts(&self) -> Vec<(String, usize)> {
        let mut counts = Vec::new();
        for shard in &self.shards {
            let shard = shard.read();
            let topics = shard.iter().filter(|(_, t)| !t.subscribers.is_empty());
            counts.extend(topics.map(|(topic, t)| (topic.clone(), t.subscribers.len())));
        }
        counts
    }

    /// True when connection `conn` subscribes to `topic` here.
    pub fn has(&self, topic: &str, conn: u64) -> bool {
        let shard = self.shard(topic).read();
        shard
            .get(topic)
            .is_some_and(|entry| entry.subscribers.contains_key(&conn))
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

    /// Closes the connections of every history topic on this node with 4010: the broker's link
    /// was restored after an outage, publications may have been lost, and their clients recover
    /// from the stream. A topic's `last` stays as it was: a connection that joins meanwhile is
    /// closed too if the next publication shows the gap. Returns how many connections were closed.
    pub fn close_stream_topics(&self) -> usize {
        let mut closed = 0;
        for shard in &self.shards {
            let shard = shard.read();
            for (topic, entry) in shard.iter().filter(|(_, entry)| entry.stream.is_some()) {
                tracing::warn!(
                    topic,
                    subscribers = entry.subscribers.len(),
                    "broker link restored: closing a history topic's connections (4010)"
                );
                for ws in entry.subscribers.values() {
                    if ws.close(MISSED.0, MISSED.1).is_ok() {
                        closed += 1;
                    }
                }
            }
        }
        closed
    }

    /// Queues `message` to every local subscriber of `topic`; returns how many got it.
    pub fn deliver(&self, topic: &str, message: &Text) -> usize {
        let shard = self.shard(topic).read();
        let Some(entry) = shard.get(topic) else { return 0 };
        if let Some(stream) = &entry.stream {
            // A `presence_diff` is no publication: it has no offset and is not in the stream.
            if !is_presence_diff(message) && !Self::in_sequence(topic, entry, stream, message) {
                return 0;
            }
        }
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

impl Hub {
    /// Checks a history topic's publication against the offsets this node has seen: in sequence,
    /// it is handed to the joiners' buffers as well and delivered; a repeat is dropped; a jump or a
    /// restart closes the topic's connections with 4010 (their clients recover from the stream).
    /// Runs under the shard's read lock; publications of one topic come one at a time (the broker
    /// delivers a topic's stream in order, from one task or under its stream's lock).
    fn in_sequence(topic: &str, entry: &Topic, stream: &TopicStream, message: &Text) -> bool {
        let Some(offset) = offset_of(message.as_str()) else {
            tracing::warn!(topic, "dropping a publication without offset on a history topic");
            return false;
        };
        let last = stream.last.load(Ordering::Acquire);
        // Anything but the next offset — a jump, a repeat, a stream that restarted — means this
        // node's view of the stream broke: nothing is delivered out of order or twice.
        if last != 0 && offset != last + 1 {
            tracing::warn!(
                topic,
                last,
                offset,
                "missed publications on a history topic: closing its connections (4010)"
            );
            stream.last.store(offset, Ordering::Release);
            for ws in entry.subscribers.values() {
                let _ = ws.close(MISSED.0, MISSED.1);
            }
            return false;
        }
        stream.last.store(offset, Ordering::Release);
        for buffer in stream.joiners.lock().values_mut() {
            buffer.push((offset, message.clone()));
        }
        true
    }
}

/// A `presence_diff` (encoded with `type` first, as every message of the node).
fn is_presence_diff(message: &Text) -> bool {
    message.as_str().starts_with(r#"{"type":"presence_diff""#)
}

/// The offset at the end of an encoded publication: `…,"offset":N}`.
fn offset_of(message: &str) -> Option<u64> {
    let digits = message.strip_suffix('}')?;
    let at = digits.rfind(',')?;
    digits[at + 1..].strip_prefix("\"offset\":")?.parse().ok()
}

/// A join waiting for the broker. Dropped before it is done (the joining task was cancelled), it
/// withdraws the join.
struct Joining<'a> {
    hub: &'a Hub,
    topic: &'a str,
    conn: u64,
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
            if let Some(stream) = &entry.stream {
                stream.joiners.lock().remove(&self.conn);
            }
        }
        Hub::release_if_unused(&mut shard, self.topic, self.broker);
    }
}
