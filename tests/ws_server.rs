//! The WebSocket server over real sockets: `switchboard::http::serve` on 127.0.0.1:0 with
//! `ws::endpoint`, driven by the switchboard client or by hand-written frames on raw TCP.

mod raw_frames;

use raw_frames::{encode, parse, Frame};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::ws::{self, CloseFrame, Config, Handler, SendError, Text, WebSocket};
use switchboard::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Server side: a handler that reports every event and obeys a few text commands.

#[derive(Debug)]
#[allow(dead_code)]
enum Ev {
    Open(WebSocket),
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// Result of a send the test asked for (`Debug` of the error, or "ok").
    SendResult(String),
    /// The flood stopped: the send error and how many messages had been accepted.
    FloodEnded(String, usize),
    Close(CloseFrame),
}

/// Events tagged with the connection's request path.
type Events = UnboundedReceiver<(String, Ev)>;

struct Rec {
    path: String,
    tx: UnboundedSender<(String, Ev)>,
    /// Sleep this long in `on_close` before reporting it (to test `WebSocket::closed`).
    close_delay: Option<Duration>,
    closed_flag: Arc<AtomicBool>,
}

impl Rec {
    fn emit(&self, ev: Ev) {
        let _ = self.tx.send((self.path.clone(), ev));
    }
}

impl Handler for Rec {
    async fn on_open(&mut self, ws: &WebSocket) {
        self.emit(Ev::Open(ws.clone()));
    }

