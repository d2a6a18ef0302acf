"""Bearer tokens with PostgreSQL storage: the keyring and the redeemed refresh tokens live in the
database (identity/tokens.py DbKeyring, identity/shared_db.py), so two nodes on one database
answer the same. Each test gets a fresh schema on the real server of ``LIAISON_TEST_POSTGRESQL``
(tests/unit/storage/storage_support.py): skipped with the reason when it is missing, failed under
LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from liaison.errors import StorageError
from liaison.identity.tokens import (
    REFRESH_TYP,
    DbKeyring,
    Keyring,
    TokenService,
    TokenSettings,
    keyring_path,
)
from tests.unit.storage.storage_support import POSTGRESQL_URL, postgresql_schema

from .test_shared_identity import eventually

SETTINGS = TokenSettings(access_ttl_s=300, refresh_ttl_s=3600, issuer="https://tak.example")


@pytest.fixture
async def dbs() -> AsyncIterator[list[Any]]:
    """Two IdentityDb (two nodes) on one freshly migrated schema."""
    from liaison.identity.shared_db import IdentityDb
    from liaison.storage.postgresql import PostgresStore

    async with postgresql_schema() as schema:
        store = await PostgresStore.open(POSTGRESQL_URL, schema=schema)  # migrates
        await store.close()
        opened = [IdentityDb.open(POSTGRESQL_URL, where="test", schema=schema) for _ in range(2)]
        try:
            yield opened
        finally:
            for db in opened:
                db.close()


def service(db: Any, data_dir: Path) -> TokenService:
    ring = DbKeyring.open_in_database(db, keyring_path(data_dir))
    return TokenService(ring, SETTINGS, shared_redeem=db.redeem_refresh)


def test_a_token_issued_on_one_node_verifies_on_the_other(dbs: list[Any], tmp_path: Path) -> None:
    a = service(dbs[0], tmp_path / "a")
    b = service(dbs[1], tmp_path / "b")
    assert [k.kid for k in a.keyring.all_keys()] == [k.kid for k in b.keyring.all_keys()]
    assert len(a.keyring.all_keys()) == 1
    issued = a.issue("alice", groups=["Cyan"], roles=[])
    checked = b.check(issued.access_token)
    assert checked is not None and checked.sub == "alice"
    # Neither node wrote a keyring file: the keys are the database's.
    assert not keyring_path(tmp_path / "a").exists()
    assert not keyring_path(tmp_path / "b").exists()


def test_a_rotation_on_one_node_is_seen_by_the_other(dbs: list[Any], tmp_path: Path) -> None:
    a = service(dbs[0], tmp_path / "a")
    b = service(dbs[1], tmp_path / "b")
    old = a.issue("alice", groups=[], roles=[])
    first = b.keyring.active().kid
    new = a.keyring.rotate(int(a._now()), SETTINGS.keep_s)
    assert a.keyring.active().kid == new.kid
    eventually(lambda: b.keyring.active().kid == new.kid)
    # The retired key still verifies its tokens on both; new tokens from B carry the new kid.
    assert b.check(old.access_token) is not None
    kids = [k.kid for k in b.keyring.all_keys()]
    assert kids == [first, new.kid]
    assert a.check(b.issue("bob", groups=[], roles=[]).access_token) is not None


def test_a_refresh_token_is_redeemed_once_across_nodes(dbs: list[Any], tmp_path: Path) -> None:
    a = service(dbs[0], tmp_path / "a")
    b = service(dbs[1], tmp_path / "b")
    issued = a.issue("alice", groups=[], roles=[])
    assert b.check(issued.refresh_token, REFRESH_TYP) is not None
    assert b.redeem_refresh(issued.refresh_token) is not None
    assert a.redeem_refresh(issued.refresh_token) is None
    assert b.redeem_refresh(issued.refresh_token) is None
    # Another token of the same user is untouched.
    other = b.issue("alice", groups=[], roles=[])
    assert a.redeem_refresh(other.refresh_token) is not None


def test_expired_redemptions_are_deleted(dbs: list[Any]) -> None:
    db = dbs[0]
    assert db.redeem_refresh("old", 100, 50) is True
    assert db.redeem_refresh("old", 100, 60) is False
    # At time 100 "old" has expired: deleted before the next insert, so its row is gone.
    assert db.redeem_refresh("new", 500, 100) is True
    assert db.redeem_refresh("old", 100, 100) is True


def test_the_first_node_imports_its_keyring_file_once(dbs: list[Any], tmp_path: Path) -> None:
    file_ring = Keyring.open(keyring_path(tmp_path / "a"))
    file_ring.rotate(int(file_ring.active().created) + 1, SETTINGS.keep_s)
    file_kids = [k.kid for k in file_ring.all_keys()]
    token = TokenService(file_ring, SETTINGS).issue("alice", groups=[], roles=[])
    a = DbKeyring.open_in_database(dbs[0], keyring_path(tmp_path / "a"))
    assert a.imported_from == keyring_path(tmp_path / "a")
    assert [k.kid for k in a.all_keys()] == file_kids
    # A token signed from the file before the switch verifies on the other node.
    b = service(dbs[1], tmp_path / "a")  # the same data folder: not imported again
    assert isinstance(b.keyring, DbKeyring) and b.keyring.imported_from is None
    assert b.check(token.access_token) is not None
    # A second node's own, different keyring.json is not imported: the table holds keys.
    Keyring.open(keyring_path(tmp_path / "c"))
    c = DbKeyring.open_in_database(dbs[1], keyring_path(tmp_path / "c"))
    assert c.imported_from is None
    assert [k.kid for k in c.all_keys()] == file_kids


def test_an_unreadable_keyring_file_refuses_the_import(dbs: list[Any], tmp_path: Path) -> None:
    path = keyring_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("not json")
    with pytest.raises(StorageError, match="unreadable"):
        DbKeyring.open_in_database(dbs[0], path)
    assert dbs[0].token_keys()[1] == []
