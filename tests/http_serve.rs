//! `switchboard::http::serve_with`: a client that never sends its handshake is disconnected.

use std::time::{Duration, Instant};
use switchboard::{http, ws, Shutdown};
use tokio::io::AsyncReadExt;

struct Nothing;
impl ws::Handler for Nothing {}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route("/ws", ws::endpoint(|_| Nothing, ws::Config::default()));
    let shutdown = Shutdown::new();
    tokio::spawn(http::serve_with(
        listener,
        app,
        shutdown.clone(),
        Duration::from_millis(300),
    ));

    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // hyper answers 408 or just closes; either way the socket ends.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "a client that sent nothing was still connected after 5 s"
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "dropped too early: {waited:?}");
    shutdown.trigger();
}
