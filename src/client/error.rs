//! Why a client operation failed.

use super::ServerClose;
use std::time::Duration;

/// Why a client operation failed.
///
/// The channel errors mirror the server's [`DuplexError`](crate::DuplexError): [`Timeout`],
/// [`Closed`] and [`Remote`] are distinct so callers can tell "nobody answered" from "it is gone"
/// from "the other side said no".
///
/// [`Timeout`]: ClientError::Timeout
/// [`Closed`]: ClientError::Closed
/// [`Remote`]: ClientError::Remote
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The first connection could not be made (bad URL, refused, handshake failed).
    #[error("could not connect: {0}")]
    Connect(String),
    /// No answer came within the timeout.
    #[error("{what} timed out after {timeout:?}")]
    Timeout {
        /// What was waited for, e.g. `request 'get' on channel 'chat'`.
        what: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The channel (or the whole client) is closed: by this side, by the server, or because the
    /// server refused to re-open it after a reconnect.
    #[error("channel '{0}' is closed")]
    Closed(String),
    /// The connection dropped while waiting for the answer (or there is no connection right now).
    /// The client reconnects by itself; the operation may be retried.
    #[error("the connection to the server was lost")]
    Disconnected,
    /// The channel is not open on the server at the moment (still opening, or being re-opened
    /// after a reconnect): wait with [`ClientChannel::ready`](super::ClientChannel::ready).
    #[error("channel '{0}' is not open yet")]
    NotOpen(String),
    /// The server answered with an error (its text, e.g. `Channel 'x' not found.` or `Denied`).
    #[error("{0}")]
    Remote(String),
    /// The server closed the connection with a code in 4500–4999 ("do not reconnect",
    /// [`NO_RECONNECT_CODES`](super::NO_RECONNECT_CODES)): the client is closed for good and every
    /// call fails with this error. The reason says why (e.g. an expired token): remove the cause,
    /// then connect a new [`Client`](super::Client).
    #[error("the server closed the connection for good ({0}): the client does not reconnect; remove the cause, then connect a new client")]
    ServerClosed(ServerClose),
    /// The payload could not be serialized to JSON.
    #[error("could not serialize the payload: {0}")]
    Encode(String),
}
