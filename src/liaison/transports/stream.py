"""TCP and TLS stream listeners: bind first, then serve (DESIGN.md convention 7).

Both are asyncio servers whose protocol is a :class:`~liaison.session.StreamSession`; TLS is the
same listener with a server ``SSLContext`` that requires a client certificate from our CA, so a
client without one is refused during the handshake, before any session exists.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from liaison.config import Endpoint

log = logging.getLogger(__name__)

# Pending connections the kernel queues before accept(). TAK clients reconnect in bursts after a
# server restart; 1024 absorbs a few hundred clients arriving at once.
LISTEN_BACKLOG = 1024

# Seconds a TLS client has to complete its handshake; a peer that stalls it is dropped.
TLS_HANDSHAKE_TIMEOUT_S = 15.0


async def start_stream_listener(
    endpoint: Endpoint,
    factory: Callable[[], asyncio.Protocol],
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> asyncio.Server:
    """Bind ``endpoint`` and start accepting. Port 0 binds a free port (read it back)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory,
        host=endpoint.host,
        port=endpoint.port,
        ssl=ssl_context,
        backlog=LISTEN_BACKLOG,
        reuse_address=True,
        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if ssl_context else None,
    )
    # asyncio sets TCP_NODELAY on every accepted TCP socket, so small CoT frames never wait for
    # Nagle's algorithm.
    return server


def bound_port(server: asyncio.Server) -> int:
    """The port a listener actually bound (for port 0)."""
    return int(server.sockets[0].getsockname()[1])


@dataclass(frozen=True, slots=True)
class Keepalive:
    """TCP keepalive for stream connections: how a peer that vanished is found.

    A client that only reads (a listen-only integration) sends nothing, so silence is no sign of
    a dead peer; an unanswered keepalive probe is. After ``idle_s`` seconds without traffic the
    kernel sends a probe every ``interval_s`` seconds and drops the connection after ``count``
    unanswered ones (tcp(7): TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT). While data we wrote is
    unacknowledged the kernel retransmits instead of probing, and a peer that never acknowledges
    fails the write (and the connection) after its retransmissions (tcp_retries2, about 15
    minutes by default). TCP_USER_TIMEOUT is deliberately not set: it would also drop a live
    client that merely stops reading, which is the slow-consumer policy's call (session.py).
    ``idle_s`` 0 leaves the socket as the kernel made it.
    """

    idle_s: int = 60
    interval_s: int = 10
    count: int = 6


def set_keepalive(sock: socket.socket | object, keepalive: Keepalive) -> bool:
    """Turn on TCP keepalive on an accepted stream socket. False if the socket is not TCP.

    ``sock`` is what ``transport.get_extra_info("socket")`` returns (asyncio's TransportSocket).
    Options this platform lacks (macOS has no TCP_KEEPIDLE) are skipped.
    """
    if keepalive.idle_s <= 0:
        return False
    setsockopt = getattr(sock, "setsockopt", None)
    family = getattr(sock, "family", None)
    if setsockopt is None or family not in (socket.AF_INET, socket.AF_INET6):
        return False
    setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", keepalive.idle_s),
        ("TCP_KEEPINTVL", keepalive.interval_s),
        ("TCP_KEEPCNT", keepalive.count),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            setsockopt(socket.IPPROTO_TCP, option, value)
    return True
