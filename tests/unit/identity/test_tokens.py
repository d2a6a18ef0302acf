"""The token keyring and TokenService with a clock the test moves: expiry, rotation windows,
single-use refresh, the 24-hour bound of a refresh chain."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from liaison import config
from liaison.errors import ConfigError, StorageError
from liaison.identity.tokens import (
    ACCESS_TYP,
    MAX_KEYS,
    MAX_SIGN_IN_S,
    REFRESH_TYP,
    Keyring,
    TokenService,
    TokenSettings,
    unverified_payload,
)

T0 = 1_800_000_000
SETTINGS = TokenSettings(access_ttl_s=600, refresh_ttl_s=8 * 3600, issuer="https://example")


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


def _service(tmp_path: Path, clock: Clock) -> TokenService:
    ring = Keyring.open(tmp_path / "tokens" / "keyring.json", now_s=T0)
    return TokenService(ring, SETTINGS, clock)


def test_keyring_file_is_private_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "tokens" / "keyring.json"
    ring = Keyring.open(path, now_s=T0)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = Keyring.open(path)
    assert [k.kid for k in again.all_keys()] == [ring.active().kid]
    path.write_text("{not json")
    with pytest.raises(StorageError):
        Keyring.open(path)


def test_access_token_expires(tmp_path: Path) -> None:
    clock = Clock()
    tokens = _service(tmp_path, clock)
    issued = tokens.issue("alice", groups=["b", "a"], roles=[])
    checked = tokens.check(issued.access_token)
    assert checked is not None and checked.sub == "alice" and checked.jti == issued.jti
    assert checked.claims["groups"] == ["a", "b"]
    clock.now += 599
    assert tokens.check(issued.access_token) is not None
    clock.now += 2
    assert tokens.check(issued.access_token) is None
    assert tokens.check("") is None and tokens.check("x" * 9000) is None
    assert tokens.check("a.b.c") is None
    # Not a header at all: not base64, not JSON, not an object, no dot.
    for junk in ("!!!.x.y", "W10.e30.x", "bm90IGpzb24.e30.x", "nodot", "\u00e9.a.b"):
        assert tokens.check(junk) is None, junk


def test_types_are_not_interchangeable(tmp_path: Path) -> None:
    tokens = _service(tmp_path, Clock())
    issued = tokens.issue("alice", groups=[], roles=[])
    assert tokens.check(issued.refresh_token) is None
    assert tokens.check(issued.access_token, REFRESH_TYP) is None
    assert tokens.check(issued.refresh_token, REFRESH_TYP) is not None
    assert tokens.check(issued.access_token, ACCESS_TYP) is not None


def test_refresh_is_single_use_and_bounded_by_the_sign_in(tmp_path: Path) -> None:
    clock = Clock()
    tokens = _service(tmp_path, clock)
    issued = tokens.issue("alice", groups=[], roles=[])
    first = tokens.redeem_refresh(issued.refresh_token)
    assert first is not None and first.auth_time == T0
    assert tokens.redeem_refresh(issued.refresh_token) is None
    # Refreshing every 7 hours: the chain ends 24 hours after the password was typed.
    current = tokens.issue("alice", groups=[], roles=[], auth_time=first.auth_time)
    redeemed = 0
    for _ in range(10):  # bounded
        clock.now += 7 * 3600
        checked = tokens.redeem_refresh(current.refresh_token)
        if checked is None:
            break
        redeemed += 1
        current = tokens.issue("alice", groups=[], roles=[], auth_time=checked.auth_time)
        exp = unverified_payload(current.refresh_token)["exp"]
        assert exp <= T0 + MAX_SIGN_IN_S
    assert redeemed == 3  # at 7, 14 and 21 hours; at 28 hours the chain has ended
    assert clock.now - T0 >= MAX_SIGN_IN_S


def test_rotation_keeps_old_keys_until_their_tokens_expire(tmp_path: Path) -> None:
    clock = Clock()
    tokens = _service(tmp_path, clock)
    ring = tokens.keyring
    old = tokens.issue("alice", groups=[], roles=[])
    old_kid = ring.active().kid
    # Another process (liaison oauth rotate) writes the file; this one re-reads it.
    other = Keyring(ring.path)
    new_key = other.rotate(T0, SETTINGS.keep_s)
    assert ring.active().kid == new_key.kid != old_kid
    new = tokens.issue("alice", groups=[], roles=[])
    assert tokens.check(old.access_token) is not None
    assert tokens.check(new.access_token) is not None
    # The old refresh token (8 hours) still verifies after its access token expired.
    clock.now = T0 + SETTINGS.keep_s - 1
    assert tokens.check(old.refresh_token, REFRESH_TYP) is not None
    # Past the keep window the old key verifies nothing, even a token claiming a longer life.
    clock.now = T0 + SETTINGS.keep_s + 1
    assert ring.verifying_key(old_kid, int(clock.now), SETTINGS.keep_s) is None
    assert tokens.check(old.refresh_token, REFRESH_TYP) is None
    # ... and the next rotation drops it from the file.
    ring.rotate(int(clock.now), SETTINGS.keep_s)
    kids = [k["kid"] for k in json.loads(ring.path.read_bytes())["keys"]]
    assert old_kid not in kids and new_key.kid in kids and len(kids) == 2


def test_keyring_holds_at_most_max_keys(tmp_path: Path) -> None:
    ring = Keyring.open(tmp_path / "keyring.json", now_s=T0)
    for i in range(MAX_KEYS + 2):
        ring.rotate(T0 + i, 10**6)
    assert len(ring.all_keys()) == MAX_KEYS
    assert [k.retired is None for k in ring.all_keys()] == [False] * (MAX_KEYS - 1) + [True]


def test_token_settings_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "liaison.toml"
    path.write_text(
        '[tokens]\naccess_ttl_s = 120\nrefresh_ttl_s = 3600\n[roles]\noperator_group = "ops"\n'
    )
    cfg = config.load(path, {}, {})
    assert (cfg.token_access_ttl_s, cfg.token_refresh_ttl_s, cfg.operator_group) == (
        120,
        3600,
        "ops",
    )
    assert config.load(None, {"LIAISON_OPERATOR_GROUP": "noc"}, {}).operator_group == "noc"
    for bad in ("59", "86401", "ten"):
        path.write_text(f"[tokens]\naccess_ttl_s = {bad!r}\n")
        with pytest.raises(ConfigError, match=r"tokens\.access_ttl_s"):
            config.load(path, {}, {})


def test_a_remembered_token_is_refused_once_its_key_is_dropped(tmp_path: Path) -> None:
    clock = Clock()
    tokens = _service(tmp_path, clock)
    issued = tokens.issue("alice", groups=[], roles=[])
    assert tokens.check(issued.access_token) is not None  # verified, and remembered
    assert tokens.check(issued.access_token) is not None  # from memory
    for i in range(MAX_KEYS):  # past MAX_KEYS rotations the first key is dropped early
        tokens.keyring.rotate(T0 + i, SETTINGS.keep_s)
    assert tokens.check(issued.access_token) is None
