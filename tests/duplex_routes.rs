//! Bidirectional channels over real sockets: opening by route (accepted, refused, unknown,
//! duplicate), server-opened channels, several handlers, handler errors, emit and request both
//! ways, the authorization hook, and immediate errors for unknown channels and events.

#[path = "duplex_support.rs"]
mod support;

use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use switchboard::client::{Client, ClientChannel, ClientError};
use switchboard::{DuplexError, Router};
use tokio::sync::mpsc::unbounded_channel;

const T: Duration = Duration::from_secs(5);

fn echo_route(router: &mut Router) {
    router.route("echo", |channel, _params| async move {
        let out = channel.clone();
        channel.on_sync("say", move |payload| out.emit("said", payload))?;
        channel.on_sync("ask", |payload| json!({ "echo": payload }))?;
        Ok::<_, DuplexError>(())
    });
}

#[tokio::test]
async fn open_by_route_accepted_refused_unknown_and_duplicate() {
    let mut router = Router::new();
    echo_route(&mut router);
    router.route(
        "refuse",
        |_channel, _params| async move { Err::<(), _>("Not allowed here") },
    );
    let mut probe = probe_route(&mut router, "probe");
    let server = serve(router).await;
    let client = client(&server).await;

    let echo = client.open("echo", json!({})).await.expect("echo opens");
    assert!(echo.is_open() && !echo.is_server_opened());
    assert_eq!(echo.request("ask", json!(1), T).await, Ok(json!({ "echo": 1 })));

    assert_eq!(
        client.open("refuse", json!({})).await.err(),
        Some(ClientError::Remote("Not allowed here".into()))
    );
    assert!(client.channel("refuse").is_none(), "a refused channel is not kept");
    assert_eq!(
        client.open("nope", json!({})).await.err(),
        Some(ClientError::Remote("Channel 'nope' not found.".into()))
    );
    // The client knows "echo" is open and answers with the server's text.
    assert_eq!(
        client.open("echo", json!({})).await.err(),
        Some(ClientError::Remote("Channel 'echo' is already open.".into()))
    );

    // The route sees the parameters.
    let _probe = client
        .open("probe", json!({ "room": "a", "n": 2 }))
        .await
        .expect("probe opens");
    let (_duplex, params) = next(&mut probe).await;
    assert_eq!(params, json!({ "room": "a", "n": 2 }));

    // On the wire: a duplicate open gets the error with the request's id; a refusal too.
    let mut raw = Raw::connect(&server.url()).await;
    raw.send(json!({ "type": "open", "channel": "echo", "data": {}, "id": 1 }));
    assert_eq!(
        raw.recv().await,
        json!({ "type": "opened", "channel": "echo", "id": 1 })
    );
    raw.send(json!({ "type": "open", "channel": "echo", "id": 2 }));
    assert_eq!(
        raw.recv().await,
        json!({ "type": "error", "channel": "echo", "message": "Channel 'echo' is already open.", "id": 2 })
    );
    raw.send(json!({ "type": "open", "channel": "refuse", "id": "r" }));
    assert_eq!(
        raw.recv().await,
        json!({ "type": "error", "channel": "refuse", "message": "Not allowed here", "id": "r" })
    );
    raw.send(json!({ "type": "open", "channel": "ghost", "id": 3 }));
    assert_eq!(
        raw.recv().await,
        json!({ "type": "error", "channel": "ghost", "message": "Channel 'ghost' not found.", "id": 3 })
    );
    // After a close the same name opens again.
    raw.send(json!({ "type": "close", "channel": "echo", "reason": "done" }));
    raw.send(json!({ "type": "open", "channel": "echo", "id": 4 }));
    assert_eq!(
        raw.recv().await,
        json!({ "type": "opened", "channel": "echo", "id": 4 })
    );

    // Same for the client: close, then open again.
    echo.close();
    let again = client.open("echo", json!({})).await.expect("re-open after close");
    assert_eq!(again.request("ask", json!("x"), T).await, Ok(json!({ "echo": "x" })));
}

