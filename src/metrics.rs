//! `GET /metrics`: the node's counters in Prometheus' text format.

use crate::node::Node;
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
    let shared = &node.shared;
    let rows = [
        (
            "switchboard_connections",
            "gauge",
            "Open WebSocket connections.",
            shared.counters.connections.load(Ordering::Relaxed),
        ),
        (
            "switchboard_subscriptions",
            "gauge",
            "Active subscriptions on this node.",
            shared.hub.subscriptions.load(Ordering::Relaxed),
        ),
        (
            "switchboard_publications_total",
            "counter",
            "Publications accepted by the broker.",
            shared.counters.publications.load(Ordering::Relaxed),
        ),
        (
            "switchboard_publish_failures_total",
            "counter",
            "Publications the broker refused.",
            shared.counters.publish_failures.load(Ordering::Relaxed),
        ),
        (
            "switchboard_deliveries_total",
            "counter",
            "Messages queued to local subscribers.",
            shared.hub.deliveries.load(Ordering::Relaxed),
        ),
        (
            "switchboard_slow_consumers_total",
            "counter",
            "Connections closed because they did not read.",
            0, // TODO(merge): per-node count
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    out
}
