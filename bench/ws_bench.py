"""WebSocket feed benchmark: S subscribers of /api/v1/stream while U units report R times a second.

    python bench/ws_bench.py                        # 100 subscribers, 1,000 units, 1/s, 20 s
    python bench/ws_bench.py --subscribers 10 --units 100 --duration 10

Three kinds of process, so that none measures through another's event loop:

- the **server** (started here unless --tcp-port/--http-port/--server-pid name a running one):
  ``liaison serve`` with a plain TCP CoT listener and the anonymous plain HTTP listener;
- one **sender**: U simulated units spread over C plain-TCP CoT connections
  (``--unit-connections``). Each unit registers with one SA, then sends an ATAK-style SA with a
  moving position every 1/R s, phases spread at random (``--seed``). The SA is bench/loadgen.py's,
  with the send time (``time.time_ns``) in its ``<remarks>``;
- ``--readers`` **reader** processes sharing the S subscribers: raw sockets speaking RFC 6455
  themselves (bench/wsclient.py), one epoll loop each. Each message's send time is found by a bytes
  search for the remarks marker; a small sample of messages is JSON-parsed to check the shape.

Every process uses the same host clock (``time.time_ns``), so latency is the reader's receive time
minus the unit's send time. A delivery counts when its *send* time is inside the window, so events
in flight at the edges are neither lost nor counted twice; ``expected`` is the events sent in the
window times the subscribers connected. After the window, everyone waits ``--drain`` seconds.

Why not 1,000 connections for 1,000 units by default: every stream client also receives every
other client's events (implicit broadcast), so 1,000 TCP units would ask the server for 999,000
TCP deliveries a second on top of the feed, which is the streaming benchmark's subject (and beyond
two cores), not this one's. ``--unit-connections 1000`` does it anyway.

The last lines printed are a table, one line of JSON and the command that reproduces the run.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import dataclasses
import datetime as dt
import importlib.util
import json
import math
import os
import random
import resource
import select
import selectors
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent


def _sibling(name: str) -> ModuleType:
    """Load bench/<name>.py (bench/ is a folder of scripts, not a package), once per process."""
    module_name = f"liaison_bench_{name}"
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, BENCH_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


loadgen = _sibling("loadgen")  # the SA template and the /proc CPU and memory readers
run_compare = _sibling("run_compare")  # free_port, wait_for_port, stop
wsclient = _sibling("wsclient")

HOST = "127.0.0.1"
STREAM_PATH = "/api/v1/stream"

# How the server is started when no running one is named. Placeholders: {repo} {data_dir} {host}
# {tcp_port} {http_port}. Run without a shell, so that the PID measured is the server's own.
DEFAULT_SERVER_CMD = (
    "{repo}/.venv/bin/liaison serve --data-dir {data_dir} --tcp {host}:{tcp_port}"
    " --http {host}:{http_port} --tls off --udp off --https off --enroll off"
)

# The goal of issue 6 ("Speed"): p99 delivery latency at 100 subscribers x 1,000 units x 1/s.
GOAL_P99_MS = 250.0

# The send time sits at the end of bench/loadgen.py's remarks marker, lbq/<unit>/<seq>/<ns>; in
# the feed's JSON it is followed by the closing quote of "remarks".
MARKER = loadgen.MARKER_PREFIX
QUOTE = b'"'

# One read takes at most this much; a snapshot of 1,000 units (~700 KB) takes a few reads.
RECV_BYTES = 256 * 1024
# Latency samples a reader keeps; past this every k-th in-window delivery is kept (k decided in
# advance from what it expects), so memory and sorting stay small.
MAX_SAMPLES_PER_READER = 500_000
# Messages JSON-parsed to check the feed's shape: the first few of each reader, then every n-th.
VALIDATE_FIRST = 20
VALIDATE_EVERY = 5_000

# Seconds allowed for: a connection or handshake; the sender to register its units; a reader to
# open all its feeds and get their snapshots; a worker to wait for "go" before giving up.
CONNECT_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 120.0
GO_TIMEOUT_S = 300.0
# Seconds between "go" and the window's start, so every worker has read "go" before it opens.
GO_LEAD_S = 0.3
# Margin on top of the window and drain before a worker is considered hung.
RESULT_MARGIN_S = 60.0
# Longest select() wait in a worker loop, so deadlines are checked often.
POLL_S = 0.05
# Bytes a unit connection may have waiting to be written before the sender counts it as stalled.
MAX_UNSENT_BYTES = 8 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BenchConfig:
    """What one run does; ports and PID are those of a running server, or None to start one."""

    host: str = HOST
    tcp_port: int | None = None
    http_port: int | None = None
    server_pid: int | None = None
    subscribers: int = 100
    units: int = 1000
    rate: float = 1.0
    duration: float = 20.0
    warmup: float = 2.0
    drain: float = 3.0
    readers: int = 2
    unit_connections: int = 10
    seed: int = 1
    server_cmd: str = DEFAULT_SERVER_CMD

    def command(self) -> str:
        """The command line that reproduces this run."""
        args = [
            ".venv/bin/python",
            "bench/ws_bench.py",
            "--subscribers",
            str(self.subscribers),
            "--units",
            str(self.units),
            "--rate",
            f"{self.rate:g}",
            "--duration",
            f"{self.duration:g}",
            "--warmup",
            f"{self.warmup:g}",
            "--drain",
            f"{self.drain:g}",
            "--readers",
            str(self.readers),
            "--unit-connections",
            str(self.unit_connections),
            "--seed",
            str(self.seed),
        ]
        if self.tcp_port is not None:
            args += ["--host", self.host, "--tcp-port", str(self.tcp_port)]
            args += ["--http-port", str(self.http_port), "--server-pid", str(self.server_pid)]
        elif self.server_cmd != DEFAULT_SERVER_CMD:
            args += ["--server-cmd", self.server_cmd]
        return shlex.join(args)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WsReport:
    """What one run measured. Times in ms, CPU in seconds, percent of one core or us."""

    subscribers: int
    connected: int
    readers: int
    units: int
    unit_connections: int
    rate: float
    duration_s: float
    measured_s: float
    sent: int
    expected: int
    received: int
    loss: float
    delivered_per_s: float
    messages_seen: int  # benchmark messages read at all, in the window or not
    other_messages: int  # feed messages without a marker (none expected)
    validated: int  # messages whose JSON was parsed and checked
    invalid: int  # of those, how many had the wrong shape (must be 0)
    disconnects: int  # feeds the server closed or lost during the run
    pings: int
    snapshot_features_min: int
    latency_samples: int
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    send_lag_p99_ms: float | None
    server_pid: int | None
    server_cpu_s: float | None
    server_cpu_pct: float | None
    server_cpu_us_per_message: float | None
    server_peak_rss_mb: float | None
    server_rss_mb: float | None
    sender_cpu_pct: float
    reader_cpu_pct: list[float]
    loadavg_before: list[float]
    goal_p99_met: bool | None
    command: str

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def send_time_ns(payload: bytes) -> int | None:
    """The unit's send time from a feed message, by byte search: no JSON parse."""
    i = payload.find(MARKER)
    if i < 0:
        return None
    j = payload.find(QUOTE, i)
    k = payload.rfind(b"/", i, j)
    if j < 0 or k < 0:
        return None
    return int(payload[k + 1 : j])


