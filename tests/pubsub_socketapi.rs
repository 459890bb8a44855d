//! Pub/sub over real sockets, topic by topic of SocketAPI's own test suite (subscribe, unsubscribe,
//! default response, actions, bad messages, validation, required-on-subscribe, several
//! subscribers, broadcasts from outside, disconnect cleanup), with the exact JSON expected from
//! Switchboard: SocketAPI's messages plus our documented extensions (`channel` on errors about a
//! named channel, `id` when the client sent one).

mod common;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn subscribe_without_default_response_sends_only_the_confirmation() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "subscribe", "channel": "chat"}),
        json!({"type": "subscribed", "channel": "chat"}),
    )
    .await;
    c.assert_nothing_pending().await;
    server.wait_metric("switchboard_subscriptions", 1).await;
}

#[tokio::test]
async fn subscribe_with_default_response_sends_the_initial_data() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "subscribe", "channel": "news"}),
        json!({"type": "subscribed", "channel": "news"}),
    )
    .await;
    c.expect(json!({"type": "data", "channel": "news", "data": {"headline": "Breaking News!"}}))
        .await;
    c.assert_nothing_pending().await;
}

#[tokio::test]
async fn subscribed_client_receives_broadcasts() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "subscribe", "channel": "chat"}),
        json!({"type": "subscribed", "channel": "chat"}),
    )
    .await;
    // From an action (SocketAPI: calling the channel function inside an action).
    c.send(json!({"type": "action", "channel": "send_message", "data": {"text": "Test Message"}}));
    c.expect(json!({"type": "data", "channel": "chat", "data": {"message": "Test Message"}}))
        .await;
    c.expect(json!({"type": "action", "channel": "send_message", "status": "completed"}))
        .await;
    // A default applies when the broadcast leaves a parameter out.
    let (status, body) = server.broadcast_json(json!({"channel": "chat", "data": {}})).await;
    assert_eq!((status, body), (200, json!({"status": "success"})));
    c.expect(json!({"type": "data", "channel": "chat", "data": {"message": "Welcome"}}))
        .await;
    // A channel without default response still delivers broadcasts.
    c.exchange(
        json!({"type": "subscribe", "channel": "news"}),
        json!({"type": "subscribed", "channel": "news"}),
    )
    .await;
    c.expect(json!({"type": "data", "channel": "news", "data": {"headline": "Breaking News!"}}))
        .await;
    let (status, _) = server.broadcast_json(json!({"channel": "news"})).await;
    assert_eq!(status, 200);
    c.expect(json!({"type": "data", "channel": "news", "data": {"headline": "Breaking News!"}}))
        .await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "subscribe", "channel": "chat"}),
        json!({"type": "subscribed", "channel": "chat"}),
    )
    .await;
    server.wait_metric("switchboard_subscriptions", 1).await;
    c.exchange(
        json!({"type": "unsubscribe", "channel": "chat"}),
        json!({"type": "unsubscribed", "channel": "chat"}),
    )
    .await;
    server.wait_metric("switchboard_subscriptions", 0).await;
    let (status, _) = server
        .broadcast_json(json!({"channel": "chat", "data": {"message": "gone"}}))
        .await;
    assert_eq!(status, 200);
    c.assert_nothing_pending().await;
}

#[tokio::test]
async fn unsubscribe_when_not_subscribed_or_unknown_is_still_confirmed() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "unsubscribe", "channel": "chat"}),
        json!({"type": "unsubscribed", "channel": "chat"}),
    )
    .await;
    c.exchange(
        json!({"type": "unsubscribe", "channel": "nonexistent"}),
        json!({"type": "unsubscribed", "channel": "nonexistent"}),
    )
    .await;
}

#[tokio::test]
async fn subscribe_twice_counts_once() {
    let server = Server::start().await;
    let mut c = server.client().await;
    for _ in 0..2 {
        c.exchange(
            json!({"type": "subscribe", "channel": "chat"}),
            json!({"type": "subscribed", "channel": "chat"}),
        )
        .await;
    }
    server.wait_metric("switchboard_subscriptions", 1).await;
    server
        .broadcast_json(json!({"channel": "chat", "data": {"message": "once"}}))
        .await;
    c.expect(json!({"type": "data", "channel": "chat", "data": {"message": "once"}}))
        .await;
    c.assert_nothing_pending().await;
}

