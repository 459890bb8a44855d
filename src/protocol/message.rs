//! The typed messages: what a client sends ([`ClientMessage`]), what the server sends
//! ([`ServerMessage`]), and the messages of a bidirectional channel, which go both ways
//! ([`DuplexMessage`]). Each encodes through [`Envelope`]; each is parsed back by the side that
//! receives it.

use super::envelope::{borrowed, Envelope, Position, PresenceMember, Publication};
use super::text;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// A message from a client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClientMessage {
    /// Join a pub/sub channel; `data` holds the subscribe-time parameters. On a history channel,
    /// `recover` asks for the publications after that position.
    Subscribe {
        channel: String,
        data: Option<Value>,
        id: Option<Value>,
        recover: Option<Position>,
        /// A subscription token, for channels that require one.
        token: Option<String>,
    },
    /// Read a history channel's stream: the latest `limit`, or those after `since`.
    History {
        channel: String,
        data: Option<Value>,
        id: Option<Value>,
        limit: Option<u64>,
        since: Option<Position>,
        /// A subscription token, for channels that require one.
        token: Option<String>,
    },
    /// Leave one subscription (with its parameters in `data`) or all of a channel.
    Unsubscribe {
        channel: String,
        data: Option<Value>,
        id: Option<Value>,
    },
    /// Publish `data` on a channel of a namespace that lets clients publish.
    Publish {
        channel: String,
        data: Option<Value>,
        id: Option<Value>,
    },
    /// Call an action with the parameters in `data`.
    Action {
        channel: String,
        data: Option<Value>,
        id: Option<Value>,
    },
    /// Open a bidirectional channel through the route `channel`.
    Open {
        channel: String,
        data: Option<Value>,
        id: Option<Value>,
    },
    /// A message on an open bidirectional channel.
    Duplex(DuplexMessage),
    /// The members of a presence topic: all, or a page (`limit`, after `cursor`).
    Presence {
        channel: String,
        data: Option<Value>,
        id: Option<Value>,
        limit: Option<u64>,
        cursor: Option<String>,
        token: Option<String>,
    },
    /// The member and user counts of a presence topic.
    PresenceStats {
        channel: String,
        data: Option<Value>,
        id: Option<Value>,
        token: Option<String>,
    },
    /// Authenticate the connection: with a token, or with `data` (and the handshake's cookies)
    /// for the connect proxy.
    Connect {
        token: Option<String>,
        data: Option<Value>,
        id: Option<Value>,
    },
    /// Present a new token before the current one expires.
    Refresh { token: String, id: Option<Value> },
}

/// A message of a bidirectional channel, in either direction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DuplexMessage {
    /// A fire-and-forget event. `id` only labels an error reply (e.g. the channel is not open).
    Emit {
        channel: String,
        event: String,
        payload: Value,
        id: Option<Value>,
    },
    /// A request; the other side answers with a [`DuplexMessage::Reply`] carrying the same `id`.
    Request {
        channel: String,
        event: String,
        payload: Value,
        id: Value,
    },
    /// The answer to a request: its payload, or an error text.
    Reply {
        channel: String,
        id: Value,
        outcome: Result<Value, String>,
    },
    /// The channel is closed by the side that sends this.
    Close { channel: String, reason: Option<String> },
}

