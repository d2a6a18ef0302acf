"""The benchmark load generator, run as users run it, against small relays inside the test."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
LOADGEN = REPO / "bench" / "loadgen.py"

END = b"</event>"
CLIENTS = 3
RATE = 5.0
DURATION = 2.0
# Warm-up, drain and process start-up together stay well under this.
RUN_TIMEOUT_S = 30.0

# Decides, for the n-th event (counting from 0) of one sender, whether to forward it to the
# others and whether to echo it back to the sender itself.
Policy = Callable[[int], tuple[bool, bool]]


class _Relay(asyncio.Protocol):
    """A test relay: frames on the end tag and applies `policy` to each event of each sender."""

    def __init__(self, peers: set[_Relay], policy: Policy) -> None:
        self.peers = peers
        self.policy = policy
        self.transport: asyncio.Transport | None = None
        self.pending = b""
        self.count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peers.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.peers.discard(self)

    def data_received(self, data: bytes) -> None:
        *events, self.pending = (self.pending + data).split(END)
        for body in events:
            event = body + END
            forward, echo = self.policy(self.count)
            self.count += 1
            for peer in self.peers:
                if peer.transport is None:
                    continue
                if (peer is self and echo) or (peer is not self and forward):
                    peer.transport.write(event)


@asynccontextmanager
async def _relay(policy: Policy) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    peers: set[_Relay] = set()
    server = await loop.create_server(lambda: _Relay(peers, policy), "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
        for peer in list(peers):
            if peer.transport is not None:
                peer.transport.close()


async def _run_loadgen(port: int, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(LOADGEN),
        "--port",
        str(port),
        "--clients",
        str(CLIENTS),
        "--rate",
        f"{RATE:g}",
        "--duration",
        f"{DURATION:g}",
        "--warmup",
        "0.5",
        "--drain",
        "0.5",
        "--connect-timeout",
        "2",
        "--json-out",
        str(tmp_path / "report.json"),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _report(tmp_path: Path, stdout: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    # The same JSON line is printed, followed by the command that reproduces the run.
    lines = stdout.strip().splitlines()
    assert json.loads(lines[-2]) == report
    assert lines[-1] == f"reproduce: {report['command']}"
    return report


async def test_faithful_relay_gives_no_loss_and_sane_numbers(tmp_path: Path) -> None:
    async with _relay(lambda n: (True, False)) as port:
        code, out, err = await _run_loadgen(port, tmp_path, "--server-pid", str(os.getpid()))
    assert code == 0, err
    report = _report(tmp_path, out)

    assert report["connected"] == CLIENTS
    # Each client sends one event per period inside the window, whatever its phase.
    per_client = int(RATE * DURATION)
    assert CLIENTS * (per_client - 1) <= report["sent"] <= CLIENTS * per_client
    assert report["expected"] == report["sent"] * (CLIENTS - 1)
    assert report["received"] == report["expected"]
    assert report["loss"] == 0
    assert report["echoes"] == 0
    assert report["disconnects"] == 0
    assert report["delivered_per_s"] == pytest.approx(report["received"] / DURATION, abs=0.1)
    # Every delivery was sampled; events outside the window (registration, edges) are seen but
    # not counted. How many of those a client sees depends on connection order, so only the
    # lower bound is exact.
    assert report["latency_samples"] == report["received"]
    assert report["events_seen"] > report["received"]
    p50, p90, p99, top = (report[f"latency_{k}_ms"] for k in ("p50", "p90", "p99", "max"))
    assert 0 < p50 <= p90 <= p99 <= top < 1000
    # The "server" is this test process: its CPU and memory were read from /proc.
    assert report["server_pid"] == os.getpid()
    assert report["server_cpu_s"] >= 0
    assert report["server_cpu_us_per_delivery"] == pytest.approx(
        report["server_cpu_s"] * 1e6 / report["received"], rel=0.01, abs=0.01
    )
    assert report["server_peak_rss_mb"] >= report["server_rss_mb"] > 0
    assert 0 <= report["loadgen_cpu_pct"] < 100
    assert DURATION <= report["measured_s"] < DURATION + 2
    assert f"--port {port} --clients {CLIENTS} --rate 5 --duration 2" in report["command"]
    assert "deliveries received" in out


async def test_dropped_and_echoed_events_are_counted_as_loss_and_echoes(tmp_path: Path) -> None:
    # Forward every second event of each sender, and send every event back to its sender.
    async with _relay(lambda n: (n % 2 == 0, True)) as port:
        code, out, err = await _run_loadgen(port, tmp_path)
    assert code == 0, err
    report = _report(tmp_path, out)

    assert report["expected"] == report["sent"] * (CLIENTS - 1)
    # Of each sender's ~10 events in the window, 5 (one more or less at the edges) went out.
    assert 0.35 <= report["loss"] <= 0.65
    assert report["received"] == round(report["expected"] * (1 - report["loss"]))
    assert report["echoes"] == report["sent"]
    # Without --server-pid there are no server figures, but the generator's own are there.
    assert report["server_cpu_s"] is None
    assert report["server_peak_rss_mb"] is None
    assert report["loadgen_cpu_s"] >= 0


async def test_no_server_is_an_error_not_a_report(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        # Bound but not listening: connections are refused.
        code, out, err = await _run_loadgen(port, tmp_path)
    assert code == 1
    assert "0 of 3 clients could connect" in err
    assert "reproduce:" not in out
    assert not (tmp_path / "report.json").exists()