    async fn on_message(&mut self, ws: &WebSocket, text: Text) {
        let s = text.to_string();
        self.emit(Ev::Text(s.clone()));
        if let Some(rest) = s.strip_prefix("close:") {
            // close:CODE:REASON, then try to send again.
            let (code, reason) = rest.split_once(':').unwrap();
            let r = ws.close(code.parse().unwrap(), reason);
            self.emit(Ev::SendResult(format!("{r:?}")));
            let r = ws.send_text("after close");
            self.emit(Ev::SendResult(format!("{r:?}")));
        } else if let Some(burst) = s.strip_prefix("flood:") {
            // Send 16 KiB messages until refused, yielding after every `burst` sends.
            let burst: usize = burst.parse().unwrap();
            let ws = ws.clone();
            let tx = self.tx.clone();
            let path = self.path.clone();
            tokio::spawn(async move {
                let chunk = bytes::Bytes::from(vec![7u8; 16 * 1024]);
                let mut sent = 0usize;
                loop {
                    match ws.send_binary(chunk.clone()) {
                        Ok(()) => sent += 1,
                        Err(e) => {
                            let _ = tx.send((path, Ev::FloodEnded(format!("{e:?}"), sent)));
                            return;
                        }
                    }
                    if sent.is_multiple_of(burst) {
                        tokio::task::yield_now().await;
                    }
                    if sent > 20_000 {
                        let _ = tx.send((path, Ev::FloodEnded("never stopped".into(), sent)));
                        return;
                    }
                }
            });
        } else if s == "flood-inline" {
            // The same flood from inside the handler, which then stays busy a while: the cut-off
            // is found by the writes that go on while a handler runs.
            let chunk = bytes::Bytes::from(vec![7u8; 16 * 1024]);
            let mut sent = 0usize;
            let ended = loop {
                match ws.send_binary(chunk.clone()) {
                    Ok(()) => sent += 1,
                    Err(e) => break format!("{e:?}"),
                }
                tokio::task::yield_now().await;
                if sent > 20_000 {
                    break "never stopped".into();
                }
            };
            self.emit(Ev::FloodEnded(ended, sent));
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else if let Some(n) = s.strip_prefix("burst-close:") {
            // N binary 16 KiB messages, then close(4000, "done").
            let chunk = bytes::Bytes::from(vec![9u8; 16 * 1024]);
            for _ in 0..n.parse::<usize>().unwrap() {
                ws.send_binary(chunk.clone()).unwrap();
            }
            ws.close(4000, "done").unwrap();
        } else if s == "ping-me" {
            let _ = ws.ping(&b"server ping"[..]);
        } else {
            let _ = ws.send_text(text);
        }
    }

    async fn on_bytes(&mut self, ws: &WebSocket, data: bytes::Bytes) {
        self.emit(Ev::Binary(data.to_vec()));
        let _ = ws.send_binary(data);
    }

    async fn on_ping(&mut self, _ws: &WebSocket, data: bytes::Bytes) {
        self.emit(Ev::Ping(data.to_vec()));
    }

    async fn on_pong(&mut self, _ws: &WebSocket, data: bytes::Bytes) {
        self.emit(Ev::Pong(data.to_vec()));
    }

    async fn on_close(&mut self, ws: &WebSocket, close: CloseFrame) {
        if let Some(d) = self.close_delay {
            tokio::time::sleep(d).await;
        }
        // Inside on_close the connection is over: sends fail.
        let r = ws.send_text("from on_close");
        assert!(matches!(r, Err(SendError::Closed)), "send in on_close: {r:?}");
        self.closed_flag.store(true, Ordering::SeqCst);
        self.emit(Ev::Close(close));
    }
}

struct Server {
    addr: SocketAddr,
    events: Events,
    closed_flag: Arc<AtomicBool>,
    shutdown: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Server {
    async fn start(config: Config) -> Server {
        Self::start_with(config, None, |r| r).await
    }

    async fn start_with(
        config: Config,
        close_delay: Option<Duration>,
        routes: impl FnOnce(axum::Router) -> axum::Router,
    ) -> Server {
        let (tx, events) = unbounded_channel();
        let closed_flag = Arc::new(AtomicBool::new(false));
        let flag = closed_flag.clone();
        let endpoint = ws::endpoint(
            move |hs| Rec {
                path: hs.path().to_owned(),
                tx: tx.clone(),
                close_delay,
                closed_flag: flag.clone(),
            },
            config,
        );
        let app = routes(
            axum::Router::new()
                .route("/ws", endpoint.clone())
                .route("/ws/{*rest}", endpoint),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(switchboard::http::serve(listener, app, shutdown.clone()));
        Server {
            addr,
            events,
            closed_flag,
            shutdown,
        }
    }

    async fn next(&mut self) -> (String, Ev) {
        timeout(WAIT, self.events.recv())
            .await
            .expect("timed out waiting for a server event")
            .expect("event channel closed")
    }

    /// The next event of `path`, skipping other paths' events and pings/pongs.
    async fn next_on(&mut self, path: &str) -> Ev {
        loop {
            let (p, ev) = self.next().await;
            if p == path && !matches!(ev, Ev::Ping(_) | Ev::Pong(_)) {
                return ev;
            }
        }
    }

    async fn open(&mut self, path: &str) -> WebSocket {
        match self.next_on(path).await {
            Ev::Open(ws) => ws,
            other => panic!("expected open, got {other:?}"),
        }
    }

    async fn close_event(&mut self, path: &str) -> CloseFrame {
        loop {
            if let Ev::Close(c) = self.next_on(path).await {
                return c;
            }
        }
    }
}

fn quick_config() -> Config {
    Config {
        max_message_size: 1024,
        ping_interval: None,
        close_timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TCP: HTTP requests and hand-written frames.

struct HttpResponse {
    status: u16,
    head: String,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

async fn read_head(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..pos].to_vec()).unwrap();
            buf.drain(..pos + 4);
            return head;
        }
        let mut chunk = [0u8; 4096];
        let n = timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("head timeout")
            .unwrap();
        assert!(
            n > 0,
            "EOF before the response head: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `request` as is and reads one response (body by Content-Length).
async fn http(addr: SocketAddr, request: &str) -> HttpResponse {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head = read_head(&mut tcp, &mut buf).await;
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut resp = HttpResponse {
        status,
        head,
        body: String::new(),
    };
    let len: usize = resp.header("content-length").map_or(0, |v| v.parse().unwrap());
    while buf.len() < len {
        let mut chunk = [0u8; 4096];
        let n = timeout(WAIT, tcp.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    resp.body = String::from_utf8(buf[..len].to_vec()).unwrap();
    resp
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects and completes the opening handshake on `path` with extra header lines.
    async fn connect(addr: SocketAddr, path: &str, extra: &str) -> (Raw, HttpResponse) {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(upgrade_request(path, extra).as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head = read_head(&mut tcp, &mut buf).await;
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let resp = HttpResponse {
            status,
            head,
            body: String::new(),
        };
        assert_eq!(resp.status, 101, "{}", resp.head);
        (Raw { tcp, buf }, resp)
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Sends one masked frame; `b0` is FIN/RSV/opcode.
    async fn send(&mut self, b0: u8, payload: &[u8]) {
        self.send_raw(&encode(b0, payload, Some([0x37, 0xfa, 0x21, 0x3d])))
            .await;
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = match timeout(WAIT, self.tcp.read(&mut chunk)).await.expect("read timed out") {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read: {e}"),
        };
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next frame, or None at EOF.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = parse(&mut self.buf) {
                return Some(frame);
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "EOF inside a frame: {} bytes left", self.buf.len());
                return None;
            }
        }
    }

    async fn expect_frame(&mut self) -> Frame {
        let f = self.frame().await.expect("EOF, expected a frame");
        assert!(!f.masked, "server frames must not be masked: {f:?}");
        assert_eq!(f.rsv, 0);
        f
    }

    async fn expect_close(&mut self) -> (u16, String) {
        self.expect_frame().await.close()
    }

    async fn expect_eof(&mut self) {
        match self.frame().await {
            None => {}
            Some(f) => panic!("expected EOF, got {f:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The opening handshake.

#[tokio::test]
async fn non_upgrade_get_gets_400_with_the_reason() {
    let server = Server::start(quick_config()).await;
    let resp = http(
        server.addr,
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.body,
        "400 Bad Request: not a valid WebSocket handshake: missing 'Upgrade: websocket' header\n"
    );
    assert_eq!(resp.header("sec-websocket-version").as_deref(), Some("13"));

    // Upgrade without Connection: Upgrade.
    let resp = http(
        server.addr,
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 400);
    assert!(
        resp.body.ends_with("missing 'Connection: Upgrade' header\n"),
        "{}",
        resp.body
    );
}

#[tokio::test]
async fn post_gets_405_with_allow_get() {
    let server = Server::start(quick_config()).await;
    let resp = http(
        server.addr,
        "POST /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow").as_deref(), Some("GET"));
    assert!(resp.body.starts_with("405 Method Not Allowed"), "{}", resp.body);
}

#[tokio::test]
async fn bad_version_or_key_gets_400() {
    let server = Server::start(quick_config()).await;
    let base = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let cases = [
        (
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
            "unsupported or missing Sec-WebSocket-Version (only 13 is supported)",
        ),
        (
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "unsupported or missing Sec-WebSocket-Version (only 13 is supported)",
        ),
        ("Sec-WebSocket-Version: 13\r\n", "missing Sec-WebSocket-Key header"),
        (
            "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ),
        (
            "Sec-WebSocket-Key: not base64 at all!!!!\r\nSec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ),
    ];
    for (headers, reason) in cases {
        let resp = http(server.addr, &format!("{base}{headers}\r\n")).await;
        assert_eq!(resp.status, 400, "{headers:?}");
        assert_eq!(
            resp.body,
            format!("400 Bad Request: not a valid WebSocket handshake: {reason}\n"),
            "{headers:?}"
        );
        assert_eq!(resp.header("sec-websocket-version").as_deref(), Some("13"));
    }
}

#[tokio::test]
async fn valid_handshake_gets_101_with_the_rfc_accept_key() {
    let server = Server::start(quick_config()).await;
    let (_raw, resp) = Raw::connect(server.addr, "/ws", "").await;
    assert_eq!(
        resp.header("sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(resp.header("upgrade").unwrap().eq_ignore_ascii_case("websocket"));
    assert!(resp.header("connection").unwrap().eq_ignore_ascii_case("upgrade"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_beside_an_ordinary_route() {
    let mut server = Server::start_with(quick_config(), None, |r| {
        r.route("/health", axum::routing::get(|| async { "ok" }))
    })
    .await;
    let resp = http(
        server.addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((resp.status, resp.body.as_str()), (200, "ok"));

    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    server.open("/ws").await;
    raw.send(0x81, b"beside").await;
    assert_eq!(raw.expect_frame().await.payload, b"beside");

    // The ordinary route still answers while the WebSocket is open.
    let resp = http(
        server.addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((resp.status, resp.body.as_str()), (200, "ok"));
    let resp = http(
        server.addr,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 404);
}

#[tokio::test]
async fn handshake_exposes_path_query_headers_and_peer() {
    let mut server = Server::start(quick_config()).await;
    let (raw, _) = Raw::connect(server.addr, "/ws/room/7?user=ann&x=1", "X-Test: hello\r\n").await;
    let ws = server.open("/ws/room/7").await;
    let hs = ws.handshake();
    assert_eq!(hs.path(), "/ws/room/7");
    assert_eq!(hs.query(), Some("user=ann&x=1"));
    assert_eq!(hs.headers.get("x-test").unwrap(), "hello");
    assert!(hs.headers.contains_key("host"));
    // Headers that only served the handshake are not kept for the connection's lifetime.
    for name in ["upgrade", "connection", "sec-websocket-key", "sec-websocket-version"] {
        assert!(!hs.headers.contains_key(name), "{name}");
    }
    assert_eq!(hs.peer, Some(raw.tcp.local_addr().unwrap()));
}

/// Frames sent in the same packet as the handshake (before the 101 arrives) are not lost.
#[tokio::test]
async fn frames_pipelined_with_the_handshake_are_read() {
    let mut server = Server::start(quick_config()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut bytes = upgrade_request("/ws", "").into_bytes();
    bytes.extend(encode(0x81, b"early", Some([9, 8, 7, 6])));
    bytes.extend(encode(0x82, &[1, 2, 3], Some([5, 4, 3, 2])));
    tcp.write_all(&bytes).await.unwrap();
    let mut buf = Vec::new();
    let head = read_head(&mut tcp, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut raw = Raw { tcp, buf };
    assert_eq!(raw.expect_frame().await.payload, b"early");
    assert_eq!(raw.expect_frame().await.payload, [1, 2, 3]);
    server.open("/ws").await;
}

// ---------------------------------------------------------------------------------------------
// Messages.

#[tokio::test]
async fn text_and_binary_echo_exact_bytes() {
    let mut server = Server::start(Config {
        max_message_size: 1 << 20,
        ..quick_config()
    })
    .await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    server.open("/ws").await;

    raw.send(0x81, "héllo ✓".as_bytes()).await;
    let f = raw.expect_frame().await;
    assert_eq!((f.fin, f.opcode, f.payload.as_slice()), (true, 1, "héllo ✓".as_bytes()));
    assert!(matches!(server.next_on("/ws").await, Ev::Text(t) if t == "héllo ✓"));

    raw.send(0x82, &[0, 1, 2, 255]).await;
    let f = raw.expect_frame().await;
    assert_eq!(
        (f.fin, f.opcode, f.payload.as_slice()),
        (true, 2, &[0u8, 1, 2, 255][..])
    );

    // Empty, 16-bit and 64-bit lengths.
    for len in [0usize, 200, 70_000] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        raw.send(0x82, &data).await;
        let f = raw.expect_frame().await;
        assert_eq!((f.opcode, f.payload.len()), (2, len));
        assert_eq!(f.payload, data);
    }
}

#[tokio::test]
async fn message_over_max_message_size_closes_with_1009() {
    let mut server = Server::start(quick_config()).await;
    // Exactly at the limit is fine.
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    raw.send(0x82, &[1u8; 1024]).await;
    assert_eq!(raw.expect_frame().await.payload.len(), 1024);
    // One byte over in a single frame.
    raw.send(0x82, &[1u8; 1025]).await;
    assert_eq!(raw.expect_close().await, (1009, "max length: 1024".to_owned()));
    raw.expect_eof().await;
    server.open("/ws").await;
    let close = server.close_event("/ws").await;
    assert_eq!((close.code, close.by_peer), (1009, false));

    // Over the limit summed over fragments (each fragment is under it).
    let (mut raw, _) = Raw::connect(server.addr, "/ws/frag", "").await;
    raw.send(0x01, &[b'a'; 600]).await;
    raw.send(0x80, &[b'b'; 600]).await;
    assert_eq!(raw.expect_close().await, (1009, "max length: 1024".to_owned()));
    raw.send(0x88, &1009u16.to_be_bytes()).await;
    raw.expect_eof().await;
    server.open("/ws/frag").await;
    assert_eq!(server.close_event("/ws/frag").await.code, 1009);
}

#[tokio::test]
async fn reserved_bits_or_opcodes_close_with_1002() {
    let mut server = Server::start(quick_config()).await;
    let cases: [(&str, u8, &str); 4] = [
        ("/ws/rsv1", 0xC1, "invalid extension"), // FIN + RSV1 + text
        ("/ws/rsv3", 0x92, "invalid extension"), // FIN + RSV3 + binary
        ("/ws/op3", 0x83, "invalid opcode"),     // reserved data opcode
        ("/ws/opb", 0x8B, "invalid opcode"),     // reserved control opcode
    ];
    for (path, b0, reason) in cases {
        let (mut raw, _) = Raw::connect(server.addr, path, "").await;
        raw.send(b0, b"x").await;
        assert_eq!(raw.expect_close().await, (1002, reason.to_owned()), "{path}");
        raw.expect_eof().await;
        server.open(path).await;
        let close = server.close_event(path).await;
        assert_eq!(
            (close.code, close.reason.as_str(), close.by_peer),
            (1002, reason, false)
        );
    }

    // A continuation with no message started, an unmasked client frame, a fragmented ping.
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("/ws/cont", encode(0x80, b"x", Some([1, 2, 3, 4])), "invalid opcode"),
        ("/ws/unmasked", encode(0x81, b"x", None), "unexpected unmasked frame"),
        (
            "/ws/fragping",
            encode(0x09, b"x", Some([1, 2, 3, 4])),
            "fragmented control frame",
        ),
    ];
    for (path, bytes, reason) in cases {
        let (mut raw, _) = Raw::connect(server.addr, path, "").await;
        raw.send_raw(&bytes).await;
        assert_eq!(raw.expect_close().await, (1002, reason.to_owned()), "{path}");
        raw.expect_eof().await;
    }
}

/// Regression (Autobahn 3.2): a valid message and a violation in the same read. The reply to
/// the valid message goes out before the close frame; before the fix it was staged and dropped.
#[tokio::test]
async fn reply_to_a_valid_message_precedes_the_close_for_a_violation_behind_it() {
    let mut server = Server::start(quick_config()).await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    server.open("/ws").await;
    let bytes = [
        encode(0x81, b"hello", Some([1, 2, 3, 4])),
        encode(0xA1, b"bad", Some([1, 2, 3, 4])),
    ]
    .concat();
    raw.send_raw(&bytes).await;
    assert_eq!(raw.expect_frame().await.payload, b"hello");
    assert_eq!(raw.expect_close().await, (1002, "invalid extension".to_owned()));
    raw.expect_eof().await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let mut server = Server::start(quick_config()).await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    raw.send(0x81, &[b'o', b'k', 0xff, 0xfe]).await;
    assert_eq!(raw.expect_close().await, (1007, "invalid utf8".to_owned()));
    raw.expect_eof().await;
    server.open("/ws").await;
    let close = server.close_event("/ws").await;
    assert_eq!((close.code, close.by_peer), (1007, false));

    // Invalid across fragments: a valid first fragment, then a continuation that breaks it.
    let (mut raw, _) = Raw::connect(server.addr, "/ws/frag", "").await;
    raw.send(0x01, &[0xce]).await; // first byte of 'κ'
    raw.send(0x80, &[0x41]).await; // not a continuation byte
    assert_eq!(raw.expect_close().await, (1007, "invalid utf8".to_owned()));
    raw.expect_eof().await;
}

/// Outgoing messages larger than `max_frame_size` go out as fragments, in order, whatever their
/// number (here 16 fragments of 4 KiB: more chunks than one vectored write takes).
#[tokio::test]
async fn large_outgoing_messages_are_fragmented_in_order() {
    let mut server = Server::start(Config {
        max_frame_size: 4096,
        max_message_size: 1 << 20,
        ..quick_config()
    })
    .await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    server.open("/ws").await;
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 253) as u8).collect();
    raw.send(0x82, &data).await;
    let mut got = Vec::new();
    for i in 0..16 {
        let f = raw.expect_frame().await;
        let opcode = if i == 0 { 2 } else { 0 };
        assert_eq!(
            (f.fin, f.opcode, f.payload.len()),
            (i == 15, opcode, 4096),
            "fragment {i}"
        );
        got.extend_from_slice(&f.payload);
    }
    assert!(got == data, "reassembled payload differs");
    // And the connection goes on.
    raw.send(0x81, b"after").await;
    assert_eq!(raw.expect_frame().await.payload, b"after");
}

#[tokio::test]
async fn fragmented_messages_with_interleaved_pings_are_reassembled() {
    let mut server = Server::start(quick_config()).await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    server.open("/ws").await;
    raw.send(0x01, b"Hel").await;
    raw.send(0x89, b"p1").await;
    raw.send(0x00, b"lo ").await;
    raw.send(0x89, b"p2").await;
    raw.send(0x80, "wörld".as_bytes()).await;
    // A binary message split in three, a ping between.
    raw.send(0x02, &[1, 2]).await;
    raw.send(0x00, &[3]).await;
    raw.send(0x89, b"").await;
    raw.send(0x80, &[4, 5]).await;

    let got: Vec<(u8, Vec<u8>)> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            let f = raw.expect_frame().await;
            assert!(f.fin);
            v.push((f.opcode, f.payload));
        }
        v
    };
    assert_eq!(
        got,
        vec![
            (0xA, b"p1".to_vec()),
            (0xA, b"p2".to_vec()),
            (0x1, "Hello wörld".as_bytes().to_vec()),
            (0xA, vec![]),
            (0x2, vec![1, 2, 3, 4, 5]),
        ]
    );
    // The handler saw the pings and each message once, in order.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (_, ev) = server.next().await;
        seen.push(format!("{ev:?}"));
    }
    assert_eq!(
        seen,
        [
            "Ping([112, 49])",
            "Ping([112, 50])",
            "Text(\"Hello wörld\")",
            "Ping([])",
            "Binary([1, 2, 3, 4, 5])"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Closing.

#[tokio::test]
async fn server_close_completes_the_handshake_then_closes_tcp() {
    let mut server = Server::start(quick_config()).await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    server.open("/ws").await;
    raw.send(0x81, b"close:4000:see you").await;
    let f = raw.expect_frame().await;
    assert_eq!((f.fin, f.opcode), (true, 8));
    assert_eq!(f.close(), (4000, "see you".to_owned()));
    assert!(matches!(server.next_on("/ws").await, Ev::Text(_)));
    assert!(matches!(server.next_on("/ws").await, Ev::SendResult(r) if r == "Ok(())"));
    assert!(matches!(server.next_on("/ws").await, Ev::SendResult(r) if r == "Err(Closed)"));

    // Data sent after the server's close is discarded, not echoed; then our close answer.
    raw.send(0x81, b"late").await;
    raw.send(0x88, &[0x0f, 0xa0]).await;
    raw.expect_eof().await;
    let close = server.close_event("/ws").await;
    assert_eq!((close.code, close.by_peer), (4000, false));
}

/// Regression: a close requested while a large batch is still being written (the peer reads
/// slowly) and the peer sending something meanwhile. The queued messages and then the close
/// frame must all arrive; before the fix the unwritten rest of the batch, close frame
/// included, was dropped on the next turn of the connection loop.
#[tokio::test]
async fn close_after_a_large_batch_to_a_slow_reader_loses_nothing() {
    // 16 MiB queued: more than loopback's socket buffers take at once.
    let mut server = Server::start(Config {
        max_backpressure: 64 << 20,
        ..quick_config()
    })
    .await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    server.open("/ws").await;
    raw.send(0x81, b"burst-close:1024").await;
    // Let the server fill the socket buffers, then make it take another turn.
    tokio::time::sleep(Duration::from_millis(300)).await;
    raw.send(0x89, b"are you there").await;
    for i in 0..1024 {
        let f = raw.expect_frame().await;
        assert_eq!((f.opcode, f.payload.len()), (2, 16 * 1024), "message {i}");
    }
    // A pong may come before the close (the ping arrived before the close was staged).
    let mut f = raw.expect_frame().await;
    if f.opcode == 0xA {
        f = raw.expect_frame().await;
    }
    assert_eq!(f.close(), (4000, "done".to_owned()));
    raw.send(0x88, &4000u16.to_be_bytes()).await;
    raw.expect_eof().await;
    let close = server.close_event("/ws").await;
    assert_eq!(
        (close.code, close.reason.as_str(), close.by_peer),
        (4000, "done", false)
    );
}

#[tokio::test]
async fn server_close_without_answer_ends_after_close_timeout() {
    let mut server = Server::start(Config {
        close_timeout: Duration::from_millis(300),
        ..quick_config()
    })
    .await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    server.open("/ws").await;
    let start = Instant::now();
    raw.send(0x81, b"close:1001:going away").await;
    assert_eq!(raw.expect_close().await, (1001, "going away".to_owned()));
    raw.expect_eof().await;
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    let close = server.close_event("/ws").await;
    assert_eq!(
        (close.code, close.reason.as_str(), close.by_peer),
        (1001, "going away", false)
    );
}

#[tokio::test]
async fn client_close_is_echoed_and_reaches_on_close() {
    let mut server = Server::start(quick_config()).await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    server.open("/ws").await;
    let mut payload = 4321u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"client leaving");
    raw.send(0x88, &payload).await;
    // The server echoes the code and the reason, and closes TCP.
    assert_eq!(raw.expect_close().await, (4321, "client leaving".to_owned()));
    raw.expect_eof().await;
    let close = server.close_event("/ws").await;
    assert_eq!(
        close,
        CloseFrame {
            code: 4321,
            reason: "client leaving".into(),
            by_peer: true
        }
    );

    // A close without a code is reported as 1005.
    let (mut raw, _) = Raw::connect(server.addr, "/ws/nocode", "").await;
    raw.send(0x88, b"").await;
    assert_eq!(raw.expect_frame().await.opcode, 8);
    raw.expect_eof().await;
    server.open("/ws/nocode").await;
    let close = server.close_event("/ws/nocode").await;
    assert_eq!((close.code, close.reason.as_str(), close.by_peer), (1005, "", true));
}

#[tokio::test]
async fn tcp_drop_without_close_frame_is_1006() {
    let mut server = Server::start(quick_config()).await;
    let (raw, _) = Raw::connect(server.addr, "/ws", "").await;
    server.open("/ws").await;
    drop(raw);
    let close = server.close_event("/ws").await;
    assert_eq!((close.code, close.by_peer), (1006, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_resolves_after_on_close_and_sends_fail() {
    let mut server = Server::start_with(quick_config(), Some(Duration::from_millis(1500)), |r| r).await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    let ws = server.open("/ws").await;
    assert!(!ws.is_closed());
    assert_eq!(ws.send_text("hi"), Ok(()));
    assert_eq!(raw.expect_frame().await.payload, b"hi");

    // Invalid close requests are refused and leave the connection open.
    assert_eq!(ws.close(1005, ""), Err(SendError::InvalidClose(1005)));
    assert_eq!(ws.close(999, ""), Err(SendError::InvalidClose(999)));
    assert_eq!(ws.close(1000, &"x".repeat(124)), Err(SendError::InvalidClose(1000)));
    assert!(!ws.is_closed());

    let start = Instant::now();
    raw.send(0x88, &1000u16.to_be_bytes()).await;
    // TCP is closed at once, not after the handler's (slow) on_close.
    assert_eq!(raw.expect_close().await.0, 1000);
    raw.expect_eof().await;
    assert!(start.elapsed() < Duration::from_millis(1000), "{:?}", start.elapsed());
    timeout(WAIT, ws.closed()).await.expect("closed() did not resolve");
    assert!(
        server.closed_flag.load(Ordering::SeqCst),
        "closed() resolved before the handler's on_close finished"
    );
    assert!(ws.is_closed());
    // Resolves again at once once ended.
    timeout(Duration::from_millis(100), ws.closed()).await.unwrap();
    assert_eq!(ws.send_text("x"), Err(SendError::Closed));
    assert_eq!(ws.send_binary(vec![1u8]), Err(SendError::Closed));
    assert_eq!(ws.ping(vec![1u8]), Err(SendError::Closed));
    assert_eq!(ws.close(1000, ""), Err(SendError::Closed));
    assert_eq!(server.close_event("/ws").await.code, 1000);
}

// ---------------------------------------------------------------------------------------------
// Liveness and flow control.

#[tokio::test]
async fn dead_peer_is_dropped_after_idle_timeout() {
    let mut server = Server::start(Config {
        ping_interval: Some(Duration::from_millis(100)),
        idle_timeout: Duration::from_millis(400),
        ..quick_config()
    })
    .await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    let start = Instant::now();
    server.open("/ws").await;
    // The server pings once, hears nothing, and drops the connection.
    let f = raw.expect_frame().await;
    assert_eq!((f.opcode, f.payload.len()), (9, 0));
    let pinged = start.elapsed();
    raw.expect_eof().await;
    let dropped = start.elapsed();
    assert!(pinged >= Duration::from_millis(80) && pinged < dropped, "{pinged:?}");
    assert!(
        dropped >= Duration::from_millis(380) && dropped < Duration::from_secs(3),
        "{dropped:?}"
    );
    let close = server.close_event("/ws").await;
    assert_eq!(
        close,
        CloseFrame {
            code: 1006,
            reason: "idle timeout".into(),
            by_peer: false
        }
    );
}

#[tokio::test]
async fn live_peer_answering_pings_is_kept() {
    let mut server = Server::start(Config {
        ping_interval: Some(Duration::from_millis(100)),
        // Generous against scheduling stalls on a loaded CI machine; the pings come every 100 ms.
        idle_timeout: Duration::from_millis(1500),
        ..quick_config()
    })
    .await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    server.open("/ws").await;
    let end = Instant::now() + Duration::from_millis(1000);
    let mut pings = 0;
    while Instant::now() < end {
        let f = raw.expect_frame().await;
        assert_eq!(f.opcode, 9);
        pings += 1;
        raw.send(0x8A, &f.payload).await;
    }
    assert!(pings >= 3, "only {pings} pings in 1 s");
    raw.send(0x81, b"still here").await;
    assert_eq!(raw.expect_frame().await.payload, b"still here");
    // The server's handler saw the pongs.
    let mut pongs = 0;
    while let Ok((_, ev)) = server.events.try_recv() {
        if matches!(ev, Ev::Pong(_)) {
            pongs += 1;
        }
    }
    assert_eq!(pongs, pings);
}

async fn slow_consumer(flood: &str) {
    let mut server = Server::start(Config {
        max_backpressure: 256 * 1024,
        max_message_size: 1 << 20,
        ..quick_config()
    })
    .await;
    // A: asks for a flood and never reads.
    let (mut slow, _) = Raw::connect(server.addr, "/ws/slow", "").await;
    server.open("/ws/slow").await;
    // B: an ordinary peer on the same server.
    let (mut fast, _) = Raw::connect(server.addr, "/ws/fast", "").await;
    server.open("/ws/fast").await;
    slow.send(0x81, flood.as_bytes()).await;

    // B gets every echo, in order, while A is being flooded.
    for i in 0..200 {
        let msg = format!("message {i}");
        fast.send(0x81, msg.as_bytes()).await;
        let f = fast.expect_frame().await;
        assert_eq!((f.opcode, f.payload), (1, msg.into_bytes()));
    }

    let (ended, sent) = loop {
        if let Ev::FloodEnded(e, n) = server.next_on("/ws/slow").await {
            break (e, n);
        }
    };
    assert_eq!(ended, "SlowConsumer", "after {sent} messages");
    let close = server.close_event("/ws/slow").await;
    assert_eq!(
        close,
        CloseFrame {
            code: 1008,
            reason: "slow consumer: outbound queue over its limit".into(),
            by_peer: false
        }
    );
    assert!(close.is_slow_consumer());

    // A's connection is dropped: what was in flight, then EOF.
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match timeout(WAIT, slow.tcp.read(&mut chunk))
            .await
            .expect("slow consumer not disconnected")
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // B is unaffected.
    fast.send(0x81, b"after").await;
    assert_eq!(fast.expect_frame().await.payload, b"after");
}

/// The producer outruns the connection task: the budget is exceeded between two writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_while_others_keep_receiving() {
    slow_consumer("flood:64").await;
}

/// The connection task keeps up until the socket buffers are full: the budget is exceeded while a
/// write is stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_stuck_in_a_write_is_disconnected_with_1008() {
    slow_consumer("flood:1").await;
}

/// The handler itself floods and is still running when the budget is exceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_flooded_by_its_own_handler_is_disconnected_with_1008() {
    slow_consumer("flood-inline").await;
}

#[tokio::test]
async fn server_ping_gets_the_clients_pong() {
    let mut server = Server::start(quick_config()).await;
    let (mut raw, _) = Raw::connect(server.addr, "/ws", "").await;
    server.open("/ws").await;
    raw.send(0x81, b"ping-me").await;
    let f = raw.expect_frame().await;
    assert_eq!((f.opcode, f.payload.as_slice()), (9, &b"server ping"[..]));
    raw.send(0x8A, b"server ping").await;
    loop {
        let (_, ev) = server.next().await;
        if let Ev::Pong(p) = ev {
            assert_eq!(p, b"server ping");
            break;
        }
    }
}
