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


async def _insert_rows(db: Any, table: str, rows: list[tuple[str, str]]) -> None:
    """Rows written straight into ``table`` of ``db``'s schema (as a faulty tool or a hand edit
    would), with a new seq and the notification every write sends."""
    import asyncpg

    key = "name" if table == "identity_users" else "serial"
    conn = await asyncpg.connect(
        POSTGRESQL_URL, timeout=5, server_settings={"search_path": f"{db._schema}, public"}
    )
    try:
        for k, record in rows:
            await conn.execute(
                f"INSERT INTO {table} ({key}, record, seq) VALUES ($1, $2, nextval('identity_seq'))"
                f" ON CONFLICT ({key}) DO UPDATE SET record = $2, seq = nextval('identity_seq')",
                k,
                record,
            )
        await conn.execute("NOTIFY liaison_identity")
    finally:
        await conn.close()


# Records no node can read: not JSON, JSON of the wrong shape, a name that is not the row's, and
# nesting deep enough to make json.loads raise RecursionError.
_BAD_USERS = [
    ("mallory", "{not json"),
    ("trent", "[1, 2]"),
    ("victor", '{"name": "someone-else", "org": "Blue"}'),
    ("walter", "[" * 100_000),
]
_BAD_CERTS = [("abc", "{not json"), ("abd", '{"serial": "abd"}')]


async def test_unreadable_rows_are_refused_and_later_changes_still_seen(
    shared_db_pair: tuple[Any, Any], tmp_path: Path
) -> None:
    """Rows whose record cannot be read are refused one by one (logged, counted) and every
    change after them is still seen by the other node: users, and a revocation."""
    db_a, db_b = shared_db_pair
    pki_a = ensure_server_pki(tmp_path / "a", public_host=PUBLIC_HOST, db=db_a)
    (tmp_path / "b" / "pki").mkdir(parents=True)
    for name in ("ca.pem", "ca.key"):
        shutil.copy(tmp_path / "a" / "pki" / name, tmp_path / "b" / "pki" / name)
    pki_b = ensure_server_pki(tmp_path / "b", public_host=PUBLIC_HOST, db=db_b)
    users_a, users_b = UserDirectory.in_database(db_a), UserDirectory.in_database(db_b)
    issued = issue_client_cert(pki_a, common_name="erin", org="Blue")
    cache_b = RevocationCache(pki_b)
    eventually(lambda: issued.serial in {r.serial for r in list_issued(pki_b)})

    await _insert_rows(db_a, "identity_users", _BAD_USERS)
    await _insert_rows(db_a, "identity_certs", _BAD_CERTS)
    eventually(lambda: db_b.m_refused.get("identity_users") >= len(_BAD_USERS))
    eventually(lambda: db_b.m_refused.get("identity_certs") >= len(_BAD_CERTS))
    assert users_b.get("mallory") is None and users_b.get("victor") is None
    # Changes made after the bad rows: by A (whose write reads them back too) and seen by B.
    users_a.add_user("alice", "Blue", password=PASSWORD)
    assert revoke(pki_a, serial=issued.serial) == [issued.serial]
    eventually(lambda: users_b.verify_password("alice", PASSWORD))
    eventually(lambda: cache_b.is_revoked(issued.serial))
    users_a.revoke_user("alice")
    eventually(lambda: "alice" in users_b.revoked_names())
    assert [u.name for u in users_b.list_users()] == ["alice"]
    assert db_b.m_poll_errors.total() == 0
    # A good record written over a bad row is taken again.
    await _insert_rows(db_a, "identity_users", [("mallory", '{"name": "mallory", "org": "Red"}')])
    eventually(lambda: (u := users_b.get("mallory")) is not None and u.org == "Red")


