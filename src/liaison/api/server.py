"""Builds the HTTP applications and binds their listeners (8443, 8446 and optionally 8080).

Each listener is one aiohttp application with its own way of knowing the caller (see
``api.auth``) and the same routes, added by the route modules. ``start_http`` binds first and
returns the runners, so the app can read back ports and clean up in order.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from liaison.api.auth import AuthMode, LoginThrottle, WebSessions, make_auth_middleware
from liaison.api.bearer import TOKENS_KEY
from liaison.api.context import CONTEXT_KEY, ApiContext
from liaison.api.guard import ConnectionGuard, GuardedSite, GuardSettings
from liaison.config import LISTENER_NAMES, Endpoint
from liaison.errors import listen_errors
from liaison.identity.tokens import TokenService, TokenSettings, open_keyring

# Largest request body any route accepts unless it sets its own (data package uploads do).
# Enrollment CSRs and JSON bodies are a few KB; 1 MiB leaves room without inviting abuse.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Largest upload (data packages, files): TAK Server's enterpriseSyncSizeLimitMB is 400 (tak-
# protocol.md section 1.7); 100 MiB serves field use and keeps one upload from filling memory.
MAX_UPLOAD_BYTES = 100 * 1024 * 1024

RouteAdder = Callable[[web.Application, AuthMode], None]

# Application keys shared by the route modules.
THROTTLE_KEY: web.AppKey[LoginThrottle] = web.AppKey("liaison.throttle")
SESSIONS_KEY: web.AppKey[WebSessions] = web.AppKey("liaison.web_sessions")
MODE_KEY: web.AppKey[AuthMode] = web.AppKey("liaison.auth_mode")
GUARD_KEY: web.AppKey[ConnectionGuard] = web.AppKey("liaison.connection_guard")


@dataclass(frozen=True, slots=True)
class HttpListener:
    name: str  # "https", "enroll" or "http"
    endpoint: Endpoint
    mode: AuthMode
    ssl_context: ssl.SSLContext | None


@dataclass(slots=True)
class RunningHttp:
    runners: list[web.AppRunner]
    bound: dict[str, Endpoint]

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


def build_app(
    ctx: ApiContext,
    mode: AuthMode,
    route_adders: Sequence[RouteAdder],
    *,
    throttle: LoginThrottle,
    sessions: WebSessions,
    guard: ConnectionGuard | None = None,
    tokens: TokenService | None = None,
) -> web.Application:
    auth = make_auth_middleware(mode, throttle=throttle, sessions=sessions)
    app = web.Application(
        middlewares=guard.middlewares(auth) if guard is not None else [auth],
        client_max_size=MAX_UPLOAD_BYTES,
    )
    if guard is not None:
        app[GUARD_KEY] = guard
    app[CONTEXT_KEY] = ctx
    app[THROTTLE_KEY] = throttle
    app[SESSIONS_KEY] = sessions
    app[MODE_KEY] = mode
    if tokens is not None:
        app[TOKENS_KEY] = tokens
    for add in route_adders:
        add(app, mode)
    return app


def make_token_service(ctx: ApiContext) -> TokenService:
    """The bearer token service: the keyring under the data folder (made on first use), or with
    PostgreSQL storage the database's, shared by every node, as are redeemed refresh tokens."""
    config = ctx.config
    keyring, db = open_keyring(config)
    return TokenService(
        keyring,
        TokenSettings(
            access_ttl_s=config.token_access_ttl_s,
            refresh_ttl_s=config.token_refresh_ttl_s,
            issuer=f"https://{config.public_host}",
        ),
        shared_redeem=db.redeem_refresh if db is not None else None,
    )


async def start_http(
    ctx: ApiContext,
    listeners: Sequence[HttpListener],
    route_adders: Sequence[RouteAdder],
    sessions: WebSessions | None = None,
) -> RunningHttp:
    """Bind every listener and start serving; the caller closes the result at shutdown.

    ``sessions``: the web sign-ins, when the caller shares them (the cluster bus ends a user's
    sign-ins another node signed out); else made here."""
    throttle = LoginThrottle(time.monotonic)
    if sessions is None:
        sessions = WebSessions(time.monotonic)
    # Tokens are issued and read on the password listener only. An RSA key is made on the first
    # start: off the event loop.
    tokens = None
    if any(listener.mode is AuthMode.PASSWORD for listener in listeners):
        tokens = await asyncio.to_thread(make_token_service, ctx)
    running = RunningHttp(runners=[], bound={})
    try:
        settings = GuardSettings(
            header_timeout_s=ctx.config.http_header_timeout_s,
            idle_timeout_s=ctx.config.http_idle_timeout_s,
            max_unauthenticated=ctx.config.http_max_unauthenticated,
        )
        for listener in listeners:
            guard = ConnectionGuard(listener.name, settings, ctx.metrics)
            app = build_app(
                ctx,
                listener.mode,
                route_adders,
                throttle=throttle,
                sessions=sessions,
                guard=guard,
                tokens=tokens,
            )
            # aiohttp's own keep-alive timer stays, well behind the guard's (which counts).
            runner = web.AppRunner(
                app,
                access_log=None,
                handle_signals=False,
                keepalive_timeout=2 * settings.idle_timeout_s,
            )
            await runner.setup()
            running.runners.append(runner)
            site = GuardedSite(
                runner,
                listener.endpoint,
                ssl_context=listener.ssl_context,
                guard=guard,
                reuse_port=ctx.config.reuse_port,
            )
            with listen_errors(listener.endpoint, LISTENER_NAMES[listener.name]):
                await site.start()
            port = int(runner.addresses[-1][1])
            running.bound[listener.name] = Endpoint(listener.endpoint.host, port)
    except BaseException:
        await running.close()
        raise
    return running