def check_update(payload: bytes, sent_ns: int) -> bool:
    """Whether a feed message is an update Feature of a benchmark unit carrying ``sent_ns``."""
    try:
        message = json.loads(payload)
        feature = message["feature"]
        props = feature["properties"]
        remarks = props["remarks"]
        return (
            message["kind"] == "update"
            and feature["type"] == "Feature"
            and feature["geometry"]["type"] == "Point"
            and str(props["uid"]).startswith("BENCH-")
            and isinstance(remarks, str)
            and remarks.startswith(MARKER.decode())
            and int(remarks.rsplit("/", 1)[1]) == sent_ns
        )
    except (ValueError, KeyError, TypeError, IndexError):
        return False


# --- the worker processes ------------------------------------------------------------------


class _Control:
    """A worker's side of the parent's pipe: "go <start_ns> <end_ns>" arrives on stdin."""

    def __init__(self) -> None:
        self.buffer = b""
        self.window: tuple[int, int] | None = None
        self.eof = False

    def on_readable(self) -> None:
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            self.eof = True
            return
        self.buffer += chunk
        if b"\n" in self.buffer:
            line = self.buffer.split(b"\n", 1)[0].split()
            if len(line) == 3 and line[0] == b"go":
                self.window = (int(line[1]), int(line[2]))