#[tokio::test]
async fn subscribe_to_missing_channel() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "subscribe", "channel": "nonexistent"}),
        json!({"type": "error", "channel": "nonexistent", "message": "Channel 'nonexistent' not found."}),
    )
    .await;
}

#[tokio::test]
async fn actions_run_and_reply() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "action", "channel": "add", "data": {"a": 2, "b": 3}}),
        json!({"type": "action", "channel": "add", "status": "completed", "data": 5}),
    )
    .await;
    // An action that returns nothing: no `data`.
    c.exchange(
        json!({"type": "action", "channel": "send_message", "data": {"text": "nobody listens"}}),
        json!({"type": "action", "channel": "send_message", "status": "completed"}),
    )
    .await;
    // Structured results come back as they are.
    c.exchange(
        json!({"type": "action", "channel": "echo", "data": {"value": {"a": 10, "b": "test", "c": {"key": 42}}}}),
        json!({"type": "action", "channel": "echo", "status": "completed", "data": {"a": 10, "b": "test", "c": {"key": 42}}}),
    )
    .await;
}

#[tokio::test]
async fn missing_action() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "action", "channel": "nonexistent_action"}),
        json!({"type": "error", "channel": "nonexistent_action", "message": "Action 'nonexistent_action' not found."}),
    )
    .await;
}

#[tokio::test]
async fn message_without_type() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let required = json!({"type": "error", "message": "Message type is required."});
    c.exchange(json!({"channel": "chat"}), required.clone()).await;
    // SocketAPI treats any falsy type as missing.
    c.exchange(json!({"type": "", "channel": "chat"}), required.clone())
        .await;
    c.exchange(json!({"type": null, "channel": "chat"}), required.clone())
        .await;
    c.exchange(json!({}), required).await;
}

#[tokio::test]
async fn message_without_channel() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let required = json!({"type": "error", "message": "Channel is required."});
    c.exchange(json!({"type": "subscribe"}), required.clone()).await;
    c.exchange(json!({"type": "unsubscribe", "channel": ""}), required.clone())
        .await;
    c.exchange(json!({"type": "action"}), required.clone()).await;
    // The channel is checked before the type's value.
    c.exchange(json!({"type": "unknown"}), required).await;
}

#[tokio::test]
async fn message_with_unknown_type() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "unknown", "channel": "chat"}),
        json!({"type": "error", "channel": "chat", "message": "Unknown message type: unknown."}),
    )
    .await;
}

#[tokio::test]
async fn action_parameter_validation() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let invalid = json!({"type": "error", "channel": "add", "message": "Invalid parameters for action 'add'"});
    c.exchange(
        json!({"type": "action", "channel": "add", "data": {"a": "not_an_int", "b": 1}}),
        invalid.clone(),
    )
    .await;
    c.exchange(
        json!({"type": "action", "channel": "add", "data": {"a": 1}}),
        invalid.clone(),
    )
    .await;
    c.exchange(json!({"type": "action", "channel": "add"}), invalid.clone())
        .await;
    c.exchange(
        json!({"type": "action", "channel": "add", "data": {"a": 2.5, "b": 1}}),
        invalid.clone(),
    )
    .await;
    // `data` must be an object (SocketAPI calls the function with `**data`), not the fields in order.
    c.exchange(
        json!({"type": "action", "channel": "add", "data": [1, 2]}),
        invalid.clone(),
    )
    .await;
    c.exchange(json!({"type": "action", "channel": "add", "data": "a=1&b=2"}), invalid)
        .await;
    // Lax like pydantic: a number in a string, an integral float.
    c.exchange(
        json!({"type": "action", "channel": "add", "data": {"a": "5", "b": 1.0}}),
        json!({"type": "action", "channel": "add", "status": "completed", "data": 6}),
    )
    .await;
    // Extra fields are ignored.
    c.exchange(
        json!({"type": "action", "channel": "add", "data": {"a": 1, "b": 1, "c": 9}}),
        json!({"type": "action", "channel": "add", "status": "completed", "data": 2}),
    )
    .await;
    c.exchange(
        json!({"type": "action", "channel": "send_notification", "data": {"user_id": 1}}),
        json!({"type": "error", "channel": "send_notification", "message": "Invalid parameters for action 'send_notification'"}),
    )
    .await;
}

