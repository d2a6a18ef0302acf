"""The mission routes for roles, subscriptions, invitations and passwords, as TAK Server answers
them (TSw sync/api/MissionApi.java; shared/reference/tak-missions.md 3, 5.1, 5.3, 5.4).

Decisions live in the router's mission side (``liaison.missions``, rules from
``protocol/mission_roles.py``); this module reads parameters and renders. A mission the caller
may not see answers 404 with an empty body, like a missing one.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from liaison.api import files
from liaison.api.auth import AuthMode
from liaison.api.context import context, principal
from liaison.api.marti import envelope
from liaison.api.mission_passwords import hashed, password_ok, password_param
from liaison.api.missions import (
    BASE,
    _body,
    _missions,
    _name,
    _param,
    _token,
    api_version,
    handles_errors,
    subscription_json,
)
from liaison.query import (
    InvitationRecord,
    MissionError,
    mission_role_json,
    mission_unpadded_time,
)

MISSION_ROLE_TYPE = "com.bbn.marti.sync.model.MissionRole"
# Entries in one ``POST .../subscription`` (each may send a t-x-m-r).
MAX_ROLES_PER_REQUEST = 1_000
# Invitations in one ``POST .../invite`` (each may send a t-x-m-i).
MAX_INVITES_PER_REQUEST = 1_000
# Every route below answers 200 with an empty body when it has nothing to return (TAK's void
# controller methods).


def invitation_json(inv: InvitationRecord, guid: str) -> dict[str, Any]:
    """TSw sync/model/MissionInvitation.java as JSON, without its token (a reader of the
    mission must not be able to take an invitee's place)."""
    return {
        "missionName": inv.mission,
        "missionGuid": guid,
        "invitee": inv.invitee,
        "type": inv.type,
        "creatorUid": inv.creator_uid,
        "createTime": mission_unpadded_time(inv.create_time),
        "role": mission_role_json(inv.role),
    }


@handles_errors
async def get_role(request: web.Request) -> web.Response:
    """``GET .../role``: the caller's role for this request (tak-missions.md 3.2); 403 when it
    has none (a password-protected or invite-only mission without a token)."""
    viewer = principal(request)
    role = _missions(request).role_of(viewer, _name(request), _token(request))
    if role is None:
        raise MissionError(403, "no role on this mission without a token")
    return envelope(context(request), MISSION_ROLE_TYPE, mission_role_json(role))


@handles_errors
async def put_role(request: web.Request) -> web.Response:
    """``PUT .../role?clientUid=|username=&role=`` (MISSION_SET_ROLE)."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    role = _param(request, "role", required=True)
    client_uid = _param(request, "clientUid", "uid")
    username = _param(request, "username")
    if role is None or (client_uid is None and username is None):
        raise MissionError(400, "clientUid or username is required")
    _missions(request).set_role(
        viewer,
        _name(request),
        _token(request),
        role=role,
        client_uid=client_uid,
        username=username,
    )
    return web.Response(status=200)


@handles_errors
async def post_subscriptions(request: web.Request) -> web.Response:
    """``POST .../subscription`` with a JSON array ``[{"clientUid": "...", "role": {"type":
    "..."}}]`` (``role`` may also be the role's name): set several roles at once."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    try:
        body = json.loads(await _body(request) or b"[]")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MissionError(400, "the body is not JSON") from None
    if not isinstance(body, list) or len(body) > MAX_ROLES_PER_REQUEST:
        raise MissionError(400, f"the body must be a list of at most {MAX_ROLES_PER_REQUEST}")
    roles: list[tuple[str, str]] = []
    for entry in body:
        uid = entry.get("clientUid") if isinstance(entry, dict) else None
        role = entry.get("role") if isinstance(entry, dict) else None
        if isinstance(role, dict):
            role = role.get("type")
        if not isinstance(uid, str) or not isinstance(role, str) or not 0 < len(uid) <= 256:
            raise MissionError(400, "each entry needs a clientUid and a role")
        roles.append((uid, role))
    _missions(request).set_roles(viewer, _name(request), _token(request), roles)
    return web.Response(status=200)


@handles_errors
async def get_subscriptions(request: web.Request) -> web.Response:
    """``GET .../subscriptions``: the client uids of the stored subscriptions the caller may
    know of."""
    viewer = principal(request)
    subs = _missions(request).subscriptions(viewer, _name(request), _token(request))
    return envelope(context(request), "MissionSubscription", [s.client_uid for s in subs])


@handles_errors
async def all_subscriptions(request: web.Request) -> web.Response:
    """``GET /missions/all/subscriptions``: ``{mission name: client uid}`` for each stored
    subscription the caller may know of (TSw MissionApi getAllMissionSubscriptions answers a
    list of Java map entries, which Jackson writes as one-member objects)."""
    found = _missions(request).all_subscriptions(principal(request))
    return envelope(
        context(request), "MissionSubscription", [{name: s.client_uid} for name, s in found]
    )


@handles_errors
async def get_subscription_roles(request: web.Request) -> web.Response:
    """``GET .../subscriptions/roles``: those subscriptions with their roles, tokens removed."""
    viewer = principal(request)
    subs = _missions(request).subscriptions(viewer, _name(request), _token(request))
    body = []
    for s in subs:
        one = subscription_json(s)
        del one["token"]
        body.append(one)
    return envelope(context(request), "MissionSubscription", body)


@handles_errors
async def put_password(request: web.Request) -> web.Response:
    """``PUT .../password?password=`` (MISSION_SET_PASSWORD): stored as a scrypt hash."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    password = password_param(request)
    if password is None:
        raise MissionError(400, "password is required")
    missions = _missions(request)
    name = _name(request)
    missions.role_of(viewer, name, None)  # 404 before the KDF's cost for a hidden mission
    missions.set_password(viewer, name, _token(request), await hashed(password))
    return web.Response(status=200)


@handles_errors
async def delete_password(request: web.Request) -> web.Response:
    """``DELETE .../password`` (MISSION_SET_PASSWORD): the mission is public again."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    _missions(request).set_password(viewer, _name(request), _token(request), "")
    return web.Response(status=200)


@handles_errors
async def get_token(request: web.Request) -> web.Response:
    """``GET .../token?password=``: **201** with an ACCESS token (the default role); 403 for a
    wrong or missing password or a mission without one."""
    viewer = principal(request)
    missions = _missions(request)
    name = _name(request)
    if not await password_ok(missions, viewer, name, password_param(request)):
        missions.m_refused.inc("password")
        raise MissionError(403, "the mission password is wrong or missing")
    resp = envelope(context(request), "java.lang.String", missions.access_token(viewer, name))
    resp.set_status(201)
    return resp


@handles_errors
async def all_invitations(request: web.Request) -> web.Response:
    """``GET /missions/all/invitations?clientUid=``: names of the missions the caller (that
    device uid, its user, callsign or groups) is invited to."""
    viewer = principal(request)
    client_uid = _param(request, "clientUid", "uid")
    names = _missions(request).invited_missions(viewer, client_uid)
    return envelope(context(request), "MissionInvitation", names)


@handles_errors
async def my_invitations(request: web.Request) -> web.Response:
    """``GET /missions/invitations?clientUid=`` (required): the invitations addressed to the
    caller, each with its INVITATION token (tak-missions.md 5.4)."""
    viewer = principal(request)
    client_uid = _param(request, "clientUid", "uid")
    if not client_uid:
        raise MissionError(400, "clientUid is required")
    found = _missions(request).invitations_for(viewer, client_uid)
    body = [{**invitation_json(inv, rec.guid), "token": inv.token} for rec, inv in found]
    return envelope(context(request), "MissionInvitation", body)


@handles_errors
async def get_invitations(request: web.Request) -> web.Response:
    """``GET .../invitations`` (MISSION_READ): the mission's standing invitations."""
    viewer = principal(request)
    missions = _missions(request)
    name = _name(request)
    invs = missions.invitations(viewer, name, _token(request))
    guid = missions.get(viewer, name).guid
    return envelope(context(request), "MissionInvitation", [invitation_json(i, guid) for i in invs])


def _checked_invitee(text: str) -> str:
    invitee = text.strip()
    if not invitee or len(invitee) > 256 or any(ord(c) < 0x20 for c in invitee):
        raise MissionError(400, "the invitee is not acceptable")
    return invitee


def _invitee(request: web.Request) -> tuple[str, str]:
    return request.match_info["type"], _checked_invitee(request.match_info["invitee"])


@handles_errors
async def put_invite(request: web.Request) -> web.Response:
    """``PUT .../invite/{type}/{invitee}?creatorUid=&role=``: a standing invitation and a
    ``t-x-m-i`` to the invitee's connected devices."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    type_, invitee = _invitee(request)
    creator_uid = _param(request, "creatorUid", "CreatorUid", required=True)
    assert creator_uid is not None
    _missions(request).invite(
        viewer,
        _name(request),
        _token(request),
        type_=type_,
        invitee=invitee,
        creator_uid=creator_uid,
        role=_param(request, "role"),
    )
    return web.Response(status=200)


@handles_errors
async def post_invites(request: web.Request) -> web.Response:
    """``POST .../invite?creatorUid=`` (TSw MissionApi sendMissionInvites): several invitations
    at once. With ``API_VERSION`` above 2 the body is a JSON array of MissionInvitation
    (``type``, ``invitee``, optional ``role`` as an object or a name); otherwise each repeated
    ``contacts`` parameter is a client uid. All are checked before any is made."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    creator_uid = _param(request, "creatorUid", "CreatorUid", required=True)
    assert creator_uid is not None
    wanted: list[tuple[str, str, str | None]] = []
    if api_version(request) > 2:
        try:
            body = json.loads(await _body(request) or b"[]")
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise MissionError(400, "the body is not JSON") from None
        if not isinstance(body, list):
            raise MissionError(400, "the body must be a list of invitations")
        for entry in body:
            if not isinstance(entry, dict):
                raise MissionError(400, "each invitation must be an object")
            role = entry.get("role")
            if isinstance(role, dict):
                role = role.get("type")
            type_, invitee = entry.get("type"), entry.get("invitee")
            if not isinstance(type_, str) or not isinstance(invitee, str):
                raise MissionError(400, "each invitation needs a type and an invitee")
            if role is not None and not isinstance(role, str):
                raise MissionError(400, "role must be a role")
            wanted.append((type_, _checked_invitee(invitee), role))
    else:
        for uid in request.query.getall("contacts", []):
            wanted.append(("clientUid", _checked_invitee(uid), None))
    if len(wanted) > MAX_INVITES_PER_REQUEST:
        raise MissionError(400, f"at most {MAX_INVITES_PER_REQUEST} invitations at once")
    _missions(request).invite_many(
        viewer, _name(request), _token(request), wanted, creator_uid=creator_uid
    )
    return web.Response(status=200)


@handles_errors
async def delete_invite(request: web.Request) -> web.Response:
    """``DELETE .../invite/{type}/{invitee}``: the invitation is withdrawn (200 also when there
    was none)."""
    files.refuse_cross_site(request)
    viewer = principal(request)
    type_, invitee = _invitee(request)
    _missions(request).uninvite(
        viewer, _name(request), _token(request), type_=type_, invitee=invitee
    )
    return web.Response(status=200)


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """Registered after ``api.missions`` (routes.py); ``all/invitations`` before the
    ``{name}/invitations`` it would otherwise match."""
    r = app.router
    r.add_get(f"{BASE}/all/invitations", all_invitations)
    r.add_get(f"{BASE}/all/subscriptions", all_subscriptions)
    # A fixed path: aiohttp matches it before missions.py's {name} (a mission may not be
    # reached by the name "invitations" with GET, as on TAK).
    r.add_get(f"{BASE}/invitations", my_invitations)
    r.add_get(f"{BASE}/{{name}}/role", get_role)
    r.add_put(f"{BASE}/{{name}}/role", put_role)
    r.add_post(f"{BASE}/{{name}}/subscription", post_subscriptions)
    r.add_get(f"{BASE}/{{name}}/subscriptions", get_subscriptions)
    r.add_get(f"{BASE}/{{name}}/subscriptions/roles", get_subscription_roles)
    r.add_put(f"{BASE}/{{name}}/password", put_password)
    r.add_delete(f"{BASE}/{{name}}/password", delete_password)
    r.add_get(f"{BASE}/{{name}}/token", get_token)
    r.add_get(f"{BASE}/{{name}}/invitations", get_invitations)
    r.add_put(f"{BASE}/{{name}}/invite/{{type}}/{{invitee}}", put_invite)
    r.add_delete(f"{BASE}/{{name}}/invite/{{type}}/{{invitee}}", delete_invite)
    r.add_post(f"{BASE}/{{name}}/invite", post_invites)
    # The /guid/ twins (tak-missions.md 6; ``_name`` resolves ``{guid}``).
    g = f"{BASE}/guid/{{guid}}"
    r.add_get(f"{g}/role", get_role)
    r.add_put(f"{g}/role", put_role)
    r.add_post(f"{g}/subscription", post_subscriptions)
    r.add_get(f"{g}/subscriptions", get_subscriptions)
    r.add_get(f"{g}/subscriptions/roles", get_subscription_roles)
    r.add_put(f"{g}/password", put_password)
    r.add_delete(f"{g}/password", delete_password)
    r.add_get(f"{g}/invitations", get_invitations)
    r.add_put(f"{g}/invite/{{type}}/{{invitee}}", put_invite)
    r.add_delete(f"{g}/invite/{{type}}/{{invitee}}", delete_invite)
    r.add_post(f"{g}/invite", post_invites)