#[tokio::test]
async fn server_opened_channels_are_announced_and_work_both_ways() {
    let (tx, mut server_side) = unbounded_channel();
    let mut router = Router::new();
    router.on_connect(move |connection| {
        let tx = tx.clone();
        async move {
            let named = connection.open_channel(Some("notifications")).expect("named channel");
            // Emitted at once: the client's on_channel callback has registered its handler by then.
            named.emit("welcome", json!({ "hi": true })).expect("emit");
            let generated = connection.open_channel(None).expect("uuid channel");
            assert!(
                connection.open_channel(Some("notifications")).is_err(),
                "duplicate id refused"
            );
            let _ = tx.send((named, generated));
        }
    });
    let server = serve(router).await;

    let (ch_tx, mut from_server) = unbounded_channel::<ClientChannel>();
    let (welcome_tx, mut welcome) = unbounded_channel::<Value>();
    let client = Client::builder(&server.url())
        .config(fast_config())
        .on_channel(move |channel| {
            if channel.name() == "notifications" {
                let welcome_tx = welcome_tx.clone();
                channel
                    .on_sync("welcome", move |p| drop(welcome_tx.send(p)))
                    .expect("on");
            }
            let _ = ch_tx.send(channel);
        })
        .connect()
        .await
        .expect("connect");

    let (named, generated) = next(&mut server_side).await;
    let first = next(&mut from_server).await;
    let second = next(&mut from_server).await;
    assert_eq!(first.name(), "notifications");
    assert!(first.is_server_opened() && first.is_open());
    assert_eq!(second.name(), generated.id());
    let uuid = generated.id();
    assert_eq!((uuid.len(), uuid.matches('-').count()), (36, 4), "a UUID: {uuid}");
    assert_eq!(next(&mut welcome).await, json!({ "hi": true }));

    // Client -> server: emit and request.
    let (got_tx, mut got) = unbounded_channel();
    generated
        .on_sync("client:note", move |p| drop(got_tx.send(p)))
        .expect("on");
    generated
        .on("client:sum", |p: Value| async move {
            json!(p["a"].as_i64().unwrap_or(0) + p["b"].as_i64().unwrap_or(0))
        })
        .expect("on");
    second.emit("client:note", json!("n1")).expect("emit");
    assert_eq!(next(&mut got).await, json!("n1"));
    assert_eq!(
        second.request("client:sum", json!({ "a": 2, "b": 3 }), T).await,
        Ok(json!(5))
    );

    // Server -> client: emit and request.
    let (note_tx, mut notes) = unbounded_channel();
    first
        .on_sync("server:note", move |p| drop(note_tx.send(p)))
        .expect("on");
    first
        .on(
            "server:double",
            |p: Value| async move { json!(p.as_i64().unwrap_or(0) * 2) },
        )
        .expect("on");
    named.emit("server:note", json!([1, 2])).expect("emit");
    assert_eq!(next(&mut notes).await, json!([1, 2]));
    assert_eq!(named.request("server:double", 21, T).await, Ok(json!(42)));

    // The announcement on the wire carries no id.
    let mut raw = Raw::connect(&server.url()).await;
    let announced = raw.recv_until(|f| f["type"] == "opened").await;
    assert_eq!(announced, json!({ "type": "opened", "channel": "notifications" }));
    drop(client);
}

#[tokio::test]
async fn several_handlers_first_value_wins_and_removers_work() {
    let mut router = Router::new();
    let mut probe = probe_route(&mut router, "probe");
    let server = serve(router).await;
    let client = client(&server).await;
    let channel = client.open("probe", json!({})).await.expect("open");
    let (duplex, _) = next(&mut probe).await;

    // Server side: a passing sync handler, an async one, a sync one.
    let passes = Arc::new(AtomicUsize::new(0));
    let counter = passes.clone();
    let pass = duplex
        .on_sync("get", move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .expect("on");
    let first = duplex
        .on("get", |_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            json!("async")
        })
        .expect("on");
    let _second = duplex.on_sync("get", |_| json!("sync")).expect("on");
    assert_eq!(channel.request("get", json!(null), T).await, Ok(json!("async")));
    first.remove();
    assert_eq!(channel.request("get", json!(null), T).await, Ok(json!("sync")));
    assert_eq!(passes.load(Ordering::SeqCst), 2, "the passing handler ran each time");
    pass.remove();
    _second.remove();
    let started = Instant::now();
    assert_eq!(
        channel.request("get", json!(null), T).await,
        Err(ClientError::Remote(
            "No handler for event 'get' on channel 'probe'".into()
        ))
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // Every handler of an event runs.
    let runs = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let runs = runs.clone();
        let _ = duplex
            .on_sync("tick", move |_| {
                runs.fetch_add(1, Ordering::SeqCst);
            })
            .expect("on");
    }
    channel.emit("tick", json!(1)).expect("emit");
    assert!(eventually(T, || runs.load(Ordering::SeqCst) == 3).await);

    // Client side, the same rules.
    let pass = channel.on_sync("get", |_| ()).expect("on");
    let a = channel.on("get", |_| async { json!("a") }).expect("on");
    let _b = channel.on_sync("get", |_| json!("b")).expect("on");
    assert_eq!(duplex.request("get", json!(null), T).await, Ok(json!("a")));
    a.remove();
    assert_eq!(duplex.request("get", json!(null), T).await, Ok(json!("b")));
    pass.remove();
    _b.remove();
    assert_eq!(
        duplex.request("get", json!(null), T).await,
        Err(DuplexError::Remote("No handler for event 'get'".into()))
    );
    // A handler that only passes answers null.
    let _p = channel.on_sync("quiet", |_| ()).expect("on");
    assert_eq!(duplex.request("quiet", json!(null), T).await, Ok(Value::Null));
}

