//! Pre-encoded server frames: "frame once, send many".
//!
//! A publication goes to many connections with the same bytes. Server frames are not masked
//! (RFC 6455 §5.1), so the complete frame — header and payload — is identical for every
//! subscriber: it is built once per publication and shared (`Bytes`), and each connection's task
//! copies the frames queued since its last turn into one buffer and writes it with one syscall
//! ("corking", as uWebSockets does), instead of encoding a header per subscriber per message.

use bytes::{BufMut, Bytes, BytesMut};

/// A complete, unmasked, single-frame text message (FIN set, opcode 1).
pub(crate) fn server_text(payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut frame = BytesMut::with_capacity(len + 10);
    frame.put_u8(0x81);
    if len < 126 {
        frame.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        frame.put_u8(126);
        frame.put_u16(len as u16);
    } else {
        frame.put_u8(127);
        frame.put_u64(len as u64);
    }
    frame.put_slice(payload);
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use super::server_text;

    #[test]
    fn header_lengths() {
        assert_eq!(&server_text(b"hi")[..], b"\x81\x02hi");
        let medium = server_text(&[b'a'; 300]);
        assert_eq!(&medium[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(medium.len(), 304);
        let large = server_text(&vec![b'a'; 70_000]);
        assert_eq!(&large[..10], &[0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
    }
}
