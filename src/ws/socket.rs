//! `WebSocket`: the handle to one connection, usable from any task.
//!
//! Sends go to a queue guarded by a mutex that is never held across an `.await`; the connection's
//! task takes the whole queue at each wake-up and writes it in one vectored write. The queue is a
//! `VecDeque` that allocates on first use and is released once drained, so an idle connection
//! holds no outbound buffer (a tokio mpsc channel would keep a 32-slot block per connection).

use super::frame::{self, BINARY, PING, PONG, TEXT};
use super::handler::SLOW_CONSUMER_REASON;
use super::handshake::{Handshake, Record};
use super::{PreparedMessage, Text};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Why a send was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closing or closed; nothing more can be sent.
    #[error("the WebSocket connection is closed")]
    Closed,
    /// The peer is not reading fast enough: the outbound queue exceeded its byte budget
    /// ([`super::Config::max_backpressure`]); the connection is being closed with 1008.
    #[error("the peer is too slow: outbound queue over its limit, connection closed")]
    SlowConsumer,
    /// The close code cannot be sent (valid: 1000–1003, 1007–1014, 3000–4999) or the reason is
    /// longer than 123 bytes.
    #[error("invalid close frame: code {0} or reason too long (codes 1000-1003, 1007-1014 or 3000-4999, reason up to 123 bytes)")]
    InvalidClose(u16),
}

/// A cloneable handle to one WebSocket connection.
///
/// All methods return at once: sends are queued and written by the connection's own task.
#[derive(Clone)]
pub struct WebSocket {
    pub(super) state: Arc<SocketState>,
}

/// The state of one socket that its handles and its task both reach: the outbound queue, the
/// task's waker and its next deadline.
pub(super) struct SocketState {
    id: u64,
    handshake: Record,
    max_backpressure: usize,
    /// From this payload size on, a prepared message goes out as its shared compressed frame
    /// (`u32::MAX`: never; see `deflate.rs`).
    shared_deflate: u32,
    pub(super) queue: Mutex<Queue>,
    /// Wakes the connection task: something was queued, or a close was requested.
    /// Wakes the connection's task when something is queued (an `AtomicWaker`, not a `Notify`:
    /// the task polls it without keeping a `Notified` future alive).
    pub(super) waker: AtomicWaker,
    /// Wakes everyone waiting in [`WebSocket::closed`].
    ended: Notify,
    /// When the connection's task must next look at its timeouts, in [`super::deadline`] units
    /// (checked by the deadline sweep, which then wakes it).
    pub(super) deadline: AtomicU64,
}

/// An item of the outbound queue.
pub(super) enum QueueItem {
    /// A message, framed by the connection's task (masked when we are the client).
    Message { opcode: u8, payload: Bytes },
    /// A text message framed once for many sockets: a server writes its frame as is, a client
    /// frames (and masks) its payload like a `Message`.
    Prepared(PreparedMessage),
    /// A complete server frame shared with other sockets, written as is: a publication
    /// compressed once for every socket that agreed to permessage-deflate without context
    /// takeover.
    Frame(Bytes),
}

#[derive(Default)]
pub(super) struct Queue {
    pub(super) items: VecDeque<QueueItem>,
    pub(super) bytes: usize,
    /// Set once a close was requested (by the application or by the slow-consumer policy).
    pub(super) close: Option<(u16, String)>,
    /// True when the close is forced: the peer is not reading, so do not wait on it.
    pub(super) abort: bool,
    pub(super) ended: bool,
    /// Set once the handler's `on_close` has returned: what [`WebSocket::closed`] waits for.
    pub(super) finished: bool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The connection whose handler this thread is polling, if any (compared, never dereferenced).
    static HANDLING: Cell<*const SocketState> = const { Cell::new(std::ptr::null()) };
}

impl WebSocket {
    pub(super) fn new(handshake: Handshake, max_backpressure: usize) -> Self {
        Self::with_shared_deflate(handshake, max_backpressure, u32::MAX)
    }

    /// A socket that sends prepared messages of `shared_deflate` bytes and more as their shared
    /// compressed frame (a server socket that agreed to permessage-deflate without context
    /// takeover on its side).
    pub(super) fn with_shared_deflate(handshake: Handshake, max_backpressure: usize, shared_deflate: u32) -> Self {
        Self {
            state: Arc::new(SocketState {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                handshake: Record::new(&handshake),
                max_backpressure,
                shared_deflate,
                queue: Mutex::new(Queue::default()),
                waker: AtomicWaker::new(),
                ended: Notify::new(),
                deadline: AtomicU64::new(super::deadline::NEVER),
            }),
        }
    }

