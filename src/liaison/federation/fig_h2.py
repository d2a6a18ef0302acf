"""gRPC calls over HTTP/2 on a TLS connection Liaison already holds, with the ``h2`` state
machine (no grpcio): both TAK federation v2 roles (``takv2.py`` dials, ``takv2_server.py``
answers).

Why not grpcio: its asyncio API takes one message per write and completes each write through its
own completion queue and threads, then (since our TLS is our own) a Unix-socket bridge; that
per-message cost capped a stream at a few thousand messages per second (docs/performance.md,
"TAK federation v2"). Here a batch of messages is one ``send_data`` and one write to the TLS
connection.

Wire format (gRPC over HTTP/2, grpc/doc/PROTOCOL-HTTP2.md): a call is one HTTP/2 stream opened by
a HEADERS frame with ``:method POST``, ``:scheme https``, ``:path /<service>/<method>``,
``:authority``, ``te: trailers``, ``content-type: application/grpc`` (and ``grpc-timeout`` when
the call has a deadline); each message is a Length-Prefixed-Message (one compressed-flag byte,
0 here as no ``grpc-encoding`` is offered, then a 4-byte big-endian length, then the protobuf
bytes), and any number of them may share a DATA frame; the client half-closes with END_STREAM.
The response is HEADERS (``:status 200``), messages, then trailers carrying ``grpc-status`` and
``grpc-message`` (percent-encoded), or a single "Trailers-Only" HEADERS frame carrying the status.

Limits: every call buffers at most MAX_CALL_MESSAGES complete received messages; past that its
HTTP/2 flow-control window is not given back, so the peer is held back by HTTP/2 itself. Writes
wait for the peer's flow-control window (its WINDOW_UPDATE frames), then for the TLS
connection's own buffer (``drain``): both are the back-pressure of the sending side.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from liaison.errors import PeerError
from liaison.federation.connection import ConnectionEnded, Tap

# Bytes read from the TLS connection at a time.
READ_CHUNK = 256 * 1024
# Complete received messages one call holds before it stops giving the peer flow-control credit.
MAX_CALL_MESSAGES = 256
# Calls the peer may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
MAX_PEER_CALLS = 100
# Largest header list accepted (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE).
MAX_HEADER_LIST = 64 * 1024
# The HTTP/2 flow-control window we give the peer per stream and for the connection (bytes).
STREAM_WINDOW = 1024 * 1024
CONNECTION_WINDOW = 4 * 1024 * 1024
# Bytes waiting in the TLS connection's buffer past which the peer is taken as not reading
# (writers wait for the buffer to drain; only the reader's small answers can grow it).
MAX_UNSENT = 32 * 1024 * 1024
# Largest message accepted (a larger one fails its call with RESOURCE_EXHAUSTED).
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
# The gRPC status codes by number (grpc/doc/statuscodes.md).
STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
_PREFIX = 5  # Length-Prefixed-Message: compressed flag + 4-byte big-endian length


class RpcError(PeerError):
    """A call ended with a status other than OK; ``code`` is the status name (``UNIMPLEMENTED``).
    A PeerError, so one that escapes a session ends the connection like any peer failure."""

    reason = "rpc_error"

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


def frame_messages(messages: Iterable[bytes]) -> bytes:
    """The Length-Prefixed-Messages of ``messages`` (uncompressed), back to back."""
    out = bytearray()
    for data in messages:
        out += b"\x00"
        out += len(data).to_bytes(4, "big")
        out += data
    return bytes(out)


def _status_from(headers: dict[str, str]) -> RpcError | None:
    """The call's end from headers that carry ``grpc-status`` (None for OK)."""
    raw = headers.get("grpc-status", "")
    try:
        number = int(raw)
    except ValueError:
        return RpcError("UNKNOWN", f"grpc-status {raw!r}")
    if number == 0:
        return None
    name = STATUS_NAMES[number] if 0 <= number < len(STATUS_NAMES) else "UNKNOWN"
    return RpcError(name, urllib.parse.unquote(headers.get("grpc-message", "")))


