"""The user directory: scrypt hashes, tokens, the users file and its sharing between processes."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liaison.errors import StorageError
from liaison.identity import users
from liaison.model.principal import ANON_GROUP, PrincipalKind

from .pki_helpers import NOW

# Cheap parameters for the pure-function properties; the directory itself uses the defaults.
FAST = users.ScryptParams(n=2**4, r=1, p=1)
PASSWORD = "correct horse battery"


# --- pure hashing functions -------------------------------------------------------------------


def test_default_hash_verifies_and_records_its_parameters() -> None:
    encoded = users.hash_password(PASSWORD)
    scheme, n, r, p, _salt, _digest = encoded.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", users.SCRYPT_N, users.SCRYPT_R, 1)
    assert users.verify_password_hash(PASSWORD, encoded)
    assert not users.verify_password_hash(PASSWORD + "!", encoded)
    assert not users.needs_rehash(encoded)
    assert users.needs_rehash(users.hash_password(PASSWORD, params=FAST))


def test_salts_differ_per_hash() -> None:
    a = users.hash_password(PASSWORD, params=FAST)
    b = users.hash_password(PASSWORD, params=FAST)
    assert a != b
    assert a.split("$")[4] != b.split("$")[4]
    assert users.hash_password(PASSWORD, salt=b"s" * 16, params=FAST) == users.hash_password(
        PASSWORD, salt=b"s" * 16, params=FAST
    )


@settings(max_examples=40, deadline=None)
@given(password=st.text(min_size=0, max_size=64), other=st.text(min_size=0, max_size=64))
def test_hash_accepts_only_its_password(password: str, other: str) -> None:
    encoded = users.hash_password(password, params=FAST)
    assert users.verify_password_hash(password, encoded)
    assert users.verify_password_hash(other, encoded) == (other == password)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain",
        "bcrypt$2$8$1$AAAA$AAAA",
        "scrypt$16$1$1$not-base64!$AAAA",
        "scrypt$1048576000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",  # a tampered, ruinous N
        "scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",  # N not a power of two
    ],
)
def test_malformed_hashes_never_verify(encoded: str) -> None:
    assert not users.verify_password_hash(PASSWORD, encoded)
    assert users.needs_rehash(encoded)


def test_token_hash_is_sha256_hex() -> None:
    token = users.new_token()
    assert len(token) >= 43  # 32 bytes in URL-safe base64
    digest = users.hash_token(token)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest != users.hash_token(token + "x")


# --- the directory --------------------------------------------------------------------------


def test_add_get_list_and_principal() -> None:
    d = users.UserDirectory.in_memory()
    alice = d.add_user("alice", "Blue", groups=["Cyan", "Ops"], profile="default", now=NOW)
    d.add_user("bob", "Red", in_groups=["Red-in"], out_groups=["Red-out", "Shared"])
    carol = d.add_user("carol", "Blue")
    assert d.get("alice") == alice
    assert d.get("nobody") is None
    assert [u.name for u in d.list_users()] == ["alice", "bob", "carol"]
    assert len(d) == 3
    assert alice.created_at == NOW
    assert alice.in_groups == alice.out_groups == ("Cyan", "Ops")
    p = alice.principal()
    assert p.kind is PrincipalKind.USER
    assert p.in_groups == frozenset({"Cyan", "Ops"}) and p.org == "Blue"
    bob = d.get("bob")
    assert bob is not None
    assert bob.principal().out_groups == frozenset({"Red-out", "Shared"})
    # no groups: TAK Server's __ANON__ assignment
    assert carol.principal().in_groups == frozenset({ANON_GROUP})


@pytest.mark.parametrize(
    "name", ["", "-alice", "al ice", "al:ice", "al/ice", "a" * 65, "ålice", "alice\n"]
)
def test_bad_user_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="user name"):
        users.UserDirectory.in_memory().add_user(name, "Blue")


def test_duplicates_and_bad_fields_are_refused() -> None:
    d = users.UserDirectory.in_memory()
    d.add_user("alice", "Blue")
    with pytest.raises(ValueError, match="already exists"):
        d.add_user("alice", "Red")
    with pytest.raises(ValueError, match="organisation"):
        d.add_user("bob", "")
    with pytest.raises(ValueError, match="group name"):
        d.add_user("bob", "Blue", groups=["ok", "bad\x00"])
    with pytest.raises(ValueError, match="at least"):
        d.add_user("bob", "Blue", password="short")
    with pytest.raises(KeyError):
        d.set_password("nobody", PASSWORD)


def test_verify_password() -> None:
    d = users.UserDirectory.in_memory()
    d.add_user("alice", "Blue", password=PASSWORD)
    d.add_user("nopass", "Blue")
    user = d.verify_password("alice", PASSWORD)
    assert user is not None and user.name == "alice"
    assert d.verify_password("alice", PASSWORD.upper()) is None
    assert d.verify_password("nobody", PASSWORD) is None
    assert d.verify_password("nopass", "") is None
    assert d.verify_password("alice", "x" * (users.MAX_PASSWORD_CHARS + 1)) is None
    d.set_password("alice", "another long password")
    assert d.verify_password("alice", PASSWORD) is None
    assert d.verify_password("alice", "another long password") is not None


def test_revoked_user_cannot_log_in_or_redeem() -> None:
    d = users.UserDirectory.in_memory()
    d.add_user("alice", "Blue", password=PASSWORD)
    token = d.issue_token("alice", 3600, NOW)
    d.add_cert_serial("alice", 0xABC)
    d.add_cert_serial("alice", 0xABC)  # recorded once
    assert d.revoke_user("alice") == (0xABC,)
    assert d.verify_password("alice", PASSWORD) is None
    assert not d.redeem_token("alice", token, NOW)
    with pytest.raises(ValueError, match="revoked"):
        d.issue_token("alice", 3600, NOW)
    d.reinstate_user("alice")
    assert d.verify_password("alice", PASSWORD) is not None
    assert not d.redeem_token("alice", token, NOW)  # tokens were dropped on revocation


def test_tokens_are_single_use() -> None:
    d = users.UserDirectory.in_memory()
    d.add_user("alice", "Blue")
    d.add_user("bob", "Blue")
    token = d.issue_token("alice", 600, NOW)
    assert not d.redeem_token("bob", token, NOW)  # another user's token
    assert not d.redeem_token("alice", token + "x", NOW)
    assert d.redeem_token("alice", token, NOW + dt.timedelta(seconds=1))
    assert not d.redeem_token("alice", token, NOW + dt.timedelta(seconds=2))
    assert not d.redeem_token("nobody", token, NOW)


def test_tokens_expire() -> None:
    d = users.UserDirectory.in_memory()
    d.add_user("alice", "Blue")
    token = d.issue_token("alice", 600, NOW)
    assert not d.redeem_token("alice", token, NOW + dt.timedelta(seconds=600))
    fresh = d.issue_token("alice", 600, NOW)
    assert d.redeem_token("alice", fresh, NOW + dt.timedelta(seconds=599))


def test_token_lifetime_bounds_and_count() -> None:
    d = users.UserDirectory.in_memory()
    d.add_user("alice", "Blue")
    with pytest.raises(ValueError, match="lifetime"):
        d.issue_token("alice", 1, NOW)
    with pytest.raises(ValueError, match="lifetime"):
        d.issue_token("alice", users.MAX_TOKEN_TTL_S + 1, NOW)
    tokens = [d.issue_token("alice", 600, NOW) for _ in range(users.MAX_TOKENS_PER_USER + 2)]
    alice = d.get("alice")
    assert alice is not None and len(alice.tokens) == users.MAX_TOKENS_PER_USER
    assert not d.redeem_token("alice", tokens[0], NOW)  # the oldest were dropped
    assert d.redeem_token("alice", tokens[-1], NOW)


def test_authenticate_enrollment_takes_password_or_token() -> None:
    d = users.UserDirectory.in_memory()
    d.add_user("alice", "Blue", password=PASSWORD)
    assert d.authenticate_enrollment("alice", PASSWORD, NOW) is not None
    token = d.issue_token("alice", 600, NOW)
    user = d.authenticate_enrollment("alice", token, NOW)
    assert user is not None and user.name == "alice"
    # One enrollment is several calls with the same credentials: showing a token does not use it.
    assert d.authenticate_enrollment("alice", token, NOW) is not None
    assert d.redeem_token("alice", token, NOW)  # signing a certificate uses it up
    assert not d.redeem_token("alice", token, NOW)
    # ...after which it still authenticates the client's follow-up calls for a short while only.
    after = NOW + dt.timedelta(seconds=users.TOKEN_AFTER_USE_S - 1)
    assert d.authenticate_enrollment("alice", token, after) is not None
    later = NOW + dt.timedelta(seconds=users.TOKEN_AFTER_USE_S)
    assert d.authenticate_enrollment("alice", token, later) is None
    assert d.authenticate_enrollment("alice", "wrong", NOW) is None


def test_naive_times_are_refused() -> None:
    d = users.UserDirectory.in_memory()
    d.add_user("alice", "Blue")
    with pytest.raises(ValueError, match="timezone"):
        d.issue_token("alice", 600, dt.datetime(2026, 1, 1))


# --- the file -------------------------------------------------------------------------------


def test_users_file_is_private_and_holds_no_secrets(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    d = users.UserDirectory.load(path)
    assert not path.exists()  # nothing written until the first change
    d.add_user("alice", "Blue", password=PASSWORD, groups=["Cyan"])
    token = d.issue_token("alice", 600, NOW)
    d.add_cert_serial("alice", 2**158 + 5)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert PASSWORD not in text
    assert token not in text
    assert users.hash_token(token) in text
    doc = json.loads(text)
    assert doc["version"] == 1
    assert doc["users"][0]["cert_serials"] == [format(2**158 + 5, "x")]
    assert not list(tmp_path.glob(".users.json.*.tmp"))  # no temp files left behind


def test_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    d = users.UserDirectory.load(path)
    d.add_user("alice", "Blue", password=PASSWORD, groups=["Cyan"], profile="p1", now=NOW)
    token = d.issue_token("alice", 600, NOW)
    d.add_cert_serial("alice", 77)
    again = users.UserDirectory.load(path)
    assert again.get("alice") == d.get("alice")
    assert again.verify_password("alice", PASSWORD) is not None
    assert again.redeem_token("alice", token, NOW)
    # the redemption was written: a third reader cannot reuse the token
    assert not users.UserDirectory.load(path).redeem_token("alice", token, NOW)


def test_changes_from_another_process_are_seen(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    server = users.UserDirectory.load(path)
    cli = users.UserDirectory.load(path)
    cli.add_user("alice", "Blue")
    assert server.get("alice") is not None  # re-read because the file changed
    server.add_user("bob", "Blue")  # merges with alice instead of overwriting her
    assert [u.name for u in cli.list_users()] == ["alice", "bob"]
    cli.revoke_user("bob")
    bob = server.get("bob")
    assert bob is not None and bob.revoked


def test_corrupt_file_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text("{not json")
    with pytest.raises(StorageError, match="unreadable"):
        users.UserDirectory.load(path)
    path.write_text(json.dumps({"version": 99, "users": []}))
    with pytest.raises(StorageError):
        users.UserDirectory.load(path)


def test_save_writes_explicitly(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "users.json"
    d = users.UserDirectory.load(path)
    d.save()
    assert json.loads(path.read_text()) == {"version": 1, "users": []}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_failed_redemption_does_not_rewrite_the_file(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    d = users.UserDirectory.load(path)
    d.add_user("alice", "Blue")
    d.issue_token("alice", 600, NOW)
    before = path.stat().st_ino, path.read_bytes()
    assert not d.redeem_token("alice", "not-the-token", NOW)
    assert (path.stat().st_ino, path.read_bytes()) == before
