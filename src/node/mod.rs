//! `Node`: one Switchboard server — the channels, actions and routes it serves, its [`Hub`] of
//! local subscribers, and the broker it publishes through.
//!
//! The node owns joining and leaving topics ([`Node::join`], [`Node::leave`]): sessions only
//! translate protocol messages into these calls, and brokers only move bytes. The HTTP endpoints
//! beside the WebSocket — `/_broadcast` (`broadcast.rs`) and `/metrics` (`metrics.rs`) — read the
//! same node.

mod api;
mod broadcast;
mod control;
mod hub;
mod limits;
mod metrics;
mod origins;
mod presence;

pub(crate) use api::publications_of;
pub use api::Api;
pub(crate) use control::{Command, Question, CONTROL_TOPIC};
pub(crate) use hub::{Ack, Hub, StreamJoin};
pub use limits::Limits;
pub(crate) use limits::{
    ConnectionRate, LimitRefusals, MessageRate, Refused, UserConnections, Verdict, RATE_CLOSE_CODE,
};
pub use origins::Origins;
pub(crate) use presence::Member;
use presence::Presence;

use crate::auth::{Auth, ConnectProxy, Deadlines, Proxy};
use crate::broker::{Broker, BrokerError, Delivery, MemoryBroker, StreamRead};
use crate::protocol::{PresenceMember, ServerMessage};
use crate::router::{ActionDef, Authorizer, ChannelDef, ConnectHook, RouteDef};
use crate::session::Session;
use crate::ws::{self, Rejection, Text, WebSocket};
use crate::Router;
use axum::routing::MethodRouter;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The `reason` of an `unsubscribed` the server sends on its own (the HTTP API's `unsubscribe`).
pub(crate) const SERVER_UNSUBSCRIBED: &str = "unsubscribed by the server";

/// Why a broadcast failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// No channel of that name is declared.
    #[error("Channel '{0}' not found.")]
    NotFound(String),
    /// The parameters do not validate against the channel's parameter type.
    #[error("Invalid parameters for action '{0}'")]
    InvalidParams(String),
    /// The channel function returned an error (its text).
    #[error("{0}")]
    Failed(String),
    /// The channel's router is not mounted on a running node.
    #[error("channel '{0}' is not mounted on a node: build a Node from its Router first")]
    NotMounted(String),
    /// The broker could not take the publication (e.g. Redis is unreachable).
    #[error("{0}")]
    Broker(String),
    /// The server refused the broadcast (client address not allowed, or wrong token).
    #[error("broadcast refused: {0}")]
    Refused(String),
    /// The publication's data is larger than its namespace allows.
    #[error("Publication data too large: at most {0} bytes of JSON.")]
    DataTooLarge(usize),
    /// The server could not be reached ([`Publisher`](crate::Publisher) only).
    #[error("server unreachable: {0}")]
    Unreachable(String),
}

impl From<BrokerError> for PublishError {
    fn from(err: BrokerError) -> Self {
        PublishError::Broker(err.to_string())
    }
}

/// Who may use the HTTP broadcast endpoint.
#[derive(Debug, Clone)]
pub(crate) struct BroadcastAccess {
    /// Client addresses allowed (IP addresses, or `localhost` for any loopback address).
    pub allowed_hosts: Vec<String>,
    /// If set, requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// This node's counters, read by `/metrics` (per node: two nodes in one process count apart).
#[derive(Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub publications: AtomicU64,
    pub publish_failures: AtomicU64,
    /// Connections closed (1008) because they did not read.
    pub slow_consumers: AtomicU64,
    /// Bidirectional channels open on this node's connections.
    pub duplex_channels: AtomicU64,
    /// Handshakes, messages and connections refused by a limit or the origin check, by reason.
    pub limit_refusals: LimitRefusals,
}

