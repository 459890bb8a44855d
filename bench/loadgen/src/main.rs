//! `switchboard-bench`: a load generator that speaks the SocketAPI-compatible protocol (PROTOCOL.md),
//! so it drives Switchboard, SocketAPI itself, the uWS.js peer and the raw tokio-websockets peer alike.
//!
//! Scenarios (one JSON result line on stdout, progress on stderr):
//!
//! * `fanout --subs N --messages M --size S`: N connections subscribe to `chat`; one publisher
//!   connection sends `send_message` actions (text = `#SEQ:SEND_NS#` padded with `x` to S bytes),
//!   keeping at most `--window` actions unanswered (or at `--rate` per second). Every subscriber
//!   checks sequence numbers (loss, duplicates) and computes publish-to-deliver latency.
//! * `channels --channels N --messages M`: N connections each subscribe to `notifications` with
//!   `user_id = i`; publication j goes to `user_id = j % N` through `send_notification`. The data
//!   carries no payload of ours, so latency uses the send time the publisher recorded for j.
//! * `idle --conns N`: N subscribed connections that stay quiet; the server's RSS per connection.
//! * `echo --conns C --size S --secs T`: each connection sends a text message and waits for its
//!   echo, again and again (the WebSocket layer alone; the server must echo at the given URL).
//!
//! Past ~28k connections the client spreads its source addresses over 127.0.0.1..127.0.0.K
//! (`--conns-per-source`), binding before connecting. The server's RSS and CPU are read from
//! /proc/PID (`--server-pid`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

type Ws = WebSocketStream<TcpStream>;

// ---------------------------------------------------------------------------------------------
// clock, histogram, shards

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's epoch (shared by publisher and subscribers: same process).
fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Log-linear histogram: exact below 64, then 32 buckets per power of two (~3 % resolution).
const NB: usize = 64 + 58 * 32;

fn bucket(v: u64) -> usize {
    if v < 64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize; // >= 6
    let sub = ((v >> (e - 5)) & 31) as usize;
    64 + (e - 6) * 32 + sub
}

/// Middle of bucket `i`.
fn bucket_value(i: usize) -> u64 {
    if i < 64 {
        return i as u64;
    }
    let e = (i - 64) / 32 + 6;
    let sub = ((i - 64) % 32) as u64;
    let lo = (32 + sub) << (e - 5);
    lo + (1u64 << (e - 5)) / 2
}

struct Hist {
    b: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl Hist {
    fn new() -> Self {
        Hist {
            b: (0..NB).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }
    #[inline]
    fn record(&self, v: u64) {
        self.b[bucket(v)].fetch_add(1, Relaxed);
        if v > self.max.load(Relaxed) {
            self.max.fetch_max(v, Relaxed);
        }
    }
}

/// Merged view of several histograms.
struct Summary {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Summary {
    fn of<'a>(hists: impl Iterator<Item = &'a Hist>) -> Self {
        let mut counts = vec![0u64; NB];
        let mut max = 0;
        for h in hists {
            for (c, b) in counts.iter_mut().zip(h.b.iter()) {
                *c += b.load(Relaxed);
            }
            max = max.max(h.max.load(Relaxed));
        }
        let total = counts.iter().sum();
        Summary { counts, total, max }
    }
    fn pct(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let target = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= target {
                return bucket_value(i).min(self.max);
            }
        }
        self.max
    }
    fn ms(&self) -> Value {
        let f = |ns: u64| (ns as f64 / 1e4).round() / 100.0;
        json!({ "p50": f(self.pct(50.0)), "p99": f(self.pct(99.0)), "p999": f(self.pct(99.9)), "max": f(self.max) })
    }
}

/// Per-shard counters (subscriber i uses shard i % SHARDS) so that 2 threads rarely share a line.
const SHARDS: usize = 32;

#[repr(align(128))]
struct Shard {
    delivered: AtomicU64,
    dups: AtomicU64,
    gaps: AtomicU64,
    foreign: AtomicU64,
    last_ns: AtomicU64,
    hist: Hist,
}

struct Stats {
    shards: Vec<Shard>,
    subscribed: AtomicU64,
    sub_errors: AtomicU64,
    closed: AtomicU64,
    published: AtomicU64,
    replies: AtomicU64,
    reply_errors: AtomicU64,
    first_send_ns: AtomicU64,
}

impl Stats {
    fn new() -> Arc<Self> {
        Arc::new(Stats {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    delivered: AtomicU64::new(0),
                    dups: AtomicU64::new(0),
                    gaps: AtomicU64::new(0),
                    foreign: AtomicU64::new(0),
                    last_ns: AtomicU64::new(0),
                    hist: Hist::new(),
                })
                .collect(),
            subscribed: AtomicU64::new(0),
            sub_errors: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            published: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            reply_errors: AtomicU64::new(0),
            first_send_ns: AtomicU64::new(u64::MAX),
        })
    }
    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| f(s).load(Relaxed)).sum()
    }
    fn last_ns(&self) -> u64 {
        self.shards.iter().map(|s| s.last_ns.load(Relaxed)).max().unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime in seconds (USER_HZ = 100).
fn proc_cpu_s(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?) as f64 / 100.0)
}

/// CPU of the server (if known) and of this process over a window.
struct CpuWindow {
    server: Option<u32>,
    t0: Instant,
    s0: Option<f64>,
    c0: Option<f64>,
}

