//! The Rust client on history channels over real sockets: it remembers where each subscription
//! is (offset and epoch), and after the server side of its connection goes away and comes back
//! it recovers by itself — every publication made meanwhile is yielded once, in order, then the
//! live ones; when recovery is not possible (more missed than kept, a new node = a new epoch, a
//! channel without history) it says so with `SubscriptionEvent::Resubscribed { recovered: false }`.
//! `Client::history` reads a stream on demand.
//!
//! The server is an in-process `Node` served by `switchboard::http::serve`; "going away" is its
//! `Shutdown` (which closes every WebSocket) and "coming back" is the same node served again on
//! the same port: the node's in-memory streams survive, as a Redis-backed cluster's would.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use switchboard::client::{
    Client, ClientConfig, ClientError, ConnectionState, Position, Subscription, SubscriptionEvent,
};
use switchboard::{Channel, Node, Router, Shutdown};
use tokio::task::JoinHandle;

const T: Duration = Duration::from_secs(5);
const TTL: Duration = Duration::from_secs(300);

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

/// Like examples/history.rs: `feed` (history 1000), `user_feed` (`user_id` required, history
/// 100), plus `short` (history 5) and `plain` (no history).
fn router() -> Router {
    let mut router = Router::new();
    router.channel(
        Channel::new(
            "feed",
            |p: Feed| async move { Ok::<_, String>(json!({ "text": p.text })) },
        )
        .history(1000, TTL),
    );
    router.channel(
        Channel::new("user_feed", |p: UserFeed| async move {
            Ok::<_, String>(json!({ "user_id": p.user_id, "text": p.text }))
        })
        .required_on_subscribe(["user_id"])
        .history(100, TTL),
    );
    router.channel(
        Channel::new(
            "short",
            |p: Feed| async move { Ok::<_, String>(json!({ "text": p.text })) },
        )
        .history(5, TTL),
    );
    router.channel(Channel::new("plain", |p: Feed| async move {
        Ok::<_, String>(json!({ "text": p.text }))
    }));
    router
}

