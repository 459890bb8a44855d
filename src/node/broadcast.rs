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

async fn handle(node: Node, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip());
    let access = &node.inner.broadcast_access;
    if !peer.is_some_and(|ip| host_allowed(access, ip)) {
        tracing::warn!(?peer, "broadcast refused: client address not allowed");
        return error(
            StatusCode::FORBIDDEN,
            "Broadcast endpoint can only be accessed locally.",
        );
    }
    if let Some(token) = &access.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given.and_then(|v| v.strip_prefix("Bearer ")) != Some(token.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "Missing or wrong bearer token: send 'Authorization: Bearer <token>'.",
            );
        }
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large (limit 1 MiB)."),
    };
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid request body: expected a JSON object {\"channel\": NAME, \"data\": {...}}.",
        );
    };
    let Some(Value::String(channel)) = body.remove("channel") else {
        return error(StatusCode::BAD_REQUEST, text::CHANNEL_REQUIRED);
    };
    let params = body.remove("data").unwrap_or(Value::Null);
    match node.broadcast(&channel, params).await {
        Ok(()) => Json(json!({ "status": "success" })).into_response(),
        Err(err) => {
            let status = match err {
                PublishError::NotFound(_) => StatusCode::NOT_FOUND,
                PublishError::InvalidParams(_) => StatusCode::UNPROCESSABLE_ENTITY,
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

fn host_allowed(access: &BroadcastAccess, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    access.allowed_hosts.iter().any(|host| match host.as_str() {
        "localhost" => ip.is_loopback(),
        "*" => true,
        other => other.parse::<IpAddr>().is_ok_and(|allowed| allowed == ip),
    })
}
