"""``liaison serve --workers 2`` as an operator runs it (a real process and its two workers, one
NATS, one PostgreSQL database made for the test): the kernel spreads 20 TCP clients over both
workers, every client sees every other's position, a web sign-in holds over fresh connections,
every GET /metrics, whichever worker answers, holds both workers' metrics, a killed worker is
started again and its clients, reconnecting, are replayed the picture; SIGTERM stops everything.
And the refusals: no [cluster] or no PostgreSQL is exit 2.

Skipped with the reason without NATS or PostgreSQL, failed under LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from liaison.cli import main as cli_main
from tests.integration.helpers import Client, connect_tcp, sa_event
from tests.integration.http.http_support import PASSWORD
from tests.integration.test_cluster import bus  # noqa: F401 - fixture
from tests.integration.test_labels_e2e import POLICY
from tests.integration.test_postgresql_app import database_url  # noqa: F401 - fixture

CLIENTS = 20
SCRAPES = 8
START_S = 60.0  # bounded wait for the workers to listen (each opens NATS and the database)
WAIT_S = 15.0


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("LIAISON_"):
            monkeypatch.delenv(key)


def free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1 (the TCP and UDP listeners share the number)."""
    for _ in range(50):  # bounded
        with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


def write_config(
    tmp_path: Path, database: str, cluster: dict[str, Any]
) -> tuple[Path, dict[str, int]]:
    ports = {name: free_port() for name in ("tcp", "tls", "https", "enroll")}
    # Labels on: the TCP listener's anonymous clients hold usa-unclass for USA (docs/labels.md),
    # so their unlabelled reports are UNCLASSIFIED//REL TO USA and each worker audits its own.
    policy = tmp_path / "policy.toml"
    policy.write_text(
        POLICY
        + '\n[gate.listeners.tcp]\nceiling = { classification = "UNCLASSIFIED", REL = "*" }\n'
        + 'default_classification = "UNCLASSIFIED"\nprofile = "usa-unclass"\norg = "USA"\n'
    )
    text = f"""
[server]
data_dir = "{tmp_path / "data"}"
public_host = "localhost"
[listeners]
tcp = "127.0.0.1:{ports["tcp"]}"
udp = "127.0.0.1:{ports["tcp"]}"
tls = "127.0.0.1:{ports["tls"]}"
https = "127.0.0.1:{ports["https"]}"
enroll = "127.0.0.1:{ports["enroll"]}"
[storage]
backend = "{database}"
[labels]
policy_file = "{policy}"
[cluster]
nats = ["{cluster["cluster_nats"]}"]
node = "wtest"
prefix = "{cluster["cluster_prefix"]}"
stream = "{cluster["cluster_stream"]}"
"""
    path = tmp_path / "liaison.toml"
    path.write_text(text)
    return path, ports


def listeners_of(port: int) -> set[int]:
    """The pids listening on TCP ``port`` (``ss``)."""
    out = subprocess.run(
        ["ss", "-tlnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return {int(p.split("=")[1]) for p in _pids(out)}


def connections_of(port: int) -> Counter[int]:
    """Established connections to local TCP ``port``, counted by the pid holding them."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Counter(int(p.split("=")[1]) for p in _pids(out))


def _pids(ss_output: str) -> list[str]:
    found = []
    for line in ss_output.splitlines():
        for part in line.replace(")", ",").split(","):
            if part.startswith("pid="):
                found.append(part)
    return found


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry.name))
    return found


async def until(check: Any, what: str, within: float = WAIT_S) -> Any:
    for _ in range(int(within / 0.1) + 1):  # bounded
        got = check()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not within {within} s")


@contextlib.asynccontextmanager
async def supervisor(config: Path, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "liaison", "serve", "--workers", "2", "--config", str(config),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    for child in children_of(proc.pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(child, signal.SIGKILL)
                    proc.kill()
                    await proc.wait()


async def sees_all(client: Client, uids: list[str], own: str) -> None:
    for uid in uids:
        if uid != own:
            await client.wait_for(f'uid="{uid}"'.encode(), within=WAIT_S)


def cafile(tmp_path: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tmp_path / "data" / "pki" / "ca.pem"))


async def scrape(ctx: ssl.SSLContext, base: str) -> tuple[str, list[Sample]]:
    """GET /metrics as the operator ``opsu`` over a new connection (whichever worker the kernel
    picks): the text and its samples, read with prometheus-client's parser."""
    basic = aiohttp.encode_basic_auth("opsu", PASSWORD)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, force_close=True)) as fresh,
        fresh.get(f"{base}/metrics", headers={"Authorization": basic}) as r,
    ):
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await r.text()
    return text, [s for f in text_string_to_metric_families(text) for s in f.samples]


def by_worker(samples: list[Sample], name: str, **labels: str) -> dict[str, float]:
    """The samples named ``name`` with ``labels``, summed per worker."""
    out: dict[str, float] = {}
    for s in samples:
        if s.name == name and labels.items() <= s.labels.items():
            out[s.labels["worker"]] = out.get(s.labels["worker"], 0.0) + s.value
    return out


