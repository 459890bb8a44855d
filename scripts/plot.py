#!/usr/bin/env python3
"""Tables and plots from target/bench/results.jsonl (written by scripts/bench.sh).

    python3 scripts/plot.py --table [--session S ...] [RESULTS]     markdown tables (stdlib only)
    target/py/bin/python scripts/plot.py [--session S ...] [RESULTS] [--out docs/bench]
        PNG plots of fan-out deliveries/s and p99 latency against the number of subscribers
        (matplotlib: target/py/bin/pip install matplotlib)

Without --session: every session in the file (later sessions win for the same configuration:
only the newest session holding a (scenario, configuration, server) is used). Values are medians
over the runs of that session.
"""

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict

SERVER_ORDER = ["switchboard", "uws", "raw", "socketapi"]
SERVER_NAME = {
    "switchboard": "Switchboard",
    "uws": "uWebSockets.js",
    "raw": "raw tokio-websockets",
    "socketapi": "SocketAPI 0.2.0",
}


def config_key(r):
    s = r["scenario"]
    if s == "fanout":
        return (r["subs"], r["size"], r.get("rate") or 0)
    if s == "channels":
        return (r["channels"], r["size"])
    if s == "idle":
        return (r["conns"],)
    if s == "echo":
        return (r["conns"], r["size"])
    return ()


def load(path, sessions):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if sessions and r.get("tag") not in sessions:
                continue
            rows.append(r)
    # newest session per (scenario, config, server)
    groups = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[(r["scenario"], config_key(r), r["server"])][r.get("tag", "")].append(r)
    out = {}
    for k, by_session in groups.items():
        newest = max(by_session)
        out[k] = by_session[newest]
    return out


def med(runs, *path):
    vals = []
    for r in runs:
        v = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(v)
    return statistics.median(vals) if vals else None


def fmt(v, digits=0):
    if v is None:
        return "—"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.{digits}f}"


def servers_in(groups, scenario, cfg):
    return [s for s in SERVER_ORDER if (scenario, cfg, s) in groups] + sorted(
        {k[2] for k in groups if k[0] == scenario and k[1] == cfg} - set(SERVER_ORDER)
    )


