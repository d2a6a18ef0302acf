"""Users, the issued-certificate index and the CRL as two nodes see them: the same contract for
the files (one data folder, as on shared storage) and for PostgreSQL (identity/shared_db.py,
two connections to one database). With PostgreSQL a change on node A is seen on node B within
1 s, without either touching the other's files; web sign-ins are shared too (PostgreSQL only).

PostgreSQL is the real server of ``LIAISON_TEST_POSTGRESQL`` (tests/unit/storage/storage_support
.py): skipped with the reason when it is missing, failed under LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from liaison.errors import PkiError
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki
from liaison.identity.issue import issue_client_cert, list_issued
from liaison.identity.revocation import RevocationCache, current_crl, revoke
from liaison.identity.users import UserDirectory
from tests.unit.storage.storage_support import POSTGRESQL_URL, postgresql_schema

from .pki_helpers import PUBLIC_HOST

PASSWORD = "correct horse battery"
NEW_PASSWORD = "another long password"
# How long a change may take to reach the other node (docs/deployment.md: within 1 s).
WITHIN_S = 1.0


@dataclass
class Node:
    users: UserDirectory
    pki: ServerPki


@dataclass
class Pair:
    a: Node
    b: Node
    kind: str


def eventually(check: Callable[[], Any], within_s: float = WITHIN_S) -> Any:
    """``check()``'s first truthy answer, polled every 20 ms for at most ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    for _ in range(int(within_s / 0.02) + 2):
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    raise AssertionError(f"not seen within {within_s} s")


