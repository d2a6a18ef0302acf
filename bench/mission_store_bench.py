"""How many mission items a second the mission store keeps up with (issue 13).

In one process, no sockets: the real router and mission service (``liaison.missions``) over a
real ``SqliteMissionStore`` in a temporary folder, with the service's writer task running as in
``liaison serve``. One subscribed sender publishes CoT with ``<marti><dest mission=.../>``
(each makes two store writes: the item and its ``ADD_CONTENT`` change):

* **paced**: ``--rate`` items a second for ``--seconds``; reports the deepest the write queue got,
  the writes dropped (``queue_full``) and how long after the last item everything was written;
* **burst**: ``--burst`` items as fast as the event loop takes them (100 per loop turn); reports
  the items a second until every write was in the store (the store's sustained rate);
* **drain**: ``--drain`` items queued without letting the writer run, then the time to flush
  them: the writes a second the store takes.

Then reopens the file and checks every item and change is there. Runs against whatever
``liaison`` is on the path, so the same script measures another checkout
(``PYTHONPATH=<checkout>/src``).

    .venv/bin/python bench/mission_store_bench.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.missions import MAX_PENDING_WRITES, MAX_QUEUED_WRITES, Missions
from liaison.model.event import Event, make_event
from liaison.model.principal import Principal
from liaison.router import Outgoing, Router
from liaison.storage.missions import SqliteMissionStore

MISSION = "bench"
SENDER = "BENCH-OWNER"


@dataclass
class Sender:
    principal: Principal
    client_uid: str | None = SENDER
    callsign: str | None = "OWNER"
    got: int = field(default=0)

    def deliver(self, out: Outgoing) -> None:
        self.got += 1


def now_ms() -> int:
    return int(time.time() * 1000)


def item(uid: str, i: int) -> Event:
    t = now_ms()
    detail = ET.fromstring(
        f'<detail><contact callsign="P{i}"/><marti><dest mission="{MISSION}"/></marti></detail>'
    )
    return make_event(
        uid=uid,
        type="a-h-G",
        how="h-g-i-g-o",
        time=t,
        start=t,
        stale=t + 3_600_000,
        lat=1.0 + i * 1e-6,
        lon=2.0,
        detail=detail,
    )


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    path = folder / "missions.db"
    router = Router(metrics=Metrics(), clock_ms=now_ms, latest=MemoryLatestState())
    store = await SqliteMissionStore.open(path)
    m = Missions(router=router, store=store, metrics=Metrics(), clock_ms=now_ms)
    await m.load()
    router.set_missions(m)
    writer = asyncio.create_task(m.run())
    who = Principal(name="owner", in_groups=frozenset({"g"}), out_groups=frozenset({"g"}))
    sender = Sender(who)
    router.attach(sender)
    m.create(
        who,
        MISSION,
        creator_uid=SENDER,
        groups=("g",),
        tool="public",
        description=None,
        chat_room=None,
        token=None,
    )
    await m.flush()
    queue = m._writes  # the service's write queue, read for its depth only

    # Paced.
    n_paced = int(args.rate * args.seconds)
    peak = 0
    t0 = time.monotonic()
    for i in range(n_paced):
        delay = t0 + i / args.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i % 100 == 99:
            await asyncio.sleep(0)  # behind schedule: still let the writer run
        router.publish(item(f"paced-{i:06d}", i), sender)
        peak = max(peak, len(queue))
    sent_s = time.monotonic() - t0
    t1 = time.monotonic()
    await m.flush()
    paced: dict[str, Any] = {
        "items": n_paced,
        "rate_asked": args.rate,
        "rate_sent": round(n_paced / sent_s, 1),
        "peak_queue": peak,
        "catch_up_after_last_s": round(time.monotonic() - t1, 3),
        "dropped": m.m_write_failed.get("queue_full"),
    }

    # Burst.
    peak = 0
    t0 = time.monotonic()
    for i in range(args.burst):
        router.publish(item(f"burst-{i:06d}", i), sender)
        if i % 100 == 99:
            peak = max(peak, len(queue))
            await asyncio.sleep(0)
    sent_s = time.monotonic() - t0
    await m.flush()
    total_s = time.monotonic() - t0
    burst: dict[str, Any] = {
        "items": args.burst,
        "published_per_s": round(args.burst / sent_s, 1),
        "persisted_per_s": round(args.burst / total_s, 1),
        "peak_queue": peak,
        "dropped": m.m_write_failed.get("queue_full") - paced["dropped"],
    }
    # Drain: queue --drain items without yielding (the writer cannot run), then time the flush
    # alone: the store's own rate.
    for i in range(args.drain):
        router.publish(item(f"drain-{i:06d}", i), sender)
    waiting = len(queue)
    t0 = time.monotonic()
    await m.flush()
    drain_s = time.monotonic() - t0
    drain: dict[str, Any] = {
        "items": args.drain,
        "writes": waiting,
        "flush_s": round(drain_s, 3),
        "writes_per_s": round(waiting / drain_s, 1),
    }
    writer.cancel()
    await m.close()

    store2 = await SqliteMissionStore.open(path)
    data = await store2.load()
    await store2.close()
    kept = sum(1 for i in data.items if i.mission == MISSION)
    adds = sum(1 for c in data.changes if c.type == "ADD_CONTENT")
    return {
        "paced": paced,
        "burst": burst,
        "drain": drain,
        "after_restart": {"items": kept, "add_changes": adds},
        "expected_items": n_paced + args.burst + args.drain,
        "limits": {
            "MAX_PENDING_WRITES": MAX_PENDING_WRITES,
            "MAX_QUEUED_WRITES": MAX_QUEUED_WRITES,
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=1_500.0, help="paced items a second")
    p.add_argument("--seconds", type=float, default=2.0, help="paced run length")
    p.add_argument("--burst", type=int, default=3_000, help="items in the unpaced burst")
    p.add_argument("--drain", type=int, default=2_000, help="items queued, then flushed")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.rate * args.seconds + args.burst + args.drain > 8_192:
        p.error("a mission keeps at most 8,192 items (MAX_MISSION_ITEMS): lower --rate/--burst")
    with tempfile.TemporaryDirectory(prefix="liaison-mstore-") as d:
        result = asyncio.run(run(args, Path(d)))
    pa, bu, ar = result["paced"], result["burst"], result["after_restart"]
    print(
        f"paced {pa['items']} at {pa['rate_sent']}/s: peak queue {pa['peak_queue']},"
        f" dropped {pa['dropped']}, caught up {pa['catch_up_after_last_s']} s after the last"
    )
    print(
        f"burst {bu['items']}: published {bu['published_per_s']}/s, persisted"
        f" {bu['persisted_per_s']}/s, peak queue {bu['peak_queue']}, dropped {bu['dropped']}"
    )
    dr = result["drain"]
    print(
        f"drain {dr['writes']} writes waiting: flushed in {dr['flush_s']} s, {dr['writes_per_s']}/s"
    )
    print(f"after restart: {ar['items']} items, {ar['add_changes']} ADD_CONTENT changes")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
