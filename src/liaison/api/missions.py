"""The Marti mission API ATAK's Data Sync and iTAK call: ``/Marti/api/missions...``.

Routes, parameters, headers, envelopes and status codes follow TAK Server (TSw
sync/api/MissionApi.java; shared/reference/tak-missions.md sections 2 and 5). Every answer comes
from the router's mission side (``query.Query.missions``), which releases each mission, item and
change through the router's decision: what the caller may not see is absent, as if it did not
exist. A mission the caller may not see answers 404 with an empty body, like a missing one (TSw
MissionRoleAssignmentRequestHolderFilterBean).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from aiohttp import web

from liaison.api import files, marti
from liaison.api.auth import AuthMode
from liaison.api.context import context, principal
from liaison.api.marti import MARTI, envelope
from liaison.api.mission_passwords import hashed, password_ok, password_param
from liaison.errors import PeerError
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from liaison.query import (
    MissionChangeRecord,
    MissionContent,
    MissionError,
    MissionItem,
    MissionRecord,
    Missions,
    SubscriptionRecord,
    is_sha256,
    mission_padded_time,
    mission_resource_json,
    mission_role_json,
    mission_unpadded_time,
)
from liaison.query import mission_store_busy_retry_s as STORE_BUSY_RETRY_S

log = logging.getLogger(__name__)

BASE = f"{MARTI}/api/missions"
# Largest request body a mission route reads (a contents list of a few thousand uids).
MAX_BODY_BYTES = 256 * 1024
# Characters in a mission name, a client uid or a short parameter (TAK's MartiSafeString names).
MAX_PARAM_CHARS = 256
# Characters in a mission description.
MAX_TEXT_CHARS = 4096
# The XML declaration TAK Server puts before <events> (TSw MissionApi getLatestMissionCotEvents).
COT_PROLOG = "<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\n"
STATUS_NAMES = {
    400: "BAD_REQUEST",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    503: "SERVICE_UNAVAILABLE",
}
ERROR_CODES = {400: 2, 403: 3, 404: 1, 503: 6}


def _missions(request: web.Request) -> Missions:
    found = context(request).query.missions
    if found is None:
        raise web.HTTPNotFound()
    return found


def _refuse(request: web.Request, status: int, message: str, reason: str) -> web.Response:
    """A refused mission request: TAK's JSON error body (TSw CustomExceptionHandler), logged and
    counted; 404 has an empty body, as TAK's request filter answers it."""
    missions = context(request).query.missions
    if missions is not None:
        missions.m_refused.inc(reason)
    log.info(
        "mission request %s %s refused (%d): %s",
        request.method,
        request.path,
        status,
        message,
    )
    if status == 404:
        return web.Response(status=404)
    body = {"status": STATUS_NAMES.get(status, "ERROR"), "code": ERROR_CODES.get(status, 6)}
    body["message"] = message
    headers = {"Retry-After": str(STORE_BUSY_RETRY_S)} if status == 503 else None
    return web.json_response(body, status=status, headers=headers)


def _param(request: web.Request, *names: str, required: bool = False) -> str | None:
    """A query parameter (names tried in order: clients differ in case), checked."""
    for name in names:
        value = request.query.get(name)
        if value is not None and value.strip():
            value = value.strip()
            if len(value) > MAX_PARAM_CHARS or any(ord(c) < 0x20 for c in value):
                raise MissionError(400, f"{name} is not acceptable")
            return value
    if required:
        raise MissionError(400, f"{names[0]} is required")
    return None


def _name(request: web.Request) -> str:
    """The mission a route addresses: ``{name}``, or ``{guid}`` on the ``/guid/`` twins (a
    UUID, 400 otherwise; 404 when no mission the caller may see has it; tak-missions.md 6)."""
    guid = request.match_info.get("guid")
    if guid is not None:
        return _missions(request).name_for_guid(principal(request), _guid(guid))
    name = request.match_info["name"].strip()
    if not acceptable_name(name):
        raise MissionError(400, "the mission name is not acceptable")
    return name