async def test_a_user_change_is_checked_before_it_is_written(
    shared_db_pair: tuple[Any, Any],
) -> None:
    """change_user refuses, before writing anything, a record no node could read; a stored
    record that cannot be read is a StorageError, and nothing is written over it."""
    from liaison.errors import StorageError

    db_a, db_b = shared_db_pair
    with pytest.raises(ValueError, match="the record names 'bob'"):
        db_a.change_user("alice", lambda old: {"name": "bob", "org": "Blue"})
    with pytest.raises(ValueError, match="unreadable record"):
        db_a.change_user("alice", lambda old: {"name": "alice"})
    assert db_a.users() == {} and db_b.users() == {}
    await _insert_rows(db_a, "identity_users", [("mallory", "{not json")])
    with pytest.raises(StorageError, match="mallory"):
        db_a.change_user("mallory", lambda old: {"name": "mallory", "org": "Blue"})
    # A user added after it by the other node, answered normally (not the bad row's error).
    UserDirectory.in_database(db_b).add_user("carol", "Blue")
    eventually(lambda: "carol" in db_a.users())
    assert "mallory" not in db_a.users()


async def _refuse_session_deletes(db: Any) -> None:
    """From now on PostgreSQL refuses every DELETE of a row of ``identity_sessions`` in ``db``'s
    schema (a trigger raising an error): a sign-out's delete fails as against a broken
    database."""
    import asyncpg

    conn = await asyncpg.connect(
        POSTGRESQL_URL, timeout=5, server_settings={"search_path": f"{db._schema}, public"}
    )
    try:
        await conn.execute(
            "CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN RAISE EXCEPTION 'deletes refused by the test'; END$$"
        )
        await conn.execute(
            "CREATE TRIGGER refuse_delete BEFORE DELETE ON identity_sessions"
            " FOR EACH ROW EXECUTE FUNCTION refuse_delete()"
        )
    finally:
        await conn.close()


async def test_a_sign_out_deletes_the_rows_before_it_is_announced(
    shared_db_pair: tuple[Any, Any],
) -> None:
    """When the sign-out is announced (the cluster bus sends it to the other nodes), its rows
    are already gone: a node told of it cannot read the sign-in back."""
    from liaison.api.auth import WebSessions
    from liaison.identity.events import SIGNED_OUT, AccessEnded

    db_a, db_b = shared_db_pair
    node_a, node_b = WebSessions(time.monotonic), WebSessions(time.monotonic)
    node_a.use_shared(db_a)
    node_b.use_shared(db_b)
    token, _ = await node_a.sign_in("alice")
    second, _ = await node_a.sign_in("alice")
    rows_when_announced: list[Any] = []

    def announced(ended: AccessEnded) -> None:
        assert ended.reason == SIGNED_OUT
        rows_when_announced.append(db_b.session_get(ended.sign_in))

    node_a.events.subscribe(announced)
    await node_a.sign_out(token)
    assert rows_when_announced == [None, None]  # both of alice's sign-ins, their rows gone
    assert await node_b.lookup_shared(token) is None
    assert await node_b.lookup_shared(second) is None


async def test_a_sign_out_whose_delete_fails_still_ends_the_sign_in_here(
    shared_db_pair: tuple[Any, Any],
) -> None:
    """The rows cannot be deleted: StorageError (POST /logout answers 503), the user's
    sign-ins end on this node all the same and are not read back from their rows; a sign-in
    made afterwards works."""
    from liaison.api.auth import WebSessions
    from liaison.errors import StorageError
    from liaison.identity.events import SIGNED_OUT, AccessEnded

    db_a, _ = shared_db_pair
    node_a = WebSessions(time.monotonic)
    node_a.use_shared(db_a)
    token, _ = await node_a.sign_in("alice")
    other, _ = await node_a.sign_in("bob")
    ended: list[AccessEnded] = []
    node_a.events.subscribe(ended.append)
    await _refuse_session_deletes(db_a)
    with pytest.raises(StorageError, match="deletes refused by the test"):
        await node_a.sign_out(token)
    assert [(e.reason, e.sign_in) for e in ended] == [(SIGNED_OUT, token)]
    assert db_a.session_get(token) is not None  # the row is still there...
    assert await node_a.lookup_shared(token) is None  # ...and refused here
    assert not node_a.alive(token)
    assert await node_a.lookup_shared(other) is not None  # bob is not touched
    again, csrf = await node_a.sign_in("alice")
    assert await node_a.lookup_shared(again) == ("alice", csrf)


