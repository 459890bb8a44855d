//! The server HTTP API across nodes sharing a real `redis-server`: a call made on one node reaches
//! the connections of another — publications, `disconnect`, `unsubscribe` — and `channels` and
//! `info` answer for every node.

mod common;
mod redis_support;

use common::Served;
use redis_support::{http_post_with, Client, RedisServer, WAIT};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchboard::{Api, Jwt, Namespace, Node, RedisBroker, Router};

const SECRET: &[u8] = b"redis-api-secret";

async fn node(redis: &str) -> Served {
    let mut router = Router::new();
    router.namespace(Namespace::new("chat").history(10, Duration::from_secs(60)));
    let broker = RedisBroker::connect(redis).await.expect("connect the Redis broker");
    let node = Node::builder(router)
        .broker(broker)
        .auth(Jwt::hmac(SECRET).into_auth().optional())
        .build();
    let app = node.app().merge(node.api_router(Api::new("k")));
    common::serve(app).await
}

impl Served {
    async fn call(&self, method: &str, body: Value) -> (u16, Value) {
        let path = format!("/api/{method}");
        http_post_with(self.addr, &path, "Authorization: apikey k\r\n", &body.to_string()).await
    }

    /// A client of `user` subscribed to `channel`.
    async fn subscriber(&self, user: &str, channel: &str) -> Client {
        let mut client = Client::connect(self.addr).await;
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
        let claims = json!({"sub": user, "exp": exp});
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET).unwrap();
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        let connected = client.request(json!({"type": "connect", "token": token})).await;
        assert_eq!(connected["type"], "connected", "{connected}");
        client.subscribe(channel, Value::Null).await;
        client
    }
}

#[tokio::test]
async fn api_calls_reach_connections_on_other_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (node(&redis.url()).await, node(&redis.url()).await);
    let mut alice = b.subscriber("alice", "chat:lobby").await;
    let mut bob = b.subscriber("bob", "chat:lobby").await;
    let _carol = a.subscriber("carol", "chat:lobby").await;

    // Both nodes answer `info` (each says it is alive at start: wait until A has heard B).
    let deadline = Instant::now() + WAIT;
    let nodes = loop {
        let (status, answer) = a.call("info", json!({})).await;
        assert_eq!(status, 200, "{answer}");
        let nodes = answer["result"]["nodes"].as_array().cloned().unwrap_or_default();
        if nodes.len() == 2 || Instant::now() > deadline {
            break nodes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let connections: u64 = nodes.iter().map(|n| n["connections"].as_u64().unwrap()).sum();
    assert_eq!(connections, 3);
    assert_eq!(
        a.call("channels", json!({"pattern": "chat:*"})).await,
        (200, json!({"result": {"channels": {"chat:lobby": {"num_clients": 3}}}}))
    );

    // A publication made on A reaches B's subscribers, with its offset.
    let (status, answer) = a.call("publish", json!({"channel": "chat:lobby", "data": "one"})).await;
    assert_eq!(
        (status, answer["result"]["offset"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.expect_data("chat:lobby").await, "one");
    }

    // unsubscribe on A ends alice's subscription on B.
    assert_eq!(
        a.call("unsubscribe", json!({"user": "alice", "channel": "chat:lobby"}))
            .await,
        (200, json!({"result": {}}))
    );
    assert_eq!(
        alice.recv().await,
        json!({"type": "unsubscribed", "channel": "chat:lobby", "reason": "unsubscribed by the server"})
    );
    a.call("publish", json!({"channel": "chat:lobby", "data": "two"})).await;
    assert_eq!(bob.expect_data("chat:lobby").await, "two");
    alice.expect_quiet().await;

    // disconnect on A closes bob's connection on B, with 4501.
    assert_eq!(
        a.call("disconnect", json!({"user": "bob"})).await,
        (200, json!({"result": {}}))
    );
    let deadline = Instant::now() + WAIT;
    while bob.is_open() {
        assert!(Instant::now() < deadline, "bob still connected");
        let _ = bob.try_recv(Duration::from_millis(50)).await;
    }
    let (_, answer) = a.call("info", json!({})).await;
    let connections: u64 = answer["result"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(connections, 2, "{answer}");
}
