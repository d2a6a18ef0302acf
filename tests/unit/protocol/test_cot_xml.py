"""Tests of hardened CoT XML parsing and serialisation: every sample, times, hostile input."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_samples import (
    LOCAL,
    expected_element,
    fill_template,
    shared_path,
    structure,
    xml_sample_params,
)

from liaison import errors
from liaison.model.event import UNKNOWN_ERROR, Event
from liaison.protocol import cot_xml, limits
from liaison.protocol.cot_xml import (
    AuthRequest,
    format_time,
    parse_auth,
    parse_event,
    parse_time,
    render_xml,
)

EVENT_PARAMS = xml_sample_params(events_only=True)


def ms(text: str) -> int:
    """Milliseconds since the epoch by the standard library, as an independent oracle."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def oracle_ms(text: str) -> int:
    """A sample's UTC time ("...SS[.fff...]Z") in ms, by the standard library."""
    assert text.endswith("Z")
    fraction = text[20:-1] if text[19:20] == "." else ""
    return ms(text[:19] + "+00:00") + int(fraction[:3].ljust(3, "0"))


def local(name: str) -> bytes:
    return (LOCAL / "xml" / name).read_bytes()


def minimal(
    *, event_attrs: str = "", point: str = "lat='1.5' lon='2.5'", detail: str = ""
) -> bytes:
    return (
        "<event version='2.0' uid='u-1' type='a-f-G' how='m-g' time='2024-01-01T00:00:00Z'"
        f" start='2024-01-01T00:00:00Z' stale='2024-01-01T00:01:00Z' {event_attrs}>"
        f"<point {point}/>{detail}</event>"
    ).encode()


def assert_invalid(data: bytes, reason: str) -> None:
    with pytest.raises(errors.InvalidEvent) as info:
        parse_event(data)
    assert info.value.reason == reason, info.value


# --- every sample ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EVENT_PARAMS)
def test_sample_parses(path: Path) -> None:
    data = path.read_bytes()
    event = parse_event(data)
    assert event.uid and event.type
    assert event.xml == expected_element(data)
    assert -90 <= event.lat <= 90 and -180 <= event.lon <= 180
    root = ET.fromstring(event.xml)
    assert event.uid == root.get("uid")
    assert event.time == oracle_ms(root.get("time", ""))
    assert event.stale == oracle_ms(root.get("stale", ""))
    if root.find("detail") is None:
        assert event.detail is None
    else:
        assert event.detail is not None
        assert structure(event.detail) == structure(root.find("detail"))  # type: ignore[arg-type]
    assert render_xml(event) is event.xml  # the original bytes are relayed as they are


@pytest.mark.parametrize("path", EVENT_PARAMS)
def test_sample_serialises_and_reparses_to_the_same_event(path: Path) -> None:
    event = parse_event(path.read_bytes())
    rendered = render_xml(dataclasses.replace(event, xml=None))
    assert not rendered.startswith(b"<?xml")
    again = parse_event(rendered)
    assert again == event  # every compared field: attributes, point, derived routing facts
    assert again.version == event.version
    if event.detail is None:
        assert again.detail is None
    else:
        assert again.detail is not None
        assert structure(again.detail) == structure(event.detail)
    # Serialising is deterministic: the same event gives the same bytes.
    assert render_xml(dataclasses.replace(again, xml=None)) == rendered


def test_wintak_sample_values() -> None:
    event = parse_event(local("wintak-sa-01.xml"))
    assert event.uid == "aa0b0312-b5cd-4c2c-bbbc-9c4c70216261"
    assert event.type == "a-f-G-E-V-C"
    assert event.how == "h-e"
    assert event.time == event.start == ms("2020-02-08T18:10:44+00:00")
    assert event.stale == ms("2020-02-08T18:11:11+00:00")
    assert (event.lat, event.lon, event.hae) == (43.97957317, -66.07737696, 26.767999)
    assert event.ce == event.le == 9999999.0
    assert event.callsign == "Eliopoli HQ"
    assert event.endpoint == "192.168.1.10:4242:tcp"
    assert event.team == "Yellow"
    assert event.xml is not None and event.xml.startswith(b"<event version='2.0'")


def test_sample_without_detail_and_with_nan_errors() -> None:
    assert parse_event(local("pytak-sa-01.xml")).detail is None
    ack = parse_event(local("atak-fileshare-ack-02.xml"))
    assert ack.hae == ack.ce == ack.le == UNKNOWN_ERROR
    assert [d.callsign for d in ack.dests] == ["KEPD Jensen KE600"]


