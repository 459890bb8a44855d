//! The Rust client: pub/sub subscriptions and actions, and bidirectional channels, over one
//! WebSocket ([`crate::ws`]), with reconnect.
//!
//! * [`Client::subscribe`] → a [`Subscription`] (a `Stream` of the channel's data; with
//!   [`Subscription::next_event`], also each publication's offset and each re-subscribe with
//!   whether it recovered);
//! * [`Client::history`] → a history channel's recent publications and its position;
//! * [`Client::action`] → the action's result;
//! * [`Client::open`] → a [`ClientChannel`], the mirror of the server's [`Duplex`](crate::Duplex)
//!   (`on`, `on_sync`, `emit`, `request`, `close`); channels the server opens by itself reach
//!   [`Client::on_channel`] callbacks.
//!
//! When the connection drops, waiting actions and requests fail with
//! [`ClientError::Disconnected`]; the client reconnects with jittered exponential backoff,
//! subscribes again with the same parameters and re-opens its channels by name with the same
//! parameters (their handlers stay registered). Server-opened channels close on a drop (the
//! server opens them again on the new connection). [`Client::watch_state`] shows the state.
//!
//! On a channel with history (PROTOCOL.md, "History and recovery") each subscription remembers
//! the offset of the last publication it delivered and the stream's epoch, and re-subscribes
//! from there: what was published while the client was away follows, in order, then the live
//! publications — each yielded once. When that is not possible (a new epoch, or what was missed
//! is no longer kept) the subscription says so: [`SubscriptionEvent::Resubscribed`] with
//! `recovered: false`, in its place among the publications (see [`Subscription`]).
//!
//! On a server that authenticates (PROTOCOL.md, "Identity"), give the client a token
//! ([`ClientBuilder::token`]) or a source of fresh ones ([`ClientBuilder::get_token`]): every
//! connection sends `connect` first and nothing else until `connected` (the client is
//! [`Open`](ConnectionState::Open) from then on, and [`Client::identity`] says who it is); with
//! `get_token` the client refreshes the token a little before it expires, and after a 4005
//! ("token expired") reconnects with a fresh one. A 4005 without `get_token` ends the client.
//!
//! The server's close code decides (PROTOCOL.md, "Close codes"): 4500–4999
//! ([`NO_RECONNECT_CODES`]) mean "do not reconnect": the client then closes for good, as with
//! reconnect off, calls fail with [`ClientError::ServerClosed`], and [`Client::server_close`]
//! keeps the code and reason. Every other close (4000–4499 included) and a dropped connection
//! reconnect.
//!
//! ```no_run
//! # async fn run() -> Result<(), switchboard::client::ClientError> {
//! use serde_json::json;
//! use std::time::Duration;
//! use switchboard::client::{Client, ClientConfig};
//!
//! let client = Client::connect("ws://127.0.0.1:8001/", ClientConfig::default()).await?;
//! let chat = client.open("chat", json!({})).await?;
//! let _off = chat.on_sync("server:message", |msg| println!("{msg}"))?;
//! chat.on_sync("server:ask", |_question| json!({ "confirmed": true }))?;
//! chat.emit("client:send", json!({ "text": "hello" }))?;
//! let reply = chat.request("client:request", json!({ "data": 1 }), Duration::from_secs(5)).await?;
//! # let _ = reply; Ok(()) }
//! ```

//! The files follow the data path: `reader.rs` reads the server's messages into `state.rs` (what
//! the client knows and waits for), `reconnect.rs` keeps the connection up (`close.rs`: which
//! close codes end it for good); `subscription.rs` and `duplex.rs` are the handles an application
//! holds.

mod auth;
mod close;
mod duplex;
mod error;
mod history;
mod presence;
mod reader;
mod reconnect;
mod state;
mod subscription;

pub use auth::ClientIdentity;
pub use close::{ServerClose, NO_RECONNECT_CODES, RECONNECT_CODES, TOKEN_EXPIRED};
pub use duplex::{ChannelState, ClientChannel, Remover};
pub use error::ClientError;
pub use history::{History, Position, Publication};
pub use presence::{Member, PresenceStats, PresenceWatch};
pub use subscription::{Subscription, SubscriptionEvent};