@pytest.fixture(params=["files", "postgresql"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    if request.param == "files":
        # Two nodes on one data folder (shared storage): two directories over one users file.
        pki = ensure_server_pki(tmp_path, public_host=PUBLIC_HOST)
        users_file = tmp_path / "users.json"
        yield Pair(
            Node(UserDirectory.load(users_file), pki),
            Node(UserDirectory.load(users_file), ServerPki.at(tmp_path)),
            "files",
        )
        return
    from liaison.identity.shared_db import IdentityDb
    from liaison.storage.postgresql import PostgresStore

    async with postgresql_schema() as schema:
        store = await PostgresStore.open(POSTGRESQL_URL, schema=schema)  # migrates
        await store.close()
        dbs = [IdentityDb.open(POSTGRESQL_URL, where="test", schema=schema) for _ in range(2)]
        try:
            # Two data folders with the same CA, and nothing else in common but the database.
            dir_a, dir_b = tmp_path / "a", tmp_path / "b"
            pki_a = ensure_server_pki(dir_a, public_host=PUBLIC_HOST, db=dbs[0])
            (dir_b / "pki").mkdir(parents=True)
            for name in ("ca.pem", "ca.key"):
                shutil.copy(dir_a / "pki" / name, dir_b / "pki" / name)
            pki_b = ensure_server_pki(dir_b, public_host=PUBLIC_HOST, db=dbs[1])
            yield Pair(
                Node(UserDirectory.in_database(dbs[0]), pki_a),
                Node(UserDirectory.in_database(dbs[1]), pki_b),
                "postgresql",
            )
        finally:
            for db in dbs:
                db.close()


def test_a_user_added_on_one_node_signs_in_on_the_other(pair: Pair) -> None:
    pair.a.users.add_user("alice", "Blue", groups=["Cyan"], password=PASSWORD)
    user = eventually(lambda: pair.b.users.verify_password("alice", PASSWORD))
    assert user.org == "Blue"
    assert user.principal().in_groups == frozenset({"Cyan"})
    assert [u.name for u in pair.b.users.list_users()] == ["alice"]
    with pytest.raises(ValueError, match="already exists"):
        pair.b.users.add_user("alice", "Red")
    with pytest.raises(KeyError):
        pair.b.users.set_password("nobody", NEW_PASSWORD)


def test_a_password_changed_on_one_node_changes_on_the_other(pair: Pair) -> None:
    pair.a.users.add_user("bob", "Blue", password=PASSWORD)
    eventually(lambda: pair.b.users.get("bob"))
    pair.b.users.set_password("bob", NEW_PASSWORD)
    eventually(lambda: pair.a.users.verify_password("bob", NEW_PASSWORD))
    assert pair.a.users.verify_password("bob", PASSWORD) is None
    pair.a.users.set_groups("bob", in_groups=["Red"], out_groups=["Red", "Cyan"])
    got = eventually(
        lambda: (u := pair.b.users.get("bob")) is not None and u.in_groups == ("Red",) and u
    )
    assert got.out_groups == ("Red", "Cyan")


def test_an_enrollment_token_is_used_up_once_across_nodes(pair: Pair) -> None:
    now = dt.datetime.now(dt.UTC)
    pair.a.users.add_user("carol", "Blue")
    token = pair.a.users.issue_token("carol", 600, now)
    eventually(lambda: pair.b.users.check_token("carol", token, now))
    assert pair.b.users.authenticate_enrollment("carol", token, now) is not None
    assert pair.b.users.redeem_token("carol", token, now) is True
    assert pair.a.users.redeem_token("carol", token, now) is False  # the change is read first


def test_a_revoked_user_is_revoked_on_the_other_node(pair: Pair) -> None:
    pair.a.users.add_user("dave", "Blue", password=PASSWORD)
    eventually(lambda: pair.b.users.get("dave"))
    stamp = pair.b.users.stamp
    pair.a.users.revoke_user("dave")
    eventually(lambda: "dave" in pair.b.users.revoked_names())
    assert pair.b.users.stamp != stamp
    assert pair.b.users.verify_password("dave", PASSWORD) is None


def test_a_certificate_issued_and_revoked_is_seen_and_on_the_crl_of_both(pair: Pair) -> None:
    issued = issue_client_cert(pair.a.pki, common_name="erin", org="Blue")
    seen = eventually(lambda: [r for r in list_issued(pair.b.pki) if r.serial == issued.serial])
    assert seen[0].common_name == "erin" and not seen[0].revoked
    cache_a = RevocationCache(pair.a.pki)
    assert not cache_a.is_revoked(issued.serial)
    crl_before = current_crl(pair.a.pki)
    assert crl_before is not None
    number_before = x509.load_pem_x509_crl(crl_before).extensions.get_extension_for_class(
        x509.CRLNumber
    )
    assert revoke(pair.b.pki, serial=issued.serial) == [issued.serial]
    assert revoke(pair.b.pki, serial=issued.serial) == []  # twice is no error, nothing new
    eventually(lambda: cache_a.is_revoked(issued.serial))
    crl = x509.load_pem_x509_crl(eventually(lambda: current_crl(pair.a.pki)))
    assert crl.get_revoked_certificate_by_serial_number(issued.serial) is not None
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > number_before.value.crl_number
    der = current_crl(pair.a.pki, der=True)
    assert der is not None and x509.load_der_x509_crl(der) == crl
    with pytest.raises(PkiError, match="no certificate with serial"):
        revoke(pair.a.pki, serial=0xABC)


def test_revoking_by_name_revokes_every_live_certificate_of_that_user(pair: Pair) -> None:
    first = issue_client_cert(pair.a.pki, common_name="frank", org="Blue")
    second = issue_client_cert(pair.b.pki, common_name="frank", org="Blue")
    eventually(lambda: len(list_issued(pair.a.pki)) == 2)
    assert sorted(revoke(pair.a.pki, common_name="frank")) == sorted([first.serial, second.serial])
    cache_b = RevocationCache(pair.b.pki)
    eventually(lambda: cache_b.revoked() == {first.serial, second.serial})


@pytest.fixture
async def shared_db_pair() -> AsyncIterator[tuple[Any, Any]]:
    from liaison.identity.shared_db import IdentityDb
    from liaison.storage.postgresql import PostgresStore

    async with postgresql_schema() as schema:
        store = await PostgresStore.open(POSTGRESQL_URL, schema=schema)
        await store.close()
        dbs = [IdentityDb.open(POSTGRESQL_URL, where="test", schema=schema) for _ in range(2)]
        try:
            yield dbs[0], dbs[1]
        finally:
            for db in dbs:
                db.close()


async def test_a_web_sign_in_made_on_one_node_is_good_on_the_other(
    shared_db_pair: tuple[Any, Any],
) -> None:
    from liaison.api.auth import WebSessions
    from liaison.identity.events import SIGNED_OUT, AccessEnded

    db_a, db_b = shared_db_pair
    node_a, node_b = WebSessions(time.monotonic), WebSessions(time.monotonic)
    node_a.use_shared(db_a)
    node_b.use_shared(db_b)
    token, csrf = await node_a.sign_in("alice")
    other, _ = await node_a.sign_in("bob")
    assert await node_b.lookup_shared(token) == ("alice", csrf)
    assert node_b.alive(token)
    assert await node_b.lookup_shared("not-a-token") is None
    assert await node_b.lookup_shared(other) is not None
    ended: list[AccessEnded] = []
    node_a.events.subscribe(ended.append)
    # A sign-out on B ends alice's sign-ins in the table; A is told (cluster/access.py) and
    # ends its own copies; a later lookup on A finds nothing in the table either.
    await node_b.sign_out(token)
    assert not node_b.alive(token)
    assert node_a.end_user("alice", node="b") == 1
    assert [(e.reason, e.sign_in) for e in ended] == [(SIGNED_OUT, token)]
    assert await node_a.lookup_shared(token) is None
    assert await node_a.lookup_shared(other) is not None  # bob's sign-in is not touched


async def test_an_expired_shared_sign_in_is_refused(shared_db_pair: tuple[Any, Any]) -> None:
    from liaison.api.auth import SESSION_MAX_S, WebSessions

    db_a, db_b = shared_db_pair
    node_a, node_b = WebSessions(time.monotonic), WebSessions(time.monotonic)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=SESSION_MAX_S + 60)
    node_a.use_shared(db_a, wall_clock=lambda: past)
    node_b.use_shared(db_b)
    token, _ = await node_a.sign_in("alice")
    assert await node_b.lookup_shared(token) is None
    with pytest.raises(RuntimeError, match="use sign_in"):
        node_a.create("alice")


async def test_a_node_whose_connections_were_cut_catches_up_and_writes_again(
    shared_db_pair: tuple[Any, Any],
) -> None:
    """PostgreSQL ends both of node A's connections (a restart, a failover): A's next change
    fails with StorageError and nothing is half-written; within a second A has new connections,
    sees what B changed meanwhile, and changes again."""
    import asyncpg

    from liaison.errors import StorageError

    db_a, db_b = shared_db_pair
    users_a, users_b = UserDirectory.in_database(db_a), UserDirectory.in_database(db_b)
    pids = [db_a._conn.get_server_pid(), db_a._listen.get_server_pid()]
    admin = await asyncpg.connect(POSTGRESQL_URL, timeout=5)
    try:
        for pid in pids:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    users_b.add_user("made-meanwhile", "Blue")
    try:
        users_a.add_user("first-try", "Blue")
        written = True
    except StorageError:  # the connection was found dead by this call (or not yet re-made)
        written = False
    eventually(lambda: users_a.get("made-meanwhile"), within_s=2.0)
    # Refused means not written, anywhere; accepted means written.
    if written:
        eventually(lambda: users_b.get("first-try"))
    else:
        await asyncio.sleep(2 * 0.5)  # two of B's polls (shared_db.POLL_S), had there been a row
        assert users_b.get("first-try") is None
    eventually(lambda: _added(users_a, "second-try"), within_s=2.0)
    eventually(lambda: users_b.get("second-try"))


def _added(users: UserDirectory, name: str) -> bool:
    from liaison.errors import StorageError

    try:
        users.add_user(name, "Blue")
    except StorageError:
        return False
    except ValueError:  # an earlier attempt got through after all
        return users.get(name) is not None
    return True
