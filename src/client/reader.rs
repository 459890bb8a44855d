//! `Reader`: the [`Handler`] of one client connection. It reads the server's messages into the
//! client's state: answers to calls, publications, and the messages of bidirectional channels.

use super::auth::{CONNECT_ID, REFRESH_ID};
use super::duplex::{send_reply, ChannelState, ClientChannel};
use super::state::ClientState;
use super::{ClientIdentity, ConnectionState, Member, ServerClose, TOKEN_EXPIRED};
use crate::protocol::{text, DuplexMessage, ServerMessage};
use crate::ws::{CloseFrame, Handler, Text, WebSocket};
use serde_json::Value;
use std::sync::Arc;

/// Reads one connection's messages into the client's state.
pub(crate) struct Reader {
    shared: Arc<ClientState>,
}

impl Reader {
    pub fn new(shared: Arc<ClientState>) -> Self {
        Self { shared }
    }

    fn handle(&self, ws: &WebSocket, message: ServerMessage) {
        let shared = &self.shared;
        match message {
            ServerMessage::Data { channel, data, offset } => shared.publish(&channel, data, offset),
            ServerMessage::Subscribed {
                id,
                position,
                recovered,
                ..
            } => {
                // Applied here, on the connection's task, before the publications that follow.
                shared.subscribed(id.as_ref(), position, recovered);
                shared.resolve(id.as_ref(), Ok(Value::Null));
            }
            // The server ended it (its answers to our own `unsubscribe` carry no reason).
            ServerMessage::Unsubscribed {
                reason: Some(_),
                channel,
                ..
            } => shared.server_unsubscribed(&channel),
            ServerMessage::Unsubscribed { id, .. } => {
                shared.resolve(id.as_ref(), Ok(Value::Null));
            }
            ServerMessage::Published { id, offset, .. } => {
                shared.resolve(id.as_ref(), Ok(offset.map_or(Value::Null, Value::from)));
            }
            ServerMessage::Action { data, id, .. } => {
                shared.resolve(id.as_ref(), Ok(data.unwrap_or(Value::Null)));
            }
            ServerMessage::Error { channel, message, id } if is_auth_id(id.as_ref()) => {
                // A refused `connect` (say, the connect proxy's error): this connection ends,
                // and the next one, after the backoff, tries again.
                tracing::warn!(?channel, %message, "the server refused to authenticate the client");
                if id.as_ref().and_then(Value::as_str) == Some(CONNECT_ID) {
                    let _ = ws.close(1000, "connect refused");
                }
            }
            ServerMessage::Error { channel, message, id } => {
                if !shared.resolve(id.as_ref(), Err(message.clone())) {
                    tracing::warn!(?channel, ?id, %message, "server error that answers no request");
                }
            }
            ServerMessage::Opened { channel, id } => self.opened(channel, id),
            ServerMessage::History {
                id,
                publications,
                position,
                ..
            } => {
                let reply = serde_json::json!({ "publications": publications, "position": position });
                shared.resolve(id.as_ref(), Ok(reply));
            }
            ServerMessage::Duplex(message) => self.duplex(ws, message),
            ServerMessage::Connected {
                client,
                user,
                expires_in,
                ..
            } => {
                let Some(auth) = &shared.auth else { return };
                auth.connected(
                    ws,
                    ClientIdentity {
                        client,
                        user,
                        expires_in,
                    },
                );
                // Now the server takes the rest: the subscriptions and channels come back.
                shared.restore();
                shared.state.send_replace(ConnectionState::Open);
            }
            ServerMessage::Presence {
                id, clients, cursor, ..
            } => {
                let reply = serde_json::json!({ "clients": clients, "cursor": cursor });
                shared.resolve(id.as_ref(), Ok(reply));
            }
            ServerMessage::PresenceStats { id, clients, users, .. } => {
                shared.resolve(
                    id.as_ref(),
                    Ok(serde_json::json!({ "clients": clients, "users": users })),
                );
            }
            ServerMessage::PresenceDiff {
                channel,
                params,
                joins,
                leaves,
            } => {
                let member = |m: crate::protocol::PresenceMember| Member {
                    client: m.client,
                    user: m.user,
                    info: m.info,
                };
                let joins = joins.into_iter().map(member).collect();
                let leaves = leaves.into_iter().map(|m| m.client).collect();
                shared.presence_diff(&channel, &params, joins, leaves);
            }
            ServerMessage::Refreshed { expires_in, .. } => {
                if let Some(auth) = &shared.auth {
                    auth.refreshed(ws, expires_in);
                }
            }
        }
    }

