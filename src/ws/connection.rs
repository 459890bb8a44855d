//! The task that drives one connection: decodes what the peer sends into handler calls, writes the
//! queue in batches, pings idle peers and finishes the close handshake.

use super::deadline;
use super::decoder::{Decoded, Decoder, ProtocolError};
use super::frame::{self, Role, CLOSE, TEXT};
use super::handler::SLOW_CONSUMER_REASON;
use super::io::Io;
use super::socket::{Queue, QueueItem, SocketState};
use super::{CloseFrame, Config, Handler, Sockets, Text, WebSocket};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

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

/// Runs the connection to its end. `on_open` first, `on_close` last, exactly once each.
///
/// Handler futures are boxed: an idle connection's task then holds only this loop's state, not
/// room for the largest handler future (which was most of a 2.7 KiB task); the cost is one
/// allocation per *inbound* message, never per publication.
pub(crate) fn run<H: Handler>(
    io: Io,
    prefix: Bytes,
    role: Role,
    ws: WebSocket,
    handler: H,
    config: Config,
    sockets: Option<Sockets>,
) -> impl Future<Output = ()> + Send {
    let mut wire = Wire {
        io,
        role,
        max_frame_size: config.max_frame_size.max(1),
        decoder: None,
        max_message_size: config.max_message_size,
        inbox: VecDeque::new(),
        error: None,
        out: Backlog::default(),
    };
    // Bytes that came with the handshake are decoded now; the copy hyper read them into (its
    // whole read buffer) is released here rather than pinned by the connection.
    wire.feed(&prefix);
    drop(prefix);
    let timers = Timers {
        ping_ms: config.ping_interval.map(millis),
        idle_ms: millis(config.idle_timeout),
        close_ms: millis(config.close_timeout),
    };
    let mut handler = handler;
    // An `async move` block, not an `async fn`: an `async fn` would keep its arguments and its
    // `mut` rebindings of them side by side in the task.
    async move {
        let opened = guarded(&ws, "on_open", handler.on_open(&ws)).await;
        let close = if opened {
            // The server's registry, which may close every socket at once (a server shutting down
            // does, with 1001; the close handshake then runs as usual, bounded by close_timeout).
            if let Some(sockets) = &sockets {
                sockets.register(&ws);
            }
            let deadlines = deadline::Registration::new(&ws.state, timers.shortest());
            let close = drive(&mut wire, &ws, &mut handler, &timers).await;
            drop(deadlines);
            close
        } else {
            wire.send_close(VecDeque::new(), 1011, "internal error", Duration::from_millis(100))
                .await;
            CloseFrame {
                code: 1011,
                reason: "internal error".into(),
                by_peer: false,
            }
        };
        tracing::debug!(conn = ws.id(), code = close.code, reason = %close.reason, by_peer = close.by_peer, "websocket closed");
        ws.mark_ended();
        // Close TCP now, not after the application's on_close.
        drop(wire);
        guarded(&ws, "on_close", handler.on_close(&ws, close)).await;
        ws.mark_finished();
        // Counted as open until here: a server waiting for its sockets to drain waits for
        // their handlers too.
        if let Some(sockets) = &sockets {
            sockets.leave(&ws);
        }
    }
}

/// The timers of a running connection (the rest of [`Config`] is applied when it starts), in
/// milliseconds: 16 bytes instead of 48 in every connection's task.
struct Timers {
    ping_ms: Option<u32>,
    idle_ms: u32,
    close_ms: u32,
}

impl Timers {
    fn ping_interval(&self) -> Option<Duration> {
        self.ping_ms.map(|ms| Duration::from_millis(ms.into()))
    }
    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_ms.into())
    }
    fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.close_ms.into())
    }
    /// The shortest of the timeouts, which sets how precisely they must be checked.
    fn shortest(&self) -> Duration {
        let shortest = self.ping_ms.unwrap_or(u32::MAX).min(self.idle_ms).min(self.close_ms);
        Duration::from_millis(shortest.into())
    }
}

