//! The Redis broker: nodes share their channels through Redis pub/sub.
//!
//! * **What crosses Redis**: a publication is encoded once by the publishing node (the protocol
//!   `data` message) and sent as those bytes with one `PUBLISH switchboard:<topic>`. Every node
//!   subscribed to the topic — the publisher's included — receives the bytes once and hands them to
//!   its local subscribers, who share them. A node never delivers its own publications directly, so
//!   every subscriber, wherever it is, gets each publication exactly once, in the order one
//!   publisher published on one topic (Redis keeps the order of one connection's commands).
//! * **Connections**: one multiplexed connection for `PUBLISH`, and one pub/sub connection owned by
//!   a task that takes subscribe/unsubscribe commands over a queue, so they reach Redis in the order
//!   the node made them.
//! * **Subscriptions** follow the node's hub, which subscribes when its first local subscriber of a
//!   topic arrives and unsubscribes when the last leaves, one topic's calls in order (see
//!   `node/hub.rs`). [`Broker::subscribe`] is idempotent; callers for a topic whose subscription is
//!   in flight all wait for the same confirmation.
//! * **Failure**: when Redis goes away, connections to clients stay up; publishing and new
//!   subscriptions fail with a [`BrokerError`] naming Redis and the cause; the pub/sub task
//!   reconnects with jittered exponential backoff (50 ms doubling up to 2 s) and subscribes again to
//!   every topic the node still has subscribers for. Publications made while the link was down are
//!   lost (Redis pub/sub does not store them).
//!
//! The state of the subscriptions (`Subscriptions`) is the truth; queued commands are hints that the
//! task checks against it when it runs them, so a subscribe racing an unsubscribe ends in the state
//! the node asked for last.
//!
//! # History (streams)
//!
//! Topics of history channels keep a stream in Redis, shared by every node: a client that
//! reconnects to any node recovers from it.
//!
//! * **Data layout**, per topic `T` (in braces, a Redis Cluster hash tag: the two keys one script
//!   touches share a slot):
//!   * `switchboard:stream-meta:{T}`, a hash: `epoch` (8 random letters and digits) and `offset`
//!     (the newest offset, 0 before the first publication). It expires `max(ttl, 24 h)` after the
//!     topic's last publication or read: a quiet topic keeps its epoch, so its subscribers are not
//!     sent away (4010, `recovered: false`) merely because nothing was published for a while; the
//!     cost is one small hash per topic used in the last day.
//!   * `switchboard:stream:{T}`, a Redis Stream of the kept publications: entry ID `N-0` for
//!     offset `N`, fields `m` (the complete `data` message) and `t` (when it was published, Redis
//!     time in ms). It expires `ttl` after the last publication.
//!
//!   A Stream rather than a list or a sorted set: `XADD … MAXLEN size` appends and trims to `size`
//!   in one command, and with the offset as the entry ID, "the publications after offset `s`" is
//!   `XRANGE T (s+1)-0 + COUNT limit`, a lookup by ID (a list would need the offset → index
//!   arithmetic redone after every trim; a sorted set needs the message as a unique member and a
//!   second structure for the times). Entries older than `ttl` are deleted from the head (`XDEL`,
//!   oldest first, the times being in order) by every publication and read before anything is
//!   returned, so an expired publication is never read.
//! * **Publishing** is one Lua script, run atomically by Redis: create the meta with the epoch the
//!   node generated if it does not exist (and then drop any stream left from a lost past), `HINCRBY`
//!   the offset, build `head + ,"offset":N}`, `XADD` with `MAXLEN size`, drop expired entries, set
//!   the TTLs, and `PUBLISH` the message on `switchboard:T`. Scripts run one at a time, so offsets
//!   are consecutive across all nodes, and the `PUBLISH`es leave Redis in offset order: every node
//!   receives a topic's publications in offset order (what the hub's gap check relies on).
//! * **Reading** is one Lua script: the position (creating the meta, with a new epoch and offset 0,
//!   if there is none, so that the position a subscriber is given stays valid), the expired entries
//!   dropped, and the entries after `since` (`XRANGE`, at most `limit`; `complete` if the first is
//!   `since + 1` or nothing was published after `since`) or the newest `limit` (`XREVRANGE`). The
//!   semantics are those of the memory broker's `MemoryStreams::read`.
//! * **Reads and the live path**: the read's answer and the publications come over different
//!   connections, so a publication Redis sent before the read may still be on its way to this node
//!   when the read's answer arrives. When this node is subscribed to the topic, a read therefore
//!   waits for a `PING` sent on the pub/sub connection after the read: once its `PONG` is back and
//!   the publications received before it are delivered, every publication up to the position read
//!   that this node will get has reached the hub (a joiner's buffer holds them; none arrives after
//!   the joiner is added).
//! * **Round trips**: a publication is 1 (`EVALSHA`; 3 the first time after Redis lost its script
//!   cache: `NOSCRIPT`, `SCRIPT LOAD`, `EVALSHA` again); a read is 1, plus 1 `PING` on the pub/sub
//!   connection when this node is subscribed to the topic (a join, or `history` from a subscriber).
//! * **Redis lost its data** (restarted without persistence): the next publication or read finds no
//!   meta and creates a new epoch, offsets start again from 1, and a client recovering with the old
//!   epoch is told `recovered: false`.
//! * **Pub/sub outage**: publications made while this node's pub/sub connection was down never
//!   reach it. When the connection is restored, the broker calls [`Delivery::link_restored`]: the
//!   hub closes the connections of every history topic with 4010 at once (their clients reconnect
//!   and recover from the stream), without waiting for the next publication to show the gap.

