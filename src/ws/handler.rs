//! The one trait that servers and clients implement to handle a WebSocket connection.

use super::{Text, WebSocket};
use bytes::Bytes;
use std::future::Future;

/// The close frame received from the peer, or the one this side sent when it ended the connection
/// because of a protocol error, a limit or a timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code (1000 normal, 1002 protocol error, 1009 too big, …); 1005 if the peer sent none,
    /// 1006 if the connection ended without a close frame.
    pub code: u16,
    /// The reason text, possibly empty.
    pub reason: String,
    /// True when the peer started the close.
    pub by_peer: bool,
}

/// The reason of the close a socket gets when it is cut off as a slow consumer (code 1008).
pub(super) const SLOW_CONSUMER_REASON: &str = "slow consumer: outbound queue over its limit";

impl CloseFrame {
    /// True for the close of a socket cut off because its peer did not read: its outbound queue
    /// went over [`Config::max_backpressure`](super::Config::max_backpressure). That close is
    /// `{ code: 1008, reason: "slow consumer: outbound queue over its limit", by_peer: false }`.
    pub fn is_slow_consumer(&self) -> bool {
        self.code == 1008 && !self.by_peer && self.reason == SLOW_CONSUMER_REASON
    }
}

/// Callbacks of one WebSocket connection, for servers and clients alike.
///
/// A connection calls its handler from one task, one event at a time and in order, so a handler
/// may keep per-connection state in `&mut self` without locks. A callback that waits delays the
/// next event of this connection only; work that must not hold up the connection belongs in a
/// spawned task, which can keep a clone of the [`WebSocket`].
///
/// Every method has a default, so a handler implements only what it needs. Implementations may
/// be written as `async fn`.
pub trait Handler: Send + 'static {
    /// The handshake completed; the connection is open.
    fn on_open(&mut self, ws: &WebSocket) -> impl Future<Output = ()> + Send {
        let _ = ws;
        async {}
    }

    /// A complete text message (fragments already joined, UTF-8 already validated).
    fn on_message(&mut self, ws: &WebSocket, text: Text) -> impl Future<Output = ()> + Send {
        let _ = (ws, text);
        async {}
    }

    /// A complete binary message.
    fn on_bytes(&mut self, ws: &WebSocket, data: Bytes) -> impl Future<Output = ()> + Send {
        let _ = (ws, data);
        async {}
    }

    /// A ping arrived. The protocol layer has already queued the pong that RFC 6455 requires,
    /// so the default does nothing more.
    fn on_ping(&mut self, ws: &WebSocket, data: Bytes) -> impl Future<Output = ()> + Send {
        let _ = (ws, data);
        async {}
    }

    /// A pong arrived (an answer to [`WebSocket::ping`], or an unsolicited heartbeat).
    fn on_pong(&mut self, ws: &WebSocket, data: Bytes) -> impl Future<Output = ()> + Send {
        let _ = (ws, data);
        async {}
    }

    /// The connection ended. Called exactly once, after which no other callback runs.
    fn on_close(&mut self, ws: &WebSocket, close: CloseFrame) -> impl Future<Output = ()> + Send {
        let _ = (ws, close);
        async {}
    }
}
