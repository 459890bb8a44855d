//! History and recovery over real sockets, with the in-memory broker: offsets and positions on the
//! wire, recovery after a missed burst (also while publications race it), the cases that cannot be
//! recovered, keyed streams, and history on demand. The Redis broker's streams are tested in
//! `redis_history.rs`.

mod common;

use common::Client;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use switchboard::{Channel, Node, Router, Shutdown};

#[derive(Serialize, Deserialize)]
struct Text {
    #[serde(default)]
    text: String,
}

#[derive(Serialize, Deserialize)]
struct UserText {
    user_id: i64,
    #[serde(default)]
    text: String,
}

const TTL: Duration = Duration::from_secs(300);

fn text_channel(name: &str) -> Channel<Text> {
    Channel::new(
        name,
        |p: Text| async move { Ok::<_, String>(json!({ "text": p.text })) },
    )
}

fn router() -> Router {
    let mut router = Router::new();
    router.channel(text_channel("feed").history(20_000, TTL));
    router.channel(text_channel("small").history(5, TTL));
    router.channel(text_channel("limited").history(100, TTL).recovery_limit(10));
    router.channel(text_channel("plain"));
    router.channel(
        Channel::new("user_feed", |p: UserText| async move {
            Ok::<_, String>(json!({ "user_id": p.user_id, "text": p.text }))
        })
        .required_on_subscribe(["user_id"])
        .history(100, TTL),
    );
    router
}

