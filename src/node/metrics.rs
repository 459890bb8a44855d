//! `GET /metrics`, `GET /healthz` and `GET /readyz`.
//!
//! `/metrics` is written by the `prometheus-client` crate: the Prometheus text format (0.0.4) by
//! default, OpenMetrics when the scraper's `Accept` asks for `application/openmetrics-text`
//! (Prometheus does). Every figure is read at scrape time by one [`Collector`] from what the node
//! counts anyway — its `Counters`, the hub's atomics, the presence and history structures — so
//! the hot path pays nothing for the exposition. What exists only for metrics lives in
//! [`Metrics`] (on the hub): per publication, at most one labelled increment by namespace, one
//! histogram observation, never anything per delivery.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `switchboard_connections` | gauge | |
//! | `switchboard_subscriptions` | gauge | |
//! | `switchboard_duplex_channels` | gauge | |
//! | `switchboard_publications_total` | counter | |
//! | `switchboard_publish_failures_total` | counter | |
//! | `switchboard_deliveries_total` | counter | |
//! | `switchboard_slow_consumers_total` | counter | |
//! | `switchboard_limit_refusals_total` | counter | `reason` |
//! | `switchboard_namespace_publications_total` | counter | `namespace` |
//! | `switchboard_namespace_deliveries_total` | counter | `namespace` |
//! | `switchboard_fanout_seconds` | histogram | |
//! | `switchboard_broker_errors_total` | counter | `op` |
//! | `switchboard_presence_topics`, `switchboard_presence_members` | gauge | |
//! | `switchboard_history_streams`, `switchboard_history_publications` | gauge (memory broker only) | |
//!
//! The counts by namespace have names of their own rather than a `namespace` label on
//! `switchboard_publications_total`: one family holding both the unlabelled total and labelled
//! series would make `sum(switchboard_publications_total)` count every publication twice.

use super::Node;
use axum::routing::MethodRouter;
use http::{HeaderMap, StatusCode};
use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The most distinct `namespace` label values; publications of further namespaces are counted
/// under [`OTHER`].
pub(crate) const NAMESPACES_MAX: usize = 256;
/// The `namespace` label of the namespaces past [`NAMESPACES_MAX`].
pub(crate) const OTHER: &str = "other";

/// The namespace of a topic: the part of its channel's name (the topic up to the first `#`)
/// before the first `:`; `""` when the name has no `:`.
pub(crate) fn namespace_of(topic: &str) -> &str {
    let channel = topic.split_once('#').map_or(topic, |(channel, _)| channel);
    crate::router::namespace_of(channel)
}

/// What a broker error happened in (the `op` label of `switchboard_broker_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrokerOp {
    /// Publishing (a publication, a history publication, a presence diff).
    Publish,
    /// Joining a topic (the broker's subscription, and the stream read of a history join).
    Subscribe,
    /// Reading a history stream (`history`).
    History,
    /// Recording or reading presence in a broker that shares it.
    Presence,
}

impl BrokerOp {
    const ALL: [BrokerOp; 4] = [
        BrokerOp::Publish,
        BrokerOp::Subscribe,
        BrokerOp::History,
        BrokerOp::Presence,
    ];

    fn label(self) -> &'static str {
        match self {
            BrokerOp::Publish => "publish",
            BrokerOp::Subscribe => "subscribe",
            BrokerOp::History => "history",
            BrokerOp::Presence => "presence",
        }
    }
}

/// Figures kept only for `/metrics` (the rest is read from the node's own state at scrape time).
#[derive(Default)]
pub(crate) struct Metrics {
    namespaces: Namespaces,
    fanout: Histogram,
    broker_errors: [AtomicU64; BrokerOp::ALL.len()],
}

impl Metrics {
    /// A publication on `topic` was accepted by the broker.
    pub(crate) fn published(&self, topic: &str) {
        self.namespaces.with(namespace_of(topic), |counts| {
            counts.publications.fetch_add(1, Ordering::Relaxed)
        });
    }

    /// A publication on `topic` was queued to `delivered` local subscribers in `took`.
    pub(crate) fn fanned_out(&self, topic: &str, delivered: usize, took: Duration) {
        if delivered == 0 {
            return;
        }
        self.fanout.observe(took);
        self.namespaces.with(namespace_of(topic), |counts| {
            counts.deliveries.fetch_add(delivered as u64, Ordering::Relaxed)
        });
    }

