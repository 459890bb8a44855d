//! The "minimal server on the crate": the SocketAPI protocol subset that `switchboard-bench`
//! uses, written directly on tokio-websockets 0.13 the obvious way — one task per connection, an
//! unbounded mpsc queue per connection, a mutex-guarded map of subscribers per topic, the data
//! message serialized once per publication and its `Message` cloned (refcounted) to each queue.
//! No backpressure limit, no batching beyond draining what is queued before one flush.
//!
//! `/` : subscribe/unsubscribe `chat` and `notifications` (keyed by `user_id`), actions
//! `send_message`, `send_notification`, `add`. `/echo` : echoes every text/binary message.
//!
//! `raw_broadcast --bind 127.0.0.1:9100`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_websockets::{Message, ServerBuilder};

type Tx = UnboundedSender<Message>;

#[derive(Default)]
struct Hub {
    /// topic ("chat" or "notifications/ID") -> connection id -> queue
    topics: Mutex<HashMap<String, HashMap<u64, Tx>>>,
}

impl Hub {
    fn publish(&self, topic: &str, msg: Message) {
        let topics = self.topics.lock().unwrap();
        if let Some(subs) = topics.get(topic) {
            for tx in subs.values() {
                let _ = tx.send(msg.clone());
            }
        }
    }
}

fn topic_of(v: &Value) -> Option<String> {
    match v.get("channel")?.as_str()? {
        "chat" => Some("chat".into()),
        "notifications" => Some(format!("notifications/{}", v.get("data")?.get("user_id")?.as_i64()?)),
        _ => None,
    }
}

fn reply(mut v: Value, req: &Value) -> Message {
    if let Some(id) = req.get("id") {
        v["id"] = id.clone();
    }
    Message::text(v.to_string())
}

/// Handles one client message; returns the reply.
fn handle(hub: &Hub, conn: u64, tx: &Tx, subs: &mut Vec<String>, text: &str) -> Message {
    let Ok(req) = serde_json::from_str::<Value>(text) else {
        return Message::text(r#"{"type":"error","message":"Invalid message: expected a JSON object."}"#);
    };
    let channel = req.get("channel").and_then(Value::as_str).unwrap_or("").to_owned();
    match req.get("type").and_then(Value::as_str) {
        Some("subscribe") => match topic_of(&req) {
            Some(topic) => {
                hub.topics
                    .lock()
                    .unwrap()
                    .entry(topic.clone())
                    .or_default()
                    .insert(conn, tx.clone());
                subs.push(topic);
                reply(json!({"type": "subscribed", "channel": channel}), &req)
            }
            None => reply(
                json!({"type": "error", "channel": channel, "message": format!("Channel '{channel}' not found.")}),
                &req,
            ),
        },
        Some("unsubscribe") => {
            if let Some(topic) = topic_of(&req) {
                if let Some(m) = hub.topics.lock().unwrap().get_mut(&topic) {
                    m.remove(&conn);
                }
            }
            reply(json!({"type": "unsubscribed", "channel": channel}), &req)
        }
        Some("action") => {
            let data = req.get("data").cloned().unwrap_or(Value::Null);
            match channel.as_str() {
                "send_message" => {
                    let text = data.get("text").cloned().unwrap_or(Value::Null);
                    let msg = Message::text(
                        json!({"type": "data", "channel": "chat", "data": {"message": text}}).to_string(),
                    );
                    hub.publish("chat", msg);
                    reply(
                        json!({"type": "action", "channel": channel, "status": "completed"}),
                        &req,
                    )
                }
                "send_notification" => {
                    let uid = data.get("user_id").and_then(Value::as_i64).unwrap_or(0);
                    let msg = Message::text(
                        json!({"type": "data", "channel": "notifications", "data": {"user_id": uid, "type": "alert", "notifications": []}})
                            .to_string(),
                    );
                    hub.publish(&format!("notifications/{uid}"), msg);
                    reply(
                        json!({"type": "action", "channel": channel, "status": "completed"}),
                        &req,
                    )
                }
                "add" => {
                    let a = data.get("a").and_then(Value::as_i64).unwrap_or(0);
                    let b = data.get("b").and_then(Value::as_i64).unwrap_or(0);
                    reply(
                        json!({"type": "action", "channel": channel, "status": "completed", "data": a + b}),
                        &req,
                    )
                }
                _ => reply(
                    json!({"type": "error", "channel": channel, "message": format!("Action '{channel}' not found.")}),
                    &req,
                ),
            }
        }
        _ => reply(json!({"type": "error", "message": "Unknown message type."}), &req),
    }
}

async fn pubsub(hub: Arc<Hub>, conn: u64, mut ws: tokio_websockets::WebSocketStream<TcpStream>) {
    let (tx, mut rx) = unbounded_channel::<Message>();
    let mut subs = Vec::new();
    loop {
        tokio::select! {
            m = ws.next() => {
                let Some(Ok(m)) = m else { break };
                if let Some(text) = m.as_text() {
                    let r = handle(&hub, conn, &tx, &mut subs, text);
                    if ws.send(r).await.is_err() { break; }
                }
            }
            Some(out) = rx.recv() => {
                if ws.feed(out).await.is_err() { break; }
                let mut ok = true;
                while let Ok(more) = rx.try_recv() {
                    if ws.feed(more).await.is_err() { ok = false; break; }
                }
                if !ok || ws.flush().await.is_err() { break; }
            }
        }
    }
    let mut topics = hub.topics.lock().unwrap();
    for t in subs {
        if let Some(m) = topics.get_mut(&t) {
            m.remove(&conn);
        }
    }
}

async fn echo(mut ws: tokio_websockets::WebSocketStream<TcpStream>) {
    while let Some(Ok(m)) = ws.next().await {
        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
            break;
        }
    }
}

#[tokio::main]
async fn main() {
    let mut bind = "127.0.0.1:9100".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--bind" {
            bind = args.next().expect("--bind ADDR");
        }
    }
    // A listen backlog like Switchboard's (4096), not std's 128, so that
    // connect times compare servers rather than SYN retransmissions.
    let addr: std::net::SocketAddr = bind.parse().expect("--bind IP:PORT");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(addr).expect("bind");
    let listener = socket.listen(4096).expect("listen");
    println!(
        "raw_broadcast listening on ws://{}/ (echo at /echo) pid {}",
        listener.local_addr().unwrap(),
        std::process::id()
    );
    let hub = Arc::new(Hub::default());
    let ids = AtomicU64::new(0);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        let conn = ids.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let Ok((req, ws)) = ServerBuilder::new().accept(stream).await else {
                return;
            };
            if req.uri().path() == "/echo" {
                echo(ws).await
            } else {
                pubsub(hub, conn, ws).await
            }
        });
    }
}
