"""TAK federation v2 under faults (shared/reference/tak-federation.md 18.2 rows 21-22, 6.3): a
running Liaison streams numbered markers from a pytak TLS client to our own TAK v2 test peer
while

* the peer process is killed (SIGKILL) mid-stream and started again, in both roles;
* the peer stops its health checks (server role: dropped after the silent timeout) or stops
  answering them (client role: Liaison's check fails and it redials).

Afterwards every released marker is accounted for at the peer: distinct arrivals, duplicates
(counted and printed, allowed: delivery is at least once) and missing ones, which must be none
in both roles: when Liaison dials a row leaves the outbox only once a HealthCheck after it was
answered SERVING; when the peer dials only once it settled (its bytes taken by the peer's TCP,
the connection open and the peer talking SETTLE_S later). Rows not confirmed when a connection
ends are sent again (docs/protocol.md, "What is guaranteed outbound" in both roles). The link is
up again on a new connection and the outbox drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from liaison.app import Server
from liaison.federation import takv2, takv2_server
from liaison.federation.link import GateAudit
from liaison.federation.proto import fig_pb2
from liaison.federation.status import LinkState
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from tests.integration.federation.fed_helpers import (
    Side,
    start_federation,
    stop_federation,
    wait_until,
)
from tests.integration.federation.tak_client_peer import TakClientPeer
from tests.integration.federation.tak_peer import TakPeer
from tests.integration.federation.test_e2e_labels import (
    POLICY,
    _connect,
    _server_with_users,
    marker,
    seclabel,
)
from tests.unit.federation.fed_support import peer_table

REPO = Path(__file__).resolve().parents[3]
# Markers streamed per test, and the pause between two.
STREAM = 300
GAP_S = 0.01
# Seconds for everything to arrive after a fault (reconnect back-off, health timeouts).
RECOVER_S = 20.0
LABEL = seclabel("SECRET", "USA", ["USA", "UKR"])
# Uids the markers take turns over.
UIDS = 4


def _pki(root: Path) -> ServerPki:
    return ensure_server_pki(root / "takpeer", public_host="127.0.0.1", ca_name="TAK Peer CA")


def _table(pki: ServerPki, port: int | None) -> dict[str, Any]:
    return peer_table(
        name="ukr",
        dial=f"127.0.0.1:{port}" if port is not None else None,
        accept=True if port is None else None,
        ca_file=str(pki.ca_cert),
        fingerprint=fingerprint_sha256(load_server_cert(pki)),
        protocol="tak-v2",
        default_label={"classification": "UNCLASSIFIED", "REL": ["UKR", "USA"]},
        coalesce=False,  # every numbered marker must cross, not only each uid's last
    )


class PeerProcess:
    """tak_peer_proc.py: our TAK test peer in a process of its own (so it can be killed)."""

    def __init__(self, root: Path, pki: ServerPki, usa: Server, mode: str, where: str) -> None:
        assert usa.server_pki is not None
        self.chain = root / "peer-chain.pem"
        self.chain.write_bytes(pki.server_cert.read_bytes() + pki.ca_cert.read_bytes())
        self.args = [
            "--mode",
            mode,
            "--listen" if mode == "server" else "--dial",
            where,
            "--chain",
            str(self.chain),
            "--key",
            str(pki.server_key),
            "--ca",
            str(usa.server_pki.ca_cert),
        ]
        self.log = root / "peer.log"
        self.arrivals: list[str] = []  # each event's `other`, over every run of the process
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, prefix: tuple[str, ...] = ()) -> None:
        with self.log.open("ab") as log:
            await self._spawn(prefix, log)

    async def _spawn(self, prefix: tuple[str, ...], log: Any) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            "-m",
            "tests.integration.federation.tak_peer_proc",
            *self.args,
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
        if self.args[3].endswith(":0"):
            self.args[3] = self.args[3][:-2] + f":{self.port}"  # the same port on a restart
        self._reader = asyncio.create_task(self._read(self.proc.stdout))

    async def _read(self, out: asyncio.StreamReader) -> None:
        for _ in range(1_000_000):
            line = await out.readline()
            if not line:
                return
            self.arrivals.append(json.loads(line)["other"])

    async def kill(self) -> None:
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
    """The numbered markers a Liaison client sends, and what the peer got of them.

    The markers take turns over ``UIDS`` uids, so the latest state (offered again on each new
    connection) holds only the last few: a marker lost on the wire is not made good by that
    offer, only by the outbox. Each carries its number in its remarks (``N:<key>:``)."""

    prefix: str
    sent: list[str] = field(default_factory=list)

    def key(self, n: int) -> str:
        return f"{self.prefix}-{n:04d}"

    def account(self, arrivals: list[str]) -> tuple[set[str], int, set[str]]:
        """(distinct arrivals of ours, duplicate arrivals, missing)."""
        pattern = re.compile(rf"N:({re.escape(self.prefix)}-\d{{4}}):")
        counts = Counter(k for text in arrivals for k in pattern.findall(text))
        return set(counts), sum(c - 1 for c in counts.values()), set(self.sent) - set(counts)


async def _stream(client: Any, stream: Stream, count: int) -> None:
    for _ in range(count):
        n = len(stream.sent)
        key = stream.key(n)
        await client.send(marker(f"{stream.prefix}-u{n % UIDS}", f"N:{key}:", LABEL))
        stream.sent.append(key)
        await asyncio.sleep(GAP_S)


async def _drained(side: Side) -> None:
    status = side.fed.status.peers["ukr"]
    await wait_until(
        lambda: status.state is LinkState.UP,
        RECOVER_S,
        f"the link up again (last error {status.last_error})",
    )
    await wait_until(
        lambda: status.backlog == 0 and status.last_acked == status.last_seq,
        RECOVER_S,
        "the outbox drained",
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


def _records(server: Server) -> list[dict[str, Any]]:
    """Every audit record the server wrote."""
    path = server.config.data_dir / "audit"
    logs = sorted(path.glob("*.log")) + sorted(path.glob("*.jsonl"))
    return [json.loads(line) for f in logs for line in f.read_bytes().splitlines()]


def _check(stream: Stream, arrivals: list[str], what: str) -> int:
    """Every released marker arrived (in either role: at least once); duplicates are allowed,
    counted and printed. Returns the number of duplicate arrivals."""
    distinct, dups, missing = stream.account(arrivals)
    print(
        f"{what}: sent {len(stream.sent)}, arrived {len(distinct)} distinct + {dups} duplicates,"
        f" missing {len(missing)}"
    )
    assert not missing, (
        f"{what}: {len(missing)} released markers never arrived: {sorted(missing)[:10]}"
    )
    assert len(distinct) == len(stream.sent)
    return dups


@pytest.mark.parametrize("role", ["liaison-dials", "peer-dials"])
async def test_peer_killed_and_restarted_mid_stream(tmp_path: Path, role: str) -> None:
    pki = _pki(tmp_path)
    async with _liaison(tmp_path) as (usa, client):
        assert usa.router.gate is not None
        audit = GateAudit(usa.router.gate)
        if role == "liaison-dials":
            peer = PeerProcess(tmp_path, pki, usa, "server", "127.0.0.1:0")
            await peer.start()
            side = await start_federation(
                usa,
                "usa-srv",
                [_table(pki, peer.port)],
                listen="off",
                policy=POLICY,
                audit=audit,  # type: ignore[arg-type]
            )
        else:
            side = await start_federation(
                usa,
                "usa-srv",
                [_table(pki, None)],
                listen="127.0.0.1:0",
                policy=POLICY,
                audit=audit,  # type: ignore[arg-type]
            )
            assert side.fed.bound is not None
            peer = PeerProcess(tmp_path, pki, usa, "client", f"127.0.0.1:{side.fed.bound.port}")
            await peer.start()
        stream = Stream("kill")
        try:
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, RECOVER_S, "link up")
            sending = asyncio.create_task(_stream(client, stream, STREAM))
            await wait_until(lambda: len(peer.arrivals) >= STREAM // 3, RECOVER_S, "a third across")
            await peer.kill()  # mid-stream: the sender keeps going
            killed_at = len(stream.sent)
            await wait_until(lambda: status.state is not LinkState.UP, RECOVER_S, "the failure")
            await asyncio.sleep(1.0)
            await peer.start()
            await sending
            assert killed_at < STREAM
            await _drained(side)
            with contextlib.suppress(AssertionError):  # _check below says what is missing
                await wait_until(
                    lambda: not stream.account(peer.arrivals)[2],
                    RECOVER_S,
                    "every marker at the peer",
                )
        finally:
            await stop_federation(side)
            await peer.stop()
        dups = _check(stream, peer.arrivals, f"kill/restart ({role})")
        assert status.counts["connects"] >= 2
        # One release record per marker, however often it was sent: resending is the outbox's,
        # after the guard and audit. Only each new subscription's latest-state offer (at most
        # UIDS markers, one per uid) goes through the router's decision and audit again.
        releases = [
            r
            for r in _records(usa)
            if r["kind"] == "release"
            and r["fields"].get("peer") == "ukr"
            and str(r["fields"].get("uid", "")).startswith("kill-u")
        ]
        offers = UIDS * status.counts["connects"]
        print(f"kill/restart ({role}): {len(releases)} release records, {dups} duplicates")
        assert STREAM <= len(releases) <= STREAM + offers


class SilentTakPeer(TakPeer):
    """TAK's server side that stops answering HealthCheck when told (the call hangs)."""

    answering = True

    async def _health(self, request: bytes, context: Any) -> bytes:
        if not self.answering:
            await asyncio.Event().wait()
        return await super()._health(request, context)


