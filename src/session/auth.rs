//! The session's side of identity: authenticating a connection (`?token=` on the URL or a
//! `connect` message), `refresh`, the gate that refuses everything else before `connected`, and
//! the subscribe-time checks that read the identity (channels keyed by user, subscription
//! tokens). What the client sees is fixed by PROTOCOL.md, "Identity": an answer, an error reply,
//! or a close code — never a bare reset.

use super::{reply, Session};
use crate::auth::{self, AuthRequest, Deadline, Identity, Refusal};
use crate::node::Refused;
use crate::protocol::{text, ClientMessage, ServerMessage};
use crate::router::ChannelDef;
use crate::ws::{Handshake, WebSocket};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// 4005: the identity expired (or a presented token already had): get a new token, reconnect.
pub(crate) const CLOSE_TOKEN_EXPIRED: u16 = 4005;
/// 4001: no valid `connect` within the handshake timeout.
pub(crate) const CLOSE_AUTH_TIMEOUT: u16 = 4001;
/// 4008: the user has its limit of connections on this node.
pub(crate) const CLOSE_TOO_MANY_CONNECTIONS: u16 = 4008;
/// 4500: the token is not valid: do not retry with the same token.
pub(crate) const CLOSE_INVALID_TOKEN: u16 = 4500;

/// What a session keeps about its identity, on nodes with authentication (boxed: most of its
/// life a connection only reads it, and nodes without authentication carry none).
pub(super) struct SessionAuth {
    /// `None` until the connection is authenticated.
    identity: Option<Arc<Identity>>,
    /// When the node closes the connection unless something changes: the handshake timeout
    /// before `connected`, the identity's expiry after.
    deadline: Option<Deadline>,
    /// Counted in the node's connections of its user (`Limits::connections_per_user`).
    counted: bool,
    /// The `?token=` of the URL, until the connection opens and presents it.
    pending_token: Option<String>,
}

impl SessionAuth {
    pub(super) fn with_token(token: Option<String>) -> Self {
        Self {
            identity: None,
            deadline: None,
            counted: false,
            pending_token: token,
        }
    }
}

