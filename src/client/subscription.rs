//! `Subscription`: the data of one pub/sub channel, as a stream.

use super::state::ClientState;
use super::ClientError;
use futures_util::Stream;
use serde_json::Value;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A subscription to a pub/sub channel: yields each publication's `data`.
///
/// Dropping it unsubscribes (without waiting); [`unsubscribe`](Self::unsubscribe) waits for the
/// server's `unsubscribed`. The stream ends when the client is closed or when the server refuses
/// the subscription again after a reconnect.
///
/// Publications name only their channel, not the parameters subscribed with, so every local
/// subscription of a channel sees every publication the connection receives on it; the server
/// subscription of a channel is left when its last local subscription goes.
pub struct Subscription {
    channel: String,
    id: u64,
    rx: mpsc::UnboundedReceiver<Value>,
    client: Weak<ClientState>,
    active: bool,
}

impl Subscription {
    pub(crate) fn new(channel: String, id: u64, rx: mpsc::UnboundedReceiver<Value>, client: Weak<ClientState>) -> Self {
        Self {
            channel,
            id,
            rx,
            client,
            active: true,
        }
    }

    /// Drops it without telling anyone (the server refused it; it is already removed locally).
    pub(crate) fn discard(mut self) {
        self.active = false;
    }

    /// The channel's name.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next publication's data; `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<Value> {
        self.rx.recv().await
    }

    /// A publication already received, without waiting.
    pub fn try_next(&mut self) -> Option<Value> {
        self.rx.try_recv().ok()
    }

    /// Unsubscribes and waits for the server to confirm (when this was the channel's last local
    /// subscription; otherwise only the local subscription ends).
    pub async fn unsubscribe(mut self) -> Result<(), ClientError> {
        self.active = false;
        let Some(client) = self.client.upgrade() else {
            return Ok(());
        };
        match client.remove_sub(&self.channel, self.id) {
            Some(message) => {
                let what = format!("unsubscribe from '{}'", self.channel);
                client
                    .call(message, client.config.request_timeout, what)
                    .await
                    .map(drop)
            }
            None => Ok(()),
        }
    }
}

impl Stream for Subscription {
    type Item = Value;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        if let Some(client) = self.client.upgrade() {
            if let Some(message) = client.remove_sub(&self.channel, self.id) {
                // Not connected: nothing to leave on the server (it is not restored either).
                let _ = client.send(&message);
            }
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.channel)
            .field("id", &self.id)
            .finish()
    }
}