async def test_peer_stops_answering_health_liaison_redials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Client role: the peer stops answering HealthCheck; Liaison's check times out, the
    connection ends, Liaison redials, and what was released meanwhile arrives."""
    monkeypatch.setattr(takv2, "HEALTH_INTERVAL_S", 0.3)  # 3 s in production
    monkeypatch.setattr(takv2, "HEALTH_TIMEOUT_S", 1.0)  # 5 s in production
    pki = _pki(tmp_path)
    async with _liaison(tmp_path) as (usa, client):
        assert usa.server_pki is not None and usa.router.gate is not None
        tak = SilentTakPeer()
        port = await tak.start(
            cert_chain=pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
            key=pki.server_key.read_bytes(),
            client_ca=usa.server_pki.ca_cert.read_bytes(),
        )
        side = await start_federation(
            usa,
            "usa-srv",
            [_table(pki, port)],
            listen="off",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        stream = Stream("health")
        arrivals = lambda: [f.event.other for f in tak.decoded()]  # noqa: E731
        try:
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, RECOVER_S, "link up")
            await _stream(client, stream, 50)
            await wait_until(lambda: not stream.account(arrivals())[2], RECOVER_S, "first 50")
            tak.answering = False
            await wait_until(
                lambda: "health" in (status.last_error or ""), RECOVER_S, "the health failure"
            )
            await _stream(client, stream, 50)  # released while the link is failing
            tak.answering = True
            await _drained(side)
            await wait_until(lambda: not stream.account(arrivals())[2], RECOVER_S, "all 100")
        finally:
            await stop_federation(side)
            await tak.stop()
        _check(stream, arrivals(), "health stops (Liaison dials)")
        assert status.counts["connects"] >= 2


async def test_peer_stops_health_checks_is_dropped_and_redials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Server role: the peer falls silent (no health checks); Liaison drops it after the silent
    timeout; the peer dials again and what was released meanwhile arrives."""
    monkeypatch.setattr(takv2_server, "SILENT_TIMEOUT_S", 1.5)  # 15 s in production
    pki = _pki(tmp_path)
    async with _liaison(tmp_path) as (usa, client):
        assert usa.server_pki is not None and usa.router.gate is not None
        side = await start_federation(
            usa,
            "usa-srv",
            [_table(pki, None)],
            listen="127.0.0.1:0",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        assert side.fed.bound is not None
        creds = {
            "chain": pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
            "key": pki.server_key.read_bytes(),
            "ca": usa.server_pki.ca_cert.read_bytes(),
            "host": "localhost",
        }
        target = f"127.0.0.1:{side.fed.bound.port}"
        first = TakClientPeer(health_interval=0.3)
        second = TakClientPeer(health_interval=0.3)
        stream = Stream("silent")
        arrivals = lambda: [  # noqa: E731
            fig_pb2.FederatedEvent.FromString(b).event.other
            for b in first.received + second.received
        ]
        try:
            first.start(target, **creds)  # type: ignore[arg-type]
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, RECOVER_S, "link up")
            await _stream(client, stream, 50)
            await wait_until(lambda: not stream.account(arrivals())[2], RECOVER_S, "first 50")
            first.health = False
            started = time.monotonic()
            await wait_until(
                lambda: "health_timeout" in (status.last_error or ""), RECOVER_S, "the drop"
            )
            assert time.monotonic() - started >= 1.0
            await _stream(client, stream, 50)  # released while the peer is away
            await first.stop()
            second.start(target, **creds)  # type: ignore[arg-type]
            await _drained(side)
            await wait_until(lambda: not stream.account(arrivals())[2], RECOVER_S, "all 100")
        finally:
            await first.stop()
            await second.stop()
            await stop_federation(side)
        _check(stream, arrivals(), "silent peer (peer dials)")
        assert status.counts["connects"] >= 2


