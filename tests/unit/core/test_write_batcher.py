"""The write batcher: immediate under light load, at most one flush per interval under load."""

from __future__ import annotations

import asyncio

from liaison.session import WriteBatcher


class FakeSession:
    def __init__(self, log: list[tuple[str, float]], name: str) -> None:
        self.log = log
        self.name = name

    def flush(self) -> None:
        self.log.append((self.name, asyncio.get_running_loop().time()))


async def test_first_flush_is_immediate_then_batched() -> None:
    log: list[tuple[str, float]] = []
    # A wide interval, so the "immediate" and "waited" flushes stay apart on a loaded machine.
    batcher = WriteBatcher(0.2)
    a, b = FakeSession(log, "a"), FakeSession(log, "b")
    loop = asyncio.get_running_loop()
    start = loop.time()
    batcher.mark(a)  # type: ignore[arg-type]
    batcher.mark(b)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [n for n, _ in log] == ["a", "b"]  # one callback flushed both, on the next turn
    assert log[0][1] - start < 0.1
    batcher.mark(a)  # type: ignore[arg-type]
    for _ in range(100):  # bounded: at most 100 x 10 ms
        if len(log) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(log) == 3
    assert log[2][1] - log[0][1] >= 0.19  # waited for the interval


async def test_flush_now_runs_pending_work() -> None:
    log: list[tuple[str, float]] = []
    batcher = WriteBatcher(10.0)
    a = FakeSession(log, "a")
    batcher.mark(a)  # type: ignore[arg-type]
    batcher.flush_now()
    batcher.mark(a)  # type: ignore[arg-type]  # now due in 10 s
    batcher.flush_now()
    assert [n for n, _ in log] == ["a", "a"]
