//! `ClientState`: what one client shares between its handle, its connection's reader, its
//! reconnect loop and its channels and subscriptions — the current socket, the calls waiting for
//! the server's answer, and the registries that are restored after a reconnect.

use super::auth::ClientAuth;
use super::close::TOKEN_EXPIRED;
use super::duplex::{ChannelState, ClientChannel};
use super::history::Position;
use super::presence::{LiveList, Member};
use super::subscription::SubscriptionEvent;
use super::{ClientConfig, ClientError, ConnectionState, ServerClose};
use crate::duplex::{Pending, Unanswered, Waiter};
use crate::protocol::{self, ClientMessage};
use crate::ws::{CloseFrame, WebSocket};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A callback for channels the server opens by itself.
pub(crate) type ChannelCallback = Arc<dyn Fn(ClientChannel) + Send + Sync>;

/// One local subscription: where its events go.
pub(crate) struct LocalSub {
    pub id: u64,
    pub tx: mpsc::UnboundedSender<SubscriptionEvent>,
}

/// One server subscription: a channel with one set of parameters, shared by the local
/// subscriptions made with them, and where its stream is.
pub(crate) struct Topic {
    pub params: Value,
    /// Its local subscriptions. Empty when they all went but other parameters of the channel are
    /// still subscribed: the server subscription stays until the channel's last one goes (and
    /// its publications still arrive), so the topic is kept until then, or until a reconnect.
    pub subs: Vec<LocalSub>,
    /// On a history channel: the offset of the last publication delivered and the epoch, from
    /// which a re-subscribe recovers. `None` on a channel without history, and while unknown
    /// (before the first `subscribed`, or when publications of several topics of the channel
    /// could not be told apart).
    pub position: Option<Position>,
    /// The subscription token it was made with (presented again when it is restored).
    pub token: Option<String>,
    /// Confirmed by the server on the current connection.
    pub live: bool,
    /// Confirmed on an earlier connection and not yet on this one: its next confirmation is a
    /// re-subscribe, reported to its subscriptions.
    pub resumed: bool,
}

impl Topic {
    fn new(params: Value) -> Self {
        Self {
            params,
            subs: Vec::new(),
            position: None,
            token: None,
            live: false,
            resumed: false,
        }
    }

    /// Hands `event` to every local subscription; those whose receiver is gone are removed.
    fn send(&mut self, event: &SubscriptionEvent) {
        self.subs.retain(|sub| sub.tx.send(event.clone()).is_ok());
    }
}

pub(crate) struct ClientState {
    pub url: String,
    pub config: ClientConfig,
    pub state: watch::Sender<ConnectionState>,
    /// Set by `Client::close` or when the last `Client` handle is dropped.
    pub shutdown: watch::Sender<bool>,
    /// The socket of the current connection, while it is open.
    pub ws: Mutex<Option<WebSocket>>,
    /// The last close frame the server sent (on any connection of this client).
    server_close: Mutex<Option<ServerClose>>,
    /// Ids of local subscriptions.
    next_sub: AtomicU64,
    /// Calls (subscribe, unsubscribe, action, open) waiting for the server's answer.
    calls: Pending<ClientError>,
    /// Server subscriptions (with their local subscriptions) by channel name.
    pub subs: Mutex<HashMap<String, Vec<Topic>>>,
    /// Subscribe calls waiting for their `subscribed`, by call id: the channel and parameters
    /// they are for, so the answer's position is applied before the publications that follow it.
    sub_calls: Mutex<HashMap<u64, (String, Value)>>,
    /// Bidirectional channels (opened by either side) by name.
    pub channels: Mutex<HashMap<String, ClientChannel>>,
    pub on_channel: Mutex<Vec<ChannelCallback>>,
    /// Server-opened channels announced before any `on_channel` callback was registered.
    pub backlog: Mutex<Vec<ClientChannel>>,
    /// How the client authenticates, if it does.
    pub auth: Option<Arc<ClientAuth>>,
    /// Live member lists (`Client::watch_presence`), while their watches exist.
    pub presence: Mutex<Vec<std::sync::Weak<LiveList>>>,
}

