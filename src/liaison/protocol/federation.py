"""The federation link's wire protocol (sans-IO): framing, handshake, and the link messages.

Liaison's own protocol between two partner servers, documented in docs/protocol.md ("Federation
link") so that another implementation can be written from it. It runs inside mutual TLS; this
module sees only plaintext bytes and never touches a socket or a clock.

Every frame is::

    length  u32, big-endian: the number of bytes that follow (type + body), 1..MAX_FRAME_BYTES
    type    u8: one of the MessageType values
    body    length - 1 bytes, laid out per type

A length prefix rather than a delimiter (TAK Server federation v1 frames the same way, a 4-byte
big-endian length then a protobuf; tak-protocol.md section 6.1) means a split at any byte is
harmless and a hostile peer cannot make us scan for a terminator. Integers are big-endian.

Conversation (both sides are symmetric; each is sender and receiver of events):

1. each side sends HELLO (protocol versions, server id, policy id, version and digest);
2. each side checks the other's HELLO with :func:`check_hello`; on a mismatch it sends ERROR
   and closes; otherwise it sends RESUME(last sequence number it applied from this peer);
3. then EVENT / ACK / HEARTBEAT flow both ways. EVENT sequence numbers rise strictly on one
   connection; ACK(n) acknowledges every EVENT up to n (cumulative). ERROR ends the link.
"""

from __future__ import annotations

import enum
import json
import re
import struct
from collections import deque
from dataclasses import dataclass

from liaison import errors
from liaison.protocol import limits

# The protocol versions this implementation speaks, lowest first. Version 1 is this document.
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)

# Identifies a Liaison federation HELLO, so a peer speaking anything else is refused by name.
PROTOCOL_NAME = "liaison-federation"

# Bytes of the length prefix.
LENGTH_BYTES = 4

# EVENT header inside the body: seq (u64) and priority (u8).
_EVENT_HEADER = struct.Struct(">QB")
_U64 = struct.Struct(">Q")
_LENGTH = struct.Struct(">I")

# Largest frame body (type byte included). An EVENT carries one CoT event, which the streaming
# side already caps at limits.MAX_XML_EVENT_BYTES; 64 bytes of headroom hold its seq/priority.
# TAK Server allows 256 MiB per federation v2 message (tak-protocol.md section 1.7), far more
# than any event we would release, and more than we want one peer to make us buffer.
MAX_FRAME_BYTES = limits.MAX_XML_EVENT_BYTES + 64

# Largest HELLO or ERROR body. Both are a small JSON object (ids, a digest, a sentence).
MAX_CONTROL_BYTES = 4096

# Longest server id: it names a server in logs, audit records and provenance elements.
MAX_SERVER_ID_CHARS = 64
SERVER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", re.ASCII)

# Largest sequence number: they are stored in SQLite INTEGER (signed 64-bit).
MAX_SEQ = 2**63 - 1

# Priority classes carried on EVENT: 0 is the most urgent. Only 0..MAX_PRIORITY are valid.
MAX_PRIORITY = 15

# Largest ERROR code and message we keep (longer ones are cut, never refused).
MAX_ERROR_CODE_CHARS = 64
MAX_ERROR_MESSAGE_CHARS = 512


class MessageType(enum.IntEnum):
    HELLO = 0x01
    RESUME = 0x02
    EVENT = 0x03
    ACK = 0x04
    HEARTBEAT = 0x05
    ERROR = 0x06


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """Who a side is and which policy it enforces. The first frame each side sends."""

    versions: tuple[int, ...]
    server_id: str
    policy_id: str
    policy_version: int
    policy_digest: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    """The last EVENT sequence number the sender of RESUME has applied from its peer."""

    last_applied: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EventMsg:
    """One released CoT event: its link sequence number, priority class and exact bytes."""

    seq: int
    priority: int
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """Every EVENT with a sequence number up to ``seq`` has been applied (cumulative)."""

    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """Liveness; ``time_ms`` is the sender's clock, informational only."""

    time_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMsg:
    """Why the sender is closing the link. ``code`` is a stable token (see ErrorCode)."""

    code: str
    message: str


Message = Hello | Resume | EventMsg | Ack | Heartbeat | ErrorMsg


