//! The proxies: a node that asks the application's own HTTP backend who a connection is
//! ([`ConnectProxy`]), whether it may subscribe to a channel, and what an action the node does not
//! declare answers ([`Proxy`]).
//!
//! Why a proxy: the application already knows its users (sessions, cookies, databases) and its
//! business rules, in whatever language it is written. Rather than re-implement them inside the
//! node, the node POSTs a small JSON request to an endpoint of that backend and acts on the
//! answer, so any HTTP server can decide, with no client library. The wire shapes are fixed:
//!
//! * connect: `{"client", "transport": "websocket", "headers": {cookie, authorization, origin,
//!   user-agent (each only if the handshake had it)}, "data", "token"? }` →
//!   `{"result": {"user", "info"?, "expire_at"?}}` | `{"error": {"code", "message"}}` |
//!   `{"disconnect": {"code" (4000–4999), "reason"}}`;
//! * subscribe: `{"client", "user", "channel", "data"}` → `{"result": {}}` | error | disconnect;
//! * action: `{"client", "user", "action", "data"}` → `{"result": {"data"}}` | error | disconnect.
//!
//! A proxy never hangs a connection: every call has a deadline (2 s unless set),
//! and a backend that is down, slow, answers an HTTP error or anything but one of the shapes above
//! is *unavailable*: the client gets a short error ("authentication backend unavailable"), and the
//! server log gets a warning with the URL and the full reason. Nothing the backend sends can panic
//! the node, and an answer that is not understood never lets a connection in (it fails closed).

use super::{Auth, AuthRequest, Backend, Identity, Refusal, BACKEND_TIMEOUT};
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// The handshake headers a connect proxy is sent (each only when present).
const FORWARDED_HEADERS: [&str; 4] = ["cookie", "authorization", "origin", "user-agent"];

/// The node's backend endpoints: the subscribe proxy (asked before a subscription to a channel) and
/// the action proxy (asked for actions the node does not declare). The connect proxy is an
/// authentication hook, [`ConnectProxy`].
///
/// ```
/// use std::time::Duration;
/// let proxy = switchboard::Proxy::new()
///     .subscribe("http://127.0.0.1:3000/switchboard/subscribe")
///     .action("http://127.0.0.1:3000/switchboard/action")
///     .timeout(Duration::from_secs(1));
/// # let _ = proxy;
/// ```
#[derive(Clone)]
pub struct Proxy {
    connect: Option<String>,
    subscribe: Option<String>,
    publish: Option<String>,
    action: Option<String>,
    timeout: Duration,
    backend: Backend,
}