impl ClientState {
    pub fn new(
        url: String,
        config: ClientConfig,
        on_channel: Vec<ChannelCallback>,
        auth: Option<Arc<ClientAuth>>,
    ) -> Self {
        Self {
            url,
            config,
            state: watch::channel(ConnectionState::Connecting).0,
            shutdown: watch::channel(false).0,
            ws: Mutex::new(None),
            server_close: Mutex::new(None),
            next_sub: AtomicU64::new(1),
            calls: Pending::default(),
            subs: Mutex::new(HashMap::new()),
            sub_calls: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            on_channel: Mutex::new(on_channel),
            backlog: Mutex::new(Vec::new()),
            auth,
            presence: Mutex::new(Vec::new()),
        }
    }

    pub fn next_sub_id(&self) -> u64 {
        self.next_sub.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Keeps the close frame of a connection that the server closed (not one that dropped
    /// without a close frame, code 1006, nor one this side closed).
    pub fn record_close(&self, close: &CloseFrame) {
        if close.by_peer && close.code != 1006 {
            *self.server_close.lock() = Some(ServerClose {
                code: close.code,
                reason: close.reason.clone(),
            });
        }
    }

    /// The last close frame the server sent.
    pub fn server_close(&self) -> Option<ServerClose> {
        self.server_close.lock().clone()
    }

    /// The server's close frame when it said "do not reconnect" (4500–4999): the client is done.
    /// So is a 4005 ("token expired") when the client has no `get_token` to ask for a fresh one:
    /// the same token would only expire again.
    pub fn final_close(&self) -> Option<ServerClose> {
        self.server_close().filter(|close| self.ends_client(close))
    }

    /// True when a server close with this frame ends the client for good.
    pub fn ends_client(&self, close: &ServerClose) -> bool {
        let renewable = self.auth.as_ref().is_some_and(|auth| auth.has_token_source());
        close.is_final() || (close.code == TOKEN_EXPIRED && !renewable)
    }

    /// Why a call cannot be made on the closed client.
    pub fn closed_error(&self) -> ClientError {
        match self.final_close() {
            Some(close) => ClientError::ServerClosed(close),
            None => ClientError::Closed("client".into()),
        }
    }

    /// Queues `message` on the current connection.
    pub fn send(&self, message: &ClientMessage) -> Result<(), ClientError> {
        let ws = self.ws.lock().clone().ok_or(ClientError::Disconnected)?;
        ws.send_text(message.encode()).map_err(|_| ClientError::Disconnected)
    }

    /// Waits (until `deadline`) for the connection to be open.
    pub async fn wait_open(&self, deadline: Instant, what: &str) -> Result<(), ClientError> {
        let mut rx = self.state.subscribe();
        let waited = tokio::time::timeout_at(deadline, rx.wait_for(|s| *s != ConnectionState::Connecting)).await;
        let state = match waited {
            Ok(Ok(state)) => *state,
            Ok(Err(_)) => ConnectionState::Closed,
            Err(_) => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                return Err(ClientError::Timeout {
                    what: format!("{what} (waiting for the connection)"),
                    timeout,
                });
            }
        };
        match state {
            ConnectionState::Open => Ok(()),
            _ => Err(self.closed_error()),
        }
    }

    /// Sends a call with a fresh id and waits for the answer carrying that id: `Ok(data)` for
    /// `subscribed`/`unsubscribed`/`opened`/`action`, `Remote(text)` for `error`.
    pub async fn call(&self, message: ClientMessage, timeout: Duration, what: String) -> Result<Value, ClientError> {
        let deadline = Instant::now() + timeout;
        self.wait_open(deadline, &what).await?;
        let waiter = self.start_call(message)?;
        self.finish_call(waiter, deadline, timeout, what).await
    }

    /// Registers a waiter and sends; the answer arrives through the returned waiter.
    pub fn start_call(&self, message: ClientMessage) -> Result<Waiter<ClientError>, ClientError> {
        self.start_call_with(message, |_| {})
    }

    /// [`start_call`](Self::start_call), calling `registered` with the call's id before the
    /// message is sent (so the reader can tell what the answer is about).
    fn start_call_with(
        &self,
        mut message: ClientMessage,
        registered: impl FnOnce(u64),
    ) -> Result<Waiter<ClientError>, ClientError> {
        let waiter = self.calls.register().ok_or(ClientError::Disconnected)?;
        message.set_id(Value::from(waiter.id));
        registered(waiter.id);
        if let Err(err) = self.send(&message) {
            self.calls.forget(waiter.id);
            return Err(err);
        }
        Ok(waiter)
    }

    /// Sends `subscribe` for `channel` with `params` (recovering from `recover`); its
    /// `subscribed` is applied to the topic by [`subscribed`](Self::subscribed).
    pub fn start_subscribe(
        &self,
        channel: &str,
        params: &Value,
        recover: Option<&Position>,
        token: Option<&str>,
    ) -> Result<Waiter<ClientError>, ClientError> {
        let message = ClientMessage::Subscribe {
            channel: channel.to_owned(),
            data: Some(params.clone()),
            id: None,
            recover: recover.map(Position::to_wire),
            token: token.map(str::to_owned),
        };
        self.start_call_with(message, |id| {
            self.sub_calls.lock().insert(id, (channel.to_owned(), params.clone()));
        })
    }

    /// Subscribes (waiting for the connection first) and waits for the answer.
    pub async fn subscribe_call(
        &self,
        channel: &str,
        params: &Value,
        token: Option<&str>,
    ) -> Result<Value, ClientError> {
        let timeout = self.config.request_timeout;
        let deadline = Instant::now() + timeout;
        let what = format!("subscribe to '{channel}'");
        self.wait_open(deadline, &what).await?;
        let waiter = self.start_subscribe(channel, params, None, token)?;
        let id = waiter.id;
        let answer = self.finish_call(waiter, deadline, timeout, what).await;
        self.sub_calls.lock().remove(&id);
        answer
    }

    /// A `subscribed` arrived (before its call is resolved, and before any publication after
    /// it is read). For the first confirmation on this connection: the topic takes the stream's
    /// position (unless it recovered: then the missed publications follow and move it on), and
    /// when it was subscribed on an earlier connection its subscriptions get
    /// [`SubscriptionEvent::Resubscribed`]. A later confirmation (another local subscription of
    /// the same topic) changes nothing: its position may be ahead of publications still on the way.
    pub fn subscribed(&self, id: Option<&Value>, position: Option<protocol::Position>, recovered: Option<bool>) {
        let Some(call) = id.and_then(Value::as_u64) else { return };
        let Some((channel, params)) = self.sub_calls.lock().remove(&call) else {
            return;
        };
        let mut subs = self.subs.lock();
        let Some(topic) = subs
            .get_mut(&channel)
            .and_then(|topics| topics.iter_mut().find(|t| t.params == params))
        else {
            return;
        };
        if topic.live {
            return;
        }
        topic.live = true;
        let recovered = recovered == Some(true);
        let position = position.map(Position::from_wire);
        topic.position = match (recovered, topic.position.take(), position) {
            // The missed publications follow: from the last one seen.
            (true, Some(seen), Some(now)) => Some(Position {
                offset: seen.offset,
                epoch: now.epoch,
            }),
            (_, _, now) => now,
        };
        if std::mem::take(&mut topic.resumed) {
            let event = SubscriptionEvent::Resubscribed {
                recovered,
                position: topic.position.clone(),
            };
            topic.send(&event);
        }
    }

    pub async fn finish_call(
        &self,
        waiter: Waiter<ClientError>,
        deadline: Instant,
        timeout: Duration,
        what: String,
    ) -> Result<Value, ClientError> {
        match self.calls.wait(waiter, deadline).await {
            Ok(answer) => answer,
            // The connection ended before the answer.
            Err(Unanswered::Dropped) => Err(ClientError::Disconnected),
            Err(Unanswered::TimedOut) => Err(ClientError::Timeout { what, timeout }),
        }
    }

    /// Answers the waiting call `id`; false if nobody waits for it.
    pub fn resolve(&self, id: Option<&Value>, answer: Result<Value, String>) -> bool {
        id.is_some_and(|id| self.calls.resolve(id, answer.map_err(ClientError::Remote)))
    }

    /// Fails every waiting call with `error`.
    pub fn fail_calls(&self, error: &ClientError) {
        self.calls.fail_all(|| error.clone());
    }

    /// Registers a local subscription of `channel` with `params` (sharing the topic of earlier
    /// ones with the same parameters).
    pub fn add_sub(&self, channel: &str, params: &Value, sub: LocalSub, token: Option<&str>) {
        let mut subs = self.subs.lock();
        let topics = subs.entry(channel.to_owned()).or_default();
        let at = match topics.iter().position(|t| &t.params == params) {
            Some(at) => at,
            None => {
                topics.push(Topic::new(params.clone()));
                topics.len() - 1
            }
        };
        if let Some(token) = token {
            topics[at].token = Some(token.to_owned());
        }
        topics[at].subs.push(sub);
    }

    /// Hands a publication to every local subscription of `channel`. On a history channel
    /// (`offset`) whose topic is known, a publication at or before the last one delivered is
    /// dropped (it arrived already), and the position moves on.
    ///
    /// Publications name only their channel: when several topics of the channel are subscribed,
    /// an offset cannot be told to belong to one of them, so it is delivered as it is and their
    /// positions are forgotten (they re-subscribe without recovery).
    pub fn publish(&self, channel: &str, data: Value, offset: Option<u64>) {
        let mut subs = self.subs.lock();
        let Some(topics) = subs.get_mut(channel) else { return };
        if let Some(offset) = offset {
            if let [topic] = topics.as_mut_slice() {
                if let Some(seen) = &mut topic.position {
                    if offset <= seen.offset {
                        tracing::debug!(%channel, offset, seen = seen.offset, "publication already delivered: dropped");
                        return;
                    }
                    seen.offset = offset;
                }
            } else {
                for topic in topics.iter_mut() {
                    topic.position = None;
                }
            }
        }
        let event = SubscriptionEvent::Data { data, offset };
        for topic in topics.iter_mut() {
            topic.send(&event);
        }
    }

    /// The position of the topic of local subscription `id` of `channel`.
    pub fn position(&self, channel: &str, id: u64) -> Option<Position> {
        let subs = self.subs.lock();
        let topic = subs.get(channel)?.iter().find(|t| t.subs.iter().any(|s| s.id == id))?;
        topic.position.clone()
    }

    /// Removes a local subscription; when it was the channel's last, the server subscription is
    /// left too (returned as the `unsubscribe` message to send).
    pub fn remove_sub(&self, channel: &str, id: u64) -> Option<ClientMessage> {
        let mut subs = self.subs.lock();
        let topics = subs.get_mut(channel)?;
        let mut removed = false;
        for topic in topics.iter_mut() {
            let before = topic.subs.len();
            topic.subs.retain(|sub| sub.id != id);
            removed |= topic.subs.len() != before;
        }
        if topics.iter().all(|t| t.subs.is_empty()) {
            subs.remove(channel);
            return removed.then(|| ClientMessage::Unsubscribe {
                channel: channel.to_owned(),
                data: None,
                id: None,
            });
        }
        None
    }

    /// The server ended the subscriptions of `channel` (its HTTP API's `unsubscribe`): they end
    /// here (their streams close) and are not renewed after a reconnect.
    pub fn server_unsubscribed(&self, channel: &str) {
        self.subs.lock().remove(channel);
    }

    /// Ends the local subscriptions of `channel` made with `params` (the server refused them).
    pub fn drop_subs(&self, channel: &str, params: &Value) {
        let mut subs = self.subs.lock();
        if let Some(topics) = subs.get_mut(channel) {
            topics.retain(|t| &t.params != params);
            if topics.is_empty() {
                subs.remove(channel);
            }
        }
    }

    /// Removes `channel` from the registry if it is this very channel.
    pub fn forget_channel(&self, channel: &ClientChannel) {
        let mut channels = self.channels.lock();
        if channels.get(channel.name()).is_some_and(|c| c.same(channel)) {
            channels.remove(channel.name());
        }
    }

    /// The connection ended: waiting calls fail, server-opened channels close, client-opened
    /// ones wait to be re-opened (or close, when the client will not reconnect). After a close
    /// that says "do not reconnect", calls and channels fail with [`ClientError::ServerClosed`].
    pub fn on_disconnect(&self, ws: &WebSocket, reconnecting: bool) {
        {
            let mut current = self.ws.lock();
            if current.as_ref() == Some(ws) {
                *current = None;
            }
        }
        let (error, reason) = match self.final_close().filter(|_| !reconnecting) {
            Some(close) => {
                let reason = format!("closed by the server: {close}");
                (ClientError::ServerClosed(close), reason)
            }
            None => (ClientError::Disconnected, "connection lost".to_owned()),
        };
        self.fail_calls(&error);
        self.sub_calls.lock().clear();
        let channels: Vec<ClientChannel> = self.channels.lock().values().cloned().collect();
        for channel in channels {
            if reconnecting && !channel.is_server_opened() {
                channel.disconnected();
            } else {
                channel.shut(error.clone(), &reason);
            }
        }
        if reconnecting {
            for topic in self.subs.lock().values_mut().flatten() {
                topic.resumed |= std::mem::take(&mut topic.live);
            }
        } else {
            self.subs.lock().clear();
        }
        self.state.send_replace(if reconnecting {
            ConnectionState::Connecting
        } else {
            ConnectionState::Closed
        });
    }

    /// Every member of a presence topic (all pages).
    pub async fn fetch_presence(&self, channel: &str, params: &Value) -> Result<Vec<Member>, ClientError> {
        let mut members = Vec::new();
        let mut cursor = None;
        loop {
            let message = ClientMessage::Presence {
                channel: channel.to_owned(),
                data: Some(params.clone()),
                id: None,
                limit: Some(1000),
                cursor: cursor.take(),
                token: None,
            };
            let what = format!("presence of '{channel}'");
            let answer = self.call(message, self.config.request_timeout, what).await?;
            let page: super::presence::Page = serde_json::from_value(answer)
                .map_err(|err| ClientError::Remote(format!("malformed presence reply: {err}")))?;
            members.extend(page.clients);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(members),
            }
        }
    }