use super::stream::new_epoch;
use super::{Broker, BrokerError, Delivery, HistoryPolicy, StreamPosition, StreamRead};
use crate::ws::Text;
use bytes::Bytes;
use futures_util::future::{self, BoxFuture, FutureExt};
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{MultiplexedConnection, PubSub, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, RedisError, Script, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Prefix of the Redis channel names: topic `chat` is Redis channel `switchboard:chat`.
pub const CHANNEL_PREFIX: &str = "switchboard:";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often the pub/sub connection is checked with a `PING` (finds silent network failures).
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long a readiness check waits for Redis to answer a `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed attempt to connect the publishing connection, publishes fail at once for this
/// long instead of each trying again (bounds the cost of an outage on a busy node).
const PUBLISH_RETRY_AFTER: Duration = Duration::from_millis(100);
/// Most subscribe/unsubscribe commands sent to Redis in one pipelined batch.
const BATCH: usize = 512;
/// Prefix of a history topic's meta hash (`epoch`, `offset`): `switchboard:stream-meta:{T}`.
const META_PREFIX: &str = "switchboard:stream-meta:";
/// Prefix of a history topic's Redis Stream: `switchboard:stream:{T}`.
const STREAM_PREFIX: &str = "switchboard:stream:";
/// A stream's position (its meta) is kept at least this long after its last publication or read.
const META_TTL_MIN: Duration = Duration::from_secs(24 * 3600);
/// The longest TTL given to Redis (about 10 years): `PEXPIRE` refuses what would overflow.
const TTL_MAX_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
/// The largest stream size given to Redis (a Lua number holds integers exactly up to 2^53).
const SIZE_MAX: usize = 1 << 40;

/// Lua shared by both scripts. Redis ≥ 5: `replicate_commands` lets a script that read `TIME`
/// write (a no-op from Redis 7 on).
const LUA_COMMON: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
local function id_offset(id)
  return tonumber(string.match(id, '^(%d+)'))
end
local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
-- Deletes the entries published before `cutoff` (ms), oldest first.
local function trim_expired(stream, cutoff)
  while true do
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    if not oldest then return end
    local t = tonumber(field(oldest[2], 't'))
    if t and t >= cutoff then return end
    redis.call('XDEL', stream, oldest[1])
  end
end
"#;

/// Publishes on a history topic. KEYS: meta, stream. ARGV: head, a new epoch (used if the meta
/// does not exist), size, ttl (ms), meta ttl (ms), the pub/sub channel. Returns the offset.
const LUA_PUBLISH: &str = r#"
local meta, stream = KEYS[1], KEYS[2]
local now = now_ms()
if redis.call('HSETNX', meta, 'epoch', ARGV[2]) == 1 then
  -- A new epoch: whatever is left of the stream belongs to a lost past.
  redis.call('DEL', stream)
end
local offset = redis.call('HINCRBY', meta, 'offset', 1)
local digits = string.format('%d', offset)
local message = ARGV[1] .. ',"offset":' .. digits .. '}'
if ARGV[3] ~= '0' then
  redis.call('XADD', stream, 'MAXLEN', ARGV[3], digits .. '-0', 'm', message, 't', string.format('%d', now))
  trim_expired(stream, now - tonumber(ARGV[4]))
  redis.call('PEXPIRE', stream, ARGV[4])
end
redis.call('PEXPIRE', meta, ARGV[5])
redis.call('PUBLISH', ARGV[6], message)
return offset
"#;

/// Reads a history topic. KEYS: meta, stream. ARGV: a new epoch (used if the meta does not
/// exist), since (empty for none), limit, ttl (ms), meta ttl (ms). Returns
/// `{epoch, offset, complete (0 or 1), offset 1, message 1, offset 2, message 2, …}`.
const LUA_READ: &str = r#"
local meta, stream = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', ARGV[1], 'offset', 0)
  epoch = ARGV[1]
end
redis.call('PEXPIRE', meta, ARGV[5])
local offset = tonumber(redis.call('HGET', meta, 'offset')) or 0
trim_expired(stream, now_ms() - tonumber(ARGV[4]))
local limit = tonumber(ARGV[3])
local reply = {epoch, offset, 1}
local entries = {}
if ARGV[2] == '' then
  if limit > 0 then
    local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', limit)
    for i = #newest, 1, -1 do entries[#entries + 1] = newest[i] end
  end
else
  local since = tonumber(ARGV[2])
  if since < offset then
    local first = string.format('%d', since + 1)
    local after = redis.call('XRANGE', stream, first .. '-0', '+', 'COUNT', math.max(limit, 1))
    if not after[1] or id_offset(after[1][1]) ~= since + 1 then reply[3] = 0 end
    if limit > 0 then entries = after end
  end
end
for _, entry in ipairs(entries) do
  reply[#reply + 1] = id_offset(entry[1])
  reply[#reply + 1] = field(entry[2], 'm') or ''
end
return reply
"#;

/// A broker sharing channels between nodes through Redis pub/sub.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use switchboard::{Node, RedisBroker, Router};
/// let broker = RedisBroker::connect("redis://127.0.0.1:6379").await?;
/// let node = Node::builder(Router::new()).broker(broker).build();
/// # let _ = node; Ok(()) }
/// ```
pub struct RedisBroker {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    start: Mutex<Option<oneshot::Sender<Delivery>>>,
}

pub(super) struct Shared {
    /// The URL without credentials, for messages.
    url: String,
    client: redis::Client,
    publisher: Mutex<Publisher>,
    /// Serializes attempts to (re)connect the publishing connection.
    publisher_connect: tokio::sync::Mutex<()>,
    subs: Mutex<Subscriptions>,
    /// The history scripts (`EVALSHA`, loaded again on `NOSCRIPT`).
    publish_script: Script,
    read_script: Script,
}

#[derive(Default)]
struct Publisher {
    connection: Option<MultiplexedConnection>,
    /// The last failed attempt to connect, and its error.
    failed: Option<(Instant, BrokerError)>,
}

struct Subscriptions {
    /// `Err(reason)` while the pub/sub connection is down or being restored.
    link: Result<(), BrokerError>,
    topics: HashMap<String, State>,
}

enum State {
    /// SUBSCRIBE sent or queued; the waiters watch this for the outcome.
    Pending(watch::Sender<Option<Result<(), BrokerError>>>),
    /// Redis confirmed (or, while the link is down, to be restored on reconnection).
    Active,
}

enum Command {
    Subscribe(String),
    Unsubscribe(String),
    /// Answered once every publication Redis sent this node before the command was run has been
    /// delivered (a `PING` on the pub/sub connection: its answer comes after them).
    Fence(oneshot::Sender<Result<(), BrokerError>>),
}

/// The Redis keys of a history topic, and its pub/sub channel.
struct StreamKeys {
    topic: String,
    meta: String,
    stream: String,
}

impl StreamKeys {
    fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            meta: format!("{META_PREFIX}{{{topic}}}"),
            stream: format!("{STREAM_PREFIX}{{{topic}}}"),
        }
    }
}

