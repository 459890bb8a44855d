//! permessage-deflate (RFC 7692): what the two ends agree on in the opening handshake, and
//! compressing and inflating messages.
//!
//! Memory is the design constraint (an idle connection must not pay for compression it is not
//! using): a compressor or inflater that resets after every message is not kept by the
//! connection at all — each worker thread keeps one, reset before each use. Only context
//! takeover, where the window must outlive the message, keeps one in the connection, allocated on
//! first use. A publication for many sockets is compressed once, in `prepared.rs`.
//!
//! Inflating is bounded: the output grows in steps up to the message size limit and the
//! connection is closed with 1009 as soon as it would pass it, so a small frame that would
//! inflate to gigabytes allocates no more than the limit.

use super::decoder::ProtocolError;
use super::{Compression, Config};
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use http::{header, HeaderMap, HeaderValue};
use std::borrow::Cow;
use std::cell::RefCell;

/// The extension's token.
const NAME: &str = "permessage-deflate";

/// What a compressor's sync flush ends with; stripped from every message, appended before
/// inflating (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Smallest window zlib compresses with in a raw stream: with 8 bits agreed, nothing is sent
/// compressed (which the RFC allows for any message), rather than refusing the offer.
const MIN_COMPRESS_BITS: u8 = 9;

/// The level of frames compressed once for many sockets: paid once per publication.
const SHARED_LEVEL: u32 = 6;

/// The level of messages compressed for one connection: within 0.4–6 % of level 6's size on JSON
/// of a kilobyte, for 7–18 % less CPU (decision 0008).
const OWN_LEVEL: u32 = 2;

/// RSV1: set on the first frame of a compressed message.
pub(crate) const RSV1: u8 = 0x40;

/// What one connection agreed on, seen from our end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// Messages shorter than this are sent as they are.
    pub(crate) threshold: u32,
    /// Our compressor's window (bits); below 9 we send nothing compressed.
    pub(crate) send_bits: u8,
    /// Our compressor keeps its window from one message to the next.
    pub(crate) send_takeover: bool,
    /// The peer's does: our inflater must keep its window too.
    pub(crate) receive_takeover: bool,
}

impl Negotiated {
    /// Whether a message of `len` bytes goes out compressed.
    pub(crate) fn compresses(&self, len: usize) -> bool {
        self.send_bits >= MIN_COMPRESS_BITS && len >= self.threshold as usize
    }

    /// Whether this (server) socket may send a frame compressed once for all sockets: one
    /// compressed with a fresh 15-bit window, which any inflater reads.
    pub(crate) fn shares_frames(&self) -> bool {
        self.send_bits == 15 && !self.send_takeover
    }

    /// The threshold from which a server socket takes the shared compressed frame, or
    /// `u32::MAX` (never).
    pub(crate) fn shared_threshold(this: Option<Self>) -> u32 {
        match this {
            Some(n) if n.shares_frames() => n.threshold.min(u32::MAX - 1),
            _ => u32::MAX,
        }
    }
}

/// The parameters of one offer or response (RFC 7692 §7.1).
#[derive(Debug, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: the parameter without a value (only valid in an offer).
    client_max_window_bits: Option<Option<u8>>,
}

/// Parses the parameters after the extension name. `None` for an unknown or repeated parameter
/// or an invalid value: such an offer is declined, such a response fails the handshake.
fn parse_params<'a>(params: impl Iterator<Item = &'a str>) -> Option<Params> {
    let mut p = Params::default();
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param.trim(), None),
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() && !p.server_no_context_takeover => {
                p.server_no_context_takeover = true;
            }
            "client_no_context_takeover" if value.is_none() && !p.client_no_context_takeover => {
                p.client_no_context_takeover = true;
            }
            "server_max_window_bits" if p.server_max_window_bits.is_none() => {
                p.server_max_window_bits = Some(window_bits(value?)?);
            }
            "client_max_window_bits" if p.client_max_window_bits.is_none() => {
                p.client_max_window_bits = Some(match value {
                    Some(value) => Some(window_bits(value)?),
                    None => None,
                });
            }
            _ => return None,
        }
    }
    Some(p)
}

/// A window size: 8 to 15, written without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    let bits: u8 = value.parse().ok()?;
    ((8..=15).contains(&bits) && value.len() == if bits < 10 { 1 } else { 2 }).then_some(bits)
}

/// Every extension element of the `Sec-WebSocket-Extensions` headers, in order: the name and
/// its parameters.
fn elements(headers: &HeaderMap) -> impl Iterator<Item = (&str, std::str::Split<'_, char>)> {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|element| !element.trim().is_empty())
        .map(|element| {
            let mut parts = element.split(';');
            let name = parts.next().unwrap_or_default().trim();
            (name, parts)
        })
}

