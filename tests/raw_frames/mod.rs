//! A hand-written RFC 6455 frame codec for tests that speak raw TCP (to send what a correct peer
//! never would, and to see exactly what the other side wrote). Shared by ws_server.rs and
//! ws_client.rs.

#[derive(Debug, PartialEq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The code and reason of a close frame.
    pub fn close(&self) -> (u16, String) {
        assert_eq!(self.opcode, 8, "expected a close frame, got {self:?}");
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        (
            code,
            String::from_utf8(self.payload[2..].to_vec()).expect("UTF-8 close reason"),
        )
    }
}

/// Encodes one frame with first byte `b0`, masked with `mask` if given (clients must mask,
/// servers must not).
pub fn encode(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![b0];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Takes one complete frame off the front of `buf` (unmasking it), or None if `buf` does not
/// hold a whole frame yet.
pub fn parse(buf: &mut Vec<u8>) -> Option<Frame> {
    if buf.len() < 2 {
        return None;
    }
    let (b0, b1) = (buf[0], buf[1]);
    let (len, mut off) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let masked = b1 & 0x80 != 0;
    let mask_len = if masked { 4 } else { 0 };
    if buf.len() < off + mask_len + len {
        return None;
    }
    let mut mask = [0u8; 4];
    if masked {
        mask.copy_from_slice(&buf[off..off + 4]);
        off += 4;
    }
    let mut payload = buf[off..off + len].to_vec();
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    buf.drain(..off + len);
    Some(Frame {
        fin: b0 & 0x80 != 0,
        rsv: b0 & 0x70,
        opcode: b0 & 0x0f,
        masked,
        payload,
    })
}
