//! The Rust client's side of identity over real sockets: `connect` first on every connection,
//! `identity()`, a fresh token from `get_token` after a 4005 (subscriptions restored), refresh
//! before the expiry, and stopping for good on 4500 or on a 4005 it cannot renew.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard::client::{Client, ClientConfig, ClientError, ConnectionState};
use switchboard::{Channel, ChannelRef, Jwt, Node, Router, Shutdown};
use tokio::net::TcpListener;

const SECRET: &[u8] = b"client-auth-test-secret";
const WAIT: Duration = Duration::from_secs(10);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

#[derive(Serialize, Deserialize)]
struct Text {
    #[serde(default)]
    text: String,
}

struct Server {
    url: String,
    news: ChannelRef<Text>,
    shutdown: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn start() -> Server {
    let mut router = Router::new();
    let news = router.channel(Channel::new("news", |p: Text| async move {
        Ok::<_, String>(json!({ "text": p.text }))
    }));
    router.channel(
        Channel::new(
            "room",
            |p: Text| async move { Ok::<_, String>(json!({ "text": p.text })) },
        )
        .token_required(),
    );
    let node = Node::builder(router).auth(Jwt::hmac(SECRET).into_auth()).build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    Server { url, news, shutdown }
}

fn quick() -> ClientConfig {
    ClientConfig {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        ..Default::default()
    }
}

async fn wait_state(client: &Client, want: ConnectionState) {
    let mut rx = client.watch_state();
    tokio::time::timeout(WAIT, rx.wait_for(|s| *s == want))
        .await
        .unwrap_or_else(|_| panic!("state stayed {:?}, expected {want:?}", client.state()))
        .unwrap();
}

#[tokio::test]
async fn a_token_makes_the_client_connected_as_its_user() {
    let server = start().await;
    let client = Client::builder(&server.url)
        .config(quick())
        .token(token(json!({"sub": "42", "exp": now() + 3600})))
        .connect()
        .await
        .unwrap();
    wait_state(&client, ConnectionState::Open).await;
    let identity = client.identity().expect("connected");
    assert_eq!(identity.user, "42");
    assert!(identity.expires_in.unwrap() > 3500);
    assert!(!identity.client.is_empty());
    // Subscribing works once connected (it waits for `connected`).
    let mut news = client.subscribe("news", json!({})).await.unwrap();
    server.news.broadcast(Text { text: "hi".into() }).await.unwrap();
    let got = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut news))
        .await
        .unwrap();
    assert_eq!(got, Some(json!({"text": "hi"})));
}

#[tokio::test]
async fn after_4005_get_token_is_asked_and_the_subscriptions_come_back() {
    let server = start().await;
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    // The first token expires in 2 s and its refresh fails (get_token errs on the second call),
    // so the server closes with 4005; the third call gives an hour-long token.
    let client = Client::builder(&server.url)
        .config(quick())
        .get_token(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Ok(token(json!({"sub": "7", "exp": now() + 2}))),
                    1 => Err("token service down".to_owned()),
                    _ => Ok(token(json!({"sub": "7", "exp": now() + 3600}))),
                }
            }
        })
        .connect()
        .await
        .unwrap();
    wait_state(&client, ConnectionState::Open).await;
    let first = client.identity().unwrap().client;
    let mut news = client.subscribe("news", json!({})).await.unwrap();
    // Closed with 4005, then connected again with a fresh token.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(identity) = client.identity() {
            if identity.client != first {
                assert!(identity.expires_in.unwrap() > 3500);
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnect with a fresh token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.server_close().map(|c| c.code), Some(4005));
    assert!(calls.load(Ordering::SeqCst) >= 3, "get_token asked again");
    // The subscription is back: a publication reaches it (retried until the re-subscribe lands).
    let got = loop {
        server.news.broadcast(Text { text: "again".into() }).await.unwrap();
        if let Ok(got) =
            tokio::time::timeout(Duration::from_millis(200), futures_util::StreamExt::next(&mut news)).await
        {
            break got;
        }
        assert!(tokio::time::Instant::now() < deadline, "subscription not restored");
    };
    assert_eq!(got, Some(json!({"text": "again"})));
}

#[tokio::test]
async fn a_refresh_before_the_expiry_keeps_the_connection() {
    let server = start().await;
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let client = Client::builder(&server.url)
        .config(quick())
        .get_token(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            // 4 s, then an hour: the client refreshes at 3 s.
            let exp = if n == 0 { now() + 4 } else { now() + 3600 };
            async move { Ok::<_, String>(token(json!({"sub": "8", "exp": exp}))) }
        })
        .connect()
        .await
        .unwrap();
    wait_state(&client, ConnectionState::Open).await;
    let first = client.identity().unwrap().client;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let identity = client.identity().expect("still connected");
    assert_eq!(identity.client, first, "the same connection");
    assert!(identity.expires_in.unwrap() > 3500, "refreshed");
    assert_eq!(client.server_close(), None);
}

#[tokio::test]
async fn an_invalid_token_stops_the_client_for_good() {
    let server = start().await;
    let client = Client::builder(&server.url)
        .config(quick())
        .token("not.a.jwt")
        .connect()
        .await
        .unwrap();
    wait_state(&client, ConnectionState::Closed).await;
    let close = client.server_close().unwrap();
    assert_eq!(close.code, 4500);
    assert!(close.reason.starts_with("invalid token"), "{}", close.reason);
    assert!(matches!(
        client.subscribe("news", json!({})).await,
        Err(ClientError::ServerClosed(_))
    ));
}

#[tokio::test]
async fn a_4005_without_get_token_stops_the_client() {
    let server = start().await;
    let client = Client::builder(&server.url)
        .config(quick())
        .token(token(json!({"sub": "9", "exp": now() + 1})))
        .connect()
        .await
        .unwrap();
    wait_state(&client, ConnectionState::Closed).await;
    assert_eq!(client.server_close().map(|c| c.code), Some(4005));
}

#[tokio::test]
async fn subscription_tokens_are_presented_and_kept() {
    let server = start().await;
    let client = Client::builder(&server.url)
        .config(quick())
        .token(token(json!({"sub": "5", "exp": now() + 3600})))
        .connect()
        .await
        .unwrap();
    let refused = client.subscribe("room", json!({})).await;
    assert!(
        matches!(&refused, Err(ClientError::Remote(text)) if text == "Permission denied"),
        "{refused:?}"
    );
    let room = token(json!({"sub": "5", "channel": "room", "exp": now() + 3600}));
    client.subscribe_with_token("room", json!({}), &room).await.unwrap();
}
