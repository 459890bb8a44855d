//! Pub/sub channels: a name, typed parameters (some required at subscribe time), and an async
//! function that makes the data from the parameters.
//!
//! Subscribers are keyed by their subscribe-time parameters: broadcasting `notifications` for
//! `user_id: 123` reaches the clients that subscribed with `user_id: 123` and nobody else. A channel
//! with no subscribe-time parameters has one key, so every subscriber gets every broadcast.

use super::namespace::NamespaceRules;
use super::params::{from_params, InvalidParams};
use crate::broker::HistoryPolicy;
use crate::node::NodeInner;
use crate::PublishError;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

type DataFn<P> = Arc<dyn Fn(P) -> BoxFuture<'static, Result<Value, String>> + Send + Sync>;

/// A channel declaration, to add to a [`Router`](crate::Router).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use switchboard::{Channel, Router};
///
/// #[derive(Serialize, Deserialize)]
/// struct Notifications {
///     user_id: i64,
///     #[serde(default = "all")]
///     notification_type: String,
/// }
/// fn all() -> String { "all".into() }
///
/// let mut router = Router::new();
/// let notifications = router.channel(
///     Channel::new("notifications", |p: Notifications| async move {
///         Ok::<_, String>(serde_json::json!({"user_id": p.user_id, "type": p.notification_type, "notifications": []}))
///     })
///     .required_on_subscribe(["user_id"]),
/// );
/// // later, from any task: notifications.broadcast(Notifications { user_id: 123, notification_type: "alert".into() }).await
/// # let _ = notifications;
/// ```
pub struct Channel<P> {
    name: String,
    required: Vec<String>,
    default_response: bool,
    history: Option<History>,
    access: SubscribeAccess,
    presence: Option<PresenceSettings>,
    func: DataFn<P>,
}

/// A channel with presence: whether its subscribers are told joins and leaves, and over what
/// window they are coalesced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PresenceSettings {
    pub join_leave: bool,
    pub window: Duration,
}

impl PresenceSettings {
    /// Presence on (joins and leaves not told, a 100 ms window) unless it is already.
    pub fn turn_on(slot: &mut Option<Self>) -> &mut Self {
        slot.get_or_insert(PresenceSettings {
            join_leave: false,
            window: Duration::from_millis(100),
        })
    }
}

/// Who may subscribe to a channel beyond its parameter checks.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubscribeAccess {
    /// Keyed by the subscriber's user: this subscribe-time field is the connection's user id,
    /// whatever the client sends.
    pub user_field: Option<String>,
    /// A subscription token (`{"type":"subscribe","token":…}`) is required.
    pub token: bool,
    /// The node's subscribe proxy is asked.
    pub proxy: bool,
}

/// What a history channel keeps, and how much a recovery may replay.
#[derive(Debug, Clone, Copy)]
pub(crate) struct History {
    pub policy: HistoryPolicy,
    pub recovery_limit: usize,
}

