//! History over the Redis broker, against a real `redis-server` (started by each test on a free
//! loopback port) and nodes served over real sockets: offsets assigned atomically by Redis across
//! nodes, recovery on another node than the one a client left, a Redis that lost its data (new
//! epoch), keyed streams, a node whose pub/sub link was cut (4010), trimmed and expired history,
//! and the broker's reads checked against the memory broker's (the reference semantics).

mod redis_support;

use redis_support::{RedisServer, QUIET, WAIT};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::ws::{self, CloseFrame, Handler, Text, WebSocket};
use switchboard::{
    Broker, Channel, ChannelRef, HistoryPolicy, MemoryBroker, Node, RedisBroker, Router, Shutdown, StreamRead,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::timeout;

// ---------------------------------------------------------------------------------------------
// Nodes with history channels (like examples/history.rs)

#[derive(Serialize, Deserialize)]
struct Feed {
    #[serde(default)]
    text: String,
}

#[derive(Serialize, Deserialize)]
struct UserFeed {
    user_id: i64,
    #[serde(default)]
    text: String,
}

/// A node with a Redis broker, on 127.0.0.1:0, serving:
/// * `feed`: history 1000 for 300 s; `user_feed`: keyed by `user_id`, history 100 for 300 s;
/// * `small`: history 3 for 300 s; `brief`: history 100 for 300 ms;
/// * `chat`: no history.
struct HistoryNode {
    addr: SocketAddr,
    feed: ChannelRef<Feed>,
    user_feed: ChannelRef<UserFeed>,
    small: ChannelRef<Feed>,
    brief: ChannelRef<Feed>,
    chat: ChannelRef<Feed>,
    shutdown: Shutdown,
}

const TTL: Duration = Duration::from_secs(300);
const BRIEF_TTL: Duration = Duration::from_millis(300);

fn text_channel(name: &str) -> Channel<Feed> {
    Channel::new(
        name,
        |p: Feed| async move { Ok::<_, String>(json!({ "text": p.text })) },
    )
}

impl HistoryNode {
    async fn start(redis_url: &str) -> HistoryNode {
        let mut router = Router::new();
        let feed = router.channel(text_channel("feed").history(1000, TTL));
        let user_feed = router.channel(
            Channel::new("user_feed", |p: UserFeed| async move {
                Ok::<_, String>(json!({ "user_id": p.user_id, "text": p.text }))
            })
            .required_on_subscribe(["user_id"])
            .history(100, TTL),
        );
        let small = router.channel(text_channel("small").history(3, TTL));
        let brief = router.channel(text_channel("brief").history(100, BRIEF_TTL));
        let chat = router.channel(text_channel("chat"));
        let broker = RedisBroker::connect(redis_url).await.expect("connect the Redis broker");
        let node = Node::builder(router).broker(broker).build();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = Shutdown::new();
        tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
        HistoryNode {
            addr,
            feed,
            user_feed,
            small,
            brief,
            chat,
            shutdown,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }
}

impl Drop for HistoryNode {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn publish(channel: &ChannelRef<Feed>, text: &str) {
    channel
        .broadcast(Feed { text: text.into() })
        .await
        .unwrap_or_else(|err| panic!("publish {text}: {err}"));
}

/// Publishes, retrying while the node's broker still reports an outage that just ended.
async fn publish_when_up(channel: &ChannelRef<Feed>, text: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        match channel.broadcast(Feed { text: text.into() }).await {
            Ok(()) => return,
            Err(err) => assert!(Instant::now() < deadline, "publishing did not recover: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients that also report their close

/// Forwards every message, parsed, and at the end `{"closed": CODE, "reason": REASON}`.
struct Forward(UnboundedSender<Value>);

impl Handler for Forward {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text.to_string()));
        let _ = self.0.send(value);
    }

    async fn on_close(&mut self, _ws: &WebSocket, close: CloseFrame) {
        let _ = self.0.send(json!({ "closed": close.code, "reason": close.reason }));
    }
}

struct Client {
    ws: WebSocket,
    rx: UnboundedReceiver<Value>,
    next_id: u64,
}

/// A stream position as the client keeps it.
#[derive(Debug, Clone, PartialEq)]
struct Position {
    offset: u64,
    epoch: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let (tx, rx) = unbounded_channel();
        let ws = ws::connect(&format!("ws://{addr}/"), Forward(tx), ws::Config::default())
            .await
            .expect("WebSocket connect");
        Client { ws, rx, next_id: 0 }
    }

    async fn recv(&mut self) -> Value {
        match timeout(WAIT, self.rx.recv()).await {
            Ok(Some(value)) => value,
            Ok(None) => panic!("the client's handler ended"),
            Err(_) => panic!("no message within {WAIT:?}"),
        }
    }

    async fn expect_quiet(&mut self) {
        if let Ok(Some(value)) = timeout(QUIET, self.rx.recv()).await {
            panic!("unexpected message: {value}");
        }
    }

    async fn request(&mut self, mut message: Value) -> Value {
        self.next_id += 1;
        message["id"] = json!(self.next_id);
        self.ws.send_text(message.to_string()).expect("send");
        let reply = self.recv().await;
        assert_eq!(
            reply["id"],
            json!(self.next_id),
            "expected the reply to {message}, got {reply}"
        );
        reply
    }

    /// Subscribes (recovering from `recover` if given) and returns the `subscribed` reply.
    async fn subscribe(&mut self, channel: &str, data: Value, recover: Option<&Position>) -> Value {
        let mut message = json!({ "type": "subscribe", "channel": channel, "data": data });
        if let Some(from) = recover {
            message["recover"] = json!({ "offset": from.offset, "epoch": from.epoch });
        }
        let reply = self.request(message).await;
        assert_eq!(reply["type"], "subscribed", "subscribe to {channel}: {reply}");
        reply
    }

    /// The next message, which must be a publication on `channel`: (offset, text).
    async fn expect_data(&mut self, channel: &str) -> (u64, String) {
        let message = self.recv().await;
        assert_eq!(
            message["type"], "data",
            "expected a publication on {channel}, got {message}"
        );
        assert_eq!(message["channel"], channel, "{message}");
        let offset = message["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("no offset: {message}"));
        let text = message["data"]["text"].as_str().unwrap_or_default().to_owned();
        (offset, text)
    }

    /// The next `n` publications on `channel`.
    async fn expect_many(&mut self, channel: &str, n: usize) -> Vec<(u64, String)> {
        let mut got = Vec::with_capacity(n);
        for _ in 0..n {
            got.push(self.expect_data(channel).await);
        }
        got
    }

    /// The next message must be the server's close with `code`.
    async fn expect_close(&mut self, code: u16) {
        let message = self.recv().await;
        assert_eq!(message["closed"], json!(code), "expected close {code}, got {message}");
    }

    async fn leave(self) {
        let _ = self.ws.close(1000, "bye");
        self.ws.closed().await;
    }
}

fn position(reply: &Value) -> Position {
    Position {
        offset: reply["offset"].as_u64().unwrap_or_else(|| panic!("no offset: {reply}")),
        epoch: reply["epoch"]
            .as_str()
            .unwrap_or_else(|| panic!("no epoch: {reply}"))
            .to_owned(),
    }
}

fn publications(list: &[(u64, &str)]) -> Vec<(u64, String)> {
    list.iter().map(|(offset, text)| (*offset, text.to_string())).collect()
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy between one node and Redis, to cut that node's links alone

struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    links: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("local addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (up, links) = (up.clone(), links.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is closed at once
                    }
                    links.lock().push(tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    }));
                }
            }
        });
        Proxy {
            port,
            up,
            links,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the proxy and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Two nodes publish 500 each at once: every subscriber, on any node, sees offsets 1 to 1000
/// once each and in order, each node's publications in its order. Subscribers that join while
/// the publications flow — the first on a node, a second one, one recovering — see every offset
/// after their position once, in order, and are not closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_on_two_nodes_get_consecutive_offsets() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b, c) = (
        HistoryNode::start(&redis.url()).await,
        HistoryNode::start(&redis.url()).await,
        HistoryNode::start(&redis.url()).await,
    );
    let mut on_a = a.client().await;
    let start = position(&on_a.subscribe("feed", json!({}), None).await);
    assert_eq!(start.offset, 0);
    let mut on_b = b.client().await;
    assert_eq!(position(&on_b.subscribe("feed", json!({}), None).await), start);

    const EACH: usize = 500;
    let publishers = tokio::spawn({
        let (feed_a, feed_b) = (a.feed.clone(), b.feed.clone());
        async move {
            let from_a = async {
                for i in 1..=EACH {
                    publish(&feed_a, &format!("a-{i}")).await;
                }
            };
            let from_b = async {
                for i in 1..=EACH {
                    publish(&feed_b, &format!("b-{i}")).await;
                }
            };
            tokio::join!(from_a, from_b);
        }
    });

    // Joiners while publications flow: once on_a has seen offset 100.
    let mut seen_a = on_a.expect_many("feed", 100).await;
    let mut first_on_c = c.client().await;
    let joined_c = position(&first_on_c.subscribe("feed", json!({}), None).await);
    let mut second_on_a = a.client().await;
    let joined_a = position(&second_on_a.subscribe("feed", json!({}), None).await);
    let mut recovering_on_c = c.client().await;
    let from = Position {
        offset: 50,
        epoch: start.epoch.clone(),
    };
    let reply = recovering_on_c.subscribe("feed", json!({}), Some(&from)).await;
    assert_eq!(reply["recovered"], true, "{reply}");

    let total = 2 * EACH;
    seen_a.extend(on_a.expect_many("feed", total - 100).await);
    let seen_b = on_b.expect_many("feed", total).await;
    publishers.await.expect("the publishers");
    for (name, seen) in [("a", &seen_a), ("b", &seen_b)] {
        let offsets: Vec<u64> = seen.iter().map(|p| p.0).collect();
        assert_eq!(
            offsets,
            (1..=total as u64).collect::<Vec<_>>(),
            "offsets on node {name}"
        );
        for publisher in ["a", "b"] {
            let texts: Vec<&str> = seen
                .iter()
                .map(|p| p.1.as_str())
                .filter(|t| t.starts_with(&format!("{publisher}-")))
                .collect();
            let expected: Vec<String> = (1..=EACH).map(|i| format!("{publisher}-{i}")).collect();
            assert_eq!(texts, expected, "{publisher}'s publications as seen on node {name}");
        }
    }
    assert_eq!(seen_a, seen_b, "both nodes saw the same stream");

    for (name, client, from) in [
        ("the first joiner on c", &mut first_on_c, joined_c.offset),
        ("the second joiner on a", &mut second_on_a, joined_a.offset),
        ("the recovering joiner on c", &mut recovering_on_c, 50),
    ] {
        let got = client.expect_many("feed", total - from as usize).await;
        assert_eq!(got, seen_a[from as usize..].to_vec(), "{name} (from offset {from})");
    }
    for client in [
        &mut on_a,
        &mut on_b,
        &mut first_on_c,
        &mut second_on_a,
        &mut recovering_on_c,
    ] {
        client.expect_quiet().await;
    }
}

