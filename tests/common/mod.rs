//! Shared helpers of the pub/sub integration tests (tests/pubsub_*.rs): the channels and actions of
//! SocketAPI's docs (the same as examples/socketapi_docs.rs, duplicated here plus an `echo`
//! action), an in-process server on 127.0.0.1:0, a WebSocket client that forwards every event
//! into a channel, and a minimal HTTP/1.1 client for `/_broadcast` and `/metrics`.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchboard::ws::{self, CloseFrame, Handler, Text, WebSocket};
use switchboard::{Channel, ChannelRef, Node, NodeBuilder, Router, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::timeout;

/// How long a test waits for any one expected event.
pub const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// The docs' channels and actions (as in examples/socketapi_docs.rs).

fn welcome() -> String {
    "Welcome".into()
}
fn all() -> String {
    "all".into()
}
fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize)]
pub struct Chat {
    #[serde(default = "welcome")]
    pub message: String,
}

#[derive(Serialize, Deserialize)]
pub struct News {}

#[derive(Serialize, Deserialize)]
pub struct PrivateChat {
    pub token: String,
    #[serde(default = "welcome")]
    pub message: String,
}

#[derive(Serialize, Deserialize)]
pub struct Notifications {
    pub user_id: i64,
    #[serde(default = "all")]
    pub notification_type: String,
}

#[derive(Serialize, Deserialize)]
pub struct UserUpdates {
    pub user_id: i64,
    #[serde(default = "yes")]
    pub include_details: bool,
}

#[derive(Deserialize)]
struct SendMessage {
    text: String,
}

#[derive(Deserialize)]
struct SendNotification {
    user_id: i64,
    #[allow(dead_code)]
    message: String,
}

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Deserialize)]
struct Echo {
    value: Value,
}

/// Handles for broadcasting from test code.
#[derive(Clone)]
pub struct Handles {
    pub chat: ChannelRef<Chat>,
    pub notifications: ChannelRef<Notifications>,
}

/// The docs' channels and actions, plus `echo` (returns its `value`, to test falsy results).
pub fn router() -> (Router, Handles) {
    let mut router = Router::new();
    let chat = router.channel(Channel::new("chat", |p: Chat| async move {
        Ok::<_, String>(json!({ "message": p.message }))
    }));
    router.channel(
        Channel::new("news", |_: News| async move {
            Ok::<_, String>(json!({ "headline": "Breaking News!" }))
        })
        .default_response(),
    );
    router.channel(
        Channel::new("private_chat", |p: PrivateChat| async move {
            if p.token != "secret_token" {
                return Err("Invalid token".to_owned());
            }
            Ok(json!({ "message": p.message, "authenticated": true }))
        })
        .required_on_subscribe(["token"]),
    );
    let notifications = router.channel(
        Channel::new("notifications", |p: Notifications| async move {
            Ok::<_, String>(json!({ "user_id": p.user_id, "type": p.notification_type, "notifications": [] }))
        })
        .required_on_subscribe(["user_id"]),
    );
    router.channel(Channel::new("user_updates", |p: UserUpdates| async move {
        Ok::<_, String>(json!({ "user_id": p.user_id, "details": p.include_details }))
    }));

    let handles = Handles {
        chat: chat.clone(),
        notifications: notifications.clone(),
    };
    router.action("send_message", move |p: SendMessage| {
        let chat = chat.clone();
        async move { chat.broadcast(Chat { message: p.text }).await }
    });
    router.action("send_notification", move |p: SendNotification| {
        let notifications = notifications.clone();
        async move {
            let params = Notifications {
                user_id: p.user_id,
                notification_type: "alert".into(),
            };
            notifications.broadcast(params).await
        }
    });
    router.action("add", |p: Add| async move {
        p.a.checked_add(p.b).ok_or_else(|| "integer overflow".to_owned())
    });
    router.action("echo", |p: Echo| async move { Ok::<_, String>(p.value) });
    (router, handles)
}

// ---------------------------------------------------------------------------------------------
// The server.

/// An application served on 127.0.0.1:0 ([`serve`]); shut down when dropped.
pub struct Served {
    pub addr: SocketAddr,
    shutdown: Shutdown,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Served {
    /// The WebSocket URL at `/`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

/// Serves `app` on a free loopback port.
pub async fn serve(app: axum::Router) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, app, shutdown.clone()));
    Served { addr, shutdown }
}

