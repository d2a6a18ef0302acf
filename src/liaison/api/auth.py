"""Who is calling: client certificates, HTTP Basic, web sessions; and the throttle on bad passwords.

Each HTTP listener has one way of knowing its caller (TAK Server's connector layout,
tak-protocol.md section 3.1):

- ``mtls`` (8443): the TLS client certificate, required by the handshake;
- ``password`` (8446): HTTP Basic (enrollment, scripts), a web session cookie (the map) or a
  bearer token from ``/oauth/token`` (``api.bearer``), with no client certificate, as TAK
  Server's ``cert_https`` connector;
- ``anonymous`` (8080, off by default): everyone is ``__ANON__``.

Wrong passwords are throttled per client address and per username: after
``FAILURES_BEFORE_THROTTLE`` failures, further attempts are refused with 429 for a delay that
doubles with each failure, up to ``MAX_THROTTLE_S``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import enum
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from liaison.api.bearer import bearer_caller
from liaison.api.context import PRINCIPAL_KEY, ApiContext, context
from liaison.identity.events import EXPIRED, SIGNED_OUT, AccessEnded, AccessEvents
from liaison.identity.listeners import Listener
from liaison.identity.users import User
from liaison.model.principal import Principal

if TYPE_CHECKING:
    from liaison.identity.shared_db import IdentityDb

log = logging.getLogger(__name__)

# Failed logins allowed from one address or for one username before attempts are throttled.
FAILURES_BEFORE_THROTTLE = 5
# Longest wait imposed after repeated failures: slows a guesser to a few hundred tries a day.
MAX_THROTTLE_S = 300.0
# Addresses and usernames remembered by the throttle; the oldest are forgotten first.
MAX_THROTTLE_ENTRIES = 10_000
# How long a web sign-in lasts without activity, and at most.
SESSION_IDLE_S = 8 * 3600.0
SESSION_MAX_S = 24 * 3600.0
# Most concurrent web sessions kept; the oldest are dropped first.
MAX_WEB_SESSIONS = 10_000
SESSION_COOKIE = "liaison_session"
# With sign-ins shared in PostgreSQL: how often, at most, a sign-in's activity is written to the
# table (the idle limit other nodes apply is then at most this much early).
SHARED_SEEN_S = 60.0
# The node named in the AccessEnded of a sign-in found deleted from the shared table (a sign-out
# elsewhere, already announced there): not None, so it is not announced again (cluster/access.py).
DELETED_ELSEWHERE = "(deleted from the shared table)"
# The OAuth token endpoint (api.oauth), on the password listener.
TOKEN_PATH = "/oauth/token"


class AuthMode(enum.Enum):
    MTLS = "mtls"
    PASSWORD = "password"
    ANONYMOUS = "anonymous"


@dataclass(slots=True)
class _Failures:
    count: int
    until: float


class LoginThrottle:
    """Counts failed logins per key (address or username) and says when to refuse outright."""

    def __init__(self, clock_s: Callable[[], float]) -> None:
        self._clock = clock_s
        self._failures: dict[str, _Failures] = {}

    def blocked_for(self, *keys: str) -> float:
        """Seconds the caller must still wait (0 when it may try now)."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            f = self._failures.get(key)
            if f is not None and f.until > now:
                wait = max(wait, f.until - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            f = self._failures.pop(key, None) or _Failures(0, 0.0)
            f.count += 1
            if f.count >= FAILURES_BEFORE_THROTTLE:
                delay = min(MAX_THROTTLE_S, 2.0 ** (f.count - FAILURES_BEFORE_THROTTLE))
                f.until = now + delay
            self._failures[key] = f
            while len(self._failures) > MAX_THROTTLE_ENTRIES:
                del self._failures[next(iter(self._failures))]

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)


@dataclass(slots=True)
class _WebSession:
    username: str
    csrf: str
    created: float
    seen: float