def _say(tag: str, fields: dict[str, Any]) -> None:
    sys.stdout.write(f"{tag} {json.dumps(fields, separators=(',', ':'))}\n")
    sys.stdout.flush()


class _Feed:
    """One subscriber's socket and protocol state in a reader process."""

    __slots__ = ("conn", "open", "sock")

    def __init__(self, sock: socket.socket, conn: Any) -> None:
        self.sock = sock
        self.conn = conn
        self.open = True


def open_feed(host: str, port: int, path: str, timeout: float) -> tuple[socket.socket, Any, bytes]:
    """Connect, upgrade, and wait for the first message (the snapshot). Returns the socket, its
    ClientConnection and the snapshot's payload. Blocking, bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = wsclient.make_key()
        sock.sendall(wsclient.handshake_request(host, port, path, key))
        data = b""
        parts = None
        while parts is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no handshake response")
            chunk = sock.recv(RECV_BYTES)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
            parts = wsclient.split_head(data)
        head, rest = parts
        wsclient.check_handshake(head, key)
        conn = wsclient.ClientConnection()
        messages = conn.receive(rest)
        while not messages:
            if conn.closed or time.monotonic() > deadline:
                raise ConnectionError("no snapshot")
            chunk = sock.recv(RECV_BYTES)
            if not chunk:
                raise ConnectionError("closed before the snapshot")
            messages = conn.receive(chunk)
        # Anything after the snapshot was sent before the window: not counted.
        return sock, conn, messages[0][1]
    except BaseException:
        sock.close()
        raise


def run_reader(cfg: dict[str, Any]) -> int:
    """A reader process: open cfg["sockets"] feeds, report ready, count and time until the end."""
    host, port, count = cfg["host"], cfg["http_port"], cfg["sockets"]
    feeds: list[_Feed] = []
    snapshot_min = -1
    for index in range(count):
        sock, conn, snapshot = open_feed(host, port, STREAM_PATH, CONNECT_TIMEOUT_S)
        if b'"snapshot"' not in snapshot[:64]:
            raise wsclient.ProtocolError("the first message is not the snapshot")
        if index == 0:
            snapshot_min = len(json.loads(snapshot)["features"])
        feeds.append(_Feed(sock, conn))
    control = _Control()
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
    for feed in feeds:
        feed.sock.setblocking(False)
        sel.register(feed.sock, selectors.EVENT_READ, feed)
    _say("ready", {"sockets": len(feeds), "snapshot_features": snapshot_min})

    buffer = bytearray(RECV_BYTES)
    view = memoryview(buffer)
    latencies = array.array("q")
    stride = max(1, math.ceil(cfg["expected"] / MAX_SAMPLES_PER_READER))
    start_ns = end_ns = 1 << 62  # nothing counts until "go"
    stop_at = time.monotonic() + GO_TIMEOUT_S
    cpu_before = 0.0
    received = seen = other = validated = invalid = disconnects = 0
    measuring = False
    # Each pass waits at most POLL_S and the loop ends at stop_at, so this is bounded in time.
    while time.monotonic() < stop_at:
        for key, _ in sel.select(POLL_S):
            feed = key.data
            if feed is None:
                control.on_readable()
                if control.eof and control.window is None:
                    return 2  # the parent gave up before the run
                if control.window is not None and not measuring:
                    measuring = True
                    start_ns, end_ns = control.window
                    cpu_before = _own_cpu_seconds()
                    drain_s = (end_ns - time.time_ns()) / 1e9 + cfg["drain"]
                    stop_at = time.monotonic() + drain_s
                    sel.unregister(sys.stdin.fileno())
                continue
            try:
                n = feed.sock.recv_into(buffer)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            now = time.time_ns()
            conn = feed.conn
            messages = conn.receive(view[:n]) if n else []
            out = conn.data_to_send()
            if out:
                with contextlib.suppress(OSError):
                    feed.sock.send(out)
            for _opcode, payload in messages:
                sent = send_time_ns(payload)
                if sent is None:
                    other += 1
                    continue
                seen += 1
                if start_ns <= sent < end_ns:
                    received += 1
                    if received % stride == 0:
                        latencies.append(now - sent)
                if seen <= VALIDATE_FIRST or seen % VALIDATE_EVERY == 0:
                    validated += 1
                    if not check_update(payload, sent):
                        invalid += 1
            if n == 0 or conn.closed:
                if measuring:
                    disconnects += 1
                feed.open = False
                sel.unregister(feed.sock)
                feed.sock.close()
    cpu = _own_cpu_seconds() - cpu_before
    pings = sum(feed.conn.pings for feed in feeds)
    for feed in feeds:
        if feed.open:
            feed.conn.close()
            with contextlib.suppress(OSError):
                feed.sock.send(feed.conn.data_to_send())
            feed.sock.close()
    with open(cfg["latency_file"], "wb") as out_file:
        latencies.tofile(out_file)
    _say(
        "result",
        {
            "received": received,
            "seen": seen,
            "other": other,
            "validated": validated,
            "invalid": invalid,
            "disconnects": disconnects,
            "pings": pings,
            "samples": len(latencies),
            "cpu_s": cpu,
        },
    )
    return 0


class _Unit:
    """One plain-TCP CoT connection of the sender and what waits to be written on it."""

    __slots__ = ("sock", "unsent")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.unsent = bytearray()

    def flush(self) -> None:
        if self.unsent:
            try:
                n = self.sock.send(self.unsent)
            except BlockingIOError:
                return
            del self.unsent[:n]


def run_sender(cfg: dict[str, Any]) -> int:
    """The sender process: cfg["units"] units over cfg["connections"] TCP connections."""
    host, port = cfg["host"], cfg["tcp_port"]
    units, rate = cfg["units"], cfg["rate"]
    conns = [
        _Unit(socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S))
        for _ in range(cfg["connections"])
    ]
    sel = selectors.DefaultSelector()
    for conn in conns:
        conn.sock.setblocking(False)
        sel.register(conn.sock, selectors.EVENT_READ, conn)
    scratch = bytearray(RECV_BYTES)
    received_bytes = 0
    seq = [0] * units

    def queue(unit: int, sent_ns: int) -> None:
        event = loadgen.build_event(unit, seq[unit], sent_ns, dt.datetime.now(dt.UTC))
        seq[unit] += 1
        conns[unit % len(conns)].unsent += event

    # Register every unit (one SA each, before the window: never counted).
    for unit in range(units):
        queue(unit, time.time_ns())
    control = _Control()
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
    ready_said = False

    period_ns = int(1e9 / rate)
    rng = random.Random(cfg["seed"])
    phases = [rng.randrange(period_ns) for _ in range(units)]
    order = sorted(range(units), key=phases.__getitem__)
    lags = array.array("q")
    sent = stalled = 0
    start_ns = end_ns = 1 << 62
    cycle = slot = 0
    sending = False
    stop_at = time.monotonic() + GO_TIMEOUT_S
    cpu_before = 0.0
    # Each pass waits at most POLL_S and the loop ends at stop_at, so this is bounded in time.
    while time.monotonic() < stop_at:
        now = time.time_ns()
        next_due: int | None = None
        while sending:
            unit = order[slot]
            due = start_ns + cycle * period_ns + phases[unit]
            if due >= end_ns:
                sending = False
                break
            if due > now:
                next_due = due
                break
            stamp = time.time_ns()
            if stamp >= end_ns:
                sending = False
                break
            lags.append(stamp - due)
            queue(unit, stamp)
            sent += 1
            slot += 1
            if slot == units:
                slot = 0
                cycle += 1
        for conn in conns:
            conn.flush()
            if len(conn.unsent) > MAX_UNSENT_BYTES:
                stalled += 1
                conn.unsent.clear()
        if not ready_said and not any(conn.unsent for conn in conns):
            _say("ready", {"connections": len(conns), "units": units})
            ready_said = True
        wait = POLL_S
        if next_due is not None:
            wait = min(wait, max(0.0, (next_due - time.time_ns()) / 1e9))
        if any(conn.unsent for conn in conns):
            wait = 0.001
        for key, _ in sel.select(wait):
            conn = key.data
            if conn is None:
                control.on_readable()
                if control.eof and control.window is None:
                    return 2
                if control.window is not None and not sending and start_ns == 1 << 62:
                    start_ns, end_ns = control.window
                    sending = True
                    cpu_before = _own_cpu_seconds()
                    stop_at = time.monotonic() + (end_ns - time.time_ns()) / 1e9 + cfg["drain"]
                    sel.unregister(sys.stdin.fileno())
                continue
            # What the server sends the units (the other connections' events): read, discard.
            try:
                n = conn.sock.recv_into(scratch)
            except BlockingIOError:
                continue
            if n == 0:
                raise ConnectionError("the server closed a unit connection")
            received_bytes += n
    cpu = _own_cpu_seconds() - cpu_before
    for conn in conns:
        conn.sock.close()
    ordered = sorted(lags)
    _say(
        "result",
        {
            "sent": sent,
            "stalled": stalled,
            "received_bytes": received_bytes,
            "send_lag_p99_ns": loadgen.percentile(ordered, 0.99) if ordered else None,
            "cpu_s": cpu,
        },
    )
    return 0


# --- the parent ----------------------------------------------------------------------------


class _Worker:
    """A worker process and the lines it prints ("ready {...}", "result {...}")."""

    def __init__(self, name: str, cfg: dict[str, Any]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "worker", json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.pending = b""

    def line(self, tag: str, deadline: float) -> dict[str, Any]:
        """The fields of the next line tagged ``tag``, waiting until ``deadline`` (monotonic)."""
        stdout = self.proc.stdout
        assert stdout is not None
        # Each pass reads what arrived or times out; the deadline bounds the loop.
        while True:
            head, sep, rest = self.pending.partition(b"\n")
            if sep:
                self.pending = rest
                word, _, fields = head.decode().partition(" ")
                if word == tag:
                    parsed: dict[str, Any] = json.loads(fields)
                    return parsed
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {tag!r} line in time")
            readable, _, _ = select.select([stdout], [], [], min(remaining, 1.0))
            if readable:
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited with code {self.proc.wait()}")
                self.pending += chunk

    def go(self, start_ns: int, end_ns: int) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(f"go {start_ns} {end_ns}\n".encode())
        stdin.flush()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _start_server(config: BenchConfig, data_dir: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    tcp_port, http_port = run_compare.free_port(), run_compare.free_port()
    argv = shlex.split(
        config.server_cmd.format(
            repo=REPO_DIR,
            data_dir=data_dir,
            host=config.host,
            tcp_port=tcp_port,
            http_port=http_port,
        )
    )
    log = (data_dir / "server.log").open("wb")
    proc = subprocess.Popen(argv, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        run_compare.wait_for_port(config.host, tcp_port, proc, run_compare.START_TIMEOUT_S)
        run_compare.wait_for_port(config.host, http_port, proc, run_compare.START_TIMEOUT_S)
    except RuntimeError:
        run_compare.stop(proc)
        raise
    return proc, tcp_port, http_port


def run(config: BenchConfig) -> WsReport:
    """Start the server if needed, run the sender and the readers, and report."""
    if config.subscribers < 1 or config.units < 1 or config.readers < 1:
        raise ValueError("need at least one subscriber, one unit and one reader")
    if config.rate <= 0 or config.duration <= 0:
        raise ValueError("rate and duration must be positive")
    with tempfile.TemporaryDirectory(prefix="ws-bench-") as tmp:
        work = Path(tmp)
        server: subprocess.Popen[bytes] | None = None
        if config.tcp_port is None or config.http_port is None:
            data_dir = work / "server"
            data_dir.mkdir()
            server, tcp_port, http_port = _start_server(config, data_dir)
            pid: int | None = server.pid
        else:
            tcp_port, http_port, pid = config.tcp_port, config.http_port, config.server_pid
        try:
            return _measure(config, work, tcp_port, http_port, pid)
        except BaseException:
            if server is not None:
                log = (work / "server" / "server.log").read_text(errors="replace")
                print("\n".join(log.splitlines()[-20:]), file=sys.stderr)
            raise
        finally:
            if server is not None:
                run_compare.stop(server)


def _measure(
    config: BenchConfig, work: Path, tcp_port: int, http_port: int, pid: int | None
) -> WsReport:
    loadavg = [round(x, 2) for x in os.getloadavg()]
    workers: list[_Worker] = []
    try:
        sender = _Worker(
            "sender",
            {
                "role": "sender",
                "host": config.host,
                "tcp_port": tcp_port,
                "units": config.units,
                "connections": min(config.unit_connections, config.units),
                "rate": config.rate,
                "seed": config.seed,
                "drain": config.drain,
            },
        )
        workers.append(sender)
        sender.line("ready", time.monotonic() + READY_TIMEOUT_S)
        time.sleep(config.warmup)  # the units' first reports reach the picture
        shares = [config.subscribers // config.readers] * config.readers
        for i in range(config.subscribers % config.readers):
            shares[i] += 1
        readers: list[_Worker] = []
        expected_each = config.units * config.rate * config.duration
        for i, share in enumerate(s for s in shares if s):
            readers.append(
                _Worker(
                    f"reader {i}",
                    {
                        "role": "reader",
                        "host": config.host,
                        "http_port": http_port,
                        "sockets": share,
                        "expected": expected_each * share,
                        "drain": config.drain,
                        "latency_file": str(work / f"latency-{i}.bin"),
                    },
                )
            )
        workers += readers
        ready = [r.line("ready", time.monotonic() + READY_TIMEOUT_S) for r in readers]
        connected = sum(r["sockets"] for r in ready)

        cpu_before = loadgen.read_cpu_seconds(pid) if pid else None
        start_ns = time.time_ns() + int(GO_LEAD_S * 1e9)
        end_ns = start_ns + int(config.duration * 1e9)
        for worker in workers:
            worker.go(start_ns, end_ns)
        deadline = time.monotonic() + GO_LEAD_S + config.duration + config.drain + RESULT_MARGIN_S
        results = {w.name: w.line("result", deadline) for w in workers}
        measured_s = (time.time_ns() - start_ns) / 1e9
        server_cpu = peak_rss = rss = None
        if pid and cpu_before is not None:
            server_cpu = loadgen.read_cpu_seconds(pid) - cpu_before
            hwm_kb, rss_kb = loadgen.read_memory_kb(pid)
            peak_rss, rss = hwm_kb / 1024, rss_kb / 1024
    finally:
        for worker in workers:
            worker.stop()

    latencies = array.array("q")
    for i in range(len(readers)):
        with open(work / f"latency-{i}.bin", "rb") as handle:
            latencies.frombytes(handle.read())
    ordered = sorted(latencies)
    reader_results = [results[r.name] for r in readers]
    sent_result = results["sender"]
    received = sum(r["received"] for r in reader_results)
    expected = sent_result["sent"] * connected
    p99 = _ms(loadgen.percentile(ordered, 0.99)) if ordered else None
    lag = sent_result["send_lag_p99_ns"]
    return WsReport(
        subscribers=config.subscribers,
        connected=connected,
        readers=len(readers),
        units=config.units,
        unit_connections=min(config.unit_connections, config.units),
        rate=config.rate,
        duration_s=config.duration,
        measured_s=round(measured_s, 3),
        sent=sent_result["sent"],
        expected=expected,
        received=received,
        loss=round(1 - received / expected, 6) if expected else 0.0,
        delivered_per_s=round(received / config.duration, 1),
        messages_seen=sum(r["seen"] for r in reader_results),
        other_messages=sum(r["other"] for r in reader_results),
        validated=sum(r["validated"] for r in reader_results),
        invalid=sum(r["invalid"] for r in reader_results),
        disconnects=sum(r["disconnects"] for r in reader_results),
        pings=sum(r["pings"] for r in reader_results),
        snapshot_features_min=min(r["snapshot_features"] for r in ready),
        latency_samples=len(ordered),
        latency_p50_ms=_ms(loadgen.percentile(ordered, 0.50)) if ordered else None,
        latency_p90_ms=_ms(loadgen.percentile(ordered, 0.90)) if ordered else None,
        latency_p99_ms=p99,
        latency_max_ms=_ms(ordered[-1]) if ordered else None,
        send_lag_p99_ms=_ms(lag) if lag is not None else None,
        server_pid=pid,
        server_cpu_s=round(server_cpu, 3) if server_cpu is not None else None,
        server_cpu_pct=(
            round(100 * server_cpu / measured_s, 1) if server_cpu is not None else None
        ),
        server_cpu_us_per_message=(
            round(server_cpu * 1e6 / received, 2) if server_cpu is not None and received else None
        ),
        server_peak_rss_mb=round(peak_rss, 1) if peak_rss is not None else None,
        server_rss_mb=round(rss, 1) if rss is not None else None,
        sender_cpu_pct=round(100 * sent_result["cpu_s"] / measured_s, 1),
        reader_cpu_pct=[round(100 * r["cpu_s"] / measured_s, 1) for r in reader_results],
        loadavg_before=loadavg,
        goal_p99_met=(p99 < GOAL_P99_MS) if p99 is not None else None,
        command=config.command(),
    )


def _ms(value_ns: int) -> float:
    return round(value_ns / 1e6, 3)


def _show(value: float | int | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:g}{suffix}"


def format_report(report: WsReport) -> str:
    """A small human table of one report."""
    rows = [
        ("subscribers (connected)", f"{report.subscribers} ({report.connected})"),
        ("units (TCP connections)", f"{report.units} ({report.unit_connections})"),
        ("rate per unit", f"{report.rate:g} reports/s"),
        ("window / measured", f"{report.duration_s:g} s / {report.measured_s:g} s"),
        ("reports sent in window", f"{report.sent}"),
        ("messages expected / received", f"{report.expected} / {report.received}"),
        ("delivered per second", f"{report.delivered_per_s:g}"),
        ("loss", f"{100 * report.loss:.3f} %"),
        ("disconnects / pings", f"{report.disconnects} / {report.pings}"),
        (
            "validated (invalid)",
            f"{report.validated} ({report.invalid}), other messages {report.other_messages}",
        ),
        (
            "latency p50 / p90 / p99 / max",
            f"{_show(report.latency_p50_ms)} / {_show(report.latency_p90_ms)} / "
            f"{_show(report.latency_p99_ms)} / {_show(report.latency_max_ms)} ms",
        ),
        ("server CPU", f"{_show(report.server_cpu_s, ' s')} ({_show(report.server_cpu_pct)} %)"),
        ("server CPU per message", _show(report.server_cpu_us_per_message, " us")),
        (
            "server RSS peak / end",
            f"{_show(report.server_peak_rss_mb)} / {_show(report.server_rss_mb)} MB",
        ),
        (
            "sender CPU",
            f"{report.sender_cpu_pct:g} % of one core, send lag p99 "
            f"{_show(report.send_lag_p99_ms)} ms",
        ),
        ("reader CPU", " + ".join(f"{pct:g} %" for pct in report.reader_cpu_pct)),
        ("load average before", " ".join(f"{x:g}" for x in report.loadavg_before)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    if report.goal_p99_met is not None:
        verdict = "met" if report.goal_p99_met else "NOT met"
        lines.append(f"goal p99 < {GOAL_P99_MS:g} ms: {verdict}")
    busy = [pct for pct in [report.sender_cpu_pct, *report.reader_cpu_pct] if pct > 85]
    if busy:
        lines.append(
            "warning: a generator process used most of a core; latency and loss may be its "
            "limit, not the server's"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> tuple[BenchConfig, Path | None]:
    """The command line as a BenchConfig, and the file to write the JSON report to, if any."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=100, help="WebSocket feeds (100)")
    parser.add_argument("--units", type=int, default=1000, help="simulated units (1000)")
    parser.add_argument("--rate", type=float, default=1.0, help="reports/s per unit (1)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds after registering")
    parser.add_argument("--drain", type=float, default=3.0, help="seconds after the window")
    parser.add_argument("--readers", type=int, default=2, help="reader processes (2)")
    parser.add_argument(
        "--unit-connections", type=int, default=10, help="TCP connections the units share (10)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the send phases")
    parser.add_argument("--host", default=HOST, help="a running server's address (127.0.0.1)")
    parser.add_argument("--tcp-port", type=int, help="a running server's plain TCP CoT port")
    parser.add_argument("--http-port", type=int, help="a running server's plain HTTP port")
    parser.add_argument("--server-pid", type=int, help="a running server's PID (CPU, memory)")
    parser.add_argument(
        "--server-cmd",
        default=DEFAULT_SERVER_CMD,
        help="how to start Liaison; placeholders {repo} {data_dir} {host} {tcp_port} {http_port}",
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if (args.tcp_port is None) != (args.http_port is None):
        parser.error("--tcp-port and --http-port go together")
    if args.host != HOST and not args.host.startswith("127."):
        parser.error("only loopback addresses (127.0.0.0/8) are benchmarked")
    config = BenchConfig(
        host=args.host,
        tcp_port=args.tcp_port,
        http_port=args.http_port,
        server_pid=args.server_pid,
        subscribers=args.subscribers,
        units=args.units,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        drain=args.drain,
        readers=args.readers,
        unit_connections=args.unit_connections,
        seed=args.seed,
        server_cmd=args.server_cmd,
    )
    json_out: Path | None = args.json_out
    return config, json_out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``worker <json>``, one of its worker processes)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"] and len(argv) == 2:
        cfg: dict[str, Any] = json.loads(argv[1])
        return run_sender(cfg) if cfg["role"] == "sender" else run_reader(cfg)
    config, json_out = parse_args(argv)
    try:
        report = run(config)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError, OSError) as exc:
        print(f"ws_bench: {exc}", file=sys.stderr)
        return 1
    print(format_report(report))
    line = report.to_json()
    print(line)
    print(f"reproduce: {report.command}")
    if json_out is not None:
        json_out.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