def test_sample_with_point_after_detail_and_no_how() -> None:
    event = parse_event(local("atak-uas-01.xml"))
    assert (event.lat, event.lon, event.hae) == (39.1, -108.6, 1381.333)
    assert event.how == ""
    assert event.version == "2"
    assert b' how="' not in render_xml(dataclasses.replace(event, xml=None))


def test_newline_entity_in_attribute_survives_serialisation() -> None:
    event = parse_event(local("other-emergency-05.xml"))
    assert event.callsign == "SP-Dev\nManual Alert: Gunshot"
    again = parse_event(render_xml(dataclasses.replace(event, xml=None)))
    assert again.callsign == event.callsign


def test_wrong_encoding_declaration_is_read_as_utf8() -> None:
    # other-sa-01 declares encoding="utf-16" over ASCII bytes: we read every message as UTF-8
    # and keep only the element, so the declaration's claim does not matter.
    data = shared_path("xml/other-sa-01.xml").read_bytes()
    assert b'encoding="utf-16"' in data
    event = parse_event(data)
    assert event.callsign == "SkrienJ-LT"
    assert event.xml is not None and event.xml.startswith(b"<event")


def test_datagram_prolog_is_skipped() -> None:
    element = minimal()
    for prolog in (
        b"",
        b"\n",
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n',
        b"\xef\xbb\xbf<?xml version='1.0'?><!-- from a datagram -->\n",
    ):
        event = parse_event(prolog + element + b"\n \t")
        assert event.xml == element


def test_negotiation_templates_need_real_times() -> None:
    template = shared_path("xml/other-takp-v-01.xml").read_bytes()
    assert_invalid(template, "bad_time")
    event = parse_event(fill_template(template))
    assert event.type == "t-x-takp-v"
    assert event.detail is not None
    assert event.detail.find("TakControl/TakProtocolSupport") is not None


# --- times ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2020-02-08T18:10:44Z", ms("2020-02-08T18:10:44+00:00")),
        ("2020-02-08T18:10:44.4Z", ms("2020-02-08T18:10:44+00:00") + 400),
        ("2020-02-08T18:10:44.45Z", ms("2020-02-08T18:10:44+00:00") + 450),
        ("2020-02-08T18:10:44.456Z", ms("2020-02-08T18:10:44+00:00") + 456),
        ("2022-10-27T13:55:26.688141Z", ms("2022-10-27T13:55:26+00:00") + 688),
        ("2022-10-27T13:55:26.999999999Z", ms("2022-10-27T13:55:26+00:00") + 999),
        ("2020-02-08T19:10:44+01:00", ms("2020-02-08T18:10:44+00:00")),
        ("2020-02-08T17:40:44-00:30", ms("2020-02-08T18:10:44+00:00")),
        ("2024-02-29T23:59:59.999Z", ms("2024-02-29T23:59:59+00:00") + 999),
        ("2200-12-31T23:59:59.999Z", ms("2200-12-31T23:59:59+00:00") + 999),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "TIME",
        "",
        "2020-02-08T18:10:44",  # no zone
        "2020-02-08 18:10:44Z",
        "2020-02-08T18:10Z",
        "2020-13-08T18:10:44Z",
        "2023-02-29T18:10:44Z",
        "2020-02-08T24:00:00Z",
        "2020-02-08T18:60:44Z",
        "2020-02-08T18:10:60Z",
        "2020-02-08T18:10:44.Z",
        "1969-12-31T23:59:59.999Z",
        "1970-01-01T00:30:00+01:00",
        "2201-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "٢٠٢٠-02-08T18:10:44Z",  # non-ASCII digits
        "2020-02-08T18:10:44Z ",
    ],
)
def test_bad_times_refused(text: str) -> None:
    with pytest.raises(errors.InvalidEvent) as info:
        parse_time(text)
    assert info.value.reason == "bad_time"


def test_format_time() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(ms("2020-02-08T18:10:44+00:00") + 7) == "2020-02-08T18:10:44.007Z"
    with pytest.raises(ValueError):
        format_time(-1)


@given(st.integers(0, ms("2200-12-31T23:59:59+00:00") + 999))
def test_time_round_trip(value: int) -> None:
    assert parse_time(format_time(value)) == value


# --- hostile and invalid events --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b'<!DOCTYPE event [<!ENTITY x "y">]><event/>',
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 '
        b'"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><event>&lol1;</event>',
        minimal(detail='<detail><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]></detail>'),
        minimal(detail="<detail><remarks><![CDATA[<!ENTITY x 'y'>]]></remarks></detail>"),
    ],
)
def test_dtd_refused(data: bytes) -> None:
    assert_invalid(data, "doctype")