def acceptable_name(name: str) -> bool:
    """Whether ``name`` (stripped) may name a mission: 1 to MAX_PARAM_CHARS characters, no
    control characters (TAK's MartiSafeString names)."""
    return bool(name) and len(name) <= MAX_PARAM_CHARS and not any(ord(c) < 0x20 for c in name)


def _guid(text: str) -> str:
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise MissionError(400, "the guid is not a UUID") from None


def api_version(request: web.Request) -> int:
    """The ``API_VERSION`` header; absent (or not a number) is 2 (TSw
    MissionServiceDefaultImpl getApiVersionNumberFromRequest; tak-missions.md 2.2)."""
    try:
        return int(request.headers.get("API_VERSION", "2").strip())
    except ValueError:
        return 2


def _description(request: web.Request) -> str | None:
    value = request.query.get("description")
    if value is not None and (
        len(value) > MAX_TEXT_CHARS or any(ord(c) < 0x20 and c not in "\n\t" for c in value)
    ):
        raise MissionError(400, "description is not acceptable")
    return value


def _token(request: web.Request) -> str | None:
    """The mission token: ``MissionAuthorization`` first, then ``Authorization``, each
    ``Bearer <token>`` (TSw MissionServiceDefaultImpl getRoleFromToken)."""
    for header in ("MissionAuthorization", "Authorization"):
        value = request.headers.get(header)
        if value is not None and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip() or None
    return None


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() == "true"


def _time_range(request: web.Request, now_ms: int) -> tuple[int | None, int | None]:
    """``secago`` (seconds before now, wins), else ``start``/``end`` (ISO 8601)."""
    secago = request.query.get("secago")
    if secago is not None:
        try:
            seconds = int(secago)
        except ValueError:
            raise MissionError(400, "secago must be a whole number of seconds") from None
        if seconds < 0:
            raise MissionError(400, "secago must not be negative")
        return now_ms - seconds * 1000, None
    bounds: list[int | None] = []
    for name in ("start", "end"):
        value = request.query.get(name)
        if value is None:
            bounds.append(None)
            continue
        try:
            bounds.append(cot_xml.parse_time(value.strip()))
        except (PeerError, ValueError):
            raise MissionError(400, f"{name} is not an ISO 8601 time") from None
    start, end = bounds
    if start is not None and end is not None and start > end:
        raise MissionError(400, "start is after end")
    return start, end


# --- JSON models (tak-missions.md 4) -------------------------------------------------------------


def item_json(item: MissionItem) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "data": item.uid,
        "timestamp": mission_padded_time(item.timestamp),
        "creatorUid": item.creator_uid,
        "keywords": list(item.keywords),
    }
    details = _details(item)
    if details is not None:
        entry["details"] = details
    return entry


def _details(item: MissionItem) -> dict[str, Any] | None:
    ev = item.event
    details: dict[str, Any] = {"type": ev.type, "location": {"lat": ev.lat, "lon": ev.lon}}
    if ev.callsign:
        details["callsign"] = ev.callsign
    return details


def mission_json(
    rec: MissionRecord,
    viewer: Principal,
    items: list[MissionItem],
    *,
    token: str | None = None,
    changes: list[MissionChangeRecord] | None = None,
    contents: list[MissionContent] | None = None,
) -> dict[str, Any]:
    """TSpl sync/model/Mission.java as JSON (null fields omitted)."""
    held = viewer.in_groups | viewer.out_groups
    body: dict[str, Any] = {
        "name": rec.name,
        "guid": rec.guid,
        "description": rec.description,
        "chatRoom": rec.chat_room,
        "baseLayer": "",
        "bbox": "",
        "path": "",
        "classification": "",
        "tool": rec.tool,
        "keywords": list(rec.keywords),
        "creatorUid": rec.creator_uid,
        "createTime": mission_padded_time(rec.create_time),
        "lastEdited": mission_padded_time(rec.last_edited),
        "groups": sorted(rec.groups & held),
        "externalData": [],
        "feeds": [],
        "mapLayers": [],
        "inviteOnly": rec.invite_only,
        "expiration": -1,
        "passwordProtected": bool(rec.password_hash),
        "defaultRole": mission_role_json(rec.default_role),
        "uids": [item_json(i) for i in items],
        "contents": [content_json(c) for c in contents or ()],
    }
    if token is not None:
        body["token"] = token
        body["ownerRole"] = mission_role_json("MISSION_OWNER")
    if changes is not None:
        body["missionChanges"] = [change_json(rec, c) for c in changes]
    return body


