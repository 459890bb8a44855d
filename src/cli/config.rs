//! `serve`'s settings: flags override the TOML file, which overrides the defaults.
//!
//! ```toml
//! bind = "127.0.0.1:8000"
//! broker = "memory"                # or "redis://127.0.0.1:6379"
//! broadcast_allowed_hosts = ["127.0.0.1", "::1", "localhost"]
//! broadcast_token = "change-me"    # optional
//! ticker_interval_ms = 1000
//! max_message_size = 1048576
//! max_backpressure = 4194304
//! ping_interval_secs = 30
//! idle_timeout_secs = 75
//! handshake_timeout_secs = 10
//! drain_timeout_secs = 10          # on SIGTERM/Ctrl-C: wait this long at most for connections to end
//! drain_window_ms = 2000           # spread the WebSocket closes (1001) over this long (past 100)
//! allowed_origins = ["https://app.example.com"]
//! presence_ttl_secs = 30           # Redis broker: how long a dead node's members still count
//! api_key = "change-me"            # the server HTTP API's key (also --api-key, SWITCHBOARD_API_KEY)
//! admin_password = "change-me"     # turns on /admin (also --admin-password)
//! demo = false                     # the demo channels and page (default: on without [[namespace]])
//! compression = "on"               # permessage-deflate: "off" (default), "on", "context-takeover"
//! [auth]                           # and [proxy], [limits]: see identity.rs
//! hmac_secret = "change-me"
//! [[namespace]]                    # channels chat:* ("" configures channels without ':')
//! name = "chat"
//! history_size = 100               # 0 = no history
//! history_ttl_secs = 300
//! presence = true
//! join_leave = true
//! subscribe = "any"                # "any" | "token" | "proxy" | "user"
//! client_publish = true
//! client_history = true
//! client_presence = true
//! publish_proxy = false            # true: [proxy] publish is asked about client publications
//! max_data_bytes = 65536
//! ```
//!
//! `switchboard.toml` at the repository's root has every key, with comments.

use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use switchboard::{Namespace, SubscribeRule};
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<String>,
    pub broker: Option<String>,
    pub broadcast_allowed_hosts: Option<Vec<String>>,
    pub broadcast_token: Option<String>,
    pub ticker_interval_ms: Option<u64>,
    pub max_message_size: Option<usize>,
    pub max_backpressure: Option<usize>,
    pub ping_interval_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub handshake_timeout_secs: Option<u64>,
    pub drain_timeout_secs: Option<u64>,
    pub drain_window_ms: Option<u64>,
    pub allowed_origins: Option<Vec<String>>,
    pub presence_ttl_secs: Option<u64>,
    pub compression: Option<String>,
    #[serde(default)]
    pub auth: super::identity::AuthSection,
    #[serde(default)]
    pub proxy: super::identity::ProxySection,
    #[serde(default)]
    pub limits: super::identity::LimitsSection,
    pub api_key: Option<String>,
    pub admin_password: Option<String>,
    pub demo: Option<bool>,
    #[serde(default)]
    pub namespace: Vec<NamespaceSection>,
    /// The file's text, for the line numbers of errors found after parsing.
    #[serde(skip)]
    pub source: String,
    #[serde(skip)]
    pub path: String,
}

/// What the identity settings provide that namespaces may need.
#[derive(Debug, Clone, Copy)]
pub struct Requirements {
    pub token_keys: bool,
    pub subscribe_proxy: bool,
    pub publish_proxy: bool,
}

/// One `[[namespace]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSection {
    pub name: Spanned<String>,
    #[serde(default)]
    pub history_size: usize,
    pub history_ttl_secs: Option<Spanned<u64>>,
    #[serde(default)]
    pub presence: bool,
    #[serde(default)]
    pub join_leave: bool,
    pub join_leave_window_ms: Option<u64>,
    pub subscribe: Option<Spanned<Subscribe>>,
    #[serde(default)]
    pub client_publish: bool,
    pub publish_proxy: Option<Spanned<bool>>,
    #[serde(default = "yes")]
    pub client_history: bool,
    #[serde(default = "yes")]
    pub client_presence: bool,
    pub max_data_bytes: Option<usize>,
}

fn yes() -> bool {
    true
}

