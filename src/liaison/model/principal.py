"""Who a peer is: its identity, its TAK groups and (with labels) its authorizations."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from liaison.model.labels import AuthSet

# TAK Server puts any user who ends up with no groups into __ANON__, IN and OUT
# (TSc groups/AbstractAuthenticator.java doAnonAssignment; tak-protocol.md section 7).
ANON_GROUP = "__ANON__"


class PrincipalKind(enum.Enum):
    USER = "user"  # an authenticated person or device (certificate or <auth>)
    ANONYMOUS = "anonymous"  # a client on an unauthenticated listener
    FEDERATE = "federate"  # a partner server on a federation link
    SERVICE = "service"  # the server itself, feeds and the HTTP side acting for a user


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """A peer's identity and groups.

    IN groups are where this principal's messages are written; OUT groups are where it reads from.
    A message from A reaches B when A's IN groups and B's OUT groups intersect
    (TSc groups/CommonGroupDirectedReachability.java; tak-protocol.md section 7).
    """

    name: str
    kind: PrincipalKind = PrincipalKind.USER
    in_groups: frozenset[str] = frozenset({ANON_GROUP})
    out_groups: frozenset[str] = frozenset({ANON_GROUP})
    org: str | None = None  # the organisation (nation or community) the principal belongs to
    cert_serial: int | None = None  # serial of the client certificate it presented, if any
    # Confidentiality authorizations (classification ceiling, held category values). None when
    # no label policy is configured; with a policy, None holds nothing and sees no labelled item.
    auths: AuthSet | None = None
    # The listener (or link) this principal came through: tls, tcp, udp, mesh, https, enroll,
    # http, federation. Its ceiling and default label apply at ingest.
    listener: str | None = None

    def reaches(self, other: Principal) -> bool:
        """True when a message written by ``self`` may be read by ``other`` (IN -> OUT)."""
        return not self.in_groups.isdisjoint(other.out_groups)


def anonymous(name: str = "anonymous") -> Principal:
    return Principal(name=name, kind=PrincipalKind.ANONYMOUS)


# The ``origin`` of an item (Event.origin, the Feature's ``origin``): who sent it into the server.
PARTNER_ORIGIN = "partner"
FEED_PREFIX = "feed:"
FEDERATION_PREFIX = "federation:"


def origin_of(sender: Principal) -> str | None:
    """``"feed:NAME"`` for a feed's principal, ``"partner"`` for a federation peer, else None."""
    if sender.kind is PrincipalKind.FEDERATE:
        return PARTNER_ORIGIN
    if sender.kind is PrincipalKind.SERVICE and sender.name.startswith(FEED_PREFIX):
        return sender.name
    return None


def origin_of_name(sender: str) -> str | None:
    """The same from a stored record's sender name (``feed:NAME``, ``federation:PEER``)."""
    if sender.startswith(FEED_PREFIX):
        return sender
    if sender.startswith(FEDERATION_PREFIX):
        return PARTNER_ORIGIN
    return None
