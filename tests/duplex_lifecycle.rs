//! Bidirectional channels over real sockets: timeouts both ways, closing from either side with
//! requests pending on both sides, using a closed channel, and the end of the connection.

#[path = "duplex_support.rs"]
mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::*;
use switchboard::client::{ChannelState, ClientConfig, ClientError};
use switchboard::{DuplexError, Router};

const LONG: Duration = Duration::from_secs(30);
const T: Duration = Duration::from_secs(5);

async fn slow(payload: Value) -> Value {
    tokio::time::sleep(Duration::from_secs(2)).await;
    payload
}

#[tokio::test]
async fn timeouts_both_ways() {
    let mut router = Router::new();
    let mut probe = probe_route(&mut router, "probe");
    let server = serve(router).await;
    let client = client(&server).await;
    let channel = client.open("probe", json!({})).await.expect("open");
    let (duplex, _) = next(&mut probe).await;

    // A server request the client does not answer in time.
    channel.on("slow", slow).expect("on");
    let started = Instant::now();
    let timeout = Duration::from_millis(300);
    match duplex.request("slow", json!(1), timeout).await {
        Err(DuplexError::Timeout {
            channel,
            event,
            timeout: t,
        }) => {
            assert_eq!((channel.as_str(), event.as_str(), t), ("probe", "slow", timeout));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= timeout && took < Duration::from_millis(1500), "{took:?}");

    // A client request to a server handler that does not return in time.
    duplex.on("slow", slow).expect("on");
    let started = Instant::now();
    match channel.request("slow", json!(1), timeout).await {
        Err(ClientError::Timeout { what, timeout: t }) => {
            assert_eq!(t, timeout);
            assert!(what.contains("'slow'") && what.contains("'probe'"), "{what}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= timeout && took < Duration::from_millis(1500), "{took:?}");

    // The late replies are ignored and the channel still works both ways.
    tokio::time::sleep(Duration::from_millis(1900)).await;
    duplex.on_sync("now", |p| p).expect("on");
    channel.on_sync("now", |p| p).expect("on");
    assert_eq!(channel.request("now", json!("c"), T).await, Ok(json!("c")));
    assert_eq!(duplex.request("now", json!("s"), T).await, Ok(json!("s")));
}

/// Sets up a hanging handler on both sides and starts one long request in each direction.
async fn pending_both_ways(
    duplex: &switchboard::Duplex,
    channel: &switchboard::client::ClientChannel,
) -> (
    tokio::task::JoinHandle<Result<Value, DuplexError>>,
    tokio::task::JoinHandle<Result<Value, ClientError>>,
) {
    duplex.on("hang", |_| std::future::pending::<Value>()).expect("on");
    channel
        .on("hang", |_| async {
            tokio::time::sleep(LONG).await;
            json!("late")
        })
        .expect("on");
    let d = duplex.clone();
    let server_request = tokio::spawn(async move { d.request("hang", json!(null), LONG).await });
    let c = channel.clone();
    let client_request = tokio::spawn(async move { c.request("hang", json!(null), LONG).await });
    // Let both requests reach the other side.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (server_request, client_request)
}

#[tokio::test]
async fn close_from_the_client_fails_pending_requests_on_both_sides_at_once() {
    let mut router = Router::new();
    let mut probe = probe_route(&mut router, "probe");
    let server = serve(router).await;
    let client = client(&server).await;
    let channel = client.open("probe", json!({})).await.expect("open");
    let (duplex, _) = next(&mut probe).await;
    let (server_request, client_request) = pending_both_ways(&duplex, &channel).await;

    let started = Instant::now();
    channel.close();
    assert_eq!(
        client_request.await.expect("join"),
        Err(ClientError::Closed("probe".into()))
    );
    assert_eq!(
        server_request.await.expect("join"),
        Err(DuplexError::Closed("probe".into()))
    );
    tokio::time::timeout(T, duplex.closed())
        .await
        .expect("server side closed");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "at once, not at the timeout: {:?}",
        started.elapsed()
    );
    assert!(duplex.is_closed() && channel.is_closed());
    assert!(duplex.connection().channel("probe").is_none());

    // Using the closed channel: Closed on both sides.
    assert_eq!(channel.emit("x", json!(1)), Err(ClientError::Closed("probe".into())));
    assert_eq!(
        channel.request("x", json!(1), T).await,
        Err(ClientError::Closed("probe".into()))
    );
    assert!(matches!(channel.on_sync("x", |_| ()), Err(ClientError::Closed(_))));
    assert_eq!(duplex.emit("x", json!(1)), Err(DuplexError::Closed("probe".into())));
    assert_eq!(
        duplex.request("x", json!(1), T).await,
        Err(DuplexError::Closed("probe".into()))
    );
    assert!(matches!(duplex.on_sync("x", |_| ()), Err(DuplexError::Closed(_))));
    // The name can be opened again: a new channel.
    let again = client.open("probe", json!({})).await.expect("re-open");
    let (duplex2, _) = next(&mut probe).await;
    duplex2.on_sync("ping", |_| json!("pong")).expect("on");
    assert_eq!(again.request("ping", json!(null), T).await, Ok(json!("pong")));
}

#[tokio::test]
async fn close_from_the_server_fails_pending_requests_on_both_sides_at_once() {
    let mut router = Router::new();
    let mut probe = probe_route(&mut router, "probe");
    let server = serve(router).await;
    let client = client(&server).await;
    let channel = client.open("probe", json!({})).await.expect("open");
    let (duplex, _) = next(&mut probe).await;
    let (server_request, client_request) = pending_both_ways(&duplex, &channel).await;

    let started = Instant::now();
    duplex.close_with("room deleted");
    assert_eq!(
        server_request.await.expect("join"),
        Err(DuplexError::Closed("probe".into()))
    );
    assert_eq!(
        client_request.await.expect("join"),
        Err(ClientError::Closed("probe".into()))
    );
    tokio::time::timeout(T, channel.closed())
        .await
        .expect("client side closed");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "at once: {:?}",
        started.elapsed()
    );
    assert_eq!(channel.close_reason().as_deref(), Some("room deleted"));
    assert_eq!(channel.state(), ChannelState::Closed);
    assert!(client.channel("probe").is_none());
    assert_eq!(channel.emit("x", json!(1)), Err(ClientError::Closed("probe".into())));
    assert_eq!(duplex.emit("x", json!(1)), Err(DuplexError::Closed("probe".into())));
}

#[tokio::test]
async fn the_end_of_the_connection_closes_its_channels() {
    let mut router = Router::new();
    let mut probe = probe_route(&mut router, "probe");
    let (tx, mut server_opened) = tokio::sync::mpsc::unbounded_channel();
    router.on_connect(move |connection| {
        let tx = tx.clone();
        async move {
            if let Ok(channel) = connection.open_channel(Some("push")) {
                let _ = tx.send(channel);
            }
        }
    });
    let server = serve(router).await;
    let config = ClientConfig {
        reconnect: false,
        ..fast_config()
    };
    let client = switchboard::client::Client::connect(&server.url(), config)
        .await
        .expect("connect");
    let channel = client.open("probe", json!({})).await.expect("open");
    let (duplex, _) = next(&mut probe).await;
    let push = next(&mut server_opened).await;
    let (server_request, client_request) = pending_both_ways(&duplex, &channel).await;
    let pushed = client.channel("push").expect("server-opened channel known");

    let started = Instant::now();
    client.close();
    assert_eq!(
        server_request.await.expect("join"),
        Err(DuplexError::Closed("probe".into()))
    );
    let client_result = client_request.await.expect("join");
    assert!(
        matches!(client_result, Err(ClientError::Closed(_) | ClientError::Disconnected)),
        "{client_result:?}"
    );
    tokio::time::timeout(T, duplex.closed())
        .await
        .expect("route channel closed");
    tokio::time::timeout(T, push.closed())
        .await
        .expect("server-opened channel closed");
    tokio::time::timeout(T, pushed.closed())
        .await
        .expect("client side closed");
    tokio::time::timeout(T, client.closed()).await.expect("client closed");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(channel.is_closed());
    assert_eq!(duplex.emit("x", 1), Err(DuplexError::Closed("probe".into())));
    assert!(duplex.connection().channel("probe").is_none());
    assert_eq!(
        client.open("probe", json!({})).await.err(),
        Some(ClientError::Closed("client".into()))
    );
}

#[tokio::test]
async fn a_dropped_connection_without_reconnect_closes_the_client_side() {
    let server = ServerThread::start(
        "127.0.0.1:0",
        || {
            let mut router = Router::new();
            router.route("hang", |channel, _| async move {
                channel.on("hang", |_| std::future::pending::<Value>()).map(drop)
            });
            router
        },
        |_| {},
    );
    let config = ClientConfig {
        reconnect: false,
        ..fast_config()
    };
    let client = switchboard::client::Client::connect(&server.url(), config)
        .await
        .expect("connect");
    let channel = client.open("hang", json!({})).await.expect("open");
    let c = channel.clone();
    let request = tokio::spawn(async move { c.request("hang", json!(null), LONG).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The server goes away.
    let started = Instant::now();
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stopped");
    assert_eq!(request.await.expect("join"), Err(ClientError::Disconnected));
    tokio::time::timeout(T, channel.closed()).await.expect("closed");
    tokio::time::timeout(T, client.closed()).await.expect("client closed");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(channel.emit("x", 1), Err(ClientError::Closed("hang".into())));
}
