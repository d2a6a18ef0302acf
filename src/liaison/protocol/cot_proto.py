"""Event <-> TAK protocol v1 TakMessage payload, with the xmlDetail rule for <detail>.

Decoding and encoding use takproto's generated classes (the ATAK/commo ``.proto`` files). The
detail travels as ``Detail.xmlDetail`` (the XML children of ``<detail>``) plus a few strongly typed
sub-messages; which elements may use a typed field follows TAK Server's exact-fit rule
(TAK Server ``detail.proto`` comments and StreamingProtoBufHelper; tak-protocol.md 2.3):

* sender: an element becomes a typed field only if the whole element fits it (exactly the
  attributes the message has, no children, no text, not repeated); everything else stays, in
  order, in ``xmlDetail``. An element is never split between the two.
* receiver: wrap ``xmlDetail`` in ``<detail>``, parse it (hardened, as any XML we read), then add
  each typed field as its element unless the xmlDetail copy already has that element.

``caveat`` and ``releasableTo`` are CotEvent fields 16 and 17 in TAK Server's ``cotevent.proto``
but absent from takproto's copy (tak-protocol.md 2.2, 2.5); they are read from and written as
those field numbers directly, so they survive a TAK Server hop and are ignored by older readers.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError
from takproto.proto import TakMessage

from liaison import errors
from liaison.model.event import Event, make_event
from liaison.protocol import cot_xml, limits
from liaison.protocol.tak_stream import encode_varint

# TAK Server cotevent.proto: "string caveat = 16; string releaseableTo = 17;"
CAVEAT_FIELD = 16
RELEASABLE_TO_FIELD = 17
_LENGTH_DELIMITED = 2  # protobuf wire type of strings

# --- receiver side -------------------------------------------------------------------------------


def _bad_proto(message: str) -> errors.InvalidEvent:
    return errors.InvalidEvent(message, reason="bad_proto")


def parse_proto(payload: bytes) -> Event | None:
    """Decode one TakMessage payload into an Event.

    Returns None for a message that carries only ``takControl`` (no ``cotEvent``). Raises
    ``InvalidEvent``: reason "bad_proto" when the bytes are not a TakMessage, otherwise the same
    reasons as :func:`cot_xml.parse_event` (times, coordinates, the xmlDetail XML).
    """
    if len(payload) > limits.MAX_PROTO_EVENT_BYTES:
        raise errors.InvalidEvent(
            f"TakMessage of {len(payload)} bytes exceeds {limits.MAX_PROTO_EVENT_BYTES}",
            reason="too_large",
        )
    message: Any = TakMessage()
    try:
        message.ParseFromString(payload)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise _bad_proto(f"not a TakMessage: {exc}") from None
    if not message.HasField("cotEvent"):
        return None
    cot = message.cotEvent
    if not cot.uid or not cot.type:
        raise errors.InvalidEvent("CotEvent uid or type is empty", reason="missing_field")
    caveat, releasable_to = _label_fields(cot)
    # Field lengths before the detail is parsed, so an oversized uid is named as such.
    for name, value, limit in (
        ("uid", cot.uid, limits.MAX_UID_CHARS),
        ("type", cot.type, limits.MAX_TYPE_CHARS),
    ):
        if (message := limits.oversized(name, value, limit)) is not None:
            raise errors.InvalidEvent(message, reason="field_too_long")
    detail = _detail_from_proto(cot.detail) if cot.HasField("detail") else None
    event = make_event(
        uid=cot.uid,
        type=cot.type,
        how=cot.how,
        time=cot_xml.check_time(cot.sendTime),
        start=cot_xml.check_time(cot.startTime),
        stale=cot_xml.check_time(cot.staleTime),
        lat=cot_xml.check_coordinate("lat", cot.lat, 90.0),
        lon=cot_xml.check_coordinate("lon", cot.lon, 180.0),
        hae=cot_xml.unknown_if_not_finite(cot.hae),
        ce=cot_xml.unknown_if_not_finite(cot.ce),
        le=cot_xml.unknown_if_not_finite(cot.le),
        access=cot.access or None,
        qos=cot.qos or None,
        opex=cot.opex or None,
        caveat=caveat,
        releasable_to=releasable_to,
        detail=detail,
        proto=payload,
    )
    cot_xml.check_limits(event)
    _check_size(event, payload)
    return event


# Bytes of XML one byte of TakMessage can become at most: an escaped '"' is 6 ("&quot;").
_XML_GROWTH = 6
# Plus the fixed text of the <event> and <point> tags and of the typed detail elements.
_XML_OVERHEAD = 2048


def _check_size(event: Event, payload: bytes) -> None:
    """The payload, and the XML every XML client will receive, must fit ``MAX_EVENT_BYTES``.

    The XML is only rendered when the payload is large enough that it might not fit.
    """
    size = len(payload)
    if size > limits.MAX_EVENT_BYTES:
        raise errors.InvalidEvent(
            f"TakMessage of {size} bytes exceeds {limits.MAX_EVENT_BYTES}", reason="too_large"
        )
    if size * _XML_GROWTH + _XML_OVERHEAD > limits.MAX_EVENT_BYTES:
        xml_size = len(cot_xml.render_xml(event))
        if xml_size > limits.MAX_EVENT_BYTES:
            raise errors.InvalidEvent(
                f"event of {xml_size} bytes as XML exceeds {limits.MAX_EVENT_BYTES}",
                reason="too_large",
            )


def _label_fields(cot: Any) -> tuple[str | None, str | None]:
    """caveat (16) and releaseableTo (17), which takproto's CotEvent keeps as unknown fields."""
    caveat: str | None = None
    releasable_to: str | None = None
    found: Any = unknown_fields.UnknownFieldSet(cot)  # iterable; the type stubs omit __iter__
    for unknown in found:
        if unknown.wire_type != _LENGTH_DELIMITED or unknown.field_number not in (
            CAVEAT_FIELD,
            RELEASABLE_TO_FIELD,
        ):
            continue
        try:
            text = bytes(unknown.data).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad_proto(f"field {unknown.field_number} is not UTF-8") from None
        if unknown.field_number == CAVEAT_FIELD:
            caveat = text or None
        else:
            releasable_to = text or None
    return caveat, releasable_to


