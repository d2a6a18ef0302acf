"""The cluster bus's consumer watchdog (cluster/bus.py ``_watchdog``), on a fake JetStream: a
group's consumer behind the stream at two checks in a row, having delivered nothing between
them, is made again from the last event it delivered; one that keeps delivering is left alone;
one that cannot be made again resumes from there when the subscriber makes it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from liaison.cluster import bus as bus_mod
from liaison.cluster.bus import ClusterSettings, NatsBus
from liaison.metrics import Metrics

pytest.importorskip("nats", reason="nats-py is not installed (the cluster extra)")


class FakeSub:
    async def unsubscribe(self) -> None:
        return None


class FakeJs:
    def __init__(self, last: int) -> None:
        self.last = last
        self.starts: list[int] = []
        self.fail = False

    async def get_last_msg(self, stream: str, subject: str) -> Any:
        return SimpleNamespace(seq=self.last)

    async def subscribe(self, subject: str, **kw: Any) -> FakeSub:
        if self.fail:
            raise TimeoutError("no answer")
        self.starts.append(kw["config"].opt_start_seq)
        return FakeSub()


def make_bus(js: FakeJs) -> NatsBus:
    settings = ClusterSettings(servers=("nats://127.0.0.1:1",), node="n0")
    bus = NatsBus(settings, router=None, metrics=Metrics())  # type: ignore[arg-type]
    bus._js = js
    return bus


async def watch(bus: NatsBus, checks: int, during: Any = None) -> None:
    """Run the watchdog for about ``checks`` checks (bounded), calling ``during`` between."""
    task = asyncio.create_task(bus._watchdog())
    try:
        for _ in range(checks):
            await asyncio.sleep(bus_mod.STALL_CHECK_S)
            if during is not None:
                during()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus_mod, "STALL_CHECK_S", 0.02)


async def test_a_silent_consumer_behind_the_stream_is_made_again_from_its_last_event() -> None:
    js = FakeJs(last=10)
    bus = make_bus(js)
    bus._subscribed["g"], bus._delivered["g"] = FakeSub(), 5
    await watch(bus, 3)
    assert js.starts[:1] == [6]  # from the event after the last it delivered
    assert bus.m_consumer_resets.get() >= 1


async def test_a_consumer_that_keeps_delivering_or_is_caught_up_is_left_alone() -> None:
    js = FakeJs(last=1_000)
    bus = make_bus(js)
    bus._subscribed["g"], bus._delivered["g"] = FakeSub(), 5
    bus._subscribed["h"], bus._delivered["h"] = FakeSub(), 1_000

    def progress() -> None:
        bus._delivered["g"] += 1  # behind, but delivering

    await watch(bus, 5, progress)
    assert js.starts == []
    assert bus.m_consumer_resets.get() == 0


async def test_a_consumer_that_cannot_be_made_again_resumes_from_its_last_event() -> None:
    js = FakeJs(last=10)
    js.fail = True
    bus = make_bus(js)
    bus._subscribed["g"], bus._delivered["g"] = FakeSub(), 5
    await watch(bus, 3)
    assert "g" not in bus._subscribed and bus._resume["g"] == 5
    js.fail = False
    await bus._subscribe("g", bus._resume.get("g"))  # as the subscriber loop does
    assert js.starts == [6] and "g" not in bus._resume


class SlowJs(FakeJs):
    """Subscribing takes a while, so the subscriber and the watchdog can overlap."""

    def __init__(self, last: int) -> None:
        super().__init__(last)
        self.subs: list[FakeSub] = []
        self.unsubscribed: list[FakeSub] = []

    async def subscribe(self, subject: str, **kw: Any) -> FakeSub:
        await asyncio.sleep(0.05)
        outer = self

        class Tracked(FakeSub):
            async def unsubscribe(self) -> None:
                outer.unsubscribed.append(self)

        sub = Tracked()
        self.subs.append(sub)
        return sub


async def test_the_watchdog_and_the_subscriber_never_leave_two_subscriptions_of_a_group() -> None:
    """Found by review: the watchdog remaking a group's consumer while the subscriber (on an
    interest change) saw the group missing made two subscriptions, one never unsubscribed."""
    js = SlowJs(last=10)
    bus = make_bus(js)
    bus._interest["g"] = 1
    bus._subscribed["g"], bus._delivered["g"] = FakeSub(), 5
    subscriber = asyncio.create_task(bus._subscriber())

    def interest_changes() -> None:
        bus._interest_changed.set()

    try:
        await watch(bus, 12, interest_changes)
        await asyncio.sleep(0.2)  # let a subscribe in progress end
    finally:
        subscriber.cancel()
        with pytest.raises(asyncio.CancelledError):
            await subscriber
    live = [s for s in js.subs if s not in js.unsubscribed]
    assert len(live) <= 1
    assert bus._subscribed.get("g") in (*live, None)