/// A client leaves node A; publications are made on node B; it reconnects to B and recovers
/// exactly the missed ones, in order, then gets live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_on_another_node() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (
        HistoryNode::start(&redis.url()).await,
        HistoryNode::start(&redis.url()).await,
    );

    let mut client = a.client().await;
    let start = position(&client.subscribe("feed", json!({}), None).await);
    assert_eq!(start.offset, 0);
    publish(&a.feed, "one").await;
    assert_eq!(client.expect_data("feed").await, (1, "one".into()));
    client.leave().await;

    for text in ["two", "three", "four"] {
        publish(&b.feed, text).await;
    }

    let mut client = b.client().await;
    let from = Position {
        offset: 1,
        epoch: start.epoch.clone(),
    };
    let reply = client.subscribe("feed", json!({}), Some(&from)).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(
        position(&reply),
        Position {
            offset: 4,
            epoch: start.epoch.clone()
        }
    );
    assert_eq!(
        client.expect_many("feed", 3).await,
        publications(&[(2, "two"), (3, "three"), (4, "four")])
    );
    publish(&a.feed, "five").await;
    assert_eq!(client.expect_data("feed").await, (5, "five".into()));
    client.expect_quiet().await;

    // History on demand on the other node: the latest, and those after a position.
    let mut reader = b.client().await;
    let reply = reader
        .request(json!({ "type": "history", "channel": "feed", "limit": 2 }))
        .await;
    assert_eq!(
        reply,
        json!({ "type": "history", "channel": "feed", "id": 1, "offset": 5, "epoch": start.epoch,
                "publications": [{ "offset": 4, "data": { "text": "four" } },
                                 { "offset": 5, "data": { "text": "five" } }] })
    );
    let reply = reader
        .request(json!({ "type": "history", "channel": "feed", "limit": 2,
                         "since": { "offset": 1, "epoch": start.epoch } }))
        .await;
    let offsets: Vec<u64> = reply["publications"]
        .as_array()
        .map(|list| list.iter().filter_map(|p| p["offset"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(offsets, vec![2, 3], "{reply}");
}

/// Redis restarts without its data: the node's subscribers are closed with 4010 when its link is
/// restored; recovering with the old epoch is answered `recovered: false` with a new epoch, and
/// offsets start again from 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_starts_a_new_epoch() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let a = HistoryNode::start(&redis.url()).await;
    let mut client = a.client().await;
    let start = position(&client.subscribe("feed", json!({}), None).await);
    for text in ["one", "two", "three"] {
        publish(&a.feed, text).await;
    }
    assert_eq!(
        client.expect_many("feed", 3).await,
        publications(&[(1, "one"), (2, "two"), (3, "three")])
    );

    redis.kill();
    redis.restart().await;
    // The node restores its pub/sub link by itself and sends its history subscribers away.
    client.expect_close(4010).await;

    let mut client = a.client().await;
    let from = Position {
        offset: 3,
        epoch: start.epoch.clone(),
    };
    let reply = client.subscribe("feed", json!({}), Some(&from)).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    let now = position(&reply);
    assert_eq!(now.offset, 0, "{reply}");
    assert_ne!(now.epoch, start.epoch, "{reply}");

    publish_when_up(&a.feed, "again one").await;
    publish(&a.feed, "again two").await;
    assert_eq!(
        client.expect_many("feed", 2).await,
        publications(&[(1, "again one"), (2, "again two")])
    );
    client.expect_quiet().await;
    // A new subscriber is given the new epoch.
    let mut other = a.client().await;
    assert_eq!(
        position(&other.subscribe("feed", json!({}), None).await),
        Position {
            offset: 2,
            epoch: now.epoch
        }
    );
}

/// Each user of a keyed channel has a stream of its own: its own offsets and its own history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_streams_are_separate() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (
        HistoryNode::start(&redis.url()).await,
        HistoryNode::start(&redis.url()).await,
    );
    let mut one = a.client().await;
    let start_one = position(&one.subscribe("user_feed", json!({ "user_id": 1 }), None).await);
    let mut two = b.client().await;
    let start_two = position(&two.subscribe("user_feed", json!({ "user_id": 2 }), None).await);
    assert_ne!(start_one.epoch, start_two.epoch, "two streams, two epochs");

    let post = |user_id: i64, text: &str| {
        let user_feed = b.user_feed.clone();
        let text = text.to_owned();
        async move {
            user_feed
                .broadcast(UserFeed { user_id, text })
                .await
                .expect("publish on user_feed")
        }
    };
    post(1, "x").await;
    post(2, "z").await;
    post(1, "y").await;
    assert_eq!(
        one.expect_many("user_feed", 2).await,
        publications(&[(1, "x"), (2, "y")])
    );
    assert_eq!(two.expect_many("user_feed", 1).await, publications(&[(1, "z")]));
    one.expect_quiet().await;
    two.expect_quiet().await;

    // Recovering user 2 from its start on node A replays user 2's stream only.
    let mut again = a.client().await;
    let reply = again
        .subscribe("user_feed", json!({ "user_id": 2 }), Some(&start_two))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(position(&reply).offset, 1);
    assert_eq!(again.expect_many("user_feed", 1).await, publications(&[(1, "z")]));
    again.expect_quiet().await;

    // User 1's epoch does not continue user 2's stream.
    let mut wrong = a.client().await;
    let from = Position {
        offset: 0,
        epoch: start_one.epoch.clone(),
    };
    let reply = wrong.subscribe("user_feed", json!({ "user_id": 2 }), Some(&from)).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    wrong.expect_quiet().await;
}

