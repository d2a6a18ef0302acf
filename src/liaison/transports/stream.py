"""TCP and TLS stream listeners: bind first, then serve (DESIGN.md convention 7).

Both are asyncio servers whose protocol is a :class:`~liaison.session.StreamSession`; TLS is the
same listener with a server ``SSLContext`` that requires a client certificate from our CA, so a
client without one is refused during the handshake, before any session exists.

TLS connections are wrapped by :class:`LeanSSLProtocol`, asyncio's own TLS protocol with one
change: the buffer the socket is read into is shared by every connection of a listener instead of
one 256 KiB buffer per connection (docs/performance.md, "Cheap connections").
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from asyncio import sslproto
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from liaison.config import Endpoint

log = logging.getLogger(__name__)

# asyncio's TLS protocol state while the connection is open, and the errors its write path takes
# for "OpenSSL wants more first" (asyncio/sslproto.py, CPython 3.11-3.13).
_WRAPPED = sslproto.SSLProtocolState.WRAPPED
_SSL_AGAIN = (ssl.SSLWantReadError, ssl.SSLSyscallError)

# Pending connections the kernel queues before accept() (capped by net.core.somaxconn, 4096 on
# current Linux). TAK clients reconnect in bursts after a server restart; while the event loop is
# busy with handshakes, connections past the backlog have their SYN dropped and retry only after
# 1, 3, 7 s..., so a short backlog turns a burst of 2,000 into tens of seconds.
LISTEN_BACKLOG = 4096

# Bytes one socket read of a TLS listener takes at most: one buffer per listener, shared by all its
# connections (asyncio copies every read into the connection's TLS input at once).
TLS_SOCKET_READ_BYTES = 256 * 1024

# Bytes of decrypted data taken from OpenSSL per read call (a TLS record holds at most 16 KiB of
# plaintext, RFC 8446 section 5.1); asyncio's default of 256 KiB allocates that much per call.
TLS_PLAINTEXT_READ_BYTES = 16 * 1024

# Seconds a TLS client has to complete its handshake; a peer that stalls it is dropped.
TLS_HANDSHAKE_TIMEOUT_S = 15


async def start_stream_listener(
    endpoint: Endpoint,
    factory: Callable[[], asyncio.Protocol],
    *,
    ssl_context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
) -> asyncio.Server:
    """Bind ``endpoint`` and start accepting. Port 0 binds a free port (read it back).
    ``reuse_port``: SO_REUSEPORT, so the workers of ``liaison serve --workers N`` share the port
    and the kernel spreads new connections over them."""
    loop = asyncio.get_running_loop()
    protocol_factory: Callable[[], asyncio.BaseProtocol] = factory
    if ssl_context is not None:
        protocol_factory = _tls_factory(loop, factory, ssl_context)
    server = await loop.create_server(
        protocol_factory,
        host=endpoint.host,
        port=endpoint.port,
        backlog=LISTEN_BACKLOG,
        reuse_address=True,
        reuse_port=reuse_port or None,
    )
    # asyncio sets TCP_NODELAY on every accepted TCP socket, so small CoT frames never wait for
    # Nagle's algorithm.
    return server


class LeanSSLProtocol(sslproto.SSLProtocol):
    """asyncio's server-side TLS protocol, reading the socket into a buffer shared by a listener.

    ``asyncio.sslproto.SSLProtocol`` (CPython 3.11-3.13) gives every connection its own
    ``bytearray(256 KiB)`` for ``recv_into``, zero-filled, so resident: 256 KiB per idle client.
    The transport calls ``get_buffer``, ``recv_into`` and ``buffer_updated`` back to back, and
    ``buffer_updated`` copies the bytes into the connection's ``MemoryBIO`` at once, so one
    buffer per event loop serves every connection. Everything else (handshake, timeouts, flow
    control, shutdown) is asyncio's own.
    """

    max_size = TLS_PLAINTEXT_READ_BYTES

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app_protocol: asyncio.BaseProtocol,
        ssl_context: ssl.SSLContext,
        read_buffer: memoryview,
    ) -> None:
        super().__init__(
            loop,
            app_protocol,
            ssl_context,
            # No waiter: asyncio checks for None; a failed handshake closes the connection and
            # is logged at debug level, as with create_server(ssl=...).
            None,  # type: ignore[arg-type]
            server_side=True,
            ssl_handshake_timeout=int(TLS_HANDSHAKE_TIMEOUT_S),
        )
        # Drop the per-connection buffer the base class made (max_size, so 16 KiB here): every
        # read goes into the listener's buffer, and buffer_updated reads from this view.
        self._ssl_buffer = bytearray()
        self._ssl_buffer_view = read_buffer

    def get_buffer(self, n: int) -> memoryview:
        return self._ssl_buffer_view

    def _write_appdata(self, list_of_data: list[bytes]) -> None:
        """One write of the session's: encrypt it and hand the record to the socket at once.

        The common case (the connection open, nothing of an earlier write still waiting, the
        socket not paused, one piece of data: a session writes what it has for its peer once per
        flush) skips asyncio's general path (backlog bookkeeping, three more calls per write):
        the same steps in the same order, ``SSLObject.write``, the outgoing BIO to the socket
        transport, then asyncio's own write flow control. Anything else, and a partial write,
        takes asyncio's path unchanged.
        """
        # asyncio's private state (asyncio/sslproto.py, CPython 3.11-3.13), which typeshed
        # describes only in part.
        me: Any = self
        if (
            me._state is not _WRAPPED
            or me._write_backlog
            or me._ssl_writing_paused
            or len(list_of_data) != 1
        ):
            super()._write_appdata(list_of_data)
            return
        data = list_of_data[0]
        try:
            try:
                written = me._sslobj.write(data)
            except _SSL_AGAIN:
                written = 0
            if written < len(data):  # a partial write: asyncio's loop writes the rest as ever
                rest = data[written:]
                me._write_backlog.append(rest)
                me._write_buffer_size += len(rest)
                me._do_write()
                return
            record = me._outgoing.read()
            if record:
                me._transport.write(record)
            me._control_app_writing()
        except Exception as exc:  # as asyncio's own path does with any error of a write
            me._fatal_error(exc, "Fatal error on SSL protocol")


def _tls_factory(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    ssl_context: ssl.SSLContext,
) -> Callable[[], asyncio.BaseProtocol]:
    """A protocol factory that wraps each accepted connection in :class:`LeanSSLProtocol`."""
    read_buffer = memoryview(bytearray(TLS_SOCKET_READ_BYTES))

    def make() -> asyncio.BaseProtocol:
        return LeanSSLProtocol(loop, factory(), ssl_context, read_buffer)

    return make


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