class WebSessions:
    """Server-side web map sessions: a random token in a cookie, nothing else on the client.

    Whoever holds something open for a session (the WebSocket feed) subscribes to
    :attr:`events` and is told, with an ``AccessEnded`` naming the token and the reason
    (``signed_out`` or ``expired``), when the session ends: at ``POST /logout``, when it is found
    expired, or when it is dropped to make room."""

    def __init__(self, clock_s: Callable[[], float], events: AccessEvents | None = None) -> None:
        self._clock = clock_s
        self._sessions: dict[str, _WebSession] = {}
        self.events = events if events is not None else AccessEvents()
        # With PostgreSQL storage: every sign-in is also a row of identity_sessions, so a cookie
        # made on one node is good on every node (use_shared).
        self._shared: IdentityDb | None = None
        self._wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
        self._seen_written: dict[str, float] = {}
        # Sign-outs on this node whose rows could not be deleted (the database unreachable):
        # username -> wall time of the sign-out. A row of that user created before it is refused
        # here, so the sign-out is not undone by reading the row back (lookup_shared). Bounded
        # as the sign-ins; past SESSION_MAX_S such a row has expired anyway.
        self._unfinished_sign_outs: dict[str, dt.datetime] = {}

    def use_shared(
        self, db: IdentityDb, wall_clock: Callable[[], dt.datetime] | None = None
    ) -> None:
        """Keep sign-ins in ``db`` too (docs/deployment.md "Users, certificates and sign-ins")."""
        self._shared = db
        if wall_clock is not None:
            self._wall = wall_clock

    @property
    def shared(self) -> bool:
        return self._shared is not None

    def _ended(self, token: str, username: str, reason: str, node: str | None = None) -> None:
        self.events.announce(
            AccessEnded(reason=reason, sign_in=token, username=username, node=node)
        )

    def create(self, username: str) -> tuple[str, str]:
        """A new session for ``username``; returns (cookie token, CSRF token). Without a shared
        table only (``sign_in`` writes the shared one off the event loop)."""
        if self._shared is not None:
            raise RuntimeError("sign-ins are shared: use sign_in")
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
        self._hold(token, username, csrf)
        return token, csrf

    async def sign_in(self, username: str) -> tuple[str, str]:
        """``create``, and with a shared table the row written first, on a worker thread."""
        if self._shared is None:
            return self.create(username)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
        wall = self._wall()
        await asyncio.to_thread(
            self._shared.session_put,
            token,
            username=username,
            csrf=csrf,
            now=wall,
            older_than=wall - dt.timedelta(seconds=SESSION_MAX_S),
            idle_before=wall - dt.timedelta(seconds=SESSION_IDLE_S),
        )
        self._hold(token, username, csrf)
        return token, csrf

    def _hold(self, token: str, username: str, csrf: str) -> None:
        now = self._clock()
        self._sessions[token] = _WebSession(username, csrf, now, now)
        if self._shared is not None:
            self._seen_written[token] = now
        self._bound()

    def _bound(self) -> None:
        while len(self._sessions) > MAX_WEB_SESSIONS:
            oldest = next(iter(self._sessions))
            dropped = self._sessions.pop(oldest)
            self._seen_written.pop(oldest, None)
            self._ended(oldest, dropped.username, EXPIRED)

    def _live(self, token: str | None) -> _WebSession | None:
        """The session if it exists and has not expired; an expired one is removed."""
        if not token:
            return None
        s = self._sessions.get(token)
        if s is None:
            return None
        now = self._clock()
        if now - s.seen > SESSION_IDLE_S or now - s.created > SESSION_MAX_S:
            del self._sessions[token]
            self._seen_written.pop(token, None)
            self._ended(token, s.username, EXPIRED)
            return None
        return s

    def lookup(self, token: str | None) -> tuple[str, str] | None:
        """(username, csrf) for a live session, counting as activity; expired ones are removed."""
        s = self._live(token)
        if s is None:
            return None
        s.seen = self._clock()
        return s.username, s.csrf

    async def lookup_shared(self, token: str | None) -> tuple[str, str] | None:
        """``lookup``, and with a shared table a sign-in made on another node: read from the
        database (on a worker thread) when this node does not hold it, then held here. Activity
        reaches the table at most every SHARED_SEEN_S (for the idle limit of the other nodes)."""
        if self._shared is None or not token:
            return self.lookup(token)
        if token not in self._sessions:
            row = await asyncio.to_thread(self._shared.session_get, token)
            if row is None:
                return None
            cut = self._unfinished_sign_outs.get(row.username)
            if cut is not None and row.created <= cut:
                return None  # signed out here, the row not yet deleted
            if token not in self._sessions:
                now, wall = self._clock(), self._wall()
                created = now - (wall - row.created).total_seconds()
                seen = now - (wall - row.seen).total_seconds()
                if now - seen > SESSION_IDLE_S or now - created > SESSION_MAX_S:
                    return None
                self._sessions[token] = _WebSession(row.username, row.csrf, created, seen)
                self._seen_written[token] = seen
                self._bound()
        found = self.lookup(token)
        s = self._sessions.get(token)
        if s is not None and s.seen - self._seen_written.get(token, s.created) >= SHARED_SEEN_S:
            self._seen_written[token] = s.seen
            if not await asyncio.to_thread(self._shared.session_seen, token, self._wall()):
                # The row is gone: a sign-out on another node (whose notice may not have come)
                # or the table's bound. The sign-in ends here too, not announced again.
                if self._sessions.pop(token, None) is not None:
                    self._seen_written.pop(token, None)
                    self._ended(token, s.username, SIGNED_OUT, DELETED_ELSEWHERE)
                return None
        return found

    def alive(self, token: str | None) -> bool:
        """Whether the session is still live, without counting as activity (an open feed does
        not keep a sign-in alive: it lasts exactly as long as REST calls with the cookie work)."""
        return self._live(token) is not None

    def end(self, token: str | None) -> str | None:
        """A sign-out on this node: this sign-in ends here; its user's name, or None."""
        s = self._sessions.pop(token, None) if token else None
        if token and s is not None:
            self._seen_written.pop(token, None)
            self._ended(token, s.username, SIGNED_OUT)
            return s.username
        return None

    async def sign_out(self, token: str | None) -> None:
        """``POST /logout``: ``end``; with a shared table every sign-in of that user ends: first
        in the table (on a worker thread), then here, and the other nodes are told by the
        cluster bus (the announcement comes from ``end``). Deleting first means no node can
        read a row back after hearing of the sign-out.

        With a shared table, StorageError when the rows could not be deleted: the user's
        sign-ins end here all the same (and are announced), and a row of theirs created before
        now is refused by this node from then on; other nodes may still accept such a row
        until it expires or a later sign-out of that user deletes it."""
        if self._shared is None or not token:
            self.end(token)
            return
        s = self._sessions.get(token)
        if s is None:
            return
        username = s.username
        try:
            await asyncio.to_thread(self._shared.sessions_end, username=username)
        except BaseException:
            self._sign_out_unfinished(username)
            raise
        finally:
            self.end(token)
            self.end_user(username)

    def _sign_out_unfinished(self, username: str) -> None:
        wall = self._wall()
        self._unfinished_sign_outs.pop(username, None)
        self._unfinished_sign_outs[username] = wall
        horizon = wall - dt.timedelta(seconds=SESSION_MAX_S)
        while self._unfinished_sign_outs and (
            len(self._unfinished_sign_outs) > MAX_WEB_SESSIONS
            or next(iter(self._unfinished_sign_outs.values())) < horizon
        ):
            del self._unfinished_sign_outs[next(iter(self._unfinished_sign_outs))]

    def end_user(self, username: str, node: str | None = None) -> int:
        """End every sign-in of ``username`` (a sign-out on cluster node ``node``); how many."""
        tokens = [t for t, s in self._sessions.items() if s.username == username]
        for token in tokens:
            del self._sessions[token]
            self._seen_written.pop(token, None)
            self._ended(token, username, SIGNED_OUT, node)
        return len(tokens)


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """Username and password from an ``Authorization: Basic`` header (RFC 7617), or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        return None
    return user, password


def client_address(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else "?"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Paths anyone may reach on the password listener (the sign-in page and what it needs).
# The CRL is public by nature (RFC 5280 5: CRLs are signed and meant for any relying party).
PUBLIC_PREFIXES = ("/login", "/static/", "/favicon.ico", "/crl.pem", "/crl.der")


def make_auth_middleware(
    mode: AuthMode,
    *,
    throttle: LoginThrottle,
    sessions: WebSessions,
) -> Middleware:
    """The middleware that puts the caller's Principal on every request, or refuses it."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        ctx = context(request)
        caller: Principal | None = None
        if mode is AuthMode.MTLS:
            ssl_object = (
                request.transport.get_extra_info("ssl_object") if request.transport else None
            )
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            caller = ctx.principal_from_certificate(der, client_address(request))
            if caller is None:
                raise web.HTTPForbidden(text="certificate not accepted\n")
        elif mode is AuthMode.ANONYMOUS:
            # The same groups file and gate rules as an anonymous stream client (listener http).
            caller = ctx.principal_anonymous(client_address(request), Listener.HTTP)
        else:
            if request.path == TOKEN_PATH:
                # The token endpoint reads the credentials from its body (api.oauth); a client's
                # own Basic credentials (an OAuth client id) are not a user's.
                return await handler(request)
            caller = await _password_caller(request, throttle, sessions)
            if caller is None:
                if request.path.startswith(PUBLIC_PREFIXES):
                    return await handler(request)
                if request.path.startswith(("/Marti/", "/api/", "/takproto/")):
                    raise unauthorized("authentication required", _challenge(request))
                raise web.HTTPFound("/login")
        request[PRINCIPAL_KEY] = caller
        return await handler(request)

    return auth