/// Node A's links to Redis are cut while node B publishes: A's history subscribers are closed
/// with 4010 as soon as A's pub/sub link is restored (without another publication), its plain
/// subscribers stay; they recover on A; B's subscriber saw everything once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_link_sends_history_subscribers_to_recover() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let proxy = Proxy::start(redis.port).await;
    let a = HistoryNode::start(&proxy.url()).await;
    let b = HistoryNode::start(&redis.url()).await;

    let mut on_a = a.client().await;
    let start = position(&on_a.subscribe("feed", json!({}), None).await);
    let mut chat_on_a = a.client().await;
    chat_on_a.subscribe("chat", json!({}), None).await;
    let mut on_b = b.client().await;
    on_b.subscribe("feed", json!({}), None).await;
    redis.wait_numsub("feed", 2).await;

    publish(&b.feed, "one").await;
    assert_eq!(on_a.expect_data("feed").await, (1, "one".into()));
    assert_eq!(on_b.expect_data("feed").await, (1, "one".into()));

    proxy.cut();
    redis.wait_numsub("feed", 1).await;
    publish(&b.feed, "two").await;
    publish(&b.feed, "three").await;
    assert_eq!(
        on_b.expect_many("feed", 2).await,
        publications(&[(2, "two"), (3, "three")])
    );
    proxy.restore();

    // Nothing else is published: the restored link alone closes A's history subscribers.
    on_a.expect_close(4010).await;
    redis.wait_numsub("chat", 1).await;
    publish(&b.chat, "chat after").await;
    let message = chat_on_a.recv().await;
    assert_eq!(message["data"]["text"], "chat after", "{message}");

    let mut on_a = a.client().await;
    let from = Position {
        offset: 1,
        epoch: start.epoch.clone(),
    };
    let reply = on_a.subscribe("feed", json!({}), Some(&from)).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(
        on_a.expect_many("feed", 2).await,
        publications(&[(2, "two"), (3, "three")])
    );
    publish_when_up(&a.feed, "four").await;
    assert_eq!(on_a.expect_data("feed").await, (4, "four".into()));
    assert_eq!(on_b.expect_data("feed").await, (4, "four".into()));
    on_a.expect_quiet().await;
    on_b.expect_quiet().await;
}