def content_json(c: MissionContent) -> dict[str, Any]:
    """A mission ``contents`` entry: ``{data: Resource, timestamp, creatorUid, keywords}``
    (TSpl sync/model/Mission.java, Resource.java)."""
    return {
        "data": mission_resource_json(c),
        "timestamp": mission_padded_time(c.timestamp),
        "creatorUid": c.creator_uid,
        "keywords": list(c.keywords),
    }


# Changes whose JSON rendering is kept (a recorded change never changes): every /changes
# answer is the whole list again, and rendering it was four fifths of the answer's time at
# 10,000 changes (docs/performance.md "Missions"). About 0.5 KB each. Kept per mission service
# (``Missions.rendered_changes``) by (mission name, guid, seq): a change's seq is unique on the
# server, so the lookup hashes three short values rather than the whole record.
RENDERED_CHANGE_CACHE = 20_000

# A /changes answer releases and renders its changes this many at a time, letting the event loop
# run other work (stream delivery) between parts.
CHANGES_CHUNK = 1_000


def _rendered_change(
    cache: dict[tuple[str, str, int], str], name: str, guid: str, c: MissionChangeRecord
) -> str:
    """``change_json`` as text, kept (``RENDERED_CHANGE_CACHE``). The stored ``details`` and
    ``contentResource`` are JSON texts this server wrote (``json.dumps`` in missions.py),
    spliced in as they are rather than parsed and written again (that was half the cost of
    rendering a change)."""
    key = (name, guid, c.seq)
    text = cache.get(key)
    if text is not None:
        return text
    text = json.dumps(_change_body(name, guid, c, nested=False), separators=(",", ":"))
    nested = [(k, v) for k, v in (("details", c.details), ("contentResource", c.resource)) if v]
    text = text[:-1] + "".join(f',"{k}":{v}' for k, v in nested) + "}"
    if len(cache) >= RENDERED_CHANGE_CACHE:
        del cache[next(iter(cache))]  # the oldest kept
    cache[key] = text
    return text


def change_json(rec: MissionRecord, c: MissionChangeRecord) -> dict[str, Any]:
    """TSpl sync/model/MissionChange.java as JSON."""
    return _change_body(rec.name, rec.guid, c)


def _change_body(
    name: str, guid: str, c: MissionChangeRecord, *, nested: bool = True
) -> dict[str, Any]:
    when = mission_padded_time(c.timestamp)
    body: dict[str, Any] = {
        "type": c.type,
        "missionName": name,
        "missionGuid": guid,
        "creatorUid": c.creator_uid,
        "timestamp": when,
        "serverTime": when,
        "isFederatedChange": c.federated,
    }
    if c.content_uid is not None:
        body["contentUid"] = c.content_uid
    if nested and c.details:
        body["details"] = json.loads(c.details)
    if nested and c.resource:
        body["contentResource"] = json.loads(c.resource)
    return body


def subscription_json(sub: SubscriptionRecord) -> dict[str, Any]:
    """TSw sync/model/MissionSubscription.java as JSON."""
    return {
        "token": sub.token,
        "clientUid": sub.client_uid,
        "username": sub.username,
        "createTime": mission_unpadded_time(sub.create_time),
        "role": mission_role_json(sub.role),
    }


# --- handlers ------------------------------------------------------------------------------------


async def _body(request: web.Request) -> bytes:
    data = await request.content.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise MissionError(400, f"the body is larger than {MAX_BODY_BYTES} bytes")
    return data


