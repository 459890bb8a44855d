//! permessage-deflate (RFC 7692) over real sockets: the negotiation, compressed messages both
//! ways, a publication compressed once for many sockets, and a compressed frame that would
//! inflate past the message size limit (a "zip bomb").

mod raw_frames;

use flate2::{Compress, Compression as Level, Decompress, FlushCompress, FlushDecompress};
use raw_frames::{encode, parse, Frame};
use std::net::SocketAddr;
use std::time::Duration;
use switchboard::ws::{self, Compression, Config, Handler, PreparedMessage, Text, WebSocket};
use switchboard::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Echoes text and binary messages; hands each socket to the test when it opens.
struct Echo(UnboundedSender<WebSocket>);

impl Handler for Echo {
    async fn on_open(&mut self, ws: &WebSocket) {
        let _ = self.0.send(ws.clone());
    }
    async fn on_message(&mut self, ws: &WebSocket, text: Text) {
        let _ = ws.send_text(text);
    }
    async fn on_bytes(&mut self, ws: &WebSocket, data: bytes::Bytes) {
        let _ = ws.send_binary(data);
    }
}

struct Server {
    addr: SocketAddr,
    opened: tokio::sync::mpsc::UnboundedReceiver<WebSocket>,
    shutdown: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn server(config: Config) -> Server {
    let (tx, opened) = unbounded_channel();
    let app = axum::Router::new().route("/ws", ws::endpoint(move |_| Echo(tx.clone()), config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, app, shutdown.clone()));
    Server { addr, opened, shutdown }
}

fn config(compression: Compression) -> Config {
    Config {
        compression,
        ping_interval: None,
        close_timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

/// A raw client: the handshake with an optional extension offer, then hand-made frames.
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
    /// The response's Sec-WebSocket-Extensions, if any.
    extensions: Option<String>,
}

impl Raw {
    async fn connect(addr: SocketAddr, offer: Option<&str>) -> Raw {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let offer = offer
            .map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(buf[..pos].to_vec()).unwrap();
                buf.drain(..pos + 4);
                break head;
            }
            let mut chunk = [0u8; 4096];
            let n = timeout(WAIT, tcp.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "EOF before the response head");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| v.trim().to_owned())
        });
        Raw { tcp, buf, extensions }
    }

    async fn send(&mut self, b0: u8, payload: &[u8]) {
        self.tcp.write_all(&encode(b0, payload, Some(MASK))).await.unwrap();
    }

    /// The next frame, or None at EOF.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = parse(&mut self.buf) {
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = match timeout(WAIT, self.tcp.read(&mut chunk)).await.expect("read timed out") {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("read: {e}"),
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn expect_frame(&mut self) -> Frame {
        self.frame().await.expect("EOF, expected a frame")
    }
}

/// Raw deflate with a sync flush, the flush's 00 00 ff ff stripped (RFC 7692 §7.2.1).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Level::default(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(data.len() * 4 + 1024);
    loop {
        let consumed = d.total_in() as usize;
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        d.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .unwrap();
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
    }
}

