"""TAK Server's streaming WebSocket, ``/takproto/1``: a TAK stream client over HTTPS.

pytak's QR enrollment and WebTAK connect to ``wss://HOST:8443/takproto/1`` (tak-protocol.md
section 2.1; TSc ``nio/websockets/TakProtoWebSocketHandler.java`` registered at ``/takproto/1``
in ``WebSocketConfiguration.java``). Each WebSocket binary message carries TAK protocol v1
*stream-framed* messages: ``0xBF``, the payload length as a varint, one ``TakMessage`` (goatak's
``tak_ws`` reads one such frame per binary message and writes one per message; pytak's
``WSTXWorker`` sends ``takproto.xml2proto(..., STREAM)`` output). There is no XML and no
negotiation: the connection speaks protobuf from the first message. Text messages are refused
(TAK Server closes with 1003, "Text messages not supported").

There is no second session implementation here: the WebSocket is put under an ordinary
:class:`~liaison.session.StreamSession` (groups, labels, replay, ping, slow-consumer limit,
idle timeout, revocation sweep: everything the 8089 listener does) by
:class:`WebSocketTransport`, an ``asyncio.Transport`` whose ``write`` sends each stream frame as
one binary message and whose ``close`` sends a close frame. The caller is who the HTTP listener
says it is: the client certificate on 8443, the web sign-in cookie (or HTTP Basic) on 8446.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterator
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from liaison.api.auth import SESSION_COOKIE, AuthMode, WebSessions
from liaison.api.context import context, principal
from liaison.api.server import MODE_KEY, SESSIONS_KEY
from liaison.api.ws import (
    FEEDS_BY_TOKEN_KEY,
    WS_DRAIN_POLL_S,
    WS_HEARTBEAT_S,
    WS_HIGH_WATER,
    origin_allowed,
    server_frame,
)
from liaison.model.principal import Principal
from liaison.protocol.tak_peer import Phase
from liaison.protocol.tak_stream import MAGIC, decode_varint
from liaison.session import StreamSession
from liaison.transports.outbound import WaterMarks

log = logging.getLogger(__name__)

PATH = "/takproto/1"
# The open /takproto/1 sessions of a listener, closed (1001) when the server shuts down.
SESSIONS_OPEN_KEY: web.AppKey[weakref.WeakSet[StreamSession]] = web.AppKey("liaison.takproto")

# Bytes a binary message may carry beyond one event's limit: the 0xBF byte and a varint length.
FRAME_OVERHEAD_BYTES = 16
# Seconds a closing socket may take to send its close frame (behind whatever the transport still
# holds for a slow reader) before the connection is cut.
CLOSE_GRACE_S = 1.0
# The session is told pause_writing past WS_HIGH_WATER bytes waiting in the connection and
# resume_writing once they are down to half of it, as asyncio's own transports do.
TAKPROTO_WATER_MARKS = WaterMarks(high=WS_HIGH_WATER, low=WS_HIGH_WATER // 2)

# How the socket is closed for each reason a session ends (RFC 6455 7.4.1 and 7.4.2; 4000-4999
# are the application's, 4401/4403 as on the web map feed). Any other reason (a broken stream:
# ``malformed_stream``, ``frame_too_large``, ...) closes with 1008, the reason as text.
CLOSE_CODES: dict[str, tuple[int, bytes]] = {
    "revoked": (4403, b"revoked"),
    "signed_out": (4401, b"signed out"),
    "expired": (4401, b"session expired"),
    "slow_consumer": (WSCloseCode.TRY_AGAIN_LATER, b"slow consumer"),
    "idle_timeout": (WSCloseCode.GOING_AWAY, b"idle timeout"),
    "shutdown": (WSCloseCode.GOING_AWAY, b"server shutdown"),
    "ws_text": (WSCloseCode.UNSUPPORTED_DATA, b"text messages are not supported"),
}


def binary_frame(payload: bytes) -> bytes:
    """One binary frame (opcode 2) of ``payload``: a TAK stream frame."""
    return server_frame(payload, 0x2)


def split_stream_frames(data: bytes) -> Iterator[bytes]:
    """The whole stream frames (``0xBF`` varint payload) that ``data`` is made of. The session only
    ever writes whole frames, so anything else is a bug, not peer input."""
    pos = 0
    while pos < len(data):
        if data[pos] != MAGIC:
            raise ValueError("not a TAK stream frame")
        decoded = decode_varint(data, pos + 1)
        if decoded is None:
            raise ValueError("truncated TAK stream frame")
        length, start = decoded
        end = start + length
        if end > len(data):
            raise ValueError("truncated TAK stream frame")
        yield data[pos:end]
        pos = end


class WebSocketTransport(asyncio.Transport):
    """What a :class:`StreamSession` writes to and closes, carried over one WebSocket.

    Frames are written whole onto the connection's own transport, on the event loop, as
    ``api.ws`` does for the map feed; aiohttp writes its pings and its close frame whole too, so
    frames never interleave. Flow control (:data:`TAKPROTO_WATER_MARKS`): past
    :data:`WS_HIGH_WATER` bytes waiting in the connection, the session is told ``pause_writing``
    (its queue then coalesces and, past its limit, marks a slow consumer, as on 8089) until the
    buffer drains to half of that. Reading pauses (ingest backpressure) hold the reading loop.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        raw: asyncio.Transport,
        session: StreamSession,
        extra: dict[str, Any],
    ) -> None:
        super().__init__(extra)
        self._ws = ws
        self._raw = raw
        self._session = session
        self._closing = False
        self._write_paused = False
        self._readable = asyncio.Event()
        self._readable.set()
        self.closing_task: asyncio.Task[bool] | None = None

    # --- writing --------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.is_closing():
            return
        frames = [binary_frame(f) for f in split_stream_frames(bytes(data))]
        self._raw.write(b"".join(frames))
        if not self._write_paused and TAKPROTO_WATER_MARKS.should_pause(
            self._raw.get_write_buffer_size()
        ):
            self._write_paused = True
            self._session.pause_writing()
            asyncio.get_running_loop().call_later(WS_DRAIN_POLL_S, self._check_drained)

    def _check_drained(self) -> None:
        if self.is_closing():
            return
        if not TAKPROTO_WATER_MARKS.may_resume(self._raw.get_write_buffer_size()):
            asyncio.get_running_loop().call_later(WS_DRAIN_POLL_S, self._check_drained)
            return
        self._write_paused = False
        self._session.resume_writing()

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def can_write_eof(self) -> bool:
        return False

    # --- reading --------------------------------------------------------------------------

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    def is_reading(self) -> bool:
        return self._readable.is_set()

    async def readable(self) -> None:
        await self._readable.wait()

    # --- closing --------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing or self._ws.closed or self._raw.is_closing()

    def close(self) -> None:
        """Send the close frame for the session's reason (:data:`CLOSE_CODES`)."""
        if self._closing:
            return
        self._closing = True
        self._readable.set()  # a paused reader must see the close
        if self._ws.closed:
            return
        reason = self._session.close_reason or "closed"
        code, message = CLOSE_CODES.get(reason, (WSCloseCode.POLICY_VIOLATION, reason.encode()))
        loop = asyncio.get_running_loop()
        self.closing_task = loop.create_task(
            self._ws.close(code=code, message=message), name="takproto-close"
        )
        loop.call_later(CLOSE_GRACE_S, self._cut)

    def abort(self) -> None:
        # The session aborts slow, idle and broken peers; here the close frame still goes first,
        # and the connection is cut after CLOSE_GRACE_S if the peer does not answer it.
        self.close()

    def _cut(self) -> None:
        if not self._raw.is_closing() and not self._ws.closed:
            self._raw.abort()


