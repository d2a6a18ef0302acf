"""A cluster's partner link moves between nodes without loss or duplicates (docs/deployment.md,
"Several nodes"; federation/lease.py, pg_outbox.py, feed.py).

Three ``liaison serve`` nodes (each its own process: cluster_node.py) share one NATS JetStream
stream and one PostgreSQL, with the same [federation] table: one native partner, UKR, another
Liaison server outside the cluster. Real TLS, real NATS (127.0.0.1:4222 or LIAISON_TEST_NATS),
real PostgreSQL (127.0.0.1:5432 db ``test`` or LIAISON_TEST_POSTGRESQL, a schema of its own);
skipped without them, failed under LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from liaison import cli
from liaison.app import run_server
from liaison.errors import ConfigError
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from liaison.identity.issue import issue_client_cert
from liaison.identity.users import UserDirectory
from tests.integration.conftest import issue_cert, make_config
from tests.integration.helpers import Client, connect_tls
from tests.integration.test_federation_app import free_port, peer_toml
from tests.integration.test_labels_e2e import POLICY, marker, seclabel
from tests.unit.storage.storage_support import POSTGRESQL_URL, postgresql_schema

NATS_URL = os.environ.get("LIAISON_TEST_NATS", "nats://127.0.0.1:4222")
NODE = Path(__file__).resolve().parent / "federation" / "cluster_node.py"
ROOT = Path(__file__).resolve().parents[2]
# The lease settings of the test (short, so the test is short): takeover within TTL + renew.
TTL_S, RENEW_S = 3.0, 0.5
# Bounded waits.
START_S = 60.0
ARRIVE_S = 60.0

REL_BOTH = seclabel("SECRET", ["USA", "UKR"])
USA_ONLY = seclabel("SECRET", ["USA"])  # above UKR's release ceiling (REL UKR): a canary


@pytest.fixture
async def services() -> AsyncIterator[dict[str, Any]]:
    """A stream and prefix of this test's (deleted after) and a PostgreSQL schema of its own."""
    try:
        import nats

        nc = await nats.connect(NATS_URL, connect_timeout=3, max_reconnect_attempts=0)
        js = nc.jetstream()
        await js.account_info()
    except Exception as exc:
        reason = f"NATS JetStream at {NATS_URL} is unavailable: {exc!r}"
        if os.environ.get("LIAISON_REQUIRE_SERVICES") == "1":
            pytest.fail(f"cluster tests required but {reason}")
        pytest.skip(reason)
    tag = secrets.token_hex(4)
    try:
        async with postgresql_schema() as schema:
            import asyncpg

            conn = await asyncpg.connect(POSTGRESQL_URL, timeout=5)
            try:
                await conn.execute(f"CREATE SCHEMA {schema}")
            finally:
                await conn.close()
            sep = "&" if "?" in POSTGRESQL_URL else "?"
            yield {
                "cluster_nats": NATS_URL,
                "cluster_prefix": f"lf{tag}",
                "cluster_stream": f"LIAISON_FED_{tag}",
                "storage": f"{POSTGRESQL_URL}{sep}search_path={schema}%2C%20public",
                "schema": schema,
            }
    finally:
        with contextlib.suppress(Exception):
            await js.delete_key_value(f"LIAISON_FED_{tag}_LATEST")
        for stream in (f"LIAISON_FED_{tag}", f"LIAISON_FED_{tag}_REVOCATIONS"):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
        with contextlib.suppress(Exception):
            for info in await js.streams_info():
                if info.config.name.startswith(f"LIAISON_FED_{tag}"):
                    await js.delete_stream(info.config.name)
        await nc.close()