impl CpuWindow {
    fn start(server: Option<u32>) -> Self {
        CpuWindow {
            server,
            t0: Instant::now(),
            s0: server.and_then(|p| proc_cpu_s(&p.to_string())),
            c0: proc_cpu_s("self"),
        }
    }
    /// Server and client CPU over the window: % of one core and seconds.
    fn end(&self) -> CpuUse {
        let secs = self.t0.elapsed().as_secs_f64().max(1e-9);
        let used = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let server_s = used(self.s0, self.server.and_then(|p| proc_cpu_s(&p.to_string())));
        let client_s = used(self.c0, proc_cpu_s("self"));
        let pct = |x: Option<f64>| x.map(|x| (x / secs * 1000.0).round() / 10.0);
        CpuUse {
            server_pct: pct(server_s),
            client_pct: pct(client_s),
            server_s,
            client_s,
        }
    }
}

struct CpuUse {
    server_pct: Option<f64>,
    client_pct: Option<f64>,
    server_s: Option<f64>,
    client_s: Option<f64>,
}

impl CpuUse {
    /// CPU fields of the result; `per` = (name, count) for "server CPU µs per NAME".
    fn insert(&self, m: &mut serde_json::Map<String, Value>, per: (&str, u64)) {
        m.insert("server_cpu_pct".into(), json!(self.server_pct));
        m.insert("client_cpu_pct".into(), json!(self.client_pct));
        m.insert("server_cpu_s".into(), json!(self.server_s));
        m.insert("client_cpu_s".into(), json!(self.client_s));
        if let Some(s) = self.server_s {
            let us = s * 1e6 / per.1.max(1) as f64;
            m.insert(
                format!("server_cpu_us_per_{}", per.0),
                json!((us * 1000.0).round() / 1000.0),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CLI

#[derive(Parser)]
#[command(
    name = "switchboard-bench",
    about = "Load generator for the SocketAPI-compatible protocol"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One publisher, N subscribers of `chat`.
    Fanout(FanoutArgs),
    /// N keyed channels (`notifications`, user_id = i), one subscriber each.
    Channels(ChannelsArgs),
    /// N idle subscribed connections: the server's RSS per connection.
    Idle(IdleArgs),
    /// C connections echoing S-byte text messages for T seconds.
    Echo(EchoArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// WebSocket URL of the server.
    #[arg(long, default_value = "ws://127.0.0.1:8000/")]
    url: String,
    /// Label of the server in the result line.
    #[arg(long, default_value = "server")]
    server: String,
    /// Authenticate every connection with `?token=`: an HS256 token signed with this secret,
    /// for user `u<i>` (connection i; the publisher is `publisher`), expiring in an hour.
    #[arg(long)]
    token_secret: Option<String>,
    /// PID of the server process, for RSS and CPU from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections per loopback source address (127.0.0.1, .2, ...); the ephemeral range is ~28k.
    #[arg(long, default_value_t = 20000)]
    conns_per_source: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Hard limit on the run (connect + publish + drain), seconds.
    #[arg(long, default_value_t = 120.0)]
    max_secs: f64,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Free-form tag copied into the result (e.g. the run number).
    #[arg(long, default_value = "")]
    tag: String,
    /// Subscribers use the loadgen's own minimal client, which counts the bytes it reads
    /// (`wire_bytes_per_delivery` in the result).
    #[arg(long)]
    raw: bool,
    /// Subscribers offer permessage-deflate (`permessage-deflate; client_max_window_bits`, what
    /// browsers offer) and inflate what comes compressed; implies --raw.
    #[arg(long)]
    deflate: bool,
    /// With --deflate: count compressed messages without inflating them (no sequence check, no
    /// latency), so that the subscribers' inflating does not bound what is measured on a small
    /// machine.
    #[arg(long)]
    no_inflate: bool,
}

#[derive(Args, Clone)]
struct PubArgs {
    /// Publications to send.
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Payload size in bytes (the `text` of the action, padded).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// `x`: the marker padded with `x` to --size; `json`: the marker and a JSON document of
    /// about --size bytes (an order with its items and customer, different in every publication).
    #[arg(long, default_value = "x")]
    payload: String,
    /// Publications per second; omit for "as fast as replies allow" (see --window).
    #[arg(long)]
    rate: Option<f64>,
    /// Most actions sent and not yet answered.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Actions written per flush (1: one frame per write, so a server usually reads one action at
    /// a time; larger lets the server see several publications in one read and batch them).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Stop publishing after this many seconds even if --messages were not all sent.
    #[arg(long, default_value_t = 60.0)]
    publish_secs: f64,
    /// After the last reply, wait this long without a new delivery before declaring the rest lost.
    #[arg(long, default_value_t = 3.0)]
    drain_secs: f64,
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    publish: PubArgs,
    /// Subscribers.
    #[arg(long, default_value_t = 1000)]
    subs: usize,
}

#[derive(Args)]
struct ChannelsArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    publish: PubArgs,
    /// Channels (user ids), one subscriber each.
    #[arg(long, default_value_t = 10000)]
    channels: usize,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Idle subscribed connections.
    #[arg(long, default_value_t = 10000)]
    conns: usize,
    /// Seconds to let the server settle before reading its RSS.
    #[arg(long, default_value_t = 3.0)]
    settle_secs: f64,
}

#[derive(Args)]
struct EchoArgs {
    #[command(flatten)]
    common: Common,
    /// Connections.
    #[arg(long, default_value_t = 100)]
    conns: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 20)]
    size: usize,
    /// Duration of the measurement, seconds.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
}

// ---------------------------------------------------------------------------------------------
// connecting

fn target_addr(url: &str) -> SocketAddr {
    let rest = url.strip_prefix("ws://").expect("only ws:// URLs");
    let host = rest.split('/').next().unwrap();
    host.parse()
        .unwrap_or_else(|_| panic!("URL host must be IP:PORT, got {host}"))
}

/// The URL for a connection of `user`: `url` itself, or with `?token=` when the run
/// authenticates (`--token-secret`).
fn url_for(c: &Common, user: &str) -> String {
    let Some(secret) = &c.token_secret else {
        return c.url.clone();
    };
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let claims = json!({ "sub": user, "exp": exp });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key");
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("token");
    let sep = if c.url.contains('?') { '&' } else { '?' };
    format!("{}{sep}token={token}", c.url)
}

/// Source address of connection i: 127.0.0.(B + i / per_source), where B rotates with the process
/// id, so that consecutive runs do not find their ports still in TIME_WAIT from the previous one.
fn source_addr(i: usize, per_source: usize) -> Ipv4Addr {
    static BASE: OnceLock<usize> = OnceLock::new();
    let base = *BASE.get_or_init(|| 1 + (std::process::id() as usize % 25) * 8);
    let k = base + i / per_source.max(1);
    assert!(k < 255, "too many connections for the 127.0.0.x source addresses");
    Ipv4Addr::new(127, 0, 0, k as u8)
}

/// Linux's IP_BIND_ADDRESS_NO_PORT: `bind` to a source address then takes no port yet, and
/// `connect` picks one unique for the whole 4-tuple. Without it every bound socket needs a port
/// of its own on that address, and ports in TIME_WAIT from the previous run (against another
/// server port) make connects fail with "Cannot assign requested address".
fn bind_address_no_port(sock: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor, and a pointer to a c_int that outlives the call,
        // with its exact size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = sock;
}

/// A TCP connection from `source` (see `source_addr`), with retries.
async fn tcp_connect(target: SocketAddr, source: Ipv4Addr) -> Result<TcpStream, String> {
    let mut last = String::new();
    for attempt in 0..8u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
        }
        let mut sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        let _ = sock.set_reuseaddr(true);
        bind_address_no_port(&sock);
        if sock.bind(SocketAddr::new(source.into(), 0)).is_err() {
            sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        }
        match sock.connect(target).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = format!("connect: {e}"),
        }
    }
    Err(last)
}