    /// A `presence_diff`: applied to the live lists of that topic.
    pub fn presence_diff(&self, channel: &str, params: &Value, joins: Vec<Member>, leaves: Vec<String>) {
        let lists: Vec<Arc<LiveList>> = self
            .presence
            .lock()
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for list in lists {
            if list.channel == channel && &list.params == params {
                list.apply(joins.clone(), &leaves);
            }
        }
    }

    /// The client is done for good: everything still open is closed.
    pub fn finish(&self) {
        self.ws.lock().take();
        let error = self
            .final_close()
            .map_or(ClientError::Disconnected, ClientError::ServerClosed);
        self.fail_calls(&error);
        let channels: Vec<ClientChannel> = self.channels.lock().drain().map(|(_, c)| c).collect();
        for channel in channels {
            channel.shut(ClientError::Closed(channel.name().to_owned()), "client closed");
        }
        self.backlog.lock().clear();
        self.subs.lock().clear();
        self.on_channel.lock().clear();
        self.state.send_replace(ConnectionState::Closed);
    }

    /// After a reconnect: subscribe again to every (channel, params), recovering from its
    /// position on a history channel, and re-open every channel this client opened. Answers are
    /// awaited in background tasks.
    pub fn restore(self: &Arc<Self>) {
        let mut wanted: Vec<(String, Value, Option<Position>, Option<String>)> = Vec::new();
        {
            let mut subs = self.subs.lock();
            // Topics without local subscriptions are not subscribed again.
            subs.retain(|_, topics| {
                topics.retain(|t| !t.subs.is_empty());
                !topics.is_empty()
            });
            for (channel, topics) in subs.iter() {
                for topic in topics {
                    wanted.push((
                        channel.clone(),
                        topic.params.clone(),
                        topic.position.clone(),
                        topic.token.clone(),
                    ));
                }
            }
        }
        let timeout = self.config.request_timeout;
        for (channel, params, recover, token) in wanted {
            let Ok(waiter) = self.start_subscribe(&channel, &params, recover.as_ref(), token.as_deref()) else {
                return;
            };
            let shared = Arc::downgrade(self);
            tokio::spawn(async move {
                let deadline = Instant::now() + timeout;
                let what = format!("re-subscribe to '{channel}'");
                let Some(strong) = shared.upgrade() else { return };
                let id = waiter.id;
                let answer = strong.finish_call(waiter, deadline, timeout, what).await;
                strong.sub_calls.lock().remove(&id);
                if let Err(ClientError::Remote(text)) = answer {
                    tracing::warn!(%channel, %text, "re-subscribe refused by the server: subscription ended");
                    strong.drop_subs(&channel, &params);
                }
            });
        }
        // Live member lists are read again (after the re-subscribes above, which the server
        // answers first: the list includes this client).
        let lists: Vec<Arc<LiveList>> = {
            let mut lists = self.presence.lock();
            lists.retain(|list| list.strong_count() > 0);
            lists.iter().filter_map(std::sync::Weak::upgrade).collect()
        };
        for list in lists {
            let shared = Arc::downgrade(self);
            tokio::spawn(async move {
                let Some(strong) = shared.upgrade() else { return };
                match strong.fetch_presence(&list.channel, &list.params).await {
                    Ok(members) => list.replace(members),
                    Err(err) => {
                        tracing::warn!(channel = %list.channel, %err, "presence not read again after a reconnect")
                    }
                }
            });
        }
        let reopen: Vec<ClientChannel> = self
            .channels
            .lock()
            .values()
            .filter(|c| !c.is_server_opened() && c.state() == ChannelState::Reopening)
            .cloned()
            .collect();
        for channel in reopen {
            let open = ClientMessage::Open {
                channel: channel.name().to_owned(),
                data: Some(channel.params()),
                id: None,
            };
            let Ok(waiter) = self.start_call(open) else {
                return;
            };
            let shared = Arc::downgrade(self);
            tokio::spawn(async move {
                let deadline = Instant::now() + timeout;
                let what = format!("re-open of channel '{}'", channel.name());
                let Some(strong) = shared.upgrade() else { return };
                match strong.finish_call(waiter, deadline, timeout, what).await {
                    Ok(_) => channel.set_state(ChannelState::Open),
                    Err(ClientError::Remote(text)) => {
                        tracing::warn!(channel = channel.name(), %text, "re-open refused by the server: channel closed");
                        channel.shut(ClientError::Closed(channel.name().to_owned()), &text);
                        strong.forget_channel(&channel);
                    }
                    Err(err) => tracing::debug!(channel = channel.name(), %err, "re-open not answered"),
                }
            });
        }
    }
}
