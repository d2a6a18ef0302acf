"""The Marti API that ATAK, WinTAK and iTAK call, under ``/Marti`` on every HTTP listener.

Paths, parameters, multipart part names and response shapes follow TAK Server as the clients use
it (shared/reference/tak-protocol.md section 4, with the servlet each comes from); JSON answers
that TAK Server wraps carry its envelope ``{"version": "3", "type", "data", "messages",
"nodeId"}`` (TSw cot/search/model/ApiResponse.java; Constants.API_VERSION = "3").

Everything about items and files passes the router: contacts and client lists come from
``Router.picture`` for the caller, files from ``Router.permits`` and ``Router.release_item``
through the listener's :class:`liaison.query.Files` handle. A data package the caller may not
see answers exactly like one that does not exist: same status, same body, for query, download,
metadata and search alike. An upload never tells the uploader whether someone else already has
the same content (each upload is its own record over one stored copy).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from typing import Any

from aiohttp import web

from liaison import __version__
from liaison.api import files
from liaison.api.auth import AuthMode
from liaison.api.context import ApiContext, context, principal
from liaison.api.geojson import iso, role_of
from liaison.api.rest import visible_clients
from liaison.errors import StorageError
from liaison.model.principal import Principal
from liaison.query import (
    MAX_FILE_BYTES,
    MAX_TEXT_CHARS,
    FileQuery,
    FileRecord,
    UnsafeFile,
    is_sha256,
)

log = logging.getLogger(__name__)

MARTI = "/Marti"
# TAK Server's API version in every envelope (TS takserver-plugins tak/server/Constants.java).
API_VERSION = "3"
# Most results one sync/search returns. ATAK lists them in one screen; TAK Server has no cap.
MAX_SEARCH_RESULTS = 1000
# A tool name: "public", "private" or a plugin's name (TSw sync/MetadataApi.java).
MAX_TOOL_CHARS = 64


def node_id(ctx: ApiContext) -> str:
    """A stable id for this server in envelopes (TAK Server's nodeId is a random hex id per
    installation); derived from the public host so it survives restarts."""
    return hashlib.sha256(f"liaison:{ctx.config.public_host}".encode()).hexdigest()[:32]


def envelope(ctx: ApiContext, type_: str, data: object) -> web.Response:
    """TAK Server's API response envelope (TSw cot/search/model/ApiResponse.java)."""
    body = {
        "version": API_VERSION,
        "type": type_,
        "data": data,
        "messages": [],
        "nodeId": node_id(ctx),
    }
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(), content_type="application/json"
    )


def _text(request: web.Request, *names: str) -> str | None:
    """The first query parameter present among ``names`` (clients differ in capitalisation:
    ATAK sends creatorUid, iTAK CreatorUid)."""
    for name in names:
        value = request.query.get(name)
        if value:
            if len(value) > MAX_TEXT_CHARS or any(ord(c) < 0x20 for c in value):
                raise web.HTTPBadRequest(text=f"{name} is not acceptable\n")
            return value
    return None


# --- version and server config -----------------------------------------------------------------


async def get_version(request: web.Request) -> web.Response:
    """``GET /Marti/api/version``: plain text (TSw util/VersionApi.java)."""
    return web.Response(text=f"Liaison {__version__}")


async def get_version_config(request: web.Request) -> web.Response:
    """``GET /Marti/api/version/config``: the capability probe clients make first."""
    ctx = context(request)
    return envelope(
        ctx,
        "ServerConfig",
        {"version": __version__, "api": API_VERSION, "hostname": ctx.config.public_host},
    )


async def get_node_id(request: web.Request) -> web.Response:
    return web.Response(text=node_id(context(request)))


# --- contacts and clients ----------------------------------------------------------------------