/// A subscriber connection: tokio-websockets, or the loadgen's own (`--raw`, `--deflate`).
enum Conn {
    Tw(Ws),
    Raw(RawWs),
}

async fn connect(url: &str, target: SocketAddr, source: Ipv4Addr) -> Result<Ws, String> {
    let mut last = String::new();
    for attempt in 0..8u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
        }
        let mut sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        let _ = sock.set_reuseaddr(true);
        bind_address_no_port(&sock);
        if sock.bind(SocketAddr::new(source.into(), 0)).is_err() {
            // The source's ports are taken (often by TIME_WAIT from the previous run against
            // another server): let connect() choose, which picks ports by the whole 4-tuple.
            sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        }
        let stream = match sock.connect(target).await {
            Ok(s) => s,
            Err(e) => {
                last = format!("connect: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match ClientBuilder::new()
            .uri(url)
            .map_err(|e| e.to_string())?
            .connect_on(stream)
            .await
        {
            Ok((ws, _)) => return Ok(ws),
            Err(e) => last = format!("handshake: {e}"),
        }
    }
    Err(last)
}

/// Subscribes and waits for `subscribed` (skipping anything else, e.g. an earlier `data`).
async fn subscribe(ws: &mut Ws, msg: &str) -> Result<(), String> {
    ws.send(Message::text(msg.to_owned()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let m = match ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed before subscribed".into()),
        };
        if let Some(t) = m.as_text() {
            if t.contains("\"subscribed\"") {
                return Ok(());
            }
            if t.contains("\"error\"") {
                return Err(t.to_owned());
            }
        }
    }
}

fn progress(quiet: bool, line: String) {
    if !quiet {
        eprintln!("{line}");
    }
}

/// Opens `n` connections, subscribes each with `sub_msg(i)`, hands each to `run(i, ws)`.
/// Returns the seconds it took until all were subscribed (or failed).
async fn open_all<F, R, Fut>(c: &Common, n: usize, stats: &Arc<Stats>, sub_msg: F, run: R) -> f64
where
    F: Fn(usize) -> String + Send + Sync + 'static,
    R: Fn(usize, Conn) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let target = target_addr(&c.url);
    let sem = Arc::new(Semaphore::new(c.connect_concurrency));
    let sub_msg = Arc::new(sub_msg);
    let run = Arc::new(run);
    let t0 = Instant::now();
    let first_error = Arc::new(OnceLock::<String>::new());
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (url, st, sub_msg, run, first_error) = (
            url_for(c, &format!("u{i}")),
            stats.clone(),
            sub_msg.clone(),
            run.clone(),
            first_error.clone(),
        );
        let source = source_addr(i, c.conns_per_source);
        let (raw, deflate) = (c.raw || c.deflate, c.deflate);
        tokio::spawn(async move {
            let r = async {
                if raw {
                    let mut ws = RawWs::connect(&url, target, source, deflate).await?;
                    ws.send_text(&sub_msg(i)).await.map_err(|e| e.to_string())?;
                    while let Some(t) = ws.recv().await {
                        if t.windows(12).any(|w| w == b"\"subscribed\"") {
                            return Ok::<_, String>(Conn::Raw(ws));
                        }
                        if t.windows(7).any(|w| w == b"\"error\"") {
                            return Err(String::from_utf8_lossy(&t).into_owned());
                        }
                    }
                    return Err("closed before subscribed".into());
                }
                let mut ws = connect(&url, target, source).await?;
                subscribe(&mut ws, &sub_msg(i)).await?;
                Ok::<_, String>(Conn::Tw(ws))
            }
            .await;
            drop(permit);
            match r {
                Ok(ws) => {
                    st.subscribed.fetch_add(1, Relaxed);
                    run(i, ws).await;
                }
                Err(e) => {
                    let _ = first_error.set(e);
                    st.sub_errors.fetch_add(1, Relaxed);
                }
            }
        });
        if i % 2000 == 1999 {
            progress(
                c.quiet,
                format!(
                    "[connect] {} / {n} subscribed, {:.1}s",
                    stats.subscribed.load(Relaxed),
                    t0.elapsed().as_secs_f64()
                ),
            );
        }
    }
    let deadline = t0 + Duration::from_secs_f64(c.max_secs);
    while (stats.subscribed.load(Relaxed) + stats.sub_errors.load(Relaxed)) < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    progress(
        c.quiet,
        format!(
            "[connect] {} / {n} subscribed in {secs:.2}s, {} failed",
            stats.subscribed.load(Relaxed),
            stats.sub_errors.load(Relaxed)
        ),
    );
    if let Some(e) = first_error.get() {
        progress(c.quiet, format!("[connect] first error: {e}"));
    }
    secs
}