class Call:
    """One gRPC call (one HTTP/2 stream) of a connection, either side."""

    def __init__(
        self, conn: _Connection, stream_id: int, request_headers: dict[str, str] | None = None
    ) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._messages: collections.deque[bytes] = collections.deque()
        self._partial = bytearray()
        self._owed = 0  # flow-controlled bytes received and not yet given back to the peer
        self._changed = asyncio.Event()
        # Client side: the response headers once they came. Server side: the request headers.
        self._headers: dict[str, str] | None = request_headers
        self._server = request_headers is not None
        self._remote_done = False  # the peer ended its side of the stream (END_STREAM)
        self._error: RpcError | None = None  # the call failed (or, client side, ended not OK)
        self._responded = False  # server side: response headers sent
        self._closed = False  # our side ended (END_STREAM sent, or the stream reset)

    @property
    def method(self) -> str:
        """Server side: the method named by the request's ``:path`` (its last part)."""
        path = (self._headers or {}).get(":path", "")
        return path.rsplit("/", 1)[-1]

    # --- from the connection's reader -------------------------------------------------------------

    def _on_headers(self, headers: dict[str, str]) -> None:
        if self._server:
            return  # trailers from a client carry nothing gRPC uses
        if self._headers is None:
            self._headers = headers
            if headers.get(":status") != "200":
                # Not a gRPC answer (grpc/doc/http-grpc-status-mapping.md): UNKNOWN here.
                self._fail(RpcError("UNKNOWN", f"HTTP status {headers.get(':status')}"))
                return
            if "grpc-status" not in headers:
                return
        # Trailers (or a Trailers-Only response): the call's status.
        error = _status_from(headers)
        if error is not None:
            self._fail(error)

    def _on_data(self, data: bytes, flow: int) -> None:
        self._owed += flow
        part = self._partial
        part += data
        limit = self._conn.max_message
        while len(part) >= _PREFIX:
            size = int.from_bytes(part[1:5], "big")
            if size > limit:
                self._fail(RpcError("RESOURCE_EXHAUSTED", f"message of {size} bytes"))
                self._conn.reset(self.stream_id)
                return
            if len(part) < _PREFIX + size:
                break
            if part[0] != 0:
                self._fail(RpcError("INTERNAL", "compressed message without grpc-encoding"))
                self._conn.reset(self.stream_id)
                return
            self._messages.append(bytes(part[_PREFIX : _PREFIX + size]))
            del part[: _PREFIX + size]
        if len(self._messages) < MAX_CALL_MESSAGES:
            self._give_back()
        self._changed.set()

    def _on_end(self) -> None:
        self._remote_done = True
        if self._headers is None and self._error is None:
            self._error = RpcError("UNKNOWN", "stream ended without headers")
        elif self._partial and self._error is None:
            self._error = RpcError("INTERNAL", "stream ended inside a message")
        self._changed.set()

    def _fail(self, error: RpcError) -> None:
        if self._error is None:
            self._error = error
        self._remote_done = True
        self._changed.set()

    def _give_back(self) -> None:
        if self._owed:
            self._conn.acknowledge(self._owed, self.stream_id)
            self._owed = 0

    # --- for the caller ---------------------------------------------------------------------------

    async def read(self) -> bytes | None:
        """The next message, or None once the peer ended its side (client side: with status
        OK). Raises RpcError."""
        while True:
            if self._messages:
                data = self._messages.popleft()
                if len(self._messages) < MAX_CALL_MESSAGES and not self._remote_done:
                    self._give_back()
                    self._conn.flush()
                return data
            if self._error is not None:
                raise self._error
            if self._remote_done:
                return None
            self._changed.clear()
            await self._changed.wait()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            data = await self.read()
            if data is None:
                return
            yield data

    async def write(self, messages: Iterable[bytes], *, end: bool = False) -> None:
        """Send ``messages`` (serialized protobufs) as one run of DATA frames, as the peer's
        flow-control window allows; client side, half-close the call if ``end``. Raises
        RpcError when the call or the connection already ended."""
        if self._server and not self._responded:
            self._respond()
        await self._conn.send(self, frame_messages(messages), end=end)

    async def failed(self) -> RpcError:
        """Wait until the call fails (reset by the peer, or the connection ended)."""
        while self._error is None:
            self._changed.clear()
            await self._changed.wait()
        return self._error

    # --- server side ------------------------------------------------------------------------------

    def _respond(self) -> None:
        self._responded = True
        self._conn.headers(self, [(":status", "200"), ("content-type", "application/grpc")])

    def finish(self, code: str = "OK", message: str = "") -> None:
        """Server side: end the call with its status (trailers; a Trailers-Only response if
        nothing was sent yet). Does nothing once the call is closed."""
        if self._closed:
            return
        trailers = []
        if not self._responded:
            self._responded = True
            trailers = [(":status", "200"), ("content-type", "application/grpc")]
        trailers.append(("grpc-status", str(STATUS_NAMES.index(code))))
        if message:
            # grpc-message is percent-encoded (PROTOCOL-HTTP2.md, "Responses").
            trailers.append(("grpc-message", urllib.parse.quote(message, safe=" ")))
        self._conn.headers(self, trailers, end=True)


