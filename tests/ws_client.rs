//! The WebSocket client (`switchboard::ws::connect`) over real sockets: against a switchboard
//! server started in-process, and against a hand-written server on raw TCP that sends malformed
//! frames or stops answering.

mod raw_frames;

use base64::Engine;
use raw_frames::{encode, parse, Frame};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchboard::ws::{self, CloseFrame, Config, ConnectError, Handler, SendError, Text, WebSocket};
use switchboard::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq)]
enum Ev {
    Open,
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(CloseFrame),
}

/// Reports every event; the server side also echoes and obeys `close:CODE:REASON`.
struct Rec {
    tx: UnboundedSender<Ev>,
    server: bool,
}

impl Handler for Rec {
    async fn on_open(&mut self, _ws: &WebSocket) {
        let _ = self.tx.send(Ev::Open);
    }
    async fn on_message(&mut self, ws: &WebSocket, text: Text) {
        let _ = self.tx.send(Ev::Text(text.to_string()));
        if self.server {
            if let Some((code, reason)) = text.strip_prefix("close:").and_then(|r| r.split_once(':')) {
                ws.close(code.parse().unwrap(), reason).unwrap();
            } else {
                let _ = ws.send_text(text);
            }
        }
    }
    async fn on_bytes(&mut self, ws: &WebSocket, data: bytes::Bytes) {
        let _ = self.tx.send(Ev::Binary(data.to_vec()));
        if self.server {
            let _ = ws.send_binary(data);
        }
    }
    async fn on_ping(&mut self, _ws: &WebSocket, data: bytes::Bytes) {
        let _ = self.tx.send(Ev::Ping(data.to_vec()));
    }
    async fn on_pong(&mut self, _ws: &WebSocket, data: bytes::Bytes) {
        let _ = self.tx.send(Ev::Pong(data.to_vec()));
    }
    async fn on_close(&mut self, _ws: &WebSocket, close: CloseFrame) {
        let _ = self.tx.send(Ev::Close(close));
    }
}

struct Events(UnboundedReceiver<Ev>);

impl Events {
    async fn next(&mut self) -> Ev {
        timeout(WAIT, self.0.recv())
            .await
            .expect("timed out waiting for an event")
            .expect("channel closed")
    }
    async fn close(&mut self) -> CloseFrame {
        loop {
            if let Ev::Close(c) = self.next().await {
                return c;
            }
        }
    }
}

fn recorder(server: bool) -> (Rec, Events) {
    let (tx, rx) = unbounded_channel();
    (Rec { tx, server }, Events(rx))
}