fn threshold(config: &Config) -> u32 {
    u32::try_from(config.compression_threshold).unwrap_or(u32::MAX)
}

/// The server's side: accepts the first permessage-deflate offer it can honour and returns what
/// was agreed with the response header. Offers with unknown, repeated or invalid parameters are
/// declined (RFC 7692 §5). With [`Compression::NoContextTakeover`] the response asks the client
/// not to take over its context either (§7.1.1.2), so that no inflater outlives a message.
pub(crate) fn negotiate(headers: &HeaderMap, config: &Config) -> Option<(Negotiated, HeaderValue)> {
    if config.compression == Compression::Off {
        return None;
    }
    let no_takeover = config.compression == Compression::NoContextTakeover;
    let params = elements(headers)
        .filter(|(name, _)| name.eq_ignore_ascii_case(NAME))
        .find_map(|(_, params)| parse_params(params))?;
    let server_nct = params.server_no_context_takeover || no_takeover;
    let client_nct = params.client_no_context_takeover || no_takeover;
    let mut response = String::from(NAME);
    if server_nct {
        response.push_str("; server_no_context_takeover");
    }
    if client_nct {
        response.push_str("; client_no_context_takeover");
    }
    // A limit on our window is honoured as asked (§7.1.2.1); the client's window is left as it
    // is: our inflater reads any.
    if let Some(bits) = params.server_max_window_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    let value = HeaderValue::from_str(&response).ok()?;
    let negotiated = Negotiated {
        threshold: threshold(config),
        send_bits: params.server_max_window_bits.unwrap_or(15),
        send_takeover: !server_nct,
        receive_takeover: !client_nct,
    };
    Some((negotiated, value))
}

/// The client's offer, if it offers the extension. Without context takeover it says so
/// (`client_no_context_takeover`); both modes let the server limit our window.
pub(crate) fn offer(config: &Config) -> Option<&'static str> {
    match config.compression {
        Compression::Off => None,
        Compression::NoContextTakeover => {
            Some("permessage-deflate; client_no_context_takeover; client_max_window_bits")
        }
        Compression::ContextTakeover => Some("permessage-deflate; client_max_window_bits"),
    }
}

/// The client's side: what the server's response agreed to. An extension we did not offer, more
/// than one, or invalid parameters fail the handshake (RFC 7692 §7.1; RFC 6455 §4.1).
pub(crate) fn accept_response(headers: &HeaderMap, config: &Config) -> Result<Option<Negotiated>, String> {
    let mut elements = elements(headers);
    let Some((name, params)) = elements.next() else {
        return Ok(None);
    };
    if config.compression == Compression::Off || !name.eq_ignore_ascii_case(NAME) {
        return Err(format!("the server chose an extension we did not offer: {name}"));
    }
    if elements.next().is_some() {
        return Err("the server chose more than one extension".into());
    }
    let params = parse_params(params).ok_or("invalid permessage-deflate parameters in the response")?;
    let send_bits = match params.client_max_window_bits {
        None => 15,
        Some(Some(bits)) => bits,
        Some(None) => return Err("client_max_window_bits without a value in the response".into()),
    };
    Ok(Some(Negotiated {
        threshold: threshold(config),
        send_bits,
        send_takeover: !(params.client_no_context_takeover || config.compression == Compression::NoContextTakeover),
        receive_takeover: !params.server_no_context_takeover,
    }))
}

/// A connection's own compressor and inflater, kept only with context takeover (each made on
/// first use).
#[derive(Default)]
pub(crate) struct Contexts {
    compress: Option<Compress>,
    inflate: Option<Decompress>,
}

