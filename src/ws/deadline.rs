//! Connection deadlines (ping, idle, close timeouts) without a timer per connection.
//!
//! A tokio `Sleep` is 112 bytes, kept in every connection's task for its whole life: with the
//! task allocated 128-byte aligned, it decides whether an idle connection's task takes 512 or
//! 640 bytes. Instead, as uWebSockets does with its per-loop timeout sweep, each connection
//! stores its next deadline in its shared state, and one thread checks all of them every tick,
//! waking the connections whose deadline has passed. A timeout fires at most one tick late; the
//! tick is a sixteenth of the shortest timeout any connection uses (312 ms with the defaults,
//! whose shortest is the 5 s close timeout), between 5 ms and 1 s, so the sweep costs ~40 ns per
//! connection per tick: 0.2 % of a core for 18 000 idle connections with the defaults. The
//! thread sleeps while no connection is registered.

use super::socket::SocketState;
use parking_lot::{Condvar, Mutex};
use slab::Slab;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Bounds of the sweep's period (the most a timeout can fire late).
const MIN_TICK_MS: u64 = 5;
const MAX_TICK_MS: u64 = 1000;

/// The sweep's period: only ever shortened, by a connection with shorter timeouts.
static TICK_MS: AtomicU64 = AtomicU64::new(MAX_TICK_MS);

/// "No deadline".
pub(super) const NEVER: u64 = u64::MAX;

struct Registry {
    /// Strong handles: a registration always ends (its `Drop` runs when the connection's task
    /// ends or is dropped), and reading through an `Arc` needs no upgrade on every tick.
    connections: Mutex<Slab<Arc<SocketState>>>,
    registered: Condvar,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("switchboard-deadlines".into())
            .spawn(sweep);
        if let Err(err) = spawned {
            // Without the thread no timeout fires; say so loudly rather than fail connections.
            tracing::error!(%err, "cannot start the deadline thread: ping and idle timeouts are off");
        }
        Registry {
            connections: Mutex::new(Slab::new()),
            registered: Condvar::new(),
        }
    })
}

/// Milliseconds since the first use, the unit of deadlines.
pub(super) fn now_ms() -> u64 {
    millis_since_epoch(Instant::now(), false)
}

/// `at` in deadline units, rounded up: a deadline in milliseconds is never before `at`, so a
/// connection woken at it finds its `Instant` deadline passed.
pub(super) fn at_ms(at: Instant) -> u64 {
    millis_since_epoch(at, true)
}

fn millis_since_epoch(at: Instant, round_up: bool) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let since = at.saturating_duration_since(*EPOCH.get_or_init(Instant::now));
    let ms = u64::try_from(since.as_millis()).unwrap_or(NEVER - 1);
    if round_up && !since.subsec_nanos().is_multiple_of(1_000_000) {
        ms + 1
    } else {
        ms
    }
}

/// A connection's place in the sweep, for as long as this lives (its task's lifetime).
pub(super) struct Registration(usize);

impl Registration {
    /// Registers a connection whose shortest timeout is `shortest`.
    pub(super) fn new(state: &Arc<SocketState>, shortest: Duration) -> Self {
        let tick = u64::try_from(shortest.as_millis() / 16).unwrap_or(MAX_TICK_MS);
        TICK_MS.fetch_min(tick.clamp(MIN_TICK_MS, MAX_TICK_MS), Ordering::Relaxed);
        let registry = registry();
        let key = registry.connections.lock().insert(Arc::clone(state));
        registry.registered.notify_one();
        Registration(key)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut connections = registry().connections.lock();
        if connections.contains(self.0) {
            connections.remove(self.0);
        }
    }
}

fn sweep() {
    let registry = registry();
    loop {
        {
            let mut connections = registry.connections.lock();
            while connections.is_empty() {
                registry.registered.wait(&mut connections);
            }
        }
        std::thread::sleep(Duration::from_millis(TICK_MS.load(Ordering::Relaxed)));
        let now = now_ms();
        let connections = registry.connections.lock();
        for (_, state) in connections.iter() {
            if state.deadline.load(Ordering::Relaxed) <= now {
                state.waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_in_milliseconds_is_never_before_the_instant() {
        // An instant inside a millisecond (a whole one would be exact: retry past it).
        let at = loop {
            let at = Instant::now() + Duration::from_micros(1500);
            if millis_since_epoch(at, false) != at_ms(at) {
                break at;
            }
        };
        let ms = at_ms(at);
        // Rounded up: when the clock in milliseconds reaches it, the instant has passed.
        assert_eq!(millis_since_epoch(at, false) + 1, ms);
        std::thread::sleep(Duration::from_millis(3));
        assert!(now_ms() >= ms);
        assert!(Instant::now() >= at);
    }

    #[test]
    fn a_registration_leaves_the_sweep_when_dropped() {
        let ws = crate::ws::WebSocket::new(
            crate::ws::Handshake {
                uri: http::Uri::from_static("/"),
                headers: http::HeaderMap::new(),
                peer: None,
            },
            1024,
        );
        let before = Arc::strong_count(&ws.state);
        let registration = Registration::new(&ws.state, Duration::from_secs(1));
        assert_eq!(Arc::strong_count(&ws.state), before + 1);
        drop(registration);
        assert_eq!(Arc::strong_count(&ws.state), before);
    }
}
