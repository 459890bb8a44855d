//! `Subscription`: the data of one pub/sub channel, as a stream; and, for who wants them, the
//! events around it ([`SubscriptionEvent`]): each publication's offset, and each re-subscribe
//! after a reconnect with whether what was missed was recovered.

use super::history::Position;
use super::state::ClientState;
use super::ClientError;
use futures_util::Stream;
use serde_json::Value;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// What a [`Subscription`] receives, in the order it happened (see
/// [`Subscription::next_event`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// A publication: its data, and on a history channel its offset in the stream.
    Data {
        /// What was published.
        data: Value,
        /// Its offset, on a channel with history (`None` otherwise, and for a channel's
        /// `default_response`).
        offset: Option<u64>,
    },
    /// The connection dropped and the client subscribed again on the new one. Comes before
    /// every publication received on the new connection.
    ///
    /// * `recovered: true` — the channel keeps history and every publication made while the
    ///   client was away follows, in order, each once, then the live ones: nothing was lost.
    /// * `recovered: false` — the publications made meanwhile are lost: the channel keeps no
    ///   history, or they are no longer kept (trimmed by its size or `ttl`, more than its
    ///   recovery limit), or the stream's past is gone (a new epoch: say an in-memory server
    ///   restarted). The application refetches its state (e.g. with
    ///   [`Client::history`](super::Client::history)); publications after `position` follow.
    Resubscribed {
        /// Whether the publications missed while disconnected follow.
        recovered: bool,
        /// The stream's position when the subscription became live again (history channels):
        /// with `recovered: false`, where the live publications start.
        position: Option<Position>,
    },
}

/// A subscription to a pub/sub channel: yields each publication's `data`.
///
/// Dropping it unsubscribes (without waiting); [`unsubscribe`](Self::unsubscribe) waits for the
/// server's `unsubscribed`. The stream ends when the client is closed or when the server refuses
/// the subscription again after a reconnect.
///
/// # Reconnects and history
///
/// After a reconnect the client subscribes again by itself. On a channel with history
/// (PROTOCOL.md, "History and recovery") it remembers the offset of the last publication it
/// delivered and the stream's epoch, and asks the server to recover from there: the publications
/// made while it was away follow, then the live ones — each publication is yielded once, in
/// order; one at or before the last delivered is dropped. Whether that worked is reported by
/// [`next_event`](Self::next_event) as [`SubscriptionEvent::Resubscribed`], in its place among
/// the publications; the plain stream ([`next`](Self::next), the [`Stream`] impl) yields the data
/// only and skips it. [`position`](Self::position) is where the subscription is.
///
/// ```no_run
/// # async fn run(client: switchboard::client::Client) -> Result<(), switchboard::client::ClientError> {
/// use serde_json::json;
/// use switchboard::client::SubscriptionEvent;
///
/// let mut feed = client.subscribe("feed", json!({})).await?;
/// while let Some(event) = feed.next_event().await {
///     match event {
///         SubscriptionEvent::Data { data, offset } => println!("{offset:?}: {data}"),
///         SubscriptionEvent::Resubscribed { recovered: false, .. } => {
///             // Publications were missed: refetch the state.
///             let recent = client.history("feed", json!({}), Some(50), None).await?;
///             println!("{} recent publications", recent.publications.len());
///         }
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
///
/// # Sharing
///
/// Local subscriptions of one channel with the same parameters share one server subscription,
/// and so its position. Publications name only their channel, not the parameters subscribed
/// with, so every local subscription of a channel sees every publication the connection
/// receives on it; the server subscription of a channel is left when its last local
/// subscription goes. When one connection subscribes to a history channel with several sets of
/// parameters, the offsets of their streams cannot be told apart: their publications are all
/// delivered, without the check for duplicates, and they re-subscribe without recovery
/// (`recovered: false`).
pub struct Subscription {
    channel: String,
    id: u64,
    rx: mpsc::UnboundedReceiver<SubscriptionEvent>,
    client: Weak<ClientState>,
    active: bool,
}

impl Subscription {
    pub(crate) fn new(
        channel: String,
        id: u64,
        rx: mpsc::UnboundedReceiver<SubscriptionEvent>,
        client: Weak<ClientState>,
    ) -> Self {
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

    /// The next publication's data; `None` once the subscription has ended. Skips
    /// [`SubscriptionEvent::Resubscribed`] (see [`next_event`](Self::next_event)).
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let SubscriptionEvent::Data { data, .. } = self.rx.recv().await? {
                return Some(data);
            }
        }
    }

    /// A publication already received, without waiting.
    pub fn try_next(&mut self) -> Option<Value> {
        loop {
            if let SubscriptionEvent::Data { data, .. } = self.rx.try_recv().ok()? {
                return Some(data);
            }
        }
    }

    /// The next event: a publication with its offset, or a re-subscribe after a reconnect with
    /// whether the publications missed meanwhile follow ([`SubscriptionEvent`]). `None` once the
    /// subscription has ended. Events and data come from one queue: reading with
    /// [`next`](Self::next) skips the events it passes.
    pub async fn next_event(&mut self) -> Option<SubscriptionEvent> {
        self.rx.recv().await
    }

    /// An event already received, without waiting.
    pub fn try_next_event(&mut self) -> Option<SubscriptionEvent> {
        self.rx.try_recv().ok()
    }

    /// On a history channel, the position of the subscription: the offset of the last
    /// publication delivered (or, before the first, of the newest when it became live) and the
    /// stream's epoch. `None` on a channel without history, before the server confirmed, when
    /// the client is closed, and while it is unknown (see "Sharing" above). Publications already
    /// received but not read yet count as delivered.
    pub fn position(&self) -> Option<Position> {
        self.client.upgrade()?.position(&self.channel, self.id)
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
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(SubscriptionEvent::Data { data, .. })) => return Poll::Ready(Some(data)),
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
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
