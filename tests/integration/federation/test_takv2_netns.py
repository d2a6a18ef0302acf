"""TAK federation v2 with the line cut (shared/reference/tak-federation.md 18.2 row 22): our own
TAK v2 test peer runs as a process inside its own network namespace, joined to the test's
(where a running Liaison is) by a veth pair; the cut is nftables dropping every packet on the
peer's side of the pair, both ways, for ``LIAISON_FED_CUT_S`` seconds (default 30), with
production timeouts (Liaison's health deadline 5 s when it dials, the 15 s silent timeout when
the peer dials). Numbered markers stream before and during the cut; afterwards the link is up,
the outbox drained, and every marker is at the peer in both roles (distinct and duplicate
arrivals counted and printed; duplicates are allowed, delivery being at least once).

Needs root, ``ip`` and ``nft`` (as test_netns.py): skipped with the reason otherwise, failed
instead under LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from liaison.federation.link import GateAudit
from liaison.federation.status import LinkState
from liaison.identity.ca import ensure_server_pki
from tests.integration.federation.fed_helpers import start_federation, stop_federation, wait_until
from tests.integration.federation.test_e2e_labels import POLICY
from tests.integration.federation.test_netns import CUT_S, REASON, sh
from tests.integration.federation.test_takv2_faults import (
    PeerProcess,
    Stream,
    _check,
    _drained,
    _liaison,
    _stream,
    _table,
)

pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

# Seconds for the link to come back and everything to arrive once the cut ends (a reconnect
# after the health deadline, or after the 15 s silent timeout, plus the back-off).
RECOVER_S = 60.0


class TakNet:
    """A namespace for the peer and a veth pair to it, removed afterwards."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        net = random.randrange(100, 200)
        self.ns = f"lz-tak-{tag}"
        self.host_dev, self.peer_dev = f"lzh{tag}", f"lzp{tag}"
        self.host_ip, self.peer_ip = f"10.231.{net}.1", f"10.231.{net}.2"

    def up(self) -> None:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", self.host_dev, "type", "veth", "peer", "name", self.peer_dev)
        sh("ip", "link", "set", self.peer_dev, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_dev)
        sh("ip", "link", "set", self.host_dev, "up")
        sh("ip", "-n", self.ns, "addr", "add", f"{self.peer_ip}/24", "dev", self.peer_dev)
        sh("ip", "-n", self.ns, "link", "set", self.peer_dev, "up")

    def _nft(self, *args: str) -> None:
        sh("ip", "netns", "exec", self.ns, "nft", *args)

    def cut(self, on: bool) -> None:
        """Drop every packet in and out of the peer's end of the pair (or stop dropping)."""
        subprocess.run(
            ["ip", "netns", "exec", self.ns, "nft", "delete", "table", "inet", "lzcut"],
            capture_output=True,
        )
        if not on:
            return
        self._nft("add", "table", "inet", "lzcut")
        for chain, hook, match in (("in", "input", "iifname"), ("out", "output", "oifname")):
            self._nft(
                "add", "chain", "inet", "lzcut", chain, f"{{ type filter hook {hook} priority 0; }}"
            )
            self._nft("add", "rule", "inet", "lzcut", chain, match, self.peer_dev, "drop")

    def down(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True)


@pytest.fixture
def net() -> Iterator[TakNet]:
    n = TakNet()
    try:
        n.up()
        yield n
    finally:
        n.down()


@pytest.mark.parametrize("role", ["liaison-dials", "peer-dials"])
async def test_line_cut_for_30_s(net: TakNet, tmp_path: Path, role: str) -> None:
    pki = ensure_server_pki(tmp_path / "takpeer", public_host=net.peer_ip, ca_name="TAK Peer CA")
    inside = ("ip", "netns", "exec", net.ns)
    async with _liaison(tmp_path) as (usa, client):
        assert usa.router.gate is not None
        audit = GateAudit(usa.router.gate)
        if role == "liaison-dials":
            peer = PeerProcess(tmp_path, pki, usa, "server", f"{net.peer_ip}:0")
            await peer.start(inside)
            table = _table(pki, peer.port)
            table["dial"] = f"{net.peer_ip}:{peer.port}"
            side = await start_federation(
                usa,
                "usa-srv",
                [table],
                listen="off",
                policy=POLICY,
                audit=audit,  # type: ignore[arg-type]
            )
        else:
            side = await start_federation(
                usa,
                "usa-srv",
                [_table(pki, None)],
                listen=f"{net.host_ip}:0",
                policy=POLICY,
                audit=audit,  # type: ignore[arg-type]
            )
            assert side.fed.bound is not None
            peer = PeerProcess(tmp_path, pki, usa, "client", f"{net.host_ip}:{side.fed.bound.port}")
            await peer.start(inside)
        stream = Stream("cut")
        status = side.fed.status.peers["ukr"]
        try:
            await wait_until(lambda: status.state is LinkState.UP, RECOVER_S, "link up")
            await _stream(client, stream, 50)
            await wait_until(
                lambda: not stream.account(peer.arrivals)[2], RECOVER_S, "before the cut"
            )
            connects = status.counts["connects"]
            net.cut(True)
            loop = asyncio.get_running_loop()
            ends = loop.time() + CUT_S
            for _ in range(10):  # markers released all through the cut
                await _stream(client, stream, 10)
                await asyncio.sleep(max(0.0, (ends - loop.time()) / 10))
            await asyncio.sleep(max(0.0, ends - loop.time()))
            # Both ends noticed within the cut (health deadline 5 s / silent timeout 15 s).
            assert status.state is not LinkState.UP, status.last_error
            net.cut(False)
            await _drained(side)
            with contextlib.suppress(AssertionError):  # _check below says what is missing
                await wait_until(
                    lambda: not stream.account(peer.arrivals)[2],
                    RECOVER_S,
                    "every marker",
                )
        finally:
            net.cut(False)
            await stop_federation(side)
            await peer.stop()
        _check(stream, peer.arrivals, f"line cut {CUT_S:.0f} s ({role})")
        assert status.counts["connects"] > connects, "the link came back on a new connection"
