"""The one-time import of a data folder's users and issued certificates into PostgreSQL's shared
identity tables (identity/db_import.py, identity/shared_db.py ``IdentityDb.open(local=...)``,
docs/deployment.md "Users, certificates and sign-ins (PostgreSQL)").

A folder made by the file backend (users.json, pki/issued.json, pki/crl.pem) is opened against a
fresh schema of the real PostgreSQL of ``LIAISON_TEST_POSTGRESQL``: its users sign in with their
old passwords, its certificates keep their serials and revocation times, two nodes opening at
once import once, a table that holds anything is never imported into, and a bad file refuses
the open with nothing imported. Skipped with the reason without PostgreSQL, failed under
LIAISON_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from liaison.identity import db_import
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki
from liaison.identity.db_import import ImportRefused, read_local_identity
from liaison.identity.issue import issue_client_cert, list_issued
from liaison.identity.revocation import RevocationCache, current_crl, revoke
from liaison.identity.users import UserDirectory
from tests.unit.storage.storage_support import POSTGRESQL_URL, postgresql_schema

from .pki_helpers import PUBLIC_HOST

PASSWORD = "correct horse battery"
NOW = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)
# Bound on the threads of the concurrent-open test (each opens one IdentityDb).
OPEN_TIMEOUT_S = 30.0


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A fresh, migrated schema (identity tables empty), dropped after the test."""
    from liaison.storage.postgresql import PostgresStore

    async with postgresql_schema() as name:
        store = await PostgresStore.open(POSTGRESQL_URL, schema=name)  # migrates
        await store.close()
        yield name


@pytest.fixture
def opened() -> Iterator[Callable[..., Any]]:
    """``opened(schema, folder=None)``: an IdentityDb on ``schema`` importing from ``folder``
    (its users.json and pki/); every one is closed after the test."""
    from liaison.identity.shared_db import IdentityDb

    dbs: list[IdentityDb] = []

    def open_db(schema: str, folder: Path | None = None) -> IdentityDb:
        local = (
            None if folder is None else read_local_identity(folder / "users.json", folder / "pki")
        )
        db = IdentityDb.open(POSTGRESQL_URL, where="test", schema=schema, local=local)
        dbs.append(db)
        return db

    yield open_db
    for db in dbs:
        db.close()


def old_users(folder: Path) -> str:
    """A users.json as the file backend writes it: alice (password, groups, profile), bob (an
    enrollment token, revoked later by the caller if it wishes). Returns bob's token."""
    users = UserDirectory.load(folder / "users.json")
    users.add_user(
        "alice",
        "Blue",
        in_groups=["Cyan", "Ops"],
        out_groups=["Cyan"],
        profile="secret",
        password=PASSWORD,
        now=NOW,
    )
    users.add_user("bob", "Red", groups=["Red"], now=NOW)
    return users.issue_token("bob", 3600, NOW)


def old_pki(folder: Path) -> tuple[ServerPki, int, int]:
    """A file-backed CA with two issued certificates, the second revoked (CRL re-signed).
    Returns (pki, live serial, revoked serial)."""
    pki = ensure_server_pki(folder, public_host=PUBLIC_HOST, now=NOW)
    live = issue_client_cert(pki, common_name="alice", org="Blue", now=NOW).serial
    gone = issue_client_cert(pki, common_name="bob", org="Red", now=NOW).serial
    assert revoke(pki, serial=gone, now=NOW + dt.timedelta(hours=1)) == [gone]
    return pki, live, gone


