"""LDAP sign-in against a real OpenLDAP (slapd_support): binds, searches, group and label
mapping, filter injection, certificate checks, StartTLS, and the re-check of disabled users."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from liaison import config as config_mod
from liaison.errors import ConfigError
from liaison.gate import Gate, load_gate_config
from liaison.identity.directory import (
    Directory,
    DirectoryUnavailable,
    escape_filter_value,
)
from liaison.identity.groups import GroupRules
from liaison.identity.listeners import Listener
from liaison.identity.principals import Identities
from liaison.identity.users import UserDirectory
from liaison.metrics import Metrics
from tests.integration.slapd_support import (
    PASSWORD,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PW,
    Slapd,
    ad_group_dn,
    ad_slapd,
    directory_toml,
    disable_ldif,
    enable_ldif,
    group_dn,
    set_ad_flags,
    slapd,
    user_dn,
)

__all__ = ["ad_slapd", "slapd"]  # the module-scoped fixtures


def directory_for(tmp_path: Path, server: Slapd, **kwargs: object) -> Directory:
    path = tmp_path / "liaison.toml"
    path.write_text(directory_toml(server, **kwargs))  # type: ignore[arg-type]
    return directory_for_file(path)


def directory_for_file(path: Path) -> Directory:
    cfg = config_mod.load(path, {})
    assert cfg.directory is not None
    return Directory(cfg.directory)


def test_escape_follows_rfc_4515() -> None:
    assert escape_filter_value("a*b(c)d\\e\x00") == "a\\2ab\\28c\\29d\\5ce\\00"
    assert escape_filter_value("plain.name@x") == "plain.name@x"


def test_password_groups_and_labels(tmp_path: Path, slapd: Slapd) -> None:
    d = directory_for(tmp_path, slapd)
    alice = d.check_password("alice", PASSWORD)
    assert alice is not None and not alice.revoked
    # blue -> Blue both ways, org NATO (first map naming an org); ANALYSTS (upper-case DN in the
    # map) -> IN Analysts and the label profile
    assert alice.in_groups == ("Blue", "Analysts") and alice.out_groups == ("Blue",)
    assert alice.org == "NATO" and alice.profile == "secret-analyst"
    bob = d.check_password("bob", PASSWORD)
    assert bob is not None
    assert bob.in_groups == ("Red",) and bob.out_groups == ("Red", "HQ")
    assert bob.org == "Example" and bob.profile is None  # the [directory] org, no profile
    assert d.get("alice") == alice and d.names() == ["alice", "bob"]


def test_wrong_empty_and_unknown_refused(tmp_path: Path, slapd: Slapd) -> None:
    d = directory_for(tmp_path, slapd)
    assert d.check_password("alice", "not the password") is None
    # An empty password would be an unauthenticated bind, which slapd accepts (RFC 4513 5.1.2):
    # it is never sent, so it never "succeeds".
    assert d.check_password("alice", "") is None
    assert d.client._open(user_dn("alice"), "") is None
    assert d.check_password("nobody", PASSWORD) is None
    # in a directory group, but in none of the mapped ones (require_group)
    assert d.check_password("carol", PASSWORD) is None
    assert d.get("alice") is None and d.get("carol") is None


def test_unknown_and_unmapped_names_cost_a_bind_too(tmp_path: Path, slapd: Slapd) -> None:
    d = directory_for(tmp_path, slapd)
    binds: list[tuple[str, bool]] = []
    real_verify = d.client.verify

    def counted(dn: str, password: str) -> bool:
        ok = real_verify(dn, password)  # the real bind, against slapd
        binds.append((dn, ok))
        return ok

    d.client.verify = counted  # type: ignore[method-assign]
    for name in ("nobody", "carol", "alice"):  # unknown, in no mapped group, wrong password
        assert d.check_password(name, "not the password") is None
    assert [ok for _, ok in binds] == [False, False, False]
    assert binds[0][0].startswith("cn=liaison-no-such-user-") and binds[0][0].endswith(PEOPLE)
    assert binds[2][0] == user_dn("alice")


def test_filter_injection_is_escaped(tmp_path: Path, slapd: Slapd) -> None:
    d = directory_for(tmp_path, slapd)
    # Not names Liaison accepts at all...
    for name in ("*", "alice)(uid=*", "*)(|(uid=*", "al*"):
        assert d.check_password(name, PASSWORD) is None
    # ...and the search itself escapes them: "*" is looked up as a literal star, so it does not
    # match every user (unescaped, "(uid=*)" would find eight and "al*" would find alice).
    conn = d.client.service()
    try:
        assert d.client.find(conn, "*") is None
        assert d.client.find(conn, "al*") is None
        assert d.client.find(conn, "alice)(uid=*") is None
        assert d.client.find(conn, "x)(|(objectClass=*") is None
        found = d.client.find(conn, "alice")
        assert found is not None and found.dn == user_dn("alice")
    finally:
        conn.unbind()


async def test_ldaps_with_the_wrong_ca_is_refused(tmp_path: Path, slapd: Slapd) -> None:
    d = directory_for(tmp_path, slapd, ca_file=slapd.wrong_ca_file)
    with pytest.raises(DirectoryUnavailable, match="certificate verify failed"):
        d.client.service()
    # a sign-in is refused (and logged), not an error
    assert await d.authenticate("alice", PASSWORD) is None
    assert d.get("alice") is None


def test_starttls(tmp_path: Path, slapd: Slapd) -> None:
    d = directory_for(tmp_path, slapd, url=slapd.ldap_url, start_tls=True)
    assert d.check_password("alice", PASSWORD) is not None
    # StartTLS checks the certificate too
    wrong = directory_for(
        tmp_path, slapd, url=slapd.ldap_url, start_tls=True, ca_file=slapd.wrong_ca_file
    )
    with pytest.raises(DirectoryUnavailable):
        wrong.client.service()


def test_cleartext_ldap_is_not_accepted(tmp_path: Path, slapd: Slapd) -> None:
    path = tmp_path / "liaison.toml"
    path.write_text(directory_toml(slapd, url=slapd.ldap_url, start_tls=False))
    with pytest.raises(ConfigError, match="start_tls"):
        config_mod.load(path, {})


def test_group_search_instead_of_member_of(tmp_path: Path, slapd: Slapd) -> None:
    extra = (
        'group_attribute = ""\n'
        f'group_base = "{group_dn("x").split(",", 1)[1]}"\n'
        'group_filter = "(&(objectClass=groupOfNames)(member={dn}))"\n'
    )
    d = directory_for(tmp_path, slapd, extra=extra)
    alice = d.check_password("alice", PASSWORD)
    assert alice is not None and alice.in_groups == ("Blue", "Analysts")


def test_refresh_revokes_disabled_removed_and_ungrouped(tmp_path: Path, slapd: Slapd) -> None:
    d = directory_for(tmp_path, slapd)
    for name in ("frank", "gina", "henry"):
        assert d.check_password(name, PASSWORD) is not None
    stamp = d.stamp
    assert d.refresh() == 0 and d.stamp == stamp and d.revoked_names() == frozenset()
    # frank: disabled (the configured disabled_filter); gina: removed from her only mapped group
    slapd.modify(disable_ldif("frank"))
    slapd.modify(
        f"dn: {group_dn('red')}\nchangetype: modify\ndelete: member\nmember: {user_dn('gina')}\n"
    )
    try:
        assert d.refresh() == 2
        assert d.revoked_names() == {"frank", "gina"} and d.stamp != stamp
        assert d.check_password("frank", PASSWORD) is None
        assert d.check_password("gina", PASSWORD) is None
        frank = d.get("frank")
        assert frank is not None and frank.revoked
    finally:
        slapd.modify(enable_ldif("frank"))
        slapd.modify(
            f"dn: {group_dn('red')}\nchangetype: modify\nadd: member\nmember: {user_dn('gina')}\n"
        )
    # back in the directory: the next refresh gives access back
    assert d.refresh() == 2 and d.revoked_names() == frozenset()


def test_check_config_hides_the_service_password(tmp_path: Path, slapd: Slapd) -> None:
    path = tmp_path / "liaison.toml"
    path.write_text(directory_toml(slapd))
    text = config_mod.describe(config_mod.load(path, {}))
    assert "[directory]" in text and 'bind_password = "***"' in text
    assert SERVICE_PW not in text
    assert SERVICE_PW not in repr(config_mod.load(path, {}))


POLICY = """
[policy]
id = "P"
version = 1
classifications = ["UNCLASSIFIED", "SECRET"]
[policy.categories.REL]
type = "PERMISSIVE"
required = true
values = ["USA", "UKR"]
[authz.profiles.secret-analyst]
classification = "SECRET"
REL = ["UKR"]
[gate.listeners.tls]
ceiling = { classification = "SECRET", REL = "*" }
default_classification = "UNCLASSIFIED"
"""


def test_directory_users_as_principals_with_labels(tmp_path: Path, slapd: Slapd) -> None:
    d = directory_for(tmp_path, slapd)
    gate = Gate(load_gate_config(POLICY), audit=None, clock_ms=lambda: 0)
    users = UserDirectory.in_memory()
    users.add_user("bob", "Local", groups=["LocalGroup"])  # the users file wins over the directory
    ids = Identities(
        cert_username_regex=r"CN=([^,]+)",
        groups=GroupRules(),
        users=users,
        server_pki=None,
        gate=gate,
        directory=d,
    )
    assert ids.from_username("alice", Listener.TLS) is None  # not signed in yet
    assert d.check_password("alice", PASSWORD) is not None
    alice = ids.from_username("alice", Listener.TLS)
    assert alice is not None
    assert alice.in_groups == {"Blue", "Analysts"} and alice.out_groups == {"Blue"}
    assert alice.org == "NATO"
    # the mapped label profile: SECRET, REL UKR (the profile within the listener's ceiling)
    assert alice.auths is not None and alice.auths.ceiling == "SECRET"
    assert alice.auths.held["REL"] == frozenset({"UKR"})
    bob = ids.from_username("bob", Listener.TLS)
    assert bob is not None and bob.in_groups == {"LocalGroup"} and bob.org == "Local"
    # revoked in the directory: the sweep sees the state change and names alice
    state = ids.revocation_state()
    assert not ids.revoked(alice) and ids.revoked_among([alice, bob]) == []
    slapd.modify(disable_ldif("alice"))
    try:
        assert d.refresh() == 1
    finally:
        slapd.modify(enable_ldif("alice"))
    assert ids.revocation_state() != state
    assert ids.revoked(alice) and ids.revoked_among([alice, bob]) == [alice]
    assert ids.from_username("alice", Listener.TLS) is None
    # a local user added later with the same name is that local user, never revoked by the
    # directory's record
    users.add_user("alice", "Local")
    assert ids.revoked_among([alice]) == [] and not ids.revoked(alice)


async def test_an_unreachable_directory_changes_nobody(tmp_path: Path, slapd: Slapd) -> None:
    state = tmp_path / "directory-users.json"
    path = tmp_path / "liaison.toml"
    path.write_text(directory_toml(slapd))
    cfg = config_mod.load(path, {}).directory
    assert cfg is not None
    assert Directory(cfg, state).check_password("alice", PASSWORD) is not None
    # the same remembered users, and a directory nobody answers at
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    metrics = Metrics()
    down = Directory(replace(cfg, urls=(f"ldaps://127.0.0.1:{closed_port}",)), state, metrics)
    alice = down.get("alice")
    assert alice is not None and not alice.revoked and alice.org == "NATO"
    with pytest.raises(DirectoryUnavailable):
        down.refresh()
    task = asyncio.create_task(down.run())  # its first re-check runs at once, and fails
    try:
        for _ in range(200):  # bounded: 10 s
            if metrics.snapshot().get('liaison_directory_refreshes_total{result="failed"}'):
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert metrics.snapshot().get('liaison_directory_refreshes_total{result="failed"}') == 1
    assert down.revoked_names() == frozenset() and down.get("alice") == alice
    # a sign-in is refused while the directory cannot be asked
    assert await down.authenticate("alice", PASSWORD) is None
    assert metrics.snapshot().get('liaison_directory_signins_total{result="unavailable"}') == 1


def test_active_directory_preset(tmp_path: Path, ad_slapd: Slapd) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text(SERVICE_PW)
    path = tmp_path / "liaison.toml"
    # kind = "ad": memberOf, and userAccountControl bit 2 as "disabled". The user filter names
    # its matching rule because msuser.schema gives sAMAccountName none (AD's schema does).
    path.write_text(
        "[directory]\n"
        'kind = "ad"\n'
        f'urls = ["{ad_slapd.ldaps_url}"]\n'
        f'ca_file = "{ad_slapd.ca_file}"\n'
        f'bind_dn = "{SERVICE_DN}"\n'
        'bind_password_file = "pw"\n'
        f'user_base = "{PEOPLE}"\n'
        'user_filter = "(&(objectClass=user)(sAMAccountName:caseIgnoreMatch:={username}))"\n'
        'org = "Example"\n'
        "[[directory.map]]\n"
        f'group = "{ad_group_dn("blue").lower()}"\n'
        'groups = ["Blue"]\n'
    )
    d = directory_for_file(path)
    lee = d.check_password("lee", PASSWORD)
    assert lee is not None and lee.in_groups == ("Blue",) and lee.org == "Example"
    assert d.check_password("kim", PASSWORD) is None  # 514: ACCOUNTDISABLE set
    assert d.check_password("max", PASSWORD) is not None
    set_ad_flags(ad_slapd, "lee", 512 | 2)
    try:
        assert d.refresh() == 1 and d.revoked_names() == {"lee"}
    finally:
        set_ad_flags(ad_slapd, "lee", 512)
    assert d.refresh() == 1 and d.revoked_names() == frozenset()
