//! Namespaces: channels that need no Rust, configured by rules instead of declared one by one.
//!
//! A typed [`Channel`](crate::Channel) is one name with a parameter type and a function; a
//! namespace is a family of channels that carry opaque JSON: `chat:lobby` and `chat:random`
//! belong to the namespace `chat`, a channel without `:` to the default namespace `""`. This is
//! how `switchboard serve --config` serves backends in any language (Centrifugo's model): they
//! publish over HTTP, and the rules — history, presence, who may subscribe, what clients may do —
//! come from the configuration file.
//!
//! A namespace becomes a [`ChannelDef`] like a typed channel (so subscribing, history, recovery
//! and presence run the same code), with no subscribe-time parameters: the topic of a namespace
//! channel is its full name.

use super::channel::{ChannelDef, History, Prepared, PresenceSettings, SubscribeAccess};
use crate::broker::HistoryPolicy;
use futures_util::FutureExt;
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The most bytes a channel name may have.
pub(crate) const MAX_CHANNEL_NAME: usize = 255;

/// Who may subscribe to the channels of a [`Namespace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscribeRule {
    /// Any connection the node accepted (authenticated, or anonymous on a node that allows it).
    #[default]
    Any,
    /// A connection presenting a subscription token for the channel (`token` on `subscribe`;
    /// PROTOCOL.md, "Identity").
    Token,
    /// A connection the node's subscribe proxy allows (PROTOCOL.md, "Proxies").
    Proxy,
    /// Only the users the channel names after `#`: `inbox:mail#42` is user 42's,
    /// `chat:dm#1,2` users 1 and 2's (comma-separated).
    User,
}

impl std::str::FromStr for SubscribeRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "any" => Ok(Self::Any),
            "token" => Ok(Self::Token),
            "proxy" => Ok(Self::Proxy),
            "user" => Ok(Self::User),
            other => Err(format!(
                "unknown subscribe rule '{other}': expected \"any\", \"token\", \"proxy\" or \"user\""
            )),
        }
    }
}

/// What clients may do on a namespace's channels besides subscribing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NamespaceRules {
    pub client_publish: bool,
    pub client_history: bool,
    pub client_presence: bool,
    pub user_limited: bool,
    pub publish_proxy: bool,
    pub max_data_bytes: usize,
}

/// A family of channels configured by rules: `chat` configures `chat:lobby`, `chat:random`, …;
/// `""` configures the channels without `:`. Add it with [`Router::namespace`](crate::Router::namespace).
///
/// ```
/// use std::time::Duration;
/// use switchboard::{Namespace, Router, SubscribeRule};
///
/// let mut router = Router::new();
/// router.namespace(
///     Namespace::new("chat")
///         .history(100, Duration::from_secs(300))
///         .join_leave()
///         .subscribe(SubscribeRule::Any)
///         .client_publish(true),
/// );
/// ```
#[derive(Debug, Clone)]
pub struct Namespace {
    name: String,
    history: Option<History>,
    presence: Option<PresenceSettings>,
    subscribe: SubscribeRule,
    rules: NamespaceRules,
}

impl Namespace {
    /// The namespace `name` (`""`: channels without `:`): by default no history, no presence,
    /// anyone may subscribe, clients may not publish, and may read history and presence when the
    /// namespace keeps them.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            history: None,
            presence: None,
            subscribe: SubscribeRule::Any,
            rules: NamespaceRules {
                client_publish: false,
                client_history: true,
                client_presence: true,
                user_limited: false,
                publish_proxy: false,
                max_data_bytes: 65536,
            },
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Keep the newest `size` publications of each channel, each at most `ttl`: publications
    /// carry offsets and reconnecting clients recover what they missed (PROTOCOL.md, "History
    /// and recovery"). A `size` of 0 keeps none.
    pub fn history(mut self, size: usize, ttl: Duration) -> Self {
        self.history = (size > 0).then_some(History {
            policy: HistoryPolicy { size, ttl },
            recovery_limit: size,
        });
        self
    }

    /// Track who is in each channel (`presence`, `presence_stats`).
    pub fn presence(mut self) -> Self {
        PresenceSettings::turn_on(&mut self.presence);
        self
    }

    /// Presence, and subscribers are told joins and leaves (`presence_diff`, coalesced over 100 ms).
    pub fn join_leave(mut self) -> Self {
        PresenceSettings::turn_on(&mut self.presence).join_leave = true;
        self
    }

    /// How long joins and leaves are gathered into one `presence_diff` (default 100 ms).
    pub fn join_leave_window(mut self, window: Duration) -> Self {
        if let Some(presence) = &mut self.presence {
            presence.window = window;
        }
        self
    }

