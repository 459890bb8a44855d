//! `GET /metrics`: the node's counters in Prometheus' text format.

use super::Node;
use axum::routing::MethodRouter;
use std::fmt::Write;
use std::sync::atomic::Ordering;

pub(crate) fn endpoint<S: Clone + Send + Sync + 'static>(node: Node) -> MethodRouter<S> {
    axum::routing::get(move || {
        let node = node.clone();
        async move {
            (
                [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                render(&node),
            )
        }
    })
}

pub(crate) fn render(node: &Node) -> String {
    let inner = &node.inner;
    let rows = [
        (
            "switchboard_connections",
            "gauge",
            "Open WebSocket connections.",
            inner.counters.connections.load(Ordering::Relaxed),
        ),
        (
            "switchboard_subscriptions",
            "gauge",
            "Active subscriptions on this node.",
            inner.hub.subscriptions.load(Ordering::Relaxed),
        ),
        (
            "switchboard_publications_total",
            "counter",
            "Publications accepted by the broker.",
            inner.counters.publications.load(Ordering::Relaxed),
        ),
        (
            "switchboard_publish_failures_total",
            "counter",
            "Publications the broker refused.",
            inner.counters.publish_failures.load(Ordering::Relaxed),
        ),
        (
            "switchboard_deliveries_total",
            "counter",
            "Messages queued to local subscribers.",
            inner.hub.deliveries.load(Ordering::Relaxed),
        ),
        (
            "switchboard_slow_consumers_total",
            "counter",
            "Connections closed because they did not read.",
            inner.counters.slow_consumers.load(Ordering::Relaxed),
        ),
        (
            "switchboard_duplex_channels",
            "gauge",
            "Bidirectional channels open on this node's connections.",
            inner.counters.duplex_channels.load(Ordering::Relaxed),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    let name = "switchboard_limit_refusals_total";
    let _ = writeln!(
        out,
        "# HELP {name} Handshakes, messages and connections refused by a limit or the origin check.\n# TYPE {name} counter"
    );
    for (reason, value) in inner.counters.limit_refusals.all() {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {value}");
    }
    out
}
