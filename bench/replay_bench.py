"""In-process benchmark: the CPU of replaying the latest state to clients that connect at once.

When a server restarts, or a network comes back, its clients reconnect together and each is
replayed the latest state it may see (``Router.replay_to``): N clients x U uids deliveries in a
few loop turns. One real :class:`liaison.router.Router` holds U uids (published by one sender);
then C subscribers attach and are replayed one after the other, each rendering what it is handed
(as a stream session writes it). Printed: CPU per replayed delivery and for the whole storm
(``time.process_time``), median of ``--rounds``. ``--labels`` turns the label policy of
``bench/labels-policy.toml`` on (every item labelled, every replay decided and audited).

    .venv/bin/python bench/replay_bench.py --uids 5000 --clients 200
    .venv/bin/python bench/replay_bench.py --uids 5000 --clients 200 --labels
    PYTHONPATH=<other tree>/src .venv/bin/python bench/replay_bench.py ...
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from liaison.audit import AuditLog
from liaison.gate import Gate, load_gate_config
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from liaison.router import Outgoing, Router

POLICY = Path(__file__).with_name("labels-policy.toml")
NOW = 1_700_000_000_000
GROUPS = frozenset({"__ANON__"})


class Client:
    """A subscriber that renders what it is handed, as a stream session writes it."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.client_uid: str | None = None
        self.callsign: str | None = None
        self.bytes = 0

    def deliver(self, out: Outgoing) -> None:
        self.bytes += len(out.xml())


def report(k: int) -> bytes:
    return (
        f'<event version="2.0" uid="U-{k}" type="a-n-A-C-F" how="m-g"'
        ' time="2023-11-14T22:13:20Z" start="2023-11-14T22:13:20Z" stale="2023-11-14T23:23:20Z">'
        f'<point lat="{50 + k % 100 / 100}" lon="{30 + k // 100 / 100}" hae="1000" ce="9" le="9"/>'
        f'<detail><contact callsign="AC{k}"/><track speed="200" course="{k % 360}"/>'
        "</detail></event>"
    ).encode()


def principal(i: int, gate: Gate | None) -> Principal:
    if gate is None:
        return Principal(name=f"anon{i}", in_groups=GROUPS, out_groups=GROUPS)
    return Principal(
        name=f"anon{i}",
        org="USA",
        auths=gate.for_profile("usa-secret", "tcp"),
        listener="tcp",
        in_groups=GROUPS,
        out_groups=GROUPS,
    )


def storm(uids: int, clients: int, labels: bool, tmp: Path) -> tuple[float, int]:
    """CPU seconds of replaying ``uids`` items to ``clients`` new subscribers, and deliveries."""
    gate = None
    log = None
    if labels:
        log = AuditLog.open(tmp / f"audit-{time.monotonic_ns()}.log", None, fsync=False)
        gate = Gate(load_gate_config(POLICY.read_text()), audit=log, clock_ms=lambda: NOW)
    router = Router(metrics=Metrics(), clock_ms=lambda: NOW, gate=gate, latest=MemoryLatestState())
    sender = Client(principal(-1, gate))
    router.attach(sender)
    for k in range(uids):
        router.publish(cot_xml.parse_event(report(k)), sender)
    subs = [Client(principal(i, gate)) for i in range(clients)]
    delivered = 0
    t0 = time.process_time()
    for sub in subs:
        router.attach(sub)
        delivered += router.replay_to(sub)
    spent = time.process_time() - t0
    if log is not None:
        log.close()
    return spent, delivered


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uids", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--labels", action="store_true")
    args = ap.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            spent, delivered = storm(args.uids, args.clients, args.labels, Path(tmp))
            if delivered != args.uids * args.clients:
                print(f"FAIL: {delivered} deliveries, expected {args.uids * args.clients}")
                return 1
            runs.append(spent)
    med = statistics.median(runs)
    n = args.uids * args.clients
    print(
        f"uids {args.uids}  clients {args.clients}  labels {'on' if args.labels else 'off'}"
        f"  storm CPU {med:.2f} s (runs {', '.join(f'{r:.2f}' for r in runs)})"
        f"  per delivery {med / n * 1e6:.2f} us"
    )
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