/// The only status of an `action` reply (SocketAPI's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionStatus {
    Completed,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ServerMessage {
    /// The subscription is live: every later publication on it is delivered. On a history
    /// channel `position` is the stream's position when it became live (every publication with a
    /// greater offset follows), and `recovered` answers a `recover`.
    Subscribed {
        channel: String,
        id: Option<Value>,
        position: Option<Position>,
        recovered: Option<bool>,
    },
    /// The answer to `unsubscribe` (sent even when there was no such subscription), or, with a
    /// `reason`, the server ended the subscription (the HTTP API's `unsubscribe`).
    Unsubscribed {
        channel: String,
        id: Option<Value>,
        reason: Option<String>,
    },
    /// The answer to `publish`: the publication was accepted; `offset` on a history channel.
    Published {
        channel: String,
        id: Option<Value>,
        offset: Option<u64>,
    },
    /// A publication (or a channel's `default_response`); `offset` on a history channel.
    Data {
        channel: String,
        data: Value,
        offset: Option<u64>,
    },
    /// The answer to `history`: publications oldest first, and the stream's position.
    History {
        channel: String,
        id: Option<Value>,
        publications: Vec<Publication>,
        position: Position,
    },
    /// An action's result; `data` is absent when the action returned nothing.
    Action {
        channel: String,
        status: ActionStatus,
        data: Option<Value>,
        id: Option<Value>,
    },
    /// A refusal or a failure, with the channel and id of the message it answers when known.
    Error {
        channel: Option<String>,
        message: String,
        id: Option<Value>,
    },
    /// A bidirectional channel is open: the answer to `open` (with its id), or opened by the
    /// server itself (without).
    Opened { channel: String, id: Option<Value> },
    /// A message on an open bidirectional channel.
    Duplex(DuplexMessage),
    /// The connection is authenticated (the answer to `connect`, or sent on its own after a
    /// handshake with `?token=`): its client id, its user, and the seconds before its
    /// credentials expire.
    Connected {
        id: Option<Value>,
        client: String,
        user: String,
        expires_in: Option<u64>,
    },
    /// The answer to `refresh`: the new token is in force.
    Refreshed { id: Option<Value>, expires_in: Option<u64> },
    /// The answer to `presence`: members, and the cursor of the next page when there is one.
    Presence {
        channel: String,
        id: Option<Value>,
        clients: Vec<PresenceMember>,
        cursor: Option<String>,
    },
    /// The answer to `presence_stats`.
    PresenceStats {
        channel: String,
        id: Option<Value>,
        clients: u64,
        users: u64,
    },
    /// Who joined and left a presence topic (named by `params`).
    PresenceDiff {
        channel: String,
        params: Value,
        joins: Vec<PresenceMember>,
        leaves: Vec<PresenceMember>,
    },
}

/// A client message that could not be read; [`ParseError::into_reply`] is the error to send back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParseError {
    pub message: String,
    pub channel: Option<String>,
    pub id: Option<Value>,
}

impl ParseError {
    fn new(message: impl Into<String>, channel: Option<String>, id: Option<Value>) -> Self {
        Self {
            message: message.into(),
            channel,
            id,
        }
    }

    /// The `error` message that answers the unreadable one.
    pub fn into_reply(self) -> ServerMessage {
        ServerMessage::Error {
            channel: self.channel,
            message: self.message,
            id: self.id,
        }
    }
}

