"""The exception hierarchy of Liaison, in one place.

    LiaisonError                      base of everything we raise on purpose
    ├── ConfigError                   a setting is missing or wrong; names the key
    ├── PeerError                     the peer misbehaved: ends that peer's session only
    │   ├── ProtocolError             the byte stream cannot be understood or resynchronised
    │   │   ├── FrameTooLarge         a frame passed its named size limit
    │   │   └── MalformedStream       the framing itself is broken
    │   ├── InvalidEvent              one frame parsed as a frame but not as a valid event;
    │   │                             the stream stays in sync, so only the event is refused
    │   ├── AuthenticationFailed      credentials or certificate refused
    │   └── SlowConsumer              the peer does not read fast enough; it is disconnected
    ├── StorageError                  the store could not do what was asked
    └── PkiError                      certificate material is missing or unusable

"The peer misbehaved" (PeerError) ends that peer's session and is counted; anything else that
escapes is a bug in Liaison and is allowed to surface. Foreign exceptions (ssl, sqlite3, protobuf's
DecodeError) are translated to these at the boundary that calls the foreign code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


class LiaisonError(Exception):
    """Base class of every error Liaison raises on purpose."""


class ConfigError(LiaisonError):
    """A configuration value is missing or invalid. The message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class PeerError(LiaisonError):
    """The peer did something wrong. ``reason`` is a short stable code used in metrics."""

    reason: str = "peer_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ProtocolError(PeerError):
    """The stream cannot be understood; the session that produced it must end."""

    reason = "protocol_error"


class FrameTooLarge(ProtocolError):
    """A frame grew past its named limit before it was complete."""

    reason = "frame_too_large"


class MalformedStream(ProtocolError):
    """The framing is broken (bad header byte, bad varint, garbage between events)."""

    reason = "malformed_stream"


class InvalidEvent(PeerError):
    """A complete frame that is not an acceptable event. The stream itself is still in sync."""

    reason = "invalid_event"


class AuthenticationFailed(PeerError):
    """Credentials or certificate were refused."""

    reason = "auth_failed"


class SlowConsumer(PeerError):
    """The peer's outbound queue overflowed past the disconnect threshold."""

    reason = "slow_consumer"


class StorageError(LiaisonError):
    """The store failed; wraps the driver's exception."""


class UnreadableRecord(StorageError):
    """A stored record that does not parse (written by another version or damaged): reading it
    again gives the same answer, so it is refused, not retried."""


class PkiError(LiaisonError):
    """Certificate or key material is missing, unreadable or inconsistent."""


class ListenError(LiaisonError):
    """A listener cannot bind its address (in use, not permitted, no such local address). The
    message names the address, the listener and its flag; ``liaison`` exits with
    :attr:`exit_code` (docs/configuration.md, Exit codes)."""

    exit_code = 3

    def __init__(self, address: str, listener: str, exc: OSError) -> None:
        # asyncio's bind error carries a long strerror; the plain one names the cause.
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        super().__init__(f"cannot listen on {address} for {listener}: {reason}")
        self.errno = exc.errno


@contextlib.contextmanager
def listen_errors(address: object, listener: str) -> Iterator[None]:
    """Turn the OSError of binding ``address`` into a :class:`ListenError`."""
    try:
        yield
    except OSError as exc:
        raise ListenError(str(address), listener, exc) from exc