thread_local! {
    /// This thread's compressors for messages of one connection without context takeover, by
    /// window bits (9 to 15), reset before each message.
    static OWN: RefCell<[Option<Compress>; 7]> = const { RefCell::new([None, None, None, None, None, None, None]) };
    /// This thread's compressor of shared frames (15 bits, [`SHARED_LEVEL`]).
    static SHARED: RefCell<Option<Compress>> = const { RefCell::new(None) };
    /// This thread's inflater for messages without context takeover (15 bits read any window).
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Compresses `payload` for one connection. `None` means "send it as it is": compressing failed
/// (the context is then reset, which the peer cannot tell).
///
/// What does not shrink is sent compressed all the same (a few bytes more): some peers mishandle
/// an uncompressed message once the extension is agreed (the Autobahn driver used here does),
/// and with context takeover the peer's window must see every message anyway.
pub(crate) fn compress(
    negotiated: &Negotiated,
    contexts: &mut Option<Box<Contexts>>,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let bits = negotiated.send_bits;
    if negotiated.send_takeover {
        let contexts = contexts.get_or_insert_with(Default::default);
        let compress = contexts
            .compress
            .get_or_insert_with(|| Compress::new_with_window_bits(flate2::Compression::new(OWN_LEVEL), false, bits));
        let out = deflate(compress, payload);
        if out.is_none() {
            compress.reset();
        }
        return out;
    }
    let index = usize::from(bits.clamp(MIN_COMPRESS_BITS, 15) - MIN_COMPRESS_BITS);
    OWN.with(|own| {
        let mut own = own.try_borrow_mut().ok()?;
        let compress = own[index]
            .get_or_insert_with(|| Compress::new_with_window_bits(flate2::Compression::new(OWN_LEVEL), false, bits));
        compress.reset();
        deflate(compress, payload)
    })
}

/// Compresses a payload once for every socket that shares frames (`None`: compressing failed).
pub(crate) fn compress_shared(payload: &[u8]) -> Option<Vec<u8>> {
    SHARED.with(|shared| {
        let mut shared = shared.try_borrow_mut().ok()?;
        let compress = shared.get_or_insert_with(|| Compress::new(flate2::Compression::new(SHARED_LEVEL), false));
        compress.reset();
        deflate(compress, payload)
    })
}

/// Compresses `input` with a sync flush and strips the flush's empty block (RFC 7692 §7.2.1).
fn deflate(compress: &mut Compress, input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    let start = compress.total_in();
    loop {
        let consumed = usize::try_from(compress.total_in() - start).ok()?;
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        compress
            .compress_vec(input.get(consumed..)?, &mut out, FlushCompress::Sync)
            .ok()?;
        let consumed = usize::try_from(compress.total_in() - start).ok()?;
        // The flush is complete once all input is in and the compressor left room unused.
        if consumed == input.len() && out.len() < out.capacity() {
            break;
        }
    }
    if !out.ends_with(&TAIL) {
        return None;
    }
    out.truncate(out.len() - TAIL.len());
    Some(out)
}

/// Inflates one message, at most `limit` bytes of it. `contexts` holds the connection's inflater
/// with context takeover; without, this thread's is used, reset first.
pub(crate) fn inflate(
    negotiated: &Negotiated,
    contexts: &mut Option<Box<Contexts>>,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, ProtocolError> {
    if negotiated.receive_takeover {
        let contexts = contexts.get_or_insert_with(Default::default);
        let decompress = contexts.inflate.get_or_insert_with(|| Decompress::new(false));
        return inflate_with(decompress, input, limit);
    }
    INFLATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let decompress = slot.get_or_insert_with(|| Decompress::new(false));
            decompress.reset(false);
            inflate_with(decompress, input, limit)
        }
        Err(_) => inflate_with(&mut Decompress::new(false), input, limit),
    })
}

fn inflate_with(decompress: &mut Decompress, input: &[u8], limit: usize) -> Result<Vec<u8>, ProtocolError> {
    let total = input.len() + TAIL.len();
    let mut out = Vec::with_capacity(
        input
            .len()
            .saturating_mul(4)
            .saturating_add(64)
            .min(limit.saturating_add(1)),
    );
    let start = decompress.total_in();
    loop {
        let consumed = usize::try_from(decompress.total_in() - start).unwrap_or(usize::MAX);
        let source: &[u8] = match input.get(consumed..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => TAIL.get(consumed.saturating_sub(input.len())..).unwrap_or_default(),
        };
        if out.len() == out.capacity() {
            // Grows by doubling, never past one byte over the limit: that byte tells the
            // message is too big.
            let room = out.capacity().max(1024).min(limit.saturating_add(1) - out.len());
            if room == 0 {
                return Err(too_big(limit));
            }
            out.reserve_exact(room);
        }
        let produced = out.len();
        let status = decompress
            .decompress_vec(source, &mut out, FlushDecompress::Sync)
            .map_err(|_| invalid_data())?;
        if out.len() > limit {
            return Err(too_big(limit));
        }
        let now = usize::try_from(decompress.total_in() - start).unwrap_or(usize::MAX);
        if status == Status::StreamEnd {
            // The peer ended the stream (BFINAL): what follows starts afresh.
            decompress.reset(false);
            break;
        }
        if now >= total && out.len() < out.capacity() {
            break;
        }
        if now == consumed && out.len() == produced && out.len() < out.capacity() {
            return Err(invalid_data());
        }
    }
    Ok(out)
}

fn too_big(limit: usize) -> ProtocolError {
    ProtocolError {
        code: 1009,
        reason: Cow::Owned(format!("max length: {limit}")),
    }
}