impl ClientMessage {
    /// Reads a client message, with SocketAPI's checks in SocketAPI's order: a JSON object, then a
    /// `type` (a falsy one is "required", any other non-string one is unknown), then a `channel`
    /// (for every type), then the type itself. A `null` id is no id.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(text) else {
            return Err(ParseError::new(text::NOT_AN_OBJECT, None, None));
        };
        let id = object.remove("id").filter(|id| !id.is_null());
        let kind = match object.remove("type") {
            Some(Value::String(kind)) => kind,
            Some(other) if truthy(&other) => other.to_string(),
            _ => String::new(),
        };
        if kind.is_empty() {
            return Err(ParseError::new(text::TYPE_REQUIRED, None, id));
        }
        // The identity messages name no channel.
        match kind.as_str() {
            "connect" => {
                let token = match token(&mut object) {
                    Ok(token) => token,
                    Err(message) => return Err(ParseError::new(message, None, id)),
                };
                let data = object.remove("data").filter(|data| !data.is_null());
                return Ok(ClientMessage::Connect { token, data, id });
            }
            "refresh" => {
                return match token(&mut object) {
                    Ok(Some(token)) => Ok(ClientMessage::Refresh { token, id }),
                    Ok(None) => Err(ParseError::new(text::TOKEN_REQUIRED, None, id)),
                    Err(message) => Err(ParseError::new(message, None, id)),
                }
            }
            _ => {}
        }
        let Some(channel) = take_string(&mut object, "channel") else {
            return Err(ParseError::new(text::CHANNEL_REQUIRED, None, id));
        };
        let data = object.remove("data");
        Ok(match kind.as_str() {
            "subscribe" => {
                let recover = match position(&mut object, "recover") {
                    Ok(recover) => recover,
                    Err(message) => return Err(ParseError::new(message, Some(channel), id)),
                };
                let token = match token(&mut object) {
                    Ok(token) => token,
                    Err(message) => return Err(ParseError::new(message, Some(channel), id)),
                };
                ClientMessage::Subscribe {
                    channel,
                    data,
                    id,
                    recover,
                    token,
                }
            }
            "history" => {
                let since = match position(&mut object, "since") {
                    Ok(since) => since,
                    Err(message) => return Err(ParseError::new(message, Some(channel), id)),
                };
                let limit = match object.remove("limit") {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
                    Some(_) => return Err(ParseError::new(text::INVALID_LIMIT, Some(channel), id)),
                };
                let token = match token(&mut object) {
                    Ok(token) => token,
                    Err(message) => return Err(ParseError::new(message, Some(channel), id)),
                };
                ClientMessage::History {
                    channel,
                    data,
                    id,
                    limit,
                    since,
                    token,
                }
            }
            "presence" | "presence_stats" => {
                let token = match token(&mut object) {
                    Ok(token) => token,
                    Err(message) => return Err(ParseError::new(message, Some(channel), id)),
                };
                if kind == "presence_stats" {
                    ClientMessage::PresenceStats {
                        channel,
                        data,
                        id,
                        token,
                    }
                } else {
                    let limit = match object.remove("limit") {
                        None | Some(Value::Null) => None,
                        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
                        Some(_) => return Err(ParseError::new(text::INVALID_LIMIT, Some(channel), id)),
                    };
                    let cursor = match object.remove("cursor") {
                        None | Some(Value::Null) => None,
                        Some(Value::String(cursor)) => Some(cursor),
                        Some(_) => return Err(ParseError::new(text::INVALID_CURSOR, Some(channel), id)),
                    };
                    ClientMessage::Presence {
                        channel,
                        data,
                        id,
                        limit,
                        cursor,
                        token,
                    }
                }
            }
            "unsubscribe" => ClientMessage::Unsubscribe { channel, data, id },
            "publish" => ClientMessage::Publish { channel, data, id },
            "action" => ClientMessage::Action { channel, data, id },
            "open" => ClientMessage::Open { channel, data, id },
            "emit" | "request" => {
                let Some(event) = take_string(&mut object, "event") else {
                    return Err(ParseError::new(text::EVENT_REQUIRED, Some(channel), id));
                };
                let payload = object.remove("payload").unwrap_or(Value::Null);
                ClientMessage::Duplex(if kind == "emit" {
                    DuplexMessage::Emit {
                        channel,
                        event,
                        payload,
                        id,
                    }
                } else {
                    DuplexMessage::Request {
                        channel,
                        event,
                        payload,
                        id: id.unwrap_or(Value::Null),
                    }
                })
            }
            "reply" => {
                // An empty error text is still an error.
                let outcome = match object.remove("error") {
                    Some(Value::String(error)) => Err(error),
                    _ => Ok(object.remove("payload").unwrap_or(Value::Null)),
                };
                ClientMessage::Duplex(DuplexMessage::Reply {
                    channel,
                    id: id.unwrap_or(Value::Null),
                    outcome,
                })
            }
            "close" => ClientMessage::Duplex(DuplexMessage::Close {
                channel,
                reason: take_string(&mut object, "reason"),
            }),
            other => return Err(ParseError::new(text::unknown_type(other), Some(channel), id)),
        })
    }

    /// Labels the message with `id` (a call's answer carries it back).
    pub fn set_id(&mut self, new: Value) {
        match self {
            ClientMessage::Subscribe { id, .. }
            | ClientMessage::History { id, .. }
            | ClientMessage::Unsubscribe { id, .. }
            | ClientMessage::Publish { id, .. }
            | ClientMessage::Action { id, .. }
            | ClientMessage::Open { id, .. }
            | ClientMessage::Connect { id, .. }
            | ClientMessage::Refresh { id, .. }
            | ClientMessage::Presence { id, .. }
            | ClientMessage::PresenceStats { id, .. }
            | ClientMessage::Duplex(DuplexMessage::Emit { id, .. }) => *id = Some(new),
            ClientMessage::Duplex(DuplexMessage::Request { id, .. } | DuplexMessage::Reply { id, .. }) => *id = new,
            ClientMessage::Duplex(DuplexMessage::Close { .. }) => {}
        }
    }

    /// The message as its envelope (borrowing from it).
    pub fn envelope(&self) -> Envelope<'_> {
        match self {
            ClientMessage::Subscribe {
                channel,
                data,
                id,
                recover,
                token,
            } => Envelope {
                recover: recover.as_ref().map(Cow::Borrowed),
                token: borrowed(token.as_deref()),
                ..call("subscribe", channel, data.as_ref(), id.as_ref())
            },
            ClientMessage::History {
                channel,
                data,
                id,
                limit,
                since,
                token,
            } => Envelope {
                limit: *limit,
                since: since.as_ref().map(Cow::Borrowed),
                token: borrowed(token.as_deref()),
                ..call("history", channel, data.as_ref(), id.as_ref())
            },
            ClientMessage::Unsubscribe { channel, data, id } => {
                call("unsubscribe", channel, data.as_ref(), id.as_ref())
            }
            ClientMessage::Publish { channel, data, id } => call("publish", channel, data.as_ref(), id.as_ref()),
            ClientMessage::Action { channel, data, id } => call("action", channel, data.as_ref(), id.as_ref()),
            ClientMessage::Open { channel, data, id } => call("open", channel, data.as_ref(), id.as_ref()),
            ClientMessage::Duplex(message) => message.envelope(),
            ClientMessage::Connect { token, data, id } => Envelope {
                token: borrowed(token.as_deref()),
                data: data.as_ref().map(Cow::Borrowed),
                id: id.as_ref().map(Cow::Borrowed),
                ..Envelope::new("connect")
            },
            ClientMessage::Refresh { token, id } => Envelope {
                token: Some(Cow::Borrowed(token)),
                id: id.as_ref().map(Cow::Borrowed),
                ..Envelope::new("refresh")
            },
            ClientMessage::Presence {
                channel,
                data,
                id,
                limit,
                cursor,
                token,
            } => Envelope {
                limit: *limit,
                cursor: borrowed(cursor.as_deref()),
                token: borrowed(token.as_deref()),
                ..call("presence", channel, data.as_ref(), id.as_ref())
            },
            ClientMessage::PresenceStats {
                channel,
                data,
                id,
                token,
            } => Envelope {
                token: borrowed(token.as_deref()),
                ..call("presence_stats", channel, data.as_ref(), id.as_ref())
            },
        }
    }

    /// The JSON text to send.
    pub fn encode(&self) -> String {
        self.envelope().encode()
    }

    /// The channel the message names (none for `connect` and `refresh`) and its id: what an
    /// error reply to it carries.
    pub fn channel_and_id(&self) -> (Option<&str>, Option<&Value>) {
        match self {
            ClientMessage::Subscribe { channel, id, .. }
            | ClientMessage::History { channel, id, .. }
            | ClientMessage::Unsubscribe { channel, id, .. }
            | ClientMessage::Publish { channel, id, .. }
            | ClientMessage::Action { channel, id, .. }
            | ClientMessage::Open { channel, id, .. }
            | ClientMessage::Presence { channel, id, .. }
            | ClientMessage::PresenceStats { channel, id, .. }
            | ClientMessage::Duplex(DuplexMessage::Emit { channel, id, .. }) => (Some(channel), id.as_ref()),
            ClientMessage::Duplex(
                DuplexMessage::Request { channel, id, .. } | DuplexMessage::Reply { channel, id, .. },
            ) => (Some(channel), Some(id)),
            ClientMessage::Duplex(DuplexMessage::Close { channel, .. }) => (Some(channel), None),
            ClientMessage::Connect { id, .. } | ClientMessage::Refresh { id, .. } => (None, id.as_ref()),
        }
    }
}