/// A recovery from an offset the stream no longer keeps (size 3) is `recovered: false`, without
/// replay; one from a kept offset replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_past_is_not_recovered() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (
        HistoryNode::start(&redis.url()).await,
        HistoryNode::start(&redis.url()).await,
    );
    let mut client = a.client().await;
    let start = position(&client.subscribe("small", json!({}), None).await);
    publish(&a.small, "s1").await;
    assert_eq!(client.expect_data("small").await, (1, "s1".into()));
    client.leave().await;
    for i in 2..=6 {
        publish(&b.small, &format!("s{i}")).await;
    }

    let mut client = b.client().await;
    let from = Position {
        offset: 1,
        epoch: start.epoch.clone(),
    };
    let reply = client.subscribe("small", json!({}), Some(&from)).await;
    assert_eq!(reply["recovered"], false, "offsets 2 and 3 were trimmed: {reply}");
    assert_eq!(
        position(&reply),
        Position {
            offset: 6,
            epoch: start.epoch.clone()
        }
    );
    publish(&a.small, "s7").await;
    assert_eq!(client.expect_data("small").await, (7, "s7".into()), "no replay");

    let mut kept = a.client().await;
    let from = Position {
        offset: 4,
        epoch: start.epoch.clone(),
    };
    let reply = kept.subscribe("small", json!({}), Some(&from)).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(
        kept.expect_many("small", 3).await,
        publications(&[(5, "s5"), (6, "s6"), (7, "s7")])
    );
    kept.expect_quiet().await;
    client.expect_quiet().await;
}