/// A JSON text of about 1 KiB.
fn json() -> String {
    let rows: Vec<String> = (0..12)
        .map(|i| format!(r#"{{"id":{i},"symbol":"BTC-USD","price":"6400{i}.50","size":"0.0{i}1","side":"buy"}}"#))
        .collect();
    format!(r#"{{"channel":"trades","data":[{}]}}"#, rows.join(","))
}

#[tokio::test]
async fn the_server_answers_offers_as_configured() {
    let on = server(config(Compression::NoContextTakeover)).await;
    let raw = Raw::connect(on.addr, Some("permessage-deflate; client_max_window_bits")).await;
    assert_eq!(
        raw.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    // An offer it cannot honour (unknown parameter) is declined; the next one is taken.
    let raw = Raw::connect(
        on.addr,
        Some("permessage-deflate; foo=1, permessage-deflate; server_max_window_bits=10"),
    )
    .await;
    assert_eq!(
        raw.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
    );
    let raw = Raw::connect(on.addr, Some("permessage-deflate; server_max_window_bits=16")).await;
    assert_eq!(raw.extensions, None);
    let raw = Raw::connect(on.addr, None).await;
    assert_eq!(raw.extensions, None);

    let takeover = server(config(Compression::ContextTakeover)).await;
    let raw = Raw::connect(takeover.addr, Some("permessage-deflate; client_max_window_bits")).await;
    assert_eq!(raw.extensions.as_deref(), Some("permessage-deflate"));

    let off = server(config(Compression::Off)).await;
    let raw = Raw::connect(off.addr, Some("permessage-deflate")).await;
    assert_eq!(raw.extensions, None);
}

#[tokio::test]
async fn compressed_messages_both_ways_small_ones_uncompressed() {
    let srv = server(config(Compression::NoContextTakeover)).await;
    let mut raw = Raw::connect(srv.addr, Some("permessage-deflate")).await;
    let text = json();
    assert!(text.len() > 900, "{}", text.len());
    // Compressed text in one frame, then in two fragments (RSV1 on the first only).
    raw.send(0xC1, &deflate(text.as_bytes())).await;
    let compressed = deflate(text.as_bytes());
    let (a, b) = compressed.split_at(compressed.len() / 2);
    raw.send(0x41, a).await;
    raw.send(0x80, b).await;
    for _ in 0..2 {
        let f = raw.expect_frame().await;
        assert_eq!((f.fin, f.rsv, f.opcode, f.masked), (true, 0x40, 1, false));
        assert!(f.payload.len() < text.len() / 2, "{} bytes", f.payload.len());
        assert_eq!(inflate(&f.payload), text.as_bytes());
    }
    // Under the threshold (256 bytes): sent as it is, either way.
    raw.send(0xC1, &deflate(b"short")).await;
    raw.send(0x82, b"raw").await;
    let f = raw.expect_frame().await;
    assert_eq!((f.rsv, f.opcode, f.payload.as_slice()), (0, 1, &b"short"[..]));
    let f = raw.expect_frame().await;
    assert_eq!((f.rsv, f.opcode, f.payload.as_slice()), (0, 2, &b"raw"[..]));
}

#[tokio::test]
async fn rsv1_where_it_may_not_be_and_corrupt_data_fail_the_connection() {
    let srv = server(config(Compression::NoContextTakeover)).await;
    /// The offer, the frames sent, the close code and reason expected.
    type Case<'a> = (Option<&'a str>, Vec<Vec<u8>>, u16, &'a str);
    let cases: [Case; 4] = [
        // Not negotiated.
        (None, vec![encode(0xC1, b"x", Some(MASK))], 1002, "invalid extension"),
        // On a continuation frame.
        (
            Some("permessage-deflate"),
            vec![
                encode(0x41, &deflate(b"ab"), Some(MASK)),
                encode(0xC0, b"c", Some(MASK)),
            ],
            1002,
            "invalid extension",
        ),
        // On a control frame.
        (
            Some("permessage-deflate"),
            vec![encode(0xC9, b"", Some(MASK))],
            1002,
            "invalid extension",
        ),
        // Not deflate data.
        (
            Some("permessage-deflate"),
            vec![encode(0xC2, &[0xff, 0xff, 0xff, 0xff], Some(MASK))],
            1007,
            "invalid compressed data",
        ),
    ];
    for (offer, frames, code, reason) in cases {
        let mut raw = Raw::connect(srv.addr, offer).await;
        for frame in frames {
            raw.tcp.write_all(&frame).await.unwrap();
        }
        assert_eq!(raw.expect_frame().await.close(), (code, reason.to_owned()), "{offer:?}");
    }
    // Compressed text that is not UTF-8 once inflated.
    let mut raw = Raw::connect(srv.addr, Some("permessage-deflate")).await;
    raw.send(0xC1, &deflate(&[b'a', 0xff, b'b'])).await;
    assert_eq!(raw.expect_frame().await.close(), (1007, "invalid utf8".to_owned()));
}

/// A deflate stream that inflates to `258 * repeats + 1` zero bytes in about 1.6 bytes per
/// kilobyte: one literal, then back-references of the longest length (fixed Huffman codes),
/// ending where a sync flush would (the receiver appends the flush's 00 00 ff ff).
fn bomb(repeats: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        bit: u32,
    }
    impl Bits {
        /// `n` bits of `value`, least significant first (header fields).
        fn put(&mut self, value: u32, n: u32) {
            for i in 0..n {
                if self.bit == 0 {
                    self.out.push(0);
                }
                if value >> i & 1 == 1 {
                    *self.out.last_mut().unwrap() |= 1 << self.bit;
                }
                self.bit = (self.bit + 1) % 8;
            }
        }
        /// A Huffman code, most significant bit first.
        fn code(&mut self, code: u32, n: u32) {
            for i in (0..n).rev() {
                self.put(code >> i & 1, 1);
            }
        }
    }
    let mut bits = Bits {
        out: Vec::new(),
        bit: 0,
    };
    bits.put(0, 1); // BFINAL 0
    bits.put(1, 2); // fixed Huffman codes
    bits.code(0x30, 8); // literal 0
    for _ in 0..repeats {
        bits.code(0xC5, 8); // length 258 (symbol 285)
        bits.code(0, 5); // distance 1
    }
    bits.code(0, 7); // end of block
    bits.put(0, 3); // the sync flush's empty stored block begins: BFINAL 0, stored
    bits.out
}

#[tokio::test]
async fn a_frame_that_inflates_past_the_limit_closes_with_1009() {
    assert_eq!(inflate(&bomb(100)), vec![0; 25_801]);
    // A 1 KiB frame that inflates to a megabyte, against a 64 KiB limit.
    let srv = server(Config {
        max_message_size: 64 << 10,
        ..config(Compression::NoContextTakeover)
    })
    .await;
    let small = bomb(4000);
    assert!(small.len() < 7 * 1024, "{}", small.len());
    let mut raw = Raw::connect(srv.addr, Some("permessage-deflate")).await;
    raw.send(0xC2, &small).await;
    assert_eq!(raw.expect_frame().await.close(), (1009, "max length: 65536".to_owned()));

    // 6.5 MB that would inflate to a gibibyte, against the default 16 MiB limit: closed with
    // 1009, and this process (client and server) never holds much more than the limit.
    let srv = server(config(Compression::NoContextTakeover)).await;
    let big = bomb((1 << 30) / 258);
    let before = peak_rss_kib();
    let mut raw = Raw::connect(srv.addr, Some("permessage-deflate")).await;
    raw.send(0xC2, &big).await;
    let close = raw.expect_frame().await.close();
    assert_eq!(close, (1009, "max length: 16777216".to_owned()));
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 160 * 1024, "peak RSS grew by {grown} KiB");
}

/// This process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_publication_is_compressed_once_into_the_same_bytes_for_every_subscriber() {
    let mut srv = server(config(Compression::NoContextTakeover)).await;
    let mut a = Raw::connect(srv.addr, Some("permessage-deflate")).await;
    let mut b = Raw::connect(srv.addr, Some("permessage-deflate; client_max_window_bits")).await;
    let mut plain = Raw::connect(srv.addr, None).await;
    // Asked for a smaller window: it compresses the message itself.
    let mut small = Raw::connect(srv.addr, Some("permessage-deflate; server_max_window_bits=9")).await;
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(timeout(WAIT, srv.opened.recv()).await.unwrap().unwrap());
    }
    let text = json();
    let message = PreparedMessage::text(&Text::from(text.clone()));
    for ws in &sockets {
        ws.send_prepared(&message).unwrap();
    }
    let (fa, fb) = (a.expect_frame().await, b.expect_frame().await);
    assert_eq!(fa, fb, "the same compressed frame");
    assert_eq!((fa.rsv, fa.opcode), (0x40, 1));
    assert_eq!(inflate(&fa.payload), text.as_bytes());
    let f = plain.expect_frame().await;
    assert_eq!((f.rsv, f.payload.as_slice()), (0, text.as_bytes()));
    let f = small.expect_frame().await;
    assert_eq!(f.rsv, 0x40);
    assert_eq!(inflate(&f.payload), text.as_bytes());
    // Under the threshold: the plain frame, compressed for no one.
    let message = PreparedMessage::text(&Text::from("tiny"));
    sockets[0].send_prepared(&message).unwrap();
    let f = a.expect_frame().await;
    assert_eq!((f.rsv, f.payload.as_slice()), (0, &b"tiny"[..]));
}