use crate::protocol::ClientMessage;
use serde_json::{json, Value};
use state::{ChannelCallback, ClientState, LocalSub};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The state of the client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connecting, or waiting to reconnect after a drop.
    Connecting,
    /// Connected.
    Open,
    /// Closed for good: [`Client::close`], all handles dropped, a drop with reconnect off, or a
    /// server close with a code in 4500–4999 (see [`Client::server_close`]).
    Closed,
}

/// How the client connects and reconnects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Reconnect after the connection drops. Default true. Even so, a server close with a code in
    /// 4500–4999 ([`NO_RECONNECT_CODES`]) is never followed by a reconnect.
    pub reconnect: bool,
    /// The first reconnect delay (before jitter). Default 500 ms.
    pub min_delay: Duration,
    /// The largest reconnect delay. Default 10 s.
    pub max_delay: Duration,
    /// How long `subscribe`, `unsubscribe`, `open` (and re-subscribes and re-opens) wait for the
    /// server's answer, including waiting for a connection. Default 10 s.
    pub request_timeout: Duration,
    /// The WebSocket limits and timers.
    pub ws: crate::ws::Config,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            reconnect: true,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            ws: crate::ws::Config::default(),
        }
    }
}

/// A connected client. Cheap to clone; dropping the last clone closes the connection.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

/// Owned by the `Client` clones only (not by the connection task), so its drop means "nobody
/// uses this client any more".
struct Handle {
    shared: Arc<ClientState>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// Builds a [`Client`] with callbacks that must exist before the first connection (e.g. for
/// channels the server opens as soon as a client connects).
pub struct ClientBuilder {
    url: String,
    config: ClientConfig,
    on_channel: Vec<ChannelCallback>,
    token: Option<String>,
    get_token: Option<auth::TokenSource>,
    connect_data: Option<Value>,
    authenticate: bool,
}

impl ClientBuilder {
    /// The connection settings.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Calls `callback` with each channel the server opens (see [`Client::on_channel`]).
    pub fn on_channel(mut self, callback: impl Fn(ClientChannel) + Send + Sync + 'static) -> Self {
        self.on_channel.push(Arc::new(callback));
        self
    }

    /// Authenticates with `token` (PROTOCOL.md, "Identity"): every connection sends `connect`
    /// with it first, and nothing else until the server answers `connected`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self.authenticate = true;
        self
    }

    /// Asks `get_token` for a token: for the first connection (unless [`token`](Self::token)
    /// gave one), after the server closed with 4005 ("token expired"), and a little before the
    /// identity expires (sent as `refresh`). Without it, a 4005 ends the client.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), switchboard::client::ClientError> {
    /// let client = switchboard::client::Client::builder("ws://127.0.0.1:8000/")
    ///     .get_token(|| async { Ok::<_, String>("JWT from my backend".to_owned()) })
    ///     .connect()
    ///     .await?;
    /// println!("connected as {:?}", client.identity());
    /// # Ok(()) }
    /// ```
    pub fn get_token<F, Fut, E>(mut self, get_token: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.get_token = Some(Arc::new(move || {
            let token = get_token();
            Box::pin(async move { token.await.map_err(|e| e.to_string()) })
        }));
        self.authenticate = true;
        self
    }

    /// Sends `connect` with this `data` (for the server's connect proxy; the handshake's headers
    /// go with it), with or without a token.
    pub fn connect_data(mut self, data: Value) -> Self {
        self.connect_data = Some(data);
        self.authenticate = true;
        self
    }

    /// Connects (the first attempt must succeed) and keeps the connection up from then on. With
    /// authentication, the client is [`Open`](ConnectionState::Open) once `connected`.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let auth = self
            .authenticate
            .then(|| Arc::new(auth::ClientAuth::new(self.token, self.get_token, self.connect_data)));
        let shared = Arc::new(ClientState::new(self.url, self.config, self.on_channel, auth));
        // Subscribed before connecting, so it sees every change the connection makes.
        let mut state = shared.state.subscribe();
        let handler = reader::Reader::new(shared.clone());
        let ws = crate::ws::connect(&shared.url, handler, shared.config.ws.clone())
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        // The connection task marks the client open (in `on_open`) right after the handshake:
        // return once it has, so `state()` is `Open` for the caller. Waiting for that change
        // rather than for a state other than `Connecting`: a server that closes the connection
        // at once (say with 4001, "reconnect") may have put it back to `Connecting` already.
        let _ = tokio::time::timeout(shared.config.ws.handshake_timeout, state.changed()).await;
        drop(state);
        tokio::spawn(reconnect::supervise(shared.clone(), ws));
        Ok(Client {
            handle: Arc::new(Handle { shared }),
        })
    }
}

