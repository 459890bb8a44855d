//! The cost of presence: a room of N members on real `presence` servers (the example binary, run
//! as child processes), measured over loopback sockets.
//!
//! `cargo build --release --example presence && cargo run --release --example bench_presence --
//! --members 10000`
//!
//! 1. Memory per member: the server's RSS with N connections subscribed to one room `big`, and
//!    with N connections each alone in its own room `r<i>`, against the same N connections
//!    subscribed to nothing (a fresh server for each).
//! 2. Latency of `presence_stats`, of a `presence` page (limit 100) and of the full member list in
//!    the N-member room, from one extra connection, one request at a time.
//! 3. Joins into the N-member room at `--join-rate` per second for `--join-secs` seconds (a second
//!    set of connections, connected beforehand, subscribing on a schedule) while `--observers` of
//!    the members count the `presence_diff` messages they receive and the joins inside them; the
//!    server's CPU (utime + stime from `/proc/PID/stat`) over that window.
//! 4. The same with two nodes sharing one `redis-server` (`presence --broker`), members split
//!    between them: memory per member on one node, the latencies (which read Redis), diffs per
//!    member per second, both nodes' and Redis's CPU.
//!
//! Prints one JSON line per measurement and a markdown table at the end. The server binary is the
//! sibling `presence` next to this executable unless `--server-bin` says otherwise; `redis-server`
//! is started on a free loopback port unless `--redis` is given. This process holds members +
//! joiners + 1 connections at once: keep that under the open-files limit.

#[path = "support/redis_server.rs"]
mod redis_server;

use clap::Parser;
use futures_util::StreamExt;
use redis_server::start_redis;
use serde_json::{json, Value};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::ws::{self, CloseFrame, Handler, Text, WebSocket};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
struct Args {
    /// Members of the room.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Members that count the `presence_diff` messages they receive.
    #[arg(long, default_value_t = 1000)]
    observers: usize,
    /// Joins per second in the join phase.
    #[arg(long, default_value_t = 1000.0)]
    join_rate: f64,
    /// Length of the join phase, seconds.
    #[arg(long, default_value_t = 5.0)]
    join_secs: f64,
    /// Subscribes per second while the room fills (each join is told to every member already in).
    #[arg(long, default_value_t = 2000.0)]
    setup_rate: f64,
    /// Requests per latency figure (the full list: a tenth of this).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// The `presence` example binary (default: next to this executable).
    #[arg(long)]
    server_bin: Option<std::path::PathBuf>,
    /// Use this Redis server instead of starting one.
    #[arg(long)]
    redis: Option<String>,
    /// Skip the two-node measurements.
    #[arg(long)]
    no_redis: bool,
    /// Connections opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// What a set of connections saw (shared by all of them).
#[derive(Default)]
struct Counts {
    messages: AtomicU64,
    subscribed: AtomicU64,
    errors: AtomicU64,
    closed: AtomicU64,
    /// Observers only: `presence_diff` messages and the joins in them.
    diffs: AtomicU64,
    joins: AtomicU64,
}

struct Client {
    counts: Arc<Counts>,
    observer: bool,
    /// A prober: every message with an `id` goes here.
    replies: Option<mpsc::UnboundedSender<Value>>,
}

impl Handler for Client {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let counts = &self.counts;
        counts.messages.fetch_add(1, Relaxed);
        if std::env::var_os("BENCH_DEBUG").is_some() {
            eprintln!("<- {}", &text[..text.len().min(200)]);
        }
        if let Some(replies) = &self.replies {
            if let Ok(message) = serde_json::from_str::<Value>(&text) {
                if message.get("id").is_some() {
                    let _ = replies.send(message);
                }
            }
            return;
        }
        // The type is the first field; look at the head only.
        let bytes = text.as_bytes();
        let head = &bytes[..bytes.len().min(40)];
        let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
        if has(b"\"subscribed\"") {
            counts.subscribed.fetch_add(1, Relaxed);
        } else if has(b"\"error\"") {
            counts.errors.fetch_add(1, Relaxed);
        } else if self.observer && has(b"\"presence_diff\"") {
            counts.diffs.fetch_add(1, Relaxed);
            if let Ok(message) = serde_json::from_str::<Value>(&text) {
                let joins = message["joins"].as_array().map_or(0, Vec::len);
                counts.joins.fetch_add(joins as u64, Relaxed);
            }
        }
    }

    async fn on_close(&mut self, _ws: &WebSocket, _close: CloseFrame) {
        self.counts.closed.fetch_add(1, Relaxed);
    }
}

