//! Leak check: channels opened and closed by the ten thousand leave nothing behind — the count of
//! live channels, tokio's alive tasks and the process's resident memory come back.

#[path = "duplex_support.rs"]
mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;
use switchboard::client::Client;
use switchboard::{DuplexError, Node, Router};
use tokio::runtime::Handle;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn alive_tasks() -> usize {
    Handle::current().metrics().num_alive_tasks()
}

/// Handlers that hold clones of their own channel (the reference cycle `close` must break).
fn router() -> Router {
    let mut router = Router::new();
    router.route("room", |channel, _params| async move {
        let out = channel.clone();
        channel.on_sync("say", move |p| out.emit("said", p))?;
        let out = channel.clone();
        channel.on("ask", move |p: Value| {
            let out = out.clone();
            async move { out.request("confirm", p, Duration::from_secs(5)).await }
        })?;
        Ok::<_, DuplexError>(())
    });
    router
}

async fn settle(node: &Node, live: u64, tasks: usize) -> bool {
    for _ in 0..500 {
        if node.duplex_channels() == live && alive_tasks() <= tasks {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

// One test in this file: tokio's task count and the resident memory are process-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_channels_leave_nothing_behind() {
    let server = serve(router()).await;
    let client = Client::connect(&server.url(), fast_config()).await.expect("connect");

    // Warm up allocators and lazily built state.
    for _ in 0..200 {
        let room = client.open("room", json!({})).await.expect("open");
        room.close();
    }
    assert!(settle(&server.node, 0, usize::MAX).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (live0, tasks0, rss0) = (server.node.duplex_channels(), alive_tasks(), rss_kib());

    // 10 000 channels over one connection; every 10th exchanges an emit and a request that
    // itself makes a server -> client request.
    for i in 0..10_000u32 {
        let room = client.open("room", json!({ "i": i })).await.expect("open");
        if i % 10 == 0 {
            let (tx, mut said) = tokio::sync::mpsc::unbounded_channel();
            room.on_sync("said", move |p| drop(tx.send(p))).expect("on");
            room.on_sync("confirm", |p| json!({ "ok": p })).expect("on");
            room.emit("say", i).expect("emit");
            assert_eq!(next(&mut said).await, json!(i));
            assert_eq!(
                room.request("ask", i, Duration::from_secs(5)).await,
                Ok(json!({ "ok": i }))
            );
        }
        room.close();
    }
    assert!(
        settle(&server.node, live0, tasks0).await,
        "live {} (was {live0}), tasks {} (was {tasks0})",
        server.node.duplex_channels(),
        alive_tasks()
    );
    let (live1, tasks1, rss1) = (server.node.duplex_channels(), alive_tasks(), rss_kib());
    println!("one connection, 10000 channels: live channels {live0} -> {live1}, alive tasks {tasks0} -> {tasks1}, RSS {rss0} kB -> {rss1} kB");

    // Some over many connections: 100 clients each open 20 channels and go away without
    // closing them (the end of the connection closes them).
    for _ in 0..100 {
        let other = Client::connect(&server.url(), fast_config()).await.expect("connect");
        for _ in 0..20 {
            other.open("room", json!({})).await.expect("open").close();
        }
        let kept = other.open("room", json!({})).await.expect("open");
        drop(kept);
        other.close();
        other.closed().await;
    }
    // Plus 100 connections that leave with a channel open and a request pending on the server.
    for _ in 0..100 {
        let other = Client::connect(&server.url(), fast_config()).await.expect("connect");
        let room = other.open("room", json!({})).await.expect("open");
        // Heard but not answered before the connection ends (the handler finishes a second later).
        room.on("confirm", |_| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            json!(0)
        })
        .expect("on");
        let r = room.clone();
        let pending = tokio::spawn(async move { r.request("ask", 1, Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        other.close();
        other.closed().await;
        assert!(pending.await.expect("join").is_err());
    }
    assert!(
        settle(&server.node, live0, tasks0).await,
        "live {} (was {live0}), tasks {} (was {tasks0})",
        server.node.duplex_channels(),
        alive_tasks()
    );
    let (live2, tasks2, rss2) = (server.node.duplex_channels(), alive_tasks(), rss_kib());
    println!("200 more connections: live channels {live0} -> {live2}, alive tasks {tasks0} -> {tasks2}, RSS {rss0} kB -> {rss2} kB");
    let grown = rss2.saturating_sub(rss0);
    assert!(grown < 32 * 1024, "RSS grew by {grown} kB");
    drop(client);
}
