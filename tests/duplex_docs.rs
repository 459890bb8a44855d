//! The behaviour of examples/channels_docs.rs (Pulse's chat), through the Rust client. The route
//! below is the example's `chat` function, word for word.

#[path = "duplex_support.rs"]
mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::*;
use switchboard::client::ClientChannel;
use switchboard::{Duplex, DuplexError, Router};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const T: Duration = Duration::from_secs(5);

/// examples/channels_docs.rs's `chat`.
fn chat(channel: Duplex) -> Result<(), DuplexError> {
    let out = channel.clone();
    channel.on_sync("client:send", move |payload: Value| {
        let text = payload.get("text").cloned().unwrap_or(Value::Null);
        out.emit("server:message", json!({ "user": "User", "text": text }))
    })?;
    channel.on_sync(
        "client:request",
        |payload: Value| json!({ "status": "ok", "result": payload }),
    )?;
    let out = channel.clone();
    channel.on_sync("client:ping", move |_| out.emit("server:pong", json!({ "ack": true })))?;
    let out = channel.clone();
    channel.on("client:confirm", move |_| {
        let out = out.clone();
        async move {
            match out
                .request("server:ask", json!({ "question": "confirm?" }), Duration::from_secs(5))
                .await
            {
                Ok(answer) => out.emit("server:answer", answer),
                Err(DuplexError::Timeout { .. }) => out.emit("server:timeout", json!({})),
                Err(err) => Err(err),
            }
        }
    })?;
    Ok(())
}

async fn open_chat() -> (
    Server,
    switchboard::client::Client,
    ClientChannel,
    UnboundedReceiver<(String, Value)>,
) {
    let mut router = Router::new();
    router.route("chat", |channel, _params| async move { chat(channel) });
    let server = serve(router).await;
    let client = client(&server).await;
    let channel = client.open("chat", json!({})).await.expect("open chat");
    let (tx, rx) = unbounded_channel();
    for event in ["server:message", "server:pong", "server:answer", "server:timeout"] {
        let tx = tx.clone();
        channel
            .on_sync(event, move |payload| drop(tx.send((event.to_owned(), payload))))
            .expect("on");
    }
    (server, client, channel, rx)
}

#[tokio::test]
async fn send_request_and_ping() {
    let (_server, _client, chat, mut events) = open_chat().await;
    chat.emit("client:send", json!({ "text": "hello" })).expect("emit");
    assert_eq!(
        next(&mut events).await,
        ("server:message".to_owned(), json!({ "user": "User", "text": "hello" }))
    );
    let reply = chat.request("client:request", json!({ "data": [1, 2] }), T).await;
    assert_eq!(reply, Ok(json!({ "status": "ok", "result": { "data": [1, 2] } })));
    chat.emit("client:ping", json!({})).expect("emit");
    assert_eq!(
        next(&mut events).await,
        ("server:pong".to_owned(), json!({ "ack": true }))
    );
}

#[tokio::test]
async fn confirm_with_an_answer() {
    let (_server, _client, chat, mut events) = open_chat().await;
    chat.on("server:ask", |question: Value| async move {
        assert_eq!(question, json!({ "question": "confirm?" }));
        json!({ "confirmed": true })
    })
    .expect("on");
    chat.emit("client:confirm", json!({})).expect("emit");
    assert_eq!(
        next(&mut events).await,
        ("server:answer".to_owned(), json!({ "confirmed": true }))
    );
}

#[tokio::test]
async fn confirm_unanswered_times_out_after_five_seconds() {
    let (_server, _client, chat, mut events) = open_chat().await;
    // Heard, never answered in time.
    chat.on("server:ask", |_| async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        json!("too late")
    })
    .expect("on");
    let started = Instant::now();
    chat.emit("client:confirm", json!({})).expect("emit");
    let (event, payload) = tokio::time::timeout(Duration::from_secs(7), events.recv())
        .await
        .expect("in time")
        .expect("open");
    let took = started.elapsed();
    assert_eq!((event.as_str(), payload), ("server:timeout", json!({})));
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_millis(6500),
        "{took:?}"
    );
}
