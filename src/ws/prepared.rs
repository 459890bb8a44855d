//! `PreparedMessage`: a text message framed once and sent to many sockets.
//!
//! A publication goes to many connections with the same bytes. A server's frames are not masked
//! (RFC 6455 §5.1), so the complete frame — header and payload — is the same for every subscriber:
//! it is built once and shared (`Bytes`), and each server socket queues a reference to it, which
//! its task copies into its next batch ("corking") or writes from the shared bytes, instead of
//! encoding a header per subscriber per message.
//!
//! A client's frames must be masked, each with a fresh key (§5.3), so the shared frame is never
//! written by a client socket: it sends the payload (a slice of the same bytes, not a copy) as an
//! ordinary text message, framed and masked when written. Which end a socket is, only its task
//! knows; that is where the choice is made.

use super::deflate;
use super::frame;
use super::Text;
use bytes::Bytes;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// A text message framed once, to be sent to many sockets with
/// [`WebSocket::send_prepared`](super::WebSocket::send_prepared).
///
/// Cloning it, and sending it, costs a reference-count increment: every socket shares the same
/// bytes.
///
/// ```
/// use switchboard::ws::{PreparedMessage, Text};
/// let message = PreparedMessage::text(&Text::from("hello"));
/// assert_eq!(message.as_str(), "hello");
/// ```
#[derive(Clone)]
pub struct PreparedMessage {
    /// One complete, unmasked, single-frame text message.
    frame: Bytes,
    /// The same message compressed (permessage-deflate, a fresh 15-bit window), framed: made
    /// once, on the first send to a socket that takes it, and shared by all. The plain frame if
    /// compressing failed.
    deflated: Arc<OnceLock<Bytes>>,
}

impl PreparedMessage {
    /// Frames `text` as one unmasked text frame (the payload is copied once, here).
    pub fn text(text: &Text) -> Self {
        Self {
            frame: frame::server_text(text.as_bytes()),
            deflated: Arc::default(),
        }
    }

    /// The message's text.
    pub fn as_str(&self) -> &str {
        let payload = &self.frame[frame::header_len(&self.frame)..];
        // Built from a `Text` by `text`, the only constructor.
        std::str::from_utf8(payload).unwrap_or_default()
    }

    /// The length of the text, in bytes.
    pub(super) fn payload_len(&self) -> usize {
        self.frame.len() - frame::header_len(&self.frame)
    }

    /// The message as a compressed server frame (RSV1), compressed on the first call; or the
    /// plain frame if compressing failed.
    pub(super) fn deflated_frame(&self) -> &Bytes {
        self.deflated.get_or_init(|| {
            let payload = &self.frame[frame::header_len(&self.frame)..];
            match deflate::compress_shared(payload) {
                Some(compressed) => frame::server_compressed(frame::TEXT, &compressed),
                None => self.frame.clone(),
            }
        })
    }

    /// The complete server frame, as a server socket writes it.
    pub(super) fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The complete server frame, taken (no reference-count traffic).
    pub(super) fn into_frame(self) -> Bytes {
        self.frame
    }

    /// The payload, sharing the frame's bytes: what a client socket frames (masked) and writes.
    pub(super) fn payload(&self) -> Bytes {
        self.frame.slice(frame::header_len(&self.frame)..)
    }
}

impl fmt::Debug for PreparedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PreparedMessage").field(&self.as_str()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{apply_mask, Role};
    use crate::ws::io::Io;
    use crate::ws::{driver, Config, Handler, Handshake, WebSocket};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    struct Nop;
    impl Handler for Nop {}

    /// A socket with `role` run over loopback TCP, and the raw peer end.
    async fn socket(role: Role) -> (WebSocket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = TcpStream::connect(addr).await.expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        let handshake = Handshake {
            uri: http::Uri::from_static("/"),
            headers: http::HeaderMap::new(),
            peer: None,
        };
        let ws = WebSocket::new(handshake, 1 << 20);
        let config = Config::default();
        tokio::spawn(driver::run(
            Io::Tcp(stream),
            Bytes::new(),
            role,
            ws.clone(),
            Nop,
            config,
            None,
            None,
        ));
        (ws, peer)
    }

    #[test]
    fn payload_and_text_skip_every_header_length() {
        for len in [0, 1, 125, 126, 300, 65_535, 65_536, 70_000] {
            let text = Text::from("é".repeat(len / 2) + &"a".repeat(len % 2));
            let message = PreparedMessage::text(&text);
            assert_eq!(message.frame(), &frame::server_text(text.as_bytes()));
            assert_eq!(&message.payload(), text.as_bytes());
            assert_eq!(message.as_str(), text.as_str());
        }
    }

    #[tokio::test]
    async fn a_server_socket_writes_the_shared_frame_as_is() {
        let (ws, mut peer) = socket(Role::Server).await;
        let message = PreparedMessage::text(&Text::from("hello"));
        ws.send_prepared(&message).expect("queued");
        let mut got = vec![0u8; message.frame().len()];
        peer.read_exact(&mut got).await.expect("read");
        assert_eq!(got, &message.frame()[..]);
        assert_eq!(got, b"\x81\x05hello");
    }

    #[tokio::test]
    async fn a_client_socket_sends_the_payload_masked() {
        let (ws, mut peer) = socket(Role::Client).await;
        let message = PreparedMessage::text(&Text::from("hello"));
        ws.send_prepared(&message).expect("queued");
        // FIN + text, the mask bit, a 5-byte payload, the key, the masked payload.
        let mut got = [0u8; 2 + 4 + 5];
        peer.read_exact(&mut got).await.expect("read");
        assert_eq!(got[..2], [0x81, 0x80 | 5]);
        let key = [got[2], got[3], got[4], got[5]];
        let mut payload = got[6..].to_vec();
        apply_mask(&mut payload, key, 0);
        assert_eq!(payload, b"hello");
    }
}
