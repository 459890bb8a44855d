//! Presence over real sockets (PROTOCOL.md, "Presence"): members and counts of a topic, the
//! coalesced joins and leaves its subscribers are told, keyed topics kept apart, the subscribe
//! checks applied to listing, paging, and the HTTP endpoints for other processes.

mod common;

use common::{Client, Served, WAIT};
use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard::{Channel, Jwt, Node, Router};

const SECRET: &[u8] = b"presence-test-secret";

#[derive(Serialize, Deserialize)]
struct Room {
    room: String,
}

#[derive(Serialize, Deserialize)]
struct Nothing {}

/// `room` (keyed by `room`, presence and join_leave), `chat` (no presence), `vip` (presence,
/// subscription token required); authentication optional.
async fn start() -> Served {
    let mut router = Router::new();
    router.channel(
        Channel::new(
            "room",
            |p: Room| async move { Ok::<_, String>(json!({ "room": p.room })) },
        )
        .required_on_subscribe(["room"])
        .join_leave(),
    );
    router.channel(Channel::new("chat", |_: Nothing| async move {
        Ok::<_, String>(Value::Null)
    }));
    router.channel(
        Channel::new("vip", |_: Nothing| async move { Ok::<_, String>(Value::Null) })
            .presence()
            .token_required(),
    );
    let node = Node::builder(router)
        .auth(Jwt::hmac(SECRET).into_auth().optional())
        .build();
    common::serve(node.app()).await
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

impl Served {
    async fn client(&self) -> Client {
        Client::connect(&format!("ws://{}/", self.addr)).await
    }

    /// A client of `user` ("" stays anonymous), subscribed to room `room`; returns it and its
    /// client id.
    async fn member(&self, user: &str, room: &str) -> (Client, String) {
        let mut client = self.client().await;
        let mut id = String::new();
        if !user.is_empty() {
            let claims = json!({"sub": user, "exp": now() + 3600, "info": {"name": user.to_uppercase()}});
            client.send(json!({"type": "connect", "token": token(claims), "id": "c"}));
            let connected = client.recv().await;
            id = connected["client"].as_str().unwrap().to_owned();
        }
        client
            .exchange(
                json!({"type": "subscribe", "channel": "room", "data": {"room": room}, "id": "s"}),
                json!({"type": "subscribed", "channel": "room", "id": "s"}),
            )
            .await;
        (client, id)
    }
}

/// Reads presence_diff messages until the joins and leaves seen match `joins` and `leaves`
/// client counts; returns how many messages that took, and the joins and leaves.
async fn diffs_until(client: &mut Client, joins: usize, leaves: usize) -> (usize, Vec<Value>, Vec<Value>) {
    let (mut messages, mut all_joins, mut all_leaves) = (0, Vec::new(), Vec::new());
    while all_joins.len() < joins || all_leaves.len() < leaves {
        let message = client.recv().await;
        assert_eq!(message["type"], "presence_diff", "{message}");
        messages += 1;
        all_joins.extend(message["joins"].as_array().unwrap().iter().cloned());
        all_leaves.extend(message["leaves"].as_array().unwrap().iter().cloned());
    }
    (messages, all_joins, all_leaves)
}

#[tokio::test]
async fn members_and_counts_of_a_room() {
    let server = start().await;
    let (mut ada, ada_id) = server.member("ada", "lobby").await;
    let (_ada2, ada2_id) = server.member("ada", "lobby").await;
    let (_anon, _) = server.member("", "lobby").await;
    ada.send(json!({"type": "presence_stats", "channel": "room", "data": {"room": "lobby"}, "id": 1}));
    // Diffs may come first (ada sees her own join): skip them.
    let stats = loop {
        let message = ada.recv().await;
        if message["type"] != "presence_diff" {
            break message;
        }
    };
    assert_eq!(
        stats,
        json!({"type": "presence_stats", "channel": "room", "id": 1, "clients": 3, "users": 1})
    );
    ada.send(json!({"type": "presence", "channel": "room", "data": {"room": "lobby"}, "id": 2}));
    let list = loop {
        let message = ada.recv().await;
        if message["type"] != "presence_diff" {
            break message;
        }
    };
    let clients = list["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 3, "{list}");
    assert_eq!(
        clients[0],
        json!({"client": ada_id, "user": "ada", "info": {"name": "ADA"}})
    );
    assert_eq!(clients[1]["client"], ada2_id);
    assert_eq!(clients[2]["user"], "");
    assert!(clients[2].get("info").is_none());
    assert!(list.get("cursor").is_none());
}

#[tokio::test]
async fn joins_and_leaves_are_told_coalesced() {
    let server = start().await;
    let (mut watcher, watcher_id) = server.member("w", "big").await;
    let (_, joins, _) = diffs_until(&mut watcher, 1, 0).await;
    assert_eq!(joins[0]["client"], watcher_id, "a subscriber sees its own join");
    // 40 members join at once: far fewer messages than joins.
    let mut members = Vec::new();
    for _ in 0..40 {
        members.push(server.member("", "big").await);
    }
    let (messages, joins, _) = diffs_until(&mut watcher, 40, 0).await;
    assert_eq!(joins.len(), 40);
    assert!(messages <= 10, "40 joins took {messages} messages");
    // A tab closing is a leave.
    let (gone, gone_id) = server.member("gone", "big").await;
    diffs_until(&mut watcher, 1, 0).await;
    gone.close().await;
    let (_, _, leaves) = diffs_until(&mut watcher, 0, 1).await;
    assert_eq!(leaves, [json!({"client": gone_id, "user": "gone"})]);
}

#[tokio::test]
async fn keyed_rooms_are_separate_and_paging_follows_the_cursor() {
    let server = start().await;
    let (mut a, _) = server.member("a", "one").await;
    let (_b, _) = server.member("b", "two").await;
    let (_c, _) = server.member("c", "two").await;
    let stats =
        |room: &str, id: i64| json!({"type": "presence_stats", "channel": "room", "data": {"room": room}, "id": id});
    a.send(stats("one", 1));
    a.send(stats("two", 2));
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let message = a.recv().await;
        if message["type"] == "presence_stats" {
            answers.push((message["clients"].clone(), message["users"].clone()));
        }
    }
    assert_eq!(answers, [(json!(1), json!(1)), (json!(2), json!(2))]);
    // Two pages of one.
    a.send(json!({"type": "presence", "channel": "room", "data": {"room": "two"}, "limit": 1, "id": 3}));
    let first = loop {
        let message = a.recv().await;
        if message["type"] == "presence" {
            break message;
        }
    };
    assert_eq!(first["clients"][0]["user"], "b");
    let cursor = first["cursor"].as_str().expect("a cursor").to_owned();
    a.send(
        json!({"type": "presence", "channel": "room", "data": {"room": "two"}, "limit": 1, "cursor": cursor, "id": 4}),
    );
    let second = loop {
        let message = a.recv().await;
        if message["type"] == "presence" {
            break message;
        }
    };
    assert_eq!(second["clients"][0]["user"], "c");
    assert!(second.get("cursor").is_none(), "{second}");
    a.send(json!({"type": "presence", "channel": "room", "data": {"room": "two"}, "cursor": "x", "id": 5}));
    let bad = loop {
        let message = a.recv().await;
        if message["type"] == "error" {
            break message;
        }
    };
    assert_eq!(
        bad["message"],
        "Invalid cursor: expected a cursor from a presence reply."
    );
}

#[tokio::test]
async fn listing_takes_the_subscribe_checks() {
    let server = start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "presence", "channel": "chat", "id": 1}),
        json!({"type": "error", "channel": "chat", "id": 1, "message": "Channel 'chat' has no presence."}),
    )
    .await;
    c.exchange(
        json!({"type": "presence", "channel": "vip", "id": 2}),
        json!({"type": "error", "channel": "vip", "id": 2, "message": "Permission denied"}),
    )
    .await;
    c.exchange(
        json!({"type": "presence_stats", "channel": "room", "data": {}, "id": 3}),
        json!({"type": "error", "channel": "room", "id": 3, "message": "Invalid parameters for action 'room'"}),
    )
    .await;
}

