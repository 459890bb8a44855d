//! The server HTTP API for backends in any language: `POST /api/<method>` with a JSON body,
//! authenticated by an API key (`Authorization: apikey KEY`), answering
//! `{"result": {...}}` or a 4xx/503 with `{"error": {"code": STATUS, "message": TEXT}}` — never
//! a 500 for anything a caller sends (PROTOCOL.md, "Server HTTP API").
//!
//! The results carry the fields of the WebSocket replies (`history`: `publications`, `offset`,
//! `epoch`; `presence`: `clients`; `presence_stats`: `clients`, `users`). `disconnect`,
//! `unsubscribe`, `channels` and `info` reach every node through the control channel
//! (`control.rs`).

use super::{Command, Node, PublishError, Question};
use crate::protocol::{text, Position, Publication, ServerMessage};
use crate::router::ChannelDef;
use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest request body accepted (1 MiB).
const MAX_BODY: usize = 1 << 20;

/// The close code of `disconnect` when the call names none: "do not reconnect".
pub(crate) const DISCONNECT_CODE: u16 = 4501;

/// The API's methods, for the error that names them.
const METHODS: &str = "publish, broadcast, history, presence, presence_stats, disconnect, unsubscribe, channels, info";

/// Who may call the HTTP API and open the admin page.
///
/// ```
/// let api = switchboard::Api::new("change-me").admin_password("also-change-me");
/// # let _ = api;
/// ```
#[derive(Clone)]
pub struct Api {
    key: Option<String>,
    admin_password: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("key", &self.key.as_ref().map(|_| "…"))
            .field("admin", &self.admin_password.is_some())
            .finish()
    }
}

impl Api {
    /// The API, for callers that send `Authorization: apikey KEY`.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()).filter(|k| !k.is_empty()),
            admin_password: None,
        }
    }

    /// No API key: every API call is refused (401) unless the admin page is on.
    pub fn disabled() -> Self {
        Self {
            key: None,
            admin_password: None,
        }
    }

    /// Turns on the admin page at `/admin`: it signs in with this password (or the API key) and
    /// calls the API with `Authorization: admin SECRET`.
    pub fn admin_password(mut self, password: impl Into<String>) -> Self {
        self.admin_password = Some(password.into()).filter(|p| !p.is_empty());
        self
    }

    /// True when `/admin` is served.
    pub fn has_admin(&self) -> bool {
        self.admin_password.is_some()
    }

    fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else { return false };
        let (scheme, secret) = value.split_once(' ').unwrap_or((value, ""));
        let secret = secret.trim();
        let key = self.key.as_deref();
        match scheme.to_ascii_lowercase().as_str() {
            "apikey" => key.is_some_and(|key| same(key, secret)),
            "admin" => {
                self.admin_password
                    .as_deref()
                    .is_some_and(|password| same(password, secret))
                    || (self.has_admin() && key.is_some_and(|key| same(key, secret)))
            }
            _ => false,
        }
    }
}

/// Compares secrets in time independent of where they differ.
fn same(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An API error: its status is its code.
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.0.as_u16(), "message": self.1 } });
        (self.0, Json(body)).into_response()
    }
}

