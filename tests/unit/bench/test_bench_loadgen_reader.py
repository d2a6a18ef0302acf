"""The load generator's reader and helpers: counting events however the reads split them."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

LOADGEN = Path(__file__).resolve().parents[3] / "bench" / "loadgen.py"


def _load() -> ModuleType:
    # bench/ is a folder of scripts, not an installed package: load the file itself.
    spec = importlib.util.spec_from_file_location("liaison_bench_loadgen", LOADGEN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


loadgen = _load()
NOW = dt.datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=dt.UTC)


def _feed(client: Any, data: bytes) -> None:
    """What asyncio does on reads: fill the protocol's buffer, then tell it how much came."""
    for _ in range(len(data) + 1):
        if not data:
            return
        view = client.get_buffer(-1)
        size = min(len(view), len(data))
        view[:size] = data[:size]
        client.buffer_updated(size)
        data = data[size:]
    raise AssertionError("the reader never took the data")


def _stats(start_ns: int = 0, end_ns: int = 1 << 62, stride: int = 1) -> Any:
    stats = loadgen._Stats()
    stats.window_start_ns = start_ns
    stats.window_end_ns = end_ns
    stats.sample_stride = stride
    return stats


def test_event_looks_like_atak_sa_and_carries_the_marker() -> None:
    event = loadgen.build_event(7, 42, 123_456_789, NOW)
    declaration, body = event.split(b"\n")
    assert declaration.startswith(b"<?xml ")
    assert 500 <= len(body) <= 700
    assert body.startswith(b'<event version="2.0" uid="BENCH-0007" type="a-f-G-U-C"')
    assert b'time="2024-05-01T12:00:00.250Z"' in body
    assert b'stale="2024-05-01T12:01:00.250Z"' in body
    assert b'<contact endpoint="*:-1:stcp" callsign="bench-0007"/>' in body
    assert b"<__group " in body and b"<track " in body
    assert body.endswith(b"<remarks>lbq/7/42/123456789</remarks></detail></event>")


async def test_any_split_of_the_stream_counts_the_same() -> None:
    stream = b"".join(loadgen.build_event(1, seq, 1_000 + seq, NOW) for seq in range(3))
    for cut in range(1, len(stream)):
        stats = _stats()
        client = loadgen._BenchClient(0, stats)
        _feed(client, stream[:cut])
        _feed(client, stream[cut:])
        assert stats.received == 3, cut
        assert stats.events_seen == 3
        assert client.filled == 0


async def test_window_echo_and_sampling() -> None:
    # Sent at 10..19 ns by client 1 (a delivery) and client 5 (the reader itself: an echo).
    stream = b"".join(
        loadgen.build_event(sender, seq, 10 + seq, NOW) for seq in range(10) for sender in (1, 5)
    )
    stats = _stats(start_ns=12, end_ns=18, stride=2)
    client = loadgen._BenchClient(5, stats)
    _feed(client, stream)
    assert stats.events_seen == 20
    assert stats.received == 6  # seq 2..7 of client 1
    assert stats.echoes == 6
    assert len(stats.latencies) == 3  # every second delivery
    assert all(latency > 0 for latency in stats.latencies)


async def test_a_long_incomplete_event_grows_the_buffer_then_is_dropped() -> None:
    stats = _stats()
    client = loadgen._BenchClient(0, stats)
    big = b"<event><detail><remarks>" + b"x" * 200_000 + b"lbq/1/0/5<" + b"/remarks></detail>"
    step = loadgen.RECV_BUFFER_BYTES
    for offset in range(0, len(big), step):
        _feed(client, big[offset : offset + step])
    _feed(client, b"</event>")
    assert stats.received == 1
    assert len(client.buffer) >= len(big)
    # Past MAX_PENDING_BYTES without an end tag, the reader starts over instead of growing.
    junk = b"y" * step
    for _ in range(loadgen.MAX_PENDING_BYTES // step + 2):
        _feed(client, junk)
    assert len(client.buffer) <= loadgen.MAX_PENDING_BYTES
    _feed(client, loadgen.build_event(2, 0, 9, NOW))
    assert stats.received == 2


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert loadgen.percentile(values, 0.5) == 50
    assert loadgen.percentile(values, 0.99) == 99
    assert loadgen.percentile(values, 1.0) == 100
    assert loadgen.percentile([7], 0.99) == 7
    with pytest.raises(ValueError):
        loadgen.percentile([], 0.5)


def test_proc_readers_see_this_process() -> None:
    pid = os.getpid()
    assert pid in loadgen.process_tree(pid)
    before = loadgen.read_cpu_seconds(pid)
    sum(i * i for i in range(200_000))
    assert loadgen.read_cpu_seconds(pid) >= before
    peak, rss = loadgen.read_memory_kb(pid)
    assert peak >= rss > 1000


def test_config_command_reproduces_the_options() -> None:
    config = loadgen.LoadConfig(port=8087, clients=200, rate=1.0, duration=20.0, server_pid=42)
    assert config.command() == (
        "python bench/loadgen.py --host 127.0.0.1 --port 8087 --clients 200 --rate 1 "
        "--duration 20 --warmup 3 --drain 3 --seed 1 --server-pid 42"
    )
    parsed, json_out = loadgen.parse_args(config.command().split()[2:])
    assert parsed == config
    assert json_out is None


def test_run_refuses_fewer_than_two_clients() -> None:
    config = loadgen.LoadConfig(port=1, clients=1, rate=1.0, duration=1.0)
    with pytest.raises(ValueError, match="at least 2 clients"):
        asyncio.run(loadgen.run(config))
