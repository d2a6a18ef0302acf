"""Several nodes, one picture: real Liaison servers sharing events through a real NATS JetStream
(127.0.0.1:4222, or LIAISON_TEST_NATS), real TAK clients on each node.

Each test uses a stream and subject prefix of its own, deleted after it. Skipped with the reason
without NATS, failed under LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from liaison.app import Server, run_server
from liaison.cli import main as cli_main
from liaison.cluster.access import revocation_stream
from liaison.identity.ca import ensure_server_pki
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ClientCert, issue_cert, make_config
from tests.integration.helpers import (
    Client,
    clients,
    connect_tcp,
    connect_tls,
    delete_event,
    sa_event,
)
from tests.integration.http.http_support import (
    PASSWORD,
    browser_session,
    enroll_url,
    wait_until,
    write_groups,
)
from tests.integration.http.test_feed_lifetime import _close_of as close_of
from tests.integration.http.test_feed_lifetime import _login as login
from tests.integration.http.test_feed_lifetime import _snapshot as snapshot
from tests.integration.test_labels_e2e import POLICY, USERS, marker, seclabel

NATS_URL = os.environ.get("LIAISON_TEST_NATS", "nats://127.0.0.1:4222")
DEPLOYMENT = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text()
# Bounded waits for events crossing the bus.
WAIT_S = 10.0


@pytest.fixture
async def bus() -> AsyncIterator[dict[str, Any]]:
    """Cluster settings of a stream and prefix made for this test (deleted after it)."""
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
    settings = {
        "cluster_nats": NATS_URL,
        "cluster_prefix": f"lt{tag}",
        "cluster_stream": f"LIAISON_TEST_{tag}",
    }
    try:
        yield settings
    finally:
        with contextlib.suppress(Exception):  # the latest-state bucket (cluster/latest_kv.py)
            await js.delete_key_value(f"{settings['cluster_stream']}_LATEST")
        for stream in (settings["cluster_stream"], revocation_stream(settings["cluster_stream"])):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
        await nc.close()


Nodes = Callable[..., contextlib.AbstractAsyncContextManager[list[Server]]]


@pytest.fixture
def nodes(tmp_path: Path, bus: dict[str, Any]) -> Nodes:
    """``async with nodes(n, **overrides) as servers:`` runs n nodes on one bus."""

    @contextlib.asynccontextmanager
    async def factory(n: int, **overrides: Any) -> AsyncIterator[list[Server]]:
        async with contextlib.AsyncExitStack() as stack:
            servers = []
            for i in range(n):
                data_dir = tmp_path / f"node{i}"
                config = make_config(data_dir, cluster_node=f"node{i}", **bus, **overrides)
                servers.append(await stack.enter_async_context(run_server(config)))
            yield servers

    return factory


async def wait_tcp(server: Server, name: str) -> Client:
    assert server.tcp is not None
    return await connect_tcp(server.tcp.port, name)


def count(client: Client, uid: str) -> int:
    return bytes(client.raw).count(f'uid="{uid}"'.encode())


async def test_an_event_reaches_every_client_of_every_node_exactly_once(nodes: Nodes) -> None:
    async with nodes(3) as (n0, n1, n2):
        a, b, c, b2 = (
            await wait_tcp(n0, "a"),
            await wait_tcp(n1, "b"),
            await wait_tcp(n2, "c"),
            await wait_tcp(n1, "b2"),
        )
        async with clients(a, b, c, b2):
            await asyncio.sleep(0.3)  # the nodes subscribe to their clients' groups
            await a.send(sa_event("uid-from-a", "ALPHA"))
            await b.send(sa_event("uid-from-b", "BRAVO"))
            for client, uids in (
                (a, ["uid-from-b"]),
                (b, ["uid-from-a"]),
                (c, ["uid-from-a", "uid-from-b"]),
                (b2, ["uid-from-a", "uid-from-b"]),
            ):
                for uid in uids:
                    await client.wait_for(f'uid="{uid}"'.encode(), WAIT_S)
            for client in (a, b, c, b2):
                await client.collect(0.5)
            # Exactly once per client; never echoed to the sender.
            assert count(a, "uid-from-a") == 0 and count(b, "uid-from-b") == 0
            assert count(a, "uid-from-b") == 1
            assert count(b, "uid-from-a") == 1 and count(b2, "uid-from-a") == 1
            assert count(c, "uid-from-a") == 1 and count(c, "uid-from-b") == 1
        # The picture is the same on every node: each one's latest state has both.
        for server in (n0, n1, n2):
            uids = {e.event.uid for e in server.router.latest_entries()}
            assert {"uid-from-a", "uid-from-b"} <= uids
        published = n0.metrics.registry.get_sample_value("liaison_cluster_published_total")
        assert published == 1


async def test_labels_decide_on_every_node_and_canaries_never_cross(
    nodes: Nodes, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    for i in range(2):
        users = UserDirectory.load(tmp_path / f"node{i}" / "users.json")
        for name, (org, profile) in USERS.items():
            users.add_user(name, org, profile=profile)
    async with nodes(2, policy_file=str(policy)) as (n0, n1):
        conns: dict[str, Client] = {}
        # USA users on node 0, UKR users on node 1.
        for name, (org, _) in USERS.items():
            server = n0 if org == "USA" else n1
            assert server.tls is not None
            cert = issue_cert(server, name, org)
            conns[name] = await connect_tls(
                server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name
            )
        async with clients(*conns.values()):
            await asyncio.sleep(0.3)
            us = conns["usa-s"]
            await us.send(
                marker("m-secret-both", "CANARY-SECRET-BOTH", seclabel("SECRET", ["USA", "UKR"]))
            )
            await us.send(marker("m-usa-only", "CANARY-USA-ONLY", seclabel("SECRET", ["USA"])))
            await us.send(
                marker("m-unclass-both", "CANARY-UNCLASS", seclabel("UNCLASSIFIED", ["USA", "UKR"]))
            )
            await conns["ukr-s"].wait_for(b'uid="m-unclass-both"', WAIT_S)
            await conns["ukr-u"].wait_for(b'uid="m-unclass-both"', WAIT_S)
            for c in conns.values():
                await c.collect(0.5)
            ks, ku = conns["ukr-s"], conns["ukr-u"]
            assert b"CANARY-SECRET-BOTH" in ks.raw  # SECRET REL UKR on the other node
            assert b"CANARY-SECRET-BOTH" not in ku.raw  # below its clearance
            for c in (ks, ku):
                assert b"CANARY-USA-ONLY" not in c.raw  # not releasable to UKR
            assert b"CANARY-USA-ONLY" not in conns["usa-u"].raw  # USA, but below SECRET
            assert b"CANARY-SECRET-BOTH" not in conns["usa-u"].raw

        # Each release to UKR was recorded by the node that released it (node 1), none by node 0.
        def releases(n: int) -> list[dict[str, Any]]:
            path = tmp_path / f"node{n}" / "audit" / "audit.jsonl"
            records = [json.loads(line) for line in path.read_text().splitlines() if line]
            return [r for r in records if r.get("kind") == "release"]

        released = {
            (r["fields"]["uid"], tuple(r["fields"]["recipients"]))
            for r in releases(1)
            if r["fields"]["to_org"] == "UKR"
        }
        assert ("m-secret-both", ("ukr-s",)) in released
        assert ("m-unclass-both", ("ukr-s", "ukr-u")) in released
        assert not [r for r in releases(0) if r["fields"]["to_org"] == "UKR"]


GROUPS = """
[[rule]]
o = "BLUE"
groups = ["BLUE"]