    /// A message on a bidirectional channel.
    fn duplex(&self, ws: &WebSocket, message: DuplexMessage) {
        let shared = &self.shared;
        let Some(channel) = shared.channels.lock().get(message.channel()).cloned() else {
            match message {
                DuplexMessage::Request { channel, id, .. } => {
                    let error = text::not_open(&channel);
                    send_reply(ws, channel, id, Err(error));
                }
                other => tracing::debug!(channel = other.channel(), "message for a channel that is not open"),
            }
            return;
        };
        match message {
            DuplexMessage::Emit { event, payload, .. } => channel.dispatch_event(&event, payload),
            DuplexMessage::Request { event, payload, id, .. } => channel.dispatch_request(ws, &event, payload, id),
            DuplexMessage::Reply { id, outcome, .. } => channel.resolve(&id, outcome),
            DuplexMessage::Close { channel: name, reason } => {
                let reason = reason.unwrap_or_else(|| "closed by server".to_owned());
                tracing::debug!(channel = %name, %reason, "channel closed by the server");
                channel.shut(super::ClientError::Closed(name), &reason);
                shared.forget_channel(&channel);
            }
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

impl Handler for Reader {
    async fn on_open(&mut self, ws: &WebSocket) {
        if self.shared.is_shutting_down() {
            let _ = ws.close(1000, "client closed");
            return;
        }
        *self.shared.ws.lock() = Some(ws.clone());
        if let Some(auth) = self.shared.auth.clone() {
            // Nothing else until `connected`: restoring and opening wait for it.
            match auth.connect_message().await {
                Ok(connect) => {
                    let _ = ws.send_text(connect.encode());
                }
                Err(err) => {
                    tracing::warn!(%err, "no token to connect with");
                    let _ = ws.close(1000, "no token");
                }
            }
            return;
        }
        self.shared.restore();
        self.shared.state.send_replace(ConnectionState::Open);
    }

    async fn on_message(&mut self, ws: &WebSocket, text: Text) {
        match ServerMessage::parse(&text) {
            Ok(message) => self.handle(ws, message),
            Err(error) => tracing::debug!(%text, %error, "server message ignored"),
        }
    }

    async fn on_close(&mut self, ws: &WebSocket, close: CloseFrame) {
        tracing::debug!(code = close.code, reason = %close.reason, by_peer = close.by_peer, "client connection ended");
        self.shared.record_close(&close);
        if let Some(auth) = &self.shared.auth {
            if close.by_peer && close.code == TOKEN_EXPIRED {
                auth.token_expired();
            } else {
                auth.disconnected();
            }
        }
        // A close code in 4500–4999 from the server means "do not reconnect" (and so does 4005
        // for a client that cannot get a fresh token).
        let server_close = ServerClose {
            code: close.code,
            reason: close.reason.clone(),
        };
        let refused = close.by_peer && self.shared.ends_client(&server_close);
        if refused {
            tracing::info!(code = close.code, reason = %close.reason, "the server closed the connection for good: not reconnecting");
        }
        let reconnecting = self.shared.config.reconnect && !self.shared.is_shutting_down() && !refused;
        self.shared.on_disconnect(ws, reconnecting);
    }
}

/// The id of the client's own `connect` or `refresh`.
fn is_auth_id(id: Option<&Value>) -> bool {
    matches!(id.and_then(Value::as_str), Some(CONNECT_ID | REFRESH_ID))
}