impl Default for Proxy {
    fn default() -> Self {
        Self {
            connect: None,
            subscribe: None,
            publish: None,
            action: None,
            timeout: BACKEND_TIMEOUT,
            backend: Backend::new(),
        }
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("connect", &self.connect)
            .field("subscribe", &self.subscribe)
            .field("publish", &self.publish)
            .field("action", &self.action)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// No endpoints yet; each call has 2 s to answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The connect proxy's URL (`http://` only): connections authenticate through it, as with
    /// [`ConnectProxy`] (sharing this proxy's timeout and HTTP client).
    pub fn connect(mut self, url: impl Into<String>) -> Self {
        self.connect = Some(url.into());
        self
    }

    /// The subscribe proxy's URL (`http://` only).
    pub fn subscribe(mut self, url: impl Into<String>) -> Self {
        self.subscribe = Some(url.into());
        self
    }

    /// The publish proxy's URL (`http://` only): asked about every client publication on a
    /// namespace with [`Namespace::publish_proxy`](crate::Namespace::publish_proxy).
    pub fn publish(mut self, url: impl Into<String>) -> Self {
        self.publish = Some(url.into());
        self
    }

    /// The action proxy's URL (`http://` only).
    pub fn action(mut self, url: impl Into<String>) -> Self {
        self.action = Some(url.into());
        self
    }

    /// How long each backend call may take (default 2 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// The connect proxy as an authentication hook, sharing this proxy's timeout and HTTP client;
    /// `None` without a connect URL.
    pub(crate) fn connect_proxy(&self) -> Option<ConnectProxy> {
        let url = self.connect.clone()?;
        Some(ConnectProxy {
            url,
            timeout: self.timeout,
            backend: self.backend.clone(),
        })
    }

    /// True when a subscribe proxy is set.
    pub(crate) fn has_subscribe(&self) -> bool {
        self.subscribe.is_some()
    }

    /// True when a publish proxy is set.
    pub(crate) fn has_publish(&self) -> bool {
        self.publish.is_some()
    }

    /// Asks the publish proxy whether `client` (of `user`) may publish `data` on `channel`: the
    /// data to publish — the backend's `result.data` when it gives one, else `data` as sent.
    pub(crate) async fn ask_publish(
        &self,
        client: &str,
        user: &str,
        channel: &str,
        data: Value,
    ) -> Result<Value, Refusal> {
        const WHAT: &str = "publish";
        let Some(url) = self.publish.as_deref() else {
            return Err(Refusal::Unavailable(format!("{WHAT} backend not configured")));
        };
        let body = serde_json::json!({ "client": client, "user": user, "channel": channel, "data": data });
        let verdict = ask(&self.backend, WHAT, url, &body, self.timeout)
            .await
            .map_err(Refusal::Unavailable)?;
        match verdict {
            Verdict::Result(mut result) => Ok(match result.remove("data") {
                Some(replaced) => replaced,
                None => body["data"].clone(),
            }),
            Verdict::Error { code, message } => Err(Refusal::Error { code, message }),
            Verdict::Disconnect { code, reason } => Err(Refusal::Disconnect { code, reason }),
        }
    }

    /// True when an action proxy is set.
    pub(crate) fn has_action(&self) -> bool {
        self.action.is_some()
    }

    /// Asks the subscribe proxy whether `client` (of `user`) may subscribe to `channel`.
    pub(crate) async fn ask_subscribe(
        &self,
        client: &str,
        user: &str,
        channel: &str,
        data: Option<&Value>,
    ) -> Result<(), Refusal> {
        const WHAT: &str = "subscribe";
        let Some(url) = self.subscribe.as_deref() else {
            return Err(Refusal::Unavailable(format!("{WHAT} backend not configured")));
        };
        let body = serde_json::json!({
            "client": client,
            "user": user,
            "channel": channel,
            "data": data.cloned().unwrap_or(Value::Null),
        });
        let verdict = ask(&self.backend, WHAT, url, &body, self.timeout)
            .await
            .map_err(Refusal::Unavailable)?;
        match verdict {
            // `info` and `data` of the result are not used yet.
            Verdict::Result(_) => Ok(()),
            Verdict::Error { code, message } => Err(Refusal::Error { code, message }),
            Verdict::Disconnect { code, reason } => Err(Refusal::Disconnect { code, reason }),
        }
    }

    /// Asks the action proxy to answer `action` for `client` (of `user`): its `result.data`
    /// (`null` when it gave none).
    pub(crate) async fn ask_action(
        &self,
        client: &str,
        user: &str,
        action: &str,
        data: Option<&Value>,
    ) -> Result<Value, Refusal> {
        const WHAT: &str = "action";
        let Some(url) = self.action.as_deref() else {
            return Err(Refusal::Unavailable(format!("{WHAT} backend not configured")));
        };
        let body = serde_json::json!({
            "client": client,
            "user": user,
            "action": action,
            "data": data.cloned().unwrap_or(Value::Null),
        });
        let verdict = ask(&self.backend, WHAT, url, &body, self.timeout)
            .await
            .map_err(Refusal::Unavailable)?;
        match verdict {
            Verdict::Result(mut result) => Ok(result.remove("data").unwrap_or(Value::Null)),
            Verdict::Error { code, message } => Err(Refusal::Error { code, message }),
            Verdict::Disconnect { code, reason } => Err(Refusal::Disconnect { code, reason }),
        }
    }
}

/// The connect proxy as an authentication hook: the node POSTs the connection's client id,
/// handshake headers (cookies, `Authorization`, `Origin`, `User-Agent`), token and `connect` data
/// to `url`, and the backend answers the user, an error, or a disconnect.
///
/// ```
/// let auth = switchboard::ConnectProxy::new("http://127.0.0.1:3000/switchboard/connect")
///     .timeout(std::time::Duration::from_secs(1))
///     .into_auth();
/// # let _ = auth;
/// ```
#[derive(Clone)]
pub struct ConnectProxy {
    url: String,
    timeout: Duration,
    backend: Backend,
}

impl fmt::Debug for ConnectProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectProxy")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ConnectProxy {
    /// The connect proxy at `url` (`http://` only), with 2 s to answer by default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: BACKEND_TIMEOUT,
            backend: Backend::new(),
        }
    }

    /// How long the backend may take to answer (default 2 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Authentication by this proxy (required; see [`Auth::optional`]).
    pub fn into_auth(self) -> Auth {
        Auth::new(move |request: AuthRequest| {
            let proxy = self.clone();
            async move { proxy.ask(&request).await }
        })
    }

    /// Asks the backend who the connection of `request` is.
    async fn ask(&self, request: &AuthRequest) -> Result<Identity, Refusal> {
        const WHAT: &str = "authentication";
        let body = connect_request(request);
        let verdict = ask(&self.backend, WHAT, &self.url, &body, self.timeout)
            .await
            .map_err(Refusal::Unavailable)?;
        match verdict {
            Verdict::Result(result) => {
                let identity =
                    identity(result).map_err(|reason| Refusal::Unavailable(unavailable(WHAT, &self.url, &reason)))?;
                if identity.is_expired() {
                    return Err(Refusal::Expired);
                }
                Ok(identity)
            }
            Verdict::Error { code, message } => Err(Refusal::Error { code, message }),
            Verdict::Disconnect { code, reason } => Err(Refusal::Disconnect { code, reason }),
        }
    }
}

