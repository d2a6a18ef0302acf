"""CoT XML <-> TAK federation v2 ``FederatedEvent``/``GeoEvent`` (tak-federation.md section 5).

No I/O and no clock (the caller passes the time of receipt). Three conversions:

* :func:`release_to_federated`: the guard's release bytes (CoT XML, already labelled, marked and
  stamped with ``<__federation>``) into the ``FederatedEvent`` sent to a TAK peer, the way TAK
  Server's own sender does it (section 5.1): times in ms, point attributes as doubles,
  ``access``/``caveat``/``releasableTo`` (fields 27-29) from the root, ``track`` (with speed and
  course), ``status`` (with battery, no readiness) and ``precisionlocation`` (with both
  attributes) moved to their fields, ``marti/dest`` targets copied to ``ptpUids``,
  ``ptpCallsigns`` and ``missionNames``, and every other ``<detail>`` child, ``<__seclabel>``
  and ``<__federation>`` included, kept in ``other`` (one ``<detail>`` element). Provenance
  (field 4) names this server and the origin, hops (field 5) carry the hop count and the
  peer's ``max_hops``.
* :func:`federated_to_cot`: the inverse (section 5.2), used to re-check the exact serialized
  message before it is written, and as the first step of reading what a peer sends.
* :func:`inbound_cot`: what a peer sent, as CoT XML for the inbound validator, with the peer's
  default label added when it carried no ``<__seclabel>`` and a ``<__federation>`` provenance
  element derived from ``federateProvenance``/``federateHops`` when it carried none.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

from liaison.errors import PeerError
from liaison.federation.guard import MAX_HOPS, PROVENANCE_TAG
from liaison.federation.proto import fig_pb2
from liaison.model import labels
from liaison.model.labels import Label, Policy
from liaison.protocol import cot_xml, limits

# TAK's value for an unknown circular/linear error (tak-federation.md 4.2, fields 7-8).
UNKNOWN_ERROR = 999999.0
# Most explicit destinations (ptp uids, callsigns, missions) one inbound event may name.
MAX_DESTS = 256


class FigError(ValueError):
    """A FederatedEvent that cannot be turned into a CoT event; ``reason`` is a stable code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _double(value: str | None, default: float) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        return default
    return number if number == number and abs(number) != float("inf") else default


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseFacts:
    """What the contact list needs of a release (read while translating it)."""

    callsign: str | None = None  # contact@callsign, when the contact has an endpoint
    link_uid: str | None = None  # first link@uid (what a t-x-d-d deletes)
    link_type: str | None = None  # that link's type


def release_to_federated(
    payload: bytes, *, server_id: str, max_hops: int
) -> fig_pb2.FederatedEvent:
    """The FederatedEvent for one release (raises PeerError/FigError if it is not an event)."""
    return release_with_facts(payload, server_id=server_id, max_hops=max_hops)[0]


def release_with_facts(
    payload: bytes, *, server_id: str, max_hops: int
) -> tuple[fig_pb2.FederatedEvent, ReleaseFacts]:
    """:func:`release_to_federated`, with the contact facts of the release."""
    return release_from_tree(cot_xml.parse_element(payload), server_id=server_id, max_hops=max_hops)


