//! Pub/sub over real sockets: Switchboard's extensions to SocketAPI's protocol — request ids,
//! the channel on errors, falsy data kept, replies to non-JSON and binary messages, keyed
//! delivery, in-process broadcasts, `/_broadcast` errors and its bearer token.

mod common;

use common::{Event, Server};
use serde_json::json;
use switchboard::{Channel, PublishError, Router};

#[tokio::test]
async fn ids_are_echoed_on_every_reply() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "subscribe", "channel": "chat", "id": 1}),
        json!({"type": "subscribed", "channel": "chat", "id": 1}),
    )
    .await;
    c.exchange(
        json!({"type": "subscribe", "channel": "news", "id": "n"}),
        json!({"type": "subscribed", "channel": "news", "id": "n"}),
    )
    .await;
    // Publications carry no id, the initial data included.
    c.expect(json!({"type": "data", "channel": "news", "data": {"headline": "Breaking News!"}}))
        .await;
    c.exchange(
        json!({"type": "unsubscribe", "channel": "chat", "id": {"k": [1, 2]}}),
        json!({"type": "unsubscribed", "channel": "chat", "id": {"k": [1, 2]}}),
    )
    .await;
    c.exchange(
        json!({"type": "action", "channel": "add", "data": {"a": 1, "b": 2}, "id": 7}),
        json!({"type": "action", "channel": "add", "status": "completed", "data": 3, "id": 7}),
    )
    .await;
    c.exchange(
        json!({"type": "action", "channel": "send_message", "data": {"text": "x"}, "id": 8}),
        json!({"type": "action", "channel": "send_message", "status": "completed", "id": 8}),
    )
    .await;
    // Errors, whichever check failed.
    c.exchange(
        json!({"type": "subscribe", "channel": "nonexistent", "id": 9}),
        json!({"type": "error", "channel": "nonexistent", "message": "Channel 'nonexistent' not found.", "id": 9}),
    )
    .await;
    c.exchange(
        json!({"type": "action", "channel": "nope", "id": 10}),
        json!({"type": "error", "channel": "nope", "message": "Action 'nope' not found.", "id": 10}),
    )
    .await;
    c.exchange(
        json!({"type": "action", "channel": "add", "data": {"a": "x"}, "id": 11}),
        json!({"type": "error", "channel": "add", "message": "Invalid parameters for action 'add'", "id": 11}),
    )
    .await;
    c.exchange(
        json!({"type": "subscribe", "channel": "private_chat", "data": {"token": "bad"}, "id": 12}),
        json!({"type": "error", "channel": "private_chat", "message": "Invalid token", "id": 12}),
    )
    .await;
    c.exchange(
        json!({"channel": "chat", "id": 13}),
        json!({"type": "error", "message": "Message type is required.", "id": 13}),
    )
    .await;
    c.exchange(
        json!({"type": "subscribe", "id": 14}),
        json!({"type": "error", "message": "Channel is required.", "id": 14}),
    )
    .await;
    c.exchange(
        json!({"type": "bogus", "channel": "chat", "id": 15}),
        json!({"type": "error", "channel": "chat", "message": "Unknown message type: bogus.", "id": 15}),
    )
    .await;
    // A null id is no id.
    c.exchange(
        json!({"type": "action", "channel": "add", "data": {"a": 1, "b": 1}, "id": null}),
        json!({"type": "action", "channel": "add", "status": "completed", "data": 2}),
    )
    .await;
}

#[tokio::test]
async fn errors_about_a_named_channel_carry_it() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "subscribe", "channel": "notifications"}),
        json!({"type": "error", "channel": "notifications", "message": "Invalid parameters for action 'notifications'"}),
    )
    .await;
    c.exchange(
        json!({"type": "action", "channel": "add", "data": {"a": i64::MAX, "b": 1}}),
        json!({"type": "error", "channel": "add", "message": "integer overflow"}),
    )
    .await;
    // Errors not about a channel have none.
    c.exchange(
        json!({"type": "subscribe"}),
        json!({"type": "error", "message": "Channel is required."}),
    )
    .await;
}

