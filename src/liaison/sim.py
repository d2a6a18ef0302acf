"""Simulated units for demos and load: each one is a TAK stream client that reports its position.

Every unit connects over plain TCP, moves on a circle around a centre point and sends an ATAK-style
self position report (a-f-G-U-C with contact, __group, takv and track) ``rate`` times a second. It
also reads and counts what the server sends, so ``liaison sim`` doubles as a smoke test.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from liaison.model.event import make_event
from liaison.protocol import cot_xml

TEAMS = ("Cyan", "Yellow", "Green", "Red", "Blue", "Magenta")
# Largest read a simulated unit makes at once.
READ_CHUNK = 65536
# Seconds a unit waits to connect before giving up.
CONNECT_TIMEOUT_S = 10.0
# Connection errors kept for the summary.
MAX_ERRORS_KEPT = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSettings:
    host: str = "127.0.0.1"
    port: int = 8087
    clients: int = 10
    rate: float = 1.0
    duration_s: float = 60.0
    center_lat: float = 50.45
    center_lon: float = 30.52
    radius_m: float = 2000.0


@dataclass(slots=True)
class SimReport:
    connected: int = 0
    failed: int = 0
    dropped: int = 0
    sent: int = 0
    received_bytes: int = 0
    received_events: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rate = self.sent / self.elapsed_s if self.elapsed_s else 0.0
        return (
            f"units connected {self.connected}, failed {self.failed}, dropped {self.dropped}; "
            f"sent {self.sent} events ({rate:.1f}/s); "
            f"received {self.received_events} events ({self.received_bytes} bytes) "
            f"in {self.elapsed_s:.1f} s"
        )


def position_report(index: int, now_ms: int, t: float, settings: SimSettings) -> bytes:
    """The XML position report of unit ``index`` at time ``t`` seconds into the run."""
    angular = 2 * math.pi * (index / max(settings.clients, 1)) + t / 120.0
    dlat = settings.radius_m * math.sin(angular) / 111_320.0
    dlon = (
        settings.radius_m
        * math.cos(angular)
        / (111_320.0 * max(math.cos(math.radians(settings.center_lat)), 0.01))
    )
    callsign = f"SIM-{index:04d}"
    detail = ET.Element("detail")
    ET.SubElement(detail, "contact", callsign=callsign, endpoint="*:-1:stcp")
    ET.SubElement(detail, "__group", name=TEAMS[index % len(TEAMS)], role="Team Member")
    ET.SubElement(detail, "takv", device="liaison-sim", platform="Liaison", os="linux", version="1")
    ET.SubElement(detail, "track", speed="4.2", course=f"{math.degrees(angular) % 360:.1f}")
    event = make_event(
        uid=f"liaison-sim-{index:04d}",
        type="a-f-G-U-C",
        how="m-s",
        time=now_ms,
        start=now_ms,
        stale=now_ms + 120_000,
        lat=settings.center_lat + dlat,
        lon=settings.center_lon + dlon,
        hae=150.0,
        ce=10.0,
        le=10.0,
        detail=detail,
    )
    return cot_xml.render_xml(event)


async def _stopped(stop: asyncio.Event, wait_s: float) -> bool:
    """Wait ``wait_s`` seconds, or less if ``stop`` is set; True when it is set."""
    if stop.is_set():
        return True
    if wait_s <= 0:
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), wait_s)
    return stop.is_set()


async def _unit(
    index: int, settings: SimSettings, report: SimReport, start: float, stop: asyncio.Event
) -> None:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(settings.host, settings.port), CONNECT_TIMEOUT_S
        )
    except (OSError, TimeoutError) as exc:
        report.failed += 1
        if len(report.errors) < MAX_ERRORS_KEPT:
            report.errors.append(f"unit {index}: {exc}")
        return
    report.connected += 1

    async def read() -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(READ_CHUNK):
                report.received_bytes += len(data)
                report.received_events += data.count(b"</event>")

    interval = 1.0 / settings.rate
    async with asyncio.TaskGroup() as tg:
        reading = tg.create_task(read())
        loop = asyncio.get_running_loop()
        deadline = start + settings.duration_s
        if await _stopped(stop, min(random.uniform(0, interval), deadline - loop.time())):
            deadline = loop.time()
        next_send = loop.time()
        while loop.time() < deadline:
            writer.write(
                position_report(index, time.time_ns() // 1_000_000, loop.time() - start, settings)
            )
            report.sent += 1
            try:
                await writer.drain()
            except OSError as exc:  # the server closed the connection
                report.dropped += 1
                if len(report.errors) < MAX_ERRORS_KEPT:
                    report.errors.append(f"unit {index}: {exc}")
                break
            next_send += interval
            if await _stopped(stop, min(next_send, deadline) - loop.time()):
                break
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        reading.cancel()


async def run_sim(settings: SimSettings, stop: asyncio.Event | None = None) -> SimReport:
    """Run ``settings.clients`` units for ``settings.duration_s`` seconds, or until ``stop`` is
    set (Ctrl-C); report what happened."""
    if not settings.rate > 0 or not settings.duration_s > 0 or settings.clients < 1:
        raise ValueError("rate and duration must be greater than 0 and clients at least 1")
    stop = stop or asyncio.Event()
    report = SimReport()
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.TaskGroup() as tg:
        for i in range(settings.clients):
            tg.create_task(_unit(i, settings, report, start, stop))
    report.elapsed_s = loop.time() - start
    return report
