"""The user directory: names, organisations, groups, password hashes and enrollment tokens.

One JSON file under the data directory (``users.json``), mode 0600, always replaced atomically.
The running server and the ``liaison user`` CLI share it: every change takes an exclusive flock,
re-reads the file, applies the change and writes it back before returning, and every read
re-loads the file when it changed on disk, so a user added from the CLI can log in at once.

Passwords are hashed with scrypt (RFC 7914) and a per-user salt; enrollment tokens are random,
single use, expire, and only their SHA-256 is stored. The ``<auth>`` stream login
(tak-protocol.md 3.3) and HTTP Basic on the enrollment port (5.3) call ``verify_password`` /
``authenticate_enrollment``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liaison.errors import StorageError
from liaison.identity.files import atomic_write, exclusive_lock
from liaison.model.principal import ANON_GROUP, Principal, PrincipalKind

if TYPE_CHECKING:
    from liaison.identity.revocation import SharedRevocations
    from liaison.identity.shared_db import IdentityDb

# --- Named choices, with their reasons ------------------------------------------------------

# scrypt cost (RFC 7914 section 2). r=8 and p=1 are the RFC's recommended block size and
# parallelism. N=2**15 makes one hash cost 32 MiB (128 * N * r bytes) and about 0.1 s on one core
# of the 2-core machines we target: an attacker with the file pays that per guess, while a burst
# of reconnecting devices after a restart (each stream <auth> login verifies once) stays within
# a few seconds of CPU and bounded memory. Parameters are stored with each hash, so raising them
# later only affects new hashes.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
# hashlib.scrypt refuses to use more than maxmem (default 32 MiB, exactly our need, plus
# overhead); allow twice the computed need.
SCRYPT_MAXMEM = 2 * 128 * SCRYPT_N * SCRYPT_R * (SCRYPT_P + 1)
# 16-byte salts and 32-byte outputs: NIST SP 800-132 asks for at least 128-bit salts; 256 bits
# of output is the SHA-256-sized digest every comparison here uses.
SALT_BYTES = 16
HASH_BYTES = 32

# Shortest password accepted. NIST SP 800-63B 5.1.1.2 sets 8 as the floor; 12 because a password
# here can enroll a certificate that then works until it expires or is revoked.
MIN_PASSWORD_CHARS = 12
# Longest password accepted: bounds the work of hashing attacker-supplied input. TAK Server reads
# the whole <auth> message within 1024 bytes (limits.MAX_AUTH_BYTES has the same spirit).
MAX_PASSWORD_CHARS = 1024

# Enrollment tokens: 32 random bytes (256 bits) shown once as URL-safe base64. With that much
# entropy a fast hash (SHA-256) is enough to store them; a slow KDF would buy nothing.
TOKEN_BYTES = 32
# Token lifetimes: at least a minute, at most thirty days (a token in a QR code printed for a
# unit's deployment should not outlive the deployment).
MIN_TOKEN_TTL_S = 60
MAX_TOKEN_TTL_S = 30 * 24 * 3600
# Live tokens kept per user; issuing more drops the oldest. Bounds the file and the work of a
# redeem (every live token is compared).
MAX_TOKENS_PER_USER = 8
# A token is used up when a certificate is signed with it (``redeem_token``), not when it is
# merely shown: every client makes several calls with the same Basic credentials (tls/config, then
# signClient; tak-protocol.md 5.3). After signing it still authenticates, for this long, the
# follow-up calls a client makes with the same credentials (ATAK fetches its enrollment profile
# right after signing, ATAK DeviceProfileOperation), but it never signs again.
TOKEN_AFTER_USE_S = 600

# Usernames become the certificate CN (RFC 5280 ub-common-name = 64), the HTTP Basic user (no
# ':'), an XML attribute in <auth>, and part of file names in data packages: a conservative set.
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MAX_ORG_CHARS = 64  # becomes the certificate O (RFC 5280 ub-organization-name)
MAX_GROUP_CHARS = 128  # TAK group names are free text; bound them all the same

_FILE_MODE = 0o600
_FILE_VERSION = 1

# Verifying against this when the user does not exist keeps the time of a failed login the same
# whether or not the name exists (no user enumeration by timing). Computed lazily, once.
_DUMMY_HASH: str | None = None


# --- Pure functions: hashing ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ScryptParams:
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def maxmem(self) -> int:
        return 2 * 128 * self.n * self.r * (self.p + 1)


DEFAULT_SCRYPT = ScryptParams()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(
    password: str, *, salt: bytes | None = None, params: ScryptParams = DEFAULT_SCRYPT
) -> str:
    """Hash a password as ``scrypt$N$r$p$<salt b64>$<hash b64>`` (self-describing)."""
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem(),
        dklen=HASH_BYTES,
    )
    return f"scrypt${params.n}${params.r}${params.p}${_b64(salt)}${_b64(digest)}"


def _parse_hash(encoded: str) -> tuple[ScryptParams, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a scrypt hash")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"malformed scrypt hash: {exc}") from exc
    # Refuse parameters a tampered file could use to make one login cost gigabytes.
    if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    return ScryptParams(n=n, r=r, p=p), salt, digest


def verify_password_hash(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; the comparison is constant-time."""
    try:
        params, salt, expected = _parse_hash(encoded)
    except ValueError:
        return False
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem(),
        dklen=len(expected),
    )
    return hmac.compare_digest(digest, expected)


