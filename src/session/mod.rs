//! A session: one client connection speaking the Switchboard protocol. It translates protocol
//! messages into calls on the node — join and leave topics, call actions, open bidirectional
//! channels — and the answers back into protocol messages; it keeps only what belongs to this one
//! connection (its topics, and its [`Connection`] with its bidirectional channels).

mod auth;
mod connection;

pub(crate) use auth::take_query_token;
pub use connection::Connection;

use crate::broker::{StreamPosition, StreamRead};
use crate::duplex::Duplex;
use crate::node::{Ack, MessageRate, Node, Refused, StreamJoin, Verdict, RATE_CLOSE_CODE};
use crate::protocol::{text, ActionStatus, ClientMessage, DuplexMessage, Position, ServerMessage};
use crate::router::{Access, ChannelDef};
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
    /// Its identity, on a node with authentication.
    auth: Option<Box<auth::SessionAuth>>,
    /// How fast it may send (`Limits::messages_per_sec`).
    rate: MessageRate,
}

impl Session {
    pub fn new(node: Node) -> Self {
        let rate = MessageRate::new(&node.inner.limits);
        Self {
            node,
            connection: None,
            topics: Vec::new(),
            auth: None,
            rate,
        }
    }

    /// With the token the client put on its URL (`?token=`), authenticated when it opens.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        if token.is_some() {
            self.auth = Some(Box::new(auth::SessionAuth::with_token(token)));
        }
        self
    }

    /// Takes a token of the connection's message rate; false when the message is refused (the
    /// error is sent, or the connection closed with 4029 after too many refusals in a row).
    fn within_rate(&mut self, ws: &WebSocket, text: &str) -> bool {
        let limits = &self.node.inner.limits;
        let refusals = &self.node.inner.counters.limit_refusals;
        match self.rate.check(limits) {
            Verdict::Allow => true,
            Verdict::Refuse => {
                refusals.add(Refused::MessageRate);
                // Read only to name the refused message in the error.
                let (channel, id) = match ClientMessage::parse(text) {
                    Ok(message) => {
                        let (channel, id) = message.channel_and_id();
                        (channel.map(str::to_owned), id.cloned())
                    }
                    Err(bad) => (bad.channel, bad.id),
                };
                let message = text::rate_limited(limits.messages_per_sec);
                reply(ws, ServerMessage::Error { channel, message, id });
                false
            }
            Verdict::Close => {
                refusals.add(Refused::RateClose);
                tracing::info!(conn = ws.id(), "too many messages: closing");
                let _ = ws.close(RATE_CLOSE_CODE, "too many messages");
                false
            }
        }
    }

    async fn handle(&mut self, ws: &WebSocket, message: ClientMessage) {
        if !self.admit(ws, &message) {
            return;
        }
        match message {
            ClientMessage::Connect { token, data, id } => self.connect(ws, token, data, id).await,
            ClientMessage::Presence {
                channel,
                data,
                id,
                limit,
                cursor,
                token,
            } => {
                let page = Some((limit, cursor));
                self.presence(ws, channel, data, id, token.as_deref(), page).await
            }
            ClientMessage::PresenceStats {
                channel,
                data,
                id,
                token,
            } => self.presence(ws, channel, data, id, token.as_deref(), None).await,
            ClientMessage::Refresh { token, id } => self.refresh(ws, token, id).await,
            ClientMessage::Subscribe {
                channel,
                data,
                id,
                recover,
                token,
            } => self.subscribe(ws, channel, data, id, recover, token).await,
            ClientMessage::History {
                channel,
                data,
                id,
                limit,
                since,
                token,
            } => {
                let token = token.as_deref();
                self.history(ws, channel, data, id, token, (limit, since)).await
            }
            ClientMessage::Unsubscribe { channel, data, id } => self.unsubscribe(ws, channel, data, id),
            ClientMessage::Publish { channel, data, id } => self.publish(ws, channel, data, id).await,
            ClientMessage::Action { channel, data, id } => self.action(ws, channel, data, id).await,
            ClientMessage::Open { channel, data, id } => self.open(ws, channel, data, id),
            ClientMessage::Duplex(message) => self.duplex(ws, message),
        }
    }

    /// The channel `name` and the topic `data` names, after SocketAPI's checks: the channel
    /// exists, the subscribe-time parameters validate, and the channel function accepts them (its
    /// result is returned: the `default_response`) — and the identity's: a channel keyed by user
    /// takes the connection's user, a private one a valid subscription `token`, a user-limited
    /// namespace channel names the connection's user — and what `purpose` needs (history,
    /// presence, and that the namespace lets clients use them). On a refusal the error is
    /// already sent.
    async fn topic_of(
        &self,
        ws: &WebSocket,
        name: &str,
        data: Option<&Value>,
        id: &Option<Value>,
        purpose: Purpose,
        token: Option<&str>,
    ) -> Option<(Arc<ChannelDef>, String, Value)> {
        let refuse = |message: String| reply(ws, error(message, name.to_owned(), id.clone()));
        let Some(def) = self.node.inner.channel(name).cloned() else {
            refuse(text::channel_not_found(name));
            return None;
        };
        if let Err(message) = purpose.allowed(&def, name) {
            refuse(message);
            return None;
        }
        let data = match self.admit_subscriber(ws, &def, name, data, token).await {
            Ok(data) => data,
            Err(message) => {
                refuse(message);
                return None;
            }
        };
        let identity = self.identity();
        let prepared = crate::auth::sync_scope(identity.clone(), || {
            def.subscribe_params(data.as_ref())
                .and_then(|params| def.prepare(params))
        });
        let Ok(prepared) = prepared else {
            refuse(text::invalid_params(name));
            return None;
        };
        // SocketAPI calls the channel function on subscribe: its error rejects the subscription.
        match crate::auth::scope(identity, prepared.data).await {
            Ok(initial) => {
                let topic = def.topic_for(name, &prepared.key);
                Some((def, topic, initial))
            }
            Err(message) => {
                refuse(message);
                None
            }
        }
    }

    /// `publish` from the client, on a namespace channel that allows it: the connection must be
    /// one that may subscribe (see [`Namespace::client_publish`](crate::Namespace::client_publish)).
    async fn publish(&mut self, ws: &WebSocket, name: String, data: Option<Value>, id: Option<Value>) {
        let Some(def) = self.node.inner.channel(&name).cloned() else {
            return reply(ws, error(text::channel_not_found(&name), name, id));
        };
        let Some(rules) = def.namespace.filter(|rules| rules.client_publish) else {
            return reply(ws, error(text::publish_not_allowed(&name), name, id));
        };
        if let Err(message) = crate::router::check_channel_name(&name) {
            return reply(ws, error(message, name, id));
        }
        let identity = self.identity();
        let allowed = if rules.user_limited {
            auth::may_use_user_channel(&identity, &name)
        } else if def.access.token || def.access.proxy {
            // A token or the proxy admitted its subscription: only subscribers may publish.
            self.topics.contains(&name)
        } else {
            true
        };
        if !allowed {
            return reply(ws, error(text::PERMISSION_DENIED, name, id));
        }
        let mut data = data.unwrap_or(Value::Null);
        if rules.publish_proxy {
            let Some(proxy) = self.node.inner.proxy.as_ref().filter(|p| p.has_publish()) else {
                tracing::warn!(
                    channel = name,
                    "a namespace asks the publish proxy but the node has none"
                );
                return reply(ws, error(text::PERMISSION_DENIED, name, id));
            };
            let asked = proxy
                .ask_publish(&self.client_id(ws), identity.user_id(), &name, data)
                .await;
            data = match auth::proxy_refusal(ws, asked, text::PUBLISH_UNAVAILABLE) {
                Ok(data) => data,
                Err(message) => return reply(ws, error(message, name, id)),
            };
        }
        match self.node.publish_to_namespace(&def, &name, &data).await {
            Ok(offset) => reply(
                ws,
                ServerMessage::Published {
                    channel: name,
                    id,
                    offset,
                },
            ),
            Err(err) => reply(ws, error(err.to_string(), name, id)),
        }
    }

    async fn subscribe(
        &mut self,
        ws: &WebSocket,
        name: String,
        data: Option<Value>,
        id: Option<Value>,
        recover: Option<Position>,
        token: Option<String>,
    ) {
        let purpose = match recover {
            Some(_) => Purpose::Recover,
            None => Purpose::Subscribe,
        };
        let topic = self
            .topic_of(ws, &name, data.as_ref(), &id, purpose, token.as_deref())
            .await;
        let Some((def, topic, initial)) = topic else { return };
        // The HTTP API's `unsubscribe` may have taken the connection out of the topic meanwhile.
        if let Some(at) = self.topics.iter().position(|t| *t == topic) {
            if !self.node.inner.hub.has(&topic, ws.id()) {
                self.topics.swap_remove(at);
            }
        }
        if self.topics.contains(&topic) {
            // Already subscribed: answer as before, without asking the broker again (which, if
            // it were down, would report an error for a subscription that stays in place). A
            // history channel's answer carries the stream's position now.
            let position = match def.history {
                None => None,
                Some(_) => match self.node.read_stream(&def, &topic, None, 0).await {
                    Ok(read) => Some(position_of(&read.position)),
                    Err(err) => return reply(ws, error(err.to_string(), name, id)),
                },
            };
            reply(
                ws,
                ServerMessage::Subscribed {
                    channel: name.clone(),
                    id,
                    position,
                    recovered: None,
                },
            );
        } else {
            let limits = &self.node.inner.limits;
            if !limits.may_subscribe(self.topics.len()) {
                self.node.inner.counters.limit_refusals.add(Refused::Subscriptions);
                let message = text::too_many_subscriptions(limits.subscriptions_per_connection);
                return reply(ws, error(message, name, id));
            }
            let ack = match def.history {
                None => Ack::Plain(Text::from(
                    ServerMessage::Subscribed {
                        channel: name.clone(),
                        id: id.clone(),
                        position: None,
                        recovered: None,
                    }
                    .encode(),
                )),
                Some(history) => {
                    let (channel, id) = (name.clone(), id.clone());
                    Ack::Stream(StreamJoin {
                        policy: history.policy,
                        recover: recover.map(|p| StreamPosition {
                            offset: p.offset,
                            epoch: p.epoch,
                        }),
                        recovery_limit: history.recovery_limit,
                        ack: Box::new(move |position, recovered| {
                            let subscribed = ServerMessage::Subscribed {
                                channel,
                                id,
                                position: Some(position_of(position)),
                                recovered,
                            };
                            Text::from(subscribed.encode())
                        }),
                    })
                }
            };
            if let Err(err) = self.node.join(&topic, ws, ack).await {
                return reply(ws, error(err.to_string(), name, id));
            }
            if def.presence.is_some() {
                self.node.presence_join(&def, &name, &topic, ws.id(), self.identity());
            }
            self.topics.reserve_exact(1);
            self.topics.push(topic);
        }
        if def.default_response {
            reply(
                ws,
                ServerMessage::Data {
                    channel: name,
                    data: initial,
                    offset: None,
                },
            );
        }
    }

    /// `history`: the latest publications of a history topic (`limit`), or those after `since`.
    async fn history(
        &mut self,
        ws: &WebSocket,
        name: String,
        data: Option<Value>,
        id: Option<Value>,
        token: Option<&str>,
        (limit, since): (Option<u64>, Option<Position>),
    ) {
        let topic = self
            .topic_of(ws, &name, data.as_ref(), &id, Purpose::History, token)
            .await;
        let Some((def, topic, _)) = topic else { return };
        match self.node.history(&def, &topic, limit, since.as_ref()).await {
            Ok(read) => reply(ws, history_reply(name, id, read)),
            Err(err) => reply(ws, error(err.to_string(), name, id)),
        }
    }

    /// `presence` (with `page`: its limit and cursor) or `presence_stats` (without): the topic
    /// is checked as for subscribing, then its members or counts are read.
    async fn presence(
        &mut self,
        ws: &WebSocket,
        name: String,
        data: Option<Value>,
        id: Option<Value>,
        token: Option<&str>,
        page: Option<(Option<u64>, Option<String>)>,
    ) {
        let Some((_, topic, _)) = self
            .topic_of(ws, &name, data.as_ref(), &id, Purpose::Presence, token)
            .await
        else {
            return;
        };
        let Some((limit, cursor)) = page else {
            return match self.node.presence_counts(&topic).await {
                Ok((clients, users)) => reply(
                    ws,
                    ServerMessage::PresenceStats {
                        channel: name,
                        id,
                        clients,
                        users,
                    },
                ),
                Err(message) => reply(ws, error(message, name, id)),
            };
        };
        let limit = limit.map_or(0, |l| usize::try_from(l).unwrap_or(usize::MAX));
        match self.node.presence_page(&topic, cursor.as_deref(), limit).await {
            Ok((clients, cursor)) => reply(
                ws,
                ServerMessage::Presence {
                    channel: name,
                    id,
                    clients,
                    cursor,
                },
            ),
            Err(message) => reply(ws, error(message, name, id)),
        }
    }

    /// Like SocketAPI, unsubscribing from a channel one is not subscribed to (or that does not
    /// exist) is still answered `unsubscribed`.
    fn unsubscribe(&mut self, ws: &WebSocket, name: String, data: Option<Value>, id: Option<Value>) {
        if let Some(def) = self.node.inner.channel(&name).filter(|def| def.namespace.is_some()) {
            if let Some(at) = self.topics.iter().position(|t| *t == name) {
                self.topics.swap_remove(at);
                self.node.leave(&name, ws);
            }
            let _ = def;
        } else if let Some(def) = self.node.inner.channels.get(&name).cloned() {
            // A channel keyed by user names the connection's own subscription.
            let data = match def.access.user_field {
                Some(_) => self.keyed_data(&def, data.as_ref()).ok().flatten(),
                None => data,
            };
            // With the subscribe-time parameters, leave that one subscription; without, all of the channel.
            let key = def
                .subscribe_params(data.as_ref())
                .ok()
                .and_then(|params| def.prepare(params).ok())
                .map(|p| p.key);
            let without_params = match &data {
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
                    self.node.leave(&topic, ws);
                }
            }
        }
        reply(
            ws,
            ServerMessage::Unsubscribed {
                channel: name,
                id,
                reason: None,
            },
        );
    }

    async fn action(&mut self, ws: &WebSocket, name: String, data: Option<Value>, id: Option<Value>) {
        let Some(def) = self.node.inner.actions.get(&name).cloned() else {
            return self.proxy_action(ws, name, data, id).await;
        };
        // SocketAPI calls the action with `**data`: anything but an object is invalid (serde would
        // otherwise read an array as the fields in order).
        let identity = self.identity();
        let call = crate::auth::sync_scope(identity.clone(), || match data {
            Some(Value::Array(_) | Value::Bool(_) | Value::Number(_) | Value::String(_)) => None,
            data => def.call(data).ok(),
        });
        let Some(call) = call else {
            return reply(ws, error(text::invalid_params(&name), name, id));
        };
        let outcome = crate::auth::scope(identity, call).await;
        reply(ws, action_reply(name, outcome, id));
    }

    /// An action the node does not declare: the action proxy answers it, if the node has one.
    async fn proxy_action(&mut self, ws: &WebSocket, name: String, data: Option<Value>, id: Option<Value>) {
        let Some(proxy) = self.node.inner.proxy.as_ref().filter(|p| p.has_action()) else {
            return reply(ws, error(text::action_not_found(&name), name, id));
        };
        let (client, identity) = (self.client_id(ws), self.identity());
        let asked = proxy
            .ask_action(&client, identity.user_id(), &name, data.as_ref())
            .await;
        let outcome = auth::proxy_refusal(ws, asked, text::ACTION_UNAVAILABLE);
        reply(ws, action_reply(name, outcome, id));
    }

    fn channel(&self, name: &str) -> Option<Duplex> {
        self.connection.as_ref().and_then(|c| c.channel(name))
    }

    /// The connection's [`Connection`], made on first use.
    fn connection(&mut self, ws: &WebSocket) -> &Connection {
        let identity = self.identity();
        let client = self.client_id(ws);
        let node = &self.node;
        self.connection
            .get_or_insert_with(|| Connection::new(ws.clone(), node.clone(), client, identity))
    }

    /// Runs the `on_connect` hooks: when the connection opens, or, on a node that requires
    /// authentication, once it is `connected`.
    fn run_on_connect(&mut self, ws: &WebSocket) {
        // Made on first use when no hook needs it now: most connections only subscribe, and an
        // idle one then carries no channel registry.
        if !self.node.inner.on_connect.is_empty() {
            let connection = self.connection(ws).clone();
            for hook in &self.node.inner.on_connect {
                tokio::spawn(crate::auth::scope(connection.identity_arc(), hook(connection.clone())));
            }
        }
    }

    /// A client opens a bidirectional channel by route name.
    fn open(&mut self, ws: &WebSocket, name: String, data: Option<Value>, id: Option<Value>) {
        let Some(route) = self.node.inner.routes.get(&name).cloned() else {
            return reply(ws, error(text::channel_not_found(&name), name, id));
        };
        let Some(channel) = self.connection(ws).register(&name) else {
            return reply(ws, error(text::already_open(&name), name, id));
        };
        let ws = ws.clone();
        let params = data.unwrap_or(Value::Object(Default::default()));
        // The route may itself talk to the client (even `request`), so it runs beside the
        // connection's reader rather than in it.
        let identity = self.identity();
        tokio::spawn(crate::auth::scope(identity, async move {
            let message = match (route.accept)(channel.clone(), params).await {
                Ok(()) if !channel.is_closed() => ServerMessage::Opened { channel: name, id },
                Ok(()) => error(text::closed_while_opening(&name), name, id),
                Err(text) => {
                    channel.shut();
                    error(text, name, id)
                }
            };
            reply(&ws, message);
        }));
    }

    /// A message of a bidirectional channel from the client.
    fn duplex(&mut self, ws: &WebSocket, message: DuplexMessage) {
        let Some(channel) = self.channel(message.channel()) else {
            return not_open(ws, message);
        };
        match message {
            DuplexMessage::Reply { id, outcome, .. } => channel.resolve(&id, outcome),
            DuplexMessage::Close { reason, .. } => {
                tracing::debug!(channel = channel.id(), ?reason, "channel closed by client");
                channel.shut();
            }
            DuplexMessage::Emit { event, payload, .. } => {
                if self.allowed(&channel, &event, &payload, false) {
                    channel.dispatch_event(&event, payload);
                }
            }
            DuplexMessage::Request { event, payload, id, .. } => {
                if self.allowed(&channel, &event, &payload, true) {
                    channel.dispatch_request(&event, payload, id);
                } else {
                    channel.send_reply(id, Err(text::DENIED.to_owned()));
                }
            }
        }
    }

    /// Asks the authorization hooks about an inbound event or request.
    fn allowed(&self, channel: &Duplex, event: &str, payload: &Value, is_request: bool) -> bool {
        let access = Access {
            connection: channel.connection(),
            channel: channel.id(),
            event,
            payload,
            is_request,
        };
        let allowed = self.node.inner.authorizers.iter().all(|allow| allow(&access));
        if !allowed {
            tracing::info!(
                conn = channel.connection().id(),
                channel = channel.id(),
                event,
                is_request,
                "denied by the authorization hook"
            );
        }
        allowed
    }
}