/// A node served on one address; stopped and served again (the same node or a new one) on it.
struct Server {
    node: Node,
    addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(node: Node, addr: &str) -> Server {
        let listener = switchboard::http::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = Shutdown::new();
        let task = tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
        Server {
            node,
            addr,
            shutdown,
            task,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Closes every connection (1001) and stops listening; returns the node.
    async fn stop(self) -> (Node, SocketAddr) {
        self.shutdown.trigger();
        tokio::time::timeout(T, self.task)
            .await
            .expect("server stops")
            .expect("join")
            .expect("served");
        (self.node, self.addr)
    }

    async fn publish(&self, channel: &str, params: Value) {
        self.node.broadcast(channel, params).await.expect("publish");
    }
}

fn config() -> ClientConfig {
    ClientConfig {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        request_timeout: T,
        ..ClientConfig::default()
    }
}

async fn wait_state(client: &Client, state: ConnectionState) {
    let mut rx = client.watch_state();
    tokio::time::timeout(T, rx.wait_for(|s| *s == state))
        .await
        .expect("state in time")
        .expect("client alive");
}

async fn event(sub: &mut Subscription) -> SubscriptionEvent {
    tokio::time::timeout(T, sub.next_event())
        .await
        .expect("an event in time")
        .expect("subscription alive")
}

/// The next event, which must be a publication: its text and offset.
async fn data(sub: &mut Subscription) -> (String, Option<u64>) {
    match event(sub).await {
        SubscriptionEvent::Data { data, offset } => (data["text"].as_str().unwrap_or_default().to_owned(), offset),
        other => panic!("expected data, got {other:?}"),
    }
}

/// The next event, which must be a re-subscribe: whether it recovered, and the position.
async fn resubscribed(sub: &mut Subscription) -> (bool, Option<Position>) {
    match event(sub).await {
        SubscriptionEvent::Resubscribed { recovered, position } => (recovered, position),
        other => panic!("expected a re-subscribe, got {other:?}"),
    }
}

fn text(n: u64) -> Value {
    json!({ "text": format!("m{n}") })
}

/// Receives publications `m{from}..=m{to}` with offsets `from..=to`, exactly in that order.
async fn expect_run(sub: &mut Subscription, from: u64, to: u64) {
    for n in from..=to {
        assert_eq!(data(sub).await, (format!("m{n}"), Some(n)), "publication {n}");
    }
}

#[tokio::test]
async fn recovers_what_was_published_while_disconnected_once_and_in_order() {
    let server = Server::start(Node::new(router()), "127.0.0.1:0").await;
    let client = Client::connect(&server.url(), config()).await.expect("connect");
    let mut feed = client.subscribe("feed", json!({})).await.expect("subscribe");
    // A second local subscription of the same topic shares the server subscription and its position.
    let mut again = client.subscribe("feed", Value::Null).await.expect("subscribe again");
    let mut user = client
        .subscribe("user_feed", json!({ "user_id": 7 }))
        .await
        .expect("subscribe user");
    let start = feed.position().expect("a history channel has a position");
    assert_eq!(start.offset, 0);

    for n in 1..=3 {
        server.publish("feed", text(n)).await;
    }
    expect_run(&mut feed, 1, 3).await;
    expect_run(&mut again, 1, 3).await;
    assert_eq!(
        feed.position(),
        Some(Position {
            offset: 3,
            epoch: start.epoch.clone()
        })
    );
    server.publish("user_feed", json!({ "user_id": 7, "text": "u1" })).await;
    assert_eq!(data(&mut user).await, ("u1".to_owned(), Some(1)));

    // The server side goes away; publications go on meanwhile.
    let (node, addr) = server.stop().await;
    wait_state(&client, ConnectionState::Connecting).await;
    for n in 4..=20 {
        node.broadcast("feed", text(n)).await.expect("publish");
    }
    for t in ["u2", "u3"] {
        node.broadcast("user_feed", json!({ "user_id": 7, "text": t }))
            .await
            .expect("publish");
    }

    // It comes back on the same port: the client reconnects and recovers by itself.
    let server = Server::start(node, &addr.to_string()).await;
    wait_state(&client, ConnectionState::Open).await;
    let (recovered, position) = resubscribed(&mut feed).await;
    assert!(recovered, "recovered");
    assert_eq!(position.map(|p| p.epoch), Some(start.epoch.clone()), "same epoch");
    expect_run(&mut feed, 4, 20).await;
    assert!(resubscribed(&mut again).await.0);
    expect_run(&mut again, 4, 20).await;
    assert!(resubscribed(&mut user).await.0);
    assert_eq!(data(&mut user).await, ("u2".to_owned(), Some(2)));
    assert_eq!(data(&mut user).await, ("u3".to_owned(), Some(3)));

    // Then the live ones, right after: nothing twice.
    for n in 21..=25 {
        server.publish("feed", text(n)).await;
    }
    expect_run(&mut feed, 21, 25).await;
    expect_run(&mut again, 21, 25).await;
    assert_eq!(feed.position().map(|p| p.offset), Some(25));
    assert_eq!(feed.try_next_event(), None);
    assert_eq!(user.try_next_event(), None);
    drop(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_racing_the_drop_and_the_reconnect_arrive_once_in_order() {
    let server = Server::start(Node::new(router()), "127.0.0.1:0").await;
    let client = Client::connect(&server.url(), config()).await.expect("connect");
    let mut feed = client.subscribe("feed", json!({})).await.expect("subscribe");

    // The reader checks that offsets come once and in order, and reports (last offset,
    // recovered re-subscribes).
    let (seen_tx, mut seen) = tokio::sync::watch::channel((0u64, 0u32));
    let reader = tokio::spawn(async move {
        let (mut last, mut resubscribes) = (0, 0);
        while let Some(event) = feed.next_event().await {
            match event {
                SubscriptionEvent::Data { data, offset } => {
                    assert_eq!((data, offset), (text(last + 1), Some(last + 1)), "after {last}");
                    last += 1;
                }
                SubscriptionEvent::Resubscribed { recovered, .. } => {
                    assert!(recovered, "re-subscribe {resubscribes} recovered");
                    resubscribes += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
            seen_tx.send_replace((last, resubscribes));
        }
    });

    // A publisher that keeps publishing while the server goes away and comes back, twice.
    let (done_tx, mut done) = tokio::sync::watch::channel(false);
    let node = server.node.clone();
    let publisher = tokio::spawn(async move {
        let mut n = 0;
        while !*done.borrow_and_update() {
            n += 1;
            node.broadcast("feed", text(n)).await.expect("publish");
            // Paced, so that publications fall before, during and after each reconnect.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        n
    });
    let mut server = server;
    for round in 1..=2 {
        let (node, addr) = server.stop().await;
        wait_state(&client, ConnectionState::Connecting).await;
        server = Server::start(node, &addr.to_string()).await;
        // The subscription is live again (and recovered) before the next drop.
        tokio::time::timeout(T, seen.wait_for(|(_, resubscribes)| *resubscribes == round))
            .await
            .expect("re-subscribed in time")
            .expect("reader alive");
    }
    done_tx.send_replace(true);
    let total = tokio::time::timeout(T, publisher)
        .await
        .expect("publisher done")
        .expect("join");
    // Then one more, live: the reader must stop exactly there.
    server.publish("feed", text(total + 1)).await;
    let (last, resubscribes) = *tokio::time::timeout(T, seen.wait_for(|(last, _)| *last > total))
        .await
        .expect("every publication in time")
        .expect("reader alive");
    assert_eq!((last, resubscribes), (total + 1, 2));
    client.close();
    tokio::time::timeout(T, reader)
        .await
        .expect("reader ends")
        .expect("reader's checks");
    drop(server.stop().await);
}

#[tokio::test]
async fn recovery_fails_when_more_was_missed_than_kept() {
    let server = Server::start(Node::new(router()), "127.0.0.1:0").await;
    let client = Client::connect(&server.url(), config()).await.expect("connect");
    let mut short = client.subscribe("short", json!({})).await.expect("subscribe");
    server.publish("short", text(1)).await;
    expect_run(&mut short, 1, 1).await;

    let (node, addr) = server.stop().await;
    wait_state(&client, ConnectionState::Connecting).await;
    // 11 missed, 5 kept.
    for n in 2..=12 {
        node.broadcast("short", text(n)).await.expect("publish");
    }
    let server = Server::start(node, &addr.to_string()).await;
    let (recovered, position) = resubscribed(&mut short).await;
    assert!(!recovered, "not recovered: the gap is no longer kept");
    assert_eq!(position.map(|p| p.offset), Some(12), "live from the stream's position");
    // No replay: the next publication is the next live one.
    server.publish("short", text(13)).await;
    assert_eq!(data(&mut short).await, ("m13".to_owned(), Some(13)));

    // What is kept can be fetched.
    let history = client.history("short", json!({}), None, None).await.expect("history");
    let offsets: Vec<u64> = history.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![9, 10, 11, 12, 13]);
    drop(server.stop().await);
}

#[tokio::test]
async fn recovery_fails_on_a_new_node_and_the_new_stream_is_delivered() {
    let server = Server::start(Node::new(router()), "127.0.0.1:0").await;
    let client = Client::connect(&server.url(), config()).await.expect("connect");
    let mut feed = client.subscribe("feed", json!({})).await.expect("subscribe");
    let mut plain = client.subscribe("plain", json!({})).await.expect("subscribe plain");
    for n in 1..=5 {
        server.publish("feed", text(n)).await;
    }
    expect_run(&mut feed, 1, 5).await;
    let old = feed.position().expect("position");
    assert_eq!(plain.position(), None, "no history, no position");

    // The server restarts with its memory lost: a new node, a new epoch.
    let (_, addr) = server.stop().await;
    let server = Server::start(Node::new(router()), &addr.to_string()).await;
    let (recovered, position) = resubscribed(&mut feed).await;
    assert!(!recovered, "another epoch cannot be recovered");
    let position = position.expect("position");
    assert_ne!(position.epoch, old.epoch);
    assert_eq!(position.offset, 0);
    // A channel without history reports every re-subscribe as not recovered.
    assert_eq!(resubscribed(&mut plain).await, (false, None));

    // The new stream's offsets start again at 1: delivered, not taken for duplicates.
    for n in 1..=3 {
        server.publish("feed", text(n)).await;
    }
    expect_run(&mut feed, 1, 3).await;
    assert_eq!(
        feed.position(),
        Some(Position {
            offset: 3,
            epoch: position.epoch
        })
    );
    // The plain stream yields the data only.
    server.publish("plain", text(1)).await;
    assert_eq!(
        tokio::time::timeout(T, futures_util::StreamExt::next(&mut plain)).await,
        Ok(Some(text(1)))
    );
    drop(server.stop().await);
}

#[tokio::test]
async fn history_reads_the_stream_on_demand() {
    let server = Server::start(Node::new(router()), "127.0.0.1:0").await;
    let client = Client::connect(&server.url(), config()).await.expect("connect");
    for n in 1..=10 {
        server.publish("feed", text(n)).await;
    }
    server
        .publish("user_feed", json!({ "user_id": 1, "text": "one" }))
        .await;

    let latest = client.history("feed", json!({}), Some(3), None).await.expect("history");
    let got: Vec<(u64, Value)> = latest.publications.into_iter().map(|p| (p.offset, p.data)).collect();
    assert_eq!(got, vec![(8, text(8)), (9, text(9)), (10, text(10))]);
    assert_eq!(latest.position.offset, 10);

    let since = Position {
        offset: 6,
        epoch: latest.position.epoch.clone(),
    };
    let after = client
        .history("feed", Value::Null, None, Some(&since))
        .await
        .expect("since");
    let offsets: Vec<u64> = after.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![7, 8, 9, 10]);

    // Per topic: each user has a stream of its own.
    let one = client
        .history("user_feed", json!({ "user_id": 1 }), None, None)
        .await
        .expect("user 1");
    assert_eq!(one.publications.len(), 1);
    assert_eq!(one.publications[0].data, json!({ "user_id": 1, "text": "one" }));
    let two = client
        .history("user_feed", json!({ "user_id": 2 }), None, None)
        .await
        .expect("user 2");
    assert!(two.publications.is_empty());
    assert_eq!(two.position.offset, 0);

    // Refusals are the server's text.
    assert_eq!(
        client.history("plain", json!({}), None, None).await,
        Err(ClientError::Remote("Channel 'plain' keeps no history.".into()))
    );
    assert!(matches!(
        client.history("user_feed", json!({}), None, None).await,
        Err(ClientError::Remote(_))
    ));
    drop(server.stop().await);
}

#[tokio::test]
async fn several_parameters_of_one_history_channel_lose_nothing() {
    // Publications name only their channel: with two users' streams on one connection the client
    // cannot tell their offsets apart, so it delivers everything and does not recover.
    let server = Server::start(Node::new(router()), "127.0.0.1:0").await;
    let client = Client::connect(&server.url(), config()).await.expect("connect");
    let mut one = client
        .subscribe("user_feed", json!({ "user_id": 1 }))
        .await
        .expect("user 1");
    let mut two = client
        .subscribe("user_feed", json!({ "user_id": 2 }))
        .await
        .expect("user 2");
    for (user_id, t) in [(1, "a"), (1, "b"), (2, "c"), (1, "d")] {
        server
            .publish("user_feed", json!({ "user_id": user_id, "text": t }))
            .await;
    }
    // Offsets 1, 2, 1, 3: the third is not taken for a duplicate.
    for sub in [&mut one, &mut two] {
        let got = [data(sub).await, data(sub).await, data(sub).await, data(sub).await];
        let got: Vec<(&str, Option<u64>)> = got.iter().map(|(t, o)| (t.as_str(), *o)).collect();
        assert_eq!(
            got,
            vec![("a", Some(1)), ("b", Some(2)), ("c", Some(1)), ("d", Some(3))]
        );
    }
    assert_eq!(one.position(), None, "unknown once the streams mixed");

    let (node, addr) = server.stop().await;
    let server = Server::start(node, &addr.to_string()).await;
    assert!(!resubscribed(&mut one).await.0, "not recovered");
    assert!(!resubscribed(&mut two).await.0, "not recovered");
    drop(server.stop().await);
}