def unauthorized(message: str, headers: dict[str, str] | None = None) -> web.HTTPUnauthorized:
    """A 401 with the JSON error body every other error has, ``{"error": message}``
    (docs/api.md); ``headers`` carries the ``WWW-Authenticate`` challenge when there is one."""
    return web.HTTPUnauthorized(
        headers=headers or None,
        text=json.dumps({"error": message}),
        content_type="application/json",
    )


def _challenge(request: web.Request) -> dict[str, str]:
    """The 401 challenge. The web map (it sends ``X-Requested-With`` or carries a session cookie)
    gets none: a Basic challenge would make the browser hold the request behind its own password
    box instead of letting the page go back to its sign-in page."""
    if request.headers.get("X-Requested-With") or SESSION_COOKIE in request.cookies:
        return {}
    return {"WWW-Authenticate": 'Basic realm="Liaison"'}


async def _password_caller(
    request: web.Request, throttle: LoginThrottle, sessions: WebSessions
) -> Principal | None:
    ctx = context(request)
    found = await sessions.lookup_shared(request.cookies.get(SESSION_COOKIE))
    if found is not None:
        username, csrf = found
        # Signing in again with a live session needs no CSRF token: /login is protected by the
        # cross-site check and SameSite=Strict, and it replaces the session anyway.
        if request.method not in ("GET", "HEAD", "OPTIONS") and request.path != "/login":
            sent = request.headers.get("X-CSRF-Token", "")
            if not hmac.compare_digest(sent, csrf):
                raise web.HTTPForbidden(text="missing or wrong CSRF token\n")
        return ctx.principal_from_user(username)
    bearer = bearer_caller(request)
    if bearer is not None:
        return bearer
    basic = parse_basic(request.headers.get("Authorization"))
    if basic is None:
        return None
    username, password = basic
    return await check_password(request, username, password, throttle)


