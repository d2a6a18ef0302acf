"""What every wire's connection handling shares (native.py, takv2.py, takv2_server.py): the tap
tests read the plaintext through, the sentinel that ends a connection's TaskGroup, the search for
the real failure in its exception group, and the bounded close of a writer."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

# How long closing a connection may wait for the peer's side of the TLS close.
CLOSE_TIMEOUT_S = 2.0

# Called with ("out" | "in", plaintext bytes) for every chunk written to or read from a peer;
# tests use it to look at exactly what crossed the link.
Tap = Callable[[str, bytes], None]


class ConnectionEnded(Exception):
    """Raised inside a connection's TaskGroup to stop its other tasks (not a failure)."""


def first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The first exception in ``group`` (nested groups searched) that is not ConnectionEnded."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = first_failure(exc)
            if inner is not None:
                return inner
        elif not isinstance(exc, ConnectionEnded):
            return exc
    return None


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``, waiting at most CLOSE_TIMEOUT_S for the peer; a peer that does not
    answer by then (a cut line, a frozen host) has the connection aborted, so its socket is
    released at once rather than when asyncio's own TLS shutdown timeout (30 s) ends it."""
    writer.close()
    # Cancellation is never swallowed here (DESIGN.md convention 8): a shutdown must end us.
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except TimeoutError:  # before OSError, of which it is a subclass
        writer.transport.abort()
    except (OSError, ssl.SSLError):
        pass  # the connection failed while closing: it is closed
