"""CoT XML stream framer: splits a byte stream into complete top-level <event>/<auth> elements.

TAK protocol "version 0" on a stream is a concatenation of CoT XML messages, each usually preceded
by an XML declaration (TAK protocol.txt, "Traditional Protocol"; tak-protocol.md section 2.1).
Nothing delimits the messages, so the framer follows the XML itself: a small tag scanner tracks
element depth and a frame ends when the top-level element closes. It never searches the text for
"</event>" (that breaks on CDATA, comments and nested elements of the same name), and it resumes
exactly where it stopped, so the total work is linear however the bytes are split.

The framer is sans-IO: ``feed`` appends bytes, ``next_frame`` scans lazily for one frame. Bytes
after the last returned frame are not looked at until ``next_frame`` is called again, so a session
that negotiated protobuf can take them back with ``take_buffer`` (protocol.txt, "Protocol
Negotiation": both sides switch right after the t-x-takp-r response).
"""

from __future__ import annotations

import enum
import re

from liaison import errors
from liaison.protocol import limits
from liaison.protocol.framing import Framer


class _Tok(enum.Enum):
    """The kind of markup token being scanned when the buffer ran out."""

    START = "start tag"
    END = "end tag"
    COMMENT = "comment"
    CDATA = "CDATA section"
    PI = "processing instruction"


# One complete markup token starting at "<" (fast path). Quoted attribute values may hold ">" and
# "/"; a start tag is complete at the first ">" outside quotes. Groups: 1 end tag, 2 comment,
# 3 CDATA, 4 processing instruction (the XML declaration is one), 5 start tag.
_TOKEN = re.compile(
    rb"""<(?:
        (/[^>]*>)
      | (!--.*?-->)
      | (!\[CDATA\[.*?\]\]>)
      | (\?.*?\?>)
      | ([^!?/"'<>\s=][^"'<>]*(?:(?:"[^"]*"|'[^']*')[^"'<>]*)*>)
    )""",
    re.S | re.X,
)
_KIND_BY_GROUP = {1: _Tok.END, 2: _Tok.COMMENT, 3: _Tok.CDATA, 4: _Tok.PI, 5: _Tok.START}

# How the other tokens end, and how many bytes their opener takes ("<!--" is 4).
_TERMINATORS = {
    _Tok.END: (b">", 2),
    _Tok.COMMENT: (b"-->", 4),
    _Tok.CDATA: (b"]]>", 9),
    _Tok.PI: (b"?>", 2),
}

# The fast path: the text before a token, then the token whole.
_TEXT_AND_TOKEN = re.compile(rb"[^<]*" + _TOKEN.pattern, re.S | re.X)
_END_GROUP = 1
_START_GROUP = 5
_SLASH = ord("/")

# The whole-frame fast path: one regular expression that matches a complete frame made only of
# start tags, end tags, self-closing tags and text, nested at most ``_FAST_DEPTH`` deep, tokenised
# exactly as ``_TEXT_AND_TOKEN`` tokenises it (a start tag ends at the first ">" outside quotes; it
# closes itself when "/>" ends it; an end tag closes whatever is open, names are the parser's
# business) and ending where the token-by-token scan would end it: where the depth first returns
# to 0. Each level is written out, so the nesting is counted by the pattern, not by a Python loop
# over the tokens. The tokens are unambiguous and every repetition is possessive (``*+``, atomic
# groups: Python 3.11), so a failed match never backtracks into another split: linear time. A
# frame with anything else (comments, CDATA, processing instructions, deeper nesting, a malformed
# tag, or not complete yet) does not match, and the token-by-token scan below takes it from the
# same place with the same result. Text is XML 1.0 CharData (section 2.4: no "<"); a start tag is
# STag/EmptyElemTag (section 3.1), whose attribute values may not hold "<" either, though this
# scanner, like the slow one, lets the parser refuse that.
_FAST_DEPTH = 8
_F_TEXT = rb"[^<]*+"
_F_STAG = rb"""(?><[^!?/"'<>\s=][^"'<>]*+(?:(?:"[^"]*+"|'[^']*+')[^"'<>]*+)*+>)"""
_F_ETAG = rb"</[^>]*+>"