impl From<PublishError> for ApiError {
    fn from(err: PublishError) -> Self {
        let status = match err {
            PublishError::NotFound(_) => StatusCode::NOT_FOUND,
            PublishError::InvalidParams(_) | PublishError::Failed(_) => StatusCode::BAD_REQUEST,
            PublishError::DataTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PublishError::Refused(_) => StatusCode::FORBIDDEN,
            PublishError::NotMounted(_) | PublishError::Broker(_) | PublishError::Unreachable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        Self(status, err.to_string())
    }
}

impl From<crate::BrokerError> for ApiError {
    fn from(err: crate::BrokerError) -> Self {
        Self(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
    }
}

type Outcome = Result<Value, ApiError>;

/// `POST /api/{method}`.
pub(crate) async fn handle(node: Node, api: Arc<Api>, Path(method): Path<String>, request: Request) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !api.allows(authorization) {
        let message = if api.key.is_none() && !api.has_admin() {
            "The server has no API key: set api_key in its configuration (or --api-key, SWITCHBOARD_API_KEY)."
        } else {
            "Missing or wrong API key: send 'Authorization: apikey KEY'."
        };
        return ApiError(StatusCode::UNAUTHORIZED, message.into()).into_response();
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            let message = "Request body too large (limit 1 MiB).";
            return ApiError(StatusCode::PAYLOAD_TOO_LARGE, message.into()).into_response();
        }
    };
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(body @ Value::Object(_)) => body,
            Ok(_) => return ApiError::bad("Invalid request body: expected a JSON object.").into_response(),
            Err(err) => return ApiError::bad(format!("Invalid JSON: {err}.")).into_response(),
        }
    };
    let outcome = match method.as_str() {
        "publish" => publish(&node, body).await,
        "broadcast" => broadcast(&node, body).await,
        "history" => history(&node, body).await,
        "presence" => presence(&node, body, false).await,
        "presence_stats" => presence(&node, body, true).await,
        "disconnect" => disconnect(&node, body).await,
        "unsubscribe" => unsubscribe(&node, body).await,
        "channels" => channels(&node, body).await,
        "info" => info(&node).await,
        other => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("Unknown method '{other}': expected one of {METHODS}."),
        )),
    };
    match outcome {
        Ok(result) => Json(json!({ "result": result })).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Reads a method's parameters; a wrong or missing field is a 400 naming it.
fn params<P: DeserializeOwned>(body: Value) -> Result<P, ApiError> {
    serde_json::from_value(body).map_err(|err| ApiError::bad(format!("Invalid parameters: {err}.")))
}

/// The channel a call names, checked.
fn channel_def(node: &Node, channel: &str) -> Result<Arc<ChannelDef>, ApiError> {
    if let Err(message) = crate::router::check_channel_name(channel) {
        return Err(ApiError::bad(message));
    }
    node.inner
        .channel(channel)
        .cloned()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, text::channel_not_found(channel)))
}

#[derive(Deserialize)]
struct PublishParams {
    channel: String,
    #[serde(default)]
    data: Value,
}

async fn publish(node: &Node, body: Value) -> Outcome {
    let PublishParams { channel, data } = params(body)?;
    publish_one(node, &channel, data).await
}

/// Publishes `data` on `channel`: opaque JSON on a namespace channel, the parameters of a
/// typed channel (as `/_broadcast`). The stream's position on a history channel.
async fn publish_one(node: &Node, channel: &str, data: Value) -> Outcome {
    let def = channel_def(node, channel)?;
    let offset = match def.namespace {
        Some(_) => node.publish_to_namespace(&def, channel, &data).await?,
        None => node.broadcast_typed(&def, data).await?,
    };
    let Some(offset) = offset else { return Ok(json!({})) };
    let topic = def.topic_for(channel, "");
    // The epoch of the stream the offset belongs to (an epoch changes only when a stream is lost).
    let read = node.read_stream(&def, &topic, None, 0).await?;
    Ok(json!({ "offset": offset, "epoch": read.position.epoch }))
}

#[derive(Deserialize)]
struct BroadcastParams {
    channels: Vec<String>,
    #[serde(default)]
    data: Value,
}

async fn broadcast(node: &Node, body: Value) -> Outcome {
    let BroadcastParams { channels, data } = params(body)?;
    if channels.is_empty() {
        return Err(ApiError::bad("Invalid parameters: channels is empty."));
    }
    let mut responses = Vec::with_capacity(channels.len());
    for channel in &channels {
        responses.push(match publish_one(node, channel, data.clone()).await {
            Ok(result) => json!({ "result": result }),
            Err(ApiError(status, message)) => json!({ "error": { "code": status.as_u16(), "message": message } }),
        });
    }
    Ok(json!({ "responses": responses }))
}

#[derive(Deserialize)]
struct HistoryParams {
    channel: String,
    limit: Option<u64>,
    since: Option<Position>,
}

async fn history(node: &Node, body: Value) -> Outcome {
    let HistoryParams { channel, limit, since } = params(body)?;
    let def = channel_def(node, &channel)?;
    if def.history.is_none() {
        return Err(ApiError::bad(text::no_history(&channel)));
    }
    let topic = def.topic_for(&channel, "");
    let read = node.history(&def, &topic, limit, since.as_ref()).await?;
    let publications: Vec<Publication> = super::publications_of(&read);
    Ok(json!({
        "publications": publications,
        "offset": read.position.offset,
        "epoch": read.position.epoch,
    }))
}

#[derive(Deserialize)]
struct ChannelParams {
    channel: String,
}

