//! Declaring what a node serves: pub/sub channels (`channel.rs`) with typed parameters
//! (`params.rs`), actions (`action.rs`), and routes for bidirectional channels, grouped in a
//! [`Router`] and mounted together on a node (SocketAPI's `Router` / `include_router`).

mod action;
mod channel;
mod namespace;
mod params;

pub(crate) use action::ActionDef;
pub(crate) use channel::ChannelDef;
pub use channel::{Channel, ChannelRef};
pub(crate) use namespace::{check_channel_name, namespace_of, users_of};
pub use namespace::{Namespace, SubscribeRule};

use crate::duplex::Duplex;
use crate::session::Connection;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

/// A set of channels and actions.
///
/// ```
/// use switchboard::{Channel, Router};
/// #[derive(serde::Deserialize)]
/// struct Add { a: i64, b: i64 }
///
/// let mut math = Router::new();
/// math.action("add", |p: Add| async move { Ok::<_, String>(p.a + p.b) });
/// let mut app = Router::new();
/// app.merge(math);
/// ```
#[derive(Default)]
pub struct Router {
    pub(crate) channels: Vec<Arc<ChannelDef>>,
    pub(crate) namespaces: Vec<Arc<ChannelDef>>,
    pub(crate) actions: Vec<Arc<ActionDef>>,
    pub(crate) routes: Vec<Arc<RouteDef>>,
    pub(crate) on_connect: Vec<ConnectHook>,
    pub(crate) authorizers: Vec<Authorizer>,
}

pub(crate) type ConnectHook = Arc<dyn Fn(Connection) -> BoxFuture<'static, ()> + Send + Sync>;
pub(crate) type Authorizer = Arc<dyn Fn(&Access<'_>) -> bool + Send + Sync>;

type AcceptFn = Box<dyn Fn(Duplex, Value) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A route for bidirectional channels that clients open by name.
pub(crate) struct RouteDef {
    pub name: String,
    pub accept: AcceptFn,
}

/// What the authorization hook sees of an inbound event or request.
#[derive(Debug)]
pub struct Access<'a> {
    /// The connection it came on.
    pub connection: &'a Connection,
    /// The channel id.
    pub channel: &'a str,
    /// The event name.
    pub event: &'a str,
    /// The payload.
    pub payload: &'a Value,
    /// True for a request (which expects a reply), false for an event.
    pub is_request: bool,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a channel; returns the handle to broadcast on it once the router is mounted.
    pub fn channel<P>(&mut self, channel: Channel<P>) -> ChannelRef<P>
    where
        P: DeserializeOwned + Serialize + Send + 'static,
    {
        let (def, handle) = channel.into_parts();
        self.channels.push(def);
        handle
    }

    /// Declares a namespace: channels that carry opaque JSON, configured by rules (`chat`
    /// configures `chat:lobby`, `chat:random`, …). Typed channels are looked up first: a channel
    /// name declared with [`channel`](Self::channel) is never a namespace channel. A second
    /// namespace of the same name replaces the first.
    pub fn namespace(&mut self, namespace: Namespace) -> &mut Self {
        self.namespaces.push(namespace.into_def());
        self
    }

    /// Declares an action: `func` gets the validated parameters; its result is the reply's `data`,
    /// its error the reply's error text.
    pub fn action<P, F, Fut, T, E>(&mut self, name: impl Into<String>, func: F) -> &mut Self
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Serialize,
        E: Display,
    {
        self.actions.push(Arc::new(ActionDef::new(name.into(), func)));
        self
    }

    /// Declares a route for bidirectional channels: a client's `open` of `name` runs `accept` with
    /// the new channel and the client's parameters. `accept` sets up handlers and returns `Ok` to
    /// accept, or an error whose text refuses the open.
    ///
    /// ```
    /// use switchboard::Router;
    /// let mut router = Router::new();
    /// router.route("echo", |channel, _params| async move {
    ///     let reply_to = channel.clone();
    ///     channel.on_sync("say", move |payload| { let _ = reply_to.emit("said", payload); })?;
    ///     Ok::<_, switchboard::DuplexError>(())
    /// });
    /// ```
    pub fn route<F, Fut, E>(&mut self, name: impl Into<String>, accept: F) -> &mut Self
    where
        F: Fn(Duplex, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let accept = move |channel, params| accept(channel, params).map(|r| r.map_err(|e| e.to_string())).boxed();
        self.routes.push(Arc::new(RouteDef {
            name: name.into(),
            accept: Box::new(accept),
        }));
        self
    }

    /// Runs `hook` for every new connection, e.g. to open server-side channels on it with
    /// [`Connection::open_channel`].
    pub fn on_connect<F, Fut>(&mut self, hook: F) -> &mut Self
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connect
            .push(Arc::new(move |connection| hook(connection).boxed()));
        self
    }

    /// The authorization hook (Pulse's channel middleware): sees every inbound event and request
    /// on bidirectional channels and returns false to deny it. A denied request gets the error
    /// reply `Denied`; a denied event is dropped and logged. With several hooks, all must allow.
    pub fn authorize<F>(&mut self, hook: F) -> &mut Self
    where
        F: Fn(&Access<'_>) -> bool + Send + Sync + 'static,
    {
        self.authorizers.push(Arc::new(hook));
        self
    }

    /// Adds everything declared in `other`.
    pub fn merge(&mut self, other: Router) -> &mut Self {
        self.channels.extend(other.channels);
        self.namespaces.extend(other.namespaces);
        self.actions.extend(other.actions);
        self.routes.extend(other.routes);
        self.on_connect.extend(other.on_connect);
        self.authorizers.extend(other.authorizers);
        self
    }
}