#[tokio::test]
async fn falsy_data_is_kept() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "action", "channel": "add", "data": {"a": 0, "b": 0}}),
        json!({"type": "action", "channel": "add", "status": "completed", "data": 0}),
    )
    .await;
    for value in [json!(false), json!([]), json!({}), json!("")] {
        c.exchange(
            json!({"type": "action", "channel": "echo", "data": {"value": value}}),
            json!({"type": "action", "channel": "echo", "status": "completed", "data": value}),
        )
        .await;
    }
}

#[tokio::test]
async fn non_json_text_gets_an_error_and_the_connection_stays_open() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let not_an_object = json!({"type": "error", "message": "Invalid message: expected a JSON object."});
    for text in [
        "Hello, World!",
        "{\"type\": \"subscribe\"",
        "[1, 2]",
        "42",
        "\"subscribe\"",
        "null",
        "",
    ] {
        c.send_raw(text);
        c.expect(not_an_object.clone()).await;
    }
    c.exchange(
        json!({"type": "subscribe", "channel": "chat"}),
        json!({"type": "subscribed", "channel": "chat"}),
    )
    .await;
    server
        .broadcast_json(json!({"channel": "chat", "data": {"message": "still open"}}))
        .await;
    c.expect(json!({"type": "data", "channel": "chat", "data": {"message": "still open"}}))
        .await;
}

#[tokio::test]
async fn binary_frames_get_an_error_and_the_connection_stays_open() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.ws.send_binary(br#"{"type":"subscribe","channel":"chat"}"#.to_vec())
        .unwrap();
    c.expect(json!({"type": "error", "message": "Binary messages are not supported: send JSON text."}))
        .await;
    c.ws.send_binary(Vec::new()).unwrap();
    c.expect(json!({"type": "error", "message": "Binary messages are not supported: send JSON text."}))
        .await;
    c.exchange(
        json!({"type": "subscribe", "channel": "chat"}),
        json!({"type": "subscribed", "channel": "chat"}),
    )
    .await;
    server.wait_metric("switchboard_connections", 1).await;
}

#[tokio::test]
async fn keyed_delivery_reaches_only_matching_subscribers() {
    let server = Server::start().await;
    let mut u123 = server.client().await;
    let mut u7 = server.client().await;
    let mut u123_text = server.client().await;
    let subscribed = json!({"type": "subscribed", "channel": "notifications"});
    u123.exchange(
        json!({"type": "subscribe", "channel": "notifications", "data": {"user_id": 123}}),
        subscribed.clone(),
    )
    .await;
    u7.exchange(
        json!({"type": "subscribe", "channel": "notifications", "data": {"user_id": 7}}),
        subscribed.clone(),
    )
    .await;
    // "123" validates to 123: the same key.
    u123_text
        .exchange(
            json!({"type": "subscribe", "channel": "notifications", "data": {"user_id": "123"}}),
            subscribed,
        )
        .await;

    // From an action, sent by user 7's client.
    u7.exchange(
        json!({"type": "action", "channel": "send_notification", "data": {"user_id": 123, "message": "hi"}}),
        json!({"type": "action", "channel": "send_notification", "status": "completed"}),
    )
    .await;
    let for_123 = json!({"type": "data", "channel": "notifications", "data": {"user_id": 123, "type": "alert", "notifications": []}});
    u123.expect(for_123.clone()).await;
    u123_text.expect(for_123).await;
    u7.assert_nothing_pending().await;

    // Over HTTP, for user 7.
    let (status, _) = server
        .broadcast_json(json!({"channel": "notifications", "data": {"user_id": 7}}))
        .await;
    assert_eq!(status, 200);
    u7.expect(
        json!({"type": "data", "channel": "notifications", "data": {"user_id": 7, "type": "all", "notifications": []}}),
    )
    .await;
    // Nobody subscribed with user 99: accepted, delivered to no one.
    assert_eq!(
        server
            .broadcast_json(json!({"channel": "notifications", "data": {"user_id": 99}}))
            .await
            .0,
        200
    );
    u123.assert_nothing_pending().await;
    u123_text.assert_nothing_pending().await;
    u7.assert_nothing_pending().await;

    // A channel without subscribe-time parameters reaches everyone.
    for c in [&mut u123, &mut u7, &mut u123_text] {
        c.exchange(
            json!({"type": "subscribe", "channel": "chat"}),
            json!({"type": "subscribed", "channel": "chat"}),
        )
        .await;
    }
    server
        .broadcast_json(json!({"channel": "chat", "data": {"message": "all"}}))
        .await;
    for c in [&mut u123, &mut u7, &mut u123_text] {
        c.expect(json!({"type": "data", "channel": "chat", "data": {"message": "all"}}))
            .await;
    }
}

