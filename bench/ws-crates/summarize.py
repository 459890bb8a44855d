#!/usr/bin/env python3
"""Reads reports/{autobahn,echo,mem}.jsonl, prints a markdown table (medians) and
writes reports/../summary.json."""
import json, os, statistics, sys

out = sys.argv[1] if len(sys.argv) > 1 else "reports"

def load(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []

ab = {r["candidate"]: r for r in load("autobahn.jsonl")}
echo, mem = load("echo.jsonl"), load("mem.jsonl")
cands = []
for r in echo + mem + list(ab.values()):
    c = r["candidate"]
    if c not in cands:
        cands.append(c)

def med(vals):
    return statistics.median(vals) if vals else None

summary = {}
for c in cands:
    s = {}
    for sc in ("small", "large"):
        rs = [r["result"] for r in echo if r["candidate"] == c and r["scenario"] == sc]
        if rs:
            s[f"echo_{sc}"] = {"runs": len(rs), "msgs_per_s": med([r["msgs_per_s"] for r in rs]),
                               "mb_per_s": med([r["mb_per_s"] for r in rs]),
                               "all_msgs_per_s": [r["msgs_per_s"] for r in rs],
                               "server_cpu_us_per_msg": med([r["server_cpu_us_per_msg"] for r in rs if "server_cpu_us_per_msg" in r]),
                               "all_server_cpu_us_per_msg": [r.get("server_cpu_us_per_msg") for r in rs],
                               "size": rs[0]["size"], "msgs": rs[0]["msgs"], "conns": rs[0]["conns"]}
    ms = [r["result"] for r in mem if r["candidate"] == c]
    if ms:
        s["idle_mem"] = {"runs": len(ms), "conns": ms[0]["conns"],
                         "kib_per_conn": med([r["kib_per_conn"] for r in ms]),
                         "all_kib_per_conn": [r["kib_per_conn"] for r in ms],
                         "rss_before_kib": med([r["rss_before_kib"] for r in ms]),
                         "rss_after_kib": med([r["rss_after_kib"] for r in ms])}
    if c in ab:
        a = ab[c]
        s["autobahn"] = {k: a[k] for k in ("cases", "selection", "counts", "not_ok", "secs")}
    summary[c] = s

json.dump(summary, open(os.path.join(out, "..", "summary.json"), "w"), indent=1)

def fmt(v, f="{:,.0f}"):
    return f.format(v) if v is not None else "–"

def counts(c):
    a = summary.get(c, {}).get("autobahn")
    if not a:
        return "–"
    k = a["counts"]
    extra = {x: n for x, n in k.items() if x not in ("OK", "NON-STRICT", "INFORMATIONAL", "FAILED")}
    s = f'{k.get("OK",0)} / {k.get("NON-STRICT",0)} / {k.get("INFORMATIONAL",0)} / {k.get("FAILED",0)}'
    if extra:
        s += " (+" + ", ".join(f"{n} {x}" for x, n in extra.items()) + ")"
    return s + f' of {a["cases"]} ({a["secs"]} s)'

print("| candidate | Autobahn OK / NON-STRICT / INFO / FAILED | echo 100x20 B text: msg/s (MB/s) | server CPU µs/msg | echo 100x16 KiB bin: msg/s (MB/s) | server CPU µs/msg | idle KiB/conn (10k) |")
print("|---|---|---|---|---|---|---|")
for c in cands:
    s = summary[c]
    e1, e2, m = s.get("echo_small"), s.get("echo_large"), s.get("idle_mem")
    print(f"| {c} | {counts(c)} | "
          + (f'{fmt(e1["msgs_per_s"])} ({e1["mb_per_s"]:.1f})' if e1 else "–") + " | "
          + (fmt(e1["server_cpu_us_per_msg"], "{:.2f}") if e1 else "–") + " | "
          + (f'{fmt(e2["msgs_per_s"])} ({e2["mb_per_s"]:.0f})' if e2 else "–") + " | "
          + (fmt(e2["server_cpu_us_per_msg"], "{:.2f}") if e2 else "–") + " | "
          + (f'{m["kib_per_conn"]:.1f}' if m else "–") + " |")
