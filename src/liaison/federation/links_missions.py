"""The missions as the partner links' own router of a cluster sees them (federation/feed.py).

On a single node an event sent to a mission (``marti/dest mission``) reaches a partner link when
the mission target stands (the sender may write to the mission: ``Missions.recipients``), the
link's ``missions`` key federates that mission and the mission may be named to the partner
(``Missions.federation_may_name``); then the router's decision and the link's guard apply as to
anything else (router ``_plan_federated_missions``, docs/protocol.md "Missions across the link").

In a cluster the links read every node's events from the stream through a router of their own,
on the node holding the federation lease. This view gives that router the same three answers
from the node's missions, which every node shares through PostgreSQL
(cluster/missions_share.py). It keeps nothing and delivers nothing itself: the node that
accepted the event kept it in the mission and told the mission's subscribers, and the links'
router has no client subscribers (its only subscribers are the links).
"""

from __future__ import annotations

from collections.abc import Callable

from liaison.missions import Missions
from liaison.model.event import Event
from liaison.model.labels import Label
from liaison.model.principal import Principal
from liaison.router import AcceptedEvent, Source, Subscriber


class _Sender:
    """The sender of an event read from the stream, as the missions see a source: its principal
    and, for a partner's event (relayed between peers), whether its link federates a mission."""

    def __init__(self, principal: Principal, federates: Callable[[str], bool] | None) -> None:
        self._principal = principal
        self._federates = federates

    @property
    def principal(self) -> Principal:
        return self._principal

    def federates_mission(self, name: str) -> bool:
        return self._federates is not None and self._federates(name)


class LinksMissions:
    """The router's ``MissionRouting`` for the links' router on the lease holder."""

    def __init__(
        self,
        missions: Missions,
        peer_federates: Callable[[str], Callable[[str], bool] | None],
    ) -> None:
        """``peer_federates(name)``: for the federate principal ``name`` of one of our peers,
        its link's ``federates_mission`` (None for any other sender)."""
        self._missions = missions
        self._peer_federates = peer_federates

    def recipients(
        self, mission: str, source: Source, uid: str | None = None
    ) -> frozenset[tuple[str, str]] | None:
        """No client of this router to name (empty) when the target stands, else None."""
        sender = _Sender(source.principal, self._peer_federates(source.principal.name))
        if not self._missions.target_stands(mission, sender, uid):
            return None
        return frozenset()

    def federation_may_name(self, name: str, peer: Principal) -> bool:
        return self._missions.federation_may_name(name, peer)

    def delivered_form(self, event: Event, mission: str) -> Event:
        return event  # only for client subscribers, which this router has none of

    def membership_refusal(self, event: Event) -> str | None:
        return None  # decided by the node that accepted the event (the feed never checks)

    def accepted(self, accepted: AcceptedEvent) -> None:
        """Kept in the mission by the node that accepted it, not again here."""

    def prior_label(self, mission: str, uid: str) -> Label | None:
        return self._missions.prior_label(mission, uid)

    def connected(self, sub: Subscriber) -> int:
        return 0  # the links are not mission subscribers

    def disconnected(self, sub: Subscriber) -> None:
        """The links are not mission subscribers: nothing to remember."""