def handles_errors(
    handler: Any,
) -> Any:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            result: web.StreamResponse = await handler(request)
            return result
        except MissionError as exc:
            reason = exc.reason or {
                400: "bad_request",
                403: "forbidden",
                404: "not_found",
                503: "unavailable",
            }.get(exc.status, "error")
            return _refuse(request, exc.status, exc.message, reason)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


@handles_errors
async def list_missions(request: web.Request) -> web.Response:
    """``GET /Marti/api/missions?tool=``: the missions the caller may see (items omitted)."""
    viewer = principal(request)
    tool = _param(request, "tool") or "public"
    recs = _missions(request).list_for(
        viewer,
        tool=tool,
        password_protected=_flag(request, "passwordProtected", False),
        default_role=_flag(request, "defaultRole", False),
    )
    data = [mission_json(r, viewer, []) for r in recs]
    return envelope(context(request), "Mission", data)


@handles_errors
async def get_mission(request: web.Request) -> web.Response:
    """``GET /Marti/api/missions/{name}[?changes=true&logs=true&secago=&start=&end=]``."""
    viewer = principal(request)
    name = _name(request)
    missions = _missions(request)
    rec = missions.get(viewer, name)
    access = None
    if await password_ok(missions, viewer, name, password_param(request)):
        access = missions.access_token(viewer, name)  # an ACCESS token (tak-missions.md 3.3)
    elif password_param(request) is not None:
        raise MissionError(403, "the mission password is wrong")
    else:
        try:
            missions.require_read(viewer, name, _token(request))
        except MissionError as exc:
            if exc.status != 403 or api_version(request) < 3:
                raise
            # API_VERSION >= 3: no permission answers 200 with the lists emptied (TSw MissionApi
            # getMission; tak-missions.md 2.2).
            return envelope(context(request), "Mission", [mission_json(rec, viewer, [])])
    items = missions.items(viewer, name)
    changes = None
    if _flag(request, "changes", False):
        since, until = _time_range(request, context(request).clock_ms())
        changes = missions.changes(viewer, name, since=since, until=until, squashed=False)
    contents = missions.contents(viewer, name)
    body = mission_json(rec, viewer, items, changes=changes, contents=contents)
    if _flag(request, "logs", False):
        from liaison.api.mission_logs import mission_logs_json  # imports this module

        body["logs"] = mission_logs_json(request, viewer, name)
    if access is not None:
        body["token"] = access
    return envelope(context(request), "Mission", [body])


@handles_errors
async def put_mission(request: web.Request) -> web.Response:
    """``PUT /Marti/api/missions/{name}``: 201 with ``token`` and ``ownerRole`` when created,
    200 when it existed and was updated."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    name = _name(request)
    creator_uid = _param(request, "creatorUid", "CreatorUid") or viewer.name
    groups: list[str] = []
    for value in request.query.getall("group", []):
        groups.extend(g.strip() for g in value.split(",") if g.strip())
    missions = _missions(request)
    password = password_param(request)
    default_role = _param(request, "defaultRole")
    rec, token = missions.create(
        viewer,
        name,
        creator_uid=creator_uid,
        groups=groups,
        tool=_param(request, "tool") or "public",
        description=_description(request),
        chat_room=_param(request, "chatRoom"),
        token=_token(request),
        classification=_param(request, "classification"),
        password_hash=await hashed(password) if password is not None else "",
        invite_only=_flag(request, "inviteOnly", False),
        default_role=default_role or "MISSION_SUBSCRIBER",
    )
    items = missions.items(viewer, name)
    contents = missions.contents(viewer, name)
    resp = envelope(
        context(request),
        "Mission",
        [mission_json(rec, viewer, items, token=token, contents=contents)],
    )
    resp.set_status(201 if token is not None else 200)
    return resp


@handles_errors
async def delete_mission(request: web.Request) -> web.Response:
    """``DELETE /Marti/api/missions/{name}``: the owner's token is required."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    rec = _missions(request).delete(viewer, _name(request), _token(request))
    return envelope(context(request), "Mission", [mission_json(rec, viewer, [])])