async def get_client_endpoints(request: web.Request) -> web.Response:
    """``GET /Marti/api/clientEndPoints``: clients whose contact the caller may see
    (TSw network/ContactManagerApi.java; TS ClientEndpoint.java field names).

    ``showCurrentlyConnectedClients=true`` keeps only connected ones; ``secAgo`` keeps those heard
    from within that many seconds.
    """
    ctx = context(request)
    viewer = principal(request)
    only_connected = request.query.get("showCurrentlyConnectedClients", "").lower() == "true"
    sec_ago = request.query.get("secAgo", "")
    since = None
    if sec_ago.isdigit() and int(sec_ago) > 0:
        since = ctx.clock_ms() - int(sec_ago) * 1000
    data = []
    for c in visible_clients(ctx, viewer, include_disconnected=not only_connected, path="marti"):
        ev = c.event
        if since is not None and ev.time < since:
            continue
        data.append(
            {
                "callsign": ev.callsign,
                "uid": ev.uid,
                "team": ev.team,
                "role": role_of(ev),
                "lastEventTime": iso(ev.time),
                "lastStatus": "Connected" if c.connected else "Disconnected",
            }
        )
    return envelope(ctx, "com.bbn.marti.remote.ClientEndpoint", data)


async def get_contacts_all(request: web.Request) -> web.Response:
    """``GET /Marti/api/contacts/all``: a bare JSON array (TSw sync/api/ContactsApi.java).

    ``filterGroups`` is left empty: it would name groups of other organisations.
    """
    ctx = context(request)
    viewer = principal(request)
    data = []
    for ev in ctx.router.picture(viewer, path="marti"):
        if not ev.is_contact:
            continue
        takv = ev.detail.find("takv") if ev.detail is not None else None
        data.append(
            {
                "filterGroups": None,
                "notes": "",
                "callsign": ev.callsign,
                "team": ev.team,
                "role": role_of(ev),
                "takv": " ".join(v for v in takv.attrib.values()) if takv is not None else "",
                "uid": ev.uid,
            }
        )
    return web.json_response(data)


# --- groups ---------------------------------------------------------------------------------------


def _groups(p: Principal) -> list[dict[str, Any]]:
    """The caller's groups as TAK Group objects (TS takserver-common remote/groups/Group.java):
    one per group and direction, all active (channel selection is not offered)."""
    out: list[dict[str, Any]] = []
    names = sorted(p.in_groups | p.out_groups)
    for bitpos, name in enumerate(names):
        for direction, members in (("IN", p.in_groups), ("OUT", p.out_groups)):
            if name in members:
                out.append(
                    {
                        "name": name,
                        "direction": direction,
                        "created": "1970-01-01",
                        "type": "SYSTEM",
                        "bitpos": bitpos,
                        "active": True,
                        "description": "",
                    }
                )
    return out


async def get_groups_all(request: web.Request) -> web.Response:
    """``GET /Marti/api/groups/all``: the caller's own groups, nobody else's."""
    return envelope(
        context(request), "com.bbn.marti.remote.groups.Group", _groups(principal(request))
    )


async def get_groups_active(request: web.Request) -> web.Response:
    """``GET /Marti/api/groups/active``: every group is active (no channel selection)."""
    return await get_groups_all(request)


async def get_group_cache_enabled(request: web.Request) -> web.Response:
    """``GET /Marti/api/groups/groupCacheEnabled``: false, so clients do not offer the channel
    picker (TAK Server answers ``auth@x509useGroupCache``; FTS answers false too). Group
    membership comes from the server's groups and users files only."""
    return envelope(context(request), "java.lang.Boolean", False)


# --- data packages ---------------------------------------------------------------------------


