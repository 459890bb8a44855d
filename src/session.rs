//! A session: one client connection speaking the Switchboard protocol — its subscriptions, its
//! actions, and (see `duplex`) its bidirectional channels.

use crate::channel::ChannelDef;
use crate::connection::Connection;
use crate::duplex::Duplex;
use crate::node::Node;
use crate::protocol::{self, text, Inbound, Outbound};
use crate::router::Access;
use crate::ws::{CloseFrame, Handler, Text, WebSocket};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(crate) struct Session {
    node: Node,
    /// The connection's bidirectional channels: set when it opens if an `on_connect` hook
    /// wants it, else when the client opens its first channel.
    connection: Option<Connection>,
    /// Topics this connection subscribes to: a few per connection, so a vector sized exactly
    /// (24 bytes per topic) rather than a hash set (~120 bytes for the first one).
    topics: Vec<String>,
}

impl Session {
    pub fn new(node: Node) -> Self {
        Self {
            node,
            connection: None,
            topics: Vec::new(),
        }
    }

    async fn handle(&mut self, ws: &WebSocket, mut message: Inbound) {
        // SocketAPI checks the channel before the type.
        let Some(name) = message.channel.take() else {
            return reply(ws, protocol::error(text::CHANNEL_REQUIRED, None, message.id.as_ref()));
        };
        let name = name.as_str();
        let id = message.id.as_ref();
        match message.kind.as_str() {
            "subscribe" => self.subscribe(ws, name, message.data.as_ref(), id).await,
            "unsubscribe" => self.unsubscribe(ws, name, message.data.as_ref(), id),
            "action" => self.action(ws, name, message.data.take(), id).await,
            "open" => self.open(ws, name, message.data.take(), id),
            "emit" | "request" => self.inbound_event(ws, name, message),
            "reply" => {
                if let Some(channel) = self.channel(name) {
                    let reply = match message.error {
                        Some(error) => Err(error),
                        None => Ok(message.payload),
                    };
                    channel.resolve(message.id.as_ref().unwrap_or(&Value::Null), reply);
                }
            }
            "close" => {
                if let Some(channel) = self.channel(name) {
                    tracing::debug!(channel = name, reason = ?message.reason, "channel closed by client");
                    channel.shut();
                }
            }
            other => reply(ws, protocol::error(&text::unknown_type(other), Some(name), id)),
        }
    }

    async fn subscribe(&mut self, ws: &WebSocket, name: &str, data: Option<&Value>, id: Option<&Value>) {
        let Some(def) = self.node.shared.channels.get(name).cloned() else {
            return reply(ws, protocol::error(&text::channel_not_found(name), Some(name), id));
        };
        let prepared = match def.subscribe_params(data).and_then(|params| def.prepare(params)) {
            Ok(prepared) => prepared,
            Err(_) => return reply(ws, protocol::error(&text::invalid_params(name), Some(name), id)),
        };
        // SocketAPI calls the channel function on subscribe: its error rejects the subscription.
        let initial = match prepared.data.await {
            Ok(initial) => initial,
            Err(message) => return reply(ws, protocol::error(&message, Some(name), id)),
        };
        let topic = def.topic(&prepared.key);
        let shared = &self.node.shared;
        if self.topics.contains(&topic) {
            // Already subscribed: answer as before, without asking the broker again (which, if
            // it were down, would report an error for a subscription that stays in place).
            reply(ws, subscribed(name, id));
            if def.default_response {
                reply(ws, protocol::data(name, &initial));
            }
            return;
        }
        shared.hub.reserve(&topic);
        if let Err(err) = shared.broker.subscribe(&topic).await {
            if shared.hub.release(&topic) {
                shared.broker.unsubscribe(&topic);
            }
            return reply(ws, protocol::error(&err.to_string(), Some(name), id));
        }
        shared.hub.commit(&topic, ws, Text::from(subscribed(name, id)));
        self.topics.reserve_exact(1);
        self.topics.push(topic);
        if def.default_response {
            reply(ws, protocol::data(name, &initial));
        }
    }

