//! The socket I/O of one connection: reading and decoding what the peer sends into messages,
//! and writing what is queued for it — corked and vectored — with a backlog for what the socket
//! does not take at once.
//!
//! It knows frames and bytes, not the handler or the socket's queue: what to write is handed to it
//! as a batch, and what it decoded waits in its inbox until the driver (`driver.rs`) takes it.
//! Everything here is poll-based or allocated only while in use, because this state is in every
//! connection's task for the connection's whole life (see the task-size note in `driver.rs`).

use super::decoder::{Decoded, Decoder, ProtocolError};
use super::deflate::{self, Contexts, Negotiated, RSV1};
use super::frame::{self, Role, CLOSE, TEXT};
use super::io::Io;
use super::socket::QueueItem;
use super::Config;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Corked frames are written once they reach this size.
const CORK_LIMIT: usize = 64 * 1024;

/// A frame or payload at least this large is written from its own bytes (a vectored write)
/// rather than copied into the cork.
const COPY_LIMIT: usize = 4 * 1024;

/// Chunks handed to one vectored write.
const MAX_CHUNKS: usize = 16;

/// Bytes taken from the socket per read. The buffer is on the stack of the poll that reads, so
/// it costs nothing per connection while the connection waits.
const READ_CHUNK: usize = 32 * 1024;

/// The socket with the protocol state of both directions: the decoder and what it decoded, and
/// what is left to write.
pub(super) struct Transport {
    io: Io,
    role: Role,
    /// `u32` (a frame or message over 4 GiB is not a use case): with the deflate agreement beside
    /// them, the limits then take the room they took alone (see the task-size note in `driver.rs`).
    max_frame_size: u32,
    /// The decoder's state, allocated only while a frame or message is partly received: most
    /// reads bring whole messages, and an idle connection then holds no decoder at all.
    decoder: Option<Box<Decoder>>,
    max_message_size: u32,
    /// Messages decoded from the last read, handed to the handler one at a time.
    inbox: VecDeque<Decoded>,
    /// A protocol violation found in the last read, acted on once the inbox is empty.
    error: Option<Box<ProtocolError>>,
    /// What is left to write of the batch, in order; empty between batches.
    out: Backlog,
    /// permessage-deflate, if agreed.
    deflate: Option<Negotiated>,
    /// The connection's own compressor and inflater: only with context takeover, once used.
    contexts: Option<Box<Contexts>>,
}

impl Transport {
    /// A transport over `io` with the limits of `config`, nothing read or written yet.
    pub(super) fn new(io: Io, role: Role, config: &Config, deflate: Option<Negotiated>) -> Self {
        Self {
            deflate,
            contexts: None,
            io,
            role,
            max_frame_size: u32::try_from(config.max_frame_size.max(1)).unwrap_or(u32::MAX),
            decoder: None,
            max_message_size: u32::try_from(config.max_message_size).unwrap_or(u32::MAX),
            inbox: VecDeque::new(),
            error: None,
            out: Backlog::default(),
        }
    }

