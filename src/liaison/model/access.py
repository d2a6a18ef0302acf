"""The one access decision: may this principal see this item? Called only by the router.

Today the decision is TAK Server's group reachability (the sender's IN groups meet the viewer's
OUT groups; TSc groups/CommonGroupDirectedReachability.java). The confidentiality-label check of
``model.labels`` joins it here, so every path out of the server keeps passing one function.
"""

from __future__ import annotations

from dataclasses import dataclass

from liaison.model.principal import Principal


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :func:`can_see`, with stable reason codes for logs, metrics and audit."""

    permit: bool
    reasons: tuple[str, ...] = ()


PERMIT = Decision(True)
DENY_NO_SHARED_GROUP = Decision(False, ("no_shared_group",))


def can_see(*, sender_groups: frozenset[str], viewer: Principal) -> Decision:
    """Whether ``viewer`` may receive an item written into ``sender_groups``.

    Pure and total. The result depends only on the item and on the viewer's access key
    (:func:`access_key`), so the router computes it once per distinct key per event.
    """
    if sender_groups.isdisjoint(viewer.out_groups):
        return DENY_NO_SHARED_GROUP
    return PERMIT


def access_key(viewer: Principal) -> object:
    """Everything about a viewer that :func:`can_see` reads; equal keys get equal decisions."""
    return viewer.out_groups