    /// Like SocketAPI, unsubscribing from a channel one is not subscribed to (or that does not
    /// exist) is still answered `unsubscribed`.
    fn unsubscribe(&mut self, ws: &WebSocket, name: &str, data: Option<&Value>, id: Option<&Value>) {
        if let Some(def) = self.node.shared.channels.get(name).cloned() {
            // With the subscribe-time parameters, leave that one subscription; without, all of the channel.
            let key = def
                .subscribe_params(data)
                .ok()
                .and_then(|params| def.prepare(params).ok())
                .map(|p| p.key);
            let without_params = match data {
                None | Some(Value::Null) => true,
                Some(Value::Object(given)) => given.is_empty(),
                Some(_) => false,
            };
            let topics: Vec<String> = match key {
                Some(key) if !def.required.is_empty() => vec![def.topic(&key)],
                // Parameters given but not valid name no subscription: leave nothing.
                None if !def.required.is_empty() && !without_params => Vec::new(),
                _ => self.topics.iter().filter(|t| belongs_to(t, &def)).cloned().collect(),
            };
            for topic in topics {
                if let Some(at) = self.topics.iter().position(|t| *t == topic) {
                    self.topics.swap_remove(at);
                    self.leave(ws, &topic);
                }
            }
        }
        reply(
            ws,
            Outbound {
                kind: "unsubscribed",
                channel: Some(name),
                id,
                ..Default::default()
            }
            .encode(),
        );
    }

    async fn action(&mut self, ws: &WebSocket, name: &str, data: Option<Value>, id: Option<&Value>) {
        let Some(def) = self.node.shared.actions.get(name).cloned() else {
            return reply(ws, protocol::error(&text::action_not_found(name), Some(name), id));
        };
        // SocketAPI calls the action with `**data`: anything but an object is invalid (serde would
        // otherwise read an array as the fields in order).
        let call = match data {
            Some(Value::Array(_) | Value::Bool(_) | Value::Number(_) | Value::String(_)) => None,
            data => def.call(data).ok(),
        };
        let Some(call) = call else {
            return reply(ws, protocol::error(&text::invalid_params(name), Some(name), id));
        };
        match call.await {
            Ok(result) => {
                let data = (!result.is_null()).then_some(&result);
                let message = Outbound {
                    kind: "action",
                    channel: Some(name),
                    status: Some("completed"),
                    data,
                    id,
                    ..Default::default()
                };
                reply(ws, message.encode());
            }
            Err(message) => reply(ws, protocol::error(&message, Some(name), id)),
        }
    }

    fn channel(&self, name: &str) -> Option<Duplex> {
        self.connection.as_ref().and_then(|c| c.channel(name))
    }

    /// A client opens a bidirectional channel by route name.
    fn open(&mut self, ws: &WebSocket, name: &str, data: Option<Value>, id: Option<&Value>) {
        let Some(route) = self.node.shared.routes.get(name).cloned() else {
            return reply(ws, protocol::error(&text::channel_not_found(name), Some(name), id));
        };
        let connection = self.connection.get_or_insert_with(|| Connection::new(ws.clone()));
        let Some(channel) = connection.register(name) else {
            return reply(
                ws,
                protocol::error(&format!("Channel '{name}' is already open."), Some(name), id),
            );
        };
        let ws = ws.clone();
        let name = name.to_owned();
        let id = id.cloned();
        let params = data.unwrap_or(Value::Object(Default::default()));
        // The route may itself talk to the client (even `request`), so it runs beside the
        // connection's reader rather than in it.
        tokio::spawn(async move {
            let message = match (route.accept)(channel.clone(), params).await {
                Ok(()) if !channel.is_closed() => Outbound {
                    kind: "opened",
                    channel: Some(&name),
                    id: id.as_ref(),
                    ..Default::default()
                }
                .encode(),
                Ok(()) => protocol::error(
                    &format!("Channel '{name}' was closed while opening."),
                    Some(&name),
                    id.as_ref(),
                ),
                Err(text) => {
                    channel.shut();
                    protocol::error(&text, Some(&name), id.as_ref())
                }
            };
            reply(&ws, message);
        });
    }

