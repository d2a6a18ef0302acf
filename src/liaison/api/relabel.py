"""``POST /api/v1/items/{uid}/label``: give an item a new label (a new version of it).

The rules are the router's (``Router.relabel`` and ``labels.check_relabel``): raising is open to
anyone of the originating organisation who may see the item (partners too with the policy's
``partner_updates``); lowering or widening REL needs a release authority of the
originating organisation and a justification. Missing and forbidden items answer the same 404.
"""

from __future__ import annotations

import json

from aiohttp import web

from liaison.api.auth import AuthMode
from liaison.api.context import context, principal
from liaison.api.files import refuse_cross_site
from liaison.model import labels

API = "/api/v1"
# Largest request body: a banner or JSON label and a justification of a few sentences.
MAX_BODY_BYTES = 16 * 1024


def _json_error(status: type[web.HTTPException], **body: object) -> web.HTTPException:
    return status(text=json.dumps(body), content_type="application/json")


async def post_label(request: web.Request) -> web.Response:
    refuse_cross_site(request)
    ctx = context(request)
    actor = principal(request)
    policy = ctx.router.policy
    if policy is None:
        raise _json_error(web.HTTPNotFound, error="labels are not enabled on this server")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _json_error(web.HTTPRequestEntityTooLarge, error="body too large")
    try:
        doc = json.loads(await request.content.read(MAX_BODY_BYTES + 1))
    except (ValueError, UnicodeDecodeError):
        raise _json_error(web.HTTPBadRequest, error="body must be JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("label"), str):
        raise _json_error(web.HTTPBadRequest, error="label (a banner) is required")
    justification = doc.get("justification")
    if justification is not None and not isinstance(justification, str):
        raise _json_error(web.HTTPBadRequest, error="justification must be a string")
    uid = request.match_info["uid"]
    try:
        new = labels.label_from_banner(
            policy, doc["label"], originator=actor.org or "", created_ms=ctx.clock_ms()
        )
    except labels.LabelError as exc:
        raise _json_error(
            web.HTTPBadRequest, error="bad label", reasons=list(exc.reasons)
        ) from None
    current = ctx.router.find(actor, uid, path="relabel")
    if current is not None:
        # The originator stays the item's own: relabelling never changes who released it first.
        old = labels.label_from_detail(policy, current.detail)
        if old is not None:
            new = labels.Label(
                policy_id=new.policy_id,
                classification=new.classification,
                categories=new.categories,
                originator=old.originator,
                created_ms=new.created_ms,
            )
    result = ctx.router.relabel(actor, uid, new, justification)
    if result is None:
        raise _json_error(web.HTTPNotFound, error="not found")
    if not result.allowed:
        raise _json_error(
            web.HTTPForbidden,
            error="refused",
            reasons=list(result.reasons),
            direction=result.direction.value,
        )
    return web.json_response(
        {
            "uid": uid,
            "label": labels.label_to_banner(policy, new),
            "direction": result.direction.value,
        }
    )


def add_routes(app: web.Application, mode: AuthMode) -> None:
    app.router.add_post(f"{API}/items/{{uid}}/label", post_label)
