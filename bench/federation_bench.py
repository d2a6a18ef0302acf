"""Federation link benchmark: events/s through the outbound guard, and backlog drain time.

1. ``guard``: OutboundGuard.check (label decision, type and detail allowlists, loop check,
   rendering and the independent byte-level re-check) on a stream of labelled position
   reports, chats and markers, one core, no I/O.
2. ``drain``: two federation endpoints in this process, joined by real mutual TLS on
   127.0.0.1 with certificates made for the run: the sender's persistent outbox holds N
   released events (queued while the link was down); the clock runs from the moment the link
   is dialled until the peer has acknowledged the last one. The receiver validates every event
   (parse, label, originate rule, provenance), audits it and routes it into a real Router.

    .venv/bin/python bench/federation_bench.py    # 20,000 guard events, 100,000 backlog
    .venv/bin/python bench/federation_bench.py --backlog 10000 --json

Goals (issue 5): the guard passes >= 20,000 events/s; a 100,000-event backlog drains in < 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from liaison.audit import AuditLog  # noqa: E402
from liaison.federation.config import federation_from_table  # noqa: E402
from liaison.federation.guard import OutboundGuard, Release  # noqa: E402
from liaison.federation.outbox import Outbox, QueuedRelease, outbox_path  # noqa: E402
from liaison.federation.supervisor import Federation  # noqa: E402
from liaison.identity.ca import ensure_server_pki  # noqa: E402
from liaison.identity.certs import fingerprint_sha256, load_server_cert  # noqa: E402
from liaison.latest import MemoryLatestState  # noqa: E402
from liaison.metrics import Metrics  # noqa: E402
from liaison.model import labels  # noqa: E402
from liaison.model.event import Event  # noqa: E402
from liaison.model.labels import Label  # noqa: E402
from liaison.model.policy import load_policy  # noqa: E402
from liaison.protocol import cot_xml  # noqa: E402
from liaison.router import Router  # noqa: E402

POLICY = load_policy((REPO / "examples" / "policy.toml").read_text())
T0 = 1_764_072_000_000


def _label(cls: str, origin: str, rel: list[str]) -> Label:
    return Label(
        policy_id=POLICY.id,
        classification=cls,
        categories={"REL": frozenset(rel)},
        originator=origin,
        created_ms=T0,
    )


LABELS = [
    _label("SECRET", "USA", ["USA", "UKR"]),
    _label("UNCLASSIFIED", "USA", ["USA", "LIAISON"]),
    _label("CONFIDENTIAL", "USA", ["USA", "UKR", "LIAISON"]),
]


def make_events(n: int, now_ms: int) -> list[Event]:
    """Labelled events like a busy partner link carries: 80 % position reports of 200 units,
    10 % chats, 10 % markers; every one releasable to the partner."""
    t = cot_xml.format_time(now_ms)
    stale = cot_xml.format_time(now_ms + 3_600_000)
    out: list[Event] = []
    for i in range(n):
        lab = labels.seclabel_to_xml(POLICY, LABELS[i % len(LABELS)])
        kind = i % 10
        if kind == 0:
            typ = "b-t-f"
            detail = (
                f'<__chat chatroom="All Chat Rooms" senderCallsign="U{i % 200}"><chatgrp'
                f' uid0="u{i % 200}" uid1="All Chat Rooms"/></__chat><link uid="u{i % 200}"/>'
                f"<remarks>message {i}</remarks>"
            )
            uid = f"GeoChat.u{i % 200}.{i}"
        elif kind == 1:
            typ, uid = "a-h-G", f"marker-{i}"
            detail = f'<contact callsign="M{i}"/><remarks>marker {i}</remarks>'
        else:
            typ, uid = "a-f-G-U-C", f"u{i % 200}"
            detail = (
                f'<contact callsign="U{i % 200}" endpoint="*:-1:stcp"/><__group name="Cyan"'
                f' role="Team Member"/><track course="90.0" speed="1.5"/><_flow-tags_ x="1"/>'
            )
        xml = (
            f'<event version="2.0" uid="{uid}" type="{typ}" how="m-g" time="{t}" start="{t}"'
            f' stale="{stale}"><point lat="50.4" lon="30.5" hae="100.0" ce="9.9" le="9.9"/>'
            f"<detail>{detail}{lab}</detail></event>"
        )
        out.append(cot_xml.parse_event(xml.encode()))
    return out


def peer_table(name: str, **extra: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": name,
        "release_ceiling": {"classification": "SECRET", "REL": ["UKR", "LIAISON"]},
        "originate": {"org": "USA", "classification": "SECRET", "REL": ["USA", "LIAISON"]},
        "allow_types": ["a-", "b-t-f", "b-a-o", "t-x-d-d"],
        "coalesce": False,
    }
    table.update(extra)
    return table


def bench_guard(n: int) -> dict[str, float]:
    fed = federation_from_table(
        {
            "server_id": "usa-srv",
            "listen": "off",
            "peer": [peer_table("ukr", dial="127.0.0.1:9", ca_file="x", fingerprint="a" * 64)],
        },
        POLICY,
        default_server_id="x",
    )
    guard = OutboundGuard(policy=POLICY, peer=fed.peers[0], server_id="usa-srv")
    events = make_events(n, int(time.time() * 1000))
    guard.check(events[0])  # warm the caches the way a running link has them
    start = time.perf_counter()
    cpu0 = time.process_time()
    released = sum(1 for e in events if isinstance(guard.check(e), Release))
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - start
    assert released == n, f"only {released} of {n} released"
    return {
        "events": n,
        "wall_s": wall,
        "events_per_s": n / wall,
        "cpu_us_per_event": cpu / n * 1e6,
    }


async def bench_drain(n: int, root: Path) -> dict[str, float]:
    a_pki = ensure_server_pki(root / "usa", public_host="localhost")
    b_pki = ensure_server_pki(root / "ukr", public_host="localhost")
    fp_a = fingerprint_sha256(load_server_cert(a_pki))
    fp_b = fingerprint_sha256(load_server_cert(b_pki))

    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    # Queue the backlog as the running link would have while the partner was unreachable.
    sender_cfg = federation_from_table(
        {
            "server_id": "usa-srv",
            "listen": "off",
            "window": 1000,
            "peer": [
                peer_table("ukr", dial="127.0.0.1:1", ca_file=str(b_pki.ca_cert), fingerprint=fp_b)
            ],
        },
        POLICY,
        default_server_id="x",
    )
    guard = OutboundGuard(policy=POLICY, peer=sender_cfg.peers[0], server_id="usa-srv")
    box = Outbox.open(outbox_path(root / "usa", "ukr"))
    fill_start = time.perf_counter()
    chunk = 1000
    for start in range(0, n, chunk):
        batch = []
        for e in make_events(min(chunk, n - start), now_ms()):
            v = guard.check(e)
            assert isinstance(v, Release)
            batch.append(
                QueuedRelease(
                    payload=v.payload,
                    sha256=v.sha256,
                    label_id=v.label_id,
                    uid=v.uid,
                    type=v.type,
                    priority=v.priority,
                    coalesce_key=None,
                    queued_ms=now_ms(),
                )
            )
        box.put_many(batch)
    fill_s = time.perf_counter() - fill_start
    box.close()

    receiver_cfg = federation_from_table(
        {
            "server_id": "ukr-srv",
            "listen": "127.0.0.1:0",
            "peer": [
                peer_table(
                    "usa",
                    accept=True,
                    ca_file=str(a_pki.ca_cert),
                    fingerprint=fp_a,
                    release_ceiling={"classification": "SECRET", "REL": ["USA"]},
                )
            ],
        },
        POLICY,
        default_server_id="x",
    )
    routers = [
        Router(metrics=Metrics(), clock_ms=now_ms, latest=MemoryLatestState()) for _ in range(2)
    ]
    audits = [
        AuditLog.open(root / "usa" / "audit.log", None),
        AuditLog.open(root / "ukr" / "audit.log", None),
    ]
    receiver = Federation(
        config=receiver_cfg,
        policy=POLICY,
        router=routers[1],
        audit=audits[1],
        data_dir=root / "ukr",
        server_cert=b_pki.server_cert,
        server_key=b_pki.server_key,
        clock_ms=now_ms,
    )
    bound = await receiver.start()
    assert bound is not None
    sender_cfg = federation_from_table(
        {
            "server_id": "usa-srv",
            "listen": "off",
            "window": 1000,
            "peer": [
                peer_table(
                    "ukr",
                    dial=f"127.0.0.1:{bound.port}",
                    ca_file=str(b_pki.ca_cert),
                    fingerprint=fp_b,
                )
            ],
        },
        POLICY,
        default_server_id="x",
    )
    sender = Federation(
        config=sender_cfg,
        policy=POLICY,
        router=routers[0],
        audit=audits[0],
        data_dir=root / "usa",
        server_cert=a_pki.server_cert,
        server_key=a_pki.server_key,
        clock_ms=now_ms,
    )
    await sender.start()
    link = sender.links["ukr"]
    assert link.outbox.backlog == n
    cpu0 = time.process_time()
    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(receiver.run()), tg.create_task(sender.run())]
        deadline = start + 300
        # Polling, bounded: the benchmark observes the link from outside, as an operator would.
        while link.outbox.backlog > 0 and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        drain_s = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        accepted = receiver.links["usa"].status.counts["accepted"]
        for t in tasks:
            t.cancel()
    for a in audits:
        a.close()
    assert link.outbox.backlog == 0, "backlog not drained within 300 s"
    assert accepted == n, f"receiver accepted {accepted} of {n}"
    return {
        "events": n,
        "queue_fill_s": fill_s,
        "drain_s": drain_s,
        "events_per_s": n / drain_s,
        "cpu_us_per_event": cpu / n * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guard-events", type=int, default=20_000)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    guard = bench_guard(args.guard_events)
    with tempfile.TemporaryDirectory(prefix="liaison-fedbench-") as tmp:
        drain = asyncio.run(bench_drain(args.backlog, Path(tmp)))
    result = {
        "guard": guard,
        "drain": drain,
        "load_avg": os.getloadavg(),
        "goals": {
            "guard_events_per_s >= 20000": guard["events_per_s"] >= 20_000,
            "drain_100k_s < 60": drain["drain_s"] * 100_000 / args.backlog < 60,
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"guard: {guard['events_per_s']:,.0f} events/s"
            f" ({guard['cpu_us_per_event']:.1f} us CPU/event, {guard['events']:,} events)"
        )
        print(
            f"drain: {drain['events']:,} events in {drain['drain_s']:.1f} s"
            f" ({drain['events_per_s']:,.0f} events/s, {drain['cpu_us_per_event']:.1f} us CPU/event"
            f" for both ends; queueing took {drain['queue_fill_s']:.1f} s)"
        )
        for goal, ok in result["goals"].items():  # type: ignore[attr-defined]
            print(f"{'PASS' if ok else 'FAIL'} {goal}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
