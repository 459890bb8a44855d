//! The task that drives one connection: decodes what the peer sends into handler calls, writes the
//! queue in batches, pings idle peers and finishes the close handshake.

use super::decoder::{Decoder, Inbound, ProtocolError};
use super::frame::{self, Role, CLOSE};
use super::io::Io;
use super::socket::{Outbound, Queue};
use super::{CloseFrame, Config, Handler, Text, WebSocket};
use crate::Shutdown;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{sleep_until, Instant};

/// A drained queue larger than this is freed instead of kept for reuse, so a burst does not pin
/// memory on a connection that then goes idle.
const KEEP_QUEUE_CAPACITY: usize = 16;

/// Corked frames are written once they reach this size; a larger frame is written from its own
/// bytes instead of being copied.
const CORK_LIMIT: usize = 64 * 1024;

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
pub(crate) async fn run<H: Handler>(
    io: Io,
    role: Role,
    ws: WebSocket,
    mut handler: H,
    config: Config,
    shutdown: Option<Shutdown>,
) {
    let mut wire = Wire {
        io,
        role,
        max_frame_size: config.max_frame_size.max(1),
        decoder: Decoder::new(role, config.max_message_size),
        inbox: VecDeque::new(),
        error: None,
        cork: BytesMut::new(),
        out: VecDeque::new(),
    };
    let opened = guarded(&ws, "on_open", handler.on_open(&ws)).await;
    let close = if opened {
        drive(&mut wire, &ws, &mut handler, &config, shutdown.as_ref()).await
    } else {
        wire.send_close(1011, "internal error", Duration::from_millis(100))
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
}

/// The socket with the protocol state of both directions.
struct Wire {
    io: Io,
    role: Role,
    max_frame_size: usize,
    decoder: Decoder,
    /// Messages decoded from the last read, handed to the handler one at a time.
    inbox: VecDeque<Inbound>,
    /// A protocol violation found in the last read, acted on once the inbox is empty.
    error: Option<ProtocolError>,
    /// Small frames of the batch being written, copied together.
    cork: BytesMut,
    /// What is left to write of the batch, in order; empty between batches.
    out: VecDeque<Bytes>,
}

impl Wire {
    /// Reads once and decodes what came. Returns the number of bytes read (0: end of stream).
    async fn read(&mut self) -> io::Result<usize> {
        poll_fn(|cx| {
            let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut scratch);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            let data = buf.filled();
            if let Err(err) = self.decoder.decode(data, &mut self.inbox) {
                self.error.get_or_insert(err);
            }
            Poll::Ready(Ok(data.len()))
        })
        .await
    }

    /// Writes the batch: small frames are copied into one buffer (allocated for this batch only)
    /// and large ones are referenced, all of it written with vectored writes.
    ///
    /// Poll-based rather than an `async fn`: an `async` writer nests its futures in the
    /// connection's task, and their room is paid for by every idle connection. Here the state
    /// (`out`) is empty between batches.
    async fn write_batch(&mut self, batch: &mut VecDeque<Outbound>) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_batch(cx, batch)).await
    }

    fn poll_write_batch(&mut self, cx: &mut Context<'_>, batch: &mut VecDeque<Outbound>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_write_out(cx))?;
            if batch.is_empty() {
                break;
            }
            while self.out.len() < MAX_CHUNKS && self.cork.len() < CORK_LIMIT {
                let Some(item) = batch.pop_front() else { break };
                match item {
                    // A large frame, or the only one: written from the shared bytes, not copied.
                    Outbound::Frame(frame)
                        if frame.len() >= CORK_LIMIT || (batch.is_empty() && self.cork.is_empty()) =>
                    {
                        self.push_chunk(frame);
                    }
                    Outbound::Frame(frame) => self.cork.extend_from_slice(&frame),
                    Outbound::Message { opcode, payload } => self.put_message(opcode, payload),
                }
            }
            self.seal_cork();
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        // Nothing is kept for the next batch.
        self.cork = BytesMut::new();
        if self.out.capacity() > MAX_CHUNKS {
            self.out = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Frames one message, split into frames of at most `max_frame_size`.
    fn put_message(&mut self, opcode: u8, payload: Bytes) {
        let mask = self.role == Role::Client;
        if payload.is_empty() {
            let key = self.mask();
            frame::put_frame(&mut self.cork, true, opcode, &[], key);
            return;
        }
        let mut frame_opcode = opcode;
        let mut start = 0;
        while start < payload.len() {
            let end = payload.len().min(start + self.max_frame_size);
            let fin = end == payload.len();
            let chunk = payload.slice(start..end);
            if !mask && chunk.len() >= CORK_LIMIT {
                // Our own large payload is not copied.
                frame::put_header(&mut self.cork, fin, frame_opcode, chunk.len(), None);
                self.push_chunk(chunk);
            } else {
                let key = self.mask();
                frame::put_frame(&mut self.cork, fin, frame_opcode, &chunk, key);
            }
            frame_opcode = frame::CONTINUATION;
            start = end;
        }
    }

    /// A client masks every frame with a fresh key (RFC 6455 §5.3); a server never does.
    fn mask(&self) -> Option<[u8; 4]> {
        (self.role == Role::Client).then(|| fastrand::u32(..).to_ne_bytes())
    }

    /// Queues `chunk` for writing after what is corked so far.
    fn push_chunk(&mut self, chunk: Bytes) {
        self.seal_cork();
        self.out.push_back(chunk);
    }

    fn seal_cork(&mut self) {
        if !self.cork.is_empty() {
            let corked = self.cork.split().freeze();
            self.out.push_back(corked);
        }
    }

    /// Writes the queued chunks, several per syscall.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_CHUNKS];
            let mut count = 0;
            for (slot, chunk) in slices.iter_mut().zip(&self.out) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            let mut n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            while n > 0 {
                let Some(first) = self.out.front_mut() else { break };
                if n >= first.len() {
                    n -= first.len();
                    self.out.pop_front();
                } else {
                    first.advance(n);
                    n = 0;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Sends a close frame, giving up after `limit`. Boxed, like the other rare paths: the
    /// connection's task would otherwise carry room for its timer and write state all its life.
    fn send_close<'a>(&'a mut self, code: u16, reason: &str, limit: Duration) -> BoxFuture<'a, ()> {
        let mut batch = VecDeque::from([Outbound::Message {
            opcode: CLOSE,
            payload: close_payload(code, reason),
        }]);
        async move {
            let _ = tokio::time::timeout(limit, self.write_batch(&mut batch)).await;
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

async fn drive<H: Handler>(
    wire: &mut Wire,
    ws: &WebSocket,
    handler: &mut H,
    config: &Config,
    shutdown: Option<&Shutdown>,
) -> CloseFrame {
    let shared = &ws.shared;
    let mut batch: VecDeque<Outbound> = VecDeque::new();
    let mut last_heard = Instant::now();
    let mut pinged = false;
    // Set once our close frame is out: the peer has until then to answer it.
    let mut close_deadline: Option<Instant> = None;
    let mut sent_close: Option<CloseFrame> = None;
    let timer = sleep_until(last_heard + config.idle_timeout);
    tokio::pin!(timer);
    let stopping = async {
        match shutdown {
            Some(shutdown) => shutdown.triggered().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stopping);
    let mut stop_seen = false;

    loop {
        // 1. Write everything queued since the last turn, in one flush.
        let (close_request, abort) = take_queue(&mut shared.queue.lock(), &mut batch);
        // A close already sent is not sent again, and nothing is written after it.
        let close_request = close_request.filter(|_| sent_close.is_none());
        if sent_close.is_some() {
            batch.clear();
        }
        if abort {
            // The peer stopped reading: try to tell it why, but do not wait on it.
            if let Some((code, reason)) = close_request {
                wire.send_close(code, &reason, Duration::from_millis(100)).await;
                return CloseFrame {
                    code,
                    reason,
                    by_peer: false,
                };
            }
        }
        if !batch.is_empty() || close_request.is_some() {
            if let Some((code, reason)) = &close_request {
                batch.push_back(Outbound::Message {
                    opcode: CLOSE,
                    payload: close_payload(*code, reason),
                });
            }
            if let Err(err) = write_watching_abort(wire, &mut batch, ws).await {
                tracing::debug!(conn = ws.id(), %err, "write failed");
                // A slow consumer aborted mid-write is reported as the 1008 close it is.
                if let Some((code, reason)) = forced_close(ws) {
                    return CloseFrame {
                        code,
                        reason,
                        by_peer: false,
                    };
                }
                return sent_close.unwrap_or(CloseFrame {
                    code: 1006,
                    reason: err.to_string(),
                    by_peer: false,
                });
            }
            if batch.capacity() > KEEP_QUEUE_CAPACITY {
                batch = VecDeque::new();
            }
            if let Some((code, reason)) = close_request {
                sent_close = Some(CloseFrame {
                    code,
                    reason,
                    by_peer: false,
                });
                close_deadline = Some(Instant::now() + config.close_timeout);
            }
            continue;
        }

        // 2. Hand what the peer sent to the handler, one message at a time.
        if let Some(inbound) = wire.inbox.pop_front() {
            if wire.inbox.is_empty() && wire.inbox.capacity() > KEEP_QUEUE_CAPACITY {
                wire.inbox = VecDeque::new();
            }
            last_heard = Instant::now();
            pinged = false;
            match inbound {
                Inbound::Close { code, reason } => {
                    if let Some(ours) = sent_close {
                        // The peer answered our close: the handshake is complete.
                        return ours;
                    }
                    // Echo the peer's close; nothing may follow it (RFC 6455 §5.5.1).
                    refuse_sends(ws, code, &reason);
                    wire.send_close(code, &reason, config.close_timeout).await;
                    return CloseFrame {
                        code,
                        reason,
                        by_peer: true,
                    };
                }
                // After our close frame the application is done with the connection; what the
                // peer sends until it answers is discarded.
                _ if sent_close.is_some() => {}
                inbound => {
                    if let Inbound::Ping(payload) = &inbound {
                        let _ = ws.pong(payload.clone());
                    }
                    if handle(inbound, ws, handler, wire, &mut batch).await == Some(false) {
                        let _ = ws.close(1011, "internal error");
                    }
                }
            }
            continue;
        }
        if let Some(err) = wire.error.take() {
            // Fail the connection (RFC 6455 §7.1.7): our close frame with the reason, then TCP.
            tracing::debug!(conn = ws.id(), code = err.code, reason = %err.reason, "protocol error from peer");
            refuse_sends(ws, err.code, &err.reason);
            if sent_close.is_none() {
                wire.send_close(err.code, &err.reason, config.close_timeout).await;
            }
            wire.linger(config.close_timeout).await;
            return sent_close.unwrap_or(CloseFrame {
                code: err.code,
                reason: err.reason.into_owned(),
                by_peer: false,
            });
        }

        // 3. Wait for the peer, the queue, or a timer. The timer is re-armed only when it must
        // fire earlier or has fired: moving it on every message would cost a timer-wheel update
        // per message; a stale wake-up just finds nothing due.
        let idle_deadline = match (config.ping_interval, pinged) {
            (Some(interval), false) => last_heard + interval.min(config.idle_timeout),
            _ => last_heard + config.idle_timeout,
        };
        let deadline = close_deadline.map_or(idle_deadline, |d| d.min(idle_deadline));
        if timer.is_elapsed() || deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            // The server is shutting down: close with 1001 and finish the handshake (close_timeout).
            _ = &mut stopping, if close_deadline.is_none() && !stop_seen => {
                stop_seen = true;
                let _ = ws.close(1001, "server shutting down");
            }
            _ = &mut timer => {
                let now = Instant::now();
                if close_deadline.is_some_and(|d| now >= d) {
                    return sent_close.unwrap_or(CloseFrame { code: 1006, reason: "close timeout".into(), by_peer: false });
                }
                let silent = now.duration_since(last_heard);
                if silent >= config.idle_timeout {
                    tracing::info!(conn = ws.id(), "dropping idle peer: nothing received for {:?}", config.idle_timeout);
                    return CloseFrame { code: 1006, reason: "idle timeout".into(), by_peer: false };
                }
                if !pinged && config.ping_interval.is_some_and(|interval| silent >= interval) {
                    pinged = true;
                    let _ = ws.ping(Bytes::new());
                }
            }
            read = wire.read() => match read {
                Ok(0) => {
                    return sent_close.unwrap_or(CloseFrame { code: 1006, reason: "connection closed without a close frame".into(), by_peer: true });
                }
                Ok(_) => {}
                Err(err) => {
                    return sent_close.unwrap_or(CloseFrame { code: 1006, reason: err.to_string(), by_peer: true });
                }
            }
        }
    }
}

/// The close requested by the slow-consumer policy, if it aborted the connection.
fn forced_close(ws: &WebSocket) -> Option<(u16, String)> {
    let q = ws.shared.queue.lock();
    q.close.clone().filter(|_| q.abort)
}

/// Moves the queued messages into `batch` and returns the pending close request, if any.
fn take_queue(q: &mut Queue, batch: &mut VecDeque<Outbound>) -> (Option<(u16, String)>, bool) {
    std::mem::swap(&mut q.items, batch);
    q.bytes = 0;
    // Free a large drained buffer; keep a small one for reuse.
    if q.items.capacity() > KEEP_QUEUE_CAPACITY {
        q.items = VecDeque::new();
    }
    (q.close.clone(), q.abort)
}

/// Writes the batch; a slow consumer is aborted even while its write is stuck.
async fn write_watching_abort(wire: &mut Wire, batch: &mut VecDeque<Outbound>, ws: &WebSocket) -> io::Result<()> {
    let write = wire.write_batch(batch);
    tokio::pin!(write);
    loop {
        tokio::select! {
            // Most writes complete at once: polling the write first means the wake-up below is
            // only registered (a lock in `Notify`) when the socket is actually full.
            biased;
            result = &mut write => return result,
            _ = ws.shared.wake.notified() => {
                if ws.shared.queue.lock().abort {
                    return Err(io::Error::other("slow consumer"));
                }
            }
        }
    }
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
/// healthy reader into a "slow consumer". Resolves to `Some(false)` if the handler panicked,
/// `None` if writing failed (the main loop then reports how the connection ended).
///
/// Boxed: it exists only while a message is being handled, not in every idle connection.
fn handle<'a, H: Handler>(
    inbound: Inbound,
    ws: &'a WebSocket,
    handler: &'a mut H,
    wire: &'a mut Wire,
    batch: &'a mut VecDeque<Outbound>,
) -> BoxFuture<'a, Option<bool>> {
    async move {
        let call = dispatch(inbound, ws, handler);
        tokio::pin!(call);
        loop {
            tokio::select! {
                biased;
                ok = &mut call => return Some(ok),
                _ = ws.shared.wake.notified() => {
                    let (_, abort) = take_queue(&mut ws.shared.queue.lock(), batch);
                    if abort || write_watching_abort(wire, batch, ws).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }
    .boxed()
}

/// Hands one message to the handler. Returns false if the handler panicked.
async fn dispatch<H: Handler>(inbound: Inbound, ws: &WebSocket, handler: &mut H) -> bool {
    match inbound {
        Inbound::Text(bytes) => guarded(ws, "on_message", handler.on_message(ws, Text::from_validated(bytes))).await,
        Inbound::Binary(bytes) => guarded(ws, "on_bytes", handler.on_bytes(ws, bytes)).await,
        Inbound::Ping(bytes) => guarded(ws, "on_ping", handler.on_ping(ws, bytes)).await,
        Inbound::Pong(bytes) => guarded(ws, "on_pong", handler.on_pong(ws, bytes)).await,
        Inbound::Close { .. } => true,
    }
}

/// After a close frame went out or came in, nothing more may be sent: later sends are refused
/// and whatever is still queued is dropped (a data frame after a close frame breaks RFC 6455 §5.5.1).
fn refuse_sends(ws: &WebSocket, code: u16, reason: &str) {
    let mut q = ws.shared.queue.lock();
    if q.close.is_none() {
        q.close = Some((code, reason.to_owned()));
    }
    q.items.clear();
    q.bytes = 0;
}
