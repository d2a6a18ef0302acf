"""The Event: one Cursor-on-Target message, parsed once, frozen, keeping the bytes it came from.

An Event is built only by the protocol codecs (``protocol.cot_xml`` and ``protocol.cot_proto``)
through :func:`make_event`, which also extracts the handful of detail facts the router needs
(callsign, explicit destinations, the uid a delete names, ...), so the router never walks XML.

Times are integer milliseconds since the Unix epoch, the unit of TAK protocol v1
(``CotEvent.sendTime/startTime/staleTime``, takproto src-protobuf/cotevent.proto).

The ``<detail>`` element is kept as an ElementTree element and must be treated as immutable:
code that needs a changed detail (for example :meth:`Event.without_dests`) copies it.
"""

from __future__ import annotations

import copy
import enum
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field, replace

# CoT's "unknown" value for hae/ce/le. pytak and most clients write 9999999.0, the TAK proto
# comments say 999999; any value at or above 999999 means unknown (tak-protocol.md section 1.2).
UNKNOWN_ERROR = 9999999.0
UNKNOWN_THRESHOLD = 999999.0


class WireFormat(enum.Enum):
    """How a peer frames events on the wire."""

    XML = "xml"  # TAK protocol "version 0": plain CoT XML
    PROTO = "proto"  # TAK protocol version 1: TakMessage protobuf


@dataclass(frozen=True, slots=True, kw_only=True)
class Dest:
    """One ``detail/marti/dest`` entry: explicit routing (TAK Server EndpointRewriteFilter)."""

    callsign: str | None = None
    uid: str | None = None
    group: str | None = None
    mission: str | None = None


# The callsign that means "everyone on the stream" in a marti dest (tak-protocol.md section 1.6).
ALL_STREAMING = "All Streaming"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One CoT event. Build it with :func:`make_event`; never mutate its detail."""

    uid: str
    type: str
    how: str
    time: int  # ms since epoch: when the event was generated
    start: int  # ms since epoch: start of validity
    stale: int  # ms since epoch: end of validity
    lat: float
    lon: float
    hae: float = UNKNOWN_ERROR
    ce: float = UNKNOWN_ERROR
    le: float = UNKNOWN_ERROR
    version: str = "2.0"
    access: str | None = None
    qos: str | None = None
    opex: str | None = None
    # Never trusted on input (labels come from <__seclabel>); kept only for display and interop.
    caveat: str | None = None
    releasable_to: str | None = None
    detail: ET.Element | None = field(default=None, compare=False, repr=False)

    # Wire-ready encodings, when known: the exact XML bytes of <event>...</event> (no declaration)
    # and the exact TakMessage payload bytes. A relay in the same format reuses them as they are.
    xml: bytes | None = field(default=None, compare=False, repr=False)
    proto: bytes | None = field(default=None, compare=False, repr=False)

    # Facts derived from the detail by make_event, so routing never walks XML.
    callsign: str | None = None
    endpoint: str | None = None
    team: str | None = None  # __group@name, display only (never used for access control)
    dests: tuple[Dest, ...] = ()
    link_uid: str | None = None  # first <link uid=...>; the target of a t-x-d-d delete
    # Where the server got it, for the web map's layers (never sent on the wire): "feed:NAME" for
    # an item a feed made, "partner" for one that came over a federation link, else None.
    origin: str | None = field(default=None, compare=False)

    # --- classification of the event type -------------------------------------------------

    @property
    def is_contact(self) -> bool:
        """An end-user device's own position report (self-SA): an atom with a contact endpoint."""
        return self.type.startswith("a-") and self.endpoint is not None

    @property
    def is_position(self) -> bool:
        """An atom (``a-...``): a position report whose older versions may be coalesced."""
        return self.type.startswith("a-")

    @property
    def is_chat(self) -> bool:
        return self.type.startswith("b-t-f")

    @property
    def is_delete(self) -> bool:
        return self.type == "t-x-d-d"

    @property
    def is_ping(self) -> bool:
        return self.type == "t-x-c-t"

    @property
    def is_control(self) -> bool:
        """Link-level messages a server consumes and never relays (tak-protocol.md section 1.5)."""
        return self.type in CONTROL_TYPES or self.type.startswith("t-x-takp")

    def is_stale(self, now_ms: int) -> bool:
        return self.stale <= now_ms

    # --- derived copies ---------------------------------------------------------------------

    def keep_dests(self, keep: Callable[[Dest], bool]) -> Event:
        """A copy whose ``marti/dest`` elements are only those ``keep`` accepts (the rest are
        removed, as :meth:`without_dests` removes all): what goes to a partner server for the
        recipients it serves. Cached wire encodings are cleared."""
        if self.detail is None or all(keep(d) for d in self.dests):
            return self
        detail = copy.deepcopy(self.detail)
        for marti in detail.findall("marti"):
            for el in marti.findall("dest"):
                d = Dest(
                    callsign=el.get("callsign"),
                    uid=el.get("uid"),
                    group=el.get("group"),
                    mission=el.get("mission"),
                )
                if not keep(d):
                    marti.remove(el)
        kept = tuple(d for d in self.dests if keep(d))
        return replace(self, detail=detail, dests=kept, xml=None, proto=None)

    def without_dests(self) -> Event:
        """A copy with every ``marti/dest`` removed, as TAK Server forwards explicit messages.

        The ``<marti>`` element itself is kept when it has other content or attributes (for
        example ``archive``); an empty one is dropped. Cached wire encodings are cleared.
        """
        if not self.dests or self.detail is None:
            return self
        detail = copy.deepcopy(self.detail)
        for marti in detail.findall("marti"):
            for dest in marti.findall("dest"):
                marti.remove(dest)
            if len(marti) == 0 and not marti.attrib and not (marti.text or "").strip():
                detail.remove(marti)
        return replace(self, detail=detail, dests=(), xml=None, proto=None)


