#!/usr/bin/env python3
"""Failover of several broker nodes on one JetStream stream, measured (issue 20).

    scripts/failover_nats.py [--runs N] [--json OUT.jsonl] [--nats PATH] [--broker PATH]

A 3-server NATS cluster (R3 stream) on loopback ports and two broker nodes, A and B. A writer
inserts through node A every 50 ms (each request retried by the writer as a client would, on
any error); one SSE subscriber is on each node. Then one fault, each on a fresh cluster:

  leader-kill      `kill -9` of the NATS server leading the stream
  follower-kill    `kill -9` of a NATS server that does not lead it
  leader-stop      `SIGSTOP` of the leading server for 20 s, then `SIGCONT` (a stalled network)
  meta-kill        `kill -9` of JetStream's meta leader (which places new consumers), whether or
                   not it also leads the stream (opt in: `--faults meta-kill`)

and for each, from the fault on:

  election   when the surviving servers' monitoring (`/jsz`) first names another stream leader
             (for a fault of the leader) and, when the victim was also JetStream's meta leader
             (which creates consumers), another meta leader: NATS's own share
  writes     the longest time without an acknowledged insert (refused or waiting), and how many
             requests were refused (any answer but 200)
  silence A/B  the longest time without an event at the subscriber on node A / node B

Broker's share of a fault of the leader is `writes - election` (and `silence - election`).
Prints a Markdown table; `--json` appends one line per run. Needs python3 (stdlib only), the
broker binary (default target/release/broker, else target/debug/broker) and nats-server
(default: `$BROKER_NATS_SERVER`, the one scripts/test.sh installs, else the PATH's).
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = "failover-admin-token"
INTERVAL = 0.05


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline=30):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def find_nats(given):
    home = os.path.expanduser("~/.cache/broker/nats-server-2.12.8/bin/nats-server")
    for path in [given, os.environ.get("BROKER_NATS_SERVER"), home, shutil.which("nats-server")]:
        if path and os.access(path, os.X_OK):
            return path
    raise SystemExit("nats-server not found (scripts/test.sh installs one)")


def find_broker(given):
    for path in [given, f"{ROOT}/target/release/broker", f"{ROOT}/target/debug/broker"]:
        if path and os.access(path, os.X_OK):
            return path
    raise SystemExit("build broker first: cargo build --release --bins")


def post(base, path, body, token=None, timeout=15):
    data = json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="POST")
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except Exception:  # a refused or dropped connection, a timeout
        return 0, None


class Cluster:
    def __init__(self, nats, scratch):
        self.procs = []
        self.clients = [free_port() for _ in range(3)]
        self.monitors = [free_port() for _ in range(3)]
        routes = [free_port() for _ in range(3)]
        all_routes = ",".join(f"nats://127.0.0.1:{p}" for p in routes)
        for i in range(3):
            store = os.path.join(scratch, f"nats-{i}")
            os.makedirs(store)
            self.procs.append(subprocess.Popen(
                [nats, "-a", "127.0.0.1", "-p", str(self.clients[i]), "-m", str(self.monitors[i]),
                 "-n", f"n{i}", "--cluster_name", "failover",
                 "--cluster", f"nats://127.0.0.1:{routes[i]}", "--routes", all_routes,
                 "-js", "-sd", store],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.clients:
            wait_port(port)

    def urls(self):
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.clients)

    def leaders(self, stream, among=range(3)):
        """(the stream's leader, JetStream's meta leader) as the first of the servers `among`
        that answers reports them (server indexes, None when there is none)."""
        index = lambda name: int(name[1:]) if name and name.startswith("n") else None
        for i in among:
            try:
                url = f"http://127.0.0.1:{self.monitors[i]}/jsz?streams=true"
                with urllib.request.urlopen(url, timeout=0.5) as resp:
                    jsz = json.loads(resp.read())
            except Exception:
                continue
            meta = index((jsz.get("meta_cluster") or {}).get("leader"))
            for account in jsz.get("account_details") or []:
                for s in account.get("stream_detail") or []:
                    if s.get("name") == stream:
                        return index((s.get("cluster") or {}).get("leader")), meta
            return None, meta
        return None, None

    def stop(self):
        for p in self.procs:
            try:
                p.send_signal(signal.SIGCONT)
                p.kill()
            except ProcessLookupError:
                pass
            p.wait()


class Node:
    def __init__(self, broker, db, urls, stream):
        port = free_port()
        self.proc = subprocess.Popen(
            [broker, "--db", db, "--listen", "127.0.0.1", "--port", str(port), "--ntp", "false",
             "--admin_token", ADMIN, "--log", urls, "--log_stream", stream, "--log_replicas", "3"],
            stdout=subprocess.DEVNULL, stderr=open(db + ".log", "w"))
        self.base = f"http://127.0.0.1:{port}"
        wait_port(port, 60)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Subscriber(threading.Thread):
    """Reads a node's SSE stream and notes when each event arrives."""

    def __init__(self, base, jwt):
        super().__init__(daemon=True)
        self.base, self.jwt, self.arrivals, self.stopped = base, jwt, [], False

    def run(self):
        host, port = self.base.removeprefix("http://").split(":")
        last = None
        while not self.stopped:
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {"authorization": f"Bearer {self.jwt}"}
                if last:
                    headers["last-event-id"] = last
                conn.request("GET", "/sse", headers=headers)
                resp = conn.getresponse()
                for line in resp:
                    if self.stopped:
                        return
                    if line.startswith(b"id:"):
                        last = line[3:].strip().decode()
                        self.arrivals.append(time.monotonic())
            except Exception:
                time.sleep(0.1)


