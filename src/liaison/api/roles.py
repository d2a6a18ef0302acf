"""Roles on the HTTP side: who is an operator, and the refusal everyone else gets.

An operator is a principal in the Liaison group named by ``roles.operator_group`` (IN or OUT
direction), whatever identified them: a client certificate (groups from the groups file), a
password, a web sign-in or a bearer token (groups from the users file and the groups file). The
directory groups of an LDAP sign-in map onto Liaison groups the same way, so this one test holds
for every way in.

Operators alone may read ``/metrics`` and the admin routes. Anyone else gets 403
``{"error": "operator role required"}``, counted in ``liaison_role_denied_total{route}`` and
recorded: an ``access_denied`` record in the audit log when labels are on (the only audit log
Liaison keeps), and a warning in the server log always.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from liaison.api.auth import client_address
from liaison.api.context import context, principal
from liaison.model.principal import Principal

log = logging.getLogger(__name__)

OPERATOR = "operator"
# The audit record kind of a refusal for want of a role.
ACCESS_DENIED = "access_denied"


def is_operator(who: Principal, operator_group: str) -> bool:
    return operator_group in who.in_groups or operator_group in who.out_groups


def roles_of(who: Principal, operator_group: str) -> list[str]:
    """Liaison's roles of ``who`` (the ``roles`` claim of their tokens)."""
    return [OPERATOR] if is_operator(who, operator_group) else []


def require_operator(request: web.Request, route: str) -> Principal:
    """The caller when they are an operator; else 403, counted and recorded (module doc)."""
    ctx = context(request)
    who = principal(request)
    if is_operator(who, ctx.config.operator_group):
        return who
    ctx.metrics.counter(
        "liaison_role_denied_total", "Requests refused for want of a role", "route"
    ).inc(route)
    log.warning(
        "http %s: %s (%s) refused %s: operator role required",
        client_address(request),
        who.name,
        who.org or "-",
        route,
    )
    gate = ctx.router.gate
    if gate is not None:
        gate.record(
            [
                (
                    ACCESS_DENIED,
                    {
                        "who": who.name,
                        "org": who.org or "",
                        "route": route,
                        "method": request.method,
                        "need": OPERATOR,
                        "address": client_address(request),
                    },
                )
            ]
        )
    raise web.HTTPForbidden(
        text=json.dumps({"error": "operator role required"}), content_type="application/json"
    )
