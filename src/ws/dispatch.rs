//! Handing what the peer sent to the handler: one message at a time, each callback boxed (so an
//! idle connection's task keeps no room for handler futures) and guarded (a panic ends the
//! connection properly instead of leaking it), with the queued sends still going out while the
//! handler waits.

use super::decoder::Decoded;
use super::driver::{poll_output, write_failed};
use super::socket::QueueItem;
use super::transport::Transport;
use super::{CloseFrame, Handler, Text, WebSocket};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::panic::AssertUnwindSafe;
use std::task::Poll;

/// Runs one handler callback; a panic in it is caught and logged so that the connection still
/// ends properly (`on_close` runs, subscriptions are released) instead of leaking. Resolves to
/// false if it panicked.
///
/// Not an `async fn`: the handler's future is boxed before the caller awaits, so the connection's
/// task never holds room for it inline.
pub(super) fn guarded<'a>(
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
pub(super) fn handle<'a, H: Handler>(
    decoded: Decoded,
    ws: &'a WebSocket,
    handler: &'a mut H,
    transport: &'a mut Transport,
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
                if let Poll::Ready(err) = poll_output(transport, cx, ws, batch) {
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
        // Inflated by the transport before it hands a message out.
        Decoded::Close { .. } | Decoded::Deflated { .. } => true,
    }
}
