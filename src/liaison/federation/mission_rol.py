"""Missions over TAK federation v2 as ROL (shared/reference/tak-federation.md section 11): what
a TAK Server federate sends on ``ServerROLStream`` (we dial) or ``ClientROLStream`` (it
dials), both ways.

Outbound, for each peer whose ``missions`` key names the mission, a change made on this server
(``Missions.federation_hooks``: a mission created or deleted, an item added to or removed from
it) becomes ``create mission``, ``delete mission`` or ``update mission`` (``protocol/rol.py``)
only once the router's decision for the link's principal (its release ceiling) permits the
mission's own label and, for a content change, the item's label: a ``release`` record is
written for what goes, a ``deny`` record (and ``rol_denied`` counted) for what does not, so
nothing names a mission or an item the peer may not see. Changes a partner made are never sent
on. What waits for a connection is bounded (``MAX_ROL_QUEUE``, oldest dropped and counted) and
kept in memory only.

Inbound, each ``ROL`` the peer sends is executed as the peer's principal (what it may
originate) with the ingest checks: a program that does not parse, or is not a mission program
Liaison executes, is refused (``ingest_reject`` record, counted); a mission the peer's
``missions`` key does not name, or a peer without it, is ignored and counted; a
``classification`` (or, without one, the peer's ``default_label``) goes through the ingest rules
(``Router.label_claimed``: a label that does not parse, or that is above what the peer may
originate, refuses the program, with an ``ingest`` record); ``delete mission`` and
``REMOVE_CONTENT`` touch only what that peer created or added here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any

from liaison import audit as audit_mod
from liaison.errors import StorageError
from liaison.federation import fed_groups
from liaison.federation.guard import content_sha256
from liaison.federation.link import PeerLink
from liaison.federation.proto import fig_pb2
from liaison.missions import ADD_CONTENT, REMOVE_CONTENT, MissionFedChange
from liaison.model import labels
from liaison.protocol import rol as rol_mod
from liaison.router import Router

log = logging.getLogger(__name__)

# ROL messages waiting for the peer's connection, per link; past this the oldest is dropped
# (counted as rol_overflow).
MAX_ROL_QUEUE = 1000
# Largest ROL message read from a peer (a mission program is a few hundred bytes; TAK's
# file-carrying ROL is not executed here).
MAX_ROL_BYTES = 1024 * 1024


class LinkRol:
    """The ROL side of one tak-v2 link: the outgoing queue and the executor of what it sends."""

    def __init__(self, link: PeerLink, router: Router) -> None:
        self._link = link
        self._router = router
        self._out: collections.deque[bytes] = collections.deque()
        self._ready = asyncio.Event()

    # --- outbound -------------------------------------------------------------------------

    def offer(self, change: MissionFedChange) -> None:
        """A local mission change: queued as ROL when the peer may have it (see module doc)."""
        link = self._link
        rec = change.record
        if not link.peer.federates_mission(rec.name):
            return
        prog: rol_mod.MissionProgram
        items: list[tuple[str, str, frozenset[str], str | None]] = [
            (rec.guid, "mission", rec.groups, rec.label)
        ]
        if change.kind in ("create", "delete"):
            banner = ""
            policy = self._router.policy
            lab = self._router.load_label(rec.label)
            if policy is not None and lab is not None:
                banner = labels.label_to_banner(policy, lab)
            prog = rol_mod.MissionMeta(
                operation=change.kind,
                name=rec.name,
                creator_uid=rec.creator_uid,
                description=rec.description,
                chat_room=rec.chat_room,
                tool=rec.tool,
                classification=banner,
            )
        elif change.kind in (ADD_CONTENT, REMOVE_CONTENT) and change.change is not None:
            c = change.change
            if c.content_uid is None:
                return  # a file: its bytes never cross, so neither does its hash
            items.append((c.content_uid, "mission_item", c.sender_groups, c.label))
            prog = rol_mod.MissionUpdate(
                change_type=change.kind,
                mission_name=rec.name,
                creator_uid=c.creator_uid,
                uids=(c.content_uid,),
                mission_creator_uid=rec.creator_uid,
                mission_chat_room=rec.chat_room,
                mission_tool=rec.tool,
                mission_description=rec.description,
            )
        else:
            return
        # The mission's groups as the peer's federate group names, as for events
        # (tak-federation.md 7, ROL field 3); none mapped: not sent.
        names = fed_groups.outbound_names(link.peer.groups_out, rec.groups)
        if names is None:
            link.status.drop(fed_groups.NO_GROUP_MAPPING + "_out")
            return
        msg = fig_pb2.ROL(program=rol_mod.encode(prog), federateGroups=names)
        msg.federateProvenance.add(federationServerId=link.fed.server_id)
        data = msg.SerializeToString()
        digest = content_sha256(data)
        # Decide every label first: a program is sent whole or not at all, and only what is
        # sent gets release records.
        refused = [
            it
            for it in items
            if not self._router.permits(link.principal, sender_groups=it[2], label=it[3])
        ]
        if refused:
            self._deny(refused)
            return
        # Like every event the partner link sends, whatever the organisations: one release
        # record per label, written before the message is queued (docs/labels.md section 5).
        records = []
        for uid, type_, _groups, lab_json in items:
            lab = self._router.load_label(lab_json)
            if lab is None:
                continue  # labels off (a label that does not read was refused above)
            records.append(
                audit_mod.release_record(
                    path="federation",
                    uid=uid,
                    type=type_,
                    label_id=lab.label_id,
                    originator=lab.originator,
                    to_org=link.principal.org or "?",
                    recipients=[link.principal.name],
                    sha256=digest,
                    peer=link.peer.name,
                )
            )
        gate = self._router.gate
        if gate is not None and records and not gate.record(records):
            link.status.drop("rol_audit_unavailable")
            return
        link.status.bump("releases")
        if len(self._out) >= MAX_ROL_QUEUE:
            self._out.popleft()
            link.status.drop("rol_overflow")
        self._out.append(data)
        self._ready.set()

    def _deny(self, refused: list[tuple[str, str, frozenset[str], str | None]]) -> None:
        link = self._link
        link.status.drop("rol_denied")
        link.status.bump("denials")
        gate = self._router.gate
        if gate is None:
            return
        records = []
        for uid, type_, _groups, lab_json in refused:
            lab = self._router.load_label(lab_json)
            records.append(
                audit_mod.deny_record(
                    path="federation",
                    uid=uid,
                    type=type_,
                    label_id=lab.label_id if lab is not None else None,
                    reasons=("not_permitted",) if lab is not None else ("no_label",),
                    recipients=[link.principal.name],
                    peer=link.peer.name,
                )
            )
        gate.record(records)

    async def next_out(self) -> bytes:
        """The next ROL message to write (waits for one)."""
        while not self._out:
            self._ready.clear()
            await self._ready.wait()
        return self._out.popleft()

    def put_back(self, data: bytes) -> None:
        """A message taken but not written (the stream failed): first again next time."""
        if len(self._out) < MAX_ROL_QUEUE:
            self._out.appendleft(data)
            self._ready.set()

    # --- inbound --------------------------------------------------------------------------

    def received(self, data: bytes) -> None:
        """Execute one ROL message the peer sent (see module doc). Never raises."""
        link = self._link
        digest = content_sha256(data)
        if len(data) > MAX_ROL_BYTES:
            link.wire_rejected(("rol_too_large",), digest)
            return
        try:
            msg = fig_pb2.ROL.FromString(data)
        except Exception:  # protobuf's DecodeError
            link.wire_rejected(("undecodable",), digest)
            return
        if any(p.federationServerId == link.fed.server_id for p in msg.federateProvenance):
            link.wire_rejected(("loop_own_origin",), digest)
            return
        if not link.peer.missions:
            # TAK's allowMissionFederation off, per peer: the ROL is not executed.
            link.status.bump("received")
            link.status.drop("rol_not_federated")
            return
        try:
            prog = rol_mod.mission_program(msg.program)
        except rol_mod.RolError as exc:
            log.info("federation %s: ROL refused: %s", link.peer.name, exc)
            link.wire_rejected((exc.reason,), digest)
            return
        link.status.bump("received")
        name = prog.name if isinstance(prog, rol_mod.MissionMeta) else prog.mission_name
        if not link.peer.federates_mission(name):
            link.status.drop("mission_not_federated")
            return
        missions: Any = self._router.missions
        if missions is None or not hasattr(missions, "federated_create"):
            link.status.drop("rol_no_missions")
            return
        peer = link.source.principal
        if isinstance(prog, rol_mod.MissionMeta) and prog.operation == "delete":
            if not missions.federated_delete(peer, name):
                link.status.drop("rol_delete_ignored")
            return
        if isinstance(prog, rol_mod.MissionUpdate) and prog.change_type == REMOVE_CONTENT:
            for uid in prog.uids:
                if not missions.federated_remove(peer, name, uid, prog.creator_uid):
                    link.status.drop("rol_remove_ignored")
            return
        # create mission, or ADD_CONTENT (which creates the mission when missing, as TAK does).
        if missions.mission_record(name) is None:
            # The local groups the peer's federate group names map to (as for its events).
            offered = msg.federateGroups[: fed_groups.MAX_FEDERATE_GROUPS]
            local = fed_groups.inbound_groups(link.peer.groups_in, offered, link.peer.in_groups)
            if local is None:
                link.status.drop(fed_groups.NO_GROUP_MAPPING + "_in")
                return
            if isinstance(prog, rol_mod.MissionMeta):
                claimed, creator = prog.classification, prog.creator_uid
                tool, desc, room = prog.tool, prog.description, prog.chat_room
            else:
                claimed, creator = "", prog.mission_creator_uid
                tool, desc = prog.mission_tool, prog.mission_description
                room = prog.mission_chat_room
            label_json, refused = self._label(claimed)
            if refused:
                log.info("federation %s: ROL for %s refused: %s", link.peer.name, name, refused)
                link.status.drop("rol_label")
                link.status.bump("rejections")
                return
            missions.federated_create(
                peer,
                name,
                creator_uid=creator,
                tool=tool,
                description=desc,
                chat_room=room,
                label_json=label_json,
                groups=local,
            )
        if isinstance(prog, rol_mod.MissionUpdate):
            for uid in prog.uids:
                # The item itself crosses as mission CoT (a FederatedEvent with missionNames),
                # which put it in the mission; a uid that did not cross is not taken on trust.
                if not missions.federated_has(name, uid):
                    link.status.drop("rol_unknown_uid")

    def _label(self, claimed: str) -> tuple[str | None, tuple[str, ...]]:
        """The mission's label under the ingest rules, as the peer: the ``classification`` it
        sent, else the banner of its ``default_label``; (None, reasons) when refused."""
        link = self._link
        policy = self._router.policy
        banner = claimed
        if not banner and link.peer.default_label is not None and policy is not None:
            banner = labels.label_to_banner(policy, link.peer.default_label)
        if not banner and self._router.gate is not None:
            return None, ("no_label",)
        return self._router.label_claimed(link.source.principal, banner or None, path="federation")


class MissionFederation:
    """Every tak-v2 link's ROL, hooked to the missions (``Missions.federation_hooks``)."""

    def __init__(self, router: Router, links: list[PeerLink]) -> None:
        self._router = router
        self._links = [LinkRol(link, router) for link in links]
        for link, lr in zip(links, self._links, strict=True):
            link.rol = lr
        self._hooked: Any = None

    def attach(self) -> None:
        missions: Any = self._router.missions
        if self._links and missions is not None and hasattr(missions, "add_federation_hook"):
            missions.add_federation_hook(self._changed)
            self._hooked = missions

    def detach(self) -> None:
        if self._hooked is not None:
            with contextlib.suppress(ValueError):
                self._hooked.remove_federation_hook(self._changed)
            self._hooked = None

    def _changed(self, change: MissionFedChange) -> None:
        for lr in self._links:
            try:
                lr.offer(change)
            except (StorageError, OSError) as exc:
                log.warning("federation: mission ROL not queued: %s", exc)
