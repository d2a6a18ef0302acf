"""TAK federation v1 under faults (issue 12, "Faults"; shared/reference/tak-federation.md 12,
6.3): a running Liaison streams numbered markers from a pytak TLS client to our own TAK v1 test
peer (tak_v1_peer.py), run as a process of its own (tak_v1_peer_proc.py) that reports each frame
it handled on a pipe, while

* the peer process is killed (SIGKILL) mid-stream, with frames waiting unread in its socket,
  and started again, in both roles;
* the line is cut for ``LIAISON_FED_CUT_S`` seconds (default 30; nftables dropping every
  packet both ways on the peer's side of a veth pair into its own network namespace), with
  production timeouts, in both roles;
* the line stays idle for longer than the TCP keepalive idle time (v1 has no health check: an
  idle but alive peer must not be dropped);
* the line goes dead while frames are in flight (the connection must end by TCP_USER_TIMEOUT,
  since keepalive probes do not run then, and the link come back on a new one).

Afterwards every released marker is accounted for at the peer: distinct arrivals, duplicates
(allowed: delivery is at least once) and missing ones. docs/protocol.md ("TAK federation v1",
"What is guaranteed outbound") allows a loss only for frames the peer's TCP took but its program
had not handled more than SETTLE_S before a crash; here Liaison sees each failure at once (a
reset on the same host, or the line back after the cut), so none may be missing.

The namespace tests need root, ``ip`` and ``nft`` (as test_netns.py): skipped with the reason
otherwise, failed instead under LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from liaison.app import Server
from liaison.federation import takv1
from liaison.federation.link import GateAudit
from liaison.federation.status import LinkState
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from liaison.transports.stream import Keepalive
from tests.integration.federation.fed_helpers import (
    Side,
    start_federation,
    stop_federation,
    wait_until,
)
from tests.integration.federation.test_e2e_labels import (
    POLICY,
    _connect,
    _server_with_users,
    marker,
    seclabel,
)
from tests.integration.federation.test_netns import CUT_S, REASON, sh
from tests.unit.federation.fed_support import peer_table

REPO = Path(__file__).resolve().parents[3]
# Markers streamed in the kill test, and the pause between two.
STREAM = 300
GAP_S = 0.01
# Seconds the killed peer spends on each frame (slower than the stream: frames wait unread).
FRAME_DELAY_S = 0.02
# Seconds for the link to come back and everything to arrive after a kill.
RECOVER_S = 30.0
# After a cut: TCP's retransmission back-off (RTO doubling from 0.2 s: a retransmission at
# about 25 s and 51 s after the first unacknowledged write) plus the drain.
CUT_RECOVER_S = 60.0
# Seconds the line stays idle in the idle test: past the keepalive idle time (30 s) and one
# probe interval (10 s). A probe that is answered counts as traffic, so one probe was sent and
# answered (the next is due 30 s after the answer).
IDLE_S = takv1.KEEPALIVE.idle_s + takv1.KEEPALIVE.interval_s + 2
LABEL = seclabel("SECRET", "USA", ["USA", "UKR"])
# Uids the markers take turns over: the latest state offered again on each new connection holds
# only the last few, so a marker lost on the wire is made good only by the outbox.
UIDS = 4

needs_netns = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def _pki(root: Path, host: str = "127.0.0.1") -> ServerPki:
    return ensure_server_pki(root / "takv1peer", public_host=host, ca_name="TAK v1 CA")


def _table(pki: ServerPki, dial: str | None) -> dict[str, Any]:
    return peer_table(
        name="ukr",
        dial=dial,
        accept=True if dial is None else None,
        ca_file=str(pki.ca_cert),
        fingerprint=fingerprint_sha256(load_server_cert(pki)),
        protocol="tak-v1",
        default_label={"classification": "UNCLASSIFIED", "REL": ["UKR", "USA"]},
        coalesce=False,  # every numbered marker must cross, not only each uid's last
    )


class PeerProcess:
    """tak_v1_peer_proc.py: the v1 test peer in a process of its own (so it can be killed)."""

    def __init__(self, root: Path, pki: ServerPki, usa: Server, where: list[str]) -> None:
        assert usa.server_pki is not None
        chain = root / "peer-chain.pem"
        chain.write_bytes(pki.server_cert.read_bytes() + pki.ca_cert.read_bytes())
        self.args = [
            *where,
            *("--chain", str(chain), "--key", str(pki.server_key)),
            *("--ca", str(usa.server_pki.ca_cert)),
        ]
        self.log = root / "peer.log"
        self.arrivals: list[str] = []  # each handled event's `other`, over every run
        self.connections = 0  # connections the peer's side saw up, over every run
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, prefix: tuple[str, ...] = (), frame_delay: float = 0.0) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *prefix,
                sys.executable,
                "-m",
                "tests.integration.federation.tak_v1_peer_proc",
                *self.args,
                *("--frame-delay", str(frame_delay)),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=REPO,
            )
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            line = await self.proc.stdout.readline()
        assert line, self.log.read_text()[-3000:]
        self.port = int(json.loads(line)["ready"])
        if self.args[0] == "--listen" and self.args[1].endswith(":0"):
            self.args[1] = self.args[1][:-2] + f":{self.port}"  # the same port on a restart
        self._reader = asyncio.create_task(self._read(self.proc.stdout))

    async def _read(self, out: asyncio.StreamReader) -> None:
        for _ in range(1_000_000):
            line = await out.readline()
            if not line:
                return
            report = json.loads(line)
            if report.get("connection") == "up":
                self.connections += 1
            elif "other" in report:
                self.arrivals.append(report["other"])

    async def kill(self) -> None:
        """SIGKILL: what the process read from its socket and had not handled dies with it."""
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self.proc = None

    async def stop(self) -> None:
        if self.proc is not None:
            await self.kill()


@dataclass
class Stream:
    """The numbered markers a Liaison client sends (``N:<key>:`` in the remarks), and what the
    peer got of them."""

    prefix: str
    sent: list[str] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # loop time each was sent

    def key(self, n: int) -> str:
        return f"{self.prefix}-{n:04d}"

    def account(self, arrivals: list[str]) -> tuple[set[str], int, set[str]]:
        """(distinct arrivals of ours, duplicate arrivals, missing)."""
        pattern = re.compile(rf"N:({re.escape(self.prefix)}-\d{{4}}):")
        counts = Counter(k for text in arrivals for k in pattern.findall(text))
        return set(counts), sum(c - 1 for c in counts.values()), set(self.sent) - set(counts)

    def sent_before(self, moment: float) -> set[str]:
        return {k for k, at in zip(self.sent, self.sent_at, strict=True) if at < moment}

    def check(self, arrivals: list[str], what: str, lossy: set[str] | None = None) -> int:
        """Every released marker arrived, except markers in ``lossy`` (those the documented
        exception may lose); prints the counts; returns the number missing."""
        distinct, dups, missing = self.account(arrivals)
        print(
            f"{what}: sent {len(self.sent)}, arrived {len(distinct)} distinct + {dups}"
            f" duplicates, missing {len(missing)} (of {len(lossy or ())} the documented"
            f" exception may lose: {sorted(missing)[:10]})"
        )
        allowed = lossy or set()
        assert missing <= allowed, (
            f"{what}: {len(missing - allowed)} released markers never arrived:"
            f" {sorted(missing - allowed)[:10]}"
        )
        assert distinct <= set(self.sent), "an arrival that was never sent"
        return len(missing)


async def _send(client: Any, stream: Stream, count: int, gap: float = GAP_S) -> None:
    for _ in range(count):
        n = len(stream.sent)
        key = stream.key(n)
        await client.send(marker(f"{stream.prefix}-u{n % UIDS}", f"N:{key}:", LABEL))
        stream.sent.append(key)
        stream.sent_at.append(asyncio.get_running_loop().time())
        await asyncio.sleep(gap)


async def _drained(side: Side, within: float) -> None:
    status = side.fed.status.peers["ukr"]
    await wait_until(
        lambda: status.state is LinkState.UP,
        within,
        f"the link up again (last error {status.last_error})",
    )
    await wait_until(
        lambda: status.backlog == 0 and status.last_acked == status.last_seq,
        within,
        "the outbox drained (every row settled)",
    )


@contextlib.asynccontextmanager
async def _liaison(tmp_path: Path) -> AsyncIterator[tuple[Server, Any]]:
    async with await _server_with_users(tmp_path, "usa") as usa:  # type: ignore[attr-defined]
        cu = await _connect(usa, "usa")
        try:
            yield usa, cu["usa-s"]
        finally:
            for c in cu.values():
                await c.close()


async def _start(
    usa: Server,
    pki: ServerPki,
    role: str,
    tmp_path: Path,
    *,
    host: str = "127.0.0.1",
    peer_host: str = "127.0.0.1",
    prefix: tuple[str, ...] = (),
    frame_delay: float = 0.0,
) -> tuple[Side, PeerProcess]:
    """Start the peer process and the federation with it; ``role``: who dials."""
    assert usa.router.gate is not None
    audit = GateAudit(usa.router.gate)
    if role == "liaison-dials":
        peer = PeerProcess(tmp_path, pki, usa, ["--listen", f"{peer_host}:0"])
        await peer.start(prefix, frame_delay)
        side = await start_federation(
            usa,
            "usa-srv",
            [_table(pki, f"{peer_host}:{peer.port}")],
            listen="off",
            policy=POLICY,
            audit=audit,  # type: ignore[arg-type]
        )
    else:
        side = await start_federation(
            usa,
            "usa-srv",
            [_table(pki, None)],
            listen=f"{host}:0",
            policy=POLICY,
            audit=audit,  # type: ignore[arg-type]
        )
        assert side.fed.bound is not None
        peer = PeerProcess(tmp_path, pki, usa, ["--dial", f"{host}:{side.fed.bound.port}"])
        await peer.start(prefix, frame_delay)
    return side, peer


# --- the peer killed mid-stream ------------------------------------------------------------------


@pytest.mark.parametrize("role", ["liaison-dials", "peer-dials"])
async def test_peer_killed_and_restarted_mid_stream(tmp_path: Path, role: str) -> None:
    pki = _pki(tmp_path)
    async with _liaison(tmp_path) as (usa, client):
        side, peer = await _start(usa, pki, role, tmp_path, frame_delay=FRAME_DELAY_S)
        status = side.fed.status.peers["ukr"]
        stream = Stream("kill")
        try:
            await wait_until(lambda: status.state is LinkState.UP, RECOVER_S, "link up")
            sending = asyncio.create_task(_send(client, stream, STREAM))
            await wait_until(lambda: len(peer.arrivals) >= STREAM // 3, RECOVER_S, "a third")
            await peer.kill()  # mid-stream, frames unread in its socket; the sender goes on
            loop = asyncio.get_running_loop()
            handled = stream.account(peer.arrivals)[0]
            killed_at = len(stream.sent)
            await wait_until(lambda: status.state is not LinkState.UP, RECOVER_S, "the failure")
            # Only rows written SETTLE_S before Liaison saw the failure can have settled (left
            # the outbox); of those, only markers the peer had not handled may be lost.
            lossy = stream.sent_before(loop.time() - takv1.SETTLE_S) - handled
            await asyncio.sleep(1.0)
            await peer.start()
            await sending
            assert len(handled) < killed_at < STREAM, "the kill was not mid-stream"
            await _drained(side, RECOVER_S)
            with contextlib.suppress(AssertionError):  # check() below says what is missing
                await wait_until(
                    lambda: stream.account(peer.arrivals)[2] <= lossy, RECOVER_S, "every marker"
                )
        finally:
            await stop_federation(side)
            await peer.stop()
        print(
            f"kill ({role}): {killed_at - len(handled)} sent and not handled at the kill,"
            f" {len(lossy)} of them sent more than SETTLE_S before Liaison saw it"
        )
        stream.check(peer.arrivals, f"kill/restart ({role})", lossy)
        assert status.counts["connects"] >= 2
        assert peer.connections >= 2


# --- the line cut, and an idle line, in a network namespace -------------------------------------


class TakNet:
    """A namespace for the peer and a veth pair to it, removed afterwards."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        net = random.randrange(100, 200)
        self.ns = f"lz-v1-{tag}"
        self.host_dev, self.peer_dev = f"lzh{tag}", f"lzp{tag}"
        self.host_ip, self.peer_ip = f"10.232.{net}.1", f"10.232.{net}.2"

    def up(self) -> None:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", self.host_dev, "type", "veth", "peer", "name", self.peer_dev)
        sh("ip", "link", "set", self.peer_dev, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_dev)
        sh("ip", "link", "set", self.host_dev, "up")
        sh("ip", "-n", self.ns, "addr", "add", f"{self.peer_ip}/24", "dev", self.peer_dev)
        sh("ip", "-n", self.ns, "link", "set", self.peer_dev, "up")

    @property
    def inside(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.ns)

    def _nft(self, *args: str) -> None:
        sh(*self.inside, "nft", *args)

    def _table(self, action: str) -> None:
        """A filter table on the peer's end of the pair whose rules ``action`` every packet
        ("drop", or "counter": count them)."""
        subprocess.run(
            [*self.inside, "nft", "delete", "table", "inet", "lzv1"],
            capture_output=True,
            timeout=30,
        )
        if not action:
            return
        self._nft("add", "table", "inet", "lzv1")
        for chain, hook, match in (("in", "input", "iifname"), ("out", "output", "oifname")):
            self._nft(
                "add", "chain", "inet", "lzv1", chain, f"{{ type filter hook {hook} priority 0; }}"
            )
            # TCP only: a new veth pair also carries IPv6 neighbour discovery and MLD.
            self._nft(
                *("add", "rule", "inet", "lzv1", chain, match, self.peer_dev),
                *("meta", "l4proto", "tcp", action),
            )

    def cut(self, on: bool) -> None:
        """Drop every packet in and out of the peer's end of the pair (or stop dropping)."""
        self._table("drop" if on else "")

    def count(self, on: bool) -> None:
        """Count the TCP packets in and out of the peer's end of the pair (or stop)."""
        self._table("counter" if on else "")

    def counted(self) -> dict[str, int]:
        """Packets counted so far, by chain ("in": to the peer, "out": from it)."""
        done = subprocess.run(
            [*self.inside, "nft", "-j", "list", "table", "inet", "lzv1"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        counts: dict[str, int] = {}
        for item in json.loads(done.stdout)["nftables"]:
            rule = item.get("rule")
            if rule is None:
                continue
            for expr in rule["expr"]:
                if "counter" in expr:
                    counts[rule["chain"]] = int(expr["counter"]["packets"])
        return counts

    def down(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True, timeout=30)


@pytest.fixture
def net() -> Iterator[TakNet]:
    n = TakNet()
    try:
        n.up()
        yield n
    finally:
        n.down()


@needs_netns
@pytest.mark.parametrize("role", ["liaison-dials", "peer-dials"])
async def test_line_cut_for_30_s(net: TakNet, tmp_path: Path, role: str) -> None:
    """Markers stream before and all through the cut. With production timeouts a cut of 30 s
    ends no v1 connection: while our frames are unacknowledged the kernel retransmits them
    (keepalive probes only run on an idle connection, and would need 30 + 3 x 10 s), and the
    rows written stay in the outbox, unsettled. When the line is back the retransmissions are
    acknowledged, the rows settle, and every marker is at the peer."""
    pki = _pki(tmp_path, net.peer_ip)
    async with _liaison(tmp_path) as (usa, client):
        side, peer = await _start(
            usa, pki, role, tmp_path, host=net.host_ip, peer_host=net.peer_ip, prefix=net.inside
        )
        stream = Stream("cut")
        status = side.fed.status.peers["ukr"]
        try:
            await wait_until(lambda: status.state is LinkState.UP, RECOVER_S, "link up")
            await _send(client, stream, 50)
            await wait_until(lambda: not stream.account(peer.arrivals)[2], RECOVER_S, "before")
            await _drained(side, RECOVER_S)
            connects = status.counts["connects"]
            net.cut(True)
            loop = asyncio.get_running_loop()
            started = loop.time()
            ends = started + CUT_S
            handled = len(peer.arrivals)
            for i in range(10):  # markers released all through the cut
                await _send(client, stream, 10)
                await asyncio.sleep(max(0.0, started + CUT_S * (i + 1) / 10 - loop.time()))
            await asyncio.sleep(max(0.0, ends - loop.time()))
            assert len(peer.arrivals) == handled, "the cut let something through"
            state_in_cut = status.state
            unsettled = status.backlog
            net.cut(False)
            back = loop.time()
            with contextlib.suppress(AssertionError):  # check() below says what is missing
                await wait_until(
                    lambda: not stream.account(peer.arrivals)[2], CUT_RECOVER_S, "every marker"
                )
            arrived_s = loop.time() - back
            await _drained(side, CUT_RECOVER_S)
            settled_s = loop.time() - back
        finally:
            net.cut(False)
            await stop_federation(side)
            await peer.stop()
        print(
            f"line cut {CUT_S:.0f} s ({role}): state at the end of the cut {state_in_cut.value},"
            f" {unsettled} rows unsettled; every marker at the peer {arrived_s:.1f} s and the"
            f" outbox drained {settled_s:.1f} s after the line came back; new connections"
            f" {status.counts['connects'] - connects}"
        )
        stream.check(peer.arrivals, f"line cut {CUT_S:.0f} s ({role})")
        keepalive = takv1.KEEPALIVE
        if keepalive.idle_s + keepalive.interval_s * keepalive.count > CUT_S:
            # Shorter than what could end the connection: the same connection carried on.
            assert state_in_cut is LinkState.UP
            assert status.counts["connects"] == connects, "a cut this short ends no connection"


@needs_netns
async def test_an_idle_peer_is_not_dropped(net: TakNet, tmp_path: Path) -> None:
    """v1 has no health check: a peer that sends nothing for longer than the keepalive idle
    time (production KEEPALIVE) stays connected; our keepalive probe was sent and answered
    (packets counted on the peer's end of the line while nothing else was sent), and a marker
    after the silence crosses on the same connection."""
    pki = _pki(tmp_path, net.peer_ip)
    async with _liaison(tmp_path) as (usa, client):
        side, peer = await _start(
            usa,
            pki,
            "liaison-dials",
            tmp_path,
            host=net.host_ip,
            peer_host=net.peer_ip,
            prefix=net.inside,
        )
        stream = Stream("idle")
        status = side.fed.status.peers["ukr"]
        try:
            await wait_until(lambda: status.state is LinkState.UP, RECOVER_S, "link up")
            await _send(client, stream, 5)
            await _drained(side, RECOVER_S)
            await wait_until(lambda: not stream.account(peer.arrivals)[2], RECOVER_S, "before")
            connects = status.counts["connects"]
            net.count(True)
            await asyncio.sleep(IDLE_S)
            counted = net.counted()
            net.count(False)
            assert status.state is LinkState.UP
            assert status.counts["connects"] == connects
            await _send(client, stream, 5)
            await wait_until(lambda: not stream.account(peer.arrivals)[2], RECOVER_S, "after")
        finally:
            net.count(False)
            await stop_federation(side)
            await peer.stop()
        print(
            f"idle {IDLE_S} s: to the peer {counted.get('in')} packets,"
            f" from it {counted.get('out')}"
        )
        stream.check(peer.arrivals, "idle")
        # A probe at 30 s, answered (nothing else crossed while idle).
        assert counted.get("in", 0) >= 1 and counted.get("out", 0) >= 1, counted
        assert status.counts["connects"] == connects
        assert peer.connections == 1


@needs_netns
async def test_a_peer_gone_with_frames_in_flight_is_found(
    net: TakNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The line goes dead while our frames are unacknowledged (a pulled cable mid-stream):
    keepalive probes do not run then (the kernel retransmits instead), so the connection ends by
    the user timeout, idle + interval x count of KEEPALIVE (60 s in production; 5 s here), not
    after the kernel's ~15 minutes of retransmissions. Liaison redials once the line is back and
    every marker arrives."""
    monkeypatch.setattr(takv1, "KEEPALIVE", Keepalive(idle_s=2, interval_s=1, count=3))
    limit = takv1.user_timeout_ms() / 1000
    pki = _pki(tmp_path, net.peer_ip)
    async with _liaison(tmp_path) as (usa, client):
        side, peer = await _start(
            usa,
            pki,
            "liaison-dials",
            tmp_path,
            host=net.host_ip,
            peer_host=net.peer_ip,
            prefix=net.inside,
        )
        stream = Stream("gone")
        status = side.fed.status.peers["ukr"]
        loop = asyncio.get_running_loop()
        found_s: float | None = None
        try:
            await wait_until(lambda: status.state is LinkState.UP, RECOVER_S, "link up")
            await _send(client, stream, 20)
            await wait_until(lambda: not stream.account(peer.arrivals)[2], RECOVER_S, "before")
            await _drained(side, RECOVER_S)
            connects = status.counts["connects"]
            net.cut(True)
            started = loop.time()
            for _ in range(int(3 * limit / 0.5)):  # a marker every 0.5 s for 3 x the limit
                await _send(client, stream, 1, gap=0.5)
                if found_s is None and status.state is not LinkState.UP:
                    found_s = loop.time() - started
            net.cut(False)
            await _drained(side, RECOVER_S)
            with contextlib.suppress(AssertionError):  # check() below says what is missing
                await wait_until(
                    lambda: not stream.account(peer.arrivals)[2], RECOVER_S, "every marker"
                )
        finally:
            net.cut(False)
            await stop_federation(side)
            await peer.stop()
        print(f"frames in flight, line dead: connection ended {found_s} s into the cut")
        stream.check(peer.arrivals, "frames in flight, line dead")
        assert found_s is not None, "the dead line was not found while it was cut"
        assert found_s <= limit + 2.0, found_s
        assert status.counts["connects"] > connects