// ---------------------------------------------------------------------------------------------
// subscribers

/// `#SEQ:NS#` at the start of the payload text.
#[inline]
fn parse_marker(t: &[u8]) -> Option<(u64, u64)> {
    let p = t.iter().position(|&b| b == b'#')?;
    let mut i = p + 1;
    let mut seq = 0u64;
    while i < t.len() && t[i].is_ascii_digit() {
        seq = seq * 10 + (t[i] - b'0') as u64;
        i += 1;
    }
    if t.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    let mut ns = 0u64;
    while i < t.len() && t[i].is_ascii_digit() {
        ns = ns * 10 + (t[i] - b'0') as u64;
        i += 1;
    }
    Some((seq, ns))
}

/// Value of `"user_id":N` in the text.
#[inline]
fn parse_user_id(t: &[u8]) -> Option<i64> {
    const K: &[u8] = b"\"user_id\":";
    let p = t.windows(K.len()).position(|w| w == K)? + K.len();
    let mut i = p;
    while t.get(i) == Some(&b' ') {
        i += 1;
    }
    let mut v = 0i64;
    let start = i;
    while i < t.len() && t[i].is_ascii_digit() {
        v = v * 10 + (t[i] - b'0') as i64;
        i += 1;
    }
    (i > start).then_some(v)
}

async fn fanout_subscriber(i: usize, conn: Conn, stats: Arc<Stats>) {
    let shard = &stats.shards[i % SHARDS];
    let mut next: u64 = 0;
    let on_text = |t: &[u8], next: &mut u64| {
        if t.is_empty() && NO_INFLATE.load(Relaxed) {
            // A compressed publication, counted without being read.
            *next += 1;
            shard.delivered.fetch_add(1, Relaxed);
            shard.last_ns.fetch_max(now_ns(), Relaxed);
            return;
        }
        let Some((seq, ts)) = parse_marker(t) else {
            return;
        };
        let now = now_ns();
        if seq < *next {
            shard.dups.fetch_add(1, Relaxed);
            return;
        }
        if seq > *next {
            shard.gaps.fetch_add(seq - *next, Relaxed);
        }
        *next = seq + 1;
        shard.hist.record(now.saturating_sub(ts));
        shard.delivered.fetch_add(1, Relaxed);
        shard.last_ns.fetch_max(now, Relaxed);
    };
    match conn {
        Conn::Tw(mut ws) => {
            while let Some(r) = ws.next().await {
                let Ok(m) = r else { break };
                let Some(t) = m.as_text() else { continue };
                on_text(t.as_bytes(), &mut next);
            }
        }
        Conn::Raw(mut ws) => {
            while let Some(t) = ws.recv().await {
                on_text(&t, &mut next);
            }
        }
    }
    stats.closed.fetch_add(1, Relaxed);
}

async fn channel_subscriber(i: usize, conn: Conn, stats: Arc<Stats>, n: usize, send_ts: Arc<Vec<AtomicU64>>) {
    let Conn::Tw(mut ws) = conn else {
        eprintln!("channels: --raw / --deflate are for fanout and idle");
        std::process::exit(2);
    };
    let shard = &stats.shards[i % SHARDS];
    let mut k: u64 = 0;
    while let Some(r) = ws.next().await {
        let Ok(m) = r else { break };
        let Some(t) = m.as_text() else { continue };
        let t = t.as_bytes();
        let Some(uid) = parse_user_id(t) else { continue };
        if uid != i as i64 {
            // SocketAPI 0.2.0 delivers a keyed broadcast to every subscriber of the channel.
            shard.foreign.fetch_add(1, Relaxed);
            continue;
        }
        let now = now_ns();
        let seq = k * n as u64 + i as u64;
        k += 1;
        if let Some(ts) = send_ts
            .get(seq as usize)
            .map(|a| a.load(std::sync::atomic::Ordering::Acquire))
        {
            if ts != 0 {
                shard.hist.record(now.saturating_sub(ts));
            }
        } else {
            shard.dups.fetch_add(1, Relaxed);
            continue;
        }
        shard.delivered.fetch_add(1, Relaxed);
        shard.last_ns.fetch_max(now, Relaxed);
    }
    stats.closed.fetch_add(1, Relaxed);
}

// ---------------------------------------------------------------------------------------------
// publisher

