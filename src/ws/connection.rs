//! The task that drives one connection: reads frames into the handler, writes the queue in batches,
//! pings idle peers and finishes the close handshake.

use super::socket::{Outbound, Queue};
use super::{CloseFrame, Config, Handler, Text, WebSocket};
use crate::Shutdown;
use bytes::BytesMut;
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};
use tokio_websockets::{Message, WebSocketStream};

/// A drained queue larger than this is freed instead of kept for reuse, so a burst does not pin
/// memory on a connection that then goes idle.
const KEEP_QUEUE_CAPACITY: usize = 16;

/// Corked frames are written once they reach this size; a larger frame is written on its own.
const CORK_LIMIT: usize = 64 * 1024;

/// Runs the connection to its end. `on_open` first, `on_close` last, exactly once each.
///
/// Handler futures are boxed: an idle connection's task then holds only this loop's state, not
/// room for the largest handler future (which was most of a 2.7 KiB task); the cost is one
/// allocation per *inbound* message, never per publication.
pub(crate) async fn run<S, H>(
    mut stream: WebSocketStream<S>,
    ws: WebSocket,
    mut handler: H,
    config: Config,
    shutdown: Option<Shutdown>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    let opened = guarded(&ws, "on_open", handler.on_open(&ws)).await;
    let close = if opened {
        drive(&mut stream, &ws, &mut handler, &config, shutdown.as_ref()).await
    } else {
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.send(internal_error())).await;
        CloseFrame {
            code: 1011,
            reason: "internal error".into(),
            by_peer: false,
        }
    };
    tracing::debug!(conn = ws.id(), code = close.code, reason = %close.reason, by_peer = close.by_peer, "websocket closed");
    ws.mark_ended();
    // Close TCP now, not after the application's on_close.
    drop(stream);
    guarded(&ws, "on_close", handler.on_close(&ws, close)).await;
    ws.mark_finished();
}

