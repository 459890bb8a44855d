//! The close codes a server uses to steer its clients (PROTOCOL.md, "Close codes"): 4000–4499
//! mean "reconnect with backoff", 4500–4999 "do not reconnect". Any other code, and a connection
//! that drops without a close frame, reconnect too.

use std::ops::RangeInclusive;

/// Close codes that ask the client to reconnect (with backoff), as after any drop.
pub const RECONNECT_CODES: RangeInclusive<u16> = 4000..=4499;

/// Close codes that ask the client not to reconnect: it closes for good, and
/// [`Client::server_close`](super::Client::server_close) tells the application why.
pub const NO_RECONNECT_CODES: RangeInclusive<u16> = 4500..=4999;

/// The server's "token expired" (PROTOCOL.md, "Identity"): a client with a `get_token` callback
/// reconnects with a fresh token; one without stops, since its token would only expire again.
pub const TOKEN_EXPIRED: u16 = 4005;

/// The close frame the server ended a connection with: its code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerClose {
    /// The close code (1001 server going away, 1008 slow consumer, 4000–4999 the application's
    /// own; 1005 when the frame carried no code).
    pub code: u16,
    /// The reason text, possibly empty.
    pub reason: String,
}

impl ServerClose {
    /// True when the code asks the client not to reconnect ([`NO_RECONNECT_CODES`]).
    pub fn is_final(&self) -> bool {
        NO_RECONNECT_CODES.contains(&self.code)
    }
}

impl std::fmt::Display for ServerClose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reason.is_empty() {
            write!(f, "close code {}", self.code)
        } else {
            write!(f, "close code {} ({})", self.code, self.reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_4500_to_4999_are_final() {
        let close = |code| ServerClose {
            code,
            reason: String::new(),
        };
        for code in [1000, 1001, 1008, 1011, 4000, 4001, 4499, 3000] {
            assert!(!close(code).is_final(), "{code}");
        }
        for code in [4500, 4501, 4999] {
            assert!(close(code).is_final(), "{code}");
        }
        assert_eq!(close(4501).to_string(), "close code 4501");
        let banned = ServerClose {
            code: 4501,
            reason: "banned".into(),
        };
        assert_eq!(banned.to_string(), "close code 4501 (banned)");
    }
}