/// Whole milliseconds, saturating at ~49 days.
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// The socket with the protocol state of both directions.
struct Wire {
    io: Io,
    role: Role,
    max_frame_size: usize,
    /// The decoder's state, allocated only while a frame or message is partly received: most
    /// reads bring whole messages, and an idle connection then holds no decoder at all.
    decoder: Option<Box<Decoder>>,
    max_message_size: usize,
    /// Messages decoded from the last read, handed to the handler one at a time.
    inbox: VecDeque<Decoded>,
    /// A protocol violation found in the last read, acted on once the inbox is empty.
    error: Option<Box<ProtocolError>>,
    /// What is left to write of the batch, in order; empty between batches.
    out: Backlog,
}

impl Wire {
    /// Reads once and decodes what came. Returns the number of bytes read (0: end of stream).
    async fn read(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx)).await
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let data = buf.filled();
        self.feed(data);
        Poll::Ready(Ok(data.len()))
    }

    /// Decodes bytes from the peer into the inbox (or the error to fail the connection with).
    fn feed(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let result = match self.decoder.as_mut() {
            Some(decoder) => decoder.decode(data, &mut self.inbox),
            None => {
                // Decoded on the stack; kept (boxed) only if the read ended inside a frame.
                let mut decoder = Decoder::new(self.role, self.max_message_size);
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
        if self.decoder.as_ref().is_some_and(|d| d.is_idle()) {
            self.decoder = None;
        }
    }

    /// Whether a batch is still being written.
    fn writing(&self, batch: &VecDeque<QueueItem>) -> bool {
        !batch.is_empty() || !self.out.is_empty()
    }

    /// What the connection waits for, in one poll: the socket accepting our batch, new sends
    /// (or the slow-consumer abort), its deadline, the peer's bytes. Nothing here is a stored
    /// future: an idle connection's task holds no waiting state at all (the deadline is in the
    /// shared state, watched by the sweep in `deadline.rs`).
    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
        ws: &WebSocket,
        batch: &mut VecDeque<QueueItem>,
        may_close: bool,
    ) -> Poll<Event> {
        if self.writing(batch) {
            if let Poll::Ready(result) = self.poll_write_batch(cx, batch) {
                return Poll::Ready(Event::Written(result));
            }
        }
        ws.state.waker.register(cx.waker());
        {
            let q = ws.state.queue.lock();
            let can_take = !self.writing(batch) && (!q.items.is_empty() || (may_close && q.close.is_some()));
            if q.abort || can_take {
                return Poll::Ready(Event::Queued);
            }
        }
        // The deadline sweep wakes us (through the waker registered above) once it has passed.
        if deadline::now_ms() >= ws.state.deadline.load(Ordering::Relaxed) {
            return Poll::Ready(Event::Timer);
        }
        if self.inbox.is_empty() && self.error.is_none() {
            if let Poll::Ready(result) = self.poll_read(cx) {
                return Poll::Ready(Event::Read(result));
            }
        }
        Poll::Pending
    }

    /// Keeps the queued sends going out while a handler runs. Ready only when writing failed or
    /// the slow-consumer policy aborted the connection.
    fn poll_output(
        &mut self,
        cx: &mut Context<'_>,
        ws: &WebSocket,
        batch: &mut VecDeque<QueueItem>,
    ) -> Poll<io::Error> {
        loop {
            if self.writing(batch) {
                match self.poll_write_batch(cx, batch) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(err)) => return Poll::Ready(err),
                    Poll::Pending => {}
                }
            }
            ws.state.waker.register(cx.waker());
            let mut q = ws.state.queue.lock();
            if q.abort {
                return Poll::Ready(io::Error::other("slow consumer"));
            }
            if self.writing(batch) || q.items.is_empty() {
                return Poll::Pending;
            }
            take_queue(&mut q, batch);
        }
    }

    /// Writes the batch: small frames are copied into one buffer (allocated for this batch only)
    /// and large ones are referenced, all of it written with vectored writes.
    ///
    /// Poll-based rather than an `async fn`: an `async` writer nests its futures in the
    /// connection's task, and their room is paid for by every idle connection. Here the state
    /// (`out`) is empty between batches.
    async fn write_batch(&mut self, batch: &mut VecDeque<QueueItem>) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_batch(cx, batch)).await
    }

    fn poll_write_batch(&mut self, cx: &mut Context<'_>, batch: &mut VecDeque<QueueItem>) -> Poll<io::Result<()>> {
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
                    QueueItem::Prepared(message) if self.role == Role::Client => {
                        self.put_message(&mut round, TEXT, message.payload());
                    }
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

    /// Frames one message, split into frames of at most `max_frame_size`.
    fn put_message(&mut self, round: &mut Round, opcode: u8, payload: Bytes) {
        // Control frames are at most 125 bytes and must not be fragmented (RFC 6455 §5.5).
        if payload.is_empty() || opcode >= CLOSE {
            frame::put_frame(&mut round.cork, true, opcode, &payload, self.mask());
            return;
        }
        let mut frame_opcode = opcode;
        let mut start = 0;
        while start < payload.len() {
            let end = payload.len().min(start + self.max_frame_size);
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

    /// Sends what is staged in `batch`, then a close frame, giving up after `limit`. Boxed, like
    /// the other rare paths: the connection's task would otherwise carry room for their timeout
    /// and write state all its life.
    fn send_close<'a>(
        &'a mut self,
        mut batch: VecDeque<QueueItem>,
        code: u16,
        reason: &str,
        limit: Duration,
    ) -> BoxFuture<'a, ()> {
        batch.push_back(QueueItem::Message {
            opcode: CLOSE,
            payload: close_payload(code, reason),
        });
        async move {
            let _ = tokio::time::timeout(limit, self.write_batch(&mut batch)).await;
        }
        .boxed()
    }

    /// Ends the connection with a close frame (sent unless `send` is false, e.g. ours is out
    /// already). Boxed, and owning its arguments, so the connection's task keeps none of this.
    fn end_with_close(
        &mut self,
        batch: VecDeque<QueueItem>,
        code: u16,
        reason: String,
        by_peer: bool,
        send: bool,
        limit: Duration,
    ) -> BoxFuture<'_, CloseFrame> {
        async move {
            if send {
                self.send_close(batch, code, &reason, limit).await;
            }
            CloseFrame { code, reason, by_peer }
        }
        .boxed()
    }

    /// Writes what is left of the batch (ending with our close frame), at most `limit`, and
    /// ends with `close`.
    fn finish(
        &mut self,
        mut batch: VecDeque<QueueItem>,
        close: CloseFrame,
        limit: Duration,
    ) -> BoxFuture<'_, CloseFrame> {
        async move {
            let _ = tokio::time::timeout(limit, self.write_batch(&mut batch)).await;
            close
        }
        .boxed()
    }

    /// Fails the connection after a protocol violation: our close frame with the reason (unless
    /// ours is out already), then a lingering close of TCP.
    fn fail(
        &mut self,
        batch: VecDeque<QueueItem>,
        err: ProtocolError,
        sent_close: Option<CloseFrame>,
        limit: Duration,
    ) -> BoxFuture<'_, CloseFrame> {
        async move {
            match sent_close {
                // What was staged before the violation goes out first (an echo of the last
                // valid message, say), then the close frame.
                None => self.send_close(batch, err.code, &err.reason, limit).await,
                // Ours is staged already, at the end of the batch.
                Some(_) => {
                    let mut batch = batch;
                    let _ = tokio::time::timeout(limit, self.write_batch(&mut batch)).await;
                }
            }
            self.linger(limit).await;
            sent_close.unwrap_or(CloseFrame {
                code: err.code,
                reason: err.reason.into_owned(),
                by_peer: false,
            })
        }
        .boxed()
    }

    /// After failing the connection: end our side, then let the peer read our close frame before
    /// the socket goes (closing with unread input would reset the connection and could destroy
    /// the close frame in flight). Waits for the peer's end of stream, at most `limit`.
    fn linger(&mut self, limit: Duration) -> BoxFuture<'_, ()> {
        async move {
            let _ = tokio::time::timeout(limit, async {
                let _ = self.io.shutdown().await;
                while let Ok(1..) = self.read().await {}
            })
            .await;
        }
        .boxed()
    }
}

