//! The reconnecting client: the server goes away and comes back on the same port; the client
//! reconnects with backoff, its subscription receives broadcasts again, its channel is re-opened
//! with the same parameters and works again, and the server's own channels are announced anew.
//! Close codes decide: 4500–4999 end the client for good, 4000–4499 reconnect.

#[path = "duplex_support.rs"]
mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use support::*;
use switchboard::client::{ChannelState, Client, ClientChannel, ClientError, ConnectionState, ServerClose};
use switchboard::ws::{self, Handler, Text, WebSocket};
use switchboard::{Channel, DuplexError, Router, Shutdown};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

const T: Duration = Duration::from_secs(5);

/// A server with a `ticker` channel broadcast every 20 ms (with the server's generation), a
/// `chat` route that reports the parameters it was opened with, and a server-opened `push`
/// channel on every connection.
fn start(addr: &str, generation: u64, opens: std_mpsc::Sender<Value>, with_chat: bool) -> ServerThread {
    ServerThread::start(
        addr,
        move || {
            let mut router = Router::new();
            router.channel(Channel::new("ticker", |p: Value| async move { Ok::<_, String>(p) }));
            if with_chat {
                router.route("chat", move |channel, params| {
                    let opens = opens.clone();
                    async move {
                        let _ = opens.send(params);
                        channel.on_sync("ping", move |_| json!({ "pong": generation }))?;
                        channel.on("hang", |_| std::future::pending::<Value>())?;
                        Ok::<_, DuplexError>(())
                    }
                });
            }
            router.on_connect(move |connection| async move {
                if let Ok(push) = connection.open_channel(Some("push")) {
                    let _ = push.emit("hello", json!({ "generation": generation }));
                }
            });
            router
        },
        move |node| {
            tokio::spawn(async move {
                loop {
                    let _ = node.broadcast("ticker", json!({ "generation": generation })).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        },
    )
}

async fn stop(server: ServerThread) {
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stopped");
}

async fn wait_state(client: &Client, state: ConnectionState) {
    let mut rx = client.watch_state();
    tokio::time::timeout(T, rx.wait_for(|s| *s == state))
        .await
        .expect("state in time")
        .expect("client alive");
}

#[tokio::test]
async fn reconnects_and_restores_subscriptions_and_channels() {
    let (opens_tx, opens) = std_mpsc::channel();
    let server = start("127.0.0.1:0", 1, opens_tx.clone(), true);
    let addr: SocketAddr = server.addr;

    let (pushed_tx, mut pushed) = unbounded_channel::<(ClientChannel, Value)>();
    let client = Client::builder(&server.url())
        .config(fast_config())
        .on_channel(move |channel| {
            let tx = pushed_tx.clone();
            let me = channel.clone();
            let _ = channel.on_sync("hello", move |p| drop(tx.send((me.clone(), p))));
        })
        .connect()
        .await
        .expect("connect");
    assert_eq!(client.state(), ConnectionState::Open);

    let mut ticker = client.subscribe("ticker", json!({})).await.expect("subscribe");
    let chat = client.open("chat", json!({ "room": "lobby" })).await.expect("open");
    assert_eq!(opens.recv_timeout(T).expect("opened"), json!({ "room": "lobby" }));
    assert_eq!(chat.request("ping", json!(null), T).await, Ok(json!({ "pong": 1 })));
    let (push1, hello) = next(&mut pushed).await;
    assert_eq!(hello, json!({ "generation": 1 }));
    assert_eq!(
        tokio::time::timeout(T, ticker.next()).await.expect("tick"),
        Some(json!({ "generation": 1 }))
    );

    // A request in flight when the server dies fails with Disconnected, at once.
    let c = chat.clone();
    let in_flight = tokio::spawn(async move { c.request("hang", json!(null), Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop(server).await;
    assert_eq!(
        tokio::time::timeout(T, in_flight)
            .await
            .expect("fails at once")
            .expect("join"),
        Err(ClientError::Disconnected)
    );
    wait_state(&client, ConnectionState::Connecting).await;
    tokio::time::timeout(T, push1.closed())
        .await
        .expect("server-opened channel closes on a drop");
    assert_eq!(chat.state(), ChannelState::Reopening);
    assert_eq!(chat.emit("x", 1), Err(ClientError::NotOpen("chat".into())));
    assert!(matches!(
        client.action("x", json!({}), Duration::from_millis(100)).await,
        Err(ClientError::Timeout { .. })
    ));
    // Let a few reconnect attempts fail against the closed port.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while ticker.try_next().is_some() {}

    // The server comes back on the same port.
    let server = start(&addr.to_string(), 2, opens_tx, true);
    wait_state(&client, ConnectionState::Open).await;
    chat.ready(T).await.expect("re-opened");
    assert_eq!(
        opens.recv_timeout(T).expect("re-opened on the server"),
        json!({ "room": "lobby" }),
        "same parameters"
    );
    assert_eq!(
        chat.request("ping", json!(null), T).await,
        Ok(json!({ "pong": 2 })),
        "handlers and channel work again"
    );
    let (push2, hello) = next(&mut pushed).await;
    assert_eq!(hello, json!({ "generation": 2 }));
    assert!(!push2.is_closed() && push1.is_closed());
    let tick = loop {
        let tick = tokio::time::timeout(T, ticker.next())
            .await
            .expect("tick again")
            .expect("subscription alive");
        if tick["generation"] == 2 {
            break tick;
        }
    };
    assert_eq!(tick, json!({ "generation": 2 }));
    // The client's own handlers survived too: the server can request from the re-opened channel.
    drop(server);
}

#[tokio::test]
async fn refused_restores_end_the_subscription_and_close_the_channel() {
    let (opens_tx, _opens) = std_mpsc::channel();
    let server = start("127.0.0.1:0", 1, opens_tx.clone(), true);
    let addr = server.addr;
    let client = Client::connect(&server.url(), fast_config()).await.expect("connect");
    let chat = client.open("chat", json!({})).await.expect("open");
    let mut ticker = client.subscribe("ticker", json!({})).await.expect("subscribe");
    stop(server).await;
    wait_state(&client, ConnectionState::Connecting).await;

    // The new server has no `chat` route: the re-open is refused and the channel closes.
    let _server = start(&addr.to_string(), 2, opens_tx, false);
    wait_state(&client, ConnectionState::Open).await;
    tokio::time::timeout(T, chat.closed())
        .await
        .expect("closed after the refusal");
    assert_eq!(chat.close_reason().as_deref(), Some("Channel 'chat' not found."));
    assert_eq!(chat.ready(T).await, Err(ClientError::Closed("chat".into())));
    // The subscription is restored (the channel exists there).
    let tick = loop {
        let tick = tokio::time::timeout(T, ticker.next())
            .await
            .expect("tick")
            .expect("alive");
        if tick["generation"] == 2 {
            break tick;
        }
    };
    assert_eq!(tick, json!({ "generation": 2 }));
}

#[tokio::test]
async fn closing_while_reconnecting_stops_for_good() {
    let (opens_tx, _opens) = std_mpsc::channel();
    let server = start("127.0.0.1:0", 1, opens_tx, true);
    let client = Client::connect(&server.url(), fast_config()).await.expect("connect");
    let chat = client.open("chat", json!({})).await.expect("open");
    let mut ticker = client.subscribe("ticker", json!({})).await.expect("subscribe");
    stop(server).await;
    wait_state(&client, ConnectionState::Connecting).await;
    client.close();
    tokio::time::timeout(T, client.closed()).await.expect("closed");
    tokio::time::timeout(T, chat.closed()).await.expect("channel closed");
    while ticker.try_next().is_some() {}
    assert_eq!(tokio::time::timeout(T, ticker.next()).await.expect("ends"), None);
    assert_eq!(client.state(), ConnectionState::Closed);
}

/// Triggering the server's `Shutdown` ends its WebSocket connections (close 1001) so that
/// clients move to a new server. (Regression: upgraded WebSockets used to ignore the signal and
/// keep clients connected to a server that had stopped.)
#[tokio::test]
async fn shutdown_of_the_server_ends_its_websockets() {
    let server = serve(Router::new()).await;
    let client = client(&server).await;
    server.shutdown.trigger();
    let mut rx = client.watch_state();
    let dropped = tokio::time::timeout(T, rx.wait_for(|s| *s != ConnectionState::Open)).await;
    assert!(
        dropped.is_ok(),
        "the client is still connected {T:?} after the server's shutdown"
    );
}

/// When the closing server closes a connection.
#[derive(Clone, Copy)]
enum CloseWhen {
    /// As soon as it opens.
    Open,
    /// On the first `action` (it answers `subscribe` and `open` before that).
    Action,
}

/// A raw server handler that speaks just enough of the protocol (`subscribed`, `opened`) and then
/// closes the connection with `code` and `reason`, reporting each new connection.
struct Closer {
    code: u16,
    reason: &'static str,
    when: CloseWhen,
    connections: UnboundedSender<()>,
}

impl Handler for Closer {
    async fn on_open(&mut self, ws: &WebSocket) {
        let _ = self.connections.send(());
        if let CloseWhen::Open = self.when {
            ws.close(self.code, self.reason).expect("a valid close code");
        }
    }

    async fn on_message(&mut self, ws: &WebSocket, text: Text) {
        let message: Value = serde_json::from_str(&text).expect("JSON from the client");
        let (channel, id) = (message["channel"].clone(), message["id"].clone());
        let answer = match message["type"].as_str() {
            Some("subscribe") => json!({ "type": "subscribed", "channel": channel, "id": id }),
            Some("open") => json!({ "type": "opened", "channel": channel, "id": id }),
            Some("action") => {
                ws.close(self.code, self.reason).expect("a valid close code");
                return;
            }
            _ => return,
        };
        let _ = ws.send_text(answer.to_string());
    }
}

/// Serves [`Closer`] on 127.0.0.1:0; the receiver gets one `()` per connection.
async fn closing_server(code: u16, reason: &'static str, when: CloseWhen) -> (String, UnboundedReceiver<()>) {
    let (connections, accepted) = unbounded_channel();
    let endpoint = ws::endpoint(
        move |_| Closer {
            code,
            reason,
            when,
            connections: connections.clone(),
        },
        ws::Config::default(),
    );
    let app = axum::Router::new().route("/", endpoint);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("local addr"));
    tokio::spawn(switchboard::http::serve(listener, app, Shutdown::new()));
    (url, accepted)
}

/// A close code in 4500–4999 means "do not reconnect": the client ends exactly as with reconnect
/// off (state `Closed`, the waiting call fails, channels close, subscriptions end), and keeps the
/// server's code and reason.
#[tokio::test]
async fn a_close_code_from_4500_ends_the_client_for_good() {
    let (url, mut accepted) = closing_server(4501, "banned", CloseWhen::Action).await;
    let client = Client::connect(&url, fast_config()).await.expect("connect");
    next(&mut accepted).await;
    let mut ticker = client.subscribe("ticker", json!({})).await.expect("subscribe");
    let chat = client.open("chat", json!({})).await.expect("open");
    assert_eq!(client.server_close(), None);

    let banned = ServerClose {
        code: 4501,
        reason: "banned".into(),
    };
    // The server answers this action by closing the connection with 4501.
    let waiting = client.action("bye", json!({}), T).await;
    assert_eq!(waiting, Err(ClientError::ServerClosed(banned.clone())));
    wait_state(&client, ConnectionState::Closed).await;
    tokio::time::timeout(T, client.closed()).await.expect("closed");
    tokio::time::timeout(T, chat.closed()).await.expect("channel closed");
    assert_eq!(
        chat.close_reason().as_deref(),
        Some("closed by the server: close code 4501 (banned)")
    );
    assert_eq!(tokio::time::timeout(T, ticker.next()).await.expect("ends"), None);
    assert_eq!(client.server_close(), Some(banned.clone()));
    assert!(banned.is_final());

    // Later calls say why, and what to do.
    let again = client.action("x", json!({}), T).await;
    assert_eq!(again, Err(ClientError::ServerClosed(banned.clone())));
    let text = again.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("4501 (banned)") && text.contains("new client"), "{text}");
    assert_eq!(
        client.open("chat", json!({})).await.err(),
        Some(ClientError::ServerClosed(banned))
    );

    // No reconnect: with these settings one would come within 20–40 ms; give it ten times that.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(accepted.try_recv().is_err(), "the client connected again");
    assert_eq!(client.state(), ConnectionState::Closed);
}

/// The same when the server refuses the connection as soon as it opens.
#[tokio::test]
async fn a_close_code_from_4500_at_open_stops_after_one_connection() {
    let (url, mut accepted) = closing_server(4999, "", CloseWhen::Open).await;
    let client = Client::connect(&url, fast_config())
        .await
        .expect("the handshake succeeds");
    wait_state(&client, ConnectionState::Closed).await;
    next(&mut accepted).await;
    assert_eq!(
        client.server_close(),
        Some(ServerClose {
            code: 4999,
            reason: String::new()
        })
    );
    assert!(matches!(
        client.wait_open(T).await,
        Err(ClientError::ServerClosed(ServerClose { code: 4999, .. }))
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(accepted.try_recv().is_err(), "the client connected again");
}

/// A close code in 4000–4499 means "reconnect with backoff", as after any drop.
#[tokio::test]
async fn a_close_code_from_4000_to_4499_reconnects() {
    let (url, mut accepted) = closing_server(4001, "try again later", CloseWhen::Open).await;
    let client = Client::connect(&url, fast_config()).await.expect("connect");
    next(&mut accepted).await;
    next(&mut accepted).await;
    assert_ne!(client.state(), ConnectionState::Closed);
    let close = client.server_close().expect("the server's close is kept");
    assert_eq!(
        close,
        ServerClose {
            code: 4001,
            reason: "try again later".into()
        }
    );
    assert!(!close.is_final());
    client.close();
    tokio::time::timeout(T, client.closed()).await.expect("closed");
    assert_eq!(
        client.server_close().map(|c| c.code),
        Some(4001),
        "our own close is not the server's"
    );
}