    /// Reads once and decodes what came. Returns the number of bytes read (0: end of stream).
    pub(super) async fn read(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx)).await
    }

    pub(super) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let data = buf.filled();
        self.feed(data);
        Poll::Ready(Ok(data.len()))
    }

    /// Decodes bytes from the peer into the inbox (or the error to fail the connection with).
    pub(super) fn feed(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let first = self.inbox.len();
        let result = match self.decoder.as_mut() {
            Some(decoder) => decoder.decode(data, &mut self.inbox),
            None => {
                // Decoded on the stack; kept (boxed) only if the read ended inside a frame.
                let mut decoder = Decoder::new(self.role, self.max_message_size as usize, self.deflate.is_some());
                let result = decoder.decode(data, &mut self.inbox);
                if !decoder.is_idle() {
                    self.decoder = Some(Box::new(decoder));
                }
                result
            }
        };
        if let Err(err) = result {
            self.error.get_or_insert(Box::new(err));
        }
        if let Some(negotiated) = self.deflate {
            self.inflate_from(first, &negotiated);
        }
        if self.decoder.as_ref().is_some_and(|d| d.is_idle()) {
            self.decoder = None;
        }
    }

    /// Inflates the compressed messages decoded from `first` on, in place. One that does not
    /// inflate (corrupt, too large, invalid UTF-8) fails the connection there: what came after it
    /// is dropped.
    fn inflate_from(&mut self, first: usize, negotiated: &Negotiated) {
        for index in first..self.inbox.len() {
            let Some(Decoded::Deflated { text, payload }) = self.inbox.get(index) else {
                continue;
            };
            let text = *text;
            let inflated = deflate::inflate(negotiated, &mut self.contexts, payload, self.max_message_size as usize)
                .and_then(|data| {
                    if text && std::str::from_utf8(&data).is_err() {
                        return Err(ProtocolError {
                            code: 1007,
                            reason: "invalid utf8".into(),
                        });
                    }
                    Ok(Bytes::from(data))
                });
            match inflated {
                Ok(data) => {
                    self.inbox[index] = if text {
                        Decoded::Text(data)
                    } else {
                        Decoded::Binary(data)
                    }
                }
                Err(err) => {
                    self.inbox.truncate(index);
                    self.error = Some(Box::new(err));
                    let (role, max) = (self.role, self.max_message_size as usize);
                    self.decoder
                        .get_or_insert_with(|| Box::new(Decoder::new(role, max, true)))
                        .fail();
                    return;
                }
            }
        }
    }

    /// Whether a batch is still being written.
    pub(super) fn writing(&self, batch: &VecDeque<QueueItem>) -> bool {
        !batch.is_empty() || !self.out.is_empty()
    }

    /// Whether decoded messages wait in the inbox.
    pub(super) fn has_message(&self) -> bool {
        !self.inbox.is_empty()
    }

    /// Takes the next decoded message.
    pub(super) fn next_message(&mut self) -> Option<Decoded> {
        let decoded = self.inbox.pop_front()?;
        if self.inbox.is_empty() {
            // Most reads bring one message: an idle connection keeps no inbox.
            self.inbox = VecDeque::new();
        }
        Some(decoded)
    }

    /// Takes the protocol violation found in what was read, if any: the driver acts on it once
    /// the messages decoded before it are handled.
    pub(super) fn take_error(&mut self) -> Option<Box<ProtocolError>> {
        self.error.take()
    }

    /// Whether everything read so far has been taken: only then is the socket read again.
    pub(super) fn wants_input(&self) -> bool {
        self.inbox.is_empty() && self.error.is_none()
    }

    /// Shuts down our side of the socket (TCP FIN), once everything is written.
    pub(super) async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }

    /// Writes the batch: small frames are copied into one buffer (allocated for this batch only)
    /// and large ones are referenced, all of it written with vectored writes.
    ///
    /// Poll-based rather than an `async fn`: an `async` writer nests its futures in the
    /// connection's task, and their room is paid for by every idle connection. Here the state
    /// (`out`) is empty between batches.
    pub(super) async fn write_batch(&mut self, batch: &mut VecDeque<QueueItem>) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_batch(cx, batch)).await
    }

    pub(super) fn poll_write_batch(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<QueueItem>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_write_out(cx))?;
            if batch.is_empty() {
                break;
            }
            // One round: small frames copied together, large ones referenced, all of it handed
            // to one vectored write. Built on the stack; only what the socket does not take
            // goes to the backlog.
            let mut round = Round::default();
            while !round.full() && round.corked() < CORK_LIMIT {
                let Some(item) = batch.pop_front() else { break };
                match item {
                    // A client never writes the unmasked frame: the text goes out as a message.
                    // Nor does a socket that compresses it itself (context takeover, a smaller
                    // window than the shared frame's).
                    QueueItem::Prepared(message)
                        if self.role == Role::Client || self.compresses(message.payload_len()) =>
                    {
                        self.put_message(&mut round, TEXT, message.payload());
                    }
                    // A complete server frame (compressed once for many sockets): as is.
                    QueueItem::Frame(frame)
                        if frame.len() >= COPY_LIMIT || (batch.is_empty() && round.corked() == 0) =>
                    {
                        round.push(frame);
                    }
                    QueueItem::Frame(frame) => round.cork.extend_from_slice(&frame),
                    // A large frame, or the only one: written from the shared bytes, not copied.
                    QueueItem::Prepared(message)
                        if message.frame().len() >= COPY_LIMIT || (batch.is_empty() && round.corked() == 0) =>
                    {
                        round.push(message.into_frame());
                    }
                    QueueItem::Prepared(message) => round.cork.extend_from_slice(message.frame()),
                    QueueItem::Message { opcode, payload } => self.put_message(&mut round, opcode, payload),
                }
            }
            round.seal();
            self.write_round(cx, round)?;
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        // Nothing is kept for the next batch.
        self.out.release();
        Poll::Ready(Ok(()))
    }

    /// Whether a data message of `len` bytes goes out compressed.
    fn compresses(&self, len: usize) -> bool {
        self.deflate.is_some_and(|d| d.compresses(len))
    }

    /// Frames one message, split into frames of at most `max_frame_size`; compressed first if
    /// permessage-deflate was agreed and the message is large enough (RSV1 on its first frame).
    fn put_message(&mut self, round: &mut Round, opcode: u8, payload: Bytes) {
        let (opcode, payload) = match self.deflate {
            Some(negotiated) if opcode < CLOSE && negotiated.compresses(payload.len()) => {
                match deflate::compress(&negotiated, &mut self.contexts, &payload) {
                    Some(compressed) => (opcode | RSV1, Bytes::from(compressed)),
                    None => (opcode, payload),
                }
            }
            _ => (opcode, payload),
        };
        // Control frames are at most 125 bytes and must not be fragmented (RFC 6455 §5.5).
        if payload.is_empty() || opcode & 0x0F >= CLOSE {
            frame::put_frame(&mut round.cork, true, opcode, &payload, self.mask());
            return;
        }
        let mut frame_opcode = opcode;
        let mut start = 0;
        while start < payload.len() {
            let end = payload.len().min(start + self.max_frame_size as usize);
            let fin = end == payload.len();
            let chunk = payload.slice(start..end);
            match self.mask() {
                // Our own large payload is not copied: its header is corked, the payload
                // referenced.
                None if chunk.len() >= COPY_LIMIT => {
                    frame::put_header(&mut round.cork, fin, frame_opcode, chunk.len(), None);
                    round.push(chunk);
                }
                key => frame::put_frame(&mut round.cork, fin, frame_opcode, &chunk, key),
            }
            frame_opcode = frame::CONTINUATION;
            start = end;
        }
    }

    /// A client masks every frame with a fresh key (RFC 6455 §5.3); a server never does. The
    /// keys must be unpredictable (§10.3: a proxy must not be fed chosen bytes), so they come from
    /// a CSPRNG (rand's thread-local ChaCha, seeded by the OS), not a fast PRNG.
    fn mask(&self) -> Option<[u8; 4]> {
        (self.role == Role::Client).then(rand::random::<[u8; 4]>)
    }

    /// Writes the round with one vectored write; what the socket does not take waits in the
    /// backlog, in order. As in uWebSockets, a connection buffers only under backpressure.
    fn write_round(&mut self, cx: &mut Context<'_>, mut round: Round) -> io::Result<()> {
        let chunks = &mut round.chunks[..round.len];
        if chunks.is_empty() {
            return Ok(());
        }
        let mut slices = [IoSlice::new(&[]); MAX_CHUNKS];
        for (slot, chunk) in slices.iter_mut().zip(chunks.iter()) {
            *slot = IoSlice::new(chunk);
        }
        let mut written = match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..chunks.len()]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(err)) => return Err(err),
            Poll::Pending => 0,
        };
        for chunk in chunks.iter_mut() {
            if written >= chunk.len() {
                written -= chunk.len();
                continue;
            }
            chunk.advance(written);
            written = 0;
            self.out.push(std::mem::take(chunk));
        }
        for chunk in round.overflow {
            self.out.push(chunk);
        }
        Ok(())
    }

    /// Writes the queued chunks, several per syscall.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_CHUNKS];
            let mut count = 0;
            for (slot, chunk) in slices.iter_mut().zip(self.out.chunks()) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.consume(n);
        }
        Poll::Ready(Ok(()))
    }
}

