//! Graceful drain over real sockets: on shutdown every WebSocket gets its close frame (1001), in
//! jittered batches when there are many, and the server waits for them, at most its drain timeout
//! — with `http::serve` and its `Shutdown`, and with `Node::shutdown` for a node that something
//! else serves.
//!
//! Nothing here sleeps to wait: every wait is on an event, bounded by a timeout.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchboard::ws::{self, CloseFrame, Handler, Text, WebSocket};
use switchboard::{Channel, Node, Router, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How long a test waits for any one expected event.
const WAIT: Duration = Duration::from_secs(20);
const CLIENTS: usize = 200;

fn router() -> Router {
    let mut router = Router::new();
    router.channel(Channel::new("news", |_: Value| async move {
        Ok::<_, String>(json!({ "headline": "Breaking News!" }))
    }));
    router
}

/// A client handler that forwards messages and reports how its connection ended, and when.
struct Recorder {
    messages: UnboundedSender<Value>,
    closes: UnboundedSender<(CloseFrame, Instant)>,
}

impl Handler for Recorder {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let _ = self.messages.send(serde_json::from_str(&text).unwrap_or(Value::Null));
    }

    async fn on_close(&mut self, _ws: &WebSocket, close: CloseFrame) {
        let _ = self.closes.send((close, Instant::now()));
    }
}

/// `n` clients of `url`, each subscribed to `news` (so each has opened on the server: its socket
/// is registered); their closes arrive on the receiver.
async fn subscribed_clients(url: &str, n: usize) -> (Vec<WebSocket>, UnboundedReceiver<(CloseFrame, Instant)>) {
    let (closes, closed) = unbounded_channel();
    let connecting = (0..n).map(|_| {
        let closes = closes.clone();
        async move {
            let (messages, mut received) = unbounded_channel();
            let handler = Recorder { messages, closes };
            let ws = ws::connect(url, handler, ws::Config::default()).await.expect("connect");
            ws.send_text(json!({"type": "subscribe", "channel": "news"}).to_string())
                .expect("send");
            let ack = tokio::time::timeout(WAIT, received.recv())
                .await
                .expect("subscribed in time")
                .expect("client open");
            assert_eq!(ack["type"], "subscribed", "{ack}");
            ws
        }
    });
    let clients = futures_util::future::join_all(connecting).await;
    (clients, closed)
}

/// Waits for `n` closes and checks each is the server's 1001; returns when they arrived.
async fn expect_closes(closed: &mut UnboundedReceiver<(CloseFrame, Instant)>, n: usize) -> Vec<Instant> {
    let mut arrivals = Vec::with_capacity(n);
    for i in 0..n {
        let (close, at) = tokio::time::timeout(WAIT, closed.recv())
            .await
            .unwrap_or_else(|_| panic!("only {i} of {n} clients got their close within {WAIT:?}"))
            .expect("a client");
        assert_eq!(
            close,
            CloseFrame {
                code: 1001,
                reason: "server shutting down".into(),
                by_peer: true
            }
        );
        arrivals.push(at);
    }
    arrivals
}

async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = switchboard::http::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// 200 subscribed clients, the default drain (more than a batch of 100: two batches over 2 s):
/// every client gets 1001 and `serve` returns once every socket has ended, within the timeout.
#[tokio::test]
async fn serve_closes_200_subscribed_clients_with_1001_and_waits_for_them() {
    let node = Node::new(router());
    let (listener, addr) = listen().await;
    let shutdown = Shutdown::new();
    let server = tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    let (_clients, mut closed) = subscribed_clients(&format!("ws://{addr}/"), CLIENTS).await;
    assert_eq!(node.sockets().len(), CLIENTS);

    let triggered = Instant::now();
    shutdown.trigger();
    let arrivals = expect_closes(&mut closed, CLIENTS).await;
    let timeout = shutdown.drain_settings().timeout();
    tokio::time::timeout(timeout + WAIT, server)
        .await
        .expect("serve returns within its drain timeout")
        .expect("serve task")
        .expect("serve");
    assert!(
        node.sockets().is_empty(),
        "serve returned before every socket had ended"
    );
    assert!(
        triggered.elapsed() < timeout,
        "the drain completed, it did not time out"
    );
    // The second batch closes in the second half of the 2 s window at the earliest.
    let last = arrivals.iter().max().copied().expect("closes");
    assert!(
        last.duration_since(triggered) >= Duration::from_secs(1),
        "all {CLIENTS} closes came at once"
    );
    // The listener is closed: new clients are refused.
    assert!(TcpStream::connect(addr).await.is_err());
}