/// The connect proxy's request for `request`.
fn connect_request(request: &AuthRequest) -> Value {
    let mut headers = Map::new();
    for name in FORWARDED_HEADERS {
        let values: Vec<String> = request
            .handshake
            .headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        if !values.is_empty() {
            // Repeated headers are one list (RFC 9110 §5.3); cookies are joined the way a single
            // Cookie header lists them (RFC 6265 §5.4).
            let separator = if name == "cookie" { "; " } else { ", " };
            headers.insert(name.to_owned(), Value::String(values.join(separator)));
        }
    }
    let mut body = Map::new();
    body.insert("client".into(), Value::String(request.client.clone()));
    body.insert("transport".into(), Value::String("websocket".into()));
    body.insert("headers".into(), Value::Object(headers));
    body.insert("data".into(), request.data.clone().unwrap_or(Value::Null));
    if let Some(token) = &request.token {
        body.insert("token".into(), Value::String(token.clone()));
    }
    Value::Object(body)
}

/// The identity in a connect proxy's `result`.
fn identity(mut result: Map<String, Value>) -> Result<Identity, String> {
    let user = match result.remove("user") {
        Some(Value::String(user)) => user,
        Some(other) => return Err(format!("result.user is not a string: {}", kind(&other))),
        None => return Err("result has no user".into()),
    };
    let mut identity = Identity::user(user);
    match result.remove("info") {
        None | Some(Value::Null) => {}
        Some(info @ Value::Object(_)) => identity = identity.with_info(info),
        Some(other) => return Err(format!("result.info is not an object: {}", kind(&other))),
    }
    match result.remove("expire_at") {
        // 0, like no `expire_at`, means no expiry (a default integer some serializers emit).
        None | Some(Value::Null) => {}
        Some(Value::Number(at)) => match at.as_u64() {
            Some(0) => {}
            Some(at) => identity = identity.expires_at(at),
            None => return Err(format!("result.expire_at is not a Unix time in seconds: {at}")),
        },
        Some(other) => return Err(format!("result.expire_at is not a number: {}", kind(&other))),
    }
    Ok(identity)
}

/// What a backend answered, once understood.
#[derive(Debug)]
enum Verdict {
    /// `{"result": {…}}`.
    Result(Map<String, Value>),
    /// `{"error": {"code", "message"}}`.
    Error { code: u32, message: String },
    /// `{"disconnect": {"code", "reason"}}`, with a code in 4000–4999.
    Disconnect { code: u16, reason: String },
}