/// A close frame's payload; 1005 ("no status") is sent as an empty payload.
fn close_payload(code: u16, reason: &str) -> Bytes {
    if code == 1005 {
        Bytes::new()
    } else {
        frame::close_payload(code, reason)
    }
}

/// What woke the connection's task.
enum Event {
    /// Sends were queued (or the slow-consumer policy fired).
    Queued,
    /// The batch was written, or writing it failed.
    Written(io::Result<()>),
    Timer,
    Read(io::Result<usize>),
}

/// Not an `async fn`, for the reason given in [`run`].
#[allow(clippy::manual_async_fn)]
fn drive<'a, H: Handler>(
    wire: &'a mut Wire,
    ws: &'a WebSocket,
    handler: &'a mut H,
    config: &'a Timers,
) -> impl Future<Output = CloseFrame> + Send + 'a {
    async move {
        let state = &ws.state;
        // One struct rather than separate locals: the task's layout then has no padding between them.
        let mut st = LoopState {
            batch: VecDeque::new(),
            last_heard: Instant::now(),
            pinged: false,
            close_deadline: None,
            sent_close: None,
        };

        loop {
            // 1. Take everything queued since the last turn as the next batch, once the previous
            // one is out: while the socket is full, sends stay in the queue, where the
            // slow-consumer budget counts them.
            if let Some((code, reason)) = st.take_queue(wire, state, config.close_timeout()) {
                // The peer stopped reading: try to tell it why, but do not wait on it.
                let send = st.sent_close.is_none();
                return wire
                    .end_with_close(VecDeque::new(), code, reason, false, send, Duration::from_millis(100))
                    .await;
            }

            // 2. Hand what the peer sent to the handler, one message at a time.
            if !wire.inbox.is_empty() {
                if let Some(step) = st.receive(wire, ws, handler, config) {
                    if let Some(close) = step.await {
                        return close;
                    }
                }
                continue;
            }
            if let Some(err) = wire.error.take() {
                // Fail the connection (RFC 6455 §7.1.7): our close frame with the reason, then TCP.
                tracing::debug!(conn = ws.id(), code = err.code, reason = %err.reason, "protocol error from peer");
                refuse_sends(ws, err.code, &err.reason);
                return wire
                    .fail(
                        std::mem::take(&mut st.batch),
                        *err,
                        st.sent_close.take().map(|c| *c),
                        config.close_timeout(),
                    )
                    .await;
            }

            // 3. Wait, with the next deadline where the sweep sees it (`deadline.rs`).
            {
                let idle_deadline = match (config.ping_interval(), st.pinged) {
                    (Some(interval), false) => st.last_heard + interval.min(config.idle_timeout()),
                    _ => st.last_heard + config.idle_timeout(),
                };
                let next = st.close_deadline.map_or(idle_deadline, |d| d.min(idle_deadline));
                state
                    .deadline
                    .store(deadline::at_ms(next.into_std()), Ordering::Relaxed);
            }
            let may_close = st.sent_close.is_none();
            let event = poll_fn(|cx| wire.poll_event(cx, ws, &mut st.batch, may_close)).await;
            match event {
                Event::Queued | Event::Written(Ok(())) => {}
                Event::Written(Err(err)) => return write_failed(ws, err, st.sent_close.map(|c| *c)),
                Event::Timer => {
                    let now = Instant::now();
                    if st.close_deadline.is_some_and(|d| now >= d) {
                        return st.sent_close.map(|c| *c).unwrap_or(CloseFrame {
                            code: 1006,
                            reason: "close timeout".into(),
                            by_peer: false,
                        });
                    }
                    let silent = now.duration_since(st.last_heard);
                    if silent >= config.idle_timeout() {
                        tracing::info!(
                            conn = ws.id(),
                            "dropping idle peer: nothing received for {:?}",
                            config.idle_timeout()
                        );
                        return CloseFrame {
                            code: 1006,
                            reason: "idle timeout".into(),
                            by_peer: false,
                        };
                    }
                    if !st.pinged && config.ping_interval().is_some_and(|interval| silent >= interval) {
                        st.pinged = true;
                        let _ = ws.ping(Bytes::new());
                    }
                }
                Event::Read(Ok(0)) => {
                    return st.sent_close.map(|c| *c).unwrap_or(CloseFrame {
                        code: 1006,
                        reason: "connection closed without a close frame".into(),
                        by_peer: true,
                    });
                }
                Event::Read(Ok(_)) => {}
                Event::Read(Err(err)) => {
                    return st.sent_close.map(|c| *c).unwrap_or(CloseFrame {
                        code: 1006,
                        reason: err.to_string(),
                        by_peer: true,
                    });
                }
            }
        }
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

/// The drive loop's state.
struct LoopState {
    /// Sends taken from the queue, being written.
    batch: VecDeque<QueueItem>,
    last_heard: Instant,
    pinged: bool,
    /// Set once our close frame is staged: the peer has until then to answer it.
    close_deadline: Option<Instant>,
    /// Boxed: it is set only while closing, and the loop's state is in every idle connection.
    sent_close: Option<Box<CloseFrame>>,
}

impl LoopState {
    /// Takes everything queued since the last turn as the next batch, once the previous one is
    /// out: while the socket is full, sends stay in the queue, where the slow-consumer budget
    /// counts them. Returns the close to end with if the slow-consumer policy fired.
    fn take_queue(&mut self, wire: &Wire, state: &SocketState, close_timeout: Duration) -> Option<(u16, String)> {
        let (close_request, abort) = {
            let mut q = state.queue.lock();
            if !q.abort && wire.writing(&self.batch) {
                return None;
            }
            take_queue(&mut q, &mut self.batch)
        };
        if abort {
            return Some(close_request.unwrap_or_else(|| (1008, SLOW_CONSUMER_REASON.to_owned())));
        }
        // The batch holds only what was just taken: the last one is written.
        self.stage_close(close_request, close_timeout);
        None
    }

    /// Takes the next message from the peer. What needs waiting for (the handler, the end of
    /// the close handshake) is returned as one boxed future resolving to how the connection
    /// ended, if it did: the drive loop then keeps no room for the message or the close in the
    /// connection's task while it waits.
    fn receive<'a, H: Handler>(
        &'a mut self,
        wire: &'a mut Wire,
        ws: &'a WebSocket,
        handler: &'a mut H,
        config: &Timers,
    ) -> Option<BoxFuture<'a, Option<CloseFrame>>> {
        let decoded = wire.inbox.pop_front()?;
        if wire.inbox.is_empty() {
            // Most reads bring one message: an idle connection keeps no inbox.
            wire.inbox = VecDeque::new();
        }
        self.last_heard = Instant::now();
        self.pinged = false;
        match decoded {
            Decoded::Close { code, reason } => {
                let batch = std::mem::take(&mut self.batch);
                if let Some(ours) = self.sent_close.take().map(|c| *c) {
                    // The peer answered our close: the handshake is complete once our close
                    // frame (staged, maybe not all written yet) is out.
                    return Some(wire.finish(batch, ours, config.close_timeout()).map(Some).boxed());
                }
                // Echo the peer's close; nothing may follow it (RFC 6455 §5.5.1). What was staged
                // before the peer's close still goes out, then the echo.
                refuse_sends(ws, code, &reason);
                let end = wire.end_with_close(batch, code, reason, true, true, config.close_timeout());
                Some(end.map(Some).boxed())
            }
            // After our close frame the application is done with the connection; what the peer
            // sends until it answers is discarded.
            _ if self.sent_close.is_some() => None,
            decoded => {
                if let Decoded::Ping(payload) = &decoded {
                    let _ = ws.pong(payload.clone());
                }
                Some(handle(decoded, ws, handler, wire, &mut self.batch))
            }
        }
    }

    /// Puts a requested close frame behind the batch just taken; after it, nothing more is
    /// written (what was taken after our close frame is dropped).
    fn stage_close(&mut self, close_request: Option<(u16, String)>, close_timeout: Duration) {
        if self.sent_close.is_some() {
            self.batch.clear();
        } else if let Some((code, reason)) = close_request {
            self.batch.push_back(QueueItem::Message {
                opcode: CLOSE,
                payload: close_payload(code, &reason),
            });
            self.sent_close = Some(Box::new(CloseFrame {
                code,
                reason,
                by_peer: false,
            }));
            self.close_deadline = Some(Instant::now() + close_timeout);
        }
    }
}

