"""``/oauth/token``: bearer tokens for a username and password, as TAK Server hands them out.

TAK clients that sign in with a password rather than a client certificate (TAK Server's
``/oauth/token``, tak-protocol.md 3.1: "8446 ... enrollment, OAuth, WebTAK login") ask this
endpoint for a token (RFC 6749 4.3, the resource owner password credentials grant) and renew it
with the refresh token (RFC 6749 6):

- ``grant_type=password&username=U&password=P``
- ``grant_type=refresh_token&refresh_token=R``

as an ``application/x-www-form-urlencoded`` POST body, or as query parameters: TAK Server's
Spring token endpoint reads either, and CloudTAK sends them in the query (CloudTAK
``api/lib/api/oauth.ts``), with GET in the versions we have seen, so GET is answered too.

The answer is RFC 6749 5.1's JSON (``access_token``, ``token_type`` "bearer", ``expires_in``,
``refresh_token``, ``scope``) plus ``jti``, as Spring Security OAuth writes it, with
``Cache-Control: no-store`` and ``Pragma: no-cache``. Errors are RFC 6749 5.2's, status 400:
a wrong password is ``{"error": "invalid_grant", "error_description": "Bad credentials"}``, what
CloudTAK looks for (it tests ``error === 'invalid_grant'`` and a description starting with
``Bad credentials``). Wrong passwords count towards the same throttle as every other sign-in
(429 with ``Retry-After``). A refresh the store of used refresh tokens cannot take (with
PostgreSQL, the shared database unreachable) is 503 ``temporarily_unavailable`` with
``Retry-After``, and the token is not used up. Only passwords are accepted here, never
enrollment tokens: a one-time enrollment secret must not turn into a day of bearer tokens.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from liaison.api.auth import TOKEN_PATH, AuthMode, client_address, password_user
from liaison.api.bearer import TOKENS_KEY
from liaison.api.context import context
from liaison.api.roles import roles_of
from liaison.api.server import THROTTLE_KEY
from liaison.errors import StorageError
from liaison.identity.tokens import Issued

log = logging.getLogger(__name__)

# Spring MVC's JSON content type, as TAK Server's token endpoint answers.
CONTENT_TYPE = "application/json;charset=UTF-8"
# RFC 6749 5.1: "The authorization server MUST include the HTTP "Cache-Control" response header
# field with a value of "no-store" ... as well as the "Pragma" response header field with a
# value of "no-cache"."
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# The scope every token carries: the whole API the user's groups allow (Liaison has no finer
# scopes; access is decided per item by the router).
SCOPE = "liaison"
# Largest form body read: a username, a password (at most 1,024 characters) or a refresh token.
MAX_FORM_BYTES = 16 * 1024


# Seconds a client is asked to wait after a refresh the token store could not take (503).
REFRESH_RETRY_S = 5


def _answer(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": CONTENT_TYPE, **NO_STORE},
    )


def _error(error: str, description: str) -> web.Response:
    """RFC 6749 5.2: 400 with ``error`` and ``error_description``."""
    return _answer(400, {"error": error, "error_description": description})


async def _params(request: web.Request) -> dict[str, str]:
    params = {k: v for k, v in request.query.items()}
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_FORM_BYTES, actual_size=request.content_length
            )
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


def _issued(issued: Issued) -> web.Response:
    return _answer(
        200,
        {
            "access_token": issued.access_token,
            "token_type": "bearer",
            "refresh_token": issued.refresh_token,
            "expires_in": issued.expires_in,
            "scope": SCOPE,
            "jti": issued.jti,
        },
    )


async def token(request: web.Request) -> web.Response:
    """``POST|GET /oauth/token``: the password and refresh_token grants (module doc)."""
    ctx = context(request)
    tokens = request.app[TOKENS_KEY]
    params = await _params(request)
    grant = params.get("grant_type")
    operator_group = ctx.config.operator_group
    if grant == "password":
        username, password = params.get("username"), params.get("password")
        if not username or password is None:
            return _error("invalid_request", "username and password are required")
        throttle = request.app[THROTTLE_KEY]
        address = client_address(request)
        keys = (f"addr:{address}", f"user:{username}")
        wait = throttle.blocked_for(*keys)
        if wait > 0:
            # RFC 6749 defines no error for this at the token endpoint; "temporarily_unavailable"
            # (RFC 6749 4.1.2.1) is the nearest of its codes.
            retry = int(wait) + 1
            answer = _answer(
                429,
                {
                    "error": "temporarily_unavailable",
                    "error_description": f"too many failed logins; retry in {retry} s",
                },
            )
            answer.headers["Retry-After"] = str(retry)
            return answer
        # Passwords only here, never enrollment tokens; the directory as at every sign-in.
        user = await password_user(ctx, username, password, enrollment_tokens=False)
        caller = ctx.principal_from_user(user.name) if user is not None else None
        if caller is None:
            throttle.failed(*keys)
            ctx.metrics.counter(
                "liaison_http_auth_failed_total", "Refused HTTP logins", "listener"
            ).inc("oauth")
            log.warning("http %s: token refused for %r", address, username)
            return _error("invalid_grant", "Bad credentials")
        throttle.succeeded(*keys)
        groups = sorted(caller.in_groups | caller.out_groups)
        issued = tokens.issue(caller.name, groups=groups, roles=roles_of(caller, operator_group))
        log.info("http %s: token issued to %s", address, caller.name)
        return _issued(issued)
    if grant == "refresh_token":
        refresh = params.get("refresh_token")
        if not refresh:
            return _error("invalid_request", "refresh_token is required")
        try:
            if tokens.redeems_in_database:
                # One database round trip (identity_refresh_redeemed): off the event loop.
                checked = await asyncio.to_thread(tokens.redeem_refresh, refresh)
            else:
                checked = tokens.redeem_refresh(refresh)
        except StorageError as exc:
            # The refresh token could not be marked used (the database is unreachable): not
            # redeemed, so the client may try the same token again (RFC 6749 5.2 has no code for
            # this; temporarily_unavailable as in 4.1.2.1).
            ctx.metrics.counter(
                "liaison_http_oauth_unavailable_total",
                "Token refreshes refused because the shared database could not be reached",
            ).inc()
            log.error("http %s: token refresh not possible: %s", client_address(request), exc)
            answer = _answer(
                503,
                {
                    "error": "temporarily_unavailable",
                    "error_description": "the token store cannot be reached; retry later",
                },
            )
            answer.headers["Retry-After"] = str(REFRESH_RETRY_S)
            return answer
        # The user is looked up again: a revoked or removed user gets no new token.
        caller = ctx.principal_from_user(checked.sub) if checked is not None else None
        if checked is None or caller is None:
            ctx.metrics.counter(
                "liaison_http_auth_failed_total", "Refused HTTP logins", "listener"
            ).inc("oauth")
            return _error("invalid_grant", "Invalid refresh token")
        groups = sorted(caller.in_groups | caller.out_groups)
        issued = tokens.issue(
            caller.name,
            groups=groups,
            roles=roles_of(caller, operator_group),
            auth_time=checked.auth_time,
        )
        return _issued(issued)
    if not grant:
        return _error("invalid_request", "grant_type is required")
    return _error("unsupported_grant_type", f"Unsupported grant type: {grant[:64]}")


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """``/oauth/token`` on the password listener, when the app has a token service."""
    if mode is AuthMode.PASSWORD and TOKENS_KEY in app:
        app.router.add_post(TOKEN_PATH, token)
        app.router.add_get(TOKEN_PATH, token)