def test_users_are_imported_and_sign_in_with_their_old_passwords(
    schema: str, opened: Callable[..., Any], tmp_path: Path
) -> None:
    token = old_users(tmp_path)
    before = json.loads((tmp_path / "users.json").read_bytes())["users"]
    db = opened(schema, tmp_path)
    assert db.imported.users == 2 and db.imported.users_from == tmp_path / "users.json"
    assert db.imported.certs == 0 and db.imported.crl_number is None
    users = UserDirectory.in_database(db)
    alice = users.verify_password("alice", PASSWORD)
    assert alice is not None and alice.org == "Blue" and alice.profile == "secret"
    assert alice.in_groups == ("Cyan", "Ops") and alice.out_groups == ("Cyan",)
    assert alice.created_at == NOW
    assert users.verify_password("alice", "wrong password here") is None
    # bob's enrollment token (only its SHA-256 was in the file) still authenticates him.
    assert users.authenticate_enrollment("bob", token, NOW + dt.timedelta(minutes=5)) is not None
    # Every record exactly as the file held it.
    assert sorted(db.users().values(), key=lambda r: r["name"]) == before
    # Another node (no file of its own) sees them.
    other = UserDirectory.in_database(opened(schema))
    assert [u.name for u in other.list_users()] == ["alice", "bob"]


def test_certificates_keep_serials_revocations_and_the_crl(
    schema: str, opened: Callable[..., Any], tmp_path: Path
) -> None:
    old, live, gone = old_pki(tmp_path)
    index_before = list_issued(old)
    crl_before = x509.load_pem_x509_crl(old.crl.read_bytes())
    number_before = crl_before.extensions.get_extension_for_class(x509.CRLNumber).value
    db = opened(schema, tmp_path)
    assert (db.imported.certs, db.imported.revoked) == (2, 1)
    assert db.imported.crl_number == number_before.crl_number
    pki = ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, db=db, now=NOW)
    assert list_issued(pki) == index_before  # serials, order, times, revoked_at: all kept
    assert RevocationCache(pki).revoked() == frozenset({gone})
    crl = x509.load_pem_x509_crl(current_crl(pki) or b"")
    assert crl.get_revoked_certificate_by_serial_number(gone) is not None
    assert crl.get_revoked_certificate_by_serial_number(live) is None
    # The imported CRL was current and complete: served as it was, not signed again.
    assert current_crl(pki, der=True) == crl_before.public_bytes(serialization.Encoding.DER)
    # A node whose folder has the same CA serves the same and refuses the revoked serial.
    other_dir = tmp_path / "other"
    (other_dir / "pki").mkdir(parents=True)
    for name in ("ca.pem", "ca.key"):
        shutil.copy(tmp_path / "pki" / name, other_dir / "pki" / name)
    other = ensure_server_pki(other_dir, public_host=PUBLIC_HOST, db=opened(schema), now=NOW)
    assert RevocationCache(other).revoked() == frozenset({gone})
    # Revoking after the import continues the CRL numbers.
    assert revoke(other, serial=live, now=NOW + dt.timedelta(hours=2)) == [live]
    after = x509.load_pem_x509_crl(current_crl(other) or b"")
    assert after.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == (
        number_before.crl_number + 1
    )
    assert {e.serial_number for e in after} == {live, gone}


def test_an_imported_crl_missing_a_revocation_is_signed_again(
    schema: str, opened: Callable[..., Any], tmp_path: Path
) -> None:
    # The CRL saved before the revocation, put back beside the index (a backup restored
    # half-way): signed by the right CA, but without the revoked certificate.
    pki = ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, now=NOW)
    gone = issue_client_cert(pki, common_name="bob", org="Red", now=NOW).serial
    before = pki.crl.read_bytes()
    revoke(pki, serial=gone, now=NOW)
    pki.crl.write_bytes(before)
    db = opened(schema, tmp_path)
    assert db.imported.crl_number == 2  # the index's number: the next CRL signed is 3
    shared = ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, db=db, now=NOW)
    crl = x509.load_pem_x509_crl(current_crl(shared) or b"")
    assert crl.get_revoked_certificate_by_serial_number(gone) is not None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3


