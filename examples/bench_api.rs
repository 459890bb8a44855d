//! The cost of the standalone server's publish paths, on a real `switchboard serve --config`
//! (run as a child process) over loopback sockets.
//!
//! `cargo build --release --bin switchboard && cargo run --release --example bench_api --
//! --subscribers 1000 --secs 5`
//!
//! 1. The server HTTP API: `--concurrency` keep-alive HTTP connections post `/api/publish` to
//!    `chat:bench` as fast as they are answered, for `--secs` seconds.
//! 2. Client publish: `--concurrency` WebSocket clients send `publish` and wait for `published`,
//!    one at a time each, for `--secs` seconds.
//!
//! Both with `--subscribers` connections subscribed to `chat:bench` (a namespace with history
//! when `--history` is above 0), which count what they receive: every publication must reach every
//! subscriber. Prints one JSON line per phase: publications/s, latency p50 and p99, the server's
//! CPU (utime + stime from `/proc/PID/stat`) per publication, deliveries expected and received.

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::ws::{self, Handler, Text, WebSocket};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
struct Args {
    /// Connections subscribed to the channel.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Publishers at once (HTTP connections, or WebSocket clients).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds each phase publishes.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// History size of the namespace (0: none).
    #[arg(long, default_value_t = 100)]
    history: usize,
    /// The `switchboard` binary (default: next to this example's directory).
    #[arg(long)]
    server_bin: Option<String>,
}

/// Counts the messages a subscriber receives.
struct Count(Arc<AtomicU64>);
impl Handler for Count {
    async fn on_message(&mut self, _ws: &WebSocket, _text: Text) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// Forwards a publisher's replies.
struct Replies(mpsc::UnboundedSender<String>);
impl Handler for Replies {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let _ = self.0.send(text.to_string());
    }
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11..13)
        .map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let bin = args.server_bin.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        let dir = exe
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        dir.join("switchboard").display().to_string()
    });
    let config = std::env::temp_dir().join(format!("bench-api-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "api_key = \"k\"\n[limits]\nconnections_per_ip_per_sec = 0\nmessages_per_sec = 0\n[[namespace]]\nname = \"chat\"\nhistory_size = {}\nhistory_ttl_secs = 300\nclient_publish = true\n",
            args.history
        ),
    )?;
    let mut server = tokio::process::Command::new(&bin)
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {bin}: {e}"))?;
    let pid = server.id().ok_or("no server pid")?;
    let stdout = server.stdout.take().ok_or("no stdout")?;
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .ok_or("no listening line")?;
    let addr = line
        .trim()
        .trim_start_matches("switchboard listening on http://")
        .trim_end_matches('/')
        .to_owned();
    let ws_url = format!("ws://{addr}/ws");

    let received = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let ws = ws::connect(&ws_url, Count(received.clone()), ws::Config::default()).await?;
        ws.send_text(json!({"type": "subscribe", "channel": "chat:bench"}).to_string())?;
        subscribers.push(ws);
    }
    // Every subscriber acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Relaxed) < args.subscribers as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let data = json!({"user": "bench", "text": "x".repeat(100)});

    for phase in ["api", "client"] {
        let before = received.load(Relaxed);
        let cpu_before = cpu_secs(pid);
        let stop = Instant::now() + Duration::from_secs(args.secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency {
            let (addr, ws_url, data) = (addr.clone(), ws_url.clone(), data.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                if phase == "api" {
                    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
                    let body = json!({"channel": "chat:bench", "data": data}).to_string();
                    while Instant::now() < stop {
                        let request = http::Request::post(format!("http://{addr}/api/publish"))
                            .header("authorization", "apikey k")
                            .body(Full::new(Bytes::from(body.clone())))
                            .map_err(|e| e.to_string())?;
                        let sent = Instant::now();
                        let response = http.request(request).await.map_err(|e| e.to_string())?;
                        let status = response.status();
                        let answer = response
                            .into_body()
                            .collect()
                            .await
                            .map_err(|e| e.to_string())?
                            .to_bytes();
                        if !status.is_success() {
                            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&answer)));
                        }
                        latencies.push(sent.elapsed());
                    }
                } else {
                    let (tx, mut rx) = mpsc::unbounded_channel();
                    let ws = ws::connect(&ws_url, Replies(tx), ws::Config::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let message =
                        json!({"type": "publish", "channel": "chat:bench", "data": data, "id": 1}).to_string();
                    while Instant::now() < stop {
                        let sent = Instant::now();
                        ws.send_text(message.clone()).map_err(|e| e.to_string())?;
                        let reply = rx.recv().await.ok_or("publisher closed")?;
                        let reply: Value = serde_json::from_str(&reply).map_err(|e| e.to_string())?;
                        if reply["type"] != "published" {
                            return Err(format!("unexpected reply {reply}"));
                        }
                        latencies.push(sent.elapsed());
                    }
                    let _ = ws.close(1000, "");
                }
                Ok::<_, String>(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let published = latencies.len() as u64;
        let expected = published * args.subscribers as u64;
        // Deliveries still in flight: wait for them (bounded).
        let deadline = Instant::now() + Duration::from_secs(30);
        while received.load(Relaxed) - before < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu = cpu_secs(pid) - cpu_before;
        latencies.sort_unstable();
        let line = json!({
            "phase": phase,
            "subscribers": args.subscribers,
            "concurrency": args.concurrency,
            "history": args.history,
            "publications": published,
            "publications_per_sec": (published as f64 / elapsed).round(),
            "p50_ms": (percentile(&latencies, 0.5) * 1000.0).round() / 1000.0,
            "p99_ms": (percentile(&latencies, 0.99) * 1000.0).round() / 1000.0,
            "server_cpu_us_per_publication": (cpu * 1e6 / published.max(1) as f64).round(),
            "deliveries_expected": expected,
            "deliveries_received": received.load(Relaxed) - before,
        });
        println!("{line}");
    }
    for ws in subscribers {
        let _ = ws.close(1000, "");
    }
    let _ = std::fs::remove_file(&config);
    Ok(())
}
