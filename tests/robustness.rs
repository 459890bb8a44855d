//! Regressions found in review: a slow handler must not turn a reader into a "slow consumer", a
//! panicking handler must not leak its connection, and unsubscribe with bad parameters leaves
//! nothing.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use switchboard::ws::{self, CloseFrame, Handler, Text, WebSocket};
use switchboard::{Channel, Node, Router, Shutdown};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct Feed {
    n: u64,
    pad: String,
}

#[derive(Serialize, Deserialize)]
struct Note {
    user_id: i64,
}

#[derive(Deserialize)]
struct Nothing {}

enum Event {
    Text(Value),
    Closed(CloseFrame),
}

struct Forward(mpsc::UnboundedSender<Event>);
impl Handler for Forward {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let _ = self
            .0
            .send(Event::Text(serde_json::from_str(&text).unwrap_or(Value::Null)));
    }
    async fn on_close(&mut self, _ws: &WebSocket, close: CloseFrame) {
        let _ = self.0.send(Event::Closed(close));
    }
}

async fn start(router: Router, config: ws::Config) -> (String, Shutdown) {
    let node = Node::builder(router).ws_config(config).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    (format!("{addr}"), shutdown)
}

async fn client(addr: &str) -> (WebSocket, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ws = ws::connect(&format!("ws://{addr}/"), Forward(tx), ws::Config::default())
        .await
        .expect("connect");
    (ws, rx)
}

async fn next_text(rx: &mut mpsc::UnboundedReceiver<Event>) -> Value {
    match tokio::time::timeout(T, rx.recv())
        .await
        .expect("in time")
        .expect("open")
    {
        Event::Text(v) => v,
        Event::Closed(c) => panic!("closed: {c:?}"),
    }
}

async fn metric(addr: &str, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.expect("read");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).and_then(|v| v.trim().parse().ok()))
        .expect("metric present")
}

#[tokio::test]
async fn a_slow_action_does_not_stall_the_connections_writes() {
    let mut router = Router::new();
    let feed = router.channel(Channel::new("feed", |f: Feed| async move { Ok::<_, String>(f) }));
    router.action("slow", |_: Nothing| async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok::<_, String>(json!("done"))
    });
    // A small budget: without the fix, 1.5 s of publications pile up past it and the reader is cut.
    let config = ws::Config {
        max_backpressure: 256 * 1024,
        ..Default::default()
    };
    let (addr, _shutdown) = start(router, config).await;
    let (ws, mut rx) = client(&addr).await;
    let _ = ws.send_text(json!({"type": "subscribe", "channel": "feed"}).to_string());
    assert_eq!(
        next_text(&mut rx).await,
        json!({"type": "subscribed", "channel": "feed"})
    );

    let publisher = tokio::spawn(async move {
        for n in 0..300u64 {
            let _ = feed
                .broadcast(Feed {
                    n,
                    pad: "x".repeat(8 * 1024),
                })
                .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let _ = ws.send_text(json!({"type": "action", "channel": "slow", "id": 1}).to_string());
    let mut seen = 0u64;
    let mut replied = false;
    while !(replied && seen == 300) {
        let message = next_text(&mut rx).await;
        if message["type"] == "data" {
            assert_eq!(message["data"]["n"], seen, "in order, none lost");
            seen += 1;
        } else {
            assert_eq!(
                message,
                json!({"type": "action", "channel": "slow", "status": "completed", "data": "done", "id": 1})
            );
            replied = true;
        }
    }
    publisher.await.expect("publisher");
    assert_eq!(metric(&addr, "switchboard_slow_consumers_total").await, 0);
}

#[tokio::test]
async fn a_panicking_action_closes_its_connection_cleanly() {
    let mut router = Router::new();
    router.channel(Channel::new("feed", |f: Feed| async move { Ok::<_, String>(f) }));
    router.action("boom", |_: Nothing| async move {
        if true {
            panic!("a bug in the application");
        }
        Ok::<_, String>(())
    });
    let (addr, _shutdown) = start(router, ws::Config::default()).await;
    let (ws, mut rx) = client(&addr).await;
    let _ = ws.send_text(json!({"type": "subscribe", "channel": "feed"}).to_string());
    next_text(&mut rx).await;
    assert_eq!(metric(&addr, "switchboard_subscriptions").await, 1);
    let _ = ws.send_text(json!({"type": "action", "channel": "boom"}).to_string());
    match tokio::time::timeout(T, rx.recv())
        .await
        .expect("in time")
        .expect("event")
    {
        Event::Closed(close) => assert_eq!((close.code, close.reason.as_str()), (1011, "internal error")),
        Event::Text(v) => panic!("expected the close, got {v}"),
    }
    // The session's cleanup ran: nothing left behind.
    for _ in 0..50 {
        if metric(&addr, "switchboard_connections").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&addr, "switchboard_connections").await, 0);
    assert_eq!(metric(&addr, "switchboard_subscriptions").await, 0);
}

#[tokio::test]
async fn unsubscribe_with_invalid_params_leaves_nothing() {
    let mut router = Router::new();
    let notes = router.channel(
        Channel::new("notes", |n: Note| async move {
            Ok::<_, String>(json!({"user_id": n.user_id}))
        })
        .required_on_subscribe(["user_id"]),
    );
    let (addr, _shutdown) = start(router, ws::Config::default()).await;
    let (ws, mut rx) = client(&addr).await;
    for user in [1, 2] {
        let _ = ws.send_text(json!({"type": "subscribe", "channel": "notes", "data": {"user_id": user}}).to_string());
        next_text(&mut rx).await;
    }
    let _ = ws.send_text(json!({"type": "unsubscribe", "channel": "notes", "data": {"user_id": "abc"}}).to_string());
    assert_eq!(
        next_text(&mut rx).await,
        json!({"type": "unsubscribed", "channel": "notes"})
    );
    notes.broadcast(Note { user_id: 2 }).await.expect("broadcast");
    assert_eq!(
        next_text(&mut rx).await,
        json!({"type": "data", "channel": "notes", "data": {"user_id": 2}})
    );
    let _ = ws.send_text(json!({"type": "unsubscribe", "channel": "notes"}).to_string());
    assert_eq!(
        next_text(&mut rx).await,
        json!({"type": "unsubscribed", "channel": "notes"})
    );
    assert_eq!(metric(&addr, "switchboard_subscriptions").await, 0);
}