@pytest.mark.parametrize(
    "data",
    [
        minimal(detail="<detail><remarks>caf</remarks></detail>").replace(b"caf", b"caf\xe9"),
        b'<?xml version="1.0" encoding="ISO-8859-1"?>' + minimal().replace(b"u-1", b"\xe9\xe8"),
        minimal().replace(b"u-1", b"\xed\xa0\x80"),  # an encoded surrogate is not UTF-8
        minimal().replace(b"u-1", b"\xc0\xaf"),  # overlong encoding
    ],
)
def test_non_utf8_refused(data: bytes) -> None:
    assert_invalid(data, "not_utf8")


def test_utf8_text_accepted() -> None:
    event = parse_event(minimal(detail="<detail><contact callsign='Zoë 東京'/></detail>"))
    assert event.callsign == "Zoë 東京"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"<event",
        b"<event><point lat='1' lon='2'></event>",
        minimal() + b"<event/>",
        minimal() + b"trailing",
        minimal() + b"<!-- trailing comment -->",
        minimal(detail="<detail><a></b></detail>"),
        minimal().replace(b"u-1", b"a<b"),
        minimal().replace(b"u-1", b"a\x01b"),  # control characters are not XML
        b"not xml at all",
        minimal(detail="<detail/><detail/>"),
        minimal(detail="<point lat='3' lon='4'/>"),
    ],
)
def test_malformed_refused(data: bytes) -> None:
    assert_invalid(data, "bad_xml")


def test_depth_limit() -> None:
    def nested(levels: int) -> bytes:
        # event (1) > detail (2) > levels more
        return minimal(detail="<detail>" + "<a>" * levels + "</a>" * levels + "</detail>")

    parse_event(nested(limits.MAX_XML_DEPTH - 2))
    assert_invalid(nested(limits.MAX_XML_DEPTH - 1), "too_deep")
    assert_invalid(nested(10_000), "too_deep")


def test_size_limit() -> None:
    big = minimal(
        detail="<detail><remarks>" + "x" * limits.MAX_XML_EVENT_BYTES + "</remarks></detail>"
    )
    assert_invalid(big, "too_large")


def test_root_must_be_event() -> None:
    assert_invalid(b"<auth><cot username='a'/></auth>", "not_event")
    assert_invalid(b"<x:event xmlns:x='urn:x' uid='a'/>", "not_event")


@pytest.mark.parametrize("attribute", ["uid", "type", "time", "start", "stale"])
def test_missing_required_attribute(attribute: str) -> None:
    data = minimal()
    root = ET.fromstring(data)
    del root.attrib[attribute]
    assert_invalid(ET.tostring(root), "missing_field")


@pytest.mark.parametrize(
    "data",
    [
        b"<event uid='a' type='b' time='2024-01-01T00:00:00Z' start='2024-01-01T00:00:00Z'"
        b" stale='2024-01-01T00:00:00Z'><detail/></event>",  # no point
        minimal(point="lon='2'"),
        minimal(point="lat='2'"),
        minimal().replace(b"uid='u-1'", b"uid=''"),
        minimal().replace(b"type='a-f-G'", b"type=''"),
    ],
)
def test_missing_point_or_fields(data: bytes) -> None:
    assert_invalid(data, "missing_field")


@pytest.mark.parametrize(
    "point",
    [
        "lat='91' lon='0'",
        "lat='-90.0000001' lon='0'",
        "lat='0' lon='180.5'",
        "lat='0' lon='-181'",
        "lat='0' lon='abc'",
        "lat='NaN' lon='0'",
        "lat='0' lon='nan'",
        "lat='inf' lon='0'",
        "lat='1_0' lon='0'",
        "lat='' lon='0'",
        "lat='0' lon='0' hae='high'",
        "lat='0' lon='0' ce='1_000'",
    ],
)
def test_bad_coordinates(point: str) -> None:
    assert_invalid(minimal(point=point), "bad_coordinates")


def test_edge_coordinates_and_unknown_errors() -> None:
    event = parse_event(minimal(point="lat='-90' lon='180' hae='NaN' ce='INF' le='-inf'"))
    assert (event.lat, event.lon) == (-90.0, 180.0)
    assert event.hae == event.ce == event.le == UNKNOWN_ERROR
    event = parse_event(minimal(point="lat=' 45.5 ' lon='1e1'"))
    assert (event.lat, event.lon, event.hae) == (45.5, 10.0, UNKNOWN_ERROR)


