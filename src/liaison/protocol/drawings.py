"""Items drawn by a web map user, as the CoT an ATAK client writes for the same thing.

Pure: a JSON request body is checked into a :class:`Drawing` (:func:`parse_drawing`), and a
drawing becomes the CoT event XML of a marker, route, polygon, circle or range-and-bearing line
(:func:`drawing_xml`); a delete is a ``t-x-d-d`` (:func:`delete_xml`). No clock, no I/O: the
caller passes the time, the creator and the uid. Each shape follows the ATAK samples named at its
builder (``/work/shared/reference/samples/cot/xml``, SOURCES.md gives their origin); the server
publishes the result through the router like any client's event (``api/items.py``).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from liaison.protocol import cot_xml

KINDS = ("marker", "route", "polygon", "circle", "rangebearing")
# How long a drawing stays current: one day, as ATAK writes drawings and routes (samples
# atak-shape-01.xml, atak-route-01.xml: stale = time + 24 h).
DRAWING_STALE_MS = 24 * 3600 * 1000
# How long a delete stays current (t-x-d-d is an instruction, not an item; 20 s as our tests).
DELETE_STALE_MS = 20 * 1000
# Most vertices of a route or polygon drawn on the web map (ATAK routes have tens; a freehand
# line a few hundred); keeps one event far below the 1 MiB event limit.
MAX_POINTS = 1000
# Largest circle radius and range-and-bearing range: 1,000 km, beyond any drawn map object.
MAX_DISTANCE_M = 1_000_000.0
MAX_CALLSIGN_CHARS = 64
MAX_REMARKS_CHARS = 4000
MAX_UID_CHARS = 128
# A uid the caller chooses: what ATAK's uids (UUIDs, ANDROID-..., dotted names) are made of.
UID_RE = re.compile(rf"^[A-Za-z0-9._:-]{{1,{MAX_UID_CHARS}}}$")
# A marker's type: a CoT atom (MIL-STD-2525 letters one per field, tak-protocol.md 1.2):
# a-<affiliation>-<battle dimension>[-<function>...], e.g. a-f-G-U-C, a-h-G-E-V-A-T.
MARKER_TYPE_RE = re.compile(r"^a-[fhunapsjkFHUNAPSJK]-[A-Za-z](-[A-Za-z0-9]{1,8}){0,8}$")
DEFAULT_MARKER_TYPE = "a-u-G"
DEFAULT_CALLSIGNS = {
    "marker": "Marker",
    "route": "Route",
    "polygon": "Shape",
    "circle": "Circle",
    "rangebearing": "R&B",
}
# What ATAK writes for a drawing's colours (samples atak-shape-01/05: white outline, translucent
# white fill; ARGB as signed 32-bit integers).
STROKE_COLOR = "-1"
FILL_COLOR = "-1761607681"
# The type ATAK gives the creator of a drawing (its own self type; samples atak-marker-01.xml).
CREATOR_TYPE = "a-f-G-U-C"
UNKNOWN = "9999999.0"  # CoT's unknown hae/ce/le


class DrawingError(ValueError):
    """The request does not describe a drawing; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Drawing:
    """One item to draw, checked. ``points`` are (lat, lon) in degrees."""

    kind: str
    callsign: str
    remarks: str | None
    points: tuple[tuple[float, float], ...]  # marker/circle/rangebearing: the one point
    cot_type: str = DEFAULT_MARKER_TYPE  # markers only
    radius_m: float = 0.0  # circles
    range_m: float = 0.0  # range-and-bearing lines
    bearing_deg: float = 0.0  # range-and-bearing lines, true north, clockwise


@dataclass(frozen=True, slots=True)
class Creator:
    """Who drew it: the web user's CoT uid and callsign."""

    uid: str
    callsign: str


# --- the request --------------------------------------------------------------------------------


def text_field(
    doc: Mapping[str, Any], key: str, max_chars: int, *, multiline: bool = False
) -> str | None:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise DrawingError(f"{key} must be a string of at most {max_chars} characters")
    allowed = "\n\t" if multiline else ""
    if any(ord(c) < 0x20 and c not in allowed for c in value):
        raise DrawingError(f"{key} must not contain control characters")
    return value


def _number(doc: Mapping[str, Any], key: str, low: float, high: float) -> float:
    value = doc.get(key)
    # bool is an int in Python; true is not a coordinate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DrawingError(f"{key} must be a number")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise DrawingError(f"{key} must be from {low:g} to {high:g}")
    return number