impl Client {
    /// Connects to a Switchboard server at `url` (`ws://host:port/path`).
    pub async fn connect(url: &str, config: ClientConfig) -> Result<Client, ClientError> {
        Self::builder(url).config(config).connect().await
    }

    /// A builder, to register [`on_channel`](ClientBuilder::on_channel) before connecting.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            config: ClientConfig::default(),
            on_channel: Vec::new(),
            token: None,
            get_token: None,
            connect_data: None,
            authenticate: false,
        }
    }

    /// Who the server says this client is (its last `connected`); `None` while not connected,
    /// or when the client does not authenticate.
    pub fn identity(&self) -> Option<ClientIdentity> {
        self.shared().auth.as_ref().and_then(|auth| auth.identity())
    }

    fn shared(&self) -> &Arc<ClientState> {
        &self.handle.shared
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        *self.shared().state.borrow()
    }

    /// The close code and reason of the last close frame the server sent, on any connection of
    /// this client; `None` while the server has closed none (a connection that dropped without a
    /// close frame, or that this client closed, leaves it as it was).
    ///
    /// When the state is [`ConnectionState::Closed`] and
    /// [`is_final`](ServerClose::is_final) is true, the server ended the client for good (a code in
    /// 4500–4999): the reason says why, and a new [`Client`] is needed once the cause is removed.
    ///
    /// ```no_run
    /// # async fn run(client: switchboard::client::Client) {
    /// client.closed().await;
    /// if let Some(close) = client.server_close().filter(|c| c.is_final()) {
    ///     eprintln!("the server will not have us back: {} {}", close.code, close.reason);
    /// }
    /// # }
    /// ```
    pub fn server_close(&self) -> Option<ServerClose> {
        self.shared().server_close()
    }

    /// A receiver of the connection's state, to watch it change.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared().state.subscribe()
    }

    /// Waits until the connection is open, at most `timeout`.
    pub async fn wait_open(&self, timeout: Duration) -> Result<(), ClientError> {
        self.shared().wait_open(Instant::now() + timeout, "connect").await
    }

    /// Subscribes to the pub/sub `channel` with `params` (its subscribe-time parameters, `{}` or
    /// `Null` for none) and waits for the server to confirm. A refusal (e.g. `Invalid token`) is
    /// [`ClientError::Remote`] with the server's text.
    ///
    /// After a reconnect the subscription is made again by itself, recovering what was missed on
    /// a channel with history: see [`Subscription`].
    pub async fn subscribe(&self, channel: &str, params: Value) -> Result<Subscription, ClientError> {
        self.subscribe_inner(channel, params, None).await
    }

    /// [`subscribe`](Self::subscribe) to a channel that needs a subscription token
    /// (PROTOCOL.md, "Identity"); the token is presented again when the subscription is restored
    /// after a reconnect. A refusal is `ClientError::Remote("Permission denied")`.
    pub async fn subscribe_with_token(
        &self,
        channel: &str,
        params: Value,
        token: &str,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_inner(channel, params, Some(token)).await
    }

    async fn subscribe_inner(
        &self,
        channel: &str,
        params: Value,
        token: Option<&str>,
    ) -> Result<Subscription, ClientError> {
        let shared = self.shared();
        let params = if params.is_null() { json!({}) } else { params };
        let id = shared.next_sub_id();
        let (tx, rx) = mpsc::unbounded_channel();
        // Registered first, so a publication right after `subscribed` is not missed.
        shared.add_sub(channel, &params, LocalSub { id, tx }, token);
        let subscription = Subscription::new(channel.to_owned(), id, rx, Arc::downgrade(shared));
        match shared.subscribe_call(channel, &params, token).await {
            Ok(_) => Ok(subscription),
            Err(err) => {
                // Refused: forget it locally without telling the server.
                shared.remove_sub(channel, id);
                subscription.discard();
                Err(err)
            }
        }
    }

    /// The members of the presence topic `channel` with `params` (every page, in the order they
    /// joined). A channel without presence, or one this client may not subscribe to, is
    /// [`ClientError::Remote`] with the server's text.
    pub async fn presence(&self, channel: &str, params: Value) -> Result<Vec<Member>, ClientError> {
        let params = if params.is_null() { json!({}) } else { params };
        self.shared().fetch_presence(channel, &params).await
    }

    /// A live member list of the presence topic `channel` with `params`: subscribes (diffs go to
    /// subscribers), reads the members, then applies every `presence_diff` of the topic; after a
    /// reconnect the list is read again. The subscription lasts as long as the watch.
    ///
    /// ```no_run
    /// # async fn run(client: switchboard::client::Client) -> Result<(), switchboard::client::ClientError> {
    /// use serde_json::json;
    /// let mut room = client.watch_presence("room", json!({"room": "lobby"})).await?;
    /// while room.changed().await {
    ///     println!("{} here", room.members().len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn watch_presence(&self, channel: &str, params: Value) -> Result<PresenceWatch, ClientError> {
        let params = if params.is_null() { json!({}) } else { params };
        let shared = self.shared();
        let list = Arc::new(presence::LiveList::new(channel, &params));
        shared.presence.lock().push(Arc::downgrade(&list));
        let subscription = self.subscribe(channel, params.clone()).await?;
        let members = shared.fetch_presence(channel, &params).await?;
        list.replace(members);
        Ok(PresenceWatch::new(list, subscription))
    }

    /// The member and user counts of the presence topic `channel` with `params`.
    pub async fn presence_stats(&self, channel: &str, params: Value) -> Result<PresenceStats, ClientError> {
        let params = if params.is_null() { json!({}) } else { params };
        let message = ClientMessage::PresenceStats {
            channel: channel.to_owned(),
            data: Some(params),
            id: None,
            token: None,
        };
        let shared = self.shared();
        let what = format!("presence stats of '{channel}'");
        let answer = shared.call(message, shared.config.request_timeout, what).await?;
        serde_json::from_value(answer)
            .map_err(|err| ClientError::Remote(format!("malformed presence_stats reply: {err}")))
    }

    /// Reads the stream of the history channel `channel` with `params` (its subscribe-time
    /// parameters, as for [`subscribe`](Self::subscribe)): the latest `limit` publications, or
    /// with `since` those after that position (at most `limit`; without `limit`, up to the
    /// channel's recovery limit), oldest first, with the stream's position now. Needs no
    /// subscription.
    ///
    /// A `since` of another epoch, or older than what is kept, is answered with what is kept:
    /// compare [`History::position`]'s epoch with the one of `since`. A channel without history
    /// (and a refusal, as for `subscribe`) is [`ClientError::Remote`] with the server's text,
    /// e.g. `Channel 'chat' keeps no history.`.
    ///
    /// ```no_run
    /// # async fn run(client: switchboard::client::Client) -> Result<(), switchboard::client::ClientError> {
    /// use serde_json::json;
    ///
    /// let recent = client.history("feed", json!({}), Some(20), None).await?;
    /// for publication in &recent.publications {
    ///     println!("{}: {}", publication.offset, publication.data);
    /// }
    /// // Later: only what came after.
    /// let newer = client.history("feed", json!({}), None, Some(&recent.position)).await?;
    /// # let _ = newer; Ok(()) }
    /// ```
    pub async fn history(
        &self,
        channel: &str,
        params: Value,
        limit: Option<u64>,
        since: Option<&Position>,
    ) -> Result<History, ClientError> {
        let params = if params.is_null() { json!({}) } else { params };
        let message = ClientMessage::History {
            channel: channel.to_owned(),
            data: Some(params),
            id: None,
            limit,
            since: since.map(Position::to_wire),
            token: None,
        };
        let shared = self.shared();
        let what = format!("history of '{channel}'");
        let answer = shared.call(message, shared.config.request_timeout, what).await?;
        // The reader hands the reply over as `{"publications": […], "position": {…}}`.
        serde_json::from_value(answer).map_err(|err| ClientError::Remote(format!("malformed history reply: {err}")))
    }

    /// Calls the action `name` with `data` and returns its result (`Null` when it has none).
    pub async fn action(&self, name: &str, data: Value, timeout: Duration) -> Result<Value, ClientError> {
        let message = ClientMessage::Action {
            channel: name.to_owned(),
            data: Some(data),
            id: None,
        };
        self.shared().call(message, timeout, format!("action '{name}'")).await
    }

    /// Publishes `data` on `channel`, a channel of a namespace that lets clients publish
    /// (PROTOCOL.md, "Client publish"); the publication's offset when the channel keeps history.
    /// A refusal is [`ClientError::Remote`] with the server's text.
    pub async fn publish(&self, channel: &str, data: Value, timeout: Duration) -> Result<Option<u64>, ClientError> {
        let message = ClientMessage::Publish {
            channel: channel.to_owned(),
            data: Some(data),
            id: None,
        };
        let published = self
            .shared()
            .call(message, timeout, format!("publish to '{channel}'"))
            .await?;
        Ok(published.as_u64())
    }

    /// Opens the bidirectional channel `name` (a route on the server) with `params`. A refusal is
    /// [`ClientError::Remote`] with the route's error text.
    pub async fn open(&self, name: &str, params: Value) -> Result<ClientChannel, ClientError> {
        self.open_with(name, params, |_| {}).await
    }

    /// Like [`open`](Self::open), but runs `setup` (to register handlers) before the `open` is
    /// sent, so even events and requests the server sends while it accepts the channel find their
    /// handlers.
    pub async fn open_with(
        &self,
        name: &str,
        params: Value,
        setup: impl FnOnce(&ClientChannel),
    ) -> Result<ClientChannel, ClientError> {
        let shared = self.shared();
        let params = if params.is_null() { json!({}) } else { params };
        let deadline = Instant::now() + shared.config.request_timeout;
        let what = format!("open of channel '{name}'");
        shared.wait_open(deadline, &what).await?;
        let channel = ClientChannel::new(
            name.to_owned(),
            Some(params.clone()),
            Arc::downgrade(shared),
            ChannelState::Opening,
        );
        {
            let mut channels = shared.channels.lock();
            if channels.get(name).is_some_and(|c| !c.is_closed()) {
                return Err(ClientError::Remote(crate::protocol::text::already_open(name)));
            }
            channels.insert(name.to_owned(), channel.clone());
        }
        setup(&channel);
        let message = ClientMessage::Open {
            channel: name.to_owned(),
            data: Some(params),
            id: None,
        };
        let result = match shared.start_call(message) {
            Ok(waiter) => {
                shared
                    .finish_call(waiter, deadline, shared.config.request_timeout, what)
                    .await
            }
            Err(err) => Err(err),
        };
        match result {
            Ok(_) => {
                channel.set_state(ChannelState::Open);
                Ok(channel)
            }
            Err(err) => {
                if let ClientError::Timeout { .. } = err {
                    // The server may still open it: tell it we gave up.
                    let _ = shared.send(&ClientMessage::Duplex(crate::protocol::DuplexMessage::Close {
                        channel: name.to_owned(),
                        reason: Some("open timed out".to_owned()),
                    }));
                }
                channel.shut(ClientError::Closed(name.to_owned()), &err.to_string());
                shared.forget_channel(&channel);
                Err(err)
            }
        }
    }

    /// Calls `callback` with every channel the server opens by itself (`{"type":"opened"}` without
    /// an id), on the connection's task, before any later message is read: handlers registered
    /// in the callback see everything the server sends on the channel. Channels announced before
    /// the first callback was registered are handed to it at once (use
    /// [`Client::builder`] to register it before connecting).
    pub fn on_channel(&self, callback: impl Fn(ClientChannel) + Send + Sync + 'static) {
        let shared = self.shared();
        let callback: ChannelCallback = Arc::new(callback);
        shared.on_channel.lock().push(callback.clone());
        let backlog = std::mem::take(&mut *shared.backlog.lock());
        for channel in backlog.into_iter().filter(|c| !c.is_closed()) {
            callback(channel);
        }
    }

    /// The open channel called `name`, if any.
    pub fn channel(&self, name: &str) -> Option<ClientChannel> {
        self.shared().channels.lock().get(name).cloned()
    }

    /// Closes the connection for good: no reconnect; channels close, subscriptions end, waiting
    /// calls fail.
    pub fn close(&self) {
        self.shared().shutdown.send_replace(true);
    }

    /// Waits until the client is closed for good ([`Client::close`], or a server close with a code
    /// in 4500–4999: see [`Client::server_close`]).
    pub async fn closed(&self) {
        let mut rx = self.shared().state.subscribe();
        let _ = rx.wait_for(|s| *s == ConnectionState::Closed).await;
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.shared().url)
            .field("state", &self.state())
            .finish()
    }
}