def test_time_fields_are_validated() -> None:
    assert_invalid(minimal().replace(b"time='2024-01-01T00:00:00Z'", b"time='x'"), "bad_time")
    assert_invalid(
        minimal().replace(b"stale='2024-01-01T00:01:00Z'", b"stale='3000-01-01T00:00:00Z'"),
        "bad_time",
    )


# --- rendering -----------------------------------------------------------------------------------


def test_render_escapes_and_optional_attributes() -> None:
    event = parse_event(
        minimal(
            event_attrs="access='Undefined' qos='1-r-c' opex='e-x' caveat='FOUO'"
            " releasableTo='USA GBR'",
            detail="<detail><remarks>a &lt; b &amp; c</remarks></detail>",
        )
    )
    tricky = dataclasses.replace(event, uid="q\"<&>'\n\t\r", xml=None)
    rendered = render_xml(tricky)
    again = parse_event(rendered)
    assert again == tricky
    assert again.access == "Undefined"
    assert (again.caveat, again.releasable_to) == ("FOUO", "USA GBR")
    assert b'releasableTo="USA GBR"' in rendered
    assert again.detail is not None and again.detail.findtext("remarks") == "a < b & c"


def test_render_drops_empty_optional_attributes() -> None:
    event = parse_event(minimal(event_attrs="access='' qos=''"))
    assert event.access is None and event.qos is None
    assert b"access" not in render_xml(dataclasses.replace(event, xml=None))


def test_render_writes_floats_that_round_trip() -> None:
    event = parse_event(minimal(point="lat='0.1' lon='-66.07737696' hae='1e-7' ce='5' le='1e20'"))
    again = parse_event(render_xml(dataclasses.replace(event, xml=None)))
    assert (again.lat, again.lon, again.hae, again.ce, again.le) == (
        0.1,
        -66.07737696,
        1e-7,
        5.0,
        1e20,
    )


_XML_TEXT = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="\x00\ufffe\uffff",
        min_codepoint=0x09,
    ).filter(lambda c: c in "\t\n\r" or c >= " "),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(
    uid=_XML_TEXT,
    type_=_XML_TEXT,
    access=st.none() | _XML_TEXT,
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    hae=st.floats(allow_nan=False, allow_infinity=False),
    time=st.integers(0, ms("2200-01-01T00:00:00+00:00")),
)
def test_any_event_round_trips_through_xml(
    uid: str, type_: str, access: str | None, lat: float, lon: float, hae: float, time: int
) -> None:
    event = Event(
        uid=uid,
        type=type_,
        how="m-g",
        time=time,
        start=time,
        stale=time,
        lat=lat,
        lon=lon,
        hae=hae,
        access=access,
    )
    assert parse_event(render_xml(event)) == event


# --- <auth> ---------------------------------------------------------------------------------------


def test_auth_sample() -> None:
    request = parse_auth(local("other-auth-01.xml"))
    assert request == AuthRequest(
        username="piotr", password="password", uid="TEST-UID-123", callsign=None
    )
    assert "password" not in repr(request).replace("password=", "")


def test_auth_with_declaration_and_callsign() -> None:
    request = parse_auth(
        b'<?xml version="1.0"?>\n<auth><cot username="a&amp;b" password="p&quot;w" uid="ANDROID-1"'
        b' callsign="Viper"/></auth>\n'
    )
    assert (request.username, request.password, request.callsign) == ("a&b", 'p"w', "Viper")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (minimal(), "not_auth"),
        (b"<auth/>", "missing_field"),
        (b"<auth><other/></auth>", "missing_field"),
        (b'<!DOCTYPE auth [<!ENTITY p "x">]><auth><cot password="&p;"/></auth>', "doctype"),
        (b"<auth><cot username='\xff'/></auth>", "not_utf8"),
        (b"<auth><cot username='a'></auth>", "bad_xml"),
        (b"<auth><cot password='" + b"x" * limits.MAX_AUTH_BYTES + b"'/></auth>", "too_large"),
    ],
)
def test_bad_auth_refused(data: bytes, reason: str) -> None:
    with pytest.raises(errors.InvalidEvent) as info:
        parse_auth(data)
    assert info.value.reason == reason


def test_escape_helpers() -> None:
    assert cot_xml.escape_attribute("plain") == "plain"
    assert cot_xml.escape_attribute('a"b\n') == "a&quot;b&#10;"
    assert cot_xml.escape_text("a<b&c>") == "a&lt;b&amp;c&gt;"


@pytest.mark.parametrize("path", EVENT_PARAMS)
def test_fast_serializer_writes_what_elementtree_writes(path: Path) -> None:
    root = ET.fromstring(expected_element(path.read_bytes()))
    for element in root.iter():
        assert cot_xml.serialize_element(element) == ET.tostring(element, encoding="unicode")