class _SignInFeed:
    """Ends a ``/takproto/1`` session opened with a web sign-in when that sign-in ends (a
    ``session.LiveFeed``, kept with the map feeds of the same sign-in)."""

    def __init__(self, session: StreamSession, token: str, sessions: WebSessions) -> None:
        self._session = session
        self.token = token
        self._sessions = sessions
        self.ended: str | None = None

    @property
    def principal(self) -> Principal:
        return self._session.principal

    def still_valid(self) -> bool:
        return self._sessions.alive(self.token)

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self._session.close(reason)


async def takproto_stream(request: web.Request) -> web.WebSocketResponse:
    """``GET /takproto/1``: a TAK stream client (TAK protocol v1) over a WebSocket."""
    if not origin_allowed(request):
        raise web.HTTPForbidden(text="cross-site WebSocket refused\n")
    ctx = context(request)
    viewer = principal(request)
    make_session = ctx.stream_session
    if make_session is None:
        raise web.HTTPNotFound(text="no streaming on this server\n")
    ws = web.WebSocketResponse(
        heartbeat=WS_HEARTBEAT_S,
        max_msg_size=ctx.config.max_event_bytes + FRAME_OVERHEAD_BYTES,
        compress=False,
    )
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(text="a WebSocket upgrade is required\n")
    raw = request.transport
    if raw is None:
        raise web.HTTPBadRequest(text="connection already closed\n")
    await ws.prepare(request)
    session = make_session(viewer)
    request.app[SESSIONS_OPEN_KEY].add(session)
    transport = WebSocketTransport(ws, raw, session, {"peername": raw.get_extra_info("peername")})
    session.connection_made(transport)
    feed: _SignInFeed | None = None
    cookie = request.cookies.get(SESSION_COOKIE)
    sessions = request.app[SESSIONS_KEY]
    if request.app[MODE_KEY] is AuthMode.PASSWORD and cookie and sessions.alive(cookie):
        feed = _SignInFeed(session, cookie, sessions)
        request.app[FEEDS_BY_TOKEN_KEY].setdefault(cookie, set()).add(feed)
        if ctx.registry is not None:
            ctx.registry.add_feed(feed)
    try:
        async for msg in ws:
            if session.phase is Phase.CLOSED:
                break
            if msg.type is WSMsgType.BINARY:
                await transport.readable()
                session.data_received(msg.data)
            elif msg.type is WSMsgType.TEXT:
                ctx.metrics.counter(
                    "liaison_input_rejected_total", "Input frames or streams refused", "reason"
                ).inc("ws_text")
                log.warning("takproto %s: text message refused", session.peer)
                session.close("ws_text")
                break
            elif msg.type is WSMsgType.ERROR:
                break
    except ConnectionError:
        pass
    finally:
        if feed is not None:
            if ctx.registry is not None:
                ctx.registry.discard_feed(feed)
            feeds = request.app[FEEDS_BY_TOKEN_KEY].get(feed.token)
            if feeds is not None:
                feeds.discard(feed)
                if not feeds:
                    del request.app[FEEDS_BY_TOKEN_KEY][feed.token]
        session.connection_lost(None)
        if transport.closing_task is not None:
            await transport.closing_task
        elif not ws.closed:
            await ws.close()
    return ws


async def _close_all(app: web.Application) -> None:
    """At shutdown, close every open session (1001), so none holds the server up."""
    opened: weakref.WeakSet[StreamSession] = app[SESSIONS_OPEN_KEY]
    for session in list(opened):
        session.close("shutdown")


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """``/takproto/1`` on the certificate and password listeners (not on the anonymous one)."""
    if mode is not AuthMode.ANONYMOUS:
        app[SESSIONS_OPEN_KEY] = weakref.WeakSet()
        app.on_shutdown.append(_close_all)
        app.router.add_get(PATH, takproto_stream)