def _detail_from_proto(proto_detail: Any) -> ET.Element:
    """Rebuild ``<detail>``: the xmlDetail children, then the typed fields it does not repeat."""
    xml_detail: str = proto_detail.xmlDetail
    if xml_detail:
        wrapped = ("<detail>" + xml_detail + "</detail>").encode("utf-8")
        # <detail> sits below <event>, so its own subtree may be one level less deep.
        detail = cot_xml.parse_element(wrapped, max_depth=limits.MAX_XML_DEPTH - 1)
        present = {child.tag for child in detail}
    else:
        detail = ET.Element("detail")
        present = set()
    if proto_detail.HasField("contact") and "contact" not in present:
        contact = proto_detail.contact
        attrib = {"callsign": contact.callsign}
        if contact.endpoint:
            attrib["endpoint"] = contact.endpoint
        ET.SubElement(detail, "contact", attrib)
    if proto_detail.HasField("group") and "__group" not in present:
        group = proto_detail.group
        ET.SubElement(detail, "__group", {"name": group.name, "role": group.role})
    if proto_detail.HasField("precisionLocation") and "precisionlocation" not in present:
        precision = proto_detail.precisionLocation
        ET.SubElement(
            detail,
            "precisionlocation",
            {"geopointsrc": precision.geopointsrc, "altsrc": precision.altsrc},
        )
    if proto_detail.HasField("status") and "status" not in present:
        ET.SubElement(detail, "status", {"battery": str(proto_detail.status.battery)})
    if proto_detail.HasField("takv") and "takv" not in present:
        takv = proto_detail.takv
        ET.SubElement(
            detail,
            "takv",
            {
                "device": takv.device,
                "platform": takv.platform,
                "os": takv.os,
                "version": takv.version,
            },
        )
    if proto_detail.HasField("track") and "track" not in present:
        track = proto_detail.track
        ET.SubElement(
            detail,
            "track",
            {
                "speed": cot_xml.format_double(track.speed),
                "course": cot_xml.format_double(track.course),
            },
        )
    return detail


# --- sender side ---------------------------------------------------------------------------------

# Status.battery is a uint32; only its canonical decimal spelling converts, so the receiver's
# str(battery) gives back the same text.
_UINT = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_UINT32_LIMIT = 1 << 32