[[rule]]
o = "RED"
groups = ["RED"]

[[rule]]
o = "PURPLE"
groups = ["BLUE", "RED"]
"""


async def test_a_node_receives_only_the_groups_its_clients_read(
    nodes: Nodes, tmp_path: Path
) -> None:
    groups = tmp_path / "groups.toml"
    groups.write_text(GROUPS)
    async with nodes(3, groups_file=str(groups)) as (n0, n1, n2):
        # node 0: BLUE, RED and PURPLE (both) senders; node 1: a BLUE and a PURPLE reader;
        # node 2: a RED reader only.
        conns = {}
        for name, org, server in (
            ("blue-0", "BLUE", n0),
            ("red-0", "RED", n0),
            ("blue-1", "BLUE", n1),
            ("red-2", "RED", n2),
            ("purple-0", "PURPLE", n0),
            ("purple-1", "PURPLE", n1),
        ):
            assert server.tls is not None
            cert = issue_cert(server, name, org)
            conns[name] = await connect_tls(
                server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name
            )
        async with clients(*conns.values()):
            await asyncio.sleep(0.3)
            for i in range(20):
                await conns["blue-0"].send(sa_event(f"uid-blue-{i}", "B"))
            await conns["red-0"].send(sa_event("uid-red", "R"))
            # Written into BLUE and RED: published on both subjects, received once by a reader
            # of both (node 1 drops the second copy).
            await conns["purple-0"].send(sa_event("uid-purple", "P"))
            await conns["blue-1"].wait_for(b'uid="uid-blue-19"', WAIT_S)
            await conns["red-2"].wait_for(b'uid="uid-red"', WAIT_S)
            await conns["purple-1"].wait_for(b'uid="uid-purple"', WAIT_S)
            for c in conns.values():
                await c.collect(0.5)
            assert b"uid-red" not in conns["blue-1"].raw
            assert b"uid-blue" not in conns["red-2"].raw
            for reader in ("blue-1", "red-2", "purple-1"):
                assert count(conns[reader], "uid-purple") == 1, reader

        def received(server: Server) -> float:
            value = server.metrics.registry.get_sample_value("liaison_cluster_received_total")
            return value or 0.0

        # Node 2 reads RED only: it received none of the 20 BLUE events (interest, not all-to-all).
        # Node 1 also read the purple event twice (BLUE and RED subjects) and kept one.
        assert received(n1) == 20 + 1 + 1  # its BLUE events, red-0's (purple-1 reads RED), purple
        assert received(n2) == 1 + 1
        assert (
            n1.metrics.registry.get_sample_value(
                "liaison_cluster_dropped_total", {"reason": "duplicate"}
            )
            == 1.0
        )


async def until(check: Callable[[], bool], what: str, within: float = WAIT_S) -> None:
    """Wait (bounded) until ``check()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


