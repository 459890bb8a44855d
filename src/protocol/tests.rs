//! PROTOCOL.md and this module cannot drift apart: every message example of the document parses
//! as the message it documents (`→` a client message, `←` a server message) and encodes back to
//! the same JSON.

use super::*;
use serde_json::{json, Value};

const PROTOCOL: &str = include_str!("../../PROTOCOL.md");

/// The `→ {…}` and `← {…}` lines of the document's ```json blocks.
fn examples() -> Vec<(bool, &'static str)> {
    let mut in_json = false;
    let mut found = Vec::new();
    for line in PROTOCOL.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_json = line == "```json";
            continue;
        }
        if !in_json {
            continue;
        }
        if let Some(message) = line.strip_prefix("→ ") {
            found.push((true, message));
        } else if let Some(message) = line.strip_prefix("← ") {
            found.push((false, message));
        }
    }
    found
}

#[test]
fn every_example_of_protocol_md_parses_and_encodes_back() {
    let examples = examples();
    let mut documented_kinds = std::collections::BTreeSet::new();
    for (from_client, text) in examples {
        let documented: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON: {text}: {e}"));
        let kind = documented["type"].as_str().unwrap_or_default().to_owned();
        documented_kinds.insert((from_client, kind));
        let encoded = if from_client {
            ClientMessage::parse(text)
                .unwrap_or_else(|e| panic!("not a client message: {text}: {}", e.message))
                .encode()
        } else {
            ServerMessage::parse(text)
                .unwrap_or_else(|e| panic!("not a server message: {text}: {e}"))
                .encode()
        };
        let encoded: Value = serde_json::from_str(&encoded).unwrap_or(Value::Null);
        assert_eq!(encoded, documented, "{text} encodes back differently");
    }
    // Every message type, in each direction it travels, has an example.
    let client = [
        "subscribe",
        "unsubscribe",
        "action",
        "open",
        "emit",
        "request",
        "reply",
        "close",
        "connect",
        "refresh",
        "presence",
        "presence_stats",
    ];
    let server = [
        "subscribed",
        "unsubscribed",
        "data",
        "action",
        "error",
        "opened",
        "history",
        "emit",
        "request",
        "reply",
        "close",
        "connected",
        "refreshed",
        "presence",
        "presence_stats",
        "presence_diff",
    ];
    let expected: std::collections::BTreeSet<(bool, String)> = client
        .iter()
        .map(|k| (true, k.to_string()))
        .chain(server.iter().map(|k| (false, k.to_string())))
        .collect();
    let missing: Vec<_> = expected.difference(&documented_kinds).collect();
    assert!(
        missing.is_empty(),
        "PROTOCOL.md has no example of {missing:?} (true: client → server)"
    );
}