def _point(doc: Any, where: str) -> tuple[float, float]:
    if not isinstance(doc, dict):
        raise DrawingError(f"{where} must be an object with lat and lon")
    try:
        return _number(doc, "lat", -90, 90), _number(doc, "lon", -180, 180)
    except DrawingError as exc:
        raise DrawingError(f"{where}: {exc}") from None


def _points(doc: Mapping[str, Any], minimum: int) -> tuple[tuple[float, float], ...]:
    raw = doc.get("points")
    if not isinstance(raw, list) or not minimum <= len(raw) <= MAX_POINTS:
        raise DrawingError(f"points must be a list of {minimum} to {MAX_POINTS} {{lat, lon}}")
    return tuple(_point(p, f"points[{i}]") for i, p in enumerate(raw))


def parse_drawing(doc: Any) -> Drawing:
    """The drawing a JSON body describes (docs/api.md "Drawing on the map"), or DrawingError."""
    if not isinstance(doc, dict):
        raise DrawingError("body must be a JSON object")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise DrawingError("kind must be one of " + ", ".join(KINDS))
    callsign = text_field(doc, "callsign", MAX_CALLSIGN_CHARS) or DEFAULT_CALLSIGNS[kind]
    remarks = text_field(doc, "remarks", MAX_REMARKS_CHARS, multiline=True)
    if kind == "marker":
        cot_type = doc.get("type", DEFAULT_MARKER_TYPE)
        if not isinstance(cot_type, str) or not MARKER_TYPE_RE.match(cot_type):
            raise DrawingError("type must be a CoT atom type such as a-f-G-U-C")
        return Drawing(kind, callsign, remarks, (_point(doc, "marker"),), cot_type=cot_type)
    if kind == "route":
        return Drawing(kind, callsign, remarks, _points(doc, 2))
    if kind == "polygon":
        points = _points(doc, 3)
        if len(points) > 3 and points[0] == points[-1]:
            points = points[:-1]  # closed by the caller: closed again below, once
        if len(set(points)) < 3:
            raise DrawingError("a polygon needs 3 different points")
        return Drawing(kind, callsign, remarks, points)
    centre = _point(doc, kind)
    if kind == "circle":
        radius = _number(doc, "radius", 0, MAX_DISTANCE_M)
        if radius <= 0:
            raise DrawingError("radius must be more than 0")
        return Drawing(kind, callsign, remarks, (centre,), radius_m=radius)
    range_m = _number(doc, "range", 0, MAX_DISTANCE_M)
    if range_m <= 0:
        raise DrawingError("range must be more than 0")
    bearing = _number(doc, "bearing", 0, 360) % 360.0
    return Drawing(kind, callsign, remarks, (centre,), range_m=range_m, bearing_deg=bearing)


def check_uid(value: Any) -> str:
    """A uid the caller chose (to edit an item it drew), or DrawingError."""
    if not isinstance(value, str) or not UID_RE.match(value):
        raise DrawingError(
            f"uid must be 1 to {MAX_UID_CHARS} characters of A-Z, a-z, 0-9, '.', '_', ':', '-'"
        )
    return value


# --- the CoT ------------------------------------------------------------------------------------


def _num(value: float) -> str:
    return repr(float(value))


def _latlon(point: tuple[float, float]) -> str:
    return f"{_num(point[0])},{_num(point[1])}"


def _event(uid: str, cot_type: str, how: str, now_ms: int, stale_ms: int) -> ET.Element:
    t = cot_xml.format_time(now_ms)
    return ET.Element(
        "event",
        {
            "version": "2.0",
            "uid": uid,
            "type": cot_type,
            "how": how,
            "time": t,
            "start": t,
            "stale": cot_xml.format_time(now_ms + stale_ms),
        },
    )


def _point_element(event: ET.Element, lat: float, lon: float) -> None:
    ET.SubElement(
        event,
        "point",
        {"lat": _num(lat), "lon": _num(lon), "hae": UNKNOWN, "ce": UNKNOWN, "le": UNKNOWN},
    )


def _common_tail(detail: ET.Element, drawing: Drawing, creator: Creator, now_ms: int) -> None:
    """contact, remarks and creator, as ATAK 5 ends every drawing (atak-shape-06.xml,
    atak-route-02.xml: ``<creator uid callsign time type/>``)."""
    ET.SubElement(detail, "contact", {"callsign": drawing.callsign})
    remarks = ET.SubElement(detail, "remarks")
    remarks.text = drawing.remarks or ""
    ET.SubElement(
        detail,
        "creator",
        {
            "uid": creator.uid,
            "callsign": creator.callsign,
            "time": cot_xml.format_time(now_ms),
            "type": CREATOR_TYPE,
        },
    )