async def test_every_node_replays_every_groups_latest_state_from_the_bucket(
    nodes: Nodes, tmp_path: Path, bus: dict[str, Any]
) -> None:
    groups = tmp_path / "groups.toml"
    groups.write_text(GROUPS)
    async with nodes(2, groups_file=str(groups)) as (n0, n1):
        # Node 0: a BLUE sender. Node 1: a RED reader only, so node 1 takes nothing of BLUE
        # from the bus; the BLUE unit reaches its table through the latest-state bucket.
        conns = {}
        for name, org, server in (("blue-0", "BLUE", n0), ("red-1", "RED", n1)):
            assert server.tls is not None
            cert = issue_cert(server, name, org)
            conns[name] = await connect_tls(
                server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name
            )
        async with clients(*conns.values()):
            await asyncio.sleep(0.3)
            await conns["blue-0"].send(sa_event("uid-blue-unit", "BLUE-UNIT"))
            await conns["blue-0"].send(sa_event("uid-blue-gone", "BLUE-GONE"))

            def held(server: Server) -> set[str]:
                return {e.event.uid for e in server.router.latest_entries()}

            await until(lambda: {"uid-blue-unit", "uid-blue-gone"} <= held(n1), "node 1 holds it")
            assert n1.metrics.registry.get_sample_value("liaison_cluster_received_total") in (
                None,
                0.0,
            )  # not from the bus: node 1 reads RED only
            # A BLUE client connecting to node 1 now is replayed the BLUE units.
            assert n1.tls is not None
            cert = issue_cert(n1, "blue-1", "BLUE")
            late = await connect_tls(
                n1.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name="blue-1"
            )
            async with clients(late):
                await late.wait_for(b'uid="uid-blue-unit"', WAIT_S)
                assert b"uid-blue-gone" in late.raw or await late.wait_for(
                    b'uid="uid-blue-gone"', WAIT_S
                )
                assert b"uid-red" not in late.raw
                # A delete on node 0 leaves every node's table.
                await conns["blue-0"].send(delete_event("uid-blue-gone"))
                await until(lambda: "uid-blue-gone" not in held(n1), "the delete reaches node 1")
                assert "uid-blue-unit" in held(n1)
            # A node started now holds the bucket's units before any client connects.
            config = make_config(
                tmp_path / "node-late", cluster_node="node-late", groups_file=str(groups), **bus
            )
            async with run_server(config) as n2:
                assert held(n2) == {"uid-blue-unit"}
        written = n0.metrics.registry.get_sample_value("liaison_cluster_latest_written_total")
        assert written is not None and written >= 3  # two reports and the delete


