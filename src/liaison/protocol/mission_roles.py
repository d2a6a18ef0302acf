"""TAK mission roles, permissions, invitations and the mission notices ``t-x-m-n``, ``-d``,
``-r`` and ``-i``, as TAK Server defines them (shared/reference/tak-missions.md 3 and 7.3).

Pure: no clock, no randomness, no I/O. The mission service (``liaison.missions``) holds the state
and decides with these rules; the notices are rendered here and delivered by the router.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from liaison.model.event import Event
from liaison.protocol import cot_xml

# Roles and their permissions (TS schemamanager V33__data_sync_phase3.sql, V37, V48,
# V73__mission_layer.sql; tak-missions.md 3.1).
OWNER = "MISSION_OWNER"
SUBSCRIBER = "MISSION_SUBSCRIBER"
READONLY = "MISSION_READONLY_SUBSCRIBER"
READ, WRITE, DELETE = "MISSION_READ", "MISSION_WRITE", "MISSION_DELETE"
SET_ROLE, SET_PASSWORD = "MISSION_SET_ROLE", "MISSION_SET_PASSWORD"
PERMISSIONS: dict[str, tuple[str, ...]] = {
    OWNER: (
        READ,
        WRITE,
        DELETE,
        SET_ROLE,
        SET_PASSWORD,
        "MISSION_UPDATE_GROUPS",
        "MISSION_MANAGE_FEEDS",
        "MISSION_MANAGE_LAYERS",
    ),
    SUBSCRIBER: (READ, WRITE),
    READONLY: (READ,),
}
# The default role of a mission that names none (TSpl MissionRole.java defaultRole).
DEFAULT_ROLE = SUBSCRIBER
# Order used where "the role only rises" (re-subscribing, tak-missions.md 5.3).
RANK = {READONLY: 0, SUBSCRIBER: 1, OWNER: 2}

# Who an invitation names (TSw MissionInvitation.java ``type``; exact case, tak-missions.md 4.5).
INVITATION_TYPES = ("clientUid", "callsign", "userName", "group", "team")

# Token types (TSw MissionTokenUtils.java; tak-missions.md 3.3).
SUBSCRIPTION_TOKEN, ACCESS_TOKEN, INVITATION_TOKEN = "SUBSCRIPTION", "ACCESS", "INVITATION"

# A mission notice is stale 20 s after it is sent (TSc DistributedSubscriptionManager
# createMissionMessage; tak-missions.md 7.3).
NOTICE_STALE_MS = 20_000


def has(role: str | None, permission: str) -> bool:
    return role is not None and permission in PERMISSIONS.get(role, ())


def is_role(name: str) -> bool:
    return name in PERMISSIONS


def higher(a: str, b: str) -> str:
    """The higher of two roles (the role only rises on re-subscribe)."""
    return a if RANK.get(a, 0) > RANK.get(b, 0) else b


def resolve_role(
    token_role: str | None, *, default_role: str, password_protected: bool, invite_only: bool
) -> str | None:
    """The caller's role for one request (TSw MissionServiceDefaultImpl getRoleForRequest;
    tak-missions.md 3.2): the role a valid token of this mission gives; without one, no role on
    a password-protected or invite-only mission (everything needing a permission is then 403),
    otherwise the mission's default role."""
    if token_role is not None:
        return token_role
    if password_protected or invite_only:
        return None
    return default_role


def assignment_refusal(
    caller_role: str | None, granted: str, *, default_role: str, password_protected: bool
) -> str | None:
    """Why ``caller_role`` may not give ``granted`` (TSw MissionServiceDefaultImpl
    validateRoleAssignment; tak-missions.md 5.3), or None when it may: the caller must hold every
    permission it grants, and on a mission without a password no one is given less than the
    default role."""
    if not is_role(granted):
        return f"{granted} is not a mission role"
    mine = set(PERMISSIONS.get(caller_role or "", ()))
    if not set(PERMISSIONS[granted]) <= mine:
        return f"granting {granted} needs every permission it holds"
    if not password_protected and RANK[granted] < RANK.get(default_role, 1):
        return f"a mission without a password gives no one less than {default_role}"
    return None


