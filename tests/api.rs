//! The server HTTP API over real sockets (PROTOCOL.md, "Server HTTP API"): every method, its
//! authentication and its errors (bad JSON, unknown method or channel, wrong types, huge bodies),
//! and what connected clients see of `disconnect` and `unsubscribe`.

mod common;

use common::{http, Client, Event, Served, WAIT};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchboard::{Api, Jwt, Namespace, Node, Router};

const SECRET: &[u8] = b"api-test-secret";
const KEY: &str = "test-api-key";

async fn start() -> Served {
    let mut router = Router::new();
    router
        .namespace(Namespace::new("chat").history(10, Duration::from_secs(60)).presence())
        .namespace(Namespace::new("live").max_data_bytes(100));
    let node = Node::builder(router)
        .auth(Jwt::hmac(SECRET).into_auth().optional())
        .build();
    let app = node.app().merge(node.api_router(Api::new(KEY)));
    common::serve(app).await
}

fn token(user: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = json!({"sub": user, "exp": exp});
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap()
}

impl Served {
    /// `POST /api/METHOD` with `body` as is and the API key; the status and JSON answer.
    async fn call_raw(&self, method: &str, body: &str, authorization: Option<&str>) -> (u16, Value) {
        let headers: Vec<(&str, &str)> = authorization.map(|a| ("Authorization", a)).into_iter().collect();
        let (status, text) = http(self.addr, "POST", &format!("/api/{method}"), &headers, Some(body)).await;
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON answer {status} {text:?}: {e}"));
        (status, value)
    }

    async fn call(&self, method: &str, body: Value) -> (u16, Value) {
        self.call_raw(method, &body.to_string(), Some(&format!("apikey {KEY}")))
            .await
    }

    async fn client(&self, user: &str) -> Client {
        let mut client = Client::connect(&format!("ws://{}/", self.addr)).await;
        if !user.is_empty() {
            client.send(json!({"type": "connect", "token": token(user), "id": "c"}));
            assert_eq!(client.recv().await["type"], "connected");
        }
        client
    }

    async fn subscribed(&self, user: &str, channel: &str) -> Client {
        let mut client = self.client(user).await;
        client.send(json!({"type": "subscribe", "channel": channel, "id": "s"}));
        let reply = client.recv().await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        client
    }
}