/// How the connection ended when writing to it failed.
fn write_failed(ws: &WebSocket, err: io::Error, sent_close: Option<CloseFrame>) -> CloseFrame {
    tracing::debug!(conn = ws.id(), %err, "write failed");
    // A slow consumer aborted mid-write is reported as the 1008 close it is.
    if let Some((code, reason)) = forced_close(ws) {
        return CloseFrame {
            code,
            reason,
            by_peer: false,
        };
    }
    sent_close.unwrap_or(CloseFrame {
        code: 1006,
        reason: err.to_string(),
        by_peer: false,
    })
}

/// The close requested by the slow-consumer policy, if it aborted the connection.
fn forced_close(ws: &WebSocket) -> Option<(u16, String)> {
    let q = ws.state.queue.lock();
    q.close.clone().filter(|_| q.abort)
}

/// Moves the queued messages into `batch` and returns the pending close request, if any.
fn take_queue(q: &mut Queue, batch: &mut VecDeque<QueueItem>) -> (Option<(u16, String)>, bool) {
    // The drained buffer of the last batch is freed rather than kept for reuse: an idle
    // connection then holds no queue storage, at the price of one allocation per wake-up.
    *batch = std::mem::take(&mut q.items);
    q.bytes = 0;
    (q.close.clone(), q.abort)
}

