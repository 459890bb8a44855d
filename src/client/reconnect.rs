//! Keeping the client connected: the task that waits for the connection to end and reconnects
//! with jittered exponential backoff, until the client is closed or the server closes the
//! connection with a "do not reconnect" code (4500–4999).

use super::reader::Reader;
use super::state::ClientState;
use super::ConnectionState;
use crate::ws::{self, WebSocket};
use std::sync::Arc;
use std::time::Duration;

/// The delay before reconnect attempt `attempt` (0-based): `min(max, min * 2^attempt)`, each a
/// random point between half and all of it ("equal jitter").
pub(crate) fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let ceiling = min.saturating_mul(2u32.saturating_pow(attempt.min(30))).min(max);
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    let half = ceiling_ms / 2;
    Duration::from_millis(half + fastrand::u64(0..=ceiling_ms - half))
}

async fn triggered(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Keeps the client connected until it is closed: waits for the connection to end, then
/// reconnects with backoff (when enabled, and unless the server's close code said not to).
pub(crate) async fn supervise(shared: Arc<ClientState>, mut ws: WebSocket) {
    let mut shutdown = shared.shutdown.subscribe();
    'connected: loop {
        tokio::select! {
            _ = ws.closed() => {}
            _ = triggered(&mut shutdown) => {
                let _ = ws.close(1000, "client closed");
                let wait = shared.config.ws.close_timeout + Duration::from_secs(1);
                let _ = tokio::time::timeout(wait, ws.closed()).await;
                break 'connected;
            }
        }
        // The reader has seen how the connection ended (`closed` waits for its `on_close`): a
        // server close with a code in 4500–4999 ends the client as if reconnect were off.
        if shared.is_shutting_down() || !shared.config.reconnect || shared.final_close().is_some() {
            break;
        }
        let mut attempt = 0;
        ws = loop {
            let delay = backoff(shared.config.min_delay, shared.config.max_delay, attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = triggered(&mut shutdown) => break 'connected,
            }
            shared.state.send_replace(ConnectionState::Connecting);
            let handler = Reader::new(shared.clone());
            match ws::connect(&shared.url, handler, shared.config.ws.clone()).await {
                Ok(ws) => break ws,
                Err(err) => tracing::debug!(%err, attempt, "reconnect failed"),
            }
        };
    }
    shared.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_equal_jitter_and_caps() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 0..12 {
            let ceiling = (100u64 << attempt.min(20)).min(1000);
            let delay = backoff(min, max, attempt).as_millis() as u64;
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "attempt {attempt}: {delay} ms"
            );
        }
    }
}
