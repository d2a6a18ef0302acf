"""Router-only benchmark: the CPU one addressed event (``marti/dest uid``) costs with N clients.

Builds a real :class:`liaison.router.Router` (no labels, in-memory latest state) with N attached
subscribers that made themselves known by a position report (uid and callsign), then publishes
directed chats, each to one client by uid, and reports the process CPU per event. No sockets:
this isolates finding the recipients (``Router._plan_explicit``) from TLS and delivery. Run it
against another tree with ``PYTHONPATH=<tree>/src``.

    .venv/bin/python bench/explicit_bench.py --clients 2000 10000
"""

from __future__ import annotations

import argparse
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.event import Event, make_event
from liaison.model.principal import Principal
from liaison.router import Outgoing, Router

NOW = 1_700_000_000_000


class Client:
    """An attached subscriber that counts what it is handed."""

    def __init__(self, name: str) -> None:
        g = frozenset({"__ANON__"})
        self.principal = Principal(name=name, in_groups=g, out_groups=g)
        self.client_uid: str | None = None
        self.callsign: str | None = None
        self.got = 0

    def deliver(self, out: Outgoing) -> None:
        self.got += 1


def event(uid: str, cot_type: str, detail: str) -> Event:
    return make_event(
        uid=uid,
        type=cot_type,
        how="m-g",
        time=NOW,
        start=NOW,
        stale=NOW + 60_000,
        lat=1.0,
        lon=2.0,
        detail=ET.fromstring(f"<detail>{detail}</detail>"),
    )


def run(clients: int, events: int) -> tuple[float, int]:
    r = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    subs = [Client(f"user{i}") for i in range(clients)]
    for i, s in enumerate(subs):
        r.attach(s)
        contact = f'<contact callsign="CS-{i}" endpoint="*:-1:stcp"/>'
        # Addressed to nobody, so connecting costs no fan-out to everyone.
        r.publish(event(f"UID-{i}", "a-f-G-U-C", contact + '<marti><dest uid="x"/></marti>'), s)
    chats = [
        event(f"chat-{n}", "b-t-f", f'<marti><dest uid="UID-{(n * 7919) % clients}"/></marti>')
        for n in range(events)
    ]
    sender = subs[0]
    t0 = time.process_time()
    delivered = sum(r.publish(c, sender) for c in chats)
    return (time.process_time() - t0) / events, delivered


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--events", type=int, default=2000)
    args = ap.parse_args(argv)
    for n in args.clients:
        per, delivered = run(n, args.events)
        print(f"clients {n:6}  us/addressed event {per * 1e6:8.1f}  delivered {delivered}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
