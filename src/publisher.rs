//! `Publisher`: publish on a Switchboard server from another process, over the server HTTP API
//! (`POST /api/publish`, with an API key) — or on a SocketAPI server (and a Switchboard server
//! without an API key) over `POST /_broadcast`.

use crate::PublishError;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Publishes on a server: through the server HTTP API once given an
/// [`api_key`](Self::api_key), else through SocketAPI's `/_broadcast`.
///
/// ```no_run
/// # async fn run() -> Result<(), switchboard::PublishError> {
/// let publisher = switchboard::Publisher::new("http://127.0.0.1:8000")?.api_key("change-me");
/// publisher.publish("chat:lobby", serde_json::json!({"text": "hello"})).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Publisher {
    endpoint: Uri,
    token: Option<String>,
    api_key: Option<String>,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Publisher {
    /// A publisher for the server at `base_url` (`http://host:port`; `/_broadcast` is appended
    /// unless the URL already names a path).
    pub fn new(base_url: &str) -> Result<Self, PublishError> {
        let invalid =
            || PublishError::Unreachable(format!("invalid server URL '{base_url}': expected http://host:port"));
        let uri: Uri = base_url.parse().map_err(|_| invalid())?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(invalid());
        }
        let endpoint = match uri.path() {
            "" | "/" => format!("{}/_broadcast", base_url.trim_end_matches('/'))
                .parse()
                .map_err(|_| invalid())?,
            _ => uri,
        };
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Self {
            endpoint,
            token: None,
            api_key: None,
            timeout: Duration::from_secs(10),
            client,
        })
    }

    /// Sends `Authorization: Bearer <token>` (for servers started with a broadcast token).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Publishes through the server HTTP API (`POST /api/publish`, `Authorization: apikey KEY`;
    /// PROTOCOL.md, "Server HTTP API") instead of `/_broadcast`: `data` may then be any JSON, the
    /// data of a namespace channel or the parameters of a typed channel.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        if let Some(api) = self
            .endpoint
            .path_and_query()
            .filter(|p| p.path() == "/_broadcast")
            .and_then(|_| {
                let mut parts = self.endpoint.clone().into_parts();
                parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/api/publish"));
                Uri::from_parts(parts).ok()
            })
        {
            self.endpoint = api;
        }
        self
    }

    /// Time allowed for one broadcast (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Broadcasts on `channel` with `params` (the channel function's parameters).
    pub async fn publish(&self, channel: &str, params: impl Serialize) -> Result<(), PublishError> {
        let body = json!({ "channel": channel, "data": params });
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = &self.api_key {
            request = request.header(header::AUTHORIZATION, format!("apikey {key}"));
        } else if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| PublishError::Unreachable(e.to_string()))?;
        let unreachable = |e: String| PublishError::Unreachable(format!("{}: {e}", self.endpoint));
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return Ok(());
        }
        // `/_broadcast` answers `{"error": TEXT}`, the API `{"error": {"code", "message"}}`.
        let text = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| {
                let error = v.get("error")?;
                error
                    .as_str()
                    .or_else(|| error.get("message")?.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(match status {
            StatusCode::NOT_FOUND => PublishError::NotFound(channel.to_owned()),
            StatusCode::UNPROCESSABLE_ENTITY => PublishError::InvalidParams(channel.to_owned()),
            StatusCode::PAYLOAD_TOO_LARGE => PublishError::Failed(text),
            StatusCode::SERVICE_UNAVAILABLE => PublishError::Broker(text),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => PublishError::Refused(text),
            _ => PublishError::Failed(format!("HTTP {status}: {text}")),
        })
    }
}