/// Sends `messages` actions built by `make(seq, now_ns)`, at most `window` unanswered (and at
/// `rate`/s if given), counting replies in order (SocketAPI does not echo `id`).
/// Returns (publications, seconds from first send to last reply).
async fn publish(
    c: &Common,
    p: &PubArgs,
    stats: &Arc<Stats>,
    make: impl Fn(u64, u64) -> String,
    on_send: impl Fn(u64, u64),
) -> (u64, f64) {
    let target = target_addr(&c.url);
    let ws = connect(&url_for(c, "publisher"), target, source_addr(0, c.conns_per_source))
        .await
        .expect("publisher connect");
    let (mut sink, mut stream) = ws.split();
    let window = Arc::new(Semaphore::new(p.window.max(1)));
    let done_reading = Arc::new(AtomicBool::new(false));
    let reader = {
        let (window, stats, done_reading) = (window.clone(), stats.clone(), done_reading.clone());
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let Some(t) = m.as_text() else { continue };
                // The publisher subscribes to nothing: everything it gets is a reply, in order
                // (`{"type": "action", ...}` or `{"type": "error", ...}`; SocketAPI adds spaces).
                if t.contains("\"error\"") {
                    stats.reply_errors.fetch_add(1, Relaxed);
                }
                stats.replies.fetch_add(1, Relaxed);
                window.add_permits(1);
            }
            done_reading.store(true, Relaxed);
        })
    };
    let t0 = Instant::now();
    let stop_at = t0 + Duration::from_secs_f64(p.publish_secs);
    let interval = p.rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1e-3)));
    let mut sent = 0u64;
    let mut unflushed = 0usize;
    while sent < p.messages && Instant::now() < stop_at {
        if let Some(iv) = interval {
            let due = t0 + iv.mul_f64(sent as f64);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        match window.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                // Never wait for replies to actions that are still in our buffer.
                if unflushed > 0 {
                    if sink.flush().await.is_err() {
                        break;
                    }
                    unflushed = 0;
                }
                match tokio::time::timeout_at(stop_at.into(), window.acquire()).await {
                    Ok(Ok(permit)) => permit.forget(),
                    _ => break,
                }
            }
        }
        let now = now_ns();
        if sent == 0 {
            stats.first_send_ns.store(now, Relaxed);
        }
        on_send(sent, now);
        let msg = Message::text(make(sent, now));
        unflushed += 1;
        let flush = unflushed >= p.batch.max(1) || sent + 1 == p.messages || interval.is_some();
        let r = if flush {
            sink.send(msg).await
        } else {
            sink.feed(msg).await
        };
        if r.is_err() {
            break;
        }
        if flush {
            unflushed = 0;
        }
        sent += 1;
        stats.published.store(sent, Relaxed);
    }
    // wait for the outstanding replies
    let wait_until = Instant::now() + Duration::from_secs_f64(p.drain_secs.max(5.0));
    while stats.replies.load(Relaxed) < sent && Instant::now() < wait_until && !done_reading.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    reader.abort();
    (sent, secs)
}

/// A publication's text for `--payload json`: the marker, then an order as an application would
/// publish it (customer, items, shipping), items added until it is about `size` bytes; every
/// publication differs (ids, quantities, prices, status).
fn order_json(seq: u64, now: u64, size: usize) -> String {
    const NAMES: [&str; 8] = [
        "Espresso beans 1kg",
        "Oat milk, barista edition",
        "Paper cups (50)",
        "Ceramic mug 350ml",
        "Grinder burr set",
        "Milk jug 600ml",
        "Descaler tablets",
        "Tamper 58mm",
    ];
    let mut order = json!({
        "type": "order.updated",
        "id": format!("ord_{:012x}", seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16),
        "status": (["pending", "paid", "packed", "shipped"][(seq % 4) as usize]),
        "updated_at": format!("2026-11-30T05:{:02}:{:02}.{:03}Z", seq / 60 % 60, seq % 60, seq % 1000),
        "customer": {"id": 100_000 + seq % 5000, "name": "Ada Lovelace", "tier": "gold", "locale": "en-GB"},
        "shipping": {"method": "express", "city": "London", "postcode": "N1 9GU", "country": "GB"},
        "currency": "GBP",
        "total_cents": 12_345 + seq % 1000,
        "items": [],
    });
    let mut i = 0u64;
    loop {
        let text = format!("#{seq}:{now}# {order}");
        if text.len() + 100 > size || i == 64 {
            return text;
        }
        if let Some(items) = order["items"].as_array_mut() {
            items.push(json!({
                "sku": format!("SKU-{:05}", (seq * 7 + i * 131) % 99_991),
                "name": NAMES[(i % 8) as usize],
                "qty": (seq + i) % 9 + 1,
                "price_cents": 199 + (seq * 13 + i * 17) % 5000,
                "in_stock": (seq + i) % 3 != 0,
            }));
        }
        i += 1;
    }
}

/// Bytes read by `RawWs` connections (frames, headers included).
static WIRE_BYTES: AtomicU64 = AtomicU64::new(0);
/// Connections on which the server agreed to permessage-deflate.
static DEFLATE_AGREED: AtomicU64 = AtomicU64::new(0);
/// `--no-inflate`: compressed messages are handed on empty, not inflated.
static NO_INFLATE: AtomicBool = AtomicBool::new(false);

/// The loadgen's own subscriber connection for `--raw` / `--deflate`: counts what it reads,
/// offers permessage-deflate and inflates compressed messages.
struct RawWs {
    tcp: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    /// The agreed inflater, and whether to reset it per message (server_no_context_takeover).
    inflate: Option<(flate2::Decompress, bool)>,
    message: Vec<u8>,
    compressed: bool,
}

impl RawWs {
    async fn connect(url: &str, target: SocketAddr, source: Ipv4Addr, deflate: bool) -> Result<Self, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tcp_connect(target, source).await?;
        let rest = url.strip_prefix("ws://").ok_or("only ws:// URLs")?;
        let (host, path) = match rest.find('/') {
            Some(p) => (&rest[..p], &rest[p..]),
            None => (rest, "/"),
        };
        let offer = if deflate {
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        } else {
            ""
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        tcp.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(1024);
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if tcp.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 || buf.len() > 16384 {
                return Err("handshake: no response head".into());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101") {
            return Err(format!("handshake: {}", head.lines().next().unwrap_or("")));
        }
        let extension = head
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-extensions:"))
            .map(str::trim)
            .filter(|e| e.starts_with("permessage-deflate"));
        let inflate = extension.map(|e| {
            DEFLATE_AGREED.fetch_add(1, Relaxed);
            (flate2::Decompress::new(false), e.contains("server_no_context_takeover"))
        });
        buf.drain(..head_end);
        WIRE_BYTES.fetch_add(buf.len() as u64, Relaxed);
        Ok(Self {
            tcp,
            buf,
            pos: 0,
            inflate,
            message: Vec::new(),
            compressed: false,
        })
    }

