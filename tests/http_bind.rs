//! `switchboard::http::bind` listens with a backlog that absorbs a burst of connections.
//!
//! With tokio's `TcpListener::bind` (backlog 128) a burst of clients overflows the accept queue
//! while the server is busy, and each dropped SYN costs its client a one-second retransmission
//! (measured: 1 000 subscribers took 1.08 s to connect instead of 0.08 s).

use std::time::Duration;
use tokio::net::TcpStream;

/// Connections the kernel completes on its own, without the server calling `accept`: all of
/// them fit in the queue, so every connect succeeds at once.
#[tokio::test]
async fn a_burst_of_connections_fits_in_the_accept_queue() {
    // The kernel caps the backlog at net.core.somaxconn; below 600 this cannot be told apart
    // from std's 128 and the test has nothing to check.
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if somaxconn < 600 {
        eprintln!("net.core.somaxconn is {somaxconn}: skipped");
        return;
    }
    let listener = switchboard::http::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Nobody accepts: the server is "busy".
    let connects = (0..500).map(|_| tokio::time::timeout(Duration::from_millis(700), TcpStream::connect(addr)));
    let results = futures_util::future::join_all(connects).await;
    let connected = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(
        connected, 500,
        "connections completed without accept (a backlog of 128 gives ~129)"
    );
    drop(listener);
}

#[tokio::test]
async fn bind_says_what_it_could_not_listen_on() {
    let taken = switchboard::http::bind("127.0.0.1:0").await.expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    // Same address again while in use: the OS error, not a panic.
    let err = switchboard::http::bind(&addr).await.expect_err("address in use");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    let err = switchboard::http::bind("not an address")
        .await
        .expect_err("bad address");
    assert!(!err.to_string().is_empty());
}
