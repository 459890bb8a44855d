//! `Sockets`: the registry of a server's open WebSockets, so that they can all be closed (a server
//! shutting down closes them with 1001, in jittered batches: [`Sockets::drain`]) and a caller can
//! wait for the last one to end.
//!
//! A registry rather than a future in each connection waiting for a signal: such a future would
//! cost every idle connection ~180 bytes of its task, an entry here costs ~20 (the socket's id
//! and a handle to it). A drain is one task for the whole registry, never a timer per socket.
//!
//! A server hands its `Sockets` to the upgrade in the request extensions; [`super::endpoint`]
//! registers every socket it opens with the `Sockets` it finds there, if any. An endpoint with a
//! registry of its own ([`super::endpoint_with_sockets`], as a `Node`'s) registers its sockets
//! there instead, and links its registry to the server's: the server's closes, counts and drains
//! then take in the endpoint's sockets, and the endpoint's owner can drain just its own.

use super::frame;
use super::{SendError, WebSocket};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Batches are at least this far apart on average: more sockets make larger batches, not more.
const MIN_BATCH_INTERVAL: Duration = Duration::from_millis(10);

/// The open WebSockets of a server: closed all at once by [`Sockets::close_all`] or in jittered
/// batches by [`Sockets::drain`], counted by [`Sockets::len`], awaited by [`Sockets::drained`].
///
/// A socket counts from when it opens (its handler's `on_open` has returned) until it has ended
/// (its handler's `on_close` has returned). Cloning gives another handle to the same registry.
///
/// The sockets of the registries linked to this one (an endpoint with its own registry, such as a
/// `Node`'s, served by this server) count as this one's: they are closed, counted and waited for
/// with it. Closing this registry closes the sockets the linked ones hold at that moment, but not
/// the linked registries themselves: a `Node` served again after its server shut down serves as
/// before (one level: the links of a linked registry are not followed). A server that is closing
/// refuses new upgrades (503), so nothing new opens through it.
#[derive(Clone, Default)]
pub struct Sockets {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// Wakes [`Sockets::drained`] when the last socket leaves.
    emptied: Notify,
}

#[derive(Default)]
struct State {
    open: HashMap<u64, WebSocket>,
    /// Set by [`Sockets::close_all`] or [`Sockets::drain`]: the close every socket that opens
    /// later gets at once.
    closing: Option<(u16, String)>,
    /// The registries linked to this one (weak: a linked registry lives as long as its endpoint
    /// or one of its sockets).
    linked: Vec<Weak<Inner>>,
    /// Upgrades answered (101) whose socket has not opened yet: waited for by a drain too, so
    /// that a client upgraded just before the shutdown still gets its close.
    upgrading: usize,
}

impl State {
    fn is_empty(&self) -> bool {
        self.open.is_empty() && self.upgrading == 0
    }
}

/// How [`Sockets::drain`] closes a server's sockets, and how long it waits for them to end.
///
/// The default: close code 1001 "server shutting down"; up to 100 sockets are closed at once,
/// more in jittered batches over 2 s; the drain waits 10 s at most.
///
/// ```
/// use std::time::Duration;
/// use switchboard::ws::Drain;
/// let drain = Drain::new()
///     .with_timeout(Duration::from_secs(30))
///     .with_window(Duration::from_secs(5))
///     .with_close(4000, "node draining, reconnect")
///     .expect("a sendable close code");
/// assert_eq!(drain.close(), (4000, "node draining, reconnect"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drain {
    code: u16,
    reason: String,
    batch_size: usize,
    window: Duration,
    timeout: Duration,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            code: 1001,
            reason: "server shutting down".to_owned(),
            batch_size: 100,
            window: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Drain {
    /// The default drain (see [`Drain`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// How long [`Sockets::drain`] waits for the sockets to end, from its start (default 10 s).
    /// Sockets still open then are left to their own close timeout
    /// ([`Config::close_timeout`](super::Config::close_timeout)) and the drain returns.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The time over which the closes are spread when there are more sockets than one batch
    /// (default 2 s), capped at half the timeout so that the last sockets closed have time to end.
    /// `Duration::ZERO` closes every socket at once.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The smallest batch (default 100, at least 1): up to this many sockets are closed at once.
    /// More are closed in `ceil(n / batch_size)` batches spread evenly over the window, each at a
    /// random moment of its share of it — but no more batches than one per 10 ms of the window
    /// (the batches are larger then).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The close code and reason every socket gets (default 1001 "server shutting down"). A code
    /// in 4000–4499 also tells Switchboard's clients to reconnect (see PROTOCOL.md, Close codes).
    ///
    /// Fails if the code cannot be sent (valid: 1000–1003, 1007–1014, 3000–4999) or the reason is
    /// longer than 123 bytes.
    pub fn with_close(mut self, code: u16, reason: &str) -> Result<Self, SendError> {
        if !frame::is_sendable_close_code(code) || reason.len() > 123 {
            return Err(SendError::InvalidClose(code));
        }
        self.code = code;
        self.reason = reason.to_owned();
        Ok(self)
    }

    /// The close code and reason.
    pub fn close(&self) -> (u16, &str) {
        (self.code, &self.reason)
    }

    /// How long a drain waits at most.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The time over which the closes are spread (before the cap at half the timeout).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The smallest batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The window actually used: at most half the timeout.
    fn effective_window(&self) -> Duration {
        self.window.min(self.timeout / 2)
    }
}

