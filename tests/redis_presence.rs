//! Presence across nodes over a real `redis-server`: members and counts cover every node, joins
//! and leaves on one node reach the subscribers of another, and the members of a node that was
//! killed (no clean shutdown) stop counting within the presence TTL.

mod redis_support;

use redis_support::{Client, RedisServer, WAIT};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use switchboard::{Channel, Node, RedisBroker, Router, Shutdown};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

#[derive(Serialize, Deserialize)]
struct Members {}

struct TestNode {
    addr: SocketAddr,
    shutdown: Shutdown,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// A node with the demo's `members` channel (presence, join_leave), as `switchboard serve` has.
async fn node(redis: &str) -> TestNode {
    let mut router = Router::new();
    router.channel(Channel::new("members", |_: Members| async move { Ok::<_, String>(Value::Null) }).join_leave());
    let broker = RedisBroker::connect(redis).await.expect("connect the Redis broker");
    let node = Node::builder(router)
        .broker(broker)
        .presence_ttl(Duration::from_secs(2))
        .build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    TestNode { addr, shutdown }
}

/// A member of `members`; `presence_diff`s that arrive while it waits for a reply are kept.
struct Member {
    client: Client,
    diffs: Vec<Value>,
    next_id: u64,
}

impl Member {
    async fn join(addr: SocketAddr) -> Member {
        let mut member = Member {
            client: Client::connect(addr).await,
            diffs: Vec::new(),
            next_id: 0,
        };
        let answer = member.ask(json!({"type": "subscribe", "channel": "members"})).await;
        assert_eq!(answer["type"], "subscribed", "{answer}");
        member
    }

    /// Sends `message` with a fresh id and returns the reply carrying it.
    async fn ask(&mut self, mut message: Value) -> Value {
        self.next_id += 1;
        message["id"] = json!(self.next_id);
        self.client.send(message);
        loop {
            let got = self.client.recv().await;
            if got["id"] == json!(self.next_id) {
                return got;
            }
            assert_eq!(got["type"], "presence_diff", "{got}");
            self.diffs.push(got);
        }
    }

    /// The next `presence_diff` (kept or arriving within `wait`).
    async fn diff(&mut self, wait: Duration) -> Option<Value> {
        if !self.diffs.is_empty() {
            return Some(self.diffs.remove(0));
        }
        self.client.try_recv(wait).await
    }

    /// `presence_stats` of `members` until it says `clients` (panics after WAIT).
    async fn wait_clients(&mut self, clients: u64) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.ask(json!({"type": "presence_stats", "channel": "members"})).await;
            if stats["clients"] == clients {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "stats stayed {stats}, expected {clients} clients"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn members_joins_and_leaves_cover_every_node() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (node(&redis.url()).await, node(&redis.url()).await);
    let mut on_a = Member::join(a.addr).await;
    let on_b = Member::join(b.addr).await;
    let _also_b = Member::join(b.addr).await;
    // Counted and listed from node A, with node B's members (anonymous: no users).
    let stats = on_a.wait_clients(3).await;
    assert_eq!(stats["users"], 0);
    let list = on_a.ask(json!({"type": "presence", "channel": "members"})).await;
    assert_eq!(list["clients"].as_array().map(Vec::len), Some(3), "{list}");
    // B's joins reached A's subscriber as diffs (own join, then two from B, in some grouping).
    let mut joined = 0;
    let deadline = Instant::now() + WAIT;
    while joined < 3 {
        assert!(Instant::now() < deadline, "{joined} joins seen on A");
        if let Some(diff) = on_a.diff(Duration::from_millis(500)).await {
            joined += diff["joins"].as_array().map_or(0, Vec::len);
        }
    }
    // A member on B closes: A's subscriber is told, and the counts follow.
    let _ = on_b.client.ws.close(1000, "bye");
    let deadline = Instant::now() + WAIT;
    let left = loop {
        assert!(Instant::now() < deadline, "no leave seen on A");
        if let Some(diff) = on_a.diff(Duration::from_millis(500)).await {
            if !diff["leaves"].as_array().is_some_and(Vec::is_empty) {
                break diff;
            }
        }
    };
    assert_eq!(left["leaves"].as_array().map(Vec::len), Some(1), "{left}");
    on_a.wait_clients(2).await;
}

#[tokio::test]
async fn a_killed_nodes_members_expire() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = node(&redis.url()).await;
    // Node B is `switchboard serve` (its demo has `members`), killed without a shutdown.
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--broker",
            &redis.url(),
            "--presence-ttl-secs",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchboard serve");
    let stdout = serve.stdout.take().expect("stdout");
    let line = tokio::time::timeout(WAIT, BufReader::new(stdout).lines().next_line())
        .await
        .expect("listening line")
        .expect("read")
        .expect("a line");
    let b: SocketAddr = line
        .trim()
        .trim_start_matches("switchboard listening on http://")
        .trim_end_matches('/')
        .parse()
        .expect("address");
    let mut on_a = Member::join(a.addr).await;
    let _on_b = Member::join(b).await;
    let _also_b = Member::join(b).await;
    on_a.wait_clients(3).await;
    serve.start_kill().expect("kill");
    let _ = serve.wait().await;
    // Within the TTL (2 s) and a read, B's members are gone.
    let started = Instant::now();
    on_a.wait_clients(1).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}
