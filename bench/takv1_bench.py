"""TAK federation v1 benchmark: backlog drain over a v1 link, and what bounds it.

Two federation endpoints in this process, both speaking ``protocol = "tak-v1"``, joined by real
mutual TLS on 127.0.0.1 with certificates made for the run: the sender's persistent outbox holds
N released events (queued while the link was down, the same mix as bench/federation_bench.py);
the clock runs from the moment the link is dialled until every row has **settled** (left the
outbox: the receiver's TCP took it and the connection stayed up ``SETTLE_S`` more, see
docs/protocol.md "TAK federation v1"). The receiver parses every frame, checks it for
duplicates, converts it to CoT, validates (label, originate rule, provenance), audits and
routes it into a real Router.

    .venv/bin/python bench/takv1_bench.py                  # 20,000 events, window 1000
    .venv/bin/python bench/takv1_bench.py --window 10000 --json

v1 has no acknowledgement, so at most ``window`` rows are unsettled at a time and a link moves
at most about ``window / SETTLE_S`` rows per second: the window is the knob.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from federation_bench import POLICY, make_events, peer_table  # noqa: E402
from liaison.audit import AuditLog  # noqa: E402
from liaison.federation.config import FederationConfig, federation_from_table  # noqa: E402
from liaison.federation.guard import OutboundGuard, Release  # noqa: E402
from liaison.federation.outbox import Outbox, QueuedRelease, outbox_path  # noqa: E402
from liaison.federation.supervisor import Federation  # noqa: E402
from liaison.identity.ca import ensure_server_pki  # noqa: E402
from liaison.identity.certs import fingerprint_sha256, load_server_cert  # noqa: E402
from liaison.latest import MemoryLatestState  # noqa: E402
from liaison.metrics import Metrics  # noqa: E402
from liaison.router import Router  # noqa: E402


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def bench_drain(n: int, window: int, root: Path) -> dict[str, float]:
    a_pki = ensure_server_pki(root / "usa", public_host="localhost")
    b_pki = ensure_server_pki(root / "ukr", public_host="localhost")
    fp_a = fingerprint_sha256(load_server_cert(a_pki))
    fp_b = fingerprint_sha256(load_server_cert(b_pki))

    def sender_config(port: int) -> FederationConfig:
        return federation_from_table(
            {
                "server_id": "usa-srv",
                "listen": "off",
                "window": window,
                "peer": [
                    peer_table(
                        "ukr",
                        dial=f"127.0.0.1:{port}",
                        ca_file=str(b_pki.ca_cert),
                        fingerprint=fp_b,
                        protocol="tak-v1",
                    )
                ],
            },
            POLICY,
            default_server_id="x",
        )

    cfg = sender_config(1)
    guard = OutboundGuard(policy=POLICY, peer=cfg.peers[0], server_id="usa-srv")
    box = Outbox.open(outbox_path(root / "usa", "ukr"))
    for first in range(0, n, 1000):
        batch = []
        for e in make_events(min(1000, n - first), now_ms()):
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
    box.close()

    # The receiver names its peer by the sender's server id: with no provenance fields of its
    # own, v1 carries Liaison's <__federation origin="usa-srv"> in the detail.
    receiver_cfg = federation_from_table(
        {
            "server_id": "ukr-srv",
            "listen": "127.0.0.1:0",
            "peer": [
                peer_table(
                    "usa-srv",
                    accept=True,
                    ca_file=str(a_pki.ca_cert),
                    fingerprint=fp_a,
                    protocol="tak-v1",
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
    sender = Federation(
        config=sender_config(bound.port),
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
    first_all: float | None = None
    peer = receiver.links["usa-srv"].status
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(receiver.run()), tg.create_task(sender.run())]
        deadline = start + 300
        # Polling, bounded: the benchmark observes the link from outside, as an operator would.
        while link.outbox.backlog > 0 and time.perf_counter() < deadline:
            if first_all is None and peer.counts["accepted"] + peer.counts["duplicates"] >= n:
                first_all = time.perf_counter() - start
            await asyncio.sleep(0.01)
        drain_s = time.perf_counter() - start
        # Settled is not handled: with a large window the receiver may still be working through
        # frames its TCP took (bounded wait).
        while (  # noqa: ASYNC110
            peer.counts["accepted"] + peer.counts["duplicates"] < n
            and time.perf_counter() < deadline
        ):
            await asyncio.sleep(0.01)
        if first_all is None:
            first_all = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        counts = dict(peer.counts)
        for t in tasks:
            t.cancel()
    for a in audits:
        a.close()
    assert link.outbox.backlog == 0, "backlog not drained within 300 s"
    # The mix repeats position reports of one uid with the same time within a batch: those are
    # byte-identical frames, which the receiver drops as duplicates (counted), by design.
    got = counts["accepted"] + counts["duplicates"]
    assert got == n and counts["rejections"] == 0, f"receiver accounted for {got} of {n}"
    return {
        "events": n,
        "window": window,
        "received_all_s": first_all,
        "drain_s": drain_s,
        "events_per_s": n / drain_s,
        "cpu_us_per_event": cpu / n * 1e6,
        "duplicates_dropped": counts["duplicates"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="liaison-takv1-bench-") as tmp:
        result = asyncio.run(bench_drain(args.events, args.window, Path(tmp)))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"v1 drain: {result['events']:.0f} events, window {result['window']:.0f}:"
            f" all received in {result['received_all_s']:.2f} s, settled in"
            f" {result['drain_s']:.2f} s ({result['events_per_s']:,.0f} events/s,"
            f" {result['cpu_us_per_event']:.0f} us CPU per event)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
