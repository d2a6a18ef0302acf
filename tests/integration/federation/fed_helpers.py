"""Two real Liaison servers joined by the federation link (real TLS on 127.0.0.1, port 0).

Until app.py starts the federation itself, each side's :class:`Federation` is built here around
the running server's own router and PKI (the adapter the lead will replace with the hook).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from liaison.app import Server, now_ms, run_server
from liaison.audit import AuditLog
from liaison.federation.config import federation_from_table
from liaison.federation.supervisor import Federation
from liaison.identity.certs import fingerprint_sha256, load_server_cert
from liaison.model.labels import Policy
from tests.integration.conftest import make_config
from tests.unit.federation.fed_support import POLICY, peer_table

WAIT_S = 10.0


@dataclass
class Side:
    server: Server
    fed: Federation
    audit: AuditLog
    wire_out: bytearray = field(default_factory=bytearray)  # plaintext this side sent its peer
    wire_in: bytearray = field(default_factory=bytearray)  # plaintext it received
    task: asyncio.Task[None] | None = None


def server_fingerprint(server: Server) -> str:
    assert server.server_pki is not None
    return fingerprint_sha256(load_server_cert(server.server_pki))


def _tap(side: dict[str, bytearray]) -> Any:
    def tap(direction: str, data: bytes) -> None:
        side[direction] += data

    return tap


def usa_peer_of_ukr(usa: Server, **overrides: Any) -> dict[str, Any]:
    """How the UKR server configures its USA partner (USA dials in)."""
    assert usa.server_pki is not None
    table = peer_table(
        name="usa",
        dial=None,
        accept=True,
        ca_file=str(usa.server_pki.ca_cert),
        fingerprint=server_fingerprint(usa),
        release_ceiling={"classification": "SECRET", "REL": ["USA", "LIAISON"]},
        originate={"org": "USA", "classification": "SECRET", "REL": ["USA", "LIAISON"]},
    )
    table.update(overrides)
    return table


def ukr_peer_of_usa(ukr: Server, port: int, **overrides: Any) -> dict[str, Any]:
    """How the USA server configures its UKR partner (dialled)."""
    assert ukr.server_pki is not None
    table = peer_table(
        name="ukr",
        dial=f"127.0.0.1:{port}",
        ca_file=str(ukr.server_pki.ca_cert),
        fingerprint=server_fingerprint(ukr),
    )
    table.update(overrides)
    return table


async def start_federation(
    server: Server,
    server_id: str,
    peers: list[dict[str, Any]],
    *,
    listen: str = "127.0.0.1:0",
    audit: AuditLog | None = None,
    policy_version: int | None = None,
    policy: Policy = POLICY,
    **top: Any,
) -> Side:
    table: dict[str, Any] = {
        "server_id": server_id,
        "listen": listen,
        "peer": peers,
        "heartbeat_s": 0.5,
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.5,
        "status_interval_s": 0.2,
    }
    table.update(top)
    if policy_version is not None:
        policy = replace(policy, version=policy_version)
    config = federation_from_table(table, policy, default_server_id="localhost")
    assert server.server_pki is not None
    data_dir = server.config.data_dir
    if audit is None:
        (data_dir / "audit").mkdir(parents=True, exist_ok=True)
        audit = AuditLog.open(data_dir / "audit" / "federation.log", None, fsync=False)
    wires: dict[str, bytearray] = {"out": bytearray(), "in": bytearray()}
    fed = Federation(
        config=config,
        policy=policy,
        router=server.router,
        audit=audit,
        data_dir=data_dir,
        server_cert=server.server_pki.server_cert,
        server_key=server.server_pki.server_key,
        clock_ms=now_ms,
        metrics=server.metrics,
        durable=False,
        tap=_tap(wires),
    )
    await fed.start()
    side = Side(server=server, fed=fed, audit=audit, wire_out=wires["out"], wire_in=wires["in"])
    side.task = asyncio.create_task(fed.run())
    return side


async def stop_federation(side: Side) -> None:
    if side.task is not None:
        side.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(WAIT_S):  # a federation that does not stop fails the test
                await side.task
        side.task = None


def server_config(root: Path, name: str) -> Any:
    return make_config(root / name, udp="off", https="off", enroll="off", tcp="off")


@contextlib.asynccontextmanager
async def two_servers(root: Path) -> AsyncIterator[tuple[Server, Server]]:
    async with (
        run_server(server_config(root, "usa")) as usa,
        run_server(server_config(root, "ukr")) as ukr,
    ):
        yield usa, ukr


async def wait_until(predicate: Any, within: float = WAIT_S, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