/// POSTs `body` to `url` and reads the verdict. Any failure is logged (with the URL and the reason)
/// and becomes the `Err`: a short text for the client that names only `what` backend.
async fn ask(backend: &Backend, what: &str, url: &str, body: &Value, timeout: Duration) -> Result<Verdict, String> {
    let answer = backend
        .post_json(url, body, timeout)
        .await
        .map_err(|err| unavailable(what, url, &err))?;
    verdict(answer).map_err(|reason| unavailable(what, url, &reason))
}

/// Logs why the `what` backend at `url` is unavailable, and returns the text for the client.
fn unavailable(what: &str, url: &str, reason: &dyn fmt::Display) -> String {
    tracing::warn!(url, "{what} backend unavailable: {reason}");
    format!("{what} backend unavailable")
}

/// Reads a backend's answer: `disconnect` first, then `error`, then `result` (a `null` member
/// counts as absent); anything else is garbage, described by the `Err`.
fn verdict(answer: Value) -> Result<Verdict, String> {
    let Value::Object(mut answer) = answer else {
        return Err(format!("the answer is not an object: {}", kind(&answer)));
    };
    if let Some(disconnect) = take(&mut answer, "disconnect") {
        let Value::Object(mut disconnect) = disconnect else {
            return Err(format!("disconnect is not an object: {}", kind(&disconnect)));
        };
        let code = match take(&mut disconnect, "code") {
            Some(Value::Number(code)) => code
                .as_u64()
                .filter(|code| (4000..=4999).contains(code))
                .and_then(|code| u16::try_from(code).ok())
                .ok_or_else(|| format!("disconnect.code {code} is not in 4000–4999"))?,
            Some(other) => return Err(format!("disconnect.code is not a number: {}", kind(&other))),
            None => return Err("disconnect has no code".into()),
        };
        let reason = text(&mut disconnect, "disconnect.reason")?;
        return Ok(Verdict::Disconnect { code, reason });
    }
    if let Some(error) = take(&mut answer, "error") {
        let Value::Object(mut error) = error else {
            return Err(format!("error is not an object: {}", kind(&error)));
        };
        let code = match take(&mut error, "code") {
            None => 0,
            Some(Value::Number(code)) => code
                .as_u64()
                .and_then(|code| u32::try_from(code).ok())
                .ok_or_else(|| format!("error.code {code} is not a 32-bit unsigned integer"))?,
            Some(other) => return Err(format!("error.code is not a number: {}", kind(&other))),
        };
        let message = text(&mut error, "error.message")?;
        return Ok(Verdict::Error { code, message });
    }
    match take(&mut answer, "result") {
        Some(Value::Object(result)) => Ok(Verdict::Result(result)),
        Some(other) => Err(format!("result is not an object: {}", kind(&other))),
        None => Err("the answer has none of result, error, disconnect".into()),
    }
}

/// Removes member `key`, `None` when absent or `null`.
fn take(object: &mut Map<String, Value>, key: &str) -> Option<Value> {
    object.remove(key).filter(|value| !value.is_null())
}

/// The optional string member `path`'s last segment of `object` (`""` when absent).
fn text(object: &mut Map<String, Value>, path: &str) -> Result<String, String> {
    let key = path.rsplit('.').next().unwrap_or(path);
    match take(object, key) {
        None => Ok(String::new()),
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(format!("{path} is not a string: {}", kind(&other))),
    }
}

