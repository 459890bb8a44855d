//! `Presence`: who is in each topic of a channel with presence — the node's local members, in
//! join order, their counts, and the joins and leaves waiting to be told (coalesced per topic over
//! the channel's window, then published as one `presence_diff`).
//!
//! A member is its connection's number and its identity (`Arc<Identity>`, shared with the
//! session, not copied): ~100 bytes per member with the indexes, so a 100 000-member room costs
//! ~10 MB. Counts are kept as members come and go, so `presence_stats` never walks the list.

use super::NodeInner;
use crate::auth::Identity;
use crate::broker::Broker;
use crate::protocol::PresenceMember;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::mpsc;

const SHARDS: usize = 16;

/// One member: a connection of this node, and who it is.
#[derive(Clone)]
pub(crate) struct Member {
    pub connection: u64,
    pub identity: Arc<Identity>,
}

/// Joins and leaves of one topic not yet told.
#[derive(Default)]
pub(crate) struct Diff {
    pub joins: Vec<Member>,
    /// Connection and user of each leave.
    pub leaves: Vec<(u64, String)>,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }
}

/// A topic's members and what is pending for it.
struct TopicMembers {
    /// The channel, and the subscribe-time parameters that name the topic (for `presence_diff`).
    channel: Arc<str>,
    params: Value,
    /// Members by join sequence (the listing order; a cursor is a sequence number).
    by_seq: BTreeMap<u64, Member>,
    /// Connection → its sequence.
    seq_of: HashMap<u64, u64>,
    next_seq: u64,
    /// Members per non-empty user id.
    users: HashMap<String, u32>,
    /// Joins and leaves since the last `presence_diff` (only with join_leave).
    pending: Diff,
    /// A flush is scheduled for `pending`.
    flushing: bool,
}

impl TopicMembers {
    fn is_idle(&self) -> bool {
        self.by_seq.is_empty() && self.pending.is_empty() && !self.flushing
    }
}

/// The node's presence, sharded by topic.
pub(crate) struct Presence {
    shards: [Mutex<HashMap<String, TopicMembers>>; SHARDS],
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }
}

/// A page of members.
pub(crate) struct Page {
    pub members: Vec<Member>,
    /// The cursor of the next page, when there is one.
    pub next: Option<u64>,
}

impl Presence {
    fn shard(&self, topic: &str) -> &Mutex<HashMap<String, TopicMembers>> {
        let mut hasher = DefaultHasher::new();
        topic.hash(&mut hasher);
        &self.shards[(hasher.finish() as usize) % SHARDS]
    }

    /// `member` joined `topic` (of `channel`, named by `params`). With `tell`, the join is
    /// pending for a `presence_diff`; returns true when the caller must schedule its flush.
    pub fn join(&self, topic: &str, channel: &str, params: &Value, member: Member, tell: bool) -> bool {
        let mut shard = self.shard(topic).lock();
        let entry = shard.entry(topic.to_owned()).or_insert_with(|| TopicMembers {
            channel: Arc::from(channel),
            params: params.clone(),
            by_seq: BTreeMap::new(),
            seq_of: HashMap::new(),
            next_seq: 1,
            users: HashMap::new(),
            pending: Diff::default(),
            flushing: false,
        });
        if entry.seq_of.contains_key(&member.connection) {
            return false;
        }
        let seq = entry.next_seq;
        entry.next_seq += 1;
        entry.seq_of.insert(member.connection, seq);
        let user = member.identity.user_id();
        if !user.is_empty() {
            *entry.users.entry(user.to_owned()).or_default() += 1;
        }
        if tell {
            // A leave of the same connection still pending (it left and came back within the
            // window) stays: the client sees it leave and join.
            entry.pending.joins.push(member.clone());
        }
        entry.by_seq.insert(seq, member);
        tell && !std::mem::replace(&mut entry.flushing, true)
    }

