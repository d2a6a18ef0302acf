"""GeoJSON and KML (or KMZ) documents read by a ``geojson`` or ``kml`` feed, and what each of their
features becomes: a CoT marker, line or shape as ATAK draws one (docs/feeds.md, "GeoJSON and KML").

Pure: bytes in, :class:`GeoFeature` values out, and events built from them with every time passed
in. The input is hostile: sizes, feature counts, vertices, text lengths and KMZ archive entries are
bounded, and KML is parsed with defusedxml (no DTD, no entities, no external references).

Formats: GeoJSON is RFC 7946 (FeatureCollection, Feature; Point, LineString, Polygon and their
Multi* forms, coordinates ``[lon, lat(, alt)]``); KML is OGC 07-147r2 (KML 2.2: ``Placemark``
with ``name``, ``description``, ``ExtendedData`` (``Data``/``value``, ``SchemaData``/``SimpleData``)
and ``Point``, ``LineString``, ``LinearRing``, ``Polygon`` (outer boundary), ``MultiGeometry``;
``coordinates`` are ``lon,lat[,alt]`` tuples separated by white space); KMZ is a ZIP archive whose
first ``.kml`` entry is the document (KML 2.2 Reference, "KMZ Files").
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from liaison.model.event import UNKNOWN_ERROR, Event, make_event

# Largest document read (GeoJSON, KML, or a KMZ archive and the KML inside it, uncompressed).
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
# Features read from one document; the rest are left out and counted as invalid.
MAX_FEATURES = 10_000
# Vertices of one line or polygon (ATAK's freehand shapes have a few hundred).
MAX_VERTICES = 10_000
# Entries of a KMZ archive we look at (a KMZ holds a document and its icons).
MAX_KMZ_ENTRIES = 1_000
# Longest name (callsign), description (remarks) and feature id kept.
MAX_NAME_CHARS = 256
MAX_DESCRIPTION_CHARS = 4_000
MAX_ID_CHARS = 128
# Properties kept per feature, and the longest value of one.
MAX_PROPERTIES = 256
MAX_PROPERTY_CHARS = 4_000
# ATAK's defaults for a drawn shape (samples atak-shape-04.xml, atak-shape-05.xml): white
# stroke (ARGB -1), 3 px, and a translucent white fill for closed shapes.
STROKE_COLOR = "-1"
STROKE_WEIGHT = "3.0"
FILL_COLOR = "-1761607681"
# A CoT type: atoms separated by "-" (tak-protocol.md 1.2), first a lowercase letter.
_COT_TYPE = re.compile(r"[a-z](-[A-Za-z0-9_.]{1,16}){0,15}")
_KML_NS = re.compile(r"^\{[^}]*\}")
_IDENT = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_ID_CHARS}}}")

Position = tuple[float, float, float | None]  # lon, lat, altitude in metres (or None)


class GeoError(ValueError):
    """The document as a whole cannot be read (not JSON/KML, too large, a bad KMZ)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GeoFeature:
    """One feature (or one part of a Multi* geometry) of a document."""

    index: int  # position in the document (of the feature, counted from 0)
    part: int | None  # position within a Multi* geometry, else None
    ident: str | None  # the feature's own id (GeoJSON ``id``, KML ``Placemark@id``)
    geometry: str  # "Point", "LineString" or "Polygon"
    positions: tuple[Position, ...]  # a Polygon's outer ring, closed (last == first)
    name: str | None = None
    description: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class GeoDocument:
    features: list[GeoFeature]
    invalid: int = 0  # features left out: no or a bad geometry, too many vertices or features


# --- reading ---------------------------------------------------------------------------------


def parse(kind: str, data: bytes) -> GeoDocument:
    """The features of a ``geojson`` or ``kml`` (KML or KMZ) document."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise GeoError(f"document over {MAX_DOCUMENT_BYTES} bytes")
    if kind == "geojson":
        return parse_geojson(data)
    if data[:4] == b"PK\x03\x04":
        data = kmz_document(data)
    return parse_kml(data)


def _position(raw: object) -> Position | None:
    if not isinstance(raw, list | tuple) or not 2 <= len(raw) <= 4:
        return None
    values: list[float] = []
    for v in raw[:3]:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        values.append(float(v))
    if not all(math.isfinite(v) for v in values):
        return None
    lon, lat = values[0], values[1]
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        return None
    return (lon, lat, values[2] if len(values) > 2 else None)


def _line(raw: object, minimum: int) -> tuple[Position, ...] | None:
    if not isinstance(raw, list) or not minimum <= len(raw) <= MAX_VERTICES:
        return None
    out = []
    for item in raw:
        p = _position(item)
        if p is None:
            return None
        out.append(p)
    return tuple(out)


def _ring(positions: tuple[Position, ...] | None) -> tuple[Position, ...] | None:
    """A polygon's outer ring, closed; None when it has fewer than three distinct corners."""
    if positions is None:
        return None
    if positions[0][:2] != positions[-1][:2]:
        if len(positions) + 1 > MAX_VERTICES:
            return None
        positions = (*positions, positions[0])
    return positions if len({p[:2] for p in positions}) >= 3 else None