/// A node served on 127.0.0.1:0; shut down when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub node: Node,
    pub handles: Handles,
    shutdown: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Server {
    /// The node with the default settings.
    pub async fn start() -> Server {
        Self::start_with(|builder| builder).await
    }

    /// The node configured by `configure`.
    pub async fn start_with(configure: impl FnOnce(NodeBuilder) -> NodeBuilder) -> Server {
        let (router, handles) = router();
        let node = configure(Node::builder(router)).build();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
        Server {
            addr,
            node,
            handles,
            shutdown,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// `POST /_broadcast` with `body` (sent as is) and extra headers.
    pub async fn post_broadcast(&self, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
        http(self.addr, "POST", "/_broadcast", headers, Some(body)).await
    }

    /// `POST /_broadcast` with a JSON body; the answer's status and JSON body.
    pub async fn broadcast_json(&self, body: Value) -> (u16, Value) {
        let (status, text) = self.post_broadcast(&body.to_string(), &[]).await;
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON answer {text:?}: {e}"));
        (status, value)
    }

    /// The value of a metric in `GET /metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let (status, text) = http(self.addr, "GET", "/metrics", &[], None).await;
        assert_eq!(status, 200, "GET /metrics: {text}");
        metric(&text, name).unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// Polls `GET /metrics` until `name` equals `want` (panics after [`WAIT`]).
    pub async fn wait_metric(&self, name: &str, want: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.metric(name).await;
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name} stayed {got}, expected {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// The WebSocket client.

#[derive(Debug)]
pub enum Event {
    Text(String),
    Bytes(Vec<u8>),
    Close(CloseFrame),
}

struct Forward(UnboundedSender<Event>);

impl Handler for Forward {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let _ = self.0.send(Event::Text(text.to_string()));
    }

    async fn on_bytes(&mut self, _ws: &WebSocket, data: bytes::Bytes) {
        let _ = self.0.send(Event::Bytes(data.to_vec()));
    }

    async fn on_close(&mut self, _ws: &WebSocket, close: CloseFrame) {
        let _ = self.0.send(Event::Close(close));
    }
}

/// A WebSocket client whose received messages are read with [`Client::recv`].
pub struct Client {
    pub ws: WebSocket,
    rx: UnboundedReceiver<Event>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (tx, rx) = unbounded_channel();
        let ws = ws::connect(url, Forward(tx), ws::Config::default())
            .await
            .expect("connect");
        Client { ws, rx }
    }

    /// Sends a JSON message.
    pub fn send(&self, message: Value) {
        self.send_raw(&message.to_string());
    }

    /// Sends a text message as is.
    pub fn send_raw(&self, text: &str) {
        self.ws.send_text(text.to_owned()).expect("send");
    }

    /// The next event (panics after [`WAIT`]).
    pub async fn next_event(&mut self) -> Event {
        match timeout(WAIT, self.rx.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("client task ended"),
            Err(_) => panic!("nothing received within {WAIT:?}"),
        }
    }

    /// The next message, parsed as JSON (panics on anything else).
    pub async fn recv(&mut self) -> Value {
        match self.next_event().await {
            Event::Text(text) => {
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON message {text:?}: {e}"))
            }
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// Asserts that the next message equals `want`.
    pub async fn expect(&mut self, want: Value) {
        let got = self.recv().await;
        assert_eq!(got, want, "\n got: {got}\nwant: {want}");
    }

    /// Sends `message` and asserts that the reply equals `want`.
    pub async fn exchange(&mut self, message: Value, want: Value) {
        self.send(message);
        self.expect(want).await;
    }

    /// Asserts that nothing was received before this point: sends an `add` action as a barrier and
    /// checks that its reply is the next message. (Replies and publications share one ordered
    /// queue, so anything sent to this client earlier would arrive first.)
    pub async fn assert_nothing_pending(&mut self) {
        self.exchange(
            json!({"type": "action", "channel": "add", "data": {"a": 20, "b": 22}, "id": "barrier"}),
            json!({"type": "action", "channel": "add", "status": "completed", "data": 42, "id": "barrier"}),
        )
        .await;
    }

    /// Closes the connection and waits for its end.
    pub async fn close(self) {
        let _ = self.ws.close(1000, "");
        let _ = timeout(WAIT, self.ws.closed()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// One HTTP/1.1 request (`Connection: close`); the status and the (de-chunked) body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("HTTP response timed out")
        .unwrap();
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP head");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