#[tokio::test]
async fn handler_errors_become_error_replies_both_ways() {
    let mut router = Router::new();
    let mut probe = probe_route(&mut router, "probe");
    let server = serve(router).await;
    let client = client(&server).await;
    let channel = client.open("probe", json!({})).await.expect("open");
    let (duplex, _) = next(&mut probe).await;

    duplex.on_sync("fail", |_| Err::<Value, _>("boom")).expect("on");
    duplex
        .on("fail_async", |_| async { Err::<Value, _>("async boom") })
        .expect("on");
    assert_eq!(
        channel.request("fail", json!(null), T).await,
        Err(ClientError::Remote("boom".into()))
    );
    assert_eq!(
        channel.request("fail_async", json!(null), T).await,
        Err(ClientError::Remote("async boom".into()))
    );

    channel.on_sync("fail", |_| Err::<Value, _>("nope")).expect("on");
    channel
        .on("fail_async", |_| async { Err::<Value, _>("async nope") })
        .expect("on");
    assert_eq!(
        duplex.request("fail", json!(null), T).await,
        Err(DuplexError::Remote("nope".into()))
    );
    assert_eq!(
        duplex.request("fail_async", json!(null), T).await,
        Err(DuplexError::Remote("async nope".into()))
    );
    // The channel is still fine afterwards.
    duplex.on_sync("ok", |_| json!(true)).expect("on");
    assert_eq!(channel.request("ok", json!(null), T).await, Ok(json!(true)));
}

#[tokio::test]
async fn authorization_denies_requests_with_denied_and_drops_events() {
    let mut router = Router::new();
    let mut probe = probe_route(&mut router, "probe");
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<(String, bool)>::new()));
    let log = seen.clone();
    router.authorize(move |access| {
        log.lock().push((access.event.to_owned(), access.is_request));
        !access.event.starts_with("admin:") || access.payload["token"] == "let-me-in"
    });
    let server = serve(router).await;
    let client = client(&server).await;
    let channel = client.open("probe", json!({})).await.expect("open");
    let (duplex, _) = next(&mut probe).await;

    let events = Arc::new(parking_lot::Mutex::new(Vec::<Value>::new()));
    let sink = events.clone();
    duplex.on_sync("admin:event", move |p| sink.lock().push(p)).expect("on");
    let sink = events.clone();
    duplex.on_sync("plain", move |p| sink.lock().push(p)).expect("on");
    duplex.on_sync("admin:get", |_| json!("secret")).expect("on");

    assert_eq!(
        channel.request("admin:get", json!({}), T).await,
        Err(ClientError::Remote("Denied".into()))
    );
    assert_eq!(
        channel.request("admin:get", json!({ "token": "let-me-in" }), T).await,
        Ok(json!("secret"))
    );
    channel.emit("admin:event", json!({ "n": 1 })).expect("emit");
    channel.emit("plain", json!({ "n": 2 })).expect("emit");
    // Events are handled in order: once "plain" arrived, the denied one was dropped for good.
    assert!(eventually(T, || events.lock().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(*events.lock(), vec![json!({ "n": 2 })]);
    let seen = seen.lock().clone();
    assert!(seen.contains(&("admin:event".to_owned(), false)) && seen.contains(&("admin:get".to_owned(), true)));
    // Server -> client traffic is not subject to the hook.
    channel.on_sync("admin:ask", |_| json!("fine")).expect("on");
    assert_eq!(duplex.request("admin:ask", json!(null), T).await, Ok(json!("fine")));
}

#[tokio::test]
async fn unknown_channel_and_unknown_event_are_answered_at_once() {
    let mut router = Router::new();
    echo_route(&mut router);
    let mut probe = probe_route(&mut router, "probe");
    let server = serve(router).await;
    let mut raw = Raw::connect(&server.url()).await;

    let started = Instant::now();
    raw.send(json!({ "type": "request", "channel": "ghost", "event": "x", "payload": 1, "id": 7 }));
    assert_eq!(
        raw.recv().await,
        json!({ "type": "reply", "channel": "ghost", "id": 7, "error": "Channel 'ghost' is not open." })
    );
    raw.send(json!({ "type": "emit", "channel": "ghost", "event": "x" }));
    assert_eq!(
        raw.recv().await,
        json!({ "type": "error", "channel": "ghost", "message": "Channel 'ghost' is not open." })
    );
    raw.send(json!({ "type": "open", "channel": "echo", "id": 1 }));
    raw.recv().await;
    raw.send(json!({ "type": "request", "channel": "echo", "event": "nope", "id": 8 }));
    assert_eq!(
        raw.recv().await,
        json!({ "type": "reply", "channel": "echo", "id": 8, "error": "No handler for event 'nope' on channel 'echo'" })
    );
    // Client and server request ids are separate: a client request id 1 next to the server's 1.
    raw.send(json!({ "type": "request", "channel": "echo", "event": "ask", "payload": "p", "id": 1 }));
    assert_eq!(
        raw.recv().await,
        json!({ "type": "reply", "channel": "echo", "id": 1, "payload": { "echo": "p" } })
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once: {:?}",
        started.elapsed()
    );

    // The client answers unknown channels and events at once too.
    let client = client(&server).await;
    let channel = client.open("probe", json!({})).await.expect("open");
    let (duplex, _) = next(&mut probe).await;
    let started = Instant::now();
    assert_eq!(
        duplex.request("zzz", json!(null), T).await,
        Err(DuplexError::Remote("No handler for event 'zzz'".into()))
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(channel);
}
