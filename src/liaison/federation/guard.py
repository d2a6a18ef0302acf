"""The federation guard: what may leave for a peer, in which bytes, and what a peer may send us.

Pure (no I/O, no clock): :class:`OutboundGuard` turns an event the router offered to a peer into
either a :class:`Release` (the exact bytes to send, their SHA-256, the label id, the priority
class) or a :class:`Denial` with stable reason codes; :class:`InboundValidator` does the same
for what a peer sends us. The link writes the audit records and moves the bytes.

Outbound, in order (labels.md 7d "Release across federation", 7e point 5):

1. the label, read from ``<__seclabel>``: no label or an invalid one denies;
2. ``model.labels.decide`` against the peer's release ceiling;
3. the CoT type allowlist;
4. the per-type allowlist of ``<detail>`` children: others are removed or deny the event, per
   the peer's ``detail_policy``;
5. loop prevention: an event that came from a federation link carries ``<__federation
   origin=".." hops=".."/>``; it is released only to a peer configured to relay, never back to
   its origin, and never past the peer's ``max_hops`` (TAK Server's federateProvenance and
   federateHops serve the same purpose, tak-protocol.md 6.4);
6. the release bytes are rendered (label kept, ``access``/``caveat``/``releasableTo`` written
   from the label for TAK readers, provenance stamped), then re-checked independently: the
   bytes are parsed again with ``protocol.cot_xml``, the label is read again from them and the
   decision is made again; the type, the detail allowlist, the provenance and the label id must
   all agree ("RAIN", labels.md 7e). Any disagreement is a ``guard_mismatch`` denial.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from liaison.errors import PeerError
from liaison.federation.config import DetailPolicy, PeerConfig
from liaison.model import labels
from liaison.model.event import CONTROL_TYPES, Event
from liaison.model.labels import Label, Policy
from liaison.protocol import cot_xml
from liaison.protocol.federation import SERVER_ID_RE

# The provenance element the guard writes under <detail> (one, directly under it).
PROVENANCE_TAG = "__federation"

# Most links an event can have crossed, whatever a peer claims (the hop limit of a peer is at
# most 16, see federation.config).
MAX_HOPS = 16

# Decisions cached per guard (the ceiling is fixed, so the label id is the key). PLI streams
# reuse a handful of labels; the cache is cleared when it reaches this size.
MAX_DECISION_CACHE = 4096

_HOPS_RE = re.compile(r"[1-9][0-9]?", re.ASCII)

# Stages of a denial, for audit and metrics.
STAGE_GUARD = "guard"
STAGE_RECHECK = "recheck"
STAGE_INBOUND = "inbound"


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    """Where a federated event started and how many links it has crossed."""

    origin: str
    hops: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """The guard permits: send exactly ``payload``."""

    payload: bytes
    sha256: str  # hex SHA-256 of payload, the content hash in both sides' audit logs
    label_id: str
    originator: str  # the organisation that owns the label (the release record names it)
    banner: str
    uid: str
    type: str
    priority: int
    coalesce_key: str | None  # uid of a position report that a newer one may replace
    removed: tuple[str, ...] = ()  # detail children stripped by the allowlist


@dataclass(frozen=True, slots=True, kw_only=True)
class Denial:
    """The guard refuses; ``reasons`` are stable codes, ``stage`` says which check."""

    reasons: tuple[str, ...]
    stage: str
    uid: str
    type: str
    label_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """An inbound event that passed validation (routed locally through the same gate)."""

    event: Event
    label: Label
    provenance: Provenance
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    reasons: tuple[str, ...]
    sha256: str
    uid: str | None = None
    type: str | None = None
    label_id: str | None = None


def content_sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True, slots=True)
class _Shape:
    """Where the label and provenance elements of a ``<detail>`` are, from one walk."""

    labels: list[ET.Element]  # <__seclabel> children of <detail>
    provenance: list[ET.Element]  # <__federation> children of <detail>
    odd_label: bool  # a __seclabel nested deeper or in a namespace (label_from_detail refuses)
    odd_provenance: bool  # a __federation nested deeper


def _shape(detail: ET.Element) -> _Shape:
    found_labels: list[ET.Element] = []
    found_prov: list[ET.Element] = []
    for child in detail:
        tag = child.tag
        if tag == labels.SECLABEL_TAG:
            found_labels.append(child)
        elif tag == PROVENANCE_TAG:
            found_prov.append(child)
    # Every element below ``detail`` whose tag ends with the label's tag (or is the provenance
    # tag) is counted; the direct children found above are among them, so there is an odd one
    # (nested deeper, or namespaced) exactly when the count exceeds them. One walk, no search.
    seen_label = seen_prov = 0
    walk = detail.iter()
    next(walk)  # ``detail`` itself
    for el in walk:
        tag = el.tag
        if not isinstance(tag, str):
            continue  # a comment or processing instruction
        if tag.endswith(labels.SECLABEL_TAG):
            seen_label += 1
        elif tag == PROVENANCE_TAG:
            seen_prov += 1
    return _Shape(
        found_labels,
        found_prov,
        seen_label > len(found_labels),
        seen_prov > len(found_prov),
    )


def read_provenance(detail: ET.Element | None, shape: _Shape | None = None) -> Provenance | None:
    """The ``<__federation>`` element directly under ``detail``; None when there is none.

    Raises ValueError when it is malformed, duplicated or nested deeper (a second copy that
    another reader might pick must never exist).
    """
    if detail is None:
        return None
    if shape is None:
        shape = _shape(detail)
    found = shape.provenance
    if len(found) > 1:
        raise ValueError("duplicate_provenance")
    if shape.odd_provenance:
        raise ValueError("nested_provenance")
    if not found:
        return None
    el = found[0]
    origin = el.get("origin")
    hops = el.get("hops")
    if set(el.attrib) != {"origin", "hops"} or len(el) or (el.text or "").strip():
        raise ValueError("malformed_provenance")
    if origin is None or SERVER_ID_RE.fullmatch(origin) is None:
        raise ValueError("malformed_provenance")
    if hops is None or _HOPS_RE.fullmatch(hops) is None or int(hops) > MAX_HOPS:
        raise ValueError("malformed_provenance")
    return Provenance(origin=origin, hops=int(hops))


def _element_key(el: ET.Element) -> tuple[object, ...]:
    """Everything about an element and its subtree: equal keys mean equal XML content."""
    return (
        el.tag,
        tuple(el.attrib.items()),
        el.text,
        el.tail,
        tuple(_element_key(child) for child in el),
    )


class LabelReader:
    """``labels.label_from_detail`` memoised on the full content of the ``<__seclabel>``.

    Parsing a label costs tens of microseconds (its id is a SHA-256 over canonical JSON), and a
    position stream repeats a handful of labels. The reader checks the detail's structure the
    way ``label_from_detail`` does (exactly one ``__seclabel``, directly under ``<detail>``, none
    nested or namespaced); in that case the key is the element's entire content, attributes,
    text and subtree, so a hit returns what ``label_from_detail`` returned for an identical
    element (it is a pure function of it). Every miss and every unusual shape is decided by
    ``label_from_detail`` itself, which raises LabelError as usual.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._memo: dict[tuple[object, ...], Label] = {}

    def read(self, detail: ET.Element | None, shape: _Shape | None = None) -> Label | None:
        return self.read_keyed(detail, shape)[0]

    def read_keyed(
        self, detail: ET.Element | None, shape: _Shape | None = None
    ) -> tuple[Label | None, tuple[object, ...] | None]:
        """The label and the memo key of its element (None when not memoised)."""
        if detail is None:
            return None, None
        if shape is None:
            shape = _shape(detail)
        if len(shape.labels) != 1 or shape.odd_label:
            return labels.label_from_detail(self.policy, detail), None
        key = _element_key(shape.labels[0])
        memo = self._memo
        label = memo.get(key)
        if label is None:
            label = labels.label_from_detail(self.policy, detail)
            if label is not None:
                if len(memo) >= MAX_DECISION_CACHE:
                    memo.clear()
                memo[key] = label
        return label, key