# Control messages TAK Server consumes and does not relay (TSc SubmissionService controlMsgTypes,
# tak-protocol.md section 1.5), plus ping.
CONTROL_TYPES = frozenset(
    {
        "t-x-c-t",
        "t-x-c-t-r",
        "t-b",
        "t-b-a",
        "t-b-c",
        "t-b-q",
        "t-x-c-f",
        "t-x-c-m",
        "t-x-c-i-e",
        "t-x-c-i-d",
    }
)


def detail_facts(detail: ET.Element | None) -> dict[str, object]:
    """Extract callsign, endpoint, team, dests and link uid from a ``<detail>`` element."""
    if detail is None:
        return {}
    facts: dict[str, object] = {}
    contact = detail.find("contact")
    if contact is not None:
        facts["callsign"] = contact.get("callsign")
        facts["endpoint"] = contact.get("endpoint")
    group = detail.find("__group")
    if group is not None:
        facts["team"] = group.get("name")
    dests: list[Dest] = []
    for marti in detail.findall("marti"):
        for d in marti.findall("dest"):
            dests.append(
                Dest(
                    callsign=d.get("callsign"),
                    uid=d.get("uid"),
                    group=d.get("group"),
                    mission=d.get("mission"),
                )
            )
    if dests:
        facts["dests"] = tuple(dests)
    link = detail.find("link")
    if link is not None:
        facts["link_uid"] = link.get("uid")
    return facts


def make_event(
    *,
    uid: str,
    type: str,
    how: str,
    time: int,
    start: int,
    stale: int,
    lat: float,
    lon: float,
    hae: float = UNKNOWN_ERROR,
    ce: float = UNKNOWN_ERROR,
    le: float = UNKNOWN_ERROR,
    version: str = "2.0",
    access: str | None = None,
    qos: str | None = None,
    opex: str | None = None,
    caveat: str | None = None,
    releasable_to: str | None = None,
    detail: ET.Element | None = None,
    xml: bytes | None = None,
    proto: bytes | None = None,
) -> Event:
    """Build an Event and derive its routing facts from the detail (the codecs' constructor)."""
    facts = detail_facts(detail)
    return Event(
        uid=uid,
        type=type,
        how=how,
        time=time,
        start=start,
        stale=stale,
        lat=lat,
        lon=lon,
        hae=hae,
        ce=ce,
        le=le,
        version=version,
        access=access,
        qos=qos,
        opex=opex,
        caveat=caveat,
        releasable_to=releasable_to,
        detail=detail,
        xml=xml,
        proto=proto,
        **facts,  # type: ignore[arg-type]
    )
