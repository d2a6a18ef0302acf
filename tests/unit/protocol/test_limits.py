"""The per-field and per-event limits of protocol/limits.py, as both codecs apply them."""

from __future__ import annotations

from typing import Any

import pytest
from takproto.proto import TakMessage

from liaison import errors
from liaison.protocol import cot_proto, cot_xml, limits

# asyncio.StreamReader's default limit (asyncio.streams._DEFAULT_LIMIT): pytak's readuntil fails
# on an event longer than this.
ASYNCIO_STREAM_LIMIT = 2**16


def xml_event(
    *, uid: str = "u-1", type_: str = "a-f-G-U-C", attrs: str = "", detail: str = ""
) -> bytes:
    return (
        f'<event version="2.0" uid="{uid}" type="{type_}" how="m-g"'
        ' time="2024-01-01T00:00:00Z" start="2024-01-01T00:00:00Z"'
        f' stale="2024-01-01T00:10:00Z"{attrs}><point lat="1.5" lon="2.5" hae="0" ce="1" le="1"/>'
        f"<detail>{detail}</detail></event>"
    ).encode()


def proto_event(*, uid: str = "u-1", type_: str = "a-f-G-U-C", xml_detail: str = "") -> bytes:
    message: Any = TakMessage()
    cot = message.cotEvent
    cot.uid = uid
    cot.type = type_
    cot.how = "m-g"
    cot.sendTime = cot.startTime = 1_704_067_200_000
    cot.staleTime = 1_704_067_800_000
    cot.lat, cot.lon = 1.5, 2.5
    cot.detail.SetInParent()
    if xml_detail:
        cot.detail.xmlDetail = xml_detail
    payload: bytes = message.SerializeToString()
    return payload


def refused(parse: Any, data: bytes) -> errors.InvalidEvent:
    with pytest.raises(errors.InvalidEvent) as info:
        parse(data)
    return info.value


def test_the_event_limit_stays_well_under_what_asyncio_clients_can_read() -> None:
    # 16 KiB of headroom below pytak's 64 KiB readuntil limit and TAK Server's websocket buffer.
    assert limits.MAX_EVENT_BYTES <= ASYNCIO_STREAM_LIMIT - 16 * 1024
    # Every field limit fits inside one event, and one event inside the frame limits.
    assert limits.MAX_REMARKS_CHARS < limits.MAX_EVENT_BYTES
    assert limits.MAX_EVENT_BYTES < limits.MAX_XML_EVENT_BYTES
    assert limits.MAX_EVENT_BYTES < limits.MAX_PROTO_EVENT_BYTES
    assert limits.MAX_EVENT_BYTES < limits.MAX_DATAGRAM_BYTES


def test_oversized() -> None:
    assert limits.oversized("uid", None, 3) is None
    assert limits.oversized("uid", "abc", 3) is None
    assert limits.oversized("uid", "abcd", 3) == "uid of 4 characters exceeds 3"


CALLSIGN_DETAILS = [
    '<contact callsign="{}" endpoint="*:-1:stcp"/>',
    '<__chat senderCallsign="{}" chatroom="All Chat Rooms"/>',
    '<link uid="x" callsign="{}" relation="p-p"/>',
    '<marti><dest callsign="{}"/></marti>',
]


@pytest.mark.parametrize("template", CALLSIGN_DETAILS)
def test_callsign_at_the_limit_passes_and_one_more_is_refused(template: str) -> None:
    ok = "c" * limits.MAX_CALLSIGN_CHARS
    assert cot_xml.parse_event(xml_event(detail=template.format(ok))).uid == "u-1"
    assert cot_proto.parse_proto(proto_event(xml_detail=template.format(ok))) is not None
    long = ok + "c"
    for parse, data in (
        (cot_xml.parse_event, xml_event(detail=template.format(long))),
        (cot_proto.parse_proto, proto_event(xml_detail=template.format(long))),
    ):
        exc = refused(parse, data)
        assert exc.reason == "field_too_long"
        assert "allsign of 257 characters exceeds 256" in str(exc)


def test_a_200_kb_callsign_is_refused_naming_the_field() -> None:
    # The bug: this was accepted, relayed and replayed, and killed pytak receivers.
    data = xml_event(detail=f'<contact callsign="{"A" * 200_000}"/>')
    exc = refused(cot_xml.parse_event, data)
    assert exc.reason == "field_too_long"
    assert str(exc).startswith("contact@callsign of 200000 characters")


def test_typed_contact_callsign_in_protobuf_is_checked() -> None:
    message: Any = TakMessage()
    message.ParseFromString(proto_event())
    message.cotEvent.detail.contact.callsign = "B" * (limits.MAX_CALLSIGN_CHARS + 1)
    exc = refused(cot_proto.parse_proto, message.SerializeToString())
    assert exc.reason == "field_too_long"
    assert "contact@callsign" in str(exc)


