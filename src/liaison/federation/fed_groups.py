"""Group mapping across a TAK federation link, and what TAK never lets cross (pure, any wire).

TAK Server's model (shared/reference/tak-federation.md section 7): a federate is a user; what
it sends is written into local groups, and it receives what local users write into groups it
reads. With ``federatedGroupMapping`` on, each ``FederatedEvent`` also carries
``federateGroups``: names of the sender's groups, which the receiver maps to its own. Liaison
configures both directions per peer (docs/configuration.md, ``groups_in`` / ``groups_out``):

* **outbound** (:func:`outbound_names`): ``groups_out`` maps each local group to the federate
  group names announced for it. An event goes to the peer only when one of the groups it was
  written into (its sender's IN groups) is mapped; it then carries the union of those names in
  ``federateGroups``. An event matching no mapping is refused (``no_group_mapping``): fail
  closed. Without ``groups_out`` the peer's ``out_groups`` decide and no names are sent (TAK's
  own default, mapping off).
* **inbound** (:func:`inbound_groups`): ``groups_in`` maps federate group names to local
  groups. Each name the event carries is looked up; a name not mapped, and an event that
  carries no names at all, use the wildcard ``"*"`` when it is configured. Stock TAK Server
  sends no ``federateGroups`` unless its administrator turns mapping on (section 7, "Expect
  ``federateGroups`` to be empty"; traps 16 and 17), so a TAK peer needs ``"*"`` for anything
  to arrive. An event that maps to no local group is refused (``no_group_mapping``). Without
  ``groups_in`` everything goes into the peer's ``in_groups`` (the wildcard alone).

:func:`not_federated` names what TAK itself never lets cross a federation link: mission
notices ``t-x-m*`` (section 10; TSc ``FederationServer.handleRead`` drops them on receipt and
``FigServerFederateSubscription`` never sends them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# The inbound key that matches every federate group name not mapped by name, and events that
# carry no group names (tak-federation.md section 7; ots-federation calls it ``*:<group>``).
WILDCARD = "*"

# Reason codes (audit records, metrics).
NO_GROUP_MAPPING = "no_group_mapping"
MISSION_CONTROL = "mission_control"

# Most names one event may carry in federateGroups before it is refused as malformed.
MAX_FEDERATE_GROUPS = 64

GroupMap = Mapping[str, frozenset[str]]


def outbound_names(
    groups_out: GroupMap | None, sender_groups: Iterable[str]
) -> tuple[str, ...] | None:
    """The federate group names an event written into ``sender_groups`` carries to the peer.

    ``()`` when no outbound mapping is configured (no names, the peer's ``out_groups`` decided);
    None when a mapping is configured and none of the groups is in it (do not send).
    """
    if groups_out is None:
        return ()
    names: set[str] = set()
    for group in sender_groups:
        mapped = groups_out.get(group)
        if mapped:
            names |= mapped
    return tuple(sorted(names)) if names else None


def inbound_groups(
    groups_in: GroupMap | None, names: Iterable[str], default: frozenset[str]
) -> frozenset[str] | None:
    """The local groups an inbound item carrying federate group ``names`` is written into.

    Without ``groups_in``: ``default`` (the peer's ``in_groups``), whatever the names. With it:
    each name mapped by name, else by the wildcard; no names at all: the wildcard. None when
    nothing maps (refuse the item).
    """
    if groups_in is None:
        return default
    wanted = list(names)
    local: set[str] = set()
    if not wanted:
        local |= groups_in.get(WILDCARD, frozenset())
    for name in wanted:
        mapped = groups_in.get(name)
        if mapped is None:
            mapped = groups_in.get(WILDCARD, frozenset())
        local |= mapped
    return frozenset(local) if local else None


def announced(groups_out: GroupMap | None) -> tuple[str, ...]:
    """The federate group names we offer the peer on the groups streams (sorted)."""
    if groups_out is None:
        return ()
    return tuple(sorted({name for names in groups_out.values() for name in names}))


def not_federated(cot_type: str) -> str | None:
    """The reason an event of ``cot_type`` never crosses a TAK federation link, or None."""
    if cot_type.startswith("t-x-m"):
        return MISSION_CONTROL
    return None