class Writer(threading.Thread):
    """Inserts through one node every INTERVAL; notes each acknowledged insert's time."""

    def __init__(self, base, jwt):
        super().__init__(daemon=True)
        self.base, self.jwt, self.acked, self.refused, self.stopped = base, jwt, [], [], False

    def run(self):
        i = 0
        while not self.stopped:
            started = time.monotonic()
            status, _ = post(self.base, "/insert", {"event": "tick", "data": {"i": i}}, self.jwt)
            now = time.monotonic()
            if status == 200:
                self.acked.append(now)
                i += 1
            else:
                self.refused.append((now, status))
            time.sleep(max(0.0, INTERVAL - (now - started)))


def longest_gap(times, since, until):
    """The longest time in [since, until] without an entry of `times`."""
    return gap_at(times, since, until)[0]


def gap_at(times, since, until):
    """That longest gap, and when it started (seconds after `since`)."""
    points = [since] + [t for t in times if since < t <= until] + [until]
    return max((b - a, a - since) for a, b in zip(points, points[1:]))


def run(fault, nats, broker, version):
    scratch = tempfile.mkdtemp(prefix="failover-")
    cluster = Cluster(nats, scratch)
    nodes = []
    try:
        stream = "failover"
        nodes = [Node(broker, os.path.join(scratch, n), cluster.urls(), stream) for n in "ab"]
        a, b = nodes
        status, _ = post(a.base, "/create_user", {"username": "w", "password": "pw",
                                                 "admin_token": ADMIN, "tenant_name": "t"})
        assert status == 200, status
        jwts = []
        for node in nodes:
            for _ in range(100):
                status, body = post(node.base, "/login", {"username": "w", "password": "pw"})
                if status == 200:
                    jwts.append(body["jwt"])
                    break
                time.sleep(0.05)
        subs = [Subscriber(n.base, j) for n, j in zip(nodes, jwts)]
        writer = Writer(a.base, jwts[0])
        for t in subs + [writer]:
            t.start()
        time.sleep(3)
        leader, meta = cluster.leaders(stream)
        assert leader is not None, "no stream leader"
        assert meta is not None or fault != "meta-kill", "no meta leader"
        victim = {"meta-kill": meta, "follower-kill": (leader + 1) % 3}.get(fault, leader)
        led_stream = victim == leader
        others = [i for i in range(3) if i != victim]
        t0 = time.monotonic()
        if fault.endswith("kill"):
            cluster.procs[victim].kill()
        else:
            cluster.procs[victim].send_signal(signal.SIGSTOP)
        elected = None
        end = t0 + (40 if fault == "leader-stop" else 25)
        resumed = False
        while time.monotonic() < end:
            if fault == "leader-stop" and not resumed and time.monotonic() - t0 >= 20:
                cluster.procs[victim].send_signal(signal.SIGCONT)
                resumed = True
            # A new consumer needs JetStream's meta leader too: when the victim was also that,
            # the election ends once both are elected again.
            if elected is None and (led_stream or meta == victim):
                now, now_meta = cluster.leaders(stream, others)
                stream_ok = now not in (None, victim) or not led_stream
                meta_ok = now_meta not in (None, victim)
                if stream_ok and meta_ok:
                    elected = time.monotonic() - t0
            time.sleep(0.05)
        writer.stopped = True
        for s in subs:
            s.stopped = True
        stop = time.monotonic()
        return {
            "fault": fault,
            "victim_led_meta": meta == victim,
            "victim_led_stream": led_stream,
            "nats": version,
            "election_s": None if elected is None else round(elected, 2),
            "writes_gap_s": round(longest_gap(writer.acked, t0, stop), 2),
            "refused": len([r for r in writer.refused if r[0] >= t0]),
            "silence_a_s": round(longest_gap(subs[0].arrivals, t0, stop), 2),
            "silence_b_s": round(longest_gap(subs[1].arrivals, t0, stop), 2),
            # When each longest gap began: a gap that begins at the fault is the failover's,
            # one that begins at the SIGCONT is the stalled server coming back.
            "gaps_begin_s": [round(gap_at(t, t0, stop)[1], 2)
                             for t in (writer.acked, subs[0].arrivals, subs[1].arrivals)],
        }
    finally:
        for n in nodes:
            n.stop()
        cluster.stop()
        if os.environ.get("FAILOVER_KEEP"):
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument("--nats")
    parser.add_argument("--broker")
    parser.add_argument("--faults", default="leader-kill,follower-kill,leader-stop")
    args = parser.parse_args()
    nats, broker = find_nats(args.nats), find_broker(args.broker)
    version = subprocess.run([nats, "--version"], capture_output=True, text=True).stdout.split()[-1]
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    print("| fault | nats-server | NATS's elections s | longest without an acked write s "
          "| refused requests | silence on A / B s |")
    print("|---|---|---|---|---|---|")
    for fault in args.faults.split(","):
        for _ in range(args.runs):
            row = run(fault, nats, broker, version)
            row["commit"] = commit
            election = row["election_s"]
            note = (" (stream + meta)" if row["victim_led_stream"] else " (meta)") if row["victim_led_meta"] else ""
            election = "—" if election is None else f"{election}{note}"
            print(f"| {fault} | {version} | {election} "
                  f"| {row['writes_gap_s']} | {row['refused']} | {row['silence_a_s']} / {row['silence_b_s']} |",
                  flush=True)
            if args.json:
                with open(args.json, "a") as out:
                    out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