    /// Sends a masked text frame, uncompressed.
    async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.send(0x81, text.as_bytes()).await
    }

    async fn send(&mut self, b0: u8, payload: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mask = [0x5a, 0x17, 0xc3, 0x2e];
        let mut frame = vec![b0];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).await
    }

    /// The next text or binary message (inflated), answering pings; None once closed.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        loop {
            let avail = &self.buf[self.pos..];
            if let Some((b0, header, len)) = frame_header(avail) {
                if avail.len() >= header + len {
                    let payload = avail[header..header + len].to_vec();
                    self.pos += header + len;
                    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
                    match opcode {
                        0x8 => return None,
                        0x9 => {
                            self.send(0x8a, &payload).await.ok()?;
                            continue;
                        }
                        0xa => continue,
                        0x1 | 0x2 => {
                            self.compressed = b0 & 0x40 != 0;
                            self.message = payload;
                        }
                        _ => self.message.extend_from_slice(&payload),
                    }
                    if fin {
                        let message = std::mem::take(&mut self.message);
                        if !self.compressed {
                            return Some(message);
                        }
                        if NO_INFLATE.load(Relaxed) {
                            return Some(Vec::new());
                        }
                        let (inflater, reset) = self.inflate.as_mut()?;
                        if *reset {
                            inflater.reset(false);
                        }
                        return inflate(inflater, &message);
                    }
                    continue;
                }
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            self.buf.reserve(64 * 1024);
            match self.tcp.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    WIRE_BYTES.fetch_add(n as u64, Relaxed);
                }
            }
        }
    }
}

/// First byte, header length and payload length of the (unmasked) frame at the start of `b`.
fn frame_header(b: &[u8]) -> Option<(u8, usize, usize)> {
    let (b0, b1) = (*b.first()?, *b.get(1)?);
    match b1 & 0x7f {
        126 => Some((b0, 4, u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize)),
        127 => Some((b0, 10, u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize)),
        n => Some((b0, 2, n as usize)),
    }
}

fn inflate(d: &mut flate2::Decompress, data: &[u8]) -> Option<Vec<u8>> {
    let mut input = Vec::with_capacity(data.len() + 4);
    input.extend_from_slice(data);
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(data.len() * 4 + 64);
    let start = d.total_in();
    loop {
        let consumed = (d.total_in() - start) as usize;
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        d.decompress_vec(&input[consumed..], &mut out, flate2::FlushDecompress::Sync)
            .ok()?;
        if (d.total_in() - start) as usize == input.len() && out.len() < out.capacity() {
            return Some(out);
        }
    }
}

/// Pads `head` with `x` to `size` bytes.
fn padded(head: String, size: usize) -> String {
    let mut s = head;
    if s.len() < size {
        s.extend(std::iter::repeat_n('x', size - s.len()));
    }
    s
}

/// Waits until `expected` deliveries or no new delivery for `drain` seconds; progress each second.
async fn drain(
    c: &Common,
    stats: &Arc<Stats>,
    expected: impl Fn() -> u64,
    publishing: &AtomicBool,
    drain: f64,
    deadline: Instant,
) {
    let mut last_count = 0;
    let mut last_change = Instant::now();
    let mut last_tick = Instant::now();
    let mut tick_count = 0;
    let t0 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let d = stats.sum(|s| &s.delivered);
        if d != last_count {
            last_count = d;
            last_change = Instant::now();
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            let rate = (d - tick_count) as f64 / last_tick.elapsed().as_secs_f64();
            progress(
                c.quiet,
                format!(
                    "[run {:.0}s] published {} replies {} delivered {d} ({:.0}/s) rss {} KiB",
                    t0.elapsed().as_secs_f64(),
                    stats.published.load(Relaxed),
                    stats.replies.load(Relaxed),
                    rate,
                    c.server_pid.and_then(proc_rss_kib).unwrap_or(0)
                ),
            );
            tick_count = d;
            last_tick = Instant::now();
        }
        if publishing.load(Relaxed) {
            continue;
        }
        if d >= expected() || last_change.elapsed().as_secs_f64() > drain || Instant::now() > deadline {
            break;
        }
    }
}

fn base(c: &Common, scenario: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("scenario".into(), json!(scenario));
    m.insert("server".into(), json!(c.server));
    if !c.tag.is_empty() {
        m.insert("tag".into(), json!(c.tag));
    }
    m
}

fn emit(m: serde_json::Map<String, Value>) -> ! {
    println!("{}", Value::Object(m));
    // Connections are dropped without closing handshakes; the bench script restarts servers.
    std::process::exit(0);
}