fn quick_config() -> Config {
    Config {
        max_message_size: 1024,
        ping_interval: None,
        handshake_timeout: Duration::from_secs(2),
        close_timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

/// A switchboard echo server on /ws; its events go to the returned receiver.
async fn start_server() -> (SocketAddr, Events, Shutdown) {
    let (tx, rx) = unbounded_channel();
    let app = axum::Router::new().route(
        "/ws",
        ws::endpoint(
            move |_| Rec {
                tx: tx.clone(),
                server: true,
            },
            quick_config(),
        ),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, app, shutdown.clone()));
    (addr, Events(rx), shutdown)
}

// ---------------------------------------------------------------------------------------------
// A hand-written server on raw TCP.

struct RawServer {
    tcp: TcpStream,
    buf: Vec<u8>,
    request: String,
}

impl RawServer {
    /// Listens on a free port; `accept` then takes the client's handshake.
    async fn listen() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/raw?q=1", listener.local_addr().unwrap());
        (listener, url)
    }

    async fn accept(listener: &TcpListener) -> RawServer {
        let (mut tcp, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let mut buf = Vec::new();
        let request = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(buf[..pos].to_vec()).unwrap();
                buf.drain(..pos + 4);
                break head;
            }
            let mut chunk = [0u8; 4096];
            let n = timeout(WAIT, tcp.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        };
        let key = request
            .lines()
            .find_map(|l| {
                l.strip_prefix("sec-websocket-key:")
                    .or_else(|| l.strip_prefix("Sec-WebSocket-Key:"))
            })
            .expect("no key")
            .trim()
            .to_owned();
        let mut sha1 = sha1_smol::Sha1::new();
        sha1.update(key.as_bytes());
        sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let accept = base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nX-Raw: yes\r\n\r\n"
        );
        tcp.write_all(response.as_bytes()).await.unwrap();
        RawServer { tcp, buf, request }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Sends one unmasked frame; `b0` is FIN/RSV/opcode.
    async fn send(&mut self, b0: u8, payload: &[u8]) {
        self.send_raw(&encode(b0, payload, None)).await;
    }

    /// The next frame, or None at EOF.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = parse(&mut self.buf) {
                assert_eq!(frame.rsv, 0, "client set reserved bits");
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = match timeout(WAIT, self.tcp.read(&mut chunk)).await.expect("read timed out") {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("read: {e}"),
            };
            if n == 0 {
                assert!(self.buf.is_empty(), "EOF inside a frame");
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame, which a client must mask.
    async fn expect_frame(&mut self) -> Frame {
        let f = self.frame().await.expect("EOF, expected a frame");
        assert!(f.masked, "client frames must be masked: {f:?}");
        f
    }

    async fn expect_eof(&mut self) {
        if let Some(f) = self.frame().await {
            panic!("expected EOF, got {f:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Against a switchboard server.

#[tokio::test]
async fn echo_text_and_binary_and_handshake() {
    let (addr, mut server, _shutdown) = start_server().await;
    let (rec, mut events) = recorder(false);
    let url = format!("ws://{addr}/ws?room=7");
    let client = ws::connect(&url, rec, quick_config()).await.unwrap();
    assert_eq!(events.next().await, Ev::Open);
    assert_eq!(server.next().await, Ev::Open);

    let hs = client.handshake();
    assert_eq!(hs.path(), "/ws");
    assert_eq!(hs.query(), Some("room=7"));
    assert_eq!(hs.peer, Some(addr));
    assert!(hs.headers.get("sec-websocket-accept").is_some());

    client.send_text("héllo").unwrap();
    assert_eq!(events.next().await, Ev::Text("héllo".into()));
    client.send_binary(vec![0u8, 1, 255]).unwrap();
    assert_eq!(events.next().await, Ev::Binary(vec![0, 1, 255]));
    client.send_text("").unwrap();
    assert_eq!(events.next().await, Ev::Text(String::new()));
    // Many sends queued at once arrive in order.
    for i in 0..100 {
        client.send_text(format!("m{i}")).unwrap();
    }
    for i in 0..100 {
        assert_eq!(events.next().await, Ev::Text(format!("m{i}")));
    }
}

#[tokio::test]
async fn server_close_reaches_the_clients_on_close() {
    let (addr, mut server, _shutdown) = start_server().await;
    let (rec, mut events) = recorder(false);
    let client = ws::connect(&format!("ws://{addr}/ws"), rec, quick_config())
        .await
        .unwrap();
    client.send_text("close:4000:see you").unwrap();
    assert_eq!(
        events.close().await,
        CloseFrame {
            code: 4000,
            reason: "see you".into(),
            by_peer: true
        }
    );
    timeout(WAIT, client.closed()).await.expect("closed() did not resolve");
    assert!(client.is_closed());
    assert_eq!(client.send_text("late"), Err(SendError::Closed));
    assert_eq!(client.close(1000, ""), Err(SendError::Closed));
    // The server saw the handshake complete (its close answered, not timed out).
    let close = server.close().await;
    assert_eq!((close.code, close.by_peer), (4000, false));
}

#[tokio::test]
async fn client_close_reaches_the_servers_on_close() {
    let (addr, mut server, _shutdown) = start_server().await;
    let (rec, mut events) = recorder(false);
    // A long close timeout, so that an answered close is told from a timed-out one.
    let config = Config {
        close_timeout: Duration::from_secs(3),
        ..quick_config()
    };
    let client = ws::connect(&format!("ws://{addr}/ws"), rec, config).await.unwrap();
    assert_eq!(server.next().await, Ev::Open);
    let start = Instant::now();
    client.close(4001, "client done").unwrap();
    assert_eq!(client.send_text("after"), Err(SendError::Closed));
    assert_eq!(client.close(4001, "again"), Err(SendError::Closed));
    assert_eq!(
        server.close().await,
        CloseFrame {
            code: 4001,
            reason: "client done".into(),
            by_peer: true
        }
    );
    timeout(WAIT, client.closed()).await.expect("closed() did not resolve");
    // Answered, not the close timeout.
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    let close = events.close().await;
    assert_eq!((close.code, close.by_peer), (4001, false));
}

#[tokio::test]
async fn connect_errors() {
    for bad in ["http://127.0.0.1:1/", "not a url", "wss://127.0.0.1:1/", "ws:///path"] {
        let r = ws::connect(bad, recorder(false).0, quick_config()).await;
        assert!(
            matches!(r, Err(ConnectError::InvalidUrl(ref u)) if u == bad),
            "{bad}: {r:?}"
        );
    }

    // Nobody listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = ws::connect(&format!("ws://127.0.0.1:{port}/"), recorder(false).0, quick_config()).await;
    assert!(matches!(r, Err(ConnectError::Failed { .. })), "{r:?}");

    // Not a WebSocket endpoint: the server answers 404.
    let (addr, _server, _shutdown) = start_server().await;
    let r = ws::connect(&format!("ws://{addr}/nope"), recorder(false).0, quick_config()).await;
    assert!(
        matches!(r, Err(ConnectError::Rejected { ref reason, .. }) if reason == "expected 101 Switching Protocols, got 404 Not Found"),
        "{r:?}"
    );

    // A server that accepts TCP and never answers the handshake.
    let (listener, url) = RawServer::listen().await;
    let config = Config {
        handshake_timeout: Duration::from_millis(200),
        ..quick_config()
    };
    let start = Instant::now();
    let r = ws::connect(&url, recorder(false).0, config).await;
    assert!(matches!(r, Err(ConnectError::Timeout(ref u)) if *u == url), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    drop(listener);
}

// ---------------------------------------------------------------------------------------------
// Against a hand-written server.

#[tokio::test]
async fn client_masks_frames_and_sends_the_handshake() {
    let (listener, url) = RawServer::listen().await;
    let (rec, mut events) = recorder(false);
    let (client, mut server) = tokio::join!(
        async { ws::connect(&url, rec, quick_config()).await.unwrap() },
        RawServer::accept(&listener)
    );
    assert!(
        server.request.starts_with("GET /raw?q=1 HTTP/1.1\r\n"),
        "{}",
        server.request
    );
    assert_eq!(client.handshake().headers.get("x-raw").unwrap(), "yes");
    assert_eq!(events.next().await, Ev::Open);

    client.send_text("hi").unwrap();
    let f = server.expect_frame().await;
    assert_eq!((f.fin, f.opcode, f.payload.as_slice()), (true, 1, &b"hi"[..]));
    client.send_binary(vec![9u8; 300]).unwrap();
    let f = server.expect_frame().await;
    assert_eq!((f.opcode, f.payload), (2, vec![9u8; 300]));
    client.ping(&b"cp"[..]).unwrap();
    let f = server.expect_frame().await;
    assert_eq!((f.opcode, f.payload.as_slice()), (9, &b"cp"[..]));
    server.send(0x8A, b"cp").await;
    assert_eq!(events.next().await, Ev::Pong(b"cp".to_vec()));

    // A fragmented message with a ping in the middle: pong first, then the whole message.
    server.send(0x01, b"frag").await;
    server.send(0x89, b"sp").await;
    server.send(0x80, b"mented").await;
    let f = server.expect_frame().await;
    assert_eq!((f.opcode, f.payload.as_slice()), (0xA, &b"sp"[..]));
    assert_eq!(events.next().await, Ev::Ping(b"sp".to_vec()));
    assert_eq!(events.next().await, Ev::Text("fragmented".into()));

    // The server closes: the client answers with the same code and the server drops TCP.
    server.send(0x88, &[0x03, 0xe9, b'b', b'y', b'e']).await;
    let f = server.expect_frame().await;
    assert_eq!(f.close().0, 1001);
    drop(server);
    assert_eq!(
        events.close().await,
        CloseFrame {
            code: 1001,
            reason: "bye".into(),
            by_peer: true
        }
    );
    timeout(WAIT, client.closed()).await.unwrap();
}

/// The client answers each malformed server frame with the right close code, then ends.
#[tokio::test]
async fn malformed_server_frames_close_with_the_right_code() {
    let cases: [(&str, Vec<u8>, u16, &str); 6] = [
        ("rsv", encode(0xC1, b"x", None), 1002, "invalid extension"),
        ("reserved opcode", encode(0x83, b"x", None), 1002, "invalid opcode"),
        (
            "masked",
            encode(0x81, b"x", Some([1, 2, 3, 4])),
            1002,
            "unexpected masked frame",
        ),
        ("invalid utf-8", encode(0x81, &[0xff, 0xfe], None), 1007, "invalid utf8"),
        ("too big", encode(0x82, &[0u8; 1025], None), 1009, "max length: 1024"),
        (
            "too big in fragments",
            [encode(0x02, &[0u8; 600], None), encode(0x80, &[0u8; 600], None)].concat(),
            1009,
            "max length: 1024",
        ),
    ];
    for (name, bytes, code, reason) in cases {
        let (listener, url) = RawServer::listen().await;
        let (rec, mut events) = recorder(false);
        let (client, mut server) = tokio::join!(
            async { ws::connect(&url, rec, quick_config()).await.unwrap() },
            RawServer::accept(&listener)
        );
        server.send_raw(&bytes).await;
        let f = server.expect_frame().await;
        assert_eq!(f.close(), (code, reason.to_owned()), "{name}");
        // Answer the close (the client may already have dropped TCP).
        let _ = server.tcp.write_all(&encode(0x88, &code.to_be_bytes(), None)).await;
        server.expect_eof().await;
        let close = events.close().await;
        assert_eq!((close.code, close.by_peer), (code, false), "{name}: {close:?}");
        timeout(WAIT, client.closed()).await.unwrap();
        assert_eq!(client.send_text("x"), Err(SendError::Closed));
    }
}

#[tokio::test]
async fn client_drops_a_dead_server_after_idle_timeout() {
    let (listener, url) = RawServer::listen().await;
    let (rec, mut events) = recorder(false);
    let config = Config {
        ping_interval: Some(Duration::from_millis(100)),
        idle_timeout: Duration::from_millis(400),
        ..quick_config()
    };
    let (client, mut server) = tokio::join!(
        async { ws::connect(&url, rec, config).await.unwrap() },
        RawServer::accept(&listener)
    );
    let start = Instant::now();
    let f = server.expect_frame().await;
    assert_eq!((f.opcode, f.payload.len()), (9, 0));
    server.expect_eof().await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(
        events.close().await,
        CloseFrame {
            code: 1006,
            reason: "idle timeout".into(),
            by_peer: false
        }
    );
    timeout(WAIT, client.closed()).await.unwrap();
}
