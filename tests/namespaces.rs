//! Channels from namespaces over real sockets (PROTOCOL.md, "Namespaces" and "Client publish"):
//! every rule allowed and refused — who may subscribe (any, token, proxy-less user channels),
//! client publish, client history and presence — and the data size limit.

mod common;

use common::{Client, Served, WAIT};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard::client::{Client as RustClient, ClientError};
use switchboard::{Api, Channel, Jwt, Namespace, Node, Router, SubscribeRule};

const SECRET: &[u8] = b"namespaces-test-secret";

#[derive(serde::Serialize, serde::Deserialize)]
struct News {
    #[serde(default)]
    text: String,
}

/// `chat` (history 10, join_leave, clients publish), `inbox` (user channels, clients publish),
/// `vip` (subscription tokens, clients publish), `quiet` (history and presence that clients may
/// not read, no client publish), the default namespace (anyone, small data limit), and a typed
/// channel `news`.
async fn start() -> Served {
    let mut router = Router::new();
    router.channel(Channel::new("news", |p: News| async move {
        Ok::<_, String>(json!({"text": p.text}))
    }));
    router
        .namespace(
            Namespace::new("chat")
                .history(10, Duration::from_secs(60))
                .join_leave()
                .client_publish(true),
        )
        .namespace(
            Namespace::new("inbox")
                .subscribe(SubscribeRule::User)
                .client_publish(true),
        )
        .namespace(
            Namespace::new("vip")
                .subscribe(SubscribeRule::Token)
                .client_publish(true),
        )
        .namespace(
            Namespace::new("quiet")
                .history(10, Duration::from_secs(60))
                .presence()
                .client_history(false)
                .client_presence(false),
        )
        .namespace(Namespace::new("").client_publish(true).max_data_bytes(32));
    let node = Node::builder(router)
        .auth(Jwt::hmac(SECRET).into_auth().optional())
        .build();
    let app = node.app().merge(node.api_router(Api::new("k")));
    common::serve(app).await
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap()
}

fn exp() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600
}

impl Served {
    /// A client of `user` ("": anonymous).
    async fn client(&self, user: &str) -> Client {
        let mut client = Client::connect(&format!("ws://{}/", self.addr)).await;
        if !user.is_empty() {
            client.send(json!({"type": "connect", "token": token(json!({"sub": user, "exp": exp()})), "id": "c"}));
            let connected = client.recv().await;
            assert_eq!(connected["type"], "connected", "{connected}");
        }
        client
    }
}

fn error(channel: &str, id: i64, message: &str) -> Value {
    json!({"type": "error", "channel": channel, "message": message, "id": id})
}

#[tokio::test]
async fn clients_publish_where_the_namespace_allows_it() {
    let server = start().await;
    let mut reader = server.client("").await;
    let subscribed = {
        reader.send(json!({"type": "subscribe", "channel": "chat:lobby", "id": 1}));
        reader.recv().await
    };
    assert_eq!(subscribed["type"], "subscribed");
    assert_eq!(subscribed["offset"], 0, "{subscribed}");
    let epoch = subscribed["epoch"].clone();
    let mut writer = server.client("").await;
    writer
        .exchange(
            json!({"type": "publish", "channel": "chat:lobby", "data": {"text": "hi"}, "id": 3}),
            json!({"type": "published", "channel": "chat:lobby", "id": 3, "offset": 1}),
        )
        .await;
    reader
        .expect(json!({"type": "data", "channel": "chat:lobby", "data": {"text": "hi"}, "offset": 1}))
        .await;
    // Another channel of the namespace is another topic.
    writer
        .exchange(
            json!({"type": "publish", "channel": "chat:random", "data": 5, "id": 4}),
            json!({"type": "published", "channel": "chat:random", "id": 4, "offset": 1}),
        )
        .await;
    // Without history: no offset. The default namespace ("") takes names without ':'.
    writer
        .exchange(
            json!({"type": "publish", "channel": "plain", "data": "x", "id": 5}),
            json!({"type": "published", "channel": "plain", "id": 5}),
        )
        .await;
    // Refused: a namespace without client publish, a typed channel, an unknown namespace.
    let refusals = [
        ("quiet:x", "Publishing to channel 'quiet:x' is not allowed for clients."),
        ("news", "Publishing to channel 'news' is not allowed for clients."),
        ("nowhere:x", "Channel 'nowhere:x' not found."),
    ];
    for (i, (channel, message)) in refusals.into_iter().enumerate() {
        let id = 10 + i as i64;
        writer
            .exchange(
                json!({"type": "publish", "channel": channel, "data": {}, "id": id}),
                error(channel, id, message),
            )
            .await;
    }
    // The default namespace's limit is 32 bytes of JSON.
    writer
        .exchange(
            json!({"type": "publish", "channel": "plain", "data": "x".repeat(40), "id": 20}),
            error("plain", 20, "Publication data too large: at most 32 bytes of JSON."),
        )
        .await;
    // A typed channel's topics are not namespace channels.
    writer
        .exchange(
            json!({"type": "subscribe", "channel": "news#[\"x\"]", "id": 21}),
            error("news#[\"x\"]", 21, "Channel 'news#[\"x\"]' not found."),
        )
        .await;
    // Nothing else reached the reader; the history has the publication.
    reader
        .exchange(
            json!({"type": "history", "channel": "chat:lobby", "id": 30}),
            json!({"type": "history", "channel": "chat:lobby", "id": 30, "publications": [{"offset": 1, "data": {"text": "hi"}}], "offset": 1, "epoch": epoch}),
        )
        .await;
}