async def _store_upload(
    request: web.Request,
    *,
    name: str,
    mime: str | None,
    data: bytes,
    keywords: tuple[str, ...],
    tool: str,
    expected_hash: str | None,
) -> FileRecord:
    ctx = context(request)
    uploader = principal(request)
    # An upload is an aggregate: it carries the dominant label of the CoT events inside it, or the
    # uploader's default label; the same ingest rules as for events apply (labels.md 7).
    label, refused = ctx.router.label_upload(uploader, files.cot_parts(data))
    if refused:
        ctx.metrics.counter(
            "liaison_files_refused_total", "Uploads refused before storing", "reason"
        ).inc(refused[0])
        log.warning("upload from %s refused by the label rules: %s", uploader.name, refused)
        raise _refusal(403, refused[0])
    try:
        rec = await files.file_store(request).put(
            uploader,
            data,
            uid=str(uuid.uuid4()),
            name=name,
            mime=mime or "application/octet-stream",
            submitted=ctx.clock_ms(),
            keywords=keywords,
            tool=tool,
            creator_uid=_text(request, "creatorUid", "CreatorUid", "creatoruid"),
            expected_hash=expected_hash,
            label=label,
        )
    except UnsafeFile as exc:
        ctx.metrics.counter(
            "liaison_files_refused_total", "Uploads refused before storing", "reason"
        ).inc(exc.reason)
        log.warning("upload from %s refused (%s): %s", uploader.name, exc.reason, exc)
        status = 413 if exc.reason == "too_large" else 400
        raise _refusal(status, exc.reason) from None
    except StorageError as exc:
        log.error("upload from %s not stored: %s", uploader.name, exc)
        raise web.HTTPInternalServerError(text="could not store the file\n") from None
    ctx.metrics.counter("liaison_files_stored_total", "Uploads stored").inc()
    log.info("stored %s (%d bytes) from %s", rec.hash, rec.size, uploader.name)
    return rec


def _refusal(status: int, reason: str) -> web.HTTPException:
    text = f"upload refused: {reason}\n"
    if status == 413:
        return web.HTTPRequestEntityTooLarge(max_size=MAX_FILE_BYTES, actual_size=0, text=text)
    if status == 403:
        return web.HTTPForbidden(text=text)
    return web.HTTPBadRequest(text=text)


async def post_mission_upload(request: web.Request) -> web.Response:
    """``POST /Marti/sync/missionupload?hash=&filename=&creatorUid=``, multipart with the file in
    part ``assetfile`` (ATAK; browsers use ``resource``) (TSw sync/MissionPackageUploadServlet).

    Answers 200 ``text/plain`` with the content URL on the listener the client used, which ATAK
    puts in the ``senderUrl`` of the fileshare CoT it then sends. An upload of content the caller
    can already see returns that URL again without a new record (idempotent retries).
    """
    files.refuse_cross_site(request)
    hash_param = _text(request, "hash")
    if hash_param is not None and not is_sha256(hash_param.lower()):
        raise web.HTTPBadRequest(text="hash must be a SHA-256 hex digest\n")
    try:
        upload = await files.read_upload(request, part_names=("assetfile", "resource"))
    except files.UploadTooLarge:
        raise _refusal(413, "too_large") from None
    if upload is None:
        raise web.HTTPBadRequest(text="no assetfile part\n")
    if hash_param is not None:
        existing = await files.visible_by_hash(request, hash_param)
        if existing is not None and hashlib.sha256(upload.data).hexdigest() == existing.hash:
            return web.Response(text=files.content_url(request, existing.hash))
    name = _text(request, "filename") or upload.filename or "datapackage"
    rec = await _store_upload(
        request,
        name=name,
        mime=upload.content_type or "application/x-zip-compressed",
        data=upload.data,
        keywords=("missionpackage",),
        tool=_text(request, "tool") or "public",
        expected_hash=hash_param,
    )
    return web.Response(text=files.content_url(request, rec.hash))


