//! `POST /_broadcast`: other processes broadcast on a channel over HTTP, exactly as SocketAPI's
//! endpoint: body `{"channel": NAME, "data": {PARAMS}}`, answer `{"status": "success"}`.
//!
//! Access: client addresses are checked against the allowed hosts (loopback only by default), and
//! an optional bearer token is required when configured. Every failure is a 4xx/503 with a JSON
//! `{"error": TEXT}`; nothing a client sends produces a 500.

use super::{BroadcastAccess, Node, PublishError};
use crate::protocol::text;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Json;
use http::{header, StatusCode};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

pub(crate) fn endpoint<S: Clone + Send + Sync + 'static>(node: Node) -> MethodRouter<S> {
    axum::routing::post(move |request: Request| {
        let node = node.clone();
        async move { handle(node, request).await }
    })
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The checks every endpoint of other processes shares — the client's address, the bearer
/// token, a JSON body `{"channel": NAME, "data": {PARAMS}}` — and what it names.
async fn read(node: &Node, request: Request) -> Result<(String, Value), Response> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip());
    let access = &node.inner.broadcast_access;
    if !peer.is_some_and(|ip| host_allowed(access, ip)) {
        tracing::warn!(?peer, "broadcast refused: client address not allowed");
        return Err(error(
            StatusCode::FORBIDDEN,
            "Broadcast endpoint can only be accessed locally.",
        ));
    }
    if let Some(token) = &access.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given.and_then(|v| v.strip_prefix("Bearer ")) != Some(token.as_str()) {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "Missing or wrong bearer token: send 'Authorization: Bearer <token>'.",
            ));
        }
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large (limit 1 MiB).",
            ))
        }
    };
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&body) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Invalid request body: expected a JSON object {\"channel\": NAME, \"data\": {...}}.",
        ));
    };
    let Some(Value::String(channel)) = body.remove("channel") else {
        return Err(error(StatusCode::BAD_REQUEST, text::CHANNEL_REQUIRED));
    };
    Ok((channel, body.remove("data").unwrap_or(Value::Null)))
}

async fn handle(node: Node, request: Request) -> Response {
    let (channel, params) = match read(&node, request).await {
        Ok(named) => named,
        Err(refused) => return refused,
    };
    match node.broadcast(&channel, params).await {
        Ok(()) => Json(json!({ "status": "success" })).into_response(),
        Err(err) => {
            let status = match err {
                PublishError::NotFound(_) => StatusCode::NOT_FOUND,
                PublishError::InvalidParams(_) => StatusCode::UNPROCESSABLE_ENTITY,
                PublishError::DataTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                PublishError::Failed(_) => StatusCode::BAD_REQUEST,
                PublishError::NotMounted(_) | PublishError::Broker(_) | PublishError::Unreachable(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                PublishError::Refused(_) => StatusCode::FORBIDDEN,
            };
            error(status, &err.to_string())
        }
    }
}

/// `POST /_presence` (members) or, with `stats`, `POST /_presence_stats` (counts): the same
/// access rules and body as `/_broadcast`; `data` holds the topic's subscribe-time parameters
/// (for a channel keyed by user, the user). Answers the fields of the WebSocket replies:
/// `{"clients": [...]}` or `{"clients": N, "users": M}`.
pub(crate) fn presence_endpoint<S: Clone + Send + Sync + 'static>(node: Node, stats: bool) -> MethodRouter<S> {
    axum::routing::post(move |request: Request| {
        let node = node.clone();
        async move {
            let (channel, params) = match read(&node, request).await {
                Ok(named) => named,
                Err(refused) => return refused,
            };
            let Some(def) = node.inner.channels.get(&channel).cloned() else {
                return error(StatusCode::NOT_FOUND, &text::channel_not_found(&channel));
            };
            if def.presence.is_none() {
                return error(StatusCode::BAD_REQUEST, &text::no_presence(&channel));
            }
            let key = def
                .subscribe_params(Some(&params))
                .and_then(|p| def.prepare(p))
                .map(|p| p.key);
            let Ok(key) = key else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, &text::invalid_params(&channel));
            };
            let topic = def.topic(&key);
            if stats {
                return match node.presence_counts(&topic).await {
                    Ok((clients, users)) => Json(json!({ "clients": clients, "users": users })).into_response(),
                    Err(message) => error(StatusCode::SERVICE_UNAVAILABLE, &message),
                };
            }
            match node.presence_page(&topic, None, 0).await {
                Ok((members, _)) => Json(json!({ "clients": members })).into_response(),
                Err(message) => error(StatusCode::SERVICE_UNAVAILABLE, &message),
            }
        }
    })
}

fn host_allowed(access: &BroadcastAccess, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    access.allowed_hosts.iter().any(|host| match host.as_str() {
        "localhost" => ip.is_loopback(),
        "*" => true,
        other => other.parse::<IpAddr>().is_ok_and(|allowed| allowed == ip),
    })
}