    /// The broker failed an operation of the node.
    pub(crate) fn broker_error(&self, op: BrokerOp) {
        self.broker_errors[op as usize].fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct NamespaceCounts {
    publications: AtomicU64,
    deliveries: AtomicU64,
}

/// Counts by namespace, at most [`NAMESPACES_MAX`] of them (then [`OTHER`]). A known namespace
/// costs a read lock and a lookup; only a namespace's first publication takes the write lock.
#[derive(Default)]
struct Namespaces {
    counts: RwLock<HashMap<Box<str>, NamespaceCounts>>,
}

impl Namespaces {
    fn with<R>(&self, namespace: &str, count: impl Fn(&NamespaceCounts) -> R) -> R {
        {
            let counts = self.counts.read();
            if let Some(found) = counts.get(namespace) {
                return count(found);
            }
            if counts.len() >= NAMESPACES_MAX {
                if let Some(other) = counts.get(OTHER) {
                    return count(other);
                }
            }
        }
        let mut counts = self.counts.write();
        let key = if counts.len() < NAMESPACES_MAX || counts.contains_key(namespace) {
            namespace
        } else {
            OTHER
        };
        count(counts.entry(key.into()).or_default())
    }

    /// Namespace, publications, deliveries; sorted by namespace.
    fn snapshot(&self) -> Vec<(String, u64, u64)> {
        let mut all: Vec<_> = self
            .counts
            .read()
            .iter()
            .map(|(namespace, counts)| {
                (
                    namespace.to_string(),
                    counts.publications.load(Ordering::Relaxed),
                    counts.deliveries.load(Ordering::Relaxed),
                )
            })
            .collect();
        all.sort_unstable();
        all
    }
}

/// Upper bounds of the fan-out histogram's buckets, in nanoseconds (10 µs … 100 ms).
const FANOUT_BOUNDS_NS: [u64; 13] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
];

/// A histogram of durations in atomics: an observation is two relaxed additions (its bucket and
/// the sum), no lock.
#[derive(Default)]
struct Histogram {
    /// Counts per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; FANOUT_BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = FANOUT_BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Sum (seconds), count, and each bucket's upper bound (seconds) with its own count. The
    /// count is the buckets' total, so the exposition is consistent however observations race the
    /// scrape.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let bound = FANOUT_BOUNDS_NS.get(i).map_or(f64::INFINITY, |&ns| ns as f64 / 1e9);
                (bound, count.load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        (self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9, count, buckets)
    }
}

/// Reads a node at scrape time.
struct Scrape(Node);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape").field("node", &self.0.inner.name).finish()
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// `name` without its `_total`, which the encoder adds.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A counter with one label: each (label value, count).
fn labelled_counter<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values {
        metric
            .encode_family(&[(label, value)])?
            .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let inner = &self.0.inner;
        let counters = &inner.counters;
        let hub = &inner.hub;
        let e = &mut encoder;
        let load = |atomic: &AtomicU64| atomic.load(Ordering::Relaxed);
        gauge(
            e,
            "switchboard_connections",
            "Open WebSocket connections.",
            load(&counters.connections),
        )?;
        gauge(
            e,
            "switchboard_subscriptions",
            "Active subscriptions on this node.",
            load(&hub.subscriptions),
        )?;
        counter(
            e,
            "switchboard_publications",
            "Publications accepted by the broker.",
            load(&counters.publications),
        )?;
        counter(
            e,
            "switchboard_publish_failures",
            "Publications the broker refused.",
            load(&counters.publish_failures),
        )?;
        counter(
            e,
            "switchboard_deliveries",
            "Messages queued to local subscribers.",
            load(&hub.deliveries),
        )?;
        counter(
            e,
            "switchboard_slow_consumers",
            "Connections closed because they did not read.",
            load(&counters.slow_consumers),
        )?;
        gauge(
            e,
            "switchboard_duplex_channels",
            "Bidirectional channels open on this node's connections.",
            load(&counters.duplex_channels),
        )?;
        labelled_counter(
            e,
            "switchboard_limit_refusals",
            "Handshakes, messages and connections refused by a limit or the origin check.",
            "reason",
            counters.limit_refusals.all(),
        )?;

        let metrics = &hub.metrics;
        let namespaces = metrics.namespaces.snapshot();
        let by_namespace =
            |pick: fn(&(String, u64, u64)) -> u64| namespaces.iter().map(move |row| (row.0.as_str(), pick(row)));
        labelled_counter(
            e,
            "switchboard_namespace_publications",
            "Publications accepted by the broker, by namespace of their channel (the name's part before \
             its first ':', \"\" for none; past 256 namespaces, \"other\").",
            "namespace",
            by_namespace(|row| row.1),
        )?;
        labelled_counter(
            e,
            "switchboard_namespace_deliveries",
            "Messages queued to local subscribers, by namespace of their channel (as \
             switchboard_namespace_publications_total).",
            "namespace",
            by_namespace(|row| row.2),
        )?;
        let (sum, count, buckets) = metrics.fanout.snapshot();
        e.encode_descriptor(
            "switchboard_fanout_seconds",
            "Per publication reaching this node's subscribers: seconds from the broker handing it to the \
             node to its last local subscriber's queue (the broker hop before and the socket writes after \
             are not included).",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        labelled_counter(
            e,
            "switchboard_broker_errors",
            "Broker operations of this node that failed, by operation (publish, subscribe, history, presence).",
            "op",
            BrokerOp::ALL
                .iter()
                .map(|&op| (op.label(), load(&metrics.broker_errors[op as usize]))),
        )?;

        let (topics, members) = inner.presence.sizes();
        gauge(
            e,
            "switchboard_presence_topics",
            "Topics with presence members connected to this node.",
            topics as u64,
        )?;
        gauge(
            e,
            "switchboard_presence_members",
            "Presence members connected to this node (with Redis, other nodes' members are not counted).",
            members as u64,
        )?;
        if let Some((streams, publications)) = inner.broker.history_in_memory() {
            gauge(
                e,
                "switchboard_history_streams",
                "History streams the in-process (memory) broker keeps; absent with Redis, which keeps them.",
                streams as u64,
            )?;
            gauge(
                e,
                "switchboard_history_publications",
                "Publications kept in those history streams.",
                publications as u64,
            )?;
        }
        Ok(())
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition of `node`'s metrics, OpenMetrics or the Prometheus text format: its content
/// type and its text.
pub(crate) fn render(node: &Node, openmetrics: bool) -> Result<(&'static str, String), std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(node.clone())));
    let mut text = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok((OPENMETRICS, text))
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
        Ok((prometheus_client::encoding::prometheus_text::CONTENT_TYPE, text))
    }
}

fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"))
}

pub(crate) fn endpoint<S: Clone + Send + Sync + 'static>(node: Node) -> MethodRouter<S> {
    axum::routing::get(move |headers: HeaderMap| {
        let node = node.clone();
        async move {
            match render(&node, wants_openmetrics(&headers)) {
                Ok((content_type, text)) => (StatusCode::OK, [(http::header::CONTENT_TYPE, content_type)], text),
                Err(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "the metrics could not be encoded\n".to_owned(),
                ),
            }
        }
    })
}

