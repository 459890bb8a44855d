//! Incremental RFC 6455 frame decoder that holds no read buffer.
//!
//! Why our own: a codec built on a framed reader keeps a read buffer per connection (8 KiB in
//! tokio-websockets), and with tens of thousands of mostly idle subscribers that buffer *is* the
//! memory per connection. This decoder is fed whatever a read returned (from a scratch buffer that
//! lives only during the read) and streams it: a partial header waits in 14 inline bytes, payload
//! goes straight into the message being assembled. An idle connection holds no heap memory for
//! reading at all.
//!
//! It is strict where Autobahn checks: reserved bits and opcodes, masking by role, control frame
//! rules, minimal length encoding, close codes, and UTF-8 validated as the bytes arrive (an
//! invalid text message fails at the first bad byte, not at its end).

use super::deflate::RSV1;
use super::frame::{self, Role, BINARY, CLOSE, CONTINUATION, MAX_HEADER, PING, PONG, TEXT};
use bytes::{Bytes, BytesMut};
use std::borrow::Cow;
use std::collections::VecDeque;

/// A message or control frame from the peer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A complete text message, valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// A close frame; code 1005 when it carried none.
    Close {
        code: u16,
        reason: String,
    },
    /// A complete compressed message (permessage-deflate), as received: the transport inflates
    /// it into `Text` or `Binary` before anyone else sees it.
    Deflated {
        text: bool,
        payload: Bytes,
    },
}

/// Why the peer's bytes cannot be accepted, with the close code to fail the connection with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError {
    pub(crate) code: u16,
    pub(crate) reason: Cow<'static, str>,
}

impl ProtocolError {
    fn protocol(reason: &'static str) -> Self {
        Self {
            code: 1002,
            reason: Cow::Borrowed(reason),
        }
    }

    fn invalid_utf8() -> Self {
        Self {
            code: 1007,
            reason: Cow::Borrowed("invalid utf8"),
        }
    }
}

/// Payload bytes reserved up front for a message announced as large: its length is the peer's
/// claim, so memory grows with the bytes that actually arrive beyond this.
const MAX_RESERVE: usize = 64 * 1024;

/// The frame whose payload is being read.
#[derive(Debug)]
struct FrameInProgress {
    opcode: u8,
    fin: bool,
    mask: Option<[u8; 4]>,
    remaining: u64,
    /// Payload bytes already read, for the mask's phase.
    done: usize,
}

#[derive(Debug)]
pub(crate) struct Decoder {
    role: Role,
    max_message_size: usize,
    header: [u8; MAX_HEADER],
    header_len: usize,
    frame: Option<FrameInProgress>,
    /// Opcode of the data message being assembled (text or binary), across its fragments.
    message_opcode: Option<u8>,
    message: BytesMut,
    /// Prefix of `message` known to be valid UTF-8.
    utf8_valid: usize,
    control: BytesMut,
    failed: bool,
    /// permessage-deflate was agreed: RSV1 may mark a message's first frame.
    deflate: bool,
    /// The message being assembled is compressed (its UTF-8 is checked once inflated).
    compressed: bool,
}

impl Decoder {
    pub(crate) fn new(role: Role, max_message_size: usize, deflate: bool) -> Self {
        Self {
            role,
            max_message_size,
            header: [0; MAX_HEADER],
            header_len: 0,
            frame: None,
            message_opcode: None,
            message: BytesMut::new(),
            utf8_valid: 0,
            control: BytesMut::new(),
            failed: false,
            deflate,
            compressed: false,
        }
    }

    /// Fails the connection from outside (a message that did not inflate): the rest is ignored.
    pub(crate) fn fail(&mut self) {
        self.failed = true;
        self.message = BytesMut::new();
        self.control = BytesMut::new();
    }

    /// Whether nothing is partly received (and the connection has not failed): the decoder may
    /// then be dropped and made anew for the next bytes.
    pub(crate) fn is_idle(&self) -> bool {
        self.header_len == 0 && self.frame.is_none() && self.message_opcode.is_none() && !self.failed
    }