/// A policy's numbers as Redis takes them: size, ttl (ms), and how long the meta is kept (ms).
fn redis_policy(policy: HistoryPolicy) -> (u64, u64, u64) {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).clamp(1, TTL_MAX_MS);
    let size = policy.size.min(SIZE_MAX) as u64;
    (size, millis(policy.ttl), millis(policy.ttl.max(META_TTL_MIN)))
}

impl RedisBroker {
    /// Connects to the Redis server at `url` (`redis://host:port`, optionally with a database
    /// number and credentials: `redis://:password@host:port/0`). Fails if the URL is invalid or
    /// Redis cannot be reached now; later outages are handled by reconnecting.
    pub async fn connect(url: &str) -> Result<RedisBroker, BrokerError> {
        let shown = redact(url);
        if !(url.starts_with("redis://")) {
            return Err(BrokerError(format!(
                "invalid Redis URL '{shown}': expected redis://host:port"
            )));
        }
        let client = redis::Client::open(url)
            .map_err(|err| BrokerError(format!("invalid Redis URL '{shown}': {}", describe(&err))))?;
        let shared = Arc::new(Shared {
            url: shown,
            client,
            publisher: Mutex::new(Publisher::default()),
            publisher_connect: tokio::sync::Mutex::new(()),
            subs: Mutex::new(Subscriptions {
                link: Err(BrokerError(String::new())),
                topics: HashMap::new(),
            }),
            publish_script: Script::new(&format!("{LUA_COMMON}{LUA_PUBLISH}")),
            read_script: Script::new(&format!("{LUA_COMMON}{LUA_READ}")),
        });
        shared.publisher().await?;
        let pubsub = shared.connect_pubsub().await?;
        shared.subs.lock().link = Ok(());
        let (commands, receiver) = mpsc::unbounded_channel();
        let (start, delivery) = oneshot::channel();
        tokio::spawn(run(shared.clone(), receiver, delivery, pubsub));
        Ok(RedisBroker {
            shared,
            commands,
            start: Mutex::new(Some(start)),
        })
    }
}