async fn presence(node: &Node, body: Value, stats: bool) -> Outcome {
    let ChannelParams { channel } = params(body)?;
    let def = channel_def(node, &channel)?;
    if def.presence.is_none() {
        return Err(ApiError::bad(text::no_presence(&channel)));
    }
    let topic = def.topic_for(&channel, "");
    let unavailable = |message: String| ApiError(StatusCode::SERVICE_UNAVAILABLE, message);
    if stats {
        let (clients, users) = node.presence_counts(&topic).await.map_err(unavailable)?;
        return Ok(json!({ "clients": clients, "users": users }));
    }
    let (members, _) = node.presence_page(&topic, None, 0).await.map_err(unavailable)?;
    Ok(json!({ "clients": members }))
}

#[derive(Deserialize)]
struct DisconnectParams {
    user: String,
    code: Option<u16>,
    reason: Option<String>,
}

async fn disconnect(node: &Node, body: Value) -> Outcome {
    let DisconnectParams { user, code, reason } = params(body)?;
    if user.is_empty() {
        return Err(ApiError::bad("Invalid parameters: user is empty."));
    }
    let code = code.unwrap_or(DISCONNECT_CODE);
    if !(3000..=4999).contains(&code) {
        return Err(ApiError::bad(format!(
            "Invalid code {code}: expected 3000-4999 (4000-4499: the client reconnects; 4500-4999: it does not)."
        )));
    }
    let reason = reason.unwrap_or_else(|| "disconnected by the server".to_owned());
    if reason.len() > 123 {
        return Err(ApiError::bad(
            "Invalid reason: at most 123 bytes (a close frame's limit).",
        ));
    }
    node.send_control(&Command::Disconnect { user, code, reason }).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
struct UnsubscribeParams {
    user: String,
    channel: String,
}

async fn unsubscribe(node: &Node, body: Value) -> Outcome {
    let UnsubscribeParams { user, channel } = params(body)?;
    channel_def(node, &channel)?;
    node.send_control(&Command::Unsubscribe { user, channel }).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
struct ChannelsParams {
    pattern: Option<String>,
}

async fn channels(node: &Node, body: Value) -> Outcome {
    let ChannelsParams { pattern } = params(body)?;
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for (_, answer) in node.survey(Question::Channels).await? {
        let Value::Object(topics) = answer else { continue };
        for (topic, count) in topics {
            if pattern.as_deref().is_none_or(|pattern| glob(pattern, &topic)) {
                *counts.entry(topic).or_default() += count.as_u64().unwrap_or(0);
            }
        }
    }
    let channels: serde_json::Map<String, Value> = counts
        .into_iter()
        .map(|(channel, clients)| (channel, json!({ "num_clients": clients })))
        .collect();
    Ok(json!({ "channels": channels }))
}

async fn info(node: &Node) -> Outcome {
    let mut nodes: Vec<Value> = node
        .survey(Question::Info)
        .await?
        .into_iter()
        .map(|(_, answer)| answer)
        .collect();
    nodes.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(json!({ "nodes": nodes }))
}

/// `GET /admin`: the admin page (PROTOCOL.md, "Admin page").
pub(crate) async fn admin_page() -> Response {
    let page = include_str!("../../assets/admin.html");
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The publications of a stream read, as `{offset, data}`.
pub(crate) fn publications_of(read: &crate::broker::StreamRead) -> Vec<Publication> {
    read.publications
        .iter()
        .filter_map(|(offset, message)| {
            let data = match ServerMessage::parse(message.as_str()).ok()? {
                ServerMessage::Data { data, .. } => data,
                _ => return None,
            };
            Some(Publication { offset: *offset, data })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("chat:*", "chat:lobby"));
        assert!(glob("*", "anything"));
        assert!(glob("chat:lobby", "chat:lobby"));
        assert!(!glob("chat:lobby", "chat:lobby2"));
        assert!(glob("*:lobby", "chat:lobby"));
        assert!(glob("c*t:*y", "chat:lobby"));
        assert!(!glob("chat:*", "news"));
        assert!(!glob("a*a", "a"));
    }

    #[test]
    fn keys_and_schemes() {
        let api = Api::new("k1");
        assert!(api.allows(Some("apikey k1")));
        assert!(api.allows(Some("ApiKey k1")));
        assert!(!api.allows(Some("apikey k2")));
        assert!(!api.allows(Some("Bearer k1")));
        assert!(!api.allows(Some("admin k1")), "no admin page: the admin scheme is off");
        assert!(!api.allows(None));
        let api = api.admin_password("pw");
        assert!(api.allows(Some("admin pw")));
        assert!(api.allows(Some("admin k1")));
        assert!(!api.allows(Some("apikey pw")));
        assert!(!Api::disabled().allows(Some("apikey ")));
    }
}