async def test_two_workers_share_the_ports_the_picture_and_the_sign_ins(
    tmp_path: Path,
    bus: dict[str, Any],  # noqa: F811 - the fixture imported above
    database_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, ports = write_config(tmp_path, database_url, bus)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    add = ["user", "add", "webu", "--org", "RED", "--groups", "red", "--password"]
    assert await asyncio.to_thread(cli_main, [*add, "--config", str(config)]) == 0
    # An operator (roles.operator_group's default group) for /metrics.
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    add = ["user", "add", "opsu", "--org", "RED", "--groups", "liaison-operators", "--password"]
    assert await asyncio.to_thread(cli_main, [*add, "--config", str(config)]) == 0
    log = tmp_path / "serve.log"
    async with supervisor(config, log) as proc:
        for port in ports.values():
            await until(lambda p=port: len(listeners_of(p)) == 2, f"2 listeners on {port}", START_S)
        workers = children_of(proc.pid)
        assert len(workers) == 2 and listeners_of(ports["tcp"]) == workers
        text = log.read_text()
        assert "[w1]" in text and "[w2]" in text and "node wtest-w1" in text

        # 20 TCP clients on the one port: the kernel puts them on both workers, and each sees
        # every other's position (no labels: all are __ANON__, which reads __ANON__).
        uids = [f"uid-{i}" for i in range(CLIENTS)]
        conns = [await connect_tcp(ports["tcp"], u) for u in uids]
        try:
            spread = await until(
                lambda: (c := connections_of(ports["tcp"])) and sum(c.values()) == CLIENTS and c,
                "every connection established",
            )
            assert set(spread) == workers and min(spread.values()) >= 1, spread
            for conn, uid in zip(conns, uids, strict=True):
                await conn.send(sa_event(uid, uid.upper()))
            await asyncio.gather(*(sees_all(c, uids, u) for c, u in zip(conns, uids, strict=True)))

            # A web sign-in, then API calls, each over a fresh connection (any worker).
            ctx = cafile(tmp_path)
            base = f"https://localhost:{ports['enroll']}"
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, force_close=True)
            ) as http:
                body = {"username": "webu", "password": PASSWORD}
                async with http.post(f"{base}/login", json=body) as r:
                    assert r.status == 200
                    cookie = r.cookies["liaison_session"].value
            for _ in range(8):
                async with (
                    aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(ssl=ctx, force_close=True),
                        headers={"Cookie": f"liaison_session={cookie}"},
                    ) as fresh,
                    fresh.get(f"{base}/api/v1/me") as r,
                ):
                    assert r.status == 200, await r.text()
                    assert (await r.json())["name"] == "webu"

            # GET /metrics, each over a new connection: whichever worker answers, the answer is
            # both workers', each sample labelled with its worker (docs/deployment.md, Metrics).
            ok_before = None
            for _ in range(SCRAPES):
                text, samples = await scrape(ctx, base)
                for w in ("w1", "w2"):
                    assert f'liaison_worker_up{{worker="{w}"}} 1.0\n' in text, text
                    assert f'liaison_subscribers{{worker="{w}"}} ' in text, text
                # The 20 connections, each counted by the worker that took it: both, in sum 20.
                tcp = by_worker(samples, "liaison_connections_total", listener="tcp")
                assert set(tcp) == {"w1", "w2"} and sum(tcp.values()) == CLIENTS, tcp
                # Every earlier answer was a 200 counted by the worker that sent it: the sum
                # over both workers grows by exactly one a scrape (no other HTTP request here).
                ok = sum(by_worker(samples, "liaison_http_responses_total", code="200").values())
                assert ok_before is None or ok == ok_before + 1, (ok_before, ok)
                ok_before = ok

            # Kill one worker: its clients are cut off, the supervisor starts it again, and the
            # clients, reconnecting, are replayed every other client's position.
            victim = max(spread, key=lambda pid: spread[pid])
            os.kill(victim, signal.SIGKILL)
            cut = [
                (i, c)
                for i, c in enumerate(conns)
                if await c.closed_by_server(within=0.5 if i else 3.0)
            ]
            assert len(cut) == spread[victim]
            for port in ports.values():  # every listener of the new worker is open
                await until(
                    lambda p=port: len(pids := listeners_of(p)) == 2 and victim not in pids,
                    f"the worker started again on {port}",
                    START_S,
                )
            assert "starting it again" in log.read_text()
            # The new worker's metrics socket is bound before its HTTP listeners open.
            text, _ = await scrape(ctx, base)
            for w in ("w1", "w2"):
                assert f'liaison_worker_up{{worker="{w}"}} 1.0\n' in text, text
            for i, old in cut:
                await old.close()
                conns[i] = await connect_tcp(ports["tcp"], f"again-{i}")
            await asyncio.gather(*(sees_all(conns[i], uids, uids[i]) for i, _ in cut))
        finally:
            for c in conns:
                await c.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert children_of(proc.pid) == set()
    # Each worker removed its metrics socket as it stopped; their folder is the owner's only.
    run = tmp_path / "data" / "run"
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert list(run.glob("metrics-w*.sock")) == []
    text = log.read_text()
    assert "worker 1 stopped (0)" in text and "worker 2 stopped (0)" in text
    # One audit chain per worker (the killed one's too, continued by its restart), all good.
    audit = tmp_path / "data" / "audit"
    assert sorted(p.name for p in audit.glob("*.jsonl")) == ["audit-w1.jsonl", "audit-w2.jsonl"]
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "liaison", "audit", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    for worker in (1, 2):
        assert f"audit-w{worker}.jsonl: OK: " in verify.stdout
        assert "(signatures checked)" in verify.stdout
    # Each client's report was accepted, and audited, once: by the worker it was connected to.
    ingests = {
        path.name: sum(1 for line in path.read_bytes().splitlines() if b'"kind":"ingest"' in line)
        for path in audit.glob("*.jsonl")
    }
    assert sum(ingests.values()) == CLIENTS and min(ingests.values()) >= 1, ingests


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[storage]\nbackend = "postgresql://x@127.0.0.1:1/x"\n', "needs a [cluster] section"),
        ('[cluster]\nnats = ["nats://127.0.0.1:4222"]\n', "needs PostgreSQL storage"),
    ],
)
def test_workers_without_a_cluster_or_postgresql_are_refused_with_exit_2(
    tmp_path: Path, extra: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "liaison.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n' + extra)
    assert cli_main(["serve", "--workers", "2", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err