/// Publications older than the channel's ttl are never read back; the position stays (a client
/// that missed nothing still recovers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_publications_are_not_recovered() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = HistoryNode::start(&redis.url()).await;
    let mut client = a.client().await;
    let start = position(&client.subscribe("brief", json!({}), None).await);
    publish(&a.brief, "b1").await;
    publish(&a.brief, "b2").await;
    assert_eq!(
        client.expect_many("brief", 2).await,
        publications(&[(1, "b1"), (2, "b2")])
    );
    client.leave().await;

    // Wait for the ttl to pass: history on demand until it is empty.
    let mut reader = a.client().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = reader.request(json!({ "type": "history", "channel": "brief" })).await;
        if reply["publications"] == json!([]) {
            assert_eq!(
                position(&reply),
                Position {
                    offset: 2,
                    epoch: start.epoch.clone()
                }
            );
            break;
        }
        assert!(Instant::now() < deadline, "history still kept after its ttl: {reply}");
        tokio::time::sleep(BRIEF_TTL / 4).await;
    }

    let mut late = a.client().await;
    let from = Position {
        offset: 0,
        epoch: start.epoch.clone(),
    };
    let reply = late.subscribe("brief", json!({}), Some(&from)).await;
    assert_eq!(reply["recovered"], false, "offsets 1 and 2 expired: {reply}");
    let mut current = a.client().await;
    let from = Position {
        offset: 2,
        epoch: start.epoch.clone(),
    };
    let reply = current.subscribe("brief", json!({}), Some(&from)).await;
    assert_eq!(reply["recovered"], true, "nothing was missed: {reply}");
    publish(&a.brief, "b3").await;
    for client in [&mut late, &mut current] {
        assert_eq!(client.expect_data("brief").await, (3, "b3".into()));
        client.expect_quiet().await;
    }
}

