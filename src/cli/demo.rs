//! The demo that `switchboard serve` runs: a chat on a bidirectional channel where every message
//! reaches every open chat (every tab), a live `ticker` feed on a pub/sub channel, and a pub/sub
//! `chat` with a `send_message` action for SocketAPI-style clients and `switchboard publish`.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard::{Channel, ChannelRef, Duplex, DuplexError, Router};

/// One tick of the live feed. Subscribers give no parameters, hence the defaults.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Tick {
    seq: u64,
    time: u64,
}

#[derive(Serialize, Deserialize)]
struct ChatMessage {
    #[serde(default = "anonymous")]
    user: String,
    #[serde(default)]
    text: String,
}

fn anonymous() -> String {
    "User".into()
}

/// Open bidirectional chats, by connection id.
type Rooms = Arc<Mutex<HashMap<u64, Duplex>>>;

/// The demo's channels, actions and channel route, and the ticker's handle.
pub fn router() -> (Router, ChannelRef<Tick>) {
    let mut router = Router::new();
    let ticker = router.channel(Channel::new("ticker", |t: Tick| async move { Ok::<_, String>(t) }));
    let chat = router.channel(Channel::new("chat", |m: ChatMessage| async move { Ok::<_, String>(m) }));
    router.action("send_message", move |m: ChatMessage| {
        let chat = chat.clone();
        async move { chat.broadcast(m).await }
    });
    let rooms: Rooms = Arc::default();
    router.route("chat", move |channel: Duplex, _params: Value| {
        let rooms = rooms.clone();
        async move { join(channel, rooms) }
    });
    (router, ticker)
}

fn join(channel: Duplex, rooms: Rooms) -> Result<(), DuplexError> {
    let everyone = rooms.clone();
    channel.on_sync("client:send", move |payload: Value| {
        let text = payload.get("text").cloned().unwrap_or(Value::Null);
        let message = json!({ "user": "User", "text": text });
        let open: Vec<Duplex> = everyone.lock().values().cloned().collect();
        for room in open {
            let _ = room.emit("server:message", &message);
        }
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
    let session = channel.connection_id();
    rooms.lock().insert(session, channel.clone());
    tokio::spawn(async move {
        channel.closed().await;
        // Remove only this channel: the connection may already have opened a new chat.
        let mut rooms = rooms.lock();
        if rooms.get(&session).is_some_and(|open| open.is_closed()) {
            rooms.remove(&session);
        }
    });
    Ok(())
}

/// Publishes a tick every `interval` until the process ends.
pub async fn run_ticker(ticker: ChannelRef<Tick>, interval: Duration) {
    let mut clock = tokio::time::interval(interval);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    for seq in 1.. {
        clock.tick().await;
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if let Err(err) = ticker.broadcast(Tick { seq, time }).await {
            tracing::warn!(%err, "ticker publish failed");
        }
    }
}