    /// Who may subscribe (default [`SubscribeRule::Any`]).
    pub fn subscribe(mut self, rule: SubscribeRule) -> Self {
        self.subscribe = rule;
        self
    }

    /// Whether clients may `publish` (default no). A client may publish where it may subscribe:
    /// any connection ([`SubscribeRule::Any`]), the users named by the channel
    /// ([`SubscribeRule::User`]), or, where a token or the proxy decides, a connection that is
    /// subscribed to the channel.
    pub fn client_publish(mut self, allowed: bool) -> Self {
        self.rules.client_publish = allowed;
        self
    }

    /// Asks the node's publish proxy about every client publication (PROTOCOL.md, "Proxies"): the
    /// backend allows it (and may replace its data) or refuses it with its own message. Needs
    /// [`Proxy::publish`](crate::Proxy::publish); without one, client publications are refused.
    pub fn publish_proxy(mut self, ask: bool) -> Self {
        self.rules.publish_proxy = ask;
        self
    }

    /// Whether clients may read the history with `history` (default yes; recovery on
    /// `subscribe` is not affected).
    pub fn client_history(mut self, allowed: bool) -> Self {
        self.rules.client_history = allowed;
        self
    }

    /// Whether clients may ask `presence` and `presence_stats` (default yes).
    pub fn client_presence(mut self, allowed: bool) -> Self {
        self.rules.client_presence = allowed;
        self
    }

    /// The largest publication `data` (as JSON text) accepted on the namespace's channels, from
    /// clients and from the HTTP API (default 64 KiB).
    pub fn max_data_bytes(mut self, bytes: usize) -> Self {
        self.rules.max_data_bytes = bytes;
        self
    }

    pub(crate) fn into_def(self) -> Arc<ChannelDef> {
        let access = SubscribeAccess {
            user_field: None,
            token: self.subscribe == SubscribeRule::Token,
            proxy: self.subscribe == SubscribeRule::Proxy,
        };
        let rules = NamespaceRules {
            user_limited: self.subscribe == SubscribeRule::User,
            ..self.rules
        };
        Arc::new(ChannelDef {
            name: self.name,
            required: Vec::new(),
            default_response: false,
            history: self.history,
            access,
            presence: self.presence,
            namespace: Some(rules),
            node: OnceLock::new(),
            prepare: Box::new(|_params: Value| {
                Ok(Prepared {
                    key: String::new(),
                    data: std::future::ready(Ok(Value::Null)).boxed(),
                })
            }),
        })
    }
}

/// The namespace a channel name belongs to: the part before its first `:`, or `""`.
pub(crate) fn namespace_of(channel: &str) -> &str {
    channel.split_once(':').map_or("", |(namespace, _)| namespace)
}

/// The users a channel of a [`SubscribeRule::User`] namespace names: after its last `#`,
/// comma-separated (none without `#`).
pub(crate) fn users_of(channel: &str) -> impl Iterator<Item = &str> {
    channel
        .rsplit_once('#')
        .map(|(_, users)| users)
        .unwrap_or_default()
        .split(',')
        .filter(|user| !user.is_empty())
}

/// Why a channel name is not acceptable, if it is not: empty, longer than 255 bytes, or with
/// control characters.
pub(crate) fn check_channel_name(channel: &str) -> Result<(), String> {
    if channel.is_empty() {
        return Err("Channel is required.".into());
    }
    if channel.len() > MAX_CHANNEL_NAME {
        return Err(format!("Channel name too long: at most {MAX_CHANNEL_NAME} bytes."));
    }
    if channel.chars().any(char::is_control) {
        return Err("Invalid channel name: control characters are not allowed.".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_users_of_channel_names() {
        assert_eq!(namespace_of("chat:lobby"), "chat");
        assert_eq!(namespace_of("chat:a:b"), "chat");
        assert_eq!(namespace_of("news"), "");
        assert_eq!(namespace_of(":x"), "");
        assert_eq!(users_of("inbox:mail#42").collect::<Vec<_>>(), ["42"]);
        assert_eq!(users_of("dm:x#1,2").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(users_of("dm:x#").count(), 0);
        assert_eq!(users_of("dm:x").count(), 0);
    }

    #[test]
    fn rules_parse_with_a_clear_error() {
        assert_eq!("user".parse::<SubscribeRule>(), Ok(SubscribeRule::User));
        let err = "everyone".parse::<SubscribeRule>().unwrap_err();
        assert!(err.contains("'everyone'") && err.contains("\"proxy\""), "{err}");
    }

    #[test]
    fn channel_names_are_checked() {
        assert!(check_channel_name("chat:lobby").is_ok());
        assert!(check_channel_name("").is_err());
        assert!(check_channel_name(&"x".repeat(256)).is_err());
        assert!(check_channel_name("a\nb").is_err());
    }
}
