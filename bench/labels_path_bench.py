"""In-process benchmark: the CPU of the labelled path, labels on against off.

One real :class:`liaison.router.Router` with N subscribers (in-memory, each renders the XML it is
handed, as a stream session does), fed ATAK-style position reports parsed from bytes. Labels on:
the policy ``bench/labels-policy.toml`` (every report gets the listener default label), a real
:class:`liaison.gate.Gate` and a real audit log (``AuditLog``, with ``fsync=False`` so the figure
is CPU, not disk). Off and on alternate ``--rounds`` times; the median CPU per published event
(``time.process_time``) of each is printed. Subscribers are of the label's organisation (USA),
as in ``run_compare.py`` with that policy, so no ``release`` record is written; ``--foreign N``
makes N of them another organisation's (UKR, SECRET) to include those records.

    .venv/bin/python bench/labels_path_bench.py
    PYTHONPATH=<other tree>/src .venv/bin/python bench/labels_path_bench.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from liaison.audit import AuditLog
from liaison.gate import Gate, load_gate_config
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.event import Event
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from liaison.router import Outgoing, Router

POLICY = Path(__file__).with_name("labels-policy.toml")
FOREIGN_PROFILE = """
[authz.profiles.ukr-secret]
classification = "SECRET"
REL = ["UKR"]
"""
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


def report(k: int, clients: int) -> bytes:
    return (
        f'<event version="2.0" uid="U-{k % clients}" type="a-f-G-U-C" how="m-g"'
        f' time="2023-11-14T22:{13 + k // 3000 % 40:02d}:{k // clients % 60:02d}Z"'
        ' start="2023-11-14T22:13:20Z" stale="2023-11-14T23:23:20Z">'
        '<point lat="1.0" lon="2.0" hae="0" ce="9" le="9"/><detail>'
        f'<contact callsign="C{k % clients}" endpoint="*:-1:stcp"/>'
        '<__group name="Cyan" role="Team Member"/><status battery="90"/>'
        '<takv device="x" platform="ATAK" os="30" version="4.8"/>'
        '<track speed="0" course="0"/><precisionlocation altsrc="GPS" geopointsrc="GPS"/>'
        "</detail></event>"
    ).encode()


def run(on: bool, events: list[Event], clients: int, foreign: int, tmp: Path) -> float:
    gate = None
    log = None
    if on:
        cfg = load_gate_config(POLICY.read_text() + (FOREIGN_PROFILE if foreign else ""))
        log = AuditLog.open(tmp / f"audit-{time.monotonic_ns()}.log", None, fsync=False)
        gate = Gate(cfg, audit=log, clock_ms=lambda: NOW)
    r = Router(metrics=Metrics(), clock_ms=lambda: NOW, gate=gate, latest=MemoryLatestState())
    subs = []
    for i in range(clients):
        if gate is None:
            p = Principal(name=f"anon{i}", in_groups=GROUPS, out_groups=GROUPS)
        else:
            ukr = i < foreign
            p = Principal(
                name=f"anon{i}",
                org="UKR" if ukr else "USA",
                auths=gate.for_profile("ukr-secret" if ukr else "usa-secret", "tcp"),
                listener="tcp",
                in_groups=GROUPS,
                out_groups=GROUPS,
            )
        s = Client(p)
        r.attach(s)
        subs.append(s)
    t0 = time.process_time()
    for k, e in enumerate(events):
        r.publish(e, subs[clients - 1 - k % (clients - foreign)])
    per = (time.process_time() - t0) / len(events)
    if log is not None:
        log.close()
    return per


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--events", type=int, default=2000, help="events per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--foreign", type=int, default=0, help="subscribers of another org")
    args = ap.parse_args(argv)
    events = [cot_xml.parse_event(report(k, args.clients)) for k in range(args.events)]
    off: list[float] = []
    on: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            off.append(run(False, events, args.clients, args.foreign, Path(tmp)))
            on.append(run(True, events, args.clients, args.foreign, Path(tmp)))
    m_off, m_on = statistics.median(off), statistics.median(on)
    deliveries = args.clients - 1
    print(
        f"clients {args.clients} (foreign {args.foreign})  us/event off {m_off * 1e6:.1f}"
        f"  on {m_on * 1e6:.1f}  on-off per delivery {(m_on - m_off) / deliveries * 1e6:.2f} us"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