@pytest.mark.parametrize(
    ("field", "limit", "xml", "proto"),
    [
        (
            "uid",
            limits.MAX_UID_CHARS,
            lambda v: xml_event(uid=v),
            lambda v: proto_event(uid=v),
        ),
        (
            "type",
            limits.MAX_TYPE_CHARS,
            lambda v: xml_event(type_="a-" + v[2:]),
            lambda v: proto_event(type_="a-" + v[2:]),
        ),
        (
            "remarks",
            limits.MAX_REMARKS_CHARS,
            lambda v: xml_event(detail=f"<remarks>{v}</remarks>"),
            lambda v: proto_event(xml_detail=f"<remarks>{v}</remarks>"),
        ),
        (
            "access",
            limits.MAX_ATTRIBUTE_CHARS,
            lambda v: xml_event(attrs=f' access="{v}"'),
            None,
        ),
    ],
)
def test_field_limits(field: str, limit: int, xml: Any, proto: Any) -> None:
    for build, parse in ((xml, cot_xml.parse_event), (proto, cot_proto.parse_proto)):
        if build is None:
            continue
        assert parse(build("x" * limit)) is not None
        exc = refused(parse, build("x" * (limit + 1)))
        assert exc.reason == "field_too_long"
        assert str(exc).startswith(f"{field} of {limit + 1} characters")


def test_detail_element_count() -> None:
    at_limit = "<a/>" * limits.MAX_DETAIL_ELEMENTS
    assert cot_xml.parse_event(xml_event(detail=at_limit)) is not None
    assert cot_proto.parse_proto(proto_event(xml_detail=at_limit)) is not None
    for exc in (
        refused(cot_xml.parse_event, xml_event(detail=at_limit + "<a/>")),
        refused(cot_proto.parse_proto, proto_event(xml_detail=at_limit + "<a/>")),
    ):
        assert exc.reason == "field_too_long"
        assert "detail has more than" in str(exc)


def padding(size: int) -> str:
    """Detail content of ``size`` bytes that breaks no field limit."""
    return f'<x y="{"p" * (size - 9)}"/>'


def test_event_size_limit_xml() -> None:
    base = len(xml_event())
    fits = xml_event(detail=padding(limits.MAX_EVENT_BYTES - base))
    assert len(fits) == limits.MAX_EVENT_BYTES
    assert cot_xml.parse_event(fits) is not None
    exc = refused(cot_xml.parse_event, xml_event(detail=padding(limits.MAX_EVENT_BYTES - base + 1)))
    assert exc.reason == "too_large"
    assert f"exceeds {limits.MAX_EVENT_BYTES}" in str(exc)


def test_event_size_limit_protobuf_payload() -> None:
    exc = refused(cot_proto.parse_proto, proto_event(xml_detail=padding(limits.MAX_EVENT_BYTES)))
    assert exc.reason == "too_large"
    assert "TakMessage of" in str(exc)


def test_a_protobuf_event_whose_xml_form_would_not_fit_is_refused() -> None:
    # 10,000 quotes are 10 KB of protobuf but 60 KB of XML ("&quot;"), which an XML client
    # reading with asyncio's default limit could not take.
    detail = "<x y='" + '"' * 10_000 + "'/>"
    payload = proto_event(xml_detail=detail)
    assert len(payload) < limits.MAX_EVENT_BYTES
    exc = refused(cot_proto.parse_proto, payload)
    assert exc.reason == "too_large"
    assert "as XML" in str(exc)
    # The same detail with fewer quotes renders small enough and passes.
    event = cot_proto.parse_proto(proto_event(xml_detail="<x y='" + '"' * 1_000 + "'/>"))
    assert event is not None
    assert len(cot_xml.render_xml(event)) <= limits.MAX_EVENT_BYTES


@pytest.mark.parametrize("quote", ['"', "'"])
def test_limits_hold_whichever_quote_and_whatever_the_event_size(quote: str) -> None:
    # parse_event skips the detail walk only for a short event whose double-quoted runs are all
    # shorter than the shortest attribute limit; every other shape is walked.
    long = "c" * (limits.MAX_CALLSIGN_CHARS + 1)
    for detail in (
        f"<contact callsign={quote}{long}{quote}/>",
        f"<contact callsign={quote}{long}{quote}/>" + "<x/>" * 3000,
        f"<remarks>it's</remarks><contact callsign={quote}{long}{quote}/>",
    ):
        exc = refused(cot_xml.parse_event, xml_event(detail=detail))
        assert exc.reason == "field_too_long"
    # A value of references is longer in bytes than in characters: at the limit it passes.
    at_limit = "&amp;" * limits.MAX_CALLSIGN_CHARS
    event = cot_xml.parse_event(xml_event(detail=f"<contact callsign={quote}{at_limit}{quote}/>"))
    assert event.callsign == "&" * limits.MAX_CALLSIGN_CHARS
    too_many = "<x/>" * (limits.MAX_DETAIL_ELEMENTS + 1)
    assert refused(cot_xml.parse_event, xml_event(detail=too_many)).reason == "field_too_long"