/// What a client asks of a channel, and so what the channel must offer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Subscribe,
    /// Subscribe and recover: the channel keeps history.
    Recover,
    /// Read the history: the channel keeps it and lets clients read it.
    History,
    /// Members and counts: the channel has presence and lets clients ask.
    Presence,
}

impl Purpose {
    fn allowed(self, def: &ChannelDef, name: &str) -> Result<(), String> {
        if def.namespace.is_some() {
            crate::router::check_channel_name(name)?;
        }
        let rules = def.namespace;
        match self {
            Purpose::Subscribe => Ok(()),
            Purpose::Recover | Purpose::History if def.history.is_none() => Err(text::no_history(name)),
            Purpose::Recover => Ok(()),
            Purpose::History if rules.is_some_and(|r| !r.client_history) => Err(text::history_not_allowed(name)),
            Purpose::History => Ok(()),
            Purpose::Presence if def.presence.is_none() => Err(text::no_presence(name)),
            Purpose::Presence if rules.is_some_and(|r| !r.client_presence) => Err(text::presence_not_allowed(name)),
            Purpose::Presence => Ok(()),
        }
    }
}

/// A message for a channel that is not open here: an event gets an error, a request an error
/// reply (nothing waits for a timeout); a reply or a close has nobody to reach.
fn not_open(ws: &WebSocket, message: DuplexMessage) {
    match message {
        DuplexMessage::Emit { channel, id, .. } => reply(ws, error(text::not_open(&channel), channel, id)),
        DuplexMessage::Request { channel, id, .. } => {
            let outcome = Err(text::not_open(&channel));
            reply(ws, ServerMessage::Duplex(DuplexMessage::Reply { channel, id, outcome }));
        }
        DuplexMessage::Reply { .. } | DuplexMessage::Close { .. } => {}
    }
}

