"""Tests of Event <-> TakMessage: takproto's vectors, the xmlDetail rule, every XML sample."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_samples import (
    LOCAL,
    TEMPLATE_SAMPLES,
    fill_template,
    shared_path,
    structure,
    xml_sample_params,
)
from takproto.proto import TakMessage

from liaison import errors
from liaison.model.event import UNKNOWN_ERROR, Event
from liaison.protocol import limits
from liaison.protocol.cot_proto import parse_proto, render_proto
from liaison.protocol.cot_xml import parse_event, render_xml
from liaison.protocol.tak_stream import encode_varint

EVENT_PARAMS = xml_sample_params(events_only=True)
AFTER_2200 = int(datetime(2201, 1, 1, tzinfo=UTC).timestamp()) * 1000
MESH_VECTOR = (LOCAL / "proto" / "takproto-wintak-sa-mesh.bin").read_bytes()
PAYLOAD = MESH_VECTOR[3:]
TYPED_TAGS = {"contact", "__group", "precisionlocation", "status", "takv", "track"}
TYPED_FIELDS = {
    "contact": "contact",
    "__group": "group",
    "precisionlocation": "precisionLocation",
    "status": "status",
    "takv": "takv",
    "track": "track",
}


def decode(payload: bytes) -> Any:
    message: Any = TakMessage()
    message.ParseFromString(payload)
    return message


def event_with_detail(detail_xml: str, **changes: Any) -> Event:
    data = (
        "<event version='2.0' uid='u-1' type='a-f-G-U-C' how='m-g' time='2024-01-01T00:00:00Z'"
        " start='2024-01-01T00:00:00Z' stale='2024-01-01T00:01:00Z'>"
        f"<point lat='1.5' lon='2.5' hae='3' ce='4' le='5'/>{detail_xml}</event>"
    ).encode()
    return dataclasses.replace(parse_event(data), xml=None, **changes)


def converted_tags(payload: bytes) -> set[str]:
    detail = decode(payload).cotEvent.detail
    return {tag for tag, name in TYPED_FIELDS.items() if detail.HasField(name)}


def assert_detail_equivalent(original: ET.Element, rebuilt: ET.Element, typed: set[str]) -> None:
    """Same elements, attributes and text. The xmlDetail part keeps its order; the elements that
    travelled as typed fields come after it, so only their set is comparable."""
    kept = [structure(c) for c in original if c.tag not in typed]
    moved = sorted(structure(c) for c in original if c.tag in typed)
    rebuilt_children = [structure(c) for c in rebuilt]
    assert rebuilt_children[: len(kept)] == kept
    assert sorted(rebuilt_children[len(kept) :]) == moved
    assert (original.text or "").strip() == (rebuilt.text or "").strip()
    assert rebuilt.tag == "detail"


# --- takproto's vectors ---------------------------------------------------------------------------


def test_decode_takproto_vector() -> None:
    event = parse_proto(PAYLOAD)
    assert event is not None
    assert event.uid == "aa0b0312-b5cd-4c2c-bbbc-9c4c70216261"
    assert (event.type, event.how) == ("a-f-G-E-V-C", "h-e")
    assert (event.lat, event.lon, event.hae) == (43.97957317, -66.07737696, 26.767999)
    assert event.callsign == "Eliopoli HQ" and event.team == "Yellow"
    assert event.proto == PAYLOAD and event.xml is None
    assert render_proto(event) is PAYLOAD  # relayed as received
    xml_event = parse_event((LOCAL / "xml" / "wintak-sa-01.xml").read_bytes())
    assert event == xml_event
    assert event.detail is not None and xml_event.detail is not None
    assert_detail_equivalent(xml_event.detail, event.detail, converted_tags(PAYLOAD))


def test_encoding_the_wintak_sample_gives_takprotos_bytes() -> None:
    # takproto built its vector from wintak-sa-01.xml; our sender-side rule gives the same bytes.
    event = parse_event((LOCAL / "xml" / "wintak-sa-01.xml").read_bytes())
    assert render_proto(event) == PAYLOAD
    assert converted_tags(PAYLOAD) == TYPED_TAGS - {"precisionlocation"}  # not in the sample
    xml_detail = decode(PAYLOAD).cotEvent.detail.xmlDetail
    assert xml_detail == '<uid Droid="Eliopoli HQ" /><another test="1" />'


# --- the required property: every XML sample survives XML -> protobuf -> Event --------------------


@pytest.mark.parametrize("path", EVENT_PARAMS)
def test_sample_round_trips_through_protobuf(path: Path) -> None:
    check_protobuf_round_trip(path.read_bytes())


@pytest.mark.parametrize("name", sorted(TEMPLATE_SAMPLES))
def test_negotiation_templates_round_trip_through_protobuf(name: str) -> None:
    check_protobuf_round_trip(fill_template(shared_path(f"xml/{name}").read_bytes()))


def check_protobuf_round_trip(data: bytes) -> None:
    event = parse_event(data)
    payload = render_proto(event)
    back = parse_proto(payload)
    assert back is not None
    # All attributes and the point. version is not carried by TAK protocol v1.
    assert back == dataclasses.replace(event, version="2.0")
    assert back.proto == payload
    if event.detail is None:
        assert back.detail is None
        return
    assert back.detail is not None
    assert_detail_equivalent(event.detail, back.detail, converted_tags(payload))
    # And onwards to XML: the rebuilt detail serialises and parses to the same structure.
    as_xml = parse_event(render_xml(dataclasses.replace(back, xml=None)))
    assert as_xml.detail is not None
    assert structure(as_xml.detail) == structure(back.detail)
    # A second protobuf encoding of the rebuilt event is stable.
    again = parse_proto(render_proto(dataclasses.replace(back, proto=None)))
    assert again == back
    assert again is not None and again.detail is not None
    assert sorted(structure(c) for c in again.detail) == sorted(structure(c) for c in back.detail)


# --- sender side: the exact-fit rule --------------------------------------------------------------


@pytest.mark.parametrize(
    ("element", "typed"),
    [
        ("<contact callsign='A' endpoint='1.2.3.4:4242:tcp'/>", True),
        ("<contact callsign='A'/>", True),
        ("<contact callsign=''/>", True),
        ("<contact callsign='A' endpoint=''/>", False),  # empty endpoint would read back absent
        ("<contact callsign='A' phone='123'/>", False),  # ATAK's usual contact stays XML
        ("<contact endpoint='x'/>", False),
        ("<__group name='Cyan' role='Team Member'/>", True),
        ("<__group name='Cyan'/>", False),
        ("<__group name='Cyan' role='HQ' extra='1'/>", False),
        ("<takv device='d' platform='p' os='o' version='v'/>", True),
        ("<takv device='d' platform='p' os='o'/>", False),
        ("<track speed='1.5' course='270'/>", True),
        ("<track speed='1.5' course='270' slope='0'/>", False),
        ("<track speed='fast' course='270'/>", False),
        ("<track speed='NaN' course='270'/>", False),
        ("<status battery='87'/>", True),
        ("<status battery='0'/>", True),
        ("<status battery='87.5'/>", False),
        ("<status battery='087'/>", False),
        ("<status battery='-1'/>", False),
        ("<status battery='4294967296'/>", False),
        ("<status battery='87' readiness='true'/>", False),
        ("<precisionlocation geopointsrc='GPS' altsrc='DTED0'/>", True),
        ("<precisionlocation altsrc='DTED0'/>", False),
        ("<contact callsign='A'><x/></contact>", False),  # children
        ("<contact callsign='A'>text</contact>", False),  # text
        ("<contact callsign='A'>  </contact>", True),  # whitespace is not content
    ],
)
def test_exact_fit_rule(element: str, typed: bool) -> None:
    event = event_with_detail(f"<detail><uid Droid='A'/>{element}</detail>")
    payload = render_proto(event)
    tag = ET.fromstring(element).tag
    detail = decode(payload).cotEvent.detail
    assert detail.HasField(TYPED_FIELDS[tag]) is typed
    assert (f"<{tag}" in detail.xmlDetail) is not typed
    back = parse_proto(payload)
    assert back is not None and back.detail is not None and event.detail is not None
    assert_detail_equivalent(event.detail, back.detail, {tag} if typed else set())


def test_duplicates_stay_in_xml_detail_in_order() -> None:
    event = event_with_detail(
        "<detail><contact callsign='A'/><remarks>r</remarks><contact callsign='B'/>"
        "<track speed='1' course='2'/></detail>"
    )
    payload = render_proto(event)
    detail = decode(payload).cotEvent.detail
    assert not detail.HasField("contact")
    assert detail.HasField("track")
    assert (
        detail.xmlDetail == '<contact callsign="A" /><remarks>r</remarks><contact callsign="B" />'
    )


def test_nothing_left_means_empty_xml_detail() -> None:
    event = event_with_detail(
        "<detail>\n  <contact callsign='A'/>\n  <__group name='Red' role='HQ'/>\n</detail>"
    )
    detail = decode(render_proto(event)).cotEvent.detail
    assert detail.xmlDetail == ""
    assert detail.HasField("contact") and detail.HasField("group")


def test_text_and_tails_around_converted_elements_are_kept() -> None:
    event = event_with_detail("<detail>lead<contact callsign='A'/>mid<x/>end</detail>")
    payload = render_proto(event)
    assert decode(payload).cotEvent.detail.xmlDetail == "leadmid<x />end"
    back = parse_proto(payload)
    assert back is not None and back.detail is not None
    assert back.detail.text == "leadmid"
    assert [c.tag for c in back.detail] == ["x", "contact"]


def test_detail_presence_is_kept() -> None:
    empty = render_proto(event_with_detail("<detail/>"))
    assert decode(empty).cotEvent.HasField("detail")
    back = parse_proto(empty)
    assert back is not None and back.detail is not None and len(back.detail) == 0
    none = render_proto(event_with_detail(""))
    assert not decode(none).cotEvent.HasField("detail")
    back = parse_proto(none)
    assert back is not None and back.detail is None


def test_special_characters_in_xml_detail() -> None:
    event = event_with_detail(
        "<detail><remarks to='a&amp;b'>x &lt; y &gt; z \u00e9\u6771</remarks>"
        "<contact callsign='a\"b&amp;c&#10;d'/></detail>"
    )
    back = parse_proto(render_proto(event))
    assert back is not None and back.detail is not None
    assert back.detail.findtext("remarks") == "x < y > z \u00e9\u6771"
    assert back.callsign == 'a"b&c\nd'


# --- receiver side --------------------------------------------------------------------------------


def build(**fields: Any) -> Any:
    message: Any = TakMessage()
    cot = message.cotEvent
    cot.type, cot.uid, cot.how = "a-f-G", "u-1", "m-g"
    cot.sendTime = cot.startTime = 1_700_000_000_000
    cot.staleTime = 1_700_000_060_000
    cot.lat, cot.lon = 1.0, 2.0
    for name, value in fields.items():
        setattr(cot, name, value)
    return message


def test_xml_detail_copy_wins_over_typed_field() -> None:
    message = build()
    message.cotEvent.detail.xmlDetail = "<contact callsign='from-xml' phone='1'/>"
    message.cotEvent.detail.contact.callsign = "from-typed"
    message.cotEvent.detail.track.speed = 3.0
    event = parse_proto(message.SerializeToString())
    assert event is not None and event.detail is not None
    assert [c.get("callsign") for c in event.detail.findall("contact")] == ["from-xml"]
    assert event.detail.find("track") is not None
    assert event.callsign == "from-xml"


def test_typed_fields_become_elements() -> None:
    message = build()
    d = message.cotEvent.detail
    d.contact.callsign = "C"
    d.group.name, d.group.role = "Blue", "RTO"
    d.precisionLocation.geopointsrc, d.precisionLocation.altsrc = "GPS", "???"
    d.status.battery = 55
    d.takv.device, d.takv.platform, d.takv.os, d.takv.version = "d", "p", "o", "v"
    d.track.speed, d.track.course = 0.5, 359.9
    event = parse_proto(message.SerializeToString())
    assert event is not None and event.detail is not None
    elements = {c.tag: dict(c.attrib) for c in event.detail}
    assert elements == {
        "contact": {"callsign": "C"},
        "__group": {"name": "Blue", "role": "RTO"},
        "precisionlocation": {"geopointsrc": "GPS", "altsrc": "???"},
        "status": {"battery": "55"},
        "takv": {"device": "d", "platform": "p", "os": "o", "version": "v"},
        "track": {"speed": "0.5", "course": "359.9"},
    }
    assert (event.callsign, event.endpoint, event.team) == ("C", None, "Blue")


def test_control_only_message_is_none() -> None:
    message: Any = TakMessage()
    message.takControl.minProtoVersion = 1
    message.takControl.maxProtoVersion = 1
    assert parse_proto(message.SerializeToString()) is None
    assert parse_proto(b"") is None


def test_access_qos_opex_and_labels_round_trip() -> None:
    event = event_with_detail(
        "<detail/>", access="Undefined", qos="1-r-c", opex="e", caveat="FOUO", releasable_to="GBR"
    )
    payload = render_proto(event)
    back = parse_proto(payload)
    assert back == event
    # caveat and releaseableTo use TAK Server's CotEvent field numbers 16 and 17.
    cot_bytes = decode(payload).cotEvent.SerializeToString()
    assert b"\x82\x01\x04FOUO" in cot_bytes and b"\x8a\x01\x03GBR" in cot_bytes


def test_labels_written_by_tak_server_are_read() -> None:
    message = build()
    cot_bytes = message.cotEvent.SerializeToString() + b"\x82\x01\x01S" + b"\x8a\x01\x03USA"
    payload = b"\x12" + encode_varint(len(cot_bytes)) + cot_bytes
    event = parse_proto(payload)
    assert event is not None
    assert (event.caveat, event.releasable_to) == ("S", "USA")


def test_unknown_errors_and_empty_fields() -> None:
    event = parse_proto(build(hae=float("nan"), ce=float("inf")).SerializeToString())
    assert event is not None
    assert event.hae == event.ce == UNKNOWN_ERROR
    assert event.le == 0.0
    assert (event.access, event.qos, event.opex, event.version) == (None, None, None, "2.0")


# --- hostile payloads -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        PAYLOAD[:-5],  # truncated inside the detail
        PAYLOAD[:40],
        b"\xff\xff\xff\xff",  # a field number of 0x1fffffff... with an invalid wire type
        b"\x12\x05\x0a\x03ab",  # length runs past the end
        b"\x12\x03\x0a\x01\xff",  # a string field that is not UTF-8
        b"\x0f",  # wire type 7 does not exist
        b"\x12" + b"\xff" * 11,  # varint overflow in a length
        b"<event uid='x'/>",
    ],
)
def test_garbage_is_bad_proto(payload: bytes) -> None:
    with pytest.raises(errors.InvalidEvent) as info:
        parse_proto(payload)
    assert info.value.reason == "bad_proto"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"lat": 91.0}, "bad_coordinates"),
        ({"lat": float("nan")}, "bad_coordinates"),
        ({"lon": -180.5}, "bad_coordinates"),
        ({"lon": float("inf")}, "bad_coordinates"),
        ({"staleTime": AFTER_2200}, "bad_time"),
        ({"sendTime": (1 << 64) - 1}, "bad_time"),
        ({"uid": ""}, "missing_field"),
        ({"type": ""}, "missing_field"),
    ],
)
def test_invalid_fields_refused(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(errors.InvalidEvent) as info:
        parse_proto(build(**fields).SerializeToString())
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("xml_detail", "reason"),
    [
        ("<a>", "bad_xml"),
        ("</detail><detail>", "bad_xml"),  # cannot escape the <detail> wrapper
        ("<?xml version='1.0'?><a/>", "bad_xml"),
        ('<!DOCTYPE x [<!ENTITY e "y">]><a>&e;</a>', "doctype"),
        ("<a>" * limits.MAX_XML_DEPTH + "</a>" * limits.MAX_XML_DEPTH, "too_deep"),
    ],
)
def test_bad_xml_detail_refused(xml_detail: str, reason: str) -> None:
    message = build()
    message.cotEvent.detail.xmlDetail = xml_detail
    with pytest.raises(errors.InvalidEvent) as info:
        parse_proto(message.SerializeToString())
    assert info.value.reason == reason


def test_xml_detail_depth_matches_the_xml_limit() -> None:
    # event > detail > (MAX-2 levels) is the deepest XML accepts; protobuf accepts the same.
    levels = limits.MAX_XML_DEPTH - 2
    message = build()
    message.cotEvent.detail.xmlDetail = "<a>" * levels + "</a>" * levels
    assert parse_proto(message.SerializeToString()) is not None


def test_oversized_payload_refused() -> None:
    with pytest.raises(errors.InvalidEvent) as info:
        parse_proto(b"\x00" * (limits.MAX_PROTO_EVENT_BYTES + 1))
    assert info.value.reason == "too_large"


# --- any event ------------------------------------------------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff"),
    min_size=1,
    max_size=30,
).filter(lambda s: all(c in "\t\n\r" or c >= " " for c in s))


@settings(max_examples=200, deadline=None)
@given(
    uid=_TEXT,
    callsign=_TEXT,
    caveat=st.none() | _TEXT,
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    speed=st.floats(allow_nan=False, allow_infinity=False),
    time=st.integers(0, 7_000_000_000_000),
)
def test_any_event_round_trips_through_protobuf(
    uid: str, callsign: str, caveat: str | None, lat: float, lon: float, speed: float, time: int
) -> None:
    detail = ET.Element("detail")
    ET.SubElement(detail, "contact", {"callsign": callsign})
    ET.SubElement(detail, "track", {"speed": repr(speed), "course": "0.0"})
    event = dataclasses.replace(
        event_with_detail("", uid=uid, lat=lat, lon=lon, time=time, caveat=caveat),
        detail=detail,
        callsign=callsign,
    )
    back = parse_proto(render_proto(event))
    assert back == event
    assert back is not None and back.detail is not None
    assert sorted(structure(c) for c in back.detail) == sorted(structure(c) for c in detail)
