"""Connect-time replays a bounded part per loop turn (session.ReplayQueue, Router.replay_plan and
replay_part), with a real Router and in-memory subscribers on a real event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

from liaison.protocol.tak_peer import Phase
from liaison.router import Outgoing
from liaison.session import ReplayQueue, StreamSession
from tests.unit.core.test_router import NOW, event, router, sa, user


@dataclass(eq=False)
class Sub:
    name: str
    phase: Phase = Phase.OPEN
    client_uid: str | None = None
    callsign: str | None = None
    got: list[tuple[str, int]] = field(default_factory=list)

    @property
    def principal(self) -> Any:
        return user(self.name)

    def deliver(self, out: Outgoing) -> None:
        self.got.append((out.event.uid, out.event.time))


def session(sub: Sub) -> StreamSession:
    return cast(StreamSession, sub)


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_large_replay_goes_out_in_bounded_parts_round_robin() -> None:
    r = router()
    source = Sub("feed")
    r.attach(source)
    r.publish(sa("CONTACT", "ALPHA"), source)  # a contact: replayed first
    for i in range(25):
        r.publish(event(f"item-{i:02}", time=NOW - 100 + i), source)
    queue = ReplayQueue(budget=10)
    a, b = Sub("a"), Sub("b")
    for s in (a, b):
        r.attach(s)
        queue.start(session(s), r)
    assert a.got == [] and b.got == [] and len(queue) == 2  # nothing in the connect callback
    await turns(1)
    assert len(a.got) == 10 and b.got == []  # one turn: at most the budget, over both
    await turns(1)
    assert len(a.got) == 10 and len(b.got) == 10  # round robin
    # A live update of an item not yet replayed to a: the replay sends the newer entry, never
    # the older one after it.
    r.publish(event("item-24", time=NOW + 5), source)
    await turns(10)
    assert len(queue) == 0
    for s in (a, b):
        uids = [u for u, _ in s.got]
        assert uids[0] == "CONTACT"
        assert sorted(set(uids)) == sorted(["CONTACT", *(f"item-{i:02}" for i in range(25))])
        assert [t for u, t in s.got if u == "item-24"][-1] == NOW + 5


async def test_small_replay_is_immediate_and_closed_sessions_are_dropped() -> None:
    r = router()
    source = Sub("feed")
    r.attach(source)
    for i in range(5):
        r.publish(event(f"x{i}"), source)
    queue = ReplayQueue(budget=10)
    small = Sub("small")
    r.attach(small)
    queue.start(session(small), r)
    assert len(small.got) == 5 and len(queue) == 0  # fits the budget: at once
    for i in range(5, 30):
        r.publish(event(f"x{i}"), source)
    gone, stays = Sub("gone"), Sub("stays")
    for s in (gone, stays):
        r.attach(s)
        queue.start(session(s), r)
    await turns(1)
    gone.phase = Phase.CLOSED  # closed before its replay ended
    await turns(10)
    assert len(gone.got) == 10 and len(stays.got) == 30 and len(queue) == 0
    queue.start(session(Sub("late")), r)
    queue.cancel()  # shutdown: nothing waits any more
    assert len(queue) == 0