class _Connection:
    """One HTTP/2 connection over ``reader``/``writer`` (a TLS connection we hold), either side.

    :meth:`start` sends the preface and our settings, :meth:`run` reads until the connection
    ends (raises ConnectionEnded at EOF, PeerError for an HTTP/2 violation or GOAWAY); the owner
    runs it as a task next to the calls.
    """

    client_side = True

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tap: Tap | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
        heard: Callable[[], None] | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._tap = tap
        self.max_message = max_message
        self._heard = heard
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=self.client_side, header_encoding="utf-8")
        )
        self._calls: dict[int, Call] = {}
        self._window = asyncio.Event()  # set when the peer gave flow-control credit
        self._ended: PeerError | None = None
        # PINGs awaiting their ACK, by opaque data (at most one per ping() caller).
        self._pings: dict[bytes, asyncio.Future[None]] = {}
        self._ping_count = 0

    async def start(self) -> None:
        conn = self._conn
        conn.initiate_connection()
        conn.update_settings(
            {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_PEER_CALLS,
            }
        )
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65_535)
        self.flush()
        await self._writer.drain()

    # --- writing ----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand everything h2 has framed to the TLS connection, in order."""
        data = self._conn.data_to_send()
        if data:
            if self._tap is not None:
                self._tap("out", data)
            self._writer.write(data)

    def acknowledge(self, size: int, stream_id: int) -> None:
        with contextlib.suppress(h2.exceptions.H2Error):
            self._conn.acknowledge_received_data(size, stream_id)

    def reset(self, stream_id: int) -> None:
        with contextlib.suppress(h2.exceptions.H2Error):
            self._conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        call = self._calls.pop(stream_id, None)
        if call is not None:
            call._closed = True
        self.flush()

    def headers(self, call: Call, headers: list[tuple[str, str]], *, end: bool = False) -> None:
        if self._ended is not None or call._closed:
            return
        try:
            self._conn.send_headers(call.stream_id, headers, end_stream=end)
        except h2.exceptions.H2Error:  # the stream is closed (reset by the peer)
            call._closed = True
            return
        if end:
            self._closed(call)
        self.flush()

    def _closed(self, call: Call) -> None:
        """Our side of ``call`` ended; forgotten once the peer's side did too."""
        call._closed = True
        if call._remote_done:
            self._calls.pop(call.stream_id, None)

    async def send(self, call: Call, data: bytes, *, end: bool) -> None:
        conn = self._conn
        view = memoryview(data)
        sid = call.stream_id
        try:
            while True:
                if call._error is not None and (call._closed or not call._server):
                    raise call._error
                if self._ended is not None:
                    raise RpcError("UNAVAILABLE", str(self._ended))
                if call._closed:
                    raise RpcError("CANCELLED", "the stream is closed")
                if call._remote_done and not call._server:
                    raise RpcError("CANCELLED", "the peer ended the call")
                if not view:
                    break
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if room <= 0:
                    # The peer's window is spent: wait for its WINDOW_UPDATE (or the end).
                    self.flush()
                    self._window.clear()
                    await self._window.wait()
                    continue
                piece, view = view[:room], view[room:]
                conn.send_data(sid, piece)
            if end:
                conn.end_stream(sid)
                self._closed(call)
        except h2.exceptions.StreamClosedError:
            call._closed = True
            raise RpcError("CANCELLED", "the peer closed the stream") from None
        except h2.exceptions.H2Error as exc:
            raise RpcError("UNAVAILABLE", f"HTTP/2: {exc}") from None
        self.flush()
        await self._writer.drain()

    async def ping(self) -> None:
        """One HTTP/2 PING round trip. Once it returns, the peer's transport has read every
        frame written before the PING: an endpoint processes frames in the order they arrive
        and answers a PING with an ACK (RFC 9113 section 6.7). Fails with UNAVAILABLE if the
        connection ends first; the caller bounds the wait."""
        if self._ended is not None:
            raise RpcError("UNAVAILABLE", str(self._ended))
        self._ping_count += 1
        opaque = self._ping_count.to_bytes(8, "big")
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[opaque] = answered
        try:
            try:
                self._conn.ping(opaque)
            except h2.exceptions.H2Error as exc:
                raise RpcError("UNAVAILABLE", f"HTTP/2: {exc}") from None
            self.flush()
            try:
                await self._writer.drain()
            except OSError as exc:  # the connection is gone (ConnectionResetError and kin)
                raise RpcError("UNAVAILABLE", str(exc) or type(exc).__name__) from None
            await answered
        finally:
            self._pings.pop(opaque, None)

    async def close(self) -> None:
        """Say GOAWAY (best effort; the owner closes the TLS connection)."""
        if self._ended is None:
            with contextlib.suppress(h2.exceptions.H2Error):
                self._conn.close_connection()
                self.flush()

    # --- reading ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read the connection until it ends; every open call then fails with UNAVAILABLE."""
        try:
            while True:
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    self._end(PeerError("the peer closed the connection", reason="closed"))
                    raise ConnectionEnded
                if self._tap is not None:
                    self._tap("in", data)
                if self._heard is not None:
                    self._heard()
                try:
                    events = self._conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    error = PeerError(f"HTTP/2: {exc}", reason="protocol_error")
                    self._end(error)
                    raise error from None
                for event in events:
                    self._dispatch(event)
                # What answers these frames (acknowledgements, window updates) is written
                # without waiting for the TLS buffer to drain: a reader that waited could
                # deadlock with a peer that does the same while both write. Bounded instead.
                self.flush()
                if self._writer.transport.get_write_buffer_size() > MAX_UNSENT:
                    error = PeerError("the peer does not read what we write", reason="stalled")
                    self._end(error)
                    raise error
        finally:
            if self._ended is None:
                self._end(PeerError("connection closed", reason="closed"))

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            call = self._calls.get(event.stream_id or 0)
            if call is not None and event.data is not None:
                call._on_data(event.data, event.flow_controlled_length or 0)
            elif event.flow_controlled_length:
                self.acknowledge(event.flow_controlled_length, event.stream_id or 0)
        elif isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id or 0, _header_dict(event.headers))
        elif isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            call = self._calls.get(event.stream_id or 0)
            if call is not None:
                call._on_headers(_header_dict(event.headers))
        elif isinstance(event, h2.events.StreamEnded):
            call = self._calls.get(event.stream_id or 0)
            if call is not None:
                call._on_end()
                if call._closed or not call._server:
                    self._calls.pop(call.stream_id, None)
        elif isinstance(event, h2.events.StreamReset):
            call = self._calls.pop(event.stream_id or 0, None)
            if call is not None:
                code = event.error_code
                # RST_STREAM codes as gRPC statuses (PROTOCOL-HTTP2.md, "Errors").
                if code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM:
                    name = "RESOURCE_EXHAUSTED"
                elif code == h2.errors.ErrorCodes.REFUSED_STREAM:
                    name = "UNAVAILABLE"
                else:
                    name = "CANCELLED"
                call._closed = True
                call._fail(RpcError(name, f"stream reset ({code})"))
            self._window.set()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window.set()
        elif isinstance(event, h2.events.PingAckReceived):
            answered = self._pings.get(event.ping_data or b"")
            if answered is not None and not answered.done():
                answered.set_result(None)
        elif isinstance(event, h2.events.ConnectionTerminated):
            error = PeerError(f"the peer sent GOAWAY ({event.error_code})", reason="closed")
            self._end(error)
            raise error

    def _request(self, stream_id: int, headers: dict[str, str]) -> None:
        """A request from the peer (server side only; a client-side h2 never reports one)."""
        self.reset(stream_id)

    def _end(self, error: PeerError) -> None:
        self._ended = error
        for call in self._calls.values():
            call._closed = True
            call._fail(RpcError("UNAVAILABLE", str(error)))
        self._calls.clear()
        self._window.set()
        for answered in self._pings.values():
            if not answered.done():
                answered.set_exception(RpcError("UNAVAILABLE", str(error)))