async def post_sync_upload(request: web.Request) -> web.Response:
    """``POST /Marti/sync/upload?name=&keywords=&CreatorUid=``: Enterprise Sync upload, which iTAK
    uses for data packages (OTS issue #157, taky issue #81; TS ApiConfiguration). The body is the
    file itself (TAKCL's EnterpriseSyncInterface sends it raw with its Content-Type), or a
    multipart form. Answers the record's metadata as JSON."""
    files.refuse_cross_site(request)
    name = _text(request, "name", "filename")
    if name is None:
        raise web.HTTPBadRequest(text="name is required\n")
    try:
        upload = await files.read_upload(
            request, part_names=("assetfile", "resource", "file"), any_file_part=True
        )
    except files.UploadTooLarge:
        raise _refusal(413, "too_large") from None
    if upload is None or not upload.data:
        raise web.HTTPBadRequest(text="no file in the request\n")
    keywords = tuple(
        k.strip() for k in request.query.getall("keywords", []) for k in k.split(",") if k.strip()
    )
    rec = await _store_upload(
        request,
        name=name,
        mime=upload.content_type,
        data=upload.data,
        keywords=keywords or ("missionpackage",),
        tool=_text(request, "tool") or "public",
        expected_hash=None,
    )
    return web.json_response(files.metadata_json(rec))


async def get_mission_query(request: web.Request) -> web.Response:
    """``GET /Marti/sync/missionquery?hash=``: the content URL, or 404 for missing and forbidden
    alike (TSw sync/MissionPackageQueryServlet)."""
    hash_param = (request.query.get("hash") or "").lower()
    if not is_sha256(hash_param):
        return files.not_found()
    rec = await files.visible_by_hash(request, hash_param)
    if rec is None:
        return files.not_found()
    return web.Response(text=files.content_url(request, rec.hash))


async def get_content(request: web.Request) -> web.StreamResponse:
    """``GET /Marti/sync/content?hash=`` (or ``uid=``): the file (TSw sync/ContentServlet)."""
    store = files.file_store(request)
    rec: FileRecord | None = None
    hash_param = (request.query.get("hash") or "").lower()
    uid = request.query.get("uid")
    if is_sha256(hash_param):
        rec = await files.visible_by_hash(request, hash_param)
    elif uid and len(uid) <= MAX_TEXT_CHARS:
        rec = await store.by_uid(principal(request), uid)
    if rec is None:
        return files.not_found()
    path = store.content_path(rec)
    size = await store.content_size(rec) if path is None else None
    if (path is None and size is None) or (path is not None and not path.is_file()):
        log.error("content of %s is missing (%s)", rec.hash, path or "database")
        return files.not_found()
    # The release decision and its audit record, before the first byte (docs/labels.md 5). A HEAD
    # sends no content (the decision above already hid what the caller may not see): no record.
    if request.method != "HEAD" and not files.release(request, rec):
        ctx = context(request)
        ctx.metrics.counter(
            "liaison_downloads_refused_total", "File downloads not released", "reason"
        ).inc("audit_unavailable")
        log.warning(
            "download of %s for %s not released: audit log", rec.hash, principal(request).name
        )
        raise web.HTTPServiceUnavailable(text="the audit log cannot be written; try again later\n")
    headers = {
        "Content-Type": rec.mime,
        "Content-Disposition": files.content_disposition(rec.name, fallback=rec.hash),
        "ETag": f'"{rec.hash}"',
        "X-Content-Type-Options": "nosniff",
    }
    if path is not None:
        return web.FileResponse(path, headers=headers)
    # Contents in PostgreSQL (docs/storage.md "Missions and files in PostgreSQL"): sent one
    # chunk (postgresql_missions.CHUNK_BYTES) at a time, so memory stays bounded; no ranges.
    response = web.StreamResponse(headers=headers)
    response.content_length = size
    await response.prepare(request)
    if request.method != "HEAD":
        async for chunk in store.content_chunks(rec):
            await response.write(chunk)
    await response.write_eof()
    return response


