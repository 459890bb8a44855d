//! The demo that `switchboard serve` runs (and `members`, a channel with presence that the page
//! subscribes to, to show who has it open): a chat whose messages are published on the pub/sub
//! channel `chat`, which keeps the last [`CHAT_HISTORY`] of them (so a reloaded page, or one that
//! reconnects to a restarted server, shows the recent ones), sent with the `send_message` action
//! (or `switchboard publish`); a bidirectional channel `chat` where every `client:send` reaches
//! every open chat (and the pub/sub `chat`), and the server asks the page to confirm; and a live
//! `ticker` feed on a pub/sub channel.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard::{Channel, ChannelRef, Duplex, DuplexError, Router};

/// How many messages the pub/sub `chat` keeps, and for how long.
pub const CHAT_HISTORY: usize = 100;
const CHAT_TTL: Duration = Duration::from_secs(3600);

/// One tick of the live feed. Subscribers give no parameters, hence the defaults.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Tick {
    seq: u64,
    time: u64,
}

/// `members` takes no parameters.
#[derive(Serialize, Deserialize)]
struct Members {}

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
    let chat = router.channel(
        Channel::new("chat", |m: ChatMessage| async move { Ok::<_, String>(m) })
            .history(CHAT_HISTORY, CHAT_TTL)
            .presence(),
    );
    // Who has the page open: the page subscribes to `members` (joins and leaves, live) — a
    // channel of its own, so that `chat`'s subscribers get publications only, as before.
    router.channel(Channel::new("members", |_: Members| async move { Ok::<_, String>(Value::Null) }).join_leave());
    let rooms: Rooms = Arc::default();
    let (to_chat, to_rooms) = (chat.clone(), rooms.clone());
    router.action("send_message", move |m: ChatMessage| {
        let (chat, rooms) = (to_chat.clone(), to_rooms.clone());
        async move {
            emit_to_rooms(&rooms, &json!({ "user": m.user, "text": m.text }));
            chat.broadcast(m).await
        }
    });
    router.route("chat", move |channel: Duplex, _params: Value| {
        let (rooms, chat) = (rooms.clone(), chat.clone());
        async move { join(channel, rooms, chat) }
    });
    (router, ticker)
}

/// Sends a chat message to every open bidirectional chat.
fn emit_to_rooms(rooms: &Rooms, message: &Value) {
    let open: Vec<Duplex> = rooms.lock().values().cloned().collect();
    for room in open {
        let _ = room.emit("server:message", message);
    }
}

/// Publishes a chat message on the pub/sub `chat` (which keeps it), in the background.
fn publish_chat(chat: &ChannelRef<ChatMessage>, message: ChatMessage) {
    let chat = chat.clone();
    tokio::spawn(async move {
        if let Err(err) = chat.broadcast(message).await {
            tracing::warn!(%err, "chat publish failed");
        }
    });
}

fn join(channel: Duplex, rooms: Rooms, chat: ChannelRef<ChatMessage>) -> Result<(), DuplexError> {
    let everyone = rooms.clone();
    channel.on_sync("client:send", move |payload: Value| {
        let text = payload.get("text").cloned().unwrap_or(Value::Null);
        let message = json!({ "user": "User", "text": text });
        emit_to_rooms(&everyone, &message);
        let text = match text {
            Value::String(text) => text,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        publish_chat(
            &chat,
            ChatMessage {
                user: anonymous(),
                text,
            },
        );
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