async def test_a_bus_message_with_an_unreadable_label_or_event_is_refused(
    nodes: Nodes, bus: dict[str, Any], tmp_path: Path
) -> None:
    import nats

    from liaison.gate import load_gate_config
    from liaison.model import labels
    from liaison.model.principal import ANON_GROUP, Principal
    from liaison.protocol import cluster_wire

    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    users = UserDirectory.load(tmp_path / "node0" / "users.json")
    users.add_user("usa-s", "USA", profile="usa-secret")
    async with nodes(1, policy_file=str(policy)) as (n0,):
        assert n0.tls is not None
        cert = issue_cert(n0, "usa-s", "USA")
        us = await connect_tls(n0.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name="us")
        nc = await nats.connect(NATS_URL)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(nc.close)
            await stack.enter_async_context(clients(us))
            await asyncio.sleep(0.3)
            sender = Principal(name="elsewhere", org="USA", listener="tls")
            subject = cluster_wire.subject_for(bus["cluster_prefix"], ANON_GROUP)

            async def forge(n: int, label: str | None, xml: bytes) -> None:
                wire = cluster_wire.BusEvent(f"forger:{n}", "forger", sender, label, xml)
                headers, payload = cluster_wire.encode(wire)
                await nc.publish(subject, payload, headers=headers)

            await forge(1, '{"v":1,"policy":"nope"}', marker("m-bad-label", "CANARY-BAD-LABEL"))
            await forge(2, None, b"<event not cot")
            # The positive control: the same path with a label this node reads.
            good = labels.Label(
                policy_id=load_gate_config(POLICY).policy.id,
                classification="SECRET",
                categories={"REL": frozenset({"USA"})},
                originator="USA",
                created_ms=1_700_000_000_000,
            )
            await forge(3, labels.label_to_json(good), marker("m-good", "plain"))
            await nc.flush()
            await us.wait_for(b'uid="m-good"', WAIT_S)
            await us.collect(0.5)
            assert b"CANARY-BAD-LABEL" not in us.raw
        dropped = {
            reason: n0.metrics.registry.get_sample_value(
                "liaison_cluster_dropped_total", {"reason": reason}
            )
            for reason in ("label", "unreadable")
        }
        assert dropped == {"label": 1.0, "unreadable": 1.0}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """A nats-server of this test's own (JetStream, file store in a temporary folder)."""

    def __init__(self, store: Path, extra: list[str] | None = None) -> None:
        import shutil

        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(binary).exists():
            reason = "nats-server is not installed (Debian package nats-server)"
            if os.environ.get("LIAISON_REQUIRE_SERVICES") == "1":
                pytest.fail(f"cluster tests required but {reason}")
            pytest.skip(reason)
        self.binary, self.store, self.port = binary, store, free_port()
        self.extra = extra or []
        self.proc: Any = None

    def launch(self) -> None:
        import subprocess

        argv = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        argv.extend(self.extra)
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        self.launch()
        for _ in range(100):  # bounded: 10 s
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            w.close()
            await w.wait_closed()
            return
        raise AssertionError("nats-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def test_events_accepted_while_nats_is_down_are_delivered_when_it_returns(
    tmp_path: Path, bus: dict[str, Any]
) -> None:
    server = NatsServer(tmp_path / "js")
    await server.start()
    try:
        settings = {**bus, "cluster_nats": f"nats://127.0.0.1:{server.port}"}
        async with contextlib.AsyncExitStack() as stack:
            n0, n1 = [
                await stack.enter_async_context(
                    run_server(
                        make_config(tmp_path / f"node{i}", cluster_node=f"node{i}", **settings)
                    )
                )
                for i in range(2)
            ]
            a, b = await wait_tcp(n0, "a"), await wait_tcp(n1, "b")
            async with clients(a, b):
                await asyncio.sleep(0.3)
                await a.send(sa_event("uid-before", "BEFORE"))
                await b.wait_for(b'uid="uid-before"', WAIT_S)
                server.kill()
                for i in range(30):
                    await a.send(sa_event(f"uid-down-{i}", "DOWN"))
                await asyncio.sleep(1.0)
                assert b"uid-down" not in b.raw  # nothing is distributed before the bus has it
                await server.start()
                await b.wait_for(b'uid="uid-down-29"', 3 * WAIT_S)
                await b.collect(0.5)
                for i in range(30):
                    assert count(b, f"uid-down-{i}") == 1, i
    finally:
        server.kill()


