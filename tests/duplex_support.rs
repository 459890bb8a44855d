//! Shared helpers of the bidirectional-channel and client tests (tests/duplex_*.rs,
//! tests/client_*.rs), included with `#[path = "duplex_support.rs"] mod support;`: in-process
//! servers on 127.0.0.1:0, a raw WebSocket client that records every frame, and fast client
//! settings. (Compiled once more as a test target of its own, with no tests.)
#![allow(dead_code)]

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use switchboard::client::{Client, ClientConfig};
use switchboard::ws::{self, Handler, Text, WebSocket};
use switchboard::{Node, Router, Shutdown};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(5);

/// A server running in the test's runtime.
pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub node: Node,
}

impl Server {
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

/// Serves `router` on 127.0.0.1:0 in the current runtime.
pub async fn serve(router: Router) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let node = Node::new(router);
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    Server { addr, shutdown, node }
}

/// A server in a runtime (and thread) of its own, so that stopping it ends every connection it
/// has, as killing a process would.
pub struct ServerThread {
    pub addr: SocketAddr,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Starts a server for `make_router()` on `addr` (`127.0.0.1:0` for any port); `ready` runs
    /// inside its runtime with the node once it listens (e.g. to start a broadcaster).
    pub fn start(
        addr: &str,
        make_router: impl FnOnce() -> Router + Send + 'static,
        ready: impl FnOnce(Node) + Send + 'static,
    ) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let addr = addr.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                // The port may still be held for a moment by the previous server.
                let listener = loop {
                    match TcpListener::bind(&addr).await {
                        Ok(listener) => break listener,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                let node = Node::new(make_router());
                addr_tx
                    .send(listener.local_addr().expect("local addr"))
                    .expect("report addr");
                ready(node.clone());
                tokio::spawn(switchboard::http::serve(listener, node.app(), Shutdown::new()));
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            });
            // Dropping the runtime cancels every task: listener and connections alike.
            drop(runtime);
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("server started");
        Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Stops the server and waits until its sockets are closed.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Client settings for tests: fast reconnects, short timeouts.
pub fn fast_config() -> ClientConfig {
    ClientConfig {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

pub async fn client(server: &Server) -> Client {
    Client::connect(&server.url(), fast_config())
        .await
        .expect("client connects")
}

/// A raw WebSocket client that records every text frame as JSON.
pub struct Raw {
    pub ws: WebSocket,
    rx: UnboundedReceiver<Value>,
}

struct Forward(UnboundedSender<Value>);

impl Handler for Forward {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text.to_string()));
        let _ = self.0.send(value);
    }
}

impl Raw {
    pub async fn connect(url: &str) -> Raw {
        let (tx, rx) = unbounded_channel();
        let ws = ws::connect(url, Forward(tx), ws::Config::default())
            .await
            .expect("raw connect");
        Raw { ws, rx }
    }

    pub fn send(&self, message: Value) {
        self.ws.send_text(message.to_string()).expect("raw send");
    }

    /// The next frame, within `WAIT`.
    pub async fn recv(&mut self) -> Value {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a frame in time")
            .expect("connection open")
    }

    /// The next frame within `within`, or None.
    pub async fn recv_within(&mut self, within: Duration) -> Option<Value> {
        tokio::time::timeout(within, self.rx.recv()).await.ok().flatten()
    }

    /// Skips frames until one matches.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let frame = self.recv().await;
            if pred(&frame) {
                return frame;
            }
        }
    }
}

/// Waits until `cond` holds (polling), at most `within`.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads one gauge or counter from the server's `GET /metrics`.
pub async fn metric(addr: SocketAddr, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect for /metrics");
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("send request");
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.expect("read response");
    body.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("metric {name} in {body}"))
}

/// A route that hands every opened channel and its parameters to the test.
pub fn probe_route(router: &mut Router, name: &str) -> UnboundedReceiver<(switchboard::Duplex, Value)> {
    let (tx, rx) = unbounded_channel();
    router.route(name, move |channel, params| {
        let tx = tx.clone();
        async move { tx.send((channel, params)).map_err(|_| "test gone".to_owned()) }
    });
    rx
}

/// The next item of a test channel, within `WAIT`.
pub async fn next<T>(rx: &mut UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("sender alive")
}
