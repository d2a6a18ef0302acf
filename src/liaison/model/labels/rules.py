"""The label rules built on the decision: ordering (:func:`dominates`), aggregation
(:func:`dominant`), the write rule (:func:`check_ingest`) and the relabel rule
(:func:`check_relabel`). Pure: no clock, no I/O; times come in as arguments.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from liaison.model.labels.decision import decide
from liaison.model.labels.values import (
    REL,
    AuthSet,
    CategoryType,
    Label,
    LabelError,
    Policy,
    _require_valid,
    validate_label,
)

# --- ordering, aggregation ---------------------------------------------------------------------


def dominates(policy: Policy, a: Label, b: Label) -> bool:
    """True when ``a`` is at least as restrictive as ``b`` (whoever may see ``a`` may see ``b``).

    Class rank of a >= b; every RESTRICTIVE value of b is in a; every PERMISSIVE category of b is
    in a with a subset of b's values. INFORMATIVE categories do not count. Both labels must be
    valid under ``policy`` (False otherwise).
    """
    if validate_label(policy, a) or validate_label(policy, b):
        return False
    rank_a = policy.rank(a.classification)
    rank_b = policy.rank(b.classification)
    if rank_a is None or rank_b is None or rank_a < rank_b:
        return False
    for cdef in policy.categories:
        va = a.categories.get(cdef.name)
        vb = b.categories.get(cdef.name)
        if cdef.type is CategoryType.RESTRICTIVE:
            if vb is not None and (va is None or not vb <= va):
                return False
        elif (
            cdef.type is CategoryType.PERMISSIVE and vb is not None and (va is None or not va <= vb)
        ):
            return False
    return True


def dominant(
    policy: Policy,
    labels: Iterable[Label],
    *,
    originator: str | None = None,
    created_ms: int | None = None,
) -> Label:
    """The least upper bound of ``labels``, for aggregates (data packages, fused tracks).

    Highest classification; union of each RESTRICTIVE and INFORMATIVE category; intersection of
    each PERMISSIVE category over the labels that carry it (ADatP-4774.1 section 4.4, except that
    a PERMISSIVE category absent from some labels is kept, not dropped: dropping it would let a
    reader of the aggregate skip a constraint of one part). An empty intersection stays empty,
    which makes the result invalid, so :func:`decide` denies it to everyone: an aggregate with
    no common audience is releasable to nobody.

    ``originator`` defaults to the parts' common originator (LabelError ``originator_required``
    when they differ); ``created_ms`` defaults to the latest part. Raises LabelError when
    ``labels`` is empty (``no_labels``) or a part is not valid under ``policy``.
    """
    parts = tuple(labels)
    if not parts:
        raise LabelError("no_labels", "dominant() needs at least one label")
    for part in parts:
        _require_valid(policy, part)
    top = max(parts, key=lambda lab: policy.rank(lab.classification) or 0)
    categories: dict[str, frozenset[str]] = {}
    for cdef in policy.categories:
        present = [p.categories[cdef.name] for p in parts if cdef.name in p.categories]
        if not present:
            continue
        if cdef.type is CategoryType.PERMISSIVE:
            categories[cdef.name] = frozenset.intersection(*present)
        else:
            categories[cdef.name] = frozenset.union(*present)
    if originator is None:
        origins = {p.originator for p in parts}
        if len(origins) != 1:
            raise LabelError("originator_required", "parts have different originators")
        originator = origins.pop()
    return Label(
        policy_id=policy.id,
        classification=top.classification,
        categories=categories,
        originator=originator,
        created_ms=max(p.created_ms for p in parts) if created_ms is None else created_ms,
    )


# --- ingest and relabel rules ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestResult:
    """What :func:`check_ingest` decided: accept with ``label`` (possibly a default), or reject."""

    accepted: bool
    label: Label | None
    defaulted: bool = False
    kept: bool = False  # an unlabelled update of a stored item: the stored label was kept
    reasons: tuple[str, ...] = ()


def _reject(*reasons: str) -> IngestResult:
    return IngestResult(accepted=False, label=None, reasons=tuple(reasons))


def check_ingest(
    policy: Policy,
    label: Label | None,
    sender_auths: AuthSet,
    sender_org: str,
    default_label: Label | None,
    *,
    prior: Label | None = None,
    partner_updates: bool = False,
) -> IngestResult:
    """The write rule: may this sender put this item in, and under which label?

    ``sender_auths`` must already include the listener's ceiling (``resolve_authorizations``
    intersects it). ``prior`` is the stored label of the same item (same uid, or the target of a
    delete), None for a new item.

    With ``prior``, the rules on the stored item come first and hold whether or not the update
    carries a label: a sender who may not see the stored item is refused
    (``prior_not_visible``, with no decision reasons, so a refusal tells nothing of the hidden
    label); a sender of another organisation than the item's originator is refused
    (``other_org_item``) unless ``partner_updates`` allows partners to change items they may
    see. An update that carries no label then keeps ``prior`` unchanged (``kept``): ATAK never
    sends labels, and moving a labelled marker must not relabel it.

    Without ``prior``, unlabelled items get ``default_label`` with its classification capped at
    the sender's ceiling, ``REL`` set to the sender's own org and the sender's org as originator;
    no default means reject (``no_label``).

    An asserted label is rejected, never repaired, when it is invalid, when the sender could not
    read it (``not_readable_by_sender`` plus the decision reasons), when its ``REL`` excludes the
    sender's org (``excludes_sender_org``), or when its originator is not the sender's org for a
    new item, or not the stored originator for an update (``originator_mismatch``: the
    originator of an item never changes). With ``prior``, a label less restrictive than it is
    refused (``lowers_prior_label``): lowering or widening is a relabel (:func:`check_relabel`).
    """
    if not isinstance(sender_org, str) or sender_org not in policy.rel.value_set:
        return _reject("bad_sender_org")
    if prior is not None:
        # Who may change a stored item (docs/labels.md "Writing: ingest rules"). An item the
        # sender cannot see must not be replaced, hidden or deleted by it.
        if not decide(policy, prior, sender_auths).permit:
            return _reject("prior_not_visible")
        if prior.originator != sender_org and not partner_updates:
            return _reject("other_org_item")
        if label is None:
            return IngestResult(accepted=True, label=prior, kept=True)
    if label is None:
        if default_label is None:
            return _reject("no_label")
        return _apply_default(policy, default_label, sender_auths, sender_org)
    reasons = list(validate_label(policy, label))
    if reasons:
        return _reject(*reasons)
    expected_originator = sender_org if prior is None else prior.originator
    if label.originator != expected_originator:
        reasons.append("originator_mismatch")
    if sender_org not in label.values(REL):
        reasons.append("excludes_sender_org")
    readable = decide(policy, label, sender_auths)
    if not readable.permit:
        reasons.append("not_readable_by_sender")
        reasons.extend(readable.reasons)
    if prior is not None and not dominates(policy, label, prior):
        reasons.append("lowers_prior_label")
    if reasons:
        return _reject(*reasons)
    return IngestResult(accepted=True, label=label)


def _apply_default(
    policy: Policy, template: Label, sender_auths: AuthSet, sender_org: str
) -> IngestResult:
    template_rank = policy.rank(template.classification)
    ceiling_rank = policy.rank(sender_auths.ceiling)
    if template_rank is None:
        return _reject("invalid_default", "unknown_classification")
    if ceiling_rank is None:
        return _reject("default_not_readable", "no_clearance")
    categories = dict(template.categories)
    categories[REL] = frozenset({sender_org})
    label = Label(
        policy_id=template.policy_id,
        classification=policy.classifications[min(template_rank, ceiling_rank)],
        categories=categories,
        originator=sender_org,
        created_ms=template.created_ms,
    )
    invalid = validate_label(policy, label)
    if invalid:
        return _reject("invalid_default", *invalid)
    readable = decide(policy, label, sender_auths)
    if not readable.permit:
        return _reject("default_not_readable", *readable.reasons)
    return IngestResult(accepted=True, label=label, defaulted=True)


def listener_default_label(
    policy: Policy, listener_ceiling: str, created_ms: int, *, originator: str
) -> Label:
    """The recommended listener default (labels.md 7b): the listener's ceiling, REL = originator.

    :func:`check_ingest` replaces REL and the originator with the sender's org anyway; this is
    the template to pass as its ``default_label``.
    """
    label = Label(
        policy_id=policy.id,
        classification=listener_ceiling,
        categories={REL: frozenset({originator})},
        originator=originator,
        created_ms=created_ms,
    )
    _require_valid(policy, label)
    return label


class RelabelDirection(enum.Enum):
    UNCHANGED = "unchanged"  # the same access semantics (only INFORMATIVE values differ)
    RAISE = "raise"  # strictly more restrictive
    LOWER = "lower"  # anything less restrictive: lower class, fewer restrictive, wider REL


@dataclass(frozen=True, slots=True, kw_only=True)
class RelabelResult:
    allowed: bool
    direction: RelabelDirection
    reasons: tuple[str, ...] = ()


# A justification long enough for a sentence or two and a ticket reference, short enough to audit.
MAX_JUSTIFICATION_CHARS = 1024


def check_relabel(
    policy: Policy,
    old: Label,
    new: Label,
    *,
    actor_auths: AuthSet,
    actor_org: str,
    release_authority: bool,
    justification: str | None,
) -> RelabelResult:
    """The relabel rule (labels.md 7h): a relabel makes a new version; this says if it may.

    Raising (or an INFORMATIVE-only change) is open to any writer: an actor who can read both the
    old and the new label. Lowering, which includes widening a PERMISSIVE category such as REL,
    also needs the originating org's release authority (``actor_org == old.originator`` and
    ``release_authority``) and a non-empty justification, which the caller records in the audit
    log. The originator never changes. Reasons: ``invalid_old``, the new label's validation
    codes, ``originator_changed``, ``actor_cannot_read_old``, ``actor_cannot_read_new``,
    ``not_originator_org``, ``release_authority_required``, ``justification_required``,
    ``justification_too_long``.
    """
    reasons: list[str] = []
    if validate_label(policy, old):
        reasons.append("invalid_old")
    reasons.extend(validate_label(policy, new))
    if reasons:
        return RelabelResult(
            allowed=False, direction=RelabelDirection.LOWER, reasons=tuple(reasons)
        )
    up = dominates(policy, new, old)
    down = dominates(policy, old, new)
    if up and down:
        direction = RelabelDirection.UNCHANGED
    elif up:
        direction = RelabelDirection.RAISE
    else:
        direction = RelabelDirection.LOWER
    if new.originator != old.originator:
        reasons.append("originator_changed")
    if not decide(policy, old, actor_auths).permit:
        reasons.append("actor_cannot_read_old")
    if not decide(policy, new, actor_auths).permit:
        reasons.append("actor_cannot_read_new")
    if direction is RelabelDirection.LOWER:
        if actor_org != old.originator:
            reasons.append("not_originator_org")
        if not release_authority:
            reasons.append("release_authority_required")
        if justification is None or not justification.strip():
            reasons.append("justification_required")
    if justification is not None and len(justification) > MAX_JUSTIFICATION_CHARS:
        reasons.append("justification_too_long")
    return RelabelResult(allowed=not reasons, direction=direction, reasons=tuple(reasons))
