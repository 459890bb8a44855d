//! Encoding RFC 6455 frames: headers, masking, close payloads. Framing a message once for many
//! sockets is built on this in `prepared.rs`.

use bytes::{BufMut, Bytes, BytesMut};

pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// Which end of the connection we are: it decides who masks (RFC 6455 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Server,
    Client,
}

/// Longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
pub(crate) const MAX_HEADER: usize = 14;

/// A complete, unmasked, single-frame text message (FIN set, opcode 1).
pub(crate) fn server_text(payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    put_frame(&mut frame, true, TEXT, payload, None);
    frame.freeze()
}

/// A complete, unmasked, single-frame message with RSV1 set: a message compressed with
/// permessage-deflate (`payload` is the compressed data).
pub(crate) fn server_compressed(opcode: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    put_frame(&mut frame, true, opcode | super::deflate::RSV1, payload, None);
    frame.freeze()
}

/// The header length of an unmasked frame (such as [`server_text`] makes): 2, 4 or 10 bytes.
pub(crate) fn header_len(frame: &[u8]) -> usize {
    match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

/// Appends one frame to `out`. A client passes the mask its frame is sent with.
pub(crate) fn put_frame(out: &mut BytesMut, fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    put_header(out, fin, opcode, payload.len(), mask);
    let start = out.len();
    out.put_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask, 0);
    }
}

/// Appends a frame header (with the mask key, if any) for a payload of `len` bytes.
pub(crate) fn put_header(out: &mut BytesMut, fin: bool, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    out.reserve(MAX_HEADER);
    out.put_u8(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.put_u8(mask_bit | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(mask_bit | 126);
        out.put_u16(len);
    } else {
        out.put_u8(mask_bit | 127);
        out.put_u64(len as u64);
    }
    if let Some(mask) = mask {
        out.put_slice(&mask);
    }
}

/// The payload of a close frame: the code, then the reason.
pub(crate) fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut payload = BytesMut::with_capacity(2 + reason.len());
    payload.put_u16(code);
    payload.put_slice(reason.as_bytes());
    payload.freeze()
}

/// XORs `data` with the mask, `offset` bytes into the masked payload (RFC 6455 §5.3). Eight bytes
/// at a time: unmasking is on the path of every byte a client sends.
pub(crate) fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = [0u8; 4];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(offset + i) % 4];
    }
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// Close codes a peer may send (RFC 6455 §7.4; 1004–1006 and 1015 are never sent on the wire).
pub(crate) fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        assert_eq!(&server_text(b"hi")[..], b"\x81\x02hi");
        let medium = server_text(&[b'a'; 300]);
        assert_eq!(&medium[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(medium.len(), 304);
        let large = server_text(&vec![b'a'; 70_000]);
        assert_eq!(&large[..10], &[0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
    }

    #[test]
    fn masking_round_trips_at_any_offset() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..=50).collect();
        for offset in 0..8 {
            let mut masked = data.clone();
            apply_mask(&mut masked, mask, offset);
            // Byte by byte, as the RFC defines it.
            for (i, (m, d)) in masked.iter().zip(&data).enumerate() {
                assert_eq!(*m, d ^ mask[(offset + i) % 4]);
            }
            apply_mask(&mut masked, mask, offset);
            assert_eq!(masked, data);
        }
    }

    #[test]
    fn rfc_masked_hello() {
        // RFC 6455 §5.7: a masked "Hello".
        let mut out = BytesMut::new();
        put_frame(&mut out, true, TEXT, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(
            &out[..],
            &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }
}