def release_from_tree(
    root: ET.Element, *, server_id: str, max_hops: int
) -> tuple[fig_pb2.FederatedEvent, ReleaseFacts]:
    """:func:`release_with_facts` of a release already read with ``cot_xml.parse_element`` (the
    tree the send-time re-check read the queued bytes into: one parse for both). The tree is
    only read, never changed."""
    if root.tag != "event":
        raise FigError("not_event")
    geo = fig_pb2.GeoEvent(
        sendTime=cot_xml.parse_time(root.get("time", "")),
        startTime=cot_xml.parse_time(root.get("start", "")),
        staleTime=cot_xml.parse_time(root.get("stale", "")),
        uid=root.get("uid", ""),
        type=root.get("type", ""),
        coordSource=root.get("how", ""),
        access=root.get("access", ""),
        caveat=root.get("caveat", ""),
        releaseableTo=root.get("releasableTo", ""),
    )
    point = root.find("point")
    if point is not None:
        geo.lat = _double(point.get("lat"), 0.0)
        geo.lon = _double(point.get("lon"), 0.0)
        geo.hae = _double(point.get("hae"), 0.0)
        geo.ce = _double(point.get("ce"), UNKNOWN_ERROR)
        geo.le = _double(point.get("le"), UNKNOWN_ERROR)
    details = [c for c in root if c.tag == "detail"]
    if len(details) != 1:
        raise FigError("detail_count")
    detail = details[0]
    kept: list[ET.Element] = []
    moved: set[str] = set()
    origin = server_id
    hops = 1
    callsign: str | None = None
    link: ET.Element | None = None
    for child in detail:
        tag = child.tag
        a = child.attrib
        if tag == "contact" and callsign is None and a.get("endpoint") is not None:
            callsign = a.get("callsign")
        elif tag == "link" and link is None:
            link = child
        # Section 5.1 step 3: the parts TAK carries in fields of their own, each moved once.
        if tag == "track" and "track" not in moved and "speed" in a and "course" in a:
            geo.speed = _double(a["speed"], 0.0)
            geo.course = _double(a["course"], 0.0)
            moved.add(tag)
            continue
        if tag == "status" and "status" not in moved and "battery" in a and "readiness" not in a:
            battery = _double(a["battery"], -1.0)
            if 0 <= battery <= 2**31 - 1 and battery == int(battery) and len(a) == 1:
                geo.battery = int(battery)
                moved.add(tag)
                continue
        if (
            tag == "precisionlocation"
            and tag not in moved
            and set(a) == {"geopointsrc", "altsrc"}
            and not len(child)
        ):
            geo.ploc, geo.palt = a["geopointsrc"], a["altsrc"]
            moved.add(tag)
            continue
        if tag == "marti":
            for dest in child.iter("dest"):
                if dest.get("uid"):
                    geo.ptpUids.append(dest.get("uid", ""))
                if dest.get("callsign"):
                    geo.ptpCallsigns.append(dest.get("callsign", ""))
                # Section 4.2 field 26: mission CoT names its missions (tak-federation.md 11).
                if dest.get("mission"):
                    geo.missionNames.append(dest.get("mission", ""))
        if tag == PROVENANCE_TAG:
            origin = child.get("origin", server_id)
            hops = int(child.get("hops", "1"))
        kept.append(child)
    opening = "<detail" + "".join(
        f' {k}="{cot_xml.escape_attribute(v)}"' for k, v in detail.attrib.items()
    )
    geo.other = (
        opening
        + ">"
        + cot_xml.escape_text(detail.text or "")
        + "".join(cot_xml.serialize_element(c) for c in kept)
        + "</detail>"
    )
    fed = fig_pb2.FederatedEvent(event=geo)
    # Section 9: our id in the provenance (and the origin's, for an event we relay), hops counted.
    fed.federateProvenance.add(federationServerId=server_id)
    if origin != server_id:
        fed.federateProvenance.add(federationServerId=origin)
    fed.federateHops.currentHops = hops
    fed.federateHops.maxHops = max_hops
    facts = ReleaseFacts(
        callsign=callsign,
        link_uid=link.get("uid") if link is not None else None,
        link_type=link.get("type") if link is not None else None,
    )
    return fed, facts


def _point(geo: fig_pb2.GeoEvent) -> ET.Element:
    return ET.Element(
        "point",
        {
            "lat": cot_xml.format_double(geo.lat),
            "lon": cot_xml.format_double(geo.lon),
            "hae": cot_xml.format_double(geo.hae),
            "ce": cot_xml.format_double(geo.ce),
            "le": cot_xml.format_double(geo.le),
        },
    )


def _detail(geo: fig_pb2.GeoEvent, max_depth: int = limits.MAX_XML_DEPTH) -> ET.Element:
    """``other`` parsed (it must be one ``<detail>`` element), with the moved parts put back."""
    if geo.other:
        try:
            detail = cot_xml.parse_element(geo.other.encode("utf-8"), max_depth=max_depth)
        except PeerError as exc:
            raise FigError(f"bad_other:{exc.reason}") from None
        if detail.tag != "detail":
            raise FigError("other_not_detail")
    else:
        detail = ET.Element("detail")
    # Section 5.2 step 4, for what a sender moved out: restored only when it carries a value
    # (proto3 has no presence), so a release re-reads exactly as it was decided.
    if (geo.speed or geo.course) and detail.find("track") is None:
        ET.SubElement(
            detail,
            "track",
            {
                "speed": cot_xml.format_double(geo.speed),
                "course": cot_xml.format_double(geo.course),
            },
        )
    if geo.battery and detail.find("status") is None:
        ET.SubElement(detail, "status", {"battery": str(geo.battery)})
    if (geo.ploc or geo.palt) and detail.find("precisionlocation") is None:
        ET.SubElement(detail, "precisionlocation", {"geopointsrc": geo.ploc, "altsrc": geo.palt})
    _restore_dests(geo, detail)
    return detail


def _restore_dests(geo: fig_pb2.GeoEvent, detail: ET.Element) -> None:
    """Section 5.2 step 5: ``ptpUids``/``ptpCallsigns`` are the explicit destinations and
    ``missionNames`` the missions of the event. TAK's sender strips ``marti/dest`` from
    ``other`` (section 5.1 step 4), so they are put back as ``<marti><dest .../></marti>`` and
    the router delivers the event to those recipients only, never as a broadcast. When
    ``other`` keeps its own dests (Liaison's sender does), the uid and callsign targets must be
    the same as the ptp fields: a message whose two lists disagree is refused."""
    ptp = {("uid", u) for u in geo.ptpUids if u} | {("callsign", c) for c in geo.ptpCallsigns if c}
    missions = {("mission", m) for m in geo.missionNames if m}
    if len(ptp) + len(missions) > MAX_DESTS:
        raise FigError("too_many_dests")
    existing = [d for m in detail.findall("marti") for d in m.findall("dest")]
    if existing:
        named = {(k, d.get(k, "")) for d in existing for k in ("uid", "callsign") if d.get(k)}
        if ptp and named != ptp:
            raise FigError("dest_mismatch")
        kept = {("mission", d.get("mission", "")) for d in existing if d.get("mission")}
        if missions and kept != missions:
            raise FigError("dest_mismatch")
        return
    if not ptp and not missions:
        return
    marti = ET.SubElement(detail, "marti")
    for kind, value in sorted(ptp | missions):
        ET.SubElement(marti, "dest", {kind: value})


