#!/usr/bin/env python3
"""Renders broker-bench's JSON lines (scripts/bench.sh) as bench/results.md: the figures of
every scenario, each issue-7 target marked met or not, and the machine, date and commit."""

import datetime
import json
import os
import platform
import subprocess
import sys


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1048576:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({model}), {mem} RAM, Linux {platform.release()}, {sh('rustc', '--version')}"


def table(rows):
    cols = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join("-" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return "\n".join(out)


def find(rows, **want):
    for r in rows:
        if all(str(r.get(k)) == str(v) if not callable(v) else v(r.get(k)) for k, v in want.items()):
            return r
    return None


def mark(ok):
    """`ok` True or False for a target; None for a figure only reported."""
    if ok is None:
        return "reported"
    return "**met**" if ok else "**not met**"


def https_inserts(rows):
    """The figure of issue 17's HTTPS row: per protocol, Broker's durable inserts over TLS and
    their fraction of the ceiling over TLS of the same protocol; None without such rows."""
    parts = []
    for protocol, name in (("https/1.1", "HTTP/1.1"), ("h2", "HTTP/2")):
        c = find(rows, server=f"ceiling {protocol}")
        for r in rows:
            if r.get("protocol") == protocol and str(r.get("server", "")).startswith("broker"):
                fsync = r["server"].split(f"broker {protocol} ", 1)[-1]
                parts.append(f"{name} {fsync}: {r['inserts_per_s']}/s = {r.get('of_ceiling')} of ceiling"
                             + (f" ({c['inserts_per_s']}/s)" if c else "")
                             + f", p50 {r['p50_ms']} ms, errors {r['errors']}")
    return "; ".join(parts) or None


def targets(s):
    """(target, figure, met) for every target of issue 7 the run measured."""
    t = []
    ins = s.get("insert", [])
    always = find(ins, server="broker fsync=always")
    never = find(ins, server="broker fsync=never")
    if always:
        t.append(("Durable inserts (fsync always, 64 conns) ≥ 50 % of ceiling and ≥ 20,000/s",
                  f"{always['inserts_per_s']}/s = {always.get('of_ceiling')} of ceiling",
                  always["inserts_per_s"] >= 20000 and (always.get("of_ceiling") or 0) >= 0.5))
    if never:
        t.append(("Inserts with fsync never ≥ 70 % of ceiling",
                  f"{never['inserts_per_s']}/s = {never.get('of_ceiling')} of ceiling",
                  (never.get("of_ceiling") or 0) >= 0.7))
    fan = s.get("fanout", [])
    for subs, rate in ((200, 200), (1000, 20)):
        r = find(fan, server="broker fsync=always", subscribers=subs, rate=rate)
        if r:
            ok = r["p99_ms"] <= 5 and r["max_ms"] <= 50 and r["lost"] == 0 and r["duplicated"] == 0
            t.append((f"Fan-out {subs} subscribers at {rate}/s: p99 ≤ 5 ms, max ≤ 50 ms, 0 lost, 0 duplicated",
                      f"p99 {r['p99_ms']} ms, max {r['max_ms']} ms, lost {r['lost']}, duplicated {r['duplicated']}",
                      ok))
    ramp = find(fan, server="broker fsync=always", max_deliveries_per_s=lambda v: v is not None)
    cramp = find(fan, server="ceiling", max_deliveries_per_s=lambda v: v is not None)
    if ramp and cramp:
        t.append(("Fan-out delivery rate at p99 ≤ 50 ms ≥ 80 % of ceiling's",
                  f"{ramp['max_deliveries_per_s']}/s vs ceiling {cramp['max_deliveries_per_s']}/s = {ramp.get('of_ceiling')}",
                  (ramp.get("of_ceiling") or 0) >= 0.8))
    idle = find(s.get("idle", []), server=lambda v: str(v).startswith("broker"))
    if idle:
        t.append(("Idle: 10,000 SSE connections held", f"{idle['held']} held", idle["held"] >= 10000 * 0.99))
        t.append(("Idle: ≤ 8 KiB server RSS per connection", f"{idle['bytes_per_conn']} B",
                  idle["bytes_per_conn"] <= 8192))
        t.append(("Idle: 0 % CPU while idle", f"{idle['idle_cpu_pct']} %", idle["idle_cpu_pct"] <= 0.5))
        t.append(("Idle: every socket freed when its client goes", f"{idle['fds_left_after_close']} left",
                  idle["fds_left_after_close"] == 0))
    res = (s.get("resume") or [None])[0]
    if res:
        t.append(("Resume ≥ 200,000 events/s to one catching-up subscriber",
                  f"{res['events_per_s']} events/s, {res['out_of_order']} out of order",
                  res["events_per_s"] >= 200000 and res["out_of_order"] == 0))
    rs = s.get("restart", [])
    full = find(rs, start="full replay")
    ck = find(rs, start="from checkpoint")
    if full and ck:
        n = ck["records"]
        t.append((f"Restart with a checkpoint, {n:,} records: serving in ≤ 1 s",
                  f"{ck['serving_after_s']} s", ck["serving_after_s"] <= 1.0 and n >= 10_000_000))
        t.append(("Full replay ≥ 2,000,000 records/s", f"{full['records_per_s']} records/s",
                  full["records_per_s"] >= 2_000_000))
    ten = s.get("tenants", [])
    if ten:
        worst_ins = min(r.get("inserts_vs_first", 1) for r in ten)
        worst_p99 = max(r.get("fanout_p99_vs_first", 1) for r in ten)
        t.append(("Flat cost: 10,000 tenants / 100,000 users within 10 % of 1 tenant",
                  f"worst insert rate {worst_ins}× of first, worst fan-out p99 {worst_p99}× of first",
                  worst_ins >= 0.9 and worst_p99 <= 1.1))
    lg = s.get("login", [])
    if len(lg) == 2:
        a, b = lg
        ratio = b.get("inserts_vs_without", 0)
        p99 = b["fanout_p99_ms"] / max(a["fanout_p99_ms"], 1e-9)
        t.append(("100 logins/s slow inserts and SSE delivery by ≤ 10 %",
                  f"inserts {ratio}× of without; fan-out p99 {a['fanout_p99_ms']} → {b['fanout_p99_ms']} ms",
                  ratio >= 0.9 and p99 <= 1.1))
    return t


def targets_round2(s):
    """(target, figure, met) for issue 17's targets (performance, round 2) and issue 18's rows."""
    t = []
    ins = s.get("insert", [])
    always = find(ins, server="broker fsync=always")
    never = find(ins, server="broker fsync=never")
    if always:
        t.append(("Durable inserts (fsync always, 64 conns) ≥ 0.6 of the ceiling",
                  f"{always['inserts_per_s']}/s = {always.get('of_ceiling')} of ceiling",
                  (always.get("of_ceiling") or 0) >= 0.6))
    if never:
        t.append(("Inserts with fsync never ≥ 0.75 of the ceiling",
                  f"{never['inserts_per_s']}/s = {never.get('of_ceiling')} of ceiling",
                  (never.get("of_ceiling") or 0) >= 0.75))
    # The same load against the production build (scripts/pgo.sh); the ceiling is built as
    # it always is, so the ratio says what the PGO binary gains, not what PGO would give both.
    pgo = s.get("insert_pgo", [])
    for fsync, want in (("always", 0.6), ("never", 0.75)):
        r = find(pgo, server=f"broker fsync={fsync}")
        if r:
            t.append((f"Inserts with fsync {fsync}, PGO build (`scripts/pgo.sh`) ≥ {want} of the ceiling",
                      f"{r['inserts_per_s']}/s = {r.get('of_ceiling')} of ceiling",
                      (r.get("of_ceiling") or 0) >= want))
    fan = s.get("fanout", [])
    b = find(fan, server="broker fsync=always", subscribers=1000, rate=20)
    c = find(fan, server="ceiling", subscribers=1000, rate=20)
    if b and c and b.get("insert_p50_ms") is not None and c.get("insert_p50_ms"):
        ratio = round(b["insert_p50_ms"] / c["insert_p50_ms"], 2)
        t.append(("Insert p50 while 1,000 subscribers receive 20 events/s ≤ 2× the ceiling's",
                  f"{b['insert_p50_ms']} ms vs ceiling {c['insert_p50_ms']} ms = {ratio}×",
                  ratio <= 2))
    rs = s.get("restart", [])
    full = find(rs, start="full replay")
    ck = find(rs, start="from checkpoint")
    if full:
        t.append(("Full replay ≥ 3,000,000 records/s", f"{full['records_per_s']} records/s",
                  full["records_per_s"] >= 3_000_000))
    if ck:
        n = ck["records"]
        t.append((f"Restart from a checkpoint ≤ 0.1 s at {n:,} records", f"{ck['serving_after_s']} s",
                  ck["serving_after_s"] <= 0.1 and n >= 10_000_000))
    mem = (s.get("memory") or [None])[0]
    if mem:
        t.append((f"Memory: a user (hash included) ≤ 400 bytes, at {mem['users']:,} users / {mem['tenants']:,} tenants",
                  f"{mem['bytes_per_user']} B per user, {mem['bytes_per_tenant']} B per tenant (server RSS, every copy of the state)",
                  mem["bytes_per_user"] <= 400))
    for r in s.get("history", []):
        if r.get("server", "").startswith("broker"):
            t.append((f"History ({r.get('pages')}): pages/s at {r.get('events'):,} events in the tenant (issue 18, reported)",
                      f"{r.get('pages_per_s')} pages/s, p50 {r.get('p50_ms')} ms", None))
    https = https_inserts(s.get("insert_tls", []))
    if https:
        conns = s["insert_tls"][0].get("connections")
        t.append((f"Inserts over HTTPS (HTTP/1.1, HTTP/2) beside the ceiling over HTTPS ({conns} conns, one request in flight on each)",
                  https, None))
    ff = find(s.get("fanout_filtered", []), server="broker fsync=always")
    if ff:
        t.append(("Filtered fan-out (200 subscribers on one name, 200/s plus as many of another): 0 lost (issue 18)",
                  f"p99 {ff['p99_ms']} ms, lost {ff['lost']}, duplicated {ff['duplicated']}",
                  ff["lost"] == 0 and ff["duplicated"] == 0))
    return t


def jetstream(lines):
    """The JetStream section: inserts and publish-to-delivery latency for each log, side by
    side, from scripts/bench_nats.sh's lines (insert and fanout per log, in one run)."""
    logs = {}
    commit = "?"
    for d in lines:
        commit = d.get("commit", commit)
        ceiling = find(d["rows"], server="ceiling")
        for r in d["rows"]:
            if r["server"] == "ceiling":
                continue
            name = r["server"].removeprefix("broker ")
            if name.startswith("fsync="):
                name = f"embedded ({name})"
            entry = logs.setdefault(r["server"], {"log": name})
            if d["scenario"] == "insert":
                entry["inserts/s (64 conns)"] = r["inserts_per_s"]
                entry["of ceiling"] = r.get("of_ceiling")
                entry["ceiling inserts/s"] = ceiling and ceiling["inserts_per_s"]
                entry["insert p50 / p99 ms"] = f"{r['p50_ms']} / {r['p99_ms']}"
            elif d["scenario"] == "fanout":
                entry["delivery p50 / p99 ms (200 subs, 200/s)"] = f"{r['p50_ms']} / {r['p99_ms']}"
                entry["ceiling delivery p99 ms"] = ceiling and ceiling["p99_ms"]
                entry["lost / duplicated"] = f"{r['lost']} / {r['duplicated']}"
            entry.pop("runs", None)
            entry["runs"] = r.get("runs")
    print("## Several nodes: the JetStream log (issues 9 and 20)\n")
    print(f"Measured at commit {commit} by `scripts/bench_nats.sh`, all rows in one run: the embedded")
    print("log (`--fsync always`), one NATS server (R1 stream), and a 3-server NATS cluster (R3")
    print("stream), every NATS server on this same machine. Delivery latency is from the insert's")
    print("publish to its arrival at each subscriber.\n")
    embedded = next((e for e in logs.values() if e["log"].startswith("embedded")), None)
    base = embedded and embedded.get("inserts/s (64 conns)")
    targets = {"R1": 0.8, "R3": 0.5}
    checks = []
    for e in logs.values():
        if base and "inserts/s (64 conns)" in e:
            ratio = round(e["inserts/s (64 conns)"] / base, 3)
            e["of embedded"] = ratio
            e["runs"] = e.pop("runs", None)
            for replicas, want in targets.items():
                if f" {replicas} " in e["log"]:
                    checks.append((f"{replicas} inserts ≥ {want} of the embedded log's (issue 20)",
                                   f"{e['inserts/s (64 conns)']}/s = {ratio} of {base}/s", ratio >= want))
    print(table(list(logs.values())))
    print()
    if checks:
        print("| target | measured | |\n|---|---|---|")
        for name, figure, ok in checks:
            print(f"| {name} | {figure} | {mark(ok)} |")
        print()


def meta_note(d):
    """Which elections the figure waited for, when the victim also led JetStream's meta group."""
    if not d.get("victim_led_meta"):
        return ""
    led_stream = d.get("victim_led_stream", d["fault"].startswith("leader"))
    return " (stream + meta)" if led_stream else " (meta)"


def failover(lines):
    """The failover section, from scripts/failover_nats.py's lines (bench/failover-nats.jsonl)."""
    print("## Several nodes: failover (issue 20)\n")
    print("Measured by `scripts/failover_nats.py` (3 NATS servers, R3 stream, two broker nodes A")
    print("and B, an insert through A every 50 ms, one SSE subscriber on each node; one fault per")
    print("fresh cluster). NATS's elections: until the survivors name a new stream leader (and a new")
    print("JetStream meta leader, which creates consumers, when the victim was that too). Broker's")
    print("share is the rest of the longest wait. `meta-kill` kills JetStream's meta leader, whether")
    print("or not it also leads the stream. Most runs shared the 2-core machine with builds or tests.\n")
    rows = []
    for d in lines:
        election = d.get("election_s")
        rows.append({
            "commit": d.get("commit", "?"),
            "fault": d["fault"],
            "nats-server": d["nats"],
            "NATS's elections s": "—" if election is None else
            f"{election}{meta_note(d)}",
            "longest without an acked write s": d["writes_gap_s"],
            "refused": d["refused"],
            "silence A / B s": f"{d['silence_a_s']} / {d['silence_b_s']}",
        })
    print(table(rows))
    print()


def fanout_nodes(lines):
    """Fan-out across nodes, from scripts/bench_nats.sh's `fanout_nodes` lines."""
    rows = []
    for d in lines:
        if d["scenario"] != "fanout_nodes":
            continue
        for r in d["rows"]:
            rows.append({
                "commit": d.get("commit", "?"),
                "log": r["server"].removeprefix("broker "),
                "nodes": r["nodes"],
                "subscribers (per node)": f"{r['subscribers']} ({r['subscribers_per_node']})",
                "inserts/s": r["rate"],
                "delivered / expected": f"{r['delivered']} / {r['expected']}",
                "delivery p50 / p99 ms": f"{r['p50_ms']} / {r['p99_ms']}",
                "RSS per node MiB (max / mean)":
                f"{round(r['rss_mib_per_node_max'], 1)} / {round(r['rss_mib_per_node_mean'], 1)}",
                "runs": r.get("runs"),
            })
    if rows:
        print("## Several nodes: fan-out across nodes (issue 20)\n")
        print("The same subscribers on one node, then spread evenly over 3 nodes of one stream; the")
        print("publisher on the first node.\n")
        print(table(rows))
        print()


def main():
    scenarios = {}
    commits = {}
    with open(sys.argv[1]) as f:
        for line in f:
            line = line.strip()
            if line:
                d = json.loads(line)
                scenarios[d["scenario"]] = d["rows"]
                commits[d["scenario"]] = d.get("commit", "?")
    commit = sh("git", "rev-parse", "--short", "HEAD")
    # The results being written are not a change to what was measured.
    if sh("git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench"):
        commit += " (with uncommitted changes)"
    print("# Benchmark results\n")
    print(f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- Commit: {commit}")
    print(f"- Machine: {machine()}; the load generator shares it with the server.")
    print("- Method: `scripts/bench.sh` (release build, loopback, one TCP connection per client);")
    print("  every figure is the median of its runs (`runs` column); `of_ceiling` is the figure")
    print("  over the same load against `ceiling`, a minimal hyper server started in the same run.\n")
    print("## Targets (issue 7)\n")
    print("| target | measured | |\n|---|---|---|")
    for name, figure, ok in targets(scenarios):
        print(f"| {name} | {figure} | {mark(ok)} |")
    print()
    print("## Targets, round 2 (issues 17 and 18)\n")
    print("| target | measured | |\n|---|---|---|")
    for name, figure, ok in targets_round2(scenarios):
        print(f"| {name} | {figure} | {mark(ok)} |")
    print()
    if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
        with open(sys.argv[2]) as f:
            nats = [json.loads(line) for line in f if line.strip()]
        jetstream([d for d in nats if d["scenario"] in ("insert", "fanout")])
        fanout_nodes(nats)
    if len(sys.argv) > 3 and os.path.exists(sys.argv[3]):
        with open(sys.argv[3]) as f:
            failover([json.loads(line) for line in f if line.strip()])
    for name, rows in scenarios.items():
        print(f"## {name}\n")
        print(f"Measured at commit {commits[name]} (`+`: with uncommitted changes).\n")
        print(table(rows))
        print()


if __name__ == "__main__":
    main()
