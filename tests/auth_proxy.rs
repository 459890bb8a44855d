//! The proxies over real sockets (PROTOCOL.md, "Proxies"): a node asks a real HTTP backend (axum on
//! loopback) who a connection is, whether it may subscribe, and what an undeclared action
//! answers — and a backend that refuses, disconnects, is slow, down or answers garbage costs the
//! client an error reply (or the close the backend asked for), never a hung connection.

mod common;

use axum::extract::State;
use axum::Json;
use common::{Client, Event, Served};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard::{Channel, Namespace, Node, Proxy, Router};
use tokio::net::TcpListener;

/// What the backend answers, by the `data.as` of the request (or its action name).
async fn backend(State(seen): State<Arc<Mutex<Vec<Value>>>>, Json(request): Json<Value>) -> axum::response::Response {
    use axum::response::IntoResponse;
    seen.lock().unwrap().push(request.clone());
    let what = request["data"]["as"]
        .as_str()
        .or(request["action"].as_str())
        .unwrap_or_default()
        .to_owned();
    match what.as_str() {
        "alice" => Json(json!({"result": {"user": "alice", "info": {"name": "Alice"}}})).into_response(),
        "bob" => Json(json!({"result": {"user": "bob"}})).into_response(),
        "refused" => Json(json!({"error": {"code": 1001, "message": "go away"}})).into_response(),
        "banned" => Json(json!({"disconnect": {"code": 4503, "reason": "banned"}})).into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Json(json!({"result": {"user": "late"}})).into_response()
        }
        "garbage" => "<html>oops</html>".into_response(),
        "broken" => (http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "sum" => Json(json!({"result": {"data": request["data"]["a"].as_i64().unwrap_or(0) + 1}})).into_response(),
        "nope" => Json(json!({"error": {"code": 7, "message": "not today"}})).into_response(),
        // Subscriptions: allowed for alice only.
        _ if request.get("channel").is_some() => {
            if request["user"] == "alice" {
                Json(json!({"result": {}})).into_response()
            } else {
                Json(json!({"error": {"code": 403, "message": "members only"}})).into_response()
            }
        }
        _ => Json(json!({"error": {"code": 400, "message": "unknown"}})).into_response(),
    }
}

