//! Limits of a WebSocket connection. Every limit has a default that is safe for a public server.

use std::time::Duration;

/// Limits and timers of a WebSocket connection, server or client side.
///
/// ```
/// use std::time::Duration;
/// let config = switchboard::ws::Config {
///     max_message_size: 1 << 20,
///     ping_interval: Some(Duration::from_secs(10)),
///     ..Default::default()
/// };
/// assert_eq!(config.max_message_size, 1 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest message accepted, summed over its fragments. A larger one closes the connection
    /// with 1009 (message too big). Default 16 MiB; at most 4 GiB (larger values count as 4 GiB).
    pub max_message_size: usize,
    /// Outgoing messages longer than this are sent as several frames. Default 4 MiB; at most 4 GiB.
    pub max_frame_size: usize,
    /// Time allowed for a client's opening handshake (connect and the 101 response). Default 10 s.
    /// On the server side the request head is bounded by the HTTP server, not by this.
    pub handshake_timeout: Duration,
    /// Send a ping after this long without hearing from the peer. `None` disables pings.
    /// Default 30 s.
    pub ping_interval: Option<Duration>,
    /// Drop the connection after this long without any frame from the peer (pings answered by a
    /// live peer reset it). Default 75 s.
    pub idle_timeout: Duration,
    /// Bytes that may wait in a connection's outbound queue. A send past this budget closes the
    /// connection with 1008 ("slow consumer") rather than buffering without bound; the handler's
    /// `on_close` then gets a close for which `CloseFrame::is_slow_consumer` is true. Default 4 MiB.
    pub max_backpressure: usize,
    /// How long to wait for the peer's close frame after sending ours. Default 5 s.
    pub close_timeout: Duration,
    /// permessage-deflate (RFC 7692): whether a server accepts a client's offer, whether a client
    /// offers it, and with which context takeover. Default [`Compression::Off`].
    pub compression: Compression,
    /// With compression agreed, messages shorter than this (in bytes) are sent uncompressed: on
    /// short messages deflate saves little and costs CPU. Default 256.
    pub compression_threshold: usize,
}

/// permessage-deflate (RFC 7692), per message compression of text and binary messages.
///
/// Off by default: an application turns it on where its messages are large enough to gain
/// (JSON of hundreds of bytes and more). Browsers offer it on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Never negotiated: a server ignores offers, a client makes none.
    #[default]
    Off,
    /// Negotiated without context takeover on either side: each message is compressed on its
    /// own. An idle connection keeps no compression state, and a publication is compressed once
    /// for all its subscribers (every socket that agreed to this gets the same bytes). What to
    /// use when on.
    NoContextTakeover,
    /// Each side may keep its window between messages: better ratios on streams of similar
    /// messages, at the price of a compressor and an inflater per connection once used (335 KiB
    /// together, measured: BENCHMARKS.md, "Compression") and of compressing a publication once per
    /// subscriber. Unless a client asks otherwise.
    ContextTakeover,
}

impl std::str::FromStr for Compression {
    type Err = String;

    /// `off`, `on` (the same as `no-context-takeover`) or `context-takeover`, as command lines
    /// and configuration files spell it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Self::Off),
            "on" | "no-context-takeover" => Ok(Self::NoContextTakeover),
            "context-takeover" => Ok(Self::ContextTakeover),
            other => Err(format!(
                "unknown compression '{other}': expected off, on or context-takeover"
            )),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_size: 16 << 20,
            max_frame_size: 4 << 20,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(30)),
            idle_timeout: Duration::from_secs(75),
            max_backpressure: 4 << 20,
            close_timeout: Duration::from_secs(5),
            compression: Compression::Off,
            compression_threshold: 256,
        }
    }
}