    /// An event or request from the client on a bidirectional channel.
    fn inbound_event(&mut self, ws: &WebSocket, name: &str, message: Inbound) {
        let is_request = message.kind == "request";
        let Some(event) = message.event.as_deref() else {
            return reply(
                ws,
                protocol::error("Event is required.", Some(name), message.id.as_ref()),
            );
        };
        let request_id = message.id.clone().unwrap_or(Value::Null);
        let (Some(connection), Some(channel)) = (self.connection.as_ref(), self.channel(name)) else {
            let error = format!("Channel '{name}' is not open.");
            if is_request {
                let reply_message =
                    serde_json::json!({"type": "reply", "channel": name, "id": request_id, "error": error});
                return reply(ws, reply_message.to_string());
            }
            return reply(ws, protocol::error(&error, Some(name), message.id.as_ref()));
        };
        let access = Access {
            connection,
            channel: name,
            event,
            payload: &message.payload,
            is_request,
        };
        if !self.node.shared.authorizers.iter().all(|allow| allow(&access)) {
            tracing::info!(
                conn = connection.id(),
                channel = name,
                event,
                is_request,
                "denied by the authorization hook"
            );
            if is_request {
                channel.send_reply(&request_id, Err("Denied".to_owned()));
            }
            return;
        }
        if is_request {
            channel.dispatch_request(event, message.payload, request_id);
        } else {
            channel.dispatch_event(event, message.payload);
        }
    }

    fn leave(&self, ws: &WebSocket, topic: &str) {
        let shared = &self.node.shared;
        if shared.hub.unsubscribe(topic, ws.id()) {
            shared.broker.unsubscribe(topic);
        }
    }
}

fn belongs_to(topic: &str, def: &Arc<ChannelDef>) -> bool {
    topic == def.name
        || topic
            .strip_prefix(def.name.as_str())
            .is_some_and(|rest| rest.starts_with('#'))
}

/// The `subscribed` acknowledgement.
fn subscribed(name: &str, id: Option<&Value>) -> String {
    Outbound {
        kind: "subscribed",
        channel: Some(name),
        id,
        ..Default::default()
    }
    .encode()
}

fn reply(ws: &WebSocket, message: String) {
    // A closed connection has nobody left to tell.
    let _ = ws.send_text(message);
}

impl Handler for Session {
    async fn on_open(&mut self, ws: &WebSocket) {
        self.node.shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        // Made on first use when no hook needs it now: most connections only subscribe, and an
        // idle one then carries no channel registry.
        if !self.node.shared.on_connect.is_empty() {
            let connection = Connection::new(ws.clone());
            for hook in &self.node.shared.on_connect {
                tokio::spawn(hook(connection.clone()));
            }
            self.connection = Some(connection);
        }
    }

    async fn on_message(&mut self, ws: &WebSocket, text: Text) {
        match Inbound::parse(&text) {
            Ok(message) => self.handle(ws, message).await,
            Err(bad) => reply(ws, protocol::error(&bad.message, None, bad.id.as_ref())),
        }
    }

    async fn on_bytes(&mut self, ws: &WebSocket, _data: bytes::Bytes) {
        reply(ws, protocol::error(text::BINARY_UNSUPPORTED, None, None));
    }

    async fn on_close(&mut self, ws: &WebSocket, _close: CloseFrame) {
        for topic in std::mem::take(&mut self.topics) {
            self.leave(ws, &topic);
        }
        if let Some(connection) = self.connection.take() {
            connection.close_all();
        }
        self.node.shared.counters.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
