//! The Rust client's pub/sub side over real sockets: subscriptions (data, default response,
//! refusals, unsubscribe and drop), and actions (results, errors, timeouts).

#[path = "duplex_support.rs"]
mod support;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use support::*;
use switchboard::client::{Client, ClientError};
use switchboard::{Channel, ChannelRef, Router};

const T: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct Chat {
    #[serde(default)]
    message: String,
}

#[derive(Serialize, Deserialize)]
struct Private {
    token: String,
}

#[derive(Serialize, Deserialize)]
struct Notifications {
    user_id: i64,
}

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

struct Refs {
    chat: ChannelRef<Chat>,
    notifications: ChannelRef<Notifications>,
}

fn router() -> (Router, Refs) {
    let mut router = Router::new();
    let chat = router.channel(Channel::new("chat", |p: Chat| async move {
        Ok::<_, String>(json!({ "message": p.message }))
    }));
    router.channel(
        Channel::new("news", |_: Value| async move {
            Ok::<_, String>(json!({ "headline": "Breaking News!" }))
        })
        .default_response(),
    );
    router.channel(
        Channel::new("private_chat", |p: Private| async move {
            if p.token == "secret_token" {
                Ok(json!({ "authenticated": true }))
            } else {
                Err("Invalid token".to_owned())
            }
        })
        .required_on_subscribe(["token"]),
    );
    let notifications = router.channel(
        Channel::new("notifications", |p: Notifications| async move {
            Ok::<_, String>(json!({ "user_id": p.user_id }))
        })
        .required_on_subscribe(["user_id"]),
    );
    router.action("add", |p: Add| async move { Ok::<_, String>(p.a + p.b) });
    router.action("nothing", |_: Value| async move { Ok::<_, String>(Value::Null) });
    router.action("fail", |_: Value| async move { Err::<Value, _>("it failed") });
    router.action("slow", |_: Value| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok::<_, String>(1)
    });
    (router, Refs { chat, notifications })
}

async fn subscriptions(server: &Server) -> u64 {
    metric(server.addr, "switchboard_subscriptions").await
}

#[tokio::test]
async fn subscribe_receives_broadcasts_and_unsubscribes() {
    let (router, refs) = router();
    let server = serve(router).await;
    let client = Client::connect(&server.url(), fast_config()).await.expect("connect");

    let mut chat = client.subscribe("chat", json!({})).await.expect("subscribe");
    assert_eq!(chat.channel(), "chat");
    assert_eq!(subscriptions(&server).await, 1);
    refs.chat
        .broadcast(Chat { message: "one".into() })
        .await
        .expect("broadcast");
    assert_eq!(
        tokio::time::timeout(T, chat.next()).await.expect("in time"),
        Some(json!({ "message": "one" }))
    );
    // It is a Stream too.
    refs.chat
        .broadcast(Chat { message: "two".into() })
        .await
        .expect("broadcast");
    let item = tokio::time::timeout(T, StreamExt::next(&mut chat))
        .await
        .expect("in time");
    assert_eq!(item, Some(json!({ "message": "two" })));

    // A second local subscription of the channel shares the server's; dropping one keeps it.
    let mut second = client.subscribe("chat", Value::Null).await.expect("subscribe");
    drop(chat);
    refs.chat
        .broadcast(Chat {
            message: "three".into(),
        })
        .await
        .expect("broadcast");
    assert_eq!(
        tokio::time::timeout(T, second.next()).await.expect("in time"),
        Some(json!({ "message": "three" }))
    );
    assert_eq!(subscriptions(&server).await, 1);
    second.unsubscribe().await.expect("unsubscribed");
    assert_eq!(subscriptions(&server).await, 0);

    // Dropping the last one leaves the server subscription too.
    let third = client.subscribe("chat", json!({})).await.expect("subscribe");
    assert_eq!(subscriptions(&server).await, 1);
    drop(third);
    assert!(
        eventually_async(|| async { subscriptions(&server).await == 0 }).await,
        "dropped subscription left"
    );
}

