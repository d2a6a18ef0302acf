"""worker_metrics: each worker's metrics on its Unix socket, and one scrape that reads them all,
over real Unix sockets (the processes themselves: tests/integration/test_workers.py)."""

from __future__ import annotations

import asyncio
import socket
import stat
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from liaison.metrics import Metrics
from liaison.worker_metrics import (
    MAX_SOCKET_PATH,
    MetricsSocket,
    read_worker,
    remove_sockets,
    scrape_workers,
    socket_path,
    socket_path_problem,
)


def _metrics(deliveries: int) -> Metrics:
    m = Metrics()
    m.counter("liaison_deliveries_total", "Events handed to subscribers").inc(amount=deliveries)
    return m


def _stale_socket(path: Path) -> None:
    """A socket file nobody serves (what a killed worker leaves)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))


def _up(text: str) -> dict[str, float]:
    return {
        s.labels["worker"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "liaison_worker_up"
        for s in f.samples
    }


async def test_a_worker_serves_its_metrics_privately_and_removes_its_socket(
    tmp_path: Path,
) -> None:
    path = socket_path(tmp_path, 2)
    _stale_socket(path)
    m = _metrics(3)
    part = MetricsSocket(tmp_path, 2, m.render_prometheus)
    await part.bind()
    try:
        assert part.path == path == tmp_path / "run" / "metrics-w2.sock"
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_ISSOCK(path.stat().st_mode)
        # The stale socket was replaced by one that answers.
        assert await read_worker(path) == m.render_prometheus()
        m.counter("liaison_deliveries_total", "Events handed to subscribers").inc()
        assert "liaison_deliveries_total 4.0" in (await read_worker(path) or "")
    finally:
        await part.close()
    assert not path.exists()
    assert await read_worker(path) is None  # nobody there: no answer, no exception


async def test_one_scrape_reads_every_worker_and_reports_those_that_did_not_answer(
    tmp_path: Path,
) -> None:
    parts = [MetricsSocket(tmp_path, i, _metrics(i).render_prometheus) for i in (2, 3)]
    for part in parts:
        await part.bind()

    release = asyncio.Event()

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # Says nothing until long after the scrape gave up.
        async with asyncio.timeout(5):
            await release.wait()
        w.close()

    async def flood(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"# " + b"x" * 5000 + b"\n")
        w.close()

    hung = await asyncio.start_unix_server(silent, path=str(socket_path(tmp_path, 4)))
    big = await asyncio.start_unix_server(flood, path=str(socket_path(tmp_path, 6)))
    _stale_socket(socket_path(tmp_path, 5))
    (tmp_path / "run" / "metrics-wx.sock").write_text("not a worker's")  # ignored: no number
    try:
        started = time.monotonic()
        text = await scrape_workers(
            tmp_path, 1, _metrics(1).render_prometheus(), within=0.5, limit=4096
        )
        took = time.monotonic() - started
    finally:
        release.set()
        await asyncio.sleep(0.05)  # the silent handler closes its connection
        for server in (hung, big):
            server.close()
            await server.wait_closed()
        for part in parts:
            await part.close()
    # The workers are read at once: the silent one costs one bound, not one per worker.
    assert took < 2.0, took
    assert _up(text) == {"w1": 1.0, "w2": 1.0, "w3": 1.0, "w4": 0.0, "w5": 0.0, "w6": 0.0}
    deliveries = {
        s.labels["worker"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "liaison_deliveries"
        for s in f.samples
    }
    assert deliveries == {"w1": 1.0, "w2": 2.0, "w3": 3.0}


async def test_a_scrape_with_no_run_folder_is_the_worker_itself(tmp_path: Path) -> None:
    text = await scrape_workers(tmp_path, 1, _metrics(7).render_prometheus())
    assert _up(text) == {"w1": 1.0}
    assert 'liaison_deliveries_total{worker="w1"} 7.0' in text


def test_the_supervisor_removes_sockets_left_by_an_earlier_run(tmp_path: Path) -> None:
    assert remove_sockets(tmp_path) == 0
    for i in (1, 3):
        _stale_socket(socket_path(tmp_path, i))
    other = tmp_path / "run" / "metrics-w9.sock"
    other.write_text("a file, not a socket: kept")
    assert remove_sockets(tmp_path) == 2
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["metrics-w9.sock"]


def test_a_data_folder_too_long_for_a_socket_path_is_named() -> None:
    assert socket_path_problem(Path("/var/lib/liaison"), 64) is None
    long = Path("/" + "d" * (MAX_SOCKET_PATH - len("//run/metrics-w64.sock")))
    assert len(str(long / "run" / "metrics-w64.sock")) == MAX_SOCKET_PATH
    assert socket_path_problem(long, 64) is None
    problem = socket_path_problem(long / "e", 64)
    assert problem is not None and "shorter server.data_dir" in problem
