"""Mission notice and catch-up benchmark: the mission side and the router in one process, with
in-memory subscribers (no sockets), so it measures Liaison's own work per notice.

- ``announce``: a mission created while N devices are connected: the ``t-x-m-n`` built once and
  decided and handed to each of them (``Router.deliver_to_clients``);
- ``catch-up``: one subscriber reconnects after K items were sent to the mission while it was
  away: its catch-up (each item's CoT and a ``t-x-m-c`` per change, up to MAX_CATCHUP_EVENTS,
  through ``Router.deliver_series_to``), with the N devices still connected.

Each is run ``--repeat`` times; the median and the worst are printed (ms).

    .venv/bin/python bench/mission_notices_bench.py
    .venv/bin/python bench/mission_notices_bench.py --clients 1000 --missed 600 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from liaison.latest import MemoryLatestState  # noqa: E402
from liaison.metrics import Metrics  # noqa: E402
from liaison.missions import MAX_CATCHUP_EVENTS, Missions  # noqa: E402
from liaison.model.event import Event, make_event  # noqa: E402
from liaison.model.principal import Principal  # noqa: E402
from liaison.router import Outgoing, Router  # noqa: E402
from liaison.storage.missions import MemoryMissionStore  # noqa: E402

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass
class Device:
    """An in-memory stream client: counts what it is handed."""

    principal: Principal
    client_uid: str | None = None
    callsign: str | None = None
    got: list[Event] = field(default_factory=list)

    def deliver(self, out: Outgoing) -> None:
        self.got.append(out.event)


def person(name: str) -> Principal:
    g = frozenset({"__ANON__"})
    return Principal(name=name, in_groups=g, out_groups=g)


def event(uid: str, detail: str, cot_type: str = "b-m-p-s-m") -> Event:
    return make_event(
        uid=uid,
        type=cot_type,
        how="m-g",
        time=NOW,
        start=NOW,
        stale=NOW + 3_600_000,
        lat=50.0,
        lon=30.0,
        detail=ET.fromstring(f"<detail>{detail}</detail>"),
    )


async def one_run(clients: int, missed: int) -> tuple[float, float, int]:
    router = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    missions = Missions(
        router=router, store=MemoryMissionStore(), metrics=Metrics(), clock_ms=lambda: NOW
    )
    await missions.load()
    router.set_missions(missions)
    author = Device(person("author"), "AUTHOR")
    router.attach(author)
    for i in range(clients):
        router.attach(Device(person(f"user{i}"), f"DEV-{i}"))
    t0 = time.perf_counter()
    missions.create(
        author.principal,
        "ops",
        creator_uid="AUTHOR",
        groups=(),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    announce_ms = (time.perf_counter() - t0) * 1000
    away = Device(person("away"), "AWAY")
    router.attach(away)
    missions.subscribe(away.principal, "ops", "AWAY", None)
    router.detach(away)
    for i in range(missed):
        router.publish(event(f"item-{i}", '<marti><dest mission="ops"/></marti>'), author)
    back = Device(person("away"))
    router.attach(back)
    contact = event("AWAY", '<contact callsign="AWAY" endpoint="*:-1:stcp"/>', "a-f-G-U-C")
    t0 = time.perf_counter()
    router.publish(contact, back)  # the device makes its uid known: its catch-up
    catchup_ms = (time.perf_counter() - t0) * 1000
    caught = sum(1 for e in back.got if e.uid != "AWAY")
    if missed and not caught:
        raise SystemExit("the reconnecting device was sent nothing: the benchmark is broken")
    return announce_ms, catchup_ms, caught


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000, help="connected devices")
    ap.add_argument("--missed", type=int, default=600, help="items sent while one was away")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    runs = [await one_run(args.clients, args.missed) for _ in range(max(1, args.repeat))]
    announce = [r[0] for r in runs]
    catchup = [r[1] for r in runs]
    print(f"clients={args.clients} missed={args.missed} repeat={len(runs)}")
    print(f"announce t-x-m-n: median {statistics.median(announce):.1f} ms, max {max(announce):.1f}")
    print(
        f"catch-up ({runs[0][2]} events, limit {MAX_CATCHUP_EVENTS}):"
        f" median {statistics.median(catchup):.1f} ms, max {max(catchup):.1f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