fn error(code: u16, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

#[tokio::test]
async fn publish_broadcast_and_history() {
    let server = start().await;
    let mut reader = server.subscribed("", "chat:lobby").await;
    let (status, answer) = server
        .call("publish", json!({"channel": "chat:lobby", "data": {"text": "one"}}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["offset"], 1, "{answer}");
    let epoch = answer["result"]["epoch"].as_str().expect("an epoch").to_owned();
    reader
        .expect(json!({"type": "data", "channel": "chat:lobby", "data": {"text": "one"}, "offset": 1}))
        .await;
    // Without history: an empty result.
    assert_eq!(
        server.call("publish", json!({"channel": "live:x", "data": 1})).await,
        (200, json!({"result": {}}))
    );
    // broadcast: one response per channel, in order, errors included.
    let (status, answer) = server
        .call(
            "broadcast",
            json!({"channels": ["chat:lobby", "nowhere:x", "live:x"], "data": "two"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"result": {"responses": [
            {"result": {"offset": 2, "epoch": epoch}},
            {"error": {"code": 404, "message": "Channel 'nowhere:x' not found."}},
            {"result": {}},
        ]}})
    );
    reader
        .expect(json!({"type": "data", "channel": "chat:lobby", "data": "two", "offset": 2}))
        .await;
    let (status, answer) = server
        .call("history", json!({"channel": "chat:lobby", "limit": 5}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"result": {"publications": [{"offset": 1, "data": {"text": "one"}}, {"offset": 2, "data": "two"}], "offset": 2, "epoch": epoch}})
    );
    let since = json!({"channel": "chat:lobby", "since": {"offset": 1, "epoch": epoch}});
    let (_, answer) = server.call("history", since).await;
    assert_eq!(answer["result"]["publications"], json!([{"offset": 2, "data": "two"}]));
    assert_eq!(
        server.call("history", json!({"channel": "live:x"})).await,
        (400, error(400, "Channel 'live:x' keeps no history."))
    );
}

#[tokio::test]
async fn presence_channels_and_info() {
    let server = start().await;
    let _a = server.subscribed("alice", "chat:lobby").await;
    let _b = server.subscribed("alice", "chat:lobby").await;
    let _c = server.subscribed("bob", "chat:lobby").await;
    let _d = server.subscribed("", "live:feed").await;
    assert_eq!(
        server.call("presence_stats", json!({"channel": "chat:lobby"})).await,
        (200, json!({"result": {"clients": 3, "users": 2}}))
    );
    let (_, answer) = server.call("presence", json!({"channel": "chat:lobby"})).await;
    let mut users: Vec<&str> = answer["result"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "alice", "bob"]);
    assert_eq!(
        server.call("presence", json!({"channel": "live:feed"})).await,
        (400, error(400, "Channel 'live:feed' has no presence."))
    );
    assert_eq!(
        server.call("channels", json!({})).await,
        (
            200,
            json!({"result": {"channels": {"chat:lobby": {"num_clients": 3}, "live:feed": {"num_clients": 1}}}})
        )
    );
    assert_eq!(
        server.call("channels", json!({"pattern": "live:*"})).await,
        (200, json!({"result": {"channels": {"live:feed": {"num_clients": 1}}}}))
    );
    let (status, answer) = server.call("info", json!({})).await;
    assert_eq!(status, 200);
    let nodes = answer["result"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{answer}");
    assert_eq!(nodes[0]["connections"], 4);
    assert_eq!(nodes[0]["subscriptions"], 4);
    assert_eq!(nodes[0]["channels"], 2);
    assert!(nodes[0]["name"].is_string() && nodes[0]["uptime"].is_u64(), "{answer}");
}

/// Reads until the connection closes; its close code and reason.
async fn closed(client: &mut Client) -> (u16, String) {
    loop {
        if let Event::Close(close) = client.next_event().await {
            return (close.code, close.reason.to_string());
        }
    }
}

#[tokio::test]
async fn disconnect_and_unsubscribe_reach_the_users_connections() {
    let server = start().await;
    let mut a1 = server.subscribed("alice", "chat:lobby").await;
    let mut a2 = server.subscribed("alice", "live:x").await;
    let mut bob = server.subscribed("bob", "chat:lobby").await;

    assert_eq!(
        server
            .call("unsubscribe", json!({"user": "alice", "channel": "chat:lobby"}))
            .await,
        (200, json!({"result": {}}))
    );
    a1.expect(json!({"type": "unsubscribed", "channel": "chat:lobby", "reason": "unsubscribed by the server"}))
        .await;
    server
        .call("publish", json!({"channel": "chat:lobby", "data": 1}))
        .await;
    bob.expect(json!({"type": "data", "channel": "chat:lobby", "data": 1, "offset": 1}))
        .await;
    // Alice got nothing more, and may subscribe again.
    a1.send(json!({"type": "subscribe", "channel": "chat:lobby", "id": "again"}));
    let again = a1.recv().await;
    assert_eq!(
        (again["type"].as_str(), again["id"].as_str()),
        (Some("subscribed"), Some("again")),
        "{again}"
    );
    server
        .call("publish", json!({"channel": "chat:lobby", "data": 2}))
        .await;
    a1.expect(json!({"type": "data", "channel": "chat:lobby", "data": 2, "offset": 2}))
        .await;
    bob.expect(json!({"type": "data", "channel": "chat:lobby", "data": 2, "offset": 2}))
        .await;

    // disconnect: every connection of the user, with 4501 by default; others stay.
    assert_eq!(
        server.call("disconnect", json!({"user": "alice"})).await,
        (200, json!({"result": {}}))
    );
    assert_eq!(closed(&mut a1).await, (4501, "disconnected by the server".to_owned()));
    assert_eq!(closed(&mut a2).await, (4501, "disconnected by the server".to_owned()));
    bob.exchange(
        json!({"type": "presence_stats", "channel": "chat:lobby", "id": 1}),
        json!({"type": "presence_stats", "channel": "chat:lobby", "id": 1, "clients": 1, "users": 1}),
    )
    .await;
    let body = json!({"user": "bob", "code": 4400, "reason": "come back later"});
    assert_eq!(server.call("disconnect", body).await, (200, json!({"result": {}})));
    assert_eq!(closed(&mut bob).await, (4400, "come back later".to_owned()));
    assert_eq!(
        server.call("disconnect", json!({"user": "bob", "code": 1000})).await,
        (
            400,
            error(
                400,
                "Invalid code 1000: expected 3000-4999 (4000-4499: the client reconnects; 4500-4999: it does not)."
            )
        )
    );
}

#[tokio::test]
async fn authentication_and_errors() {
    let server = start().await;
    let wrong = error(401, "Missing or wrong API key: send 'Authorization: apikey KEY'.");
    assert_eq!(server.call_raw("info", "{}", None).await, (401, wrong.clone()));
    assert_eq!(
        server.call_raw("info", "{}", Some("apikey nope")).await,
        (401, wrong.clone())
    );
    assert_eq!(
        server.call_raw("info", "{}", Some(&format!("Bearer {KEY}"))).await,
        (401, wrong)
    );
    let key = format!("apikey {KEY}");
    let key = Some(key.as_str());
    let (status, answer) = server.call_raw("publish", "{not json", key).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON: "),
        "{answer}"
    );
    assert_eq!(
        server.call_raw("publish", "[1]", key).await,
        (400, error(400, "Invalid request body: expected a JSON object."))
    );
    assert_eq!(
        server.call("frobnicate", json!({})).await,
        (404, error(404, "Unknown method 'frobnicate': expected one of publish, broadcast, history, presence, presence_stats, disconnect, unsubscribe, channels, info."))
    );
    assert_eq!(
        server.call("publish", json!({"channel": "nowhere:x", "data": 1})).await,
        (404, error(404, "Channel 'nowhere:x' not found."))
    );
    let (status, answer) = server.call("publish", json!({"channel": 5, "data": 1})).await;
    assert_eq!(status, 400);
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Invalid parameters: invalid type: integer `5`, expected a string"),
        "{message}"
    );
    let (status, answer) = server.call("publish", json!({"data": 1})).await;
    assert_eq!(
        (status, answer["error"]["message"].as_str()),
        (400, Some("Invalid parameters: missing field `channel`."))
    );
    assert_eq!(
        server
            .call("publish", json!({"channel": "live:x", "data": "x".repeat(200)}))
            .await,
        (
            413,
            error(413, "Publication data too large: at most 100 bytes of JSON.")
        )
    );
    let huge = json!({"channel": "live:x", "data": "x".repeat(2 << 20)}).to_string();
    assert_eq!(
        server.call_raw("publish", &huge, key).await,
        (413, error(413, "Request body too large (limit 1 MiB)."))
    );
    // After all that, the server still serves.
    let deadline = Instant::now() + WAIT;
    let (status, _) = server.call("info", json!({})).await;
    assert_eq!(status, 200);
    assert!(Instant::now() < deadline);
}
