//! Recovery at scale: N clients subscribed to a history channel all drop, M publications are made
//! meanwhile, and all N reconnect at once, each recovering the M it missed. Measured: the time from
//! the reconnects until every client has every missed publication (each exactly once, in order),
//! and — with the Redis broker — the Redis commands per recovering client (from `INFO
//! commandstats`, the reconnect phase only).
//!
//! `cargo run --release --example bench_recovery -- --clients 1000 --missed 100`
//!
//! It first measures what an idle stream costs the in-memory broker: `--streams` topics of a keyed
//! history channel get one publication each, and the process's RSS grows by the figure shown.
//!
//! Two setups: one node with the in-memory broker, and two nodes sharing Redis where the clients
//! reconnect to the *other* node (they recover from the shared stream). Starts its own
//! `redis-server` on a free loopback port unless `--redis redis://host:port` is given; everything
//! else runs in this process, on loopback sockets.

#[path = "support/redis_server.rs"]
mod redis_server;

use clap::Parser;
use redis_server::start_redis;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::ws::{self, Handler, Text, WebSocket};
use switchboard::{Channel, ChannelRef, Node, RedisBroker, Router, Shutdown};

#[derive(Parser)]
struct Args {
    /// Clients that drop and recover.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Publications each client misses.
    #[arg(long, default_value_t = 100)]
    missed: u64,
    /// Runs per setup (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Use this Redis server instead of starting one.
    #[arg(long)]
    redis: Option<String>,
    /// Idle streams for the memory figure (0: skip it).
    #[arg(long, default_value_t = 100_000)]
    streams: u64,
}

#[derive(Serialize, Deserialize)]
struct UserFeed {
    user_id: u64,
}

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

/// The in-memory broker's memory per idle stream holding one short publication.
async fn stream_memory(streams: u64) -> Result<f64, Box<dyn std::error::Error>> {
    let mut router = Router::new();
    let user_feed = router.channel(
        Channel::new("user_feed", |f: UserFeed| async move {
            Ok::<_, String>(json!({ "user_id": f.user_id, "text": "a short message" }))
        })
        .required_on_subscribe(["user_id"])
        .history(100, Duration::from_secs(300)),
    );
    let _node = Node::new(router);
    // Warm up the allocator and the maps, then measure the next `streams` topics.
    for user_id in 0..1000 {
        user_feed.broadcast(UserFeed { user_id }).await?;
    }
    let before = rss_kib();
    for user_id in 1000..1000 + streams {
        user_feed.broadcast(UserFeed { user_id }).await?;
    }
    let after = rss_kib();
    Ok((after.saturating_sub(before)) as f64 * 1024.0 / streams as f64)
}

#[derive(Serialize, Deserialize)]
struct Feed {
    #[serde(default)]
    seq: u64,
}

struct Server {
    feed: ChannelRef<Feed>,
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
    let feed = router.channel(
        Channel::new("feed", |f: Feed| async move {
            Ok::<_, String>(json!({ "seq": f.seq, "text": "a short message, like a chat line" }))
        })
        .history(10_000, Duration::from_secs(300)),
    );
    let node = match redis {
        Some(url) => Node::builder(router).broker(RedisBroker::connect(url).await?).build(),
        None => Node::new(router),
    };
    let listener = switchboard::http::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    Ok(Server { feed, addr, shutdown })
}

/// What one client saw, shared with the run.
#[derive(Default)]
struct Seen {
    /// The last offset received in order (`u64::MAX` after a gap, a duplicate or a failed recovery).
    offset: AtomicU64,
    epoch: parking_lot::Mutex<String>,
    subscribed: AtomicU64,
}

struct Client(Arc<Seen>);