impl Broker for RedisBroker {
    fn start(&self, delivery: Delivery) {
        if let Some(start) = self.start.lock().take() {
            let _ = start.send(delivery);
        }
    }

    fn publish(&self, topic: &str, message: Text) -> BoxFuture<'static, Result<(), BrokerError>> {
        let shared = self.shared.clone();
        let channel = format!("{CHANNEL_PREFIX}{topic}");
        Box::pin(async move { shared.publish(channel, message).await })
    }

    fn subscribe(&self, topic: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        let mut subs = self.shared.subs.lock();
        if let Err(err) = &subs.link {
            return Box::pin(future::ready(Err(err.clone())));
        }
        let mut receiver = match subs.topics.get(topic) {
            Some(State::Active) => return Box::pin(future::ready(Ok(()))),
            Some(State::Pending(sender)) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(None);
                subs.topics.insert(topic.to_owned(), State::Pending(sender));
                if self.commands.send(Command::Subscribe(topic.to_owned())).is_err() {
                    subs.topics.remove(topic);
                    return Box::pin(future::ready(Err(self.shared.error("the broker task has stopped"))));
                }
                receiver
            }
        };
        drop(subs);
        let cancelled = self.shared.error("the subscription was cancelled");
        Box::pin(async move {
            match receiver.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone().unwrap_or(Err(cancelled)),
                Err(_) => Err(cancelled),
            }
        })
    }

    /// The hub calls this when a topic's last local subscriber left, in the same step (under the
    /// topic's lock): a later join of the topic calls `subscribe` after this, never before.
    fn unsubscribe(&self, topic: &str) {
        let mut subs = self.shared.subs.lock();
        if subs.topics.remove(topic).is_some() {
            let _ = self.commands.send(Command::Unsubscribe(topic.to_owned()));
        }
    }

    /// One script (see the module's documentation): one round trip.
    fn publish_to_stream(
        &self,
        topic: &str,
        head: String,
        policy: HistoryPolicy,
    ) -> BoxFuture<'static, Result<u64, BrokerError>> {
        let shared = self.shared.clone();
        let keys = StreamKeys::new(topic);
        Box::pin(async move { shared.publish_to_stream(keys, head, policy).await })
    }

    fn shares_presence(&self) -> bool {
        true
    }

    /// Ready while the pub/sub connection is up and Redis answers a `PING` on the publishing
    /// connection within 1 s (one round trip per check).
    fn ready(&self) -> BoxFuture<'static, Result<(), BrokerError>> {
        let link = self.shared.subs.lock().link.clone();
        let shared = self.shared.clone();
        Box::pin(async move {
            link?;
            match tokio::time::timeout(READY_TIMEOUT, shared.ping()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(shared.error(format!("no answer to PING within {READY_TIMEOUT:?}"))),
            }
        })
    }

    fn presence_add(&self, topic: &str, client: &str, member: String) -> BoxFuture<'static, Result<(), BrokerError>> {
        let (shared, topic, client) = (self.shared.clone(), topic.to_owned(), client.to_owned());
        Box::pin(async move { shared.presence_add(&topic, &client, member).await })
    }

    fn presence_remove(&self, topic: &str, client: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        let (shared, topic, client) = (self.shared.clone(), topic.to_owned(), client.to_owned());
        Box::pin(async move { shared.presence_remove(&topic, &client).await })
    }

    fn presence_alive(&self, node: &str, ttl: std::time::Duration) -> BoxFuture<'static, Result<(), BrokerError>> {
        let (shared, node) = (self.shared.clone(), node.to_owned());
        Box::pin(async move { shared.presence_alive(&node, ttl).await })
    }

    fn presence_members(&self, topic: &str) -> BoxFuture<'static, Result<Vec<(String, String)>, BrokerError>> {
        let (shared, topic) = (self.shared.clone(), topic.to_owned());
        Box::pin(async move { shared.presence_members(&topic).await })
    }

    /// One script, then, if this node is subscribed to the topic, a fence on the pub/sub
    /// connection (see the module's documentation).
    fn read_stream(
        &self,
        topic: &str,
        since: Option<u64>,
        limit: usize,
        policy: HistoryPolicy,
    ) -> BoxFuture<'static, Result<StreamRead, BrokerError>> {
        let shared = self.shared.clone();
        let commands = self.commands.clone();
        let keys = StreamKeys::new(topic);
        Box::pin(async move {
            let read = shared.read_stream(&keys, since, limit, policy).await?;
            shared.fence(&commands, &keys.topic).await?;
            Ok(read)
        })
    }
}