class ErrorCode(enum.StrEnum):
    """ERROR codes a Liaison sends. Receivers must accept any code they do not know."""

    VERSION = "version_unsupported"
    POLICY_ID = "policy_id_mismatch"
    POLICY_VERSION = "policy_version_mismatch"
    POLICY_DIGEST = "policy_digest_mismatch"
    SELF = "connected_to_self"
    PROTOCOL = "protocol_error"
    SHUTDOWN = "shutdown"
    REPLACED = "replaced"


# --- encoding ---------------------------------------------------------------------------------


def _frame(kind: MessageType, body: bytes) -> bytes:
    size = len(body) + 1
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes exceeds MAX_FRAME_BYTES")
    return _LENGTH.pack(size) + bytes((kind,)) + body


def _check_seq(seq: int, what: str) -> None:
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"{what} must be an integer in 0..2^63-1")


def _json(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def encode(message: Message) -> bytes:
    """The frame for one message. Raises ValueError for values out of range (our bug)."""
    match message:
        case Hello():
            if not SERVER_ID_RE.fullmatch(message.server_id):
                raise ValueError("server_id must be 1-64 of A-Z a-z 0-9 _ . : -")
            body = _json(
                {
                    "protocol": PROTOCOL_NAME,
                    "versions": list(message.versions),
                    "server_id": message.server_id,
                    "policy": {
                        "id": message.policy_id,
                        "version": message.policy_version,
                        "digest": message.policy_digest,
                    },
                }
            )
            if len(body) > MAX_CONTROL_BYTES:
                raise ValueError("HELLO exceeds MAX_CONTROL_BYTES")
            return _frame(MessageType.HELLO, body)
        case Resume():
            _check_seq(message.last_applied, "last_applied")
            return _frame(MessageType.RESUME, _U64.pack(message.last_applied))
        case EventMsg():
            _check_seq(message.seq, "seq")
            if not 0 <= message.priority <= MAX_PRIORITY:
                raise ValueError("priority out of range")
            return _frame(
                MessageType.EVENT,
                _EVENT_HEADER.pack(message.seq, message.priority) + message.payload,
            )
        case Ack():
            _check_seq(message.seq, "seq")
            return _frame(MessageType.ACK, _U64.pack(message.seq))
        case Heartbeat():
            _check_seq(message.time_ms, "time_ms")
            return _frame(MessageType.HEARTBEAT, _U64.pack(message.time_ms))
        case ErrorMsg():
            body = _json(
                {
                    "code": message.code[:MAX_ERROR_CODE_CHARS],
                    "message": message.message[:MAX_ERROR_MESSAGE_CHARS],
                }
            )
            return _frame(MessageType.ERROR, body[:MAX_CONTROL_BYTES])
    raise TypeError(f"not a federation message: {type(message).__name__}")


def encode_event(seq: int, priority: int, payload: bytes) -> bytes:
    """EVENT without building the dataclass (the hot path of a backlog drain)."""
    if not 0 <= seq <= MAX_SEQ or not 0 <= priority <= MAX_PRIORITY:
        raise ValueError("seq or priority out of range")
    size = len(payload) + _EVENT_HEADER.size + 1
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes exceeds MAX_FRAME_BYTES")
    return (
        _LENGTH.pack(size)
        + bytes((MessageType.EVENT,))
        + _EVENT_HEADER.pack(seq, priority)
        + payload
    )


# --- decoding ---------------------------------------------------------------------------------


def _bad(message: str) -> errors.MalformedStream:
    return errors.MalformedStream(message)


def _load_json(body: bytes, what: str) -> dict[str, object]:
    if len(body) > MAX_CONTROL_BYTES:
        raise errors.FrameTooLarge(f"{what} exceeds {MAX_CONTROL_BYTES} bytes")
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad(f"{what} is not JSON") from None
    if not isinstance(obj, dict):
        raise _bad(f"{what} is not a JSON object")
    return obj


def _decode_hello(body: bytes) -> Hello:
    obj = _load_json(body, "HELLO")
    if obj.get("protocol") != PROTOCOL_NAME:
        raise errors.ProtocolError("not a Liaison federation peer", reason="not_federation")
    versions = obj.get("versions")
    server_id = obj.get("server_id")
    policy = obj.get("policy")
    if (
        not isinstance(versions, list)
        or not 1 <= len(versions) <= 16
        or not all(type(v) is int and 0 < v < 65536 for v in versions)
    ):
        raise _bad("HELLO versions must be a list of 1-16 small positive integers")
    if not isinstance(server_id, str) or not SERVER_ID_RE.fullmatch(server_id):
        raise _bad("HELLO server_id is missing or not a server id")
    if not isinstance(policy, dict):
        raise _bad("HELLO policy is missing")
    pid, pver, pdig = policy.get("id"), policy.get("version"), policy.get("digest")
    if not isinstance(pid, str) or type(pver) is not int or not isinstance(pdig, str):
        raise _bad("HELLO policy needs id (string), version (integer) and digest (string)")
    if len(pid) > 64 or len(pdig) > 128 or not 0 <= pver <= MAX_SEQ:
        raise _bad("HELLO policy fields out of range")
    return Hello(
        versions=tuple(versions),
        server_id=server_id,
        policy_id=pid,
        policy_version=pver,
        policy_digest=pdig,
    )


def _decode_u64(body: bytes, what: str) -> int:
    if len(body) != _U64.size:
        raise _bad(f"{what} body must be 8 bytes")
    value: int = _U64.unpack(body)[0]
    if value > MAX_SEQ:
        raise _bad(f"{what} value out of range")
    return value


def _decode_error(body: bytes) -> ErrorMsg:
    obj = _load_json(body, "ERROR")
    code = obj.get("code")
    text = obj.get("message", "")
    if not isinstance(code, str) or not isinstance(text, str):
        raise _bad("ERROR needs code and message strings")
    return ErrorMsg(code=code[:MAX_ERROR_CODE_CHARS], message=text[:MAX_ERROR_MESSAGE_CHARS])


def decode(kind: int, body: bytes) -> Message:
    """One message from its type byte and body. Raises ProtocolError subclasses."""
    if kind == MessageType.EVENT:
        if len(body) < _EVENT_HEADER.size + 1:
            raise _bad("EVENT body shorter than its header plus one byte")
        seq, priority = _EVENT_HEADER.unpack_from(body)
        if seq > MAX_SEQ or seq == 0:
            raise _bad("EVENT seq out of range (1..2^63-1)")
        if priority > MAX_PRIORITY:
            raise _bad("EVENT priority out of range")
        return EventMsg(seq=seq, priority=priority, payload=body[_EVENT_HEADER.size :])
    if kind == MessageType.ACK:
        return Ack(seq=_decode_u64(body, "ACK"))
    if kind == MessageType.HEARTBEAT:
        return Heartbeat(time_ms=_decode_u64(body, "HEARTBEAT"))
    if kind == MessageType.RESUME:
        return Resume(last_applied=_decode_u64(body, "RESUME"))
    if kind == MessageType.HELLO:
        return _decode_hello(body)
    if kind == MessageType.ERROR:
        return _decode_error(body)
    raise _bad(f"unknown message type 0x{kind:02x}")


class FrameDecoder:
    """Splits a byte stream into messages. A decoder that raised is dead: it raises again."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._error: errors.ProtocolError | None = None

    def receive_data(self, data: bytes) -> list[Message]:
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[Message] = []
        buf = self._buf
        pos = 0
        try:
            while len(buf) - pos >= LENGTH_BYTES:
                (size,) = _LENGTH.unpack_from(buf, pos)
                if size == 0:
                    raise _bad("frame length 0 (every frame has a type byte)")
                if size > self._max:
                    raise errors.FrameTooLarge(f"frame of {size} bytes exceeds {self._max}")
                end = pos + LENGTH_BYTES + size
                if len(buf) < end:
                    break
                kind = buf[pos + LENGTH_BYTES]
                out.append(decode(kind, bytes(buf[pos + LENGTH_BYTES + 1 : end])))
                pos = end
        except errors.ProtocolError as exc:
            self._error = exc
            raise
        finally:
            if pos:
                del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


# --- handshake --------------------------------------------------------------------------------


def choose_version(local: Hello, remote: Hello) -> int | None:
    """The highest version both sides speak, or None."""
    common = set(local.versions) & set(remote.versions)
    return max(common) if common else None


def check_hello(local: Hello, remote: Hello) -> tuple[ErrorCode, str] | None:
    """Why the link must not start, or None when it may.

    Both sides must enforce the very same label policy: the same id, the same version and the
    same digest of its content (labels.md 7e: "a policy-hash mismatch: the link does not start").
    """
    if choose_version(local, remote) is None:
        return ErrorCode.VERSION, (
            f"no common protocol version (ours {list(local.versions)}, "
            f"theirs {list(remote.versions)})"
        )
    if remote.server_id == local.server_id:
        return ErrorCode.SELF, f"the peer has our own server id {local.server_id!r}"
    if remote.policy_id != local.policy_id:
        return ErrorCode.POLICY_ID, (
            f"policy id differs (ours {local.policy_id!r}, theirs {remote.policy_id!r})"
        )
    if remote.policy_version != local.policy_version:
        return ErrorCode.POLICY_VERSION, (
            f"policy version differs (ours {local.policy_version}, theirs {remote.policy_version})"
        )
    if remote.policy_digest != local.policy_digest:
        return ErrorCode.POLICY_DIGEST, (
            f"policy digest differs (ours {local.policy_digest}, theirs {remote.policy_digest})"
        )
    return None


class Phase(enum.Enum):
    AWAIT_HELLO = "await_hello"  # we sent HELLO; the peer's has not arrived
    AWAIT_RESUME = "await_resume"  # HELLO accepted, we sent RESUME; waiting for theirs
    OPEN = "open"  # events flow
    CLOSED = "closed"


class LinkProtocol:
    """The message order of one connection, as a small state machine (sans-IO).

    ``receive_data`` returns the messages in order and raises ProtocolError when the peer breaks
    the order (anything before HELLO, a second HELLO, EVENT or ACK before RESUME, EVENT sequence
    numbers that do not rise). The caller answers HELLO (after :func:`check_hello`) with
    :meth:`accept_hello`, which returns the RESUME frame to send.
    """

    def __init__(self, local: Hello) -> None:
        self.local = local
        self.remote: Hello | None = None
        self.version: int | None = None
        self.phase = Phase.AWAIT_HELLO
        self._decoder = FrameDecoder()
        self._queue: deque[Message] = deque()
        self._last_event_seq = 0

    def hello(self) -> bytes:
        return encode(self.local)

    def accept_hello(self, last_applied: int) -> bytes:
        """The peer's HELLO passed :func:`check_hello`: the RESUME frame to send now."""
        if self.remote is None or self.phase is not Phase.AWAIT_HELLO:
            raise RuntimeError("accept_hello() before a HELLO arrived")
        self.version = choose_version(self.local, self.remote)
        self.phase = Phase.AWAIT_RESUME
        return encode(Resume(last_applied=last_applied))

    def receive_data(self, data: bytes) -> list[Message]:
        if self.phase is Phase.CLOSED:
            return []
        self._queue.extend(self._decoder.receive_data(data))
        return self._drain()

    def more(self) -> list[Message]:
        """Messages already buffered behind a HELLO (call after :meth:`accept_hello`)."""
        return self._drain()

    def _drain(self) -> list[Message]:
        out: list[Message] = []
        queue = self._queue
        while queue and self.phase is not Phase.CLOSED:
            if self.phase is Phase.AWAIT_HELLO and self.remote is not None:
                break  # the caller must decide on the HELLO before anything after it is read
            msg = queue.popleft()
            out.append(msg)
            if isinstance(msg, ErrorMsg):
                self.phase = Phase.CLOSED
                queue.clear()
                break
            self._order(msg)
        return out

    def _order(self, msg: Message) -> None:
        if self.phase is Phase.AWAIT_HELLO:
            if not isinstance(msg, Hello) or self.remote is not None:
                raise errors.ProtocolError("the first frame must be one HELLO", reason="order")
            self.remote = msg
            return
        if isinstance(msg, Hello):
            raise errors.ProtocolError("a second HELLO", reason="order")
        if self.phase is Phase.AWAIT_RESUME:
            if isinstance(msg, Resume):
                self.phase = Phase.OPEN
                return
            if isinstance(msg, Heartbeat):
                return
            raise errors.ProtocolError("EVENT or ACK before RESUME", reason="order")
        if isinstance(msg, Resume):
            raise errors.ProtocolError("a second RESUME", reason="order")
        if isinstance(msg, EventMsg):
            if msg.seq <= self._last_event_seq:
                raise errors.ProtocolError(
                    f"EVENT seq {msg.seq} after {self._last_event_seq}: must rise", reason="order"
                )
            self._last_event_seq = msg.seq

    def close(self) -> None:
        self.phase = Phase.CLOSED