def needs_rehash(encoded: str, params: ScryptParams = DEFAULT_SCRYPT) -> bool:
    """True when ``encoded`` was made with other parameters than ``params``."""
    try:
        used, _, _ = _parse_hash(encoded)
    except ValueError:
        return True
    return used != params


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """SHA-256 of a token, hex. Tokens carry 256 bits of entropy, so no salt or KDF is needed."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"password must have at most {MAX_PASSWORD_CHARS} characters")


def check_username(name: str) -> str:
    if not USERNAME_RE.fullmatch(name):
        raise ValueError(
            f"user name {name!r} must be 1-64 characters of letters, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    return name


def _check_text(value: str, what: str, limit: int) -> str:
    if not value.strip() or len(value) > limit:
        raise ValueError(f"{what} must be 1-{limit} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"{what} must not contain control characters")
    return value


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


# --- Records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentToken:
    token_sha256: str
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None = None

    def live(self, now: dt.datetime) -> bool:
        return self.used_at is None and now < self.expires_at

    def authenticates(self, now: dt.datetime) -> bool:
        """Whether the token is accepted as a credential now (live, or just used)."""
        if self.used_at is None:
            return now < self.expires_at
        return now < self.used_at + dt.timedelta(seconds=TOKEN_AFTER_USE_S)


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    name: str
    org: str
    profile: str | None = None
    in_groups: tuple[str, ...] = ()
    out_groups: tuple[str, ...] = ()
    password_hash: str | None = None
    tokens: tuple[EnrollmentToken, ...] = ()
    cert_serials: tuple[int, ...] = ()
    revoked: bool = False
    created_at: dt.datetime | None = None

    def principal(self) -> Principal:
        """This user as a Principal; no groups means __ANON__, as TAK Server does
        (TSc groups/AbstractAuthenticator.java doAnonAssignment)."""
        return Principal(
            name=self.name,
            kind=PrincipalKind.USER,
            in_groups=frozenset(self.in_groups or (ANON_GROUP,)),
            out_groups=frozenset(self.out_groups or (ANON_GROUP,)),
            org=self.org,
        )


_Change = Callable[[User], User]


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


def _time(s: Any) -> dt.datetime:
    if not isinstance(s, str):
        raise TypeError("timestamp must be a string")
    t = dt.datetime.fromisoformat(s)
    if t.tzinfo is None:
        raise ValueError(f"timestamp without timezone: {s!r}")
    return t


def _aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _user_to_json(u: User) -> dict[str, Any]:
    return {
        "name": u.name,
        "org": u.org,
        "profile": u.profile,
        "in_groups": list(u.in_groups),
        "out_groups": list(u.out_groups),
        "password_hash": u.password_hash,
        "tokens": [
            {
                "token_sha256": t.token_sha256,
                "created_at": _iso(t.created_at),
                "expires_at": _iso(t.expires_at),
                "used_at": _iso(t.used_at) if t.used_at else None,
            }
            for t in u.tokens
        ],
        # hex strings: 159-bit serials overflow JSON numbers in most tools
        "cert_serials": [format(s, "x") for s in u.cert_serials],
        "revoked": u.revoked,
        "created_at": _iso(u.created_at) if u.created_at else None,
    }


def _user_from_json(d: dict[str, Any]) -> User:
    return User(
        name=str(d["name"]),
        org=str(d["org"]),
        profile=None if d.get("profile") is None else str(d["profile"]),
        in_groups=tuple(str(g) for g in d.get("in_groups", ())),
        out_groups=tuple(str(g) for g in d.get("out_groups", ())),
        password_hash=None if d.get("password_hash") is None else str(d["password_hash"]),
        tokens=tuple(
            EnrollmentToken(
                token_sha256=str(t["token_sha256"]),
                created_at=_time(t["created_at"]),
                expires_at=_time(t["expires_at"]),
                used_at=_time(t["used_at"]) if t.get("used_at") else None,
            )
            for t in d.get("tokens", ())
        ),
        cert_serials=tuple(int(s, 16) for s in d.get("cert_serials", ())),
        revoked=bool(d.get("revoked", False)),
        created_at=_time(d["created_at"]) if d.get("created_at") else None,
    )


# --- The directory ----------------------------------------------------------------------------


class UserDirectory:
    """The users, backed by one JSON file, by PostgreSQL's ``identity_users`` table (``shared``:
    every node on that database sees one directory, identity/shared_db.py), or by nothing, for
    tests (``in_memory()``).

    Changing methods write the file (or the table) before they return. Unknown names raise
    KeyError, invalid input ValueError, an unreadable file or database StorageError.
    """

    def __init__(
        self,
        path: Path | None,
        users: dict[str, User] | None = None,
        *,
        db: IdentityDb | None = None,
    ) -> None:
        self._path = path
        self._db = db
        self._users: dict[str, User] = dict(users or {})
        self._stamp: tuple[int, int, int] | None = None
        # Revocations announced by other cluster nodes (cluster/access.py); never written here.
        self.shared: SharedRevocations | None = None

    # -- construction and persistence --

    @classmethod
    def load(cls, path: Path) -> UserDirectory:
        """Open the users file at ``path``; a missing file is an empty directory (created on
        the first change)."""
        d = cls(Path(path))
        d._reload_if_changed()
        return d

    @classmethod
    def in_memory(cls) -> UserDirectory:
        return cls(None)

    @classmethod
    def in_database(cls, db: IdentityDb) -> UserDirectory:
        """The users in PostgreSQL (``identity_users``), shared by every node on ``db``."""
        d = cls(None, db=db)
        d._reload_if_changed()
        return d

    @property
    def path(self) -> Path | None:
        return self._path

    def _lock_path(self) -> Path:
        assert self._path is not None
        return self._path.with_name(self._path.name + ".lock")

    def _file_stamp(self) -> tuple[int, int, int] | None:
        assert self._path is not None
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _reload_if_changed(self) -> None:
        if self._db is not None:
            # The database's copy in memory, kept current by its own thread: parsed again only
            # when it changed. The stamp is its version (a change anywhere in the cluster).
            version = self._db.version
            if self._stamp is None or self._stamp[0] != version:
                try:
                    users = {n: _user_from_json(r) for n, r in self._db.users().items()}
                except (ValueError, KeyError, TypeError) as exc:
                    raise StorageError(f"a user in the database is unreadable: {exc}") from exc
                self._users = users
                self._stamp = (version, 0, 0)
            return
        if self._path is None:
            return
        stamp = self._file_stamp()
        if stamp is not None and stamp == self._stamp:
            return
        if stamp is None:
            self._users = {}
            self._stamp = None
            return
        try:
            doc = json.loads(self._path.read_bytes())
            if not isinstance(doc, dict) or doc.get("version") != _FILE_VERSION:
                raise ValueError("unknown format version")
            users = {u.name: u for u in (_user_from_json(x) for x in doc["users"])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"users file {self._path} is unreadable: {exc}") from exc
        self._users = users
        self._stamp = stamp

    def _write(self) -> None:
        if self._path is None:
            return
        doc = {
            "version": _FILE_VERSION,
            "users": [_user_to_json(self._users[n]) for n in sorted(self._users)],
        }
        data = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            atomic_write(self._path, data, mode=_FILE_MODE)
        except OSError as exc:
            raise StorageError(f"cannot write users file {self._path}: {exc}") from exc
        self._stamp = self._file_stamp()

    def save(self) -> None:
        """Write the file now (changes already do; this is for an explicit checkpoint)."""
        if self._path is None:  # in memory, or in the database (written at every change)
            return
        with exclusive_lock(self._lock_path()):
            self._write()

    def _change(self, name: str, fn: _Change) -> User:
        """Apply ``fn`` to user ``name`` under the file lock, on fresh data, and write."""
        if self._db is not None:
            return self._db_change(name, fn)
        if self._path is None:
            return self._apply(name, fn)
        with exclusive_lock(self._lock_path()):
            self._reload_if_changed()
            before = self._users.get(name)
            user = self._apply(name, fn)
            if user != before:  # e.g. a failed token redemption changes nothing: no write
                self._write()
            return user

    def _db_change(self, name: str, fn: _Change) -> User:
        """``_change`` in the database: the record read and written in one transaction under
        the cluster-wide identity lock (identity/shared_db.py)."""
        assert self._db is not None

        def step(old: dict[str, Any] | None) -> dict[str, Any] | None:
            if old is None:
                raise KeyError(f"no user named {name!r}")
            return _user_to_json(fn(_user_from_json(old)))

        record = self._db.change_user(name, step)
        assert record is not None
        self._reload_if_changed()
        return _user_from_json(record)

    def _apply(self, name: str, fn: _Change) -> User:
        old = self._users.get(name)
        if old is None:
            raise KeyError(f"no user named {name!r}")
        new = fn(old)
        self._users[name] = new
        return new

    # -- queries --

    def get(self, name: str) -> User | None:
        """The user ``name``; revoked also when another cluster node revoked them
        (:attr:`shared`), whatever this node's file says."""
        self._reload_if_changed()
        user = self._users.get(name)
        shared = self.shared
        if user is not None and not user.revoked and shared is not None and name in shared.names:
            return replace(user, revoked=True)
        return user

    @property
    def stamp(self) -> tuple[int, int, int] | None:
        """The file's (mtime_ns, size, inode) as last read: changes with every change of a user."""
        self._reload_if_changed()
        return self._stamp

    def revoked_names(self) -> frozenset[str]:
        """The names of the revoked users as of now (one ``stat`` of the file)."""
        self._reload_if_changed()
        return frozenset(n for n, u in self._users.items() if u.revoked)

    def list_users(self) -> list[User]:
        self._reload_if_changed()
        return [self._users[n] for n in sorted(self._users)]

    def __len__(self) -> int:
        self._reload_if_changed()
        return len(self._users)

    # -- changes --

    def add_user(
        self,
        name: str,
        org: str,
        *,
        profile: str | None = None,
        groups: Sequence[str] = (),
        in_groups: Sequence[str] | None = None,
        out_groups: Sequence[str] | None = None,
        password: str | None = None,
        now: dt.datetime | None = None,
    ) -> User:
        """Add a user. ``groups`` go to both IN and OUT unless ``in_groups``/``out_groups`` are
        given. ValueError when the name exists or an argument is invalid."""
        check_username(name)
        _check_text(org, "organisation", MAX_ORG_CHARS)
        if profile is not None:
            _check_text(profile, "profile", MAX_GROUP_CHARS)
        ins = _groups(groups if in_groups is None else in_groups)
        outs = _groups(groups if out_groups is None else out_groups)
        pw_hash = None
        if password is not None:
            check_password_policy(password)
            pw_hash = hash_password(password)
        user = User(
            name=name,
            org=org,
            profile=profile,
            in_groups=ins,
            out_groups=outs,
            password_hash=pw_hash,
            created_at=_aware(now) if now is not None else dt.datetime.now(dt.UTC),
        )
        if self._db is not None:

            def step(old: dict[str, Any] | None) -> dict[str, Any]:
                if old is not None:
                    raise ValueError(f"a user named {name!r} already exists")
                return _user_to_json(user)

            self._db.change_user(name, step)
            self._reload_if_changed()
            return user
        if self._path is None:
            self._insert(user)
            return user
        with exclusive_lock(self._lock_path()):
            self._reload_if_changed()
            self._insert(user)
            self._write()
        return user

    def _insert(self, user: User) -> None:
        if user.name in self._users:
            raise ValueError(f"a user named {user.name!r} already exists")
        self._users[user.name] = user

    def set_password(self, name: str, password: str | None) -> User:
        """Set (or with None, remove) a user's password."""
        pw_hash = None
        if password is not None:
            check_password_policy(password)
            pw_hash = hash_password(password)
        return self._change(name, lambda u: replace(u, password_hash=pw_hash))

    def set_groups(self, name: str, *, in_groups: Sequence[str], out_groups: Sequence[str]) -> User:
        ins, outs = _groups(in_groups), _groups(out_groups)
        return self._change(name, lambda u: replace(u, in_groups=ins, out_groups=outs))

    def set_profile(self, name: str, profile: str | None) -> User:
        if profile is not None:
            _check_text(profile, "profile", MAX_GROUP_CHARS)
        return self._change(name, lambda u: replace(u, profile=profile))

    def add_cert_serial(self, name: str, serial: int) -> User:
        """Record that certificate ``serial`` was issued to ``name``."""
        return self._change(
            name,
            lambda u: (
                u
                if serial in u.cert_serials
                else replace(u, cert_serials=(*u.cert_serials, serial))
            ),
        )

    def revoke_user(self, name: str) -> tuple[int, ...]:
        """Mark the user revoked (no login, no enrollment) and drop their tokens.

        Returns the serials of the certificates issued to them: the caller revokes those in the
        PKI (``pki.revoke``), which this module does not touch.
        """
        user = self._change(name, lambda u: replace(u, revoked=True, tokens=()))
        return user.cert_serials

    def reinstate_user(self, name: str) -> User:
        """Undo ``revoke_user`` (their old certificates stay revoked)."""
        return self._change(name, lambda u: replace(u, revoked=False))

    def issue_token(self, name: str, ttl_s: float, now: dt.datetime) -> str:
        """A new single-use enrollment token for ``name``, valid ``ttl_s`` seconds from ``now``.

        The token itself is returned once and never stored. Expired and used tokens are pruned;
        past MAX_TOKENS_PER_USER live tokens, the oldest is dropped.
        """
        now = _aware(now)
        if not MIN_TOKEN_TTL_S <= ttl_s <= MAX_TOKEN_TTL_S:
            raise ValueError(f"token lifetime must be {MIN_TOKEN_TTL_S}..{MAX_TOKEN_TTL_S} s")
        token = new_token()
        record = EnrollmentToken(
            token_sha256=hash_token(token),
            created_at=now,
            expires_at=now + dt.timedelta(seconds=ttl_s),
        )

        def add(u: User) -> User:
            if u.revoked:
                raise ValueError(f"user {u.name!r} is revoked")
            live = [t for t in u.tokens if t.live(now)]
            live = live[-(MAX_TOKENS_PER_USER - 1) :] if MAX_TOKENS_PER_USER > 1 else []
            return replace(u, tokens=(*live, record))

        self._change(name, add)
        return token

    def redeem_token(self, name: str, token: str, now: dt.datetime) -> bool:
        """Use up ``token`` for ``name``: True once for a live token, False ever after."""
        now = _aware(now)
        wanted = hash_token(token)
        redeemed = False

        def use(u: User) -> User:
            nonlocal redeemed
            if u.revoked:
                return u
            kept: list[EnrollmentToken] = []
            for t in u.tokens:
                # compare every token in constant time, whatever matched before
                match = hmac.compare_digest(t.token_sha256, wanted)
                if match and t.live(now) and not redeemed:
                    redeemed = True
                    kept.append(replace(t, used_at=now))
                else:
                    kept.append(t)
            return replace(u, tokens=tuple(kept)) if redeemed else u

        try:
            self._change(name, use)
        except KeyError:
            return False
        return redeemed

    def check_token(self, name: str, token: str, now: dt.datetime) -> bool:
        """True when ``token`` is one of ``name``'s tokens and still authenticates (live, or
        used less than TOKEN_AFTER_USE_S ago). Changes nothing: ``redeem_token`` uses it up."""
        now = _aware(now)
        user = self.get(name)
        if user is None or user.revoked:
            return False
        wanted = hash_token(token)
        accepted = False
        for t in user.tokens:
            # compare every token in constant time, whatever matched before
            if hmac.compare_digest(t.token_sha256, wanted) and t.authenticates(now):
                accepted = True
        return accepted

    # -- authentication --

    def verify_password(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs and they are not revoked, else None.

        Costs one scrypt whether or not the user exists (no enumeration by timing).
        """
        user = self.get(name)
        if len(password) > MAX_PASSWORD_CHARS:
            return None
        if user is None or user.password_hash is None:
            verify_password_hash(password, _dummy_hash())
            return None
        if not verify_password_hash(password, user.password_hash) or user.revoked:
            return None
        return user

    def authenticate_enrollment(self, name: str, secret: str, now: dt.datetime) -> User | None:
        """HTTP Basic on the enrollment port: ``secret`` is the password or an enrollment token
        (tak-protocol.md 5.2: "the user enters a password or token").

        A token is not used up here, because one enrollment is several HTTP calls with the same
        credentials; the signing call uses it up with ``redeem_token`` (see TOKEN_AFTER_USE_S).
        """
        user = self.verify_password(name, secret)
        if user is not None:
            return user
        if self.check_token(name, secret, now):
            return self.get(name)
        return None


def _groups(groups: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for g in groups:
        _check_text(g, "group name", MAX_GROUP_CHARS)
        if g not in out:
            out.append(g)
    return tuple(out)