async def nats_cluster(tmp_path: Path, size: int = 3) -> list[NatsServer]:
    """``size`` nats-servers in one JetStream cluster on loopback, started and ready."""
    routes = [free_port() for _ in range(size)]
    servers = []
    for i in range(size):
        others = ",".join(f"nats://127.0.0.1:{routes[j]}" for j in range(size) if j != i)
        extra = ["-n", f"n{i}", "--cluster_name", "liaison-test"]
        extra += ["--cluster", f"nats://127.0.0.1:{routes[i]}", "--routes", others]
        servers.append(NatsServer(tmp_path / f"js{i}", extra))
    for server in servers:
        await server.start()
    import nats

    # Bounded wait for the JetStream meta leader (the cluster has formed).
    nc = await nats.connect(f"nats://127.0.0.1:{servers[0].port}")
    try:
        for _ in range(100):
            try:
                await nc.jetstream().account_info()
                break
            except Exception:
                await asyncio.sleep(0.2)
        else:
            raise AssertionError("the NATS cluster did not elect a JetStream leader")
    finally:
        await nc.close()
    return servers


async def test_three_nodes_on_a_three_server_nats_cluster_lose_nothing_when_one_dies(
    tmp_path: Path, bus: dict[str, Any]
) -> None:
    servers = await nats_cluster(tmp_path)
    try:
        async with contextlib.AsyncExitStack() as stack:
            nodes_ = []
            for i in range(3):
                # Each node knows every NATS server, its own first.
                urls = [servers[(i + k) % 3].port for k in range(3)]
                config = make_config(
                    tmp_path / f"node{i}",
                    cluster_node=f"node{i}",
                    cluster_prefix=bus["cluster_prefix"],
                    cluster_stream=bus["cluster_stream"],
                    cluster_replicas=3,
                    cluster_nats=",".join(f"nats://127.0.0.1:{p}" for p in urls),
                )
                nodes_.append(await stack.enter_async_context(run_server(config)))
            n0, n1, n2 = nodes_
            sender, r1, r2 = (
                await wait_tcp(n0, "s"),
                await wait_tcp(n1, "r1"),
                await wait_tcp(n2, "r2"),
            )
            async with clients(sender, r1, r2):
                await asyncio.sleep(0.3)
                total = 200
                for i in range(total):
                    await sender.send(sa_event(f"uid-load-{i}", "LOAD"))
                    if i == total // 2:
                        servers[1].kill()  # node 1's NATS server dies under load
                    await asyncio.sleep(0.01)
                for reader in (r1, r2):
                    await reader.wait_for(f'uid="uid-load-{total - 1}"'.encode(), 6 * WAIT_S)
                    await reader.collect(1.0)
                    missing = [i for i in range(total) if count(reader, f"uid-load-{i}") == 0]
                    twice = [i for i in range(total) if count(reader, f"uid-load-{i}") > 1]
                    assert (missing, twice) == ([], []), reader.name
            # Node 1 was on the server that died (servers are tried in the order given) and
            # carried on through another.
            assert n1.metrics.registry.get_sample_value("liaison_cluster_reconnects_total") >= 1
    finally:
        for server in servers:
            server.kill()


# --- revocation and sign-out across nodes (cluster/access.py) ---------------------------------

# The issue's bound: a revocation or sign-out on one node ends sessions on every node within it.
CLOSE_WITHIN_S = 1.0


def add_web_user(tmp_path: Path, node: int, name: str = "webred") -> None:
    """``name`` in node ``node``'s own users file (each node keeps its own here)."""
    users = UserDirectory.load(tmp_path / f"node{node}" / "users.json")
    users.add_user(name, "RED", groups=["red"], password=PASSWORD)


async def revoke_on(server_dir: Path, name: str) -> None:
    """``liaison user revoke NAME`` for the node whose data folder is ``server_dir``, run as an
    operator would from another shell (it only writes that node's files)."""
    where = ["--data-dir", str(server_dir), "--public-host", "localhost"]
    assert await asyncio.to_thread(cli_main, ["user", "revoke", name, *where]) == 0


async def refused_tls(server: Server, cert: ClientCert, within: float = WAIT_S) -> bool:
    """Whether a new TLS stream connection with ``cert`` is refused (at or after the handshake)
    within ``within`` seconds."""
    assert server.tls is not None
    try:
        again = await connect_tls(
            server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name="again"
        )
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    async with clients(again):
        return await again.closed_by_server(within=within)