/// A `presence` server child process; killed when dropped.
struct Server {
    child: tokio::process::Child,
    url: String,
    pid: u32,
}

async fn spawn_server(bin: &std::path::Path, broker: Option<&str>) -> Result<Server, Error> {
    let mut command = tokio::process::Command::new(bin);
    command.args(["--bind", "127.0.0.1:0"]);
    if let Some(url) = broker {
        command.args(["--broker", url]);
    }
    command.stdout(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| {
        format!(
            "could not start {} (build it: cargo build --release --example presence): {e}",
            bin.display()
        )
    })?;
    let pid = child.id().ok_or("server exited")?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await??
        .ok_or("server exited before listening")?;
    let addr = line
        .split("ws://")
        .nth(1)
        .ok_or_else(|| format!("unexpected server output: {line}"))?
        .trim_end_matches('/')
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server {
        child,
        url: format!("ws://{addr}/"),
        pid,
    })
}

impl Server {
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let get = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn client_config() -> ws::Config {
    ws::Config {
        handshake_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

/// Opens `n` connections, the i-th to `urls[i % urls.len()]`, `concurrency` at a time.
async fn connect_all(
    urls: &[String],
    n: usize,
    concurrency: usize,
    make: impl Fn(usize) -> Client,
) -> Result<Vec<WebSocket>, Error> {
    let connects = (0..n).map(|i| {
        let url = urls[i % urls.len()].clone();
        let handler = make(i);
        async move { ws::connect(&url, handler, client_config()).await }
    });
    let mut opening = futures_util::stream::iter(connects).buffered(concurrency.max(1));
    let mut sockets = Vec::with_capacity(n);
    while let Some(ws) = opening.next().await {
        sockets.push(ws?);
    }
    Ok(sockets)
}

async fn close_all(sockets: Vec<WebSocket>) {
    for ws in &sockets {
        let _ = ws.close(1000, "");
    }
    for ws in &sockets {
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.closed()).await;
    }
}

fn subscribe(room: &str) -> String {
    json!({"type": "subscribe", "channel": "room", "data": {"room": room}}).to_string()
}

/// Sends `message(i)` on each socket at `rate` per second.
async fn paced(sockets: &[WebSocket], rate: f64, message: impl Fn(usize) -> String) {
    let start = Instant::now();
    let mut sent = 0;
    while sent < sockets.len() {
        let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(sockets.len());
        while sent < due {
            let _ = sockets[sent].send_text(message(sent));
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Waits until no connection has received anything for `quiet`.
async fn wait_quiet(counts: &[&Counts], quiet: Duration) -> Result<(), Error> {
    let total = || counts.iter().map(|c| c.messages.load(Relaxed)).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = total();
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        if Instant::now() > deadline {
            return Err("timed out waiting for the traffic to stop".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = total();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    Ok(())
}

fn emit(lines: &mut Vec<Value>, line: Value) {
    println!("{line}");
    lines.push(line);
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// p50, p99 (ms) and the last reply's size in members (or its `clients` count) of `count`
/// requests made one at a time.
async fn latency(url: &str, count: usize, request: impl Fn(u64) -> String) -> Result<(f64, f64, u64), Error> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let prober = ws::connect(
        url,
        Client {
            counts: Arc::default(),
            observer: false,
            replies: Some(tx),
        },
        client_config(),
    )
    .await?;
    let mut times = Vec::with_capacity(count);
    let mut size = 0;
    for id in 1..=count as u64 {
        let start = Instant::now();
        prober.send_text(request(id))?;
        let reply = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await?
            .ok_or("prober closed")?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        if reply["type"] == "error" {
            return Err(format!("error reply: {reply}").into());
        }
        size = match &reply["clients"] {
            Value::Array(members) => members.len() as u64,
            other => other.as_u64().unwrap_or(0),
        };
    }
    let _ = prober.close(1000, "");
    prober.closed().await;
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.5), percentile(&times, 0.99), size))
}

/// The three latency figures against `url`, as JSON lines.
async fn latencies(setup: &str, url: &str, args: &Args, lines: &mut Vec<Value>) -> Result<[(f64, f64); 3], Error> {
    let kinds: [(&str, usize, Option<u64>, &str); 3] = [
        ("presence_stats", args.requests, None, "presence_stats"),
        ("presence_page100", args.requests, Some(100), "presence"),
        ("presence_full", (args.requests / 10).max(1), Some(0), "presence"),
    ];
    let mut out = [(0.0, 0.0); 3];
    for (i, (name, count, limit, kind)) in kinds.into_iter().enumerate() {
        let (p50, p99, size) = latency(url, count, |id| {
            let mut request = json!({"type": kind, "channel": "room", "data": {"room": "big"}, "id": id});
            if let Some(limit) = limit.filter(|l| *l > 0) {
                request["limit"] = json!(limit);
            }
            request.to_string()
        })
        .await?;
        emit(
            lines,
            json!({"setup": setup, "measure": name, "members": args.members, "requests": count,
                   "p50_ms": p50, "p99_ms": p99, "reply_size": size}),
        );
        out[i] = (p50, p99);
    }
    Ok(out)
}

/// The two-node figures: latencies, the join phase, KiB per member on node A, Redis bytes per
/// member.
type TwoNodes = ([(f64, f64); 3], JoinOutcome, f64, f64);

struct JoinOutcome {
    diffs_per_member_s: f64,
    joins_per_diff: f64,
    cpu_pct: Vec<f64>,
    joins_seen_per_observer: f64,
}

/// The join phase: `joiners` connections spread over `urls` subscribe to `big` at the join rate
/// while the members' observers count diffs; CPU of `pids` over the window.
async fn join_phase(
    setup: &str,
    urls: &[String],
    pids: &[(&str, u32)],
    members: &Counts,
    args: &Args,
    lines: &mut Vec<Value>,
) -> Result<(JoinOutcome, Vec<WebSocket>), Error> {
    let joiners = (args.join_rate * args.join_secs).round() as usize;
    let joiner_counts = Arc::new(Counts::default());
    let sockets = connect_all(urls, joiners, args.concurrency, |_| Client {
        counts: joiner_counts.clone(),
        observer: false,
        replies: None,
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (diffs0, joins0) = (members.diffs.load(Relaxed), members.joins.load(Relaxed));
    let cpu0: Vec<u64> = pids.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
    let bench0 = cpu_ticks(std::process::id());
    let start = Instant::now();
    paced(&sockets, args.join_rate, |_| subscribe("big")).await;
    let window = start.elapsed().as_secs_f64();
    let cpu1: Vec<u64> = pids.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
    let bench1 = cpu_ticks(std::process::id());
    let (diffs1, joins1) = (members.diffs.load(Relaxed), members.joins.load(Relaxed));
    wait_until("the joiners' subscriptions", Duration::from_secs(120), || {
        joiner_counts.subscribed.load(Relaxed) as usize >= joiners
    })
    .await?;
    let lag = start.elapsed().as_secs_f64() - window;
    wait_quiet(&[members, &joiner_counts], Duration::from_secs(1)).await?;
    let observers = args.observers.min(args.members).max(1) as f64;
    // Until the traffic stopped (the quiet second excluded).
    let drained = start.elapsed().as_secs_f64() - 1.0;
    let joins_seen = (members.joins.load(Relaxed) - joins0) as f64 / observers;
    let diffs_all = (members.diffs.load(Relaxed) - diffs0) as f64;
    let diffs = (diffs1 - diffs0) as f64;
    let ticks = clock_ticks();
    let cpu_pct: Vec<f64> = cpu0
        .iter()
        .zip(&cpu1)
        .map(|(a, b)| (b - a) as f64 / ticks / window * 100.0)
        .collect();
    let outcome = JoinOutcome {
        diffs_per_member_s: diffs / observers / window,
        joins_per_diff: if diffs > 0.0 {
            (joins1 - joins0) as f64 / diffs
        } else {
            0.0
        },
        cpu_pct,
        joins_seen_per_observer: joins_seen,
    };
    let cpu: serde_json::Map<String, Value> = pids
        .iter()
        .zip(&outcome.cpu_pct)
        .map(|((name, _), pct)| (format!("cpu_pct_{name}"), json!(pct)))
        .collect();
    let mut line = json!({
        "setup": setup, "measure": "joins", "members": args.members, "observers": observers,
        "joiners": joiners, "join_rate": args.join_rate, "window_s": window,
        "diffs_per_member_s": outcome.diffs_per_member_s, "joins_per_diff": outcome.joins_per_diff,
        "joins_seen_per_observer_after_drain": joins_seen,
        "drained_s": drained,
        "diffs_per_member_s_until_drained": diffs_all / observers / drained,
        "joins_per_diff_until_drained": if diffs_all > 0.0 { joins_seen * observers / diffs_all } else { 0.0 },
        "last_subscribed_after_window_s": lag,
        "joiner_errors": joiner_counts.errors.load(Relaxed),
        "closed_members": members.closed.load(Relaxed), "closed_joiners": joiner_counts.closed.load(Relaxed),
        "cpu_pct_bench_process": (bench1 - bench0) as f64 / ticks / window * 100.0,
    });
    line.as_object_mut().unwrap().extend(cpu);
    emit(lines, line);
    Ok((outcome, sockets))
}

/// Fills the room: N members over `urls`, observers first; RSS of each server before and after.
/// Returns the sockets, the counts, and per server (connected KiB, subscribed KiB).
async fn fill(
    urls: &[String],
    pids: &[u32],
    room: impl Fn(usize) -> String,
    args: &Args,
) -> Result<(Vec<WebSocket>, Arc<Counts>, Vec<(u64, u64, u64)>, f64), Error> {
    let idle: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    let counts = Arc::new(Counts::default());
    let observers = args.observers;
    let sockets = connect_all(urls, args.members, args.concurrency, |i| Client {
        counts: counts.clone(),
        observer: i < observers,
        replies: None,
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connected: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    eprintln!("filling: {} connections open", sockets.len());
    let start = Instant::now();
    paced(&sockets, args.setup_rate, |i| subscribe(&room(i))).await;
    eprintln!("filling: subscribes sent");
    wait_until("the members' subscriptions", Duration::from_secs(300), || {
        counts.subscribed.load(Relaxed) as usize >= args.members
    })
    .await?;
    wait_quiet(&[&counts], Duration::from_secs(2)).await?;
    let fill_secs = start.elapsed().as_secs_f64();
    let subscribed: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    if counts.errors.load(Relaxed) > 0 || counts.closed.load(Relaxed) > 0 {
        return Err(format!(
            "{} subscribe errors, {} connections closed",
            counts.errors.load(Relaxed),
            counts.closed.load(Relaxed)
        )
        .into());
    }
    let rss = (0..pids.len())
        .map(|i| (idle[i], connected[i], subscribed[i]))
        .collect();
    Ok((sockets, counts, rss, fill_secs))
}

async fn redis_used_memory(url: &str) -> Result<u64, Error> {
    let mut connection = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut connection).await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?.with_file_name("presence"),
    };
    let n = args.members as f64;
    let mut lines = Vec::new();
    // Rows of the final table: measurement, 1 node, 2 nodes.
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // 1a. N connections each alone in its own room.
    let server = spawn_server(&bin, None).await?;
    let urls = [server.url.clone()];
    let (sockets, _, rss, fill_secs) = fill(&urls, &[server.pid], |i| format!("r{i}"), &args).await?;
    let (idle, connected, subscribed) = rss[0];
    let own_room = (subscribed as f64 - connected as f64) / n;
    emit(
        &mut lines,
        json!({"setup": "1 node", "measure": "memory", "rooms": "one room per member (r<i>)",
               "members": args.members, "rss_idle_kib": idle, "rss_connected_kib": connected,
               "rss_subscribed_kib": subscribed, "connection_kib": (connected as f64 - idle as f64) / n,
               "kib_per_member": own_room, "fill_s": fill_secs}),
    );
    server.stop().await;
    close_all(sockets).await;

    // 1b. N connections in one room `big`; then 2 and 3 in that room.
    let server = spawn_server(&bin, None).await?;
    let urls = [server.url.clone()];
    let (sockets, counts, rss, fill_secs) = fill(&urls, &[server.pid], |_| "big".to_owned(), &args).await?;
    let (idle, connected, subscribed) = rss[0];
    let big_room = (subscribed as f64 - connected as f64) / n;
    let connection = (connected as f64 - idle as f64) / n;
    emit(
        &mut lines,
        json!({"setup": "1 node", "measure": "memory", "rooms": "one room (big)",
               "members": args.members, "rss_idle_kib": idle, "rss_connected_kib": connected,
               "rss_subscribed_kib": subscribed, "connection_kib": connection,
               "kib_per_member": big_room, "fill_s": fill_secs}),
    );
    rows.push((
        "connection, not subscribed (KiB/connection)".into(),
        format!("{connection:.1}"),
        "-".into(),
    ));
    rows.push((
        "member of one N-member room (KiB/member)".into(),
        format!("{big_room:.2}"),
        String::new(),
    ));
    rows.push((
        "member alone in its own room (KiB/member)".into(),
        format!("{own_room:.2}"),
        "-".into(),
    ));
    let one = latencies("1 node", &server.url, &args, &mut lines).await?;
    let (joins, joiners) = join_phase("1 node", &urls, &[("server", server.pid)], &counts, &args, &mut lines).await?;
    server.stop().await;
    close_all(sockets).await;
    close_all(joiners).await;

    // 4. Two nodes sharing Redis.
    let mut two: Option<TwoNodes> = None;
    if !args.no_redis {
        let (redis_url, redis_child) = match &args.redis {
            Some(url) => (url.clone(), None),
            None => {
                let (url, child) = start_redis().await?;
                (url, Some(child))
            }
        };
        let a = spawn_server(&bin, Some(&redis_url)).await?;
        let b = spawn_server(&bin, Some(&redis_url)).await?;
        let urls = [a.url.clone(), b.url.clone()];
        let redis_before = redis_used_memory(&redis_url).await?;
        let (sockets, counts, rss, fill_secs) = fill(&urls, &[a.pid, b.pid], |_| "big".to_owned(), &args).await?;
        let redis_after = redis_used_memory(&redis_url).await?;
        let local = args.members.div_ceil(2) as f64;
        let (idle, connected, subscribed) = rss[0];
        let per_member = (subscribed as f64 - connected as f64) / local;
        let redis_per_member = (redis_after as f64 - redis_before as f64) / n;
        emit(
            &mut lines,
            json!({"setup": "2 nodes + Redis", "measure": "memory", "rooms": "one room (big)",
                   "members": args.members, "members_on_node_a": local, "rss_idle_kib": idle,
                   "rss_connected_kib": connected, "rss_subscribed_kib": subscribed,
                   "kib_per_member": per_member, "node_b_kib_per_member": (rss[1].2 as f64 - rss[1].1 as f64) / (n - local),
                   "redis_used_memory_bytes_per_member": redis_per_member, "fill_s": fill_secs}),
        );
        let lat = latencies("2 nodes + Redis", &a.url, &args, &mut lines).await?;
        let mut pids = vec![("node_a", a.pid), ("node_b", b.pid)];
        if let Some(child) = &redis_child {
            pids.push(("redis", child.pid()));
        }
        let (outcome, joiners) = join_phase("2 nodes + Redis", &urls, &pids, &counts, &args, &mut lines).await?;
        a.stop().await;
        b.stop().await;
        close_all(sockets).await;
        close_all(joiners).await;
        two = Some((lat, outcome, per_member, redis_per_member));
    }

    // The table.
    let fmt_lat = |l: (f64, f64)| format!("{:.2} / {:.2}", l.0, l.1);
    let names = [
        "presence_stats p50 / p99 (ms)",
        "presence limit 100 p50 / p99 (ms)",
        "presence full list p50 / p99 (ms)",
    ];
    if let Some((_, _, per_member, _)) = &two {
        rows[1].2 = format!("{per_member:.2} (node A, its N/2 local members)");
    }
    if let Some((_, _, _, redis)) = &two {
        rows.push((
            "Redis used_memory per member (bytes)".into(),
            "-".into(),
            format!("{redis:.0}"),
        ));
    }
    for (i, name) in names.iter().enumerate() {
        let second = two.as_ref().map_or("-".into(), |t| fmt_lat(t.0[i]));
        rows.push((name.to_string(), fmt_lat(one[i]), second));
    }
    let join_rows = |o: &JoinOutcome| {
        (
            format!("{:.2}", o.diffs_per_member_s),
            format!("{:.1}", o.joins_per_diff),
            o.cpu_pct
                .iter()
                .map(|c| format!("{c:.0}"))
                .collect::<Vec<_>>()
                .join(" / "),
            format!("{:.0}", o.joins_seen_per_observer),
        )
    };
    let j1 = join_rows(&joins);
    let j2 = two.as_ref().map(|t| join_rows(&t.1));
    let pick = |f: fn(&(String, String, String, String)) -> String| j2.as_ref().map_or("-".into(), f);
    let rate = args.join_rate;
    rows.push((
        format!("{rate} joins/s: diffs per member per s"),
        j1.0.clone(),
        pick(|j| j.0.clone()),
    ));
    rows.push(("joins per diff".into(), j1.1.clone(), pick(|j| j.1.clone())));
    rows.push((
        "server CPU, % of one core (node A / node B / redis)".into(),
        j1.2.clone(),
        pick(|j| j.2.clone()),
    ));
    rows.push((
        "joins seen per observer (of the joiners)".into(),
        j1.3.clone(),
        pick(|j| j.3.clone()),
    ));
    println!();
    println!("| N = {} | 1 node | 2 nodes + Redis |", args.members);
    println!("|---|---|---|");
    for (name, a, b) in rows {
        println!("| {name} | {a} | {b} |");
    }
    Ok(())
}
