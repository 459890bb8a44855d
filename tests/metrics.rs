//! `/metrics`, `/healthz` and `/readyz` over real sockets: counts by namespace (channels named
//! `chat:…`, `news:…`), deliveries, the fan-out histogram, presence and history sizes, both
//! exposition formats; readiness with the memory broker, and with a real `redis-server` that is
//! stopped (503 naming Redis) and started again (200).

mod common;
#[cfg(feature = "redis")]
mod redis_support;

use common::{Client, WAIT};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchboard::{Channel, ChannelRef, Node, Router, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Serialize, Deserialize)]
struct Text {
    #[serde(default)]
    text: String,
}

/// An HTTP/1.1 GET (`Connection: close`): status, `Content-Type`, body.
async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("an answer in time")
        .expect("read");
    let response = String::from_utf8(response).expect("UTF-8 answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

async fn metrics(addr: SocketAddr) -> String {
    let (status, content_type, body) = get(addr, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    body
}

/// Asserts that every line of `want` is a line of `text`.
fn assert_lines(text: &str, want: &[&str]) {
    for line in want {
        assert!(text.lines().any(|l| l == *line), "no line `{line}` in:\n{text}");
    }
}

struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn serve(node: &Node) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    Server { addr, shutdown }
}

fn channel(router: &mut Router, name: &str) -> ChannelRef<Text> {
    router.channel(Channel::new(name, |p: Text| async move {
        Ok::<_, String>(json!({ "text": p.text }))
    }))
}

async fn subscribe(client: &mut Client, channel: &str) {
    client
        .exchange(
            json!({"type": "subscribe", "channel": channel, "data": {}, "id": channel}),
            json!({"type": "subscribed", "channel": channel, "id": channel}),
        )
        .await;
}

async fn expect_data(client: &mut Client, channel: &str, text: &str) {
    let message = client.recv().await;
    assert_eq!(
        (&message["type"], &message["channel"], &message["data"]["text"]),
        (&json!("data"), &json!(channel), &json!(text)),
        "{message}"
    );
}

#[tokio::test]
async fn counts_by_namespace_fan_out_presence_and_history() {
    let mut router = Router::new();
    let lobby = channel(&mut router, "chat:lobby");
    let dm = channel(&mut router, "chat:dm");
    let sport = channel(&mut router, "news:sport");
    let plain = channel(&mut router, "plain");
    router.channel(
        Channel::new(
            "room:a",
            |p: Text| async move { Ok::<_, String>(json!({ "text": p.text })) },
        )
        .presence(),
    );
    let feed = router.channel(
        Channel::new("feed:main", |p: Text| async move {
            Ok::<_, String>(json!({ "text": p.text }))
        })
        .history(10, Duration::from_secs(300)),
    );
    let node = Node::new(router);
    let server = serve(&node).await;
    let url = format!("ws://{}/", server.addr);

    let before = metrics(server.addr).await;
    assert_lines(
        &before,
        &[
            "# TYPE switchboard_publications_total counter",
            "switchboard_publications_total 0",
            "switchboard_fanout_seconds_count 0",
            "switchboard_presence_members 0",
            "switchboard_history_streams 0",
        ],
    );

    let (mut a, mut b, mut c) = (
        Client::connect(&url).await,
        Client::connect(&url).await,
        Client::connect(&url).await,
    );
    subscribe(&mut a, "chat:lobby").await;
    subscribe(&mut a, "news:sport").await;
    subscribe(&mut a, "room:a").await;
    subscribe(&mut b, "chat:lobby").await;
    subscribe(&mut c, "chat:dm").await;

    let say = |text: &str| Text { text: text.into() };
    for text in ["one", "two"] {
        lobby.broadcast(say(text)).await.expect("publish on chat:lobby");
    }
    dm.broadcast(say("psst")).await.expect("publish on chat:dm");
    for text in ["1", "2", "3"] {
        sport.broadcast(say(text)).await.expect("publish on news:sport");
    }
    plain.broadcast(say("nobody")).await.expect("publish on plain");
    feed.broadcast(say("kept 1")).await.expect("publish on feed:main");
    feed.broadcast(say("kept 2")).await.expect("publish on feed:main");

    // Every publication reached its subscribers (in order per connection).
    for text in ["one", "two"] {
        expect_data(&mut a, "chat:lobby", text).await;
    }
    for text in ["1", "2", "3"] {
        expect_data(&mut a, "news:sport", text).await;
    }
    for text in ["one", "two"] {
        expect_data(&mut b, "chat:lobby", text).await;
    }
    expect_data(&mut c, "chat:dm", "psst").await;

    let text = metrics(server.addr).await;
    assert_lines(
        &text,
        &[
            "switchboard_connections 3",
            "switchboard_subscriptions 5",
            "switchboard_publications_total 9",
            "switchboard_publish_failures_total 0",
            // 2 × 2 on chat:lobby, 1 on chat:dm, 3 on news:sport; none on plain and feed:main.
            "switchboard_deliveries_total 8",
            "# TYPE switchboard_namespace_publications_total counter",
            "switchboard_namespace_publications_total{namespace=\"\"} 1",
            "switchboard_namespace_publications_total{namespace=\"chat\"} 3",
            "switchboard_namespace_publications_total{namespace=\"feed\"} 2",
            "switchboard_namespace_publications_total{namespace=\"news\"} 3",
            "switchboard_namespace_deliveries_total{namespace=\"chat\"} 5",
            "switchboard_namespace_deliveries_total{namespace=\"news\"} 3",
            "switchboard_namespace_deliveries_total{namespace=\"\"} 0",
            "switchboard_namespace_deliveries_total{namespace=\"feed\"} 0",
            // One observation per publication that reached a subscriber: 2 + 1 + 3.
            "# TYPE switchboard_fanout_seconds histogram",
            "switchboard_fanout_seconds_count 6",
            "switchboard_fanout_seconds_bucket{le=\"+Inf\"} 6",
            "switchboard_broker_errors_total{op=\"publish\"} 0",
            "switchboard_broker_errors_total{op=\"subscribe\"} 0",
            "switchboard_broker_errors_total{op=\"history\"} 0",
            "switchboard_broker_errors_total{op=\"presence\"} 0",
            "switchboard_limit_refusals_total{reason=\"origin\"} 0",
            "switchboard_presence_topics 1",
            "switchboard_presence_members 1",
            "switchboard_history_streams 1",
            "switchboard_history_publications 2",
        ],
    );

    // OpenMetrics for a scraper that asks for it (Prometheus does).
    let (status, content_type, open) = get(
        server.addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert_eq!(status, 200, "{open}");
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_lines(
        &open,
        &[
            "# TYPE switchboard_publications counter",
            "switchboard_publications_total 9",
            "switchboard_namespace_deliveries_total{namespace=\"chat\"} 5",
        ],
    );
    assert!(open.ends_with("# EOF\n"), "{open}");

    // A subscriber leaves: the gauges follow.
    a.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics(server.addr).await;
        if text.lines().any(|l| l == "switchboard_presence_members 0") {
            assert_lines(&text, &["switchboard_presence_topics 0", "switchboard_subscriptions 2"]);
            break;
        }
        assert!(Instant::now() < deadline, "the member stayed:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn healthz_and_readyz_with_the_memory_broker() {
    let node = Node::new(Router::new());
    let server = serve(&node).await;
    assert_eq!(get(server.addr, "/healthz", None).await.0, 200);
    assert_eq!(get(server.addr, "/healthz", None).await.2, "ok\n");
    let (status, _, body) = get(server.addr, "/readyz", None).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
}

/// Polls `/readyz` until it answers `status`; returns its body.
#[cfg(feature = "redis")]
async fn wait_readyz(addr: SocketAddr, status: u16) -> String {
    let deadline = Instant::now() + redis_support::WAIT;
    loop {
        let (got, _, body) = get(addr, "/readyz", None).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {got} ({body:?}), expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_redis() {
    use redis_support::{Chat, RedisServer, TestNode};
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    let node = TestNode::start(&url).await;
    assert_eq!(wait_readyz(node.addr, 200).await, "ready\n");
    let text = metrics(node.addr).await;
    assert!(
        !text.contains("switchboard_history_streams"),
        "Redis keeps the streams:\n{text}"
    );

    redis.kill();
    let body = wait_readyz(node.addr, 503).await;
    assert!(
        body.starts_with(&format!("not ready: broker unavailable: redis at {url}: ")),
        "{body}"
    );
    // The healthz of the process is unaffected.
    assert_eq!(get(node.addr, "/healthz", None).await.0, 200);
    let failed = node.chat.broadcast(Chat {
        message: "lost".into(),
        seq: 0,
    });
    assert!(failed.await.is_err(), "Redis is down");
    assert_lines(
        &metrics(node.addr).await,
        &[
            "switchboard_publish_failures_total 1",
            "switchboard_broker_errors_total{op=\"publish\"} 1",
        ],
    );

    redis.restart().await;
    assert_eq!(wait_readyz(node.addr, 200).await, "ready\n");
}