async def login_status(server: Server, name: str = "webred") -> int:
    async with browser_session(server) as http:
        body = {"username": name, "password": PASSWORD}
        async with http.post(enroll_url(server, "/login"), json=body) as r:
            return r.status


async def close_code(ws: Any, within: float) -> tuple[int, str]:
    """Read a WebSocket (any message kind) until the server's close frame; (code, reason)."""
    import aiohttp

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for _ in range(10_000):  # bounded: at most this many messages before the close
        msg = await ws.receive(timeout=max(0.0, deadline - loop.time()))
        if msg.type is aiohttp.WSMsgType.CLOSE:
            return int(msg.data), str(msg.extra)
    raise AssertionError("no close frame")


def sample(server: Server, name: str, kind: str) -> float | None:
    return server.metrics.registry.get_sample_value(name, {"kind": kind} if kind else None)


async def test_revoking_a_user_on_node_a_closes_their_sessions_on_node_c_within_a_second(
    nodes: Nodes, tmp_path: Path
) -> None:
    for i in range(3):
        add_web_user(tmp_path, i)
    async with nodes(3, groups_file=str(write_groups(tmp_path))) as (a, b, c):
        # webred on node C: a TAK client over TLS (a certificate of C's CA), the web map (a
        # password sign-in, its cookie and its live feed), and a bearer token with the TAK
        # WebSocket (/takproto/1) opened with it.
        cert = issue_cert(c, "webred", "RED")
        assert c.tls is not None
        stream = await connect_tls(
            c.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name="webred-c"
        )
        async with clients(stream), browser_session(c) as browser, browser_session(c) as api:
            await login(c, browser, "webred")
            feed = await browser.ws_connect(enroll_url(c, "/api/v1/stream"))
            await snapshot(feed)
            form = {"grant_type": "password", "username": "webred", "password": PASSWORD}
            async with api.post(enroll_url(c, "/oauth/token"), data=form) as r:
                assert r.status == 200
                bearer = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
            takproto = await api.ws_connect(
                enroll_url(c, "/takproto/1").replace("https://", "wss://"), headers=bearer
            )
            await stream.send(sa_event("ANDROID-webred", "WEBRED"))
            await feed.receive(timeout=WAIT_S)  # all are live on C
            # Timed from the start of the command (the sessions may close before it returns: it
            # writes the users file, then revokes the certificates and signs the CRL).
            revoked = time.monotonic()
            await revoke_on(a.config.data_dir, "webred")  # on node A's files only
            closed, ws_close, tak_close = await asyncio.gather(
                stream.closed_by_server(within=CLOSE_WITHIN_S + 1.0),
                close_of(feed, CLOSE_WITHIN_S + 1.0),
                close_code(takproto, CLOSE_WITHIN_S + 1.0),
            )
            elapsed = time.monotonic() - revoked
            assert closed and ws_close == (4403, "revoked") and tak_close == (4403, "revoked")
            assert elapsed < CLOSE_WITHIN_S, elapsed
            await feed.close()
            await takproto.close()
            async with browser.get(enroll_url(c, "/api/v1/me")) as r:
                assert r.status == 401  # the cookie is refused too
            async with api.get(enroll_url(c, "/api/v1/me"), headers=bearer) as r:
                assert r.status == 401  # and the token
        # Nor can they come back, on C or on B (which never had a session of theirs).
        assert await refused_tls(c, cert)
        for server in (b, c):
            assert await login_status(server) == 401
        assert sample(a, "liaison_cluster_access_published_total", "user") == 1
        assert sample(a, "liaison_cluster_access_received_total", "user") is None  # own
        for server in (b, c):
            assert sample(server, "liaison_cluster_access_received_total", "user") == 1
        # Node C's own files still say nothing: it keeps the bus's revocation beside them.
        users_c = UserDirectory.load(tmp_path / "node2" / "users.json")
        assert users_c.revoked_names() == frozenset()


