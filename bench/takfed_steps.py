"""CPU per event of each Liaison step on the way out to a TAK federation v2 peer, without gRPC.

The steps ``bench/takfed_bench.py`` runs in its process, timed one by one with
``time.process_time`` on the same event mix (80 % position reports, 10 % markers, 10 % chats,
all releasable): the CoT parse on ingest; the guard (``OutboundGuard.check``: decision,
rendering and its re-check of the rendered bytes, parsed again); the translation to the
serialized ``FederatedEvent`` a TAK link makes when it queues a release, from the tree the
guard's re-check read (``fig_link.pretranslate``; timed as the guard with the translation, as
the link's flush runs them, less the guard alone, since the tree is not kept); the audit
``release`` record (``audit.make_record``, hash chain); and the send side as the v2 wire runs
it for a row with that translation (``PeerLink._send_check`` then ``fig_link.encode_rows``:
the re-check of the serialized message read back, contact entries). Each step runs over all
events, ``--rounds`` times; the best round is reported (the machine is shared). Not in the
total, for comparison: the send side of a row with no translation (after a restart): parsed,
re-checked, translated and re-checked from the serialized bytes at send time.

Then the floor of the wire itself (``--wire``, default 5,000): messages already translated and
serialized are written on the live session's ``ServerEventStream`` (``fig_h2``: HTTP/2 framing
with h2, then TLS), half of them one per ``await call.write``, the other half 100 per write (as
the session writes a take of rows), and the process's CPU per message (every thread, the
peer's receipt not included: it runs in another process) is reported for each half, with the
messages per second until the last was written.

    .venv/bin/python bench/takfed_steps.py --events 5000 --rounds 3
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

# Messages per write in the batched half of the wire floor.
WIRE_BATCH = 100


async def _measure(events: int, rounds: int, wire: int, root: Path) -> dict[str, Any]:
    from liaison.federation import fig_codec, fig_link, takv2
    from liaison.federation.outbox import Outgoing
    from liaison.protocol import cot_xml

    # The session of the link, to write on its ServerEventStream directly (--wire).
    sessions: list[Any] = []
    run = takv2.FigClientSession.run

    async def noted(self: Any, tg: asyncio.TaskGroup) -> None:
        sessions.append(self)
        await run(self, tg)

    takv2.FigClientSession.run = noted  # type: ignore[method-assign]

    bench = takfed_bench.Bench(root)
    await bench.start()
    try:
        link = bench.link
        stamp = str(time.time_ns()).encode()
        raw = [
            x.replace(b"{ns}", stamp, 1) for _, x in takfed_bench._events(bench.policy, events, 0)
        ]
        best: dict[str, float] = {}

        def step(name: str, fn: Any, items: list[Any]) -> list[Any]:
            out = []
            t0 = time.process_time()
            for item in items:
                out.append(fn(item))
            us = (time.process_time() - t0) / len(items) * 1e6
            best[name] = min(best.get(name, us), us)
            return out

        from liaison import audit as audit_mod

        head = audit_mod.ChainHead()
        for _ in range(rounds):
            parsed = step("ingest_parse", cot_xml.parse_event, raw)
            verdicts = step("guard_check", link.guard.check, parsed)
            translator = link.translator
            if translator is None:
                raise RuntimeError("a TAK link translates when it queues")

            def both(event: Any, translate: Any = translator) -> Any:
                # What the link's flush does for a TAK wire: the guard, then the translation
                # from the tree its re-check read (dropped at once, as the flush drops it).
                _verdict, tree = link.guard.check_parsed(event)
                return translate(tree, ())

            done = step("guard_check_and_translate_at_queue", both, parsed)
            best["translate_at_queue"] = min(
                best.get("translate_at_queue", 1e9),
                best["guard_check_and_translate_at_queue"] - best["guard_check"],
            )

            def record(v: Any) -> Any:
                return audit_mod.make_record(
                    head,
                    time_ms=1,
                    kind="release",
                    fields=audit_mod.release_record(
                        path="federation",
                        uid=v.uid,
                        type=v.type,
                        label_id=v.label_id,
                        originator=v.originator,
                        to_org="UKR",
                        recipients=["federation:ukr"],
                        sha256=v.sha256,
                        peer="ukr",
                        priority=v.priority,
                    )[1],
                )

            step("audit_record", record, verdicts)
            rows = [
                Outgoing(
                    seq=i + 1,
                    priority=v.priority,
                    payload=v.payload,
                    sha256=v.sha256,
                    label_id=v.label_id,
                    uid=v.uid,
                    type=v.type,
                )
                for i, v in enumerate(verdicts)
            ]
            for v, d in zip(verdicts, done, strict=True):
                if d is not None:
                    link._translated[v.payload] = d
            book = fig_link.ContactBook()

            def send(row: Outgoing, book: fig_link.ContactBook = book) -> list[bytes]:
                if not link._send_check(row.payload, row.label_id, row.uid, row.type):
                    raise RuntimeError("send check refused a release")
                return fig_link.encode_rows(link, row, book)

            written = step("send_check_recheck_read_back", send, rows)
            if not all(written):
                raise RuntimeError("a release was refused")
        # For comparison (not in the total): a row taken with no translation made when it was
        # queued (after a restart, say): parsed, re-checked and translated at send time.
        cold_book = fig_link.ContactBook()

        def cold(row: Outgoing) -> list[bytes]:
            if not link._send_check(row.payload, row.label_id, row.uid, row.type):
                raise RuntimeError("send check refused a release")
            return fig_link.encode_rows(link, row, cold_book)

        timings = {k: v for k, v in best.items() if k != "guard_check_and_translate_at_queue"}
        step("cold_send_check_translate_recheck_read_back", cold, rows)
        cold_us = best.pop("cold_send_check_translate_recheck_read_back")
        best = timings
        best["total"] = sum(best.values())
        best["cold_send_check_translate_recheck_read_back"] = cold_us
        if wire > 0:
            messages = []
            for i, xml in takfed_bench._events(bench.policy, wire, events):
                release = link.guard.check(cot_xml.parse_event(xml.replace(b"{ns}", b"0", 1)))
                payload = getattr(release, "payload", None)
                if payload is None:
                    raise RuntimeError("the guard refused an event")
                fed = fig_codec.release_to_federated(payload, server_id="usa-srv", max_hops=1)
                fed.event.uid = f"w{i}-{time.time_ns()}"
                messages.append(fed.SerializeToString())
            call = sessions[-1]._out
            half = len(messages) // 2
            # One message per write, then the same number in writes of WIRE_BATCH messages (as
            # the session writes a take of rows).
            for name, parts in (
                ("wire_one_by_one", [[m] for m in messages[:half]]),
                (
                    "wire_batched",
                    [messages[k : k + WIRE_BATCH] for k in range(half, len(messages), WIRE_BATCH)],
                ),
            ):
                count = sum(len(p) for p in parts)
                cpu0, wall0 = time.process_time(), time.monotonic()
                for part in parts:
                    await call.write(part)
                wall = time.monotonic() - wall0
                got = await bench.collect(count)
                best[f"{name}_write"] = (time.process_time() - cpu0) / count * 1e6
                best[f"{name}_messages_per_s"] = count / wall
                best[f"{name}_received"] = len(got)
    finally:
        await bench.stop()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wire", type=int, default=5000, help="messages for the wire floor")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="liaison-takfedsteps-") as tmp:
        best = asyncio.run(_measure(args.events, args.rounds, args.wire, Path(tmp)))
    print(json.dumps({"us_cpu_per_event": best, "load_avg": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