#[tokio::test]
async fn required_on_subscribe_right_value() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "subscribe", "channel": "private_chat", "data": {"token": "secret_token"}}),
        json!({"type": "subscribed", "channel": "private_chat"}),
    )
    .await;
    c.assert_nothing_pending().await;
    let body = json!({"channel": "private_chat", "data": {"token": "secret_token", "message": "psst"}});
    assert_eq!(server.broadcast_json(body).await.0, 200);
    c.expect(json!({"type": "data", "channel": "private_chat", "data": {"message": "psst", "authenticated": true}}))
        .await;
}

#[tokio::test]
async fn required_on_subscribe_wrong_value() {
    let server = Server::start().await;
    let mut c = server.client().await;
    // The channel function's error rejects the subscription, with its text.
    c.exchange(
        json!({"type": "subscribe", "channel": "private_chat", "data": {"token": "wrong"}}),
        json!({"type": "error", "channel": "private_chat", "message": "Invalid token"}),
    )
    .await;
    // A value of the wrong type (pydantic does not turn an int into a str).
    c.exchange(
        json!({"type": "subscribe", "channel": "private_chat", "data": {"token": 12345}}),
        json!({"type": "error", "channel": "private_chat", "message": "Invalid parameters for action 'private_chat'"}),
    )
    .await;
    c.exchange(
        json!({"type": "subscribe", "channel": "notifications", "data": {"user_id": "abc"}}),
        json!({"type": "error", "channel": "notifications", "message": "Invalid parameters for action 'notifications'"}),
    )
    .await;
    server.wait_metric("switchboard_subscriptions", 0).await;
}

#[tokio::test]
async fn required_on_subscribe_missing() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let invalid =
        json!({"type": "error", "channel": "private_chat", "message": "Invalid parameters for action 'private_chat'"});
    c.exchange(json!({"type": "subscribe", "channel": "private_chat"}), invalid.clone())
        .await;
    c.exchange(
        json!({"type": "subscribe", "channel": "private_chat", "data": {}}),
        invalid.clone(),
    )
    .await;
    c.exchange(
        json!({"type": "subscribe", "channel": "private_chat", "data": {"message": "hi"}}),
        invalid,
    )
    .await;
    server.wait_metric("switchboard_subscriptions", 0).await;
}

#[tokio::test]
async fn subscribe_validates_only_the_required_parameters() {
    let server = Server::start().await;
    let mut c = server.client().await;
    // Other fields given at subscribe time are ignored, even of the wrong type.
    c.exchange(
        json!({"type": "subscribe", "channel": "private_chat", "data": {"token": "secret_token", "message": 5}}),
        json!({"type": "subscribed", "channel": "private_chat"}),
    )
    .await;
    // The channel function is called with the required parameters only, so a channel that needs
    // another parameter without a default cannot be subscribed to (SocketAPI fails the same way,
    // with Python's TypeError text).
    c.exchange(
        json!({"type": "subscribe", "channel": "user_updates", "data": {"user_id": 5}}),
        json!({"type": "error", "channel": "user_updates", "message": "Invalid parameters for action 'user_updates'"}),
    )
    .await;
    assert_eq!(
        server
            .broadcast_json(json!({"channel": "user_updates", "data": {"user_id": 5}}))
            .await
            .0,
        200
    );
    c.assert_nothing_pending().await;
}

