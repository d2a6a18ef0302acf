"""The feeds benchmark (issue 15): A aircraft reported once a second by two overlapping SBS-1
receivers, merged by a real Liaison server into one picture streamed to N TAK clients.

The bench runs, on 127.0.0.1:

- two SBS-1 BaseStation servers (as dump1090's port 30003): receiver 1 hears aircraft
  ``0 .. A*(1+overlap)/2``, receiver 2 the last ``A*(1+overlap)/2`` of them, so ``overlap * A``
  aircraft are heard by both; each sends one ``MSG,3`` position line per aircraft it hears per
  second, spread over the second in ten slices, every aircraft moving;
- ``liaison serve`` (plain TCP streaming listener, labels on with ``bench/labels-policy.toml``
  plus two ``sbs1-tcp`` feeds of organisation USA, one per receiver);
- N plain TCP clients (anonymous, USA, SECRET: they may see every track). Every client counts the
  events it receives; ``--measure`` of them also read each event's uid and ``time``.

After ``--warmup`` seconds, for ``--duration`` seconds it measures: the server's CPU (its process
tree, /proc), the events delivered to all clients, and the delivery latency: a measuring client's
wall clock when it read the event minus when the receiver wrote its SBS-1 line (carried in the
line's altitude, see :func:`sbs1_line`): the TCP hop, parsing, merge and thinning, labelling,
audit, fan-out and the socket to the client, end to end. At the end it
checks the merged track count: the feeds' shared thinner (``DATA_DIR/feeds/status.json``
``tracks``) and each measuring client must know exactly A aircraft, each once (one uid per
aircraft, however many receivers heard it). The exit code is 1 when a count is off.

    .venv/bin/python bench/feeds_bench.py --aircraft 5000 --clients 200 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
POLICY = BENCH_DIR / "labels-policy.toml"
FEED = """
[feeds.{name}]
kind = "sbs1-tcp"
connect = "{host}:{port}"
org = "USA"
ceiling = {{ classification = "SECRET", REL = "*" }}
default_classification = "UNCLASSIFIED"
affiliation = "n"
"""
# Slices a receiver spreads one second of lines over (a receiver streams, it does not burst).
SLICES = 10
RECV_BUFFER_BYTES = 1 << 20
EVENT_END = b"</event>"
# uid and altitude (the send time, see sbs1_line) of a feed's event as Liaison renders it.
EVENT_RE = re.compile(rb'uid="ICAO-([0-9a-f]{6})".*?alt_baro="(\d+)"', re.DOTALL)
STAMP_MODULO = 100_000
SERVER_START_S = 60.0
# Seconds between two samples of the age of the picture each measuring client holds.
AGE_SAMPLE_S = 1.0
# Longest wait, after the measuring window, for the server to work off its backlog.
DRAIN_WAIT_S = 180.0


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


loadgen = _sibling("loadgen")  # read_cpu_seconds, percentile
run_compare = _sibling("run_compare")  # free_port, wait_for_port, stop


def icao(i: int) -> str:
    return f"{0xA00000 + i:06x}"


def sbs1_line(i: int, t: float) -> bytes:
    """One ``MSG,3`` (airborne position) line of aircraft ``i`` at time ``t`` (22 fields). Its
    altitude is the wall clock in ms modulo 100,000 when the line is written: the server copies it
    into the event (``__adsb alt_baro``), so a client knows when the line left the receiver."""
    lat = 40.0 + (i % 100) * 0.05 + 0.0005 * math.sin(t / 30 + i)
    lon = -100.0 + (i // 100) * 0.05 + 0.0005 * math.cos(t / 30 + i)
    stamp = time.strftime("%Y/%m/%d,%H:%M:%S", time.gmtime(t))
    hexid = icao(i).upper()
    return (
        f"MSG,3,1,1,{hexid},1,{stamp}.000,{stamp}.000,,{int(t * 1000) % STAMP_MODULO},,,"
        f"{lat:.5f},{lon:.5f},,,0,0,0,0\r\n"
    ).encode()


class Receiver:
    """An SBS-1 server reporting ``aircraft`` once a second to whoever connects."""

    def __init__(self, aircraft: range) -> None:
        self.aircraft = aircraft
        self.lines = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self.stopped = False
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ids = list(self.aircraft)
        per_slice = math.ceil(len(ids) / SLICES)
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        self.writers.append(writer)
        try:
            while not self.stopped:
                part = ids[(tick % SLICES) * per_slice : (tick % SLICES + 1) * per_slice]
                now = time.time()
                writer.write(b"".join(sbs1_line(i, now) for i in part))
                self.lines += len(part)
                await writer.drain()
                tick += 1
                await asyncio.sleep(max(0.0, start + tick / SLICES - loop.time()))
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        """Stop sending: close the listening socket and every connection (the feeds see the
        upstream gone and retry, which is no matter after the measurement)."""
        self.stopped = True
        for writer in self.writers:
            writer.close()
        self.writers.clear()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass
class Stats:
    measuring: bool = False
    events: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    # Sampled every AGE_SAMPLE_S in the window, per measuring client: the age of every track's
    # newest fix it holds (how late the picture is), and of the freshest one.
    track_ages_ms: list[float] = field(default_factory=list)
    freshest_ages_ms: list[float] = field(default_factory=list)
    disconnects: int = 0


class Client(asyncio.BufferedProtocol):
    """A TAK client over plain TCP that counts events; a measuring one also reads uid and time."""

    def __init__(self, stats: Stats, measure: bool) -> None:
        self.stats = stats
        self.measure = measure
        self.buffer = bytearray(RECV_BUFFER_BYTES)
        self.view = memoryview(self.buffer)
        self.filled = 0
        self.uids: set[bytes] = set()
        # uid -> the send stamp (see sbs1_line) of the newest fix received: the picture it holds.
        self.newest: dict[bytes, int] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.disconnects += 1

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.filled == len(self.buffer):
            self.filled = 0  # one "event" larger than the buffer: drop it
        return self.view[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        now_ms = time.time() * 1000
        buf = self.buffer
        total = self.filled + nbytes
        end = buf.rfind(EVENT_END, 0, total)
        if end < 0:
            self.filled = total
            return
        end += len(EVENT_END)
        stats = self.stats
        if stats.measuring:
            stats.events += buf.count(EVENT_END, 0, end)
        if self.measure:
            now_stamp = int(now_ms) % STAMP_MODULO
            newest = self.newest
            for uid, sent in EVENT_RE.findall(buf, 0, end):
                self.uids.add(uid)
                newest[uid] = int(sent)
                if stats.measuring:
                    stats.latencies_ms.append((now_stamp - int(sent)) % STAMP_MODULO)
        rest = total - end
        if rest:
            buf[:rest] = buf[end:total]
        self.filled = rest


def sample_ages(clients: Sequence[Client], stats: Stats, now_ms: float) -> None:
    """Record how old the newest fix of each track every measuring client holds is, now (the
    picture's lateness: a server that falls behind shows old positions however fast it sends)."""
    now_stamp = int(now_ms) % STAMP_MODULO
    for c in clients:
        if not c.measure or not c.newest:
            continue
        ages = [(now_stamp - sent) % STAMP_MODULO for sent in c.newest.values()]
        stats.track_ages_ms.extend(ages)
        stats.freshest_ages_ms.append(min(ages))


async def _sample_ages_for(clients: Sequence[Client], stats: Stats, duration_s: float) -> None:
    """Sample the picture's age every AGE_SAMPLE_S for ``duration_s`` (bounded count)."""
    for _ in range(max(1, int(duration_s / AGE_SAMPLE_S))):
        await asyncio.sleep(AGE_SAMPLE_S)
        sample_ages(clients, stats, time.time() * 1000)


def _status(data_dir: Path) -> dict[str, Any]:
    try:
        doc = json.loads((data_dir / "feeds" / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


async def _drained(data_dir: Path) -> tuple[dict[str, Any], float | None]:
    """The server's status once two writes after now agree on what the feeds published (and the
    seconds that took), or the last status read after DRAIN_WAIT_S (and None)."""
    start = time.monotonic()
    start_ms = time.time() * 1000
    last: dict[str, Any] = {}
    before: tuple[int, int, int] | None = None
    while time.monotonic() - start < DRAIN_WAIT_S:
        status = _status(data_dir)
        written = status.get("written_ms", 0)
        if written > last.get("written_ms", 0):
            last = status
            feeds = status.get("feeds", [])
            mark = (
                sum(f.get("reports", 0) for f in feeds),
                sum(f.get("published", 0) for f in feeds),
                status["tracks"],
            )
            # Fixes still waiting to be published (a server with a pending table) count as not
            # drained yet.
            if written >= start_ms and mark == before and not status.get("pending", 0):
                return status, time.monotonic() - start
            before = mark if written >= start_ms else None
        await asyncio.sleep(0.5)
    return last, None


def _start(argv: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def _loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


async def run(args: argparse.Namespace) -> int:
    n = args.aircraft
    heard = math.ceil(n * (1 + args.overlap) / 2)
    receivers = [Receiver(range(0, heard)), Receiver(range(n - heard, n))]
    both = len(set(receivers[0].aircraft) & set(receivers[1].aircraft))
    for r in receivers:
        await r.start()
    load_before = _loadavg()
    port = run_compare.free_port()
    with tempfile.TemporaryDirectory(prefix="liaison-feeds-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        policy = Path(tmp) / "policy.toml"
        policy.write_text(
            POLICY.read_text()
            + "".join(
                FEED.format(name=f"rx{k + 1}", host=HOST, port=r.port)
                for k, r in enumerate(receivers)
            )
        )
        argv = [
            sys.executable,  # the interpreter the bench runs on, with Liaison installed
            "-m",
            "liaison",
            "serve",
            "--data-dir",
            str(data_dir),
            "--tcp",
            f"{HOST}:{port}",
            "--tls",
            "off",
            "--udp",
            "off",
            "--https",
            "off",
            "--enroll",
            "off",
        ]
        env = {**os.environ, "LIAISON_POLICY_FILE": str(policy)}
        log = (Path(tmp) / "server.log").open("wb")
        proc = _start(argv, env, log)
        stats = Stats()
        clients: list[Client] = []
        try:
            await asyncio.to_thread(run_compare.wait_for_port, HOST, port, proc, SERVER_START_S)
            loop = asyncio.get_running_loop()
            for k in range(args.clients):
                _, client = await loop.create_connection(
                    functools.partial(Client, stats, k < args.measure), HOST, port
                )
                clients.append(client)
            await asyncio.sleep(args.warmup)
            stats.measuring = True
            cpu0, t0 = loadgen.read_cpu_seconds(proc.pid), time.monotonic()
            own0 = time.process_time()
            await _sample_ages_for(clients, stats, args.duration)
            cpu1, t1 = loadgen.read_cpu_seconds(proc.pid), time.monotonic()
            own1 = time.process_time()
            stats.measuring = False
            lost = stats.disconnects
            # The receivers stop; the server works off what it has read (a backlog when it could
            # not keep up), then its status (written every 2 s) stops changing.
            for r in receivers:
                await r.close()
            status, drained_s = await _drained(data_dir)
            written_ms = status.get("written_ms")
            status_age_s = time.time() - written_ms / 1000 if isinstance(written_ms, int) else None
        finally:
            for c in clients:
                if c.transport is not None:
                    c.transport.close()
            run_compare.stop(proc)
            log.close()
            for r in receivers:
                await r.close()
        if proc.returncode not in (0, -15):
            print((Path(tmp) / "server.log").read_text()[-3000:], file=sys.stderr)
        if args.server_log:
            await asyncio.to_thread(
                Path(args.server_log).write_bytes, (Path(tmp) / "server.log").read_bytes()
            )
    elapsed = t1 - t0
    lat = sorted(stats.latencies_ms)
    tracks = status.get("tracks")
    measured_uids = [len(c.uids) for c in clients[: args.measure]]
    published = sum(f.get("published", 0) for f in status.get("feeds", []))
    report = {
        "aircraft": n,
        "heard_by_both": both,
        "clients": args.clients,
        "duration_s": round(elapsed, 2),
        "lines_sent": sum(r.lines for r in receivers),
        "feeds_published": published,
        "dropped": status.get("dropped", {}),
        # Adaptation steps in which each signal said the server was behind (a server with the
        # adaptive publisher; absent before it).
        "behind": status.get("behind"),
        # How old the status read at the end was when read (a stale file explains stale counts).
        "status_age_s": round(status_age_s, 1) if status_age_s is not None else None,
        "tracks": tracks,
        "drained_after_s": round(drained_s, 1) if drained_s is not None else None,
        "uids_per_measuring_client": measured_uids,
        "deliveries_per_s": round(stats.events / elapsed),
        "server_cpu_s_per_s": round((cpu1 - cpu0) / elapsed, 3),
        # The bench's own (receivers and clients): on a shared machine both compete for CPU.
        "bench_cpu_s_per_s": round((own1 - own0) / elapsed, 3),
        "latency_ms_p50": round(loadgen.percentile(lat, 0.5), 1) if lat else None,
        "latency_ms_p99": round(loadgen.percentile(lat, 0.99), 1) if lat else None,
        "latency_ms_max": round(lat[-1], 1) if lat else None,
        "latency_samples": len(lat),
        # The age of the newest fix of each track a measuring client held, sampled every second
        # (modulo 100 s: older than that wraps), and of the freshest track it held.
        "picture_age_ms_p50": _pct(stats.track_ages_ms, 0.5),
        "picture_age_ms_p99": _pct(stats.track_ages_ms, 0.99),
        "freshest_fix_age_ms_p50": _pct(stats.freshest_ages_ms, 0.5),
        "freshest_fix_age_ms_max": _pct(stats.freshest_ages_ms, 1.0),
        "disconnects": lost,
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "command": " ".join(sys.argv),
    }
    print(json.dumps(report, indent=2))
    if args.json_out:
        await asyncio.to_thread(Path(args.json_out).write_text, json.dumps(report, indent=2) + "\n")
    exact = tracks == n and all(u == n for u in measured_uids)
    print(
        f"merged tracks: {tracks} (thinner), {measured_uids} (measuring clients), expected {n}: "
        + ("exact" if exact else "OFF")
    )
    return 0 if exact else 1


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[-1] if q >= 1 else loadgen.percentile(ordered, q), 1)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--aircraft", type=int, default=5000)
    p.add_argument("--overlap", type=float, default=0.4, help="share heard by both receivers")
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--measure", type=int, default=5, help="clients that read uids and times")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--json-out", default=None)
    p.add_argument("--server-log", default=None, help="copy the server's log here at the end")
    args = p.parse_args(argv)
    if not 0 <= args.overlap <= 1 or args.aircraft < 1 or not 1 <= args.measure <= args.clients:
        p.error("need 0 <= overlap <= 1, aircraft >= 1, 1 <= measure <= clients")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