def test_two_nodes_opening_at_once_import_once(
    schema: str, opened: Callable[..., Any], tmp_path: Path
) -> None:
    # Two data folders with different users: exactly one folder's users end up in the table.
    folders = [tmp_path / "a", tmp_path / "b"]
    for i, folder in enumerate(folders):
        users = UserDirectory.load(folder / "users.json")
        for n in range(3):
            users.add_user(f"user{i}-{n}", f"Org{i}", password=PASSWORD, now=NOW)
    barrier = threading.Barrier(len(folders), timeout=OPEN_TIMEOUT_S)
    results: dict[int, Any] = {}

    def start(i: int) -> None:
        barrier.wait()
        try:
            results[i] = opened(schema, folders[i])
        except Exception as exc:  # reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(folders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(OPEN_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads)
    reports = [results[i].imported for i in range(len(folders))]
    assert sorted(r.users for r in reports) == [0, 3]
    winner = next(i for i, r in enumerate(reports) if r.users)
    expected = {f"user{winner}-{n}" for n in range(3)}
    for i in range(len(folders)):
        assert set(results[i].users()) == expected


def test_nothing_is_imported_into_tables_that_hold_anything(
    schema: str, opened: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The database already has a user and a certificate (made through another node).
    first = tmp_path / "first"
    UserDirectory.load(first / "users.json").add_user("carol", "Green", now=NOW)
    old_pki(first)
    db = opened(schema, first)
    assert (db.imported.users, db.imported.certs) == (1, 2)
    # A later node's folder holds other users and certificates: ignored, with a warning.
    later = tmp_path / "later"
    old_users(later)
    old_pki(later)
    caplog.set_level(logging.INFO, logger="liaison.identity.shared_db")
    db2 = opened(schema, later)
    assert (db2.imported.users, db2.imported.certs, db2.imported.crl_number) == (0, 0, None)
    assert set(db2.users()) == {"carol"}
    assert len(db2.cert_items()) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2 users the database lacks (alice, bob)" in m for m in warnings), warnings
    assert any(
        "2 certificates the database lacks" in m and "1 of them revoked" in m for m in warnings
    ), warnings
    # The same folder opened again: still nothing imported, no user changed.
    assert opened(schema, first).imported.users == 0
    assert [u.name for u in UserDirectory.in_database(db).list_users()] == ["carol"]


def bad_users(folder: Path, doc: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = doc if isinstance(doc, str) else json.dumps(doc)
    (folder / "users.json").write_text(text)


def good_user(**changes: Any) -> dict[str, Any]:
    users = UserDirectory.in_memory()
    users.add_user("dave", "Blue", password=PASSWORD, now=NOW)
    from liaison.identity.users import _user_to_json

    user = users.get("dave")
    assert user is not None
    return {**_user_to_json(user), **changes}


HOSTILE_USERS: list[tuple[str, Any, str]] = [
    ("not json", "{not json", "not valid JSON"),
    ("wrong version", {"version": 9, "users": []}, "not a users file of version 1"),
    ("users not a list", {"version": 1, "users": {}}, "'users' must be a list"),
    ("bad name", {"version": 1, "users": [good_user(name="../x")]}, "user name"),
    ("name not text", {"version": 1, "users": [good_user(name=7)]}, "name must be a string"),
    (
        "costly hash",
        {"version": 1, "users": [good_user(password_hash="scrypt$1073741824$8$1$AAAA$AAAA")]},
        "scrypt parameters out of range",
    ),
    (
        "twice",
        {"version": 1, "users": [good_user(), good_user()]},
        "'dave' is listed twice",
    ),
    (
        "control character",
        {"version": 1, "users": [good_user(org="Blue\x00")]},
        "control characters",
    ),
    (
        "token not a digest",
        {
            "version": 1,
            "users": [
                good_user(
                    tokens=[
                        {
                            "token_sha256": "plain-token",
                            "created_at": NOW.isoformat(),
                            "expires_at": NOW.isoformat(),
                            "used_at": None,
                        }
                    ]
                )
            ],
        },
        "64 hex digits",
    ),
    ("bad time", {"version": 1, "users": [good_user(created_at="yesterday")]}, "malformed user"),
]


@pytest.mark.parametrize(
    ("doc", "says"), [(d, s) for _, d, s in HOSTILE_USERS], ids=[i for i, _, _ in HOSTILE_USERS]
)
def test_a_bad_users_file_refuses_the_open_and_nothing_is_imported(
    schema: str, opened: Callable[..., Any], tmp_path: Path, doc: Any, says: str
) -> None:
    old_pki(tmp_path)  # a good index beside it: not imported either (one transaction)
    bad_users(tmp_path, doc)
    with pytest.raises(ImportRefused, match=r"users\.json") as caught:
        opened(schema, tmp_path)
    assert says in str(caught.value)
    db = opened(schema)  # without import: the tables are as empty as before
    assert db.users() == {} and db.cert_items() == [] and db.crl()[1] is None


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (lambda d: d.update(version=2), "not a certificate index of version 1"),
        (lambda d: d["certs"][0].update(serial="zz"), "is not 1-40 hex digits"),
        (lambda d: d["certs"][0].update(serial="1" * 41), "is not 1-40 hex digits"),
        (lambda d: d["certs"][1].update(revoked_at="2026-11-02T10:30:00"), "without timezone"),
        (lambda d: d["certs"][1].update(fingerprint_sha256="ab"), "64 lowercase hex"),
        (lambda d: d["certs"].append(dict(d["certs"][0])), "is listed twice"),
        (lambda d: d.update(crl_number=-1), "'crl_number' must be"),
    ],
    ids=["version", "serial", "long serial", "naive time", "fingerprint", "twice", "crl number"],
)
def test_a_bad_certificate_index_refuses_the_open(
    schema: str,
    opened: Callable[..., Any],
    tmp_path: Path,
    spoil: Callable[[dict[str, Any]], None],
    says: str,
) -> None:
    old_users(tmp_path)  # good users beside it: not imported either
    pki, _live, _gone = old_pki(tmp_path)
    doc = json.loads(pki.index.read_bytes())
    spoil(doc)
    pki.index.write_text(json.dumps(doc))
    with pytest.raises(ImportRefused, match=r"issued\.json") as caught:
        opened(schema, tmp_path)
    assert says in str(caught.value)
    db = opened(schema)
    assert db.users() == {} and db.cert_items() == []