impl Shared {
    fn error(&self, cause: impl std::fmt::Display) -> BrokerError {
        BrokerError(format!("redis at {}: {cause}", self.url))
    }

    fn redis_error(&self, err: &RedisError) -> BrokerError {
        self.error(describe(err))
    }

    fn connection_config() -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
    }

    /// The publishing connection, connected if needed.
    pub(super) async fn publisher(&self) -> Result<MultiplexedConnection, BrokerError> {
        if let Some(connection) = self.fast_publisher()? {
            return Ok(connection);
        }
        let _connecting = self.publisher_connect.lock().await;
        // Another publisher may have connected (or failed) while this one waited.
        if let Some(connection) = self.fast_publisher()? {
            return Ok(connection);
        }
        let result = self
            .client
            .get_multiplexed_async_connection_with_config(&Self::connection_config())
            .await;
        let mut publisher = self.publisher.lock();
        match result {
            Ok(connection) => {
                publisher.connection = Some(connection.clone());
                publisher.failed = None;
                Ok(connection)
            }
            Err(err) => {
                let err = self.redis_error(&err);
                publisher.failed = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }

    /// The current publishing connection, or the recent failure to connect it.
    fn fast_publisher(&self) -> Result<Option<MultiplexedConnection>, BrokerError> {
        let publisher = self.publisher.lock();
        if let Some(connection) = &publisher.connection {
            return Ok(Some(connection.clone()));
        }
        match &publisher.failed {
            Some((at, err)) if at.elapsed() < PUBLISH_RETRY_AFTER => Err(err.clone()),
            _ => Ok(None),
        }
    }

    fn drop_publisher(&self) {
        self.publisher.lock().connection = None;
    }

    async fn publish(&self, channel: String, message: Text) -> Result<(), BrokerError> {
        let mut connection = self.publisher().await?;
        let result = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(message.as_bytes().as_ref())
            .query_async::<i64>(&mut connection)
            .await;
        result.map(|_| ()).map_err(|err| {
            // The connection may be broken: the next publish makes a new one.
            self.drop_publisher();
            self.redis_error(&err)
        })
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        let mut connection = self.publisher().await?;
        let answer = redis::cmd("PING").query_async::<Value>(&mut connection).await;
        answer.map(drop).map_err(|err| self.command_failed(&err))
    }

    /// A command on the publishing connection failed: an error answered by Redis leaves the
    /// connection usable; anything else may mean it is broken, and the next call makes a new one.
    pub(super) fn command_failed(&self, err: &RedisError) -> BrokerError {
        if !matches!(err.kind(), redis::ErrorKind::Server(_)) {
            self.drop_publisher();
        }
        self.redis_error(err)
    }

    async fn publish_to_stream(
        &self,
        keys: StreamKeys,
        head: String,
        policy: HistoryPolicy,
    ) -> Result<u64, BrokerError> {
        let mut connection = self.publisher().await?;
        let (size, ttl, meta_ttl) = redis_policy(policy);
        let channel = format!("{CHANNEL_PREFIX}{}", keys.topic);
        let result = self
            .publish_script
            .key(&keys.meta)
            .key(&keys.stream)
            .arg(head)
            .arg(new_epoch())
            .arg(size)
            .arg(ttl)
            .arg(meta_ttl)
            .arg(channel)
            .invoke_async::<u64>(&mut connection)
            .await;
        result.map_err(|err| self.command_failed(&err))
    }

    async fn read_stream(
        &self,
        keys: &StreamKeys,
        since: Option<u64>,
        limit: usize,
        policy: HistoryPolicy,
    ) -> Result<StreamRead, BrokerError> {
        let mut connection = self.publisher().await?;
        let (size, ttl, meta_ttl) = redis_policy(policy);
        // No more than `size` are kept: a larger limit reads the same.
        let limit = (limit as u64).min(size);
        let since = since.map(|offset| offset.to_string()).unwrap_or_default();
        let result = self
            .read_script
            .key(&keys.meta)
            .key(&keys.stream)
            .arg(new_epoch())
            .arg(since)
            .arg(limit)
            .arg(ttl)
            .arg(meta_ttl)
            .invoke_async::<Vec<Value>>(&mut connection)
            .await;
        let reply = result.map_err(|err| self.command_failed(&err))?;
        parse_read(reply).map_err(|what| self.error(format!("unexpected answer to a stream read: {what}")))
    }

    /// Returns once every publication of `topic` that Redis sent this node before now has been
    /// delivered to the hub; at once if this node is not subscribed to `topic`.
    async fn fence(&self, commands: &mpsc::UnboundedSender<Command>, topic: &str) -> Result<(), BrokerError> {
        let receiver = {
            let subs = self.subs.lock();
            if !subs.topics.contains_key(topic) {
                return Ok(());
            }
            subs.link.clone()?;
            let (sender, receiver) = oneshot::channel();
            if commands.send(Command::Fence(sender)).is_err() {
                return Err(self.error("the broker task has stopped"));
            }
            receiver
        };
        match receiver.await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.error("the pub/sub connection was lost")),
        }
    }

    async fn connect_pubsub(&self) -> Result<PubSub, BrokerError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(err)) => Err(self.redis_error(&err)),
            Err(_) => Err(self.error("timed out connecting")),
        }
    }

    /// The pub/sub link is down: refuse new subscriptions and fail the pending ones (their callers
    /// report the error). Active topics stay, to be restored.
    fn link_down(&self, err: BrokerError) {
        let mut subs = self.subs.lock();
        subs.topics.retain(|_, state| match state {
            State::Active => true,
            State::Pending(waiters) => {
                let _ = waiters.send(Some(Err(err.clone())));
                false
            }
        });
        subs.link = Err(err);
        drop(subs);
        // Redis is likely gone for the publisher too; do not keep a connection that may be dead.
        self.drop_publisher();
    }
}

