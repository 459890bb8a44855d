//! The error texts of the protocol. SocketAPI's are kept word for word: clients match on them.

/// `type` missing, empty, `false`, `0` or `null`.
pub const TYPE_REQUIRED: &str = "Message type is required.";
/// `channel` missing or empty.
pub const CHANNEL_REQUIRED: &str = "Channel is required.";
/// The text is not a JSON object.
pub const NOT_AN_OBJECT: &str = "Invalid message: expected a JSON object.";
/// A binary frame came where JSON text was expected.
pub const BINARY_UNSUPPORTED: &str = "Binary messages are not supported: send JSON text.";
/// An `emit` or `request` without an `event`.
pub const EVENT_REQUIRED: &str = "Event is required.";
/// The reply of the authorization hook to a request it denies.
pub const DENIED: &str = "Denied";

pub fn unknown_type(kind: &str) -> String {
    format!("Unknown message type: {kind}.")
}

pub fn channel_not_found(channel: &str) -> String {
    format!("Channel '{channel}' not found.")
}

pub fn action_not_found(action: &str) -> String {
    format!("Action '{action}' not found.")
}

/// SocketAPI names the action in this text for channels too.
pub fn invalid_params(name: &str) -> String {
    format!("Invalid parameters for action '{name}'")
}

pub fn not_open(channel: &str) -> String {
    format!("Channel '{channel}' is not open.")
}

pub fn already_open(channel: &str) -> String {
    format!("Channel '{channel}' is already open.")
}

pub fn closed_while_opening(channel: &str) -> String {
    format!("Channel '{channel}' was closed while opening.")
}

/// A request for an event without handler, as the server words it (the client omits the channel).
pub fn no_handler(event: &str, channel: Option<&str>) -> String {
    match channel {
        Some(channel) => format!("No handler for event '{event}' on channel '{channel}'"),
        None => format!("No handler for event '{event}'"),
    }
}

/// A `history` request whose `limit` is not a non-negative integer.
pub const INVALID_LIMIT: &str = "Invalid limit: expected a non-negative integer.";

/// A `recover` or `since` that is not a position.
pub fn invalid_position(field: &str) -> String {
    format!("Invalid {field}: expected {{\"offset\": N, \"epoch\": \"E\"}}.")
}

/// `recover` or `history` on a channel that keeps no history.
pub fn no_history(channel: &str) -> String {
    format!("Channel '{channel}' keeps no history.")
}

/// `refresh` without a token.
pub const TOKEN_REQUIRED: &str = "Token is required.";
/// A `token` that is not a non-empty string.
pub const INVALID_TOKEN_FIELD: &str = "Invalid token: expected a non-empty string.";
/// A message other than `connect` before the connection is authenticated.
pub const NOT_CONNECTED: &str =
    "Not connected: authenticate first with {\"type\":\"connect\",\"token\":\"JWT\"} (or ?token=JWT on the URL).";
/// A `connect` on a connection that is already authenticated.
pub const ALREADY_CONNECTED: &str = "Already connected: send refresh to present a new token.";
/// A `refresh` before `connected`.
pub const REFRESH_BEFORE_CONNECT: &str = "Not connected: refresh needs a connected connection.";
/// A `refresh` with a token for another user.
pub const REFRESH_OTHER_USER: &str = "Refresh refused: the token is for another user.";
/// A subscription the connection may not make (SocketAPI has no such case: Centrifugo's text).
pub const PERMISSION_DENIED: &str = "Permission denied";
/// The authentication backend could not answer.
pub const AUTH_UNAVAILABLE: &str = "Authentication unavailable: try again later.";
/// The subscribe proxy could not answer.
pub const SUBSCRIBE_UNAVAILABLE: &str = "Subscribe backend unavailable: try again later.";
/// The action proxy could not answer.
pub const ACTION_UNAVAILABLE: &str = "Action backend unavailable: try again later.";

/// A message over the connection's rate.
pub fn rate_limited(per_sec: u32) -> String {
    format!("Rate limit exceeded: at most {per_sec} messages per second.")
}

/// A subscription over the connection's limit.
pub fn too_many_subscriptions(max: usize) -> String {
    format!("Too many subscriptions: at most {max} per connection.")
}

/// `presence` or `presence_stats` on a channel without presence.
pub fn no_presence(channel: &str) -> String {
    format!("Channel '{channel}' has no presence.")
}

/// A `cursor` that is not one a presence reply gave.
pub const INVALID_CURSOR: &str = "Invalid cursor: expected a cursor from a presence reply.";

/// `publish` on a channel whose namespace does not let clients publish (or a typed channel).
pub fn publish_not_allowed(channel: &str) -> String {
    format!("Publishing to channel '{channel}' is not allowed for clients.")
}

/// `history` on a namespace channel whose history clients may not read.
pub fn history_not_allowed(channel: &str) -> String {
    format!("History of channel '{channel}' is not available to clients.")
}

/// `presence` or `presence_stats` on a namespace channel whose presence clients may not read.
pub fn presence_not_allowed(channel: &str) -> String {
    format!("Presence of channel '{channel}' is not available to clients.")
}
