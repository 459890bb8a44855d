//! Load client (tokio-websockets client) for the echo servers.
//!
//! echo: `loadgen echo --addr 127.0.0.1:9001 --conns 100 --msgs 2000 --size 20 [--text]`
//!   opens N connections, then each sends M messages of S bytes, awaiting each echo
//!   before sending the next. Prints one JSON line with messages/s and MB/s
//!   (MB = 1e6 bytes of payload echoed, counted once per message).
//! mem:  `loadgen mem --addr 127.0.0.1:9001 --conns 10000 --pid PID`
//!   reads the server's VmRSS, opens K connections (one handshake each), lets them
//!   idle, reads VmRSS again and prints KiB per connection.
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Barrier, Semaphore};
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, WebSocketStream};
use ws_crates_bench::{arg, flag};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn num(name: &str, default: usize) -> usize {
    arg(name).map(|v| v.parse().expect("number")).unwrap_or(default)
}

async fn connect(uri: &str) -> Ws {
    let mut tries = 0;
    loop {
        match ClientBuilder::new().uri(uri).unwrap().connect().await {
            Ok((ws, _)) => return ws,
            Err(e) => {
                tries += 1;
                if tries > 20 {
                    panic!("connect {uri}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
        }
    }
}

/// utime+stime of a process in clock ticks (USER_HZ = 100 on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // fields after the ")" of comm: state is field 3; utime=14, stime=15
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn vm_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

async fn echo(uri: String) {
    let conns = num("conns", 100);
    let msgs = num("msgs", 1000);
    let size = num("size", 20);
    let text = flag("text");
    let timeout = Duration::from_secs(num("timeout", 120) as u64);
    let barrier = Arc::new(Barrier::new(conns + 1));
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let uri = uri.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut ws = connect(&uri).await;
            barrier.wait().await;
            let payload = "x".repeat(size);
            let bin = Bytes::from(payload.clone().into_bytes());
            for _ in 0..msgs {
                let m = if text { Message::text(payload.clone()) } else { Message::binary(bin.clone()) };
                ws.send(m).await.expect("send");
                loop {
                    let r = ws.next().await.expect("connection closed").expect("recv");
                    if r.is_text() || r.is_binary() {
                        assert_eq!(r.as_payload().len(), size, "echo size");
                        break;
                    }
                }
            }
            let _ = ws.close().await;
        }));
    }
    barrier.wait().await;
    let pid = num("pid", 0) as u32;
    let cpu0 = if pid != 0 { cpu_ticks(pid) } else { 0 };
    let start = Instant::now();
    tokio::time::timeout(timeout, async {
        for t in tasks {
            t.await.expect("client task");
        }
    })
    .await
    .expect("echo run timed out");
    let secs = start.elapsed().as_secs_f64();
    let total = (conns * msgs) as f64;
    // Server CPU time per echoed message: insensitive to other load on the machine.
    let server_cpu_s = if pid != 0 { (cpu_ticks(pid) - cpu0) as f64 / 100.0 } else { f64::NAN };
    println!(
        "{{\"mode\":\"echo\",\"conns\":{conns},\"msgs\":{msgs},\"size\":{size},\"text\":{text},\"secs\":{secs:.3},\"msgs_per_s\":{:.0},\"mb_per_s\":{:.2},\"server_cpu_s\":{server_cpu_s:.2},\"server_cpu_us_per_msg\":{:.3}}}",
        total / secs,
        total * size as f64 / secs / 1e6,
        server_cpu_s * 1e6 / total
    );
}

async fn mem(uri: String) {
    let conns = num("conns", 10000);
    let pid = num("pid", 0) as u32;
    assert!(pid != 0, "--pid required");
    let settle = Duration::from_millis(num("settle-ms", 2000) as u64);
    let sem = Arc::new(Semaphore::new(num("concurrency", 200)));
    let before = vm_rss_kib(pid);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let uri = uri.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await.unwrap();
            connect(&uri).await
        }));
    }
    let mut held = Vec::with_capacity(conns);
    for t in tasks {
        held.push(t.await.expect("connect task"));
    }
    let connect_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let after = vm_rss_kib(pid);
    println!(
        "{{\"mode\":\"mem\",\"conns\":{},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"kib_per_conn\":{:.2},\"connect_secs\":{connect_secs:.2}}}",
        held.len(),
        (after as f64 - before as f64) / held.len() as f64
    );
    // Exit without closing handshakes; the server is killed by run.sh afterwards.
    std::process::exit(0);
}

#[tokio::main]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let addr = arg("addr").unwrap_or_else(|| "127.0.0.1:9001".into());
    let uri = format!("ws://{addr}/");
    match mode.as_str() {
        "echo" => echo(uri).await,
        "mem" => mem(uri).await,
        _ => {
            eprintln!("usage: loadgen (echo|mem) --addr HOST:PORT ...");
            std::process::exit(2);
        }
    }
}