def test_fast_serializer_special_cases() -> None:
    element = ET.fromstring("<d a='&#9;&#10;&#13;&quot;&lt;'>x&amp;<e/>t<f>&gt;</f></d>")
    assert cot_xml.serialize_element(element) == ET.tostring(element, encoding="unicode")
    namespaced = ET.fromstring("<d xmlns:m='urn:m'><m:e m:a='1'/></d>")
    assert cot_xml.serialize_element(namespaced) == ET.tostring(namespaced, encoding="unicode")
    built = ET.Element("d")
    built.append(ET.Comment("note"))
    assert cot_xml.serialize_element(built) == "<d><!--note--></d>"


# --- one parser for many elements: the same trees and refusals as a parser per element -----

_ELEMENT_CASES = [
    b"<a/>",
    b"<a>",
    b"<a><b/>",
    b"text<a/>",
    b"<a/>text",
    b"<a/><b/>",
    b"</a>",
    b"<a/></liaison-wrapper>",
    b"<a/>&amp;",
    b"&amp;<a/>",
    b"<a>x</b>",
    b"<a x='1' x='2'/>",
    b"<p:a/>",
    b"<a xmlns:p='u'><p:b/></a>",
    b"<a>&bogus;</a>",
    b"<a/> ",
    b" <a/>",
    b"<a><liaison-sentinel/></a>",
    b"<liaison-sentinel/>",
    b"<a/><!--c-->",
    b"<a>&#0;</a>",
    b"<a>\xef\xbf\xbe</a>",
    b"<a b='<'/>",
    b"<a>]]></a>",
    b"<a\x00/>",
    b"<a/>\x00",
    b"<a><?pi?></a>",
    b"<a>&#x10FFFF;&lt;</a>",
    b"<b x='1'/><a>",
    b"<b/><liaison-sentinel>",
    b"<b/><liaison-sentinel/>",
]


def _reference(data: bytes) -> tuple[str, bytes]:
    try:
        return "ok", ET.tostring(ET.fromstring(data))
    except ET.ParseError as exc:
        return "bad_xml", str(exc).encode()


def _ours(data: bytes) -> tuple[str, bytes]:
    try:
        return "ok", ET.tostring(cot_xml.parse_element(data))
    except errors.InvalidEvent as exc:
        return exc.reason, str(exc).removeprefix("malformed XML: ").encode()


@pytest.mark.parametrize("data", _ELEMENT_CASES)
def test_wrapped_parser_gives_the_standalone_result(data: bytes) -> None:
    # Each case after each other one: a refusal must not leave the shared parser unusable or
    # let one element's bytes reach the next.
    for before in _ELEMENT_CASES:
        _ours(before)
        assert _ours(data) == _reference(data)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"<a>",
                b"</a>",
                b"<b x='1'/>",
                b"<c>",
                b"</c>",
                b"t",
                b" ",
                b"&amp;",
                b"&x;",
                b"<",
                b">",
                b"<liaison-sentinel/>",
                b"<liaison-sentinel>",
                b"</liaison-sentinel>",
            ]
        ),
        max_size=12,
    )
)
def test_wrapped_parser_matches_a_parser_per_element(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert _ours(data) == _reference(data)
    assert _ours(b"<a/>") == ("ok", b"<a />")  # and the next element still parses


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-30T00:00:00.000Z",
        "2026-12-07T24:00:00.000Z",
        "2026-12-07T23:60:00.000Z",
        "1969-12-31T23:59:59.999Z",
        "2201-01-01T00:00:00.000Z",
        "2026-12-07T10:00:00.\u0661\u0662\u0663Z",  # digits, but not ASCII ones
        "\u0662026-12-07T10:00:00.123Z",
        "2026-12-07 10:00:00.123Z",
        "2026-12-07T10:00:00.12aZ",
    ],
)
def test_the_usual_time_form_is_refused_as_the_general_one(text: str) -> None:
    # 24 characters with "." and "Z" where the usual form has them: the cached path must not
    # accept what the general path refuses.
    assert len(text) == 24
    with pytest.raises(errors.InvalidEvent) as info:
        parse_time(text)
    assert info.value.reason == "bad_time"


@given(st.integers(0, ms("2200-12-31T23:59:59+00:00") + 999))
def test_the_usual_time_form_reads_as_the_general_path_reads_it(value: int) -> None:
    text = format_time(value)
    assert parse_time(text) == value == parse_time(text[:-1] + "+00:00")