async def test_a_certificate_revoked_on_node_a_ends_its_sessions_on_node_c_and_no_other(
    nodes: Nodes, tmp_path: Path
) -> None:
    from liaison.identity.certs import ServerPki
    from liaison.identity.revocation import revoke

    # Node 0 and node 2 share one CA (as docs/deployment.md asks), each its own other files.
    ensure_server_pki(tmp_path / "node0", public_host="localhost")
    src, dst = ServerPki.at(tmp_path / "node0"), ServerPki.at(tmp_path / "node2")
    dst.directory.mkdir(parents=True)
    for name in ("ca_cert", "ca_key", "ca_chain"):
        if getattr(src, name).exists():
            shutil.copy2(getattr(src, name), getattr(dst, name))
    async with nodes(3) as (a, _b, c):
        assert a.server_pki is not None and c.tls is not None
        # Two certificates of one user (issue_cert writes each over the last's files: each is
        # used, and its serial read, before the next is issued).
        conns, serials, kept = [], [], []
        for n in ("old", "new"):
            x = issue_cert(a, "dave", "RED")
            serials.append(x509.load_pem_x509_certificate(x.cert.read_bytes()).serial_number)
            kept.append(ClientCert(cert=tmp_path / f"{n}.pem", key=tmp_path / f"{n}.key", ca=x.ca))
            shutil.copy2(x.cert, kept[-1].cert)
            shutil.copy2(x.key, kept[-1].key)
            conns.append(await connect_tls(c.tls.port, cert=x.cert, key=x.key, ca=x.ca, name=n))
        old_client, new_client = conns
        serial = serials[0]
        assert serials[0] != serials[1]
        async with clients(old_client, new_client):
            await asyncio.sleep(0.3)
            assert await asyncio.to_thread(revoke, a.server_pki, serial=serial) == [serial]
            revoked = time.monotonic()
            assert await old_client.closed_by_server(within=CLOSE_WITHIN_S + 1.0)
            assert time.monotonic() - revoked < CLOSE_WITHIN_S
            # The same user's other certificate is not revoked: still served on C.
            await old_client.close()
            await new_client.send(sa_event("ANDROID-dave", "DAVE"))
            assert not await new_client.closed_by_server(within=0.5)
        assert await refused_tls(c, kept[0])
        assert not await refused_tls(c, kept[1], within=1.0)
        assert sample(c, "liaison_cluster_access_received_total", "certificate") == 1