class Channel(_Connection):
    """gRPC calls we make on one HTTP/2 connection (client side)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        authority: str,
        service: str,
        tap: Tap | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
        user_agent: str = "liaison-fig",
    ) -> None:
        super().__init__(reader, writer, tap=tap, max_message=max_message)
        self._authority = authority
        self._service = service
        self._user_agent = user_agent

    def open(self, method: str, *, deadline_s: float | None = None) -> Call:
        """Start a call of ``method`` (its HEADERS written at once, in order with everything
        written before). Raises RpcError once the connection has ended."""
        if self._ended is not None:
            raise RpcError("UNAVAILABLE", str(self._ended))
        conn = self._conn
        stream_id = conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", f"/{self._service}/{method}"),
            (":authority", self._authority),
            ("te", "trailers"),
            ("content-type", "application/grpc"),
            ("user-agent", self._user_agent),
        ]
        if deadline_s is not None:
            # grpc-timeout: at most 8 digits and a unit (PROTOCOL-HTTP2.md, "Timeout").
            headers.append(("grpc-timeout", f"{max(1, int(deadline_s * 1000))}m"))
        try:
            conn.send_headers(stream_id, headers)
        except h2.exceptions.H2Error as exc:  # e.g. the peer's SETTINGS_MAX_CONCURRENT_STREAMS
            raise RpcError("UNAVAILABLE", f"HTTP/2: {exc}") from None
        call = Call(self, stream_id)
        self._calls[stream_id] = call
        self.flush()
        return call

    async def unary(self, method: str, request: bytes, *, deadline_s: float) -> bytes:
        """One unary call: its only response message. Raises RpcError (DEADLINE_EXCEEDED when
        ``deadline_s`` seconds pass without the answer; the stream is then reset)."""
        call = self.open(method, deadline_s=deadline_s)
        try:
            async with asyncio.timeout(deadline_s):
                await call.write([request], end=True)
                answer = await call.read()
                while await call.read() is not None:  # the rest (none in a unary answer)
                    pass
        except TimeoutError:
            self.reset(call.stream_id)
            raise RpcError("DEADLINE_EXCEEDED", f"no answer in {deadline_s} s") from None
        if answer is None:
            raise RpcError("INTERNAL", "no response message")
        return answer


class Server(_Connection):
    """gRPC calls the peer makes on one HTTP/2 connection (server side): each request of
    ``service`` is handed to ``on_call`` (which starts its handler); a request for another
    service, or not a gRPC request, is answered UNIMPLEMENTED at once."""

    client_side = False

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        service: str,
        on_call: Callable[[Call], None],
        tap: Tap | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
        heard: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(reader, writer, tap=tap, max_message=max_message, heard=heard)
        self._prefix = f"/{service}/"
        self._on_call = on_call

    def _request(self, stream_id: int, headers: dict[str, str]) -> None:
        call = Call(self, stream_id, headers)
        self._calls[stream_id] = call
        path = headers.get(":path", "")
        if (
            headers.get(":method") != "POST"
            or not headers.get("content-type", "").startswith("application/grpc")
            or not path.startswith(self._prefix)
        ):
            call.finish("UNIMPLEMENTED", f"unknown method {path}")
            return
        self._on_call(call)


def _header_dict(headers: Iterable[tuple[str | bytes, str | bytes]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers or ():
        key = name.decode() if isinstance(name, bytes) else name
        out[key] = value.decode() if isinstance(value, bytes) else value
    return out
