"""``Authorization: Bearer`` on the password listener: an access token from ``/oauth/token``.

The token names a user (``sub``); the caller is then exactly who that user's password would make
them (``ApiContext.principal_from_user``: groups re-read from the users and groups files at each
request), and nobody when the user was revoked or removed since the token was issued: revocation
is honoured at the next request, whatever the token's expiry.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from liaison.api.context import context
from liaison.identity.tokens import TokenService
from liaison.model.principal import Principal

log = logging.getLogger(__name__)

TOKENS_KEY: web.AppKey[TokenService] = web.AppKey("liaison.tokens")
# RFC 6750 3: the challenge of a resource protected by bearer tokens; RFC 6750 3.1: an expired,
# revoked, malformed or otherwise unacceptable token is "invalid_token", answered 401.
INVALID_TOKEN_CHALLENGE = 'Bearer realm="Liaison", error="invalid_token"'


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 2.1; the scheme is
    case-insensitive, RFC 7235 2.1), or None when the header is absent or another scheme."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def bearer_caller(request: web.Request) -> Principal | None:
    """The caller named by a bearer token; None when the request carries none; 401 when it
    carries one that is not acceptable (bad signature, expired, unknown key, revoked user)."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return None
    ctx = context(request)
    tokens = request.app.get(TOKENS_KEY)
    checked = tokens.check(token) if tokens is not None else None
    caller = ctx.principal_from_user(checked.sub) if checked is not None else None
    if caller is None:
        ctx.metrics.counter(
            "liaison_http_auth_failed_total", "Refused HTTP logins", "listener"
        ).inc("bearer")
        log.warning("http: bearer token refused (%s)", checked.sub if checked else "invalid")
        raise web.HTTPUnauthorized(
            headers={"WWW-Authenticate": INVALID_TOKEN_CHALLENGE},
            text=json.dumps({"error": "invalid token"}),
            content_type="application/json",
        )
    return caller