# --- notices (tak-missions.md 7.3) -------------------------------------------------------------


def role_xml(role: str) -> str:
    """TSpl MissionRole.java as XML: ``<role type><permissions><permission type/>...``."""
    perms = "".join(f'<permission type="{p}"/>' for p in PERMISSIONS.get(role, ()))
    return (
        f'<role type="{cot_xml.escape_attribute(role)}"><permissions>{perms}</permissions></role>'
    )


def mission_notice(
    *,
    event_type: str,
    mission_type: str,
    name: str,
    guid: str,
    tool: str,
    author_uid: str | None,
    now_ms: int,
    uid: str,
    token: str | None = None,
    role: str | None = None,
) -> bytes:
    """One ``t-x-m-*`` notice from TAK's template (TSc DistributedSubscriptionManager
    createMissionMessage, sendMissionInvite, sendMissionRoleChange): ``how="h-g-i-g-o"``,
    ``stale`` = now + 20 s, the null-island point, and ``detail/mission`` with ``type``,
    ``name``, ``guid``, ``authorUid`` (if known), ``tool``, ``token`` (invitations), and a
    ``<role>`` child for invitations and role changes.

    ``event_type``/``mission_type``: ``t-x-m-n``/``CREATE``, ``t-x-m-d``/``DELETE``,
    ``t-x-m-i``/``INVITE``, and ``t-x-m-r``/``INVITE`` (sic, trap 8)."""
    attr = cot_xml.escape_attribute
    t = cot_xml.format_time(now_ms)
    stale = cot_xml.format_time(now_ms + NOTICE_STALE_MS)
    mission = (
        f'<mission type="{attr(mission_type)}" tool="{attr(tool)}" name="{attr(name)}"'
        f' guid="{attr(guid)}"'
    )
    if author_uid:
        mission += f' authorUid="{attr(author_uid)}"'
    if token is not None:
        mission += f' token="{attr(token)}"'
    inner = role_xml(role) if role is not None else ""
    mission += f">{inner}</mission>" if inner else "/>"
    return (
        f'<event version="2.0" uid="{attr(uid)}" type="{attr(event_type)}" how="h-g-i-g-o"'
        f' time="{t}" start="{t}" stale="{stale}">'
        '<point lat="0" lon="0" hae="0" ce="9999999" le="9999999"/>'
        f"<detail>{mission}</detail></event>"
    ).encode()


# --- mission chat rooms (tak-missions.md 7.1 rule 4) --------------------------------------------


def mission_chat_room(host: str, mission: str) -> str:
    """The chat room id of a mission as ATAK names it: ``<host>-8443-ssl-<name>`` (the port is
    fixed at 8443 in TAK's code; tak-missions.md 1, TSw CommonUtil fixupMissionChat)."""
    return f"{host}-8443-ssl-{mission}"


def chat_in_mission_room(event: Event, room: str) -> Event:
    """A GeoChat (``b-t-f...``) with its chat room ids rewritten to ``room``: ``__chat@id``,
    ``__chat/chatgrp@uid1`` and ``__chat/chatgrp@id`` (TSc StreamingEndpointRewriteFilter
    fixupStreamingMissionChat; tak-missions.md 7.1 rule 4). Any other event, or a chat without
    ``__chat``, is returned as it is. The copy's cached wire encodings are cleared."""
    if not event.type.startswith("b-t-f") or event.detail is None:
        return event
    if event.detail.find("__chat") is None:
        return event
    detail = copy.deepcopy(event.detail)
    for chat in detail.findall("__chat"):
        if "id" in chat.attrib:
            chat.set("id", room)
        for grp in chat.findall("chatgrp"):
            for attr in ("uid1", "id"):
                if attr in grp.attrib:
                    grp.set(attr, room)
    return replace(event, detail=detail, xml=None, proto=None)