/// `subscribe = "any" | "token" | "proxy" | "user"`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subscribe {
    #[default]
    Any,
    Token,
    Proxy,
    User,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let mut config: FileConfig =
            toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))?;
        config.source = text;
        config.path = path.display().to_string();
        Ok(config)
    }

    /// An error about the value at byte `at` of the file: `invalid config PATH: line N: …`.
    fn error_at(&self, at: usize, message: String) -> String {
        let line = self.source[..at.min(self.source.len())].matches('\n').count() + 1;
        format!("invalid config {}: line {line}: {message}", self.path)
    }

    /// The `[[namespace]]`s, checked: names unique and valid, values consistent, and what a
    /// rule needs configured (`token`: keys to verify tokens; `proxy`: a subscribe proxy).
    pub fn namespaces(&self, proxies: Requirements) -> Result<Vec<Namespace>, String> {
        let Requirements {
            token_keys: has_token_keys,
            subscribe_proxy: has_subscribe_proxy,
            publish_proxy: has_publish_proxy,
        } = proxies;
        let mut seen = std::collections::HashMap::new();
        let mut namespaces = Vec::new();
        for section in &self.namespace {
            let name = section.name.get_ref();
            let at = section.name.span().start;
            if let Some(first) = seen.insert(name.clone(), at) {
                let first_line = self.source[..first].matches('\n').count() + 1;
                return Err(self.error_at(
                    at,
                    format!("namespace '{name}' is declared twice (first on line {first_line}): names must be unique"),
                ));
            }
            if name.contains([':', '#']) || name.chars().any(char::is_control) || name.len() > 64 {
                return Err(self.error_at(
                    at,
                    format!("invalid namespace name '{name}': at most 64 characters, without ':', '#' or control characters"),
                ));
            }
            let mut namespace = Namespace::new(name.clone());
            if section.history_size > 0 {
                let ttl = section.history_ttl_secs.as_ref().map_or(300, |t| *t.get_ref());
                if ttl == 0 {
                    let at = section.history_ttl_secs.as_ref().map_or(at, |t| t.span().start);
                    return Err(self.error_at(
                        at,
                        "history_ttl_secs must be at least 1 when history_size is set (0 keeps no history: set history_size = 0)".into(),
                    ));
                }
                namespace = namespace.history(section.history_size, Duration::from_secs(ttl));
            }
            if section.presence {
                namespace = namespace.presence();
            }
            if section.join_leave {
                namespace = namespace.join_leave();
            }
            if let Some(ms) = section.join_leave_window_ms {
                namespace = namespace.join_leave_window(Duration::from_millis(ms));
            }
            let subscribe_at = section.subscribe.as_ref().map_or(at, |s| s.span().start);
            let rule = match section.subscribe.as_ref().map_or(Subscribe::Any, |s| *s.get_ref()) {
                Subscribe::Any => SubscribeRule::Any,
                Subscribe::Token if !has_token_keys => {
                    return Err(self.error_at(
                        subscribe_at,
                        format!("namespace '{name}': subscribe = \"token\" needs keys to verify subscription tokens: set [auth] hmac_secret, rsa_public_key, ec_public_key or jwks_url"),
                    ))
                }
                Subscribe::Token => SubscribeRule::Token,
                Subscribe::Proxy if !has_subscribe_proxy => {
                    return Err(self.error_at(
                        subscribe_at,
                        format!("namespace '{name}': subscribe = \"proxy\" needs the subscribe proxy: set [proxy] subscribe = URL"),
                    ))
                }
                Subscribe::Proxy => SubscribeRule::Proxy,
                Subscribe::User => SubscribeRule::User,
            };
            namespace = namespace
                .subscribe(rule)
                .client_publish(section.client_publish)
                .client_history(section.client_history)
                .client_presence(section.client_presence);
            if let Some(ask) = &section.publish_proxy {
                if *ask.get_ref() && !has_publish_proxy {
                    return Err(self.error_at(
                        ask.span().start,
                        format!("namespace '{name}': publish_proxy = true needs the publish proxy: set [proxy] publish = URL"),
                    ));
                }
                namespace = namespace.publish_proxy(*ask.get_ref());
            }
            if let Some(bytes) = section.max_data_bytes {
                namespace = namespace.max_data_bytes(bytes);
            }
            namespaces.push(namespace);
        }
        Ok(namespaces)
    }
}
