//! Limits on what one client may ask of a node: messages per second on a connection,
//! subscriptions per connection, connections per user, new connections per second per address.
//!
//! [`Limits`] is the configuration ([`NodeBuilder::limits`](super::NodeBuilder::limits)); the
//! rest is the accounting: [`MessageRate`] (a token bucket small enough to live in every
//! connection's task), [`ConnectionRate`] (token buckets per client address, sharded, swept so
//! that many addresses do not grow memory for good) and [`UserConnections`] (open connections
//! per user id on this node). Each takes its clock as an argument in a `*_at` variant, so the
//! tests drive time explicitly.

use crate::ws::WebSocket;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Limits on what one client may ask of a node. A value of 0 means "no limit".
///
/// The defaults are far above what a chat of normal users does, and high enough for addresses
/// that many clients share (an office behind one NAT, a test suite on `127.0.0.1`): they are
/// there to stop a runaway or hostile client, not to shape traffic. [`Limits::unlimited`] turns
/// them all off.
///
/// Behind a reverse proxy every connection comes from the proxy's address: raise or turn off
/// [`connections_per_ip_per_sec`](Limits::connections_per_ip_per_sec) there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Messages per second a connection may send, sustained (token bucket; default 10 000:
    /// a person never comes near it, a load generator publishing as fast as it can may).
    /// A message over the limit gets an error reply instead of being handled.
    pub messages_per_sec: u32,
    /// Messages a connection may send at once above the sustained rate (the bucket's size;
    /// default 20 000). 0: one second's worth of `messages_per_sec`.
    pub message_burst: u32,
    /// Consecutive refused messages after which the connection is closed with code 4029
    /// (default 10; 0: never closed, only refused).
    pub max_rate_errors: u32,
    /// Subscriptions one connection may hold at once (default 10 000).
    pub subscriptions_per_connection: usize,
    /// Connections one user id may have open on this node (default 1000). Anonymous connections
    /// are not counted.
    pub connections_per_user: usize,
    /// New WebSocket connections per second from one client address, sustained (default 1000);
    /// over it the handshake gets 429. IPv6 addresses count per /64 network.
    pub connections_per_ip_per_sec: u32,
    /// New connections one address may open at once above the sustained rate (default 20 000:
    /// a test suite or a load generator on `127.0.0.1` opens thousands at once).
    /// 0: one second's worth of `connections_per_ip_per_sec`.
    pub connection_burst_per_ip: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            messages_per_sec: 10_000,
            message_burst: 20_000,
            max_rate_errors: 10,
            subscriptions_per_connection: 10_000,
            connections_per_user: 1000,
            connections_per_ip_per_sec: 1000,
            connection_burst_per_ip: 20_000,
        }
    }
}

impl Limits {
    /// No limit at all.
    pub fn unlimited() -> Self {
        Self {
            messages_per_sec: 0,
            message_burst: 0,
            max_rate_errors: 0,
            subscriptions_per_connection: 0,
            connections_per_user: 0,
            connections_per_ip_per_sec: 0,
            connection_burst_per_ip: 0,
        }
    }

    /// With `per_sec` messages per second per connection, if given; `burst` when given, else
    /// (with a rate given) one second's worth — so that a small limit set alone means what it says.
    pub fn with_message_rate(mut self, per_sec: Option<u32>, burst: Option<u32>) -> Self {
        if let Some(per_sec) = per_sec {
            self.messages_per_sec = per_sec;
            self.message_burst = 0;
        }
        if let Some(burst) = burst {
            self.message_burst = burst;
        }
        self
    }

    /// With `per_sec` new connections per second per client address, if given; `burst` when
    /// given, else (with a rate given) one second's worth.
    pub fn with_connection_rate(mut self, per_sec: Option<u32>, burst: Option<u32>) -> Self {
        if let Some(per_sec) = per_sec {
            self.connections_per_ip_per_sec = per_sec;
            self.connection_burst_per_ip = 0;
        }
        if let Some(burst) = burst {
            self.connection_burst_per_ip = burst;
        }
        self
    }

    /// Whether a connection holding `held` subscriptions may take one more.
    pub(crate) fn may_subscribe(&self, held: usize) -> bool {
        self.subscriptions_per_connection == 0 || held < self.subscriptions_per_connection
    }
}

