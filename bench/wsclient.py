"""A lean sans-IO WebSocket client (RFC 6455) for the feed benchmark: handshake, frames, control.

Nothing here touches a socket. :func:`handshake_request` and :func:`check_handshake` do the
opening handshake, :class:`FrameParser` turns received bytes into frames however the reads split
them, and :class:`ClientConnection` puts the two together the way a client must behave: data
messages out, pings answered with pongs, a close answered with a close, every frame it sends
masked. It exists because a general-purpose client (aiohttp's) costs too much per message to
measure a server that sends 100,000 messages a second from one or two reader processes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from typing import NamedTuple

# Opcodes (RFC 6455 5.2, "Opcode").
OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# Close codes used here (RFC 6455 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009

# The GUID a server appends to the client's key before hashing (RFC 6455 1.3 and 4.2.2).
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Largest frame payload the parser accepts. The feed's first message is the snapshot of the whole
# picture, about 700 bytes a unit, so 64 MiB covers some 90,000 units.
DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024

# Largest handshake response head we wait for before giving up on the server.
MAX_HANDSHAKE_BYTES = 16 * 1024

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class ProtocolError(Exception):
    """The peer broke RFC 6455; ``code`` is the close code to answer with."""

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class Frame(NamedTuple):
    """One frame, payload already unmasked."""

    fin: bool
    opcode: int
    payload: bytes
    masked: bool


def make_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 random bytes, base64 (RFC 6455 4.1, client item 7)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_value(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer ``key`` with (RFC 6455 1.3)."""
    digest = hashlib.sha1(key.encode("ascii") + ACCEPT_GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def handshake_request(host: str, port: int, path: str, key: str) -> bytes:
    """The client's opening handshake (RFC 6455 4.1): an HTTP/1.1 GET with the upgrade headers.

    No Origin header: the benchmark is not a browser (the feed refuses only foreign origins)."""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode("ascii")


def split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """(response head, bytes after it) once the head's blank line has arrived, else None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HANDSHAKE_BYTES:
            raise ProtocolError("handshake response head too long")
        return None
    return data[:end], data[end + 4 :]


def check_handshake(head: bytes, key: str) -> None:
    """Raise ProtocolError unless ``head`` accepts the upgrade for ``key`` (RFC 6455 4.1, the
    client's checks of the server's response: 101, Upgrade, Connection, Sec-WebSocket-Accept)."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        raise ProtocolError(f"upgrade refused: {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        raise ProtocolError("response lacks Upgrade: websocket")
    if "upgrade" not in headers.get("connection", "").lower():
        raise ProtocolError("response lacks Connection: Upgrade")
    if headers.get("sec-websocket-accept") != accept_value(key):
        raise ProtocolError("wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions"):
        # We offered none, so the server may not use any (RFC 6455 9.1).
        raise ProtocolError("server chose an extension the client did not offer")


def apply_mask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (RFC 6455 5.3); its own inverse."""
    n = len(payload)
    if n == 0:
        return b""
    repeated = (mask * (n // 4 + 1))[:n]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(n, "big")


def encode_frame(
    opcode: int, payload: bytes, *, mask: bytes | None = None, fin: bool = True
) -> bytes:
    """One frame with the shortest length encoding (RFC 6455 5.2); masked when ``mask`` is given
    (a client masks every frame it sends, RFC 6455 5.3)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 1 << 16:
        head = bytes((first, mask_bit | 126)) + _U16.pack(n)
    else:
        head = bytes((first, mask_bit | 127)) + _U64.pack(n)
    if mask is None:
        return head + payload
    if len(mask) != 4:
        raise ValueError("a mask is 4 bytes")
    return head + mask + apply_mask(payload, mask)


class FrameParser:
    """Frames from a byte stream split anywhere: 7-bit, 16-bit and 64-bit lengths, masked or not.

    ``feed`` keeps an incomplete frame in a bytearray until the rest arrives and returns every
    complete frame in order. Header rules checked (RFC 6455 5.2 and 5.5): reserved bits clear (no
    extension was negotiated), known opcode, control frames unfragmented and at most 125 bytes, a
    64-bit length with its top bit clear, and no payload above ``max_payload``.
    """

    __slots__ = ("_buf", "_max_payload")

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self._max_payload = max_payload

    @property
    def buffered(self) -> int:
        """Bytes held that do not make a complete frame yet."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        end = len(buf)
        # Each pass takes one frame; a frame takes at least 2 bytes, so this ends.
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                raise ProtocolError("reserved bits set without an extension")
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            head = pos + 2
            if opcode >= 0x8:
                if opcode > OP_PONG:
                    raise ProtocolError(f"unknown control opcode {opcode:#x}")
                if not b0 & 0x80 or length > 125:
                    raise ProtocolError("control frame fragmented or longer than 125 bytes")
            elif opcode > OP_BINARY:
                raise ProtocolError(f"unknown data opcode {opcode:#x}")
            if length == 126:
                if end - head < 2:
                    break
                length = _U16.unpack_from(buf, head)[0]
                head += 2
            elif length == 127:
                if end - head < 8:
                    break
                length = _U64.unpack_from(buf, head)[0]
                if length >> 63:
                    raise ProtocolError("64-bit length with the most significant bit set")
                head += 8
            if length > self._max_payload:
                raise ProtocolError(f"frame of {length} bytes is too big", CLOSE_TOO_BIG)
            masked = bool(b1 & 0x80)
            if masked:
                if end - head < 4:
                    break
                mask = bytes(buf[head : head + 4])
                head += 4
            stop = head + length
            if stop > end:
                break
            payload = bytes(buf[head:stop])
            if masked:
                payload = apply_mask(payload, mask)
            frames.append(Frame(bool(b0 & 0x80), opcode, payload, masked))
            pos = stop
        if pos:
            del buf[:pos]
        return frames


class ClientConnection:
    """The client side of an open WebSocket, without I/O.

    ``receive`` takes bytes read from the socket and returns complete data messages as
    ``(opcode, payload)``; what the client must send back (pongs, the close reply) collects in
    :meth:`data_to_send`. Fragmented messages are reassembled; control frames may arrive between
    fragments (RFC 6455 5.4). A server must not mask its frames (RFC 6455 5.1): a masked one is a
    protocol error, answered with close 1002.
    """

    __slots__ = (
        "_fragment_opcode",
        "_fragments",
        "_outgoing",
        "_parser",
        "close_code",
        "closed",
        "pings",
    )

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._parser = FrameParser(max_payload)
        self._outgoing = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self.closed = False  # a close frame was received or sent
        self.close_code: int | None = None
        self.pings = 0

    def receive(self, data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
        if self.closed:
            return []
        try:
            frames = self._parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc.code)
            return []
        messages: list[tuple[int, bytes]] = []
        for fin, opcode, payload, masked in frames:
            if masked:
                self._fail(CLOSE_PROTOCOL_ERROR)
                break
            if opcode in (OP_TEXT, OP_BINARY):
                if self._fragments:
                    self._fail(CLOSE_PROTOCOL_ERROR)  # a new message inside a fragmented one
                    break
                if fin:
                    messages.append((opcode, payload))
                else:
                    self._fragment_opcode = opcode
                    self._fragments.append(payload)
            elif opcode == OP_CONTINUATION:
                if not self._fragments:
                    self._fail(CLOSE_PROTOCOL_ERROR)  # nothing to continue
                    break
                self._fragments.append(payload)
                if fin:
                    messages.append((self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments = []
            elif opcode == OP_PING:
                # A pong echoes the ping's application data (RFC 6455 5.5.3).
                self.pings += 1
                self._outgoing += encode_frame(OP_PONG, payload, mask=os.urandom(4))
            elif opcode == OP_CLOSE:
                # Echo the status code back and stop reading (RFC 6455 5.5.1).
                code = _U16.unpack_from(payload)[0] if len(payload) >= 2 else None
                self.close_code = code
                self._send_close(code if code is not None else CLOSE_NORMAL)
                break
            # OP_PONG: unsolicited pongs need no answer.
        return messages

    def close(self, code: int = CLOSE_NORMAL) -> None:
        """Start the closing handshake."""
        if not self.closed:
            self._send_close(code)

    def data_to_send(self) -> bytes:
        """Bytes the client must write now (pongs, close), and forget them."""
        if not self._outgoing:
            return b""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def _send_close(self, code: int) -> None:
        self.closed = True
        self._outgoing += encode_frame(OP_CLOSE, _U16.pack(code), mask=os.urandom(4))

    def _fail(self, code: int) -> None:
        self.close_code = code
        self._send_close(code)
