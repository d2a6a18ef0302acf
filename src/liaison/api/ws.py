"""The web map's live feed: one WebSocket per browser tab, subscribed to the router for its user.

Messages are JSON text (docs/api.md): first ``{"kind": "snapshot", "features": [...]}`` with the
current picture the user may see, then one message per event the router delivers:
``update`` (a Feature), ``delete`` (the uid a ``t-x-d-d`` removes) or ``chat`` (a GeoChat
``b-t-f``). The router only hands this subscriber what its user may see.

Outbound policy (DESIGN.md convention 9, as ``session.py``): ``deliver`` never blocks; messages
wait in an :class:`~liaison.transports.outbound.OutboundQueue` where a newer position report of a
uid replaces the waiting one in its place; past :data:`WS_MAX_PENDING` waiting messages the
browser is a slow consumer and its socket is closed (1013, "try again later"), so one stalled tab
never holds the router back.
Keepalive is WebSocket ping/pong (RFC 6455 5.5.2), sent by aiohttp every
:data:`WS_HEARTBEAT_S`.

A feed lasts no longer than what let it open: each socket is a :class:`WebFeed` in the app's
session registry, which ends it when its user or certificate is revoked (the same sweep that
closes 8089 sessions), and a feed opened with a web sign-in ends the moment that sign-in is
signed out or found expired (:data:`FEED_CLOSE` lists the close codes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import OrderedDict
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from liaison.api.auth import SESSION_COOKIE, AuthMode, WebSessions
from liaison.api.context import CONTEXT_KEY, context, principal
from liaison.api.files import same_origin
from liaison.api.geojson import chat_message, event_feature, is_map_item
from liaison.api.rest import API, web_uid
from liaison.api.server import MODE_KEY, SESSIONS_KEY
from liaison.identity.events import AccessEnded
from liaison.metrics import Counter, Metrics
from liaison.model.event import Event
from liaison.model.principal import Principal
from liaison.router import Outgoing, Router
from liaison.session import LiveFeed
from liaison.transports.outbound import (
    COALESCED,
    DROPPED,
    OutboundLimits,
    OutboundQueue,
    OutboundStatistics,
    WaterMarks,
)

log = logging.getLogger(__name__)

# Messages that may wait for one browser before it is disconnected. Position reports coalesce per
# uid, so this bounds what is not a position (chats, markers, shapes, deletes): a tab that falls
# 2,000 of those behind is better reloaded (it gets a fresh snapshot) than fed a backlog.
WS_MAX_PENDING = 2000
# Seconds between pings; aiohttp closes a socket whose pong does not come back within half that.
# 30 s keeps NAT and proxy mappings alive (most drop idle TCP after 60 s or more).
WS_HEARTBEAT_S = 30.0
# Largest message a browser may send. The feed is one-way; only control frames are expected.
WS_MAX_INCOMING_BYTES = 4096
# Encoded messages kept for reuse across sockets: one event fanned out to many browsers is turned
# into JSON once. 4,096 covers more than a second of a busy exercise (1,000 events/s).
ENCODE_CACHE_SIZE = 4096
# Under load, seconds between writes to one socket: everything that arrived meanwhile goes out in
# one write (one system call instead of one per message, as session.WriteBatcher does for TAK
# clients). 10 ms adds at most 10 ms to a message and, at 1,000 events/s, cuts writes tenfold.
WS_BATCH_S = 0.010
# Bytes the transport may hold for one browser before the writer waits for it to drain; while it
# waits, position updates keep coalescing and WS_MAX_PENDING still marks a slow consumer.
WS_HIGH_WATER = 256 * 1024
# The writer goes on as soon as the buffer is back at the high-water mark (no hysteresis: the
# writer polls, it is not called back).
WS_WATER_MARKS = WaterMarks(high=WS_HIGH_WATER, low=WS_HIGH_WATER)
# Seconds between checks while waiting for a full transport buffer to drain.
WS_DRAIN_POLL_S = 0.02

# How a feed is closed when what let it open ends (RFC 6455 7.4.2: codes 4000-4999 are the
# application's). 4401 mirrors HTTP 401 (sign in again), 4403 mirrors 403.
FEED_CLOSE: dict[str, tuple[int, bytes]] = {
    "signed_out": (4401, b"signed out"),
    "expired": (4401, b"session expired"),
    "revoked": (4403, b"revoked"),
    "shutdown": (WSCloseCode.GOING_AWAY, b"server shutdown"),
}

ENCODER_KEY: web.AppKey[FeedEncoder] = web.AppKey("liaison.ws.encoder")
METRICS_KEY: web.AppKey[WsMetrics] = web.AppKey("liaison.ws.metrics")
SOCKETS_KEY: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("liaison.ws_sockets")
# Open feeds by the web sign-in (cookie token) they were opened with, to end them at sign-out.
FEEDS_BY_TOKEN_KEY: web.AppKey[dict[str, set[LiveFeed]]] = web.AppKey("liaison.ws_feeds")


class WsMetrics:
    """The feed's counters, shared by every socket of a listener."""

    def __init__(self, ctx_metrics: Metrics) -> None:
        self.opened: Counter = ctx_metrics.counter(
            "liaison_ws_connections_total", "WebSocket feeds opened"
        )
        self.closed: Counter = ctx_metrics.counter(
            "liaison_ws_closed_total", "WebSocket feeds ended", "reason"
        )
        self.coalesced: Counter = ctx_metrics.counter(
            "liaison_ws_coalesced_total", "Position updates replaced while waiting for a browser"
        )