/// `{"type":KIND,"channel":…,"data":…,"id":…}`: the shape of every call of a client, and of the
/// answers to them.
fn call<'a>(kind: &'a str, channel: &'a str, data: Option<&'a Value>, id: Option<&'a Value>) -> Envelope<'a> {
    Envelope {
        channel: Some(Cow::Borrowed(channel)),
        data: data.map(Cow::Borrowed),
        id: id.map(Cow::Borrowed),
        ..Envelope::new(kind)
    }
}

impl DuplexMessage {
    /// The channel the message is on.
    pub fn channel(&self) -> &str {
        match self {
            DuplexMessage::Emit { channel, .. }
            | DuplexMessage::Request { channel, .. }
            | DuplexMessage::Reply { channel, .. }
            | DuplexMessage::Close { channel, .. } => channel,
        }
    }

    /// The message as its envelope (borrowing from it).
    pub fn envelope(&self) -> Envelope<'_> {
        match self {
            DuplexMessage::Emit {
                channel,
                event,
                payload,
                id,
            } => event_envelope("emit", channel, event, payload, id.as_ref()),
            DuplexMessage::Request {
                channel,
                event,
                payload,
                id,
            } => event_envelope("request", channel, event, payload, Some(id)),
            DuplexMessage::Reply { channel, id, outcome } => Envelope {
                channel: Some(Cow::Borrowed(channel)),
                payload: outcome.as_ref().ok().map(Cow::Borrowed),
                error: outcome.as_ref().err().map(|e| Cow::Borrowed(e.as_str())),
                id: Some(Cow::Borrowed(id)),
                ..Envelope::new("reply")
            },
            DuplexMessage::Close { channel, reason } => Envelope {
                channel: Some(Cow::Borrowed(channel)),
                reason: borrowed(reason.as_deref()),
                ..Envelope::new("close")
            },
        }
    }

    /// The JSON text to send.
    pub fn encode(&self) -> String {
        self.envelope().encode()
    }

    /// The duplex message of an envelope of type `emit`, `request`, `reply` or `close`.
    fn from_envelope(envelope: Envelope<'static>) -> Result<Self, String> {
        let channel = envelope.channel.map(Cow::into_owned).unwrap_or_default();
        let payload = envelope.payload.map(Cow::into_owned).unwrap_or(Value::Null);
        let id = envelope.id.map(Cow::into_owned);
        let event = envelope.event.map(Cow::into_owned).unwrap_or_default();
        Ok(match envelope.kind.as_ref() {
            "emit" => DuplexMessage::Emit {
                channel,
                event,
                payload,
                id,
            },
            "request" => DuplexMessage::Request {
                channel,
                event,
                payload,
                id: id.unwrap_or(Value::Null),
            },
            "reply" => DuplexMessage::Reply {
                channel,
                id: id.unwrap_or(Value::Null),
                outcome: match envelope.error {
                    Some(error) => Err(error.into_owned()),
                    None => Ok(payload),
                },
            },
            "close" => DuplexMessage::Close {
                channel,
                reason: envelope.reason.map(Cow::into_owned),
            },
            other => return Err(format!("unknown message type '{other}'")),
        })
    }
}

