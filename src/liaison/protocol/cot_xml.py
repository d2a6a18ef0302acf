"""Hardened parsing and serialisation of CoT XML <event> (and the stream <auth> message).

Parsing uses the standard library's C-accelerated ElementTree (expat), after our own checks:
DTD markup is refused outright (no DOCTYPE means no entity declarations, so neither XXE nor
"billion laughs" can reach the parser), the bytes must be UTF-8, the element depth is bounded by
``limits.MAX_XML_DEPTH``, and the CoT fields are validated (MITRE CoT 2.0 event schema as quoted in
tak-protocol.md 1.1 and 1.2). Every refusal is an ``InvalidEvent`` with a short ``reason``:

    too_large, doctype, not_utf8, bad_xml, too_deep, not_event, not_auth,
    missing_field, bad_time, bad_coordinates, field_too_long

Encoding: every CoT message is read as UTF-8 whatever its XML declaration says. The declaration is
not part of the event (``Event.xml`` holds the element only) and real senders mislabel it; for
example a commo capture declares encoding="utf-16" over ASCII bytes. Bytes that are not valid
UTF-8 are refused (reason "not_utf8") rather than guessed at.
"""

from __future__ import annotations

import functools
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import date

from liaison import errors
from liaison.model.event import UNKNOWN_ERROR, Event, make_event
from liaison.protocol import limits

# --- times ----------------------------------------------------------------------------------------

