//! The `switchboard` command over real sockets: `serve` (page, WebSocket, metrics, config file)
//! and `publish`.

use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;
use switchboard::ws::{self, Handler, Text, WebSocket};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const T: Duration = Duration::from_secs(10);

struct Serve {
    child: tokio::process::Child,
    addr: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn serve(extra: &[&str]) -> Serve {
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--ticker-interval-ms", "50"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchboard serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(T, lines.next_line())
        .await
        .expect("listening line")
        .expect("read")
        .expect("line");
    let addr = line
        .trim()
        .trim_start_matches("switchboard listening on http://")
        .trim_end_matches('/')
        .to_owned();
    Serve { child, addr }
}

struct Forward(mpsc::UnboundedSender<Value>);
impl Handler for Forward {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let _ = self.0.send(serde_json::from_str(&text).unwrap_or(Value::Null));
    }
}

async fn client(url: &str) -> (WebSocket, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ws = ws::connect(url, Forward(tx), ws::Config::default())
        .await
        .expect("connect");
    (ws, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("a message in time")
        .expect("open")
}

async fn http_get(addr: &str, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.expect("read");
    response
}

fn publish(addr: &str, channel: &str, params: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["publish", channel, params, "--url", &format!("http://{addr}")])
        .output()
        .expect("run switchboard publish")
}

#[tokio::test]
async fn serve_page_ticker_and_publish() {
    let server = serve(&[]).await;

    let page = http_get(&server.addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("Type message...") && page.contains("Send"),
        "the demo page"
    );
    assert!(http_get(&server.addr, "/switchboard.js")
        .await
        .starts_with("HTTP/1.1 200"));

    // The WebSocket at /ws, and at / for SocketAPI clients.
    for path in ["/ws", "/"] {
        let (_ws, mut rx) = client(&format!("ws://{}{path}", server.addr)).await;
        let _ = _ws.send_text(json!({"type": "subscribe", "channel": "ticker", "id": 1}).to_string());
        assert_eq!(
            next(&mut rx).await,
            json!({"type": "subscribed", "channel": "ticker", "id": 1})
        );
        let tick = next(&mut rx).await;
        assert_eq!(tick["channel"], "ticker");
        assert!(tick["data"]["seq"].as_u64().is_some(), "{tick}");
    }

    let (ws, mut rx) = client(&format!("ws://{}/ws", server.addr)).await;
    let _ = ws.send_text(json!({"type": "subscribe", "channel": "chat"}).to_string());
    // The demo chat keeps history: publications carry offsets.
    let subscribed = next(&mut rx).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["offset"], 0, "{subscribed}");
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
    let out = publish(&server.addr, "chat", r#"{"user": "cli", "text": "hello"}"#);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "published on 'chat'");
    assert_eq!(
        next(&mut rx).await,
        json!({"type": "data", "channel": "chat", "data": {"user": "cli", "text": "hello"}, "offset": 1})
    );
    // A page loaded later gets it from the history.
    let _ = ws.send_text(json!({"type": "history", "channel": "chat", "id": 2}).to_string());
    assert_eq!(
        next(&mut rx).await,
        json!({"type": "history", "channel": "chat", "id": 2, "offset": 1, "epoch": epoch,
               "publications": [{"offset": 1, "data": {"user": "cli", "text": "hello"}}]})
    );

    let out = publish(&server.addr, "nope", "{}");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "switchboard: Channel 'nope' not found."
    );
    let out = publish(&server.addr, "chat", "not json");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PARAMS is not valid JSON"));

    let metrics = http_get(&server.addr, "/metrics").await;
    assert!(metrics.contains("switchboard_publications_total"), "{metrics}");
}

