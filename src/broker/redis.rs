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

use super::{Broker, BrokerError, Delivery};
use crate::ws::Text;
use bytes::Bytes;
use futures_util::future::{self, BoxFuture};
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{MultiplexedConnection, PubSub, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, RedisError};
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
/// After a failed attempt to connect the publishing connection, publishes fail at once for this
/// long instead of each trying again (bounds the cost of an outage on a busy node).
const PUBLISH_RETRY_AFTER: Duration = Duration::from_millis(100);
/// Most subscribe/unsubscribe commands sent to Redis in one pipelined batch.
const BATCH: usize = 512;

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

struct Shared {
    /// The URL without credentials, for messages.
    url: String,
    client: redis::Client,
    publisher: Mutex<Publisher>,
    /// Serializes attempts to (re)connect the publishing connection.
    publisher_connect: tokio::sync::Mutex<()>,
    subs: Mutex<Subscriptions>,
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
    async fn publisher(&self) -> Result<MultiplexedConnection, BrokerError> {
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
                        if restored > 0 {
                            tracing::info!(url = %shared.url, restored, "redis broker reconnected");
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
                let Some(topic) = message.get_channel_name().strip_prefix(CHANNEL_PREFIX) else { continue };
                delivery.deliver(topic, Bytes::copy_from_slice(message.get_payload_bytes()));
            }
            command = commands.recv() => {
                let Some(command) = command else { return Ok(()) };
                let mut batch = vec![command];
                while batch.len() < BATCH {
                    match commands.try_recv() {
                        Ok(command) => batch.push(command),
                        Err(_) => break,
                    }
                }
                apply(shared, &mut sink, batch).await.map_err(Some)?;
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