async def check_password(
    request: web.Request, username: str, password: str, throttle: LoginThrottle
) -> Principal | None:
    """Check a password (or enrollment token) under the throttle; 429 while throttled.

    The scrypt check (about 0.1 s by design) runs on a worker thread, never on the event loop.
    """
    ctx = context(request)
    address = client_address(request)
    keys = (f"addr:{address}", f"user:{username}")
    wait = throttle.blocked_for(*keys)
    if wait > 0:
        raise web.HTTPTooManyRequests(
            headers={"Retry-After": str(int(wait) + 1)}, text="too many failed logins\n"
        )
    user = await password_user(ctx, username, password, enrollment_tokens=True)
    if user is None or user.revoked:
        throttle.failed(*keys)
        ctx.metrics.counter(
            "liaison_http_auth_failed_total", "Refused HTTP logins", "listener"
        ).inc("password")
        log.warning("http %s: login refused for %r", address, username)
        raise unauthorized("wrong credentials", _challenge(request))
    throttle.succeeded(*keys)
    return ctx.principal_from_user(user.name)


async def password_user(
    ctx: ApiContext, username: str, password: str, *, enrollment_tokens: bool
) -> User | None:
    """Whom ``password`` signs in as: the users file (its enrollment tokens too when
    ``enrollment_tokens``), then, for a name the users file does not have, the directory
    (docs/directory.md). The scrypt check (about 0.1 s by design) runs on a worker thread."""
    if enrollment_tokens:
        user = await asyncio.to_thread(
            ctx.users.authenticate_enrollment, username, password, _utcnow(ctx)
        )
    else:
        user = await asyncio.to_thread(ctx.users.verify_password, username, password)
    if user is None and ctx.directory is not None and ctx.users.get(username) is None:
        user = await ctx.directory.authenticate(username, password)
    return user


def _utcnow(ctx: ApiContext) -> dt.datetime:
    return dt.datetime.fromtimestamp(ctx.clock_ms() / 1000, tz=dt.UTC)