def _fast_frame_pattern(depth: int) -> bytes:
    element = _F_STAG + rb"(?<=/>)"  # at the deepest level only self-closing tags may appear
    for _ in range(depth):
        element = (
            _F_STAG
            + rb"(?:(?<=/>)|(?<!/>)"
            + _F_TEXT
            + rb"(?:"
            + element
            + _F_TEXT
            + rb")*+"
            + _F_ETAG
            + rb")"
        )
    return element


_FAST_FRAME = re.compile(_fast_frame_pattern(_FAST_DEPTH))

# Inside a start tag, outside quotes: the bytes that change the scanner's state.
_TAG_SPECIAL = re.compile(rb"""["'<>]""")

# What may separate frames (XML "S", plus a UTF-8 byte order mark some .NET writers emit).
_BETWEEN = re.compile(rb"(?:[ \t\r\n]+|\xef\xbb\xbf)*")
_BOM = b"\xef\xbb\xbf"

# The top-level elements we frame, each followed by a byte that ends the element name.
_FRAME_STARTS = (b"<event", b"<auth")
_NAME_END = frozenset(b" \t\r\n/>")
_WHITESPACE = frozenset(b" \t\r\n")

# DTD markup is never legitimate in CoT; refusing it anywhere rules out XXE and entity expansion
# ("billion laughs") before any parser sees the bytes.
_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY")

# How many bytes after "<" identify a token kind (the longest prefix is "<![CDATA[").
_CLASSIFY_BYTES = 9


def _doctype_error() -> errors.ProtocolError:
    return errors.ProtocolError("DTD markup (DOCTYPE/ENTITY) in CoT stream", reason="doctype")


def _is_dtd_markup(head: bytes) -> bool:
    """``<!`` followed by a keyword or ``[``: a DTD declaration or conditional section."""
    return len(head) > 2 and (chr(head[2]).isalpha() or head[2] == ord("["))


def _has_dtd(data: bytes | bytearray, start: int = 0, end: int | None = None) -> bool:
    """Whether ``data[start:end]`` contains DTD markup, at any position (even in a comment)."""
    stop = len(data) if end is None else end
    return any(data.find(marker, start, stop) >= 0 for marker in _DTD_MARKERS)