async def get_search(request: web.Request) -> web.Response:
    """``GET /Marti/sync/search``: ``{"resultCount": N, "results": [metadata]}`` of the files
    the caller may see (TSw sync/SearchServlet.java; filters ``keywords``, ``tool``, ``name``,
    ``uid``). Filters apply before the visibility decision and the count after it, so neither
    the results nor the count reveal other organisations' files."""
    query = FileQuery(
        keyword=_text(request, "keywords", "keyword"),
        tool=_text(request, "tool"),
        name_contains=_text(request, "name", "filename"),
        creator_uid=_text(request, "creatorUid", "CreatorUid"),
    )
    records = await files.file_store(request).search(principal(request), query)
    uid = request.query.get("uid")
    if uid:
        records = [r for r in records if r.uid == uid]
    results = [files.metadata_json(r) for r in records[:MAX_SEARCH_RESULTS]]
    return web.json_response({"resultCount": len(results), "results": results})


async def _own_visible(request: web.Request, hash_param: str) -> list[FileRecord] | None:
    """Records of this content the caller may see (None: answer 404)."""
    if not is_sha256(hash_param):
        return None
    found = await files.file_store(request).by_hash(principal(request), hash_param)
    return found or None


async def get_metadata_tool(request: web.Request) -> web.Response:
    """``GET /Marti/api/sync/metadata/{hash}/tool``: the tool of the newest visible record."""
    found = await _own_visible(request, request.match_info["hash"].lower())
    if found is None:
        return files.not_found()
    return web.Response(text=found[0].tool)


async def put_metadata_tool(request: web.Request) -> web.Response:
    """``PUT /Marti/api/sync/metadata/{hash}/tool`` with body ``public`` or ``private`` (or a
    plugin's tool name) (TSw sync/MetadataApi.java). Changes the caller's own uploads of this
    content; someone else's visible upload is 403, an invisible or missing one 404."""
    files.refuse_cross_site(request)
    hash_param = request.match_info["hash"].lower()
    found = await _own_visible(request, hash_param)
    if found is None:
        return files.not_found()
    tool = (await request.content.read(MAX_TOOL_CHARS + 1)).decode("utf-8", "replace").strip()
    if not tool or len(tool) > MAX_TOOL_CHARS or not all(c.isalnum() or c in "-_." for c in tool):
        raise web.HTTPBadRequest(text="tool must be a short name such as public or private\n")
    me = principal(request).name
    mine = [r for r in found if r.uploader == me]
    if not mine:
        raise web.HTTPForbidden(text="only the uploader may change this\n")
    store = files.file_store(request)
    for rec in mine:
        await store.set_tool(rec.uid, tool)
    return web.Response(text=files.content_url(request, hash_param))


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """The Marti API on one listener (every listener: 8443, 8446 and 8080 when enabled)."""
    files.install(app)
    r = app.router
    r.add_get(f"{MARTI}/api/version", get_version)
    r.add_get(f"{MARTI}/api/version/config", get_version_config)
    r.add_get(f"{MARTI}/api/node/id", get_node_id)
    r.add_get(f"{MARTI}/api/clientEndPoints", get_client_endpoints)
    r.add_get(f"{MARTI}/api/contacts/all", get_contacts_all)
    r.add_get(f"{MARTI}/api/groups/all", get_groups_all)
    r.add_get(f"{MARTI}/api/groups/active", get_groups_active)
    r.add_get(f"{MARTI}/api/groups/groupCacheEnabled", get_group_cache_enabled)
    r.add_post(f"{MARTI}/sync/missionupload", post_mission_upload)
    r.add_post(f"{MARTI}/sync/upload", post_sync_upload)
    r.add_get(f"{MARTI}/sync/missionquery", get_mission_query)
    r.add_get(f"{MARTI}/sync/content", get_content)
    r.add_get(f"{MARTI}/sync/search", get_search)
    r.add_get(f"{MARTI}/api/sync/metadata/{{hash}}/tool", get_metadata_tool)
    r.add_put(f"{MARTI}/api/sync/metadata/{{hash}}/tool", put_metadata_tool)
