//! examples/python_backend (docs/backends.md) against the real server: `switchboard serve
//! --config` with the example's switchboard.toml (its ports and API key filled in) and the example's
//! Python backend (`python3 app.py`, standard library only) as its connect and action proxies. A
//! WebSocket client authenticates through the backend (`connect` with `{"name": "alice"}`),
//! subscribes to `chat:lobby`, calls the backend's action `send`, and receives exactly what the
//! backend published through `/api/publish`; a connection without a name is closed with the
//! backend's code. Skipped (with a message) only when there is no `python3`.

mod common;

use common::{http, Client, Event};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// How long a process may take to listen (python3 and a debug build on a busy machine).
const START: Duration = Duration::from_secs(30);
const API_KEY: &str = "python-backend-test-api-key";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python_backend")
}

fn have_python3() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A process of the test; killed when dropped, its stderr (kept in a file) printed if the test
/// failed.
struct Proc {
    name: &'static str,
    _child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- {} stderr:\n{log}", self.name);
        }
    }
}

/// Spawns `command` and waits for its line `… listening on http://ADDR[/]` on stdout.
async fn spawn_listening(name: &'static str, mut command: Command, dir: &Path) -> (Proc, SocketAddr) {
    let log = dir.join(format!("{name}.log"));
    let stderr = std::fs::File::create(&log).expect("log file");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(START, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{name} did not say where it listens within {START:?}"))
        .expect("read stdout")
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{name} exited before listening:\n{log}")
        });
    let addr = line
        .split_once("listening on http://")
        .unwrap_or_else(|| panic!("{name}: unexpected first line {line:?}"))
        .1
        .trim()
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{name}: no address in {line:?}: {e}"));
    // Keep reading stdout so that the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let proc = Proc {
        name,
        _child: child,
        log,
    };
    (proc, addr)
}

/// A directory of the test (the config, the processes' logs), removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Python backend and `switchboard serve` configured by the example's switchboard.toml.
struct Stack {
    switchboard: SocketAddr,
    // Dropped in this order: the processes (killed), then their directory.
    _procs: (Proc, Proc),
    _dir: TempDir,
}

impl Stack {
    /// Both processes, or `None` (with a message) when there is no python3.
    async fn start() -> Option<Stack> {
        if !have_python3() {
            eprintln!("python3 not found: skipped (the Python backend example needs it)");
            return None;
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchboard-python-backend-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let dir = TempDir(dir);

        // The backend needs the server's URL, the server the backend's: the server's port is
        // chosen first (a free one), the backend listens on a free port and says which.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut python = Command::new("python3");
        python
            .arg("-u")
            .arg(example().join("app.py"))
            .args(["--port", "0", "--api-key", API_KEY])
            .arg("--switchboard")
            .arg(format!("http://127.0.0.1:{port}"));
        let (backend_proc, backend) = spawn_listening("python backend", python, &dir.0).await;

        // The example's config with this test's ports and key.
        let text = std::fs::read_to_string(example().join("switchboard.toml")).expect("the example's switchboard.toml");
        let mut config: toml::Table = text.parse().expect("the example's switchboard.toml is TOML");
        config.insert("bind".into(), format!("127.0.0.1:{port}").into());
        config.insert("api_key".into(), API_KEY.into());
        let proxy = config.get_mut("proxy").and_then(|p| p.as_table_mut()).expect("[proxy]");
        for key in ["connect", "action"] {
            let url = proxy[key].as_str().expect("a proxy URL").to_owned();
            assert!(
                url.contains("127.0.0.1:8001"),
                "[proxy] {key} = {url:?}: the backend's default address"
            );
            proxy.insert(key.into(), url.replace("127.0.0.1:8001", &backend.to_string()).into());
        }
        let path = dir.0.join("switchboard.toml");
        std::fs::write(&path, toml::to_string(&config).expect("TOML")).expect("write config");

        let mut serve = Command::new(BIN);
        serve.arg("serve").arg("--config").arg(&path).env("RUST_LOG", "warn");
        let (server_proc, switchboard) = spawn_listening("switchboard serve", serve, &dir.0).await;
        assert_eq!(switchboard.port(), port, "bind from the config");
        Some(Stack {
            switchboard,
            _procs: (backend_proc, server_proc),
            _dir: dir,
        })
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.switchboard)
    }

    /// `POST /api/<method>` with the API key: the status and the JSON answer.
    async fn api(&self, method: &str, body: Value) -> (u16, Value) {
        let auth = format!("apikey {API_KEY}");
        let (status, text) = http(
            self.switchboard,
            "POST",
            &format!("/api/{method}"),
            &[("Authorization", &auth)],
            Some(&body.to_string()),
        )
        .await;
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("/api/{method}: non-JSON {text:?}: {e}"));
        (status, value)
    }
}

/// The next message that is not a `presence_diff` (chat:* tells its subscribers who joins and
/// leaves, their own join too).
async fn recv(client: &mut Client) -> Value {
    loop {
        let message = client.recv().await;
        if message["type"] != "presence_diff" {
            return message;
        }
    }
}

/// `connect` with `data`; the answer.
async fn connect(client: &mut Client, data: Value) -> Value {
    client.send(json!({"type": "connect", "data": data, "id": "c"}));
    recv(client).await
}

