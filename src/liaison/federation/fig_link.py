"""What the TAK federation wires (v2 over gRPC, ``takv2.py``/``takv2_server.py``; v1 over a
plain length-prefixed stream) share between the link and ``FederatedEvent``: turning an outbox
row into the messages written (re-checked from their serialized bytes, with the contact entries
and group names of tak-federation.md sections 7 and 8), applying what a peer sent (contacts,
group mapping, what never crosses), and the group names a peer announces. No gRPC here, so a
wire without gRPC never loads grpcio.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import NamedTuple

from liaison.errors import PeerError
from liaison.federation import fed_contacts, fed_groups, fig_codec
from liaison.federation.guard import InboundValidator, content_sha256
from liaison.federation.link import PeerLink
from liaison.federation.outbox import Outgoing as OutboxRow
from liaison.federation.proto import fig_pb2
from liaison.model.event import Dest

log = logging.getLogger(__name__)

# Received events validated, audited and made durable together.
MAX_INBOUND_BATCH = 256
# Contacts announced on one connection (each uid once, tak-federation.md section 8); past this
# the oldest are forgotten (and announced again with their next position report).
MAX_ANNOUNCED = 20_000
# Most federate group names kept from what the peer announced on its groups stream.
MAX_REMOTE_GROUPS = 256


class ContactBook:
    """The uids announced to the peer on one connection (TAK never announces one twice on a
    link, tak-federation.md section 8), oldest first, at most MAX_ANNOUNCED."""

    def __init__(self) -> None:
        self._uids: dict[str, None] = {}

    def first(self, uid: str) -> bool:
        """Note ``uid``; True when it was not announced yet."""
        if uid in self._uids:
            return False
        self._uids[uid] = None
        while len(self._uids) > MAX_ANNOUNCED:
            del self._uids[next(iter(self._uids))]
        return True

    def forget(self, uid: str) -> None:
        self._uids.pop(uid, None)


def encode_row(link: PeerLink, row: OutboxRow) -> bytes | None:
    """The serialized FederatedEvent for a row, re-checked from those very bytes (None: refused,
    with a deny record). Both roles use it."""
    encoded = _encode(link, row)
    return encoded[0] if encoded is not None else None


def encode_rows(link: PeerLink, row: OutboxRow, book: ContactBook) -> list[bytes]:
    """Everything written to the peer for one row, in order (empty: refused, with a deny
    record): the event, preceded by a ContactListEntry CREATE the first time a client's
    position report goes on this connection; a ``t-x-d-d`` goes as a ContactListEntry DELETE
    (uid and type of its link), as TAK sends it (tak-federation.md section 8). Contact entries
    carry the row's federate group names, like the event."""
    encoded = _encode(link, row)
    if encoded is None:
        return []
    data, facts = encoded
    if row.type == "t-x-d-d" and facts.link_uid:
        book.forget(facts.link_uid)
        gone = fed_contacts.contact_delete(
            facts.link_uid, facts.link_type or fed_contacts.DEFAULT_DELETED_TYPE
        )
        gone.federateGroups.extend(row.groups)
        return [gone.SerializeToString()]
    out: list[bytes] = []
    if row.type.startswith("a-") and facts.callsign and book.first(row.uid):
        hello = fed_contacts.contact_create(row.uid, facts.callsign)
        hello.federateGroups.extend(row.groups)
        out.append(hello.SerializeToString())
    out.append(data)
    return out


class Translated(NamedTuple):
    """A release translated when it was queued (:func:`pretranslate`)."""

    data: bytes  # the serialized FederatedEvent, federate group names included
    facts: fig_codec.ReleaseFacts
    groups: tuple[str, ...]  # those group names


def pretranslate(link: PeerLink, tree: ET.Element, groups: tuple[str, ...]) -> Translated | None:
    """The serialized FederatedEvent of a release, from the tree the guard's re-check read its
    bytes into, made when the link queues it (``PeerLink.translator``); None when it cannot be
    translated (it is then translated at send time, where the failure is refused and
    recorded). Nothing leaves on the strength of this alone: :func:`encode_rows` re-checks
    these bytes, decoded again, against the guard as it is when they are written."""
    try:
        fed, facts = fig_codec.release_from_tree(
            tree, server_id=link.fed.server_id, max_hops=link.peer.max_hops
        )
        fed.federateGroups.extend(groups)
        return Translated(fed.SerializeToString(), facts, groups)
    except (fig_codec.FigError, PeerError, ValueError):
        return None


def install_translator(link: PeerLink) -> None:
    """Make ``link`` translate its releases for a TAK wire when it queues them."""
    link.translator = functools.partial(pretranslate, link)


