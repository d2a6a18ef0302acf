"""Tests of the t-x-takp-v/q/r negotiation builders and state machine, and of the pong."""

from __future__ import annotations

import pytest
from protocol_samples import LOCAL, fill_template, shared_path, structure

from liaison.model.event import Event
from liaison.protocol.cot_proto import parse_proto, render_proto
from liaison.protocol.cot_xml import format_time, parse_event, render_xml
from liaison.protocol.negotiation import (
    NegotiationState,
    Negotiator,
    pong,
    requested_version,
    version_offer,
    version_response,
)
from liaison.protocol.tak_stream import TakStreamFramer, frame
from liaison.protocol.xml_stream import XmlStreamFramer

NOW = 1_714_564_800_000  # 2024-05-01T12:00:00.000Z


def request(version: str | None = "1", uid: str = "protouid") -> Event:
    """A client's t-x-takp-q as protocol.txt describes it."""
    when = format_time(NOW)
    attribute = "" if version is None else f' version="{version}"'
    data = (
        f'<event version="2.0" uid="{uid}" type="t-x-takp-q" time="{when}" start="{when}"'
        f' stale="{when}" how="m-g"><point lat="0.0" lon="0.0" hae="0.0" ce="999999"'
        f' le="999999"/><detail><TakControl><TakRequest{attribute}/></TakControl></detail>'
        "</event>"
    )
    return parse_event(data.encode())


def status_of(response: Event) -> str | None:
    assert response.detail is not None
    element = response.detail.find("TakControl/TakResponse")
    return None if element is None else element.get("status")


def on_the_wire(event: Event) -> Event:
    """What the peer reads: our event serialised as XML and parsed again."""
    return parse_event(render_xml(event))


def test_offer_matches_the_protocol_template() -> None:
    offer = on_the_wire(version_offer(NOW, "neg-1", "Liaison 0.1"))
    assert (offer.type, offer.uid, offer.how) == ("t-x-takp-v", "neg-1", "m-g")
    assert (offer.time, offer.start, offer.stale) == (NOW, NOW, NOW + 60_000)
    assert (offer.lat, offer.lon, offer.ce, offer.le) == (0.0, 0.0, 999999.0, 999999.0)
    assert offer.is_control
    assert offer.detail is not None
    support = offer.detail.find("TakControl/TakProtocolSupport")
    assert support is not None and support.get("version") == "1"
    info = offer.detail.find("TakControl/TakServerVersionInfo")
    assert info is not None
    assert info.attrib == {"serverVersion": "Liaison 0.1", "apiVersion": "3"}
    template = parse_event(
        fill_template(shared_path("xml/other-takp-v-01.xml").read_bytes(), format_time(NOW))
    )
    assert (template.type, template.how, template.ce, template.le) == (
        offer.type,
        offer.how,
        offer.ce,
        offer.le,
    )
    template_control = template.detail.find("TakControl") if template.detail is not None else None
    assert template_control is not None
    # Ours is the template plus TAK Server's version info.
    ours = offer.detail.find("TakControl")
    assert ours is not None
    assert structure(ours[0]) == structure(template_control[0])


def test_requested_version_of_the_protocol_template() -> None:
    template = shared_path("xml/other-takp-q-01.xml").read_bytes()
    assert requested_version(parse_event(fill_template(template, format_time(NOW)))) == 1


def test_requested_version() -> None:
    assert requested_version(request("1")) == 1
    assert requested_version(request("2")) == 2
    assert requested_version(request(None)) is None
    assert requested_version(request("one")) is None
    assert requested_version(request("-1")) is None
    assert requested_version(request("\u0661")) is None  # a non-ASCII digit
    assert requested_version(version_offer(NOW, "x", "v")) is None  # not a request