    /// Decodes `input`, appending each complete message to `out`. After an error the connection
    /// is failed: the rest is ignored.
    pub(crate) fn decode(&mut self, mut input: &[u8], out: &mut VecDeque<Decoded>) -> Result<(), ProtocolError> {
        if self.failed {
            return Ok(());
        }
        let result = loop {
            if self.frame.is_none() {
                match self.read_header(&mut input) {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(err) => break Err(err),
                }
            }
            match self.read_payload(&mut input, out) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(err) => break Err(err),
            }
            if input.is_empty() && self.frame.is_none() {
                break Ok(());
            }
        };
        if result.is_err() {
            self.failed = true;
            self.message = BytesMut::new();
            self.control = BytesMut::new();
        }
        result
    }

    /// Collects and checks a frame header. Returns false when `input` ran out first.
    fn read_header(&mut self, input: &mut &[u8]) -> Result<bool, ProtocolError> {
        let needed = loop {
            let needed = self.header_size();
            if self.header_len >= needed {
                break needed;
            }
            let Some((&byte, rest)) = input.split_first() else {
                return Ok(false);
            };
            self.header[self.header_len] = byte;
            self.header_len += 1;
            *input = rest;
            if self.header_len == 2 {
                self.check_first_bytes()?;
            }
        };
        let h = &self.header;
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0F;
        let (len, at) = match h[1] & 0x7F {
            126 => {
                let len = u64::from(u16::from_be_bytes([h[2], h[3]]));
                if len < 126 {
                    return Err(ProtocolError::protocol("invalid payload length"));
                }
                (len, 4)
            }
            127 => {
                let len = u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]);
                if len <= u64::from(u16::MAX) || len >> 63 != 0 {
                    return Err(ProtocolError::protocol("invalid payload length"));
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        let mask = (h[1] & 0x80 != 0).then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        debug_assert_eq!(needed, at + if mask.is_some() { 4 } else { 0 });
        self.header_len = 0;

        if opcode >= CLOSE {
            if opcode == CLOSE && len == 1 {
                return Err(ProtocolError::protocol("invalid payload length"));
            }
            self.control.clear();
        } else {
            // Data: a continuation needs a message in progress, a new message must not interrupt one.
            match (opcode, self.message_opcode) {
                (CONTINUATION, None) | (TEXT | BINARY, Some(_)) => {
                    return Err(ProtocolError::protocol("invalid opcode"));
                }
                _ => {}
            }
            let total = (self.message.len() as u64).saturating_add(len);
            if total > self.max_message_size as u64 {
                return Err(ProtocolError {
                    code: 1009,
                    reason: Cow::Owned(format!("max length: {}", self.max_message_size)),
                });
            }
            if opcode != CONTINUATION {
                self.message_opcode = Some(opcode);
                self.utf8_valid = 0;
                self.compressed = h[0] & RSV1 != 0;
            }
            // Bounded by the size check above.
            self.message.reserve((len as usize).min(MAX_RESERVE));
        }
        self.frame = Some(FrameInProgress {
            opcode,
            fin,
            mask,
            remaining: len,
            done: 0,
        });
        Ok(true)
    }

    /// Checks what the first two bytes decide, before waiting for the rest of the header.
    fn check_first_bytes(&self) -> Result<(), ProtocolError> {
        let (b0, b1) = (self.header[0], self.header[1]);
        let opcode = b0 & 0x0F;
        // RSV1 marks a compressed message, on its first frame only (RFC 7692 §6).
        let rsv1_allowed = self.deflate && matches!(opcode, TEXT | BINARY);
        if b0 & 0x30 != 0 || (b0 & RSV1 != 0 && !rsv1_allowed) {
            return Err(ProtocolError::protocol("invalid extension"));
        }
        if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Err(ProtocolError::protocol("invalid opcode"));
        }
        match (self.role, b1 & 0x80 != 0) {
            (Role::Server, false) => return Err(ProtocolError::protocol("unexpected unmasked frame")),
            (Role::Client, true) => return Err(ProtocolError::protocol("unexpected masked frame")),
            _ => {}
        }
        if opcode >= CLOSE {
            if b0 & 0x80 == 0 {
                return Err(ProtocolError::protocol("fragmented control frame"));
            }
            if b1 & 0x7F > 125 {
                return Err(ProtocolError::protocol("invalid payload length"));
            }
        }
        Ok(())
    }

    /// Bytes of header needed, given what has been read of it.
    fn header_size(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let length = match self.header[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + length + mask
    }

    /// Moves payload bytes into the message or control frame. Returns false when `input` ran out
    /// before the frame's end.
    fn read_payload(&mut self, input: &mut &[u8], out: &mut VecDeque<Decoded>) -> Result<bool, ProtocolError> {
        let Some(frame) = self.frame.as_mut() else {
            return Ok(true);
        };
        let n = usize::try_from(frame.remaining).unwrap_or(usize::MAX).min(input.len());
        let (chunk, rest) = input.split_at(n);
        *input = rest;
        let dest = if frame.opcode >= CLOSE {
            &mut self.control
        } else {
            &mut self.message
        };
        let start = dest.len();
        dest.extend_from_slice(chunk);
        if let Some(mask) = frame.mask {
            frame::apply_mask(&mut dest[start..], mask, frame.done);
        }
        frame.done += n;
        frame.remaining -= n as u64;
        let complete = frame.remaining == 0;
        let (opcode, fin) = (frame.opcode, frame.fin);

        if opcode < CLOSE && self.message_opcode == Some(TEXT) && !self.compressed {
            self.check_utf8(complete && fin)?;
        }
        if !complete {
            return Ok(false);
        }
        self.frame = None;
        match opcode {
            CLOSE => out.push_back(parse_close(&std::mem::take(&mut self.control))?),
            PING => out.push_back(Decoded::Ping(std::mem::take(&mut self.control).freeze())),
            PONG => out.push_back(Decoded::Pong(std::mem::take(&mut self.control).freeze())),
            _ if fin => {
                let payload = std::mem::take(&mut self.message).freeze();
                let text = self.message_opcode.take() == Some(TEXT);
                out.push_back(match (text, std::mem::take(&mut self.compressed)) {
                    (_, true) => Decoded::Deflated { text, payload },
                    (true, false) => Decoded::Text(payload),
                    (false, false) => Decoded::Binary(payload),
                });
                self.utf8_valid = 0;
            }
            _ => {}
        }
        Ok(true)
    }

    /// Validates the text received so far; an incomplete character at the end is allowed until
    /// the message's last byte.
    fn check_utf8(&mut self, last: bool) -> Result<(), ProtocolError> {
        match std::str::from_utf8(&self.message[self.utf8_valid..]) {
            Ok(_) => self.utf8_valid = self.message.len(),
            Err(e) if e.error_len().is_some() || last => return Err(ProtocolError::invalid_utf8()),
            Err(e) => self.utf8_valid += e.valid_up_to(),
        }
        Ok(())
    }
}

