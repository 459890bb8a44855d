//! The wire protocol, as types. Every message of PROTOCOL.md is a variant of [`ClientMessage`]
//! (client → server) or [`ServerMessage`] (server → client); the messages of a bidirectional
//! channel, which travel both ways, are [`DuplexMessage`]. The server parses the first and encodes
//! the second; the Rust client does the opposite. Both go through one `Envelope`: the JSON object
//! with `type` and every field a message may carry, so a field is spelled in one place.
//!
//! `tests.rs` parses every JSON example of PROTOCOL.md as the message it documents and checks that
//! it encodes back to the same JSON: the document and this module cannot drift apart.

mod envelope;
mod message;
#[cfg(test)]
mod tests;
pub(crate) mod text;

pub(crate) use envelope::{Position, PresenceMember, Publication};
pub(crate) use message::{ActionStatus, ClientMessage, DuplexMessage, ServerMessage};