def _stroke(detail: ET.Element, weight: str, fill: bool) -> None:
    ET.SubElement(detail, "strokeColor", {"value": STROKE_COLOR})
    ET.SubElement(detail, "strokeWeight", {"value": weight})
    if fill:
        ET.SubElement(detail, "fillColor", {"value": FILL_COLOR})


def _marker(event: ET.Element, d: Drawing, creator: Creator, now_ms: int) -> None:
    """A 2525 marker as ATAK drops one (atak-marker-01.xml: ``how="h-g-i-g-o"``, status,
    ``usericon iconsetpath="COT_MAPPING_2525B/a-u/a-u-G"``, a ``p-p`` link to its creator,
    contact, color)."""
    lat, lon = d.points[0]
    _point_element(event, lat, lon)
    detail = ET.SubElement(event, "detail")
    ET.SubElement(detail, "status", {"readiness": "true"})
    ET.SubElement(detail, "archive")
    affiliation = "-".join(d.cot_type.split("-")[:2])
    ET.SubElement(
        detail, "usericon", {"iconsetpath": f"COT_MAPPING_2525B/{affiliation}/{d.cot_type}"}
    )
    ET.SubElement(
        detail,
        "link",
        {
            "uid": creator.uid,
            "production_time": cot_xml.format_time(now_ms),
            "type": CREATOR_TYPE,
            "parent_callsign": creator.callsign,
            "relation": "p-p",
        },
    )
    ET.SubElement(detail, "color", {"argb": STROKE_COLOR})
    _common_tail(detail, d, creator, now_ms)


def _route(event: ET.Element, d: Drawing, creator: Creator, now_ms: int, uid: str) -> None:
    """A route as ATAK writes one (atak-route-01.xml, atak-route-02.xml): point 0,0, one
    ``<link uid type="b-m-p-w" point="lat,lon" callsign relation="c">`` per waypoint in order
    (the start point ``<name> SP``, then check points CP1...), ``link_attr``, ``__routeinfo``."""
    _point_element(event, 0.0, 0.0)
    detail = ET.SubElement(event, "detail")
    for i, point in enumerate(d.points):
        ET.SubElement(
            detail,
            "link",
            {
                "uid": f"{uid}.{i}",
                "callsign": f"{d.callsign} SP" if i == 0 else f"CP{i}",
                "type": "b-m-p-w",
                "point": _latlon(point),
                "remarks": "",
                "relation": "c",
            },
        )
    ET.SubElement(
        detail,
        "link_attr",
        {
            "planningmethod": "Infil",
            "color": STROKE_COLOR,
            "method": "Driving",
            "prefix": "CP",
            "type": "Vehicle",
            "stroke": "3",
            "direction": "Infil",
            "routetype": "Primary",
            "order": "Ascending Check Points",
        },
    )
    ET.SubElement(detail, "labels_on", {"value": "false"})
    ET.SubElement(ET.SubElement(detail, "__routeinfo"), "__navcues")
    ET.SubElement(detail, "color", {"value": STROKE_COLOR})
    _stroke(detail, "3.0", fill=False)
    _common_tail(detail, d, creator, now_ms)


def _polygon(event: ET.Element, d: Drawing, creator: Creator, now_ms: int) -> None:
    """A closed free-form shape as ATAK writes one (atak-shape-05.xml, type ``u-d-f``): the point
    in the middle, ``<link point="lat,lon"/>`` per vertex with the first repeated last."""
    lats = [p[0] for p in d.points]
    lons = [p[1] for p in d.points]
    _point_element(event, (min(lats) + max(lats)) / 2, (min(lons) + max(lons)) / 2)
    detail = ET.SubElement(event, "detail")
    for point in (*d.points, d.points[0]):
        ET.SubElement(detail, "link", {"point": _latlon(point)})
    ET.SubElement(detail, "labels_on", {"value": "false"})
    ET.SubElement(detail, "color", {"value": STROKE_COLOR})
    _stroke(detail, "4.0", fill=True)
    _common_tail(detail, d, creator, now_ms)