/// A close code's reason, within the 123 bytes a close frame allows.
fn close_reason(text: &str) -> &str {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Session {
    /// The connection's identity: anonymous on a node without authentication, or before
    /// `connected` on a node where it is optional.
    pub(super) fn identity(&self) -> Arc<Identity> {
        match &self.auth {
            Some(state) => state.identity.clone().unwrap_or_else(auth::anonymous),
            None => auth::anonymous(),
        }
    }

    /// On open, on a node with authentication: authenticates a `?token=` at once; otherwise, if
    /// authentication is required, starts the handshake timeout. Returns true when the
    /// connection is authenticated (so the `on_connect` hooks may run).
    pub(super) async fn open_auth(&mut self, ws: &WebSocket) -> bool {
        let Some(auth) = self.node.inner.auth.clone() else {
            return true;
        };
        let required = auth.required;
        let state = self.auth.get_or_insert_with(|| Box::new(SessionAuth::with_token(None)));
        state.identity = (!required).then(auth::anonymous);
        if let Some(token) = state.pending_token.take() {
            // One look at the handshake, not kept: most connections never need it again.
            let handshake = ws.handshake_snapshot();
            if self.authenticate(ws, handshake, Some(token), None, None).await {
                return true;
            }
        }
        if required && !ws.is_closed() && self.is_unauthenticated() {
            let at = Instant::now() + self.node.inner.ws_config.handshake_timeout;
            let deadline =
                self.node
                    .inner
                    .deadlines
                    .set(ws, at, CLOSE_AUTH_TIMEOUT, "authentication timeout: send connect first");
            self.set_deadline(Some(deadline));
        }
        !required
    }

    fn is_unauthenticated(&self) -> bool {
        self.auth.as_ref().is_some_and(|state| state.identity.is_none())
    }

    fn has_connected(&self) -> bool {
        // An optional-auth node's anonymous connection may still `connect`: it is "connected"
        // only with an identity from the hook, which is never the shared anonymous one.
        self.auth
            .as_ref()
            .and_then(|state| state.identity.as_ref())
            .is_some_and(|identity| !Arc::ptr_eq(identity, &auth::anonymous()))
    }

    fn set_deadline(&mut self, deadline: Option<Deadline>) {
        if let Some(state) = &mut self.auth {
            if let Some(old) = std::mem::replace(&mut state.deadline, deadline) {
                self.node.inner.deadlines.cancel(old);
            }
        }
    }

    /// Forgets the connection's deadline and uncounts it from its user's (it closed).
    pub(super) fn close_auth(&mut self, ws: &WebSocket) {
        self.set_deadline(None);
        if self.auth.as_ref().is_some_and(|state| state.counted) {
            self.node
                .inner
                .user_connections
                .remove(self.identity().user_id(), ws.id());
        }
    }

    /// True when the message may be handled: the connection is authenticated, or the message is
    /// `connect`. Otherwise the refusal is already sent.
    pub(super) fn admit(&self, ws: &WebSocket, message: &ClientMessage) -> bool {
        if !self.is_unauthenticated() || matches!(message, ClientMessage::Connect { .. }) {
            return true;
        }
        let (channel, id) = message.channel_and_id();
        reply(
            ws,
            ServerMessage::Error {
                channel: channel.map(str::to_owned),
                message: text::NOT_CONNECTED.to_owned(),
                id: id.cloned(),
            },
        );
        false
    }

    /// `connect`.
    pub(super) async fn connect(
        &mut self,
        ws: &WebSocket,
        token: Option<String>,
        data: Option<Value>,
        id: Option<Value>,
    ) {
        if self.node.inner.auth.is_none() {
            // Nothing to check: a client that always connects works on any node.
            let connected = ServerMessage::Connected {
                id,
                client: self.client_id(ws),
                user: String::new(),
                expires_in: None,
            };
            return reply(ws, connected);
        }
        if self.has_connected() {
            return reply(
                ws,
                ServerMessage::Error {
                    channel: None,
                    message: text::ALREADY_CONNECTED.to_owned(),
                    id,
                },
            );
        }
        let was_anonymous = !self.node.inner.auth.as_ref().is_some_and(|auth| auth.required);
        let handshake = ws.handshake_snapshot();
        if self.authenticate(ws, handshake, token, data, id).await && !was_anonymous {
            // On a node that requires authentication the hooks wait for `connected`; where it is
            // optional they ran when the connection opened.
            self.run_on_connect(ws);
        }
    }

    /// `refresh`: the same user's new token extends the connection's life.
    pub(super) async fn refresh(&mut self, ws: &WebSocket, token: String, id: Option<Value>) {
        let (Some(auth), true) = (self.node.inner.auth.clone(), self.has_connected()) else {
            return reply(ws, error_without_channel(text::REFRESH_BEFORE_CONNECT, id));
        };
        let current = self.identity();
        let request = AuthRequest {
            client: self.client_id(ws),
            handshake: ws.handshake_snapshot(),
            token: Some(token),
            data: None,
            refresh: true,
        };
        match auth.authenticate(request).await {
            Ok(identity) if identity.user_id() != current.user_id() => {
                tracing::info!(
                    conn = ws.id(),
                    user = current.user_id(),
                    "refresh with another user's token refused"
                );
                reply(ws, error_without_channel(text::REFRESH_OTHER_USER, id));
            }
            Ok(identity) if identity.is_expired() => refuse(ws, Refusal::Expired, id),
            Ok(identity) => {
                let expires_in = identity.expires_in();
                self.establish(ws, identity);
                reply(ws, ServerMessage::Refreshed { id, expires_in });
            }
            Err(refusal) => refuse(ws, refusal, id),
        }
    }

    /// Asks the hook; on success the connection is authenticated and told `connected`.
    async fn authenticate(
        &mut self,
        ws: &WebSocket,
        handshake: Handshake,
        token: Option<String>,
        data: Option<Value>,
        id: Option<Value>,
    ) -> bool {
        let Some(auth) = self.node.inner.auth.clone() else {
            return false;
        };
        let request = AuthRequest {
            client: self.client_id(ws),
            handshake,
            token,
            data,
            refresh: false,
        };
        match auth.authenticate(request).await {
            Ok(identity) if identity.is_expired() => {
                refuse(ws, Refusal::Expired, id);
                false
            }
            Ok(identity) if !self.count_user(ws, identity.user_id()) => {
                self.node.inner.counters.limit_refusals.add(Refused::UserConnections);
                tracing::info!(
                    conn = ws.id(),
                    user = identity.user_id(),
                    "too many connections for this user"
                );
                let _ = ws.close(CLOSE_TOO_MANY_CONNECTIONS, "too many connections for this user");
                false
            }
            Ok(identity) => {
                let connected = ServerMessage::Connected {
                    id,
                    client: self.client_id(ws),
                    user: identity.user_id().to_owned(),
                    expires_in: identity.expires_in(),
                };
                self.establish(ws, identity);
                reply(ws, connected);
                true
            }
            Err(refusal) => {
                refuse(ws, refusal, id);
                false
            }
        }
    }

    /// Counts the connection in `user`'s; false if the user has its limit of connections on
    /// this node already.
    fn count_user(&mut self, ws: &WebSocket, user: &str) -> bool {
        let Some(state) = &mut self.auth else { return true };
        if state.counted || user.is_empty() {
            return true;
        }
        let max = self.node.inner.limits.connections_per_user;
        state.counted = self.node.inner.user_connections.try_add(user, ws, max);
        state.counted
    }

    /// Takes `identity` as the connection's, with its expiry as the deadline.
    fn establish(&mut self, ws: &WebSocket, identity: Identity) {
        let deadline = identity.expires_in().map(|secs| {
            self.node.inner.deadlines.set(
                ws,
                Instant::now() + Duration::from_secs(secs),
                CLOSE_TOKEN_EXPIRED,
                "token expired",
            )
        });
        let identity = Arc::new(identity);
        if let Some(connection) = &self.connection {
            connection.set_identity(identity.clone());
        }
        if let Some(state) = &mut self.auth {
            state.identity = Some(identity);
        }
        self.set_deadline(deadline);
    }

    /// The connection's client id: the node's name and the connection's number, unique across
    /// the nodes that share a broker.
    pub(super) fn client_id(&self, ws: &WebSocket) -> String {
        self.node.client_id(ws.id())
    }

    /// The subscribe-time `data` as the channel sees it, after the identity's checks: a channel
    /// keyed by user gets the connection's user in its user field (whatever the client sent); a
    /// channel that needs a subscription token gets a valid one. `Err` is the refusal's text.
    pub(super) async fn admit_subscriber(
        &self,
        ws: &WebSocket,
        def: &ChannelDef,
        name: &str,
        data: Option<&Value>,
        token: Option<&str>,
    ) -> Result<Option<Value>, String> {
        let identity = self.identity();
        if def.namespace.is_some_and(|rules| rules.user_limited) && !may_use_user_channel(&identity, name) {
            return Err(text::PERMISSION_DENIED.to_owned());
        }
        if def.access.proxy {
            let Some(proxy) = self.node.inner.proxy.as_ref().filter(|p| p.has_subscribe()) else {
                tracing::warn!(
                    channel = def.name,
                    "a channel asks the subscribe proxy but the node has none"
                );
                return Err(text::PERMISSION_DENIED.to_owned());
            };
            let client = self.client_id(ws);
            let asked = proxy.ask_subscribe(&client, identity.user_id(), name, data).await;
            proxy_refusal(ws, asked, text::SUBSCRIBE_UNAVAILABLE)?;
        }
        if def.access.token {
            let tokens = self
                .node
                .inner
                .auth
                .as_ref()
                .and_then(|auth| auth.subscription_tokens.clone());
            let Some(tokens) = tokens else {
                tracing::warn!(
                    channel = def.name,
                    "a channel requires subscription tokens but the node has no Jwt to verify them"
                );
                return Err(text::PERMISSION_DENIED.to_owned());
            };
            let Some(token) = token else {
                return Err(text::PERMISSION_DENIED.to_owned());
            };
            if let Err(refusal) = tokens.verify_subscription(token, identity.user_id(), name).await {
                tracing::info!(channel = name, user = identity.user_id(), %refusal, "subscription token refused");
                return Err(text::PERMISSION_DENIED.to_owned());
            }
        }
        self.keyed_data(def, data)
    }

    /// `data` with the connection's user in the user field of a channel keyed by user.
    pub(super) fn keyed_data(&self, def: &ChannelDef, data: Option<&Value>) -> Result<Option<Value>, String> {
        let Some(field) = &def.access.user_field else {
            return Ok(data.cloned());
        };
        let identity = self.identity();
        if identity.is_anonymous() {
            return Err(text::PERMISSION_DENIED.to_owned());
        }
        let mut object = match data {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(object)) => object.clone(),
            // Not an object: the parameter check refuses it as for any channel.
            Some(other) => return Ok(Some(other.clone())),
        };
        object.insert(field.clone(), Value::String(identity.user_id().to_owned()));
        Ok(Some(Value::Object(object)))
    }
}