#[tokio::test]
async fn user_channels_belong_to_the_users_they_name() {
    let server = start().await;
    let mut alice = server.client("42").await;
    alice
        .exchange(
            json!({"type": "subscribe", "channel": "inbox:mail#42", "id": 1}),
            json!({"type": "subscribed", "channel": "inbox:mail#42", "id": 1}),
        )
        .await;
    alice
        .exchange(
            json!({"type": "subscribe", "channel": "inbox:dm#7,42", "id": 2}),
            json!({"type": "subscribed", "channel": "inbox:dm#7,42", "id": 2}),
        )
        .await;
    let mut bob = server.client("7").await;
    bob.exchange(
        json!({"type": "subscribe", "channel": "inbox:mail#42", "id": 1}),
        error("inbox:mail#42", 1, "Permission denied"),
    )
    .await;
    bob.exchange(
        json!({"type": "publish", "channel": "inbox:mail#42", "data": "spam", "id": 2}),
        error("inbox:mail#42", 2, "Permission denied"),
    )
    .await;
    // Both users of a shared channel may publish on it.
    bob.exchange(
        json!({"type": "publish", "channel": "inbox:dm#7,42", "data": "hello", "id": 3}),
        json!({"type": "published", "channel": "inbox:dm#7,42", "id": 3}),
    )
    .await;
    alice
        .expect(json!({"type": "data", "channel": "inbox:dm#7,42", "data": "hello"}))
        .await;
    let mut anonymous = server.client("").await;
    anonymous
        .exchange(
            json!({"type": "subscribe", "channel": "inbox:mail#", "id": 1}),
            error("inbox:mail#", 1, "Permission denied"),
        )
        .await;
    anonymous
        .exchange(
            json!({"type": "subscribe", "channel": "inbox:mail", "id": 2}),
            error("inbox:mail", 2, "Permission denied"),
        )
        .await;
}

#[tokio::test]
async fn token_namespaces_need_a_subscription_token_and_only_subscribers_publish() {
    let server = start().await;
    let mut client = server.client("5").await;
    client
        .exchange(
            json!({"type": "publish", "channel": "vip:room", "data": 1, "id": 1}),
            error("vip:room", 1, "Permission denied"),
        )
        .await;
    client
        .exchange(
            json!({"type": "subscribe", "channel": "vip:room", "id": 2}),
            error("vip:room", 2, "Permission denied"),
        )
        .await;
    let other = token(json!({"sub": "5", "channel": "vip:other", "exp": exp()}));
    client
        .exchange(
            json!({"type": "subscribe", "channel": "vip:room", "token": other, "id": 3}),
            error("vip:room", 3, "Permission denied"),
        )
        .await;
    let good = token(json!({"sub": "5", "channel": "vip:room", "exp": exp()}));
    client
        .exchange(
            json!({"type": "subscribe", "channel": "vip:room", "token": good, "id": 4}),
            json!({"type": "subscribed", "channel": "vip:room", "id": 4}),
        )
        .await;
    client.send(json!({"type": "publish", "channel": "vip:room", "data": 2, "id": 5}));
    let mut got = vec![client.recv().await, client.recv().await];
    got.sort_by_key(|m| m["type"].as_str().map(str::to_owned));
    assert_eq!(
        got,
        [
            json!({"type": "data", "channel": "vip:room", "data": 2}),
            json!({"type": "published", "channel": "vip:room", "id": 5}),
        ]
    );
}

