//! Identity over real sockets (PROTOCOL.md, "Identity"): connection tokens by `?token=` and by
//! `connect`, refusals and their close codes, expiry enforced on an open connection and extended
//! by `refresh`, channels keyed by user, subscription tokens, and the identity as channel
//! functions and actions see it.

mod common;

use common::{Client, Event, WAIT};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard::{Auth, Channel, ChannelRef, Identity, Jwt, Node, NodeBuilder, Router, Shutdown};
use tokio::net::TcpListener;

const SECRET: &[u8] = b"test-secret-of-the-auth-tests";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An HS256 token with these claims.
fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

/// A token for `user` valid for an hour, with `info`.
fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600, "info": {"name": format!("User {user}")}}))
}

#[derive(Serialize, Deserialize)]
struct Text {
    #[serde(default)]
    text: String,
}

#[derive(Serialize, Deserialize)]
struct Inbox {
    user: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct Nothing {}

struct Server {
    addr: SocketAddr,
    inbox: ChannelRef<Inbox>,
    news: ChannelRef<Text>,
    shutdown: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The `auth` example's channels and actions, plus `echo_identity` (a channel whose data is the
/// subscriber's identity as its channel function sees it).
fn router() -> (Router, ChannelRef<Inbox>, ChannelRef<Text>) {
    let mut router = Router::new();
    let news = router.channel(Channel::new("news", |p: Text| async move {
        Ok::<_, String>(json!({ "text": p.text }))
    }));
    let inbox = router.channel(
        Channel::new("inbox", |p: Inbox| async move {
            Ok::<_, String>(json!({ "user": p.user, "text": p.text }))
        })
        .keyed_by_user("user"),
    );
    router.channel(
        Channel::new(
            "room",
            |p: Text| async move { Ok::<_, String>(json!({ "text": p.text })) },
        )
        .token_required(),
    );
    router.channel(
        Channel::new("echo_identity", |_: Text| async move {
            let who = Identity::current().unwrap_or_default();
            Ok::<_, String>(json!({ "user": who.user_id() }))
        })
        .default_response(),
    );
    router.action("whoami", |_: Nothing| async move {
        let who = Identity::current().unwrap_or_default();
        Ok::<_, String>(json!({ "user": who.user_id(), "info": who.info() }))
    });
    (router, inbox, news)
}

async fn start_with(configure: impl FnOnce(NodeBuilder) -> NodeBuilder) -> Server {
    let (router, inbox, news) = router();
    let node = configure(Node::builder(router)).build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(switchboard::http::serve(listener, node.app(), shutdown.clone()));
    Server {
        addr,
        inbox,
        news,
        shutdown,
    }
}

/// Authentication required, HS256 tokens signed with [`SECRET`].
async fn start() -> Server {
    start_with(|b| b.auth(Jwt::hmac(SECRET).into_auth())).await
}

impl Server {
    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// A client connected as `user`.
    async fn user(&self, user: &str) -> Client {
        let mut client = self.client().await;
        client.send(json!({"type": "connect", "token": user_token(user), "id": "c"}));
        let connected = client.recv().await;
        assert_eq!(connected["type"], "connected", "{connected}");
        assert_eq!(connected["user"], user);
        client
    }
}

/// The next event is a close with `code`; returns its reason.
async fn expect_close(client: &mut Client, code: u16) -> String {
    match client.next_event().await {
        Event::Close(close) => {
            assert_eq!(close.code, code, "closed with {} ({})", close.code, close.reason);
            assert!(close.by_peer, "the server sent the close frame");
            close.reason
        }
        Event::Text(text) => panic!("expected a close {code}, got {text}"),
        Event::Bytes(_) => panic!("expected a close {code}, got bytes"),
    }
}

#[tokio::test]
async fn connect_with_a_token_answers_connected_with_the_identity() {
    let server = start().await;
    let mut client = server.client().await;
    client.send(json!({"type": "connect", "token": user_token("42"), "id": 1}));
    let connected = client.recv().await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["id"], 1);
    assert_eq!(connected["user"], "42");
    let expires_in = connected["expires_in"].as_u64().expect("expires_in");
    assert!((3590..=3600).contains(&expires_in), "{expires_in}");
    let client_id = connected["client"].as_str().expect("client id");
    assert!(!client_id.is_empty());
    client
        .exchange(
            json!({"type": "action", "channel": "whoami", "id": 2}),
            json!({"type": "action", "channel": "whoami", "status": "completed", "data": {"user": "42", "info": {"name": "User 42"}}, "id": 2}),
        )
        .await;
    // The channel function sees the subscriber.
    client.send(json!({"type": "subscribe", "channel": "echo_identity", "id": 3}));
    client
        .expect(json!({"type": "subscribed", "channel": "echo_identity", "id": 3}))
        .await;
    client
        .expect(json!({"type": "data", "channel": "echo_identity", "data": {"user": "42"}}))
        .await;
}

#[tokio::test]
async fn a_token_on_the_url_is_answered_connected_unasked() {
    let server = start().await;
    let mut client = Client::connect(&format!("{}?token={}", server.url(), user_token("7"))).await;
    let connected = client.recv().await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["user"], "7");
    assert!(connected.get("id").is_none(), "{connected}");
    // A token without `exp` never expires: no `expires_in`.
    let mut forever = Client::connect(&format!("{}?token={}", server.url(), token(json!({"sub": "8"})))).await;
    let connected = forever.recv().await;
    assert_eq!(connected["user"], "8");
    assert!(connected.get("expires_in").is_none(), "{connected}");
}

