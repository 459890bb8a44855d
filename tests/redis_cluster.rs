//! Nodes sharing channels through a real `redis-server` (started by each test on a free loopback
//! port): broadcasts from any node and any source reach every matching subscriber on every node
//! exactly once, in order; keyed subscriptions work across nodes; a node's Redis subscriptions
//! follow its local subscribers.

mod redis_support;

use redis_support::{Chat, Client, Notifications, RedisServer, TestNode};
use serde_json::{json, Value};

/// Checks that each client's next message is the publication `message` on `chat`: sent after
/// everything else a test published, it proves nothing earlier arrived twice.
async fn expect_chat(clients: &mut [&mut Client], message: &str) {
    for client in clients.iter_mut() {
        let data = client.expect_data("chat").await;
        assert_eq!(data["message"], message, "got {data}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_on_one_node_reaches_every_node_exactly_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b, c) = (
        TestNode::start(&redis.url()).await,
        TestNode::start(&redis.url()).await,
        TestNode::start(&redis.url()).await,
    );
    let mut subscribers = Vec::new();
    for node in [&a, &b, &c, &a, &b, &c] {
        let mut client = node.client().await;
        client.subscribe("chat", json!({})).await;
        subscribers.push(client);
    }
    // Each node subscribes in Redis once, however many local subscribers it has.
    redis.wait_numsub("chat", 3).await;

    // From an action (the sender is not subscribed: its reply would interleave with publications).
    let mut sender = a.client().await;
    let reply = sender.action("send_message", json!({ "text": "from an action" })).await;
    assert_eq!(reply["status"], "completed", "{reply}");
    let mut all: Vec<&mut Client> = subscribers.iter_mut().collect();
    expect_chat(&mut all, "from an action").await;

    // From in-process code on B, typed and untyped.
    b.chat
        .broadcast(Chat {
            message: "typed on B".into(),
            seq: 0,
        })
        .await
        .expect("broadcast");
    expect_chat(&mut all, "typed on B").await;
    c.node
        .broadcast("chat", json!({ "message": "untyped on C" }))
        .await
        .expect("broadcast");
    expect_chat(&mut all, "untyped on C").await;

    // Nothing arrived twice: the next message after a last broadcast is that broadcast.
    a.chat
        .broadcast(Chat {
            message: "marker".into(),
            seq: 0,
        })
        .await
        .expect("broadcast");
    expect_chat(&mut all, "marker").await;
    for client in all {
        client.expect_quiet().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_subscribes_to_a_new_topic_share_one_redis_subscription() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (TestNode::start(&redis.url()).await, TestNode::start(&redis.url()).await);
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(b.client().await);
    }
    // All ask at once, before any confirmation: they all wait for the same SUBSCRIBE.
    for (i, client) in clients.iter().enumerate() {
        client.send(json!({ "type": "subscribe", "channel": "chat", "id": i }));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let reply = client.recv().await;
        assert_eq!(
            (reply["type"].as_str(), reply["id"].as_u64()),
            (Some("subscribed"), Some(i as u64)),
            "{reply}"
        );
    }
    redis.wait_numsub("chat", 1).await;
    a.chat
        .broadcast(Chat {
            message: "to all twenty".into(),
            seq: 0,
        })
        .await
        .expect("broadcast");
    let mut all: Vec<&mut Client> = clients.iter_mut().collect();
    expect_chat(&mut all, "to all twenty").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_subscriptions_work_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b, c) = (
        TestNode::start(&redis.url()).await,
        TestNode::start(&redis.url()).await,
        TestNode::start(&redis.url()).await,
    );
    let mut user1_on_a = a.client().await;
    user1_on_a.subscribe("notifications", json!({ "user_id": 1 })).await;
    let mut user1_on_b = b.client().await;
    user1_on_b.subscribe("notifications", json!({ "user_id": 1 })).await;
    let mut user2_on_b = b.client().await;
    user2_on_b.subscribe("notifications", json!({ "user_id": 2 })).await;
    redis.wait_numsub("notifications#[1]", 2).await;
    redis.wait_numsub("notifications#[2]", 1).await;

    // Published on C, which has no subscribers at all.
    let mut sender = c.client().await;
    let reply = sender
        .action("notify", json!({ "user_id": 1, "message": "for 1" }))
        .await;
    assert_eq!(reply["status"], "completed", "{reply}");
    for client in [&mut user1_on_a, &mut user1_on_b] {
        assert_eq!(
            client.expect_data("notifications").await,
            json!({ "user_id": 1, "message": "for 1" })
        );
    }
    c.notifications
        .broadcast(Notifications {
            user_id: 2,
            message: "for 2".into(),
        })
        .await
        .expect("broadcast");
    // User 2's first publication is its own: user 1's did not reach it.
    assert_eq!(
        user2_on_b.expect_data("notifications").await,
        json!({ "user_id": 2, "message": "for 2" })
    );
    c.notifications
        .broadcast(Notifications {
            user_id: 1,
            message: "again 1".into(),
        })
        .await
        .expect("broadcast");
    // And user 1's next is its own: user 2's did not reach them.
    for client in [&mut user1_on_a, &mut user1_on_b] {
        assert_eq!(client.expect_data("notifications").await["message"], "again 1");
    }
    user2_on_b.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_order_is_preserved_across_nodes() {
    const N: u64 = 200;
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b, c) = (
        TestNode::start(&redis.url()).await,
        TestNode::start(&redis.url()).await,
        TestNode::start(&redis.url()).await,
    );
    let mut on_a = a.client().await;
    on_a.subscribe("chat", json!({})).await;
    let mut on_c = c.client().await;
    on_c.subscribe("chat", json!({})).await;
    redis.wait_numsub("chat", 2).await;

    // In-process on A, one after the other.
    for seq in 0..N {
        a.chat
            .broadcast(Chat {
                message: "in-process".into(),
                seq,
            })
            .await
            .expect("broadcast");
    }
    for client in [&mut on_a, &mut on_c] {
        for seq in 0..N {
            let data = client.expect_data("chat").await;
            assert_eq!(
                (data["message"].as_str(), data["seq"].as_u64()),
                (Some("in-process"), Some(seq)),
                "{data}"
            );
        }
    }

    // Actions from a client on B, sent all at once without waiting for the replies.
    let mut sender = b.client().await;
    for seq in 0..N {
        sender.send(json!({ "type": "action", "channel": "send_message", "data": { "text": "action", "seq": seq } }));
    }
    for client in [&mut on_a, &mut on_c] {
        for seq in 0..N {
            let data = client.expect_data("chat").await;
            assert_eq!(
                (data["message"].as_str(), data["seq"].as_u64()),
                (Some("action"), Some(seq)),
                "{data}"
            );
        }
    }
    for _ in 0..N {
        assert_eq!(sender.recv().await["status"], "completed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscriptions_follow_local_subscribers() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (TestNode::start(&redis.url()).await, TestNode::start(&redis.url()).await);
    let mut on_a = a.client().await;
    on_a.subscribe("chat", json!({})).await;
    let mut b1 = b.client().await;
    b1.subscribe("chat", json!({})).await;
    let mut b2 = b.client().await;
    b2.subscribe("chat", json!({})).await;
    redis.wait_numsub("chat", 2).await;
    // Nobody subscribes to what no client asked for.
    assert_eq!(redis.numsub("notifications#[7]").await, 0);

    // One of B's two subscribers leaves: B keeps its Redis subscription.
    b1.unsubscribe("chat", json!({})).await;
    a.chat
        .broadcast(Chat {
            message: "one left".into(),
            seq: 0,
        })
        .await
        .expect("broadcast");
    expect_chat(&mut [&mut on_a, &mut b2], "one left").await;
    assert_eq!(redis.numsub("chat").await, 2);
    b1.expect_quiet().await;

    // The last one disconnects: B unsubscribes in Redis; A still delivers.
    b2.ws.close(1000, "bye").expect("close");
    b2.ws.closed().await;
    redis.wait_numsub("chat", 1).await;
    a.chat
        .broadcast(Chat {
            message: "only A".into(),
            seq: 0,
        })
        .await
        .expect("broadcast");
    expect_chat(&mut [&mut on_a], "only A").await;

    // Keyed topics too: subscribe, then unsubscribe explicitly.
    let mut keyed = b.client().await;
    keyed.subscribe("notifications", json!({ "user_id": 7 })).await;
    redis.wait_numsub("notifications#[7]", 1).await;
    keyed.unsubscribe("notifications", json!({ "user_id": 7 })).await;
    redis.wait_numsub("notifications#[7]", 0).await;

    // And B subscribes again when a new local subscriber arrives.
    b1.subscribe("chat", json!({})).await;
    redis.wait_numsub("chat", 2).await;
    a.chat
        .broadcast(Chat {
            message: "back".into(),
            seq: 0,
        })
        .await
        .expect("broadcast");
    expect_chat(&mut [&mut on_a, &mut b1], "back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_broadcast_on_one_node_reaches_another() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (TestNode::start(&redis.url()).await, TestNode::start(&redis.url()).await);
    let mut on_a = a.client().await;
    on_a.subscribe("chat", json!({})).await;
    let mut keyed_on_a = a.client().await;
    keyed_on_a.subscribe("notifications", json!({ "user_id": 3 })).await;
    redis.wait_numsub("chat", 1).await;

    let (status, body) = b
        .http_broadcast(json!({ "channel": "chat", "data": { "message": "over http" } }))
        .await;
    assert_eq!((status, body), (200, json!({ "status": "success" })));
    assert_eq!(on_a.expect_data("chat").await["message"], "over http");

    let (status, _) = b
        .http_broadcast(json!({ "channel": "notifications", "data": { "user_id": 3 } }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(keyed_on_a.expect_data("notifications").await["user_id"], Value::from(3));
    on_a.expect_quiet().await;
}

/// The last local subscriber leaving while another joins the same topic: the node's unsubscribe
/// and subscribe reach Redis in the order the hub made them, so the joiner — answered
/// `subscribed` — always receives the next publication. (Before the node serialised joins and
/// leaves per topic, the leave's UNSUBSCRIBE could land after the join had found the Redis
/// subscription still active; a 2-second "recent" heuristic in the broker papered over it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_racing_the_last_leave_keeps_the_redis_subscription() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let node = TestNode::start(&redis.url()).await;
    let (mut leaving, mut joining) = (node.client().await, node.client().await);
    leaving.subscribe("chat", json!({})).await;
    for round in 0..100 {
        // Both at once, from two connections: the leave and the join race in the node.
        leaving.send(json!({ "type": "unsubscribe", "channel": "chat" }));
        joining.send(json!({ "type": "subscribe", "channel": "chat" }));
        assert_eq!(leaving.recv().await["type"], "unsubscribed");
        assert_eq!(joining.recv().await["type"], "subscribed");
        node.chat
            .broadcast(Chat {
                message: format!("round {round}"),
                seq: round,
            })
            .await
            .expect("broadcast");
        let data = joining.expect_data("chat").await;
        assert_eq!(data["message"], format!("round {round}"), "{data}");
        std::mem::swap(&mut leaving, &mut joining);
    }
    redis.wait_numsub("chat", 1).await;
    leaving.expect_quiet().await;
}
