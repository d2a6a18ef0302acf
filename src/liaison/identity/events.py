"""Revocation and sign-out as events that every kind of live session subscribes to.

Two things end someone's access while they are connected: a revoked certificate or account
(``liaison user revoke``, possibly from another process, so it is found by asking: the
``revoked`` check re-reads the issued index and the users file only when they changed), and the
end of a web sign-in (sign-out, expiry). Both are announced as an ``AccessEnded`` to the
subscribers of an ``AccessEvents``:

- the session registry (stream sessions, the TAK WebSocket, the web map's feeds) follows the
  server's ``Identities.events``; at each sweep it hands the principals it holds to
  ``AccessEvents.sweep``, which announces the revoked ones, and it closes what they hold;
- the web sign-ins (``api.auth.WebSessions``) announce each sign-out and expiry on their own
  ``AccessEvents``; the web map's feeds subscribe to end the feed of that sign-in.

In a cluster (``cluster/access.py``) a node announces its own revocations and sign-outs on the
bus; a node receiving one adds the revocation to ``Identities.shared`` and sweeps at once, or ends
the user's web sign-ins (``WebSessions.end_user``): the same announcements, the same endings.

A subscriber is called synchronously, on the event loop, and must not block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from liaison.model.principal import Principal

log = logging.getLogger(__name__)

# Why access ended (also the close reason sessions and feeds report).
REVOKED = "revoked"
SIGNED_OUT = "signed_out"
EXPIRED = "expired"

# Most subscribers one AccessEvents holds: a few per server (the registry, one per HTTP listener);
# more means something subscribes per connection and never unsubscribes.
MAX_SUBSCRIBERS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessEnded:
    """Someone's access ended."""

    reason: str  # REVOKED, SIGNED_OUT or EXPIRED
    # REVOKED: the live principal whose certificate or account was revoked.
    principal: Principal | None = None
    # SIGNED_OUT, EXPIRED: the web sign-in (its cookie token) that ended, and whose it was.
    sign_in: str | None = None
    username: str | None = None
    # The cluster node where it began, when another node announced it over the bus
    # (cluster/access.py); None when it began here.
    node: str | None = None


AccessSubscriber = Callable[[AccessEnded], None]

# The state before the first sweep: unequal to anything a state callable returns.
_NEVER = object()


class AccessEvents:
    """Where access ends are announced, and who is told."""

    __slots__ = ("_last_state", "_revoked", "_revoked_among", "_state", "_subscribers")

    def __init__(
        self,
        revoked: Callable[[Principal], bool] | None = None,
        revoked_among: Callable[[Iterable[Principal]], list[Principal]] | None = None,
        state: Callable[[], object] | None = None,
    ) -> None:
        self._revoked = revoked
        # The same question for many principals at once (sweep), when the owner can answer it
        # cheaper than one ``revoked`` call each.
        self._revoked_among = revoked_among
        # A value that changes whenever anyone may have been revoked: the sweep skips the live
        # principals while it stays the same.
        self._state = state
        self._last_state: object = _NEVER
        self._subscribers: list[AccessSubscriber] = []

    def subscribe(self, callback: AccessSubscriber) -> Callable[[], None]:
        """Call ``callback(ended)`` for every announcement; returns the way to unsubscribe."""
        if len(self._subscribers) >= MAX_SUBSCRIBERS:
            raise RuntimeError(f"more than {MAX_SUBSCRIBERS} subscribers to access events")
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def announce(self, ended: AccessEnded) -> None:
        """Tell every subscriber, in the order they subscribed."""
        for callback in list(self._subscribers):
            callback(ended)

    def revoked(self, principal: Principal) -> bool:
        """Whether a connected principal's certificate or account has since been revoked."""
        return self._revoked is not None and self._revoked(principal)

    def sweep(self, live: Iterable[Principal]) -> int:
        """Announce ``REVOKED`` for each of the ``live`` principals that was revoked; how many."""
        if self._state is not None:
            state = self._state()
            if state == self._last_state:
                return 0  # nobody was revoked since the last sweep looked at everyone
            self._last_state = state
        if self._revoked_among is not None:
            ended = self._revoked_among(live)
        elif self._revoked is not None:
            ended = [principal for principal in live if self._revoked(principal)]
        else:
            return 0
        for principal in ended:
            self.announce(AccessEnded(reason=REVOKED, principal=principal))
        return len(ended)
