"""``liaison oauth keys`` and ``liaison oauth rotate``: the keys that sign bearer tokens.

Rotation makes a new signing key at once, in the data folder the server uses; the running server
signs with it from its next token on (it re-reads the keyring when the file changes). The previous
key keeps verifying the tokens it signed until they have all expired (the longer of
``tokens.access_ttl_s`` and ``tokens.refresh_ttl_s`` after the rotation), then it is dropped at a
later rotation. docs/api.md, "Tokens". With a PostgreSQL storage the keyring is the database's
(identity/tokens.py DbKeyring): a rotation there is seen by every node within a second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from liaison.admin import add_config_args, load_config


def _when(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_keys(args: argparse.Namespace) -> int:
    # Imported here: PyJWT is not needed by every other command's start-up.
    from liaison.identity.tokens import open_keyring

    cfg = load_config(args)
    ring, _ = open_keyring(cfg)
    keep_s = max(cfg.token_access_ttl_s, cfg.token_refresh_ttl_s)
    for key in ring.all_keys():
        if key.retired is None:
            state = "active (signs new tokens)"
        elif time.time() < key.retired + keep_s:
            state = f"verifying until {_when(key.retired + keep_s)}"
        else:
            state = "expired (dropped at the next rotation)"
        print(f"{key.kid}  created {_when(key.created)}  {state}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from liaison.identity.tokens import open_keyring

    cfg = load_config(args)
    ring, _ = open_keyring(cfg)
    keep_s = max(cfg.token_access_ttl_s, cfg.token_refresh_ttl_s)
    now = int(time.time())
    new = ring.rotate(now, keep_s)
    print(
        f"new signing key {new.kid}; the previous key verifies its tokens until "
        f"{_when(now + keep_s)}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``oauth keys`` and ``oauth rotate`` to the ``liaison`` command."""
    p = subparsers.add_parser("oauth", help="the keys that sign bearer tokens (/oauth/token)")
    sub = p.add_subparsers(dest="oauth_command", required=True)
    k = sub.add_parser("keys", help="list the signing keys and how long each still verifies")
    add_config_args(k)
    k.set_defaults(func=cmd_keys)
    r = sub.add_parser("rotate", help="sign with a new key; the old one verifies until expiry")
    add_config_args(r)
    r.set_defaults(func=cmd_rotate)