pub(crate) struct NodeInner {
    pub channels: HashMap<String, Arc<ChannelDef>>,
    /// Namespaces by name (`""`: channels without `:`).
    pub namespaces: HashMap<String, Arc<ChannelDef>>,
    pub actions: HashMap<String, Arc<ActionDef>>,
    pub routes: HashMap<String, Arc<RouteDef>>,
    pub on_connect: Vec<ConnectHook>,
    pub authorizers: Vec<Authorizer>,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub ws_config: ws::Config,
    pub broadcast_access: BroadcastAccess,
    pub counters: Counters,
    /// The node's open WebSockets, whatever serves it (linked to the server's registry under
    /// `http::serve`): what [`Node::shutdown`] drains.
    pub sockets: ws::Sockets,
    /// How [`Node::shutdown`] drains them.
    pub drain: ws::Drain,
    /// How connections authenticate; `None`: every connection is anonymous.
    pub auth: Option<Auth>,
    /// The application's backend endpoints (subscribe and action proxies).
    pub proxy: Option<Proxy>,
    /// When connections must end: expiring identities, connections not authenticated in time.
    pub deadlines: Deadlines,
    /// A random name for this node, the first part of its connections' client ids (unique
    /// across the nodes sharing a broker).
    pub name: String,
    /// Who is in the topics of channels with presence (this node's members).
    pub presence: Presence,
    /// With a broker that shares presence: the queue of this node's joins and leaves to record
    /// there (in order), and its heartbeat.
    pub presence_sync: presence::Sync,
    /// What one client may ask of the node.
    pub limits: Limits,
    /// Which web pages may open connections.
    pub origins: Origins,
    /// New connections per second per client address (checked at the handshake).
    pub connection_rate: ConnectionRate,
    /// Open connections per user id, for `limits.connections_per_user` and the API's
    /// `disconnect` and `unsubscribe`.
    pub user_connections: UserConnections,
    /// Commands and surveys to and from the other nodes.
    pub control: control::Control,
}

/// A Switchboard server: mount its [`endpoint`](Node::endpoint) on a path of an axum app, or use
/// [`app`](Node::app) for the SocketAPI layout (WebSocket at `/`, broadcasts at `/_broadcast`).
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use switchboard::{Node, Router};
/// let node = Node::new(Router::new());
/// let listener = switchboard::http::bind("127.0.0.1:8000").await?;
/// switchboard::http::serve(listener, node.app(), switchboard::Shutdown::on_signals()).await
/// # }
/// ```
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

/// Configures a [`Node`].
pub struct NodeBuilder {
    router: Router,
    broker: Arc<dyn Broker>,
    ws_config: ws::Config,
    broadcast_access: BroadcastAccess,
    drain: ws::Drain,
    auth: Option<Auth>,
    proxy: Option<Proxy>,
    presence_ttl: std::time::Duration,
    limits: Limits,
    origins: Origins,
}

impl NodeInner {
    /// The channel a client or an API call names: a typed channel by its name, else the
    /// namespace the name belongs to (`chat:lobby` → `chat`, `news` → `""`). A name that starts
    /// with a typed channel's name and `#` is that channel's topic, never a namespace channel.
    pub fn channel(&self, name: &str) -> Option<&Arc<ChannelDef>> {
        if let Some(def) = self.channels.get(name) {
            return Some(def);
        }
        if self.namespaces.is_empty() {
            return None;
        }
        if let Some((head, _)) = name.split_once('#') {
            if self.channels.contains_key(head) {
                return None;
            }
        }
        self.namespaces.get(crate::router::namespace_of(name))
    }

    /// The channel a hub topic belongs to (`name`, `name#key`, or a namespace channel).
    pub fn channel_of_topic(&self, topic: &str) -> Option<&Arc<ChannelDef>> {
        let head = topic.split_once('#').map_or(topic, |(head, _)| head);
        match self.channels.get(head) {
            Some(def) => Some(def),
            None => self.namespaces.get(crate::router::namespace_of(topic)),
        }
    }
}

