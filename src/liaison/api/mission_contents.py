"""More of the Marti mission API: keywords, the ``/guid/`` twins, ``POST /missions/{name}``,
``DELETE /missions?guid=`` and ``GET /Marti/api/cot/xml/{uid}``.

Routes, parameters and answers follow TAK Server (TSw sync/api/MissionApi.java, CotApi;
shared/reference/tak-missions.md sections 5.1, 5.4, 5.5 and 6). Files in missions (``contents``
by hash) are answered by the contents routes of ``api/missions.py``; this module adds the rest.
Every answer comes from the router's mission side (``query.Query.missions``) or the router, so
what the caller may not see is absent, as if it did not exist.
"""

from __future__ import annotations

import json

from aiohttp import web

from liaison.api import files
from liaison.api import missions as mapi
from liaison.api.auth import AuthMode
from liaison.api.context import context, principal
from liaison.api.marti import MARTI, envelope
from liaison.protocol import cot_xml
from liaison.query import MissionError, is_sha256

BASE = mapi.BASE
# Keywords on one mission or file, and characters in one (mission routes' parameter limit).
MAX_KEYWORDS = 64
MAX_KEYWORD_CHARS = mapi.MAX_PARAM_CHARS


async def _keywords_body(request: web.Request) -> list[str]:
    """The body of a keywords ``PUT``: a JSON array of strings (TSw MissionApi setKeywords)."""
    try:
        body = json.loads(await mapi._body(request) or b"[]")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MissionError(400, "the body is not JSON") from None
    if (
        not isinstance(body, list)
        or len(body) > MAX_KEYWORDS
        or not all(
            isinstance(k, str)
            and 0 < len(k.strip()) <= MAX_KEYWORD_CHARS
            and not any(ord(c) < 0x20 for c in k)
            for k in body
        )
    ):
        raise MissionError(400, f"the body must be a JSON array of at most {MAX_KEYWORDS} keywords")
    return list(dict.fromkeys(k.strip() for k in body))


def _mission_answer(request: web.Request, name: str) -> web.Response:
    viewer = principal(request)
    missions = mapi._missions(request)
    rec = missions.get(viewer, name)
    body = mapi.mission_json(
        rec, viewer, missions.items(viewer, name), contents=missions.contents(viewer, name)
    )
    return envelope(context(request), "Mission", [body])


def _creator(request: web.Request) -> str:
    return mapi._param(request, "creatorUid", "CreatorUid") or principal(request).name


@mapi.handles_errors
async def put_keywords(request: web.Request) -> web.Response:
    """``PUT /Marti/api/missions/{name}/keywords`` with a JSON array: replaces the mission's
    keywords, 200 ``Mission``, and broadcasts ``t-x-m-c-k``."""
    files.refuse_cross_site(request)
    name = mapi._name(request)
    keywords = await _keywords_body(request)
    mapi._missions(request).set_keywords(
        principal(request),
        name,
        keywords,
        creator_uid=_creator(request),
        token=mapi._token(request),
    )
    return _mission_answer(request, name)


@mapi.handles_errors
async def delete_keywords(request: web.Request) -> web.Response:
    """``DELETE /Marti/api/missions/{name}/keywords[/{keyword}]``: clears them (or one)."""
    files.refuse_cross_site(request)
    name = mapi._name(request)
    mapi._missions(request).set_keywords(
        principal(request),
        name,
        None,
        remove=request.match_info.get("keyword"),
        creator_uid=_creator(request),
        token=mapi._token(request),
    )
    return _mission_answer(request, name)


def _hash(request: web.Request) -> str:
    value = request.match_info["hash"].strip().lower()
    if not is_sha256(value):
        raise MissionError(400, "hash must be a SHA-256 hex digest")
    return value


@mapi.handles_errors
async def put_content_keywords(request: web.Request) -> web.Response:
    """``PUT /Marti/api/missions/{name}/content/{hash}/keywords``: the file's keywords in the
    mission, 200 ``Mission``, ``t-x-m-c-k-c`` to the subscribers who may see the file."""
    files.refuse_cross_site(request)
    name = mapi._name(request)
    keywords = await _keywords_body(request)
    return _content_keywords(request, name, keywords)


@mapi.handles_errors
async def delete_content_keywords(request: web.Request) -> web.Response:
    """``DELETE /Marti/api/missions/{name}/content/{hash}/keywords``: clears them."""
    files.refuse_cross_site(request)
    return _content_keywords(request, mapi._name(request), [])


@mapi.handles_errors
async def put_uid_keywords(request: web.Request) -> web.Response:
    """``PUT /Marti/api/missions/{name}/uid/{uid}/keywords``: the item's keywords in the
    mission, 200 ``Mission``, ``t-x-m-c-k-u`` to the subscribers who may see the item."""
    files.refuse_cross_site(request)
    name = mapi._name(request)
    keywords = await _keywords_body(request)
    return _uid_keywords(request, name, keywords)