async fn run_publish_scenario(scenario: &str, c: Common, p: PubArgs, n: usize, keyed: bool) -> ! {
    let _ = now_ns();
    let stats = Stats::new();
    let rss0 = c.server_pid.and_then(proc_rss_kib);
    let deadline = Instant::now() + Duration::from_secs_f64(c.max_secs);
    let send_ts: Arc<Vec<AtomicU64>> = Arc::new(if keyed {
        (0..p.messages).map(|_| AtomicU64::new(0)).collect()
    } else {
        Vec::new()
    });
    let connect_secs = if keyed {
        let (st, ts) = (stats.clone(), send_ts.clone());
        open_all(
            &c,
            n,
            &stats,
            |i| format!(r#"{{"type":"subscribe","channel":"notifications","data":{{"user_id":{i}}}}}"#),
            move |i, ws| channel_subscriber(i, ws, st.clone(), n, ts.clone()),
        )
        .await
    } else {
        let st = stats.clone();
        open_all(
            &c,
            n,
            &stats,
            |_| r#"{"type":"subscribe","channel":"chat"}"#.to_owned(),
            move |i, ws| fanout_subscriber(i, ws, st.clone()),
        )
        .await
    };
    let subs = stats.subscribed.load(Relaxed);
    // Only once subscribed: the subscriptions' replies are read.
    NO_INFLATE.store(c.no_inflate, Relaxed);
    let rss_subscribed = c.server_pid.and_then(proc_rss_kib);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cpu = CpuWindow::start(c.server_pid);
    let publishing = Arc::new(AtomicBool::new(true));
    let size = p.size;
    let json_payload = p.payload == "json";
    let wire0 = WIRE_BYTES.load(Relaxed);
    let drain_task = {
        let (c, stats, publishing) = (c.clone(), stats.clone(), publishing.clone());
        let drain_secs = p.drain_secs;
        tokio::spawn(async move {
            let st = stats.clone();
            drain(
                &c,
                &stats,
                move || {
                    let pubd = st.published.load(Relaxed);
                    if keyed {
                        pubd
                    } else {
                        pubd * subs
                    }
                },
                &publishing,
                drain_secs,
                deadline,
            )
            .await
        })
    };
    let (published, publish_secs) = if keyed {
        let ts = send_ts.clone();
        publish(
            &c,
            &p,
            &stats,
            |seq, now| {
                let uid = seq % n as u64;
                let msg = padded(format!("#{seq}:{now}#"), size);
                format!(r#"{{"type":"action","channel":"send_notification","data":{{"user_id":{uid},"message":"{msg}"}},"id":{seq}}}"#)
            },
            move |seq, now| ts[seq as usize].store(now, std::sync::atomic::Ordering::Release),
        )
        .await
    } else {
        publish(
            &c,
            &p,
            &stats,
            |seq, now| {
                let msg = if json_payload {
                    serde_json::to_string(&order_json(seq, now, size)).unwrap_or_default()
                } else {
                    format!("\"{}\"", padded(format!("#{seq}:{now}#"), size))
                };
                format!(r#"{{"type":"action","channel":"send_message","data":{{"text":{msg}}},"id":{seq}}}"#)
            },
            |_, _| {},
        )
        .await
    };
    publishing.store(false, Relaxed);
    let _ = drain_task.await;
    let cpu = cpu.end();
    let rss_end = c.server_pid.and_then(proc_rss_kib);

    let delivered = stats.sum(|s| &s.delivered);
    let wire = WIRE_BYTES.load(Relaxed) - wire0;
    let expected = if keyed { published } else { published * subs };
    let first = stats.first_send_ns.load(Relaxed);
    let last = stats.last_ns();
    let deliver_secs = if last > first && first != u64::MAX {
        (last - first) as f64 / 1e9
    } else {
        f64::NAN
    };
    let lat = Summary::of(stats.shards.iter().map(|s| &s.hist));
    let mut m = base(&c, scenario);
    if keyed {
        m.insert("channels".into(), json!(n));
    } else {
        m.insert("subs".into(), json!(n));
    }
    m.insert("subscribed".into(), json!(subs));
    m.insert("size".into(), json!(p.size));
    m.insert("payload".into(), json!(p.payload));
    m.insert("no_inflate".into(), json!(c.no_inflate));
    if c.raw || c.deflate {
        m.insert("deflate_offered".into(), json!(c.deflate));
        m.insert("deflate_agreed".into(), json!(DEFLATE_AGREED.load(Relaxed)));
        m.insert("wire_bytes".into(), json!(wire));
        m.insert(
            "wire_bytes_per_delivery".into(),
            json!((wire as f64 / delivered.max(1) as f64 * 10.0).round() / 10.0),
        );
    }
    m.insert("messages".into(), json!(p.messages));
    m.insert("published".into(), json!(published));
    m.insert("rate".into(), json!(p.rate));
    m.insert("window".into(), json!(p.window));
    m.insert("batch".into(), json!(p.batch));
    m.insert("publish_secs".into(), json!(round3(publish_secs)));
    m.insert("publish_per_s".into(), json!((published as f64 / publish_secs).round()));
    m.insert("expected".into(), json!(expected));
    m.insert("delivered".into(), json!(delivered));
    m.insert("lost".into(), json!(expected.saturating_sub(delivered)));
    m.insert("duplicates".into(), json!(stats.sum(|s| &s.dups)));
    m.insert("gaps".into(), json!(stats.sum(|s| &s.gaps)));
    if keyed {
        m.insert("foreign".into(), json!(stats.sum(|s| &s.foreign)));
    }
    m.insert("deliver_secs".into(), json!(round3(deliver_secs)));
    m.insert(
        "deliveries_per_s".into(),
        json!((delivered as f64 / deliver_secs).round()),
    );
    m.insert("latency_ms".into(), lat.ms());
    m.insert("connect_secs".into(), json!(round3(connect_secs)));
    m.insert("connect_failed".into(), json!(stats.sub_errors.load(Relaxed)));
    m.insert("closed_by_server".into(), json!(stats.closed.load(Relaxed)));
    m.insert("reply_errors".into(), json!(stats.reply_errors.load(Relaxed)));
    m.insert("rss_start_kib".into(), json!(rss0));
    m.insert("rss_subscribed_kib".into(), json!(rss_subscribed));
    m.insert("rss_end_kib".into(), json!(rss_end));
    cpu.insert(&mut m, ("delivery", delivered));
    emit(m)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn idle(a: IdleArgs) -> ! {
    let c = a.common;
    let stats = Stats::new();
    let rss0 = c.server_pid.and_then(proc_rss_kib);
    let connect_secs = open_all(
        &c,
        a.conns,
        &stats,
        |_| r#"{"type":"subscribe","channel":"chat"}"#.to_owned(),
        |_, conn| async move {
            // Read (and answer pings) until the process exits.
            match conn {
                Conn::Tw(mut ws) => while let Some(Ok(_)) = ws.next().await {},
                Conn::Raw(mut ws) => while ws.recv().await.is_some() {},
            }
        },
    )
    .await;
    let subs = stats.subscribed.load(Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(a.settle_secs)).await;
    let rss1 = c.server_pid.and_then(proc_rss_kib);
    let mut m = base(&c, "idle");
    m.insert("conns".into(), json!(a.conns));
    m.insert("subscribed".into(), json!(subs));
    if c.raw || c.deflate {
        m.insert("deflate_offered".into(), json!(c.deflate));
        m.insert("deflate_agreed".into(), json!(DEFLATE_AGREED.load(Relaxed)));
    }
    m.insert("connect_secs".into(), json!(round3(connect_secs)));
    m.insert("connects_per_s".into(), json!((subs as f64 / connect_secs).round()));
    m.insert("connect_failed".into(), json!(stats.sub_errors.load(Relaxed)));
    m.insert("rss_start_kib".into(), json!(rss0));
    m.insert("rss_idle_kib".into(), json!(rss1));
    if let (Some(r0), Some(r1)) = (rss0, rss1) {
        let per = (r1 as f64 - r0 as f64) / subs.max(1) as f64;
        m.insert("kib_per_conn".into(), json!((per * 100.0).round() / 100.0));
    }
    emit(m)
}

async fn echo(a: EchoArgs) -> ! {
    let c = a.common;
    let _ = now_ns();
    let target = target_addr(&c.url);
    let hist = Arc::new(Hist::new());
    let count = Arc::new(AtomicU64::new(0));
    let bytes_moved = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(Semaphore::new(c.connect_concurrency));
    let t_conn = Instant::now();
    let mut conns = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let url = c.url.clone();
        let source = source_addr(i, c.conns_per_source);
        conns.push(tokio::spawn(async move {
            let r = connect(&url, target, source).await;
            drop(permit);
            r
        }));
    }
    let mut sockets = Vec::with_capacity(a.conns);
    for t in conns {
        sockets.push(t.await.unwrap().expect("echo connect"));
    }
    let connect_secs = t_conn.elapsed().as_secs_f64();
    let start = Arc::new(tokio::sync::Barrier::new(a.conns + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let (hist, count, bytes_moved, start, stop) = (
            hist.clone(),
            count.clone(),
            bytes_moved.clone(),
            start.clone(),
            stop.clone(),
        );
        let payload = bytes::Bytes::from("x".repeat(a.size));
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            while !stop.load(Relaxed) {
                let t = now_ns();
                if ws.send(Message::text(payload.clone())).await.is_err() {
                    return false;
                }
                loop {
                    match ws.next().await {
                        Some(Ok(m)) if m.is_text() || m.is_binary() => {
                            bytes_moved.fetch_add(m.as_payload().len() as u64, Relaxed);
                            break;
                        }
                        Some(Ok(_)) => continue,
                        _ => return false,
                    }
                }
                hist.record(now_ns() - t);
                count.fetch_add(1, Relaxed);
            }
            true
        }));
    }
    start.wait().await;
    let cpu = CpuWindow::start(c.server_pid);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(a.secs);
    let mut last = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        let n = count.load(Relaxed);
        progress(
            c.quiet,
            format!(
                "[echo {:.0}s] {n} echoes ({:.0}/s)",
                t0.elapsed().as_secs_f64(),
                (n - last) as f64
            ),
        );
        last = n;
    }
    let n = count.load(Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu.end();
    stop.store(true, Relaxed);
    let mut failed = 0;
    for t in tasks {
        if let Ok(Ok(false)) | Err(_) = tokio::time::timeout(Duration::from_secs(5), t).await {
            failed += 1;
        }
    }
    let lat = Summary::of(std::iter::once(&*hist));
    let mut m = base(&c, "echo");
    m.insert("conns".into(), json!(a.conns));
    m.insert("size".into(), json!(a.size));
    m.insert("secs".into(), json!(round3(secs)));
    m.insert("echoes".into(), json!(n));
    m.insert("echoes_per_s".into(), json!((n as f64 / secs).round()));
    m.insert(
        "mb_per_s".into(),
        json!(((bytes_moved.load(Relaxed) as f64 / secs / 1e6) * 100.0).round() / 100.0),
    );
    m.insert("rtt_ms".into(), lat.ms());
    m.insert("connect_secs".into(), json!(round3(connect_secs)));
    m.insert("failed_conns".into(), json!(failed));
    cpu.insert(&mut m, ("echo", n));
    emit(m)
}

fn main() {
    let cli = Cli::parse();
    let threads = std::env::var("BENCH_CLIENT_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Fanout(a) => run_publish_scenario("fanout", a.common, a.publish, a.subs, false).await,
            Cmd::Channels(a) => run_publish_scenario("channels", a.common, a.publish, a.channels, true).await,
            Cmd::Idle(a) => idle(a).await,
            Cmd::Echo(a) => echo(a).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut prev = 0;
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1000,
            12345,
            1_000_000,
            123_456_789,
            u64::MAX / 2,
        ] {
            let b = bucket(v);
            assert!(b >= prev);
            prev = b;
            let back = bucket_value(b);
            let err = (back as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.04, "{v} -> {b} -> {back}");
        }
    }

    #[test]
    fn markers() {
        assert_eq!(
            parse_marker(br##"{"type":"data","channel":"chat","data":{"message":"#12:345#xxx"}}"##),
            Some((12, 345))
        );
        assert_eq!(parse_user_id(br#"{"data":{"user_id": 42,"type":"alert"}}"#), Some(42));
    }
}