@handles_errors
async def put_subscription(request: web.Request) -> web.Response:
    """``PUT /Marti/api/missions/{name}/subscription?uid=``: 201 with the subscription."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    uid = _param(request, "uid", "clientUid", required=True)
    assert uid is not None
    name = _name(request)
    missions = _missions(request)
    ok = await password_ok(missions, viewer, name, password_param(request))
    sub = missions.subscribe(viewer, name, uid, _token(request), password_ok=ok)
    body = subscription_json(sub)
    if api_version(request) >= 3:
        # API_VERSION >= 3: the mission with its full change history and logs (TSw MissionApi
        # createMissionSubscription; tak-missions.md 2.2, 5.3).
        body["mission"] = mission_json(
            missions.get(viewer, name),
            viewer,
            missions.items(viewer, name),
            changes=missions.changes(viewer, name, squashed=False),
            contents=missions.contents(viewer, name),
        )
        from liaison.api.mission_logs import mission_logs_json  # imports this module

        body["mission"]["logs"] = mission_logs_json(request, viewer, name)
    resp = envelope(context(request), "com.bbn.marti.sync.model.MissionSubscription", body)
    resp.set_status(201)
    return resp


@handles_errors
async def get_subscription(request: web.Request) -> web.Response:
    """``GET /Marti/api/missions/{name}/subscription?uid=``: the caller's subscription or 404."""
    viewer = principal(request)
    uid = _param(request, "uid", "clientUid", required=True)
    assert uid is not None
    sub = _missions(request).subscription(viewer, _name(request), uid)
    return envelope(
        context(request), "com.bbn.marti.sync.model.MissionSubscription", subscription_json(sub)
    )