def _encode(link: PeerLink, row: OutboxRow) -> tuple[bytes, fig_codec.ReleaseFacts] | None:
    server_id, max_hops = link.fed.server_id, link.peer.max_hops
    try:
        done = link.translation(row.payload)
        if isinstance(done, Translated) and done.groups == row.groups:
            # Translated when queued, from the guard's re-check of bytes equal to these, with
            # the row's group names.
            data, facts = done.data, done.facts
        else:
            # The tree the send-time re-check read these very bytes into (one parse for both).
            tree = link.checked_tree(row.payload)
            if tree is not None:
                fed, facts = fig_codec.release_from_tree(
                    tree, server_id=server_id, max_hops=max_hops
                )
            else:
                fed, facts = fig_codec.release_with_facts(
                    row.payload, server_id=server_id, max_hops=max_hops
                )
            # The group names the link mapped this row to (fed_groups.py, tak-federation.md 7).
            fed.federateGroups.extend(row.groups)
            data = fed.SerializeToString()
        # The re-check reads what will be written, not what we meant to write: the serialized
        # message decoded again into the event it carries (``other`` parsed again).
        back = fig_codec.federated_to_tree(fig_pb2.FederatedEvent.FromString(data))
    except (fig_codec.FigError, PeerError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        link.wire_denied(row, ("guard_mismatch", f"fig_encode:{reason}"))
        return None
    problems = link.guard.recheck_tree(back, label_id=row.label_id, uid=row.uid, type=row.type)
    if problems:
        log.error("federation %s: translated release refused: %s", link.peer.name, problems)
        link.wire_denied(row, problems)
        return None
    return data, facts


def _refuse(link: PeerLink, fed: fig_pb2.FederatedEvent, reason: str, drop: str) -> None:
    log.info("federation %s: dropped a FederatedEvent: %s", link.peer.name, reason)
    link.status.drop(drop)
    link.wire_rejected((reason,), content_sha256(fed.SerializeToString()))


async def apply_inbound(
    link: PeerLink,
    queue: asyncio.Queue[fig_pb2.FederatedEvent],
    validator: InboundValidator,
    applied: Callable[[Sequence[fig_pb2.FederatedEvent]], None] | None = None,
) -> None:
    """Translate, validate, audit and route what the peer sent, in batches (every TAK wire).

    ``applied``, if given, is called with each batch once it has been fully handled (routed,
    refused or ignored, and made durable).
    """
    while True:
        batch = [await queue.get()]
        while len(batch) < MAX_INBOUND_BATCH and not queue.empty():
            batch.append(queue.get_nowait())
        items: list[tuple[int, bytes]] = []
        groups: dict[int, frozenset[str]] = {}
        seq = link.last_applied
        peer = link.peer
        for fed in batch:
            if fed.HasField("contact"):
                # A contact becomes the presence or delete event TAK clients expect (section 8).
                try:
                    converted = fed_contacts.contact_as_event(fed, link.clock_ms())
                except fed_contacts.ContactError as exc:
                    _refuse(link, fed, exc.reason, exc.reason)
                    continue
                if converted is None or (
                    converted.event.type != "t-x-d-d" and link.serves(Dest(uid=converted.event.uid))
                ):
                    continue  # READ/INVALID, or a client already known by its position report
                fed = converted
            if not fed.HasField("event"):
                log.debug("federation %s: message without event ignored", peer.name)
                continue
            never = fed_groups.not_federated(fed.event.type)
            if never is not None:
                _refuse(link, fed, never, never)
                continue
            if len(fed.federateGroups) > fed_groups.MAX_FEDERATE_GROUPS:
                _refuse(link, fed, "too_many_groups", "too_many_groups")
                continue
            local = fed_groups.inbound_groups(peer.groups_in, fed.federateGroups, peer.in_groups)
            if local is None:
                _refuse(
                    link,
                    fed,
                    fed_groups.NO_GROUP_MAPPING,
                    fed_groups.NO_GROUP_MAPPING + "_in",
                )
                continue
            try:
                xml = fig_codec.inbound_cot(
                    fed,
                    policy=link.policy,
                    server_id=link.fed.server_id,
                    peer_server_id=link.peer.name,
                    default_label=link.peer.default_label,
                    now_ms=link.clock_ms(),
                )
            except fig_codec.FigError as exc:
                log.warning(
                    "federation %s: refused a FederatedEvent: %s", link.peer.name, exc.reason
                )
                link.wire_rejected((exc.reason,), content_sha256(fed.SerializeToString()))
                continue
            seq += 1
            items.append((seq, xml))
            if peer.groups_in is not None:
                groups[seq] = local
        if items:
            await link.receive(items, validator, groups)
        if applied is not None:
            applied(batch)


def note_remote_groups(link: PeerLink, msg: fig_pb2.FederateGroups) -> None:
    """Keep the federate group names a peer announced (shown by ``federation status``)."""
    if not msg.federateGroups:
        return
    names = sorted({n for n in msg.federateGroups if n and len(n) <= 128})[:MAX_REMOTE_GROUPS]
    link.status.remote_groups = names
    log.info("federation %s: the peer announced groups %s", link.peer.name, ", ".join(names))
