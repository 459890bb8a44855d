//! Refusing handshakes over real sockets: the origin check (403) and the per-address connection
//! rate (429), served by `http::serve`; a refused handshake leaves nothing open, and connections
//! opened before keep working.

use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use switchboard::ws::{self, Handler, Text, WebSocket};
use switchboard::{Limits, Node, NodeBuilder, Origins, Router, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Echo {
    value: Value,
}

/// A node with one action, `echo`, served on 127.0.0.1:0; shut down when dropped.
struct Server {
    addr: SocketAddr,
    node: Node,
    shutdown: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn start(configure: impl FnOnce(NodeBuilder) -> NodeBuilder) -> Server {
    let mut router = Router::new();
    router.action("echo", |p: Echo| async move { Ok::<_, String>(p.value) });
    let node = configure(Node::builder(router)).build();
    let listener = switchboard::http::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    Server { addr, node, shutdown }
}

/// An HTTP answer: status, headers (lowercased names) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A WebSocket handshake written by hand, with `extra` headers; the answer (for a 101, its head
/// only: the stream is left open with the connection).
async fn handshake(addr: SocketAddr, extra: &[(&str, &str)]) -> (Answer, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let answer = timeout(WAIT, read_answer(&mut stream))
        .await
        .expect("no answer in time");
    (answer, stream)
}

async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "connection closed before the answer's head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("UTF-8 head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end..].to_vec();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while body.len() < length {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8(body).expect("UTF-8 body");
    Answer { status, headers, body }
}

/// A plain HTTP GET (`Connection: close`): status and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let answer = timeout(WAIT, read_answer(&mut stream))
        .await
        .expect("no answer in time");
    (answer.status, answer.body)
}

async fn refusals(addr: SocketAddr, reason: &str) -> u64 {
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    let prefix = format!("switchboard_limit_refusals_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
}

struct Forward(UnboundedSender<String>);

impl Handler for Forward {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let _ = self.0.send(text.to_string());
    }
}

async fn client(addr: SocketAddr) -> (WebSocket, UnboundedReceiver<String>) {
    let (tx, rx) = unbounded_channel();
    let ws = ws::connect(&format!("ws://{addr}/"), Forward(tx), ws::Config::default())
        .await
        .expect("connect");
    (ws, rx)
}

async fn echo(ws: &WebSocket, rx: &mut UnboundedReceiver<String>, value: Value) {
    let message = json!({"type": "action", "channel": "echo", "data": {"value": value}, "id": "e"});
    ws.send_text(message.to_string()).expect("send");
    let reply = timeout(WAIT, rx.recv())
        .await
        .expect("no reply in time")
        .expect("client ended");
    let reply: Value = serde_json::from_str(&reply).expect("JSON reply");
    assert_eq!(
        reply,
        json!({"type": "action", "channel": "echo", "status": "completed", "data": value, "id": "e"})
    );
}