    /// Connection `connection` left `topic`. With `tell`, the leave is pending (or cancels its
    /// pending join); returns true when the caller must schedule a flush.
    pub fn leave(&self, topic: &str, connection: u64, tell: bool) -> bool {
        let mut shard = self.shard(topic).lock();
        let Some(entry) = shard.get_mut(topic) else {
            return false;
        };
        let Some(seq) = entry.seq_of.remove(&connection) else {
            return false;
        };
        let Some(member) = entry.by_seq.remove(&seq) else {
            return false;
        };
        let user = member.identity.user_id();
        if !user.is_empty() {
            if let Some(count) = entry.users.get_mut(user) {
                *count -= 1;
                if *count == 0 {
                    entry.users.remove(user);
                }
            }
        }
        let mut schedule = false;
        if tell {
            // Joined and left within the window: its join is not told, its leave is (a client
            // that read the members meanwhile has it listed; a leave of an unknown member is
            // harmless).
            if let Some(at) = entry.pending.joins.iter().position(|m| m.connection == connection) {
                entry.pending.joins.remove(at);
            }
            entry.pending.leaves.push((connection, user.to_owned()));
            schedule = !std::mem::replace(&mut entry.flushing, true);
        }
        if entry.is_idle() {
            shard.remove(topic);
        }
        schedule
    }

    /// Takes what is pending for `topic`: the channel, the params and the diff (`None` when
    /// nothing is).
    pub fn take_pending(&self, topic: &str) -> Option<(Arc<str>, Value, Diff)> {
        let mut shard = self.shard(topic).lock();
        let entry = shard.get_mut(topic)?;
        entry.flushing = false;
        let diff = std::mem::take(&mut entry.pending);
        let taken = (entry.channel.clone(), entry.params.clone(), diff);
        if entry.is_idle() {
            shard.remove(topic);
        }
        (!taken.2.is_empty()).then_some(taken)
    }

    /// Members of `topic` after the cursor `after` (a sequence), at most `limit` (0: all).
    pub fn list(&self, topic: &str, after: u64, limit: usize) -> Page {
        let shard = self.shard(topic).lock();
        let Some(entry) = shard.get(topic) else {
            return Page {
                members: Vec::new(),
                next: None,
            };
        };
        let mut members = Vec::new();
        let mut last = after;
        let mut more = false;
        for (seq, member) in entry.by_seq.range(after.saturating_add(1)..) {
            if limit != 0 && members.len() == limit {
                more = true;
                break;
            }
            members.push(member.clone());
            last = *seq;
        }
        Page {
            members,
            next: more.then_some(last),
        }
    }

    /// Topics with members, and members, on this node (for `/metrics`: walks every topic).
    pub fn sizes(&self) -> (usize, usize) {
        let mut sizes = (0, 0);
        for shard in &self.shards {
            for members in shard.lock().values().map(|topic| topic.by_seq.len()) {
                sizes.0 += usize::from(members > 0);
                sizes.1 += members;
            }
        }
        sizes
    }

    /// Members of `topic`, and its distinct non-empty users.
    pub fn stats(&self, topic: &str) -> (usize, usize) {
        let shard = self.shard(topic).lock();
        shard.get(topic).map_or((0, 0), |e| (e.by_seq.len(), e.users.len()))
    }
}

/// A member as a broker that shares presence keeps it: the wire's `user` and `info`, plus its
/// node (whose liveness decides whether it counts) and its join time (the listing order).
pub(crate) fn shared_member(member: &PresenceMember, node: &str) -> String {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({ "user": member.user, "info": member.info, "node": node, "at": at }).to_string()
}

/// A member read back from the broker.
pub(crate) fn member_of_shared(client: String, member: &str) -> PresenceMember {
    let value: Value = serde_json::from_str(member).unwrap_or(Value::Null);
    PresenceMember {
        client,
        user: value["user"].as_str().unwrap_or_default().to_owned(),
        info: value.get("info").filter(|info| !info.is_null()).cloned(),
    }
}

enum Op {
    Add {
        topic: String,
        client: String,
        member: String,
    },
    Remove {
        topic: String,
        client: String,
    },
}

/// Records this node's joins and leaves in a broker that shares presence, one at a time and in
/// order (a leave never overtakes its join), and renews the node's liveness every third of the
/// TTL — one key per node, however many members it has.
pub(crate) struct Sync {
    ttl: Duration,
    queue: OnceLock<mpsc::UnboundedSender<Op>>,
}

impl Sync {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            queue: OnceLock::new(),
        }
    }

    pub fn add(&self, node: &NodeInner, topic: &str, client: String, member: String) {
        self.send(
            node,
            Op::Add {
                topic: topic.to_owned(),
                client,
                member,
            },
        );
    }

    pub fn remove(&self, node: &NodeInner, topic: &str, client: String) {
        self.send(
            node,
            Op::Remove {
                topic: topic.to_owned(),
                client,
            },
        );
    }

    fn send(&self, node: &NodeInner, op: Op) {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let metrics = node.hub.metrics.clone();
            tokio::spawn(run(node.broker.clone(), node.name.clone(), self.ttl, rx, metrics));
            tx
        });
        let _ = queue.send(op);
    }
}