class FeedEncoder:
    """Turns an outgoing event into the feed's JSON text, once per event for every socket."""

    def __init__(self, router: Router, size: int = ENCODE_CACHE_SIZE) -> None:
        self._router = router
        self._size = size
        # id(event) -> (event, (frame, text)); holding the event keeps its id from being reused.
        self._cache: OrderedDict[int, tuple[Event, tuple[bytes, str] | None]] = OrderedDict()

    def encode(self, out: Outgoing) -> str | None:
        """The message's JSON text (None for what the map does not show)."""
        frame = self.frame(out)
        return None if frame is None else frame[1]

    def frame(self, out: Outgoing) -> tuple[bytes, str] | None:
        """The message as a whole WebSocket text frame, and its text; built once per event.

        Server-to-client frames are never masked (RFC 6455 5.1) and the feed is not compressed,
        so the bytes of a frame are the same for every socket."""
        event = out.event
        key = id(event)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is event:
            return hit[1]
        text = self._build(event)
        built = (text_frame(text.encode("utf-8")), text) if text is not None else None
        self._cache[key] = (event, built)
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return built

    def _build(self, event: Event) -> str | None:
        message = feed_message(event, self._router.banner(event))
        return json.dumps(message, separators=(",", ":")) if message is not None else None


def server_frame(payload: bytes, opcode: int) -> bytes:
    """One unmasked, final WebSocket frame (RFC 6455 5.2: FIN + opcode, then the length in 7
    bits, or 126 + 16 bits, or 127 + 64 bits, network order): what a server sends."""
    first = 0x80 | opcode
    n = len(payload)
    if n < 126:
        header = bytes((first, n))
    elif n < 1 << 16:
        header = bytes((first, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 127)) + n.to_bytes(8, "big")
    return header + payload


def text_frame(payload: bytes) -> bytes:
    """One text frame (opcode 1) of ``payload`` (UTF-8)."""
    return server_frame(payload, 0x1)


def mission_message(event: Event) -> dict[str, Any] | None:
    """A mission notice (``t-x-m-c``, ``t-x-m-c-l``, ...; tak-missions.md 7.3) as the web map's
    ``{"kind": "mission", "notice": type, "name": mission}``: the page re-reads the mission it
    shows. The router delivers notices only to a mission's live subscribers who may see what
    the notice is about."""
    mission = event.detail.find("mission") if event.detail is not None else None
    name = mission.get("name") if mission is not None else None
    if not name:
        return None
    return {"kind": "mission", "notice": event.type, "name": name}


def feed_message(event: Event, label: str | None) -> dict[str, Any] | None:
    """The feed message for one event, or None for what the map does not show (receipts, file
    transfer requests, tasking)."""
    if event.is_delete:
        return {"kind": "delete", "uid": event.link_uid} if event.link_uid else None
    if event.type == "b-t-f":
        return {"kind": "chat", "message": chat_message(event, label)}
    if event.type.startswith("t-x-m-"):
        return mission_message(event)
    if not is_map_item(event):
        return None
    return {"kind": "update", "feature": event_feature(event, label)}