/// Runs one handler callback; a panic in it is caught and logged so that the connection still
/// ends properly (`on_close` runs, subscriptions are released) instead of leaking. Resolves to
/// false if it panicked.
///
/// Not an `async fn`: the handler's future is boxed before the caller awaits, so the connection's
/// task never holds room for it inline.
fn guarded<'a>(
    ws: &'a WebSocket,
    callback: &'static str,
    call: impl Future<Output = ()> + Send + 'a,
) -> impl Future<Output = bool> + Send + 'a {
    let call = AssertUnwindSafe(Box::pin(call)).catch_unwind();
    async move {
        match call.await {
            Ok(()) => true,
            Err(_) => {
                tracing::error!(
                    conn = ws.id(),
                    callback,
                    "handler panicked; closing the connection with 1011"
                );
                false
            }
        }
    }
}

/// Hands one message to the handler. While the handler awaits (an action, a subscribe through
/// the broker), what is queued for this peer keeps going out: a slow handler must not turn a
/// healthy reader into a "slow consumer". Resolves to how the connection ended if writing failed
/// meanwhile; a panicking handler gets the connection closed with 1011.
///
/// The handler is never cancelled, not even when writing fails: it may hold state that only its
/// own completion releases (a subscription half made). Boxed: it exists only while a message is
/// being handled, not in every idle connection.
fn handle<'a, H: Handler>(
    decoded: Decoded,
    ws: &'a WebSocket,
    handler: &'a mut H,
    wire: &'a mut Wire,
    batch: &'a mut VecDeque<QueueItem>,
) -> BoxFuture<'a, Option<CloseFrame>> {
    async move {
        let call = dispatch(decoded, ws, handler);
        tokio::pin!(call);
        let mut failed: Option<io::Error> = None;
        let completed = poll_fn(|cx| {
            if let Poll::Ready(ok) = ws.handling(|| call.as_mut().poll(cx)) {
                return Poll::Ready(ok);
            }
            if failed.is_none() {
                if let Poll::Ready(err) = wire.poll_output(cx, ws, batch) {
                    failed = Some(err);
                }
            }
            Poll::Pending
        })
        .await;
        match failed {
            Some(err) => Some(write_failed(ws, err, None)),
            None => {
                if !completed {
                    let _ = ws.close(1011, "internal error");
                }
                None
            }
        }
    }
    .boxed()
}

