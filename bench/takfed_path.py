"""Liaison's whole outbound path to a TAK federation v2 peer, without the network, counted.

What ``bench/takfed_bench.py`` runs in Liaison's process for each event, minus the HTTP/2 and
TLS framing of the wire (``takfed_steps.py --wire``: a few microseconds a message) and the peer:
a real Router, a Federation with one ``tak-v2`` peer (started, never dialled), the event mix of
``takfed_bench`` (80 % position reports, 10 % markers, 10 % chats, all releasable), and per batch
of ``--batch`` events: the CoT parse on ingest and ``Router.publish`` (the router's decision
and fan-out to the link), the link's flush (group mapping, guard with its re-check, the
translation a TAK link makes when it queues, the audit records in one append to a real
``AuditLog``, the outbox insert), then the send side as the v2 wire runs it: the outbox
``take`` with the send-time check, ``fig_link.encode_rows`` (translation or the translation
made when queued, serialization, the re-check of the serialized message read back, contact
entries), and the acknowledgement that deletes the rows. The outbox and the audit log are real
files; their fsyncs are left out (``durable=False``, audit ``fsync=False``) so what is counted
is Liaison's own work, not the disk.

It runs synchronously (no wire, no waiting), so its cost is repeatable: ``--events`` events are
measured with ``time.process_time`` (CPU per event), and two runs under callgrind with
different ``--events`` give instructions per event from the difference of the totals, which
does not depend on the load of a shared machine:

    .venv/bin/python bench/takfed_path.py --events 10000
    .venv/bin/python bench/takfed_path.py --events 10 --pki /tmp/takfed-pki   # the certificates
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p .venv/bin/python \\
        bench/takfed_path.py --events 300 --warm 0 --pki /tmp/takfed-pki
    # then --events 1300 the same way: instructions per event = (Ir(1300) - Ir(300)) / 1000
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import takfed_bench

# Events published between two flushes (takfed_bench.py publishes 200 between two yields).
BATCH = 200


async def _run(events: int, warm: int, batch: int, root: Path, pki: Path) -> dict[str, Any]:
    from liaison.audit import AuditLog
    from liaison.federation import fig_link
    from liaison.federation.config import federation_from_table
    from liaison.federation.supervisor import Federation
    from liaison.identity.ca import ensure_server_pki
    from liaison.identity.certs import fingerprint_sha256, load_server_cert
    from liaison.latest import MemoryLatestState
    from liaison.metrics import Metrics
    from liaison.protocol import cot_xml
    from liaison.router import Router

    policy = takfed_bench._policy()
    # Kept in ``pki`` when given: key generation (a random search for primes) would otherwise
    # make the instruction counts of two runs differ by far more than the events cost.
    usa = ensure_server_pki(pki / "usa", public_host="localhost")
    peer = ensure_server_pki(pki / "peer", public_host="127.0.0.1", ca_name="Bench Peer CA")
    config = federation_from_table(
        {
            "server_id": "usa-srv",
            "listen": "off",
            "peer": [
                {
                    "name": "ukr",
                    "dial": "127.0.0.1:9",
                    "ca_file": str(peer.ca_cert),
                    "fingerprint": fingerprint_sha256(load_server_cert(peer)),
                    "protocol": "tak-v2",
                    "release_ceiling": {"classification": "SECRET", "REL": ["UKR", "LIAISON"]},
                    "originate": {"org": "UKR", "classification": "SECRET", "REL": ["UKR"]},
                    "allow_types": ["a-", "b-t-f"],
                    "coalesce": False,
                }
            ],
        },
        policy,
        default_server_id="x",
    )

    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    router = Router(metrics=Metrics(), clock_ms=now_ms, latest=MemoryLatestState())
    (root / "usa").mkdir(parents=True, exist_ok=True)
    audit = AuditLog.open(root / "usa" / "audit.log", None, fsync=False)
    fed = Federation(
        config=config,
        policy=policy,
        router=router,
        audit=audit,
        data_dir=root / "usa",
        server_cert=usa.server_cert,
        server_key=usa.server_key,
        clock_ms=now_ms,
        durable=False,
    )
    await fed.start()
    link = fed.links["ukr"]
    link.outbox.start_connection(0)
    feed = takfed_bench.Feed()
    book = fig_link.ContactBook()
    stamp = str(time.time_ns()).encode()
    written = 0

    def path(xmls: list[bytes]) -> None:
        nonlocal written
        for k in range(0, len(xmls), batch):
            for xml in xmls[k : k + batch]:
                router.publish(cot_xml.parse_event(xml), feed)
            link.flush()
            while True:
                rows = link.outbox.take(1000, check=link._send_check)
                if not rows:
                    break
                for row in rows:
                    written += len(fig_link.encode_rows(link, row, book))
                link._checked.clear()
                ready = getattr(link, "_ready", None)  # (a branch without it: nothing to clear)
                if ready is not None:
                    ready.clear()
                link.outbox.ack(rows[-1].seq)

    try:
        if warm:
            path([x.replace(b"{ns}", stamp, 1) for _, x in takfed_bench._events(policy, warm, 0)])
        xmls = [x.replace(b"{ns}", stamp, 1) for _, x in takfed_bench._events(policy, events, warm)]
        written = 0
        denials0 = link.status.counts["denials"]
        cpu0 = time.process_time()
        path(xmls)
        cpu = time.process_time() - cpu0
        denials = link.status.counts["denials"] - denials0
    finally:
        audit.close()
        for peer_link in fed.links.values():
            peer_link.outbox.close()
    return {
        "events": events,
        "messages_written": written,
        "denials": denials,
        "us_cpu_per_event": cpu / events * 1e6,
        "events_per_cpu_second": events / cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--warm", type=int, default=1000, help="events run first, not measured")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument(
        "--pki", type=Path, default=None, help="keep the certificates here (made on first use)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="liaison-takfedpath-") as tmp:
        pki = args.pki if args.pki is not None else Path(tmp)
        result = asyncio.run(_run(args.events, args.warm, args.batch, Path(tmp), pki))
    result["load_avg"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