#[tokio::test]
async fn clients_read_history_and_presence_only_where_allowed() {
    let server = start().await;
    let mut client = server.client("9").await;
    client.send(json!({"type": "subscribe", "channel": "quiet:x", "id": 1}));
    let subscribed = client.recv().await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let epoch = subscribed["epoch"].clone();
    client
        .exchange(
            json!({"type": "history", "channel": "quiet:x", "id": 2}),
            error(
                "quiet:x",
                2,
                "History of channel 'quiet:x' is not available to clients.",
            ),
        )
        .await;
    for (id, kind) in [(3, "presence"), (4, "presence_stats")] {
        client
            .exchange(
                json!({"type": kind, "channel": "quiet:x", "id": id}),
                error(
                    "quiet:x",
                    id,
                    "Presence of channel 'quiet:x' is not available to clients.",
                ),
            )
            .await;
    }
    // Recovery is not history reading: a client that may not read the history still recovers.
    let mut again = server.client("9").await;
    again
        .exchange(
            json!({"type": "subscribe", "channel": "quiet:x", "recover": {"offset": 0, "epoch": epoch}, "id": 5}),
            json!({"type": "subscribed", "channel": "quiet:x", "id": 5, "offset": 0, "epoch": epoch, "recovered": true}),
        )
        .await;
    // `chat` lets clients read presence: the member is this client.
    client.send(json!({"type": "subscribe", "channel": "chat:room", "id": 6}));
    assert_eq!(client.recv().await["type"], "subscribed");
    client.send(json!({"type": "presence", "channel": "chat:room", "id": 7}));
    let presence = client.recv().await;
    assert_eq!(presence["clients"][0]["user"], "9", "{presence}");
    client
        .exchange(
            json!({"type": "presence_stats", "channel": "chat:room", "id": 8}),
            json!({"type": "presence_stats", "channel": "chat:room", "id": 8, "clients": 1, "users": 1}),
        )
        .await;
    // A namespace without presence, and bad names.
    client
        .exchange(
            json!({"type": "presence", "channel": "inbox:x#9", "id": 9}),
            error("inbox:x#9", 9, "Channel 'inbox:x#9' has no presence."),
        )
        .await;
    let long = format!("chat:{}", "x".repeat(300));
    client
        .exchange(
            json!({"type": "subscribe", "channel": long, "id": 10}),
            error(&long, 10, "Channel name too long: at most 255 bytes."),
        )
        .await;
    let _ = WAIT;
}

#[tokio::test]
async fn the_rust_client_publishes_and_sees_the_server_end_its_subscription() {
    let server = start().await;
    let url = format!("ws://{}/", server.addr);
    let client = RustClient::builder(&url)
        .token(token(json!({"sub": "r1", "exp": exp()})))
        .connect()
        .await
        .unwrap();
    let mut sub = client.subscribe("chat:rust", Value::Null).await.unwrap();
    let offset = client.publish("chat:rust", json!({"n": 1}), WAIT).await.unwrap();
    assert_eq!(offset, Some(1));
    assert_eq!(sub.next().await, Some(json!({"n": 1})));
    assert_eq!(client.publish("plain", json!("x"), WAIT).await.unwrap(), None);
    match client.publish("quiet:x", json!(1), WAIT).await {
        Err(ClientError::Remote(message)) => {
            assert_eq!(message, "Publishing to channel 'quiet:x' is not allowed for clients.")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The server API's unsubscribe ends the subscription: its stream ends.
    let (status, answer) = common::http(
        server.addr,
        "POST",
        "/api/unsubscribe",
        &[("Authorization", "apikey k")],
        Some(r#"{"user": "r1", "channel": "chat:rust"}"#),
    )
    .await;
    assert_eq!((status, answer.as_str()), (200, r#"{"result":{}}"#));
    assert_eq!(
        tokio::time::timeout(WAIT, sub.next()).await.expect("the stream ends"),
        None
    );
}