async fn drive<S, H>(
    stream: &mut WebSocketStream<S>,
    ws: &WebSocket,
    handler: &mut H,
    config: &Config,
    shutdown: Option<&Shutdown>,
) -> CloseFrame
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    let shared = &ws.shared;
    let mut batch: VecDeque<Outbound> = VecDeque::new();
    let mut last_heard = Instant::now();
    let mut pinged = false;
    // Set once our close frame is out: the peer has until then to answer it.
    let mut close_deadline: Option<Instant> = None;
    let mut sent_close: Option<CloseFrame> = None;
    let mut received_close: Option<CloseFrame> = None;
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
        let close_request = close_request.filter(|_| close_deadline.is_none());
        if close_deadline.is_some() {
            batch.clear();
        }
        if abort {
            // The peer stopped reading: try to tell it why, but do not wait on it.
            if let Some((code, reason)) = close_request {
                let _ = tokio::time::timeout(
                    Duration::from_millis(100),
                    stream.send(Message::close(Some(code), &reason)),
                )
                .await;
                return CloseFrame {
                    code: code.into(),
                    reason,
                    by_peer: false,
                };
            }
        }
        if !batch.is_empty() || close_request.is_some() {
            let mut closing = None;
            if let Some((code, reason)) = close_request {
                batch.push_back(Outbound::Message(Message::close(Some(code), &reason)));
                closing = Some(CloseFrame {
                    code: code.into(),
                    reason,
                    by_peer: false,
                });
            }
            if let Err(err) = write_batch(stream, &mut batch, ws).await {
                tracing::debug!(conn = ws.id(), %err, "write failed");
                // A slow consumer aborted mid-write is reported as the 1008 close it is.
                if let Some((code, reason)) = forced_close(ws) {
                    return CloseFrame {
                        code: code.into(),
                        reason,
                        by_peer: false,
                    };
                }
                return received_close.unwrap_or(CloseFrame {
                    code: 1006,
                    reason: err,
                    by_peer: false,
                });
            }
            if batch.capacity() > KEEP_QUEUE_CAPACITY {
                batch = VecDeque::new();
            }
            if let Some(frame) = closing {
                sent_close = Some(frame);
                close_deadline = Some(Instant::now() + config.close_timeout);
            }
            continue;
        }

        // 2. Wait for the peer, the queue, or a timer. The timer is re-armed only when it must
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
                    let _ = ws.ping(bytes::Bytes::new());
                }
            }
            frame = stream.next() => match frame {
                None => {
                    return received_close.or(sent_close).unwrap_or(CloseFrame { code: 1006, reason: "connection closed without a close frame".into(), by_peer: true });
                }
                Some(Err(err)) => {
                    // tokio-websockets has queued the matching close frame (1002, 1007, 1009); the next
                    // poll flushes it and ends the stream.
                    tracing::debug!(conn = ws.id(), %err, "protocol error from peer");
                    if sent_close.is_none() && received_close.is_none() {
                        if let tokio_websockets::Error::PayloadTooLong { max_len, .. } = &err {
                            // Too long over several fragments is detected after the codec, and then
                            // tokio-websockets queues no close frame: send it. (After one too-long
                            // frame it has queued it already, and this send is refused harmlessly.)
                            let close = Message::close(Some(tokio_websockets::CloseCode::MESSAGE_TOO_BIG), &format!("max length: {max_len}"));
                            let _ = tokio::time::timeout(config.close_timeout, stream.send(close)).await;
                        }
                        sent_close = Some(CloseFrame { code: error_close_code(&err), reason: err.to_string(), by_peer: false });
                        close_deadline = Some(Instant::now() + config.close_timeout);
                        refuse_sends(ws, error_close_code(&err), &err.to_string());
                    }
                    if matches!(err, tokio_websockets::Error::Io(_)) {
                        return sent_close.unwrap_or(CloseFrame { code: 1006, reason: err.to_string(), by_peer: false });
                    }
                }
                Some(Ok(message)) => {
                    last_heard = Instant::now();
                    pinged = false;
                    let closing = sent_close.is_some();
                    // While the handler awaits (an action, a subscribe through the broker), what is
                    // queued for this peer keeps going out: a slow handler must not turn a healthy
                    // reader into a "slow consumer".
                    let completed = {
                        let call = dispatch(message, ws, handler, &mut received_close, closing);
                        tokio::pin!(call);
                        loop {
                            tokio::select! {
                                biased;
                                ok = &mut call => break Some(ok),
                                _ = shared.wake.notified() => {
                                    let (_, abort) = take_queue(&mut shared.queue.lock(), &mut batch);
                                    if close_deadline.is_some() {
                                        batch.clear();
                                    }
                                    if abort || write_batch(stream, &mut batch, ws).await.is_err() {
                                        // The main loop reports how the connection failed.
                                        break None;
                                    }
                                }
                            }
                        }
                    };
                    if completed == Some(false) {
                        let _ = ws.close(1011, "internal error");
                    }
                    if let Some(close) = &received_close {
                        if close_deadline.is_none() {
                            // The codec has queued the echo of the peer's close; it goes out with the
                            // next poll of the stream, and nothing may follow it.
                            refuse_sends(ws, close.code, &close.reason);
                            close_deadline = Some(Instant::now() + config.close_timeout);
                        }
                    }
                }
            }
        }
    }
}

/// The close requested by the slow-consumer policy, if it aborted the connection.
fn forced_close(ws: &WebSocket) -> Option<(tokio_websockets::CloseCode, String)> {
    let q = ws.shared.queue.lock();
    q.close.clone().filter(|_| q.abort)
}

/// Moves the queued messages into `batch` and returns the pending close request, if any.
fn take_queue(q: &mut Queue, batch: &mut VecDeque<Outbound>) -> (Option<(tokio_websockets::CloseCode, String)>, bool) {
    std::mem::swap(&mut q.items, batch);
    q.bytes = 0;
    // Free a large drained buffer; keep a small one for reuse.
    if q.items.capacity() > KEEP_QUEUE_CAPACITY {
        q.items = VecDeque::new();
    }
    (q.close.clone(), q.abort)
}