/// Hands one message to the handler. Returns false if the handler panicked.
async fn dispatch<H: Handler>(decoded: Decoded, ws: &WebSocket, handler: &mut H) -> bool {
    match decoded {
        Decoded::Text(bytes) => guarded(ws, "on_message", handler.on_message(ws, Text::from_validated(bytes))).await,
        Decoded::Binary(bytes) => guarded(ws, "on_bytes", handler.on_bytes(ws, bytes)).await,
        Decoded::Ping(bytes) => guarded(ws, "on_ping", handler.on_ping(ws, bytes)).await,
        Decoded::Pong(bytes) => guarded(ws, "on_pong", handler.on_pong(ws, bytes)).await,
        Decoded::Close { .. } => true,
    }
}

/// After a close frame went out or came in, nothing more may be sent: later sends are refused
/// and whatever is still queued is dropped (a data frame after a close frame breaks RFC 6455 §5.5.1).
fn refuse_sends(ws: &WebSocket, code: u16, reason: &str) {
    let mut q = ws.state.queue.lock();
    if q.close.is_none() {
        q.close = Some((code, reason.to_owned()));
    }
    q.items.clear();
    q.bytes = 0;
}

/// The connection's task is the largest part of an idle connection's memory, and tokio allocates
/// it 128-byte aligned: a few more bytes of state cost 128 per connection. This keeps the
/// pub/sub connection's task in its 512-byte cell (the release layout; debug futures are far
/// larger, so the check runs in release builds, as CI's `cargo test --release` does).
#[cfg(all(test, not(debug_assertions)))]
mod task_size {
    use super::*;
    use crate::ws::Handshake;

    /// tokio's task cell around a future: header 32, scheduler and id 24, trailer 48 bytes.
    const TASK_OVERHEAD: usize = 32 + 24 + 48;

    #[tokio::test]
    async fn a_pub_sub_connection_task_fits_a_512_byte_cell() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        let handshake = Handshake {
            uri: http::Uri::from_static("/"),
            headers: http::HeaderMap::new(),
            peer: Some(peer),
        };
        let ws = WebSocket::new(handshake, 1 << 20);
        let session = crate::session::Session::new(crate::Node::new(crate::Router::new()));
        let task = run(
            Io::Tcp(stream),
            Bytes::new(),
            Role::Server,
            ws,
            session,
            Config::default(),
            Some(Sockets::new()),
        );
        let size = std::mem::size_of_val(&task);
        assert!(
            size + TASK_OVERHEAD <= 512,
            "the connection future is {size} bytes: its task no longer fits 512 bytes (a 128-byte \
             step per connection); box what only rare paths need (see BENCHMARKS.md, idle memory)"
        );
    }
}
