//! Fan-out across nodes: 1000 WebSocket subscribers of one channel, a publisher on node A, and
//! deliveries per second counted at the clients. Three setups, same clients and messages:
//!
//! * one node, in-memory broker (the baseline);
//! * one node, Redis broker (every publication makes the round trip through Redis);
//! * two nodes sharing the channel through Redis, subscribers split evenly between them.
//!
//! `cargo run --release --example bench_redis_fanout -- --subscribers 1000 --messages 2000`
//!
//! Starts its own `redis-server` on a free loopback port unless `--redis redis://host:port` is
//! given. Everything (nodes, clients, publisher) runs in this one process, on real loopback sockets.

#[path = "support/redis_server.rs"]
mod redis_server;

use clap::Parser;
use futures_util::StreamExt;
use redis_server::start_redis;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::ws::{self, Handler, Text, WebSocket};
use switchboard::{Channel, ChannelRef, Node, RedisBroker, Router, Shutdown};

#[derive(Parser)]
struct Args {
    /// Subscribers in all (split evenly between the nodes).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Publications per run.
    #[arg(long, default_value_t = 2000)]
    messages: u64,
    /// Publications in flight at once (1: each awaited before the next).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Runs per setup (the best is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Use this Redis server instead of starting one.
    #[arg(long)]
    redis: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Tick {
    #[serde(default)]
    seq: u64,
}

struct Server {
    chat: ChannelRef<Tick>,
    addr: std::net::SocketAddr,
    shutdown: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn server(redis: Option<&str>) -> Result<Server, Box<dyn std::error::Error>> {
    let mut router = Router::new();
    let chat = router.channel(Channel::new("ticks", |t: Tick| async move {
        Ok::<_, String>(json!({ "seq": t.seq, "text": "a short message, like a chat line" }))
    }));
    let node = match redis {
        Some(url) => Node::builder(router).broker(RedisBroker::connect(url).await?).build(),
        None => Node::new(router),
    };
    let listener = switchboard::http::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    Ok(Server { chat, addr, shutdown })
}

#[derive(Default)]
struct Counts {
    subscribed: AtomicU64,
    data: AtomicU64,
}

struct Count(Arc<Counts>);

impl Handler for Count {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        if text.starts_with(r#"{"type":"data""#) {
            self.0.data.fetch_add(1, Ordering::Relaxed);
        } else if text.starts_with(r#"{"type":"subscribed""#) {
            self.0.subscribed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

struct Outcome {
    elapsed: Duration,
    deliveries: u64,
}

/// One run: connect and subscribe the clients, publish, wait for every delivery.
async fn run(nodes: &[Server], args: &Args) -> Result<Outcome, Box<dyn std::error::Error>> {
    let counts = Arc::new(Counts::default());
    let mut clients = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let node = &nodes[i % nodes.len()];
        let ws = ws::connect(
            &format!("ws://{}/", node.addr),
            Count(counts.clone()),
            ws::Config::default(),
        )
        .await?;
        ws.send_text(r#"{"type":"subscribe","channel":"ticks"}"#)?;
        clients.push(ws);
    }
    let expected_subs = args.subscribers as u64;
    wait_until("subscriptions", Duration::from_secs(30), || {
        counts.subscribed.load(Ordering::Relaxed) == expected_subs
    })
    .await?;

    let expected = args.messages * args.subscribers as u64;
    let start = Instant::now();
    // Up to `window` publications in flight, sent in order on node A's one Redis connection.
    let chat = &nodes[0].chat;
    let mut publications = futures_util::stream::iter(0..args.messages)
        .map(|seq| chat.broadcast(Tick { seq }))
        .buffered(args.window);
    while let Some(result) = publications.next().await {
        result?;
    }
    wait_until("deliveries", Duration::from_secs(120), || {
        counts.data.load(Ordering::Relaxed) >= expected
    })
    .await?;
    let elapsed = start.elapsed();
    // Exactly once: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deliveries = counts.data.load(Ordering::Relaxed);
    if deliveries != expected {
        return Err(format!("{deliveries} deliveries, expected {expected}").into());
    }
    for ws in &clients {
        let _ = ws.close(1000, "");
    }
    for ws in &clients {
        ws.closed().await;
    }
    Ok(Outcome { elapsed, deliveries })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (url, _child) = match &args.redis {
        Some(url) => (url.clone(), None),
        None => {
            let (url, child) = start_redis().await?;
            (url, Some(child))
        }
    };
    println!(
        "fan-out: {} subscribers, {} publications per run ({} in flight), publisher on node A; best of {} runs",
        args.subscribers, args.messages, args.window, args.runs
    );
    println!(
        "{:<38} {:>10} {:>14} {:>14}",
        "setup", "time", "deliveries/s", "publications/s"
    );
    let setups: [(&str, usize, bool); 3] = [
        ("1 node, in-memory broker", 1, false),
        ("1 node, Redis broker", 1, true),
        ("2 nodes, Redis broker", 2, true),
    ];
    for (name, count, redis) in setups {
        let mut nodes = Vec::new();
        for _ in 0..count {
            nodes.push(server(redis.then_some(url.as_str())).await?);
        }
        let mut best: Option<Outcome> = None;
        for _ in 0..args.runs {
            let outcome = run(&nodes, &args).await?;
            if best.as_ref().is_none_or(|b| outcome.elapsed < b.elapsed) {
                best = Some(outcome);
            }
        }
        if let Some(best) = best {
            let secs = best.elapsed.as_secs_f64();
            println!(
                "{:<38} {:>8.0}ms {:>14.0} {:>14.0}",
                name,
                secs * 1000.0,
                best.deliveries as f64 / secs,
                args.messages as f64 / secs
            );
        }
    }
    Ok(())
}