/// True when `identity` is one of the users a channel of a user-limited namespace names
/// (`inbox:mail#42`); anonymous connections never are.
pub(super) fn may_use_user_channel(identity: &Identity, channel: &str) -> bool {
    let user = identity.user_id();
    !user.is_empty() && crate::router::users_of(channel).any(|named| named == user)
}

/// A proxy's answer as the error text for the client (`Err`); a `disconnect` also closes the
/// connection with its code.
pub(super) fn proxy_refusal<T>(ws: &WebSocket, answer: Result<T, Refusal>, unavailable: &str) -> Result<T, String> {
    answer.map_err(|refusal| match refusal {
        Refusal::Error { message, .. } => message,
        Refusal::Disconnect { code, reason } => {
            let _ = ws.close(code, close_reason(&reason));
            reason
        }
        // The proxy logged why.
        Refusal::Unavailable(_) => unavailable.to_owned(),
        // Not a proxy's answer (they concern tokens), but readable if a hook ever gives them.
        other @ (Refusal::Expired | Refusal::InvalidToken(_)) => other.to_string(),
    })
}

/// Tells the client why it was refused: an error reply, or a close with the refusal's code.
fn refuse(ws: &WebSocket, refusal: Refusal, id: Option<Value>) {
    match refusal {
        Refusal::Expired => {
            let _ = ws.close(CLOSE_TOKEN_EXPIRED, "token expired");
        }
        Refusal::InvalidToken(reason) => {
            tracing::info!(conn = ws.id(), %reason, "invalid token");
            let _ = ws.close(CLOSE_INVALID_TOKEN, close_reason(&format!("invalid token: {reason}")));
        }
        Refusal::Disconnect { code, reason } => {
            let _ = ws.close(code, close_reason(&reason));
        }
        Refusal::Error { message, .. } => reply(ws, error_without_channel(&message, id)),
        Refusal::Unavailable(reason) => {
            tracing::warn!(conn = ws.id(), %reason, "authentication backend unavailable");
            reply(ws, error_without_channel(text::AUTH_UNAVAILABLE, id));
        }
    }
}