#[tokio::test]
async fn other_processes_read_presence_over_http() {
    let server = start().await;
    let (_a, a_id) = server.member("a", "lobby").await;
    let (_b, _) = server.member("", "lobby").await;
    let body = json!({"channel": "room", "data": {"room": "lobby"}}).to_string();
    let (status, text) = common::http(server.addr, "POST", "/_presence_stats", &[], Some(&body)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"clients": 2, "users": 1})
    );
    let (status, text) = common::http(server.addr, "POST", "/_presence", &[], Some(&body)).await;
    assert_eq!(status, 200, "{text}");
    let members: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        members["clients"][0],
        json!({"client": a_id, "user": "a", "info": {"name": "A"}})
    );
    let chat = json!({"channel": "chat", "data": {}}).to_string();
    let (status, _) = common::http(server.addr, "POST", "/_presence", &[], Some(&chat)).await;
    assert_eq!(status, 400);
    let _ = WAIT;
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn the_rust_client_keeps_a_live_member_list() {
    use switchboard::client::Client as RustClient;
    let server = start().await;
    let url = format!("ws://{}/", server.addr);
    let first = RustClient::connect(&url, Default::default()).await.unwrap();
    let mut watch = first.watch_presence("room", json!({"room": "live"})).await.unwrap();
    assert_eq!(watch.members().len(), 1, "itself");
    let second = RustClient::connect(&url, Default::default()).await.unwrap();
    let other = second.watch_presence("room", json!({"room": "live"})).await.unwrap();
    members_become(&mut watch, 2).await;
    drop(other);
    second.close();
    members_become(&mut watch, 1).await;
    let stats = first.presence_stats("room", json!({"room": "live"})).await.unwrap();
    assert_eq!((stats.clients, stats.users), (1, 0));
}

/// Waits until the watched list has `n` members (panics after WAIT).
async fn members_become(watch: &mut switchboard::client::PresenceWatch, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while watch.members().len() != n {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", watch.members());
        let _ = tokio::time::timeout(Duration::from_millis(200), watch.changed()).await;
    }
}
