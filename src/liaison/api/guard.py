"""The HTTP listeners' connection guard: header and idle timeouts, and a bound on unauthenticated
connections per client address (slowloris and connection-hoarding defence).

aiohttp 3.x has no request-header timeout. Its one connection timer, ``keepalive_timeout``, closes
a connection that has no complete request waiting, so a client that sends one header byte every
few seconds is only dropped after the whole keep-alive time, and the event is not counted. So the
guard sits between the transport and aiohttp's ``RequestHandler`` (:class:`GuardedConnection`, an
``asyncio.Protocol`` that forwards every call) and keeps one timer per connection:

- **idle**: from the connection's start (after the TLS handshake), and from the end of each
  request, until the first byte of the next request: ``limits.http_idle_timeout_s``;
- **header**: from the first byte of a request until the request reaches the application (its
  headers are complete and parsed): ``limits.http_header_timeout_s``. Bytes arriving meanwhile do
  not restart it, so dripping a header byte at a time does not help. The TLS handshake has the
  same bound (``ssl_handshake_timeout``).

While a request is being handled (including a WebSocket, for its whole life) no timer runs.

A connection is *unauthenticated* until a request on it passes the listener's authentication (the
auth middleware sets a principal). One client address may hold at most
``limits.http_max_unauthenticated`` of them at once; a connection past that is closed as soon as
it is accepted. Every close is counted in
``liaison_http_connections_closed_total{reason}`` (``header_timeout``,
``idle_timeout``, ``unauthenticated_limit``) and logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from liaison.api.context import PRINCIPAL_KEY
from liaison.config import Endpoint
from liaison.metrics import Counter, Metrics

log = logging.getLogger(__name__)

# Pending connections the kernel queues before accept() (as the stream listeners).
LISTEN_BACKLOG = 1024
# Client addresses remembered for refusal logging; a flood from many addresses cannot grow it.
MAX_REFUSING_ADDRESSES = 10_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class GuardSettings:
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    max_unauthenticated: int = 64  # per client address; 0: no limit


class ConnectionGuard:
    """The guard of one HTTP listener: its connections, by transport, and its unauthenticated
    connections, by client address."""

    def __init__(self, listener: str, settings: GuardSettings, metrics: Metrics) -> None:
        self.listener = listener
        self.settings = settings
        self._closed: Counter = metrics.counter(
            "liaison_http_connections_closed_total",
            "HTTP connections closed by the connection guard",
            "reason",
        )
        self._connections: dict[asyncio.BaseTransport, GuardedConnection] = {}
        self._unauthenticated: dict[str, int] = {}
        self._refusing: set[str] = set()

    def protocol(self, inner: asyncio.Protocol) -> GuardedConnection:
        return GuardedConnection(self, inner)

    def closed(self, reason: str, address: str) -> None:
        self._closed.inc(reason)
        log.info("%s %s: connection closed (%s)", self.listener, address, reason)

    # --- bookkeeping, called by GuardedConnection ------------------------------------------

    def admit(self, conn: GuardedConnection, transport: asyncio.BaseTransport) -> bool:
        limit = self.settings.max_unauthenticated
        held = self._unauthenticated.get(conn.address, 0)
        if limit and held >= limit:
            self._closed.inc("unauthenticated_limit")
            if conn.address not in self._refusing and len(self._refusing) < MAX_REFUSING_ADDRESSES:
                self._refusing.add(conn.address)
                log.warning(
                    "%s %s: refusing connections: %d unauthenticated already open (limit %d)",
                    self.listener,
                    conn.address,
                    held,
                    limit,
                )
            return False
        self._refusing.discard(conn.address)
        self._unauthenticated[conn.address] = held + 1
        self._connections[transport] = conn
        return True

    def authenticated(self, conn: GuardedConnection) -> None:
        self._release(conn.address)

    def forget(self, conn: GuardedConnection, transport: asyncio.BaseTransport) -> None:
        self._connections.pop(transport, None)
        if not conn.is_authenticated:
            self._release(conn.address)

    def _release(self, address: str) -> None:
        held = self._unauthenticated.get(address, 0) - 1
        if held > 0:
            self._unauthenticated[address] = held
        else:
            self._unauthenticated.pop(address, None)

    def unauthenticated(self, address: str) -> int:
        return self._unauthenticated.get(address, 0)

    # --- middlewares ----------------------------------------------------------------------

    def middlewares(self, auth: Middleware) -> list[Middleware]:
        """``[track, auth, mark]``: ``track`` stops the timers while a request is handled,
        ``mark`` records that a request on the connection passed authentication."""

        @web.middleware
        async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
            conn = self._connections.get(request.transport) if request.transport else None
            if conn is None:
                return await handler(request)
            conn.request_started()
            try:
                return await handler(request)
            finally:
                conn.request_finished()

        @web.middleware
        async def mark(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.get(PRINCIPAL_KEY) is not None and request.transport is not None:
                conn = self._connections.get(request.transport)
                if conn is not None:
                    conn.mark_authenticated()
            return await handler(request)

        return [track, auth, mark]


class GuardedConnection(asyncio.Protocol):
    """One connection: forwards everything to aiohttp's protocol and runs the guard's timers."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_header = False
        self._busy = 0
        self._open = False
        self.address = "?"
        self.is_authenticated = False

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        if not self._guard.admit(self, transport):
            transport.abort()
            return
        self._open = True
        self._inner.connection_made(transport)
        self._arm(idle=True)

    def data_received(self, data: bytes) -> None:
        if not self._open:
            return
        if self._busy == 0 and not self._in_header and data:
            self._arm(idle=False)  # the first byte of a request: its headers have a deadline
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._open else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._transport is not None and self._open:
            self._guard.forget(self, self._transport)
            self._open = False
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # --- requests (from the guard's middlewares) ------------------------------------------

    def request_started(self) -> None:
        self._busy += 1
        self._cancel()

    def request_finished(self) -> None:
        self._busy -= 1
        if self._busy == 0 and self._open:
            self._arm(idle=True)

    def mark_authenticated(self) -> None:
        if not self.is_authenticated:
            self.is_authenticated = True
            self._guard.authenticated(self)

    # --- timers ---------------------------------------------------------------------------

    def _arm(self, *, idle: bool) -> None:
        self._cancel()
        self._in_header = not idle
        settings = self._guard.settings
        delay = settings.idle_timeout_s if idle else settings.header_timeout_s
        reason = "idle_timeout" if idle else "header_timeout"
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire, reason)

    def _cancel(self) -> None:
        self._in_header = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, reason: str) -> None:
        self._timer = None
        if self._transport is None or self._transport.is_closing() or self._busy:
            return
        self._guard.closed(reason, self.address)
        self._transport.abort()


class GuardedSite(web.BaseSite):
    """A TCP(+TLS) site whose connections pass through a :class:`ConnectionGuard`; the TLS
    handshake is bounded by the header timeout."""

    __slots__ = ("_endpoint", "_guard", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        endpoint: Endpoint,
        *,
        ssl_context: ssl.SSLContext | None,
        guard: ConnectionGuard,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=LISTEN_BACKLOG)
        self._endpoint = endpoint
        self._guard = guard
        self._reuse_port = reuse_port  # SO_REUSEPORT: the workers of `liaison serve --workers`

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._endpoint}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        guard = self._guard
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: guard.protocol(server()),
            self._endpoint.host,
            self._endpoint.port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
            ssl_handshake_timeout=(guard.settings.header_timeout_s if self._ssl_context else None),
        )