class Node:
    """One cluster node process."""

    def __init__(self, name: str, data_dir: Path, overrides: dict[str, Any]) -> None:
        self.name = name
        self.data_dir = data_dir
        self.overrides = overrides
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls_port = 0

    def launch(self) -> None:
        log = (self.data_dir / "node.log").open("ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, str(NODE), json.dumps(self.overrides)],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
            env=env,
        )
        log.close()

    async def start(self) -> None:
        self.launch()
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), START_S)
        if not line:
            raise AssertionError(f"{self.name} did not start: {self.tail()}")
        self.tls_port = int(json.loads(line)["tls"])

    def tail(self) -> str:
        path = self.data_dir / "node.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def kill(self) -> None:
        """kill -9: no shutdown, no lease release, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_pipe()


def fp(p: ServerPki) -> str:
    return fingerprint_sha256(load_server_cert(p))


def federation_ingests(data_dir: Path) -> Counter[str]:
    """Events the UKR server accepted from its partner link, by uid (its audit log)."""
    path = data_dir / "audit" / "audit.jsonl"
    out: Counter[str] = Counter()
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        fields = rec.get("fields", {})
        if rec.get("kind") == "ingest" and fields.get("path") == "federation":
            out[fields.get("uid", "?")] += 1
    return out


async def holder(schema: str) -> tuple[str | None, int]:
    import asyncpg

    conn = await asyncpg.connect(POSTGRESQL_URL, timeout=5)
    try:
        row = await conn.fetchrow(
            f"SELECT holder, epoch, expires_at > now() AS live FROM {schema}.federation_lease"
        )
    finally:
        await conn.close()
    if row is None:
        return None, 0
    return (row["holder"] if row["live"] else None), int(row["epoch"])


async def wait_holder(schema: str, *, not_in: set[str], within: float) -> tuple[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for _ in range(int(within / 0.05) + 1):
        name, epoch = await holder(schema)
        if name is not None and name not in not_in:
            return name, epoch
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"no node took the lease within {within} s")


async def publish(client: Client, prefix: str, stop: asyncio.Event, sent: list[str]) -> None:
    """A steady load: one releasable marker every 20 ms until ``stop`` (and a canary every
    25th)."""
    for i in range(5000):  # bounded: 100 s at most
        if stop.is_set():
            return
        uid = f"m-{prefix}-{i}"
        await client.send(marker(uid, f"LOAD-{prefix}-{i}", REL_BOTH))
        sent.append(uid)
        if i % 25 == 0:  # canaries in the load too: above UKR's ceiling, never released
            await client.send(marker(f"m-canary-{prefix}-{i}", f"CANARY-USA-ONLY-{i}", USA_ONLY))
        await asyncio.sleep(0.02)


async def wait_ingested(ukr_dir: Path, uids: list[str], within: float) -> Counter[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    got: Counter[str] = Counter()
    for _ in range(int(within / 0.2) + 1):
        got = federation_ingests(ukr_dir)
        if all(u in got for u in uids) or loop.time() > deadline:
            return got
        await asyncio.sleep(0.2)
    return got


async def test_the_partner_link_moves_to_another_node_without_loss_or_duplicates(
    tmp_path: Path, services: dict[str, Any]
) -> None:
    schema = services.pop("schema")
    dirs = [tmp_path / f"node{i}" for i in range(3)]
    ukr_dir = tmp_path / "ukr"
    # Every node presents the same federation certificate (the partner pins one): node 0's PKI,
    # copied to the others (docs/deployment.md).
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
    for d in dirs:
        UserDirectory.load(d / "users.json").add_user("usa-s", "USA", profile="usa-secret")
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
    try:
        async with run_server(ukr_config) as ukr:
            for node in nodes:
                await node.start()
            first, epoch1 = await wait_holder(schema, not_in=set(), within=START_S)
            by_name = {n.name: n for n in nodes}
            for node in nodes:
                conns.append(
                    await connect_tls(
                        node.tls_port, cert=cert, key=key, ca=usa_pki.ca_cert, name=node.name
                    )
                )
            assert ukr.tls is not None
            k = issue_cert(ukr, "ukr-s", "UKR")
            ukr_client = await connect_tls(ukr.tls.port, cert=k.cert, key=k.key, ca=k.ca)
            conns.append(ukr_client)
            await asyncio.sleep(0.5)

            # 1. Events published on every node reach the peer once; the canary never does.
            warm = []
            for i, c in enumerate(conns[:3]):
                uid = f"m-warm-{i}"
                await c.send(marker(uid, f"WARM-{i}", REL_BOTH))
                warm.append(uid)
                await c.send(marker(f"m-canary-{i}", f"CANARY-USA-ONLY-{i}", USA_ONLY))
            got = await wait_ingested(ukr_dir, warm, ARRIVE_S)
            assert all(got[u] == 1 for u in warm), (got, nodes[0].tail())

            # The operator sees who holds the lease, from any node's status.
            other = next(n for n in nodes if n.name != first)
            for _ in range(100):  # bounded: 10 s
                doc = json.loads((other.data_dir / "federation" / "status.json").read_text())
                if doc.get("lease", {}).get("holder") == first:
                    break
                await asyncio.sleep(0.1)
            assert doc["lease"]["holder"] == first and doc["lease"]["held_here"] is False
            assert cli.main(["federation", "status", "--data-dir", str(other.data_dir)]) == 0

            # 2. A steady load on every node; the holder is killed -9 in the middle of it.
            stop = asyncio.Event()
            sent: dict[str, list[str]] = {n.name: [] for n in nodes}
            loads = [
                asyncio.create_task(publish(c, n.name, stop, sent[n.name]))
                for n, c in zip(nodes, conns[:3], strict=True)
            ]
            await asyncio.sleep(1.5)
            dead = by_name[first]
            dead.kill()
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            second, epoch2 = await wait_holder(schema, not_in={first}, within=TTL_S + 10)
            took_s = loop.time() - killed_at
            assert epoch2 > epoch1
            # The dead holder's lease expires TTL after its last renewal; the next attempt
            # (every RENEW_S) takes it.
            assert took_s <= TTL_S + RENEW_S + 1.0, took_s
            # The load goes on under the new holder: 60 more events per surviving node.
            after = {n.name: len(sent[n.name]) for n in nodes if n is not dead}
            for _ in range(200):  # bounded: 20 s
                if all(len(sent[name]) >= count + 60 for name, count in after.items()):
                    break
                await asyncio.sleep(0.1)
            stop.set()
            for t in loads:
                with contextlib.suppress(OSError, ConnectionError):
                    await asyncio.wait_for(t, 10)

            # 3. Every event the surviving nodes accepted reaches UKR exactly once; what the
            # dead node accepted reached it at most once (what it had not published is lost
            # with it: it was never in the stream).
            survivors = [u for n in nodes if n is not dead for u in sent[n.name]]
            assert len(survivors) > 100
            got = await wait_ingested(ukr_dir, survivors, ARRIVE_S)
            await asyncio.sleep(1.0)  # anything late (a duplicate) arrives too
            got = federation_ingests(ukr_dir)
            missing = [u for u in survivors if got[u] == 0]
            assert not missing, (len(missing), missing[:5], by_name[second].tail())
            twice = {u: c for u, c in got.items() if c > 1}
            assert not twice, twice
            assert all(got[u] <= 1 for u in sent[dead.name])
            assert not any(u.startswith("m-canary-") for u in got)
            assert b"CANARY-USA-ONLY" not in bytes(ukr_client.raw)
            new = by_name[second]
            status = json.loads((new.data_dir / "federation" / "status.json").read_text())
            assert status["lease"]["held_here"] is True and status["lease"]["epoch"] == epoch2

            # 4. A clean stop releases the lease: the last node takes it without waiting the TTL.
            new.stop()
            last, _ = await wait_holder(schema, not_in={first, second}, within=TTL_S)
            assert last not in (first, second)
    finally:
        for c in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.close(), 5)
            # The killed node's connection never finishes its TLS close: drop it.
            c.writer.transport.abort()
        for node in nodes:
            node.stop()


async def test_a_cluster_with_federation_refuses_storage_other_than_postgresql(
    tmp_path: Path,
) -> None:
    ukr_pki = ensure_server_pki(tmp_path / "ukr", public_host="localhost")
    policy = tmp_path / "policy.toml"
    policy.write_text(
        POLICY
        + '\n[federation]\nserver_id = "usa-liaison"\nlisten = "off"\n'
        + peer_toml(
            "ukr", ca=ukr_pki.ca_cert, fingerprint=fp(ukr_pki), org="UKR", dial="127.0.0.1:9"
        )
    )
    config = make_config(
        tmp_path / "node",
        policy_file=str(policy),
        cluster_nats="nats://127.0.0.1:9",  # never reached: refused before the bus connects
        cluster_node="node0",
    )
    with pytest.raises(ConfigError, match="postgresql://"):
        async with run_server(config):
            pass


async def test_a_holder_that_cannot_renew_stops_its_links_and_takes_the_lease_again_later(
    tmp_path: Path, services: dict[str, Any]
) -> None:
    """Another node took the lease behind this one's back (as after a pause past the TTL): the
    next renewal says so, the links stop at once; when the lease is free again it is taken back
    with a higher epoch."""
    schema = services.pop("schema")
    ukr_pki = ensure_server_pki(tmp_path / "ukr", public_host="localhost")
    policy = tmp_path / "policy.toml"
    policy.write_text(
        POLICY
        + '\n[federation]\nserver_id = "usa-liaison"\nlisten = "off"\nstatus_interval_s = 0.2\n'
        + f"lease_ttl_s = {TTL_S}\nlease_renew_s = {RENEW_S}\n"
        + peer_toml(
            "ukr", ca=ukr_pki.ca_cert, fingerprint=fp(ukr_pki), org="UKR", dial="127.0.0.1:9"
        )
    )
    config = make_config(
        tmp_path / "node", policy_file=str(policy), cluster_node="node0", **services
    )
    import asyncpg

    async with run_server(config) as server:
        leased = server.federation_lease
        assert leased is not None
        for _ in range(200):  # bounded: 20 s
            if leased.federation is not None:
                break
            await asyncio.sleep(0.1)
        assert leased.federation is not None and leased.epoch == 1
        held = "liaison_federation_lease_held"
        assert server.metrics.registry.get_sample_value(held) == 1.0
        conn = await asyncpg.connect(POSTGRESQL_URL, timeout=5)
        try:
            await conn.execute(
                f"UPDATE {schema}.federation_lease SET holder = 'intruder', epoch = epoch + 1,"
                " expires_at = now() + interval '1 hour'"
            )
            loop = asyncio.get_running_loop()
            stolen_at = loop.time()
            for _ in range(100):  # bounded: 10 s
                if leased.federation is None:
                    break
                await asyncio.sleep(0.05)
            assert leased.federation is None and leased.epoch is None
            assert loop.time() - stolen_at <= RENEW_S * 2 + 1.0
            assert server.metrics.registry.get_sample_value(held) == 0.0
            # The intruder's lease expires: this node takes it back, one epoch later.
            await conn.execute(f"UPDATE {schema}.federation_lease SET expires_at = now()")
            for _ in range(100):  # bounded: 10 s
                if leased.federation is not None:
                    break
                await asyncio.sleep(0.05)
            assert leased.federation is not None and leased.epoch == 3
            changes = "liaison_federation_lease_changes_total"
            assert server.metrics.registry.get_sample_value(changes) == 2.0
        finally:
            await conn.close()
    # A clean stop released it.
    name, _epoch = await holder(schema)
    assert name is None
