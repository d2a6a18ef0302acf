"""The CoT the web map's drawings become (protocol/drawings.py), checked against what ATAK writes
for the same things (the samples named in each builder's docstring) and against our own reader."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from tests.unit.protocol.protocol_samples import LOCAL, SHARED, SHARED_MISSING

from liaison.api.geojson import event_feature
from liaison.protocol import cot_xml
from liaison.protocol.drawings import (
    MAX_POINTS,
    Creator,
    DrawingError,
    check_uid,
    creator_uid,
    delete_xml,
    drawing_xml,
    parse_drawing,
)

NOW = 1_765_000_000_000
ME = Creator("liaison-web-alice", "alice")


def _sample(name: str) -> ET.Element:
    for folder in (LOCAL, SHARED):
        path = folder / "xml" / name
        if path.exists():
            return ET.fromstring(path.read_bytes())
    pytest.skip(SHARED_MISSING)


def _build(doc: dict[str, Any], uid: str = "u-1") -> ET.Element:
    xml = drawing_xml(parse_drawing(doc), uid=uid, creator=ME, now_ms=NOW)
    return ET.fromstring(xml)


def _tags(event: ET.Element) -> set[str]:
    detail = event.find("detail")
    assert detail is not None
    return {child.tag for child in detail}


MARKER = {"kind": "marker", "lat": 50.45, "lon": 30.52, "type": "a-h-G-U-C", "callsign": "T1"}
ROUTE = {
    "kind": "route",
    "callsign": "Route 1",
    "points": [{"lat": 50.0, "lon": 30.0}, {"lat": 50.1, "lon": 30.1}, {"lat": 50.2, "lon": 30.0}],
}
POLYGON = {
    "kind": "polygon",
    "points": [{"lat": 50.0, "lon": 30.0}, {"lat": 50.0, "lon": 30.2}, {"lat": 50.2, "lon": 30.2}],
}
CIRCLE = {"kind": "circle", "lat": 50.0, "lon": 30.0, "radius": 250.5}
RB = {"kind": "rangebearing", "lat": 50.0, "lon": 30.0, "range": 886.5, "bearing": 45.5}


@pytest.mark.parametrize(
    ("doc", "sample", "extra"),
    [
        # What we add to ATAK's own marker: the ATAK 5 creator element; what we leave out is
        # only what ATAK writes about its own device (precisionlocation, a second archive).
        (MARKER, "atak-marker-01.xml", {"creator"}),
        (ROUTE, "atak-route-01.xml", {"creator"}),
        (ROUTE, "atak-route-02.xml", set()),
        (POLYGON, "atak-shape-05.xml", {"creator"}),
        (CIRCLE, "atak-shape-01.xml", {"creator"}),
        (RB, "atak-rangebearing-02.xml", {"creator"}),
    ],
)
def test_each_shape_is_written_as_atak_writes_it(
    doc: dict[str, Any], sample: str, extra: set[str]
) -> None:
    ours = _build(doc)
    theirs = _sample(sample)
    assert ours.get("how") == theirs.get("how")
    if doc["kind"] != "marker":
        assert ours.get("type") == theirs.get("type")
    # Every detail element we write is one ATAK writes for the same kind of item.
    assert _tags(ours) - _tags(theirs) <= extra
    # Links carry the attributes ATAK's do.
    their_links = [set(link.attrib) for link in theirs.iter("link") if link.get("point")]
    for link in ours.iter("link"):
        if link.get("point") is not None:
            assert set(link.attrib) in their_links
    ellipse = ours.find("detail/shape/ellipse")
    if ellipse is not None:
        their_ellipse = theirs.find("detail/shape/ellipse")
        assert their_ellipse is not None and set(ellipse.attrib) == set(their_ellipse.attrib)


def test_marker_reads_back_as_the_feature_drawn() -> None:
    event = cot_xml.parse_event(
        drawing_xml(
            parse_drawing({**MARKER, "remarks": "two\nlines"}), uid="m1", creator=ME, now_ms=NOW
        )
    )
    feature = event_feature(event, None)
    assert feature["geometry"]["coordinates"] == [30.52, 50.45]
    props = feature["properties"]
    assert (props["type"], props["callsign"], props["remarks"]) == ("a-h-G-U-C", "T1", "two\nlines")
    assert props["stale"] == cot_xml.format_time(NOW + 24 * 3600 * 1000)
    assert creator_uid(event.detail) == "liaison-web-alice"
    assert event.link_uid == "liaison-web-alice"  # the p-p link to the creator, as ATAK
    usericon = event.detail.find("usericon") if event.detail is not None else None
    assert usericon is not None and usericon.get("iconsetpath") == "COT_MAPPING_2525B/a-h/a-h-G-U-C"


def test_route_polygon_and_circle_read_back_as_their_outlines() -> None:
    route = event_feature(
        cot_xml.parse_event(drawing_xml(parse_drawing(ROUTE), uid="r", creator=ME, now_ms=NOW)),
        None,
    )
    assert route["properties"]["shape"] == {
        "type": "LineString",
        "coordinates": [[30.0, 50.0], [30.1, 50.1], [30.0, 50.2]],
    }
    assert route["geometry"]["coordinates"] == [30.0, 50.0]  # a 0,0 route sits on its start
    links = cot_xml.parse_event(
        drawing_xml(parse_drawing(ROUTE), uid="r", creator=ME, now_ms=NOW)
    ).detail
    assert links is not None
    names = [(x.get("callsign"), x.get("type")) for x in links.iterfind("link")]
    assert names == [("Route 1 SP", "b-m-p-w"), ("CP1", "b-m-p-w"), ("CP2", "b-m-p-w")]

    # A polygon is closed once, whether or not the caller closed it.
    for points in (POLYGON["points"], [*POLYGON["points"], POLYGON["points"][0]]):
        shape = event_feature(
            cot_xml.parse_event(
                drawing_xml(
                    parse_drawing({**POLYGON, "points": points}), uid="p", creator=ME, now_ms=NOW
                )
            ),
            None,
        )
        ring = [[30.0, 50.0], [30.2, 50.0], [30.2, 50.2], [30.0, 50.0]]
        assert shape["properties"]["shape"] == {"type": "Polygon", "coordinates": [ring]}
        assert shape["geometry"]["coordinates"] == [30.1, 50.1]

    circle = event_feature(
        cot_xml.parse_event(drawing_xml(parse_drawing(CIRCLE), uid="c", creator=ME, now_ms=NOW)),
        None,
    )
    assert circle["properties"]["ellipse"] == {"major": 250.5, "minor": 250.5, "angle": 360.0}
    assert circle["geometry"]["coordinates"] == [30.0, 50.0]


def test_range_and_bearing_line() -> None:
    event = _build(RB)
    assert event.get("type") == "u-rb-a"
    assert event.find("detail/range").get("value") == "886.5"  # type: ignore[union-attr]
    assert event.find("detail/bearing").get("value") == "45.5"  # type: ignore[union-attr]
    # 360 degrees is north, written as 0.
    assert _build({**RB, "bearing": 360}).find("detail/bearing").get("value") == "0.0"  # type: ignore[union-attr]


def test_chosen_label_goes_in_the_detail() -> None:
    label = ET.Element("__seclabel", {"cls": "SECRET"})
    xml = drawing_xml(parse_drawing(MARKER), uid="m", creator=ME, now_ms=NOW, seclabel=label)
    assert ET.fromstring(xml).find("detail/__seclabel") is not None


def test_delete_names_its_target() -> None:
    event = cot_xml.parse_event(delete_xml("m-9", "a-h-G", uid="d-1", now_ms=NOW))
    assert event.is_delete and event.link_uid == "m-9" and event.uid == "d-1"
    theirs = _sample("other-delete-01.xml") if (SHARED / "xml").exists() else None
    if theirs is not None:
        link = theirs.find("detail/link")
        assert link is not None
        ours = ET.fromstring(delete_xml("m-9", "a-h-G", uid="d-1", now_ms=NOW)).find("detail/link")
        assert ours is not None and set(ours.attrib) == set(link.attrib)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "body must be a JSON object"),
        ({"kind": "blob"}, "kind must be one of"),
        ({"kind": "marker", "lat": 91, "lon": 0}, "marker: lat must be from -90 to 90"),
        ({"kind": "marker", "lat": True, "lon": 0}, "marker: lat must be a number"),
        ({"kind": "marker", "lat": 1, "lon": "2"}, "marker: lon must be a number"),
        ({**MARKER, "type": "b-m-p-s-m"}, "type must be a CoT atom type"),
        ({**MARKER, "type": "a-f-G-<x>"}, "type must be a CoT atom type"),
        ({**MARKER, "callsign": "x" * 65}, "callsign must be a string of at most 64"),
        ({**MARKER, "callsign": "a\x07b"}, "callsign must not contain control characters"),
        ({"kind": "route", "points": [{"lat": 1, "lon": 1}]}, "points must be a list of 2"),
        ({"kind": "route", "points": [{"lat": 1}, {"lat": 1, "lon": 1}]}, "points[0]: lon"),
        (
            {"kind": "route", "points": [{"lat": 0, "lon": 0}] * (MAX_POINTS + 1)},
            "points must be a list",
        ),
        (
            {"kind": "polygon", "points": [{"lat": 1, "lon": 1}] * 2 + [{"lat": 2, "lon": 2}] * 2},
            "a polygon needs 3 different points",
        ),
        ({**CIRCLE, "radius": 0}, "radius must be more than 0"),
        ({**CIRCLE, "radius": 2e6}, "radius must be from 0 to 1e+06"),
        ({**RB, "bearing": -1}, "bearing must be from 0 to 360"),
        ({**RB, "range": float("nan")}, "range must be from"),
    ],
)
def test_what_is_not_a_drawing_is_refused_with_the_reason(doc: Any, message: str) -> None:
    with pytest.raises(DrawingError) as info:
        parse_drawing(doc)
    assert message in str(info.value)


def test_uids_a_caller_may_choose() -> None:
    assert (
        check_uid("9017073e-5658-42e7-baa8-b98f3c9c1622") == "9017073e-5658-42e7-baa8-b98f3c9c1622"
    )
    for bad in ("", "a b", "x" * 129, 5, "a/b", "<x>"):
        with pytest.raises(DrawingError):
            check_uid(bad)