impl NodeBuilder {
    /// The application's HTTP backends (PROTOCOL.md, "Proxies"): the subscribe proxy asks about
    /// subscriptions to channels declared with [`Channel::subscribe_proxy`](crate::Channel::subscribe_proxy),
    /// the action proxy answers actions the node does not declare, and a connect proxy
    /// authenticates connections when no [`auth`](Self::auth) is set.
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// With a broker that shares presence (Redis): how long the members of a node that stopped
    /// renewing its liveness still count (default 30 s; renewed every third of it).
    pub fn presence_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.presence_ttl = ttl;
        self
    }

    /// How connections authenticate (default: no authentication, every connection anonymous).
    /// See [`Auth`], [`Jwt`](crate::Jwt) and PROTOCOL.md, "Identity".
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The broker to publish through (default: in-memory).
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Arc::new(broker);
        self
    }

    /// Limits of the WebSocket connections.
    pub fn ws_config(mut self, config: ws::Config) -> Self {
        self.ws_config = config;
        self
    }

    /// Client addresses allowed to use `/_broadcast` (default: `127.0.0.1`, `::1`, `localhost`).
    pub fn broadcast_allowed_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.broadcast_access.allowed_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// Require `Authorization: Bearer <token>` on `/_broadcast`.
    pub fn broadcast_token(mut self, token: impl Into<String>) -> Self {
        self.broadcast_access.token = Some(token.into());
        self
    }

    /// How [`Node::shutdown`] closes the node's WebSockets and how long it waits for them
    /// (default [`ws::Drain::default`]: 1001 "server shutting down", jittered batches over 2 s
    /// past 100 sockets, 10 s at most). A server's own shutdown (`http::serve`) follows its
    /// [`Shutdown`](crate::Shutdown)'s drain instead.
    pub fn drain(mut self, drain: ws::Drain) -> Self {
        self.drain = drain;
        self
    }

    /// What one client may ask of the node: messages per second, subscriptions per connection,
    /// connections per user, new connections per second per address (default
    /// [`Limits::default`], far above what normal use does; [`Limits::unlimited`] for none).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The web pages (the handshake's `Origin`) allowed to open WebSocket connections (default
    /// [`Origins::same_host`]: pages of the host the request was made to). Clients that send no
    /// `Origin` (not browsers) are always allowed; others get 403.
    pub fn allowed_origins(mut self, origins: Origins) -> Self {
        self.origins = origins;
        self
    }

    /// Builds the node and starts its broker.
    pub fn build(self) -> Node {
        let hub = Arc::new(Hub::default());
        let mut channels = HashMap::new();
        for def in self.router.channels {
            channels.insert(def.name.clone(), def);
        }
        let mut namespaces = HashMap::new();
        for def in self.router.namespaces {
            namespaces.insert(def.name.clone(), def);
        }
        let actions = self.router.actions.into_iter().map(|a| (a.name.clone(), a)).collect();
        let routes = self.router.routes.into_iter().map(|r| (r.name.clone(), r)).collect();
        let inner = Arc::new(NodeInner {
            channels,
            namespaces,
            actions,
            routes,
            on_connect: self.router.on_connect,
            authorizers: self.router.authorizers,
            hub: hub.clone(),
            broker: self.broker,
            ws_config: self.ws_config,
            broadcast_access: self.broadcast_access,
            counters: Counters::default(),
            sockets: ws::Sockets::new(),
            drain: self.drain,
            auth: self
                .auth
                .or_else(|| self.proxy.as_ref()?.connect_proxy().map(ConnectProxy::into_auth)),
            proxy: self.proxy,
            deadlines: Deadlines::default(),
            name: format!("{:08x}", fastrand::u32(..)),
            presence: Presence::default(),
            presence_sync: presence::Sync::new(self.presence_ttl),
            connection_rate: ConnectionRate::new(&self.limits),
            user_connections: UserConnections::default(),
            limits: self.limits,
            origins: self.origins,
            control: control::Control::default(),
        });
        for def in inner.channels.values().chain(inner.namespaces.values()) {
            let _ = def.node.set(Arc::downgrade(&inner));
        }
        let weak = Arc::downgrade(&inner);
        inner
            .broker
            .start(Delivery::new(hub, move |text: &str| control::handle(&weak, text)));
        let node = Node { inner };
        if tokio::runtime::Handle::try_current().is_ok() {
            node.start_control();
        } else {
            tracing::warn!("node built outside a tokio runtime: the HTTP API's cross-node commands are off");
        }
        node
    }
}