#[tokio::test]
async fn before_connected_every_message_is_refused_and_nothing_is_subscribed() {
    let server = start().await;
    let mut client = server.client().await;
    let refusal = |channel: &str, id: i64| {
        json!({"type": "error", "channel": channel, "id": id,
               "message": "Not connected: authenticate first with {\"type\":\"connect\",\"token\":\"JWT\"} (or ?token=JWT on the URL)."})
    };
    client
        .exchange(
            json!({"type": "subscribe", "channel": "news", "id": 1}),
            refusal("news", 1),
        )
        .await;
    client
        .exchange(
            json!({"type": "action", "channel": "whoami", "id": 2}),
            refusal("whoami", 2),
        )
        .await;
    // A broadcast now does not reach it; after connecting, the next one does (and is the first
    // message it gets).
    server.news.broadcast(Text { text: "before".into() }).await.unwrap();
    client.send(json!({"type": "connect", "token": user_token("1"), "id": 3}));
    assert_eq!(client.recv().await["type"], "connected");
    client
        .exchange(
            json!({"type": "subscribe", "channel": "news", "id": 4}),
            json!({"type": "subscribed", "channel": "news", "id": 4}),
        )
        .await;
    server.news.broadcast(Text { text: "after".into() }).await.unwrap();
    client
        .expect(json!({"type": "data", "channel": "news", "data": {"text": "after"}}))
        .await;
}

#[tokio::test]
async fn no_connect_within_the_handshake_timeout_closes_4001() {
    let server = start_with(|b| {
        b.auth(Jwt::hmac(SECRET).into_auth())
            .ws_config(switchboard::ws::Config {
                handshake_timeout: Duration::from_millis(300),
                ..Default::default()
            })
    })
    .await;
    let mut client = server.client().await;
    let reason = expect_close(&mut client, 4001).await;
    assert_eq!(reason, "authentication timeout: send connect first");
    // One that connects in time stays (past the timeout).
    let mut ok = server.user("5").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    ok.exchange(
        json!({"type": "action", "channel": "whoami", "id": 1}),
        json!({"type": "action", "channel": "whoami", "status": "completed", "data": {"user": "5", "info": {"name": "User 5"}}, "id": 1}),
    )
    .await;
}