#[tokio::test]
async fn an_origin_not_allowed_gets_403_and_nothing_opens() {
    let server =
        start(|b| b.allowed_origins(Origins::list(["https://app.example.com", "https://*.example.com"]))).await;
    let (answer, _stream) = handshake(server.addr, &[("Origin", "https://evil.example")]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(answer.header("upgrade"), None);
    assert_eq!(
        answer.body,
        "403 Forbidden: origin 'https://evil.example' is not allowed; add it with --allowed-origin \
         https://evil.example (NodeBuilder::allowed_origins)\n"
    );
    // Nothing registered, nothing pending: a drain has nothing to wait for.
    assert!(server.node.sockets().is_empty());
    timeout(Duration::from_secs(1), server.node.sockets().drained())
        .await
        .expect("a refused handshake left an upgrade pending");
    assert_eq!(refusals(server.addr, "origin").await, 1);

    for origin in [
        "https://app.example.com",
        "https://chat.example.com",
        "HTTPS://APP.EXAMPLE.COM:443",
    ] {
        let (answer, _stream) = handshake(server.addr, &[("Origin", origin)]).await;
        assert_eq!(answer.status, 101, "{origin}: {answer:?}");
    }
    // No Origin: not a browser, allowed.
    let (answer, _stream) = handshake(server.addr, &[]).await;
    assert_eq!(answer.status, 101, "{answer:?}");
    assert_eq!(refusals(server.addr, "origin").await, 1);
}

#[tokio::test]
async fn by_default_only_the_requests_own_host_is_allowed() {
    let server = start(|b| b).await;
    let own = format!("http://{}", server.addr);
    let (answer, _stream) = handshake(server.addr, &[("Origin", &own)]).await;
    assert_eq!(answer.status, 101, "{answer:?}");
    // The same host on another port (a dev server), and another loopback name: the same site.
    for origin in ["http://127.0.0.1:5173", "http://localhost:5173"] {
        let (answer, _stream) = handshake(server.addr, &[("Origin", origin)]).await;
        assert_eq!(answer.status, 101, "{origin}: {answer:?}");
    }
    let (answer, _stream) = handshake(server.addr, &[("Origin", "https://evil.example:5173")]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer.body.contains("--allowed-origin https://evil.example:5173"),
        "{}",
        answer.body
    );
    // And any origin with Origins::any().
    let server = start(|b| b.allowed_origins(Origins::any())).await;
    let (answer, _stream) = handshake(server.addr, &[("Origin", "https://evil.example")]).await;
    assert_eq!(answer.status, 101, "{answer:?}");
}

#[tokio::test]
async fn over_the_connection_rate_gets_429_and_open_connections_keep_working() {
    let limits = Limits {
        connections_per_ip_per_sec: 1,
        connection_burst_per_ip: 1,
        ..Limits::default()
    };
    let server = start(|b| b.limits(limits)).await;
    let (ws, mut rx) = client(server.addr).await;
    // The bucket refills one connection per second: of three handshakes right after, at least
    // one is refused however slow the machine (in practice all three).
    let mut refused = None;
    for _ in 0..3 {
        let (answer, _stream) = handshake(server.addr, &[]).await;
        if answer.status == 429 {
            refused = Some(answer);
            break;
        }
    }
    let answer = refused.expect("no 429");
    assert_eq!(answer.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        answer.body,
        "429 Too Many Requests: more than 1 new connections per second from 127.0.0.1; \
         raise connections_per_ip_per_sec (--max-connections-per-ip-per-sec)\n"
    );
    assert!(refusals(server.addr, "connection_rate").await >= 1);
    // The Rust client says why.
    let err = loop {
        match ws::connect(
            &format!("ws://{}/", server.addr),
            Forward(unbounded_channel().0),
            ws::Config::default(),
        )
        .await
        {
            Err(err) => break err,
            // Refilled meanwhile (a slow machine): that one took the token; try again.
            Ok(other) => drop(other.close(1000, "")),
        }
    };
    assert!(err.to_string().contains("429"), "{err}");
    // The connection opened before is not affected.
    echo(&ws, &mut rx, json!("still here")).await;
}

#[tokio::test]
async fn a_rate_of_zero_is_no_limit() {
    let limits = Limits {
        connections_per_ip_per_sec: 0,
        connection_burst_per_ip: 1,
        ..Limits::default()
    };
    let server = start(|b| b.limits(limits)).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(client(server.addr).await);
    }
    let (ws, rx) = clients.last_mut().unwrap();
    echo(ws, rx, json!(1)).await;
    assert_eq!(refusals(server.addr, "connection_rate").await, 0);
}

/// The ws layer alone: a factory that refuses gets its status and body out, and the registry
/// stays balanced (nothing open, nothing pending).
#[tokio::test]
async fn endpoint_checked_answers_a_rejection() {
    struct Quiet;
    impl Handler for Quiet {}
    let sockets = ws::Sockets::new();
    let endpoint = ws::endpoint_checked(
        |handshake: &mut ws::Handshake| match handshake.query() {
            Some("deny") => Err(ws::Rejection::new(http::StatusCode::IM_A_TEAPOT, "no tea for you\n")),
            _ => Ok(Quiet),
        },
        ws::Config::default(),
        sockets.clone(),
    );
    let app = axum::Router::new().route("/ws", endpoint);
    let listener = switchboard::http::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, app, shutdown.clone()));

    let (tx, _rx) = unbounded_channel();
    let err = ws::connect(
        &format!("ws://{addr}/ws?deny"),
        Forward(tx.clone()),
        ws::Config::default(),
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("418"), "{err}");
    assert!(sockets.is_empty());
    timeout(Duration::from_secs(1), sockets.drained())
        .await
        .expect("a refused handshake left an upgrade pending");

    let ws = ws::connect(&format!("ws://{addr}/ws"), Forward(tx), ws::Config::default())
        .await
        .expect("accepted");
    let deadline = tokio::time::Instant::now() + WAIT;
    while sockets.len() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the accepted socket was not registered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(ws.close(1000, ""));
    shutdown.trigger();
}
