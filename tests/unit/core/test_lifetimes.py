"""Component lifetimes: bind then run in start order, shut down newest first, by ownership."""

from __future__ import annotations

import asyncio

import pytest

from liaison.lifetimes import Component, Lifetimes, Part


class Fake:
    """A component that writes down what happens to it."""

    def __init__(self, name: str, journal: list[str], *, fail_bind: bool = False) -> None:
        self.name = name
        self.journal = journal
        self.fail_bind = fail_bind
        self.running = asyncio.Event()

    async def bind(self) -> None:
        if self.fail_bind:
            self.journal.append(f"{self.name}:bind-failed")
            raise OSError(98, "address already in use")
        self.journal.append(f"{self.name}:bind")

    async def run(self) -> None:
        self.journal.append(f"{self.name}:run")
        self.running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.journal.append(f"{self.name}:cancelled")
            raise

    async def close(self) -> None:
        self.journal.append(f"{self.name}:close")


async def test_bind_before_run_and_shutdown_newest_first() -> None:
    journal: list[str] = []
    fakes = [Fake(n, journal) for n in ("store", "writer", "listener")]
    async with asyncio.TaskGroup() as tg:
        life = Lifetimes(tg)
        for f in fakes:
            await life.start(f)
        # Every bind happened in order, before the runs got their first turn.
        assert journal == ["store:bind", "writer:bind", "listener:bind"]
        await asyncio.gather(*(f.running.wait() for f in fakes))
        assert life.names == ["store", "writer", "listener"]
        journal.clear()
        await life.shutdown()
    assert journal == [
        "listener:cancelled",
        "listener:close",
        "writer:cancelled",
        "writer:close",
        "store:cancelled",
        "store:close",
    ]
    assert life.names == []


async def test_a_failed_bind_closes_what_was_started_and_raises_unchanged() -> None:
    journal: list[str] = []
    with pytest.raises(ExceptionGroup) as caught:
        async with asyncio.TaskGroup() as tg:
            life = Lifetimes(tg)
            try:
                await life.start(Fake("store", journal))
                await life.start(Fake("tcp", journal))
                await life.start(Fake("udp", journal, fail_bind=True))
                await life.start(Fake("http", journal))
            finally:
                await life.shutdown()
    (exc,) = caught.value.exceptions
    assert isinstance(exc, OSError) and exc.errno == 98
    # The component that failed to bind is not closed, nor started; the others close in reverse.
    assert journal[:3] == ["store:bind", "tcp:bind", "udp:bind-failed"]
    closes = [j for j in journal if j.endswith(":close")]
    assert closes == ["tcp:close", "store:close"]
    assert not any(j.startswith("http") for j in journal)


async def test_background_tasks_are_pruned_and_end_with_their_owner() -> None:
    journal: list[str] = []
    writer, later = Fake("writer", journal), Fake("later", journal)
    async with asyncio.TaskGroup() as tg:
        life = Lifetimes(tg)
        await life.start(writer)
        await life.start(later)
        done = life.spawn(writer, asyncio.sleep(0), "delete")
        await done
        await asyncio.sleep(0)
        assert life.owned(writer) == 0  # finished tasks are forgotten, not kept in a list

        async def slow_delete() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                journal.append("delete:cancelled")
                raise

        pending = life.spawn(writer, slow_delete(), "delete")
        await asyncio.sleep(0)
        assert life.owned(writer) == 1 and life.owned(later) == 0
        journal.clear()
        await life.shutdown()
    assert pending.cancelled()
    # Owned tasks end with their owner: after the newer component closed, before the owner's close.
    assert journal.index("later:close") < journal.index("delete:cancelled")
    assert journal.index("delete:cancelled") < journal.index("writer:close")


async def test_spawn_needs_a_started_owner() -> None:
    async with asyncio.TaskGroup() as tg:
        life = Lifetimes(tg)
        stranger: Component = Fake("stranger", [])
        with pytest.raises(RuntimeError):
            life.spawn(stranger, asyncio.sleep(0), "x")


async def test_a_failing_close_does_not_stop_the_others() -> None:
    journal: list[str] = []

    async def broken() -> None:
        raise OSError("disk gone")

    async def note() -> None:
        journal.append("first:close")

    async with asyncio.TaskGroup() as tg:
        life = Lifetimes(tg)
        await life.start(Part("first", on_close=note))
        await life.start(Part("second", on_close=broken))
        with pytest.raises(OSError, match="disk gone"):
            await life.shutdown()
    assert journal == ["first:close"]


async def test_a_part_with_nothing_to_run_returns_at_once() -> None:
    async with asyncio.TaskGroup() as tg:
        life = Lifetimes(tg)
        await life.start(Part("listener"))
        await asyncio.sleep(0)
        await life.shutdown()
