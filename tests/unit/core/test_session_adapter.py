"""StreamSession as a thin asyncio adapter over the TAK peer and the outbound queue, with
in-memory fakes for the transport and the router (no sockets, no event loop)."""

from __future__ import annotations

import asyncio
from typing import Any

from liaison.metrics import Metrics
from liaison.model.event import Event, make_event
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from liaison.protocol.tak_peer import Phase
from liaison.protocol.xml_stream import XmlStreamFramer
from liaison.router import Outgoing
from liaison.session import SessionMetrics, SessionRegistry, SessionSettings, StreamSession

NOW = 1_714_564_800_000


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False
        self.closed = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.1", 4242) if name == "peername" else default


class FakeRouter:
    congested = False
    latest_count = 0  # nothing to replay: the replay queue replays at once

    def __init__(self) -> None:
        self.published: list[Event] = []

    def attach(self, sub: object) -> None: ...

    def detach(self, sub: object) -> None: ...

    def replay_to(self, sub: object) -> None: ...

    def publish(self, event: Event, source: object) -> None:
        self.published.append(event)


class Marker:
    def __init__(self) -> None:
        self.marked: list[StreamSession] = []

    def mark(self, session: StreamSession) -> None:
        self.marked.append(session)


def session(**kw: Any) -> tuple[StreamSession, FakeTransport, FakeRouter, Metrics]:
    metrics = Metrics()
    router = FakeRouter()
    registry = SessionRegistry(lambda: NOW)
    registry.batcher = Marker()  # type: ignore[assignment]
    who = Principal(name="u", in_groups=frozenset({"g"}), out_groups=frozenset({"g"}))
    s = StreamSession(
        router=router,  # type: ignore[arg-type]
        settings=SessionSettings(listener="tcp", server_version="test", **kw),
        metrics=SessionMetrics(metrics),
        clock_ms=lambda: NOW,
        resolve_principal=lambda cert, peer: who,
        authenticate=None,
        registry=registry,
    )
    t = FakeTransport()
    s.connection_made(t)
    return s, t, router, metrics


def position(uid: str, lat: float = 1.0) -> Event:
    return make_event(
        uid=uid, type="a-f-G-U-C", how="m-g", time=NOW, start=NOW, stale=NOW + 1, lat=lat, lon=2
    )


def chat(n: int) -> Event:
    return make_event(
        uid=f"chat-{n}", type="b-t-f", how="h-e", time=NOW, start=NOW, stale=NOW + 1, lat=1, lon=2
    )


def test_bytes_in_any_pieces_reach_the_router_and_ping_is_answered() -> None:
    s, t, router, _ = session()
    assert s.phase is Phase.OPEN and len(t.written) == 1  # the protocol offer
    ping = cot_xml.render_xml(position("p")).replace(b'type="a-f-G-U-C"', b'type="t-x-c-t"')
    data = cot_xml.render_xml(position("a")) + ping + cot_xml.render_xml(position("b"))
    for i in range(0, len(data), 7):
        s.data_received(data[i : i + 7])
    assert [e.uid for e in router.published] == ["a", "b"]
    (pong,) = XmlStreamFramer().receive_data(t.written[1])
    assert b'type="t-x-c-t-r"' in pong


def test_queue_coalesces_while_paused_and_counts() -> None:
    s, t, _, metrics = session(offer_protobuf=False)
    s.pause_writing()
    for i in range(5):
        s.deliver(Outgoing(position("a", lat=float(i))))
    s.deliver(Outgoing(chat(1)))
    stats = s.statistics()
    assert (stats.depth, stats.coalesced, stats.paused, stats.pauses) == (2, 4, True, 1)
    snap = metrics.snapshot()
    assert snap.get('liaison_slow_consumer_total{outcome="coalesced"}') == 4
    assert snap.get('liaison_slow_consumer_total{outcome="paused"}') == 1
    s.resume_writing()
    s.flush()
    assert b'lat="4.0"' in t.written[-1] and b"chat-1" in t.written[-1]
    assert s.statistics().taken == 2


def test_slow_consumer_is_disconnected_past_max_pending() -> None:
    s, t, _, metrics = session(max_pending=3, offer_protobuf=False)
    s.pause_writing()
    for i in range(4):
        s.deliver(Outgoing(chat(i)))
    assert t.aborted and s.phase is Phase.CLOSED and s.close_reason == "slow_consumer"
    assert s.statistics().overflowed and s.statistics().dropped == 4
    assert metrics.snapshot().get('liaison_slow_consumer_total{outcome="disconnected"}') == 1
