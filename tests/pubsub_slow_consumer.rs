//! A subscriber that stops reading is cut off by its byte budget, without holding up or losing
//! messages for the other subscribers of the channel.

mod common;

use common::{Server, WAIT};
use serde_json::json;
use std::time::{Duration, Instant};
use switchboard::ws::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// A raw TCP client that completes the handshake and sends one masked text frame.
async fn raw_subscriber(server: &Server, message: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    // A small receive window, so the kernel holds less of what the server sends.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read the 101 response byte by byte, so nothing after it is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        timeout(WAIT, stream.read_exact(&mut byte))
            .await
            .expect("handshake timed out")
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");

    let payload = message.as_bytes();
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_and_others_get_everything_in_order() {
    let config = Config {
        max_backpressure: 64 * 1024,
        ..Config::default()
    };
    let server = Server::start_with(|b| b.ws_config(config)).await;
    let chat = server.handles.chat.clone();

    let mut normal = server.client().await;
    normal
        .exchange(
            json!({"type": "subscribe", "channel": "chat"}),
            json!({"type": "subscribed", "channel": "chat"}),
        )
        .await;
    // The slow one subscribes and never reads anything, not even its `subscribed`.
    let mut slow = raw_subscriber(&server, r#"{"type":"subscribe","channel":"chat"}"#).await;
    server.wait_metric("switchboard_subscriptions", 2).await;
    server.wait_metric("switchboard_connections", 2).await;
    assert_eq!(server.metric("switchboard_slow_consumers_total").await, 0);

    // Broadcast 16 KiB messages, at most two ahead of what the normal subscriber has received
    // (so its own queue stays under the 64 KiB budget), until the slow one is cut off, then
    // 100 more.
    const MAX: usize = 4000;
    const WINDOW: usize = 2;
    let filler = "x".repeat(16 * 1024);
    let body = |i: usize| format!("{i:06}:{filler}");
    let mut sent = 0usize;
    let mut received = 0usize;
    let mut cut_at = None;
    let started = Instant::now();
    while cut_at.is_none_or(|cut: usize| sent < cut + 100) {
        assert!(
            sent < MAX,
            "the slow consumer was not cut off after {sent} messages of 16 KiB"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "too slow: {sent} messages sent"
        );
        chat.broadcast(common::Chat { message: body(sent) }).await.unwrap();
        sent += 1;
        while sent - received > WINDOW {
            normal
                .expect(json!({"type": "data", "channel": "chat", "data": {"message": body(received)}}))
                .await;
            received += 1;
        }
        if cut_at.is_none() && server.metric("switchboard_slow_consumers_total").await > 0 {
            cut_at = Some(sent);
        }
    }
    while received < sent {
        normal
            .expect(json!({"type": "data", "channel": "chat", "data": {"message": body(received)}}))
            .await;
        received += 1;
    }
    normal.assert_nothing_pending().await;

    assert!(server.metric("switchboard_slow_consumers_total").await >= 1);
    server.wait_metric("switchboard_connections", 1).await;
    server.wait_metric("switchboard_subscriptions", 1).await;
    eprintln!("slow consumer cut off after {} messages of 16 KiB", cut_at.unwrap());

    // The server dropped the slow client's connection: reading drains what the kernel held, then
    // ends (EOF or reset).
    let drained = timeout(Duration::from_secs(20), async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the slow consumer's connection was not closed");
    assert!(drained < sent * (16 * 1024 + 64), "it cannot have received everything");
}
