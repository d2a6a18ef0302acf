"""The one access decision: may this principal see this item? Called only by the router.

Two checks, both must permit:

1. TAK Server's group reachability: the sender's IN groups meet the viewer's OUT groups
   (TSc groups/CommonGroupDirectedReachability.java);
2. with a label policy, the confidentiality label: ``model.labels.decide`` on the item's label and
   the viewer's authorizations (classification ceiling, RESTRICTIVE values all held, one value of
   each PERMISSIVE category held; anything unknown, missing or malformed denies).
"""

from __future__ import annotations

from dataclasses import dataclass

from liaison.model import labels
from liaison.model.labels import Label, Policy
from liaison.model.principal import Principal


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :func:`can_see`, with stable reason codes for logs, metrics and audit."""

    permit: bool
    reasons: tuple[str, ...] = ()


PERMIT = Decision(True)
DENY_NO_SHARED_GROUP = Decision(False, ("no_shared_group",))


def can_see(
    *,
    sender_groups: frozenset[str],
    viewer: Principal,
    label: Label | None = None,
    policy: Policy | None = None,
) -> Decision:
    """Whether ``viewer`` may receive an item written into ``sender_groups`` with ``label``.

    Pure and total. Without a policy the label is not consulted (labels off); with one, an item
    without a label is denied. The result depends only on the item and on the viewer's
    :func:`access_key`, so the router computes it once per distinct key per event.
    """
    if sender_groups.isdisjoint(viewer.out_groups):
        return DENY_NO_SHARED_GROUP
    if policy is None:
        return PERMIT
    verdict = labels.decide(policy, label, viewer.auths)
    if verdict.permit:
        return PERMIT
    return Decision(False, tuple(verdict.reasons) or ("denied",))


def access_key(viewer: Principal) -> object:
    """Everything about a viewer that :func:`can_see` reads; equal keys get equal decisions."""
    auths = viewer.auths
    return (viewer.out_groups, auths.auths_id if auths is not None else None)