/// Collects what the server echoes to a Rust client.
struct Collect(UnboundedSender<Vec<u8>>);

impl Handler for Collect {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let _ = self.0.send(text.as_bytes().to_vec());
    }
    async fn on_bytes(&mut self, _ws: &WebSocket, data: bytes::Bytes) {
        let _ = self.0.send(data.to_vec());
    }
}

#[tokio::test]
async fn the_rust_client_negotiates_with_every_server_mode() {
    let large: Vec<u8> = json().repeat(200).into_bytes();
    for server_mode in [
        Compression::Off,
        Compression::NoContextTakeover,
        Compression::ContextTakeover,
    ] {
        let srv = server(config(server_mode)).await;
        for client_mode in [
            Compression::Off,
            Compression::NoContextTakeover,
            Compression::ContextTakeover,
        ] {
            let (tx, mut rx) = unbounded_channel();
            let url = format!("ws://{}/ws", srv.addr);
            let ws = ws::connect(&url, Collect(tx), config(client_mode)).await.unwrap();
            let agreed = ws
                .handshake()
                .headers
                .get("sec-websocket-extensions")
                .map(|v| v.to_str().unwrap().to_owned());
            let expect_agreed = server_mode != Compression::Off && client_mode != Compression::Off;
            assert_eq!(
                agreed.is_some(),
                expect_agreed,
                "{server_mode:?} {client_mode:?}: {agreed:?}"
            );
            // Several messages: with context takeover each depends on the ones before.
            for i in 0..5 {
                let text = format!("{i}{}", json());
                ws.send_text(text.clone()).unwrap();
                assert_eq!(timeout(WAIT, rx.recv()).await.unwrap().unwrap(), text.as_bytes());
            }
            ws.send_binary(large.clone()).unwrap();
            assert_eq!(timeout(WAIT, rx.recv()).await.unwrap().unwrap(), large);
            ws.close(1000, "").unwrap();
            timeout(WAIT, ws.closed()).await.unwrap();
        }
    }
}