/// The pub/sub task: owns the pub/sub connection, runs the subscribe/unsubscribe commands in order,
/// delivers what arrives, and reconnects when the connection is lost.
async fn run(
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    delivery: oneshot::Receiver<Delivery>,
    first: PubSub,
) {
    let Ok(delivery) = delivery.await else { return };
    let mut pubsub = Some(first);
    let mut backoff = BACKOFF_MIN;
    // True from the first lost connection on: every later connection restores a link that was
    // down, and publications may have been missed meanwhile.
    let mut lost = false;
    loop {
        let connected = match pubsub.take() {
            Some(pubsub) => Ok(pubsub),
            None => shared.connect_pubsub().await,
        };
        let outcome = match connected {
            Ok(pubsub) => {
                let (mut sink, stream) = pubsub.split();
                match restore(&shared, &mut sink).await {
                    Ok(restored) => {
                        if lost {
                            // Publications made while the link was down are lost: the history
                            // topics' clients recover them from the streams.
                            let closed = delivery.link_restored();
                            tracing::info!(url = %shared.url, restored, closed, "redis broker reconnected");
                        }
                        backoff = BACKOFF_MIN;
                        serve(&shared, &delivery, &mut commands, sink, stream).await
                    }
                    Err(err) => Err(Some(err)),
                }
            }
            Err(err) => Err(Some(err)),
        };
        let err = match outcome {
            Ok(()) | Err(None) => return, // the broker was dropped
            Err(Some(err)) => err,
        };
        lost = true;
        if shared.subs.lock().link.is_ok() {
            tracing::warn!(error = %err, "redis broker: pub/sub connection lost; reconnecting");
        } else {
            tracing::debug!(error = %err, retry_in = ?backoff, "redis broker: reconnection failed");
        }
        shared.link_down(err);
        // Full jitter between half and all of the backoff, so nodes do not reconnect in lockstep.
        let delay = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                // Commands made while the link is down concern a connection that no longer exists:
                // the state of the subscriptions is what gets restored.
                command = commands.recv() => if command.is_none() { return },
            }
        }
    }
}

