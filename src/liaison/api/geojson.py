"""Items as GeoJSON (RFC 7946) and chats as the web map's messages: the one presenter shared by
the REST API (``api.rest``) and the WebSocket feed (``api.ws``).

Pure functions of an :class:`~liaison.model.event.Event` (and the banner of its label, which the
caller gets from the router): no request, no decision. What may be shown is decided before an
event gets here.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any

from liaison.model.event import UNKNOWN_THRESHOLD, Event
from liaison.protocol import cot_xml
from liaison.protocol.drawings import creator_uid

# Item types that are not things on a map: chat (b-t-f...), file transfers (b-f-t-...) and
# tasking or control (t-...). They are kept out of the picture and the map's features.
NON_MAP_PREFIXES = ("b-t-f", "b-f-t", "t-")
# Drawings whose <link point="lat,lon"> children outline a shape, and routes (b-m-r).
SHAPE_PREFIXES = ("u-d-", "b-m-r")
# Most points read from one shape's links (a freehand line has a few hundred).
MAX_SHAPE_POINTS = 10_000


def iso(ms: int) -> str:
    """CoT time in ms as ISO 8601 UTC with a Z (``2024-05-01T12:00:00.000Z``)."""
    return cot_xml.format_time(ms)


def is_map_item(event: Event) -> bool:
    return not event.type.startswith(NON_MAP_PREFIXES)


def _float_attr(element: ET.Element | None, name: str) -> float | None:
    if element is None:
        return None
    text = element.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_point(text: str) -> list[float] | None:
    """``lat,lon[,hae]`` as written in ATAK's ``<link point=...>`` -> GeoJSON ``[lon, lat]``."""
    parts = text.split(",")
    if len(parts) < 2:
        return None
    try:
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return [lon, lat]


def shape_geometry(event: Event) -> dict[str, Any] | None:
    """The outline of a drawing or route from its ``<link point=...>`` children, as GeoJSON.

    ATAK writes polylines, rectangles and routes as ``<link point="lat,lon"/>`` lists (samples
    atak-route-01.xml; node-CoT types.ts LinkAttributes). A rectangle (``u-d-r``) and a polyline
    whose last point repeats the first are Polygons, other lines LineStrings.
    """
    if event.detail is None or not event.type.startswith(SHAPE_PREFIXES):
        return None
    coords: list[list[float]] = []
    for link in event.detail.iterfind("link"):
        text = link.get("point")
        if text is None:
            continue
        point = _parse_point(text)
        if point is not None:
            coords.append(point)
        if len(coords) >= MAX_SHAPE_POINTS:
            break
    if len(coords) < 2:
        return None
    closed = coords[0] == coords[-1]
    if event.type.startswith("u-d-r") or (closed and len(coords) >= 4):
        ring = coords if closed else [*coords, coords[0]]
        if len(ring) >= 4:
            return {"type": "Polygon", "coordinates": [ring]}
    return {"type": "LineString", "coordinates": coords}


# Mean Earth radius (IUGG), the sphere the web map measures on (OpenLayers' ol/sphere).
EARTH_RADIUS_M = 6_371_008.8


def destination(lat: float, lon: float, range_m: float, bearing_deg: float) -> list[float]:
    """``[lon, lat]`` of the point ``range_m`` from (lat, lon) along ``bearing_deg`` (clockwise
    from true north) on the sphere: the great-circle destination formula."""
    phi1, lam1 = math.radians(lat), math.radians(lon)
    theta, delta = math.radians(bearing_deg), range_m / EARTH_RADIUS_M
    phi2 = math.asin(
        math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    )
    lam2 = lam1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * math.sin(phi2),
    )
    lon2 = (math.degrees(lam2) + 540.0) % 360.0 - 180.0
    return [round(lon2, 9), round(math.degrees(phi2), 9)]