fn belongs_to(topic: &str, def: &Arc<ChannelDef>) -> bool {
    topic == def.name
        || topic
            .strip_prefix(def.name.as_str())
            .is_some_and(|rest| rest.starts_with('#'))
}

fn position_of(position: &StreamPosition) -> Position {
    Position {
        offset: position.offset,
        epoch: position.epoch.clone(),
    }
}

/// The `history` reply: the kept messages read back as `{offset, data}`.
fn history_reply(channel: String, id: Option<Value>, read: StreamRead) -> ServerMessage {
    ServerMessage::History {
        channel,
        id,
        publications: crate::node::publications_of(&read),
        position: position_of(&read.position),
    }
}

/// The answer to an action: its result (absent when it returned nothing), or its error.
fn action_reply(name: String, outcome: Result<Value, String>, id: Option<Value>) -> ServerMessage {
    match outcome {
        Ok(result) => ServerMessage::Action {
            channel: name,
            status: ActionStatus::Completed,
            data: (!result.is_null()).then_some(result),
            id,
        },
        Err(message) => error(message, name, id),
    }
}

/// An `error` about the named channel or action.
fn error(message: impl Into<String>, channel: String, id: Option<Value>) -> ServerMessage {
    ServerMessage::Error {
        channel: Some(channel),
        message: message.into(),
        id,
    }
}