/// What one vectored write sends: up to `MAX_CHUNKS` chunks, the small frames among them
/// copied together in `cork`.
#[derive(Default)]
struct Round {
    chunks: [Bytes; MAX_CHUNKS],
    len: usize,
    /// Chunks past `MAX_CHUNKS` (one message in many large fragments), written after.
    overflow: Vec<Bytes>,
    cork: BytesMut,
}

impl Round {
    /// Room is kept for the cork that `seal` may add.
    fn full(&self) -> bool {
        self.len + 2 > MAX_CHUNKS
    }

    fn corked(&self) -> usize {
        self.cork.len()
    }

    /// Adds `chunk` after what is corked so far.
    fn push(&mut self, chunk: Bytes) {
        self.seal();
        self.append(chunk);
    }

    fn seal(&mut self) {
        if !self.cork.is_empty() {
            let corked = self.cork.split().freeze();
            self.append(corked);
        }
    }

    fn append(&mut self, chunk: Bytes) {
        if self.len < MAX_CHUNKS && self.overflow.is_empty() {
            self.chunks[self.len] = chunk;
            self.len += 1;
        } else {
            self.overflow.push(chunk);
        }
    }
}

/// Chunks the socket has not taken yet. Allocated only under backpressure: most batches are
/// written at once and never get here.
///
/// Boxed on purpose (8 bytes in the task instead of 32): the extra allocation happens only when
/// the socket is full.
#[derive(Default)]
#[allow(clippy::box_collection)]
struct Backlog(Option<Box<VecDeque<Bytes>>>);

impl Backlog {
    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    fn push(&mut self, chunk: Bytes) {
        self.0.get_or_insert_with(Default::default).push_back(chunk);
    }

    fn chunks(&self) -> impl Iterator<Item = &Bytes> {
        self.0.iter().flat_map(|q| q.iter())
    }

    /// Drops the first `n` bytes, which the socket took.
    fn consume(&mut self, mut n: usize) {
        let Some(q) = self.0.as_mut() else { return };
        while n > 0 {
            let Some(first) = q.front_mut() else { break };
            if n >= first.len() {
                n -= first.len();
                q.pop_front();
            } else {
                first.advance(n);
                n = 0;
            }
        }
    }

    /// Frees the storage once everything is written.
    fn release(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }
}
