//! The task that drives one connection: it runs the handler's `on_open`, then loops — takes
//! what was queued for the peer as the next batch to write, hands what the peer sent to the
//! handler, and waits for whichever comes next (the socket, new sends, a timer) — until the
//! connection ends, then runs `on_close`.
//!
//! The pieces it drives live beside it: the socket I/O in `transport.rs`, the handler calls in
//! `dispatch.rs`, the close handshake in `closing.rs`, the timers in `timers.rs`.
//!
//! This task is the largest part of an idle connection's memory, and tokio allocates it 128-byte
//! aligned, so a few more bytes of state cost 128 per connection: what only rare paths need is
//! boxed, and the loop's waiting is one poll function, not stored futures.

use super::closing::{close_payload, refuse_sends};
use super::deadline;
use super::decoder::Decoded;
use super::deflate::Negotiated;
use super::dispatch::{guarded, handle};
use super::frame::{Role, CLOSE};
use super::handler::SLOW_CONSUMER_REASON;
use super::io::Io;
use super::socket::{Queue, QueueItem, SocketState};
use super::timers::{Due, Timers};
use super::transport::Transport;
use super::{CloseFrame, Config, Handler, Sockets, WebSocket};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Runs the connection to its end. `on_open` first, `on_close` last, exactly once each.
///
/// Handler futures are boxed: an idle connection's task then holds only this loop's state, not
/// room for the largest handler future (which was most of a 2.7 KiB task); the cost is one
/// allocation per *inbound* message, never per publication.
// Each argument is what one side of the handshake settled; a struct for them would only be
// unpacked again here.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<H: Handler>(
    io: Io,
    prefix: Bytes,
    role: Role,
    ws: WebSocket,
    handler: H,
    config: Config,
    sockets: Option<Sockets>,
    deflate: Option<Negotiated>,
) -> impl Future<Output = ()> + Send {
    let mut transport = Transport::new(io, role, &config, deflate);
    // Bytes that came with the handshake are decoded now; the copy hyper read them into (its
    // whole read buffer) is released here rather than pinned by the connection.
    transport.feed(&prefix);
    drop(prefix);
    let timers = Timers::new(&config);
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
            let close = drive(&mut transport, &ws, &mut handler, &timers).await;
            drop(deadlines);
            close
        } else {
            if let Some(sockets) = &sockets {
                sockets.abandon();
            }
            transport
                .send_close(VecDeque::new(), 1011, "internal error", Duration::from_millis(100))
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
        drop(transport);
        guarded(&ws, "on_close", handler.on_close(&ws, close)).await;
        ws.mark_finished();
        // Counted as open until here: a server waiting for its sockets to drain waits for
        // their handlers too.
        if let Some(sockets) = &sockets {
            sockets.leave(&ws);
        }
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
    transport: &'a mut Transport,
    ws: &'a WebSocket,
    handler: &'a mut H,
    timers: &'a Timers,
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
            if let Some((code, reason)) = st.take_queue(transport, state, timers.close_timeout()) {
                // The peer stopped reading: try to tell it why, but do not wait on it.
                let send = st.sent_close.is_none();
                return transport
                    .end_with_close(VecDeque::new(), code, reason, false, send, Duration::from_millis(100))
                    .await;
            }

            // 2. Hand what the peer sent to the handler, one message at a time.
            if transport.has_message() {
                if let Some(step) = st.receive(transport, ws, handler, timers) {
                    if let Some(close) = step.await {
                        return close;
                    }
                }
                continue;
            }
            if let Some(err) = transport.take_error() {
                // Fail the connection (RFC 6455 §7.1.7): our close frame with the reason, then TCP.
                tracing::debug!(conn = ws.id(), code = err.code, reason = %err.reason, "protocol error from peer");
                refuse_sends(ws, err.code, &err.reason);
                return transport
                    .fail(
                        std::mem::take(&mut st.batch),
                        *err,
                        st.sent_close.take().map(|c| *c),
                        timers.close_timeout(),
                    )
                    .await;
            }

            // 3. Wait, with the next deadline where the sweep sees it (`deadline.rs`).
            let next = timers.next_check(st.last_heard, st.pinged, st.close_deadline);
            state
                .deadline
                .store(deadline::at_ms(next.into_std()), Ordering::Relaxed);
            let may_close = st.sent_close.is_none();
            let event = poll_fn(|cx| poll_event(transport, cx, ws, &mut st.batch, may_close)).await;
            match event {
                Event::Queued | Event::Written(Ok(())) => {}
                Event::Written(Err(err)) => return write_failed(ws, err, st.sent_close.map(|c| *c)),
                Event::Timer => match timers.due(Instant::now(), st.last_heard, st.pinged, st.close_deadline) {
                    Due::Nothing => {}
                    Due::CloseTimeout => {
                        return st.sent_close.map(|c| *c).unwrap_or(CloseFrame {
                            code: 1006,
                            reason: "close timeout".into(),
                            by_peer: false,
                        });
                    }
                    Due::IdleTimeout => {
                        tracing::info!(
                            conn = ws.id(),
                            "dropping idle peer: nothing received for {:?}",
                            timers.idle_timeout()
                        );
                        return CloseFrame {
                            code: 1006,
                            reason: "idle timeout".into(),
                            by_peer: false,
                        };
                    }
                    Due::Ping => {
                        st.pinged = true;
                        let _ = ws.ping(Bytes::new());
                    }
                },
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

/// What the connection waits for, in one poll: the socket accepting our batch, new sends
/// (or the slow-consumer abort), its deadline, the peer's bytes. Nothing here is a stored
/// future: an idle connection's task holds no waiting state at all (the deadline is in the
/// shared state, watched by the sweep in `deadline.rs`).
fn poll_event(
    transport: &mut Transport,
    cx: &mut Context<'_>,
    ws: &WebSocket,
    batch: &mut VecDeque<QueueItem>,
    may_close: bool,
) -> Poll<Event> {
    if transport.writing(batch) {
        if let Poll::Ready(result) = transport.poll_write_batch(cx, batch) {
            return Poll::Ready(Event::Written(result));
        }
    }
    ws.state.waker.register(cx.waker());
    {
        let q = ws.state.queue.lock();
        let can_take = !transport.writing(batch) && (!q.items.is_empty() || (may_close && q.close.is_some()));
        if q.abort || can_take {
            return Poll::Ready(Event::Queued);
        }
    }
    // The deadline sweep wakes us (through the waker registered above) once it has passed.
    if deadline::now_ms() >= ws.state.deadline.load(Ordering::Relaxed) {
        return Poll::Ready(Event::Timer);
    }
    if transport.wants_input() {
        if let Poll::Ready(result) = transport.poll_read(cx) {
            return Poll::Ready(Event::Read(result));
        }
    }
    Poll::Pending
}

/// Keeps the queued sends going out while a handler runs. Ready only when writing failed or
/// the slow-consumer policy aborted the connection.
pub(super) fn poll_output(
    transport: &mut Transport,
    cx: &mut Context<'_>,
    ws: &WebSocket,
    batch: &mut VecDeque<QueueItem>,
) -> Poll<io::Error> {
    loop {
        if transport.writing(batch) {
            match transport.poll_write_batch(cx, batch) {
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
        if transport.writing(batch) || q.items.is_empty() {
            return Poll::Pending;
        }
        take_queue(&mut q, batch);
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
    fn take_queue(
        &mut self,
        transport: &Transport,
        state: &SocketState,
        close_timeout: Duration,
    ) -> Option<(u16, String)> {
        let (close_request, abort) = {
            let mut q = state.queue.lock();
            if !q.abort && transport.writing(&self.batch) {
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
        transport: &'a mut Transport,
        ws: &'a WebSocket,
        handler: &'a mut H,
        timers: &Timers,
    ) -> Option<BoxFuture<'a, Option<CloseFrame>>> {
        let decoded = transport.next_message()?;
        self.last_heard = Instant::now();
        self.pinged = false;
        match decoded {
            Decoded::Close { code, reason } => {
                let batch = std::mem::take(&mut self.batch);
                if let Some(ours) = self.sent_close.take().map(|c| *c) {
                    // The peer answered our close: the handshake is complete once our close
                    // frame (staged, maybe not all written yet) is out.
                    return Some(transport.finish(batch, ours, timers.close_timeout()).map(Some).boxed());
                }
                // Echo the peer's close; nothing may follow it (RFC 6455 §5.5.1). What was staged
                // before the peer's close still goes out, then the echo.
                refuse_sends(ws, code, &reason);
                let end = transport.end_with_close(batch, code, reason, true, true, timers.close_timeout());
                Some(end.map(Some).boxed())
            }
            // After our close frame the application is done with the connection; what the peer
            // sends until it answers is discarded.
            _ if self.sent_close.is_some() => None,
            decoded => {
                if let Decoded::Ping(payload) = &decoded {
                    let _ = ws.pong(payload.clone());
                }
                Some(handle(decoded, ws, handler, transport, &mut self.batch))
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
pub(super) fn write_failed(ws: &WebSocket, err: io::Error, sent_close: Option<CloseFrame>) -> CloseFrame {
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

/// The size of the future [`run`] makes for a server socket with `handler`: over a real loopback
/// TCP pair, with the default config, registered with a [`Sockets`] (as behind an HTTP server).
///
/// For tests that keep a connection's task in its allocation cell. The task is the largest part
/// of an idle connection's memory, and tokio allocates it 128-byte aligned: a few more bytes of
/// state cost 128 per connection. Only release layouts mean anything (debug futures are far
/// larger): such tests run under `cargo test --release`.
#[cfg(test)]
pub(crate) async fn future_size_for<H: Handler>(handler: H) -> usize {
    use super::Handshake;
    use tokio::net::{TcpListener, TcpStream};

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _client = TcpStream::connect(addr).await.expect("connect");
    let (stream, peer) = listener.accept().await.expect("accept");
    let handshake = Handshake {
        uri: http::Uri::from_static("/"),
        headers: http::HeaderMap::new(),
        peer: Some(peer),
    };
    let ws = WebSocket::new(handshake, 1 << 20);
    let config = Config::default();
    let task = run(
        Io::Tcp(stream),
        Bytes::new(),
        Role::Server,
        ws,
        handler,
        config,
        Some(Sockets::new()),
        None,
    );
    std::mem::size_of_val(&task)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nop;
    impl Handler for Nop {}

    struct Large(#[allow(dead_code)] [u8; 256]);
    impl Handler for Large {}

    #[tokio::test]
    async fn the_measured_future_holds_the_handler() {
        let nop = future_size_for(Nop).await;
        let large = future_size_for(Large([0; 256])).await;
        assert!(large >= nop + 256, "{nop} and {large} bytes");
    }

    /// With a handler of no size, the task fits a 512-byte cell with room to spare for the
    /// handler (the protocol session's test holds the binding limit).
    #[cfg(not(debug_assertions))]
    #[tokio::test]
    async fn a_connection_task_without_handler_state_fits_a_512_byte_cell() {
        /// tokio's task cell around a future: header 32, scheduler and id 24, trailer 48 bytes.
        const TASK_OVERHEAD: usize = 32 + 24 + 48;
        let size = future_size_for(Nop).await;
        assert!(
            size + TASK_OVERHEAD <= 512,
            "the connection future is {size} bytes: its task no longer fits 512 bytes (a 128-byte \
             step per connection); box what only rare paths need (see BENCHMARKS.md, idle memory)"
        );
    }
}