struct Backend {
    url: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

async fn start_backend() -> Backend {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/", axum::routing::post(backend))
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Backend { url, seen }
}

#[derive(Serialize, Deserialize)]
struct Text {
    #[serde(default)]
    text: String,
}

async fn start(proxy: Proxy) -> Served {
    let mut router = Router::new();
    // Client publications on `room:*` are asked of the publish proxy.
    router.namespace(Namespace::new("room").client_publish(true).publish_proxy(true));
    router.channel(
        Channel::new("members", |p: Text| async move {
            Ok::<_, String>(json!({ "text": p.text }))
        })
        .subscribe_proxy(),
    );
    let node = Node::builder(router).proxy(proxy).build();
    common::serve(node.app()).await
}

async fn client(server: &Served) -> Client {
    Client::connect(&format!("ws://{}/", server.addr)).await
}

fn all(url: &str) -> Proxy {
    Proxy::new()
        .connect(url)
        .subscribe(url)
        .publish(url)
        .action(url)
        .timeout(Duration::from_millis(300))
}

async fn connect_as(client: &mut Client, who: &str) -> Value {
    client.send(json!({"type": "connect", "data": {"as": who}, "id": 1}));
    client.recv().await
}

#[tokio::test]
async fn the_connect_proxy_names_the_user_and_sees_the_request() {
    let backend = start_backend().await;
    let server = start(all(&backend.url)).await;
    let mut alice = client(&server).await;
    let connected = connect_as(&mut alice, "alice").await;
    assert_eq!(connected["type"], "connected", "{connected}");
    assert_eq!(connected["user"], "alice");
    assert!(connected.get("expires_in").is_none());
    let request = backend.seen.lock().unwrap()[0].clone();
    assert_eq!(request["client"], connected["client"]);
    assert_eq!(request["transport"], "websocket");
    assert_eq!(request["data"], json!({"as": "alice"}));
    assert!(request["headers"].is_object(), "{request}");
}

#[tokio::test]
async fn a_refusal_is_an_error_reply_and_the_connection_may_try_again() {
    let backend = start_backend().await;
    let server = start(all(&backend.url)).await;
    let mut c = client(&server).await;
    assert_eq!(
        connect_as(&mut c, "refused").await,
        json!({"type": "error", "id": 1, "message": "go away"})
    );
    assert_eq!(connect_as(&mut c, "alice").await["user"], "alice");
}

#[tokio::test]
async fn a_disconnect_closes_with_the_backends_code() {
    let backend = start_backend().await;
    let server = start(all(&backend.url)).await;
    let mut c = client(&server).await;
    c.send(json!({"type": "connect", "data": {"as": "banned"}, "id": 1}));
    match c.next_event().await {
        Event::Close(close) => {
            assert_eq!(close.code, 4503);
            assert_eq!(close.reason, "banned");
        }
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_slow_broken_or_garbage_backend_is_an_error_reply_in_bounded_time() {
    let backend = start_backend().await;
    let server = start(all(&backend.url)).await;
    for who in ["slow", "garbage", "broken"] {
        let mut c = client(&server).await;
        let started = Instant::now();
        assert_eq!(
            connect_as(&mut c, who).await,
            json!({"type": "error", "id": 1, "message": "Authentication unavailable: try again later."}),
            "{who}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{who}: {:?}",
            started.elapsed()
        );
        // The connection is still there and may try again.
        assert_eq!(connect_as(&mut c, "alice").await["user"], "alice", "{who}");
    }
}

#[tokio::test]
async fn a_backend_that_is_down_is_an_error_reply() {
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let server = start(all(&url)).await;
    let mut c = client(&server).await;
    assert_eq!(
        connect_as(&mut c, "alice").await,
        json!({"type": "error", "id": 1, "message": "Authentication unavailable: try again later."})
    );
}

#[tokio::test]
async fn the_subscribe_proxy_allows_and_refuses() {
    let backend = start_backend().await;
    let server = start(all(&backend.url)).await;
    let mut alice = client(&server).await;
    connect_as(&mut alice, "alice").await;
    alice
        .exchange(
            json!({"type": "subscribe", "channel": "members", "id": 2}),
            json!({"type": "subscribed", "channel": "members", "id": 2}),
        )
        .await;
    let asked = backend.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(asked["channel"], "members");
    assert_eq!(asked["user"], "alice");
    // Alice is the backend's only member: bob is refused with the backend's message, and stays.
    let mut bob = client(&server).await;
    assert_eq!(connect_as(&mut bob, "bob").await["user"], "bob");
    bob.exchange(
        json!({"type": "subscribe", "channel": "members", "id": 2}),
        json!({"type": "error", "channel": "members", "id": 2, "message": "members only"}),
    )
    .await;
    bob.exchange(
        json!({"type": "action", "channel": "sum", "data": {"a": 1}, "id": 3}),
        json!({"type": "action", "channel": "sum", "status": "completed", "data": 2, "id": 3}),
    )
    .await;
}

#[tokio::test]
async fn the_action_proxy_answers_undeclared_actions() {
    let backend = start_backend().await;
    let server = start(all(&backend.url)).await;
    let mut c = client(&server).await;
    connect_as(&mut c, "alice").await;
    c.exchange(
        json!({"type": "action", "channel": "sum", "data": {"a": 41}, "id": 3}),
        json!({"type": "action", "channel": "sum", "status": "completed", "data": 42, "id": 3}),
    )
    .await;
    c.exchange(
        json!({"type": "action", "channel": "nope", "id": 4}),
        json!({"type": "error", "channel": "nope", "id": 4, "message": "not today"}),
    )
    .await;
    c.exchange(
        json!({"type": "action", "channel": "slow", "id": 5}),
        json!({"type": "error", "channel": "slow", "id": 5, "message": "Action backend unavailable: try again later."}),
    )
    .await;
    let asked = backend
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "sum")
        .cloned()
        .unwrap();
    assert_eq!(asked["user"], "alice");
    assert_eq!(asked["data"], json!({"a": 41}));
}

#[tokio::test]
async fn the_publish_proxy_allows_replaces_and_refuses_client_publications() {
    let backend = start_backend().await;
    let server = start(all(&backend.url)).await;
    let mut alice = client(&server).await;
    connect_as(&mut alice, "alice").await;
    alice
        .exchange(
            json!({"type": "subscribe", "channel": "room:1", "id": 2}),
            json!({"type": "subscribed", "channel": "room:1", "id": 2}),
        )
        .await;
    // Allowed as sent (alice is a member), with the request's shape.
    alice.send(json!({"type": "publish", "channel": "room:1", "data": {"text": "hi"}, "id": 3}));
    let mut got = [alice.recv().await, alice.recv().await];
    got.sort_by_key(|m| m["type"].as_str().map(str::to_owned));
    assert_eq!(
        got,
        [
            json!({"type": "data", "channel": "room:1", "data": {"text": "hi"}}),
            json!({"type": "published", "channel": "room:1", "id": 3}),
        ]
    );
    let asked = backend.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(asked["channel"], "room:1");
    assert_eq!(asked["user"], "alice");
    assert_eq!(asked["data"], json!({"text": "hi"}));
    assert!(asked["client"].as_str().is_some_and(|c| !c.is_empty()), "{asked}");
    // The backend's `result.data` replaces the data.
    alice.send(json!({"type": "publish", "channel": "room:1", "data": {"as": "sum", "a": 41}, "id": 4}));
    let mut got = [alice.recv().await, alice.recv().await];
    got.sort_by_key(|m| m["type"].as_str().map(str::to_owned));
    assert_eq!(got[0], json!({"type": "data", "channel": "room:1", "data": 42}));
    // Refused with the backend's message; nothing published.
    alice
        .exchange(
            json!({"type": "publish", "channel": "room:1", "data": {"as": "refused"}, "id": 5}),
            json!({"type": "error", "channel": "room:1", "id": 5, "message": "go away"}),
        )
        .await;
    let mut bob = client(&server).await;
    connect_as(&mut bob, "bob").await;
    bob.exchange(
        json!({"type": "publish", "channel": "room:1", "data": {"text": "x"}, "id": 2}),
        json!({"type": "error", "channel": "room:1", "id": 2, "message": "members only"}),
    )
    .await;
    // A slow backend is an error reply within the proxy's timeout, and the connection stays.
    let started = Instant::now();
    bob.exchange(
        json!({"type": "publish", "channel": "room:1", "data": {"as": "slow"}, "id": 3}),
        json!({"type": "error", "channel": "room:1", "id": 3, "message": "Publish backend unavailable: try again later."}),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    // Disconnect: the backend's close code.
    bob.send(json!({"type": "publish", "channel": "room:1", "data": {"as": "banned"}, "id": 4}));
    loop {
        if let Event::Close(close) = bob.next_event().await {
            assert_eq!((close.code, close.reason.as_ref()), (4503, "banned"));
            break;
        }
    }
    // Nothing of the refused publications reached alice: her next messages are her own.
    alice.send(json!({"type": "publish", "channel": "room:1", "data": "last", "id": 6}));
    let mut got = [alice.recv().await, alice.recv().await];
    got.sort_by_key(|m| m["type"].as_str().map(str::to_owned));
    assert_eq!(
        got,
        [
            json!({"type": "data", "channel": "room:1", "data": "last"}),
            json!({"type": "published", "channel": "room:1", "id": 6}),
        ]
    );
}
