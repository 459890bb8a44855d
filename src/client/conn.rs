//! The connection side of the client: the [`Handler`] that reads the server's messages, and the
//! task that reconnects with jittered exponential backoff.

use super::channel::{send_reply, ChannelState, ClientChannel};
use super::shared::Shared;
use super::ConnectionState;
use crate::ws::{self, CloseFrame, Handler, Text, WebSocket};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Reads one connection's messages into the shared client state.
pub(crate) struct ClientHandler {
    shared: Arc<Shared>,
}

impl ClientHandler {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn handle(&self, ws: &WebSocket, mut message: Map<String, Value>) {
        let kind = match message.remove("type") {
            Some(Value::String(kind)) => kind,
            _ => return tracing::debug!(?message, "server message without a type"),
        };
        let channel = match message.remove("channel") {
            Some(Value::String(channel)) => Some(channel),
            _ => None,
        };
        let id = message.remove("id").filter(|id| !id.is_null());
        let shared = &self.shared;
        match (kind.as_str(), channel) {
            ("data", Some(channel)) => shared.publish(&channel, message.get("data").unwrap_or(&Value::Null)),
            ("subscribed" | "unsubscribed", _) => {
                shared.resolve(id.as_ref(), Ok(Value::Null));
            }
            ("action", _) => {
                shared.resolve(id.as_ref(), Ok(message.remove("data").unwrap_or(Value::Null)));
            }
            ("error", channel) => {
                let text = match message.remove("message") {
                    Some(Value::String(text)) => text,
                    other => other.map(|v| v.to_string()).unwrap_or_default(),
                };
                if !shared.resolve(id.as_ref(), Err(text.clone())) {
                    tracing::warn!(?channel, ?id, %text, "server error that answers no request");
                }
            }
            ("opened", Some(channel)) => self.opened(channel, id),
            (kind @ ("emit" | "request" | "reply" | "close"), Some(name)) => {
                let Some(channel) = shared.channels.lock().get(&name).cloned() else {
                    if kind == "request" {
                        let error = format!("Channel '{name}' is not open.");
                        send_reply(ws, &name, &id.unwrap_or(Value::Null), Err(error));
                    } else {
                        tracing::debug!(channel = %name, kind, "message for a channel that is not open");
                    }
                    return;
                };
                let event = match message.remove("event") {
                    Some(Value::String(event)) => event,
                    _ => String::new(),
                };
                let payload = message.remove("payload").unwrap_or(Value::Null);
                match kind {
                    "emit" => channel.dispatch_event(&event, payload),
                    "request" => channel.dispatch_request(ws, &event, payload, id.unwrap_or(Value::Null)),
                    "reply" => {
                        let reply = match message.remove("error") {
                            Some(Value::String(error)) => Err(error),
                            Some(Value::Null) | None => Ok(payload),
                            Some(other) => Err(other.to_string()),
                        };
                        channel.resolve(id.as_ref(), reply);
                    }
                    _ => {
                        let reason = match message.remove("reason") {
                            Some(Value::String(reason)) => reason,
                            _ => "closed by server".to_owned(),
                        };
                        tracing::debug!(channel = %name, %reason, "channel closed by the server");
                        channel.shut(super::ClientError::Closed(name.clone()), &reason);
                        shared.forget_channel(&channel);
                    }
                }
            }
            (kind, channel) => tracing::debug!(kind, ?channel, "unexpected server message ignored"),
        }
    }

    /// `opened`: the answer to our `open` (with its id), or a channel the server opened itself.
    fn opened(&self, name: String, id: Option<Value>) {
        let shared = &self.shared;
        if id.is_some() {
            if let Some(channel) = shared.channels.lock().get(&name) {
                if matches!(channel.state(), ChannelState::Opening | ChannelState::Reopening) {
                    channel.set_state(ChannelState::Open);
                }
            }
            shared.resolve(id.as_ref(), Ok(Value::Null));
            return;
        }
        let channel = ClientChannel::new(name.clone(), None, Arc::downgrade(shared), ChannelState::Open);
        {
            let mut channels = shared.channels.lock();
            if channels.get(&name).is_some_and(|c| !c.is_closed()) {
                return tracing::warn!(channel = %name, "server announced a channel that is already open here");
            }
            channels.insert(name, channel.clone());
        }
        // Callbacks run here, on the connection's task, so handlers they register see every
        // message that follows the announcement.
        let callbacks = shared.on_channel.lock().clone();
        if callbacks.is_empty() {
            shared.backlog.lock().push(channel);
        } else {
            for callback in callbacks {
                callback(channel.clone());
            }
        }
    }
}

impl Handler for ClientHandler {
    async fn on_open(&mut self, ws: &WebSocket) {
        if self.shared.is_shutting_down() {
            let _ = ws.close(1000, "client closed");
            return;
        }
        *self.shared.ws.lock() = Some(ws.clone());
        self.shared.restore();
        self.shared.state.send_replace(ConnectionState::Open);
    }

    async fn on_message(&mut self, ws: &WebSocket, text: Text) {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(message)) => self.handle(ws, message),
            _ => tracing::debug!(%text, "server message is not a JSON object"),
        }
    }

    async fn on_close(&mut self, ws: &WebSocket, close: CloseFrame) {
        tracing::debug!(code = close.code, reason = %close.reason, "client connection ended");
        let reconnecting = self.shared.config.reconnect && !self.shared.is_shutting_down();
        self.shared.on_disconnect(ws, reconnecting);
    }
}

/// The delay before reconnect attempt `attempt` (0-based): `min(max, min * 2^attempt)`, each a
/// random point between half and all of it ("equal jitter").
pub(crate) fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let ceiling = min.saturating_mul(2u32.saturating_pow(attempt.min(30))).min(max);
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    let half = ceiling_ms / 2;
    Duration::from_millis(half + fastrand::u64(0..=ceiling_ms - half))
}

async fn triggered(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Keeps the client connected until it is closed: waits for the connection to end, then
/// reconnects with backoff (when enabled).
pub(crate) async fn supervise(shared: Arc<Shared>, mut ws: WebSocket) {
    let mut shutdown = shared.shutdown.subscribe();
    'connected: loop {
        tokio::select! {
            _ = ws.closed() => {}
            _ = triggered(&mut shutdown) => {
                let _ = ws.close(1000, "client closed");
                let wait = shared.config.ws.close_timeout + Duration::from_secs(1);
                let _ = tokio::time::timeout(wait, ws.closed()).await;
                break 'connected;
            }
        }
        if shared.is_shutting_down() || !shared.config.reconnect {
            break;
        }
        let mut attempt = 0;
        ws = loop {
            let delay = backoff(shared.config.min_delay, shared.config.max_delay, attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = triggered(&mut shutdown) => break 'connected,
            }
            shared.state.send_replace(ConnectionState::Connecting);
            let handler = ClientHandler::new(shared.clone());
            match ws::connect(&shared.url, handler, shared.config.ws.clone()).await {
                Ok(ws) => break ws,
                Err(err) => tracing::debug!(%err, attempt, "reconnect failed"),
            }
        };
    }
    shared.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_equal_jitter_and_caps() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 0..12 {
            let ceiling = (100u64 << attempt.min(20)).min(1000);
            let delay = backoff(min, max, attempt).as_millis() as u64;
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "attempt {attempt}: {delay} ms"
            );
        }
    }
}
