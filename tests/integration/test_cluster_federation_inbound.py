"""What a cluster receives from its partner while the lease holder dies (docs/deployment.md,
"What the cluster receives from a partner across a change of holder"; federation/link.py
``_wait_for_bus``).

Three ``liaison serve`` nodes (processes, tests/integration/federation/cluster_node.py) on one
NATS JetStream stream and one PostgreSQL schema, one native partner UKR (in this process) whose
client sends a steady stream into the cluster while the holder is killed with SIGKILL. Every
event UKR's outbox saw acknowledged reaches a client on each surviving node; those acknowledged
before the kill and after exactly once. Skipped without NATS or PostgreSQL, failed under
LIAISON_REQUIRE_SERVICES=1 (the ``services`` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liaison import cli
from liaison.app import run_server
from liaison.federation.outbox import outbox_path
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki
from liaison.identity.issue import issue_client_cert
from liaison.identity.users import UserDirectory
from tests.integration.conftest import issue_cert, make_config
from tests.integration.helpers import Client, connect_tls
from tests.integration.test_cluster_federation import (
    RENEW_S,
    START_S,
    TTL_S,
    Node,
    fp,
    services,
    wait_holder,
)
from tests.integration.test_federation_app import free_port, peer_toml
from tests.integration.test_labels_e2e import POLICY, marker, seclabel

__all__ = ["services"]  # the fixture, shared with test_cluster_federation

UKR_LABEL = seclabel("SECRET", ["UKR", "USA"])  # originated by UKR, releasable to USA
ARRIVE_S = 60.0
# An event's uid in what a client received (its callsign is the uid in capitals, its text
# UKR-LOAD-n: neither matches).
UID = re.compile(rb"u-ukr-(?:warm|[0-9]+)(?![0-9])")


def received(client: Client) -> Counter[str]:
    """Events from UKR the client got, by uid."""
    return Counter(m.decode() for m in UID.findall(bytes(client.raw)))


async def add_user_in_database(storage: str, data_dir: Path, tmp_path: Path) -> None:
    """``liaison user add`` against the cluster's database (users live there with PostgreSQL
    storage, identity/shared_db.py), as an operator would."""
    config = tmp_path / "cli.toml"
    config.write_text(f'[storage]\nbackend = "{storage}"\n')
    args = ["user", "add", "usa-s", "--org", "USA", "--profile", "usa-secret"]
    args += ["--config", str(config), "--data-dir", str(data_dir), "--public-host", "localhost"]
    assert await asyncio.to_thread(cli.main, args) == 0


async def wait_for(check: Callable[[], bool], within: float, step: float = 0.2) -> bool:
    for _ in range(int(within / step) + 1):  # bounded in count and time
        if check():
            return True
        await asyncio.sleep(step)
    return check()


async def keep_reading(client: Client) -> None:
    """Read what the server sends into ``client.raw`` until the connection ends or the task is
    cancelled (bounded: 2000 rounds of at most 0.3 s)."""
    for _ in range(2000):
        try:
            await client.collect(quiet_s=0.1, limit_s=0.3)
        except (ConnectionError, OSError):
            return


async def send_load(client: Client, stop: asyncio.Event, sent: list[str]) -> None:
    """One event from UKR every 20 ms until ``stop``."""
    for i in range(5000):  # bounded: 100 s at most
        if stop.is_set():
            return
        uid = f"u-ukr-{i}"
        await client.send(marker(uid, f"UKR-LOAD-{i}", UKR_LABEL))
        sent.append(uid)
        await asyncio.sleep(0.02)


async def test_every_event_the_partner_got_acknowledged_survives_the_holder(
    tmp_path: Path, services: dict[str, Any]
) -> None:
    schema = services.pop("schema")
    dirs = [tmp_path / f"node{i}" for i in range(3)]
    ukr_dir = tmp_path / "ukr"
    usa_pki = ensure_server_pki(dirs[0], public_host="localhost")
    for d in dirs[1:]:
        shutil.copytree(usa_pki.directory, ServerPki.at(d).directory)
    ukr_pki = ensure_server_pki(ukr_dir, public_host="localhost")
    ukr_port = free_port()
    usa_policy = tmp_path / "usa-policy.toml"
    usa_policy.write_text(
        POLICY
        + '\n[federation]\nserver_id = "usa-liaison"\nlisten = "off"\nheartbeat_s = 0.5\n'
        + "backoff_base_s = 0.05\nbackoff_cap_s = 0.3\nstatus_interval_s = 0.2\n"
        + f"lease_ttl_s = {TTL_S}\nlease_renew_s = {RENEW_S}\n"
        + peer_toml(
            "ukr",
            ca=ukr_pki.ca_cert,
            fingerprint=fp(ukr_pki),
            org="UKR",
            dial=f"127.0.0.1:{ukr_port}",
        )
    )
    ukr_policy = tmp_path / "ukr-policy.toml"
    ukr_policy.write_text(
        POLICY
        + f'\n[federation]\nserver_id = "ukr-liaison"\nlisten = "127.0.0.1:{ukr_port}"\n'
        + "heartbeat_s = 0.5\nstatus_interval_s = 0.2\n"
        + peer_toml("usa", ca=usa_pki.ca_cert, fingerprint=fp(usa_pki), org="USA", dial=None)
    )
    await add_user_in_database(services["storage"], dirs[0], tmp_path)
    UserDirectory.load(ukr_dir / "users.json").add_user("ukr-s", "UKR", profile="ukr-secret")
    issued = issue_client_cert(usa_pki, common_name="usa-s", org="USA")
    cert, key = tmp_path / "usa-s.pem", tmp_path / "usa-s.key"
    cert.write_bytes(issued.cert_pem)
    assert issued.key_pem is not None
    key.write_bytes(issued.key_pem)
    nodes = [
        Node(
            f"node{i}",
            d,
            {
                "data_dir": str(d),
                "tls": "127.0.0.1:0",
                "tcp": "off",
                "udp": "off",
                "https": "off",
                "enroll": "off",
                "public_host": "localhost",
                "policy_file": str(usa_policy),
                "cluster_node": f"node{i}",
                **services,
            },
        )
        for i, d in enumerate(dirs)
    ]
    ukr_config = make_config(
        ukr_dir, policy_file=str(ukr_policy), udp="off", https="off", enroll="off", tcp="off"
    )
    conns: list[Client] = []
    readers: list[asyncio.Task[None]] = []
    try:
        async with run_server(ukr_config) as ukr:
            for node in nodes:
                await node.start()
            first, _epoch = await wait_holder(schema, not_in=set(), within=START_S)
            by_name = {n.name: n for n in nodes}
            usa = {}
            for node in nodes:
                usa[node.name] = await connect_tls(
                    node.tls_port, cert=cert, key=key, ca=usa_pki.ca_cert, name=node.name
                )
                conns.append(usa[node.name])
                readers.append(asyncio.create_task(keep_reading(usa[node.name])))
            assert ukr.tls is not None and ukr.federation is not None
            k = issue_cert(ukr, "ukr-s", "UKR")
            ukr_client = await connect_tls(ukr.tls.port, cert=k.cert, key=k.key, ca=k.ca)
            conns.append(ukr_client)

            # UKR's outbox for USA: every uid it saw acknowledged (an ACK, or a RESUME), read
            # from its file just before the rows leave it.
            box = ukr.federation.links["usa"].outbox
            reader = sqlite3.connect(outbox_path(ukr_dir, "usa"))
            acked: set[str] = set()
            ack = box.ack

            def recording_ack(seq: int) -> int:
                rows = reader.execute(
                    "SELECT uid FROM outbox WHERE seq IS NOT NULL AND seq <= ?", (seq,)
                )
                acked.update(uid for (uid,) in rows)
                return ack(seq)

            box.ack = recording_ack  # type: ignore[method-assign]

            # 1. An event from UKR reaches every node's client.
            await asyncio.sleep(0.5)
            await ukr_client.send(marker("u-ukr-warm", "UKR-WARM", UKR_LABEL))
            assert await wait_for(
                lambda: all(received(c)["u-ukr-warm"] == 1 for c in usa.values()), ARRIVE_S
            ), [(received(c), bytes(c.raw)[-600:]) for c in usa.values()]

            # 2. A steady stream from UKR; the holder is killed -9 in the middle of it.
            stop = asyncio.Event()
            sent: list[str] = []
            load = asyncio.create_task(send_load(ukr_client, stop, sent))
            await asyncio.sleep(1.5)
            dead = by_name[first]
            dead.kill()
            acked_before_kill = set(acked)  # nothing ran since the kill: no ACK got in
            second, _ = await wait_holder(schema, not_in={first}, within=TTL_S + 10)
            at_takeover = len(sent)
            assert await wait_for(lambda: len(sent) >= at_takeover + 60, 20.0, 0.1)
            stop.set()
            await asyncio.wait_for(load, 10)

            # 3. Everything UKR sent is acknowledged in the end (its outbox drains).
            assert await wait_for(lambda: set(sent) <= acked, ARRIVE_S), (
                len(set(sent) - acked),
                by_name[second].tail(),
            )
            survivors = [usa[n.name] for n in nodes if n is not dead]
            assert await wait_for(
                lambda: all(set(sent) <= set(received(c)) for c in survivors), ARRIVE_S
            )
            await asyncio.sleep(1.0)  # anything late (a second copy) arrives too
            assert len(acked_before_kill) > 20, len(acked_before_kill)
            for c in survivors:
                got = received(c)
                missing = [u for u in acked if got[u] == 0]
                assert not missing, (len(missing), missing[:5])
                # Exactly once, acknowledged before the holder died or after: an event the dead
                # holder applied and published but did not acknowledge is sent again and
                # applied again by the next holder, and JetStream knows it by the peer and its
                # number (fed/ukr/N): neither stored nor delivered a second time.
                twice = {u: n for u, n in got.items() if n > 1}
                assert not twice, (twice, twice.keys() & acked_before_kill)
            reader.close()
    finally:
        for t in readers:
            t.cancel()
        for c in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.close(), 5)
            c.writer.transport.abort()
        for node in nodes:
            node.stop()