#[tokio::test]
async fn several_subscribers_all_receive_and_others_do_not() {
    let server = Server::start().await;
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut c = server.client().await;
        c.exchange(
            json!({"type": "subscribe", "channel": "chat"}),
            json!({"type": "subscribed", "channel": "chat"}),
        )
        .await;
        subscribers.push(c);
    }
    let mut bystander = server.client().await;
    bystander
        .exchange(
            json!({"type": "subscribe", "channel": "news"}),
            json!({"type": "subscribed", "channel": "news"}),
        )
        .await;
    bystander
        .expect(json!({"type": "data", "channel": "news", "data": {"headline": "Breaking News!"}}))
        .await;
    let mut idle = server.client().await;
    server.wait_metric("switchboard_subscriptions", 4).await;

    // The sender, a subscriber itself, gets the publication before its action's reply.
    subscribers[0].send(json!({"type": "action", "channel": "send_message", "data": {"text": "hello all"}}));
    let data = json!({"type": "data", "channel": "chat", "data": {"message": "hello all"}});
    subscribers[0].expect(data.clone()).await;
    subscribers[0]
        .expect(json!({"type": "action", "channel": "send_message", "status": "completed"}))
        .await;
    for c in &mut subscribers[1..] {
        c.expect(data.clone()).await;
    }
    // No data when not subscribed (to anything, or to this channel).
    bystander.assert_nothing_pending().await;
    idle.assert_nothing_pending().await;
    for c in &mut subscribers {
        c.assert_nothing_pending().await;
    }
}

#[tokio::test]
async fn broadcast_from_outside_reaches_subscribers() {
    let server = Server::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    for c in [&mut a, &mut b] {
        c.exchange(
            json!({"type": "subscribe", "channel": "chat"}),
            json!({"type": "subscribed", "channel": "chat"}),
        )
        .await;
    }
    let (status, body) = server
        .broadcast_json(json!({"channel": "chat", "data": {"message": "Hello from external process!"}}))
        .await;
    assert_eq!((status, body), (200, json!({"status": "success"})));
    let data = json!({"type": "data", "channel": "chat", "data": {"message": "Hello from external process!"}});
    a.expect(data.clone()).await;
    b.expect(data).await;
    assert_eq!(server.metric("switchboard_publications_total").await, 1);
    assert_eq!(server.metric("switchboard_deliveries_total").await, 2);
}

#[tokio::test]
async fn non_local_broadcast_is_refused() {
    // Only 10.9.9.9 may broadcast, so this loopback client is "not local".
    let server = Server::start_with(|b| b.broadcast_allowed_hosts(["10.9.9.9"])).await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "subscribe", "channel": "chat"}),
        json!({"type": "subscribed", "channel": "chat"}),
    )
    .await;
    let (status, body) = server
        .broadcast_json(json!({"channel": "chat", "data": {"message": "intruder"}}))
        .await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"error": "Broadcast endpoint can only be accessed locally."})
        )
    );
    c.assert_nothing_pending().await;
    assert_eq!(server.metric("switchboard_publications_total").await, 0);
}

#[tokio::test]
async fn disconnect_cleans_up_subscriptions() {
    let server = Server::start().await;
    let mut c = server.client().await;
    c.exchange(
        json!({"type": "subscribe", "channel": "chat"}),
        json!({"type": "subscribed", "channel": "chat"}),
    )
    .await;
    c.exchange(
        json!({"type": "subscribe", "channel": "news"}),
        json!({"type": "subscribed", "channel": "news"}),
    )
    .await;
    c.recv().await; // news' initial data
    c.exchange(
        json!({"type": "subscribe", "channel": "notifications", "data": {"user_id": 1}}),
        json!({"type": "subscribed", "channel": "notifications"}),
    )
    .await;
    let mut other = server.client().await;
    other
        .exchange(
            json!({"type": "subscribe", "channel": "chat"}),
            json!({"type": "subscribed", "channel": "chat"}),
        )
        .await;
    server.wait_metric("switchboard_subscriptions", 4).await;
    server.wait_metric("switchboard_connections", 2).await;

    c.close().await;
    server.wait_metric("switchboard_subscriptions", 1).await;
    server.wait_metric("switchboard_connections", 1).await;
    // The remaining subscriber is unaffected.
    server
        .broadcast_json(json!({"channel": "chat", "data": {"message": "still here"}}))
        .await;
    other
        .expect(json!({"type": "data", "channel": "chat", "data": {"message": "still here"}}))
        .await;

    other.close().await;
    server.wait_metric("switchboard_subscriptions", 0).await;
    server.wait_metric("switchboard_connections", 0).await;
}
