"""What every stream framer shares: the error latch and the feed-and-drain convenience, and the
buffer of the length-prefixed framers (``LengthFramer``).

A framer (``xml_stream.XmlStreamFramer``, ``tak_stream.TakStreamFramer``) is fed bytes and hands
out complete frames one at a time, so a session can switch framers mid-stream (TAK protocol
negotiation) without losing the bytes that follow the switch. Once a framer raises a
``ProtocolError`` it is dead: every later call raises the same error, because a stream that
could not be framed cannot be resynchronised.
"""

from __future__ import annotations

from liaison import errors


class Framer:
    """Base of the stream framers. Subclasses implement ``feed``, ``_next_frame`` and
    ``take_buffer``, and call :meth:`_check_alive` first in ``feed`` and ``take_buffer``."""

    _error: errors.ProtocolError | None = None

    def _check_alive(self) -> None:
        if self._error is not None:
            raise self._error

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def _next_frame(self) -> bytes | None:
        raise NotImplementedError

    def next_frame(self) -> bytes | None:
        """Return the next complete frame, or None when more bytes are needed."""
        self._check_alive()
        try:
            return self._next_frame()
        except errors.ProtocolError as exc:
            self._error = exc
            raise

    def receive_data(self, data: bytes) -> list[bytes]:
        """Feed ``data`` and return every frame now complete (feed + drain)."""
        self.feed(data)
        frames: list[bytes] = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames


class LengthFramer(Framer):
    """Base of the framers of length-prefixed streams (``tak_stream.TakStreamFramer``,
    ``tak_fed_v1.FrameReader``): a buffer read from an offset, compacted on the next feed, so a
    run of small frames costs no copy each. Subclasses implement ``_next_frame`` on ``_buf``
    from ``_start`` and move ``_start`` past each frame they return."""

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._buf = bytearray()
        self._start = 0  # first byte of the next frame's header
        self._error: errors.ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        """Append received bytes. Nothing is checked until :meth:`next_frame`."""
        self._check_alive()
        if self._start:
            del self._buf[: self._start]
            self._start = 0
        self._buf += data

    def take_buffer(self) -> bytes:
        """Return and forget the bytes not yet consumed."""
        self._check_alive()
        rest = bytes(self._buf[self._start :])
        self._buf = bytearray()
        self._start = 0
        return rest

    @property
    def buffered(self) -> int:
        """How many bytes are held (a partial frame)."""
        return len(self._buf) - self._start