def _geojson_parts(geometry: object) -> list[tuple[str, tuple[Position, ...]]] | None:
    """(geometry, positions) of each part; None when the geometry cannot be read."""
    if not isinstance(geometry, dict):
        return None
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    singles: list[tuple[str, object]]
    if kind in ("Point", "LineString", "Polygon"):
        singles = [(str(kind), coords)]
    elif kind in ("MultiPoint", "MultiLineString", "MultiPolygon") and isinstance(coords, list):
        if not 1 <= len(coords) <= MAX_FEATURES:
            return None
        singles = [(str(kind)[5:], c) for c in coords]
    else:
        return None
    parts: list[tuple[str, tuple[Position, ...]]] = []
    for single, raw in singles:
        positions: tuple[Position, ...] | None
        if single == "Point":
            p = _position(raw)
            positions = (p,) if p is not None else None
        elif single == "LineString":
            positions = _line(raw, 2)
        else:  # RFC 7946 3.1.6: the first ring is the exterior; holes are not drawn
            positions = _ring(_line(raw[0], 3)) if isinstance(raw, list) and raw else None
        if positions is None:
            return None
        parts.append((single, positions))
    return parts


def _text(value: object, limit: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float | str):
        text = str(value)
    else:
        return None
    text = "".join(c for c in text if c >= " " or c in "\n\t").strip()
    return text[:limit] or None


def _ident(value: object) -> str | None:
    """A feature id usable in a uid: 1 to MAX_ID_CHARS letters, digits, ``.``, ``_``, ``:``,
    ``-`` (else None: the hash stands in)."""
    text = _text(value, MAX_ID_CHARS + 1)
    if text is None or _IDENT.fullmatch(text) is None:
        return None
    return text


def parse_geojson(data: bytes) -> GeoDocument:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise GeoError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise GeoError("not a GeoJSON object")
    if doc.get("type") == "FeatureCollection":
        raw_features = doc.get("features")
        if not isinstance(raw_features, list):
            raise GeoError("a FeatureCollection without a features array")
    elif doc.get("type") == "Feature":
        raw_features = [doc]
    else:
        raise GeoError("not a GeoJSON FeatureCollection or Feature")
    out = GeoDocument([])
    out.invalid = max(0, len(raw_features) - MAX_FEATURES)
    for index, raw in enumerate(raw_features[:MAX_FEATURES]):
        if not isinstance(raw, dict) or raw.get("type") != "Feature":
            out.invalid += 1
            continue
        parts = _geojson_parts(raw.get("geometry"))
        if parts is None:
            out.invalid += 1
            continue
        raw_props = raw.get("properties")
        props: dict[str, str] = {}
        if isinstance(raw_props, dict):
            for key, value in list(raw_props.items())[:MAX_PROPERTIES]:
                text = _text(value, MAX_PROPERTY_CHARS)
                if text is not None:
                    props[str(key)] = text
        multi = str(raw["geometry"].get("type")).startswith("Multi")
        for i, (geometry, positions) in enumerate(parts):
            out.features.append(
                GeoFeature(
                    index=index,
                    part=i if multi else None,
                    ident=_ident(raw.get("id")),
                    geometry=geometry,
                    positions=positions,
                    name=_text(props.get("name"), MAX_NAME_CHARS),
                    description=_text(props.get("description"), MAX_DESCRIPTION_CHARS),
                    properties=props,
                )
            )
    return out


