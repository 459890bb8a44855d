//! Helpers of the Redis broker tests (tests/redis_*.rs): a real `redis-server` on a free loopback
//! port, Switchboard nodes served in-process on 127.0.0.1:0 with a `RedisBroker`, WebSocket clients
//! that forward every message into a channel, and a minimal HTTP/1.1 client for `/_broadcast`.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchboard::ws::{self, Handler, Text, WebSocket};
use switchboard::{Channel, ChannelRef, Node, RedisBroker, Router, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::timeout;

/// How long a test waits for any one expected event.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test waits to be sure that nothing (more) arrives.
pub const QUIET: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// redis-server

/// A `redis-server` child process on a loopback port, without persistence.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port, or returns `None` (after printing a notice) if the
    /// binary is not installed.
    pub async fn start() -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("NOTICE: redis-server is not installed; skipping this Redis test (.ci/run installs it)");
            return None;
        }
        let port = free_port();
        let mut server = RedisServer { port, child: None };
        server.restart().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(mut conn) = self.connection().await {
                if redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the server (SIGKILL) and waits for the process to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// How many connections subscribe to the Redis channel of `topic` (`PUBSUB NUMSUB`): with one
    /// pub/sub connection per node, the number of nodes subscribed.
    pub async fn numsub(&self, topic: &str) -> i64 {
        let mut conn = self.connection().await.expect("connect to redis-server");
        let channel = format!("switchboard:{topic}");
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut conn)
            .await
            .expect("PUBSUB NUMSUB");
        count
    }

    /// Polls `numsub(topic)` until it equals `expected`.
    pub async fn wait_numsub(&self, topic: &str, expected: i64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let count = self.numsub(topic).await;
            if count == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PUBSUB NUMSUB {topic}: {count}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

// ---------------------------------------------------------------------------------------------
// Nodes

#[derive(Serialize, Deserialize)]
pub struct Chat {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub seq: u64,
}

#[derive(Serialize, Deserialize)]
pub struct Notifications {
    pub user_id: i64,
    #[serde(default)]
    pub message: String,
}

#[derive(Deserialize)]
struct SendMessage {
    text: String,
    #[serde(default)]
    seq: u64,
}

/// A node serving the test channels with a Redis broker, on 127.0.0.1:0.
pub struct TestNode {
    pub addr: SocketAddr,
    pub node: Node,
    pub chat: ChannelRef<Chat>,
    pub notifications: ChannelRef<Notifications>,
    shutdown: Shutdown,
}

impl TestNode {
    /// Channels `chat` (everyone) and `notifications` (keyed by `user_id`); actions `send_message`
    /// (broadcasts on `chat`) and `notify` (broadcasts on `notifications`).
    pub async fn start(redis_url: &str) -> TestNode {
        let mut router = Router::new();
        let chat = router.channel(Channel::new("chat", |p: Chat| async move {
            Ok::<_, String>(json!({ "message": p.message, "seq": p.seq }))
        }));
        let notifications = router.channel(
            Channel::new("notifications", |p: Notifications| async move {
                Ok::<_, String>(json!({ "user_id": p.user_id, "message": p.message }))
            })
            .required_on_subscribe(["user_id"]),
        );
        let for_action = chat.clone();
        router.action("send_message", move |p: SendMessage| {
            let chat = for_action.clone();
            async move {
                chat.broadcast(Chat {
                    message: p.text,
                    seq: p.seq,
                })
                .await
            }
        });
        let for_action = notifications.clone();
        router.action("notify", move |p: Notifications| {
            let notifications = for_action.clone();
            async move { notifications.broadcast(p).await }
        });
        let broker = RedisBroker::connect(redis_url).await.expect("connect the Redis broker");
        let node = Node::builder(router).broker(broker).build();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = Shutdown::new();
        tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
        TestNode {
            addr,
            node,
            chat,
            notifications,
            shutdown,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// `POST /_broadcast` on this node: (status, body).
    pub async fn http_broadcast(&self, body: Value) -> (u16, Value) {
        http_post(self.addr, "/_broadcast", &body.to_string()).await
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients

struct Forward(UnboundedSender<Value>);

impl Handler for Forward {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text.to_string()));
        let _ = self.0.send(value);
    }
}

/// A WebSocket client whose received messages are parsed as JSON and queued.
pub struct Client {
    pub ws: WebSocket,
    rx: UnboundedReceiver<Value>,
    next_id: u64,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let (tx, rx) = unbounded_channel();
        let ws = ws::connect(&format!("ws://{addr}/"), Forward(tx), ws::Config::default())
            .await
            .expect("WebSocket connect");
        Client { ws, rx, next_id: 0 }
    }

    pub fn send(&self, message: Value) {
        self.ws.send_text(message.to_string()).expect("send");
    }

    /// The next message, failing the test after `WAIT`.
    pub async fn recv(&mut self) -> Value {
        match timeout(WAIT, self.rx.recv()).await {
            Ok(Some(value)) => value,
            Ok(None) => panic!("the connection closed"),
            Err(_) => panic!("no message within {WAIT:?}"),
        }
    }

    /// The next message if one arrives within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        timeout(wait, self.rx.recv()).await.ok().flatten()
    }

    /// Asserts nothing arrives for `QUIET`.
    pub async fn expect_quiet(&mut self) {
        if let Some(value) = self.try_recv(QUIET).await {
            panic!("unexpected message: {value}");
        }
    }

    /// Sends a request with a fresh id and returns the reply carrying that id (other messages in
    /// between are publications and fail the test).
    pub async fn request(&mut self, mut message: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        message["id"] = json!(id);
        self.send(message);
        let reply = self.recv().await;
        assert_eq!(
            reply["id"],
            json!(id),
            "expected the reply to request {id}, got {reply}"
        );
        reply
    }

    /// Subscribes and waits for `subscribed`.
    pub async fn subscribe(&mut self, channel: &str, data: Value) {
        let reply = self
            .request(json!({ "type": "subscribe", "channel": channel, "data": data }))
            .await;
        assert_eq!(reply["type"], "subscribed", "subscribe to {channel}: {reply}");
    }

    pub async fn unsubscribe(&mut self, channel: &str, data: Value) {
        let reply = self
            .request(json!({ "type": "unsubscribe", "channel": channel, "data": data }))
            .await;
        assert_eq!(reply["type"], "unsubscribed", "unsubscribe from {channel}: {reply}");
    }

    /// Runs an action and returns its reply (`action`/`completed` or `error`).
    pub async fn action(&mut self, action: &str, data: Value) -> Value {
        self.request(json!({ "type": "action", "channel": action, "data": data }))
            .await
    }

    /// The next message, which must be a publication on `channel`; returns its data.
    pub async fn expect_data(&mut self, channel: &str) -> Value {
        let message = self.recv().await;
        assert_eq!(
            message["type"], "data",
            "expected a publication on {channel}, got {message}"
        );
        assert_eq!(
            message["channel"], channel,
            "expected a publication on {channel}, got {message}"
        );
        message["data"].clone()
    }

    pub fn is_open(&self) -> bool {
        !self.ws.is_closed()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A minimal HTTP/1.1 POST: (status, JSON body).
pub async fn http_post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    http_post_with(addr, path, "", body).await
}

/// [`http_post`] with extra header lines (each ending in `\r\n`).
pub async fn http_post_with(addr: SocketAddr, path: &str, headers: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}
