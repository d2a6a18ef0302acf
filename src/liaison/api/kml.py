"""The picture as KML 2.2 (OGC 07-147r2), as KMZ, and the NetworkLink document that makes a
KML viewer (Google Earth, QGIS, ATAK's KML layers) fetch it again on an interval.

Pure functions of events the router already released to the caller, and of their label banners:
no request, no decision (the REST handler decides what goes in, as for the GeoJSON picture).
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Iterable
from xml.etree import ElementTree as ET

from liaison.api.geojson import event_feature, iso
from liaison.model.event import Event

KML_NS = "http://www.opengis.net/kml/2.2"
KML_CONTENT_TYPE = "application/vnd.google-earth.kml+xml"
KMZ_CONTENT_TYPE = "application/vnd.google-earth.kmz"
# The name of the document inside a KMZ (KML 2.2 Reference, "KMZ Files": doc.kml by custom).
KMZ_ENTRY = "doc.kml"


def _sub(parent: ET.Element, name: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, name)
    if text is not None:
        element.text = text
    return element


def _coordinates(positions: Iterable[list[float]]) -> str:
    """KML ``coordinates``: ``lon,lat[,alt]`` tuples separated by a space (07-147r2 10.3.1)."""
    return " ".join(",".join(repr(float(v)) for v in p[:3]) for p in positions)


def _placemark(parent: ET.Element, event: Event, banner: str | None) -> None:
    feature = event_feature(event, banner)
    props = feature["properties"]
    placemark = _sub(parent, "Placemark")
    _sub(placemark, "name", event.callsign or event.uid)
    lines = [banner] if banner else []
    if props["remarks"]:
        lines.append(props["remarks"])
    if lines:
        _sub(placemark, "description", "\n".join(lines))
    extended = _sub(placemark, "ExtendedData")
    fields = {
        "uid": event.uid,
        "type": event.type,
        "how": event.how,
        "callsign": event.callsign,
        "time": iso(event.time),
        "stale": iso(event.stale),
        "label": banner,
    }
    for key, value in fields.items():
        if value is not None:
            data = _sub(extended, "Data")
            data.set("name", key)
            _sub(data, "value", value)
    shape = props.get("shape")
    if shape is not None and shape["type"] == "Polygon":
        polygon = _sub(placemark, "Polygon")
        ring = _sub(_sub(polygon, "outerBoundaryIs"), "LinearRing")
        _sub(ring, "coordinates", _coordinates(shape["coordinates"][0]))
    elif shape is not None:
        _sub(_sub(placemark, "LineString"), "coordinates", _coordinates(shape["coordinates"]))
    else:
        point = feature["geometry"]["coordinates"]
        if all(math.isfinite(v) for v in point):
            _sub(_sub(placemark, "Point"), "coordinates", _coordinates([point]))


def picture_kml(items: Iterable[tuple[Event, str | None]], title: str) -> bytes:
    """A KML document with one Placemark per item: ``name`` (callsign, else uid),
    ``description`` (label banner, then remarks), ``ExtendedData`` (uid, type, how, callsign,
    time, stale, label) and its geometry (the shape of a drawing or route, else its point)."""
    root = ET.Element("kml", xmlns=KML_NS)
    document = _sub(root, "Document")
    _sub(document, "name", title)
    for event, banner in items:
        _placemark(document, event, banner)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def kmz(kml: bytes) -> bytes:
    """A KMZ archive holding the document as ``doc.kml``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(KMZ_ENTRY, kml)
    return out.getvalue()


def network_link(href: str, interval_s: int, title: str) -> bytes:
    """A NetworkLink whose Link fetches ``href`` every ``interval_s`` seconds
    (``refreshMode`` onInterval, 07-147r2 13.1)."""
    root = ET.Element("kml", xmlns=KML_NS)
    link_el = _sub(root, "NetworkLink")
    _sub(link_el, "name", title)
    _sub(link_el, "open", "1")
    link = _sub(link_el, "Link")
    _sub(link, "href", href)
    _sub(link, "refreshMode", "onInterval")
    _sub(link, "refreshInterval", str(interval_s))
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data
