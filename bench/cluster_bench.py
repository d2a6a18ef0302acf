"""Cluster benchmark: 1, 2 or 3 Liaison nodes sharing one picture through NATS JetStream.

    python bench/cluster_bench.py --nodes 1
    python bench/cluster_bench.py --nodes 3 --groups 4 --clients 120 --rate 1 --duration 20

Starts ``--nodes`` ``liaison serve`` processes (plain TCP with ``<auth>`` sign-in, data in a fresh
temporary directory, one shared users file) on the NATS server ``--nats`` (a stream and subject
prefix made for this run, deleted after it). ``--clients`` clients are spread over the nodes
round robin; each client signs in as a user of one group (``--placement across``: every group
has clients on every node; ``local``: each group's clients are on one node), so it reads and
writes that group only. Every client sends its position report ``--rate`` times a second,
stamped with the send time; every arrival is counted and its latency taken (one clock).

Printed (and written with ``--json-out``):

- deliveries a second, and the expected count (each event reaches every other client of its
  group, on every node);
- latency p50/p99 from send to arrival, over every delivery;
- CPU seconds of all the nodes together per 1,000 deliveries (``/proc/PID/stat``);
- bus traffic: per node, the bus messages it received (``liaison_cluster_received_total`` plus
  ``liaison_cluster_dropped_total``, from each node's ``/metrics``), against what all-to-all
  fan-out would have sent it (every event published by the other nodes: TAK Server's cluster
  sends each message on one subject to every pod).

With ``--nodes 1`` there is no bus (a node without ``[cluster]``): the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
PASSWORD = "cluster-bench-pw"
# Seconds a node has to start listening; to stop after SIGTERM.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
# Seconds after the last send during which arrivals still count.
DRAIN_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cot(uid: str, sent_ns: int) -> bytes:
    t = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    stale = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 600))
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-G-U-C" how="m-g" time="{t}" start="{t}"'
        f' stale="{stale}"><point lat="50.45" lon="30.52" hae="0" ce="9" le="9"/>'
        f'<detail><contact callsign="{uid}" endpoint="*:-1:stcp"/>'
        f"<remarks>sent={sent_ns}</remarks></detail></event>"
    ).encode()


class Node:
    def __init__(self, index: int, root: Path, users: Path, args: argparse.Namespace) -> None:
        self.index = index
        self.data = root / f"node{index}"
        self.data.mkdir()
        self.tcp, self.enroll = free_port(), free_port()
        config = self.data / "liaison.toml"
        lines = [
            "[auth]",
            "tcp = true",
            f'users_file = "{users}"',
        ]
        if args.nodes > 1:
            lines += [
                "[cluster]",
                f'nats = ["{args.nats}"]',
                f'node = "bench{index}"',
                f'prefix = "{args.prefix}"',
                f'stream = "{args.stream}"',
            ]
        config.write_text("\n".join(lines) + "\n")
        argv = [
            str(REPO_DIR / ".venv" / "bin" / "liaison"),
            "serve",
            "--config",
            str(config),
            "--data-dir",
            str(self.data),
            "--tcp",
            f"{HOST}:{self.tcp}",
            "--tls",
            "off",
            "--udp",
            "off",
            "--https",
            "off",
            "--enroll",
            f"{HOST}:{self.enroll}",
            "--public-host",
            "localhost",
        ]
        self.log = (self.data / "server.log").open("wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"node {self.index} exited: see {self.data / 'server.log'}")
            try:
                with socket.create_connection((HOST, self.tcp), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"node {self.index} did not listen within {START_TIMEOUT_S} s")

    def metric(self, name: str, user: str) -> float:
        """Sum of the samples of ``name`` on this node's /metrics (enroll listener, Basic)."""
        ctx = ssl.create_default_context(cafile=str(self.data / "pki" / "ca.pem"))
        ctx.check_hostname = False
        req = urllib.request.Request(f"https://{HOST}:{self.enroll}/metrics")
        token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


class Stats:
    def __init__(self) -> None:
        self.latencies_us: list[int] = []
        self.sent = 0


