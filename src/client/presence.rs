//! Presence as the Rust client reads it (PROTOCOL.md, "Presence"): the members of a topic (all
//! pages) and its counts.

use serde::Deserialize;
use serde_json::Value;

/// One member of a presence topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Member {
    /// Its connection's client id.
    pub client: String,
    /// Its user id (`""`: anonymous).
    pub user: String,
    /// Its identity's `info`, if any.
    #[serde(default)]
    pub info: Option<Value>,
}

/// The counts of a presence topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PresenceStats {
    /// Members (connections).
    pub clients: u64,
    /// Distinct non-empty user ids.
    pub users: u64,
}

/// One page of members, as the reader hands it over.
#[derive(Deserialize)]
pub(crate) struct Page {
    pub clients: Vec<Member>,
    pub cursor: Option<String>,
}