class OutboundGuard:
    """The release policy for one peer. ``check`` is pure and total on any Event."""

    def __init__(
        self,
        *,
        policy: Policy,
        peer: PeerConfig,
        server_id: str,
        peer_server_id: str | None = None,
    ) -> None:
        self.policy = policy
        self.peer = peer
        self.server_id = server_id
        self.peer_server_id = peer_server_id
        self._decisions: dict[str, labels.Decision] = {}
        self._markings: dict[str, tuple[labels.CotMarking, str]] = {}
        self._labels = LabelReader(policy)
        self._recheck_labels = LabelReader(policy)
        self._recheck_decisions: dict[tuple[object, ...], labels.Decision] = {}
        self._types: dict[str, tuple[bool, frozenset[str], int]] = {}
        self._serialized: dict[tuple[object, ...], str] = {}

    def _type_rules(self, cot_type: str) -> tuple[bool, frozenset[str], int]:
        """(type allowed, detail children allowed, priority class) for a CoT type, cached."""
        rules = self._types.get(cot_type)
        if rules is None:
            peer = self.peer
            allowed = peer.allowed_type(cot_type) and cot_type not in CONTROL_TYPES
            details = peer.allowed_details(cot_type) or frozenset()
            rules = (allowed, details, peer.priority(cot_type))
            if len(self._types) >= MAX_DECISION_CACHE:
                self._types.clear()
            self._types[cot_type] = rules
        return rules

    def with_peer_server_id(self, peer_server_id: str) -> OutboundGuard:
        """The same guard, knowing the peer's server id (learned from its HELLO)."""
        return OutboundGuard(
            policy=self.policy,
            peer=self.peer,
            server_id=self.server_id,
            peer_server_id=peer_server_id,
        )

    def _decide(self, label: Label) -> labels.Decision:
        cache = self._decisions
        decision = cache.get(label.label_id)
        if decision is None:
            if len(cache) >= MAX_DECISION_CACHE:
                cache.clear()
            decision = labels.decide(self.policy, label, self.peer.release_ceiling)
            cache[label.label_id] = decision
        return decision

    def _marking(self, label: Label) -> tuple[labels.CotMarking, str]:
        cached = self._markings.get(label.label_id)
        if cached is None:
            if len(self._markings) >= MAX_DECISION_CACHE:
                self._markings.clear()
            cached = (
                labels.cot_marking(self.policy, label),
                labels.label_to_banner(self.policy, label),
            )
            self._markings[label.label_id] = cached
        return cached

    def _render(
        self,
        event: Event,
        marking: labels.CotMarking,
        kept: list[ET.Element],
        stamp: Provenance,
        label_key: tuple[object, ...] | None,
    ) -> bytes:
        """The release bytes: the event's root and point as ``cot_xml.render_xml`` writes them
        (with the label's marking), then a ``<detail>`` of the kept children and provenance.

        Children are written with ``cot_xml.serialize_element``; the label element, identical
        across a stream, is written once per distinct content and reused (memoised on its full
        content, like :class:`LabelReader`). The re-check parses the result from scratch.
        """
        # The root and point as render_xml writes them (cot_xml stays the one writer of an
        # event's opening), with the label's marking in place of the event's own attributes.
        detail = event.detail
        parts = [
            cot_xml.render_open(
                event,
                access=marking.access,
                caveat=marking.caveat,
                releasable_to=marking.releasable_to,
            ),
            "<detail",
        ]
        if detail is not None:
            for name, value in detail.attrib.items():
                parts.append(f' {name}="{cot_xml.escape_attribute(value)}"')
        parts.append(">")
        if detail is not None and detail.text:
            parts.append(cot_xml.escape_text(detail.text))
        memo = self._serialized
        for child in kept:
            if child.tag == labels.SECLABEL_TAG and label_key is not None:
                key = label_key
                text = memo.get(key)
                if text is None:
                    if len(memo) >= MAX_DECISION_CACHE:
                        memo.clear()
                    text = memo[key] = cot_xml.serialize_element(child)
                parts.append(text)
            else:
                parts.append(cot_xml.serialize_element(child))
        parts.append(
            f'<{PROVENANCE_TAG} origin="{stamp.origin}" hops="{stamp.hops}" /></detail></event>'
        )
        return "".join(parts).encode("utf-8")

    def check(self, event: Event) -> Release | Denial:
        """Decide on one event and, when it may go, render and re-check its release bytes."""
        return self.check_parsed(event)[0]

    def check_parsed(self, event: Event) -> tuple[Release | Denial, ET.Element | None]:
        """:meth:`check`, with the element tree its re-check read the release bytes into (None
        for a denial), for a wire that translates exactly those bytes (one parse for both; the
        tree must not be changed)."""
        try:
            return self._check(event)
        except Exception:
            # Total, like labels.decide: a bug or an odd input denies, it never leaks.
            return Denial(
                reasons=("internal_error",), stage=STAGE_GUARD, uid=event.uid, type=event.type
            ), None

    def _deny(self, event: Event, *reasons: str, label_id: str | None = None) -> Denial:
        return Denial(
            reasons=tuple(reasons),
            stage=STAGE_GUARD,
            uid=event.uid,
            type=event.type,
            label_id=label_id,
        )

    def _check(self, event: Event) -> tuple[Release | Denial, ET.Element | None]:
        peer = self.peer
        shape = _shape(event.detail) if event.detail is not None else None
        try:
            label, label_key = self._labels.read_keyed(event.detail, shape)
        except labels.LabelError as exc:
            return self._deny(event, f"invalid_label:{exc.reason}"), None
        if label is None:
            return self._deny(event, "no_label"), None
        decision = self._decide(label)
        reasons: list[str] = list(decision.reasons)
        type_allowed, allowed, priority = self._type_rules(event.type)
        if event.is_control:
            reasons.append("control_message")
        if not type_allowed:
            reasons.append("type_not_allowed")
        detail = event.detail
        kept: list[ET.Element] = []
        removed: list[str] = []
        if detail is not None:
            for child in detail:
                tag = child.tag
                if tag == PROVENANCE_TAG:
                    continue  # read below, rewritten on release
                if isinstance(tag, str) and tag in allowed:
                    kept.append(child)
                else:
                    removed.append(tag if isinstance(tag, str) else "#special")
        if removed and peer.detail_policy is DetailPolicy.DENY:
            reasons.append("detail_not_allowed")
        if event.dests and "marti" in removed:
            # Removing the dest list would turn a directed message into a broadcast on the
            # partner's side: a directed event goes with its dests or not at all.
            reasons.append("directed_without_dest")
        try:
            prior = read_provenance(detail, shape)
        except ValueError as exc:
            reasons.append(str(exc))
            prior = None
        if prior is None:
            stamp = Provenance(origin=self.server_id, hops=1)
        else:
            stamp = Provenance(origin=prior.origin, hops=prior.hops + 1)
            if not peer.relay:
                reasons.append("relay_not_allowed")
            if prior.origin == self.server_id:
                reasons.append("loop_own_origin")
        if self.peer_server_id is not None and stamp.origin == self.peer_server_id:
            reasons.append("loop_peer_origin")
        if stamp.hops > peer.max_hops:
            reasons.append("hop_limit")
        if reasons:
            return self._deny(event, *reasons, label_id=label.label_id), None

        marking, banner = self._marking(label)
        payload = self._render(event, marking, kept, stamp, label_key)
        mismatch, tree = self.recheck_parsed(
            payload, label_id=label.label_id, uid=event.uid, type=event.type
        )
        if mismatch:
            return Denial(
                reasons=mismatch,
                stage=STAGE_RECHECK,
                uid=event.uid,
                type=event.type,
                label_id=label.label_id,
            ), None
        coalesce = peer.coalesce and event.is_contact and not event.dests
        return Release(
            payload=payload,
            sha256=content_sha256(payload),
            label_id=label.label_id,
            originator=label.originator,
            banner=banner,
            uid=event.uid,
            type=event.type,
            priority=priority,
            coalesce_key=event.uid if coalesce else None,
            removed=tuple(removed),
        ), tree

    def recheck(self, payload: bytes, *, label_id: str, uid: str, type: str) -> tuple[str, ...]:
        """The independent re-check of the exact bytes about to be sent; empty when they pass.

        Parses ``payload`` again from scratch, re-reads the label from the parsed bytes and
        decides again against the ceiling, without the first pass's decision cache (the
        re-check memoises its own decisions on the label element's full content); the label
        id, uid and type must be the ones the first pass decided on, the type and every detail
        child must be allowed, the provenance must be within the hop limit and the root marking
        must not contradict the label. Also used just before a queued release is written to the
        socket, so a changed policy or a damaged outbox row is caught at send time.
        """
        try:
            return self._recheck(payload, label_id, uid, type)
        except Exception:
            return ("guard_mismatch", "internal_error")

    def recheck_parsed(
        self, payload: bytes, *, label_id: str, uid: str, type: str
    ) -> tuple[tuple[str, ...], ET.Element | None]:
        """:meth:`recheck`, also giving the element tree it read ``payload`` into (None when
        the bytes did not parse), so a wire that translates exactly these bytes reads them once
        (the tree is not changed by the check; the caller must not change it either)."""
        try:
            root = cot_xml.parse_element(payload)
        except PeerError as exc:
            return ("guard_mismatch", f"unparsable:{exc.reason}"), None
        except Exception:
            return ("guard_mismatch", "internal_error"), None
        return self.recheck_tree(root, label_id=label_id, uid=uid, type=type), root

    def recheck_tree(
        self, root: ET.Element, *, label_id: str, uid: str, type: str
    ) -> tuple[str, ...]:
        """:meth:`recheck` of an event already read, with the hardened parser, from the exact
        bytes to be sent (or, for a TAK wire, built from the serialized message decoded again:
        ``fig_codec.federated_to_tree``); empty when it passes."""
        try:
            return self._recheck_tree(root, label_id, uid, type)
        except Exception:
            return ("guard_mismatch", "internal_error")

    def _recheck(self, payload: bytes, label_id: str, uid: str, type: str) -> tuple[str, ...]:
        # A second, minimal reading (labels.md 7e point 5): the hardened XML parser of
        # protocol.cot_xml and the root attributes, not the Event model of the first pass.
        try:
            root = cot_xml.parse_element(payload)
        except PeerError as exc:
            return ("guard_mismatch", f"unparsable:{exc.reason}")
        return self._recheck_tree(root, label_id, uid, type)

    def _recheck_tree(
        self, root: ET.Element, label_id: str, uid: str, type: str
    ) -> tuple[str, ...]:
        policy, peer = self.policy, self.peer
        if root.tag != "event":
            return ("guard_mismatch", "not_event")
        details = [child for child in root if child.tag == "detail"]
        if len(details) != 1:
            return ("guard_mismatch", "detail_count")
        detail = details[0]
        try:
            # A reader of its own: nothing the first pass parsed is reused here.
            shape = _shape(detail)
            label, label_key = self._recheck_labels.read_keyed(detail, shape)
        except labels.LabelError as exc:
            return ("guard_mismatch", f"invalid_label:{exc.reason}")
        if label is None:
            return ("guard_mismatch", "no_label")
        problems: list[str] = []
        if label.label_id != label_id:
            problems.append("label_changed")
        got_type = root.get("type", "")
        if root.get("uid") != uid or got_type != type:
            problems.append("identity_changed")
        # Decided again, not taken from the first pass's cache: memoised on the full content of
        # the label element re-read here (like the label itself; decide is a pure function of
        # it and the fixed ceiling), in a cache of the re-check's own.
        decision = None if label_key is None else self._recheck_decisions.get(label_key)
        if decision is None:
            decision = labels.decide(policy, label, peer.release_ceiling)
            if label_key is not None:
                if len(self._recheck_decisions) >= MAX_DECISION_CACHE:
                    self._recheck_decisions.clear()
                self._recheck_decisions[label_key] = decision
        if not decision.permit:
            problems.extend(decision.reasons)
        type_allowed, allowed, _priority = self._type_rules(got_type)
        if not type_allowed:
            problems.append("type_not_allowed")
        for child in detail:
            if child.tag != PROVENANCE_TAG and child.tag not in allowed:
                problems.append("detail_not_allowed")
                break
        try:
            stamp = read_provenance(detail, shape)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            if stamp is None:
                problems.append("no_provenance")
            elif stamp.hops > peer.max_hops or (
                self.peer_server_id is not None and stamp.origin == self.peer_server_id
            ):
                problems.append("hop_limit")
        if not problems:
            marking, _banner = self._marking(label)
            if (root.get("access"), root.get("caveat"), root.get("releasableTo")) != (
                marking.access,
                marking.caveat,
                marking.releasable_to,
            ):
                problems.append("marking_conflict")
        if problems:
            return ("guard_mismatch", *problems)
        return ()


