//! The control channel: commands that reach every node sharing a broker — disconnect a user,
//! end a user's subscription, and surveys (what each node holds: its counts, its channels).
//!
//! Control messages travel through the broker on one reserved topic, [`CONTROL_TOPIC`], like
//! publications: the node subscribes to it when it starts (so the Redis broker restores it after
//! an outage like any topic), and [`Delivery`](crate::Delivery) hands what arrives on it here
//! instead of to the hub. No broker needs to know about it. The topic's name has a control
//! character, which no client may put in a channel name, so no client can join or leave it.
//!
//! A survey asks every node and waits for as many answers as there are live nodes — every node
//! says it is alive on the channel every few seconds — or a second at most, then answers with
//! what came.

use super::{Node, NodeInner};
use crate::ws::Text;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The broker topic of control messages.
pub(crate) const CONTROL_TOPIC: &str = "\u{1}control";

/// How often a node says it is alive; a node not heard from for three times this is gone.
const ALIVE_EVERY: Duration = Duration::from_secs(3);

/// How long a survey waits for the answers of the nodes it knows.
const SURVEY_TIMEOUT: Duration = Duration::from_secs(1);

/// A command to every node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Command {
    /// Close every connection of `user` with `code` and `reason`.
    Disconnect { user: String, code: u16, reason: String },
    /// End `user`'s subscriptions to `channel` (the client is told `unsubscribed`).
    Unsubscribe { user: String, channel: String },
    /// The node `node` is alive.
    Alive { node: String },
    /// Node `from` asks every node `question`; answers go back with `id`.
    Survey { id: u64, from: String, question: Question },
    /// Node `node`'s answer to survey `id` of node `to`.
    Answer {
        id: u64,
        to: String,
        node: String,
        answer: Value,
    },
}

/// What a survey asks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Question {
    /// `{name, connections, subscriptions, channels, uptime}`.
    Info,
    /// `{channel: subscribers}` of every topic with local subscribers.
    Channels,
}

/// A node's side of the control channel.
pub(crate) struct Control {
    started: Instant,
    next_survey: AtomicU64,
    /// Surveys waiting for answers, by id.
    surveys: Mutex<HashMap<u64, mpsc::UnboundedSender<(String, Value)>>>,
    /// The nodes heard from, and when last.
    nodes: Mutex<HashMap<String, Instant>>,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            next_survey: AtomicU64::new(1),
            surveys: Mutex::default(),
            nodes: Mutex::default(),
        }
    }
}

impl Control {
    /// Seconds since the node started.
    pub(crate) fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Nodes heard from recently (this one included once it has heard itself).
    fn live_nodes(&self) -> usize {
        let mut nodes = self.nodes.lock();
        nodes.retain(|_, seen| seen.elapsed() < ALIVE_EVERY * 3);
        nodes.len()
    }

    fn seen(&self, node: &str) {
        let mut nodes = self.nodes.lock();
        match nodes.get_mut(node) {
            Some(seen) => *seen = Instant::now(),
            None => {
                nodes.insert(node.to_owned(), Instant::now());
            }
        }
    }
}

impl Node {
    /// Subscribes the node to the control topic and starts saying it is alive.
    pub(crate) fn start_control(&self) {
        let node = Arc::downgrade(&self.inner);
        let subscribed = self.inner.broker.subscribe(CONTROL_TOPIC);
        tokio::spawn(async move {
            if let Err(err) = subscribed.await {
                // The Redis broker keeps the subscription and restores it when Redis is back.
                tracing::warn!(%err, "control channel not subscribed yet");
            }
            let mut tick = tokio::time::interval(ALIVE_EVERY);
            loop {
                tick.tick().await;
                let Some(inner) = node.upgrade() else { return };
                let name = inner.name.clone();
                let _ = Node { inner }.send_control(&Command::Alive { node: name }).await;
            }
        });
    }

    /// Sends `command` to every node (this one included).
    pub(crate) async fn send_control(&self, command: &Command) -> Result<(), crate::BrokerError> {
        let text = serde_json::to_string(command).unwrap_or_default();
        self.inner.broker.publish(CONTROL_TOPIC, Text::from(text)).await
    }

    /// Asks every node `question`; their answers by node name.
    pub(crate) async fn survey(&self, question: Question) -> Result<Vec<(String, Value)>, crate::BrokerError> {
        let control = &self.inner.control;
        let id = control.next_survey.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        control.surveys.lock().insert(id, tx);
        let expected = control.live_nodes().max(1);
        let asked = self
            .send_control(&Command::Survey {
                id,
                from: self.inner.name.clone(),
                question,
            })
            .await;
        let mut answers = Vec::new();
        if asked.is_ok() {
            let deadline = tokio::time::Instant::now() + SURVEY_TIMEOUT;
            while answers.len() < expected {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(answer)) => answers.push(answer),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        control.surveys.lock().remove(&id);
        asked.map(|()| answers)
    }

    /// This node's answer to `question`.
    pub(crate) fn answer(&self, question: Question) -> Value {
        let inner = &self.inner;
        match question {
            Question::Info => serde_json::json!({
                "name": inner.name,
                "connections": inner.counters.connections.load(Ordering::Relaxed),
                "subscriptions": inner.hub.subscriptions.load(Ordering::Relaxed),
                "channels": inner.hub.topic_count(),
                "uptime": inner.control.uptime(),
            }),
            Question::Channels => {
                let counts: serde_json::Map<String, Value> = inner
                    .hub
                    .topic_counts()
                    .into_iter()
                    .map(|(topic, count)| (topic, Value::from(count)))
                    .collect();
                Value::Object(counts)
            }
        }
    }
}

/// Handles a control message that arrived from the broker.
pub(crate) fn handle(node: &Weak<NodeInner>, text: &str) {
    let Some(inner) = node.upgrade() else { return };
    let node = Node { inner };
    let command = match serde_json::from_str::<Command>(text) {
        Ok(command) => command,
        Err(err) => {
            tracing::warn!(%err, "ignoring a malformed control message");
            return;
        }
    };
    match command {
        Command::Disconnect { user, code, reason } => {
            for ws in node.inner.user_connections.of(&user) {
                tracing::info!(conn = ws.id(), %user, code, "disconnected through the API");
                let _ = ws.close(code, &reason);
            }
        }
        Command::Unsubscribe { user, channel } => node.unsubscribe_user(&user, &channel),
        Command::Alive { node: name } => node.inner.control.seen(&name),
        Command::Survey { id, from, question } => {
            let answer = node.answer(question);
            let reply = Command::Answer {
                id,
                to: from,
                node: node.inner.name.clone(),
                answer,
            };
            tokio::spawn(async move {
                if let Err(err) = node.send_control(&reply).await {
                    tracing::warn!(%err, "survey answer not sent");
                }
            });
        }
        Command::Answer {
            id,
            to,
            node: from,
            answer,
        } => {
            let control = &node.inner.control;
            control.seen(&from);
            if to == node.inner.name {
                if let Some(waiting) = control.surveys.lock().get(&id) {
                    let _ = waiting.send((from, answer));
                }
            }
        }
    }
}
