"""The kinds of listener a principal can come through, as one typed value.

A ``Listener`` is a ``StrEnum``: its value is the string that config keys
(``[gate.listeners.tls]``), audit records, logs and metrics labels have always carried, so
``Listener.TLS == "tls"`` and a ``Listener`` goes wherever a listener name string went
(``Principal.listener`` stays a ``str`` in the pure ``model/`` layer). What each kind is (its
configuration key, its description in "cannot listen on ..." messages, whether the gate has a
table for it, how its clients prove who they are) lives here and nowhere else, so a new listener
kind is one member and one ``ListenerFacts`` entry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Auth(enum.Enum):
    """How a listener's clients prove who they are."""

    CERTIFICATE = "certificate"  # a client certificate from our CA (or an [authz.cas] CA)
    PASSWORD = "password"  # a user's password or enrollment token (HTTP Basic, web sign-in)
    OPTIONAL_LOGIN = "optional_login"  # anonymous, or <auth> first when the listener demands it
    NONE = "none"  # anonymous: the listener's own profile and organisation, if any
    PARTNER = "partner"  # a partner server on a federation link


class Listener(enum.StrEnum):
    """A kind of listener (or link) a principal comes through."""

    TLS = "tls"
    TCP = "tcp"
    UDP = "udp"
    MESH = "mesh"
    HTTPS = "https"
    ENROLL = "enroll"
    HTTP = "http"
    FEDERATION = "federation"

    @property
    def facts(self) -> ListenerFacts:
        return FACTS[self]

    @classmethod
    def parse(cls, name: str) -> Listener | None:
        """The listener named ``name`` (a config key or a stored string), or None."""
        try:
            return cls(name)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerFacts:
    """What one listener kind is, for the modules that configure, bind and gate it."""

    auth: Auth
    # Its key in "cannot listen on ..." messages (the configuration key or flag that moves it);
    # None for a kind without an endpoint of its own.
    config_key: str | None
    # What it is, in "cannot listen on ..." messages.
    description: str | None
    # Whether the label policy may have a [gate.listeners.<name>] table for it. Federation peers
    # have their ceilings in the federation configuration (per peer) instead.
    gated: bool = True


FACTS: dict[Listener, ListenerFacts] = {
    Listener.TLS: ListenerFacts(
        auth=Auth.CERTIFICATE, config_key="tls", description="TLS streaming (--tls)"
    ),
    Listener.TCP: ListenerFacts(
        auth=Auth.OPTIONAL_LOGIN, config_key="tcp", description="plain TCP streaming (--tcp)"
    ),
    Listener.UDP: ListenerFacts(auth=Auth.NONE, config_key="udp", description="UDP input (--udp)"),
    Listener.MESH: ListenerFacts(
        auth=Auth.NONE,
        config_key="multicast",
        description="the multicast mesh bridge (--multicast)",
    ),
    Listener.HTTPS: ListenerFacts(
        auth=Auth.CERTIFICATE,
        config_key="https",
        description="HTTPS with client certificates (--https)",
    ),
    Listener.ENROLL: ListenerFacts(
        auth=Auth.PASSWORD,
        config_key="enroll",
        description="HTTPS enrollment and web sign-in (--enroll)",
    ),
    Listener.HTTP: ListenerFacts(
        auth=Auth.NONE, config_key="http", description="plain HTTP (--http)"
    ),
    Listener.FEDERATION: ListenerFacts(
        auth=Auth.PARTNER,
        config_key="federation",
        description="the partner link ([federation] listen in the label policy file)",
        gated=False,
    ),
}

# The listeners a label policy may name in [gate.listeners.<name>], in documentation order.
GATED: tuple[Listener, ...] = tuple(kind for kind in Listener if FACTS[kind].gated)


def descriptions() -> dict[str, str]:
    """Config key -> description of every listener with an endpoint of its own."""
    return {
        f.config_key: f.description
        for f in FACTS.values()
        if f.config_key is not None and f.description is not None
    }
