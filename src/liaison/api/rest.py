"""The REST API (``/api/v1``): the contract of docs/api.md.

Every item in an answer comes from a query made for the caller through the router
(``Router.picture`` and ``find``; ``Query.history`` for stored history, which releases each row
through ``Router.filter_records``), so it passes the same decision as live delivery; an item the
caller may not see is answered exactly like one that does not exist. Items are GeoJSON Features
(RFC 7946) built by ``api.geojson``; sign-in and the web map's files are ``api.web``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from liaison import __version__
from liaison.api import kml
from liaison.api.auth import SESSION_COOKIE, AuthMode
from liaison.api.context import CONTEXT_KEY, ApiContext, context, principal
from liaison.api.files import refuse_cross_site
from liaison.api.geojson import (
    chat_message,
    event_feature,
    feature_collection,
    is_map_item,
    iso,
    role_of,
)
from liaison.api.openapi import spec as openapi_spec
from liaison.api.roles import require_operator, roles_of
from liaison.api.server import MODE_KEY, SESSIONS_KEY
from liaison.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from liaison.model import labels
from liaison.model.event import Event
from liaison.model.labels import AuthSet, CategoryType, Policy
from liaison.model.principal import Principal, origin_of_name
from liaison.protocol import cot_xml
from liaison.query import MAX_QUERY_LIMIT, HistoryQuery, StoredEvent

log = logging.getLogger(__name__)

API = "/api/v1"

# Default and largest number of history rows one request returns (the store's own bound).
DEFAULT_HISTORY_LIMIT = 1000
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

STARTED_KEY: web.AppKey[float] = web.AppKey("liaison.rest.started")


# --- shapes -------------------------------------------------------------------------------------


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
            "roles": roles_of(p, ctx.config.operator_group),
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
    fmt = q.get("format")
    if fmt not in (None, "", "geojson", "cot", "kml", "kmz"):
        raise bad_request("format must be geojson, cot, kml or kmz")
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
    if fmt in ("kml", "kmz"):
        document = kml.picture_kml(((e, ctx.router.banner(e)) for e in events), "Liaison picture")
        if fmt == "kml":
            return web.Response(body=document, headers={"Content-Type": kml.KML_CONTENT_TYPE})
        return web.Response(
            body=kml.kmz(document),
            headers={
                "Content-Type": kml.KMZ_CONTENT_TYPE,
                "Content-Disposition": 'attachment; filename="liaison-picture.kmz"',
            },
        )
    return json_response(
        feature_collection([event_feature(e, ctx.router.banner(e)) for e in events])
    )


async def visible_history(
    request: web.Request,
    query: HistoryQuery,
    *,
    keep: Callable[[Event], bool] | None = None,
) -> list[tuple[StoredEvent, Event]]:
    """Up to ``query.limit`` stored events the caller may see, newest first (``Query.history``:
    the router's decision and release record for each, and the scan budget that keeps other
    organisations' volume hidden). A web map user is also known as its web uid (directed chats).
    """
    ctx = context(request)
    viewer = principal(request)
    return await ctx.query.history(
        viewer, query, keep=keep, known_as=(web_uid(viewer), viewer.name), path="http"
    )


async def get_history(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    q = request.query
    fmt = parse_format(q.get("format"))
    since = parse_time_param("since", q.get("since"))
    until = parse_time_param("until", q.get("until"))
    query = HistoryQuery(
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
        origin = origin_of_name(rec.sender)
        if origin is not None:
            feature["properties"]["origin"] = origin
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
    query = HistoryQuery(
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
    # Operators only (api.roles): the counters describe the whole server.
    require_operator(request, "/metrics")
    ctx = context(request)
    # With --workers, every worker's metrics, each sample labelled worker="wI" (docs/api.md).
    every = ctx.metrics_text
    text = await every() if every is not None else ctx.metrics.render_prometheus()
    return web.Response(
        body=text.encode("utf-8"),
        headers={"Content-Type": METRICS_CONTENT_TYPE, "X-Content-Type-Options": "nosniff"},
    )


async def get_openapi(request: web.Request) -> web.Response:
    return json_response(openapi_spec(request.app[MODE_KEY]))


# --- chat ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebSource:
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
    seclabel = chosen_label(ctx.router.policy, _optional_text(doc, "label"), sender, now)
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
    published = ctx.router.publish_checked(event, WebSource(sender))
    if published.refused:
        raise web.HTTPForbidden(
            text=json.dumps({"error": "refused", "reasons": list(published.refused)}),
            content_type="application/json",
        )
    # The accepted event carries the label the server applied (the listener default included).
    sent = published.event or event
    message = chat_message(sent, ctx.router.banner(sent))
    return json_response({"message": message, "delivered": published.delivered}, status=201)


def chosen_label(
    policy: labels.Policy | None, banner: str | None, sender: Principal, now_ms: int
) -> ET.Element | None:
    """The ``<__seclabel>`` for a chat or drawing sent with a chosen label (a banner such as
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
    query = HistoryQuery(type_prefix="b-t-f", since=since, limit=limit)
    found = await visible_history(request, query, keep=lambda ev: ev.type == "b-t-f")
    found.reverse()  # oldest first, as a chat panel shows them
    return json_response({"messages": [chat_message(ev, ctx.router.banner(ev)) for _, ev in found]})


# --- registration -------------------------------------------------------------------------------


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """The REST API and metrics on one listener, and the count of every HTTP response (sign-in
    and the web map's files are added by ``api.web``, the WebSocket feed by ``api.ws``)."""
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