/// What a [`Sockets::drain`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// Sockets this drain sent the close to: those open when it started (0 if a drain or
    /// [`Sockets::close_all`] had started before: this one then only waited).
    pub closed: usize,
    /// Sockets still open (or opening: upgraded, their handler's `on_open` not returned yet)
    /// when it returned: 0 unless it timed out.
    pub remaining: usize,
    /// How long it took.
    pub elapsed: Duration,
}

impl DrainReport {
    /// True if every socket had ended before the timeout.
    pub fn completed(&self) -> bool {
        self.remaining == 0
    }
}

impl Sockets {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the close handshake of every open socket with `code` and `reason`, and of every
    /// socket that opens later, at once. Each socket still ends as usual: its queued messages go
    /// out first, and the peer has the connection's close timeout to answer.
    ///
    /// Fails only if the close frame cannot be sent (see [`WebSocket::close`]); nothing is closed
    /// then. Calling it again closes nothing more: every open socket is closing already.
    ///
    /// A server shutting down rather calls [`Sockets::drain`], which spreads the closes.
    pub fn close_all(&self, code: u16, reason: &str) -> Result<(), SendError> {
        if !frame::is_sendable_close_code(code) || reason.len() > 123 {
            return Err(SendError::InvalidClose(code));
        }
        let (_, open) = self.begin_close(code, reason);
        // Outside the lock: a close takes the socket's own lock and wakes its task.
        for ws in open {
            let _ = ws.close(code, reason);
        }
        Ok(())
    }

    /// Closes every open socket as [`Drain`] says — at once if there are few, else in batches
    /// spread over its window, each at a random moment of its share, so that the clients do not
    /// all reconnect in the same millisecond — and waits until they have all ended, at most the
    /// drain's timeout. A socket that opens meanwhile (or later) is closed at once.
    ///
    /// The batches are closed by one task for the whole registry (spawned here: call it within a
    /// tokio runtime), which goes on if this future is dropped. If a drain or
    /// [`Sockets::close_all`] has already started, this one closes nothing and only waits.
    pub async fn drain(&self, drain: &Drain) -> DrainReport {
        let started = Instant::now();
        let (code, reason) = drain.close();
        let (first, mut open) = self.begin_close(code, reason);
        let mut closed = 0;
        if first {
            closed = open.len();
            let mut rng = fastrand::Rng::new();
            // Which sockets go first is random too (the registry's order is the hash map's).
            rng.shuffle(&mut open);
            let plan = batch_plan(open.len(), drain.batch_size, drain.effective_window(), &mut rng);
            tracing::debug!(sockets = closed, batches = plan.len(), "draining websockets");
            close_in_batches(open, plan, started, code, reason.to_owned());
        } else {
            drop(open);
        }
        let _ = tokio::time::timeout_at(started + drain.timeout, self.drained()).await;
        let remaining = std::iter::once(self.inner.clone())
            .chain(self.linked())
            .map(|registry| registry.pending())
            .sum();
        DrainReport {
            closed,
            remaining,
            elapsed: started.elapsed(),
        }
    }