#[tokio::test]
async fn serve_reads_a_config_file_and_reports_bad_ones() {
    let dir = std::env::temp_dir().join(format!("switchboard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("good.toml");
    std::fs::write(&good, "broadcast_token = \"s3cret\"\nticker_interval_ms = 50\n").expect("write");
    let server = serve(&["--config", good.to_str().expect("path")]).await;
    let out = publish(&server.addr, "chat", r#"{"text": "x"}"#);
    assert!(!out.status.success(), "the token from the file is required");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bearer token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args([
            "publish",
            "chat",
            r#"{"text": "x"}"#,
            "--token",
            "s3cret",
            "--url",
            &format!("http://{}", server.addr),
        ])
        .output()
        .expect("publish");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "bnid = \"127.0.0.1:1\"\n").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config", bad.to_str().expect("path")])
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid config") && err.contains("bnid"), "{err}");
    let out = Command::new(BIN)
        .args(["serve", "--broker", "nats://x"])
        .output()
        .expect("serve");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown broker 'nats://x'"));
}

/// Reports how its connection ended; forwards messages.
struct CloseRecorder {
    messages: mpsc::UnboundedSender<Value>,
    closes: mpsc::UnboundedSender<ws::CloseFrame>,
}

impl Handler for CloseRecorder {
    async fn on_message(&mut self, _ws: &WebSocket, text: Text) {
        let _ = self.messages.send(serde_json::from_str(&text).unwrap_or(Value::Null));
    }

    async fn on_close(&mut self, _ws: &WebSocket, close: ws::CloseFrame) {
        let _ = self.closes.send(close);
    }
}

/// SIGTERM with 200 subscribed clients: every one gets its close frame (1001), then the process
/// exits with status 0.
#[tokio::test]
async fn sigterm_closes_every_websocket_with_1001_before_exiting() {
    const CLIENTS: usize = 200;
    let mut server = serve(&[]).await;
    let url = format!("ws://{}/ws", server.addr);
    let (closes, mut closed) = mpsc::unbounded_channel();
    let connecting = (0..CLIENTS).map(|_| {
        let (url, closes) = (url.clone(), closes.clone());
        async move {
            let (messages, mut received) = mpsc::unbounded_channel();
            let ws = ws::connect(&url, CloseRecorder { messages, closes }, ws::Config::default())
                .await
                .expect("connect");
            let _ = ws.send_text(json!({"type": "subscribe", "channel": "ticker", "id": 1}).to_string());
            assert_eq!(
                next(&mut received).await,
                json!({"type": "subscribed", "channel": "ticker", "id": 1})
            );
            // Ticks keep coming to every client until the server closes it.
            (ws, received)
        }
    });
    let _clients = futures_util::future::join_all(connecting).await;

    let pid = server.child.id().expect("the server is running").to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
    assert!(kill.success());
    for i in 0..CLIENTS {
        let close = tokio::time::timeout(Duration::from_secs(20), closed.recv())
            .await
            .unwrap_or_else(|_| panic!("only {i} of {CLIENTS} clients got a close frame"))
            .expect("a client");
        assert_eq!(
            (close.code, close.reason.as_str(), close.by_peer),
            (1001, "server shutting down", true),
            "client {i}"
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(20), server.child.wait())
        .await
        .expect("the server exits once drained")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

/// An HS256 token for `user`, an hour long.
fn hs256(secret: &str, user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &key,
    )
    .unwrap()
}

#[tokio::test]
async fn serve_requires_tokens_with_an_hmac_secret_from_flags_or_the_file() {
    let flags = serve(&["--hmac-secret", "flag-secret"]).await;
    let dir = std::env::temp_dir().join(format!("switchboard-cli-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("auth.toml");
    std::fs::write(
        &file,
        "[auth]\nhmac_secret = \"file-secret\"\n[limits]\nmessages_per_sec = 1000\n",
    )
    .expect("write");
    let from_file = serve(&["--config", file.to_str().expect("path")]).await;
    for (server, secret) in [(&flags, "flag-secret"), (&from_file, "file-secret")] {
        // Without a token: refused.
        let (ws, mut rx) = client(&format!("ws://{}/ws", server.addr)).await;
        ws.send_text(json!({"type": "subscribe", "channel": "chat", "id": 1}).to_string())
            .expect("send");
        let refused = next(&mut rx).await;
        assert_eq!(refused["type"], "error", "{refused}");
        assert!(
            refused["message"].as_str().unwrap().starts_with("Not connected"),
            "{refused}"
        );
        // With one on the URL: connected, then the demo works as before.
        let url = format!("ws://{}/ws?token={}", server.addr, hs256(secret, "ada"));
        let (ws, mut rx) = client(&url).await;
        let connected = next(&mut rx).await;
        assert_eq!(connected["type"], "connected", "{connected}");
        assert_eq!(connected["user"], "ada");
        ws.send_text(json!({"type": "subscribe", "channel": "chat", "id": 2}).to_string())
            .expect("send");
        assert_eq!(next(&mut rx).await["type"], "subscribed");
    }
    // A key file that is not a key stops the server with a message naming it.
    let not_a_key = dir.join("not-a-key.pem");
    std::fs::write(&not_a_key, "hello").expect("write");
    let out = Command::new(BIN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--rsa-public-key",
            not_a_key.to_str().expect("path"),
        ])
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not-a-key.pem"), "{err}");
    // An unknown key in [auth] is named.
    let bad = dir.join("bad-auth.toml");
    std::fs::write(&bad, "[auth]\nhmac_secrett = \"x\"\n").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config", bad.to_str().expect("path")])
        .output()
        .expect("serve");
    assert!(String::from_utf8_lossy(&out.stderr).contains("hmac_secrett"));
}

/// `POST` to the server HTTP API with the key; the status line and body.
async fn api(addr: &str, method: &str, key: &str, body: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: apikey {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test]
async fn the_example_config_starts_a_standalone_server() {
    // The shipped switchboard.toml, every key in it, as is (only the port is the test's).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/switchboard.toml");
    let server = serve(&["--config", path]).await;
    // No demo with namespaces: the chat namespace is what clients use.
    let page = http_get(&server.addr, "/").await;
    assert!(
        page.starts_with("HTTP/1.1 200") && !page.contains("Type message..."),
        "{page}"
    );
    let (ws, mut rx) = client(&format!("ws://{}/ws", server.addr)).await;
    ws.send_text(json!({"type": "subscribe", "channel": "chat:lobby", "id": 1}).to_string())
        .expect("send");
    assert_eq!(next(&mut rx).await["type"], "subscribed");
    ws.send_text(json!({"type": "publish", "channel": "chat:lobby", "data": {"text": "hi"}, "id": 2}).to_string())
        .expect("send");
    let mut got = vec![next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|m| m["type"].as_str().map(str::to_owned));
    assert_eq!(
        got,
        [
            json!({"type": "data", "channel": "chat:lobby", "data": {"text": "hi"}, "offset": 1}),
            json!({"type": "published", "channel": "chat:lobby", "id": 2, "offset": 1}),
        ]
    );
    // The API with the file's key, and `switchboard publish --api-key` through it.
    let answer = api(
        &server.addr,
        "publish",
        "change-me",
        r#"{"channel":"chat:lobby","data":"from api"}"#,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"{"result":{"offset":2,"epoch":"#), "{answer}");
    assert_eq!(
        next(&mut rx).await,
        json!({"type": "data", "channel": "chat:lobby", "data": "from api", "offset": 2})
    );
    let out = Command::new(BIN)
        .args([
            "publish",
            "chat:lobby",
            "[1,2]",
            "--url",
            &format!("http://{}", server.addr),
        ])
        .args(["--api-key", "change-me"])
        .output()
        .expect("publish");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        next(&mut rx).await,
        json!({"type": "data", "channel": "chat:lobby", "data": [1, 2], "offset": 3})
    );
    let out = Command::new(BIN)
        .args([
            "publish",
            "chat:lobby",
            "1",
            "--url",
            &format!("http://{}", server.addr),
        ])
        .args(["--api-key", "wrong"])
        .output()
        .expect("publish");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "switchboard: broadcast refused: Missing or wrong API key: send 'Authorization: apikey KEY'."
    );
    let wrong = api(&server.addr, "info", "nope", "{}").await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    // The admin page is on (admin_password is set).
    assert!(http_get(&server.addr, "/admin").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn config_errors_name_the_key_and_the_line() {
    let dir = std::env::temp_dir().join(format!("switchboard-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cases = [
        (
            "unknown-key.toml",
            "api_key = \"k\"\n[[namespace]]\nname = \"chat\"\nhistory_sise = 10\n",
            &["line 4", "history_sise"][..],
        ),
        (
            "bad-value.toml",
            "[[namespace]]\nname = \"chat\"\nsubscribe = \"everyone\"\n",
            &["line 3", "everyone", "any"][..],
        ),
        (
            "duplicate.toml",
            "[[namespace]]\nname = \"chat\"\n\n[[namespace]]\nname = \"chat\"\n",
            &["line 5", "namespace 'chat' is declared twice (first on line 2)"][..],
        ),
        (
            "bad-type.toml",
            "[[namespace]]\nname = \"chat\"\nhistory_size = -1\n",
            &["line 3", "history_size"][..],
        ),
        (
            "bad-name.toml",
            "[[namespace]]\nname = \"chat:x\"\n",
            &["line 2", "invalid namespace name 'chat:x'"][..],
        ),
        (
            "token-without-keys.toml",
            "[[namespace]]\nname = \"vip\"\nsubscribe = \"token\"\n",
            &["line 3", "needs keys to verify subscription tokens"][..],
        ),
        (
            "proxy-without-url.toml",
            "[[namespace]]\nname = \"x\"\nsubscribe = \"proxy\"\n",
            &["line 3", "[proxy] subscribe = URL"][..],
        ),
    ];
    for (file, text, wants) in cases {
        let path = dir.join(file);
        std::fs::write(&path, text).expect("write");
        let out = Command::new(BIN)
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--config",
                path.to_str().expect("path"),
            ])
            .output()
            .expect("serve");
        assert!(!out.status.success(), "{file} started");
        let err = String::from_utf8_lossy(&out.stderr);
        for want in wants {
            assert!(err.contains(want), "{file}: {want:?} not in:\n{err}");
        }
    }
}
