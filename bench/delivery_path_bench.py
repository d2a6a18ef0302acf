"""In-process benchmark: the Python cost of one delivery, without sockets or an event loop's I/O.

One real :class:`liaison.router.Router` (no labels) with N real
:class:`liaison.session.StreamSession` objects, each on a transport that only counts its writes.
ATAK-style reports (parsed once, before timing) are published from the sessions in turn; after
every ``--burst`` reports each session with output is flushed once, as the write batcher does
(one write per session per flush). The median CPU time (``time.process_time``) per delivery over
``--rounds`` rounds is printed: routing, the access decision, the outbound queue, the flush and
its join, all in a warm cache. Set against ``delivery_cost_bench.py`` (the same work in a real
server process, with its system calls) it shows how much of a delivery is the Python path itself
(docs/performance.md, "Issue 11: what is left, measured").

    .venv/bin/python bench/delivery_path_bench.py
    .venv/bin/python bench/delivery_path_bench.py --clients 200 --events 2000 --burst 2
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labels_path_bench import report
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from liaison.router import Router
from liaison.session import SessionMetrics, SessionRegistry, SessionSettings, StreamSession

NOW = 1_700_000_000_000
GROUPS = frozenset({"__ANON__"})


class CountingTransport(asyncio.Transport):
    """Takes every write and counts it; never closing, never paused."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.1", 4242) if name == "peername" else default


class Batcher:
    """The write batcher's bookkeeping without its timer: :meth:`run` flushes what was marked."""

    def __init__(self) -> None:
        self.dirty: list[StreamSession] = []

    def mark(self, session: StreamSession) -> None:
        self.dirty.append(session)

    def run(self) -> None:
        dirty, self.dirty = self.dirty, []
        for session in dirty:
            session.flush()


def sessions(router: Router, n: int, batcher: Batcher) -> list[StreamSession]:
    metrics = Metrics()
    registry = SessionRegistry(lambda: NOW)
    registry.batcher = batcher  # type: ignore[assignment]
    session_metrics = SessionMetrics(metrics)
    out = []
    for i in range(n):
        who = Principal(name=f"anon{i}", in_groups=GROUPS, out_groups=GROUPS)

        def resolve(cert: object, peer: object, who: Principal = who) -> Principal:
            return who

        s = StreamSession(
            router=router,
            settings=SessionSettings(listener="tcp", server_version="bench"),
            metrics=session_metrics,
            clock_ms=lambda: NOW,
            resolve_principal=resolve,
            authenticate=None,
            registry=registry,
        )
        s.connection_made(CountingTransport())
        out.append(s)
    return out


async def run(clients: int, events: int, burst: int, rounds: int) -> tuple[float, float]:
    router = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    batcher = Batcher()
    subs = sessions(router, clients, batcher)
    parsed = [cot_xml.parse_event(report(k, clients)) for k in range(events)]
    for s in subs:  # what a session wrote on opening (the protocol offer) is not a delivery
        s._transport.writes = 0  # type: ignore[union-attr]
    per: list[float] = []
    for _ in range(rounds):
        t0 = time.process_time()
        for k, event in enumerate(parsed):
            router.publish(event, subs[k % clients])
            if k % burst == burst - 1:
                batcher.run()
        batcher.run()
        per.append((time.process_time() - t0) / (events * (clients - 1)))
    writes = sum(s._transport.writes for s in subs)  # type: ignore[union-attr]
    return statistics.median(per), writes / (rounds * events * (clients - 1))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--events", type=int, default=2000, help="reports per round")
    ap.add_argument("--burst", type=int, default=2, help="reports between two flushes")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    per, writes = asyncio.run(run(args.clients, args.events, args.burst, args.rounds))
    print(
        f"clients {args.clients}  reports/flush {args.burst}  us/delivery {per * 1e6:.3f}"
        f"  writes/delivery {writes:.3f}"
    )
    print("reproduce: .venv/bin/python bench/delivery_path_bench.py " + shlex.join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
