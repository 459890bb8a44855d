//! Presence in Redis: one hash per topic (`switchboard:presence:{TOPIC}`, field = client id,
//! value = the member's JSON with its node and join time) and one key per live node
//! (`switchboard:node:NAME`, expiring after the presence TTL unless the node renews it).
//!
//! Centrifugo refreshes every member's entry on a timer; here a member costs one `HSET` when it
//! joins and one `HDEL` when it leaves, and a node renews *one* key per TTL/3 however many members
//! it has. The entries of a node that died stop counting when its key expires (30 s by default);
//! the next read of the topic deletes them.

use super::redis::Shared;
use super::BrokerError;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

const PRESENCE_PREFIX: &str = "switchboard:presence:";
const NODE_PREFIX: &str = "switchboard:node:";
/// A topic's hash outlives its last join by a day at most (a topic whose members all died with
/// their node, and that nobody reads again, does not stay for ever).
const HASH_TTL_MS: u64 = 24 * 3600 * 1000;

fn presence_key(topic: &str) -> String {
    format!("{PRESENCE_PREFIX}{{{topic}}}")
}

impl Shared {
    pub(super) async fn presence_add(&self, topic: &str, client: &str, member: String) -> Result<(), BrokerError> {
        let mut connection = self.publisher().await?;
        let key = presence_key(topic);
        let result = redis::pipe()
            .hset(&key, client, member)
            .ignore()
            .pexpire(&key, HASH_TTL_MS as i64)
            .ignore()
            .query_async::<()>(&mut connection)
            .await;
        result.map_err(|err| self.command_failed(&err))
    }

    pub(super) async fn presence_remove(&self, topic: &str, client: &str) -> Result<(), BrokerError> {
        let mut connection = self.publisher().await?;
        let result = redis::cmd("HDEL")
            .arg(presence_key(topic))
            .arg(client)
            .query_async::<i64>(&mut connection)
            .await;
        result.map(|_| ()).map_err(|err| self.command_failed(&err))
    }

    pub(super) async fn presence_alive(&self, node: &str, ttl: Duration) -> Result<(), BrokerError> {
        let mut connection = self.publisher().await?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let result = redis::cmd("SET")
            .arg(format!("{NODE_PREFIX}{node}"))
            .arg(1)
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut connection)
            .await;
        result.map_err(|err| self.command_failed(&err))
    }

    /// Two round trips: the topic's hash, then which of its nodes are alive; the dead ones'
    /// entries are deleted on the way.
    pub(super) async fn presence_members(&self, topic: &str) -> Result<Vec<(String, String)>, BrokerError> {
        let mut connection = self.publisher().await?;
        let key = presence_key(topic);
        let entries: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .map_err(|err| self.command_failed(&err))?;
        // (at, client, member, node)
        let mut members: Vec<(u64, String, String, String)> = entries
            .into_iter()
            .map(|(client, member)| {
                let parsed: Value = serde_json::from_str(&member).unwrap_or(Value::Null);
                let node = parsed["node"].as_str().unwrap_or_default().to_owned();
                let at = parsed["at"].as_u64().unwrap_or(0);
                (at, client, member, node)
            })
            .collect();
        let mut nodes: Vec<String> = members.iter().map(|m| m.3.clone()).collect();
        nodes.sort();
        nodes.dedup();
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = nodes.iter().map(|n| format!("{NODE_PREFIX}{n}")).collect();
        let alive: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .map_err(|err| self.command_failed(&err))?;
        let dead: Vec<&String> = nodes
            .iter()
            .zip(&alive)
            .filter_map(|(node, alive)| alive.is_none().then_some(node))
            .collect();
        if !dead.is_empty() {
            let gone: Vec<&String> = members.iter().filter(|m| dead.contains(&&m.3)).map(|m| &m.1).collect();
            tracing::debug!(topic, nodes = ?dead, members = gone.len(), "presence of dead nodes removed");
            let _ = redis::cmd("HDEL")
                .arg(&key)
                .arg(&gone)
                .query_async::<i64>(&mut connection)
                .await;
            members.retain(|m| !dead.contains(&&m.3));
        }
        members.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(members
            .into_iter()
            .map(|(_, client, member, _)| (client, member))
            .collect())
    }
}
