//! The wire protocol: SocketAPI's JSON messages, plus compatible extensions (request ids, the
//! channel on errors, bidirectional channels). PROTOCOL.md is the reference; this file is its code.

use serde::Serialize;
use serde_json::{Map, Value};

/// SocketAPI's error texts, kept word for word: clients match on them.
pub(crate) mod text {
    pub const TYPE_REQUIRED: &str = "Message type is required.";
    pub const CHANNEL_REQUIRED: &str = "Channel is required.";
    pub const NOT_AN_OBJECT: &str = "Invalid message: expected a JSON object.";
    pub const BINARY_UNSUPPORTED: &str = "Binary messages are not supported: send JSON text.";
    pub fn unknown_type(t: &str) -> String {
        format!("Unknown message type: {t}.")
    }
    pub fn channel_not_found(c: &str) -> String {
        format!("Channel '{c}' not found.")
    }
    pub fn action_not_found(a: &str) -> String {
        format!("Action '{a}' not found.")
    }
    pub fn invalid_params(name: &str) -> String {
        format!("Invalid parameters for action '{name}'")
    }
}

/// One message from a client, with the fields every message type may carry.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub kind: String,
    pub channel: Option<String>,
    pub data: Option<Value>,
    pub id: Option<Value>,
    pub event: Option<String>,
    pub payload: Value,
    pub error: Option<String>,
    pub reason: Option<String>,
}

/// Why an inbound text could not be read as a message; the reply carries the id when one was found.
pub(crate) struct Malformed {
    pub message: String,
    pub id: Option<Value>,
}

impl Inbound {
    /// Reads a client message. Like SocketAPI, a falsy `type` is "required" and any other
    /// non-string `type` is unknown.
    pub fn parse(text: &str) -> Result<Self, Malformed> {
        let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(text) else {
            return Err(Malformed {
                message: text::NOT_AN_OBJECT.into(),
                id: None,
            });
        };
        let id = object.remove("id").filter(|id| !id.is_null());
        let kind = match object.remove("type") {
            Some(Value::String(kind)) => kind,
            Some(other) if truthy(&other) => other.to_string(),
            _ => String::new(),
        };
        if kind.is_empty() {
            return Err(Malformed {
                message: text::TYPE_REQUIRED.into(),
                id,
            });
        }
        Ok(Self {
            kind,
            channel: take_string(&mut object, "channel"),
            data: object.remove("data"),
            id,
            event: take_string(&mut object, "event"),
            payload: object.remove("payload").unwrap_or(Value::Null),
            // An empty error text is still an error.
            error: object.remove("error").and_then(|v| v.as_str().map(str::to_owned)),
            reason: take_string(&mut object, "reason"),
        })
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn take_string(object: &mut Map<String, Value>, key: &str) -> Option<String> {
    match object.remove(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// A message to a client. Fields left `None` are omitted.
#[derive(Serialize, Default, Debug)]
pub(crate) struct Outbound<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Value>,
}

impl Outbound<'_> {
    pub fn encode(&self) -> String {
        // Serializing borrowed strings and `Value`s cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `{"type":"error","message":…}` with the channel and id when known.
pub(crate) fn error(message: &str, channel: Option<&str>, id: Option<&Value>) -> String {
    Outbound {
        kind: "error",
        message: Some(message),
        channel,
        id,
        ..Default::default()
    }
    .encode()
}

/// `{"type":"data","channel":…,"data":…}`: a publication, encoded once for all its subscribers.
pub(crate) fn data(channel: &str, data: &Value) -> String {
    Outbound {
        kind: "data",
        channel: Some(channel),
        data: Some(data),
        ..Default::default()
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reports_socketapi_errors() {
        assert_eq!(
            Inbound::parse("[1]").err().map(|e| e.message),
            Some(text::NOT_AN_OBJECT.to_owned())
        );
        assert_eq!(
            Inbound::parse("{}").err().map(|e| e.message),
            Some(text::TYPE_REQUIRED.to_owned())
        );
        let missing = Inbound::parse(r#"{"channel":"x","id":7}"#)
            .err()
            .map(|e| (e.message, e.id));
        assert_eq!(missing, Some((text::TYPE_REQUIRED.to_owned(), Some(Value::from(7)))));
    }

    #[test]
    fn outbound_omits_absent_fields() {
        assert_eq!(
            error("Channel 'x' not found.", Some("x"), None),
            r#"{"type":"error","channel":"x","message":"Channel 'x' not found."}"#
        );
        assert_eq!(
            data("chat", &Value::from(0)),
            r#"{"type":"data","channel":"chat","data":0}"#
        );
    }
}
