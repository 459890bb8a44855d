//! Redis goes away and comes back: `redis-server` is killed and restarted on the same port while
//! two nodes keep running. Meanwhile publishing fails with a clear error to its caller, clients
//! stay connected; afterwards the nodes have reconnected and restored their subscriptions by
//! themselves, and delivery across nodes resumes.

mod redis_support;

use redis_support::{Chat, RedisServer, TestNode, WAIT};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use switchboard::PublishError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_redis_restarts() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    let (a, b) = (TestNode::start(&url).await, TestNode::start(&url).await);

    let mut on_a = a.client().await;
    on_a.subscribe("chat", json!({})).await;
    let mut on_b = b.client().await;
    on_b.subscribe("chat", json!({})).await;
    let mut keyed_on_b = b.client().await;
    keyed_on_b.subscribe("notifications", json!({ "user_id": 5 })).await;
    // This one will leave while Redis is down: its topic must not be restored.
    let mut leaving = b.client().await;
    leaving.subscribe("notifications", json!({ "user_id": 9 })).await;
    let mut sender = a.client().await;
    redis.wait_numsub("chat", 2).await;
    redis.wait_numsub("notifications#[5]", 1).await;
    redis.wait_numsub("notifications#[9]", 1).await;

    let reply = sender.action("send_message", json!({ "text": "before" })).await;
    assert_eq!(reply["status"], "completed", "{reply}");
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(client.expect_data("chat").await["message"], "before");
    }

    redis.kill();
    let expected = format!("broker unavailable: redis at {url}: ");

    // An action that broadcasts answers with the broker's error.
    let reply = sender.action("send_message", json!({ "text": "lost" })).await;
    assert_eq!(reply["type"], "error", "{reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&expected), "action error: {reply}");
    // Once the failure is known, the cause is plain.
    let reply = sender.action("send_message", json!({ "text": "lost" })).await;
    assert_eq!(reply["message"], format!("{expected}connection refused"), "{reply}");

    // /_broadcast answers 503 with the same text.
    let (status, body) = b
        .http_broadcast(json!({ "channel": "chat", "data": { "message": "lost" } }))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().starts_with(&expected),
        "{body}"
    );

    // In-process code gets PublishError::Broker.
    match a
        .chat
        .broadcast(Chat {
            message: "lost".into(),
            seq: 0,
        })
        .await
    {
        Err(PublishError::Broker(text)) => assert!(text.starts_with(&expected), "{text}"),
        other => panic!("expected a broker error, got {other:?}"),
    }

    // A new subscription fails the same way (once the node has noticed the outage).
    let mut late = b.client().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = late.request(json!({ "type": "subscribe", "channel": "chat" })).await;
        if reply["type"] == "error" {
            assert!(
                reply["message"].as_str().unwrap_or_default().starts_with(&expected),
                "{reply}"
            );
            break;
        }
        // Subscribed before the node noticed: leave again and retry.
        late.unsubscribe("chat", json!({})).await;
        assert!(Instant::now() < deadline, "subscriptions still succeed with Redis down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The connections are up and served: requests that do not need Redis are answered.
    for client in [&mut on_a, &mut on_b, &mut keyed_on_b] {
        assert!(client.is_open());
        client.unsubscribe("news", json!({})).await;
    }
    leaving.ws.close(1000, "bye").expect("close");
    leaving.ws.closed().await;
    // Stay down long enough for the nodes to fail a few reconnection attempts (50, 100, 200 ms...).
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Redis comes back on the same port; the nodes are not restarted.
    redis.restart().await;
    redis.wait_numsub("chat", 2).await;
    redis.wait_numsub("notifications#[5]", 1).await;
    assert_eq!(
        redis.numsub("notifications#[9]").await,
        0,
        "a topic without subscribers was restored"
    );

    // Publishing works again (the first attempts may still meet the outage).
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = sender.action("send_message", json!({ "text": "after" })).await;
        if reply["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "publishing did not recover: {reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing published during the outage arrives; delivery resumes on both nodes.
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(client.expect_data("chat").await["message"], "after");
    }
    a.notifications
        .broadcast(redis_support::Notifications {
            user_id: 5,
            message: "restored".into(),
        })
        .await
        .expect("broadcast");
    assert_eq!(
        keyed_on_b.expect_data("notifications").await["message"],
        Value::from("restored")
    );
    let (status, _) = b
        .http_broadcast(json!({ "channel": "chat", "data": { "message": "http after" } }))
        .await;
    assert_eq!(status, 200);
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(client.expect_data("chat").await["message"], "http after");
    }
    // And new subscriptions work.
    late.subscribe("chat", json!({})).await;
    b.chat
        .broadcast(Chat {
            message: "late".into(),
            seq: 0,
        })
        .await
        .expect("broadcast");
    for client in [&mut on_a, &mut on_b, &mut late] {
        assert_eq!(client.expect_data("chat").await["message"], "late");
    }
}