def group_of(index: int, args: argparse.Namespace) -> int:
    """The group of client ``index``, which is on node ``index mod nodes``. ``across``: every
    group has clients on every node; ``local``: a group's clients are all on one node."""
    if args.placement == "local":
        return (index % args.nodes) + args.nodes * ((index // args.nodes) % args.per_node_groups)
    return (index // args.nodes) % args.groups


async def client(
    index: int,
    node: Node,
    args: argparse.Namespace,
    stats: Stats,
    ready: asyncio.Queue[int],
    go: asyncio.Future[tuple[float, float]],
) -> None:
    reader, writer = await asyncio.open_connection(HOST, node.tcp)
    writer.write(f'<auth><cot username="u{index}" password="{PASSWORD}"/></auth>'.encode())
    uid = f"bench-{index}"
    # Signed in once the session speaks (its protocol offer comes after the password check).
    tail = await asyncio.wait_for(reader.read(65536), START_TIMEOUT_S)
    ready.put_nowait(index)
    start, stop_at = await go

    async def read() -> None:
        nonlocal tail
        while True:
            data = await reader.read(65536)
            if not data:
                return
            now = time.time_ns()
            chunk = tail + data
            parts = chunk.split(b"<remarks>sent=")
            for p in parts[1:]:
                end = p.find(b"<")
                if end > 0:
                    stats.latencies_us.append((now - int(p[:end])) // 1000)
            tail = b"<remarks>sent=" + parts[-1] if parts[-1].find(b"<") < 0 else b""

    tail = b""
    reading = asyncio.create_task(read())
    loop = asyncio.get_running_loop()
    # The first sends spread over one period so the load is even.
    await asyncio.sleep(max(0.0, start - loop.time()) + (index % 100) / 100 / args.rate)
    try:
        while loop.time() < stop_at:
            writer.write(cot(uid, time.time_ns()))
            stats.sent += 1
            await asyncio.sleep(1 / args.rate)
        await asyncio.sleep(DRAIN_S)
    finally:
        reading.cancel()
        writer.close()


async def drive(nodes: list[Node], args: argparse.Namespace) -> tuple[Stats, float]:
    """Run the clients; the nodes' CPU seconds from the first send to the end of the drain."""
    stats = Stats()
    loop = asyncio.get_running_loop()
    ready: asyncio.Queue[int] = asyncio.Queue()
    go: asyncio.Future[tuple[float, float]] = loop.create_future()
    tasks = [
        asyncio.create_task(client(i, nodes[i % len(nodes)], args, stats, ready, go))
        for i in range(args.clients)
    ]
    for _ in range(args.clients):  # every client signed in (scrypt) before the first send
        await asyncio.wait_for(ready.get(), START_TIMEOUT_S)
    await asyncio.sleep(args.warmup)  # the nodes subscribe to their clients' groups
    start = loop.time()
    go.set_result((start, start + args.duration))
    cpu0 = sum(cpu_seconds(n.proc.pid) for n in nodes)
    await asyncio.gather(*tasks)
    return stats, sum(cpu_seconds(n.proc.pid) for n in nodes) - cpu0


def percentile(values: Sequence[int], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(REPO_DIR / "src"))
    from liaison.identity.users import UserDirectory

    with tempfile.TemporaryDirectory(prefix="liaison-cluster-bench-") as tmp:
        root = Path(tmp)
        users_path = root / "users.json"
        users = UserDirectory.load(users_path)
        for i in range(args.clients):
            group = f"g{group_of(i, args)}"
            users.add_user(f"u{i}", "BENCH", groups=[group], password=PASSWORD)
        # It reads each node's /metrics: an operator (roles.operator_group's default).
        users.add_user("observer", "BENCH", groups=["liaison-operators"], password=PASSWORD)
        nodes = [Node(i, root, users_path, args) for i in range(args.nodes)]
        try:
            for n in nodes:
                n.wait_ready()
            stats, cpu = asyncio.run(drive(nodes, args))
            seconds = args.duration
            bus: list[dict[str, float]] = []
            if args.nodes > 1:
                published = [n.metric("liaison_cluster_published_total", "observer") for n in nodes]
                for i, n in enumerate(nodes):
                    received = n.metric("liaison_cluster_received_total", "observer")
                    dropped = n.metric("liaison_cluster_dropped_total", "observer")
                    # All-to-all (one subject, every node subscribed): every event, its own too.
                    bus.append(
                        {
                            "node": i,
                            "published": published[i],
                            "bus_messages_in": received + dropped,
                            "all_to_all_would_be": sum(published),
                        }
                    )
        except BaseException:
            for n in nodes:
                log = (n.data / "server.log").read_text(errors="replace")
                print(f"# node {n.index} (exit {n.proc.poll()}):\n{log[-2000:]}", file=sys.stderr)
            raise
        finally:
            for n in nodes:
                n.stop()
            if args.nodes > 1:
                asyncio.run(delete_stream(args))
    per_group = [
        sum(1 for i in range(args.clients) if group_of(i, args) == g) for g in range(args.groups)
    ]
    expected = sum(k * (k - 1) for k in per_group) * args.rate * seconds
    deliveries = len(stats.latencies_us)
    return {
        "nodes": args.nodes,
        "clients": args.clients,
        "groups": args.groups,
        "placement": args.placement,
        "rate": args.rate,
        "duration_s": seconds,
        "sent": stats.sent,
        "deliveries": deliveries,
        "deliveries_expected_about": round(expected),
        "deliveries_per_s": round(deliveries / seconds, 1),
        "latency_p50_ms": round(percentile(stats.latencies_us, 0.50) / 1000, 2),
        "latency_p99_ms": round(percentile(stats.latencies_us, 0.99) / 1000, 2),
        "cpu_s_all_nodes": round(cpu, 2),
        "cpu_ms_per_1000_deliveries": round(1000 * 1000 * cpu / max(deliveries, 1), 1),
        "bus": bus,
        "load_average": os.getloadavg(),
    }


async def delete_stream(args: argparse.Namespace) -> None:
    import nats

    nc = await nats.connect(args.nats)
    try:
        await nc.jetstream().delete_stream(args.stream)
    except Exception as exc:  # the run is over: report, do not hide the results
        print(f"# could not delete stream {args.stream}: {exc!r}", file=sys.stderr)
    finally:
        await nc.close()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=3, choices=(1, 2, 3))
    p.add_argument("--groups", type=int, default=4)
    p.add_argument(
        "--placement",
        choices=("across", "local"),
        default="across",
        help="across: each group on every node; local: each group on one node",
    )
    p.add_argument("--clients", type=int, default=120)
    p.add_argument("--rate", type=float, default=1.0, help="reports a second per client")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=1.0, help="seconds between sign-in and load")
    p.add_argument("--nats", default=os.environ.get("LIAISON_TEST_NATS", "nats://127.0.0.1:4222"))
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    if args.placement == "local":
        if args.groups % args.nodes:
            p.error("--placement local needs --groups to be a multiple of --nodes")
        args.per_node_groups = args.groups // args.nodes
    tag = secrets.token_hex(4)
    args.prefix, args.stream = f"bench{tag}", f"LIAISON_BENCH_{tag}"
    result = run(args)
    print(json.dumps(result, indent=2))
    cmd = " ".join(["python", "bench/cluster_bench.py", *(argv or sys.argv[1:])])
    print(f"# reproduce: {cmd}")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