def _finite(text: str) -> float | None:
    try:
        value = cot_xml.parse_double(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _contact(detail: Any, attrib: Mapping[str, str]) -> bool:
    # TAK Server converts a contact with a callsign and at most an endpoint. An empty endpoint
    # is indistinguishable from none in proto3, so it stays in xmlDetail to keep its text.
    if "callsign" not in attrib or not set(attrib) <= {"callsign", "endpoint"}:
        return False
    if attrib.get("endpoint") == "":
        return False
    detail.contact.callsign = attrib["callsign"]
    if "endpoint" in attrib:
        detail.contact.endpoint = attrib["endpoint"]
    return True


def _group(detail: Any, attrib: Mapping[str, str]) -> bool:
    if set(attrib) != {"name", "role"}:
        return False
    detail.group.name = attrib["name"]
    detail.group.role = attrib["role"]
    return True


def _precision_location(detail: Any, attrib: Mapping[str, str]) -> bool:
    if set(attrib) != {"geopointsrc", "altsrc"}:
        return False
    detail.precisionLocation.geopointsrc = attrib["geopointsrc"]
    detail.precisionLocation.altsrc = attrib["altsrc"]
    return True


def _status(detail: Any, attrib: Mapping[str, str]) -> bool:
    if set(attrib) != {"battery"}:
        return False
    battery = attrib["battery"]
    if _UINT.fullmatch(battery) is None or int(battery) >= _UINT32_LIMIT:
        return False
    detail.status.battery = int(battery)
    return True


def _takv(detail: Any, attrib: Mapping[str, str]) -> bool:
    if set(attrib) != {"device", "platform", "os", "version"}:
        return False
    detail.takv.device = attrib["device"]
    detail.takv.platform = attrib["platform"]
    detail.takv.os = attrib["os"]
    detail.takv.version = attrib["version"]
    return True


def _track(detail: Any, attrib: Mapping[str, str]) -> bool:
    if set(attrib) != {"speed", "course"}:
        return False
    speed = _finite(attrib["speed"])
    course = _finite(attrib["course"])
    if speed is None or course is None:
        return False
    detail.track.speed = speed
    detail.track.course = course
    return True


# Element name -> converter that fills the typed field and returns True only on an exact fit.
_TYPED: dict[str, Callable[[Any, Mapping[str, str]], bool]] = {
    "contact": _contact,
    "__group": _group,
    "precisionlocation": _precision_location,
    "status": _status,
    "takv": _takv,
    "track": _track,
}


def _fill_detail(proto_detail: Any, detail: ET.Element) -> None:
    """The sender side of the xmlDetail rule (TAK Server's exact fit, tak-protocol.md 2.3)."""
    proto_detail.SetInParent()  # an empty <detail/> is still sent as a (present) Detail
    counts: dict[str, int] = {}
    for child in detail:
        if isinstance(child.tag, str):
            counts[child.tag] = counts.get(child.tag, 0) + 1
    parts: list[str] = []
    if detail.text:
        parts.append(cot_xml.escape_text(detail.text))
    for child in detail:
        convert = _TYPED.get(child.tag)
        if (
            convert is not None
            and counts[child.tag] == 1
            and len(child) == 0
            and not (child.text and child.text.strip())
            and convert(proto_detail, child.attrib)
        ):
            if child.tail:
                parts.append(cot_xml.escape_text(child.tail))
            continue
        parts.append(cot_xml.serialize_element(child))
    xml_detail = "".join(parts)
    # "If nothing remains, leave xmlDetail empty" (TAK Server detail.proto).
    if xml_detail.strip():
        proto_detail.xmlDetail = xml_detail


def _string_field(number: int, value: str) -> bytes:
    data = value.encode("utf-8")
    return encode_varint(number << 3 | _LENGTH_DELIMITED) + encode_varint(len(data)) + data


def render_proto(event: Event) -> bytes:
    """The TakMessage payload of ``event`` (no framing): its original bytes when it has them."""
    if event.proto is not None:
        return event.proto
    message: Any = TakMessage()
    cot = message.cotEvent
    cot.type = event.type
    if event.access is not None:
        cot.access = event.access
    if event.qos is not None:
        cot.qos = event.qos
    if event.opex is not None:
        cot.opex = event.opex
    cot.uid = event.uid
    cot.sendTime = event.time
    cot.startTime = event.start
    cot.staleTime = event.stale
    cot.how = event.how
    cot.lat = event.lat
    cot.lon = event.lon
    cot.hae = event.hae
    cot.ce = event.ce
    cot.le = event.le
    if event.detail is not None:
        _fill_detail(cot.detail, event.detail)
    labels = b""
    if event.caveat:
        labels += _string_field(CAVEAT_FIELD, event.caveat)
    if event.releasable_to:
        labels += _string_field(RELEASABLE_TO_FIELD, event.releasable_to)
    if labels:
        cot.MergeFromString(labels)  # kept as unknown fields and written after field 15
    payload: bytes = message.SerializeToString()
    return payload