@pytest.mark.parametrize("accepted", [True, False])
def test_response_matches_the_protocol_template(accepted: bool) -> None:
    response = on_the_wire(version_response(NOW, "neg-1", accepted))
    assert (response.type, response.uid) == ("t-x-takp-r", "neg-1")
    assert response.detail is not None
    status = response.detail.find("TakControl/TakResponse")
    assert status is not None
    assert status.attrib == {"status": "true" if accepted else "false"}
    if accepted:
        template = parse_event(
            fill_template(shared_path("xml/other-takp-r-01.xml").read_bytes(), format_time(NOW))
        )
        assert template.detail is not None
        assert structure(template.detail) == structure(response.detail)


def test_pong_matches_the_sample() -> None:
    sample = parse_event((LOCAL / "xml" / "other-pong-01.xml").read_bytes())
    ours = on_the_wire(pong(NOW))
    assert (ours.uid, ours.type, ours.how) == (sample.uid, sample.type, sample.how)
    assert ours.stale - ours.time == sample.stale - sample.time == 20_000
    assert (ours.time, ours.start) == (NOW, NOW)
    assert ours.is_control and ours.detail is None
    assert parse_proto(render_proto(pong(NOW))) == pong(NOW)


def test_negotiator_accepts_version_1_once() -> None:
    negotiator = Negotiator(NOW, "neg-1", "Liaison 0.1")
    assert negotiator.state is NegotiationState.OFFERED
    assert negotiator.offer.type == "t-x-takp-v" and negotiator.offer.uid == "neg-1"
    response, switch = negotiator.on_request(request("1"), now_ms=NOW + 500)
    assert switch is True
    assert negotiator.state is NegotiationState.SWITCHED and negotiator.switched
    assert (response.type, response.uid, response.time) == ("t-x-takp-r", "neg-1", NOW + 500)
    assert status_of(response) == "true"
    # Only once: a second request is refused and changes nothing.
    again, switch = negotiator.on_request(request("1"))
    assert switch is False
    assert status_of(again) == "false"
    assert negotiator.state is NegotiationState.SWITCHED


def test_negotiator_refuses_other_versions_and_allows_a_retry() -> None:
    negotiator = Negotiator(NOW, "neg-1", "Liaison 0.1")
    for version in ("2", "0", None, "abc"):
        response, switch = negotiator.on_request(request(version))
        assert switch is False
        assert status_of(response) == "false"
        assert response.time == NOW  # without now_ms, the offer's time
        assert negotiator.state is NegotiationState.REFUSED
    _, switch = negotiator.on_request(request("1"))
    assert switch is True
    assert negotiator.state is NegotiationState.SWITCHED


def test_negotiator_only_takes_requests() -> None:
    negotiator = Negotiator(NOW, "neg-1", "v")
    with pytest.raises(ValueError):
        negotiator.on_request(pong(NOW))


def test_switching_a_stream_mid_read() -> None:
    # The client's request and its first protobuf frame arrive in one read (a pipelining
    # client): the XML framer hands back the request and keeps the protobuf bytes unread.
    negotiator = Negotiator(NOW, "neg-1", "Liaison 0.1")
    sa = (LOCAL / "xml" / "wintak-sa-01.xml").read_bytes()
    proto_frame = frame(render_proto(parse_event(sa)))
    q = render_xml(request("1", uid="neg-1"))
    xml_framer = XmlStreamFramer()
    xml_framer.feed(b"<?xml version='1.0'?>\n" + sa + b"\n" + q + proto_frame[:10])
    events = []
    switched = False
    while (data := xml_framer.next_frame()) is not None:
        event = parse_event(data)
        if event.type == "t-x-takp-q":
            _, switched = negotiator.on_request(event, now_ms=NOW)
            break
        events.append(event)
    assert switched
    assert [e.uid for e in events] == ["aa0b0312-b5cd-4c2c-bbbc-9c4c70216261"]
    proto_framer = TakStreamFramer()
    payloads = proto_framer.receive_data(xml_framer.take_buffer())
    payloads += proto_framer.receive_data(proto_frame[10:])
    assert len(payloads) == 1
    received = parse_proto(payloads[0])
    assert received is not None and received == events[0]