class AbortingTakPeer(TakPeer):
    """TAK's server side that ends ServerEventStream with an error once, after a few events."""

    abort_after = 20
    aborted = False

    async def _server_events(self, requests: Any, context: Any) -> bytes:
        if self.aborted:
            return await super()._server_events(requests, context)
        self.calls.append("ServerEventStream")
        async for data in requests:
            self.received.append(data)
            if len(self.received) >= self.abort_after:
                self.aborted = True
                await context.abort(grpc.StatusCode.INTERNAL, "test: event stream ended")
        return b""


async def test_peer_ending_the_event_stream_ends_only_that_connection(tmp_path: Path) -> None:
    """Client role: the peer ends ServerEventStream with an error while Liaison writes to it.
    The write's error ends that connection like any peer failure (it used to escape as an
    AioRpcError and end the whole federation); Liaison redials and every marker arrives."""
    pki = _pki(tmp_path)
    async with _liaison(tmp_path) as (usa, client):
        assert usa.server_pki is not None and usa.router.gate is not None
        tak = AbortingTakPeer()
        port = await tak.start(
            cert_chain=pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
            key=pki.server_key.read_bytes(),
            client_ca=usa.server_pki.ca_cert.read_bytes(),
        )
        side = await start_federation(
            usa,
            "usa-srv",
            [_table(pki, port)],
            listen="off",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        stream = Stream("abort")
        arrivals = lambda: [f.event.other for f in tak.decoded() if f.HasField("event")]  # noqa: E731
        try:
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, RECOVER_S, "link up")
            await _stream(client, stream, 100)
            await wait_until(lambda: tak.aborted, RECOVER_S, "the peer's abort")
            await _drained(side)
            await wait_until(lambda: not stream.account(arrivals())[2], RECOVER_S, "all 100")
            assert side.task is not None and not side.task.done(), "the federation ended"
        finally:
            await stop_federation(side)
            await tak.stop()
        _check(stream, arrivals(), "event stream aborted (Liaison dials)")
        assert status.counts["connects"] >= 2