#[tokio::test]
async fn keyed_unsubscribe_leaves_one_key_or_all() {
    let server = Server::start().await;
    let mut c = server.client().await;
    for user in [1, 2, 3] {
        c.exchange(
            json!({"type": "subscribe", "channel": "notifications", "data": {"user_id": user}}),
            json!({"type": "subscribed", "channel": "notifications"}),
        )
        .await;
    }
    server.wait_metric("switchboard_subscriptions", 3).await;
    c.exchange(
        json!({"type": "unsubscribe", "channel": "notifications", "data": {"user_id": 2}}),
        json!({"type": "unsubscribed", "channel": "notifications"}),
    )
    .await;
    server.wait_metric("switchboard_subscriptions", 2).await;
    for user in [1, 2, 3] {
        server
            .broadcast_json(json!({"channel": "notifications", "data": {"user_id": user}}))
            .await;
    }
    c.expect(
        json!({"type": "data", "channel": "notifications", "data": {"user_id": 1, "type": "all", "notifications": []}}),
    )
    .await;
    c.expect(
        json!({"type": "data", "channel": "notifications", "data": {"user_id": 3, "type": "all", "notifications": []}}),
    )
    .await;
    c.assert_nothing_pending().await;
    c.exchange(
        json!({"type": "unsubscribe", "channel": "notifications"}),
        json!({"type": "unsubscribed", "channel": "notifications"}),
    )
    .await;
    server.wait_metric("switchboard_subscriptions", 0).await;
}

#[tokio::test]
async fn broadcast_from_a_spawned_task() {
    let server = Server::start().await;
    let mut chat = server.client().await;
    let mut alice = server.client().await;
    chat.exchange(
        json!({"type": "subscribe", "channel": "chat"}),
        json!({"type": "subscribed", "channel": "chat"}),
    )
    .await;
    alice
        .exchange(
            json!({"type": "subscribe", "channel": "notifications", "data": {"user_id": 5}}),
            json!({"type": "subscribed", "channel": "notifications"}),
        )
        .await;
    let handles = server.handles.clone();
    tokio::spawn(async move {
        handles
            .chat
            .broadcast(common::Chat {
                message: "from a task".into(),
            })
            .await?;
        let note = common::Notifications {
            user_id: 5,
            notification_type: "digest".into(),
        };
        handles.notifications.broadcast(note).await
    })
    .await
    .unwrap()
    .unwrap();
    chat.expect(json!({"type": "data", "channel": "chat", "data": {"message": "from a task"}}))
        .await;
    alice
        .expect(json!({"type": "data", "channel": "notifications", "data": {"user_id": 5, "type": "digest", "notifications": []}}))
        .await;
    chat.assert_nothing_pending().await;

    // From another OS thread, with its own runtime.
    let chat_ref = server.handles.chat.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(chat_ref.broadcast(common::Chat {
            message: "from a thread".into(),
        }))
    })
    .join()
    .unwrap()
    .unwrap();
    chat.expect(json!({"type": "data", "channel": "chat", "data": {"message": "from a thread"}}))
        .await;
}

#[tokio::test]
async fn broadcast_on_an_unmounted_channel_fails() {
    let mut router = Router::new();
    let lonely = router.channel(Channel::new("lonely", |p: common::Chat| async move {
        Ok::<_, String>(p.message)
    }));
    let err = lonely
        .broadcast(common::Chat {
            message: "anyone?".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::NotMounted(ref name) if name == "lonely"),
        "{err:?}"
    );
}

