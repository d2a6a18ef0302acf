"""Faults on a real network: two servers in their own network namespaces joined by a veth pair.

Both servers run as subprocesses inside the namespaces (``ip netns exec``); the federation link
is their only connection, so both ends of it live inside the namespaces. Faults: the link cut
(veth down) under steady traffic, random packet loss (nftables ``numgen random`` drops; this
kernel has no netem), and a restart of each server while the link is down. Afterwards every
releasable event has arrived exactly once and in order per uid, and the canary strings of
non-releasable events never appear in the plaintext the sender wrote to the link.

Needs root, ``ip`` (iproute2) and ``nft`` (nftables); skipped with the reason otherwise, and
failed instead under LIAISON_REQUIRE_SERVICES=1. LIAISON_FED_CUT_S sets the cut (default 30 s).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import fingerprint_sha256, load_server_cert
from tests.unit.federation.fed_support import peer_table

NODE = Path(__file__).with_name("netns_node.py")
REPO = Path(__file__).resolve().parents[3]
CUT_S = float(os.environ.get("LIAISON_FED_CUT_S", "30"))
UIDS = 4
# Every wait in this module is bounded by this many seconds.
WAIT_S = 60.0


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install iproute2 nftables)"
    probe = f"lzprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


REASON = _missing()
if REASON is not None and os.environ.get("LIAISON_REQUIRE_SERVICES") == "1":
    raise RuntimeError(f"netns federation tests cannot run: {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


class Net:
    """Two namespaces and a veth pair, removed afterwards."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = {"usa": f"lz-usa-{tag}", "ukr": f"lz-ukr-{tag}"}
        self.dev = {"usa": f"lzu{tag}", "ukr": f"lzk{tag}"}
        self.ip = {"usa": "10.231.7.1", "ukr": "10.231.7.2"}

    def up(self) -> None:
        for side in ("usa", "ukr"):
            sh("ip", "netns", "add", self.ns[side])
            sh("ip", "-n", self.ns[side], "link", "set", "lo", "up")
        sh("ip", "link", "add", self.dev["usa"], "type", "veth", "peer", "name", self.dev["ukr"])
        for side in ("usa", "ukr"):
            sh("ip", "link", "set", self.dev[side], "netns", self.ns[side])
            sh(
                "ip",
                "-n",
                self.ns[side],
                "addr",
                "add",
                f"{self.ip[side]}/24",
                "dev",
                self.dev[side],
            )
            sh("ip", "-n", self.ns[side], "link", "set", self.dev[side], "up")

    def link(self, up: bool) -> None:
        sh("ip", "-n", self.ns["usa"], "link", "set", self.dev["usa"], "up" if up else "down")

    def loss(self, percent: int | None) -> None:
        """Drop ``percent`` % of incoming packets on both sides (None: stop dropping)."""
        for side in ("usa", "ukr"):
            ns = self.ns[side]
            subprocess.run(
                ["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "lzloss"],
                capture_output=True,
            )
            if percent is not None:
                sh("ip", "netns", "exec", ns, "nft", "add", "table", "inet", "lzloss")
                sh(
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "nft",
                    "add",
                    "chain",
                    "inet",
                    "lzloss",
                    "in",
                    "{ type filter hook input priority 0; }",
                )
                sh(
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "nft",
                    "add",
                    "rule",
                    "inet",
                    "lzloss",
                    "in",
                    "iifname",
                    self.dev[side],
                    "numgen",
                    "random",
                    "mod",
                    "100",
                    "<",
                    str(percent),
                    "drop",
                )

    def down(self) -> None:
        for side in ("usa", "ukr"):
            subprocess.run(["ip", "netns", "del", self.ns[side]], capture_output=True)


class Node:
    def __init__(self, net: Net, side: str, root: Path, spec: dict[str, object]) -> None:
        self.net, self.side, self.dir = net, side, root / side
        self.spec_path = root / f"{side}-spec.json"
        self.spec_path.write_text(json.dumps(spec))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log = (self.dir / "node.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.net.ns[self.side],
                sys.executable,
                str(NODE),
                "--dir",
                str(self.dir),
                "--spec",
                str(self.spec_path),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT_S)
        assert ready, f"{self.side} not ready in {WAIT_S} s"
        line = self.proc.stdout.readline()
        assert line.startswith(b"READY"), (line, (self.dir / "node.log").read_text()[-3000:])

    def send(self, command: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._log.close()
        self.proc = None

    def status(self) -> dict[str, object]:
        try:
            doc = json.loads((self.dir / "federation" / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        peers = doc.get("peers") or [{}]
        return peers[0]  # type: ignore[no-any-return]

    def received(self) -> dict[tuple[str, int], list[int]]:
        seen: dict[tuple[str, int], list[int]] = defaultdict(list)
        path = self.dir / "received.log"
        if path.exists():
            for line in path.read_text().splitlines():
                phase, uid, n = line.split()
                seen[(phase, int(uid))].append(int(n))
        return seen


def complete(node: Node, phase: str, per_uid: int) -> bool:
    """Every event of ``phase`` has arrived at ``node`` (order and duplicates checked later)."""
    seen = node.received()
    return all(len(seen[(phase, uid)]) >= per_uid for uid in range(UIDS))


def wait_for(predicate: object, what: str, within: float = WAIT_S, detail: object = None) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            extra = detail() if callable(detail) else ""
            raise AssertionError(f"timed out waiting for {what} {extra}")
        time.sleep(0.2)


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        n.up()
        yield n
    finally:
        n.down()


def _specs(net: Net, root: Path) -> tuple[dict[str, object], dict[str, object]]:
    pkis = {}
    for side in ("usa", "ukr"):
        pkis[side] = ensure_server_pki(root / side, public_host=net.ip[side])
    fp = {s: fingerprint_sha256(load_server_cert(p)) for s, p in pkis.items()}
    common = {
        "heartbeat_s": 1.0,
        "backoff_base_s": 0.2,
        "backoff_cap_s": 2.0,
        "status_interval_s": 0.5,
    }
    usa = {
        "host": net.ip["usa"],
        "org": "USA",
        "federation": {
            "server_id": "usa-srv",
            "listen": "off",
            **common,
            "peer": [
                peer_table(
                    name="ukr",
                    dial=f"{net.ip['ukr']}:9001",
                    ca_file=str(pkis["ukr"].ca_cert),
                    fingerprint=fp["ukr"],
                )
            ],
        },
    }
    ukr = {
        "host": net.ip["ukr"],
        "org": "UKR",
        "federation": {
            "server_id": "ukr-srv",
            "listen": f"{net.ip['ukr']}:9001",
            **common,
            "peer": [
                peer_table(
                    name="usa",
                    dial=None,
                    accept=True,
                    ca_file=str(pkis["usa"].ca_cert),
                    fingerprint=fp["usa"],
                    release_ceiling={"classification": "SECRET", "REL": ["USA"]},
                    originate={"org": "USA", "classification": "SECRET", "REL": ["USA", "UKR"]},
                )
            ],
        },
    }
    return usa, ukr


def test_outage_loss_and_restarts_in_namespaces(net: Net, tmp_path: Path) -> None:
    spec_usa, spec_ukr = _specs(net, tmp_path)
    a = Node(net, "usa", tmp_path, spec_usa)
    b = Node(net, "ukr", tmp_path, spec_ukr)
    expected: dict[str, int] = {}
    try:
        b.start()
        a.start()
        wait_for(lambda: a.status().get("state") == "up", "link up")
        canary = f"CANARY{uuid.uuid4().hex}"
        a.send(f"canary {canary}")

        # 1. Steady traffic (20 events/s) with the link cut for CUT_S seconds in the middle.
        per_uid = max(10, int((CUT_S + 6) * 20 / UIDS))
        a.send(f"emit cut {UIDS} {per_uid} 20")
        expected["cut"] = per_uid
        time.sleep(2)
        net.link(False)
        time.sleep(CUT_S)
        net.link(True)

        # 2. Random loss of 10 % of packets both ways while traffic flows.
        net.loss(10)
        a.send(f"emit loss {UIDS} 50 50")
        expected["loss"] = 50
        time.sleep(5)
        net.loss(None)
        wait_for(
            lambda: a.status().get("backlog") == 0 and a.status().get("state") == "up",
            "backlog drained after cut and loss",
            within=WAIT_S * 2,
        )
        # Emitters may outlast a fault window on a loaded machine: everything of phases 1 and 2
        # must have arrived (and nothing be left queued) before the next outage starts, or their
        # late events would be counted in the next phase's backlog.
        wait_for(
            lambda: complete(b, "cut", per_uid) and complete(b, "loss", 50),
            "cut and loss phases delivered",
            within=WAIT_S * 2,
        )
        wait_for(lambda: a.status().get("backlog") == 0, "nothing queued before the restart")

        # 3. The partner restarts during an outage.
        net.link(False)
        a.send(f"emit brestart {UIDS} 20 100")
        expected["brestart"] = 20
        b.stop()
        b.start()
        wait_for(
            lambda: a.status().get("backlog") == UIDS * 20,
            "queued during outage",
            detail=lambda: (a.status(), {k: len(v) for k, v in b.received().items()}),
        )
        net.link(True)
        wait_for(lambda: complete(b, "brestart", 20), "delivered after partner restart")
        wait_for(lambda: a.status().get("backlog") == 0, "drained after partner restart")

        # 4. Our server restarts during an outage (its outbox is on disk).
        net.link(False)
        a.send(f"emit arestart {UIDS} 20 100")
        expected["arestart"] = 20
        wait_for(lambda: a.status().get("backlog") == UIDS * 20, "queued before restart")
        a.stop()
        a.start()
        net.link(True)
        wait_for(
            lambda: a.status().get("backlog") == 0 and a.status().get("state") == "up",
            "drained after our restart",
        )
        time.sleep(1.5)
    finally:
        a.stop()
        b.stop()
    seen = b.received()
    for phase, per_uid in expected.items():
        for uid in range(UIDS):
            assert seen[(phase, uid)] == list(range(per_uid)), (phase, uid, seen[(phase, uid)])
    wire_bytes = (tmp_path / "usa" / "wire-out.bin").read_bytes()
    assert len(wire_bytes) > 10_000
    assert canary.encode() not in wire_bytes
    assert not any(k[0].startswith("canary") for k in seen)