fn invalid_data() -> ProtocolError {
    ProtocolError {
        code: 1007,
        reason: Cow::Borrowed("invalid compressed data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn config(compression: Compression) -> Config {
        Config {
            compression,
            ..Default::default()
        }
    }

    fn server(offer: &str, compression: Compression) -> Option<(Negotiated, String)> {
        negotiate(&headers(offer), &config(compression)).map(|(n, v)| (n, v.to_str().unwrap().to_owned()))
    }

    #[test]
    fn the_server_accepts_the_first_offer_it_can_honour() {
        let (n, response) = server(
            "permessage-deflate; client_max_window_bits",
            Compression::NoContextTakeover,
        )
        .unwrap();
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(n.shares_frames() && !n.receive_takeover);
        let (n, response) = server(
            "permessage-deflate; client_max_window_bits",
            Compression::ContextTakeover,
        )
        .unwrap();
        assert_eq!(response, "permessage-deflate");
        assert!(n.send_takeover && n.receive_takeover && !n.shares_frames());
        // An unknown parameter, a repeated one, a bad value: that offer is declined, the next taken.
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_no_context_takeover=1",
        ] {
            assert_eq!(server(bad, Compression::ContextTakeover), None, "{bad}");
            let (_, response) = server(
                &format!("{bad}, permessage-deflate; server_max_window_bits=10"),
                Compression::ContextTakeover,
            )
            .unwrap();
            assert_eq!(response, "permessage-deflate; server_max_window_bits=10");
        }
        let (n, _) = server(
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=\"9\"",
            Compression::ContextTakeover,
        )
        .unwrap();
        assert_eq!((n.send_bits, n.shares_frames()), (9, false));
        // 8 bits: accepted, and nothing is sent compressed.
        let (n, _) = server(
            "permessage-deflate; server_max_window_bits=8",
            Compression::NoContextTakeover,
        )
        .unwrap();
        assert!(!n.compresses(1 << 20));
        assert_eq!(server("permessage-deflate", Compression::Off), None);
        assert_eq!(server("x-other", Compression::NoContextTakeover), None);
    }

    #[test]
    fn the_client_checks_the_response() {
        let c = config(Compression::NoContextTakeover);
        assert_eq!(accept_response(&HeaderMap::new(), &c), Ok(None));
        let n = accept_response(&headers("permessage-deflate; client_max_window_bits=9"), &c)
            .unwrap()
            .unwrap();
        assert_eq!((n.send_bits, n.send_takeover, n.receive_takeover), (9, false, true));
        let c = config(Compression::ContextTakeover);
        let n = accept_response(&headers("permessage-deflate; server_no_context_takeover"), &c)
            .unwrap()
            .unwrap();
        assert_eq!((n.send_bits, n.send_takeover, n.receive_takeover), (15, true, false));
        for bad in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; bogus",
            "x-other",
            "permessage-deflate, permessage-deflate",
        ] {
            assert!(accept_response(&headers(bad), &c).is_err(), "{bad}");
        }
        assert!(accept_response(&headers("permessage-deflate"), &config(Compression::Off)).is_err());
    }

    #[test]
    fn round_trips_with_and_without_takeover() {
        let text = br#"{"channel":"orders","data":{"id":1,"items":[{"sku":"A"},{"sku":"B"}]}}"#.repeat(20);
        for takeover in [false, true] {
            let n = Negotiated {
                threshold: 0,
                send_bits: 15,
                send_takeover: takeover,
                receive_takeover: takeover,
            };
            let (mut ours, mut theirs) = (None, None);
            for _ in 0..3 {
                let compressed = compress(&n, &mut ours, &text).unwrap();
                assert!(compressed.len() < text.len() / 4);
                assert_eq!(inflate(&n, &mut theirs, &compressed, 1 << 20).unwrap(), text);
            }
            assert_eq!(ours.is_some(), takeover, "a context is kept only with takeover");
        }
        let shared = compress_shared(&text).unwrap();
        let n = Negotiated {
            threshold: 0,
            send_bits: 15,
            send_takeover: false,
            receive_takeover: false,
        };
        assert_eq!(inflate(&n, &mut None, &shared, 1 << 20).unwrap(), text);
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let bomb = compress_shared(&zeros).unwrap();
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let n = Negotiated {
            threshold: 0,
            send_bits: 15,
            send_takeover: false,
            receive_takeover: false,
        };
        let err = inflate(&n, &mut None, &bomb, 1 << 20).unwrap_err();
        assert_eq!((err.code, err.reason.as_ref()), (1009, "max length: 1048576"));
        assert_eq!(inflate(&n, &mut None, &bomb, 10 << 20).unwrap().len(), 10 << 20);
        let err = inflate(&n, &mut None, &[0xff, 0xff, 0xff], 1 << 20).unwrap_err();
        assert_eq!(err.code, 1007);
    }
}