#[tokio::test]
async fn refused_tokens_close_with_their_codes() {
    let server = start().await;
    let cases = [
        ("expired", token(json!({"sub": "1", "exp": now() - 10})), 4005),
        (
            "not yet valid",
            token(json!({"sub": "1", "nbf": now() + 600, "exp": now() + 3600})),
            4500,
        ),
        (
            "wrong key",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &json!({"sub": "1", "exp": now() + 60}),
                &EncodingKey::from_secret(b"another secret").unwrap(),
            )
            .unwrap(),
            4500,
        ),
        ("malformed", "not.a.jwt".to_owned(), 4500),
        // {"alg":"none"} with an empty signature.
        (
            "alg none",
            format!(
                "{}.{}.",
                base64url(br#"{"alg":"none","typ":"JWT"}"#),
                base64url(format!(r#"{{"sub":"1","exp":{}}}"#, now() + 60).as_bytes())
            ),
            4500,
        ),
    ];
    for (what, token, code) in cases {
        // Both ways of presenting it.
        let mut by_message = server.client().await;
        by_message.send(json!({"type": "connect", "token": token, "id": 1}));
        let reason = expect_close(&mut by_message, code).await;
        assert!(!reason.is_empty(), "{what}: a reason");
        let mut by_url = Client::connect(&format!("{}?token={token}", server.url())).await;
        expect_close(&mut by_url, code).await;
    }
    // The node is fine for others.
    server.user("2").await;
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn expiry_is_enforced_on_an_open_connection_and_refresh_extends_it() {
    let server = start().await;
    // Expires in 2 s, never refreshed: closed with 4005.
    let mut expiring = server.client().await;
    expiring.send(json!({"type": "connect", "token": token(json!({"sub": "1", "exp": now() + 2})), "id": 1}));
    assert_eq!(expiring.recv().await["type"], "connected");
    let reason = expect_close(&mut expiring, 4005).await;
    assert_eq!(reason, "token expired");

    // Expires in 2 s, refreshed at once for an hour: still open after the first expiry.
    let mut refreshed = server.client().await;
    refreshed.send(json!({"type": "connect", "token": token(json!({"sub": "2", "exp": now() + 2})), "id": 1}));
    assert_eq!(refreshed.recv().await["type"], "connected");
    refreshed.send(json!({"type": "refresh", "token": user_token("2"), "id": 2}));
    let answer = refreshed.recv().await;
    assert_eq!(answer["type"], "refreshed");
    assert_eq!(answer["id"], 2);
    assert!(answer["expires_in"].as_u64().unwrap() > 3000, "{answer}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    refreshed
        .exchange(
            json!({"type": "action", "channel": "whoami", "id": 3}),
            json!({"type": "action", "channel": "whoami", "status": "completed", "data": {"user": "2", "info": {"name": "User 2"}}, "id": 3}),
        )
        .await;
}

#[tokio::test]
async fn refresh_with_another_users_token_is_refused_and_changes_nothing() {
    let server = start().await;
    let mut client = server.user("1").await;
    client
        .exchange(
            json!({"type": "refresh", "token": user_token("2"), "id": 9}),
            json!({"type": "error", "id": 9, "message": "Refresh refused: the token is for another user."}),
        )
        .await;
    client
        .exchange(
            json!({"type": "action", "channel": "whoami", "id": 10}),
            json!({"type": "action", "channel": "whoami", "status": "completed", "data": {"user": "1", "info": {"name": "User 1"}}, "id": 10}),
        )
        .await;
    // An expired one closes with 4005, as at connect.
    client.send(json!({"type": "refresh", "token": token(json!({"sub": "1", "exp": now() - 5})), "id": 11}));
    expect_close(&mut client, 4005).await;
}

#[tokio::test]
async fn a_channel_keyed_by_user_delivers_only_to_that_user_whatever_the_client_sends() {
    let server = start().await;
    let mut one = server.user("1").await;
    let mut two = server.user("2").await;
    // User 1 names user 2: the node subscribes it to its own inbox anyway.
    one.exchange(
        json!({"type": "subscribe", "channel": "inbox", "data": {"user": "2"}, "id": 1}),
        json!({"type": "subscribed", "channel": "inbox", "id": 1}),
    )
    .await;
    two.exchange(
        json!({"type": "subscribe", "channel": "inbox", "id": 1}),
        json!({"type": "subscribed", "channel": "inbox", "id": 1}),
    )
    .await;
    server
        .inbox
        .broadcast(Inbox {
            user: "2".into(),
            text: "for two".into(),
        })
        .await
        .unwrap();
    server
        .inbox
        .broadcast(Inbox {
            user: "1".into(),
            text: "for one".into(),
        })
        .await
        .unwrap();
    // Each gets its own, and user 1's first message is its own (nothing of user 2's before).
    one.expect(json!({"type": "data", "channel": "inbox", "data": {"user": "1", "text": "for one"}}))
        .await;
    two.expect(json!({"type": "data", "channel": "inbox", "data": {"user": "2", "text": "for two"}}))
        .await;
    // Over HTTP too.
    let (status, body) = common::http(
        server.addr,
        "POST",
        "/_broadcast",
        &[],
        Some(&json!({"channel": "inbox", "data": {"user": "2", "text": "http"}}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    two.expect(json!({"type": "data", "channel": "inbox", "data": {"user": "2", "text": "http"}}))
        .await;
    one.send(json!({"type": "action", "channel": "whoami", "id": "barrier"}));
    assert_eq!(one.recv().await["id"], "barrier", "user 1 received nothing of user 2's");
    // Unsubscribing names its own subscription too.
    one.exchange(
        json!({"type": "unsubscribe", "channel": "inbox", "id": 2}),
        json!({"type": "unsubscribed", "channel": "inbox", "id": 2}),
    )
    .await;
    server
        .inbox
        .broadcast(Inbox {
            user: "1".into(),
            text: "gone".into(),
        })
        .await
        .unwrap();
    one.send(json!({"type": "action", "channel": "whoami", "id": "barrier2"}));
    assert_eq!(one.recv().await["id"], "barrier2");
}

#[tokio::test]
async fn an_anonymous_connection_may_not_subscribe_to_a_channel_keyed_by_user() {
    let server = start_with(|b| b.auth(Jwt::hmac(SECRET).into_auth().optional())).await;
    let mut anonymous = server.client().await;
    anonymous
        .exchange(
            json!({"type": "subscribe", "channel": "inbox", "id": 1}),
            json!({"type": "error", "channel": "inbox", "id": 1, "message": "Permission denied"}),
        )
        .await;
    // Anonymous connections may use the rest, and may still connect.
    anonymous
        .exchange(
            json!({"type": "subscribe", "channel": "news", "id": 2}),
            json!({"type": "subscribed", "channel": "news", "id": 2}),
        )
        .await;
    anonymous.send(json!({"type": "connect", "token": user_token("3"), "id": 3}));
    assert_eq!(anonymous.recv().await["user"], "3");
    anonymous
        .exchange(
            json!({"type": "subscribe", "channel": "inbox", "id": 4}),
            json!({"type": "subscribed", "channel": "inbox", "id": 4}),
        )
        .await;
}

#[tokio::test]
async fn subscription_tokens_must_name_the_user_and_the_channel() {
    let server = start().await;
    let mut client = server.user("1").await;
    let denied = |id: i64| json!({"type": "error", "channel": "room", "id": id, "message": "Permission denied"});
    let cases = [
        ("missing", None),
        (
            "another channel (audience)",
            Some(token(json!({"sub": "1", "channel": "news", "exp": now() + 60}))),
        ),
        (
            "another user",
            Some(token(json!({"sub": "2", "channel": "room", "exp": now() + 60}))),
        ),
        (
            "expired",
            Some(token(json!({"sub": "1", "channel": "room", "exp": now() - 5}))),
        ),
        ("no expiry", Some(token(json!({"sub": "1", "channel": "room"})))),
    ];
    for (id, (what, token)) in (1..).zip(cases) {
        let mut message = json!({"type": "subscribe", "channel": "room", "id": id});
        if let Some(token) = token {
            message["token"] = json!(token);
        }
        client.send(message);
        assert_eq!(client.recv().await, denied(id), "{what}");
    }
    let good = token(json!({"sub": "1", "channel": "room", "exp": now() + 60}));
    client
        .exchange(
            json!({"type": "subscribe", "channel": "room", "token": good, "id": 10}),
            json!({"type": "subscribed", "channel": "room", "id": 10}),
        )
        .await;
}

#[tokio::test]
async fn a_custom_hook_reads_the_handshake() {
    // The hook authenticates by a cookie, as a browser would: no token at all.
    let auth = Auth::new(|request: switchboard::AuthRequest| async move {
        let cookie = request
            .handshake
            .headers
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        match cookie.strip_prefix("session=") {
            Some(user) => Ok(Identity::user(user)),
            None => Err(switchboard::Refusal::Error {
                code: 401,
                message: "no session cookie".into(),
            }),
        }
    });
    let server = start_with(|b| b.auth(auth)).await;
    let mut client = server.client().await;
    client
        .exchange(
            json!({"type": "connect", "id": 1}),
            json!({"type": "error", "id": 1, "message": "no session cookie"}),
        )
        .await;
    // The refusal leaves the connection open: it may try again (here, still without a cookie).
    client
        .exchange(
            json!({"type": "connect", "id": 2}),
            json!({"type": "error", "id": 2, "message": "no session cookie"}),
        )
        .await;
    let _ = WAIT;
}

#[tokio::test]
async fn over_the_message_rate_errors_then_4029_and_others_are_unaffected() {
    let limits = switchboard::Limits::default().with_message_rate(Some(5), None);
    let server = start_with(|b| b.auth(Jwt::hmac(SECRET).into_auth()).limits(limits)).await;
    let mut other = server.user("2").await;
    let mut fast = server.client().await;
    // The connect is the first of its 5 tokens; 4 actions more pass, then refusals.
    fast.send(json!({"type": "connect", "token": user_token("1"), "id": 0}));
    assert_eq!(fast.recv().await["type"], "connected");
    for id in 1..=14 {
        fast.send(json!({"type": "action", "channel": "whoami", "id": id}));
    }
    for id in 1..=4 {
        assert_eq!(fast.recv().await["type"], "action", "message {id} within the rate");
    }
    for id in 5..=13 {
        let refused = fast.recv().await;
        assert_eq!(
            refused,
            json!({"type": "error", "channel": "whoami", "id": id, "message": "Rate limit exceeded: at most 5 messages per second."})
        );
    }
    // The 10th refused in a row closes the connection instead.
    assert_eq!(expect_close(&mut fast, 4029).await, "too many messages");
    other
        .exchange(
            json!({"type": "action", "channel": "whoami", "id": 1}),
            json!({"type": "action", "channel": "whoami", "status": "completed", "data": {"user": "2", "info": {"name": "User 2"}}, "id": 1}),
        )
        .await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_limited() {
    let limits = switchboard::Limits {
        subscriptions_per_connection: 2,
        ..Default::default()
    };
    let server = start_with(|b| b.auth(Jwt::hmac(SECRET).into_auth()).limits(limits)).await;
    let mut client = server.user("1").await;
    for (id, channel) in [(1, "news"), (2, "inbox")] {
        client
            .exchange(
                json!({"type": "subscribe", "channel": channel, "id": id}),
                json!({"type": "subscribed", "channel": channel, "id": id}),
            )
            .await;
    }
    client
        .exchange(
            json!({"type": "subscribe", "channel": "echo_identity", "id": 3}),
            json!({"type": "error", "channel": "echo_identity", "id": 3, "message": "Too many subscriptions: at most 2 per connection."}),
        )
        .await;
    // Subscribing again to one it holds is no new subscription; leaving one makes room.
    client
        .exchange(
            json!({"type": "subscribe", "channel": "news", "id": 4}),
            json!({"type": "subscribed", "channel": "news", "id": 4}),
        )
        .await;
    client
        .exchange(
            json!({"type": "unsubscribe", "channel": "news", "id": 5}),
            json!({"type": "unsubscribed", "channel": "news", "id": 5}),
        )
        .await;
    client.send(json!({"type": "subscribe", "channel": "echo_identity", "id": 6}));
    assert_eq!(client.recv().await["type"], "subscribed");
}

#[tokio::test]
async fn connections_per_user_are_limited_and_freed_on_close() {
    let limits = switchboard::Limits {
        connections_per_user: 2,
        ..Default::default()
    };
    let server = start_with(|b| b.auth(Jwt::hmac(SECRET).into_auth()).limits(limits)).await;
    let first = server.user("1").await;
    let _second = server.user("1").await;
    let mut third = server.client().await;
    third.send(json!({"type": "connect", "token": user_token("1"), "id": 1}));
    assert_eq!(
        expect_close(&mut third, 4008).await,
        "too many connections for this user"
    );
    // Another user is not affected; once one of user 1's closes, user 1 may connect again.
    server.user("2").await;
    first.close().await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut again = server.client().await;
        again.send(json!({"type": "connect", "token": user_token("1"), "id": 1}));
        match again.next_event().await {
            Event::Text(text) if text.contains("\"connected\"") => break,
            Event::Close(close) if close.code == 4008 && std::time::Instant::now() < deadline => {
                // The server may not have seen the close yet.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("expected connected, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn tokens_of_every_supported_algorithm_connect() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys/");
    let read = |name: &str| std::fs::read(format!("{keys}{name}")).unwrap();
    let jwt = Jwt::hmac(SECRET)
        .with_rsa_pem(&read("rsa_public.pem"))
        .unwrap()
        .with_ec_pem(&read("ec_public.pem"))
        .unwrap();
    let server = start_with(|b| b.auth(jwt.into_auth())).await;
    let claims = |user: &str| json!({"sub": user, "exp": now() + 60});
    let signed = |alg: Algorithm, key: &EncodingKey, user: &str| {
        jsonwebtoken::encode(&Header::new(alg), &claims(user), key).unwrap()
    };
    let hmac = EncodingKey::from_secret(SECRET).unwrap();
    let rsa = EncodingKey::from_rsa_pem(&read("rsa_private.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(&read("ec_private.pem")).unwrap();
    let tokens = [
        ("HS256", signed(Algorithm::HS256, &hmac, "hs256")),
        ("HS384", signed(Algorithm::HS384, &hmac, "hs384")),
        ("HS512", signed(Algorithm::HS512, &hmac, "hs512")),
        ("RS256", signed(Algorithm::RS256, &rsa, "rs256")),
        ("ES256", signed(Algorithm::ES256, &ec, "es256")),
    ];
    for (alg, token) in tokens {
        let mut client = server.client().await;
        client.send(json!({"type": "connect", "token": token, "id": 1}));
        let connected = client.recv().await;
        assert_eq!(connected["type"], "connected", "{alg}: {connected}");
        assert_eq!(connected["user"], alg.to_lowercase(), "{alg}");
    }
    // Algorithm confusion: an HS256 token whose "secret" is the RSA public key is refused.
    let confused = EncodingKey::from_secret(&read("rsa_public.pem")).unwrap();
    let mut client = server.client().await;
    client.send(json!({"type": "connect", "token": signed(Algorithm::HS256, &confused, "x"), "id": 1}));
    expect_close(&mut client, 4500).await;
}