async def test_a_sign_in_whose_row_was_deleted_ends_at_its_next_seen_write(
    shared_db_pair: tuple[Any, Any],
) -> None:
    """Node B holds a sign-in whose row node A deleted (a sign-out whose notice B never got):
    B ends it when it next writes the sign-in's activity (SHARED_SEEN_S), not announced again."""
    from liaison.api.auth import DELETED_ELSEWHERE, SHARED_SEEN_S, WebSessions
    from liaison.identity.events import SIGNED_OUT, AccessEnded

    db_a, db_b = shared_db_pair
    now = [1000.0]
    node_a, node_b = WebSessions(time.monotonic), WebSessions(lambda: now[0])
    node_a.use_shared(db_a)
    node_b.use_shared(db_b)
    token, csrf = await node_a.sign_in("alice")
    assert await node_b.lookup_shared(token) == ("alice", csrf)
    ended: list[AccessEnded] = []
    node_b.events.subscribe(ended.append)
    await node_a.sign_out(token)
    now[0] += 1.0  # activity before the next seen-write: B still holds it
    assert await node_b.lookup_shared(token) == ("alice", csrf)
    now[0] += SHARED_SEEN_S
    assert await node_b.lookup_shared(token) is None
    assert not node_b.alive(token)
    assert [(e.reason, e.sign_in, e.node) for e in ended] == [
        (SIGNED_OUT, token, DELETED_ELSEWHERE)
    ]
    # A sign-in whose row is there goes on after its seen-write.
    live, live_csrf = await node_a.sign_in("bob")
    assert await node_b.lookup_shared(live) == ("bob", live_csrf)
    now[0] += SHARED_SEEN_S
    assert await node_b.lookup_shared(live) == ("bob", live_csrf)


async def _alter(db: Any, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        POSTGRESQL_URL, timeout=5, server_settings={"search_path": f"{db._schema}, public"}
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def test_a_look_that_fails_unexpectedly_is_counted_and_the_watch_goes_on(
    shared_db_pair: tuple[Any, Any], tmp_path: Path
) -> None:
    """A look at the tables fails with an error that is neither the driver's nor a bad row's
    (here: the issue order column changed type under the node, so new and held items cannot be
    ordered together): counted, and once the cause is gone the node sees the changes."""
    import json

    db_a, db_b = shared_db_pair
    pki_a = ensure_server_pki(tmp_path / "a", public_host=PUBLIC_HOST, db=db_a)
    issued = issue_client_cert(pki_a, common_name="erin", org="Blue")
    serial = format(issued.serial, "x")
    eventually(lambda: any(i["serial"] == serial for i in db_b.cert_items()))
    await _alter(db_a, "ALTER TABLE identity_certs ALTER COLUMN n TYPE text USING n::text")
    item = {**db_a.cert_items()[0], "serial": "abcdef"}
    await _insert_rows(db_a, "identity_certs", [("abcdef", json.dumps(item))])
    eventually(lambda: db_b.m_poll_errors.total() >= 1, within_s=3.0)
    assert not any(i["serial"] == "abcdef" for i in db_b.cert_items())
    await _alter(db_a, "ALTER TABLE identity_certs ALTER COLUMN n TYPE bigint USING n::bigint")
    eventually(lambda: any(i["serial"] == "abcdef" for i in db_b.cert_items()), within_s=3.0)
    assert [i["serial"] for i in db_b.cert_items()] == [serial, "abcdef"]
