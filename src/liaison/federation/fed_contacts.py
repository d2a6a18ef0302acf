"""Contacts across a TAK federation link: ``ContactListEntry`` to and from CoT (pure, any wire
that carries ``FederatedEvent``: v2, and v1's length-prefixed messages).

shared/reference/tak-federation.md section 8:

* **Out.** Each side announces every local client the peer may see with
  ``ContactListEntry{CREATE, uid, callsign}``, once per uid per connection; a removed client
  (a ``t-x-d-d``) goes as ``ContactListEntry{DELETE, uid = link@uid, callsign = link@type}``
  (TAK puts the CoT type in ``callsign``). Liaison derives both from events the router and the
  guard already released to the peer (:func:`contact_create`, :func:`contact_delete`), so a
  contact is announced exactly when the peer may see that client's position report, and a
  delete only when the peer may see the delete.
* **In.** A CREATE is what lets a local user's directed message find the peer's client; TAK
  clients build their contact list from presence events, so :func:`presence_geo` turns it into a
  presence ``GeoEvent`` (``a-f-G-U-C``, how ``h-g-i-g-o``, no position: point 0,0 with unknown
  errors, ``contact`` with the server endpoint ``*:-1:stcp``, stale after
  :data:`CONTACT_STALE_S`). A DELETE becomes the ``t-x-d-d`` TAK Server synthesizes itself
  (:func:`delete_geo`: how ``h-g-i-g-o``, ``link`` uid/type from the entry, relation ``p-p``,
  stale after 20 s). Both then take the inbound path of any event (default label, provenance,
  group mapping, validator, audit, router).
"""

from __future__ import annotations

import re

from liaison.federation.proto import fig_pb2
from liaison.protocol import cot_xml

# Seconds a contact announced without a position stays fresh in clients' contact lists (TAK's
# ContactListEntry has no time; the peer's next position report replaces the presence).
CONTACT_STALE_S = 1800
# Seconds the synthesized delete of a removed contact stays valid (TAK Server's own value,
# tak-federation.md section 8, makeDeleteMessage).
DELETE_STALE_S = 20
# The presence type and "how" of a contact announced without a position (section 8).
PRESENCE_TYPE = "a-f-G-U-C"
PRESENCE_HOW = "h-g-i-g-o"
SERVER_ENDPOINT = "*:-1:stcp"
# A CoT type as TAK writes in a DELETE's callsign; anything else is replaced by this.
DEFAULT_DELETED_TYPE = "a-f-G-U-C"
_COT_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
# Longest uid or callsign taken from a ContactListEntry.
MAX_CONTACT_FIELD = 256
# CoT's unknown circular/linear error (tak-protocol.md 1.2).
UNKNOWN_ERROR = 9999999.0

CREATE = fig_pb2.CREATE
DELETE = fig_pb2.DELETE


class ContactError(ValueError):
    """A ContactListEntry that cannot be used; ``reason`` is a stable code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def contact_create(uid: str, callsign: str) -> fig_pb2.FederatedEvent:
    """The announcement of one local client to the peer (section 8)."""
    entry = fig_pb2.ContactListEntry(operation=CREATE, uid=uid, callsign=callsign)
    return fig_pb2.FederatedEvent(contact=entry)


def contact_delete(link_uid: str, link_type: str) -> fig_pb2.FederatedEvent:
    """A released ``t-x-d-d`` as TAK sends it: DELETE, the CoT type in ``callsign``."""
    entry = fig_pb2.ContactListEntry(operation=DELETE, uid=link_uid, callsign=link_type)
    return fig_pb2.FederatedEvent(contact=entry)


def _field(value: str, name: str) -> str:
    if not value or len(value) > MAX_CONTACT_FIELD or any(ord(c) < 0x20 for c in value):
        raise ContactError(f"bad_contact_{name}")
    return value


def presence_geo(entry: fig_pb2.ContactListEntry, now_ms: int) -> fig_pb2.GeoEvent:
    """The presence event for a CREATE (or UPDATE) of a peer's contact."""
    uid = _field(entry.uid, "uid")
    callsign = _field(entry.callsign or entry.uid, "callsign")
    other = (
        f'<detail><contact callsign="{cot_xml.escape_attribute(callsign)}"'
        f' endpoint="{SERVER_ENDPOINT}" /></detail>'
    )
    return fig_pb2.GeoEvent(
        sendTime=now_ms,
        startTime=now_ms,
        staleTime=now_ms + CONTACT_STALE_S * 1000,
        lat=0.0,
        lon=0.0,
        hae=UNKNOWN_ERROR,
        ce=UNKNOWN_ERROR,
        le=UNKNOWN_ERROR,
        uid=uid,
        type=PRESENCE_TYPE,
        coordSource=PRESENCE_HOW,
        other=other,
    )


def delete_geo(entry: fig_pb2.ContactListEntry, now_ms: int) -> fig_pb2.GeoEvent:
    """The ``t-x-d-d`` for a DELETE of a peer's contact (what TAK Server synthesizes)."""
    uid = _field(entry.uid, "uid")
    kind = entry.callsign if _COT_TYPE_RE.fullmatch(entry.callsign) else DEFAULT_DELETED_TYPE
    other = (
        f'<detail><link uid="{cot_xml.escape_attribute(uid)}"'
        f' type="{cot_xml.escape_attribute(kind)}" relation="p-p" /></detail>'
    )
    return fig_pb2.GeoEvent(
        sendTime=now_ms,
        startTime=now_ms,
        staleTime=now_ms + DELETE_STALE_S * 1000,
        lat=0.0,
        lon=0.0,
        hae=UNKNOWN_ERROR,
        ce=UNKNOWN_ERROR,
        le=UNKNOWN_ERROR,
        uid=f"{uid}.delete",
        type="t-x-d-d",
        coordSource=PRESENCE_HOW,
        other=other,
    )


def contact_as_event(fed: fig_pb2.FederatedEvent, now_ms: int) -> fig_pb2.FederatedEvent | None:
    """A received ``contact`` as a FederatedEvent carrying the equivalent ``GeoEvent`` (with the
    message's groups, provenance and hops); None for READ and INVALID, which mean nothing."""
    entry = fed.contact
    if entry.operation in (fig_pb2.CREATE, fig_pb2.UPDATE):
        geo = presence_geo(entry, now_ms)
    elif entry.operation == fig_pb2.DELETE:
        geo = delete_geo(entry, now_ms)
    else:
        return None
    out = fig_pb2.FederatedEvent(event=geo)
    out.federateGroups.extend(fed.federateGroups)
    out.federateProvenance.extend(fed.federateProvenance)
    if fed.HasField("federateHops"):
        out.federateHops.CopyFrom(fed.federateHops)
    return out
