//! The timers of one connection: ping, idle and close timeouts, and what is due when they pass.
//!
//! They are not tokio timers: a connection stores when it must next look at them in its state,
//! where the deadline sweep (`deadline.rs`) sees it and wakes the connection's task. Here is the
//! policy, in milliseconds to keep the task small: when to look next, and what to do then.

use super::Config;
use std::time::Duration;
use tokio::time::Instant;

/// The timers of a running connection (the rest of [`Config`] is applied when it starts), in
/// milliseconds: 16 bytes instead of 48 in every connection's task.
pub(super) struct Timers {
    ping_ms: Option<u32>,
    idle_ms: u32,
    close_ms: u32,
}

impl Timers {
    /// The timers of `config`.
    pub(super) fn new(config: &Config) -> Self {
        Self {
            ping_ms: config.ping_interval.map(millis),
            idle_ms: millis(config.idle_timeout),
            close_ms: millis(config.close_timeout),
        }
    }

    fn ping_interval(&self) -> Option<Duration> {
        self.ping_ms.map(|ms| Duration::from_millis(ms.into()))
    }
    pub(super) fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_ms.into())
    }
    pub(super) fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.close_ms.into())
    }
    /// The shortest of the timeouts, which sets how precisely they must be checked.
    pub(super) fn shortest(&self) -> Duration {
        let shortest = self.ping_ms.unwrap_or(u32::MAX).min(self.idle_ms).min(self.close_ms);
        Duration::from_millis(shortest.into())
    }

    /// When the connection must next look at its timers: the ping (or, once pinged, the idle
    /// timeout) counted from when the peer was last heard, or the close timeout if sooner.
    pub(super) fn next_check(&self, last_heard: Instant, pinged: bool, close_deadline: Option<Instant>) -> Instant {
        let idle_deadline = match (self.ping_interval(), pinged) {
            (Some(interval), false) => last_heard + interval.min(self.idle_timeout()),
            _ => last_heard + self.idle_timeout(),
        };
        close_deadline.map_or(idle_deadline, |d| d.min(idle_deadline))
    }

    /// What is due at `now`, the most urgent first.
    pub(super) fn due(&self, now: Instant, last_heard: Instant, pinged: bool, close_deadline: Option<Instant>) -> Due {
        if close_deadline.is_some_and(|d| now >= d) {
            return Due::CloseTimeout;
        }
        let silent = now.duration_since(last_heard);
        if silent >= self.idle_timeout() {
            return Due::IdleTimeout;
        }
        if !pinged && self.ping_interval().is_some_and(|interval| silent >= interval) {
            return Due::Ping;
        }
        Due::Nothing
    }
}

/// What a connection's timers ask for when it looks at them.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// Nothing yet (woken early, or for another reason).
    Nothing,
    /// The peer did not answer our close frame in time: the connection ends.
    CloseTimeout,
    /// Nothing heard from the peer for the idle timeout: the connection is dropped.
    IdleTimeout,
    /// Quiet for the ping interval: ping the peer (once, until it is heard again).
    Ping,
}

/// Whole milliseconds, saturating at ~49 days.
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers(ping: Option<u64>, idle: u64, close: u64) -> Timers {
        Timers::new(&Config {
            ping_interval: ping.map(Duration::from_secs),
            idle_timeout: Duration::from_secs(idle),
            close_timeout: Duration::from_secs(close),
            ..Config::default()
        })
    }

    #[test]
    fn the_next_check_is_the_ping_then_the_idle_timeout_or_the_close_if_sooner() {
        let t = timers(Some(30), 75, 5);
        let heard = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(t.next_check(heard, false, None), heard + s(30));
        assert_eq!(t.next_check(heard, true, None), heard + s(75));
        assert_eq!(t.next_check(heard, false, Some(heard + s(5))), heard + s(5));
        assert_eq!(t.next_check(heard, false, Some(heard + s(40))), heard + s(30));
        // Without pings, only the idle timeout.
        assert_eq!(timers(None, 75, 5).next_check(heard, false, None), heard + s(75));
        // A ping interval longer than the idle timeout never comes first.
        assert_eq!(timers(Some(90), 75, 5).next_check(heard, false, None), heard + s(75));
        assert_eq!(t.shortest(), s(5));
    }

    #[test]
    fn what_is_due_the_most_urgent_first() {
        let t = timers(Some(30), 75, 5);
        let heard = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(t.due(heard + s(10), heard, false, None), Due::Nothing);
        assert_eq!(t.due(heard + s(30), heard, false, None), Due::Ping);
        assert_eq!(t.due(heard + s(31), heard, true, None), Due::Nothing);
        assert_eq!(t.due(heard + s(75), heard, true, None), Due::IdleTimeout);
        assert_eq!(t.due(heard + s(75), heard, false, None), Due::IdleTimeout);
        assert_eq!(
            t.due(heard + s(30), heard, false, Some(heard + s(30))),
            Due::CloseTimeout
        );
        assert_eq!(t.due(heard + s(29), heard, false, Some(heard + s(30))), Due::Nothing);
    }
}