#[tokio::test]
async fn broadcast_endpoint_errors_are_4xx_json() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "subscribe", "channel": "chat"}),
        json!({"type": "subscribed", "channel": "chat"}),
    )
    .await;

    let cases = [
        (
            json!({"channel": "nonexistent", "data": {}}),
            404,
            json!({"error": "Channel 'nonexistent' not found."}),
        ),
        (
            json!({"channel": "user_updates", "data": {"user_id": "abc"}}),
            422,
            json!({"error": "Invalid parameters for action 'user_updates'"}),
        ),
        (
            json!({"channel": "user_updates"}),
            422,
            json!({"error": "Invalid parameters for action 'user_updates'"}),
        ),
        (
            json!({"channel": "chat", "data": 5}),
            422,
            json!({"error": "Invalid parameters for action 'chat'"}),
        ),
        // An array must not fill the parameters by position (regression: it broadcast "x").
        (
            json!({"channel": "chat", "data": ["x"]}),
            422,
            json!({"error": "Invalid parameters for action 'chat'"}),
        ),
        (
            json!({"data": {"message": "x"}}),
            400,
            json!({"error": "Channel is required."}),
        ),
        (
            json!({"channel": 5, "data": {}}),
            400,
            json!({"error": "Channel is required."}),
        ),
        (
            json!({"channel": "private_chat", "data": {"token": "bad"}}),
            400,
            json!({"error": "Invalid token"}),
        ),
    ];
    for (body, want_status, want_body) in cases {
        let (status, got) = server.broadcast_json(body.clone()).await;
        assert_eq!((status, &got), (want_status, &want_body), "POST /_broadcast {body}");
    }
    for raw in [
        "not json",
        "{\"channel\": \"chat\"",
        "[\"chat\"]",
        "\"chat\"",
        "null",
        "",
    ] {
        let (status, text) = server.post_broadcast(raw, &[]).await;
        assert_eq!(status, 400, "POST /_broadcast {raw:?}: {text}");
        let body: serde_json::Value = serde_json::from_str(&text).expect("JSON error body");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    }
    let (status, _) = common::http(server.addr, "GET", "/_broadcast", &[], None).await;
    assert_eq!(status, 405);
    // None of it reached the subscriber.
    c.assert_nothing_pending().await;
    assert_eq!(server.metric("switchboard_publications_total").await, 0);
}

#[tokio::test]
async fn broadcast_token_is_required_when_configured() {
    let server = Server::start_with(|b| b.broadcast_token("s3cret")).await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "subscribe", "channel": "chat"}),
        json!({"type": "subscribed", "channel": "chat"}),
    )
    .await;
    let body = json!({"channel": "chat", "data": {"message": "authorized"}}).to_string();
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "s3cret")],
        vec![("Authorization", "Basic s3cret")],
    ] {
        let (status, text) = server.post_broadcast(&body, &headers).await;
        assert_eq!(status, 401, "{headers:?}: {text}");
        let error: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(error["error"].as_str().is_some_and(|e| e.contains("token")), "{error}");
    }
    c.assert_nothing_pending().await;
    let (status, text) = server
        .post_broadcast(&body, &[("Authorization", "Bearer s3cret")])
        .await;
    assert_eq!(
        (status, serde_json::from_str::<serde_json::Value>(&text).unwrap()),
        (200, json!({"status": "success"}))
    );
    c.expect(json!({"type": "data", "channel": "chat", "data": {"message": "authorized"}}))
        .await;
}

#[tokio::test]
async fn token_does_not_override_the_host_check() {
    let server = Server::start_with(|b| b.broadcast_token("s3cret").broadcast_allowed_hosts(["10.9.9.9"])).await;
    let body = json!({"channel": "chat", "data": {"message": "x"}}).to_string();
    let (status, text) = server
        .post_broadcast(&body, &[("Authorization", "Bearer s3cret")])
        .await;
    assert_eq!(status, 403, "{text}");
}

#[tokio::test]
async fn client_close_is_a_normal_close() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.ws.close(1000, "bye").unwrap();
    match c.next_event().await {
        Event::Close(frame) => assert_eq!(frame.code, 1000),
        other => panic!("expected the close, got {other:?}"),
    }
    server.wait_metric("switchboard_connections", 0).await;
}