def kmz_document(data: bytes) -> bytes:
    """The KML document inside a KMZ: its first entry ending ``.kml`` (KML 2.2 Reference: the
    first .kml file of the archive is the root document), read to at most MAX_DOCUMENT_BYTES
    whatever its header claims."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
            if len(entries) > MAX_KMZ_ENTRIES:
                raise GeoError(f"KMZ with more than {MAX_KMZ_ENTRIES} entries")
            for entry in entries:
                if entry.filename.lower().endswith(".kml") and not entry.is_dir():
                    with archive.open(entry) as f:
                        kml = f.read(MAX_DOCUMENT_BYTES + 1)
                    if len(kml) > MAX_DOCUMENT_BYTES:
                        raise GeoError(f"KML in the KMZ over {MAX_DOCUMENT_BYTES} bytes")
                    return kml
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise GeoError(f"not a readable KMZ: {exc}") from None
    except RuntimeError as exc:  # an encrypted entry
        raise GeoError(f"not a readable KMZ: {exc}") from None
    raise GeoError("KMZ without a .kml document")


def _local(tag: object) -> str:
    return _KML_NS.sub("", tag) if isinstance(tag, str) else ""


def _child(element: ET.Element, name: str) -> ET.Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    return (child for child in element if _local(child.tag) == name)


def _kml_positions(element: ET.Element | None, minimum: int) -> tuple[Position, ...] | None:
    """The ``coordinates`` child of a geometry: ``lon,lat[,alt]`` tuples separated by white
    space (OGC 07-147r2 10.3.1; a space after a comma, which some writers put, is tolerated)."""
    coords = _child(element, "coordinates") if element is not None else None
    if coords is None or coords.text is None:
        return None
    tuples = re.sub(r",\s+", ",", coords.text.strip()).split()
    if not minimum <= len(tuples) <= MAX_VERTICES:
        return None
    out = []
    for t in tuples:
        try:
            values = [float(v) for v in t.split(",")]
        except ValueError:
            return None
        p = _position(values)
        if p is None:
            return None
        out.append(p)
    return tuple(out)


def _kml_parts(geometry: ET.Element, depth: int = 0) -> list[tuple[str, tuple[Position, ...]]]:
    kind = _local(geometry.tag)
    positions: tuple[Position, ...] | None = None
    if kind == "Point":
        positions = _kml_positions(geometry, 1)
        return [("Point", positions[:1])] if positions else []
    if kind == "LineString":
        positions = _kml_positions(geometry, 2)
        return [("LineString", positions)] if positions else []
    if kind == "LinearRing":
        positions = _ring(_kml_positions(geometry, 3))
        return [("Polygon", positions)] if positions else []
    if kind == "Polygon":
        outer = _child(geometry, "outerBoundaryIs")
        ring = _child(outer, "LinearRing") if outer is not None else None
        positions = _ring(_kml_positions(ring, 3))
        return [("Polygon", positions)] if positions else []
    if kind == "MultiGeometry" and depth < 4:
        parts: list[tuple[str, tuple[Position, ...]]] = []
        for child in geometry:
            parts.extend(_kml_parts(child, depth + 1))
            if len(parts) > MAX_FEATURES:
                return []
        return parts
    return []


_GEOMETRIES = ("Point", "LineString", "LinearRing", "Polygon", "MultiGeometry")


def parse_kml(data: bytes) -> GeoDocument:
    try:
        root = defused_fromstring(data, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise GeoError(f"not KML: {exc}") from None
    if _local(root.tag) != "kml":
        raise GeoError("not a KML document (no <kml> root)")
    out = GeoDocument([])
    index = -1
    for placemark in root.iter():
        if _local(placemark.tag) != "Placemark":
            continue
        index += 1
        if index >= MAX_FEATURES:
            out.invalid += 1
            continue
        geometry = next((c for c in placemark if _local(c.tag) in _GEOMETRIES), None)
        parts = _kml_parts(geometry) if geometry is not None else []
        if not parts:
            out.invalid += 1
            continue
        props: dict[str, str] = {}
        extended = _child(placemark, "ExtendedData")
        if extended is not None:
            for data_el in _children(extended, "Data"):
                value = _child(data_el, "value")
                text = _text(value.text if value is not None else None, MAX_PROPERTY_CHARS)
                if data_el.get("name") and text is not None and len(props) < MAX_PROPERTIES:
                    props[str(data_el.get("name"))] = text
            for schema_data in _children(extended, "SchemaData"):
                for simple in _children(schema_data, "SimpleData"):
                    text = _text(simple.text, MAX_PROPERTY_CHARS)
                    if simple.get("name") and text is not None and len(props) < MAX_PROPERTIES:
                        props[str(simple.get("name"))] = text
        name_el = _child(placemark, "name")
        desc_el = _child(placemark, "description")
        multi = _local(geometry.tag) == "MultiGeometry" if geometry is not None else False
        for i, (kind, positions) in enumerate(parts):
            out.features.append(
                GeoFeature(
                    index=index,
                    part=i if multi else None,
                    ident=_ident(placemark.get("id")),
                    geometry=kind,
                    positions=positions,
                    name=_text(name_el.text if name_el is not None else None, MAX_NAME_CHARS),
                    description=_text(
                        desc_el.text if desc_el is not None else None, MAX_DESCRIPTION_CHARS
                    ),
                    properties=props,
                )
            )
    return out


# --- what a feature becomes ------------------------------------------------------------------


def feature_uid(feed: str, source: str, feature: GeoFeature) -> str:
    """A uid stable across reads: ``NAME.ID`` from the feature's own id, else ``NAME.`` and a
    hash of the source and the feature's position in it; ``.N`` for part N of a Multi*."""
    if feature.ident is not None:
        base = f"{feed}.{feature.ident}"
    else:
        digest = hashlib.sha256(f"{source}\n{feature.index}".encode()).hexdigest()[:16]
        base = f"{feed}.{digest}"
    return base if feature.part is None else f"{base}.{feature.part}"