/// The Redis broker's reads answer what the memory broker's (the reference) answer, for the same
/// publications: the publications, their offsets, `complete`, the offset of the position; and
/// each keeps its epoch across reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reads_match_the_memory_broker() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let memory = MemoryBroker::new();
    let broker = RedisBroker::connect(&redis.url()).await.expect("connect");
    let policy = HistoryPolicy { size: 3, ttl: TTL };
    let summary = |read: &StreamRead| {
        let publications: Vec<(u64, String)> = read
            .publications
            .iter()
            .map(|(offset, message)| (*offset, message.as_str().to_owned()))
            .collect();
        (read.position.offset, read.complete, publications)
    };
    let reads: &[(Option<u64>, usize)] = &[
        (None, 0),
        (None, 2),
        (None, 10),
        (Some(0), 10),
        (Some(1), 10),
        (Some(2), 10),
        (Some(2), 1),
        (Some(2), 0),
        (Some(1), 0),
        (Some(4), 10),
        (Some(5), 10),
        (Some(9), 10),
        (Some(u64::MAX), 10),
        (None, usize::MAX),
        (Some(2), usize::MAX),
    ];
    let mut epochs = (None, None);
    for published in 0..=5u64 {
        if published > 0 {
            let head = format!(r#"{{"type":"data","channel":"t","data":{published}"#);
            let in_memory = memory
                .publish_to_stream("t", head.clone(), policy)
                .await
                .expect("memory");
            let in_redis = broker.publish_to_stream("t", head, policy).await.expect("redis");
            assert_eq!((in_memory, in_redis), (published, published));
        }
        for &(since, limit) in reads {
            let expected = memory
                .read_stream("t", since, limit, policy)
                .await
                .expect("memory read");
            let got = broker.read_stream("t", since, limit, policy).await.expect("redis read");
            assert_eq!(
                summary(&got),
                summary(&expected),
                "after {published} publications, read since {since:?} limit {limit}"
            );
            for (epoch, read) in [(&mut epochs.0, &expected), (&mut epochs.1, &got)] {
                let epoch = epoch.get_or_insert_with(|| read.position.epoch.clone());
                assert_eq!(*epoch, read.position.epoch, "the epoch changed");
            }
        }
    }
    // The message is the head completed with its offset.
    let last = broker.read_stream("t", None, 1, policy).await.expect("read");
    assert_eq!(
        summary(&last).2,
        vec![(5, r#"{"type":"data","channel":"t","data":5,"offset":5}"#.to_owned())]
    );

    // Redis gone: clear errors naming Redis, no panic.
    redis.kill();
    let expected = format!("broker unavailable: redis at {}: ", redis.url());
    let err = broker
        .publish_to_stream("t", "{".into(), policy)
        .await
        .expect_err("publish with Redis down");
    assert!(err.to_string().starts_with(&expected), "{err}");
    let err = broker
        .read_stream("t", None, 1, policy)
        .await
        .expect_err("read with Redis down");
    assert!(err.to_string().starts_with(&expected), "{err}");
}