async fn write_batch<S>(
    stream: &mut WebSocketStream<S>,
    batch: &mut VecDeque<Outbound>,
    ws: &WebSocket,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let write = async {
        // Pre-encoded frames are copied into one buffer (allocated for this batch only) and
        // written with one syscall; messages go through tokio-websockets in their order.
        let mut cork = BytesMut::new();
        while let Some(item) = batch.pop_front() {
            match item {
                Outbound::Frame(frame) if frame.len() >= CORK_LIMIT => {
                    write_raw(stream, &mut cork).await?;
                    write_bytes(stream, &frame).await?;
                }
                Outbound::Frame(frame) => {
                    cork.extend_from_slice(&frame);
                    if cork.len() >= CORK_LIMIT {
                        write_raw(stream, &mut cork).await?;
                    }
                }
                Outbound::Message(message) => {
                    write_raw(stream, &mut cork).await?;
                    stream.feed(message).await.map_err(|e| e.to_string())?;
                }
            }
        }
        write_raw(stream, &mut cork).await?;
        stream.flush().await.map_err(|e| e.to_string())
    };
    tokio::pin!(write);
    loop {
        tokio::select! {
            // Most writes complete at once: polling the write first means the wake-up below is
            // only registered (a lock in `Notify`) when the socket is actually full.
            biased;
            result = &mut write => return result,
            // A slow consumer is aborted even while its flush is stuck.
            _ = ws.shared.wake.notified() => {
                if ws.shared.queue.lock().abort {
                    return Err("slow consumer".into());
                }
            }
        }
    }
}

/// Writes the corked frames straight to the socket. tokio-websockets is flushed first, so the
/// frames it queued itself (pongs, close replies, messages fed before) keep their place: writing
/// under the codec is safe exactly when its own queue is empty.
async fn write_raw<S>(stream: &mut WebSocketStream<S>, cork: &mut BytesMut) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if cork.is_empty() {
        return Ok(());
    }
    write_bytes(stream, cork).await?;
    cork.clear();
    Ok(())
}

async fn write_bytes<S>(stream: &mut WebSocketStream<S>, bytes: &[u8]) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    stream.flush().await.map_err(|e| e.to_string())?;
    stream.get_mut().write_all(bytes).await.map_err(|e| e.to_string())
}

/// Runs one handler callback; a panic in it is caught and logged so that the connection still
/// ends properly (`on_close` runs, subscriptions are released) instead of leaking. Returns false
/// if it panicked.
async fn guarded(ws: &WebSocket, callback: &str, call: impl Future<Output = ()> + Send) -> bool {
    match AssertUnwindSafe(Box::pin(call)).catch_unwind().await {
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

fn internal_error() -> Message {
    Message::close(
        Some(tokio_websockets::CloseCode::INTERNAL_SERVER_ERROR),
        "internal error",
    )
}

/// Hands one message to the handler. Returns false if the handler panicked.
async fn dispatch<H: Handler>(
    message: Message,
    ws: &WebSocket,
    handler: &mut H,
    received_close: &mut Option<CloseFrame>,
    closing: bool,
) -> bool {
    if message.is_close() {
        let (code, reason) = message
            .as_close()
            .map_or((1005, String::new()), |(c, r)| (c.into(), r.to_owned()));
        *received_close = Some(CloseFrame {
            code,
            reason,
            by_peer: !closing,
        });
        return true;
    }
    if closing {
        // After our close frame the application is done with the connection; data is discarded.
        return true;
    }
    if message.is_text() {
        let bytes: bytes::Bytes = message.into_payload().into();
        guarded(ws, "on_message", handler.on_message(ws, Text::from_validated(bytes))).await
    } else if message.is_binary() {
        guarded(ws, "on_bytes", handler.on_bytes(ws, message.into_payload().into())).await
    } else if message.is_ping() {
        guarded(ws, "on_ping", handler.on_ping(ws, message.into_payload().into())).await
    } else if message.is_pong() {
        guarded(ws, "on_pong", handler.on_pong(ws, message.into_payload().into())).await
    } else {
        true
    }
}

/// After a close frame went out or came in, nothing more may be sent: later sends are refused
/// and whatever is still queued is dropped (a data frame after a close frame breaks RFC 6455 §5.5.1).
fn refuse_sends(ws: &WebSocket, code: u16, reason: &str) {
    let mut q = ws.shared.queue.lock();
    if q.close.is_none() {
        let code = tokio_websockets::CloseCode::try_from(code).unwrap_or(tokio_websockets::CloseCode::NORMAL_CLOSURE);
        q.close = Some((code, reason.to_owned()));
    }
    q.items.clear();
    q.bytes = 0;
}

fn error_close_code(err: &tokio_websockets::Error) -> u16 {
    match err {
        tokio_websockets::Error::PayloadTooLong { .. } => 1009,
        tokio_websockets::Error::Protocol(tokio_websockets::proto::ProtocolError::InvalidUtf8) => 1007,
        tokio_websockets::Error::Protocol(_) => 1002,
        _ => 1006,
    }
}