def range_bearing_line(event: Event) -> dict[str, Any] | None:
    """A range-and-bearing line (``u-rb-a``: ``<range value>`` metres and ``<bearing value>``
    degrees from the event's point, sample atak-rangebearing-02.xml) as a two-point LineString."""
    if event.detail is None or event.type != "u-rb-a":
        return None
    range_m = _float_attr(event.detail.find("range"), "value")
    bearing = _float_attr(event.detail.find("bearing"), "value")
    if range_m is None or bearing is None or not 0 < range_m <= 20_000_000:
        return None
    if not (-90 <= event.lat <= 90 and -180 <= event.lon <= 180):
        return None
    end = destination(event.lat, event.lon, range_m, bearing)
    return {"type": "LineString", "coordinates": [[event.lon, event.lat], end]}


def role_of(event: Event) -> str | None:
    """The ``__group@role`` a client reports (Team Member, HQ, ...), display only."""
    group = event.detail.find("__group") if event.detail is not None else None
    return group.get("role") if group is not None else None


def remarks_text(event: Event) -> str | None:
    if event.detail is None:
        return None
    remarks = event.detail.find("remarks")
    if remarks is None:
        return None
    return "".join(remarks.itertext())


def event_feature(event: Event, label: str | None) -> dict[str, Any]:
    """One item as a GeoJSON Feature (the shape the REST API and the WebSocket share)."""
    detail = event.detail
    track = detail.find("track") if detail is not None else None
    shape = shape_geometry(event) or range_bearing_line(event)
    lon, lat = event.lon, event.lat
    if shape is not None and lat == 0.0 and lon == 0.0:
        # Routes are sent with a 0,0 point: place the item on its first vertex instead.
        vertices = shape["coordinates"][0] if shape["type"] == "Polygon" else shape["coordinates"]
        lon, lat = vertices[0][0], vertices[0][1]
    coordinates: list[float] = [lon, lat]
    if math.isfinite(event.hae) and abs(event.hae) < UNKNOWN_THRESHOLD:
        coordinates.append(event.hae)
    props: dict[str, Any] = {
        "uid": event.uid,
        "type": event.type,
        "how": event.how,
        "callsign": event.callsign,
        "team": event.team,
        "role": role_of(event),
        "time": iso(event.time),
        "start": iso(event.start),
        "stale": iso(event.stale),
        "course": _float_attr(track, "course"),
        "speed": _float_attr(track, "speed"),
        "remarks": remarks_text(event),
        "label": label,
    }
    if shape is not None:
        props["shape"] = shape
    # Who drew it (ATAK 5 writes detail/creator; so do the web map's drawings).
    creator = creator_uid(event.detail)
    if creator is not None:
        props["creator"] = creator
    # Where the server got it: "feed:NAME" or "partner" (Event.origin).
    if event.origin is not None:
        props["origin"] = event.origin
    if detail is not None:
        ellipse = detail.find("shape/ellipse")
        if ellipse is not None:
            props["ellipse"] = {
                "major": _float_attr(ellipse, "major"),
                "minor": _float_attr(ellipse, "minor"),
                "angle": _float_attr(ellipse, "angle"),
            }
    return {
        "type": "Feature",
        "id": event.uid,
        "geometry": {"type": "Point", "coordinates": coordinates},
        "properties": props,
    }


def chat_message(event: Event, label: str | None) -> dict[str, Any]:
    """A GeoChat ``b-t-f`` event as the web map's chat message.

    The sender is ``__chat/chatgrp@uid0`` (ATAK), else the ``p-p`` link; the callsign is
    ``__chat@senderCallsign`` when the client wrote one (samples atak-chat-*.xml).
    """
    detail = event.detail
    chat = detail.find("__chat") if detail is not None else None
    grp = chat.find("chatgrp") if chat is not None else None
    sender = grp.get("uid0") if grp is not None else None
    if sender is None:
        sender = event.link_uid
    return {
        "uid": event.uid,
        "sender_uid": sender,
        "callsign": chat.get("senderCallsign") if chat is not None else None,
        "text": remarks_text(event) or "",
        "chatroom": chat.get("chatroom") if chat is not None else None,
        "time": iso(event.time),
        "label": label,
    }


def feature_collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features}
