"""Streaming load generator: N simulated TAK clients at R events/s over plain TCP, with a report.

Each simulated client connects to host:port, sends one ATAK-like self-position (SA) event to
register (taky, like TAK Server, only knows a client once it has sent something), and then, in the
measured window, sends one SA event every 1/R seconds with a random phase so that sends are spread
over the period. Every other client should receive every event (implicit broadcast, TAK protocol:
"Implicit routing", shared/reference/tak-protocol.md section 1.6), so

    expected deliveries = events sent in the window x (connected clients - 1)

Each event carries, in its <remarks>, the sender's index, a sequence number and the send time
(time.monotonic_ns: sender and receiver are the same process, so one monotonic clock serves
both). The window is defined by that send time, so an event counts if it was *sent* inside the
window, wherever it was received; after the window the clients stop sending and wait a drain period
so that events still in flight at the edge arrive.

Server metrics come from /proc: utime+stime (plus children) of the server's process tree at window
start and after the drain, and VmHWM (peak RSS) and VmRSS from /proc/<pid>/status.

Run `python bench/loadgen.py --help`. The last lines printed are a human table, a one-line JSON
report and the exact command that reproduces the run.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import dataclasses
import datetime as dt
import json
import math
import os
import random
import re
import resource
import shlex
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# The end tag that closes every CoT event on an XML stream (TAK protocol.txt, "Stream framing",
# version 0: events are concatenated; TAK Server itself splits on this tag).
EVENT_END = b"</event>"

# The measurement marker embedded in <remarks>: sender index, sequence number, send time in ns.
# This reader is deliberately naive: it finds markers and end tags by byte search instead of
# parsing XML, which is fine here (and only here) because the benchmark reads nothing but what the
# server under test writes, and needs only counts and timestamps. The server is where real framing
# matters. A server that re-serialises events (taky does, with lxml) keeps element text as is.
MARKER_PREFIX = b"lbq/"
MARKER_RE = re.compile(rb"lbq/(\d+)/\d+/(\d+)<")

# Receive buffer of one simulated client: a read takes at most this much. 64 KiB holds about a
# hundred events, more than any server writes to one client between two reads at these rates.
RECV_BUFFER_BYTES = 64 * 1024

# Largest incomplete event a simulated client keeps while waiting for an end tag (the buffer grows
# to this). Real events are about 600 bytes; a server that sends something without end tags
# should not make us grow forever.
MAX_PENDING_BYTES = 4 * 1024 * 1024

# Latency samples kept in memory: past this, every k-th in-window delivery is sampled (stride
# sampling, decided in advance from the expected count), so percentiles stay cheap to compute.
MAX_LATENCY_SAMPLES = 1_000_000

# How many connections are opened at once, so that the server's listen backlog (128 by default
# for Python servers such as taky) is not overrun by a burst of 500 SYNs.
CONNECT_CONCURRENCY = 50
CONNECT_ATTEMPTS = 3

# Seconds a TERM'd or slow server gets to close the connections at the end.
CLOSE_TIMEOUT_S = 2.0

# A simulated client's team colour: the 14 ATAK team colours (tak-protocol.md, `__group`).
TEAMS = (
    "White",
    "Yellow",
    "Orange",
    "Magenta",
    "Red",
    "Maroon",
    "Purple",
    "Dark Blue",
    "Blue",
    "Cyan",
    "Teal",
    "Green",
    "Dark Green",
    "Brown",
)

# One SA event as ATAK sends it on a stream: the XML declaration and a newline, then the event
# (tak-protocol.md section 2.1, version 0), with the detail children ATAK puts in a self-position
# report (compare shared/reference/samples/cot/xml/atak-sa-06.xml). The event is about 610 bytes
# like the real thing, plus 56 bytes of declaration. Filled with bytes %-formatting because it is
# the cheapest templating Python has.
_EVENT_TEMPLATE = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<event version="2.0" uid="BENCH-%(uid)s" type="a-f-G-U-C" how="m-g" time="%(time)s" '
    b'start="%(time)s" stale="%(stale)s">'
    b'<point lat="%(lat)s" lon="%(lon)s" hae="31.4" ce="4.9" le="9999999.0"/>'
    b"<detail>"
    b'<takv os="34" version="4.10.0.7" device="GOOGLE PIXEL 7" '
    b'platform="ATAK-CIV"/>'
    b'<contact endpoint="*:-1:stcp" callsign="%(callsign)s"/>'
    b'<uid Droid="%(callsign)s"/>'
    b'<precisionlocation altsrc="GPS" geopointsrc="GPS"/>'
    b'<__group role="Team Member" name="%(team)s"/>'
    b'<status battery="87"/>'
    b'<track course="%(course)s" speed="1.2"/>'
    b"<remarks>lbq/%(index)d/%(seq)d/%(sent)d</remarks>"
    b"</detail></event>"
)

# SA reports are stale after a minute or so in ATAK's defaults; the sample above uses 43 s.
STALE_AFTER = dt.timedelta(seconds=60)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LoadConfig:
    """What one load run does."""

    host: str = "127.0.0.1"
    port: int
    clients: int
    rate: float
    duration: float
    warmup: float = 3.0
    drain: float = 3.0
    connect_timeout: float = 10.0
    server_pid: int | None = None
    seed: int = 1
    # Mutual TLS: (client certificate, its key, the CA that signed the server's), or None for TCP.
    tls: tuple[str, str, str] | None = None

    def command(self) -> str:
        """The command line that reproduces this run (the server PID is this run's own)."""
        args = [
            "python",
            "bench/loadgen.py",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--clients",
            str(self.clients),
            "--rate",
            f"{self.rate:g}",
            "--duration",
            f"{self.duration:g}",
            "--warmup",
            f"{self.warmup:g}",
            "--drain",
            f"{self.drain:g}",
            "--seed",
            str(self.seed),
        ]
        if self.server_pid is not None:
            args += ["--server-pid", str(self.server_pid)]
        if self.tls is not None:
            args += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1], "--tls-ca", self.tls[2]]
        return shlex.join(args)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context for --tls-*, or None for plain TCP."""
        if self.tls is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # 127.0.0.1; the server's chain is still verified
        ctx.load_verify_locations(cafile=self.tls[2])
        ctx.load_cert_chain(self.tls[0], self.tls[1])
        return ctx


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LoadReport:
    """What one load run measured. Times in ms, CPU in seconds or microseconds, memory in MB."""

    clients: int
    connected: int
    rate: float
    duration_s: float
    sent: int
    expected: int
    received: int
    loss: float
    delivered_per_s: float
    echoes: int
    events_seen: int  # benchmark events received at all, inside the window or not
    disconnects: int
    latency_samples: int
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    send_lag_p99_ms: float | None
    server_pid: int | None
    server_cpu_s: float | None
    server_cpu_pct: float | None
    server_cpu_us_per_delivery: float | None
    server_peak_rss_mb: float | None
    server_rss_mb: float | None
    loadgen_cpu_s: float
    loadgen_cpu_pct: float
    measured_s: float
    command: str

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))


def _iso(moment: dt.datetime) -> bytes:
    # CoT times are xs:dateTime with a Z suffix (tak-protocol.md section 1.1); ATAK writes ms.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.").encode() + b"%03dZ" % (moment.microsecond // 1000)


def build_event(index: int, seq: int, sent_ns: int, now: dt.datetime) -> bytes:
    """One SA event of simulated client `index`, carrying `seq` and `sent_ns` in its remarks."""
    callsign = b"bench-%04d" % index
    # Spread the clients over a few km and move each a little with every report.
    lat = 40.0 + (index % 50) * 0.001 + seq * 1e-6
    lon = -72.0 + (index // 50) * 0.001
    return _EVENT_TEMPLATE % {
        b"uid": b"%04d" % index,
        b"time": _iso(now),
        b"stale": _iso(now + STALE_AFTER),
        b"lat": b"%.6f" % lat,
        b"lon": b"%.6f" % lon,
        b"callsign": callsign,
        b"team": TEAMS[index % len(TEAMS)].encode(),
        b"course": b"%.1f" % ((index * 7 + seq) % 360),
        b"index": index,
        b"seq": seq,
        b"sent": sent_ns,
    }


class _Stats:
    """Counters shared by all simulated clients of one run (one event loop, so no locking)."""

    __slots__ = (
        "disconnects",
        "echoes",
        "events_seen",
        "latencies",
        "measuring",
        "received",
        "sample_stride",
        "send_lags",
        "sent",
        "window_end_ns",
        "window_start_ns",
    )

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.echoes = 0
        self.events_seen = 0
        self.disconnects = 0
        self.measuring = False
        # An empty window until the measurement starts: nothing sent before it counts.
        self.window_start_ns = 1 << 62
        self.window_end_ns = 1 << 62
        self.sample_stride = 1
        self.latencies = array.array("q")
        self.send_lags = array.array("q")


class _BenchClient(asyncio.BufferedProtocol):
    """One simulated TAK client: writes SA events, counts and times the events it receives.

    A BufferedProtocol, so that each read lands in one preallocated buffer (recv_into) instead
    of a fresh 256 KiB bytes object per recv() as on the plain Protocol path of CPython 3.11.
    Measured at 200 clients against bench/relay.py, both cost the same (about 6 us of generator
    CPU per delivery, mostly the event loop's own work per read), so this is tidiness, not speed.
    """

    def __init__(self, index: int, stats: _Stats) -> None:
        self.index = index
        self.index_bytes = b"%d" % index
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray(RECV_BUFFER_BYTES)
        self.view = memoryview(self.buffer)
        # Bytes at the start of the buffer that hold an incomplete event from the last read.
        self.filled = 0
        self.seq = 0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stats.measuring:
            self.stats.disconnects += 1
        if not self.closed.done():
            self.closed.set_result(None)

    def send_event(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        sent_ns = time.monotonic_ns()
        transport.write(build_event(self.index, self.seq, sent_ns, dt.datetime.now(dt.UTC)))
        self.seq += 1

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.filled == len(self.buffer):
            # One incomplete "event" fills the whole buffer: grow, or give up on it.
            size = 2 * len(self.buffer)
            if size > MAX_PENDING_BYTES:
                self.filled = 0
            else:
                self.view.release()
                self.buffer = self.buffer + bytearray(size - len(self.buffer))
                self.view = memoryview(self.buffer)
        return self.view[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        # This runs once per read, up to 250,000 deliveries a second: two C-level scans of the
        # bytes (rfind, findall) and a short Python loop per event, nothing else.
        now = time.monotonic_ns()
        buf = self.buffer
        total = self.filled + nbytes
        end = buf.rfind(EVENT_END, 0, total)
        if end < 0:
            self.filled = total
            return
        end += len(EVENT_END)
        found = MARKER_RE.findall(buf, 0, end)
        rest = total - end
        if rest:
            buf[:rest] = buf[end:total]
        self.filled = rest
        stats = self.stats
        stats.events_seen += len(found)
        start_ns = stats.window_start_ns
        end_ns = stats.window_end_ns
        own = self.index_bytes
        received = echoes = 0
        latencies: list[int] = []
        for sender, sent in found:
            sent_ns = int(sent)
            if start_ns <= sent_ns < end_ns:
                if sender == own:
                    # The server sent our own event back to us: not a delivery (the server must
                    # not echo, tak-protocol.md section 1.6, "Implicit routing").
                    echoes += 1
                else:
                    received += 1
                    latencies.append(now - sent_ns)
        if received:
            stride = stats.sample_stride
            if stride == 1:
                stats.latencies.extend(latencies)
            else:
                # Keep the deliveries whose running number is a multiple of the stride.
                first = -stats.received % stride
                stats.latencies.extend(latencies[first::stride])
            stats.received += received
        stats.echoes += echoes


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants, from /proc/<pid>/task/<tid>/children (Linux)."""
    found = [pid]
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                text = Path(f"/proc/{current}/task/{tid}/children").read_text()
            except OSError:
                continue
            for child in text.split():
                found.append(int(child))
                todo.append(int(child))
    return found


def read_cpu_seconds(pid: int) -> float:
    """CPU seconds used by `pid`'s process tree: utime+stime (+ reaped children) of each process."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        # proc(5): the command name (field 2) is in parentheses and may hold spaces, so split
        # after the last ')'. Fields 14-17 are utime, stime, cutime, cstime.
        fields = stat[stat.rindex(")") + 2 :].split()
        total += sum(int(value) for value in fields[11:15])
    return total / ticks


def read_memory_kb(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of `pid` in kB: peak and current resident set size (proc(5))."""
    hwm = rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return hwm, rss


def percentile(ordered: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending sequence (fraction in (0, 1])."""
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _connect(
    loop: asyncio.AbstractEventLoop,
    config: LoadConfig,
    index: int,
    stats: _Stats,
    gate: asyncio.Semaphore,
) -> _BenchClient | None:
    ssl_context = config.ssl_context()
    for attempt in range(CONNECT_ATTEMPTS):
        async with gate:
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _BenchClient(index, stats),
                        config.host,
                        config.port,
                        ssl=ssl_context,
                    ),
                    config.connect_timeout,
                )
            except (OSError, TimeoutError):
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
        return protocol
    return None


async def _send_loop(client: _BenchClient, first_due: float, period: float, stats: _Stats) -> None:
    loop = asyncio.get_running_loop()
    due = first_due
    while True:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now_ns = time.monotonic_ns()
        # An event counts as sent in the window only if its own send time is inside it; the
        # receivers apply the same test to the time they read back.
        if now_ns >= stats.window_end_ns or client.closed.done():
            return
        # loop.time() is time.monotonic(), the same clock as monotonic_ns.
        stats.send_lags.append(max(0, now_ns - int(due * 1e9)))
        client.send_event()
        stats.sent += 1
        due += period


def _ms(value_ns: int) -> float:
    return round(value_ns / 1e6, 3)


async def run(config: LoadConfig) -> LoadReport:
    """Connect, register, send for `config.duration` seconds, drain, and report."""
    if config.clients < 2:
        raise ValueError("need at least 2 clients: each event goes to the others")
    if config.rate <= 0 or config.duration <= 0:
        raise ValueError("rate and duration must be positive")
    loop = asyncio.get_running_loop()
    rng = random.Random(config.seed)
    stats = _Stats()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connected = await asyncio.gather(
        *(_connect(loop, config, index, stats, gate) for index in range(config.clients))
    )
    clients = [client for client in connected if client is not None]
    try:
        if len(clients) < 2:
            raise ConnectionError(
                f"only {len(clients)} of {config.clients} clients could connect to "
                f"{config.host}:{config.port}"
            )
        # Register: each client announces itself once, spread over a tenth of the warm-up.
        for client in clients:
            client.send_event()
            if config.warmup > 0:
                await asyncio.sleep(config.warmup / 10 / len(clients))
        await asyncio.sleep(config.warmup * 0.9)

        expected_total = len(clients) * (len(clients) - 1) * config.rate * config.duration
        stats.sample_stride = max(1, math.ceil(expected_total / MAX_LATENCY_SAMPLES))
        period = 1.0 / config.rate
        cpu_before = read_cpu_seconds(config.server_pid) if config.server_pid else None
        own_before = _own_cpu_seconds()
        start_s = loop.time() + 0.05
        stats.window_start_ns = int(start_s * 1e9)
        stats.window_end_ns = stats.window_start_ns + int(config.duration * 1e9)
        stats.measuring = True
        async with asyncio.TaskGroup() as group:
            for client in clients:
                group.create_task(
                    _send_loop(client, start_s + rng.uniform(0, period), period, stats)
                )
        await asyncio.sleep(max(0.0, stats.window_end_ns / 1e9 - loop.time()) + config.drain)
        stats.measuring = False
        measured_s = loop.time() - start_s
        own_cpu = _own_cpu_seconds() - own_before
        server_cpu = None
        peak_rss = rss = None
        if config.server_pid and cpu_before is not None:
            server_cpu = read_cpu_seconds(config.server_pid) - cpu_before
            hwm_kb, rss_kb = read_memory_kb(config.server_pid)
            peak_rss, rss = hwm_kb / 1024, rss_kb / 1024
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
        if clients:
            await asyncio.wait([client.closed for client in clients], timeout=CLOSE_TIMEOUT_S)

    expected = stats.sent * (len(clients) - 1)
    latencies = sorted(stats.latencies)
    lags = sorted(stats.send_lags)
    return LoadReport(
        clients=config.clients,
        connected=len(clients),
        rate=config.rate,
        duration_s=config.duration,
        sent=stats.sent,
        expected=expected,
        received=stats.received,
        loss=round(1 - stats.received / expected, 6) if expected else 0.0,
        delivered_per_s=round(stats.received / config.duration, 1),
        echoes=stats.echoes,
        events_seen=stats.events_seen,
        disconnects=stats.disconnects,
        latency_samples=len(latencies),
        latency_p50_ms=_ms(percentile(latencies, 0.50)) if latencies else None,
        latency_p90_ms=_ms(percentile(latencies, 0.90)) if latencies else None,
        latency_p99_ms=_ms(percentile(latencies, 0.99)) if latencies else None,
        latency_max_ms=_ms(latencies[-1]) if latencies else None,
        send_lag_p99_ms=_ms(percentile(lags, 0.99)) if lags else None,
        server_pid=config.server_pid,
        server_cpu_s=round(server_cpu, 3) if server_cpu is not None else None,
        server_cpu_pct=round(100 * server_cpu / measured_s, 1) if server_cpu is not None else None,
        server_cpu_us_per_delivery=(
            round(server_cpu * 1e6 / stats.received, 2)
            if server_cpu is not None and stats.received
            else None
        ),
        server_peak_rss_mb=round(peak_rss, 1) if peak_rss is not None else None,
        server_rss_mb=round(rss, 1) if rss is not None else None,
        loadgen_cpu_s=round(own_cpu, 3),
        loadgen_cpu_pct=round(100 * own_cpu / measured_s, 1),
        measured_s=round(measured_s, 3),
        command=config.command(),
    )


def _show(value: float | int | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:g}{suffix}"


def format_report(report: LoadReport) -> str:
    """A small human table of one report."""
    rows = [
        ("clients (connected)", f"{report.clients} ({report.connected})"),
        ("rate per client", f"{report.rate:g} events/s"),
        ("window / measured", f"{report.duration_s:g} s / {report.measured_s:g} s"),
        ("events sent", f"{report.sent}"),
        ("deliveries expected", f"{report.expected}"),
        ("deliveries received", f"{report.received}"),
        ("delivered per second", f"{report.delivered_per_s:g}"),
        ("loss", f"{100 * report.loss:.3f} %"),
        ("echoes / disconnects", f"{report.echoes} / {report.disconnects}"),
        (
            "latency p50 / p90 / p99 / max",
            f"{_show(report.latency_p50_ms)} / {_show(report.latency_p90_ms)} / "
            f"{_show(report.latency_p99_ms)} / {_show(report.latency_max_ms)} ms",
        ),
        ("server CPU", f"{_show(report.server_cpu_s, ' s')} ({_show(report.server_cpu_pct)} %)"),
        ("server CPU per delivery", _show(report.server_cpu_us_per_delivery, " us")),
        (
            "server RSS peak / end",
            f"{_show(report.server_peak_rss_mb)} / {_show(report.server_rss_mb)} MB",
        ),
        (
            "load generator CPU",
            f"{report.loadgen_cpu_s:g} s ({report.loadgen_cpu_pct:g} % of one core), "
            f"send lag p99 {_show(report.send_lag_p99_ms)} ms",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    if report.loadgen_cpu_pct > 85:
        lines.append(
            "warning: the load generator used most of a core; the latency and loss figures may "
            "be its limit, not the server's"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> tuple[LoadConfig, Path | None]:
    """The command line as a LoadConfig, and the file to write the JSON report to, if any."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=50, help="simulated clients (default 50)")
    parser.add_argument("--rate", type=float, default=1.0, help="events/s per client (default 1)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after registering")
    parser.add_argument("--drain", type=float, default=3.0, help="seconds to wait after sending")
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--server-pid", type=int, help="PID of the server, for CPU and memory")
    parser.add_argument("--seed", type=int, default=1, help="seed of the send phases")
    parser.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--tls-cert", help="mutual TLS: client certificate (PEM); with --tls-key")
    parser.add_argument("--tls-key", help="mutual TLS: the client certificate's key (PEM)")
    parser.add_argument("--tls-ca", help="mutual TLS: the CA that signed the server's certificate")
    args = parser.parse_args(argv)
    tls_args = (args.tls_cert, args.tls_key, args.tls_ca)
    if any(tls_args) and not all(tls_args):
        parser.error("--tls-cert, --tls-key and --tls-ca go together")
    config = LoadConfig(
        host=args.host,
        port=args.port,
        clients=args.clients,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        drain=args.drain,
        connect_timeout=args.connect_timeout,
        server_pid=args.server_pid,
        seed=args.seed,
        tls=(args.tls_cert, args.tls_key, args.tls_ca) if all(tls_args) else None,
    )
    json_out: Path | None = args.json_out
    return config, json_out


def main(argv: Sequence[str] | None = None) -> int:
    """Run one load and print the table, the JSON line and the reproducing command."""
    config, json_out = parse_args(argv)
    try:
        report = asyncio.run(run(config))
    except (ConnectionError, ValueError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
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
