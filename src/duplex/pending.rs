//! `Pending`: requests waiting for their reply, by request id. One table serves every side that
//! asks something of the other: a server channel's requests ([`Duplex::request`]), a client
//! channel's requests, and the Rust client's calls (subscribe, action, open).
//!
//! A waiter ends one of three ways: the answer arrives ([`Pending::resolve`]); the table fails every
//! waiter at once with an error that says why (the channel closed, the connection dropped); or
//! the caller's deadline passes and its entry is removed, so a late answer finds nobody.
//!
//! [`Duplex::request`]: crate::Duplex::request

use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use tokio::sync::oneshot;
use tokio::time::Instant;

type Answer<E> = Result<Value, E>;

pub(crate) struct Pending<E> {
    inner: Mutex<Table<E>>,
}

struct Table<E> {
    next_id: u64,
    waiters: HashMap<u64, oneshot::Sender<Answer<E>>>,
    /// Set by [`Pending::close`]: nothing more is registered.
    closed: bool,
}

/// A registered request: its id (to put on the wire) and where its answer arrives.
pub(crate) struct Waiter<E> {
    pub id: u64,
    rx: oneshot::Receiver<Answer<E>>,
}

/// Why a waiter got no answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unanswered {
    /// The deadline passed.
    TimedOut,
    /// The table was dropped, or its entry removed, without an answer.
    Dropped,
}

impl<E> Default for Pending<E> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Table {
                next_id: 1,
                waiters: HashMap::new(),
                closed: false,
            }),
        }
    }
}

impl<E> Pending<E> {
    /// A waiter under a fresh id; `None` once the table is closed.
    pub fn register(&self) -> Option<Waiter<E>> {
        let mut table = self.inner.lock();
        if table.closed {
            return None;
        }
        let id = table.next_id;
        table.next_id += 1;
        let (tx, rx) = oneshot::channel();
        table.waiters.insert(id, tx);
        Some(Waiter { id, rx })
    }

    /// Hands `answer` to the waiter of `id`; false if nobody waits for it (late or unknown).
    pub fn resolve(&self, id: &Value, answer: Answer<E>) -> bool {
        let waiter = id.as_u64().and_then(|id| self.inner.lock().waiters.remove(&id));
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(answer);
                true
            }
            None => false,
        }
    }

    /// Removes the waiter of `id` (its request could not be sent).
    pub fn forget(&self, id: u64) {
        self.inner.lock().waiters.remove(&id);
    }

    /// Fails every waiter with `error()`; later requests may still register.
    pub fn fail_all(&self, error: impl Fn() -> E) {
        let waiters = std::mem::take(&mut self.inner.lock().waiters);
        for waiter in waiters.into_values() {
            let _ = waiter.send(Err(error()));
        }
    }

    /// Fails every waiter with `error()` and refuses new ones.
    pub fn close(&self, error: impl Fn() -> E) {
        self.inner.lock().closed = true;
        self.fail_all(error);
    }

    /// Waits for the answer of `waiter` until `deadline`; on time-out its entry is removed.
    pub async fn wait(&self, waiter: Waiter<E>, deadline: Instant) -> Result<Answer<E>, Unanswered> {
        match tokio::time::timeout_at(deadline, waiter.rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Unanswered::Dropped),
            Err(_) => {
                self.forget(waiter.id);
                Err(Unanswered::TimedOut)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn answers_failures_and_timeouts_reach_the_right_waiter() {
        let pending = Pending::<String>::default();
        let (first, second) = (pending.register(), pending.register());
        let (Some(first), Some(second)) = (first, second) else {
            panic!("an open table registers");
        };
        assert_ne!(first.id, second.id);
        assert!(pending.resolve(&Value::from(second.id), Ok(Value::from("two"))));
        assert!(
            !pending.resolve(&Value::from(second.id), Ok(Value::Null)),
            "answered once"
        );
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(pending.wait(second, soon).await, Ok(Ok(Value::from("two"))));
        let past = Instant::now();
        let id = first.id;
        assert_eq!(pending.wait(first, past).await, Err(Unanswered::TimedOut));
        assert!(
            !pending.resolve(&Value::from(id), Ok(Value::Null)),
            "a timed-out waiter is gone"
        );
    }

    #[tokio::test]
    async fn close_fails_waiters_and_refuses_new_ones() {
        let pending = Pending::<String>::default();
        let waiter = pending.register().map(|w| (w.id, w));
        pending.close(|| "closed".to_owned());
        let Some((_, waiter)) = waiter else {
            panic!("registered before close")
        };
        let far = Instant::now() + Duration::from_secs(5);
        assert_eq!(pending.wait(waiter, far).await, Ok(Err("closed".to_owned())));
        assert!(pending.register().is_none());
    }
}