class XmlStreamFramer(Framer):
    """Split a CoT XML byte stream into complete ``<event>`` / ``<auth>`` elements.

    Each frame is the exact bytes of one top-level element, without the XML declaration or the
    whitespace around it. Raises ``FrameTooLarge`` when a frame (or a comment or declaration
    between frames) grows past ``max_size``, ``MalformedStream`` for anything between frames other
    than whitespace, XML declarations and comments, and ``ProtocolError(reason="doctype")`` for
    DTD markup anywhere. After an error the framer is dead: every later call raises it again.
    """

    def __init__(self, max_size: int = limits.MAX_XML_EVENT_BYTES) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self._max_size = max_size
        self._buf = bytearray()
        self._start = 0  # first byte not yet consumed (the frame's first byte inside a frame)
        self._pos = 0  # where scanning resumes
        self._depth = 0  # open elements of the current frame; 0 = between frames
        # A token whose end is not in the buffer yet: its kind, its "<" and where to resume.
        self._tok: _Tok | None = None
        self._tok_start = 0
        self._resume = 0
        self._quote = 0  # inside a start tag: the open quote byte, or 0
        self._error: errors.ProtocolError | None = None

    # --- public API -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append received bytes. Nothing is scanned until :meth:`next_frame`."""
        self._check_alive()
        if self._start:
            # Drop consumed bytes once per feed: amortised linear, never once per frame.
            shift = self._start
            del self._buf[:shift]
            self._start = 0
            self._pos -= shift
            self._tok_start -= shift
            self._resume -= shift
        self._buf += data

    def take_buffer(self) -> bytes:
        """Return and forget the bytes not yet consumed (used when the stream leaves XML)."""
        self._check_alive()
        rest = bytes(self._buf[self._start :])
        self._buf = bytearray()
        self._start = self._pos = self._depth = 0
        self._tok = None
        self._tok_start = self._resume = self._quote = 0
        return rest

    @property
    def buffered(self) -> int:
        """How many bytes are held (a partial frame, or bytes not yet scanned)."""
        return len(self._buf) - self._start

    # --- scanning ---------------------------------------------------------------------------

    def _next_frame(self) -> bytes | None:
        buf = self._buf
        while True:
            if self._tok is not None:
                end = self._finish_token()
                if end is None:
                    self._check_size()
                    return None
                kind = self._tok
                self._tok = None
                frame = self._after_token(kind, end)
                if frame is not None:
                    return frame
                continue
            if self._depth == 0:
                if not self._scan_between():
                    return None
                # self._pos is at "<event" or "<auth"; the frame starts here.
                self._start = self._pos
                whole = _FAST_FRAME.match(buf, self._pos, self._pos + self._max_size)
                if whole is not None:
                    return self._complete(whole.end())
            frame = self._scan_complete_tokens()
            if frame is not None:
                return frame
            lt = buf.find(b"<", self._pos)
            if lt < 0:
                self._pos = len(buf)
                self._check_size()
                return None
            pending = self._classify(lt)
            if pending is None:
                self._pos = lt
                self._check_size()
                return None
            self._tok = pending
            self._tok_start = lt
            self._resume = lt + 1
            self._quote = 0

    def _scan_complete_tokens(self) -> bytes | None:
        """Fast path: consume whole tokens (with the text before them) while they are complete.

        Returns the frame when the top element closes. Otherwise stops, with ``self._pos`` at the
        text before a token the regex could not match whole (incomplete, or malformed), for the
        resumable slow path to take over.
        """
        buf = self._buf
        match = _TEXT_AND_TOKEN.match
        pos = self._pos
        depth = self._depth
        while (m := match(buf, pos)) is not None:
            group = m.lastindex
            pos = m.end()
            if group == _START_GROUP:
                if buf[pos - 2] != _SLASH:
                    depth += 1
                    continue
                if depth > 0:
                    continue
            elif group == _END_GROUP:
                depth -= 1
                if depth > 0:
                    continue
            else:
                continue
            self._depth = 0
            return self._complete(pos)
        self._pos = pos
        self._depth = depth
        return None

    def _check_size(self) -> None:
        """Called when the buffer ends inside a frame or construct: enforce the size limit."""
        if len(self._buf) - self._start > self._max_size:
            raise errors.FrameTooLarge(
                f"XML frame exceeds {self._max_size} bytes before completing"
            )

    def _scan_between(self) -> bool:
        """Skip whitespace, declarations and comments between frames.

        Returns True with ``self._pos`` at the "<" of the next frame, or False when more bytes
        are needed. Raises on anything else.
        """
        buf = self._buf
        while True:
            m = _BETWEEN.match(buf, self._pos)
            assert m is not None
            pos = m.end()
            self._pos = self._start = pos
            if pos == len(buf):
                return False
            first = buf[pos]
            if first != ord("<"):
                rest = bytes(buf[pos : pos + len(_BOM)])
                if len(rest) < len(_BOM) and _BOM.startswith(rest):
                    return False  # a partial byte order mark
                raise errors.MalformedStream(f"unexpected byte {first:#04x} between CoT messages")
            head = bytes(buf[pos : pos + _CLASSIFY_BYTES])
            for start in _FRAME_STARTS:
                if head.startswith(start):
                    if len(head) == len(start):
                        return False  # need the byte after the name
                    if head[len(start)] in _NAME_END:
                        return True
                    break
                if len(head) < len(start) and start.startswith(head):
                    return False
            if head.startswith(b"<!--") or head.startswith(b"<?xml"):
                if head.startswith(b"<?xml") and len(head) == 5:
                    return False
                if head.startswith(b"<?xml") and head[5] not in _WHITESPACE:
                    raise errors.MalformedStream("processing instruction between CoT messages")
                end = self._skip_to(pos, b"-->" if head[1] == ord("!") else b"?>")
                if end is None:
                    self._check_size()
                    return False
                if _has_dtd(buf, pos, end):
                    raise _doctype_error()
                self._pos = self._start = end
                continue
            if b"<!--".startswith(head) or b"<?xml".startswith(head):
                return False
            if head.startswith(b"<!") and _is_dtd_markup(head):
                raise _doctype_error()
            raise errors.MalformedStream(
                f"unexpected markup {head[:8]!r} between CoT messages (want <event or <auth)"
            )

    def _skip_to(self, pos: int, terminator: bytes) -> int | None:
        """End of the construct at ``pos`` closed by ``terminator``, resuming a previous search."""
        buf = self._buf
        opener = 4 if terminator == b"-->" else 2
        search_from = max(pos + opener, self._resume if self._tok_start == pos else 0)
        found = buf.find(terminator, search_from)
        if found < 0:
            self._tok_start = pos
            self._resume = max(pos + opener, len(buf) - len(terminator) + 1)
            return None
        self._tok_start = self._resume = 0
        return found + len(terminator)

    def _classify(self, lt: int) -> _Tok | None:
        """Kind of the markup token at ``lt`` (the fast regex did not match it whole)."""
        buf = self._buf
        head = bytes(buf[lt : lt + _CLASSIFY_BYTES])
        if len(head) < 2:
            return None
        second = head[1]
        if second == ord("/"):
            return _Tok.END
        if second == ord("?"):
            return _Tok.PI
        if second == ord("!"):
            for opener, kind in ((b"<!--", _Tok.COMMENT), (b"<![CDATA[", _Tok.CDATA)):
                if head.startswith(opener):
                    return kind
                if opener.startswith(head):
                    return None
            if _is_dtd_markup(head):
                raise _doctype_error()
            raise errors.MalformedStream(f"bad markup {head!r} in CoT event")
        if second in _WHITESPACE or second in b"<>=\"'":
            raise errors.MalformedStream(f"bad tag {head!r} in CoT event")
        return _Tok.START

    def _finish_token(self) -> int | None:
        """Continue scanning the pending token; its end offset, or None if still incomplete."""
        buf = self._buf
        kind = self._tok
        if kind is _Tok.START:
            i = self._resume
            while True:
                if self._quote:
                    q = buf.find(self._quote, i)
                    if q < 0:
                        self._resume = len(buf)
                        return None
                    self._quote = 0
                    i = q + 1
                    continue
                m = _TAG_SPECIAL.search(buf, i)
                if m is None:
                    self._resume = len(buf)
                    return None
                at = m.start()
                c = buf[at]
                if c == ord(">"):
                    return at + 1
                if c == ord("<"):
                    raise errors.MalformedStream("'<' inside a tag in CoT event")
                self._quote = c
                i = at + 1
        assert kind is not None
        terminator, opener = _TERMINATORS[kind]
        search_from = max(self._tok_start + opener, self._resume)
        found = buf.find(terminator, search_from)
        if found < 0:
            self._resume = max(search_from, len(buf) - len(terminator) + 1)
            return None
        return found + len(terminator)

    def _after_token(self, kind: _Tok, end: int) -> bytes | None:
        """Account for one complete token; return the frame if it closed the top element."""
        buf = self._buf
        self._pos = end
        if kind is _Tok.START:
            if buf[end - 2] != ord("/"):
                self._depth += 1
                if end - self._start > self._max_size:
                    raise errors.FrameTooLarge(f"XML frame exceeds {self._max_size} bytes")
                return None
            if self._depth > 0:
                return None
            # A self-closing top-level element, <event .../>: the frame is this one tag.
        elif kind is _Tok.END:
            self._depth -= 1
            if self._depth > 0:
                return None
        else:
            return None
        return self._complete(end)

    def _complete(self, end: int) -> bytes:
        """The top-level element ended at ``end``: cut the frame out of the buffer."""
        frame_start = self._start
        if end - frame_start > self._max_size:
            raise errors.FrameTooLarge(f"XML frame exceeds {self._max_size} bytes")
        frame = bytes(self._buf[frame_start:end])
        if _has_dtd(frame):
            raise _doctype_error()
        self._start = self._pos = end
        self._depth = 0
        return frame