    /// A socket with no connection behind it, for unit tests of what holds sockets.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        let handshake = Handshake {
            uri: http::Uri::from_static("/"),
            headers: http::HeaderMap::new(),
            peer: None,
        };
        Self::new(handshake, 1 << 20)
    }

    /// A process-unique number for this connection.
    pub fn id(&self) -> u64 {
        self.state.id
    }

    /// The opening handshake (path, query, headers, peer address).
    ///
    /// Kept compact and decoded on the first call (see [`Handshake`]'s module): an application
    /// that needs it on every message may keep what it needs in its handler instead.
    pub fn handshake(&self) -> &Handshake {
        self.state.handshake.get()
    }

    /// A copy of the opening handshake that leaves the connection as it was: a connection keeps
    /// its handshake compactly until [`handshake`](Self::handshake) is first called, and from
    /// then on decoded (a few hundred bytes more). For code that looks once — authentication at
    /// the opening — this is the cheaper one.
    pub fn handshake_snapshot(&self) -> Handshake {
        self.state.handshake.snapshot()
    }

    /// Queues a text message.
    pub fn send_text(&self, text: impl Into<Text>) -> Result<(), SendError> {
        let bytes: Bytes = text.into().into();
        self.push(TEXT, bytes)
    }

    /// Queues a binary message.
    pub fn send_binary(&self, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.push(BINARY, data.into())
    }

    /// Queues a ping (payload up to 125 bytes; longer is cut).
    pub fn ping(&self, data: impl Into<Bytes>) -> Result<(), SendError> {
        let mut data: Bytes = data.into();
        data.truncate(125);
        self.push(PING, data)
    }

    /// Queues a pong (payload up to 125 bytes; longer is cut).
    pub fn pong(&self, data: impl Into<Bytes>) -> Result<(), SendError> {
        let mut data: Bytes = data.into();
        data.truncate(125);
        self.push(PONG, data)
    }

    /// Starts the close handshake with `code` and `reason`: queued messages are sent first, then
    /// the close frame; the connection ends when the peer answers or after the close timeout.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), SendError> {
        if !frame::is_sendable_close_code(code) || reason.len() > 123 {
            return Err(SendError::InvalidClose(code));
        }
        {
            let mut q = self.state.queue.lock();
            if q.close.is_some() || q.ended {
                return Err(SendError::Closed);
            }
            q.close = Some((code, reason.to_owned()));
        }
        self.state.waker.wake();
        Ok(())
    }

    /// True once a close was requested or the connection ended.
    pub fn is_closed(&self) -> bool {
        let q = self.state.queue.lock();
        q.close.is_some() || q.ended
    }

    /// Bytes waiting in the outbound queue.
    pub fn buffered_amount(&self) -> usize {
        self.state.queue.lock().bytes
    }

    /// Waits until the connection has ended (both the socket and the handler's `on_close`).
    pub async fn closed(&self) {
        let ended = self.state.ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if self.state.queue.lock().finished {
            return;
        }
        ended.await;
    }

    /// Queues a message framed once for many sockets, without copying it: a server socket
    /// writes the shared frame; a client socket sends its text as an ordinary (masked) message.
    ///
    /// A server socket that agreed to permessage-deflate without context takeover gets the
    /// message compressed: compressed once, by the first such socket it is sent to, and the same
    /// compressed frame queued for every other.
    pub fn send_prepared(&self, message: &PreparedMessage) -> Result<(), SendError> {
        let threshold = self.state.shared_deflate;
        if threshold != u32::MAX && message.payload_len() >= threshold as usize {
            let frame = message.deflated_frame().clone();
            let len = frame.len();
            return self.enqueue(QueueItem::Frame(frame), len);
        }
        let len = message.frame().len();
        self.enqueue(QueueItem::Prepared(message.clone()), len)
    }

    fn push(&self, opcode: u8, payload: Bytes) -> Result<(), SendError> {
        let len = payload.len();
        self.enqueue(QueueItem::Message { opcode, payload }, len)
    }

    fn enqueue(&self, item: QueueItem, len: usize) -> Result<(), SendError> {
        {
            let mut q = self.state.queue.lock();
            if q.close.is_some() || q.ended {
                return Err(SendError::Closed);
            }
            // The budget is checked before adding, so one message larger than the budget still
            // goes out on an otherwise idle connection (uWS's maxBackpressure works the same way).
            if q.bytes > self.state.max_backpressure {
                q.close = Some((1008, SLOW_CONSUMER_REASON.to_owned()));
                q.abort = true;
                let queued = q.bytes;
                drop(q);
                tracing::warn!(
                    conn = self.state.id,
                    queued,
                    limit = self.state.max_backpressure,
                    "closing slow consumer (1008): peer is not reading"
                );
                self.state.waker.wake();
                return Err(SendError::SlowConsumer);
            }
            q.bytes += len;
            q.items.push_back(item);
        }
        // A handler replying from inside its connection's own task needs no wake-up: the task
        // takes the queue as soon as the handler returns or waits. Waking it anyway would make
        // tokio poll it once more for nothing after every reply (and re-register its waker).
        if !self.is_handling() {
            self.state.waker.wake();
        }
        Ok(())
    }

    /// Whether this connection's task is running its handler on this thread right now.
    fn is_handling(&self) -> bool {
        HANDLING.with(|current| std::ptr::eq(current.get(), Arc::as_ptr(&self.state)))
    }

    /// Runs `poll` (the connection's task polling its handler) marked as "handling" for
    /// [`Self::is_handling`].
    pub(super) fn handling<R>(&self, poll: impl FnOnce() -> R) -> R {
        let previous = HANDLING.with(|current| current.replace(Arc::as_ptr(&self.state)));
        // Restored even if the handler panics (a caught panic must not leave the mark behind).
        struct Restore(*const SocketState);
        impl Drop for Restore {
            fn drop(&mut self) {
                HANDLING.with(|current| current.set(self.0));
            }
        }
        let _restore = Restore(previous);
        poll()
    }

    pub(super) fn mark_ended(&self) {
        {
            let mut q = self.state.queue.lock();
            q.ended = true;
            q.items = VecDeque::new();
            q.bytes = 0;
        }
    }

    /// Called after the handler's `on_close`: wakes everyone waiting in [`WebSocket::closed`].
    pub(super) fn mark_finished(&self) {
        self.state.queue.lock().finished = true;
        self.state.ended.notify_waiters();
    }
}

impl fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the handshake: formatting must not decode it (see `handshake.rs`).
        f.debug_struct("WebSocket")
            .field("id", &self.state.id)
            .finish_non_exhaustive()
    }
}

impl PartialEq for WebSocket {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }
}

impl Eq for WebSocket {}
