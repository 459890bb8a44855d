//! The client's side of identity (PROTOCOL.md, "Identity"): `connect` first on every connection,
//! nothing else until `connected`; a fresh token from the application's `get_token` after a 4005
//! (or, before the expiry, a `refresh`); and what the server said the connection is.

use super::ClientError;
use crate::protocol::ClientMessage;
use crate::ws::WebSocket;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The id of the client's `connect`: its answer is told apart from the calls' numeric ids.
pub(crate) const CONNECT_ID: &str = "connect";
/// The id of the client's `refresh`.
pub(crate) const REFRESH_ID: &str = "refresh";

/// The application's source of fresh connection tokens.
pub(crate) type TokenSource = Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// Who the server says the connection is (its `connected`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The connection's client id on the server.
    pub client: String,
    /// The user id (`""`: anonymous).
    pub user: String,
    /// Seconds the identity had left when the server said so (`None`: it does not expire).
    pub expires_in: Option<u64>,
}

/// How the client authenticates.
pub(crate) struct ClientAuth {
    /// The token to present next; `None` asks `get_token` (first connection without a token,
    /// or after the server said 4005).
    token: Mutex<Option<String>>,
    get_token: Option<TokenSource>,
    data: Option<Value>,
    identity: Mutex<Option<ClientIdentity>>,
}

impl ClientAuth {
    pub fn new(token: Option<String>, get_token: Option<TokenSource>, data: Option<Value>) -> Self {
        Self {
            token: Mutex::new(token),
            get_token,
            data,
            identity: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> Option<ClientIdentity> {
        self.identity.lock().clone()
    }

    pub fn has_token_source(&self) -> bool {
        self.get_token.is_some()
    }

    /// The token expired (4005): the next connection asks `get_token` for a fresh one.
    pub fn token_expired(&self) {
        if self.get_token.is_some() {
            self.token.lock().take();
        }
        self.identity.lock().take();
    }

    /// The connection ended: its identity with it.
    pub fn disconnected(&self) {
        self.identity.lock().take();
    }

    async fn fresh_token(&self) -> Result<String, ClientError> {
        let Some(get_token) = &self.get_token else {
            return Err(ClientError::Remote("no get_token callback for a fresh token".into()));
        };
        let token = get_token().await.map_err(ClientError::Remote)?;
        *self.token.lock() = Some(token.clone());
        Ok(token)
    }

    /// The `connect` for a new connection: with the current token, or a fresh one.
    pub async fn connect_message(&self) -> Result<ClientMessage, ClientError> {
        let current = self.token.lock().clone();
        let token = match current {
            Some(token) => Some(token),
            None if self.get_token.is_some() => Some(self.fresh_token().await?),
            None => None,
        };
        Ok(ClientMessage::Connect {
            token,
            data: self.data.clone(),
            id: Some(Value::from(CONNECT_ID)),
        })
    }

    /// `connected`: keeps the identity and, when it expires and a token source exists, refreshes
    /// it on `ws` a little before.
    pub fn connected(self: &Arc<Self>, ws: &WebSocket, identity: ClientIdentity) {
        let expires_in = identity.expires_in;
        *self.identity.lock() = Some(identity);
        self.schedule_refresh(ws, expires_in);
    }

    /// `refreshed`: the new expiry.
    pub fn refreshed(self: &Arc<Self>, ws: &WebSocket, expires_in: Option<u64>) {
        if let Some(identity) = self.identity.lock().as_mut() {
            identity.expires_in = expires_in;
        }
        self.schedule_refresh(ws, expires_in);
    }

    fn schedule_refresh(self: &Arc<Self>, ws: &WebSocket, expires_in: Option<u64>) {
        let (Some(secs), true) = (expires_in, self.get_token.is_some()) else {
            return;
        };
        let auth = Arc::downgrade(self);
        let ws = ws.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(refresh_delay(secs)) => {}
                () = ws.closed() => return,
            }
            let Some(auth) = auth.upgrade() else { return };
            match auth.fresh_token().await {
                Ok(token) => {
                    let refresh = ClientMessage::Refresh {
                        token,
                        id: Some(Value::from(REFRESH_ID)),
                    };
                    let _ = ws.send_text(refresh.encode());
                }
                // The server's 4005 at the expiry then starts a new connection, which asks again.
                Err(err) => tracing::warn!(%err, "get_token failed: the connection will expire"),
            }
        });
    }
}

/// When to refresh an identity that expires in `secs`: 10 s before, or at three quarters of a
/// shorter life.
fn refresh_delay(secs: u64) -> Duration {
    if secs > 40 {
        Duration::from_secs(secs - 10)
    } else {
        Duration::from_millis(secs * 750)
    }
}

#[cfg(test)]
mod tests {
    use super::refresh_delay;
    use std::time::Duration;

    #[test]
    fn refreshes_before_the_expiry() {
        assert_eq!(refresh_delay(3600), Duration::from_secs(3590));
        assert_eq!(refresh_delay(4), Duration::from_secs(3));
        assert_eq!(refresh_delay(0), Duration::ZERO);
    }
}