async def test_a_sign_out_on_one_node_ends_the_users_web_sign_in_on_another(
    nodes: Nodes, tmp_path: Path
) -> None:
    for i in range(2):
        add_web_user(tmp_path, i)
    async with nodes(2, groups_file=str(write_groups(tmp_path))) as (a, b):
        async with browser_session(a) as on_a, browser_session(b) as on_b:
            csrf = await login(a, on_a, "webred")
            await login(b, on_b, "webred")
            feed = await on_b.ws_connect(enroll_url(b, "/api/v1/stream"))
            await snapshot(feed)
            async with on_a.post(enroll_url(a, "/logout"), headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 204
            signed_out = time.monotonic()
            assert await close_of(feed, CLOSE_WITHIN_S + 1.0) == (4401, "signed out")
            assert time.monotonic() - signed_out < CLOSE_WITHIN_S
            await feed.close()
            async with on_b.get(enroll_url(b, "/api/v1/me")) as r:
                assert r.status == 401  # B's sign-in of that user ended
            # A sign-out is not a revocation: they sign in again on B at once.
            await login(b, on_b, "webred")
        assert sample(a, "liaison_cluster_access_published_total", "sign_out") == 1
        assert sample(b, "liaison_cluster_access_received_total", "sign_out") == 1
        assert sample(a, "liaison_cluster_access_received_total", "sign_out") is None  # own


async def test_malformed_access_notices_are_refused_counted_and_change_nothing(
    nodes: Nodes, bus: dict[str, Any], tmp_path: Path
) -> None:
    import nats

    from liaison.protocol import cluster_wire
    from liaison.protocol.cluster_wire import AccessNotice

    for name in ("webred", "red1", "red2"):
        add_web_user(tmp_path, 0, name)
    async with nodes(1, groups_file=str(write_groups(tmp_path))) as (n0,):
        assert n0.tls is not None
        conns = {}
        for name in ("webred", "red1", "red2"):
            cert = issue_cert(n0, name, "RED")
            conns[name] = await connect_tls(
                n0.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name
            )
        nc = await nats.connect(NATS_URL)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(nc.close)
            await stack.enter_async_context(clients(*conns.values()))
            await asyncio.sleep(0.3)
            js = nc.jetstream()
            prefix = bus["cluster_prefix"]

            def on(name: str) -> str:
                return cluster_wire.notice_subject(prefix, AccessNotice("user", "x", name=name))

            red1 = cluster_wire.encode_notice(AccessNotice("user", "forger", name="red1"))
            # Kept by the revocation stream, refused by the node (each on webred's subject):
            await js.publish(on("webred"), b"not json")
            await js.publish(on("webred"), b'{"v":2,"kind":"user","node":"x","name":"webred"}')
            await js.publish(on("webred"), red1)  # red1's notice on webred's subject
            await nc.publish(cluster_wire.sign_out_subject(prefix), b"\x00\xff")
            await nc.flush()
            # The positive control, on the same path: a well-formed revocation of red1.
            await js.publish(on("red1"), red1)
            assert await conns["red1"].closed_by_server(within=WAIT_S)
            # webred is untouched: still served.
            await conns["red2"].send(sa_event("ANDROID-red2", "RED2"))
            await conns["webred"].wait_for(b'uid="ANDROID-red2"', WAIT_S)
            await wait_until(
                lambda: (
                    n0.metrics.registry.get_sample_value("liaison_cluster_access_refused_total")
                    == 4
                ),
                "four notices refused",
            )
        assert sample(n0, "liaison_cluster_access_received_total", "user") == 1
        assert await login_status(n0, "webred") == 200
        # Every liaison_cluster_* metric this node exposes is in docs/deployment.md's table.
        exposed = {
            f"{f.name}_total" if f.type == "counter" else f.name
            for f in n0.metrics.registry.collect()
            if f.name.startswith("liaison_cluster_")
        }
        documented = set(re.findall(r"^\| `(liaison_cluster_[a-z_]+)", DEPLOYMENT, re.MULTILINE))
        assert len(exposed) > 10 and exposed - documented == set()


async def test_a_revocation_made_while_its_node_is_down_reaches_the_others_and_later_nodes(
    tmp_path: Path, bus: dict[str, Any]
) -> None:
    for i in range(3):
        add_web_user(tmp_path, i)
    groups = str(write_groups(tmp_path))

    def config(i: int) -> Any:
        node = f"node{i}"
        return make_config(tmp_path / node, cluster_node=node, groups_file=groups, **bus)

    async with run_server(config(1)) as b:
        cert = issue_cert(b, "webred", "RED")
        assert b.tls is not None
        client = await connect_tls(b.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca)
        async with clients(client):
            # Node 0 is down (never started): its operator revokes webred in its files.
            await revoke_on(tmp_path / "node0", "webred")
            assert not await client.closed_by_server(within=0.5)  # nobody has told B yet
            async with run_server(config(0)) as a:
                # Node 0 starts, finds the stream lacks its revocation, publishes it.
                assert await client.closed_by_server(within=WAIT_S)
                assert sample(a, "liaison_cluster_access_published_total", "user") == 1
    # A node started afterwards replays the stream before its listeners open.
    async with run_server(config(2)) as c:
        assert await login_status(c) == 401
        assert sample(c, "liaison_cluster_access_received_total", "user") == 1


async def test_a_revocation_made_while_nats_is_down_reaches_the_other_node_when_it_returns(
    tmp_path: Path, bus: dict[str, Any]
) -> None:
    server = NatsServer(tmp_path / "js")
    await server.start()
    try:
        for i in range(2):
            add_web_user(tmp_path, i)
        settings = {**bus, "cluster_nats": f"nats://127.0.0.1:{server.port}"}
        groups = str(write_groups(tmp_path))
        async with contextlib.AsyncExitStack() as stack:
            a, c = [
                await stack.enter_async_context(
                    run_server(
                        make_config(
                            tmp_path / f"node{i}",
                            cluster_node=f"node{i}",
                            groups_file=groups,
                            **settings,
                        )
                    )
                )
                for i in range(2)
            ]
            cert = issue_cert(c, "webred", "RED")
            assert c.tls is not None
            client = await connect_tls(c.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca)
            async with clients(client):
                await asyncio.sleep(0.3)
                server.kill()
                await revoke_on(a.config.data_dir, "webred")
                assert not await client.closed_by_server(within=1.0)  # the bus is away
                await server.start()
                assert await client.closed_by_server(within=3 * WAIT_S)
            assert sample(a, "liaison_cluster_access_published_total", "user") == 1
    finally:
        server.kill()