def valid_cot_type(text: str | None) -> bool:
    return text is not None and len(text) <= 64 and _COT_TYPE.fullmatch(text) is not None


def is_rectangle(ring: Sequence[Position]) -> bool:
    """Four corners on two latitudes and two longitudes (an axis-aligned box), closed."""
    corners = ring[:-1]
    return (
        len(corners) == 4
        and len({p[0] for p in corners}) == 2
        and len({p[1] for p in corners}) == 2
        and len({p[:2] for p in corners}) == 4
    )


def _link_point(p: Position) -> str:
    # ATAK writes shape vertices as <link point="lat,lon[,hae]"/> (samples atak-shape-*.xml).
    return f"{p[1]},{p[0]}" if p[2] is None else f"{p[1]},{p[0]},{p[2]}"


def feature_event(
    feature: GeoFeature,
    *,
    uid: str,
    point_type: str,
    callsign: str | None,
    now_ms: int,
    stale_ms: int,
    extra: Sequence[ET.Element] = (),
) -> Event:
    """The CoT event of one feature, as ATAK draws the same thing.

    A Point is a marker of ``point_type`` (``how="h-g-i-g-o"``, as ATAK's placed markers, sample
    atak-marker-01.xml). A LineString is a ``u-d-f`` freehand line and a Polygon a closed
    ``u-d-f`` (last link = first, sample atak-shape-05.xml), or a ``u-d-r`` rectangle with its
    four corners (sample atak-shape-04.xml) when it is an axis-aligned box; both ``how="h-e"``,
    with ``<link point>`` vertices, ``strokeColor``, ``strokeWeight`` (and ``fillColor`` for
    closed shapes), and the point at the middle of their bounds.
    """
    detail = ET.Element("detail")
    positions = feature.positions
    if feature.geometry == "Point":
        lon, lat, alt = positions[0]
        cot_type, how = point_type, "h-g-i-g-o"
        hae = alt if alt is not None else UNKNOWN_ERROR
    else:
        closed = feature.geometry == "Polygon"
        rectangle = closed and is_rectangle(positions)
        cot_type, how, hae = ("u-d-r" if rectangle else "u-d-f"), "h-e", UNKNOWN_ERROR
        for p in positions[:-1] if rectangle else positions:
            ET.SubElement(detail, "link", point=_link_point(p))
        lons = [p[0] for p in positions]
        lats = [p[1] for p in positions]
        lon, lat = (min(lons) + max(lons)) / 2, (min(lats) + max(lats)) / 2
        ET.SubElement(detail, "labels_on", value="false")
        ET.SubElement(detail, "strokeColor", value=STROKE_COLOR)
        ET.SubElement(detail, "strokeWeight", value=STROKE_WEIGHT)
        if closed:
            ET.SubElement(detail, "fillColor", value=FILL_COLOR)
    if callsign:
        ET.SubElement(detail, "contact", callsign=callsign)
    if feature.description:
        ET.SubElement(detail, "remarks").text = feature.description
    detail.extend(extra)
    return make_event(
        uid=uid,
        type=cot_type,
        how=how,
        time=now_ms,
        start=now_ms,
        stale=now_ms + stale_ms,
        lat=lat,
        lon=lon,
        hae=hae,
        detail=detail,
    )


def delete_event(uid: str, target_type: str, now_ms: int, stale_ms: int) -> Event:
    """A ``t-x-d-d`` removing the item ``uid`` (its ``<link uid type relation="p-p">``, as TAK
    sends a delete: sample other-delete-01.xml)."""
    detail = ET.Element("detail")
    ET.SubElement(detail, "link", uid=uid, type=target_type, relation="p-p")
    return make_event(
        uid=f"{uid}.delete",
        type="t-x-d-d",
        how="h-g-i-g-o",
        time=now_ms,
        start=now_ms,
        stale=now_ms + stale_ms,
        lat=0.0,
        lon=0.0,
        detail=detail,
    )


def fingerprint(event: Event, label: str | None) -> str:
    """What changes when a feature changes (its type, position, detail and the banner of its
    label), not its times (nor the ``__seclabel``, which carries its creation time): equal
    fingerprints need no new publication."""
    h = hashlib.sha256()
    h.update(f"{event.type}|{event.lat}|{event.lon}|{event.hae}|{label}|".encode())
    for child in event.detail if event.detail is not None else ():
        if child.tag != "__seclabel":
            h.update(ET.tostring(child))
    return h.hexdigest()