struct Server {
    url: String,
    node: Node,
    shutdown: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn serve() -> Server {
    let node = Node::new(router());
    let listener = switchboard::http::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    Server { url, node, shutdown }
}

impl Server {
    async fn publish(&self, channel: &str, text: &str) {
        self.node
            .broadcast(channel, json!({ "text": text }))
            .await
            .expect("broadcast");
    }
}

/// Subscribes and returns the `subscribed` answer.
async fn subscribe(client: &mut Client, message: Value) -> Value {
    client.send(message);
    let answer = client.recv().await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    answer
}

/// The next message: a publication on `channel` with `offset`; returns its data.
async fn expect_data(client: &mut Client, channel: &str, offset: u64) -> Value {
    let message = client.recv().await;
    assert_eq!(message["type"], "data", "{message}");
    assert_eq!(message["channel"], channel, "{message}");
    assert_eq!(message["offset"], offset, "expected offset {offset}: {message}");
    message["data"].clone()
}

#[tokio::test]
async fn subscribed_carries_the_position_and_publications_their_offsets() {
    let server = serve().await;
    let mut client = Client::connect(&server.url).await;
    let answer = subscribe(&mut client, json!({ "type": "subscribe", "channel": "feed", "id": 1 })).await;
    let epoch = answer["epoch"].as_str().expect("an epoch").to_owned();
    assert_eq!(
        answer,
        json!({ "type": "subscribed", "channel": "feed", "id": 1, "offset": 0, "epoch": epoch })
    );
    for text in ["one", "two", "three"] {
        server.publish("feed", text).await;
    }
    for (offset, text) in [(1, "one"), (2, "two"), (3, "three")] {
        assert_eq!(expect_data(&mut client, "feed", offset).await, json!({ "text": text }));
    }
    // A second subscriber starts where the stream is.
    let mut late = Client::connect(&server.url).await;
    let answer = subscribe(&mut late, json!({ "type": "subscribe", "channel": "feed" })).await;
    assert_eq!(
        answer,
        json!({ "type": "subscribed", "channel": "feed", "offset": 3, "epoch": epoch })
    );
    // A channel without history is as before: no offsets, no position.
    let mut plain = Client::connect(&server.url).await;
    let answer = subscribe(&mut plain, json!({ "type": "subscribe", "channel": "plain" })).await;
    assert_eq!(answer, json!({ "type": "subscribed", "channel": "plain" }));
    server.publish("plain", "x").await;
    plain
        .expect(json!({ "type": "data", "channel": "plain", "data": { "text": "x" } }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_burst_of_10000_is_recovered_once_in_order() {
    let server = serve().await;
    let mut client = Client::connect(&server.url).await;
    let answer = subscribe(&mut client, json!({ "type": "subscribe", "channel": "feed" })).await;
    let epoch = answer["epoch"].clone();
    server.publish("feed", "seen").await;
    expect_data(&mut client, "feed", 1).await;
    client.close().await;

    for n in 0..10_000 {
        server.publish("feed", &format!("missed {n}")).await;
    }
    let mut client = Client::connect(&server.url).await;
    let recover = json!({ "type": "subscribe", "channel": "feed", "recover": { "offset": 1, "epoch": epoch } });
    let answer = subscribe(&mut client, recover).await;
    assert_eq!(
        answer,
        json!({ "type": "subscribed", "channel": "feed", "recovered": true, "offset": 10_001, "epoch": epoch })
    );
    for n in 0..10_000u64 {
        let data = expect_data(&mut client, "feed", n + 2).await;
        assert_eq!(data["text"], format!("missed {n}"));
    }
    server.publish("feed", "live").await;
    assert_eq!(expect_data(&mut client, "feed", 10_002).await["text"], "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_racing_live_publications_has_no_gap_and_no_duplicate() {
    let server = serve().await;
    let mut client = Client::connect(&server.url).await;
    let epoch = subscribe(&mut client, json!({ "type": "subscribe", "channel": "feed" })).await["epoch"].clone();
    client.close().await;
    for n in 0..500 {
        server.publish("feed", &format!("before {n}")).await;
    }
    // Publications keep coming while the client recovers.
    let node = server.node.clone();
    let publisher = tokio::spawn(async move {
        for n in 0..3_000 {
            node.broadcast("feed", json!({ "text": format!("during {n}") }))
                .await
                .expect("broadcast");
            if n % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let mut client = Client::connect(&server.url).await;
    let recover = json!({ "type": "subscribe", "channel": "feed", "recover": { "offset": 0, "epoch": epoch } });
    let answer = subscribe(&mut client, recover).await;
    assert_eq!(answer["recovered"], true, "{answer}");
    publisher.await.expect("publisher");
    // Every offset from 1 to 3 500 arrives once, in order.
    for offset in 1..=3_500u64 {
        let data = expect_data(&mut client, "feed", offset).await;
        let want = if offset <= 500 {
            format!("before {}", offset - 1)
        } else {
            format!("during {}", offset - 501)
        };
        assert_eq!(data["text"], want);
    }
    server.publish("feed", "after").await;
    expect_data(&mut client, "feed", 3_501).await;
}

#[tokio::test]
async fn gaps_that_cannot_be_filled_are_answered_recovered_false() {
    let server = serve().await;
    let mut probe = Client::connect(&server.url).await;
    let small = subscribe(&mut probe, json!({ "type": "subscribe", "channel": "small" })).await;
    let limited = subscribe(&mut probe, json!({ "type": "subscribe", "channel": "limited" })).await;
    probe.close().await;
    for n in 0..20 {
        server.publish("small", &format!("{n}")).await;
        server.publish("limited", &format!("{n}")).await;
    }
    let mut client = Client::connect(&server.url).await;
    // Another epoch: this stream's past is not the client's.
    let answer = subscribe(
        &mut client,
        json!({ "type": "subscribe", "channel": "small", "recover": { "offset": 3, "epoch": "elsewhere" }, "id": 1 }),
    )
    .await;
    assert_eq!(
        answer,
        json!({ "type": "subscribed", "channel": "small", "id": 1, "recovered": false, "offset": 20, "epoch": small["epoch"] })
    );
    client.send(json!({ "type": "unsubscribe", "channel": "small" }));
    assert_eq!(client.recv().await["type"], "unsubscribed");
    // Trimmed: the stream keeps offsets 16 to 20 only.
    let answer = subscribe(
        &mut client,
        json!({ "type": "subscribe", "channel": "small", "recover": { "offset": 10, "epoch": small["epoch"] } }),
    )
    .await;
    assert_eq!(answer["recovered"], false, "{answer}");
    // Recoverable from the kept part: offsets 16 to 20 are kept, the client saw 15.
    let mut other = Client::connect(&server.url).await;
    let answer = subscribe(
        &mut other,
        json!({ "type": "subscribe", "channel": "small", "recover": { "offset": 15, "epoch": small["epoch"] } }),
    )
    .await;
    assert_eq!(answer["recovered"], true, "{answer}");
    for offset in 16..=20 {
        expect_data(&mut other, "small", offset).await;
    }
    // Over the recovery limit (10): 20 missed.
    let answer = subscribe(
        &mut client,
        json!({ "type": "subscribe", "channel": "limited", "recover": { "offset": 0, "epoch": limited["epoch"] } }),
    )
    .await;
    assert_eq!(answer["recovered"], false, "{answer}");
    assert_eq!(answer["offset"], 20);
    // No replay after `recovered: false`: the next messages are live ones.
    server.publish("limited", "live").await;
    assert_eq!(expect_data(&mut client, "limited", 21).await["text"], "live");
    server.publish("small", "live").await;
    assert_eq!(expect_data(&mut client, "small", 21).await["text"], "live");
    expect_data(&mut other, "small", 21).await;
}

#[tokio::test]
async fn keyed_streams_are_separate() {
    let server = serve().await;
    let mut one = Client::connect(&server.url).await;
    let mut two = Client::connect(&server.url).await;
    let first = subscribe(
        &mut one,
        json!({ "type": "subscribe", "channel": "user_feed", "data": { "user_id": 1 } }),
    )
    .await;
    subscribe(
        &mut two,
        json!({ "type": "subscribe", "channel": "user_feed", "data": { "user_id": 2 } }),
    )
    .await;
    for (user, text) in [(1, "a"), (1, "b"), (2, "c")] {
        server
            .node
            .broadcast("user_feed", json!({ "user_id": user, "text": text }))
            .await
            .expect("broadcast");
    }
    assert_eq!(expect_data(&mut one, "user_feed", 1).await["text"], "a");
    assert_eq!(expect_data(&mut one, "user_feed", 2).await["text"], "b");
    assert_eq!(expect_data(&mut two, "user_feed", 1).await["text"], "c");
    let history = json!({ "type": "history", "channel": "user_feed", "data": { "user_id": 1 }, "id": 7 });
    one.send(history);
    assert_eq!(
        one.recv().await,
        json!({
            "type": "history", "channel": "user_feed", "id": 7,
            "publications": [
                { "offset": 1, "data": { "user_id": 1, "text": "a" } },
                { "offset": 2, "data": { "user_id": 1, "text": "b" } },
            ],
            "offset": 2, "epoch": first["epoch"],
        })
    );
}

#[tokio::test]
async fn history_on_demand() {
    let server = serve().await;
    for n in 1..=5 {
        server.publish("feed", &format!("{n}")).await;
    }
    let mut client = Client::connect(&server.url).await;
    client.send(json!({ "type": "history", "channel": "feed", "limit": 2, "id": 1 }));
    let latest = client.recv().await;
    let epoch = latest["epoch"].clone();
    assert_eq!(
        latest,
        json!({
            "type": "history", "channel": "feed", "id": 1,
            "publications": [ { "offset": 4, "data": { "text": "4" } }, { "offset": 5, "data": { "text": "5" } } ],
            "offset": 5, "epoch": epoch,
        })
    );
    client.send(
        json!({ "type": "history", "channel": "feed", "since": { "offset": 1, "epoch": epoch }, "limit": 2, "id": 2 }),
    );
    let since = client.recv().await;
    let offsets: Vec<&Value> = since["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| &p["offset"])
        .collect();
    assert_eq!(offsets, [&json!(2), &json!(3)], "{since}");
    // A `since` of another epoch: the latest ones.
    client.send(
        json!({ "type": "history", "channel": "feed", "since": { "offset": 1, "epoch": "old" }, "limit": 1, "id": 3 }),
    );
    assert_eq!(
        client.recv().await["publications"],
        json!([{ "offset": 5, "data": { "text": "5" } }])
    );
    // Errors name the channel.
    client
        .exchange(
            json!({ "type": "history", "channel": "plain", "id": 4 }),
            json!({ "type": "error", "channel": "plain", "id": 4, "message": "Channel 'plain' keeps no history." }),
        )
        .await;
    client
        .exchange(
            json!({ "type": "subscribe", "channel": "plain", "recover": { "offset": 1, "epoch": "e" }, "id": 5 }),
            json!({ "type": "error", "channel": "plain", "id": 5, "message": "Channel 'plain' keeps no history." }),
        )
        .await;
    client
        .exchange(
            json!({ "type": "history", "channel": "user_feed", "id": 6 }),
            json!({ "type": "error", "channel": "user_feed", "id": 6, "message": "Invalid parameters for action 'user_feed'" }),
        )
        .await;
    client
        .exchange(
            json!({ "type": "subscribe", "channel": "feed", "recover": { "offset": "x" }, "id": 8 }),
            json!({ "type": "error", "channel": "feed", "id": 8, "message": "Invalid recover: expected {\"offset\": N, \"epoch\": \"E\"}." }),
        )
        .await;
    client
        .exchange(
            json!({ "type": "history", "channel": "feed", "limit": -1, "id": 9 }),
            json!({ "type": "error", "channel": "feed", "id": 9, "message": "Invalid limit: expected a non-negative integer." }),
        )
        .await;
}