impl<P> Channel<P>
where
    P: DeserializeOwned + Serialize + Send + 'static,
{
    /// A channel named `name` whose data is `func(params)`. An error returned by `func` rejects
    /// a subscription (its text is sent to the client) or fails a broadcast.
    ///
    /// Parameters that are not required at subscribe time should have serde defaults: at
    /// subscribe time only the required ones are given.
    pub fn new<F, Fut, T, E>(name: impl Into<String>, func: F) -> Self
    where
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Serialize,
        E: Display,
    {
        let func = Arc::new(func);
        Self {
            name: name.into(),
            required: Vec::new(),
            default_response: false,
            history: None,
            access: SubscribeAccess::default(),
            presence: None,
            func: Arc::new(move |params: P| {
                let fut = func(params);
                async move {
                    match fut.await {
                        Ok(data) => {
                            serde_json::to_value(data).map_err(|e| format!("could not serialize channel data: {e}"))
                        }
                        Err(err) => Err(err.to_string()),
                    }
                }
                .boxed()
            }),
        }
    }

    /// Fields that a client must give when subscribing; subscribers are keyed by them
    /// (SocketAPI's `RequiredOnSubscribe`).
    pub fn required_on_subscribe<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Keys the channel by the subscriber's user: the subscribe-time parameter `field` (a
    /// string field of `P`) is the authenticated user id of the connection, whatever the client
    /// sends, so each subscriber receives only its own user's publications; a broadcast names
    /// the user in `field`. Anonymous connections may not subscribe ("Permission denied").
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Inbox { user: String, #[serde(default)] text: String }
    /// let inbox = switchboard::Channel::new("inbox", |p: Inbox| async move { Ok::<_, String>(p.text) })
    ///     .keyed_by_user("user");
    /// // inbox_ref.broadcast(Inbox { user: "42".into(), text: "hi".into() }) reaches user 42 only.
    /// # let _ = inbox;
    /// ```
    pub fn keyed_by_user(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        if !self.required.contains(&field) {
            self.required.push(field.clone());
        }
        self.access.user_field = Some(field);
        self
    }

    /// Requires a subscription token: `{"type":"subscribe","channel":…,"token":JWT}` whose claims
    /// name the connection's user (`sub`), this channel (`channel`) and an expiry (`exp`), signed
    /// with the keys of the node's [`Jwt`](crate::Jwt). A missing or wrong token is refused with
    /// "Permission denied"; the connection stays.
    pub fn token_required(mut self) -> Self {
        self.access.token = true;
        self
    }

    /// Asks the node's subscribe proxy about every subscription (PROTOCOL.md, "Proxies"): the
    /// application's backend allows it or refuses it with its own message. Needs
    /// [`NodeBuilder::proxy`](crate::NodeBuilder::proxy) with a subscribe URL; without one,
    /// subscriptions are refused.
    pub fn subscribe_proxy(mut self) -> Self {
        self.access.proxy = true;
        self
    }

    /// Tracks who is in each topic (PROTOCOL.md, "Presence"): clients may ask `presence` (the
    /// members: client id, user, info) and `presence_stats` (counts) with the same checks as
    /// for subscribing.
    pub fn presence(mut self) -> Self {
        PresenceSettings::turn_on(&mut self.presence);
        self
    }

    /// Presence, and subscribers are told who joined and left (`presence_diff`), coalesced per
    /// topic over 100 ms (see [`join_leave_window`](Self::join_leave_window)).
    pub fn join_leave(mut self) -> Self {
        PresenceSettings::turn_on(&mut self.presence).join_leave = true;
        self
    }

    /// How long joins and leaves of one topic are gathered into one `presence_diff` (default
    /// 100 ms): longer windows mean fewer messages in busy rooms.
    pub fn join_leave_window(mut self, window: Duration) -> Self {
        if let Some(presence) = &mut self.presence {
            presence.window = window;
        }
        self
    }

    /// Send the channel's data right after a client subscribes (SocketAPI's `default_response`).
    pub fn default_response(mut self) -> Self {
        self.default_response = true;
        self
    }

    /// Keep history: the newest `size` publications of each topic (the channel plus its
    /// subscribe-time parameters), each at most `ttl`. Publications then carry offsets, and clients
    /// recover what they missed while disconnected (PROTOCOL.md, "History and recovery"). A
    /// recovery replays at most `size` publications unless [`recovery_limit`](Self::recovery_limit)
    /// says otherwise.
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Feed { #[serde(default)] text: String }
    /// let feed = switchboard::Channel::new("feed", |p: Feed| async move { Ok::<_, String>(p.text) })
    ///     .history(1000, Duration::from_secs(300));
    /// # let _ = feed;
    /// ```
    pub fn history(mut self, size: usize, ttl: Duration) -> Self {
        self.history = Some(History {
            policy: HistoryPolicy { size, ttl },
            recovery_limit: size,
        });
        self
    }

    /// The most publications one recovery may replay (default: the history size); a client that
    /// missed more is told `recovered: false`. Call after [`history`](Self::history).
    pub fn recovery_limit(mut self, limit: usize) -> Self {
        if let Some(history) = &mut self.history {
            history.recovery_limit = limit;
        }
        self
    }

    pub(crate) fn into_parts(self) -> (Arc<ChannelDef>, ChannelRef<P>) {
        let func = self.func.clone();
        let required = self.required.clone();
        let def = Arc::new(ChannelDef {
            name: self.name,
            required: self.required,
            default_response: self.default_response,
            history: self.history,
            access: self.access,
            presence: self.presence,
            namespace: None,
            node: OnceLock::new(),
            prepare: Box::new(move |params: Value| {
                let params: P = from_params(params)?;
                let key = key_of(&params, &required);
                Ok(Prepared {
                    key,
                    data: func(params),
                })
            }),
        });
        let handle = ChannelRef {
            def: def.clone(),
            func: self.func,
            _params: PhantomData,
        };
        (def, handle)
    }
}

/// A channel call ready to run: the subscriber key and the (lazy) data.
pub(crate) struct Prepared {
    pub key: String,
    pub data: BoxFuture<'static, Result<Value, String>>,
}

/// A declared channel, with its parameter type erased.
pub(crate) struct ChannelDef {
    pub name: String,
    pub required: Vec<String>,
    pub default_response: bool,
    pub history: Option<History>,
    pub access: SubscribeAccess,
    pub presence: Option<PresenceSettings>,
    /// A namespace's rules (the def stands for every channel of the namespace); `None` for a
    /// typed channel.
    pub namespace: Option<NamespaceRules>,
    /// Set when the router is mounted on a node.
    pub node: OnceLock<Weak<NodeInner>>,
    pub(super) prepare: Box<dyn Fn(Value) -> Result<Prepared, InvalidParams> + Send + Sync>,
}

impl ChannelDef {
    /// Validates `params` and prepares the call.
    pub fn prepare(&self, params: Value) -> Result<Prepared, InvalidParams> {
        (self.prepare)(params)
    }

    /// The subscribe-time parameters out of a client's `data`: only the required fields, all present.
    pub fn subscribe_params(&self, data: Option<&Value>) -> Result<Value, InvalidParams> {
        let empty = serde_json::Map::new();
        let given = match data {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(object)) => object,
            Some(_) => return Err(InvalidParams),
        };
        let mut params = serde_json::Map::new();
        for field in &self.required {
            let value = given.get(field).ok_or(InvalidParams)?;
            params.insert(field.clone(), value.clone());
        }
        Ok(Value::Object(params))
    }

    /// The subscribe-time parameters a key stands for, as an object (`{}` without any): how a
    /// `presence_diff` names its topic.
    pub fn params_of_key(&self, key: &str) -> Value {
        let values: Vec<Value> = serde_json::from_str(key).unwrap_or_default();
        let object = self.required.iter().cloned().zip(values).collect();
        Value::Object(object)
    }

    /// The hub topic of this channel for a subscriber key.
    pub fn topic(&self, key: &str) -> String {
        topic(&self.name, key)
    }

    /// The hub topic of the channel a client names `channel` (this def's name, or a channel of
    /// this namespace) with subscriber key `key`: a namespace channel's topic is its name.
    pub fn topic_for(&self, channel: &str, key: &str) -> String {
        match self.namespace {
            Some(_) => channel.to_owned(),
            None => topic(&self.name, key),
        }
    }
}

/// Topic names: the channel name alone, or `name#key` where the key is the JSON array of the
/// subscribe-time parameter values.
pub(crate) fn topic(channel: &str, key: &str) -> String {
    if key.is_empty() {
        channel.to_owned()
    } else {
        format!("{channel}#{key}")
    }
}

/// The subscriber key: the values of the required fields, taken from the *validated* parameters so
/// that equal values give equal keys however the client spelled them.
fn key_of<P: Serialize>(params: &P, required: &[String]) -> String {
    if required.is_empty() {
        return String::new();
    }
    let value = serde_json::to_value(params).unwrap_or(Value::Null);
    let values: Vec<&Value> = required.iter().map(|f| value.get(f).unwrap_or(&Value::Null)).collect();
    serde_json::to_string(&values).unwrap_or_default()
}

/// A handle to a declared channel, for broadcasting from in-process code: actions, background
/// tasks, other threads. Cheap to clone.
pub struct ChannelRef<P> {
    def: Arc<ChannelDef>,
    func: DataFn<P>,
    _params: PhantomData<fn(P)>,
}

impl<P> Clone for ChannelRef<P> {
    fn clone(&self) -> Self {
        Self {
            def: self.def.clone(),
            func: self.func.clone(),
            _params: PhantomData,
        }
    }
}

impl<P: Serialize + Send + 'static> ChannelRef<P> {
    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Calls the channel function with `params` and sends its result to every subscriber whose
    /// subscribe-time parameters match `params` (on every node, with a distributed broker). The
    /// data is serialized once; all subscribers share the bytes.
    pub async fn broadcast(&self, params: P) -> Result<(), PublishError> {
        let node = self
            .def
            .node
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| PublishError::NotMounted(self.def.name.clone()))?;
        let key = key_of(&params, &self.def.required);
        let data = (self.func)(params).await.map_err(PublishError::Failed)?;
        crate::node::Node::from_inner(node)
            .publish_data(&self.def, &self.def.name, &key, &data)
            .await
            .map(drop)
    }
}