@mapi.handles_errors
async def delete_uid_keywords(request: web.Request) -> web.Response:
    """``DELETE /Marti/api/missions/{name}/uid/{uid}/keywords``: clears them."""
    files.refuse_cross_site(request)
    return _uid_keywords(request, mapi._name(request), [])


def _uid_keywords(request: web.Request, name: str, keywords: list[str]) -> web.Response:
    uid = request.match_info["uid"]
    if not uid or len(uid) > mapi.MAX_PARAM_CHARS:
        raise MissionError(400, "the uid is not acceptable")
    if not mapi._missions(request).set_uid_keywords(
        principal(request),
        name,
        uid,
        keywords,
        creator_uid=_creator(request),
        token=mapi._token(request),
    ):
        raise MissionError(404, "not in this mission")
    return _mission_answer(request, name)


def _content_keywords(request: web.Request, name: str, keywords: list[str]) -> web.Response:
    if not mapi._missions(request).set_content_keywords(
        principal(request),
        name,
        _hash(request),
        keywords,
        creator_uid=_creator(request),
        token=mapi._token(request),
    ):
        raise MissionError(404, "not in this mission")
    return _mission_answer(request, name)


@mapi.handles_errors
async def delete_by_guid(request: web.Request) -> web.Response:
    """``DELETE /Marti/api/missions?guid=``: ``DELETE /missions/{name}`` by guid (TSw
    MissionApi deleteMissionByGuid)."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    guid = mapi._param(request, "guid", required=True)
    assert guid is not None
    missions = mapi._missions(request)
    name = missions.name_for_guid(viewer, mapi._guid(guid))
    rec = missions.delete(viewer, name, mapi._token(request))
    return envelope(context(request), "Mission", [mapi.mission_json(rec, viewer, [])])


async def get_cot_xml(request: web.Request) -> web.Response:
    """``GET /Marti/api/cot/xml/{uid}``: the latest CoT of one uid the caller may see, from the
    current picture (``Router.find``) or, for an item kept only in a mission the caller may
    see, from that mission (tak-missions.md 5.5); 404 otherwise, missing and forbidden alike."""
    viewer = principal(request)
    uid = request.match_info["uid"]
    if len(uid) > mapi.MAX_PARAM_CHARS:
        return web.Response(status=404)
    xml: bytes | None = None
    event = context(request).router.find(viewer, uid, path="cot-xml")
    if event is not None:
        xml = event.xml if event.xml is not None else cot_xml.render_xml(event)
    else:
        missions = context(request).query.missions
        stored = missions.item_for(viewer, uid) if missions is not None else None
        if stored is not None:
            xml = stored.xml
    if xml is None:
        return web.Response(status=404)
    return web.Response(body=xml, content_type="application/xml", charset="utf-8")


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """Keywords, the create-or-update ``POST``, delete by guid, the ``/guid/`` twins of the
    mission routes ``api/missions.py`` answers by name, and ``/cot/xml/{uid}``."""
    r = app.router
    r.add_put(f"{BASE}/{{name}}/keywords", put_keywords)
    r.add_delete(f"{BASE}/{{name}}/keywords", delete_keywords)
    r.add_delete(f"{BASE}/{{name}}/keywords/{{keyword}}", delete_keywords)
    r.add_put(f"{BASE}/{{name}}/content/{{hash}}/keywords", put_content_keywords)
    r.add_delete(f"{BASE}/{{name}}/content/{{hash}}/keywords", delete_content_keywords)
    r.add_put(f"{BASE}/{{name}}/uid/{{uid}}/keywords", put_uid_keywords)
    r.add_delete(f"{BASE}/{{name}}/uid/{{uid}}/keywords", delete_uid_keywords)
    # POST creates or updates exactly as PUT does (TSw MissionApi createMissionAllowDupe).
    r.add_post(f"{BASE}/{{name}}", mapi.put_mission)
    r.add_delete(BASE, delete_by_guid)
    g = f"{BASE}/guid/{{guid}}"
    r.add_get(g, mapi.get_mission)
    r.add_put(f"{g}/contents", mapi.put_contents)
    r.add_delete(f"{g}/contents", mapi.delete_contents)
    r.add_get(f"{g}/changes", mapi.get_changes)
    r.add_put(f"{g}/subscription", mapi.put_subscription)
    r.add_get(f"{g}/subscription", mapi.get_subscription)
    r.add_delete(f"{g}/subscription", mapi.delete_subscription)
    r.add_get(f"{g}/cot", mapi.get_cot)
    r.add_get(f"{MARTI}/api/cot/xml/{{uid}}", get_cot_xml)