/// Ends when the node (the queue's sender) is gone.
async fn run(
    broker: std::sync::Arc<dyn Broker>,
    node: String,
    ttl: Duration,
    mut ops: mpsc::UnboundedReceiver<Op>,
    metrics: Arc<super::metrics::Metrics>,
) {
    // The node is alive before its first member is added: a member recorded first could be
    // read meanwhile by another node, taken for a dead node's and deleted. (An interval's first
    // tick is not ready at once — tokio's timer rounds it to the next millisecond — so a biased
    // select did not guarantee this order; tests/redis_presence.rs caught it in release builds.)
    let period = (ttl / 3).max(Duration::from_millis(100));
    if let Err(err) = broker.presence_alive(&node, ttl).await {
        metrics.broker_error(super::metrics::BrokerOp::Presence);
        tracing::warn!(%err, "presence: node liveness not recorded");
    }
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            biased;
            _ = heartbeat.tick() => {
                if let Err(err) = broker.presence_alive(&node, ttl).await {
                    metrics.broker_error(super::metrics::BrokerOp::Presence);
                    tracing::warn!(%err, "presence: node liveness not renewed");
                }
            }
            op = ops.recv() => {
                let result = match op {
                    None => return,
                    Some(Op::Add { topic, client, member }) => broker.presence_add(&topic, &client, member).await,
                    Some(Op::Remove { topic, client }) => broker.presence_remove(&topic, &client).await,
                };
                if let Err(err) = result {
                    metrics.broker_error(super::metrics::BrokerOp::Presence);
                    tracing::warn!(%err, "presence: a join or leave not recorded in the broker");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(connection: u64, user: &str) -> Member {
        Member {
            connection,
            identity: Arc::new(if user.is_empty() {
                Identity::anonymous()
            } else {
                Identity::user(user)
            }),
        }
    }

    #[test]
    fn members_counts_and_pages() {
        let p = Presence::default();
        let params = json!({"room": "a"});
        assert!(!p.join("room#a", "room", &params, member(1, "42"), false));
        p.join("room#a", "room", &params, member(2, "42"), false);
        p.join("room#a", "room", &params, member(3, ""), false);
        assert_eq!(p.stats("room#a"), (3, 1), "one user in two tabs, one anonymous");
        let first = p.list("room#a", 0, 2);
        assert_eq!(first.members.iter().map(|m| m.connection).collect::<Vec<_>>(), [1, 2]);
        let rest = p.list("room#a", first.next.unwrap(), 2);
        assert_eq!(rest.members.iter().map(|m| m.connection).collect::<Vec<_>>(), [3]);
        assert_eq!(rest.next, None);
        p.leave("room#a", 1, false);
        assert_eq!(p.stats("room#a"), (2, 1));
        p.leave("room#a", 2, false);
        assert_eq!(p.stats("room#a"), (1, 0));
        p.leave("room#a", 3, false);
        assert_eq!(p.stats("room#a"), (0, 0));
        assert!(
            p.shard("room#a").lock().is_empty(),
            "an empty topic leaves nothing behind"
        );
    }

    #[test]
    fn joins_and_leaves_coalesce_until_taken() {
        let p = Presence::default();
        let params = json!({"room": "a"});
        assert!(
            p.join("t", "room", &params, member(1, "a"), true),
            "the first schedules"
        );
        assert!(
            !p.join("t", "room", &params, member(2, "b"), true),
            "then it is scheduled"
        );
        assert!(!p.leave("t", 2, true), "joined and left within the window");
        let (channel, taken_params, diff) = p.take_pending("t").unwrap();
        assert_eq!((&*channel, taken_params), ("room", params.clone()));
        assert_eq!(diff.joins.iter().map(|m| m.connection).collect::<Vec<_>>(), [1]);
        assert_eq!(diff.leaves, [(2, "b".to_owned())], "told as a leave only");
        assert!(p.take_pending("t").is_none());
        assert!(p.leave("t", 1, true), "a new window");
        let (_, _, diff) = p.take_pending("t").unwrap();
        assert_eq!(diff.leaves, [(1, "a".to_owned())]);
        assert!(p.shard("t").lock().is_empty());
    }
}
