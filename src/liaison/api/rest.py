"""The REST API (``/api/v1``), web sign-in and the web map's files: the contract of docs/api.md.

Every item in an answer comes from a router query made for the caller (``Router.picture``,
``find``, ``filter_records``), so it passes the same decision as live delivery; an item the caller
may not see is answered exactly like one that does not exist. Items are GeoJSON Features
(RFC 7946) built by :func:`event_feature`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.resources
import json
import logging
import math
import mimetypes
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from importlib.resources.abc import Traversable
from typing import Any

from aiohttp import web

from liaison import __version__
from liaison.api.auth import SESSION_COOKIE, AuthMode, check_password
from liaison.api.context import CONTEXT_KEY, ApiContext, context, principal
from liaison.api.files import refuse_cross_site
from liaison.api.openapi import spec as openapi_spec
from liaison.api.server import MODE_KEY, SESSIONS_KEY, THROTTLE_KEY
from liaison.errors import PeerError
from liaison.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from liaison.model import labels
from liaison.model.event import UNKNOWN_THRESHOLD, Event
from liaison.model.labels import AuthSet, CategoryType, Policy
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from liaison.storage.base import MAX_QUERY_LIMIT, Query, StoredEvent

log = logging.getLogger(__name__)

API = "/api/v1"

# Default and largest number of history rows one request returns (the store's own bound).
DEFAULT_HISTORY_LIMIT = 1000
# Most history rows one request reads from the store while looking for rows the caller may see
# (see visible_history): five full pages, a few tens of MB of XML at worst, read page by page.
HISTORY_SCAN_BUDGET = 5 * MAX_QUERY_LIMIT
# Smallest page read from the store when looking for visible rows.
HISTORY_MIN_PAGE = 200
# Default and largest number of chat messages returned by GET /api/v1/chat.
DEFAULT_CHAT_LIMIT = 100
MAX_CHAT_LIMIT = 1000
# Longest chat text accepted from the web map. ATAK's GeoChat has no hard limit, but messages are
# a few lines; 4,000 characters is a long paragraph and keeps the event far below the 1 MiB
# event limit (protocol.limits.MAX_XML_EVENT_BYTES).
MAX_CHAT_CHARS = 4000
# How long a web chat stays valid: one day, as ATAK writes GeoChat (samples atak-chat-*.xml).
CHAT_STALE_MS = 24 * 3600 * 1000
# Largest JSON body of a REST call (chat, login).
MAX_JSON_BYTES = 64 * 1024
# Static files of the web map are read once and kept in memory: the build is a few MB (bundled
# basemap included). Bounded all the same, in files and bytes; past that, read per request.
MAX_STATIC_CACHE_FILES = 512
MAX_STATIC_CACHE_BYTES = 64 * 1024 * 1024
# The web build (Vite) writes only content-hashed files under static/assets/ ("index-DwjGLh_i.js"):
# their content never changes under a name, so browsers keep them a year (RFC 9111 5.2.2.1;
# "immutable", RFC 8246). Everything else (index.html, login.html, favicon) is revalidated.
HASHED_ASSETS_DIR = "assets/"
CACHE_IMMUTABLE = "public, max-age=31536000, immutable"
CACHE_REVALIDATE = "no-cache"

# Item types that are not things on a map: chat (b-t-f...), file transfers (b-f-t-...) and
# tasking or control (t-...). They are kept out of the picture and the map's features.
NON_MAP_PREFIXES = ("b-t-f", "b-f-t", "t-")
# Drawings whose <link point="lat,lon"> children outline a shape, and routes (b-m-r).
SHAPE_PREFIXES = ("u-d-", "b-m-r")
# Most points read from one shape's links (a freehand line has a few hundred).
MAX_SHAPE_POINTS = 10_000

STARTED_KEY: web.AppKey[float] = web.AppKey("liaison.rest.started")
STATIC_CACHE_KEY: web.AppKey[dict[str, tuple[bytes, str]]] = web.AppKey("liaison.rest.static")


# --- GeoJSON and chat shapes -------------------------------------------------------------------


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
    shape = shape_geometry(event)
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


def events_xml(xmls: Iterable[bytes]) -> bytes:
    """Events as one ``<events>`` document (the form TAK Server's ``/api/cot`` queries use)."""
    return b"".join([b'<?xml version="1.0" encoding="UTF-8"?>\n<events>', *xmls, b"</events>\n"])


def clearance_banner(policy: Policy | None, auths: AuthSet | None) -> str | None:
    """A principal's authorizations written like a label banner (``SECRET//REL TO USA``): the
    ceiling, then the values held in each category that counts (policy display order)."""
    if policy is None or auths is None or auths.ceiling is None:
        return None
    segments = [auths.ceiling]
    for cdef in policy.categories:
        if cdef.type is CategoryType.INFORMATIVE:
            continue
        held = auths.held.get(cdef.name)
        if held:
            segments.append(cdef.prefix + ", ".join(cdef.ordered(held)))
    return "//".join(segments)


# --- helpers shared with the Marti routes ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A connected (or recently seen) TAK client whose position the caller may see."""

    event: Event
    connected: bool


def visible_clients(
    ctx: ApiContext, viewer: Principal, *, include_disconnected: bool, path: str = "http"
) -> list[ClientInfo]:
    """Clients whose self-reported position (contact) the caller may see.

    Connected ones are the router's subscribers with a known client uid; with
    ``include_disconnected``, contacts still in the picture but not connected are added. Web map
    users and other subscribers without a visible contact are never listed.
    """
    connected = {s.client_uid for s in ctx.router.subscribers if s.client_uid}
    out: list[ClientInfo] = []
    for event in ctx.router.picture(viewer, path=path):
        if not event.is_contact:
            continue
        is_connected = event.uid in connected
        if is_connected or include_disconnected:
            out.append(ClientInfo(event, is_connected))
    return out


def web_uid(p: Principal) -> str:
    """The CoT uid of a web map user (its chats and its WebSocket subscription)."""
    return f"liaison-web-{p.name}"


def parse_records(
    records: Sequence[StoredEvent], viewer: Principal
) -> list[tuple[StoredEvent, Event]]:
    """Parse stored records (already filtered by ``Router.filter_records``)."""
    out: list[tuple[StoredEvent, Event]] = []
    for rec in records:
        try:
            event = cot_xml.parse_event(rec.xml)
        except PeerError:
            continue
        out.append((rec, event))
    return out


# --- query parameters --------------------------------------------------------------------------


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def item_not_found() -> web.HTTPNotFound:
    """The one answer for an item that is missing or that the caller may not see."""
    return web.HTTPNotFound(
        text=json.dumps({"error": "not found"}), content_type="application/json"
    )


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None or text == "":
        return None
    parts = text.split(",")
    if len(parts) != 4:
        raise bad_request("bbox must be minlon,minlat,maxlon,maxlat")
    try:
        min_lon, min_lat, max_lon, max_lat = (float(p) for p in parts)
    except ValueError:
        raise bad_request("bbox values must be numbers") from None
    values = (min_lon, min_lat, max_lon, max_lat)
    if not all(math.isfinite(v) for v in values):
        raise bad_request("bbox values must be finite")
    if not (-180 <= min_lon <= 180 and -180 <= max_lon <= 180):
        raise bad_request("bbox longitudes must be within -180..180")
    if not (-90 <= min_lat <= max_lat <= 90):
        raise bad_request("bbox latitudes must be within -90..90, min first")
    return values


def in_bbox(lon: float, lat: float, bbox: tuple[float, float, float, float]) -> bool:
    """Same meaning as storage Query.bbox: edges included; min_lon > max_lon crosses 180."""
    min_lon, min_lat, max_lon, max_lat = bbox
    if not min_lat <= lat <= max_lat:
        return False
    if min_lon <= max_lon:
        return min_lon <= lon <= max_lon
    return lon >= min_lon or lon <= max_lon


def parse_time_param(name: str, text: str | None) -> int | None:
    """A time as ms since the epoch (digits) or ISO 8601 with a zone."""
    if text is None or text == "":
        return None
    if text.isdigit():
        value = int(text)
    else:
        try:
            t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise bad_request(f"{name} must be ISO 8601 or ms since the epoch") from None
        if t.tzinfo is None:
            raise bad_request(f"{name} needs a time zone (use Z for UTC)")
        value = int(t.timestamp() * 1000)
    if not 0 <= value < 7_258_118_400_000:  # before 2200-01-01
        raise bad_request(f"{name} is out of range")
    return value


def parse_limit(text: str | None, default: int, maximum: int) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or not 1 <= int(text) <= maximum:
        raise bad_request(f"limit must be an integer from 1 to {maximum}")
    return int(text)


def parse_format(text: str | None) -> str:
    if text in (None, "", "geojson"):
        return "geojson"
    if text == "cot":
        return "cot"
    raise bad_request("format must be geojson or cot")


def _text_param(request: web.Request, name: str, max_chars: int = 256) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_chars:
        raise bad_request(f"{name} is too long")
    return value


def event_matches(
    event: Event,
    *,
    uid: str | None,
    type_prefix: str | None,
    callsign: str | None,
    bbox: tuple[float, float, float, float] | None,
) -> bool:
    if uid is not None and event.uid != uid:
        return False
    if type_prefix is not None and not event.type.startswith(type_prefix):
        return False
    if callsign is not None and event.callsign != callsign:
        return False
    return bbox is None or in_bbox(event.lon, event.lat, bbox)


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data, separators=(",", ":"), allow_nan=False).encode(),
        content_type="application/json",
    )