/// Buckets count in thousandths of a token: a rate of `r` per second refills `r` of them per
/// millisecond, so every amount is an integer and nothing is lost to rounding.
const UNIT: i64 = 1000;

/// A bucket's size in thousandths of a token: `burst`, or one second of `rate` when `burst` is
/// 0 (at least 1 token).
fn capacity(rate: u32, burst: u32) -> i64 {
    let size = if burst == 0 { rate } else { burst };
    i64::from(size.max(1)) * UNIT
}

/// The most consecutive refusals a [`MessageRate`] counts (its `level` stays within `i32`).
const MAX_COUNTED_REFUSALS: i64 = 1_000_000;

/// Milliseconds since the first call in this process (the clock of the buckets).
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What to do with a message, according to [`MessageRate::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: do not handle it, reply with an error.
    Refuse,
    /// Over the rate, and the consecutive refusals reached [`Limits::max_rate_errors`]: close
    /// the connection (4029).
    Close,
}

/// The close code of a connection closed for sending too fast.
pub(crate) const RATE_CLOSE_CODE: u16 = 4029;

/// A connection's message rate: a token bucket of [`Limits::messages_per_sec`] and
/// [`Limits::message_burst`], in 8 bytes (it lives in every connection's task).
///
/// `level` holds the tokens, in thousandths (≥ 0), outside a run of refusals. During a run of
/// `n` consecutive refusals the bucket holds less than one token, `f` in [0, 1000), and `level`
/// is `f - 1000 n`: negative, `n = ceil(-level / 1000)`. `last` is the time of the last refill,
/// in milliseconds of [`now_ms`] (wrapping after 49 days: a connection idle that long refills as
/// if it had waited less). A burst above 1 million messages counts as 1 million.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageRate {
    level: i32,
    last: u32,
}

impl MessageRate {
    /// A full bucket.
    pub(crate) fn new(limits: &Limits) -> Self {
        Self::new_at(limits, now_ms() as u32)
    }

    fn new_at(limits: &Limits, now: u32) -> Self {
        Self {
            level: Self::capacity(limits) as i32,
            last: now,
        }
    }

    fn capacity(limits: &Limits) -> i64 {
        capacity(limits.messages_per_sec, limits.message_burst).min(MAX_COUNTED_REFUSALS * UNIT)
    }

    /// Takes a token for one message, now.
    pub(crate) fn check(&mut self, limits: &Limits) -> Verdict {
        self.check_at(limits, now_ms() as u32)
    }

    /// Takes a token for one message at `now` (milliseconds of [`now_ms`], truncated to 32 bits).
    pub(crate) fn check_at(&mut self, limits: &Limits, now: u32) -> Verdict {
        if limits.messages_per_sec == 0 {
            return Verdict::Allow;
        }
        let level = i64::from(self.level);
        let (tokens, refusals) = if level >= 0 {
            (level, 0)
        } else {
            let refusals = (-level + UNIT - 1) / UNIT;
            (level + refusals * UNIT, refusals)
        };
        let elapsed = i64::from(now.wrapping_sub(self.last));
        self.last = now;
        let tokens = (tokens + elapsed * i64::from(limits.messages_per_sec)).min(Self::capacity(limits));
        if tokens >= UNIT {
            self.level = (tokens - UNIT) as i32;
            return Verdict::Allow;
        }
        let refusals = refusals + 1;
        let max = i64::from(limits.max_rate_errors).min(MAX_COUNTED_REFUSALS);
        // Past the limit the count stays where it is; without a limit, only "in a run" is kept.
        let kept = if max > 0 { refusals.min(max) } else { 1 };
        self.level = (tokens - kept * UNIT) as i32;
        if max > 0 && refusals >= max {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

/// Counts of refusals by limit, shown in `/metrics` as
/// `switchboard_limit_refusals_total{reason="…"}`.
#[derive(Default)]
pub(crate) struct LimitRefusals {
    counts: [AtomicU64; Refused::ALL.len()],
}

/// Which limit refused something (the `reason` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A handshake from an origin not allowed (403).
    Origin,
    /// A handshake over the address's connection rate (429).
    ConnectionRate,
    /// A message over the connection's message rate (error reply).
    MessageRate,
    /// A connection closed (4029) after too many refused messages.
    RateClose,
    /// A subscription over [`Limits::subscriptions_per_connection`].
    Subscriptions,
    /// A connection over [`Limits::connections_per_user`].
    UserConnections,
}

impl Refused {
    const ALL: [Refused; 6] = [
        Refused::Origin,
        Refused::ConnectionRate,
        Refused::MessageRate,
        Refused::RateClose,
        Refused::Subscriptions,
        Refused::UserConnections,
    ];

    /// The metric's label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refused::Origin => "origin",
            Refused::ConnectionRate => "connection_rate",
            Refused::MessageRate => "message_rate",
            Refused::RateClose => "rate_close",
            Refused::Subscriptions => "subscriptions",
            Refused::UserConnections => "user_connections",
        }
    }
}

impl LimitRefusals {
    /// Counts one refusal.
    pub(crate) fn add(&self, reason: Refused) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of one reason.
    pub(crate) fn get(&self, reason: Refused) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }

    /// Every reason with its count.
    pub(crate) fn all(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Refused::ALL.iter().map(|&reason| (reason.label(), self.get(reason)))
    }
}

const SHARDS: usize = 16;
/// How often a shard is swept at least (on an insert), unless it doubled in size since.
const SWEEP_EVERY_MS: u64 = 10_000;

/// New connections per second per client address: a token bucket of
/// [`Limits::connections_per_ip_per_sec`] and [`Limits::connection_burst_per_ip`] per address
/// (IPv6 per /64: one host usually holds the whole network), in 16 shards.
///
/// A bucket that has refilled is the same as no bucket (a new address starts full), so entries
/// whose bucket has refilled are dropped, a shard at a time, when an insert finds the shard due
/// for a sweep (10 s after the last one, or once it doubled in size since): memory follows the
/// addresses that opened connections within the time their bucket takes to refill (with the
/// defaults, 10 ms per connection), not every address ever seen.
pub(crate) struct ConnectionRate {
    rate: u32,
    capacity: i64,
    hasher: std::collections::hash_map::RandomState,
    shards: [Mutex<Shard>; SHARDS],
}

#[derive(Default)]
struct Shard {
    buckets: HashMap<IpAddr, Bucket>,
    next_sweep: u64,
    /// A sweep is also due once the shard holds this many entries.
    sweep_at_len: usize,
}

struct Bucket {
    /// Thousandths of a token.
    tokens: i64,
    last: u64,
}

impl ConnectionRate {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            rate: limits.connections_per_ip_per_sec,
            capacity: capacity(limits.connections_per_ip_per_sec, limits.connection_burst_per_ip),
            hasher: Default::default(),
            shards: Default::default(),
        }
    }

    /// Whether `ip` may open a connection now (takes a token if so).
    pub(crate) fn allow(&self, ip: IpAddr) -> bool {
        self.allow_at(ip, now_ms())
    }

    /// Whether `ip` may open a connection at `now` (milliseconds of [`now_ms`]).
    pub(crate) fn allow_at(&self, ip: IpAddr, now: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let key = key(ip);
        let mut shard = self.shards[self.hasher.hash_one(key) as usize % SHARDS].lock();
        if let Some(bucket) = shard.buckets.get_mut(&key) {
            bucket.tokens = refill(bucket, now, self.rate).min(self.capacity);
            bucket.last = now;
            if bucket.tokens >= UNIT {
                bucket.tokens -= UNIT;
                return true;
            }
            return false;
        }
        if now >= shard.next_sweep || shard.buckets.len() >= shard.sweep_at_len {
            self.sweep(&mut shard, now);
        }
        shard.buckets.insert(
            key,
            Bucket {
                tokens: self.capacity - UNIT,
                last: now,
            },
        );
        true
    }

    fn sweep(&self, shard: &mut Shard, now: u64) {
        let (rate, capacity) = (self.rate, self.capacity);
        shard.buckets.retain(|_, bucket| refill(bucket, now, rate) < capacity);
        shard.next_sweep = now + SWEEP_EVERY_MS;
        shard.sweep_at_len = (shard.buckets.len() * 2).max(1024);
    }

    /// Addresses tracked (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().buckets.len()).sum()
    }
}

/// A bucket's tokens at `now` before the cap (thousandths; saturating).
fn refill(bucket: &Bucket, now: u64, rate: u32) -> i64 {
    let elapsed = i64::try_from(now.saturating_sub(bucket.last)).unwrap_or(i64::MAX);
    bucket.tokens.saturating_add(elapsed.saturating_mul(i64::from(rate)))
}

/// The address a bucket counts: IPv4 as is (also when mapped into IPv6), IPv6 by /64 network.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(network))
        }
    }
}

/// Open connections per user id on this node, for [`Limits::connections_per_user`]. Anonymous
/// connections (empty user id) are not counted; a user's entry goes with their last connection.
#[derive(Default)]
pub(crate) struct UserConnections {
    /// The open connections of each user: counted for the limit, and reached by the HTTP API's
    /// `disconnect` and `unsubscribe` (a handle is 8 bytes).
    open: Mutex<HashMap<Box<str>, Vec<WebSocket>>>,
}

impl UserConnections {
    /// Counts connection `ws` of `user` if they have fewer than `max` open (0: no limit); false
    /// (and nothing counted) otherwise. Every `true` for a non-empty user is to be paired with
    /// a [`remove`](Self::remove) when the connection ends.
    pub(crate) fn try_add(&self, user: &str, ws: &WebSocket, max: usize) -> bool {
        if user.is_empty() {
            return true;
        }
        let mut open = self.open.lock();
        match open.get_mut(user) {
            Some(sockets) if max != 0 && sockets.len() >= max => false,
            Some(sockets) => {
                sockets.push(ws.clone());
                true
            }
            None => {
                open.insert(user.into(), vec![ws.clone()]);
                true
            }
        }
    }

    /// Uncounts connection `conn` of `user` (counted by [`try_add`](Self::try_add)).
    pub(crate) fn remove(&self, user: &str, conn: u64) {
        if user.is_empty() {
            return;
        }
        let mut open = self.open.lock();
        if let Some(sockets) = open.get_mut(user) {
            sockets.retain(|ws| ws.id() != conn);
            if sockets.is_empty() {
                open.remove(user);
            }
        }
    }

    /// The open connections of `user` on this node.
    pub(crate) fn of(&self, user: &str) -> Vec<WebSocket> {
        self.open.lock().get(user).cloned().unwrap_or_default()
    }

    /// Open connections of `user`.
    #[cfg(test)]
    pub(crate) fn count(&self, user: &str) -> usize {
        self.open.lock().get(user).map_or(0, Vec::len)
    }

    /// Users with at least one open connection.
    #[cfg(test)]
    pub(crate) fn users(&self) -> usize {
        self.open.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_sec: u32, burst: u32, max_errors: u32) -> Limits {
        Limits {
            messages_per_sec: per_sec,
            message_burst: burst,
            max_rate_errors: max_errors,
            ..Limits::default()
        }
    }

    #[test]
    fn message_rate_fits_in_8_bytes() {
        assert!(std::mem::size_of::<MessageRate>() <= 8);
    }

    #[test]
    fn the_defaults_are_generous_and_unlimited_is_zero() {
        let d = Limits::default();
        assert_eq!(
            (d.messages_per_sec, d.message_burst, d.max_rate_errors),
            (10_000, 20_000, 10)
        );
        assert_eq!((d.subscriptions_per_connection, d.connections_per_user), (10_000, 1000));
        assert_eq!(
            (d.connections_per_ip_per_sec, d.connection_burst_per_ip),
            (1000, 20_000)
        );
        // A rate set alone allows bursts of one second's worth; a burst given stays.
        let small = Limits::default()
            .with_message_rate(Some(5), None)
            .with_connection_rate(Some(3), None);
        assert_eq!((small.messages_per_sec, small.message_burst), (5, 0));
        assert_eq!(
            (small.connections_per_ip_per_sec, small.connection_burst_per_ip),
            (3, 0)
        );
        let mut rate = MessageRate::new_at(&small, 0);
        assert_eq!(
            (0..6)
                .map(|_| rate.check_at(&small, 0))
                .filter(|v| *v == Verdict::Allow)
                .count(),
            5
        );
        let kept = Limits::default().with_message_rate(Some(5), Some(50));
        assert_eq!(kept.message_burst, 50);
        assert_eq!(Limits::default().with_message_rate(None, None), Limits::default());
        let u = Limits::unlimited();
        let mut rate = MessageRate::new_at(&u, 0);
        assert!((0..100_000).all(|_| rate.check_at(&u, 0) == Verdict::Allow));
        assert!(u.may_subscribe(1_000_000));
        assert!(d.may_subscribe(9_999) && !d.may_subscribe(10_000));
        let conns = ConnectionRate::new(&u);
        assert!((0..10_000).all(|_| conns.allow_at("10.0.0.1".parse().unwrap(), 0)));
        assert_eq!(conns.len(), 0);
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let l = limits(10, 5, 0);
        let mut rate = MessageRate::new_at(&l, 1000);
        for _ in 0..5 {
            assert_eq!(rate.check_at(&l, 1000), Verdict::Allow);
        }
        assert_eq!(rate.check_at(&l, 1000), Verdict::Refuse);
        // 10 per second: one token per 100 ms, counted from the last check.
        assert_eq!(rate.check_at(&l, 1050), Verdict::Refuse);
        assert_eq!(rate.check_at(&l, 1100), Verdict::Allow);
        assert_eq!(rate.check_at(&l, 1100), Verdict::Refuse);
        // Fractions add up across checks.
        assert_eq!(rate.check_at(&l, 1140), Verdict::Refuse);
        assert_eq!(rate.check_at(&l, 1180), Verdict::Refuse);
        assert_eq!(rate.check_at(&l, 1200), Verdict::Allow);
        // A long pause refills to the burst, not beyond.
        for _ in 0..5 {
            assert_eq!(rate.check_at(&l, 60_000), Verdict::Allow);
        }
        assert_eq!(rate.check_at(&l, 60_000), Verdict::Refuse);
    }

    #[test]
    fn consecutive_refusals_close_and_an_allowed_message_resets_the_count() {
        let l = limits(10, 1, 3);
        let mut rate = MessageRate::new_at(&l, 0);
        assert_eq!(rate.check_at(&l, 0), Verdict::Allow);
        assert_eq!(rate.check_at(&l, 10), Verdict::Refuse);
        assert_eq!(rate.check_at(&l, 20), Verdict::Refuse);
        // 80 ms later (0.8 + the 0.2 kept through the refusals): allowed, the run ends.
        assert_eq!(rate.check_at(&l, 100), Verdict::Allow);
        assert_eq!(rate.check_at(&l, 110), Verdict::Refuse);
        assert_eq!(rate.check_at(&l, 120), Verdict::Refuse);
        assert_eq!(rate.check_at(&l, 130), Verdict::Close);
        // Still over: still Close (the session has closed by then anyway).
        assert_eq!(rate.check_at(&l, 140), Verdict::Close);
    }

    #[test]
    fn without_max_rate_errors_it_only_refuses() {
        let l = limits(1, 1, 0);
        let mut rate = MessageRate::new_at(&l, 0);
        assert_eq!(rate.check_at(&l, 0), Verdict::Allow);
        for t in 0..1000 {
            assert_eq!(rate.check_at(&l, t / 2), Verdict::Refuse);
        }
        assert_eq!(rate.check_at(&l, 1000), Verdict::Allow);
    }

    #[test]
    fn burst_zero_is_one_second_of_the_rate() {
        let l = limits(3, 0, 0);
        let mut rate = MessageRate::new_at(&l, 0);
        assert_eq!(
            (0..4)
                .map(|_| rate.check_at(&l, 0))
                .filter(|v| *v == Verdict::Allow)
                .count(),
            3
        );
    }

    #[test]
    fn the_clock_wraps() {
        let l = limits(10, 1, 0);
        let mut rate = MessageRate::new_at(&l, u32::MAX - 50);
        assert_eq!(rate.check_at(&l, u32::MAX - 50), Verdict::Allow);
        assert_eq!(rate.check_at(&l, u32::MAX), Verdict::Refuse);
        assert_eq!(rate.check_at(&l, 49), Verdict::Allow);
    }

    fn conn_limits(per_sec: u32, burst: u32) -> Limits {
        Limits {
            connections_per_ip_per_sec: per_sec,
            connection_burst_per_ip: burst,
            ..Limits::default()
        }
    }

    #[test]
    fn connections_per_address() {
        let rate = ConnectionRate::new(&conn_limits(2, 3));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!((0..3).all(|_| rate.allow_at(a, 0)));
        assert!(!rate.allow_at(a, 0));
        // Another address has its own bucket.
        assert!(rate.allow_at(b, 0));
        // 2 per second: one per 500 ms.
        assert!(!rate.allow_at(a, 400));
        assert!(rate.allow_at(a, 500));
        assert!(!rate.allow_at(a, 500));
        // The same address mapped into IPv6 is the same client.
        assert!(!rate.allow_at("::ffff:192.0.2.1".parse().unwrap(), 500));
    }

    #[test]
    fn ipv6_counts_per_64() {
        let rate = ConnectionRate::new(&conn_limits(1, 2));
        assert!(rate.allow_at("2001:db8::1".parse().unwrap(), 0));
        assert!(rate.allow_at("2001:db8::ffff:2".parse().unwrap(), 0));
        assert!(!rate.allow_at("2001:db8::3".parse().unwrap(), 0));
        assert!(rate.allow_at("2001:db8:0:1::1".parse().unwrap(), 0));
    }

    #[test]
    fn refilled_addresses_are_swept() {
        let rate = ConnectionRate::new(&conn_limits(10, 10));
        for i in 0..5000u32 {
            assert!(rate.allow_at(IpAddr::from(i.to_be_bytes()), 0));
        }
        assert_eq!(rate.len(), 5000);
        // An address still over its rate.
        let busy: IpAddr = "198.51.100.7".parse().unwrap();
        while rate.allow_at(busy, SWEEP_EVERY_MS - 1) {}
        // With new addresses coming in after the sweep interval, the refilled entries go.
        for i in 0..(SHARDS as u32 * 50) {
            rate.allow_at(IpAddr::from((1_000_000 + i).to_be_bytes()), SWEEP_EVERY_MS);
        }
        assert!(rate.len() <= SHARDS * 50 + 1, "{} entries left", rate.len());
        // The busy one is kept: still refused.
        assert!(!rate.allow_at(busy, SWEEP_EVERY_MS));
    }

    #[test]
    fn a_shard_that_doubles_is_swept_before_its_time() {
        let rate = ConnectionRate::new(&conn_limits(1000, 1));
        // Within the sweep interval: 100 000 addresses, 20 per millisecond, each bucket
        // refilled 1 ms later.
        for i in 0..100_000u32 {
            rate.allow_at(IpAddr::from(i.to_be_bytes()), u64::from(i / 20));
        }
        // Without the size trigger all 100 000 would be kept until the next timed sweep.
        assert!(rate.len() <= SHARDS * 2048, "{}", rate.len());
    }

    #[test]
    fn user_connections() {
        let users = UserConnections::default();
        let ws: Vec<WebSocket> = (0..4).map(|_| WebSocket::detached()).collect();
        assert!(users.try_add("alice", &ws[0], 2));
        assert!(users.try_add("alice", &ws[1], 2));
        assert!(!users.try_add("alice", &ws[2], 2));
        assert!(users.try_add("bob", &ws[3], 2));
        assert_eq!(users.count("alice"), 2);
        assert_eq!(users.of("alice"), [ws[0].clone(), ws[1].clone()]);
        users.remove("alice", ws[0].id());
        assert!(users.try_add("alice", &ws[2], 2));
        assert_eq!(users.of("alice"), [ws[1].clone(), ws[2].clone()]);
        users.remove("alice", ws[1].id());
        users.remove("alice", ws[2].id());
        assert_eq!(users.count("alice"), 0);
        assert_eq!(users.users(), 1, "an entry goes with its last connection");
        users.remove("bob", ws[3].id());
        assert_eq!(users.users(), 0);
        // Removing what is not there does nothing.
        users.remove("carol", ws[0].id());
        assert_eq!(users.users(), 0);
        assert!(users.of("carol").is_empty());
    }

    #[test]
    fn anonymous_connections_are_not_counted_and_zero_is_no_limit() {
        let users = UserConnections::default();
        let ws = WebSocket::detached();
        assert!((0..1000).all(|_| users.try_add("", &ws, 1)));
        users.remove("", ws.id());
        assert_eq!(users.users(), 0);
        assert!((0..1000).all(|_| users.try_add("dave", &ws, 0)));
        assert_eq!(users.count("dave"), 1000);
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let refusals = LimitRefusals::default();
        refusals.add(Refused::Origin);
        refusals.add(Refused::RateClose);
        refusals.add(Refused::RateClose);
        let all: Vec<_> = refusals.all().collect();
        assert_eq!(all.len(), 6);
        assert!(all.contains(&("origin", 1)));
        assert!(all.contains(&("rate_close", 2)));
        assert!(all.contains(&("message_rate", 0)));
    }
}