def _event_xml(geo: fig_pb2.GeoEvent, detail: ET.Element) -> bytes:
    return cot_xml.serialize_element(_event_tree(geo, detail)).encode("utf-8")


def _event_tree(geo: fig_pb2.GeoEvent, detail: ET.Element) -> ET.Element:
    attrs = {"version": "2.0", "uid": geo.uid, "type": geo.type}
    if geo.coordSource:
        attrs["how"] = geo.coordSource
    try:
        attrs["time"] = cot_xml.format_time(geo.sendTime)
        attrs["start"] = cot_xml.format_time(geo.startTime)
        attrs["stale"] = cot_xml.format_time(geo.staleTime)
    except ValueError:
        raise FigError("bad_time") from None
    for name, value in (
        ("access", geo.access),
        ("caveat", geo.caveat),
        ("releasableTo", geo.releaseableTo),
    ):
        if value:
            attrs[name] = value
    root = ET.Element("event", attrs)
    root.append(_point(geo))
    root.append(detail)
    return root


def federated_to_cot(fed: fig_pb2.FederatedEvent) -> bytes:
    """The CoT XML a FederatedEvent carries (section 5.2), nothing added."""
    if not fed.HasField("event"):
        raise FigError("no_event")
    return _event_xml(fed.event, _detail(fed.event))


def federated_to_tree(fed: fig_pb2.FederatedEvent) -> ET.Element:
    """:func:`federated_to_cot` as the element tree it would write (``other`` read with the
    hardened parser, one level shallower since it sits under ``<event>``), for the guard's
    re-check of a serialized message decoded again, without writing and parsing XML once
    more."""
    if not fed.HasField("event"):
        raise FigError("no_event")
    return _event_tree(fed.event, _detail(fed.event, max_depth=limits.MAX_XML_DEPTH - 1))


def inbound_cot(
    fed: fig_pb2.FederatedEvent,
    *,
    policy: Policy,
    server_id: str,
    peer_server_id: str,
    default_label: Label | None,
    now_ms: int,
) -> bytes:
    """What a peer sent, as CoT XML for ``InboundValidator``: labelled and with provenance.

    * No ``<__seclabel>`` anywhere in the detail: the peer's ``default_label`` (originator the
      peer's organisation, created now) is added; without one the event stays unlabelled and
      the validator refuses it (``no_label``). A label the peer sent is kept, for the validator
      to judge against what the peer may originate.
    * Our ``server_id`` in ``federateProvenance``: the provenance says the event started here,
      so the validator refuses it as ``loop_own_origin``. Otherwise a ``<__federation>`` the
      peer sent is kept, and when there is none one is added: origin the peer, hops the largest
      of 1, ``federateHops.currentHops`` and the provenance's length (an event that crossed
      more links than the peer's ``max_hops`` is refused as ``hop_limit``).
    """
    if not fed.HasField("event"):
        raise FigError("no_event")
    geo = fed.event
    detail = _detail(geo)
    seen = {p.federationServerId for p in fed.federateProvenance}
    if server_id in seen:
        for old in [c for c in detail if c.tag == PROVENANCE_TAG]:
            detail.remove(old)
        ET.SubElement(detail, PROVENANCE_TAG, {"origin": server_id, "hops": "1"})
    else:
        # Section 9: the hops an event has made are at least what the peer's hop count and its
        # provenance list say; a <__federation> the peer wrote may not claim fewer.
        hops = min(max(1, fed.federateHops.currentHops, len(seen)), MAX_HOPS + 1)
        own = [el for el in detail.iter() if el.tag == PROVENANCE_TAG]
        if not own:
            ET.SubElement(detail, PROVENANCE_TAG, {"origin": peer_server_id, "hops": str(hops)})
        else:
            # (Anything but one with ASCII digits is left for the validator to refuse.)
            claimed = own[0].get("hops", "")
            if len(own) == 1 and claimed.isascii() and claimed.isdigit() and int(claimed) < hops:
                own[0].set("hops", str(hops))
    has_label = any(
        isinstance(el.tag, str) and el.tag.endswith(labels.SECLABEL_TAG) for el in detail.iter()
    )
    if not has_label and default_label is not None:
        stamped = dataclasses.replace(default_label, created_ms=now_ms)
        detail.append(labels.label_to_seclabel(policy, stamped))
    return _event_xml(geo, detail)