fn reply(ws: &WebSocket, message: ServerMessage) {
    // A closed connection has nobody left to tell.
    let _ = ws.send_text(message.encode());
}

impl Handler for Session {
    async fn on_open(&mut self, ws: &WebSocket) {
        self.node.inner.counters.connections.fetch_add(1, Ordering::Relaxed);
        if self.open_auth(ws).await {
            self.run_on_connect(ws);
        }
    }

    async fn on_message(&mut self, ws: &WebSocket, text: Text) {
        if !self.within_rate(ws, &text) {
            return;
        }
        match ClientMessage::parse(&text) {
            Ok(message) => self.handle(ws, message).await,
            Err(bad) => reply(ws, bad.into_reply()),
        }
    }

    async fn on_bytes(&mut self, ws: &WebSocket, _data: bytes::Bytes) {
        reply(
            ws,
            ServerMessage::Error {
                channel: None,
                message: text::BINARY_UNSUPPORTED.into(),
                id: None,
            },
        );
    }

    async fn on_close(&mut self, ws: &WebSocket, close: CloseFrame) {
        self.close_auth(ws);
        for topic in std::mem::take(&mut self.topics) {
            self.node.leave(&topic, ws);
        }
        if let Some(connection) = self.connection.take() {
            connection.close_all();
        }
        let counters = &self.node.inner.counters;
        if close.is_slow_consumer() {
            counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
        counters.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's task is the largest part of an idle connection's memory, and tokio allocates
/// it 128-byte aligned: a few more bytes of state cost 128 per connection. This keeps the
/// pub/sub connection's task in its 512-byte cell (the release layout; debug futures are far
/// larger, so the check runs in release builds, as CI's `cargo test --release` does).
#[cfg(all(test, not(debug_assertions)))]
mod task_size {
    use super::Session;
    use crate::{Node, Router};

    /// tokio's task cell around a future: header 32, scheduler and id 24, trailer 48 bytes.
    const TASK_OVERHEAD: usize = 32 + 24 + 48;

    #[tokio::test]
    async fn a_pub_sub_connection_task_fits_a_512_byte_cell() {
        let size = crate::ws::future_size_for(Session::new(Node::new(Router::new()))).await;
        eprintln!(
            "the connection future: {size} bytes, its task: {} of 512",
            size + TASK_OVERHEAD
        );
        assert!(
            size + TASK_OVERHEAD <= 512,
            "the connection future is {size} bytes: its task no longer fits 512 bytes (a 128-byte \
             step per connection); box what only rare paths need (see BENCHMARKS.md, idle memory)"
        );
    }
}
