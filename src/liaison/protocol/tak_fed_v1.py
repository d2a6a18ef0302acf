"""TAK Server federation v1 framing (sans-IO): a stream of length-prefixed ``FederatedEvent``\\s.

shared/reference/tak-federation.md section 12: "Framing, both directions: 4-byte big-endian
length, then exactly that many bytes of a serialized ``FederatedEvent``. No handshake message, no
health check, no ROL, no group mapping, no provenance. A message that does not parse closes the
connection." Section 1 (table): same framing on TAK's port 9000 (the v1 default).

This module sees only plaintext bytes: :class:`FrameReader` splits a stream into frame payloads
(any split of the input is harmless), :class:`V1Stream` also parses each payload with a parser
the caller supplies (the generated ``FederatedEvent.FromString``, which lives with the
federation code), and :func:`encode_frame` writes one frame. :class:`RecentDigests` is the
bounded memory of what was already applied, with which a receiver drops a frame it got before
(TAK federation has no acknowledgement, so a sender that resends after an outage sends some
events twice).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Generic, TypeVar

from liaison import errors
from liaison.protocol.framing import LengthFramer
from liaison.protocol.recent import Recent

T = TypeVar("T")

# Bytes of the length prefix: an unsigned 32-bit integer, big-endian (section 12).
LENGTH_BYTES = 4
_LENGTH = struct.Struct(">I")

# Largest frame payload (one serialized FederatedEvent) we read or write. TAK Server accepts
# 256 MiB per federation message (section 2.1, "Max message size"), which is what it needs for
# files inside ROL on v2; v1 carries no ROL, and an event we accept is capped far lower anyway
# (protocol/limits.py: MAX_EVENT_BYTES of XML after conversion). 1 MiB is the limit of every
# other event stream we read (limits.MAX_PROTO_EVENT_BYTES) and bounds what one peer can make us
# buffer. A frame that declares more is refused as soon as its 4 length bytes arrive.
MAX_FRAME_BYTES = 1024 * 1024

# Frames remembered as applied, per peer, to drop the same frame received again (a resend after
# an outage; a latest-state offer on reconnect that repeats an unchanged event). 10,000 SHA-256
# digests as hex keys are about 1.5 MB.
MAX_RECENT_DIGESTS = 10_000


class UndecodableFrame(errors.ProtocolError):
    """A complete frame whose payload is not a ``FederatedEvent`` (section 12: the connection is
    closed). ``payload`` is the frame's bytes, for the record of what was refused."""

    reason = "undecodable"

    def __init__(self, message: str, payload: bytes) -> None:
        super().__init__(message)
        self.payload = payload


def encode_frame(payload: bytes, max_size: int = MAX_FRAME_BYTES) -> bytes:
    """One v1 frame: the payload's length as 4 bytes big-endian, then the payload."""
    if len(payload) > max_size:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {max_size}")
    return _LENGTH.pack(len(payload)) + payload


class FrameReader(LengthFramer):
    """Split a v1 stream into frame payloads (same API as the other stream framers).

    A length over ``max_size`` raises :class:`~liaison.errors.FrameTooLarge` as soon as the
    prefix is complete, before any of the payload is buffered. A length of 0 is a valid frame
    (an empty message). After an error the reader is dead: every later call raises it again.
    """

    def __init__(self, max_size: int = MAX_FRAME_BYTES) -> None:
        if not 0 <= max_size <= 0xFFFFFFFF:
            raise ValueError("max_size must fit the 4-byte length")
        super().__init__(max_size)

    def _next_frame(self) -> bytes | None:
        buf = self._buf
        start = self._start
        if len(buf) - start < LENGTH_BYTES:
            return None
        (length,) = _LENGTH.unpack_from(buf, start)
        if length > self._max_size:
            raise errors.FrameTooLarge(
                f"federation v1 frame declares {length} bytes, limit {self._max_size}"
            )
        end = start + LENGTH_BYTES + length
        if end > len(buf):
            return None
        self._start = end
        return bytes(buf[start + LENGTH_BYTES : end])


class V1Stream(Generic[T]):
    """Bytes in, parsed messages out: a :class:`FrameReader` and the message parser.

    ``parse`` turns one payload into a message and raises any exception for one that does not
    parse (protobuf's ``DecodeError``); that ends the stream with :class:`UndecodableFrame`.
    ``receive_data`` returns ``(payload, message)`` pairs, the payload being the exact bytes
    received (what a receiver hashes for its records and for duplicate suppression).
    """

    def __init__(self, parse: Callable[[bytes], T], max_size: int = MAX_FRAME_BYTES) -> None:
        self._parse = parse
        self._reader = FrameReader(max_size)
        self._error: errors.ProtocolError | None = None

    def receive_data(self, data: bytes) -> list[tuple[bytes, T]]:
        if self._error is not None:
            raise self._error
        out: list[tuple[bytes, T]] = []
        for payload in self._reader.receive_data(data):
            try:
                message = self._parse(payload)
            except Exception as exc:  # the parser's own error type is not ours to name
                self._error = UndecodableFrame(
                    f"federation v1 frame of {len(payload)} bytes is not a FederatedEvent: "
                    f"{type(exc).__name__}",
                    payload,
                )
                raise self._error from None
            out.append((payload, message))
        return out


class RecentDigests(Recent):
    """The digests of the last ``limit`` frames applied, oldest forgotten first (a digest seen
    again moves to the newest place)."""

    def __init__(self, limit: int = MAX_RECENT_DIGESTS) -> None:
        super().__init__(limit)
