//! The chat of Pulse's channel docs, made runnable: a bidirectional channel route `chat` at `/`.
//!
//! `cargo run --release --example channels_docs -- --bind 127.0.0.1:8001`
//!
//! * event `client:send` `{text}` → emits `server:message` `{"user":"User","text":TEXT}`
//! * request `client:request` → replies `{"status":"ok","result":PAYLOAD}`
//! * event `client:ping` → emits `server:pong` `{"ack":true}`
//! * event `client:confirm` → requests `server:ask` `{"question":"confirm?"}` from the client (5 s),
//!   then emits `server:answer` with the reply's payload, or `server:timeout` `{}`.

use clap::Parser;
use serde_json::{json, Value};
use std::time::Duration;
use switchboard::{Duplex, DuplexError, Node, Router};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8001")]
    bind: String,
}

/// Sets up the chat handlers on a freshly opened channel.
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

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let mut router = Router::new();
    router.route("chat", |channel, _params| async move { chat(channel) });
    let node = Node::new(router);
    let listener = switchboard::http::bind(&args.bind).await?;
    println!("channels_docs listening on ws://{}/", listener.local_addr()?);
    switchboard::http::serve(listener, node.app(), switchboard::Shutdown::on_signals()).await
}
