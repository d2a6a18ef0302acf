"""Fan-out renders once per wire format: the router hands every recipient the same Outgoing,
and the Outgoing caches its XML and its protobuf stream frame."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from liaison import router as router_mod
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.event import Event, make_event
from liaison.model.principal import Principal
from liaison.protocol import cot_proto, cot_xml
from liaison.router import Outgoing, Router

NOW = 1_700_000_000_000


@dataclass(eq=False)
class Sub:
    principal: Principal
    client_uid: str | None = None
    callsign: str | None = None
    got: list[Outgoing] = field(default_factory=list)

    def deliver(self, out: Outgoing) -> None:
        self.got.append(out)


def position(uid: str) -> Event:
    return make_event(
        uid=uid, type="a-f-G-U-C", how="m-g", time=NOW, start=NOW, stale=NOW + 60_000, lat=1, lon=2
    )


def test_fan_out_renders_each_format_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"xml": 0, "proto": 0}
    render_xml, render_proto = cot_xml.render_xml, cot_proto.render_proto

    def counting_xml(event: Event) -> bytes:
        calls["xml"] += 1
        return render_xml(event)

    def counting_proto(event: Event) -> bytes:
        calls["proto"] += 1
        return render_proto(event)

    monkeypatch.setattr(router_mod.cot_xml, "render_xml", counting_xml)
    monkeypatch.setattr(router_mod.cot_proto, "render_proto", counting_proto)
    r = Router(metrics=Metrics(), clock_ms=lambda: NOW, latest=MemoryLatestState())
    group = frozenset({"g"})
    subs = [Sub(Principal(name=f"u{i}", in_groups=group, out_groups=group)) for i in range(50)]
    for s in subs:
        r.attach(s)
    r.publish(position("A"), subs[0])
    outs = [o for s in subs for o in s.got]
    assert len(outs) == 49 and len({id(o) for o in outs}) == 1  # one Outgoing for everyone
    for i, out in enumerate(outs):
        data = out.xml() if i % 2 else out.proto_frame()
        assert data is (out.xml() if i % 2 else out.proto_frame())
    assert calls == {"xml": 1, "proto": 1}
