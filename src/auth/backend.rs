//! `Backend`: the HTTP client that asks the application's own endpoints — the connect, subscribe
//! and action proxies, and a JWKS URL. One pooled hyper client per node (connections kept alive
//! between calls); every call has a deadline, and every failure is a [`BackendError`] that says
//! what went wrong, so that a backend that is down, slow or answers garbage costs the client an
//! error reply and never a hung connection.
//!
//! Plain `http://` only: proxies and key servers usually sit beside the node on a private network
//! (see docs/decisions/0006-identity.md for why no TLS client is built in yet).

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

/// The largest answer a backend may send (a JWKS or a proxy result is a few KiB).
const MAX_ANSWER: usize = 1 << 20;

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("{url}: not an http:// URL")]
    BadUrl { url: String },
    #[error("{url}: unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: answered HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: answered something that is not JSON: {reason}")]
    Garbage { url: String, reason: String },
}

/// A pooled HTTP client for the node's backends.
#[derive(Clone)]
pub(crate) struct Backend {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Backend {
    fn default() -> Self {
        Self::new()
    }
}

impl Backend {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client }
    }

    /// POSTs `body` as JSON to `url` and reads the JSON answer, within `timeout`.
    pub async fn post_json(&self, url: &str, body: &Value, timeout: Duration) -> Result<Value, BackendError> {
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        self.call(Method::POST, url, Some(bytes), timeout).await
    }

    /// GETs `url` and reads the JSON answer, within `timeout`.
    pub async fn get_json(&self, url: &str, timeout: Duration) -> Result<Value, BackendError> {
        self.call(Method::GET, url, None, timeout).await
    }

    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Value, BackendError> {
        let bad_url = || BackendError::BadUrl { url: url.to_owned() };
        if !url.starts_with("http://") {
            return Err(bad_url());
        }
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|_| bad_url())?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| BackendError::Unreachable {
                    url: url.to_owned(),
                    reason: error_chain(&err),
                })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|err| BackendError::Garbage {
                    url: url.to_owned(),
                    reason: err.to_string(),
                })?
                .to_bytes();
            if !status.is_success() {
                return Err(BackendError::Status {
                    url: url.to_owned(),
                    status,
                });
            }
            serde_json::from_slice(&body).map_err(|err| BackendError::Garbage {
                url: url.to_owned(),
                reason: err.to_string(),
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(BackendError::Timeout {
                url: url.to_owned(),
                timeout,
            }),
        }
    }
}

/// An error with its sources, e.g. "client error (Connect): tcp connect error: Connection refused".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
