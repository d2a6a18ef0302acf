"""TAK protocol version 1 stream framing: 0xBF, an unsigned varint length, then a TakMessage.

TAK protocol.txt, "Streaming Connections": after negotiation (or from the start on a protobuf-only
input) each message on a TCP/TLS stream is the magic byte 0xBF, the payload length as a protobuf
unsigned varint, and that many bytes of ``TakMessage`` payload, repeated with nothing between.
There is no version byte on a stream because the version was negotiated (tak-protocol.md 2.1).
"""

from __future__ import annotations

from liaison import errors
from liaison.protocol import limits
from liaison.protocol.framing import LengthFramer

# TAK protocol.txt: every v1 header starts with this byte (it is not valid leading UTF-8, so an
# XML reader fails fast on it too).
MAGIC = 0xBF


def encode_varint(n: int) -> bytes:
    """Protobuf unsigned varint: 7 bits per byte, least significant group first, MSB = more."""
    if n < 0:
        raise ValueError("varint cannot encode a negative number")
    if n >= 1 << 64:
        raise ValueError("varint is limited to 64 bits")
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(data: bytes | bytearray, pos: int = 0) -> tuple[int, int] | None:
    """Decode an unsigned varint at ``pos``: ``(value, end)``, or None if the bytes stop first.

    Raises MalformedStream for a varint longer than ``limits.MAX_VARINT_BYTES`` or one whose value
    does not fit in 64 bits (protobuf encoding spec, "Base 128 Varints").
    """
    value = 0
    shift = 0
    for i in range(limits.MAX_VARINT_BYTES):
        at = pos + i
        if at >= len(data):
            return None
        byte = data[at]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >= 1 << 64:
                raise errors.MalformedStream("varint does not fit in 64 bits")
            return value, at + 1
        shift += 7
    raise errors.MalformedStream(f"varint longer than {limits.MAX_VARINT_BYTES} bytes")


def frame(payload: bytes) -> bytes:
    """Stream-frame one TakMessage payload (protocol.txt, "Streaming Connections")."""
    return bytes((MAGIC,)) + encode_varint(len(payload)) + payload


class TakStreamFramer(LengthFramer):
    """Split a TAK protocol v1 stream into TakMessage payloads.

    Same API as :class:`liaison.protocol.xml_stream.XmlStreamFramer`. A frame whose declared
    length exceeds ``max_size`` is refused as soon as its header is read, before any of it is
    buffered. After an error the framer is dead: every later call raises it again.
    """

    def __init__(self, max_size: int = limits.MAX_PROTO_EVENT_BYTES) -> None:
        if max_size < 0:
            raise ValueError("max_size must not be negative")
        super().__init__(max_size)

    def _next_frame(self) -> bytes | None:
        buf = self._buf
        start = self._start
        if start >= len(buf):
            return None
        if buf[start] != MAGIC:
            raise errors.MalformedStream(
                f"TAK stream frame starts with {buf[start]:#04x}, expected 0xbf"
            )
        header = decode_varint(buf, start + 1)
        if header is None:
            return None
        length, payload_start = header
        if length > self._max_size:
            raise errors.FrameTooLarge(
                f"TAK stream frame declares {length} bytes, limit {self._max_size}"
            )
        end = payload_start + length
        if end > len(buf):
            return None
        self._start = end
        return bytes(buf[payload_start:end])