#[tokio::test]
async fn the_backend_authenticates_and_publishes_through_the_api() {
    let Some(stack) = Stack::start().await else { return };
    let mut alice = Client::connect(&stack.ws_url()).await;

    // Authentication is required: nothing but connect before it.
    alice.send(json!({"type": "subscribe", "channel": "chat:lobby", "id": 0}));
    let refused = recv(&mut alice).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Not connected"),
        "{refused}"
    );

    // A name the backend refuses: its error, and the connection stays.
    let invalid = connect(&mut alice, json!({"name": "not a name!"})).await;
    assert_eq!(invalid["type"], "error", "{invalid}");
    assert_eq!(
        invalid["message"], "Invalid name: 1 to 32 letters, digits, '.', '_' or '-'.",
        "{invalid}"
    );

    let connected = connect(&mut alice, json!({"name": "alice"})).await;
    assert_eq!(connected["type"], "connected", "{connected}");
    assert_eq!(connected["user"], "alice", "{connected}");
    assert_eq!(connected["id"], "c", "{connected}");
    assert!(
        connected["client"].as_str().is_some_and(|c| !c.is_empty()),
        "{connected}"
    );

    alice.send(json!({"type": "subscribe", "channel": "chat:lobby", "id": 1}));
    let subscribed = recv(&mut alice).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["id"], 1, "{subscribed}");
    assert_eq!(subscribed["offset"], 0, "chat:* keeps history: {subscribed}");
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();

    // The backend's action `send` publishes through /api/publish: the publication, with its
    // offset, and the action's answer (in either order).
    let text = "hello from the Rust test, through Python";
    alice.send(json!({"type": "action", "channel": "send", "data": {"text": text}, "id": 2}));
    let (mut publication, mut reply) = (None, None);
    while publication.is_none() || reply.is_none() {
        let message = recv(&mut alice).await;
        match message["type"].as_str() {
            Some("data") => {
                assert!(publication.is_none(), "a second publication: {message}");
                publication = Some(message);
            }
            Some("action") | Some("error") => reply = Some(message),
            _ => panic!("unexpected {message}"),
        }
    }
    assert_eq!(
        publication.unwrap(),
        json!({"type": "data", "channel": "chat:lobby", "data": {"user": "alice", "text": text}, "offset": 1})
    );
    assert_eq!(
        reply.unwrap(),
        json!({"type": "action", "channel": "send", "status": "completed", "data": {"ok": true, "offset": 1}, "id": 2})
    );

    // The backend's refusals are error replies with its message.
    alice.send(json!({"type": "action", "channel": "send", "data": {"text": "  "}, "id": 3}));
    let empty = recv(&mut alice).await;
    assert_eq!(empty["type"], "error", "{empty}");
    assert_eq!(empty["message"], "send: give a non-empty text.", "{empty}");
    alice.send(json!({"type": "action", "channel": "dance", "data": {}, "id": 4}));
    let unknown = recv(&mut alice).await;
    assert_eq!(unknown["type"], "error", "{unknown}");
    assert_eq!(unknown["message"], "Unknown action 'dance'.", "{unknown}");

    // chat:* has client_publish = false: a client cannot publish around the backend. The action
    // `online` (presence counts through /api/presence_stats) comes next, so nothing was
    // published meanwhile.
    alice.send(json!({"type": "publish", "channel": "chat:lobby", "data": {"user": "bob", "text": "forged"}, "id": 5}));
    let forged = recv(&mut alice).await;
    assert_eq!(
        forged["type"], "error",
        "a client publish on chat:* is refused: {forged}"
    );
    alice.send(json!({"type": "action", "channel": "online", "id": 6}));
    assert_eq!(
        recv(&mut alice).await,
        json!({"type": "action", "channel": "online", "status": "completed", "data": {"clients": 1, "users": 1}, "id": 6})
    );

    // What the backend published is in the history, and alice in the presence, with the info
    // the backend gave her.
    let (status, history) = stack.api("history", json!({"channel": "chat:lobby"})).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history["result"]["publications"],
        json!([{"offset": 1, "data": {"user": "alice", "text": text}}])
    );
    assert_eq!(history["result"]["offset"], 1, "{history}");
    assert_eq!(history["result"]["epoch"], epoch.as_str(), "{history}");
    let (status, presence) = stack.api("presence", json!({"channel": "chat:lobby"})).await;
    assert_eq!(status, 200, "{presence}");
    let clients = presence["result"]["clients"].as_array().expect("clients");
    assert_eq!(clients.len(), 1, "{presence}");
    assert_eq!(clients[0]["user"], "alice", "{presence}");
    assert_eq!(clients[0]["info"], json!({"name": "alice"}), "{presence}");
    assert_eq!(clients[0]["client"], connected["client"], "{presence}");

    alice.close().await;
}

#[tokio::test]
async fn a_connection_without_a_name_is_closed_with_the_backends_code() {
    let Some(stack) = Stack::start().await else { return };
    for data in [Value::Null, json!({}), json!({"nickname": "alice"})] {
        let mut client = Client::connect(&stack.ws_url()).await;
        client.send(json!({"type": "connect", "data": data, "id": 1}));
        match client.next_event().await {
            Event::Close(close) => {
                assert_eq!(close.code, 4502, "data {data}: {close:?}");
                assert_eq!(close.reason, "unauthorized: log in first", "data {data}");
            }
            other => panic!("data {data}: expected the backend's close, got {other:?}"),
        }
    }
    // The API without the key (or with a wrong one) is 401.
    for auth in [None, Some("apikey wrong")] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let (status, body) = http(
            stack.switchboard,
            "POST",
            "/api/publish",
            &headers,
            Some(r#"{"channel": "chat:lobby", "data": {}}"#),
        )
        .await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
        assert_eq!(body["error"]["code"], 401, "{body}");
    }
}