class WsSubscriber:
    """A browser's subscription: the router's view of one WebSocket."""

    def __init__(
        self,
        viewer: Principal,
        *,
        client_uid: str,
        callsign: str,
        max_pending: int = WS_MAX_PENDING,
        metrics: WsMetrics | None = None,
    ) -> None:
        self._principal = viewer
        self.client_uid: str | None = client_uid
        self.callsign: str | None = callsign
        self._metrics = metrics
        self._queue: OutboundQueue[Outgoing] = OutboundQueue(OutboundLimits(max_items=max_pending))
        self._wake = asyncio.Event()
        self.stopped = False

    @property
    def principal(self) -> Principal:
        return self._principal

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def overflowed(self) -> bool:
        """More than ``max_pending`` messages waited: a slow consumer, being closed."""
        return self._queue.overflowed

    def statistics(self) -> OutboundStatistics:
        """The outbound queue's statistics (depth, peak, coalesced, dropped, ...)."""
        return self._queue.statistics()

    def deliver(self, out: Outgoing) -> None:
        """Queue one event. Never blocks or raises (the router calls it)."""
        if self.stopped:
            return
        put = self._queue.put(out, out.coalesce_key)
        if put is COALESCED:
            if self._metrics is not None:
                self._metrics.coalesced.inc()
            return
        if put is not DROPPED:
            self._wake.set()

    def stop(self) -> None:
        """Deliver nothing more (the feed is ending): drop what waits and wake the writer."""
        self.stopped = True
        self._queue.close()
        self._wake.set()

    async def take(self) -> list[Outgoing]:
        """Wait for queued events and take them all, oldest first."""
        await self._wake.wait()
        return self.take_now()

    def pause(self) -> None:
        """The socket's buffer is full: the writer waits for it (counted in statistics)."""
        self._queue.pause()

    def resume(self) -> None:
        self._queue.resume()

    def take_now(self) -> list[Outgoing]:
        """Take what is queued now, oldest first, without waiting."""
        self._wake.clear()
        return self._queue.take()