fn parse_close(payload: &[u8]) -> Result<Decoded, ProtocolError> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return Ok(Decoded::Close {
            code: 1005,
            reason: String::new(),
        });
    };
    let code = u16::from_be_bytes(*code);
    if !frame::is_sendable_close_code(code) {
        return Err(ProtocolError::protocol("invalid close code"));
    }
    let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::invalid_utf8())?;
    Ok(Decoded::Close {
        code,
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::put_frame;

    const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_frame(&mut out, fin, opcode, payload, MASK);
        out.to_vec()
    }

    /// Feeds `bytes` one byte at a time and all at once; both must give the same result.
    fn decode(bytes: &[u8]) -> (Vec<Decoded>, Option<ProtocolError>) {
        let mut results = Vec::new();
        for step in [1, bytes.len().max(1)] {
            let mut decoder = Decoder::new(Role::Server, 1024, false);
            let mut out = VecDeque::new();
            let mut error = None;
            for chunk in bytes.chunks(step) {
                if let Err(e) = decoder.decode(chunk, &mut out) {
                    error = Some(e);
                    break;
                }
            }
            results.push((out.into_iter().collect::<Vec<_>>(), error));
        }
        let whole = results.pop().unwrap_or_default();
        assert_eq!(
            results.pop(),
            Some((whole.0.iter().map(clone).collect(), whole.1.clone()))
        );
        whole
    }

    fn clone(i: &Decoded) -> Decoded {
        match i {
            Decoded::Text(b) => Decoded::Text(b.clone()),
            Decoded::Binary(b) => Decoded::Binary(b.clone()),
            Decoded::Ping(b) => Decoded::Ping(b.clone()),
            Decoded::Pong(b) => Decoded::Pong(b.clone()),
            Decoded::Close { code, reason } => Decoded::Close {
                code: *code,
                reason: reason.clone(),
            },
            Decoded::Deflated { text, payload } => Decoded::Deflated {
                text: *text,
                payload: payload.clone(),
            },
        }
    }

    #[test]
    fn fragments_with_control_frames_between() {
        let bytes = [
            frame(false, TEXT, b"Hel"),
            frame(true, PING, b"p"),
            frame(false, CONTINUATION, "lo wö".as_bytes()),
            frame(true, CONTINUATION, b"rld"),
            frame(true, BINARY, &[0; 300]),
            frame(true, CLOSE, &[0x03, 0xe8, b'o', b'k']),
        ]
        .concat();
        let (out, err) = decode(&bytes);
        assert_eq!(err, None);
        assert_eq!(
            out,
            vec![
                Decoded::Ping(Bytes::from_static(b"p")),
                Decoded::Text(Bytes::from("Hello wörld")),
                Decoded::Binary(Bytes::from(vec![0; 300])),
                Decoded::Close {
                    code: 1000,
                    reason: "ok".into()
                },
            ]
        );
    }

    #[test]
    fn violations_have_their_code_and_reason() {
        let cases: Vec<(Vec<u8>, u16, &str)> = vec![
            (frame(true, TEXT, &[0xce, 0x41]), 1007, "invalid utf8"),
            (
                [frame(false, TEXT, &[0xce]), frame(true, CONTINUATION, &[0x41])].concat(),
                1007,
                "invalid utf8",
            ),
            (frame(true, TEXT, &[0xce]), 1007, "invalid utf8"),
            (frame(true, BINARY, &[0; 1025]), 1009, "max length: 1024"),
            (
                [frame(false, BINARY, &[0; 600]), frame(true, CONTINUATION, &[0; 600])].concat(),
                1009,
                "max length: 1024",
            ),
            (frame(true, CONTINUATION, b"x"), 1002, "invalid opcode"),
            (
                [frame(false, TEXT, b"a"), frame(true, TEXT, b"b")].concat(),
                1002,
                "invalid opcode",
            ),
            (frame(false, PING, b""), 1002, "fragmented control frame"),
            (frame(true, PING, &[0; 126]), 1002, "invalid payload length"),
            (frame(true, CLOSE, &[3]), 1002, "invalid payload length"),
            (frame(true, CLOSE, &[0x03, 0xed]), 1002, "invalid close code"),
            (frame(true, CLOSE, &[0x03, 0xe8, 0xff]), 1007, "invalid utf8"),
            (vec![0xC1, 0x80, 0, 0, 0, 0], 1002, "invalid extension"),
            (vec![0x83, 0x80, 0, 0, 0, 0], 1002, "invalid opcode"),
            (vec![0x81, 0x00], 1002, "unexpected unmasked frame"),
            (vec![0x82, 0xFE, 0x00, 0x05, 0, 0, 0, 0], 1002, "invalid payload length"),
        ];
        for (bytes, code, reason) in cases {
            let (_, err) = decode(&bytes);
            assert_eq!(
                err.map(|e| (e.code, e.reason.into_owned())),
                Some((code, reason.to_owned())),
                "{bytes:x?}"
            );
        }
    }

    #[test]
    fn rsv1_marks_a_compressed_message_only_where_deflate_allows_it() {
        let decode_with_deflate = |bytes: &[u8]| {
            let mut decoder = Decoder::new(Role::Server, 1024, true);
            let mut out = VecDeque::new();
            let result = decoder
                .decode(bytes, &mut out)
                .map_err(|e| (e.code, e.reason.into_owned()));
            (out.into_iter().collect::<Vec<_>>(), result)
        };
        // On the first frame of a message: the compressed bytes as they came, not UTF-8 checked.
        let bytes = [frame(false, TEXT | RSV1, &[0xff]), frame(true, CONTINUATION, &[0xfe])].concat();
        assert_eq!(
            decode_with_deflate(&bytes),
            (
                vec![Decoded::Deflated {
                    text: true,
                    payload: Bytes::from_static(&[0xff, 0xfe])
                }],
                Ok(())
            )
        );
        let invalid = Err((1002, "invalid extension".to_owned()));
        let continued = [frame(false, BINARY, b"a"), frame(true, CONTINUATION | RSV1, b"b")].concat();
        assert_eq!(decode_with_deflate(&continued).1, invalid);
        assert_eq!(decode_with_deflate(&frame(true, PING | RSV1, b"")).1, invalid);
        assert_eq!(decode_with_deflate(&frame(true, TEXT | 0x20, b"")).1, invalid);
        // Without deflate agreed, RSV1 is refused as before.
        assert_eq!(decode(&frame(true, TEXT | RSV1, b"x")).1.map(|e| e.code), Some(1002));
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_ends() {
        let bytes = frame(true, TEXT, &[b'a', 0xff, b'b', b'c']);
        let mut decoder = Decoder::new(Role::Server, 1024, false);
        let mut out = VecDeque::new();
        // Header (6 bytes) and the first payload byte: fine so far.
        assert_eq!(decoder.decode(&bytes[..7], &mut out), Ok(()));
        assert_eq!(decoder.decode(&bytes[7..8], &mut out).map_err(|e| e.code), Err(1007));
    }

    #[test]
    fn idle_decoder_holds_no_heap_memory() {
        let mut decoder = Decoder::new(Role::Server, 1 << 20, false);
        let mut out = VecDeque::new();
        decoder.decode(&frame(true, TEXT, &[b'x'; 5000]), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!((decoder.message.capacity(), decoder.control.capacity()), (0, 0));
        assert!(decoder.is_idle());
        // Partly received: one header byte, then a fragment of a message.
        let bytes = frame(false, TEXT, b"ab");
        decoder.decode(&bytes[..1], &mut out).unwrap();
        assert!(!decoder.is_idle());
        decoder.decode(&bytes[1..], &mut out).unwrap();
        assert!(!decoder.is_idle(), "a fragmented message is in progress");
        decoder.decode(&frame(true, CONTINUATION, b"c"), &mut out).unwrap();
        assert!(decoder.is_idle());
        assert_eq!(out.pop_back(), Some(Decoded::Text(Bytes::from_static(b"abc"))));
        // A failed decoder is kept: it must go on ignoring the peer.
        assert!(decoder.decode(&[0xC1, 0x80], &mut out).is_err());
        assert!(!decoder.is_idle());
    }
}
