"""TCP and TLS stream listeners: bind first, then serve (DESIGN.md convention 7).

Both are asyncio servers whose protocol is a :class:`~liaison.session.StreamSession`; TLS is the
same listener with a server ``SSLContext`` that requires a client certificate from our CA, so a
client without one is refused during the handshake, before any session exists.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

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