class InboundValidator:
    """What a peer may send us (labels.md 7b, 7c): labelled, within what it may originate."""

    def __init__(
        self,
        *,
        policy: Policy,
        peer: PeerConfig,
        server_id: str,
        peer_server_id: str,
    ) -> None:
        self.policy = policy
        self.peer = peer
        self.server_id = server_id
        self.peer_server_id = peer_server_id

    def check(self, payload: bytes) -> Accepted | Rejected:
        try:
            return self._check(payload)
        except Exception:
            return Rejected(reasons=("internal_error",), sha256=content_sha256(payload))

    def _check(self, payload: bytes) -> Accepted | Rejected:
        digest = content_sha256(payload)
        policy, peer = self.policy, self.peer
        try:
            event = cot_xml.parse_event(payload)
        except PeerError as exc:
            return Rejected(reasons=(f"unparsable:{exc.reason}",), sha256=digest)
        ident = {"sha256": digest, "uid": event.uid, "type": event.type}
        try:
            label = labels.label_from_detail(policy, event.detail)
        except labels.LabelError as exc:
            return Rejected(reasons=(f"invalid_label:{exc.reason}",), **ident)
        if label is None:
            # labels.md 7b: unlabelled events from a federation peer are rejected.
            return Rejected(reasons=("no_label",), **ident)
        reasons: list[str] = []
        if event.is_control or not peer.allowed_type(event.type):
            reasons.append("type_not_allowed")
        # The write rule with the peer's originate authority (labels.md 7c, "Inbound authority").
        ingest = labels.check_ingest(
            policy, label, peer.originate_ceiling, peer.originate_org, None
        )
        if not ingest.accepted:
            reasons.extend(ingest.reasons)
        if labels.cot_marking_conflicts(
            policy,
            label,
            access=event.access,
            caveat=event.caveat,
            releasable_to=event.releasable_to,
        ):
            reasons.append("marking_conflict")
        stamp: Provenance | None = None
        try:
            stamp = read_provenance(event.detail)
        except ValueError as exc:
            reasons.append(str(exc))
        else:
            if stamp is None:
                reasons.append("no_provenance")
            elif stamp.origin == self.server_id:
                reasons.append("loop_own_origin")
            elif stamp.hops > peer.max_hops:
                reasons.append("hop_limit")
            elif stamp.hops == 1 and stamp.origin != self.peer_server_id:
                reasons.append("origin_mismatch")
        if reasons or stamp is None:
            return Rejected(reasons=tuple(reasons), label_id=label.label_id, **ident)
        return Accepted(event=event, label=label, provenance=stamp, sha256=digest)
