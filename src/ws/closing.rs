//! The close handshake (RFC 6455 §7) as the connection's task runs it: what is staged goes out,
//! then our close frame; the peer's answer (or the close timeout) ends the connection; a
//! protocol violation fails it, with a lingering close of TCP so the peer can still read why.
//!
//! Every sequence here is one boxed future: closing happens once per connection, and inline these
//! futures would make every idle connection's task carry room for their timeouts and writes all
//! its life. (They are methods of `Transport`, whose writes they are made of.)

use super::decoder::ProtocolError;
use super::frame::{self, CLOSE};
use super::socket::QueueItem;
use super::transport::Transport;
use super::{CloseFrame, WebSocket};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::time::Duration;

impl Transport {
    /// Sends what is staged in `batch`, then a close frame, giving up after `limit`. Boxed, like
    /// the other rare paths: the connection's task would otherwise carry room for their timeout
    /// and write state all its life.
    pub(super) fn send_close<'a>(
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
    pub(super) fn end_with_close(
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
    pub(super) fn finish(
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
    pub(super) fn fail(
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
                let _ = self.shutdown().await;
                while let Ok(1..) = self.read().await {}
            })
            .await;
        }
        .boxed()
    }
}

/// A close frame's payload; 1005 ("no status") is sent as an empty payload.
pub(super) fn close_payload(code: u16, reason: &str) -> Bytes {
    if code == 1005 {
        Bytes::new()
    } else {
        frame::close_payload(code, reason)
    }
}

/// After a close frame went out or came in, nothing more may be sent: later sends are refused
/// and whatever is still queued is dropped (a data frame after a close frame breaks RFC 6455 §5.5.1).
pub(super) fn refuse_sends(ws: &WebSocket, code: u16, reason: &str) {
    let mut q = ws.state.queue.lock();
    if q.close.is_none() {
        q.close = Some((code, reason.to_owned()));
    }
    q.items.clear();
    q.bytes = 0;
}