#[test]
fn client_messages_are_checked_in_socketapi_order() {
    let error = |text: &str| ClientMessage::parse(text).err().map(|e| (e.message, e.channel, e.id));
    assert_eq!(error("[1]"), Some((text::NOT_AN_OBJECT.into(), None, None)));
    assert_eq!(error("{}"), Some((text::TYPE_REQUIRED.into(), None, None)));
    assert_eq!(
        error(r#"{"channel":"x","id":7}"#),
        Some((text::TYPE_REQUIRED.into(), None, Some(json!(7))))
    );
    assert_eq!(
        error(r#"{"type":0,"channel":"x"}"#),
        Some((text::TYPE_REQUIRED.into(), None, None))
    );
    // The channel is checked before the type.
    assert_eq!(
        error(r#"{"type":"nope","id":"a"}"#),
        Some((text::CHANNEL_REQUIRED.into(), None, Some(json!("a"))))
    );
    assert_eq!(
        error(r#"{"type":"nope","channel":""}"#),
        Some((text::CHANNEL_REQUIRED.into(), None, None))
    );
    assert_eq!(
        error(r#"{"type":5,"channel":"x"}"#),
        Some(("Unknown message type: 5.".into(), Some("x".into()), None))
    );
    assert_eq!(
        error(r#"{"type":"emit","channel":"x","id":1}"#),
        Some((text::EVENT_REQUIRED.into(), Some("x".into()), Some(json!(1))))
    );
}

#[test]
fn replies_keep_errors_and_null_payloads_apart() {
    let parsed = ClientMessage::parse(r#"{"type":"reply","channel":"c","id":1,"error":""}"#).ok();
    assert_eq!(
        parsed,
        Some(ClientMessage::Duplex(DuplexMessage::Reply {
            channel: "c".into(),
            id: json!(1),
            outcome: Err(String::new()),
        }))
    );
    let ok = DuplexMessage::Reply {
        channel: "c".into(),
        id: json!(2),
        outcome: Ok(Value::Null),
    };
    assert_eq!(ok.encode(), r#"{"type":"reply","channel":"c","payload":null,"id":2}"#);
    assert_eq!(ServerMessage::parse(&ok.encode()), Ok(ServerMessage::Duplex(ok)));
}

#[test]
fn publications_encode_without_absent_fields() {
    assert_eq!(
        ServerMessage::data_envelope("chat", &json!(0)).encode(),
        r#"{"type":"data","channel":"chat","data":0}"#
    );
    let error = ServerMessage::Error {
        channel: Some("x".into()),
        message: "Channel 'x' not found.".into(),
        id: None,
    };
    assert_eq!(
        error.encode(),
        r#"{"type":"error","channel":"x","message":"Channel 'x' not found."}"#
    );
}

#[test]
fn a_publication_head_completed_by_a_broker_is_the_typed_message() {
    let data = json!({ "text": "hi", "n": [1, 2] });
    let mut head = ServerMessage::data_envelope("feed", &data).encode();
    assert_eq!(head.pop(), Some('}'));
    let completed = format!("{head},\"offset\":18}}");
    let typed = ServerMessage::Data {
        channel: "feed".into(),
        data,
        offset: Some(18),
    };
    assert_eq!(completed, typed.encode());
    assert_eq!(ServerMessage::parse(&completed), Ok(typed));
}

mod fuzz {
    //! The decoder takes any text a client sends: it never panics, and what it accepts encodes
    //! back to a message it reads the same way.
    use super::super::{ClientMessage, ServerMessage};
    use proptest::prelude::*;

    /// JSON-ish text: objects with the protocol's keys and random values, and raw noise.
    fn message_text() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "type", "channel", "data", "id", "token", "recover", "since", "limit", "event", "payload", "error",
            "reason", "cursor",
        ]);
        let kind = prop::sample::select(vec![
            "subscribe",
            "unsubscribe",
            "action",
            "open",
            "emit",
            "request",
            "reply",
            "close",
            "history",
            "connect",
            "refresh",
            "presence",
            "presence_stats",
            "bogus",
        ]);
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            "[a-z0-9.#_-]{0,12}".prop_map(|s| format!("\"{s}\"")),
            Just("{\"offset\":3,\"epoch\":\"e\"}".to_owned()),
            Just("{}".to_owned()),
            Just("[1,2]".to_owned()),
        ];
        let object = (kind, prop::collection::vec((key, leaf), 0..6)).prop_map(|(kind, fields)| {
            let mut text = format!("{{\"type\":\"{kind}\"");
            for (key, value) in fields {
                text.push_str(&format!(",\"{key}\":{value}"));
            }
            text.push('}');
            text
        });
        prop_oneof![object, ".{0,64}"]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn client_messages_never_panic_and_round_trip(text in message_text()) {
            if let Ok(message) = ClientMessage::parse(&text) {
                let again = ClientMessage::parse(&message.encode());
                prop_assert_eq!(again.as_ref().ok(), Some(&message), "{} re-read differently", text);
            }
        }

        #[test]
        fn server_messages_never_panic(text in message_text()) {
            let _ = ServerMessage::parse(&text);
        }
    }
}
