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

/// A live member list: the members of one presence topic, kept current from the topic's
/// `presence_diff`s and read again after every reconnect. From [`Client::watch_presence`](super::Client::watch_presence).
pub struct PresenceWatch {
    pub(crate) list: std::sync::Arc<LiveList>,
    changes: tokio::sync::watch::Receiver<u64>,
    /// Keeps the topic subscribed (diffs flow only to subscribers).
    _subscription: super::Subscription,
}

impl PresenceWatch {
    pub(crate) fn new(list: std::sync::Arc<LiveList>, subscription: super::Subscription) -> Self {
        let changes = list.changed.subscribe();
        Self {
            list,
            changes,
            _subscription: subscription,
        }
    }

    /// The members now, in the order they joined (as far as this client saw).
    pub fn members(&self) -> Vec<Member> {
        self.list.members.lock().clone()
    }

    /// Waits until the list changes; `false` once the client is gone.
    pub async fn changed(&mut self) -> bool {
        self.changes.changed().await.is_ok()
    }
}

impl std::fmt::Debug for PresenceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceWatch")
            .field("channel", &self.list.channel)
            .field("params", &self.list.params)
            .field("members", &self.list.members.lock().len())
            .finish()
    }
}

/// The shared state of a [`PresenceWatch`], also held (weakly) by the client's state.
pub(crate) struct LiveList {
    pub channel: String,
    pub params: Value,
    pub members: parking_lot::Mutex<Vec<Member>>,
    pub changed: tokio::sync::watch::Sender<u64>,
}

impl LiveList {
    pub fn new(channel: &str, params: &Value) -> Self {
        Self {
            channel: channel.to_owned(),
            params: params.clone(),
            members: parking_lot::Mutex::new(Vec::new()),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A fresh list from `presence`.
    pub fn replace(&self, members: Vec<Member>) {
        *self.members.lock() = members;
        self.bump();
    }

    /// A `presence_diff`: joins add (or replace, by client id), leaves remove; applying one twice
    /// changes nothing more.
    pub fn apply(&self, joins: Vec<Member>, leaves: &[String]) {
        {
            let mut members = self.members.lock();
            members.retain(|m| !leaves.contains(&m.client));
            for join in joins {
                match members.iter_mut().find(|m| m.client == join.client) {
                    Some(known) => *known = join,
                    None => members.push(join),
                }
            }
        }
        self.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(client: &str) -> Member {
        Member {
            client: client.into(),
            user: String::new(),
            info: None,
        }
    }

    #[test]
    fn diffs_apply_idempotently() {
        let list = LiveList::new("room", &json!({"room": "a"}));
        list.replace(vec![member("1"), member("2")]);
        list.apply(vec![member("3")], &["1".to_owned()]);
        list.apply(vec![member("3")], &["1".to_owned()]);
        let clients: Vec<String> = list.members.lock().iter().map(|m| m.client.clone()).collect();
        assert_eq!(clients, ["2", "3"]);
    }
}
