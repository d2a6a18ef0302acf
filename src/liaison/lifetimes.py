"""Components with lifetimes: every long-running part of the server binds, then runs, under the one
``asyncio.TaskGroup``, and shuts down in the reverse order of its start.

A :class:`Component` has three steps:

* ``bind()``: take what it needs (open a file, bind a socket). A failure here is the start's
  failure (a port in use, say): nothing of this component is left open, and every component
  bound before it is shut down, newest first.
* ``run()``: its long-running work, a task in the group, cancelled at shutdown (it may return at
  once when it has nothing to run: a listener serves from the event loop).
* ``close()``: after its run task (and every background task it owns) has ended, release what
  ``bind`` took.

:class:`Lifetimes` keeps the started components in order and owns the background tasks they
spawn (a task per delete, say): those are pruned as they finish and cancelled with their owner.
Shutdown is by ownership and order, never by task name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Component(Protocol):
    """One long-running part of the server (a listener, the store writer, the partner links)."""

    @property
    def name(self) -> str: ...

    async def bind(self) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


async def _nothing() -> None:
    return None


@dataclass(slots=True)
class Part:
    """A Component made of plain callables, for parts that need no class of their own."""

    name: str
    on_bind: Callable[[], Awaitable[None]] = _nothing
    on_run: Callable[[], Awaitable[None]] = _nothing
    on_close: Callable[[], Awaitable[None]] = _nothing

    async def bind(self) -> None:
        await self.on_bind()

    async def run(self) -> None:
        await self.on_run()

    async def close(self) -> None:
        await self.on_close()


@dataclass(slots=True, eq=False)
class _Started:
    component: Component
    task: asyncio.Task[None]
    owned: set[asyncio.Task[Any]] = field(default_factory=set)


class Lifetimes:
    """The started components of one TaskGroup, in start order, and their background tasks."""

    def __init__(self, tg: asyncio.TaskGroup) -> None:
        self._tg = tg
        self._started: list[_Started] = []

    @property
    def names(self) -> list[str]:
        """The running components, oldest first."""
        return [s.component.name for s in self._started]

    async def start(self, component: Component) -> None:
        """Bind ``component``, then run it in the group. A bind failure propagates unchanged."""
        await component.bind()
        task = self._tg.create_task(component.run(), name=component.name)
        self._started.append(_Started(component, task))

    def spawn(
        self, owner: Component, coro: Coroutine[Any, Any, object], name: str
    ) -> asyncio.Task[Any]:
        """Run ``coro`` in the group as a background task of ``owner`` (which must be started):
        forgotten when it finishes, cancelled when its owner shuts down."""
        started = next((s for s in self._started if s.component is owner), None)
        if started is None:
            coro.close()
            raise RuntimeError(f"{owner.name} is not started")
        task = self._tg.create_task(coro, name=name)
        started.owned.add(task)
        task.add_done_callback(started.owned.discard)
        return task

    def owned(self, owner: Component) -> int:
        """How many background tasks ``owner`` has running (the set is pruned as they end)."""
        return sum(len(s.owned) for s in self._started if s.component is owner)

    async def shutdown(self) -> None:
        """Shut every started component down, newest first: cancel its run task and its
        background tasks, wait for them to end, then close it. A failing close is logged and
        the others still close; the first such failure is raised at the end."""
        first: Exception | None = None
        while self._started:
            started = self._started.pop()
            tasks = [started.task, *started.owned]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            try:
                await started.component.close()
            except Exception as exc:
                log.error("%s: failed to close: %s", started.component.name, exc)
                first = first or exc
        if first is not None:
            raise first