    /// How many sockets are open (the linked registries' included).
    pub fn len(&self) -> usize {
        self.inner.len_own() + self.linked().iter().map(|linked| linked.len_own()).sum::<usize>()
    }

    /// True when no socket is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once [`Sockets::close_all`] or [`Sockets::drain`] was called (on this registry or on
    /// one it is linked to): every socket that opens is closed at once.
    pub fn is_closing(&self) -> bool {
        self.inner.state.lock().closing.is_some()
    }

    /// Waits until no socket is open or opening (at once if none is). After
    /// [`Sockets::close_all`], that is when every socket has finished its close handshake (or
    /// timed out) and its handler's `on_close` has returned; a socket that opens meanwhile is
    /// waited for too.
    pub async fn drained(&self) {
        loop {
            let mut waited = false;
            let registries = std::iter::once(self.inner.clone()).chain(self.linked());
            for registry in registries {
                if registry.pending() > 0 {
                    registry.drained_own().await;
                    waited = true;
                }
            }
            // Empty one after the other; look again, as a socket may have opened meanwhile.
            if !waited {
                return;
            }
        }
    }

    /// Counts an upgrade answered, whose socket is about to open: it then either registers
    /// ([`Sockets::register`]) or gives up ([`Sockets::abandon`]), exactly once.
    pub(super) fn upgrading(&self) {
        self.inner.state.lock().upgrading += 1;
    }

    /// An upgrade counted by [`Sockets::upgrading`] that will not register: it failed, or its
    /// handler's `on_open` did.
    pub(super) fn abandon(&self) {
        let emptied = {
            let mut state = self.inner.state.lock();
            state.upgrading = state.upgrading.saturating_sub(1);
            state.is_empty()
        };
        if emptied {
            self.inner.emptied.notify_waiters();
        }
    }

    /// Adds `ws`, which has just opened (after [`Sockets::upgrading`]); closes it at once if
    /// [`Sockets::close_all`] was called.
    pub(super) fn register(&self, ws: &WebSocket) {
        let closing = {
            let mut state = self.inner.state.lock();
            state.open.insert(ws.id(), ws.clone());
            state.upgrading = state.upgrading.saturating_sub(1);
            state.closing.clone()
        };
        if let Some((code, reason)) = closing {
            let _ = ws.close(code, &reason);
        }
    }

    /// Removes `ws`, which has ended.
    pub(super) fn leave(&self, ws: &WebSocket) {
        let emptied = {
            let mut state = self.inner.state.lock();
            let open = &mut state.open;
            let removed = open.remove(&ws.id()).is_some();
            // Give back the room of a past spike of connections.
            if open.capacity() > 1024 && open.len() < open.capacity() / 4 {
                open.shrink_to_fit();
            }
            removed && state.is_empty()
        };
        if emptied {
            self.inner.emptied.notify_waiters();
        }
    }

    /// Links `other` (an endpoint's own registry) to this one (the server's): its sockets are
    /// closed, counted and waited for with this one's.
    pub(super) fn link(&self, other: &Sockets) {
        if Arc::ptr_eq(&self.inner, &other.inner) {
            return;
        }
        {
            let mut state = self.inner.state.lock();
            state.linked.retain(|linked| linked.strong_count() > 0);
            // Compared only among live registries, so an address is not mistaken for a dead one's.
            let known = state
                .linked
                .iter()
                .any(|linked| linked.as_ptr() == Arc::as_ptr(&other.inner));
            if !known {
                state.linked.push(Arc::downgrade(&other.inner));
            }
        }
    }

    /// The live registries linked to this one.
    fn linked(&self) -> Vec<Arc<Inner>> {
        let mut state = self.inner.state.lock();
        state.linked.retain(|linked| linked.strong_count() > 0);
        state.linked.iter().filter_map(Weak::upgrade).collect()
    }

    /// Marks this registry closing, and returns its open sockets and the linked registries' (those
    /// stay open to other servers); true if this registry was not closing yet.
    fn begin_close(&self, code: u16, reason: &str) -> (bool, Vec<WebSocket>) {
        let (first, mut open) = self.inner.close_own(code, reason);
        if first {
            // One registry's lock at a time.
            for linked in self.linked() {
                open.extend(linked.state.lock().open.values().cloned());
            }
        }
        (first, open)
    }
}