def test_a_corrupt_crl_or_an_oversized_file_is_refused(
    schema: str, opened: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki, _live, gone = old_pki(tmp_path)
    pki.crl.write_bytes(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    with pytest.raises(ImportRefused, match=r"crl\.pem is not a CRL"):
        opened(schema, tmp_path)
    pki.crl.unlink()  # as the message says: without it a new CRL is signed from the index
    pki.crl_der.unlink()
    old_users(tmp_path)
    monkeypatch.setattr(db_import, "MAX_IMPORT_BYTES", 256)
    with pytest.raises(ImportRefused, match=r"users\.json is larger than 256 bytes"):
        opened(schema, tmp_path)
    monkeypatch.undo()
    db = opened(schema, tmp_path)
    assert (db.imported.users, db.imported.certs, db.imported.crl_number) == (2, 2, None)
    signed = ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, db=db, now=NOW)
    crl = x509.load_pem_x509_crl(current_crl(signed) or b"")
    assert crl.get_revoked_certificate_by_serial_number(gone) is not None


def test_a_bad_file_is_only_a_warning_once_the_tables_are_filled(
    schema: str, opened: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    UserDirectory.in_database(opened(schema)).add_user("erin", "Blue", now=NOW)
    bad_users(tmp_path, "{not json")
    caplog.set_level(logging.WARNING, logger="liaison.identity.shared_db")
    db = opened(schema, tmp_path)
    assert db.imported.users == 0 and set(db.users()) == {"erin"}
    assert any("not valid JSON" in r.getMessage() for r in caplog.records)
