"""One Liaison server with its federation, run as a subprocess inside a network namespace.

Used by test_netns.py (``ip netns exec NS python netns_node.py --dir D --spec SPEC.json``). The
only network connection is the federation link to the partner, whose both ends are inside the
test's namespaces. Events are injected into this server's router by an in-process feed (lines
``emit PHASE UIDS PER_UID RATE`` or ``canary TEXT`` on stdin), and everything the router delivers
locally is appended to ``D/received.log`` as ``PHASE UID N`` lines; the plaintext written to the
partner goes to ``D/wire-out.bin``. SIGTERM shuts the server down cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from liaison import config as config_mod  # noqa: E402
from liaison.app import now_ms, run_server  # noqa: E402
from liaison.audit import AuditLog  # noqa: E402
from liaison.federation.config import federation_from_table  # noqa: E402
from liaison.federation.supervisor import Federation  # noqa: E402
from liaison.model.principal import Principal, PrincipalKind  # noqa: E402
from liaison.protocol import cot_xml  # noqa: E402
from liaison.router import Outgoing  # noqa: E402
from tests.unit.federation.fed_support import POLICY, cot, lab  # noqa: E402

REMARKS = re.compile(r"<remarks>([a-z0-9]+):(\d+):(\d+)</remarks>")


class Feed:
    """A Source for injected events."""

    def __init__(self, org: str) -> None:
        self._principal = Principal(name="feed", kind=PrincipalKind.SERVICE, org=org)

    @property
    def principal(self) -> Principal:
        return self._principal


class Recorder:
    """A Subscriber that appends every delivered phase event to received.log."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._principal = Principal(name="recorder", kind=PrincipalKind.SERVICE)
        self.client_uid: str | None = None
        self.callsign: str | None = None

    @property
    def principal(self) -> Principal:
        return self._principal

    def deliver(self, out: Outgoing) -> None:
        m = REMARKS.search(cot_xml.render_xml(out.event).decode())
        if m is not None:
            self._file.write(f"{m.group(1)} {m.group(2)} {m.group(3)}\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


async def emit(
    router: Any, feed: Feed, org: str, phase: str, uids: int, per_uid: int, rate: float
) -> None:
    label = lab("SECRET", originator=org, REL=["USA", "UKR"])
    for n in range(per_uid):
        for uid in range(uids):
            data = cot(
                uid=f"{phase}-{uid}",
                cot_type="u-d-p",
                label=label,
                detail=f'<contact callsign="{phase}{uid}"/><remarks>{phase}:{uid}:{n}</remarks>',
            )
            router.publish(cot_xml.parse_event(data), feed)
            await asyncio.sleep(1.0 / rate)


def canary(router: Any, feed: Feed, org: str, text: str) -> None:
    for i, label in enumerate(
        (
            lab("SECRET", originator=org, REL=[org]),
            lab("SECRET", originator=org, REL=["USA", "UKR"], HANDLING=["ORCON"]),
            None,
        )
    ):
        data = cot(
            uid=f"canary-{i}-{text}",
            cot_type="u-d-p",
            label=label,
            detail=f'<contact callsign="{text}"/><remarks>{text}</remarks>',
        )
        router.publish(cot_xml.parse_event(data), feed)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--spec", type=Path, required=True)
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    root: Path = args.dir
    config = config_mod.load(
        None,
        {},
        {
            "data_dir": str(root),
            "public_host": spec["host"],
            "tcp": "off",
            "tls": "off",
            "udp": "off",
            "https": "off",
            "enroll": "off",
            "log_level": "info",
        },
    )
    fed_config = federation_from_table(spec["federation"], POLICY, default_server_id="x")
    wire = (root / "wire-out.bin").open("ab")

    def tap(direction: str, data: bytes) -> None:
        if direction == "out":
            wire.write(data)
            wire.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with run_server(config) as server:
        (root / "audit").mkdir(exist_ok=True)
        audit = AuditLog.open(root / "audit" / "federation.log", None, repair_truncated=True)
        fed = Federation(
            config=fed_config,
            policy=POLICY,
            router=server.router,
            audit=audit,
            data_dir=root,
            server_cert=root / "pki" / "server.pem",
            server_key=root / "pki" / "server.key",
            clock_ms=now_ms,
            metrics=server.metrics,
            tap=tap,
        )
        await fed.start()
        recorder = Recorder(root / "received.log")
        server.router.attach(recorder)
        feed = Feed(spec["org"])
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        emitters: list[asyncio.Task[None]] = []
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(fed.run())
            print("READY", flush=True)

            async def commands() -> None:
                while True:
                    line = (await reader.readline()).decode().split()
                    if not line:
                        stop.set()
                        return
                    if line[0] == "emit":
                        emitters.append(
                            tg.create_task(
                                emit(
                                    server.router,
                                    feed,
                                    spec["org"],
                                    line[1],
                                    int(line[2]),
                                    int(line[3]),
                                    float(line[4]),
                                )
                            )
                        )
                    elif line[0] == "canary":
                        canary(server.router, feed, spec["org"], line[1])

            cmd = tg.create_task(commands())
            await stop.wait()
            cmd.cancel()
            for task in emitters:
                task.cancel()
            runner.cancel()
        server.router.detach(recorder)
        recorder.close()
        audit.close()
    wire.close()
    print(f"STOPPED {time.time():.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