/// An `emit` or a `request`: an event with its payload, and an id.
fn event_envelope<'a>(
    kind: &'a str,
    channel: &'a str,
    event: &'a str,
    payload: &'a Value,
    id: Option<&'a Value>,
) -> Envelope<'a> {
    Envelope {
        event: Some(Cow::Borrowed(event)),
        payload: Some(Cow::Borrowed(payload)),
        ..call(kind, channel, None, id)
    }
}

impl ServerMessage {
    /// `{"type":"data","channel":…,"data":…}` borrowing the publication's data: a publication is
    /// encoded once, straight from the caller's value.
    pub fn data_envelope<'a>(channel: &'a str, data: &'a Value) -> Envelope<'a> {
        Envelope {
            channel: Some(Cow::Borrowed(channel)),
            data: Some(Cow::Borrowed(data)),
            ..Envelope::new("data")
        }
    }

    /// The message as its envelope (borrowing from it).
    pub fn envelope(&self) -> Envelope<'_> {
        match self {
            ServerMessage::Subscribed {
                channel,
                id,
                position,
                recovered,
            } => Envelope {
                recovered: *recovered,
                ..with_position(call("subscribed", channel, None, id.as_ref()), position.as_ref())
            },
            ServerMessage::History {
                channel,
                id,
                publications,
                position,
            } => Envelope {
                publications: Some(Cow::Borrowed(publications)),
                ..with_position(call("history", channel, None, id.as_ref()), Some(position))
            },
            ServerMessage::Unsubscribed { channel, id, reason } => Envelope {
                reason: borrowed(reason.as_deref()),
                ..call("unsubscribed", channel, None, id.as_ref())
            },
            ServerMessage::Published { channel, id, offset } => Envelope {
                offset: *offset,
                ..call("published", channel, None, id.as_ref())
            },
            ServerMessage::Opened { channel, id } => call("opened", channel, None, id.as_ref()),
            ServerMessage::Data { channel, data, offset } => Envelope {
                offset: *offset,
                ..Self::data_envelope(channel, data)
            },
            ServerMessage::Action {
                channel,
                status: ActionStatus::Completed,
                data,
                id,
            } => Envelope {
                status: Some(Cow::Borrowed("completed")),
                data: data.as_ref().map(Cow::Borrowed),
                ..call("action", channel, None, id.as_ref())
            },
            ServerMessage::Error { channel, message, id } => Envelope {
                channel: borrowed(channel.as_deref()),
                message: Some(Cow::Borrowed(message)),
                id: id.as_ref().map(Cow::Borrowed),
                ..Envelope::new("error")
            },
            ServerMessage::Duplex(message) => message.envelope(),
            ServerMessage::Connected {
                id,
                client,
                user,
                expires_in,
            } => Envelope {
                id: id.as_ref().map(Cow::Borrowed),
                client: Some(Cow::Borrowed(client)),
                user: Some(Cow::Borrowed(user)),
                expires_in: *expires_in,
                ..Envelope::new("connected")
            },
            ServerMessage::Refreshed { id, expires_in } => Envelope {
                id: id.as_ref().map(Cow::Borrowed),
                expires_in: *expires_in,
                ..Envelope::new("refreshed")
            },
            ServerMessage::Presence {
                channel,
                id,
                clients,
                cursor,
            } => Envelope {
                clients: Some(Cow::Owned(serde_json::to_value(clients).unwrap_or_default())),
                cursor: borrowed(cursor.as_deref()),
                ..call("presence", channel, None, id.as_ref())
            },
            ServerMessage::PresenceStats {
                channel,
                id,
                clients,
                users,
            } => Envelope {
                clients: Some(Cow::Owned(Value::from(*clients))),
                users: Some(*users),
                ..call("presence_stats", channel, None, id.as_ref())
            },
            ServerMessage::PresenceDiff {
                channel,
                params,
                joins,
                leaves,
            } => Envelope {
                channel: Some(Cow::Borrowed(channel)),
                params: Some(Cow::Borrowed(params)),
                joins: Some(Cow::Borrowed(joins)),
                leaves: Some(Cow::Borrowed(leaves)),
                ..Envelope::new("presence_diff")
            },
        }
    }

    /// The JSON text to send.
    pub fn encode(&self) -> String {
        self.envelope().encode()
    }

    /// Reads a server message (the client's side). Unknown types and malformed messages are an
    /// error naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let envelope: Envelope<'static> =
            serde_json::from_str(text).map_err(|err| format!("not a server message: {err}"))?;
        let channel = envelope.channel.clone().map(Cow::into_owned);
        let id = envelope.id.clone().map(Cow::into_owned);
        let named = || {
            channel
                .clone()
                .ok_or_else(|| format!("'{}' without a channel", envelope.kind))
        };
        Ok(match envelope.kind.as_ref() {
            "subscribed" => ServerMessage::Subscribed {
                channel: named()?,
                id,
                position: stream_position(&envelope),
                recovered: envelope.recovered,
            },
            "history" => ServerMessage::History {
                channel: named()?,
                id,
                position: stream_position(&envelope).ok_or_else(|| "'history' without offset and epoch".to_owned())?,
                publications: envelope.publications.clone().map(Cow::into_owned).unwrap_or_default(),
            },
            "unsubscribed" => ServerMessage::Unsubscribed {
                channel: named()?,
                id,
                reason: envelope.reason.clone().map(Cow::into_owned),
            },
            "published" => ServerMessage::Published {
                channel: named()?,
                id,
                offset: envelope.offset,
            },
            "opened" => ServerMessage::Opened { channel: named()?, id },
            "data" => ServerMessage::Data {
                channel: named()?,
                data: envelope.data.clone().map(Cow::into_owned).unwrap_or(Value::Null),
                offset: envelope.offset,
            },
            "action" => ServerMessage::Action {
                channel: named()?,
                status: ActionStatus::Completed,
                data: envelope.data.map(Cow::into_owned),
                id,
            },
            "error" => ServerMessage::Error {
                channel,
                message: envelope.message.map(Cow::into_owned).unwrap_or_default(),
                id,
            },
            "connected" => ServerMessage::Connected {
                id,
                client: envelope.client.map(Cow::into_owned).unwrap_or_default(),
                user: envelope.user.map(Cow::into_owned).unwrap_or_default(),
                expires_in: envelope.expires_in,
            },
            "refreshed" => ServerMessage::Refreshed {
                id,
                expires_in: envelope.expires_in,
            },
            "presence" => ServerMessage::Presence {
                channel: named()?,
                id,
                clients: envelope
                    .clients
                    .clone()
                    .map(Cow::into_owned)
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|err| format!("'presence' with malformed clients: {err}"))?
                    .unwrap_or_default(),
                cursor: envelope.cursor.clone().map(Cow::into_owned),
            },
            "presence_stats" => ServerMessage::PresenceStats {
                channel: named()?,
                id,
                clients: envelope.clients.as_deref().and_then(Value::as_u64).unwrap_or(0),
                users: envelope.users.unwrap_or(0),
            },
            "presence_diff" => ServerMessage::PresenceDiff {
                channel: named()?,
                params: envelope.params.clone().map(Cow::into_owned).unwrap_or(Value::Null),
                joins: envelope.joins.clone().map(Cow::into_owned).unwrap_or_default(),
                leaves: envelope.leaves.clone().map(Cow::into_owned).unwrap_or_default(),
            },
            _ => ServerMessage::Duplex(DuplexMessage::from_envelope(envelope)?),
        })
    }
}