/// A JSON value's kind, for log lines (not the value: it may be large or private).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::unix_now;
    use crate::ws::Handshake;
    use axum::routing::post;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, StatusCode, Uri};
    use parking_lot::Mutex;
    use serde_json::json;
    use std::sync::Arc;
    use std::time::Instant;

    /// A real HTTP backend (axum) on loopback: it records each request's JSON and answers `status` with
    /// `body` after `delay`.
    struct App {
        url: String,
        seen: Arc<Mutex<Vec<Value>>>,
    }

    impl App {
        async fn start(status: StatusCode, body: impl Into<String>, delay: Duration) -> Self {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let body: String = body.into();
            let recorded = seen.clone();
            let app = axum::Router::new().route(
                "/hook",
                post(move |request: Bytes| {
                    let recorded = recorded.clone();
                    let body = body.clone();
                    async move {
                        let request = serde_json::from_slice(&request).unwrap_or(Value::Null);
                        recorded.lock().push(request);
                        tokio::time::sleep(delay).await;
                        (status, body)
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            Self {
                url: format!("http://{addr}/hook"),
                seen,
            }
        }

        async fn answering(body: impl Into<String>) -> Self {
            Self::start(StatusCode::OK, body, Duration::ZERO).await
        }

        fn requests(&self) -> Vec<Value> {
            self.seen.lock().clone()
        }
    }

    fn handshake(headers: &[(&'static str, &'static str)]) -> Handshake {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        Handshake {
            uri: Uri::from_static("/ws?room=lobby"),
            headers: map,
            peer: Some("127.0.0.1:50000".parse().unwrap()),
        }
    }

    fn request(token: Option<&str>, data: Option<Value>) -> AuthRequest {
        AuthRequest {
            client: "c-1".into(),
            handshake: handshake(&[
                ("host", "example.com"),
                ("cookie", "session=abc"),
                ("authorization", "Bearer xyz"),
                ("origin", "https://example.com"),
                ("user-agent", "test/1.0"),
                ("x-forwarded-for", "10.0.0.1"),
                ("sec-websocket-protocol", "socketapi"),
            ]),
            token: token.map(str::to_owned),
            data,
            refresh: false,
        }
    }

    async fn connect(url: &str, request: AuthRequest) -> Result<Identity, Refusal> {
        ConnectProxy::new(url).into_auth().authenticate(request).await
    }

    #[tokio::test]
    async fn connect_result_is_the_identity_and_the_request_has_the_spec_shape() {
        let expire_at = unix_now() + 3600;
        let backend = App::answering(
            json!({"result": {"user": "42", "info": {"name": "Ann"}, "expire_at": expire_at}}).to_string(),
        )
        .await;
        let identity = connect(&backend.url, request(Some("t0k3n"), Some(json!({"room": 7}))))
            .await
            .unwrap();
        assert_eq!(identity.user_id(), "42");
        assert_eq!(identity.info(), Some(&json!({"name": "Ann"})));
        assert_eq!(identity.expiry(), Some(expire_at));
        assert_eq!(
            backend.requests(),
            [json!({
                "client": "c-1",
                "transport": "websocket",
                "headers": {
                    "cookie": "session=abc",
                    "authorization": "Bearer xyz",
                    "origin": "https://example.com",
                    "user-agent": "test/1.0",
                },
                "data": {"room": 7},
                "token": "t0k3n",
            })]
        );
    }

    #[tokio::test]
    async fn connect_anonymous_without_token_data_or_most_headers() {
        let backend = App::answering(r#"{"result": {"user": "", "info": null, "expire_at": 0}}"#).await;
        let request = AuthRequest {
            client: "c-2".into(),
            handshake: handshake(&[("cookie", "a=1"), ("cookie", "b=2"), ("host", "example.com")]),
            token: None,
            data: None,
            refresh: false,
        };
        let identity = connect(&backend.url, request).await.unwrap();
        assert!(identity.is_anonymous());
        assert_eq!(identity.info(), None);
        assert_eq!(identity.expiry(), None, "expire_at 0 means no expiry");
        let sent = backend.requests();
        assert_eq!(
            sent,
            [json!({"client": "c-2", "transport": "websocket", "headers": {"cookie": "a=1; b=2"}, "data": null})]
        );
        assert!(sent[0].get("token").is_none());
    }

    #[tokio::test]
    async fn connect_expired_identity_is_refused() {
        let past = unix_now() - 10;
        let backend = App::answering(json!({"result": {"user": "42", "expire_at": past}}).to_string()).await;
        assert_eq!(connect(&backend.url, request(None, None)).await, Err(Refusal::Expired));
    }

    #[tokio::test]
    async fn connect_error_is_an_error_reply() {
        let backend = App::answering(r#"{"error": {"code": 1000, "message": "log in first"}}"#).await;
        assert_eq!(
            connect(&backend.url, request(None, None)).await,
            Err(Refusal::Error {
                code: 1000,
                message: "log in first".into()
            })
        );
        let backend = App::answering(r#"{"error": {}}"#).await;
        assert_eq!(
            connect(&backend.url, request(None, None)).await,
            Err(Refusal::Error {
                code: 0,
                message: String::new()
            })
        );
    }

    #[tokio::test]
    async fn connect_disconnect_closes_and_an_out_of_range_code_is_unavailable() {
        let backend = App::answering(r#"{"disconnect": {"code": 4403, "reason": "banned"}}"#).await;
        assert_eq!(
            connect(&backend.url, request(None, None)).await,
            Err(Refusal::Disconnect {
                code: 4403,
                reason: "banned".into()
            })
        );
        for code in ["1000", "3999", "5000", "70000", "-4001", "4001.5", "\"4001\""] {
            let backend = App::answering(format!(r#"{{"disconnect": {{"code": {code}, "reason": "x"}}}}"#)).await;
            assert_eq!(
                connect(&backend.url, request(None, None)).await,
                Err(Refusal::Unavailable("authentication backend unavailable".into())),
                "code {code}"
            );
        }
    }

    #[tokio::test]
    async fn connect_garbage_is_unavailable() {
        let unavailable = Err(Refusal::Unavailable("authentication backend unavailable".into()));
        for body in [
            "not json",
            r#"{"foo":1}"#,
            "[]",
            "null",
            r#"{"result": null}"#,
            r#"{"result": {}}"#,
            r#"{"result": {"user": 42}}"#,
            r#"{"result": {"user": "1", "info": [1]}}"#,
            r#"{"result": {"user": "1", "expire_at": "soon"}}"#,
            r#"{"result": {"user": "1", "expire_at": -5}}"#,
            r#"{"error": "nope"}"#,
            r#"{"error": {"code": -1, "message": "x"}}"#,
            r#"{"error": {"code": 1, "message": 2}}"#,
            r#"{"disconnect": {"reason": "no code"}}"#,
        ] {
            let backend = App::answering(body).await;
            assert_eq!(connect(&backend.url, request(None, None)).await, unavailable, "{body}");
        }
        let backend = App::start(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"result": {"user": "42"}}"#,
            Duration::ZERO,
        )
        .await;
        assert_eq!(connect(&backend.url, request(None, None)).await, unavailable);
    }

    #[tokio::test]
    async fn connect_timeout_is_unavailable_quickly() {
        let backend = App::start(StatusCode::OK, r#"{"result": {"user": "42"}}"#, Duration::from_secs(3)).await;
        let auth = ConnectProxy::new(&backend.url)
            .timeout(Duration::from_millis(200))
            .into_auth();
        let started = Instant::now();
        let answer = auth.authenticate(request(None, None)).await;
        let elapsed = started.elapsed();
        assert_eq!(
            answer,
            Err(Refusal::Unavailable("authentication backend unavailable".into()))
        );
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
        assert!(elapsed >= Duration::from_millis(200), "took {elapsed:?}");
    }

    #[tokio::test]
    async fn connect_backend_down_or_bad_url_is_unavailable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let unavailable = Err(Refusal::Unavailable("authentication backend unavailable".into()));
        let started = Instant::now();
        assert_eq!(
            connect(&format!("http://{addr}/hook"), request(None, None)).await,
            unavailable
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            connect("https://example.com/hook", request(None, None)).await,
            unavailable
        );
        assert_eq!(connect("not a url", request(None, None)).await, unavailable);
    }

    #[tokio::test]
    async fn subscribe_allowed_refused_or_disconnected() {
        let backend = App::answering(r#"{"result": {"info": {"x": 1}, "data": {"y": 2}}}"#).await;
        let proxy = Proxy::new().subscribe(&backend.url);
        assert!(proxy.has_subscribe());
        assert!(!proxy.has_action());
        assert_eq!(
            proxy
                .ask_subscribe("c-1", "42", "chat:lobby", Some(&json!({"a": 1})))
                .await,
            Ok(())
        );
        assert_eq!(proxy.ask_subscribe("c-1", "", "news", None).await, Ok(()));
        assert_eq!(
            backend.requests(),
            [
                json!({"client": "c-1", "user": "42", "channel": "chat:lobby", "data": {"a": 1}}),
                json!({"client": "c-1", "user": "", "channel": "news", "data": null}),
            ]
        );

        let backend = App::answering(r#"{"error": {"code": 403, "message": "members only"}}"#).await;
        let proxy = Proxy::new().subscribe(&backend.url);
        assert_eq!(
            proxy.ask_subscribe("c-1", "42", "chat:vip", None).await,
            Err(Refusal::Error {
                code: 403,
                message: "members only".into()
            })
        );

        let backend = App::answering(r#"{"disconnect": {"code": 4100, "reason": "go away"}}"#).await;
        let proxy = Proxy::new().subscribe(&backend.url);
        assert_eq!(
            proxy.ask_subscribe("c-1", "42", "chat:vip", None).await,
            Err(Refusal::Disconnect {
                code: 4100,
                reason: "go away".into()
            })
        );

        let backend = App::answering(r#"{"allowed": true}"#).await;
        let proxy = Proxy::new().subscribe(&backend.url);
        assert_eq!(
            proxy.ask_subscribe("c-1", "42", "chat:vip", None).await,
            Err(Refusal::Unavailable("subscribe backend unavailable".into()))
        );
        assert!(matches!(
            Proxy::new().ask_subscribe("c-1", "42", "chat", None).await,
            Err(Refusal::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn action_data_error_or_unavailable() {
        let backend = App::answering(r#"{"result": {"data": [1, "two", {"three": 3}]}}"#).await;
        let proxy = Proxy::new().action(&backend.url);
        assert!(proxy.has_action());
        assert!(!proxy.has_subscribe());
        assert_eq!(
            proxy
                .ask_action("c-1", "42", "orders.list", Some(&json!({"page": 2})))
                .await,
            Ok(json!([1, "two", {"three": 3}]))
        );
        assert_eq!(
            backend.requests(),
            [json!({"client": "c-1", "user": "42", "action": "orders.list", "data": {"page": 2}})]
        );

        let backend = App::answering(r#"{"result": {}}"#).await;
        let proxy = Proxy::new().action(&backend.url);
        assert_eq!(proxy.ask_action("c-1", "42", "ping", None).await, Ok(Value::Null));

        let backend = App::answering(r#"{"error": {"code": 404, "message": "no such order"}}"#).await;
        let proxy = Proxy::new().action(&backend.url);
        assert_eq!(
            proxy.ask_action("c-1", "42", "orders.get", None).await,
            Err(Refusal::Error {
                code: 404,
                message: "no such order".into()
            })
        );

        let backend = App::start(StatusCode::OK, r#"{"result": {"data": 1}}"#, Duration::from_secs(3)).await;
        let proxy = Proxy::new().action(&backend.url).timeout(Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(
            proxy.ask_action("c-1", "42", "slow", None).await,
            Err(Refusal::Unavailable("action backend unavailable".into()))
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn the_proxy_connect_url_shares_timeout_and_client() {
        let backend = App::answering(r#"{"result": {"user": "7"}}"#).await;
        let proxy = Proxy::new().connect(&backend.url).timeout(Duration::from_millis(500));
        let connect = proxy.connect_proxy().unwrap();
        assert_eq!(connect.timeout, Duration::from_millis(500));
        let identity = connect.into_auth().authenticate(request(None, None)).await.unwrap();
        assert_eq!(identity.user_id(), "7");
        assert!(Proxy::new().connect_proxy().is_none());
    }

    /// Collects log output.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_unavailable_backend_is_logged_with_its_url_and_reason() {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let app = App::start(StatusCode::BAD_GATEWAY, "", Duration::ZERO).await;
        let answer = connect(&app.url, request(None, None)).await;
        assert_eq!(
            answer,
            Err(Refusal::Unavailable("authentication backend unavailable".into()))
        );
        // A backend that answers is not logged.
        let fine = App::answering(r#"{"result": {}}"#).await;
        let proxy = Proxy::new().subscribe(&fine.url);
        assert!(proxy.ask_subscribe("c-1", "42", "chat", None).await.is_ok());

        let text = String::from_utf8_lossy(&log.0.lock()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("WARN"), "{text}");
        assert!(lines[0].contains("authentication backend unavailable"), "{text}");
        assert!(lines[0].contains(&app.url), "{text}");
        assert!(lines[0].contains("502"), "{text}");
    }
}
