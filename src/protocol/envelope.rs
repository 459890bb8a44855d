//! `Envelope`: one protocol message as its JSON object — `type` and the fields any message may
//! carry, each optional, absent fields omitted. Typed messages convert to and from it, so the
//! field names and their order on the wire are written once, here.
//!
//! It borrows when encoding (a publication is serialized straight from the caller's data, without
//! a copy) and owns when decoding.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

/// A place in a topic's stream: the offset of a publication (or of the newest one) and the
/// stream's epoch, which changes whenever the stream's past was lost.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// One publication of a history reply.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Publication {
    pub offset: u64,
    pub data: Value,
}

/// One member of a presence reply or diff (a leave carries no `info`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct PresenceMember {
    pub client: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
pub(crate) struct Envelope<'a> {
    #[serde(rename = "type")]
    pub kind: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Cow<'a, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Cow<'a, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'a, str>>,
    // Identity (PROTOCOL.md, "Identity"): the token of `connect`, `refresh` and `subscribe`
    // comes before `id`; what `connected` and `refreshed` report comes after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    // History (PROTOCOL.md, "History and recovery"). `offset` comes right after `data` and `id`:
    // in a publication it is the last field, so a broker can append it to an encoded head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover: Option<Cow<'a, Position>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Cow<'a, Position>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publications: Option<Cow<'a, [Publication]>>,
    // Presence (PROTOCOL.md, "Presence"). `clients` is the member list of `presence` and the
    // count of `presence_stats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Cow<'a, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Cow<'a, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joins: Option<Cow<'a, [PresenceMember]>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaves: Option<Cow<'a, [PresenceMember]>>,
}

impl<'a> Envelope<'a> {
    pub fn new(kind: &'a str) -> Self {
        Self {
            kind: Cow::Borrowed(kind),
            ..Self::default()
        }
    }

    /// The JSON text. Serializing strings and `Value`s cannot fail.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `Some(&str)` → a borrowed field.
pub(crate) fn borrowed(s: Option<&str>) -> Option<Cow<'_, str>> {
    s.map(Cow::Borrowed)
}