/// `GET /healthz`: 200 `ok` while the process serves.
pub(crate) fn healthz<S: Clone + Send + Sync + 'static>() -> MethodRouter<S> {
    axum::routing::get(|| async { "ok\n" })
}

/// How long `/readyz` waits for the broker's answer.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /readyz`: 200 `ready` when the broker is reachable, else 503 naming the problem.
pub(crate) fn readyz<S: Clone + Send + Sync + 'static>(node: Node) -> MethodRouter<S> {
    axum::routing::get(move || {
        let node = node.clone();
        async move {
            let ready = tokio::time::timeout(READY_TIMEOUT, node.inner.broker.ready()).await;
            match ready {
                Ok(Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
                Ok(Err(err)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {err}\n")),
                Err(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: the broker did not answer within {READY_TIMEOUT:?}\n"),
                ),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_the_channel_names_part_before_the_first_colon() {
        assert_eq!(namespace_of("chat:lobby"), "chat");
        assert_eq!(namespace_of("chat:lobby:x"), "chat");
        assert_eq!(namespace_of("chat:lobby#[5]"), "chat");
        assert_eq!(namespace_of("chat"), "");
        assert_eq!(namespace_of("chat#a:b"), "", "a ':' in the key is not the channel's");
        assert_eq!(namespace_of(":x"), "");
        assert_eq!(namespace_of(""), "");
    }

    #[test]
    fn namespace_labels_are_capped() {
        let metrics = Metrics::default();
        for i in 0..NAMESPACES_MAX + 10 {
            metrics.published(&format!("ns{i}:room"));
        }
        metrics.published("ns0:room");
        let rows = metrics.namespaces.snapshot();
        assert_eq!(rows.len(), NAMESPACES_MAX + 1, "256 namespaces and `other`");
        let count = |name: &str| rows.iter().find(|row| row.0 == name).map(|row| row.1);
        assert_eq!(count("ns0"), Some(2));
        assert_eq!(count(OTHER), Some(10));
    }

    #[test]
    fn deliveries_count_by_namespace_and_empty_fan_outs_are_not_observed() {
        let metrics = Metrics::default();
        metrics.fanned_out("chat:a#k", 3, Duration::from_micros(30));
        metrics.fanned_out("chat:b", 2, Duration::from_secs(1));
        metrics.fanned_out("feed", 0, Duration::from_micros(1));
        let rows = metrics.namespaces.snapshot();
        assert_eq!(rows, vec![("chat".to_owned(), 0, 5)]);
        let (sum, count, buckets) = metrics.fanout.snapshot();
        assert_eq!(count, 2);
        assert!((sum - 1.00003).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[2], (50e-6, 1), "30 µs is in the 50 µs bucket");
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
    }

    #[test]
    fn bucket_bounds_are_inclusive() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(10));
        histogram.observe(Duration::from_nanos(10_001));
        let (_, _, buckets) = histogram.snapshot();
        assert_eq!((buckets[0].1, buckets[1].1), (1, 1));
    }
}