/// Subscribes a new connection to every topic the node wants (the subscriptions' state is the
/// hub's: every topic with local subscribers is in it); then the link is up.
async fn restore(shared: &Shared, sink: &mut PubSubSink) -> Result<usize, BrokerError> {
    let topics: Vec<String> = shared.subs.lock().topics.keys().cloned().collect();
    for chunk in topics.chunks(BATCH) {
        let requests = chunk.iter().map(|topic| {
            let mut sink = sink.clone();
            let channel = format!("{CHANNEL_PREFIX}{topic}");
            async move { sink.subscribe(channel).await }
        });
        let results = tokio::time::timeout(RESPONSE_TIMEOUT * 4, future::join_all(requests))
            .await
            .map_err(|_| shared.error("timed out restoring subscriptions"))?;
        for result in results {
            result.map_err(|err| shared.redis_error(&err))?;
        }
    }
    let mut subs = shared.subs.lock();
    for topic in &topics {
        confirm(&mut subs, topic);
    }
    subs.link = Ok(());
    Ok(topics.len())
}

/// Runs one pub/sub connection until it fails (`Err(Some(_))`) or the broker is dropped.
async fn serve(
    shared: &Shared,
    delivery: &Delivery,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
) -> Result<(), Option<BrokerError>> {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return Err(Some(shared.error("connection lost")));
                };
                deliver(delivery, &message);
            }
            command = commands.recv() => {
                let Some(command) = command else { return Ok(()) };
                let (mut batch, mut fences) = (Vec::new(), Vec::new());
                let mut next = Some(command);
                while let Some(command) = next {
                    match command {
                        Command::Fence(waiter) => fences.push(waiter),
                        command => batch.push(command),
                    }
                    next = if batch.len() + fences.len() < BATCH { commands.try_recv().ok() } else { None };
                }
                apply(shared, &mut sink, batch).await.map_err(Some)?;
                if !fences.is_empty() {
                    let outcome = fence(shared, delivery, &mut sink, &mut stream).await;
                    for waiter in fences {
                        let _ = waiter.send(outcome.clone());
                    }
                    outcome.map_err(Some)?;
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => return Err(Some(shared.redis_error(&err))),
                    Err(_) => return Err(Some(shared.error("no answer to PING"))),
                }
            }
        }
    }
}

/// Hands a publication from Redis to the hub.
fn deliver(delivery: &Delivery, message: &redis::Msg) {
    if let Some(topic) = message.get_channel_name().strip_prefix(CHANNEL_PREFIX) {
        delivery.deliver(topic, Bytes::copy_from_slice(message.get_payload_bytes()));
    }
}

/// A `PING` on the pub/sub connection: Redis answers it after every publication it sent this
/// connection before, and redis-rs queues those on the stream before it hands over the answer.
/// Delivering what the stream holds then delivers them all.
async fn fence(
    shared: &Shared,
    delivery: &Delivery,
    sink: &mut PubSubSink,
    stream: &mut PubSubStream,
) -> Result<(), BrokerError> {
    match tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<Value>()).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => return Err(shared.redis_error(&err)),
        Err(_) => return Err(shared.error("no answer to PING")),
    }
    while let Some(message) = stream.next().now_or_never() {
        let Some(message) = message else {
            return Err(shared.error("connection lost"));
        };
        deliver(delivery, &message);
    }
    Ok(())
}

