"""What a node's data folder holds of users and issued certificates, read and checked for the
one-time import into PostgreSQL's shared identity tables (identity/shared_db.py,
docs/deployment.md "Users, certificates and sign-ins (PostgreSQL)").

An operator who switches to ``storage.backend = "postgresql://..."`` keeps the users of
``users.json`` (password hashes, organisation, groups, profile, enrollment tokens, certificate
serials, revoked) and the index of issued certificates ``pki/issued.json`` (serials, revoked
times) with the CRL ``pki/crl.pem``: the first node that opens the empty tables imports them.
This module only reads and checks; the transaction is shared_db's.

Every record is parsed and checked as strictly as the server's own writes: one bad record
refuses the whole file (the error names the file and the record), so a server never starts
half-imported. Files are read at most MAX_IMPORT_BYTES each.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from liaison.errors import PkiError
from liaison.identity.issue import iso_utc, record_from_json
from liaison.identity.users import (
    MAX_GROUP_CHARS,
    MAX_ORG_CHARS,
    MAX_TOKENS_PER_USER,
    _check_text,
    _parse_hash,
    _user_from_json,
    _user_to_json,
    check_username,
)

# The largest users.json, pki/issued.json or pki/crl.pem read for the import (each). A user is
# under 2 KiB with eight tokens, an index item about 400 bytes: 64 MiB is tens of thousands of
# users or over a hundred thousand certificates, far past a deployment's size, and bounds what
# a hostile file can make the server hold.
MAX_IMPORT_BYTES = 64 * 1024 * 1024
# The users file and the index formats this code reads (identity/users.py, identity/issue.py).
USERS_FILE_VERSION = 1
INDEX_VERSION = 1
# How many names a log line about a difference shows (the count is always given).
MAX_NAMES_LOGGED = 10

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SERIAL = re.compile(r"[0-9a-f]{1,40}")  # RFC 5280 4.1.2.2: at most 20 octets


class ImportRefused(PkiError):
    """A file of the data folder cannot be imported (unreadable, too large, or a bad record)."""


@dataclass(frozen=True, slots=True)
class LocalUsers:
    """The users of a users file, each as the ``identity_users`` table stores it."""

    path: Path
    records: dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LocalCerts:
    """The issued-certificate index (items as ``identity_certs`` stores them, oldest first) and
    the CRL found beside it (None when there is no ``crl.pem``)."""

    path: Path
    items: list[dict[str, Any]]
    crl_number: int
    crl_path: Path
    crl_pem: bytes | None = None
    crl_der: bytes | None = None


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """What one data folder holds, read before the database is opened. A part that is absent
    is None; a part that could not be read keeps its error, raised only if it is to be imported
    (an unreadable file the database no longer needs is a warning, not a refusal)."""

    users: LocalUsers | None = None
    users_error: ImportRefused | None = None
    certs: LocalCerts | None = None
    certs_error: ImportRefused | None = None


@dataclass(slots=True)
class ImportReport:
    """What one import wrote (zero counts: nothing of that kind was imported)."""

    users: int = 0
    users_from: Path | None = None
    certs: int = 0
    revoked: int = 0
    certs_from: Path | None = None
    crl_number: int | None = None  # the CRL imported, when one was
    crl_from: Path | None = None

    @property
    def anything(self) -> bool:
        return bool(self.users or self.certs or self.crl_number is not None)


def _read_json(path: Path) -> Any | None:
    """The JSON document at ``path``; None when there is no such file."""
    raw = _read_bounded(path)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ImportRefused(f"{path} is not valid JSON: {exc}") from exc


def _read_bounded(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_IMPORT_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ImportRefused(f"{path} cannot be read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_IMPORT_BYTES:
        raise ImportRefused(f"{path} is larger than {MAX_IMPORT_BYTES} bytes")
    return raw


def _checked_user(item: Any) -> dict[str, Any]:
    """One user of users.json as the table stores it (identity/users.py's JSON form), checked
    as ``liaison user add`` checks its input; ValueError names what is wrong."""
    if not isinstance(item, dict):
        raise ValueError("a user must be a JSON object")
    for key in ("name", "org"):
        if not isinstance(item.get(key), str):
            raise ValueError(f"{key} must be a string")
    for key in ("tokens", "cert_serials", "in_groups", "out_groups"):
        if not isinstance(item.get(key, []), list):
            raise ValueError(f"{key} must be a list")
    try:
        user = _user_from_json(item)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed user: {exc!r}") from exc
    check_username(user.name)
    _check_text(user.org, "organisation", MAX_ORG_CHARS)
    if user.profile is not None:
        _check_text(user.profile, "profile", MAX_GROUP_CHARS)
    for group in (*user.in_groups, *user.out_groups):
        _check_text(group, "group", MAX_GROUP_CHARS)
    if user.password_hash is not None:
        _parse_hash(user.password_hash)  # a tampered cost is refused here, not at each login
    if len(user.tokens) > MAX_TOKENS_PER_USER:
        raise ValueError(f"more than {MAX_TOKENS_PER_USER} enrollment tokens")
    for token in user.tokens:
        if not _HEX64.fullmatch(token.token_sha256):
            raise ValueError("an enrollment token's token_sha256 is not 64 hex digits")
    return _user_to_json(user)


def read_users(path: Path) -> LocalUsers | None:
    """The users of the users file at ``path`` (None: no file). ImportRefused names the file
    and, for a bad user, its place and name."""
    doc = _read_json(path)
    if doc is None:
        return None
    if not isinstance(doc, dict) or doc.get("version") != USERS_FILE_VERSION:
        raise ImportRefused(f"{path}: not a users file of version {USERS_FILE_VERSION}")
    items = doc.get("users")
    if not isinstance(items, list):
        raise ImportRefused(f"{path}: 'users' must be a list")
    records: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        try:
            record = _checked_user(item)
        except ValueError as exc:
            raise ImportRefused(f"{path}: user {i} ({name!r}) refused: {exc}") from exc
        if record["name"] in records:
            raise ImportRefused(f"{path}: user {record['name']!r} is listed twice")
        records[record["name"]] = record
    return LocalUsers(path, records)


def _checked_item(item: Any) -> dict[str, Any]:
    """One index item as the table stores it (identity/issue.py's form); the times kept to the
    microsecond (as UTC), the serial as lowercase hex."""
    if not isinstance(item, dict):
        raise ValueError("an index item must be a JSON object")
    serial = item.get("serial")
    if not isinstance(serial, str) or not _SERIAL.fullmatch(serial.lower()):
        raise ValueError(f"serial {serial!r} is not 1-40 hex digits")
    for key in ("cn", "fingerprint_sha256", "issuer_sha256", "not_before", "not_after"):
        if not isinstance(item.get(key), str):
            raise ValueError(f"{key} must be a string")
    if item.get("revoked_at") is not None and not isinstance(item["revoked_at"], str):
        raise ValueError("revoked_at must be a string or null")
    try:
        rec = record_from_json(item)
    except PkiError as exc:
        raise ValueError(str(exc)) from exc
    for key in ("fingerprint_sha256", "issuer_sha256"):
        if not _HEX64.fullmatch(item[key]):
            raise ValueError(f"{key} is not 64 lowercase hex digits")
    if len(rec.common_name) > 64:  # RFC 5280 ub-common-name
        raise ValueError("cn is longer than 64 characters")
    return {
        "serial": format(rec.serial, "x"),
        "cn": rec.common_name,
        "fingerprint_sha256": rec.fingerprint_sha256,
        "issuer_sha256": rec.issuer_sha256,
        "not_before": iso_utc(rec.not_before),
        "not_after": iso_utc(rec.not_after),
        "revoked_at": iso_utc(rec.revoked_at) if rec.revoked_at is not None else None,
    }


def read_certs(pki_dir: Path) -> LocalCerts | None:
    """The index ``pki_dir/issued.json`` and the CRL ``pki_dir/crl.pem`` (None: no index)."""
    path = pki_dir / "issued.json"
    doc = _read_json(path)
    if doc is None:
        return None
    if not isinstance(doc, dict) or doc.get("version") != INDEX_VERSION:
        raise ImportRefused(f"{path}: not a certificate index of version {INDEX_VERSION}")
    certs = doc.get("certs")
    number = doc.get("crl_number", 0)
    if not isinstance(certs, list):
        raise ImportRefused(f"{path}: 'certs' must be a list")
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise ImportRefused(f"{path}: 'crl_number' must be a whole number of at least 0")
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(certs):
        try:
            checked = _checked_item(item)
        except ValueError as exc:
            serial = item.get("serial") if isinstance(item, dict) else None
            raise ImportRefused(f"{path}: certificate {i} ({serial!r}) refused: {exc}") from exc
        if checked["serial"] in seen:
            raise ImportRefused(f"{path}: serial {checked['serial']} is listed twice")
        seen.add(checked["serial"])
        items.append(checked)
    crl_path = pki_dir / "crl.pem"
    raw = _read_bounded(crl_path)
    if raw is None:
        return LocalCerts(path, items, number, crl_path)
    try:
        crl = x509.load_pem_x509_crl(raw)
        ext = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise ImportRefused(
            f"{crl_path} is not a CRL with a CRL number ({exc}): restore it, or remove crl.pem"
            " and crl.der and a new CRL is signed from the index"
        ) from exc
    return LocalCerts(
        path,
        items,
        max(number, ext),
        crl_path,
        crl.public_bytes(serialization.Encoding.PEM),
        crl.public_bytes(serialization.Encoding.DER),
    )


def read_local_identity(users_file: Path, pki_dir: Path) -> LocalIdentity:
    """Read (and check) both parts; an error is kept with its part, not raised."""
    users: LocalUsers | None = None
    users_error: ImportRefused | None = None
    certs: LocalCerts | None = None
    certs_error: ImportRefused | None = None
    try:
        users = read_users(users_file)
    except ImportRefused as exc:
        users_error = exc
    try:
        certs = read_certs(pki_dir)
    except ImportRefused as exc:
        certs_error = exc
    return LocalIdentity(users, users_error, certs, certs_error)


_COMPARED = ("org", "profile", "in_groups", "out_groups", "password_hash", "revoked")


def users_differing(
    local: LocalUsers, stored: dict[str, dict[str, Any]]
) -> tuple[list[str], list[str]]:
    """(names the file has and the database lacks, names whose organisation, profile, groups,
    password or revoked differ); tokens, serials and creation times are not compared."""
    missing = sorted(n for n in local.records if n not in stored)
    differ = sorted(
        n
        for n, rec in local.records.items()
        if n in stored and any(rec.get(k) != stored[n].get(k) for k in _COMPARED)
    )
    return missing, differ


def names(items: list[str]) -> str:
    """At most MAX_NAMES_LOGGED names for a log line."""
    shown = ", ".join(items[:MAX_NAMES_LOGGED])
    more = len(items) - MAX_NAMES_LOGGED
    return f"{shown}, and {more} more" if more > 0 else shown