def _circle(event: ET.Element, d: Drawing, creator: Creator, now_ms: int, uid: str) -> None:
    """A circle as ATAK writes one (atak-shape-01.xml, type ``u-d-c-c``): the centre as the
    point, ``<shape><ellipse major minor angle="360"/>`` (the radius in metres, twice) and the
    KML style link ``<uid>.Style``."""
    lat, lon = d.points[0]
    _point_element(event, lat, lon)
    detail = ET.SubElement(event, "detail")
    shape = ET.SubElement(detail, "shape")
    radius = _num(d.radius_m)
    ET.SubElement(shape, "ellipse", {"major": radius, "minor": radius, "angle": "360"})
    link = ET.SubElement(
        shape, "link", {"uid": f"{uid}.Style", "type": "b-x-KmlStyle", "relation": "p-c"}
    )
    style = ET.SubElement(link, "Style")
    line = ET.SubElement(style, "LineStyle")
    ET.SubElement(line, "color").text = "ffffffff"
    ET.SubElement(line, "width").text = "4.0"
    ET.SubElement(ET.SubElement(style, "PolyStyle"), "color").text = "96ffffff"
    ET.SubElement(detail, "labels_on", {"value": "true"})
    _stroke(detail, "4.0", fill=True)
    _common_tail(detail, d, creator, now_ms)


def _rangebearing(event: ET.Element, d: Drawing, creator: Creator, now_ms: int) -> None:
    """A range-and-bearing line as ATAK writes one (atak-rangebearing-02.xml, type ``u-rb-a``):
    the start as the point, ``<range value>`` in metres, ``<bearing value>`` in degrees, and the
    display units ATAK wrote there (``rangeUnits``, ``bearingUnits``, ``northRef``)."""
    lat, lon = d.points[0]
    _point_element(event, lat, lon)
    detail = ET.SubElement(event, "detail")
    ET.SubElement(detail, "range", {"value": _num(d.range_m)})
    ET.SubElement(detail, "bearing", {"value": _num(d.bearing_deg)})
    ET.SubElement(detail, "inclination", {"value": "0.0"})
    ET.SubElement(detail, "rangeUnits", {"value": "1"})
    ET.SubElement(detail, "bearingUnits", {"value": "0"})
    ET.SubElement(detail, "northRef", {"value": "1"})
    ET.SubElement(detail, "labels_on", {"value": "false"})
    ET.SubElement(detail, "color", {"value": STROKE_COLOR})
    _stroke(detail, "3.0", fill=False)
    _common_tail(detail, d, creator, now_ms)


COT_TYPES = {"route": "b-m-r", "polygon": "u-d-f", "circle": "u-d-c-c", "rangebearing": "u-rb-a"}


def drawing_xml(
    drawing: Drawing,
    *,
    uid: str,
    creator: Creator,
    now_ms: int,
    seclabel: ET.Element | None = None,
) -> bytes:
    """The CoT event of ``drawing`` (with ``seclabel`` as its chosen label, if any)."""
    kind = drawing.kind
    if kind == "marker":
        event = _event(uid, drawing.cot_type, "h-g-i-g-o", now_ms, DRAWING_STALE_MS)
        _marker(event, drawing, creator, now_ms)
    else:
        # ATAK writes drawings and routes as entered by hand: how="h-e" (samples above).
        event = _event(uid, COT_TYPES[kind], "h-e", now_ms, DRAWING_STALE_MS)
        if kind == "route":
            _route(event, drawing, creator, now_ms, uid)
        elif kind == "polygon":
            _polygon(event, drawing, creator, now_ms)
        elif kind == "circle":
            _circle(event, drawing, creator, now_ms, uid)
        else:
            _rangebearing(event, drawing, creator, now_ms)
    if seclabel is not None:
        detail = event.find("detail")
        assert detail is not None
        detail.append(seclabel)
    xml: bytes = ET.tostring(event, encoding="utf-8")
    return xml


def delete_xml(
    target_uid: str,
    target_type: str,
    *,
    uid: str,
    now_ms: int,
) -> bytes:
    """A ``t-x-d-d`` removing ``target_uid`` as TAK writes one (other-delete-01.xml: a ``p-p``
    link to the item with its type, point 0,0; tak-protocol.md: the target is the link uid).
    Unlabelled: the router gives a delete the label of the item it removes, so exactly those
    who could see the item are told."""
    event = _event(uid, "t-x-d-d", "h-g-i-g-o", now_ms, DELETE_STALE_MS)
    _point_element(event, 0.0, 0.0)
    detail = ET.SubElement(event, "detail")
    ET.SubElement(detail, "link", {"uid": target_uid, "relation": "p-p", "type": target_type})
    xml: bytes = ET.tostring(event, encoding="utf-8")
    return xml


def creator_uid(detail: ET.Element | None) -> str | None:
    """Who drew an item: ``detail/creator@uid`` (ATAK 5, and every drawing made here)."""
    if detail is None:
        return None
    creator = detail.find("creator")
    return creator.get("uid") if creator is not None else None
