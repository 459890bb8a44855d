//! The types of history channels (PROTOCOL.md, "History and recovery"), as the client sees them:
//! a place in a stream ([`Position`]), a kept publication ([`Publication`]), and the answer to
//! [`Client::history`](super::Client::history) ([`History`]).

use serde::Deserialize;
use serde_json::Value;

/// A place in a history channel's stream: the offset of a publication (or of the newest one) and
/// the stream's epoch, which changes whenever the stream's past was lost (an in-memory server
/// restarted, a Redis that lost its data, a stream idle past its `ttl`). Offsets of two epochs do
/// not compare.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Position {
    /// The offset: 1, 2, 3 … per stream (0 before the first publication).
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: String,
}

impl Position {
    pub(crate) fn from_wire(position: crate::protocol::Position) -> Self {
        Self {
            offset: position.offset,
            epoch: position.epoch,
        }
    }

    pub(crate) fn to_wire(&self) -> crate::protocol::Position {
        crate::protocol::Position {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.offset, self.epoch)
    }
}

/// One publication kept by a history channel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Publication {
    /// Its offset in the stream.
    pub offset: u64,
    /// What was published.
    pub data: Value,
}

/// The answer to [`Client::history`](super::Client::history): publications oldest first, and the
/// stream's position when it was read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct History {
    /// The publications, oldest first.
    pub publications: Vec<Publication>,
    /// The stream's position when it was read (its newest offset and its epoch). When it has
    /// another epoch than the `since` asked with, the publications do not continue that
    /// position: the stream's past was lost.
    pub position: Position,
}