# xs:dateTime as CoT uses it (tak-protocol.md 1.1): "Z" (or a numeric offset) and any number of
# fractional-second digits. A time without a zone is refused: it would be read in some unknown
# local time and make every stale computation wrong.
_DATETIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)\Z", re.ASCII
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Times outside 1970-01-01 .. 2200-12-31 are refused as absurd (a bad clock or a forged stale).
_MIN_MS = 0
_MAX_MS = (date(2201, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86_400_000


@functools.lru_cache(maxsize=256)
def _days_since_epoch(year: str, month: str, day: str) -> int | None:
    """Days from 1970-01-01 to a calendar date, or None if there is no such date (cached:
    live traffic carries a handful of distinct dates)."""
    try:
        return date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _second_ms(text: str) -> int | None:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC) as ms since the epoch, None if it is not a valid time of
    1970..2200 in exactly that form (cached: the events of one second share it)."""
    try:
        return parse_time(text + "Z")
    except errors.InvalidEvent:
        return None


def parse_time(text: str) -> int:
    """Parse an xs:dateTime into integer milliseconds since the epoch (fraction truncated).

    Raises ``InvalidEvent(reason="bad_time")`` for anything else, or a time outside 1970..2200.
    """
    # The form nearly every CoT sender writes, YYYY-MM-DDTHH:MM:SS.mmmZ, from the second's
    # cache: the same value the general path below gives (its last millisecond of 2200 is
    # still inside the range, which ends at a day's start).
    if len(text) == 24 and text[19] == "." and text[23] == "Z" and text.isascii():
        milli = text[20:23]
        if milli.isdigit() and (base := _second_ms(text[:19])) is not None:
            return base + int(milli)
    m = _DATETIME.match(text)
    if m is None:
        raise errors.InvalidEvent(f"bad time {text[:40]!r}", reason="bad_time")
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    days = _days_since_epoch(year, month, day)
    if days is None:
        raise errors.InvalidEvent(f"bad date {text[:40]!r}", reason="bad_time")
    h, mi, s = int(hour), int(minute), int(second)
    if h > 23 or mi > 59 or s > 59:
        raise errors.InvalidEvent(f"bad time of day {text[:40]!r}", reason="bad_time")
    ms = (((days * 24 + h) * 60 + mi) * 60 + s) * 1000
    if fraction:
        ms += int(fraction[:3].ljust(3, "0"))
    if zone != "Z":
        offset = (int(zone[1:3]) * 60 + int(zone[4:6])) * 60_000
        ms += -offset if zone[0] == "+" else offset
    if not _MIN_MS <= ms < _MAX_MS:
        raise errors.InvalidEvent(f"time out of range {text[:40]!r}", reason="bad_time")
    return ms


def check_time(ms: int) -> int:
    """A time in ms must fall within 1970..2200 (the range :func:`parse_time` accepts)."""
    if not _MIN_MS <= ms < _MAX_MS:
        raise errors.InvalidEvent(f"time {ms} ms is outside 1970..2200", reason="bad_time")
    return ms


def format_time(ms: int) -> str:
    """Format milliseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    if not _MIN_MS <= ms < _MAX_MS:
        raise ValueError(f"time {ms} ms is outside 1970..2200")
    seconds, milli = divmod(ms, 1000)
    return f"{_format_second(seconds)}.{milli:03d}Z"


# Most events rendered in a given moment carry times within the same few seconds (time, start,
# and stale a fixed interval later), so the calendar arithmetic is worth remembering per second.
_SECONDS_CACHE = 4096


@functools.lru_cache(maxsize=_SECONDS_CACHE)
def _format_second(seconds: int) -> str:
    days, rest = divmod(seconds, 86_400)
    d = date.fromordinal(_EPOCH_ORDINAL + days)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{hour:02d}:{minute:02d}:{second:02d}"


# --- hardened XML -------------------------------------------------------------------------------

_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY")
# What may come before the element in a datagram or a stored message: a byte order mark,
# whitespace, XML declarations and comments (the same things XmlStreamFramer skips).
_PROLOG = re.compile(rb"(?:\xef\xbb\xbf)?(?:[ \t\r\n]+|<\?xml[ \t\r\n].*?\?>|<!--.*?-->)*", re.S)
_XML_SPACE = b" \t\r\n"
# The document must end with its root element (an end tag or "/>"), not a trailing comment or
# processing instruction, so that the bytes we keep are exactly the element.
_END_TAG = re.compile(rb"</[^<>\s]+[ \t\r\n]*>")


def _ends_with_element(element: bytes) -> bool:
    if element.endswith(b"/>"):
        return True
    last = element.rfind(b"<")
    return last >= 0 and _END_TAG.fullmatch(element, last) is not None


def _element_bytes(data: bytes, max_size: int) -> bytes:
    """The bytes of the one top-level element of ``data``: prolog and outer whitespace removed."""
    if len(data) > max_size:
        raise errors.InvalidEvent(
            f"XML message of {len(data)} bytes exceeds {max_size}", reason="too_large"
        )
    if data[:1] == b"<" and data[1:2] not in (b"?", b"!") and data[-1:] == b">":
        element = data  # the common case: an exact frame from XmlStreamFramer
    else:
        prolog = _PROLOG.match(data)
        assert prolog is not None
        element = data[prolog.end() :].rstrip(_XML_SPACE)
    if b"<!" in data and any(marker in data for marker in _DTD_MARKERS):
        raise errors.InvalidEvent("DTD markup (DOCTYPE/ENTITY) refused", reason="doctype")
    if not (element.startswith(b"<") and _ends_with_element(element)):
        raise errors.InvalidEvent("not a single XML element", reason="bad_xml")
    return element


def parse_element(data: bytes, *, max_depth: int = limits.MAX_XML_DEPTH) -> ET.Element:
    """Parse one complete XML element with the hardening rules (no DTD, UTF-8, bounded depth).

    ``data`` must be exactly one element (no declaration). Used for events, ``<auth>`` and the
    ``<detail>`` rebuilt from a protobuf ``xmlDetail`` (which sits one level below ``<event>``,
    hence ``max_depth``).
    """
    # Every DTD marker starts with "<!": one search rules both out in the usual event.
    has_markup = b"<!" in data
    if has_markup and any(marker in data for marker in _DTD_MARKERS):
        raise errors.InvalidEvent("DTD markup (DOCTYPE/ENTITY) refused", reason="doctype")
    # ASCII is UTF-8 (RFC 3629 section 3); only other bytes need the decoder's check.
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise errors.InvalidEvent(f"not UTF-8 at byte {exc.start}", reason="not_utf8") from None
    root = _parse_in_wrapper(data) if has_markup is False else None
    if root is None:
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            raise errors.InvalidEvent(f"malformed XML: {exc}", reason="bad_xml") from None
    # Each element needs a "<", so a message with few of them cannot be deep: skip the walk.
    if data.count(b"<") > max_depth:
        _check_depth(root, max_depth)
    return root


# --- one parser for many elements ---------------------------------------------------------------
#
# ``ET.fromstring`` makes a new expat parser and tree builder for every element: about a third of
# its cost for a 600-byte event. Instead each thread keeps one parser that was fed the start tag
# of a wrapper element once, and is fed each element as the wrapper's content; the element is the
# wrapper's one child, taken out at once. Element content is parsed by the same rules whether the
# element is a document's root or another element's child (XML 1.0 section 3: production [43]
# content, the same [39] element inside), so the result is the same tree, under these conditions,
# checked before or after, and otherwise the element is parsed on its own as before:
#
# - no "<!" (comments, CDATA, DOCTYPE) and no "<?" (processing instructions, declarations) in the
#   bytes: outside the root a document may hold comments and PIs ([1] document, [27] Misc), which
#   content would keep as the wrapper's and which this path does not look for;
# - the bytes hold no "</" of the wrapper's name, so they cannot close the wrapper ([42] ETag
#   must match its start tag's Name, section 3 "Element Type Match"), nor the sentinel's name;
# - they are fed followed by an empty sentinel element, and after the feed the wrapper holds
#   exactly two children, the element and then the sentinel, with no text before or between them
#   (the bytes must start with "<"): so the element was complete (an element left open would
#   hold the sentinel itself) and nothing but that one element was fed (text or a reference
#   around it would be text here, another element a third child, a stray end tag an expat
#   error);
# - any parse error throws the parser away, and the element is parsed on its own, which gives
#   the error (and its position) exactly as before.
#
# A parser remembers every element and attribute name it has seen (expat's name tables, the
# tree builder's name cache), so it is replaced after ``WRAPPED_PARSER_BYTES`` bytes.
WRAPPED_PARSER_BYTES = 1024 * 1024
_WRAPPER = b"liaison-wrapper"
_WRAPPER_CLOSE = b"</" + _WRAPPER
_SENTINEL_TAG = b"liaison-sentinel"
_SENTINEL = b"<" + _SENTINEL_TAG + b"/>"
_SENTINEL_NAME = _SENTINEL_TAG.decode()


class _WrappedParser:
    __slots__ = ("fed", "parser", "wrapper")

    def __init__(self) -> None:
        self.parser = ET.XMLParser(target=ET.TreeBuilder())
        starts: list[tuple[str, ET.Element]] = []
        # _setevents is how XMLPullParser asks the C parser for start events; used here once,
        # to get hold of the wrapper element, and turned off again.
        self.parser._setevents(starts, ("start",))  # type: ignore[attr-defined]
        self.parser.feed(b"<" + _WRAPPER + b">")
        self.parser._setevents(starts, ())  # type: ignore[attr-defined]
        self.wrapper = starts[0][1]
        self.fed = 0


# Parsers not in use. A caller takes one (list.pop and list.append are atomic in CPython, so
# threads parsing at once, as the mission package import does, each get their own) and puts it
# back when it parsed cleanly; at most MAX_IDLE_WRAPPED_PARSERS are kept.
MAX_IDLE_WRAPPED_PARSERS = 4
_idle_parsers: list[_WrappedParser] = []


def _parse_in_wrapper(data: bytes) -> ET.Element | None:
    """``data`` parsed as the wrapper's content, or None when the conditions above are not met
    or the parser refused it (the caller then parses ``data`` on its own)."""
    # Starting with "<": no text before the element (the tree builder would hang text fed
    # between two elements on the previous sentinel's tail, out of sight).
    if data[:1] != b"<" or b"<?" in data or _WRAPPER_CLOSE in data or _SENTINEL_TAG in data:
        return None
    try:
        state = _idle_parsers.pop()
    except IndexError:
        state = _WrappedParser()
    wrapper = state.wrapper
    try:
        state.parser.feed(data + _SENTINEL)
    except Exception:
        return None  # a refused feed leaves expat in its error state: the parser is dropped
    if len(wrapper) != 2 or wrapper.text is not None:
        return None
    root, sentinel = wrapper
    del wrapper[:]
    # The second child must be the sentinel at the top (an element left open would hold it).
    if root.tail is not None or sentinel.tag != _SENTINEL_NAME:
        return None
    state.fed += len(data)
    if state.fed <= WRAPPED_PARSER_BYTES and len(_idle_parsers) < MAX_IDLE_WRAPPED_PARSERS:
        _idle_parsers.append(state)
    return root


def _check_depth(root: ET.Element, max_depth: int) -> None:
    """Refuse nesting deeper than ``max_depth`` (iterative; stops at the first too-deep path)."""
    stack: list[tuple[ET.Element, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > max_depth:
            raise errors.InvalidEvent(
                f"XML nested deeper than {limits.MAX_XML_DEPTH} levels", reason="too_deep"
            )
        stack.extend((child, depth + 1) for child in element)


# --- <event> --------------------------------------------------------------------------------------


def _required(root: ET.Element, name: str) -> str:
    value = root.get(name)
    if value is None:
        raise errors.InvalidEvent(f"event has no {name!r} attribute", reason="missing_field")
    return value


def _optional(root: ET.Element, name: str) -> str | None:
    # An empty optional attribute means the same as none (and protobuf cannot tell them apart).
    return root.get(name) or None


def parse_double(text: str) -> float:
    """xs:double as CoT writes it; Python's extra spellings (underscores) are refused."""
    if "_" in text:
        raise ValueError(text)
    return float(text)


def _coordinate(point: ET.Element, name: str, bound: float) -> float:
    text = point.get(name)
    if text is None:
        raise errors.InvalidEvent(f"point has no {name!r}", reason="missing_field")
    try:
        value = parse_double(text)
    except ValueError:
        raise errors.InvalidEvent(f"bad {name} {text[:40]!r}", reason="bad_coordinates") from None
    return check_coordinate(name, value, bound)


def check_coordinate(name: str, value: float, bound: float) -> float:
    """A latitude (bound 90) or longitude (bound 180) must be finite and within its range."""
    if not (math.isfinite(value) and -bound <= value <= bound):
        raise errors.InvalidEvent(f"{name} {value!r} out of range", reason="bad_coordinates")
    return value


def _error_value(point: ET.Element, name: str) -> float:
    """hae/ce/le: missing or "NaN" (node-CoT has seen it, tak-protocol.md 1.2) means unknown."""
    text = point.get(name)
    if text is None:
        return UNKNOWN_ERROR
    try:
        value = parse_double(text)
    except ValueError:
        raise errors.InvalidEvent(f"bad {name} {text[:40]!r}", reason="bad_coordinates") from None
    return unknown_if_not_finite(value)


def unknown_if_not_finite(value: float) -> float:
    """NaN or an infinity in hae/ce/le carries no information: store CoT's "unknown" value."""
    return value if math.isfinite(value) else UNKNOWN_ERROR


def parse_event(data: bytes) -> Event:
    """Parse one CoT ``<event>`` (an optional XML declaration and outer whitespace allowed).

    The Event keeps the exact bytes of the element in ``Event.xml`` and the parsed ``<detail>``.
    Raises ``InvalidEvent`` (reason codes in the module docstring).
    """
    element = _element_bytes(data, limits.MAX_XML_EVENT_BYTES)
    root = parse_element(element)
    if root.tag != "event":
        raise errors.InvalidEvent(
            f"root element is <{root.tag[:40]}>, not <event>", reason="not_event"
        )
    point: ET.Element | None = None
    detail: ET.Element | None = None
    for child in root:
        if child.tag == "point":
            if point is not None:
                raise errors.InvalidEvent("event has two <point> elements", reason="bad_xml")
            point = child
        elif child.tag == "detail":
            # Two details would let different readers see different content (labels included).
            if detail is not None:
                raise errors.InvalidEvent("event has two <detail> elements", reason="bad_xml")
            detail = child
    if point is None:
        raise errors.InvalidEvent("event has no <point>", reason="missing_field")
    uid = _required(root, "uid")
    type_ = _required(root, "type")
    time_text = _required(root, "time")
    start_text = _required(root, "start")
    stale_text = _required(root, "stale")
    if not uid or not type_:
        raise errors.InvalidEvent("event uid or type is empty", reason="missing_field")
    time_ms = parse_time(time_text)
    start_ms = time_ms if start_text == time_text else parse_time(start_text)
    stale_ms = parse_time(stale_text)
    event = make_event(
        uid=uid,
        type=type_,
        how=root.get("how", ""),
        time=time_ms,
        start=start_ms,
        stale=stale_ms,
        lat=_coordinate(point, "lat", 90.0),
        lon=_coordinate(point, "lon", 180.0),
        hae=_error_value(point, "hae"),
        ce=_error_value(point, "ce"),
        le=_error_value(point, "le"),
        version=root.get("version") or "2.0",
        access=_optional(root, "access"),
        qos=_optional(root, "qos"),
        opex=_optional(root, "opex"),
        caveat=_optional(root, "caveat"),
        releasable_to=_optional(root, "releasableTo"),
        detail=detail,
        xml=element,
    )
    # check_limits walks the whole detail; it cannot refuse an event too short to hold more
    # elements than MAX_DETAIL_ELEMENTS (each takes 4 bytes at least, "<a/>") or remarks longer
    # than MAX_REMARKS_CHARS, whose attribute values are all in double quotes and no longer
    # than the shortest attribute limit. An attribute value is quoted (XML 1.0 section 3.1,
    # [10] AttValue) and never has more characters than bytes (references only shorten it, and
    # there are no other entities); with no "'" in the bytes, each double-quoted value is one
    # of the pieces between two '"', so the longest piece bounds the longest value.
    if (
        len(element) > _LIMITS_ALWAYS_MET_BYTES
        or b"'" in element
        or max(map(len, element.split(b'"'))) > _SHORTEST_ATTRIBUTE_LIMIT
    ):
        check_limits(event)
    if len(element) > limits.MAX_EVENT_BYTES:
        raise errors.InvalidEvent(
            f"event of {len(element)} bytes exceeds {limits.MAX_EVENT_BYTES}", reason="too_large"
        )
    return event


_LIMITS_ALWAYS_MET_BYTES = min(4 * limits.MAX_DETAIL_ELEMENTS, limits.MAX_REMARKS_CHARS)
_SHORTEST_ATTRIBUTE_LIMIT = min(
    limits.MAX_UID_CHARS,
    limits.MAX_TYPE_CHARS,
    limits.MAX_ATTRIBUTE_CHARS,
    limits.MAX_CALLSIGN_CHARS,
)


def check_limits(event: Event) -> None:
    """Refuse an event with a field longer than a TAK client can take (``protocol/limits.py``).

    Raises ``InvalidEvent(reason="field_too_long")`` whose message names the field. Both codecs
    call this, so every path that parses CoT (streams, UDP, REST, federation, stored events)
    applies the same limits; each codec checks the event's size itself (reason "too_large").
    """
    for name, value, limit in (
        ("uid", event.uid, limits.MAX_UID_CHARS),
        ("type", event.type, limits.MAX_TYPE_CHARS),
        ("how", event.how, limits.MAX_ATTRIBUTE_CHARS),
        ("version", event.version, limits.MAX_ATTRIBUTE_CHARS),
        ("access", event.access, limits.MAX_ATTRIBUTE_CHARS),
        ("qos", event.qos, limits.MAX_ATTRIBUTE_CHARS),
        ("opex", event.opex, limits.MAX_ATTRIBUTE_CHARS),
        ("caveat", event.caveat, limits.MAX_ATTRIBUTE_CHARS),
        ("releasableTo", event.releasable_to, limits.MAX_ATTRIBUTE_CHARS),
    ):
        if (message := limits.oversized(name, value, limit)) is not None:
            raise errors.InvalidEvent(message, reason="field_too_long")
    if event.detail is None:
        return
    elements = -1  # the <detail> itself is not counted
    for element in event.detail.iter():
        elements += 1
        if elements > limits.MAX_DETAIL_ELEMENTS:
            raise errors.InvalidEvent(
                f"detail has more than {limits.MAX_DETAIL_ELEMENTS} elements",
                reason="field_too_long",
            )
        attrib = element.attrib
        for attr in limits.CALLSIGN_ATTRIBUTES:
            value = attrib.get(attr)
            if value is not None and len(value) > limits.MAX_CALLSIGN_CHARS:
                name = f"{element.tag}@{attr}"
                raise errors.InvalidEvent(
                    f"{name} of {len(value)} characters exceeds {limits.MAX_CALLSIGN_CHARS}",
                    reason="field_too_long",
                )
        if element.tag == "remarks":
            message = limits.oversized("remarks", element.text, limits.MAX_REMARKS_CHARS)
            if message is not None:
                raise errors.InvalidEvent(message, reason="field_too_long")


# --- rendering ------------------------------------------------------------------------------------

_TEXT_SPECIAL = re.compile(r"[&<>]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def escape_text(value: str) -> str:
    """Escape character data for element content."""
    if _TEXT_SPECIAL.search(value) is None:
        return value
    return value.translate(_TEXT_ESCAPES)


_ATTR_SPECIAL = re.compile(r"[&<>\"\n\r\t]")
_ATTR_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#09;",  # as ElementTree writes it
    }
)


def escape_attribute(value: str) -> str:
    """Escape a value for a double-quoted attribute, keeping newlines and tabs (XML 1.0 3.3.3)."""
    if _ATTR_SPECIAL.search(value) is None:
        return value
    return value.translate(_ATTR_ESCAPES)


def serialize_element(element: ET.Element) -> str:
    """``ET.tostring(element, encoding="unicode")``, tail included, several times faster.

    ElementTree's serializer is pure Python and first walks the tree to collect namespaces; CoT
    details almost never use namespaces, so this writes the same text directly (same escaping,
    same ``<a />`` empty elements) and hands namespaced or unusual trees to ElementTree.
    """
    out: list[str] = []
    if not _write_plain(element, out):
        return ET.tostring(element, encoding="unicode")
    return "".join(out)


def _write_plain(element: ET.Element, out: list[str]) -> bool:
    """Append ``element`` to ``out``; False (output unusable) if it needs ElementTree's writer."""
    tag = element.tag
    if not isinstance(tag, str) or tag.startswith("{"):
        return False  # a namespace, or a Comment/ProcessingInstruction factory
    out.append("<" + tag)
    for name, value in element.attrib.items():
        if not isinstance(name, str) or not isinstance(value, str) or name.startswith("{"):
            return False
        out.append(f' {name}="{escape_attribute(value)}"')
    text = element.text
    if text or len(element):
        out.append(">")
        if text:
            out.append(escape_text(text))
        for child in element:
            if not _write_plain(child, out):
                return False
        out.append(f"</{tag}>")
    else:
        out.append(" />")
    if element.tail:
        out.append(escape_text(element.tail))
    return True


def format_double(value: float) -> str:
    """A float written so that it reads back to the same value (Python's shortest repr)."""
    return repr(float(value))


def render_xml(event: Event) -> bytes:
    """The CoT XML bytes of ``event``: its original bytes when it has them, else serialised.

    No XML declaration. Attributes in the order version, uid, type, how, time, start, stale,
    then access, qos, opex, caveat, releasableTo when set; ``<point>`` then ``<detail>``.
    """
    if event.xml is not None:
        return event.xml
    parts = _open_parts(event, event.access, event.caveat, event.releasable_to)
    if event.detail is not None:
        parts.append(serialize_element(event.detail))
    parts.append("</event>")
    return "".join(parts).encode("utf-8")


_DETAIL_OPEN = b"<detail>"
_DETAIL_CLOSE = b"</detail>"
_EVENT_CLOSE = b"</event>"
_XML_SPACE = b" \t\r\n"


def render_relabelled(
    received: bytes,
    event: Event,
    *,
    access: str | None,
    caveat: str | None,
    releasable_to: str | None,
    appended: str,
) -> bytes | None:
    """The bytes :func:`render_xml` gives for ``event`` re-marked with the given root attributes
    and ``appended`` (serialised element text) as the last child of its ``<detail>``, written
    from ``received``, the event's own bytes, rather than serialising the detail again; None when
    ``received`` is not of the plain shape that makes this exact, and the caller serialises.

    The plain shape: no markup declaration, comment, CDATA section or processing instruction
    (``<!``, ``<?``: the parser drops comments and PIs, which must not ride along), no namespace
    declaration (``xmlns``: one on the root would be lost with the root's rewrite), one
    ``<detail>`` without attributes and one ``</detail>`` (so no element named ``detail`` or
    starting so nests inside, and ``<`` cannot occur in attribute values or text, XML 1.0 2.4
    and 3.1), nothing but white space between ``</detail>`` and ``</event>``, and no
    ``__seclabel`` anywhere in the detail (the label's element is the gate's, never the
    client's). The detail's children then go out as received, as an unlabelled event's do; the
    root and ``<point>`` are written from the event as :func:`render_xml` writes them.
    """
    if b"<!" in received or b"<?" in received:
        return None
    if b"xmlns" in received:
        # A namespace declared on the root (rewritten here) may be used in the detail: only
        # serialising declares it again (Namespaces in XML 1.0, section 3).
        return None
    start = received.find(_DETAIL_OPEN)
    if start < 0 or received.find(b"<detail", start + 1) >= 0:
        return None
    if received.find(b"<detail") != start:
        return None
    end = received.find(_DETAIL_CLOSE, start)
    if end < 0 or received.find(_DETAIL_CLOSE, end + 1) >= 0:
        return None
    rest = received[end + len(_DETAIL_CLOSE) :].rstrip(_XML_SPACE)
    if not rest.endswith(_EVENT_CLOSE) or rest[: -len(_EVENT_CLOSE)].strip(_XML_SPACE):
        return None
    inner = received[start + len(_DETAIL_OPEN) : end]
    if b"__seclabel" in inner:
        return None
    head = "".join(_open_parts(event, access, caveat, releasable_to)) + "<detail>"
    # ``rest``: the white space after </detail> (the detail's tail, which serialising writes
    # too) and </event>.
    return b"".join((head.encode("utf-8"), inner, appended.encode("utf-8"), _DETAIL_CLOSE, rest))


def render_open(
    event: Event, *, access: str | None, caveat: str | None, releasable_to: str | None
) -> str:
    """``<event ...><point .../>`` of ``event`` with the given marking attributes: the start of
    :func:`render_xml`'s output, for writers that build their own ``<detail>`` (the federation
    guard). The caller appends the detail and ``</event>``."""
    return "".join(_open_parts(event, access, caveat, releasable_to))


def _open_parts(
    event: Event, access: str | None, caveat: str | None, releasable_to: str | None
) -> list[str]:
    parts = [
        f'<event version="{escape_attribute(event.version)}"',
        f' uid="{escape_attribute(event.uid)}"',
        f' type="{escape_attribute(event.type)}"',
    ]
    if event.how:
        parts.append(f' how="{escape_attribute(event.how)}"')
    parts.append(
        f' time="{format_time(event.time)}" start="{format_time(event.start)}"'
        f' stale="{format_time(event.stale)}"'
    )
    for name, value in (
        ("access", access),
        ("qos", event.qos),
        ("opex", event.opex),
        ("caveat", caveat),
        ("releasableTo", releasable_to),
    ):
        if value is not None:
            parts.append(f' {name}="{escape_attribute(value)}"')
    parts.append(
        f'><point lat="{format_double(event.lat)}" lon="{format_double(event.lon)}"'
        f' hae="{format_double(event.hae)}" ce="{format_double(event.ce)}"'
        f' le="{format_double(event.le)}"/>'
    )
    return parts


# --- <auth> ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRequest:
    """The credentials of a stream ``<auth><cot .../></auth>`` message (tak-protocol.md 3.3)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    uid: str | None = None
    callsign: str | None = None


def parse_auth(data: bytes) -> AuthRequest:
    """Parse ``<auth><cot username= password= uid= callsign=/></auth>`` (TAK Server AuthCot).

    Same hardening as :func:`parse_event`, and at most ``limits.MAX_AUTH_BYTES``.
    """
    element = _element_bytes(data, limits.MAX_AUTH_BYTES)
    root = parse_element(element)
    if root.tag != "auth":
        raise errors.InvalidEvent(
            f"root element is <{root.tag[:40]}>, not <auth>", reason="not_auth"
        )
    cot = root.find("cot")
    if cot is None:
        raise errors.InvalidEvent("<auth> has no <cot> element", reason="missing_field")
    return AuthRequest(
        username=cot.get("username"),
        password=cot.get("password"),
        uid=cot.get("uid"),
        callsign=cot.get("callsign"),
    )