# --- handlers ----------------------------------------------------------------------------------


async def get_me(request: web.Request) -> web.Response:
    ctx = context(request)
    p = principal(request)
    csrf: str | None = None
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        found = request.app[SESSIONS_KEY].lookup(token)
        if found is not None and found[0] == p.name:
            csrf = found[1]
    return json_response(
        {
            "name": p.name,
            "org": p.org,
            "groups": sorted(p.in_groups | p.out_groups),
            "in_groups": sorted(p.in_groups),
            "out_groups": sorted(p.out_groups),
            "clearance": clearance_banner(ctx.router.policy, p.auths),
            "csrf": csrf,
            "uid": web_uid(p),
            "classifications": list(ctx.router.policy.classifications)
            if ctx.router.policy is not None
            else [],
        }
    )


async def get_picture(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    viewer = principal(request)
    q = request.query
    bbox = parse_bbox(q.get("bbox"))
    fmt = parse_format(q.get("format"))
    uid = _text_param(request, "uid")
    type_prefix = _text_param(request, "type")
    callsign = _text_param(request, "callsign")
    events = [
        e
        for e in ctx.router.picture(viewer, path="http")
        if is_map_item(e)
        and event_matches(e, uid=uid, type_prefix=type_prefix, callsign=callsign, bbox=bbox)
    ]
    if fmt == "cot":
        return web.Response(
            body=events_xml(cot_xml.render_xml(e) for e in events), content_type="application/xml"
        )
    return json_response(
        feature_collection([event_feature(e, ctx.router.banner(e)) for e in events])
    )


async def visible_history(
    request: web.Request,
    query: Query,
    *,
    keep: Callable[[Event], bool] | None = None,
) -> list[tuple[StoredEvent, Event]]:
    """Up to ``query.limit`` stored events the caller may see, newest first.

    The store's limit counts rows before the access decision, so a plain query could come back
    short (or empty) because of other organisations' rows, which would hint at how much they
    have. Pages are read until ``limit`` visible rows are found, the history is exhausted, or
    :data:`HISTORY_SCAN_BUDGET` rows were read. Pages are chained with ``until`` on ``time``
    (inclusive of the oldest time seen, with rows deduplicated by ``seq``) so equal times are not
    skipped.
    """
    ctx = context(request)
    viewer = principal(request)
    wanted = query.limit
    page = min(MAX_QUERY_LIMIT, max(2 * wanted, HISTORY_MIN_PAGE))
    found: list[tuple[StoredEvent, Event]] = []
    seen: set[int] = set()
    until = query.until
    scanned = 0
    while len(found) < wanted and scanned < HISTORY_SCAN_BUDGET:
        rows = await ctx.store.history(replace(query, until=until, limit=page))
        new = [r for r in rows if r.seq not in seen]
        if not new:
            break
        seen.update(r.seq for r in new)
        scanned += len(new)
        allowed = ctx.router.filter_records(
            viewer, new, path="http", known_as=(web_uid(viewer), viewer.name)
        )
        found.extend(
            (rec, ev) for rec, ev in parse_records(allowed, viewer) if keep is None or keep(ev)
        )
        if len(rows) < page:
            break
        until = min(r.time for r in rows) + 1
    return found[:wanted]


async def get_history(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    q = request.query
    fmt = parse_format(q.get("format"))
    since = parse_time_param("since", q.get("since"))
    until = parse_time_param("until", q.get("until"))
    query = Query(
        uid=_text_param(request, "uid"),
        type_prefix=_text_param(request, "type"),
        callsign=_text_param(request, "callsign"),
        since=since,
        until=until,
        bbox=parse_bbox(q.get("bbox")),
        limit=parse_limit(q.get("limit"), DEFAULT_HISTORY_LIMIT, MAX_QUERY_LIMIT),
    )
    found = await visible_history(request, query)
    if fmt == "cot":
        return web.Response(
            body=events_xml(rec.xml for rec, _ in found), content_type="application/xml"
        )
    features = []
    for rec, event in found:
        feature = event_feature(event, ctx.router.banner(event))
        feature["properties"]["received"] = iso(rec.received)
        features.append(feature)
    return json_response(feature_collection(features))


async def get_item(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    uid = request.match_info["uid"]
    fmt = parse_format(request.query.get("format"))
    event = ctx.router.find(principal(request), uid, path="http")
    if event is None:
        raise item_not_found()
    if fmt == "cot":
        return web.Response(body=cot_xml.render_xml(event), content_type="application/xml")
    return json_response(event_feature(event, ctx.router.banner(event)))


async def get_track(request: web.Request) -> web.Response:
    uid = request.match_info["uid"]
    q = request.query
    query = Query(
        uid=uid,
        since=parse_time_param("since", q.get("since")),
        until=parse_time_param("until", q.get("until")),
        limit=parse_limit(q.get("limit"), DEFAULT_HISTORY_LIMIT, MAX_QUERY_LIMIT),
    )
    found = await visible_history(request, query)
    points = [(ev.time, rec.seq, [ev.lon, ev.lat]) for rec, ev in found if ev.uid == uid]
    if not points:
        raise item_not_found()
    points.sort(key=lambda p: (p[0], p[1]))  # oldest first; reports of one ms in arrival order
    coords = [c for _, _, c in points]
    return json_response(
        {
            "type": "Feature",
            "id": uid,
            # RFC 7946 3.1.4: a LineString has two or more positions; one report is no line.
            "geometry": {"type": "LineString", "coordinates": coords} if len(coords) >= 2 else None,
            "properties": {"uid": uid, "times": [iso(t) for t, _, _ in points]},
        }
    )


async def get_clients(request: web.Request) -> web.Response:
    ctx = context(request)
    viewer = principal(request)
    clients = visible_clients(ctx, viewer, include_disconnected=False)
    return json_response(
        [
            {
                "uid": c.event.uid,
                "callsign": c.event.callsign,
                "type": c.event.type,
                "team": c.event.team,
                "role": role_of(c.event),
                "last_event_time": iso(c.event.time),
                "connected": c.connected,
                "label": ctx.router.banner(c.event),
            }
            for c in clients
        ]
    )


async def get_health(request: web.Request) -> web.Response:
    ctx = context(request)
    viewer = principal(request)
    connected = {s.client_uid for s in ctx.router.subscribers if s.client_uid}
    # Counts only: no item is released, so no release record is written (docs/api.md).
    router = ctx.router
    return json_response(
        {
            "status": "ok",
            "version": __version__,
            "time": iso(ctx.clock_ms()),
            "uptime_s": round(time.monotonic() - request.app[STARTED_KEY], 3),
            # Counts of what the caller may see, never totals across organisations.
            "counts": {
                "items": router.count_visible(viewer, is_map_item),
                "clients": router.count_visible(
                    viewer, lambda e: e.is_contact and e.uid in connected
                ),
            },
        }
    )


async def get_metrics(request: web.Request) -> web.Response:
    ctx = context(request)
    return web.Response(
        body=ctx.metrics.render_prometheus().encode("utf-8"),
        headers={"Content-Type": METRICS_CONTENT_TYPE, "X-Content-Type-Options": "nosniff"},
    )


async def get_openapi(request: web.Request) -> web.Response:
    return json_response(openapi_spec(request.app[MODE_KEY]))


# --- chat ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _WebSource:
    """The web user as the source of an event (what ``Router.publish`` needs)."""

    principal: Principal


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        # Also a CSRF defence: a cross-site form cannot send application/json without a preflight.
        raise web.HTTPUnsupportedMediaType(text="send application/json\n")
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_JSON_BYTES, actual_size=0)
    body = await request.content.read(MAX_JSON_BYTES + 1)
    if len(body) > MAX_JSON_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_JSON_BYTES, actual_size=len(body))
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("body is not valid JSON") from None


def _optional_text(doc: dict[str, Any], key: str, max_chars: int = 256) -> str | None:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise bad_request(f"{key} must be a string of at most {max_chars} characters")
    if any(ord(c) < 0x20 for c in value):
        raise bad_request(f"{key} must not contain control characters")
    return value


def build_chat(
    *,
    sender_uid: str,
    callsign: str,
    text: str,
    now_ms: int,
    chatroom: str | None = None,
    to_uid: str | None = None,
    to_callsign: str | None = None,
    message_id: str | None = None,
    seclabel: ET.Element | None = None,
) -> Event:
    """A GeoChat ``b-t-f`` event as ATAK writes one (samples atak-chat-all-02.xml and
    atak-chat-direct-01.xml; NC lib/builders/chat.ts): ``__chat`` with ``chatgrp``, a ``p-p`` link
    to the sender, ``remarks`` carrying the text and, when directed, one ``marti/dest``
    (tak-protocol.md 1.6: "Direct chats carry marti/dest@uid or dest@callsign")."""
    msg_id = message_id or str(uuid.uuid4())
    directed = to_uid is not None or to_callsign is not None
    room = chatroom or (to_callsign or to_uid if directed else None) or "All Chat Rooms"
    room_id = (to_uid or room) if directed else room
    t = cot_xml.format_time(now_ms)
    event = ET.Element(
        "event",
        {
            "version": "2.0",
            "uid": f"GeoChat.{sender_uid}.{room}.{msg_id}",
            "type": "b-t-f",
            "how": "h-g-i-g-o",
            "time": t,
            "start": t,
            "stale": cot_xml.format_time(now_ms + CHAT_STALE_MS),
        },
    )
    ET.SubElement(
        event,
        "point",
        {"lat": "0.0", "lon": "0.0", "hae": "9999999.0", "ce": "9999999.0", "le": "9999999.0"},
    )
    detail = ET.SubElement(event, "detail")
    chat = ET.SubElement(
        detail,
        "__chat",
        {
            "parent": "RootContactGroup",
            "groupOwner": "false",
            "messageId": msg_id,
            "chatroom": room,
            "id": room_id,
            "senderCallsign": callsign,
        },
    )
    ET.SubElement(chat, "chatgrp", {"uid0": sender_uid, "uid1": room_id, "id": room_id})
    ET.SubElement(detail, "link", {"uid": sender_uid, "type": "a-f-G-U-C", "relation": "p-p"})
    remarks = ET.SubElement(
        detail, "remarks", {"source": f"BAO.F.ATAK.{sender_uid}", "to": room_id, "time": t}
    )
    remarks.text = text
    if directed:
        marti = ET.SubElement(detail, "marti")
        if to_uid is not None:
            ET.SubElement(marti, "dest", {"uid": to_uid})
        else:
            assert to_callsign is not None
            ET.SubElement(marti, "dest", {"callsign": to_callsign})
    if seclabel is not None:
        detail.append(seclabel)
    return cot_xml.parse_event(ET.tostring(event, encoding="utf-8"))


async def post_chat(request: web.Request) -> web.Response:
    refuse_cross_site(request)
    ctx = context(request)
    sender = principal(request)
    doc = await read_json(request)
    if not isinstance(doc, dict):
        raise bad_request("body must be a JSON object")
    text = doc.get("text")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("text is required")
    if len(text) > MAX_CHAT_CHARS:
        raise bad_request(f"text is longer than {MAX_CHAT_CHARS} characters")
    if any(ord(c) < 0x20 and c not in "\n\t" for c in text):
        raise bad_request("text must not contain control characters")
    now = ctx.clock_ms()
    seclabel = _chat_label(ctx.router.policy, _optional_text(doc, "label"), sender, now)
    event = build_chat(
        sender_uid=web_uid(sender),
        callsign=sender.name,
        text=text,
        now_ms=now,
        seclabel=seclabel,
        chatroom=_optional_text(doc, "chatroom"),
        to_uid=_optional_text(doc, "to_uid"),
        to_callsign=_optional_text(doc, "to_callsign"),
    )
    published = ctx.router.publish_checked(event, _WebSource(sender))
    if published.refused:
        raise web.HTTPForbidden(
            text=json.dumps({"error": "refused", "reasons": list(published.refused)}),
            content_type="application/json",
        )
    # The accepted event carries the label the server applied (the listener default included).
    sent = published.event or event
    message = chat_message(sent, ctx.router.banner(sent))
    return json_response({"message": message, "delivered": published.delivered}, status=201)


def _chat_label(
    policy: labels.Policy | None, banner: str | None, sender: Principal, now_ms: int
) -> ET.Element | None:
    """The ``<__seclabel>`` for a chat sent with a chosen label (a banner such as
    ``SECRET//REL TO USA, UKR``); None leaves it to the listener default. The router's ingest
    rules then decide whether the sender may assert it."""
    if banner is None or policy is None:
        return None
    try:
        label = labels.label_from_banner(
            policy, banner, originator=sender.org or "", created_ms=now_ms
        )
        return labels.label_to_seclabel(policy, label)
    except labels.LabelError as exc:
        raise bad_request(f"label: {exc}") from None


async def get_chat(request: web.Request) -> web.Response:
    ctx = context(request)
    limit = parse_limit(request.query.get("limit"), DEFAULT_CHAT_LIMIT, MAX_CHAT_LIMIT)
    since = parse_time_param("since", request.query.get("since"))
    # Receipts (b-t-f-d, -r) share the prefix and are left out.
    query = Query(type_prefix="b-t-f", since=since, limit=limit)
    found = await visible_history(request, query, keep=lambda ev: ev.type == "b-t-f")
    found.reverse()  # oldest first, as a chat panel shows them
    return json_response({"messages": [chat_message(ev, ctx.router.banner(ev)) for _, ev in found]})


# --- sign-in ------------------------------------------------------------------------------------

_BUILTIN_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Liaison sign-in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>Liaison</h1>
<form method="post" action="/login">
<label>Username <input name="username" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required>
</label><button type="submit">Sign in</button></form></main></body></html>
"""

# Security headers on the web pages: no framing (clickjacking), no sniffing, no referrer leaks,
# and only our own scripts and styles (the map is fully offline; nothing comes from elsewhere).
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline';"
        " connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'"
    ),
}


def static_root() -> Traversable:
    """The built web map inside the package (``liaison/web/static``)."""
    return importlib.resources.files("liaison").joinpath("web", "static")


def _static_file(app: web.Application, path: str) -> tuple[bytes, str] | None:
    """The bytes and ETag of a static file, or None. Paths are checked part by part."""
    cache = app[STATIC_CACHE_KEY]
    hit = cache.get(path)
    if hit is not None:
        return hit
    parts = path.split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
        return None
    node = static_root()
    for part in parts:
        node = node.joinpath(part)
    if not node.is_file():
        return None
    data = node.read_bytes()
    entry = (data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
    cached_bytes = sum(len(d) for d, _ in cache.values())
    if len(cache) < MAX_STATIC_CACHE_FILES and cached_bytes + len(data) <= MAX_STATIC_CACHE_BYTES:
        cache[path] = entry
    return entry


def _serve_static(request: web.Request, path: str, cache_control: str) -> web.Response:
    found = _static_file(request.app, path)
    if found is None:
        raise web.HTTPNotFound(text="not found\n")
    data, etag = found
    headers = {"ETag": etag, "Cache-Control": cache_control, **PAGE_HEADERS}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return web.Response(body=data, content_type=ctype, headers=headers)


async def get_index(request: web.Request) -> web.Response:
    if _static_file(request.app, "index.html") is None:
        return web.Response(
            text="Liaison is running; the web map is not built into this package.\n",
            headers=PAGE_HEADERS,
        )
    return _serve_static(request, "index.html", CACHE_REVALIDATE)


async def get_static(request: web.Request) -> web.Response:
    path = request.match_info["path"]
    cache = CACHE_IMMUTABLE if path.startswith(HASHED_ASSETS_DIR) else CACHE_REVALIDATE
    return _serve_static(request, path, cache)


async def get_login(request: web.Request) -> web.Response:
    if _static_file(request.app, "login.html") is not None:
        return _serve_static(request, "login.html", CACHE_REVALIDATE)
    return web.Response(text=_BUILTIN_LOGIN, content_type="text/html", headers=PAGE_HEADERS)


def _set_session_cookie(response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, secure=True, samesite="Strict", path="/"
    )


async def post_login(request: web.Request) -> web.StreamResponse:
    refuse_cross_site(request)
    as_json = request.content_type == "application/json"
    if as_json:
        doc = await read_json(request)
        if not isinstance(doc, dict):
            raise bad_request("body must be a JSON object")
        username, password = doc.get("username"), doc.get("password")
    else:
        form = await request.post()
        username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise bad_request("username and password are required")
    try:
        who = await check_password(request, username, password, request.app[THROTTLE_KEY])
    except web.HTTPUnauthorized:
        if as_json:
            return json_response({"error": "wrong credentials"}, status=401)
        raise web.HTTPSeeOther("/login?failed=1") from None
    if who is None:
        return json_response({"error": "wrong credentials"}, status=401)
    token, csrf = request.app[SESSIONS_KEY].create(who.name)
    response = (
        json_response({"name": who.name, "csrf": csrf})
        if as_json
        else web.Response(status=303, headers={"Location": "/"})
    )
    _set_session_cookie(response, token)
    return response


async def post_logout(request: web.Request) -> web.Response:
    refuse_cross_site(request)
    request.app[SESSIONS_KEY].end(request.cookies.get(SESSION_COOKIE))
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
    return response


# --- registration -------------------------------------------------------------------------------


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """The REST API, metrics, sign-in and the web map on one listener (the WebSocket feed is
    added by ``api.ws``)."""
    app[STATIC_CACHE_KEY] = {}
    responses = app[CONTEXT_KEY].metrics.counter(
        "liaison_http_responses_total", "HTTP responses sent, by status code", "code"
    )

    async def started(app: web.Application) -> None:
        app[STARTED_KEY] = time.monotonic()

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        responses.inc(str(response.status))

    app.on_startup.append(started)
    app.on_response_prepare.append(count)
    r = app.router
    r.add_get(f"{API}/me", get_me)
    r.add_get(f"{API}/picture", get_picture)
    r.add_get(f"{API}/history", get_history)
    r.add_get(f"{API}/items/{{uid}}", get_item)
    r.add_get(f"{API}/items/{{uid}}/track", get_track)
    r.add_get(f"{API}/clients", get_clients)
    r.add_get(f"{API}/health", get_health)
    r.add_get(f"{API}/chat", get_chat)
    r.add_post(f"{API}/chat", post_chat)
    r.add_get(f"{API}/openapi.json", get_openapi)
    if mode is not AuthMode.ANONYMOUS:
        # Operational counters are server-wide: not for unauthenticated callers.
        r.add_get("/metrics", get_metrics)
    if mode is AuthMode.PASSWORD:
        r.add_get("/login", get_login)
        r.add_post("/login", post_login)
        r.add_post("/logout", post_logout)
    r.add_get("/", get_index)
    r.add_get("/static/{path:.+}", get_static)