impl Handler for Client {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        let seen = &self.0;
        match message["type"].as_str() {
            Some("subscribed") => {
                if message["recovered"] == false {
                    seen.offset.store(u64::MAX, Ordering::Relaxed);
                } else if message.get("recovered").is_none() {
                    seen.offset
                        .store(message["offset"].as_u64().unwrap_or(0), Ordering::Relaxed);
                    *seen.epoch.lock() = message["epoch"].as_str().unwrap_or_default().to_owned();
                }
                seen.subscribed.fetch_add(1, Ordering::Relaxed);
            }
            Some("data") => {
                let offset = message["offset"].as_u64().unwrap_or(0);
                let last = seen.offset.load(Ordering::Relaxed);
                let next = if last != u64::MAX && offset == last + 1 {
                    offset
                } else {
                    u64::MAX
                };
                seen.offset.store(next, Ordering::Relaxed);
            }
            _ => {}
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

/// Commands Redis has run (from `INFO commandstats`, without the INFO calls themselves): those sent
/// by clients — each a round trip — and all of them, the commands run inside scripts included.
async fn redis_commands(url: &str) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let mut connection = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await?;
    // What a Switchboard node sends; everything else is run by its scripts.
    const SENT: [&str; 8] = [
        "evalsha",
        "eval",
        "ping",
        "subscribe",
        "unsubscribe",
        "publish",
        "script",
        "hello",
    ];
    let (mut sent, mut total) = (0, 0);
    for line in info.lines() {
        let Some((name, stats)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
            continue;
        };
        if name == "info" {
            continue;
        }
        let calls = stats.split("calls=").nth(1).and_then(|rest| rest.split(',').next());
        let calls = calls.and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
        total += calls;
        if SENT.contains(&name) {
            sent += calls;
        }
    }
    Ok((sent, total))
}

struct Outcome {
    catch_up: Duration,
    /// Round trips and commands (scripts' included) per client.
    commands_per_client: Option<(f64, f64)>,
}

/// One run: subscribe on `first`, drop, publish, reconnect to `second` with `recover`.
async fn run(
    first: &Server,
    second: &Server,
    redis: Option<&str>,
    args: &Args,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let seen: Vec<Arc<Seen>> = (0..args.clients).map(|_| Arc::default()).collect();
    let mut sockets = Vec::with_capacity(args.clients);
    for client in &seen {
        let ws = ws::connect(
            &format!("ws://{}/", first.addr),
            Client(client.clone()),
            ws::Config::default(),
        )
        .await?;
        ws.send_text(r#"{"type":"subscribe","channel":"feed"}"#)?;
        sockets.push(ws);
    }
    wait_until("subscriptions", Duration::from_secs(60), || {
        seen.iter().all(|s| s.subscribed.load(Ordering::Relaxed) == 1)
    })
    .await?;
    for ws in &sockets {
        let _ = ws.close(1000, "");
    }
    for ws in sockets.drain(..) {
        ws.closed().await;
    }
    for seq in 0..args.missed {
        first.feed.broadcast(Feed { seq }).await?;
    }
    let target: Vec<u64> = seen
        .iter()
        .map(|s| s.offset.load(Ordering::Relaxed) + args.missed)
        .collect();
    let before = match redis {
        Some(url) => Some(redis_commands(url).await?),
        None => None,
    };
    let start = Instant::now();
    let connects = seen.iter().map(|client| {
        let url = format!("ws://{}/", second.addr);
        let client = client.clone();
        async move {
            let recover = json!({
                "type": "subscribe", "channel": "feed",
                "recover": { "offset": client.offset.load(Ordering::Relaxed), "epoch": *client.epoch.lock() },
            });
            let ws = ws::connect(&url, Client(client), ws::Config::default()).await?;
            ws.send_text(recover.to_string())?;
            Ok::<_, Box<dyn std::error::Error>>(ws)
        }
    });
    for ws in futures_util::future::join_all(connects).await {
        sockets.push(ws?);
    }
    wait_until("every client caught up", Duration::from_secs(120), || {
        seen.iter().zip(&target).all(|(s, t)| {
            let offset = s.offset.load(Ordering::Relaxed);
            offset == *t || offset == u64::MAX
        })
    })
    .await?;
    let catch_up = start.elapsed();
    let failed = seen
        .iter()
        .filter(|s| s.offset.load(Ordering::Relaxed) == u64::MAX)
        .count();
    if failed > 0 {
        return Err(format!("{failed} clients saw a gap, a duplicate or recovered:false").into());
    }
    let commands_per_client = match (redis, before) {
        (Some(url), Some(before)) => {
            let after = redis_commands(url).await?;
            let per_client = |n: u64| n as f64 / args.clients as f64;
            Some((per_client(after.0 - before.0), per_client(after.1 - before.1)))
        }
        _ => None,
    };
    for ws in &sockets {
        let _ = ws.close(1000, "");
    }
    for ws in &sockets {
        ws.closed().await;
    }
    Ok(Outcome {
        catch_up,
        commands_per_client,
    })
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
    if args.streams > 0 {
        let bytes = stream_memory(args.streams).await?;
        println!(
            "memory per idle stream (in-memory broker, one ~70-byte publication kept): {bytes:.0} bytes ({} streams)",
            args.streams
        );
    }
    println!(
        "recovery: {} clients drop, {} publications are missed, all reconnect at once; median of {} runs",
        args.clients, args.missed, args.runs
    );
    println!(
        "{:<52} {:>12} {:>36}",
        "setup", "catch-up", "Redis round trips (commands)/client"
    );
    for redis in [false, true] {
        let (first, second, name) = if redis {
            let a = server(Some(&url)).await?;
            let b = server(Some(&url)).await?;
            (a, Some(b), "2 nodes, Redis broker, reconnect to the other node")
        } else {
            (server(None).await?, None, "1 node, in-memory broker")
        };
        let second_ref = second.as_ref().unwrap_or(&first);
        let mut outcomes = Vec::new();
        for _ in 0..args.runs {
            outcomes.push(run(&first, second_ref, redis.then_some(url.as_str()), &args).await?);
        }
        outcomes.sort_by_key(|o| o.catch_up);
        let median = &outcomes[outcomes.len() / 2];
        let commands = median
            .commands_per_client
            .map_or_else(|| "-".to_owned(), |(trips, all)| format!("{trips:.2} ({all:.2})"));
        println!(
            "{:<52} {:>10.0}ms {:>36}",
            name,
            median.catch_up.as_secs_f64() * 1000.0,
            commands
        );
    }
    Ok(())
}