/// Sends a batch of commands, pipelined, in order: each is checked against the state first (a
/// subscribe whose topic is no longer pending, or an unsubscribe whose topic is wanted again, is
/// skipped). Then the pending topics are confirmed.
async fn apply(shared: &Shared, sink: &mut PubSubSink, batch: Vec<Command>) -> Result<(), BrokerError> {
    let mut requests = Vec::with_capacity(batch.len());
    let mut subscribed = Vec::new();
    {
        let subs = shared.subs.lock();
        for command in batch {
            match command {
                Command::Subscribe(topic) => {
                    if matches!(subs.topics.get(&topic), Some(State::Pending(_))) {
                        requests.push((true, format!("{CHANNEL_PREFIX}{topic}")));
                        subscribed.push(topic);
                    }
                }
                Command::Unsubscribe(topic) => {
                    if !subs.topics.contains_key(&topic) {
                        requests.push((false, format!("{CHANNEL_PREFIX}{topic}")));
                    }
                }
                // Taken out of the batch by `serve`.
                Command::Fence(_) => {}
            }
        }
    }
    if requests.is_empty() {
        return Ok(());
    }
    // One channel per command: redis-rs matches one reply to each request, and a multi-channel
    // SUBSCRIBE gets one reply per channel.
    let requests = requests.into_iter().map(|(subscribe, channel)| {
        let mut sink = sink.clone();
        async move {
            if subscribe {
                sink.subscribe(channel).await
            } else {
                sink.unsubscribe(channel).await
            }
        }
    });
    let results = tokio::time::timeout(RESPONSE_TIMEOUT * 2, future::join_all(requests))
        .await
        .map_err(|_| shared.error("no answer to SUBSCRIBE"))?;
    for result in results {
        result.map_err(|err| shared.redis_error(&err))?;
    }
    let mut subs = shared.subs.lock();
    for topic in subscribed {
        confirm(&mut subs, &topic);
    }
    Ok(())
}

/// Redis confirmed `topic`: its waiters learn it, and it is active.
fn confirm(subs: &mut Subscriptions, topic: &str) {
    if let Some(state) = subs.topics.get_mut(topic) {
        if let State::Pending(waiters) = state {
            let _ = waiters.send(Some(Ok(())));
        }
        *state = State::Active;
    }
}

/// The read script's answer: `{epoch, offset, complete, offset 1, message 1, …}`.
fn parse_read(reply: Vec<Value>) -> Result<StreamRead, &'static str> {
    let mut values = reply.into_iter();
    let epoch = match values.next() {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes).map_err(|_| "an epoch that is not UTF-8")?,
        Some(Value::SimpleString(text)) => text,
        _ => return Err("no epoch"),
    };
    let offset = match values.next() {
        Some(Value::Int(offset)) => u64::try_from(offset).map_err(|_| "a negative offset")?,
        _ => return Err("no offset"),
    };
    let complete = match values.next() {
        Some(Value::Int(complete)) => complete != 0,
        _ => return Err("no completeness"),
    };
    let mut publications = Vec::with_capacity(values.len() / 2);
    while let Some(value) = values.next() {
        let (Value::Int(at), Some(Value::BulkString(message))) = (value, values.next()) else {
            return Err("a publication that is not an offset and a message");
        };
        let at = u64::try_from(at).map_err(|_| "a negative offset")?;
        let message = Text::from_utf8(Bytes::from(message)).map_err(|_| "a publication that is not UTF-8")?;
        publications.push((at, message));
    }
    Ok(StreamRead {
        position: StreamPosition { offset, epoch },
        publications,
        complete,
    })
}

/// A short, lowercase cause for an error from the redis crate.
fn describe(err: &RedisError) -> String {
    if err.is_connection_refusal() {
        "connection refused".into()
    } else if err.is_timeout() {
        "timed out".into()
    } else if err.is_connection_dropped() {
        "connection lost".into()
    } else {
        let text = err.to_string();
        let mut chars = text.chars();
        match chars.next() {
            Some(first) => first.to_lowercase().chain(chars).collect(),
            None => text,
        }
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact("redis://:secret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[tokio::test]
    async fn rejects_bad_urls() {
        let err = RedisBroker::connect("http://127.0.0.1:1")
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("broker unavailable: invalid Redis URL 'http://127.0.0.1:1': expected redis://host:port")
        );
    }

    #[tokio::test]
    async fn unreachable_redis_is_a_clear_error() {
        // Port 1 on loopback: nothing listens there.
        let err = RedisBroker::connect("redis://127.0.0.1:1")
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("broker unavailable: redis at redis://127.0.0.1:1: connection refused")
        );
    }
}
