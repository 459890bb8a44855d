//! `Envelope`: one protocol message as its JSON object — `type` and the fields any message may
//! carry, each optional, absent fields omitted. Typed messages convert to and from it, so the
//! field names and their order on the wire are written once, here.
//!
//! It borrows when encoding (a publication is serialized straight from the caller's data, without
//! a copy) and owns when decoding.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, Value>>,
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