impl Inner {
    /// Marks this registry closing (keeping an earlier close) and returns its open sockets; true
    /// if it was not closing yet.
    fn close_own(&self, code: u16, reason: &str) -> (bool, Vec<WebSocket>) {
        let mut state = self.state.lock();
        let first = state.closing.is_none();
        state.closing.get_or_insert_with(|| (code, reason.to_owned()));
        (first, state.open.values().cloned().collect())
    }

    fn len_own(&self) -> usize {
        self.state.lock().open.len()
    }

    /// Sockets open or opening.
    fn pending(&self) -> usize {
        let state = self.state.lock();
        state.open.len() + state.upgrading
    }

    /// Waits until this registry (not the linked ones) has no socket open or opening.
    async fn drained_own(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            // Registered before looking, so a socket leaving in between is not missed.
            emptied.as_mut().enable();
            if self.pending() == 0 {
                return;
            }
            emptied.await;
        }
    }
}

/// The batches of a drain of `n` sockets: how many each closes and when, from the drain's start.
/// One batch (now) for up to `batch_size` sockets; else `ceil(n / batch_size)` batches, at most
/// one per [`MIN_BATCH_INTERVAL`] of `window` (larger ones then), batch `k` at a random moment
/// of `[k, k + 1) * window / batches` — the first at once.
fn batch_plan(n: usize, batch_size: usize, window: Duration, rng: &mut fastrand::Rng) -> Vec<(usize, Duration)> {
    if n == 0 {
        return Vec::new();
    }
    let most = (window.as_nanos() / MIN_BATCH_INTERVAL.as_nanos()).clamp(1, u32::MAX.into());
    let most = usize::try_from(most).unwrap_or(usize::MAX);
    let size = n.div_ceil(n.div_ceil(batch_size.max(1)).min(most));
    let batches = n.div_ceil(size);
    let slot = window / u32::try_from(batches).unwrap_or(u32::MAX);
    (0..batches)
        .map(|k| {
            let count = size.min(n - k * size);
            let at = if k == 0 {
                Duration::ZERO
            } else {
                slot * u32::try_from(k).unwrap_or(u32::MAX) + slot.mul_f64(rng.f64())
            };
            (count, at)
        })
        .collect()
}

/// Closes `open` as `plan` says: the first batch now, the others from one spawned task.
fn close_in_batches(mut open: Vec<WebSocket>, plan: Vec<(usize, Duration)>, start: Instant, code: u16, reason: String) {
    let mut plan = plan.into_iter();
    let Some((first, _)) = plan.next() else {
        return;
    };
    for ws in open.split_off(open.len().saturating_sub(first)) {
        let _ = ws.close(code, &reason);
    }
    if open.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for (count, at) in plan {
            tokio::time::sleep_until(start + at).await;
            // Sockets that ended meanwhile refuse the close: nothing to do for them.
            for ws in open.split_off(open.len().saturating_sub(count)) {
                let _ = ws.close(code, &reason);
            }
        }
    });
}

