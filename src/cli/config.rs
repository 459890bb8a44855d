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
//! compression = "on"               # permessage-deflate: "off" (default), "on", "context-takeover"
//! [auth]                           # and [proxy], [limits]: see identity.rs
//! hmac_secret = "change-me"
//! ```

use serde::Deserialize;
use std::path::Path;

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
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))
    }
}