async fn eventually_async<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn default_response_keyed_channels_and_refusals() {
    let (router, refs) = router();
    let server = serve(router).await;
    let client = Client::connect(&server.url(), fast_config()).await.expect("connect");

    let mut news = client.subscribe("news", json!({})).await.expect("subscribe");
    assert_eq!(
        tokio::time::timeout(T, news.next()).await.expect("in time"),
        Some(json!({ "headline": "Breaking News!" }))
    );

    let refused = client.subscribe("private_chat", json!({ "token": "wrong" })).await;
    assert_eq!(refused.err(), Some(ClientError::Remote("Invalid token".into())));
    let unknown = client.subscribe("nope", json!({})).await;
    assert_eq!(
        unknown.err(),
        Some(ClientError::Remote("Channel 'nope' not found.".into()))
    );
    client
        .subscribe("private_chat", json!({ "token": "secret_token" }))
        .await
        .expect("accepted");

    // Keyed: user 1 gets user 1's notifications only.
    let mut mine = client
        .subscribe("notifications", json!({ "user_id": 1 }))
        .await
        .expect("subscribe");
    refs.notifications
        .broadcast(Notifications { user_id: 2 })
        .await
        .expect("broadcast");
    refs.notifications
        .broadcast(Notifications { user_id: 1 })
        .await
        .expect("broadcast");
    assert_eq!(
        tokio::time::timeout(T, mine.next()).await.expect("in time"),
        Some(json!({ "user_id": 1 }))
    );
    assert_eq!(mine.try_next(), None);
}

#[tokio::test]
async fn actions_results_errors_and_timeouts() {
    let (router, _refs) = router();
    let server = serve(router).await;
    let client = Client::connect(&server.url(), fast_config()).await.expect("connect");

    assert_eq!(client.action("add", json!({ "a": 2, "b": 3 }), T).await, Ok(json!(5)));
    assert_eq!(client.action("nothing", json!({}), T).await, Ok(Value::Null));
    assert_eq!(
        client.action("fail", json!({}), T).await,
        Err(ClientError::Remote("it failed".into()))
    );
    assert_eq!(
        client.action("nope", json!({}), T).await,
        Err(ClientError::Remote("Action 'nope' not found.".into()))
    );
    assert_eq!(
        client.action("add", json!({ "a": "x" }), T).await,
        Err(ClientError::Remote("Invalid parameters for action 'add'".into()))
    );
    let timeout = Duration::from_millis(200);
    assert!(matches!(
        client.action("slow", json!({}), timeout).await,
        Err(ClientError::Timeout { .. })
    ));
    // Concurrent actions are matched by id.
    let calls = (0..20).map(|i| {
        let client = client.clone();
        async move { client.action("add", json!({ "a": i, "b": 1 }), T).await }
    });
    let results = futures_util::future::join_all(calls).await;
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result, Ok(json!(i as i64 + 1)));
    }
}

#[tokio::test]
async fn connect_errors_and_close() {
    assert!(matches!(
        Client::connect("http://127.0.0.1:1/", fast_config()).await,
        Err(ClientError::Connect(_))
    ));
    // Nothing listens on a port we just released.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let refused = Client::connect(&format!("ws://127.0.0.1:{port}/"), fast_config()).await;
    assert!(matches!(refused, Err(ClientError::Connect(_))), "{refused:?}");

    let (router, _refs) = router();
    let server = serve(router).await;
    let client = Client::connect(&server.url(), fast_config()).await.expect("connect");
    let mut chat = client.subscribe("chat", json!({})).await.expect("subscribe");
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.action("slow", json!({}), T).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.close();
    tokio::time::timeout(T, client.closed()).await.expect("closed");
    assert_eq!(slow.await.expect("join"), Err(ClientError::Disconnected));
    assert_eq!(tokio::time::timeout(T, chat.next()).await.expect("ends"), None);
    assert_eq!(
        client.action("add", json!({ "a": 1, "b": 1 }), T).await,
        Err(ClientError::Closed("client".into()))
    );
}