def table(groups):
    scenarios = ["fanout", "channels", "idle", "echo"]
    for sc in scenarios:
        cfgs = sorted({k[1] for k in groups if k[0] == sc})
        if not cfgs:
            continue
        print()
        if sc in ("fanout", "channels"):
            first = "subscribers" if sc == "fanout" else "channels"
            print(f"### {sc}\n")
            print(f"| {first} | payload | publications | server | runs | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | lost | server CPU µs/delivery | connect s | SB ÷ this: deliveries/s | SB ÷ this: p99 |")
            print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for cfg in cfgs:
                sb = groups.get((sc, cfg, "switchboard"))
                sb_d = med(sb, "deliveries_per_s") if sb else None
                sb_p = med(sb, "latency_ms", "p99") if sb else None
                for s in servers_in(groups, sc, cfg):
                    runs = groups[(sc, cfg, s)]
                    d = med(runs, "deliveries_per_s")
                    p99 = med(runs, "latency_ms", "p99")
                    lost = med(runs, "lost")
                    size = f"{cfg[1]} B" if cfg[1] < 1024 else f"{cfg[1] // 1024} KiB"
                    load = f"{cfg[2]:g}/s" if len(cfg) > 2 and cfg[2] else "max"
                    print(
                        f"| {cfg[0]:,} | {size} | {load} | {SERVER_NAME.get(s, s)} | {len(runs)} | {fmt(d)} | {fmt(med(runs, 'latency_ms', 'p50'), 1)} | "
                        f"{fmt(p99, 1)} | {fmt(med(runs, 'latency_ms', 'p999'), 1)} | {fmt(med(runs, 'latency_ms', 'max'), 1)} | {fmt(lost)} | "
                        f"{fmt(med(runs, 'server_cpu_us_per_delivery'), 2)} | {fmt(med(runs, 'connect_secs'), 2)} | "
                        f"{'—' if s == 'switchboard' else ratio(sb_d, d)} | {'—' if s == 'switchboard' else ratio(sb_p, p99)} |"
                    )
        elif sc == "idle":
            print("### idle memory\n")
            print("| connections | server | runs | server RSS KiB / connection | RSS after, MiB | connect s | connections/s | SB ÷ this: KiB/conn |")
            print("|---:|---|---:|---:|---:|---:|---:|---:|")
            for cfg in cfgs:
                sb = groups.get((sc, cfg, "switchboard"))
                sb_k = med(sb, "kib_per_conn") if sb else None
                for s in servers_in(groups, sc, cfg):
                    runs = groups[(sc, cfg, s)]
                    k = med(runs, "kib_per_conn")
                    rss = med(runs, "rss_idle_kib")
                    print(
                        f"| {cfg[0]:,} | {SERVER_NAME.get(s, s)} | {len(runs)} | {fmt(k, 2)} | {fmt(rss / 1024 if rss else None, 1)} | "
                        f"{fmt(med(runs, 'connect_secs'), 2)} | {fmt(med(runs, 'connects_per_s'))} | {'—' if s == 'switchboard' else ratio(sb_k, k)} |"
                    )
        elif sc == "echo":
            print("### echo (WebSocket layer)\n")
            print("| connections | message | server | runs | echoes/s | MB/s | RTT p50 ms | RTT p99 ms | server CPU µs/echo | SB ÷ this: echoes/s | SB ÷ this: CPU/echo |")
            print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for cfg in cfgs:
                sb = groups.get((sc, cfg, "switchboard"))
                sb_e = med(sb, "echoes_per_s") if sb else None
                sb_c = med(sb, "server_cpu_us_per_echo") if sb else None
                for s in servers_in(groups, sc, cfg):
                    runs = groups[(sc, cfg, s)]
                    e = med(runs, "echoes_per_s")
                    cpu = med(runs, "server_cpu_us_per_echo")
                    size = f"{cfg[1]} B" if cfg[1] < 1024 else f"{cfg[1] // 1024} KiB"
                    print(
                        f"| {cfg[0]:,} | {size} | {SERVER_NAME.get(s, s)} | {len(runs)} | {fmt(e)} | {fmt(med(runs, 'mb_per_s'), 1)} | "
                        f"{fmt(med(runs, 'rtt_ms', 'p50'), 2)} | {fmt(med(runs, 'rtt_ms', 'p99'), 2)} | {fmt(cpu, 2)} | "
                        f"{'—' if s == 'switchboard' else ratio(sb_e, e)} | {'—' if s == 'switchboard' else ratio(sb_c, cpu)} |"
                    )


def plots(groups, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    sizes = sorted({k[1][1] for k in groups if k[0] == "fanout"})
    for metric, path, ylabel, fname, logy in [
        ("deliveries", ("deliveries_per_s",), "deliveries / s", "fanout_deliveries.png", True),
        ("p99", ("latency_ms", "p99"), "publish-to-deliver p99, ms", "fanout_p99.png", True),
    ]:
        fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
        for ax, size in zip(axes[0], sizes):
            for s in SERVER_ORDER:
                pts = sorted(
                    (k[1][0], med(v, *path))
                    for k, v in groups.items()
                    if k[0] == "fanout" and k[2] == s and k[1][1] == size and not k[1][2]
                )
                pts = [(x, y) for x, y in pts if y is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=SERVER_NAME[s])
            ax.set_xscale("log")
            if logy:
                ax.set_yscale("log")
            ax.set_xlabel("subscribers")
            ax.set_ylabel(ylabel)
            ax.set_title(f"fan-out, {size if size < 1024 else str(size // 1024) + ' Ki'}B payload")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, fname), dpi=110)
        plt.close(fig)
        print(os.path.join(out, fname))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="?", default="target/bench/results.jsonl")
    ap.add_argument("--session", action="append", default=[])
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--out", default="docs/bench")
    a = ap.parse_args()
    groups = load(a.results, set(a.session))
    if not groups:
        sys.exit("no results")
    if a.table:
        table(groups)
    else:
        plots(groups, a.out)


if __name__ == "__main__":
    main()
