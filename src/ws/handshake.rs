//! `Handshake`: what a connection's opening handshake said — and how a connection keeps it.
//!
//! Every connection keeps its handshake for its whole life (a channel opened an hour later may
//! authorize on a cookie), but most connections never look at it again after `on_open`. Decoded,
//! a `Uri` and a `HeaderMap` cost ~400 bytes per connection even with a single `Host` header (a
//! browser's dozen headers, far more): a fifth of an idle connection. So a connection keeps a
//! [`Record`]: the same information as one byte string, decoded into a [`Handshake`] the first
//! time anyone asks for it.

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use std::net::SocketAddr;
use std::sync::OnceLock;

/// The opening handshake of a connection: what the client asked for and who it is.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Path and query of the request (for a client, the URL it connected to).
    pub uri: Uri,
    /// Request headers (for a client, the server's response headers), without those that only
    /// serve the handshake itself (`Upgrade`, `Connection`, `Sec-WebSocket-Key`, `-Version`,
    /// `-Extensions`).
    pub headers: HeaderMap,
    /// The peer's address, when known (a server mounted without connect info does not know it).
    pub peer: Option<SocketAddr>,
}

impl Handshake {
    /// The request path, e.g. `/ws`.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }
}

/// A handshake as one byte string, decoded on first use.
///
/// Layout: the peer address (text, empty if unknown), the URI (text), then for each header its
/// name, its value and a sensitivity flag; every field is length-prefixed (u32, little endian).
pub(super) struct Record {
    bytes: Box<[u8]>,
    decoded: OnceLock<Box<Handshake>>,
}

impl Record {
    pub(super) fn new(handshake: &Handshake) -> Self {
        let mut bytes = Vec::new();
        let peer = handshake.peer.map(|peer| peer.to_string()).unwrap_or_default();
        put(&mut bytes, peer.as_bytes());
        put(&mut bytes, handshake.uri.to_string().as_bytes());
        for (name, value) in &handshake.headers {
            put(&mut bytes, name.as_str().as_bytes());
            put(&mut bytes, value.as_bytes());
            bytes.push(u8::from(value.is_sensitive()));
        }
        Self {
            bytes: bytes.into_boxed_slice(),
            decoded: OnceLock::new(),
        }
    }

    /// The handshake, decoded the first time (and kept from then on).
    pub(super) fn get(&self) -> &Handshake {
        self.decoded.get_or_init(|| Box::new(decode(&self.bytes)))
    }

    /// A copy of the handshake, without keeping the decoded form: for a look taken once (say,
    /// by authentication at the opening), which should not cost the connection ~400 bytes for
    /// the rest of its life.
    pub(super) fn snapshot(&self) -> Handshake {
        match self.decoded.get() {
            Some(decoded) => Handshake::clone(decoded),
            None => decode(&self.bytes),
        }
    }
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    // Header values are bounded by the HTTP parser's buffer, far below 4 GiB; saturate anyway.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&field[..len as usize]);
}

/// Reads back what [`Record::new`] wrote. The bytes were made from valid values, so nothing
/// here fails in practice; a field that did not parse would be left out rather than panic.
fn decode(bytes: &[u8]) -> Handshake {
    let mut fields = Fields(bytes);
    let peer = fields
        .next()
        .and_then(|peer| std::str::from_utf8(peer).ok()?.parse().ok());
    let uri = fields
        .next()
        .and_then(|uri| Uri::try_from(uri).ok())
        .unwrap_or_default();
    let mut pairs = Vec::new();
    while let (Some(name), Some(value), Some(flag)) = (fields.next(), fields.next(), fields.byte()) {
        if let (Ok(name), Ok(mut value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            value.set_sensitive(flag == 1);
            pairs.push((name, value));
        }
    }
    // Sized exactly: a `HeaderMap` grown by inserts reserves room for 6 entries (~620 bytes).
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        headers.append(name, value);
    }
    Handshake { uri, headers, peer }
}

struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let field = rest.get(..len)?;
        self.0 = &rest[len..];
        Some(field)
    }

    fn byte(&mut self) -> Option<u8> {
        let (&byte, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(byte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_to_the_handshake_it_was_made_from() {
        let mut headers = HeaderMap::new();
        headers.append("host", HeaderValue::from_static("example.com"));
        headers.append("cookie", HeaderValue::from_static("a=1"));
        headers.append("cookie", HeaderValue::from_static("b=2"));
        let mut secret = HeaderValue::from_static("Bearer x");
        secret.set_sensitive(true);
        headers.append("authorization", secret);
        headers.append("x-empty", HeaderValue::from_static(""));
        let handshake = Handshake {
            uri: Uri::from_static("/chat?room=lobby&q=%C3%A9"),
            headers,
            peer: Some("[::1]:4321".parse().unwrap()),
        };
        let record = Record::new(&handshake);
        let decoded = record.get();
        assert_eq!(decoded.uri, handshake.uri);
        assert_eq!(decoded.path(), "/chat");
        assert_eq!(decoded.query(), Some("room=lobby&q=%C3%A9"));
        assert_eq!(decoded.headers, handshake.headers);
        let cookies: Vec<_> = decoded.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert!(decoded.headers["authorization"].is_sensitive());
        assert_eq!(decoded.peer, handshake.peer);
        // Decoded once: the same value from then on.
        assert!(std::ptr::eq(record.get(), decoded));
    }

    #[test]
    fn no_peer_no_headers() {
        let handshake = Handshake {
            uri: Uri::from_static("ws://127.0.0.1:9/x"),
            headers: HeaderMap::new(),
            peer: None,
        };
        let decoded = Record::new(&handshake).get().clone();
        assert_eq!(decoded.uri, handshake.uri);
        assert!(decoded.headers.is_empty());
        assert_eq!(decoded.peer, None);
    }
}
