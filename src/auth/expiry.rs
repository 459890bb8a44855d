//! `Deadlines`: one timer per node for every connection that must end at a set time — an
//! identity that expires (4005) or a connection that has not authenticated within the handshake
//! timeout.
//!
//! One task and an ordered map rather than a sleeping task per connection: a task with its timer
//! costs a few hundred bytes per connection, the map entry about 64; and a refresh is a remove and
//! an insert, not a task to cancel.

use crate::ws::WebSocket;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A deadline set for a connection; give it back to [`Deadlines::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline {
    at: Instant,
    connection: u64,
}

struct Due {
    ws: WebSocket,
    code: u16,
    reason: &'static str,
}

#[derive(Default)]
struct State {
    due: BTreeMap<Deadline, Due>,
    /// The timer task is running (started by the first deadline, so that a node built outside a
    /// runtime, or one that never authenticates, has none).
    running: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
}

/// The node's connection deadlines.
pub(crate) struct Deadlines {
    shared: Arc<Shared>,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Notify::new(),
            }),
        }
    }
}

impl Deadlines {
    /// Closes `ws` with `code` and `reason` at `at`, unless cancelled before.
    pub fn set(&self, ws: &WebSocket, at: Instant, code: u16, reason: &'static str) -> Deadline {
        let deadline = Deadline {
            at,
            connection: ws.id(),
        };
        let mut state = self.shared.state.lock();
        let first = state.due.keys().next().is_none_or(|next| deadline < *next);
        state.due.insert(
            deadline,
            Due {
                ws: ws.clone(),
                code,
                reason,
            },
        );
        if !state.running {
            state.running = true;
            tokio::spawn(run(Arc::downgrade(&self.shared)));
        } else if first {
            self.shared.wake.notify_one();
        }
        deadline
    }

    /// Forgets a deadline (the connection refreshed its token, or ended).
    pub fn cancel(&self, deadline: Deadline) {
        self.shared.state.lock().due.remove(&deadline);
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        // The task holds only a weak reference: woken, it finds the node gone and ends.
        self.shared.wake.notify_one();
    }
}

async fn run(shared: Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else { return };
        let now = Instant::now();
        let (expired, next) = {
            let mut state = strong.state.lock();
            let later = state.due.split_off(&Deadline {
                at: now,
                connection: u64::MAX,
            });
            let expired = std::mem::replace(&mut state.due, later);
            (expired, state.due.keys().next().map(|d| d.at))
        };
        for due in expired.into_values() {
            tracing::info!(
                conn = due.ws.id(),
                code = due.code,
                reason = due.reason,
                "connection deadline passed"
            );
            let _ = due.ws.close(due.code, due.reason);
        }
        let wake = async {
            let notified = strong.wake.notified();
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = notified => {}
                    }
                }
                None => notified.await,
            }
        };
        // Not holding the node's deadlines while asleep would let them drop; holding `strong`
        // keeps them alive only until the next wake, which `Drop` triggers.
        wake.await;
        drop(strong);
    }
}