impl fmt::Debug for Sockets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("Sockets")
            .field("open", &state.open.len())
            .field("closing", &state.closing)
            .field("upgrading", &state.upgrading)
            .field("linked", &state.linked.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::Handshake;
    use std::future::Future;
    use std::time::Duration;

    fn socket() -> WebSocket {
        let handshake = Handshake {
            uri: http::Uri::from_static("/"),
            headers: http::HeaderMap::new(),
            peer: None,
        };
        WebSocket::new(handshake, 1024)
    }

    #[test]
    fn counts_the_sockets_between_register_and_leave() {
        let sockets = Sockets::new();
        let (a, b) = (socket(), socket());
        sockets.register(&a);
        sockets.register(&b);
        assert_eq!(sockets.len(), 2);
        sockets.leave(&a);
        assert_eq!(sockets.len(), 1);
        // Leaving twice, or a socket never registered, changes nothing.
        sockets.leave(&a);
        sockets.leave(&socket());
        assert_eq!(sockets.len(), 1);
        sockets.leave(&b);
        assert!(sockets.is_empty());
    }

    #[test]
    fn close_all_closes_the_open_sockets_and_every_later_one() {
        let sockets = Sockets::new();
        let open = socket();
        sockets.register(&open);
        assert_eq!(
            sockets.close_all(1000, "x".repeat(124).as_str()),
            Err(SendError::InvalidClose(1000))
        );
        assert_eq!(sockets.close_all(1005, ""), Err(SendError::InvalidClose(1005)));
        assert!(!open.is_closed(), "a refused close_all closes nothing");

        sockets.close_all(1001, "going away").expect("valid close");
        assert!(open.is_closed());
        // Closing sockets stay counted until they end.
        assert_eq!(sockets.len(), 1);

        let later = socket();
        sockets.register(&later);
        assert!(later.is_closed());
        assert_eq!(later.state.queue.lock().close, Some((1001, "going away".to_owned())));
        // A second call keeps the first close.
        sockets.close_all(1000, "again").expect("valid close");
        let last = socket();
        sockets.register(&last);
        assert_eq!(last.state.queue.lock().close, Some((1001, "going away".to_owned())));
    }

    #[tokio::test]
    async fn drained_waits_for_the_last_socket_to_leave() {
        let sockets = Sockets::new();
        // None open: at once.
        tokio::time::timeout(Duration::from_secs(1), sockets.drained())
            .await
            .expect("drained with no socket");

        let (a, b) = (socket(), socket());
        sockets.register(&a);
        sockets.register(&b);
        let waiter = tokio::spawn({
            let sockets = sockets.clone();
            async move { sockets.drained().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        sockets.leave(&a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one socket is still open");
        sockets.leave(&b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("drained once the last socket left")
            .expect("waiter task");
    }

    fn closed_count(sockets: &[WebSocket]) -> usize {
        sockets.iter().filter(|ws| ws.is_closed()).count()
    }

    #[test]
    fn a_linked_registry_is_counted_and_closed_with_the_server_one() {
        let (server, endpoint) = (Sockets::new(), Sockets::new());
        server.link(&endpoint);
        server.link(&endpoint);
        server.link(&server);
        assert_eq!(
            server.inner.state.lock().linked.len(),
            1,
            "linked once, never to itself"
        );
        let (a, b) = (socket(), socket());
        server.register(&a);
        endpoint.register(&b);
        assert_eq!((server.len(), endpoint.len()), (2, 1));

        server.close_all(1001, "bye").expect("valid close");
        assert!(a.is_closed() && b.is_closed());
        // The endpoint's registry stays open: its owner (a node) may be served again, elsewhere.
        assert!(server.is_closing() && !endpoint.is_closing());
        let later = socket();
        endpoint.register(&later);
        assert!(!later.is_closed());

        // A dropped registry is unlinked.
        let other = Sockets::new();
        server.link(&other);
        assert_eq!(server.linked().len(), 2);
        drop(other);
        assert_eq!(server.linked().len(), 1);
        assert_eq!(server.len(), 3);
    }

    #[test]
    fn closing_a_linked_registry_leaves_the_server_one_open() {
        let (server, endpoint) = (Sockets::new(), Sockets::new());
        server.link(&endpoint);
        let (a, b) = (socket(), socket());
        server.register(&a);
        endpoint.register(&b);
        endpoint.close_all(1001, "node shutting down").expect("valid close");
        assert!(b.is_closed());
        assert!(!a.is_closed() && !server.is_closing());
    }

    #[test]
    fn the_batch_plan_spreads_the_closes_over_the_window() {
        let mut rng = fastrand::Rng::with_seed(7);
        let window = Duration::from_secs(2);
        assert!(batch_plan(0, 100, window, &mut rng).is_empty());
        // A handful: at once.
        assert_eq!(batch_plan(100, 100, window, &mut rng), vec![(100, Duration::ZERO)]);
        assert_eq!(
            batch_plan(5000, 100, Duration::ZERO, &mut rng),
            vec![(5000, Duration::ZERO)]
        );

        for (n, batch_size, batches) in [(101, 100, 2), (1000, 100, 10), (1000, 7, 143), (1_000_000, 100, 200)] {
            let plan = batch_plan(n, batch_size, window, &mut rng);
            assert_eq!(plan.len(), batches, "{n} sockets in batches of {batch_size}");
            assert_eq!(plan.iter().map(|(count, _)| count).sum::<usize>(), n);
            assert!(plan.iter().all(|&(count, _)| count >= 1));
            assert_eq!(plan[0].1, Duration::ZERO, "the first batch at once");
            let slot = window / batches as u32;
            for (k, &(_, at)) in plan.iter().enumerate().skip(1) {
                // Each in its own slot of the window: in order, spread, jittered.
                assert!(
                    at >= slot * k as u32 && at < slot * (k as u32 + 1),
                    "batch {k} at {at:?}"
                );
            }
        }
        // Jittered: two plans of the same drain differ.
        let (a, b) = (
            batch_plan(1000, 100, window, &mut rng),
            batch_plan(1000, 100, window, &mut rng),
        );
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn drain_closes_a_handful_at_once_and_waits_at_most_its_timeout() {
        let sockets = Sockets::new();
        let open: Vec<WebSocket> = (0..5).map(|_| socket()).collect();
        for ws in &open {
            sockets.register(ws);
        }
        let drain = Drain::new().with_timeout(Duration::from_millis(100));
        // These sockets have no task: they never end, so the drain times out.
        let report = tokio::time::timeout(Duration::from_secs(5), sockets.drain(&drain))
            .await
            .expect("the drain returns after its timeout");
        assert_eq!(closed_count(&open), 5);
        assert_eq!((report.closed, report.remaining), (5, 5));
        assert!(!report.completed());
        assert_eq!(
            open[0].state.queue.lock().close,
            Some((1001, "server shutting down".to_owned()))
        );

        // A second drain closes nothing more; it completes once the sockets leave.
        let waiter = tokio::spawn({
            let sockets = sockets.clone();
            async move { sockets.drain(&Drain::new()).await }
        });
        for ws in &open {
            sockets.leave(ws);
        }
        let report = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("drained once the sockets left")
            .expect("waiter task");
        assert_eq!((report.closed, report.remaining), (0, 0));
        assert!(report.completed());
    }

    #[tokio::test]
    async fn drain_closes_many_in_batches() {
        let sockets = Sockets::new();
        let open: Vec<WebSocket> = (0..10).map(|_| socket()).collect();
        for ws in &open {
            sockets.register(ws);
        }
        // 5 batches of 2 over 1 s: one now, the next in 200 ms at the earliest.
        let drain = Drain::new()
            .with_batch_size(2)
            .with_window(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(2))
            .with_close(4000, "draining")
            .expect("valid close");
        let mut draining = Box::pin(sockets.drain(&drain));
        std::future::poll_fn(|cx| {
            assert!(draining.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        assert_eq!(closed_count(&open), 2, "the first batch only");
        // A socket opening during the drain is closed at once.
        let late = socket();
        sockets.register(&late);
        assert!(late.is_closed());

        let report = tokio::time::timeout(Duration::from_secs(5), draining)
            .await
            .expect("the drain returns after its timeout");
        assert_eq!(closed_count(&open), 10, "every batch closed within the window");
        assert_eq!((report.closed, report.remaining), (10, 11));
        assert_eq!(open[9].state.queue.lock().close, Some((4000, "draining".to_owned())));
    }

    #[tokio::test]
    async fn drained_waits_for_the_upgrades_under_way() {
        let sockets = Sockets::new();
        sockets.upgrading();
        sockets.upgrading();
        assert!(sockets.is_empty(), "opening sockets are not open yet");
        let waiter = tokio::spawn({
            let sockets = sockets.clone();
            async move { sockets.drained().await }
        });
        let ws = socket();
        sockets.register(&ws);
        sockets.leave(&ws);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one upgrade is still under way");
        sockets.abandon();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("drained once the last upgrade gave up")
            .expect("waiter task");
    }

    #[test]
    fn drain_settings() {
        let drain = Drain::default();
        assert_eq!(drain.close(), (1001, "server shutting down"));
        assert_eq!(drain.effective_window(), Duration::from_secs(2));
        assert_eq!(
            drain.with_timeout(Duration::from_secs(1)).effective_window(),
            Duration::from_millis(500)
        );
        assert_eq!(Drain::new().with_close(1005, ""), Err(SendError::InvalidClose(1005)));
        assert_eq!(Drain::new().with_batch_size(0).batch_size(), 1);
    }
}
