"""identity/: the Listener kinds, access events (revocation, sign-out) and the principal rules."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from liaison.api.auth import WebSessions
from liaison.config import LISTENER_NAMES
from liaison.errors import ConfigError
from liaison.identity.certs import ServerPki
from liaison.identity.events import (
    EXPIRED,
    MAX_SUBSCRIBERS,
    REVOKED,
    SIGNED_OUT,
    AccessEnded,
    AccessEvents,
)
from liaison.identity.groups import GroupRules, load_group_file
from liaison.identity.issue import issue_client_cert
from liaison.identity.listeners import GATED, Auth, Listener, descriptions
from liaison.identity.principals import Identities
from liaison.identity.revocation import revoke
from liaison.identity.users import UserDirectory
from liaison.model.labels import AuthSet
from liaison.model.principal import Principal, PrincipalKind
from liaison.session import SessionRegistry

from .pki_helpers import NOW

# --- Listener --------------------------------------------------------------------------------


def test_listener_values_are_the_strings_config_and_records_carry() -> None:
    assert Listener.TLS == "tls"
    assert f"{Listener.MESH}" == "mesh"
    assert {"tls": 1}[Listener.TLS] == 1
    assert Listener.parse("enroll") is Listener.ENROLL
    assert Listener.parse("bogus") is None
    # The gate's table names, in the order its error message has always listed them.
    assert [str(k) for k in GATED] == ["tls", "tcp", "udp", "mesh", "https", "enroll", "http"]
    assert Listener.FEDERATION not in GATED


def test_listener_descriptions_by_config_key() -> None:
    assert descriptions() == LISTENER_NAMES
    assert LISTENER_NAMES["multicast"] == "the multicast mesh bridge (--multicast)"
    assert Listener.MESH.facts.config_key == "multicast"
    assert set(LISTENER_NAMES) == {
        "tcp",
        "tls",
        "udp",
        "multicast",
        "https",
        "enroll",
        "http",
        "federation",
    }
    assert Listener.TLS.facts.auth is Auth.CERTIFICATE


# --- AccessEvents ----------------------------------------------------------------------------


def test_access_events_subscribe_announce_unsubscribe() -> None:
    events = AccessEvents()
    seen: list[AccessEnded] = []
    unsubscribe = events.subscribe(seen.append)
    ended = AccessEnded(reason=SIGNED_OUT, sign_in="tok", username="alice")
    events.announce(ended)
    assert seen == [ended]
    unsubscribe()
    unsubscribe()  # twice is harmless
    events.announce(ended)
    assert seen == [ended]


def test_access_events_have_a_subscriber_limit() -> None:
    events = AccessEvents()
    for _ in range(MAX_SUBSCRIBERS):
        events.subscribe(lambda e: None)
    with pytest.raises(RuntimeError):
        events.subscribe(lambda e: None)


def test_sweep_announces_only_the_revoked() -> None:
    alice, bob = Principal(name="alice"), Principal(name="bob")
    events = AccessEvents(lambda p: p.name == "bob")
    seen: list[AccessEnded] = []
    events.subscribe(seen.append)
    assert events.sweep([alice, bob]) == 1
    assert seen == [AccessEnded(reason=REVOKED, principal=bob)]
    assert events.revoked(bob) and not events.revoked(alice)
    assert AccessEvents().sweep([bob]) == 0


def test_web_sessions_announce_sign_out_and_expiry() -> None:
    now = [0.0]
    sessions = WebSessions(lambda: now[0])
    seen: list[AccessEnded] = []
    sessions.events.subscribe(seen.append)
    token, _ = sessions.create("alice")
    sessions.end(token)
    sessions.end(token)  # already gone: nothing more
    assert seen == [AccessEnded(reason=SIGNED_OUT, sign_in=token, username="alice")]
    token2, _ = sessions.create("bob")
    now[0] = 10**9
    assert not sessions.alive(token2)
    assert seen[-1] == AccessEnded(reason=EXPIRED, sign_in=token2, username="bob")


# --- The registry follows the events ---------------------------------------------------------


class FakeFeed:
    def __init__(self, principal: Principal, valid: bool = True) -> None:
        self._principal = principal
        self.valid = valid
        self.ended: str | None = None

    @property
    def principal(self) -> Principal:
        return self._principal

    def still_valid(self) -> bool:
        return self.valid

    def end(self, reason: str) -> None:
        self.ended = reason


class FakeRouter:
    congested = False


def test_registry_ends_the_feeds_of_a_revoked_principal_at_its_sweep() -> None:
    revoked: set[str] = set()
    events = AccessEvents(lambda p: p.name in revoked)
    registry = SessionRegistry(lambda: 0)
    registry.follow(events)
    alice, bob = FakeFeed(Principal(name="alice")), FakeFeed(Principal(name="bob"))
    carol = FakeFeed(Principal(name="carol"), valid=False)
    for feed in (alice, bob, carol):
        registry.add_feed(feed)

    async def sweep_once() -> None:
        task = asyncio.create_task(registry.run(FakeRouter(), interval_s=0.01))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(sweep_once())
    assert (alice.ended, bob.ended, carol.ended) == (None, None, "expired")
    revoked.add("bob")
    asyncio.run(sweep_once())
    assert (alice.ended, bob.ended) == (None, "revoked")
    # An announcement made in the process (not found by a sweep) reaches the registry too.
    events.announce(AccessEnded(reason=REVOKED, principal=alice.principal))
    assert alice.ended == "revoked"


# --- Identities ------------------------------------------------------------------------------


class FakeAuthorizer:
    def for_profile(self, profile: str | None, listener: str | None) -> AuthSet:
        raise AssertionError("not used")

    def for_certificate(
        self,
        *,
        issuer_fingerprint: str | None,
        subject: Mapping[str, str],
        listener: str,
        user_profile: str | None,
        user_org: str | None,
    ) -> tuple[str | None, AuthSet]:
        raise AssertionError("not used")

    def for_anonymous(self, listener: str) -> tuple[str | None, AuthSet]:
        return f"org-of-{listener}", AuthSet(policy_id="p", ceiling=None, held={})


def identities(pki: ServerPki | None, tmp_path: Path) -> Identities:
    return Identities(
        cert_username_regex=r"CN=([^,]+)",
        groups=GroupRules(),
        users=UserDirectory.load(tmp_path / "users.json"),
        server_pki=pki,
    )


def test_resolver_follows_how_the_listener_authenticates(
    fresh_pki: ServerPki, tmp_path: Path
) -> None:
    ids = identities(fresh_pki, tmp_path)
    issued = issue_client_cert(fresh_pki, common_name="alice", org="USA", now=NOW)
    der = issued.certificate.public_bytes(serialization.Encoding.DER)
    p = ids.resolver(Listener.TLS)(der, "10.0.0.1:5000")
    assert p is not None and p.name == "alice" and p.listener == "tls"
    assert p.cert_serial == issued.serial
    anon = ids.resolver(Listener.TCP)(der, "10.0.0.2:5000")
    assert anon is not None and anon.kind is PrincipalKind.ANONYMOUS
    assert anon.name == "tcp:10.0.0.2:5000" and anon.listener is Listener.TCP
    # Revocation: refused at the next handshake, and announced by the sweep for live sessions.
    assert not ids.events.revoked(p)
    revoke(fresh_pki, serial=issued.serial, now=NOW)
    assert ids.resolver(Listener.TLS)(der, "10.0.0.1:5001") is None
    seen: list[AccessEnded] = []
    ids.events.subscribe(seen.append)
    assert ids.events.sweep([p, anon]) == 1
    assert seen == [AccessEnded(reason=REVOKED, principal=p)]


def test_sweep_finds_revoked_accounts_and_certificates_all_at_once(
    fresh_pki: ServerPki, tmp_path: Path
) -> None:
    """The sweep asks once for all live principals (revoked_among); it answers exactly as one
    ``revoked`` call per principal would."""
    ids = identities(fresh_pki, tmp_path)
    users = UserDirectory.load(tmp_path / "users.json")
    users.add_user("bob", "USA")
    users.add_user("carol", "USA")
    resolve = ids.resolver(Listener.TLS)
    live = []
    for name in ("alice", "bob", "carol"):
        issued = issue_client_cert(fresh_pki, common_name=name, org="USA", now=NOW)
        p = resolve(issued.certificate.public_bytes(serialization.Encoding.DER), "10.0.0.1:1")
        assert p is not None
        live.append((p, issued.serial))
    principals = [p for p, _ in live]
    assert ids.events.sweep(principals) == 0
    assert ids.revoked_among(principals) == []
    revoke(fresh_pki, serial=live[0][1], now=NOW)  # alice's certificate
    users.revoke_user("bob")  # bob's account (another process: the CLI)
    ended = ids.revoked_among(principals)
    assert ended == [p for p in principals if ids.revoked(p)]
    assert [p.name for p in ended] == ["alice", "bob"]
    seen: list[AccessEnded] = []
    ids.events.subscribe(seen.append)
    assert ids.events.sweep(principals) == 2
    assert [e.principal for e in seen] == ended
    # Nothing changed since: the sweep does not even look at the live principals.
    assert ids.events.sweep(iter(())) == 0
    assert ids.events.sweep(principals) == 0
    users.revoke_user("carol")
    assert ids.events.sweep(principals) == 3


def test_revocations_of_other_nodes_count_as_this_nodes_own(
    fresh_pki: ServerPki, tmp_path: Path
) -> None:
    """Identities.shared (cluster/access.py fills it from the bus): every lookup refuses a name or
    serial in it as if this node's files had revoked it, and never writes those files."""
    ids = identities(fresh_pki, tmp_path)
    users = ids._users
    assert users is not None
    users.add_user("bob", "USA", password="correct horse battery staple")
    resolve = ids.resolver(Listener.TLS)
    certs = {
        n: issue_client_cert(fresh_pki, common_name=n, org="USA", now=NOW)
        for n in ("alice", "bob", "carol")
    }
    der = {n: c.certificate.public_bytes(serialization.Encoding.DER) for n, c in certs.items()}
    live = [resolve(der[n], "10.0.0.1:1") for n in ("alice", "bob", "carol")]
    assert all(p is not None for p in live)
    principals = [p for p in live if p is not None]
    assert ids.events.sweep(principals) == 0
    before = ids.revocation_state()
    assert ids.shared.add_name("bob") and not ids.shared.add_name("bob")
    assert ids.shared.add_serial(certs["alice"].serial)
    assert ids.revocation_state() != before  # the sweep looks again
    assert [p.name for p in ids.revoked_among(principals)] == ["alice", "bob"]
    assert [p.name for p in principals if ids.revoked(p)] == ["alice", "bob"]
    assert ids.events.sweep(principals) == 2
    # New ones refused: certificate, password, a name whose check was already made (cookie).
    assert resolve(der["alice"], "10.0.0.1:2") is None
    assert resolve(der["bob"], "10.0.0.1:2") is None
    assert resolve(der["carol"], "10.0.0.1:2") is not None
    assert users.verify_password("bob", "correct horse battery staple") is None
    assert ids.from_username("bob") is None
    bob = users.get("bob")
    assert bob is not None and bob.revoked
    # This node's own files are untouched, and what it announces is only theirs.
    assert UserDirectory.load(tmp_path / "users.json").revoked_names() == frozenset()
    assert ids.local_revocations() == (frozenset(), frozenset())


def test_anonymous_principals_take_the_listeners_org(tmp_path: Path) -> None:
    ids = Identities(
        cert_username_regex=r"CN=([^,]+)",
        groups=GroupRules(),
        users=None,
        server_pki=None,
        gate=FakeAuthorizer(),
    )
    p = ids.anonymous("1.2.3.4:9", Listener.UDP)
    assert p.org == "org-of-udp" and p.name == "udp:1.2.3.4:9"
    # Without a PKI no certificate is accepted.
    assert ids.resolver(Listener.TLS)(b"x", "peer") is None


def test_group_file_missing_and_unset(tmp_path: Path) -> None:
    assert load_group_file(None) == GroupRules()
    with pytest.raises(ConfigError, match="cannot read"):
        load_group_file(tmp_path / "nope.toml")
