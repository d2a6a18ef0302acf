"""UDP datagrams of the TAK mesh: plain CoT XML, or the 0xBF 0x01 0xBF header plus a TakMessage.

TAK protocol.txt, "Mesh Networking": a datagram is either a traditional XML event (version 0) or
the magic byte 0xBF, the protocol version as an unsigned varint, the magic byte again, and one
TakMessage. Like TAK Server's UDP input (SingleProtobufOrCotProtocol, tak-protocol.md 2.1) we
accept an XML datagram or a version 1 header, and refuse every other version.
"""

from __future__ import annotations

from liaison import errors
from liaison.model.event import WireFormat
from liaison.protocol import limits
from liaison.protocol.tak_stream import MAGIC, decode_varint, encode_varint

# The only mesh protocol version we speak (protocol.txt: version 1 = TakMessage payload).
MESH_VERSION = 1
MESH_HEADER = bytes((MAGIC,)) + encode_varint(MESH_VERSION) + bytes((MAGIC,))

_XML_LEADING = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"


def decode_datagram(data: bytes) -> tuple[WireFormat, bytes]:
    """Classify one datagram: ``(XML, the XML bytes)`` or ``(PROTO, the TakMessage payload)``.

    The XML bytes are returned from the first ``<`` (leading whitespace and a UTF-8 byte order
    mark are dropped); ``cot_xml.parse_event`` validates the rest. Raises ``FrameTooLarge`` for a
    datagram over ``limits.MAX_DATAGRAM_BYTES`` and ``MalformedStream`` for anything that is
    neither XML nor a version 1 mesh header.
    """
    if len(data) > limits.MAX_DATAGRAM_BYTES:
        raise errors.FrameTooLarge(
            f"datagram of {len(data)} bytes exceeds {limits.MAX_DATAGRAM_BYTES}"
        )
    if data[:1] == bytes((MAGIC,)):
        header = decode_varint(data, 1)
        if header is None:
            raise errors.MalformedStream("truncated TAK mesh header")
        version, end = header
        if data[end : end + 1] != bytes((MAGIC,)):
            raise errors.MalformedStream("TAK mesh header lacks its closing 0xbf")
        if version != MESH_VERSION:
            raise errors.MalformedStream(f"unsupported TAK mesh protocol version {version}")
        return WireFormat.PROTO, data[end + 1 :]
    text = data[len(_BOM) :] if data.startswith(_BOM) else data
    stripped = text.lstrip(_XML_LEADING)
    if stripped[:1] == b"<":
        return WireFormat.XML, stripped
    raise errors.MalformedStream("datagram is neither CoT XML nor a TAK mesh frame")


def mesh_frame(payload: bytes) -> bytes:
    """Prefix one TakMessage payload with the version 1 mesh header (protocol.txt)."""
    return MESH_HEADER + payload