impl Node {
    /// A node serving `router`'s channels and actions with the in-memory broker.
    pub fn new(router: Router) -> Self {
        Self::builder(router).build()
    }

    /// A builder for a node serving `router`.
    pub fn builder(router: Router) -> NodeBuilder {
        NodeBuilder {
            router,
            broker: Arc::new(MemoryBroker::new()),
            ws_config: ws::Config::default(),
            broadcast_access: BroadcastAccess {
                allowed_hosts: vec!["127.0.0.1".into(), "::1".into(), "localhost".into()],
                token: None,
            },
            drain: ws::Drain::default(),
            auth: None,
            proxy: None,
            presence_ttl: std::time::Duration::from_secs(30),
            limits: Limits::default(),
            origins: Origins::default(),
        }
    }

    pub(crate) fn from_inner(inner: Arc<NodeInner>) -> Self {
        Self { inner }
    }

    /// The WebSocket endpoint speaking the Switchboard (SocketAPI-compatible) protocol.
    ///
    /// Its connections are the node's, whatever serves the application: [`Node::shutdown`]
    /// closes them. Under [`http::serve`](crate::http::serve) the server's shutdown closes them
    /// too.
    ///
    /// A handshake from a web page not allowed by [`NodeBuilder::allowed_origins`] gets 403; one
    /// over [`Limits::connections_per_ip_per_sec`] for its address gets 429.
    pub fn endpoint<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let node = self.clone();
        ws::endpoint_checked(
            move |handshake: &mut ws::Handshake| {
                node.admit(handshake)?;
                // A `?token=` is for the session's authentication only: taken out of the
                // handshake the connection keeps (~200 bytes less per connection, and no
                // credential kept for its whole life).
                let token = node
                    .inner
                    .auth
                    .as_ref()
                    .and_then(|_| crate::session::take_query_token(handshake));
                Ok(Session::new(node.clone()).with_token(token))
            },
            self.inner.ws_config.clone(),
            self.inner.sockets.clone(),
        )
    }

    /// The checks of a handshake before its upgrade: the origin, then the address's connection
    /// rate (a refused origin takes no token). Counted in `switchboard_limit_refusals_total`.
    fn admit(&self, handshake: &ws::Handshake) -> Result<(), Rejection> {
        let inner = &self.inner;
        if let Err(rejection) = inner.origins.check(handshake) {
            inner.counters.limit_refusals.add(Refused::Origin);
            tracing::debug!(peer = ?handshake.peer, "websocket handshake refused: {}", rejection.body.trim_end());
            return Err(rejection);
        }
        if let Some(peer) = handshake.peer {
            if !inner.connection_rate.allow(peer.ip()) {
                inner.counters.limit_refusals.add(Refused::ConnectionRate);
                let per_sec = inner.limits.connections_per_ip_per_sec;
                let ip = peer.ip();
                tracing::debug!(%ip, "websocket handshake refused: over {per_sec} new connections per second");
                return Err(Rejection::new(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "429 Too Many Requests: more than {per_sec} new connections per second from {ip}; \
                         raise connections_per_ip_per_sec (--max-connections-per-ip-per-sec)\n"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Closes the node's WebSocket connections and waits for them to end, at most the drain
    /// timeout: for a node mounted in an application that something other than
    /// [`http::serve`](crate::http::serve) serves (`axum::serve`, say), before the process exits.
    ///
    /// The closes follow [`NodeBuilder::drain`] (by default 1001 "server shutting down", in
    /// jittered batches over 2 s when there are more than 100 connections, 10 s at most). From
    /// then on, a connection that opens on the node is closed at once. The report says how many
    /// were closed and whether they all ended in time.
    ///
    /// ```no_run
    /// # async fn run(node: switchboard::Node) -> std::io::Result<()> {
    /// let app = axum::Router::new().route("/ws", node.endpoint());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    /// let signal = switchboard::Shutdown::on_signals();
    /// let stopped = signal.clone();
    /// let served = axum::serve(listener, app).with_graceful_shutdown(async move { stopped.triggered().await });
    /// let server = tokio::spawn(async move { served.await });
    /// signal.triggered().await;
    /// // axum's graceful shutdown does not wait for upgraded connections: the node does.
    /// let report = node.shutdown().await;
    /// assert!(report.completed(), "{} connections still open", report.remaining);
    /// let _ = server.await;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) -> ws::DrainReport {
        let report = self.inner.sockets.drain(&self.inner.drain).await;
        if report.completed() {
            tracing::info!(
                closed = report.closed,
                "node drained in {:?}: {} websocket connections closed",
                report.elapsed,
                report.closed
            );
        } else {
            tracing::warn!(
                closed = report.closed,
                open = report.remaining,
                "node drain timed out after {:?}: {} websocket connections still open",
                report.elapsed,
                report.remaining
            );
        }
        report
    }

    /// The node's open WebSocket connections (see [`ws::Sockets`]).
    pub fn sockets(&self) -> &ws::Sockets {
        &self.inner.sockets
    }

    /// `POST /_broadcast`: broadcasts from other processes (see PROTOCOL.md).
    pub fn broadcast_endpoint<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        broadcast::endpoint(self.clone())
    }

    /// `POST /_presence` and `POST /_presence_stats`: the members and counts of a presence
    /// topic for other processes, with the access rules of `/_broadcast` (PROTOCOL.md,
    /// "Presence over HTTP").
    pub fn presence_endpoints<S: Clone + Send + Sync + 'static>(&self) -> (MethodRouter<S>, MethodRouter<S>) {
        (
            broadcast::presence_endpoint(self.clone(), false),
            broadcast::presence_endpoint(self.clone(), true),
        )
    }

    /// The SocketAPI layout: the WebSocket at `/`, `POST /_broadcast`, `POST /_presence`,
    /// `POST /_presence_stats`, `GET /metrics`, `GET /healthz` and `GET /readyz`.
    pub fn app(&self) -> axum::Router {
        let (presence, stats) = self.presence_endpoints();
        axum::Router::new()
            .route("/", self.endpoint())
            .route("/_broadcast", self.broadcast_endpoint())
            .route("/_presence", presence)
            .route("/_presence_stats", stats)
            .route("/metrics", self.metrics_endpoint())
            .route("/healthz", metrics::healthz())
            .route("/readyz", metrics::readyz(self.clone()))
    }

    /// `GET /metrics`: the node's counters in Prometheus' text format (OpenMetrics when the
    /// `Accept` header asks for it); README.md, "Metrics and health", lists them.
    pub fn metrics_endpoint<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        metrics::endpoint(self.clone())
    }

    /// `GET /healthz` and `GET /readyz`: `/healthz` answers 200 `ok` while the process serves;
    /// `/readyz` answers 200 while the broker is reachable ([`Broker::ready`]) and 503, naming
    /// the problem, while it is not.
    pub fn health_endpoints<S: Clone + Send + Sync + 'static>(&self) -> (MethodRouter<S>, MethodRouter<S>) {
        (metrics::healthz(), metrics::readyz(self.clone()))
    }

    /// Counts a publication for `/metrics` (by namespace), or the broker's error.
    fn count_publish<T>(&self, topic: &str, result: &Result<T, BrokerError>) {
        match result {
            Ok(_) => self.inner.hub.metrics.published(topic),
            Err(_) => self.inner.hub.metrics.broker_error(metrics::BrokerOp::Publish),
        }
    }

    /// Broadcasts on `channel` with untyped parameters (validated against the channel's type),
    /// as `/_broadcast` does.
    ///
    /// On a channel of a [`Namespace`](crate::Namespace), `params` is the publication's data
    /// (opaque JSON).
    pub async fn broadcast(&self, channel: &str, params: Value) -> Result<(), PublishError> {
        let def = self
            .inner
            .channel(channel)
            .ok_or_else(|| PublishError::NotFound(channel.to_owned()))?;
        match def.namespace {
            Some(_) => self.publish_to_namespace(def, channel, &params).await.map(drop),
            None => self.broadcast_typed(def, params).await.map(drop),
        }
    }

    /// The server HTTP API (`POST /api/{method}`, PROTOCOL.md "Server HTTP API") and, when
    /// `api` has an admin password, the admin page at `/admin`; merge it into the application:
    ///
    /// ```no_run
    /// # let node = switchboard::Node::new(switchboard::Router::new());
    /// let app = node.app().merge(node.api_router(switchboard::Api::new("change-me")));
    /// # let _ = app;
    /// ```
    pub fn api_router(&self, api: Api) -> axum::Router {
        let api = Arc::new(api);
        let node = self.clone();
        let calls = {
            let api = api.clone();
            axum::routing::post(move |method, request| api::handle(node.clone(), api.clone(), method, request))
        };
        let router = axum::Router::new().route("/api/{method}", calls);
        if api.has_admin() {
            router.route("/admin", axum::routing::get(api::admin_page))
        } else {
            router
        }
    }

    /// Broadcasts on a typed channel with untyped parameters; the stream offset on a history
    /// channel.
    pub(crate) async fn broadcast_typed(&self, def: &ChannelDef, params: Value) -> Result<Option<u64>, PublishError> {
        let channel = def.name.as_str();
        let params = match params {
            Value::Null => Value::Object(Default::default()),
            Value::Object(params) => Value::Object(params),
            // An array would fill the struct's fields by position: not parameters by name.
            _ => return Err(PublishError::InvalidParams(channel.to_owned())),
        };
        let prepared = def
            .prepare(params)
            .map_err(|_| PublishError::InvalidParams(channel.to_owned()))?;
        let data = prepared.data.await.map_err(PublishError::Failed)?;
        self.publish_data(def, channel, &prepared.key, &data).await
    }

    /// Bidirectional channels open on this node's connections (for leak checks; also in `/metrics`).
    pub fn duplex_channels(&self) -> u64 {
        self.inner.counters.duplex_channels.load(Ordering::Relaxed)
    }

    /// Publishes opaque `data` on `channel`, a channel of namespace `def`, after its size check.
    pub(crate) async fn publish_to_namespace(
        &self,
        def: &ChannelDef,
        channel: &str,
        data: &Value,
    ) -> Result<Option<u64>, PublishError> {
        if let Some(rules) = def.namespace {
            if json_len(data) > rules.max_data_bytes {
                return Err(PublishError::DataTooLarge(rules.max_data_bytes));
            }
        }
        self.publish_data(def, channel, "", data).await
    }

    /// Encodes a publication on `channel` (the def's name, or a channel of its namespace) once
    /// and hands it to the broker; on a history channel the broker completes it with the
    /// stream's next offset, which is returned.
    pub(crate) async fn publish_data(
        &self,
        def: &ChannelDef,
        channel: &str,
        key: &str,
        data: &Value,
    ) -> Result<Option<u64>, PublishError> {
        let mut message = ServerMessage::data_envelope(channel, data).encode();
        let topic = def.topic_for(channel, key);
        let result = match def.history {
            None => self
                .inner
                .broker
                .publish(&topic, Text::from(message))
                .await
                .map(|()| None),
            Some(history) => {
                // `{…,"data":…}` without its brace: the broker appends `,"offset":N}`.
                message.pop();
                let published = self.inner.broker.publish_to_stream(&topic, message, history.policy);
                published.await.map(Some)
            }
        };
        self.count_publish(&topic, &result);
        let counters = &self.inner.counters;
        match result {
            Ok(_) => counters.publications.fetch_add(1, Ordering::Relaxed),
            Err(_) => counters.publish_failures.fetch_add(1, Ordering::Relaxed),
        };
        result.map_err(Into::into)
    }

    /// Adds `ws` to `topic`'s subscribers once the broker carries the topic's publications, and
    /// queues `ack` to it in the same step, so the client sees the acknowledgement before any
    /// publication. See [`Hub::join`] for how joins and leaves of one topic are serialised.
    pub(crate) async fn join(&self, topic: &str, ws: &WebSocket, ack: Ack) -> Result<(), BrokerError> {
        let joined = self.inner.hub.join(topic, ws, ack, &*self.inner.broker).await;
        joined.inspect_err(|_| self.inner.hub.metrics.broker_error(metrics::BrokerOp::Subscribe))
    }

    /// The `history` of a topic: the latest `limit` publications (at most the history's size;
    /// by default its recovery limit), or those after `since` — the latest when `since` is of
    /// another epoch (it continues nothing kept).
    pub(crate) async fn history(
        &self,
        def: &ChannelDef,
        topic: &str,
        limit: Option<u64>,
        since: Option<&crate::protocol::Position>,
    ) -> Result<StreamRead, BrokerError> {
        let Some(history) = def.history else {
            return Err(BrokerError(format!("channel '{}' keeps no history", def.name)));
        };
        let limit = limit.map_or(history.recovery_limit, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let limit = limit.min(history.policy.size);
        match since {
            // One read when the epoch matches (the usual case), a second only when it does not.
            Some(since) => match self.read_stream(def, topic, Some(since.offset), limit).await {
                Ok(read) if read.position.epoch != since.epoch => self.read_stream(def, topic, None, limit).await,
                other => other,
            },
            None => self.read_stream(def, topic, None, limit).await,
        }
    }

    /// Reads a history topic's stream (see [`Broker::read_stream`]).
    pub(crate) async fn read_stream(
        &self,
        def: &ChannelDef,
        topic: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<StreamRead, BrokerError> {
        let Some(history) = def.history else {
            return Err(BrokerError(format!("channel '{}' keeps no history", def.name)));
        };
        let read = self.inner.broker.read_stream(topic, since, limit, history.policy).await;
        read.inspect_err(|_| self.inner.hub.metrics.broker_error(metrics::BrokerOp::History))
    }

    /// Removes `ws` from `topic`'s subscribers; the broker drops the topic with its last one.
    pub(crate) fn leave(&self, topic: &str, ws: &WebSocket) {
        self.inner.hub.leave(topic, ws.id(), &*self.inner.broker);
        self.presence_leave(topic, ws.id());
    }

    /// The client id of this node's connection `connection`: unique across the nodes that share
    /// a broker.
    pub(crate) fn client_id(&self, connection: u64) -> String {
        format!("{}-{connection}", self.inner.name)
    }

    /// Ends `user`'s subscriptions to `channel` on this node (the HTTP API's `unsubscribe`): its
    /// connections leave the topic and are told `unsubscribed` (without an id).
    pub(crate) fn unsubscribe_user(&self, user: &str, channel: &str) {
        let Some(def) = self.inner.channel(channel) else { return };
        let topic = def.topic_for(channel, "");
        for ws in self.inner.user_connections.of(user) {
            if self.inner.hub.has(&topic, ws.id()) {
                self.leave(&topic, &ws);
                let told = ServerMessage::Unsubscribed {
                    channel: channel.to_owned(),
                    id: None,
                    reason: Some(SERVER_UNSUBSCRIBED.to_owned()),
                };
                let _ = ws.send_text(told.encode());
            }
        }
    }

    /// A member as the wire shows it.
    pub(crate) fn presence_member(&self, member: &Member) -> PresenceMember {
        PresenceMember {
            client: self.client_id(member.connection),
            user: member.identity.user_id().to_owned(),
            info: member.identity.info().cloned(),
        }
    }

    /// A subscriber of a presence topic is a member.
    pub(crate) fn presence_join(
        &self,
        def: &ChannelDef,
        channel: &str,
        topic: &str,
        connection: u64,
        identity: Arc<crate::Identity>,
    ) {
        let Some(settings) = def.presence else { return };
        let params = match def.namespace {
            Some(_) => Value::Object(Default::default()),
            None => def.params_of_key(topic.split_once('#').map_or("", |(_, key)| key)),
        };
        let member = Member { connection, identity };
        if self.inner.broker.shares_presence() {
            let shared = presence::shared_member(&self.presence_member(&member), &self.inner.name);
            let client = self.client_id(connection);
            self.inner.presence_sync.add(&self.inner, topic, client, shared);
        }
        let presence = &self.inner.presence;
        if presence.join(topic, channel, &params, member, settings.join_leave) {
            self.schedule_diff(topic, settings.window);
        }
    }

    /// A member left (unsubscribed, or its connection ended).
    fn presence_leave(&self, topic: &str, connection: u64) {
        let Some(settings) = self.inner.channel_of_topic(topic).and_then(|def| def.presence) else {
            return;
        };
        if self.inner.broker.shares_presence() {
            self.inner
                .presence_sync
                .remove(&self.inner, topic, self.client_id(connection));
        }
        if self.inner.presence.leave(topic, connection, settings.join_leave) {
            self.schedule_diff(topic, settings.window);
        }
    }

    /// A page of `topic`'s members (every node's, with a broker that shares presence): at most
    /// `limit` (0: all) after `cursor`, and the cursor of the next page. `Err` is the text for
    /// the client.
    pub(crate) async fn presence_page(
        &self,
        topic: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<PresenceMember>, Option<String>), String> {
        let after = match cursor.map(str::parse::<u64>) {
            None => 0,
            Some(Ok(after)) => after,
            Some(Err(_)) => return Err(crate::protocol::text::INVALID_CURSOR.to_owned()),
        };
        if !self.inner.broker.shares_presence() {
            let page = self.inner.presence.list(topic, after, limit);
            let members = page.members.iter().map(|m| self.presence_member(m)).collect();
            return Ok((members, page.next.map(|next| next.to_string())));
        }
        // Shared: the cursor is a position in the join order.
        let all = self.shared_members(topic).await?;
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(all.len());
        let end = if limit == 0 {
            all.len()
        } else {
            start.saturating_add(limit).min(all.len())
        };
        let next = (end < all.len()).then(|| end.to_string());
        Ok((all[start..end].to_vec(), next))
    }

    /// `topic`'s member count and distinct non-empty users (every node's, with a broker that
    /// shares presence).
    pub(crate) async fn presence_counts(&self, topic: &str) -> Result<(u64, u64), String> {
        if !self.inner.broker.shares_presence() {
            let (clients, users) = self.inner.presence.stats(topic);
            return Ok((clients as u64, users as u64));
        }
        let all = self.shared_members(topic).await?;
        let mut users: Vec<&str> = all.iter().map(|m| m.user.as_str()).filter(|u| !u.is_empty()).collect();
        users.sort_unstable();
        users.dedup();
        Ok((all.len() as u64, users.len() as u64))
    }

    async fn shared_members(&self, topic: &str) -> Result<Vec<PresenceMember>, String> {
        let entries = self
            .inner
            .broker
            .presence_members(topic)
            .await
            .inspect_err(|_| self.inner.hub.metrics.broker_error(metrics::BrokerOp::Presence))
            .map_err(|err| err.to_string())?;
        Ok(entries
            .into_iter()
            .map(|(client, member)| presence::member_of_shared(client, &member))
            .collect())
    }

    /// After `window`, the joins and leaves of `topic` gathered meanwhile go to its subscribers
    /// (on every node: published through the broker) as one `presence_diff`.
    fn schedule_diff(&self, topic: &str, window: std::time::Duration) {
        let node = Arc::downgrade(&self.inner);
        let topic = topic.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            let Some(inner) = node.upgrade() else { return };
            let node = Node { inner };
            let Some((channel, params, diff)) = node.inner.presence.take_pending(&topic) else {
                return;
            };
            let joins = diff.joins.iter().map(|m| node.presence_member(m)).collect();
            let leaves = diff
                .leaves
                .into_iter()
                .map(|(connection, user)| PresenceMember {
                    client: node.client_id(connection),
                    user,
                    info: None,
                })
                .collect();
            let message = ServerMessage::PresenceDiff {
                channel: channel.to_string(),
                params,
                joins,
                leaves,
            };
            if let Err(err) = node.inner.broker.publish(&topic, Text::from(message.encode())).await {
                node.inner.hub.metrics.broker_error(metrics::BrokerOp::Publish);
                tracing::warn!(%topic, %err, "presence diff not published");
            }
        });
    }
}

/// The length of `value` as JSON text, without building the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a `Value` always serializes.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}