/// Batches: 200 clients in batches of 20 over 1 s close in ten groups, the last no sooner than
/// 900 ms after the trigger; a custom close code and reason reach every client.
#[tokio::test]
async fn serve_closes_in_jittered_batches_with_the_configured_close() {
    let node = Node::new(router());
    let (listener, addr) = listen().await;
    let drain = ws::Drain::new()
        .with_batch_size(20)
        .with_window(Duration::from_secs(1))
        .with_close(4000, "draining")
        .expect("valid close");
    let shutdown = Shutdown::new().with_drain(drain);
    let server = tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    let (_clients, mut closed) = subscribed_clients(&format!("ws://{addr}/"), CLIENTS).await;

    let triggered = Instant::now();
    shutdown.trigger();
    let mut last = triggered;
    for i in 0..CLIENTS {
        let (close, at) = tokio::time::timeout(WAIT, closed.recv())
            .await
            .unwrap_or_else(|_| panic!("only {i} closes"))
            .expect("a client");
        assert_eq!((close.code, close.reason.as_str()), (4000, "draining"));
        last = last.max(at);
    }
    assert!(last.duration_since(triggered) >= Duration::from_millis(900));
    tokio::time::timeout(WAIT, server)
        .await
        .expect("serve returns")
        .expect("serve task")
        .expect("serve");
    assert!(node.sockets().is_empty());
}

/// A raw client that completed the handshake and subscribed, then never reads nor answers the
/// close: `serve` returns at its drain timeout (1 s), long before the connection's close timeout
/// (30 s) would end that socket; the well-behaved clients got their 1001.
#[tokio::test]
async fn a_client_ignoring_the_close_does_not_hold_serve_beyond_the_drain_timeout() {
    let config = ws::Config {
        close_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let node = Node::builder(router()).ws_config(config).build();
    let (listener, addr) = listen().await;
    let shutdown = Shutdown::new().with_drain_timeout(Duration::from_secs(1));
    let server = tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    let (_clients, mut closed) = subscribed_clients(&format!("ws://{addr}/"), 10).await;
    let mut deaf = raw_subscribed_client(addr).await;
    assert_eq!(node.sockets().len(), 11);

    let triggered = Instant::now();
    shutdown.trigger();
    expect_closes(&mut closed, 10).await;
    tokio::time::timeout(WAIT, server)
        .await
        .expect("serve returns at its drain timeout")
        .expect("serve task")
        .expect("serve");
    let waited = triggered.elapsed();
    assert!(waited < Duration::from_secs(30), "serve waited {waited:?}");
    assert_eq!(node.sockets().len(), 1, "only the deaf client is left, still open");
    // It was sent its close frame (1001) all the same, and the server has not hung up on it.
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let close = loop {
        let n = tokio::time::timeout(WAIT, deaf.read(&mut buf))
            .await
            .expect("the close frame")
            .expect("read");
        assert!(n > 0, "the server closed TCP before the close handshake's timeout");
        received.extend_from_slice(&buf[..n]);
        if let Some(at) = received.windows(2).position(|w| w == [0x88, 2 + 20]) {
            if received.len() >= at + 4 {
                break received[at + 2..at + 4].to_vec();
            }
        }
    };
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1001);
}