fn error_without_channel(message: &str, id: Option<Value>) -> ServerMessage {
    ServerMessage::Error {
        channel: None,
        message: message.to_owned(),
        id,
    }
}

/// Takes `?token=…` out of the handshake's URL: its value, percent-decoded (`None` without
/// one), and the URL without it (other parameters stay, in order).
pub(crate) fn take_query_token(handshake: &mut Handshake) -> Option<String> {
    let query = handshake.query()?;
    let mut token = None;
    let mut rest: Vec<&str> = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("token=") {
            Some(value) if token.is_none() => token = Some(percent_decode(value)),
            Some(_) => {}
            None => rest.push(pair),
        }
    }
    let token = token.filter(|token| !token.is_empty());
    let path = handshake.uri.path();
    let kept = if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    let mut parts = handshake.uri.clone().into_parts();
    if let Ok(path_and_query) = kept.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            handshake.uri = uri;
        }
    }
    token
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("a.b_c-d"), "a.b_c-d");
        assert_eq!(super::percent_decode("a%2Eb%3d"), "a.b=");
        assert_eq!(super::percent_decode("bad%zz%"), "bad%zz%");
        assert_eq!(super::percent_decode("%4"), "%4");
    }

    #[test]
    fn the_token_is_taken_out_of_the_url() {
        let mut handshake = crate::ws::Handshake {
            uri: http::Uri::from_static("/ws?room=1&token=a.b%2Ec&x=2"),
            headers: http::HeaderMap::new(),
            peer: None,
        };
        assert_eq!(super::take_query_token(&mut handshake).as_deref(), Some("a.b.c"));
        assert_eq!(handshake.uri, "/ws?room=1&x=2");
        let mut only = crate::ws::Handshake {
            uri: http::Uri::from_static("/?token=t"),
            headers: http::HeaderMap::new(),
            peer: None,
        };
        assert_eq!(super::take_query_token(&mut only).as_deref(), Some("t"));
        assert_eq!(only.uri, "/");
        let mut none = crate::ws::Handshake {
            uri: http::Uri::from_static("/ws?a=1"),
            headers: http::HeaderMap::new(),
            peer: None,
        };
        assert_eq!(super::take_query_token(&mut none), None);
        assert_eq!(none.uri, "/ws?a=1");
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = "é".repeat(100);
        let reason = super::close_reason(&long);
        assert!(reason.len() <= 123);
        assert!(long.starts_with(reason));
    }
}