@handles_errors
async def delete_subscription(request: web.Request) -> web.Response:
    """``DELETE /Marti/api/missions/{name}/subscription?uid=[&disconnectOnly=false]``."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    uid = _param(request, "uid", "clientUid", required=True)
    assert uid is not None
    _missions(request).unsubscribe(
        viewer,
        _name(request),
        uid,
        disconnect_only=_flag(request, "disconnectOnly", True),
        token=_token(request),
    )
    return web.Response(status=200)


@handles_errors
async def put_contents(request: web.Request) -> web.Response:
    """``PUT /Marti/api/missions/{name}/contents`` with ``{"uids": [...]}``."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    name = _name(request)
    try:
        body = json.loads(await _body(request) or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MissionError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise MissionError(400, "the body must be a JSON object")
    uids = body.get("uids") or []
    hashes = body.get("hashes") or []
    if not isinstance(uids, list) or not all(
        isinstance(u, str) and 0 < len(u) <= MAX_PARAM_CHARS for u in uids
    ):
        raise MissionError(400, "uids must be a list of uids")
    if not isinstance(hashes, list) or not all(
        isinstance(h, str) and is_sha256(h.lower()) for h in hashes
    ):
        raise MissionError(400, "hashes must be a list of SHA-256 hex digests")
    if not uids and not hashes:
        raise MissionError(400, "the body names no uids and no hashes")
    missions = _missions(request)
    creator_uid = _param(request, "creatorUid", "CreatorUid") or viewer.name
    missing: list[str] = []
    if hashes:
        # Each file as the caller may see it (the newest visible upload of that content); a
        # hash the caller cannot see is missing, like an unknown one (TSw addMissionContentImpl).
        store = files.file_store(request)
        found = []
        for h in dict.fromkeys(h.lower() for h in hashes):
            visible = await store.by_hash(viewer, h)
            if visible:
                found.append(visible[0])
            else:
                missing.append(h)
        missions.add_files(viewer, name, found, creator_uid=creator_uid, token=_token(request))
    if uids:
        missing += missions.add_uids(
            viewer, name, uids, creator_uid=creator_uid, token=_token(request)
        )
    if missing:
        raise MissionError(404, f"not found: {', '.join(missing[:10])}")
    rec = missions.get(viewer, name)
    items = missions.items(viewer, name)
    contents = missions.contents(viewer, name)
    return envelope(
        context(request), "Mission", [mission_json(rec, viewer, items, contents=contents)]
    )


@handles_errors
async def delete_contents(request: web.Request) -> web.Response:
    """``DELETE /Marti/api/missions/{name}/contents?uid=``."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    name = _name(request)
    missions = _missions(request)
    creator_uid = _param(request, "creatorUid", "CreatorUid") or viewer.name
    hash_param = _param(request, "hash")
    if hash_param is not None:
        if not is_sha256(hash_param.lower()):
            raise MissionError(400, "hash must be a SHA-256 hex digest")
        removed = missions.remove_file(
            viewer, name, hash_param.lower(), creator_uid=creator_uid, token=_token(request)
        )
    else:
        uid = _param(request, "uid", required=True)
        assert uid is not None
        removed = missions.remove_uid(
            viewer, name, uid, creator_uid=creator_uid, token=_token(request)
        )
    if not removed:
        raise MissionError(404, "not in this mission")
    rec = missions.get(viewer, name)
    items = missions.items(viewer, name)
    contents = missions.contents(viewer, name)
    return envelope(
        context(request), "Mission", [mission_json(rec, viewer, items, contents=contents)]
    )


@handles_errors
async def get_changes(request: web.Request) -> web.Response:
    """``GET /Marti/api/missions/{name}/changes?secago=&start=&end=&squashed=``."""
    viewer = principal(request)
    name = _name(request)
    missions = _missions(request)
    since, until = _time_range(request, context(request).clock_ms())
    missions.get(viewer, name)
    missions.require_read(viewer, name, _token(request))
    rec, found = missions.select_changes(
        viewer, name, since=since, until=until, squashed=_flag(request, "squashed", True)
    )
    # Each part is released (the router's decision, release records) and rendered (cached
    # texts), then the loop runs other work before the next part.
    parts: list[str] = []
    for start in range(0, len(found), CHANGES_CHUNK):
        if start:
            await asyncio.sleep(0)
        shown = missions.release_changes(viewer, rec, found[start : start + CHANGES_CHUNK])
        cache = missions.rendered_changes
        parts.extend(_rendered_change(cache, rec.name, rec.guid, c) for c in shown)
    # The answer is the envelope around each change's rendering, joined.
    ctx = context(request)
    head = {"version": marti.API_VERSION, "type": "MissionChange", "data": [], "messages": []}
    text = json.dumps({**head, "nodeId": marti.node_id(ctx)}, separators=(",", ":"))
    text = text.replace('"data":[]', f'"data":[{",".join(parts)}]', 1)
    return web.Response(body=text.encode(), content_type="application/json")


@handles_errors
async def get_cot(request: web.Request) -> web.Response:
    """``GET /Marti/api/missions/{name}/cot``: each visible item's latest CoT in ``<events>``."""
    viewer = principal(request)
    _missions(request).require_read(viewer, _name(request), _token(request))
    items = _missions(request).items(viewer, _name(request), path="mission-cot")
    body = "".join(i.event.xml.decode("utf-8") for i in items)
    return web.Response(text=f"{COT_PROLOG}<events>{body}</events>", content_type="application/xml")


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """The mission routes on every listener (the same authentication as the rest of Marti)."""
    r = app.router
    r.add_get(BASE, list_missions)
    r.add_get(f"{BASE}/{{name}}", get_mission)
    r.add_put(f"{BASE}/{{name}}", put_mission)
    r.add_delete(f"{BASE}/{{name}}", delete_mission)
    r.add_put(f"{BASE}/{{name}}/subscription", put_subscription)
    r.add_get(f"{BASE}/{{name}}/subscription", get_subscription)
    r.add_delete(f"{BASE}/{{name}}/subscription", delete_subscription)
    r.add_put(f"{BASE}/{{name}}/contents", put_contents)
    r.add_delete(f"{BASE}/{{name}}/contents", delete_contents)
    r.add_get(f"{BASE}/{{name}}/changes", get_changes)
    r.add_get(f"{BASE}/{{name}}/cot", get_cot)