class WebFeed:
    """The session registry's handle on one open feed (a ``session.LiveFeed``).

    ``end`` stops deliveries at once (nothing is written after it) and sends the close frame of
    :data:`FEED_CLOSE` for the reason."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        sub: WsSubscriber,
        router: Router,
        *,
        token: str | None,
        sessions: WebSessions,
    ) -> None:
        self._ws = ws
        self._sub = sub
        self._router = router
        self.token = token
        self._sessions = sessions
        self.ended: str | None = None
        self.closing: asyncio.Task[bool] | None = None

    @property
    def principal(self) -> Principal:
        return self._sub.principal

    def still_valid(self) -> bool:
        return self.token is None or self._sessions.alive(self.token)

    def end(self, reason: str) -> None:
        if self.ended is not None:
            return
        self.ended = reason
        self._router.detach(self._sub)
        self._sub.stop()
        if self._ws.closed:
            return
        code, message = FEED_CLOSE.get(reason, (WSCloseCode.POLICY_VIOLATION, reason.encode()))
        log.info("ws feed of %s closed: %s", self.principal.name, reason)
        self.closing = asyncio.get_running_loop().create_task(
            self._ws.close(code=code, message=message), name="ws-feed-close"
        )


def origin_allowed(request: web.Request) -> bool:
    # Browsers send Origin on every WebSocket handshake (RFC 6455 4.1 item 8). A page of another
    # site must not open a feed with this browser's certificate or cookie (cross-site WebSocket
    # hijacking); clients that are not browsers send no Origin.
    origin = request.headers.get("Origin")
    return origin is None or same_origin(request, origin)


async def _write(
    ws: web.WebSocketResponse,
    sub: WsSubscriber,
    encoder: FeedEncoder,
    transport: asyncio.Transport,
) -> None:
    """Send queued events until the socket closes or the browser falls too far behind.

    Each pass writes every waiting message as whole frames in one ``transport.write``, at most
    once per :data:`WS_BATCH_S`. aiohttp's own frames (pings, the close) are written whole too, on
    the same loop, so frames never interleave. The writer never writes past a closing socket.
    """
    loop = asyncio.get_running_loop()
    last = float("-inf")
    while not ws.closed:
        items = await sub.take()
        if sub.stopped:
            return
        wait = last + WS_BATCH_S - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
            items += sub.take_now()
        if not sub.overflowed and WS_WATER_MARKS.should_pause(transport.get_write_buffer_size()):
            sub.pause()
            while not sub.overflowed and not WS_WATER_MARKS.may_resume(
                transport.get_write_buffer_size()
            ):
                if ws.closed or transport.is_closing():
                    return
                await asyncio.sleep(WS_DRAIN_POLL_S)
                items += sub.take_now()
            sub.resume()
        if sub.overflowed:
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"slow consumer")
            return
        frames = [f[0] for f in (encoder.frame(out) for out in items) if f is not None]
        if ws.closed or transport.is_closing() or sub.stopped:
            return
        if frames:
            transport.write(b"".join(frames))
            last = loop.time()


async def _serve(
    ws: web.WebSocketResponse,
    sub: WsSubscriber,
    encoder: FeedEncoder,
    transport: asyncio.Transport,
) -> str:
    """Write the feed while reading the socket (which answers pings and notices the close)."""
    lost = False
    try:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(_write(ws, sub, encoder, transport), name="ws-writer")
            async for msg in ws:
                if msg.type is WSMsgType.ERROR:
                    break  # anything else from the browser is ignored: the feed is one-way
            if not sub.overflowed:
                writer.cancel()  # the browser left (or the feed ended); a slow consumer's writer
                # is closing it
    except* ConnectionError:
        lost = True
    if sub.overflowed:
        return "slow_consumer"
    return "connection_lost" if lost else "closed"


async def stream(request: web.Request) -> web.WebSocketResponse:
    """``GET /api/v1/stream``: the live feed for the caller."""
    if not origin_allowed(request):
        raise web.HTTPForbidden(text="cross-site WebSocket refused\n")
    ctx = context(request)
    viewer = principal(request)
    ws = web.WebSocketResponse(
        heartbeat=WS_HEARTBEAT_S, max_msg_size=WS_MAX_INCOMING_BYTES, compress=False
    )
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(text="a WebSocket upgrade is required\n")
    transport = request.transport
    if transport is None:
        raise web.HTTPBadRequest(text="connection already closed\n")
    await ws.prepare(request)
    request.app[SOCKETS_KEY].add(ws)
    metrics = request.app[METRICS_KEY]
    encoder = request.app[ENCODER_KEY]
    sub = WsSubscriber(viewer, client_uid=web_uid(viewer), callsign=viewer.name, metrics=metrics)
    metrics.opened.inc()
    reason = "closed"
    router = ctx.router
    sessions = request.app[SESSIONS_KEY]
    cookie = request.cookies.get(SESSION_COOKIE)
    # A feed opened with a web sign-in lasts as long as that sign-in (with HTTP Basic or a client
    # certificate there is none: only revocation ends it).
    token = (
        cookie if request.app[MODE_KEY] is AuthMode.PASSWORD and sessions.alive(cookie) else None
    )
    feed = WebFeed(ws, sub, router, token=token, sessions=sessions)
    by_token = request.app[FEEDS_BY_TOKEN_KEY]
    if token is not None:
        by_token.setdefault(token, set()).add(feed)
    if ctx.registry is not None:
        ctx.registry.add_feed(feed)
    # Attach and take the snapshot in the same loop turn: every later event is queued for the
    # socket, every earlier one is in the snapshot; none is lost or sent twice.
    router.attach(sub)
    try:
        features = [
            event_feature(e, router.banner(e))
            for e in router.picture(viewer, path="ws")
            if is_map_item(e)
        ]
        await ws.send_str(json.dumps({"kind": "snapshot", "features": features}))
        reason = await _serve(ws, sub, encoder, transport)
    except ConnectionError:
        reason = "connection_lost"
    finally:
        router.detach(sub)
        if ctx.registry is not None:
            ctx.registry.discard_feed(feed)
        if token is not None:
            feeds = by_token.get(token)
            if feeds is not None:
                feeds.discard(feed)
                if not feeds:
                    del by_token[token]
        metrics.closed.inc(feed.ended or reason)
        if feed.closing is not None:
            await feed.closing  # bounded by the socket's close timeout
        elif not ws.closed:
            await ws.close()
    return ws


async def _close_feeds(app: web.Application) -> None:
    """At shutdown, tell every open feed the server is going away, so none holds it up."""
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS_KEY]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """The WebSocket feed on one listener."""
    ctx = app[CONTEXT_KEY]
    app[ENCODER_KEY] = FeedEncoder(ctx.router)
    app[METRICS_KEY] = WsMetrics(ctx.metrics)
    app[SOCKETS_KEY] = weakref.WeakSet()
    by_token: dict[str, set[LiveFeed]] = {}
    app[FEEDS_BY_TOKEN_KEY] = by_token

    def sign_in_ended(ended: AccessEnded) -> None:
        if ended.sign_in is None:
            return
        for feed in list(by_token.get(ended.sign_in, ())):
            feed.end(ended.reason)

    sessions = app.get(SESSIONS_KEY)
    if sessions is not None:  # the app builds one; a bare application in a test may not
        sessions.events.subscribe(sign_in_ended)
    app.on_shutdown.append(_close_feeds)
    app.router.add_get(f"{API}/stream", stream)