/// `offset` and `epoch` of an envelope, as a position (both or none).
fn stream_position(envelope: &Envelope<'_>) -> Option<Position> {
    Some(Position {
        offset: envelope.offset?,
        epoch: envelope.epoch.as_deref()?.to_owned(),
    })
}

/// `envelope` with the `offset` and `epoch` of `position`.
fn with_position<'a>(envelope: Envelope<'a>, position: Option<&'a Position>) -> Envelope<'a> {
    Envelope {
        offset: position.map(|p| p.offset),
        epoch: position.map(|p| Cow::Borrowed(p.epoch.as_str())),
        ..envelope
    }
}

/// An optional `{"offset": N, "epoch": "E"}` field.
fn position(object: &mut Map<String, Value>, key: &str) -> Result<Option<Position>, String> {
    match object.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value)
            .map(Some)
            .map_err(|_| text::invalid_position(key)),
    }
}

/// SocketAPI's (Python's) truthiness, for `type`.
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

/// An optional `token`: a non-empty string.
fn token(object: &mut Map<String, Value>) -> Result<Option<String>, &'static str> {
    match object.remove("token") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(token)) if !token.is_empty() => Ok(Some(token)),
        Some(_) => Err(text::INVALID_TOKEN_FIELD),
    }
}

/// A non-empty string field.
fn take_string(object: &mut Map<String, Value>, key: &str) -> Option<String> {
    match object.remove(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}
