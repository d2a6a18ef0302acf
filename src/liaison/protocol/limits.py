"""Every size limit of the wire protocols, named, with the reason for its value.

Other servers' choices, for comparison (shared/reference/tak-protocol.md section 1.7):
goatak rejects XML events over 2,048 bytes (too small: ATAK's own telestration shapes are 4.4 KB
and TAK Server mission-change events reach 34 KB); TAK Server allows 256 MiB on federation v2 and
64 KiB on its websocket; taky and OpenTAKServer set no cap at all and fall behind on events that
carry base64 images (taky issue #105).
"""

from __future__ import annotations

# Largest XML <event> (or <auth>) we accept on a stream or in a datagram. 1 MiB holds every real
# client message we know of (largest sample: a 34 KB mission change) with a wide margin for inline
# attachments, while bounding what one misbehaving peer can make us buffer.
MAX_XML_EVENT_BYTES = 1024 * 1024

# Largest TAK protocol v1 payload (the TakMessage after the 0xBF + varint header). Same reasoning
# and value as for XML: the protobuf form of an event is never larger than its XML form.
MAX_PROTO_EVENT_BYTES = 1024 * 1024

# A protobuf unsigned varint encodes a 64-bit value in at most 10 bytes (protocol.txt, "varint").
MAX_VARINT_BYTES = 10

# Largest UDP datagram: the IPv4/UDP payload maximum.
MAX_DATAGRAM_BYTES = 65_507

# The <auth> message must arrive within this many bytes of the stream's start (TAK Server reads at
# most 1024 bytes for it, tak-protocol.md section 3.3; we allow headroom for long passwords).
MAX_AUTH_BYTES = 4096

# Deepest element nesting inside one event. Real events nest 4 to 6 levels; 64 stops pathological
# nesting from costing parser recursion.
MAX_XML_DEPTH = 64

# --- what one event may carry, so that every TAK client can take it ---------------------------
#
# An accepted event is relayed to every client that may see it and replayed to every client that
# connects later, so a value a client cannot take breaks every client, again and again. The
# frame limits above only bound what we buffer; these bound what we pass on. A refusal is an
# InvalidEvent (reason "too_large" for the whole event, "field_too_long" for one field): only
# that event is dropped, counted and logged, and the session continues.

# Largest event we accept and relay, in bytes of its XML form. pytak (and any asyncio client)
# reads a stream with StreamReader.readuntil(b"</event>"), which fails once an event passes the
# reader's default limit of 64 KiB (asyncio streams _DEFAULT_LIMIT = 2**16) and kills the
# client's receive loop; TAK Server's own websocket input stops at 65,536 bytes
# (websocketMaxBinaryMessageBufferSize, tak-protocol.md 1.7). 48 KiB stays 16 KiB below both,
# which covers the growth of an event we re-serialise (a directed message without its marti/dest),
# and still holds the largest real event we know of (a 34 KB TAK Server mission change; ATAK's
# own shapes and routes are under 5 KB). Events with inline base64 images do not fit: send those
# as data packages, as ATAK does.
MAX_EVENT_BYTES = 48 * 1024

# Longest event uid, in characters. Real uids are UUIDs (36), "ANDROID-" plus a device id, or
# composites such as "GeoChat.<sender uid>.<room>.<message uuid>" (about 100 for ATAK chat).
MAX_UID_CHARS = 256

# Longest event type, in characters. CoT types are short hyphenated paths (a-f-G-U-C-I, 11;
# the longest in the MIL-STD-2525 mapping is under 30), with an optional ";"-suffix.
MAX_TYPE_CHARS = 128

# Longest callsign, in characters: any callsign attribute in the detail (contact@callsign,
# __chat@senderCallsign, link@callsign, marti/dest@callsign, ...). A callsign is the label a
# client draws next to a symbol and lists in its contacts; ATAK and iTAK generate ones of 10 to 20
# characters. 256 leaves any hand-typed marker name room and no client anything to choke on.
MAX_CALLSIGN_CHARS = 256

# Longest text of one <remarks> element, in characters: the body of a GeoChat message or a
# marker's note. Our own web chat accepts 4,000 characters (api/rest.py MAX_CHAT_CHARS); 16 Ki
# leaves room for pasted notes and stays well inside MAX_EVENT_BYTES.
MAX_REMARKS_CHARS = 16 * 1024

# Longest value of the other event attributes (how, qos, opex, version; and access, caveat and
# releasableTo, which carry markings such as "SECRET//REL TO USA, GBR, ..."), in characters.
MAX_ATTRIBUTE_CHARS = 1024

# Most elements inside one <detail> (the detail itself not counted). The detail's bytes are
# bounded by MAX_EVENT_BYTES; this bounds its element count, which is what parsing, routing and
# re-serialising cost and what a client's XML parser builds. A 500-point ATAK route or freehand
# drawing (one <link> per point) is about 500 elements; a detail full of "<a/>" could reach
# 12,000 inside 48 KiB.
MAX_DETAIL_ELEMENTS = 2048

# Attribute names that hold a callsign in the details TAK clients write (ATAK contact, __chat,
# link, marti/dest; tak-protocol.md 1.4 to 1.6).
CALLSIGN_ATTRIBUTES = frozenset({"callsign", "senderCallsign"})


def oversized(name: str, value: str | None, limit: int) -> str | None:
    """A refusal message when ``value`` is longer than ``limit`` characters, else None."""
    if value is None or len(value) <= limit:
        return None
    return f"{name} of {len(value)} characters exceeds {limit}"
