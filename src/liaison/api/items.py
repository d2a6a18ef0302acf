"""``POST /api/v1/items`` and ``DELETE /api/v1/items/{uid}``: the web map draws into the picture.

A signed-in user sends a marker, route, polygon, circle or range-and-bearing line (JSON, checked
by ``protocol.drawings``); the server writes the CoT an ATAK client would write for it, with the
label the user chose, and publishes it through the router as that user (``Router.publish_checked``):
the same ingest rules, label decision, audit records, history and delivery as a TAK client's
event. Posting again with the uid of an item the user drew replaces it (a new version); a delete
is a ``t-x-d-d`` through the same path. Only the user who drew an item may replace or delete it
here (``detail/creator@uid`` is the user's web uid), and the ingest rules still apply.
"""

from __future__ import annotations

import json
import uuid

from aiohttp import web

from liaison.api.auth import AuthMode
from liaison.api.context import context, principal
from liaison.api.files import refuse_cross_site
from liaison.api.geojson import event_feature
from liaison.api.rest import (
    API,
    WebSource,
    bad_request,
    chosen_label,
    item_not_found,
    json_response,
    read_json,
    web_uid,
)
from liaison.protocol import cot_xml, drawings
from liaison.protocol.drawings import Creator, DrawingError

# Longest label banner accepted (as for chats).
MAX_LABEL_CHARS = 256


def _refused(reasons: tuple[str, ...] | list[str]) -> web.HTTPForbidden:
    return web.HTTPForbidden(
        text=json.dumps({"error": "refused", "reasons": list(reasons)}),
        content_type="application/json",
    )


async def post_item(request: web.Request) -> web.Response:
    refuse_cross_site(request)
    ctx = context(request)
    user = principal(request)
    doc = await read_json(request)
    try:
        drawing = drawings.parse_drawing(doc)
        uid = drawings.check_uid(doc["uid"]) if doc.get("uid") is not None else None
        banner = drawings.text_field(doc, "label", MAX_LABEL_CHARS)
    except DrawingError as exc:
        raise bad_request(str(exc)) from None
    creator = Creator(web_uid(user), user.name)
    replaces = False
    if uid is None:
        uid = str(uuid.uuid4())
    else:
        existing = ctx.router.entry_for(user, uid)
        if existing is not None:
            if drawings.creator_uid(existing.event.detail) != creator.uid:
                raise _refused(["not_creator"])
            replaces = True
    now = ctx.clock_ms()
    seclabel = chosen_label(ctx.router.policy, banner, user, now)
    xml = drawings.drawing_xml(drawing, uid=uid, creator=creator, now_ms=now, seclabel=seclabel)
    event = cot_xml.parse_event(xml)
    published = ctx.router.publish_checked(event, WebSource(user))
    if published.refused:
        raise _refused(published.refused)
    # The accepted event carries the label the server applied (the listener default included).
    sent = published.event or event
    return json_response(
        {"item": event_feature(sent, ctx.router.banner(sent)), "delivered": published.delivered},
        status=200 if replaces else 201,
    )


async def delete_item(request: web.Request) -> web.Response:
    refuse_cross_site(request)
    ctx = context(request)
    user = principal(request)
    uid = request.match_info["uid"]
    existing = ctx.router.entry_for(user, uid)
    if existing is None:
        raise item_not_found()
    if drawings.creator_uid(existing.event.detail) != web_uid(user):
        raise _refused(["not_creator"])
    xml = drawings.delete_xml(
        uid, existing.event.type, uid=str(uuid.uuid4()), now_ms=ctx.clock_ms()
    )
    published = ctx.router.publish_checked(cot_xml.parse_event(xml), WebSource(user))
    if published.refused:
        raise _refused(published.refused)
    return json_response({"uid": uid, "delivered": published.delivered})


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """Drawing is for a user the listener identified (password, session, certificate, token):
    the anonymous listener's callers would all share one web uid, so one could delete another's
    drawings."""
    if mode is AuthMode.ANONYMOUS:
        return
    app.router.add_post(f"{API}/items", post_item)
    app.router.add_delete(f"{API}/items/{{uid}}", delete_item)
