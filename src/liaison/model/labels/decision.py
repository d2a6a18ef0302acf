"""The one label decision: may a holder of these authorizations see an item with this label?

Decision semantics (the "ACDF"; not normative in 4774, but shared by X.841, spiffing and the
AuthzForce SPIF-to-XACML transform, see labels.md section 1.4):

* classification rank <= the holder's ceiling;
* RESTRICTIVE: every value of the label is held;
* PERMISSIVE: at least one value of each such category is held;
* INFORMATIVE: ignored;
* every required category is present (so a missing ``REL`` never means "releasable to all");
* same policy; anything unknown or malformed denies.

Who calls :func:`decide` (``tests/unit/core/test_layers.py`` checks the list): the router's
decision ``model.access.can_see``, the federation guard's independent second check
(``federation/guard.py``), and the write rules of this package (``rules.py``). Everything else
asks the router.
"""

from __future__ import annotations

from dataclasses import dataclass

from liaison.model.labels.values import AuthSet, CategoryType, Label, Policy, validate_label


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of :func:`decide`: permit, plus stable reason codes (empty when permitted)."""

    permit: bool
    reasons: tuple[str, ...] = ()


_DENY_INTERNAL = Decision(permit=False, reasons=("internal_error",))


def decide(policy: Policy, label: Label | None, auths: AuthSet | None) -> Decision:
    """May a holder of ``auths`` see an item labelled ``label``? Pure, total, never raises.

    Reason codes when denied: the :func:`validate_label` codes, ``no_label``, ``invalid_auths``,
    ``auths_policy_mismatch``, ``no_clearance``, ``class_exceeds``,
    ``restrictive_not_held:TAG``, ``permissive_not_held:TAG``, ``internal_error``.
    """
    try:
        return _decide(policy, label, auths)
    except Exception:
        # The one broad except in Liaison, on purpose: the access decision must be total. A bug
        # or an odd input must turn into a DENY here, not an exception that some caller up the
        # stack might handle by dropping the check, or that aborts a whole fan-out.
        return _DENY_INTERNAL


def _decide(policy: Policy, label: Label | None, auths: AuthSet | None) -> Decision:
    if not isinstance(label, Label):
        return Decision(permit=False, reasons=("no_label",))
    if not isinstance(auths, AuthSet):
        return Decision(permit=False, reasons=("invalid_auths",))
    reasons = list(validate_label(policy, label))
    if reasons:
        return Decision(permit=False, reasons=tuple(reasons))
    if auths.policy_id != policy.id:
        reasons.append("auths_policy_mismatch")
    ceiling = policy.rank(auths.ceiling)
    label_rank = policy.rank(label.classification)
    if ceiling is None:
        reasons.append("no_clearance")
    elif label_rank is None or label_rank > ceiling:
        reasons.append("class_exceeds")
    for cdef in policy.categories:
        values = label.categories.get(cdef.name)
        if values is None or cdef.type is CategoryType.INFORMATIVE:
            continue
        held = auths.held.get(cdef.name, frozenset())
        if cdef.type is CategoryType.RESTRICTIVE:
            if not values <= held:
                reasons.append(f"restrictive_not_held:{cdef.name}")
        elif values.isdisjoint(held):
            reasons.append(f"permissive_not_held:{cdef.name}")
    return Decision(permit=not reasons, reasons=tuple(reasons))