/// A raw TCP client: the upgrade handshake, then a subscribe in a masked frame, read until its
/// acknowledgement. The caller then never reads again nor answers anything.
async fn raw_subscribed_client(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let subscribe = json!({"type": "subscribe", "channel": "news"}).to_string();
    assert!(subscribe.len() < 126);
    // A masked text frame with a zero mask: the payload goes as is.
    let mut frame = vec![0x81, 0x80 | subscribe.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(subscribe.as_bytes());
    tcp.write_all(&frame).await.expect("write");
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let wanted = br#""type":"subscribed""#;
    while !received.windows(wanted.len()).any(|w| w == wanted) {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("the 101 and the acknowledgement")
            .expect("read");
        assert!(n > 0, "the server hung up: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..n]);
    }
    assert!(received.starts_with(b"HTTP/1.1 101"));
    tcp
}

/// A node in a user's own axum app served by `axum::serve`: `Node::shutdown` closes its 200
/// subscribed clients with 1001 and returns once they have ended; a client connecting afterwards
/// is closed at once.
#[tokio::test]
async fn node_shutdown_drains_a_node_served_by_axum_serve() {
    let node = Node::new(router());
    let (listener, addr) = listen().await;
    let app = axum::Router::new().route("/ws", node.endpoint());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("ws://{addr}/ws");
    let (_clients, mut closed) = subscribed_clients(&url, CLIENTS).await;
    assert_eq!(node.sockets().len(), CLIENTS);

    let report = tokio::time::timeout(WAIT, node.shutdown())
        .await
        .expect("the drain is bounded");
    assert_eq!(report.closed, CLIENTS);
    assert!(report.completed(), "{report:?}");
    assert!(node.sockets().is_empty());
    expect_closes(&mut closed, CLIENTS).await;

    // Closing for good: a new connection is closed at once.
    let (messages, _received) = unbounded_channel();
    let (closes, mut late) = unbounded_channel();
    let _late = ws::connect(&url, Recorder { messages, closes }, ws::Config::default())
        .await
        .expect("connect");
    expect_closes(&mut late, 1).await;
}

/// A node served by `http::serve` whose `Shutdown` is not triggered: `Node::shutdown` closes the
/// node's clients only, not those of another endpoint of the app; the `Shutdown` then closes
/// those and `serve` returns.
#[tokio::test]
async fn node_shutdown_under_http_serve_closes_only_the_nodes_sockets() {
    struct Nop;
    impl Handler for Nop {}
    let node = Node::new(router());
    let (listener, addr) = listen().await;
    let app = axum::Router::new()
        .route("/ws", node.endpoint())
        .route("/other", ws::endpoint(|_| Nop, ws::Config::default()));
    let shutdown = Shutdown::new();
    let server = tokio::spawn(switchboard::http::serve(listener, app, shutdown.clone()));
    let (_clients, mut closed) = subscribed_clients(&format!("ws://{addr}/ws"), CLIENTS).await;
    let (messages, _received) = unbounded_channel();
    let (closes, mut other_closed) = unbounded_channel();
    let other = ws::connect(
        &format!("ws://{addr}/other"),
        Recorder { messages, closes },
        ws::Config::default(),
    )
    .await
    .expect("connect");

    let report = tokio::time::timeout(WAIT, node.shutdown())
        .await
        .expect("the drain is bounded");
    assert_eq!((report.closed, report.remaining), (CLIENTS, 0));
    expect_closes(&mut closed, CLIENTS).await;
    assert!(!other.is_closed(), "the other endpoint's client is not the node's");
    assert!(!server.is_finished());

    shutdown.trigger();
    expect_closes(&mut other_closed, 1).await;
    tokio::time::timeout(WAIT, server)
        .await
        .expect("serve returns")
        .expect("serve task")
        .expect("serve");
}
