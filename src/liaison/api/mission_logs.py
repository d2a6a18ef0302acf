"""Mission log entries: ``/Marti/api/missions/logs/entries`` and ``/missions/{name}/log``.

Routes, bodies and status codes follow TAK Server (TSw sync/api/MissionApi.java postLogEntry,
updateLogEntry, getLogEntry, deleteLogEntry; shared/reference/tak-missions.md 4.5 and 5.4). Every
entry carries a label and its poster's groups; every answer comes from the router's mission side
(``query.Query.missions``), which releases each entry through the router's decision.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from liaison.api import files
from liaison.api.auth import AuthMode
from liaison.api.context import context, principal
from liaison.api.marti import envelope
from liaison.api.missions import (
    BASE,
    MAX_BODY_BYTES,
    MAX_PARAM_CHARS,
    _missions,
    _name,
    _param,
    _time_range,
    _token,
    handles_errors,
)
from liaison.errors import PeerError
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from liaison.query import LogEntryRecord, MissionError, mission_padded_time

# The envelope type of every log answer (tak-missions.md 2.3).
LOG_TYPE = "com.bbn.marti.sync.model.LogEntry"


def log_json(entry: LogEntryRecord, mission_names: list[str]) -> dict[str, Any]:
    """TSpl sync/model/LogEntry.java as JSON (null fields omitted; ``servertime`` with a
    lower-case t, all times padded)."""
    body: dict[str, Any] = {
        "id": entry.id,
        "content": entry.content,
        "creatorUid": entry.creator_uid,
        "missionNames": mission_names,
        "servertime": mission_padded_time(entry.servertime),
        "dtg": mission_padded_time(entry.dtg),
        "created": mission_padded_time(entry.created),
        "contentHashes": list(entry.content_hashes),
        "keywords": list(entry.keywords),
    }
    if entry.entry_uid is not None:
        body["entryUid"] = entry.entry_uid
    return body


def _shown(request: web.Request, viewer: Principal, entry: LogEntryRecord) -> dict[str, Any]:
    return log_json(entry, _missions(request).visible_log_missions(viewer, entry))


def _strings(body: dict[str, Any], key: str, *, limit: int = 64) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if (
        not isinstance(value, list)
        or len(value) > limit
        or not all(isinstance(v, str) and 0 < len(v) <= MAX_PARAM_CHARS for v in value)
    ):
        raise MissionError(
            400, f"{key} must be a list of at most {limit} strings of 1 to {MAX_PARAM_CHARS}"
        )
    return value


def _text(body: dict[str, Any], key: str, *, limit: int = MAX_PARAM_CHARS) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise MissionError(400, f"{key} must be a string of at most {limit} characters")
    if any(ord(c) < 0x20 and c not in "\n\t\r" for c in value):
        raise MissionError(400, f"{key} holds control characters")
    return value


async def _entry_body(request: web.Request) -> dict[str, Any]:
    data = await request.content.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise MissionError(400, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MissionError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise MissionError(400, "the body must be a LogEntry JSON object")
    return body


async def _post_or_put(request: web.Request, *, update: bool) -> web.Response:
    files.refuse_cross_site(request)
    viewer = principal(request)
    body = await _entry_body(request)
    entry_id = _text(body, "id")
    if update and not entry_id:
        raise MissionError(400, "an update needs the entry's id")
    if not update and body.get("id") is not None:
        # TSw postLogEntry: a new entry must not carry an id.
        raise MissionError(400, "a new log entry must not have an id")
    content = _text(body, "content", limit=MAX_BODY_BYTES)
    if content is None:
        raise MissionError(400, "content is required")
    dtg_text = _text(body, "dtg")
    dtg: int | None = None
    if dtg_text:
        try:
            dtg = cot_xml.parse_time(dtg_text.strip())
        except (PeerError, ValueError):
            raise MissionError(400, "dtg is not an ISO 8601 time") from None
    entry = _missions(request).post_log(
        viewer,
        entry_id=entry_id if update else None,
        content=content,
        creator_uid=_text(body, "creatorUid") or viewer.name,
        mission_names=_strings(body, "missionNames"),
        dtg=dtg,
        entry_uid=_text(body, "entryUid"),
        content_hashes=_strings(body, "contentHashes"),
        keywords=_strings(body, "keywords"),
        token=_token(request),
        classification=_param(request, "classification"),
    )
    resp = envelope(context(request), LOG_TYPE, _shown(request, viewer, entry))
    resp.set_status(201)
    return resp


@handles_errors
async def post_entry(request: web.Request) -> web.Response:
    """``POST /Marti/api/missions/logs/entries``: a new entry, 201 with it."""
    return await _post_or_put(request, update=False)


@handles_errors
async def put_entry(request: web.Request) -> web.Response:
    """``PUT /Marti/api/missions/logs/entries``: update the entry named by ``id``, 201."""
    return await _post_or_put(request, update=True)


def _entry_id(request: web.Request) -> str:
    entry_id = request.match_info["id"].strip()
    if not entry_id or len(entry_id) > MAX_PARAM_CHARS:
        raise MissionError(400, "the log entry id is not acceptable")
    return entry_id


@handles_errors
async def get_entry(request: web.Request) -> web.Response:
    """``GET /Marti/api/missions/logs/entries/{id}``."""
    viewer = principal(request)
    entry = _missions(request).log_entry(viewer, _entry_id(request))
    return envelope(context(request), LOG_TYPE, _shown(request, viewer, entry))


@handles_errors
async def delete_entry(request: web.Request) -> web.Response:
    """``DELETE /Marti/api/missions/logs/entries/{id}``: 200 with the deleted entry."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    entry = _missions(request).delete_log(viewer, _entry_id(request), _token(request))
    return envelope(context(request), LOG_TYPE, _shown(request, viewer, entry))


def mission_logs_json(request: web.Request, viewer: Principal, name: str) -> list[dict[str, Any]]:
    """The mission's entries ``viewer`` may see, within the request's ``secago`` / ``start`` /
    ``end``, as JSON: ``GET .../log`` and ``logs`` of ``GET /missions/{name}?logs=true``."""
    since, until = _time_range(request, context(request).clock_ms())
    found = _missions(request).logs(viewer, name, since=since, until=until)
    return [_shown(request, viewer, e) for e in found]


@handles_errors
async def get_mission_log(request: web.Request) -> web.Response:
    """``GET /Marti/api/missions/{name}/log?secago=&start=&end=``: the visible entries."""
    viewer = principal(request)
    entries = mission_logs_json(request, viewer, _name(request))
    return envelope(context(request), LOG_TYPE, entries)


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """The log routes on every listener (the same authentication as the rest of Marti). Added
    before ``api.missions``' routes so that ``logs/entries`` is never read as a mission name."""
    r = app.router
    r.add_post(f"{BASE}/logs/entries", post_entry)
    r.add_put(f"{BASE}/logs/entries", put_entry)
    r.add_get(f"{BASE}/logs/entries/{{id}}", get_entry)
    r.add_delete(f"{BASE}/logs/entries/{{id}}", delete_entry)
    r.add_get(f"{BASE}/{{name}}/log", get_mission_log)
