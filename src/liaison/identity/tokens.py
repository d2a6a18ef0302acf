"""Bearer tokens: the signing keyring, and issuing and checking access and refresh tokens.

Tokens are JSON Web Tokens (RFC 7519) signed RS256 (RFC 7518 3.3), the algorithm TAK Server
verifies its own tokens with (TSc ``groups/OAuthAuthenticator.java``: ``parseClaims(token,
SignatureAlgorithm.RS256)``; ``com/bbn/marti/jwt/JwtUtils.java`` verifies with the RSA key of
its TLS keystore, or a 4096-bit key it generates). Liaison keeps its own signing keys instead of
the server certificate's, so that they can be rotated without re-issuing that certificate.

Claims are flat: ``sub`` is the username, as TAK Server reads it (``OAuthAuthenticator``: "jwt's
from takserver will contain the sub claim"), ``groups`` the user's group names (TAK Server reads
group names from ``user_client_roles`` or its configured groups claim), ``roles`` Liaison's roles
(``operator``),
and ``iss``, ``aud``, ``nbf``, ``iat``, ``exp``, ``jti``; the header names its key (``kid``).
CloudTAK reads ``sub``, ``aud``, ``nbf``, ``exp`` and ``iat`` from the access token's payload
(CloudTAK ``api/lib/api/oauth.ts``).

The keyring is one JSON file under the data directory (``tokens/keyring.json``, mode 0600),
replaced atomically under an flock like the users file, so ``liaison oauth rotate`` in another
process is seen by the running server at its next check (one ``stat`` per check). Rotation adds a
new signing key; the old ones stay, for verification only, until every token they signed has
expired (``retired + keep_s``), and are then dropped. At most :data:`MAX_KEYS` are kept.
With a PostgreSQL storage the keyring is the database's instead (:class:`DbKeyring`, table
``identity_token_keys``), shared by every node, and redeemed refresh tokens are recorded there
(``identity_refresh_redeemed``) so that each is accepted once in the whole cluster.

Access and refresh tokens differ by their ``typ`` header (``at+jwt``, RFC 9068 2.1, and
``rt+jwt``), so neither is accepted for the other. A refresh token is single use: the server
remembers the identifiers of the refresh tokens it redeemed until they expire.

This module signs and checks; whether the named user still exists and is not revoked is asked of
the user directory by the caller on every use (``api.oauth``, ``api.auth``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from liaison.errors import StorageError
from liaison.identity.files import atomic_write, exclusive_lock

if TYPE_CHECKING:
    from liaison.config import Config
    from liaison.identity.shared_db import IdentityDb

log = logging.getLogger(__name__)

# RS256: what TAK Server signs and verifies its OAuth tokens with (module docstring).
ALGORITHM = "RS256"
# RSA modulus size: NIST SP 800-57 Part 1 table 2 gives 2048 bits 112-bit security through 2030.
RSA_BITS = 2048
RSA_EXPONENT = 65537
# Header ``typ`` of access tokens (RFC 9068 2.1) and of refresh tokens (Liaison's own).
ACCESS_TYP = "at+jwt"
REFRESH_TYP = "rt+jwt"
# The ``aud`` claim: who the tokens are for (this server's APIs).
AUDIENCE = "liaison"
# Signing keys kept in the keyring (the active one and those still verifying); a rotation past
# this drops the oldest retired key even if tokens it signed have not expired yet.
MAX_KEYS = 4
# Longest token accepted, in characters: ours are about 1 KB; bounds the work of parsing input.
MAX_TOKEN_CHARS = 8192
# Longest a chain of refreshes may last from the password sign-in that started it: the user
# types the password again at least this often (the web sign-in's SESSION_MAX_S, api.auth).
MAX_SIGN_IN_S = 24 * 3600
# Seconds a token's nbf may lie ahead of this clock (tokens are issued on the same host).
CLOCK_LEEWAY_S = 5
# Access tokens already verified, remembered (whole token string, signature included) so that a
# client's every request does not verify the same signature again; past this the oldest go.
CHECKED_CACHE_SIZE = 4096
# Redeemed refresh token identifiers remembered (until their expiry); past this the oldest go.
MAX_REDEEMED = 100_000

_FILE_VERSION = 1
_FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    created: int  # seconds since the epoch
    retired: int | None  # when a newer key replaced it (None: the active key)
    private: rsa.RSAPrivateKey
    public: rsa.RSAPublicKey  # derived from ``private`` once, not at every check


def new_kid() -> str:
    return secrets.token_urlsafe(12)


def _new_key(now_s: int) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=RSA_BITS)
    return SigningKey(
        kid=new_kid(), created=now_s, retired=None, private=key, public=key.public_key()
    )


def _key_to_json(k: SigningKey) -> dict[str, Any]:
    pem = k.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {"kid": k.kid, "created": k.created, "retired": k.retired, "pem": pem.decode("ascii")}


def _key_from_json(d: dict[str, Any]) -> SigningKey:
    private = serialization.load_pem_private_key(str(d["pem"]).encode("ascii"), password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError("not an RSA key")
    retired = d.get("retired")
    return SigningKey(
        kid=str(d["kid"]),
        created=int(d["created"]),
        retired=None if retired is None else int(retired),
        private=private,
        public=private.public_key(),
    )


class Keyring:
    """The token signing keys, newest (active) last, backed by one JSON file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._keys: list[SigningKey] = []
        self._stamp: tuple[int, int, int] | None = None

    @property
    def path(self) -> Path:
        return self._path

    @classmethod
    def open(cls, path: Path, now_s: int | None = None) -> Keyring:
        """The keyring at ``path``, with a first key made (and written) when there is none."""
        ring = cls(path)
        with exclusive_lock(ring._lock_path()):
            ring._reload()
            if not ring._keys:
                ring._keys = [_new_key(int(time.time()) if now_s is None else now_s)]
                ring._write()
        return ring

    def _lock_path(self) -> Path:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self._path.with_name(self._path.name + ".lock")

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _reload(self) -> None:
        stamp = self._file_stamp()
        if stamp is not None and stamp == self._stamp:
            return
        if stamp is None:
            self._keys, self._stamp = [], None
            return
        try:
            doc = json.loads(self._path.read_bytes())
            if not isinstance(doc, dict) or doc.get("version") != _FILE_VERSION:
                raise ValueError("unknown format version")
            keys = [_key_from_json(k) for k in doc["keys"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"token keyring {self._path} is unreadable: {exc}") from exc
        self._keys, self._stamp = keys, stamp

    def _write(self) -> None:
        doc = {"version": _FILE_VERSION, "keys": [_key_to_json(k) for k in self._keys]}
        data = json.dumps(doc, indent=1).encode("utf-8") + b"\n"
        try:
            atomic_write(self._path, data, mode=_FILE_MODE)
        except OSError as exc:
            raise StorageError(f"cannot write token keyring {self._path}: {exc}") from exc
        self._stamp = self._file_stamp()

    def all_keys(self) -> list[SigningKey]:
        """Every key held, oldest first (re-read when the file changed)."""
        self._reload()
        return list(self._keys)

    def active(self) -> SigningKey:
        self._reload()
        if not self._keys:
            raise StorageError(f"token keyring {self._path} holds no key")
        return self._keys[-1]

    def verifying_key(self, kid: str, now_s: int, keep_s: int) -> rsa.RSAPublicKey | None:
        """The public key named ``kid`` if it may still verify: the active key, or a retired one
        less than ``keep_s`` seconds after its retirement (its tokens may still be live)."""
        self._reload()
        for k in self._keys:
            if k.kid == kid and (k.retired is None or now_s < k.retired + keep_s):
                return k.public
        return None

    def rotate(self, now_s: int, keep_s: int) -> SigningKey:
        """Make a new active key; retire the previous one; drop the keys retired more than
        ``keep_s`` seconds ago (and the oldest past :data:`MAX_KEYS`). Returns the new key."""
        new = _new_key(now_s)
        with exclusive_lock(self._lock_path()):
            self._stamp = None
            self._reload()
            self._keys = _rotated(self._keys, new, now_s, keep_s)
            self._write()
        return new


def _rotated(keys: list[SigningKey], new: SigningKey, now_s: int, keep_s: int) -> list[SigningKey]:
    """``keys`` after a rotation to ``new`` (Keyring.rotate's rule)."""
    kept = [k if k.retired is not None else replace(k, retired=now_s) for k in keys]
    kept = [k for k in kept if k.retired is None or now_s < k.retired + keep_s]
    kept.append(new)
    return kept[-MAX_KEYS:]


class DbKeyring(Keyring):
    """The keyring in PostgreSQL (``identity_token_keys``, identity/shared_db.py), shared by
    every node on the database: a token signed on one node verifies on every other, and a
    rotation (``liaison oauth rotate`` against the database, or any node) is seen by all within
    shared_db's POLL_S. Keys are read from the IdentityDb's copy in memory (no database call per
    check) and parsed again only when the table changed."""

    def __init__(self, db: IdentityDb, path: Path) -> None:
        super().__init__(path)
        self._db = db
        self._db_stamp: tuple[int, int] | None = None
        # The keyring.json whose keys opening imported (None: none was imported here).
        self.imported_from: Path | None = None

    @classmethod
    def open_in_database(cls, db: IdentityDb, path: Path, now_s: int | None = None) -> DbKeyring:
        """The database's keyring. When its table is empty it is filled, once in the cluster
        (under the identity lock), from ``path`` (this node's keyring.json) when that file
        exists, else with a new key. An unreadable keyring.json refuses the open
        (StorageError) rather than silently replacing the keys that signed live tokens."""
        ring = cls(db, path)
        _, current = db.token_keys()
        if not current:
            offered: list[SigningKey]
            source: Path | None = None
            if path.exists():
                offered = Keyring(path).all_keys()
                source = path
            if source is None or not offered:
                offered = [_new_key(int(time.time()) if now_s is None else now_s)]
            rows = [_key_to_json(k) for k in offered]
            taken: list[bool] = []

            def fill(old: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
                if old:
                    return None  # another node filled it first
                taken.append(True)
                return rows

            db.change_token_keys(fill)
            if taken and source is not None:
                ring.imported_from = source
                log.info(
                    "imported %d token signing keys from %s into the database", len(rows), source
                )
        ring._reload()
        return ring

    def _reload(self) -> None:
        stamp, rows = self._db.token_keys()
        if stamp == self._db_stamp:
            return
        try:
            keys = [_key_from_json(r) for r in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"token keyring in the database is unreadable: {exc}") from exc
        self._keys, self._db_stamp = keys, stamp

    def rotate(self, now_s: int, keep_s: int) -> SigningKey:
        new = _new_key(now_s)

        def change(old: list[dict[str, Any]]) -> list[dict[str, Any]]:
            keys = [_key_from_json(r) for r in old]
            return [_key_to_json(k) for k in _rotated(keys, new, now_s, keep_s)]

        self._db.change_token_keys(change)
        self._db_stamp = None
        self._reload()
        return new


@dataclass(frozen=True, slots=True)
class TokenSettings:
    access_ttl_s: int
    refresh_ttl_s: int
    issuer: str

    @property
    def keep_s(self) -> int:
        """How long a retired key must still verify: the longest a token it signed may live."""
        return max(self.access_ttl_s, self.refresh_ttl_s)


@dataclass(frozen=True, slots=True)
class Issued:
    access_token: str
    refresh_token: str
    expires_in: int
    jti: str


@dataclass(frozen=True, slots=True)
class Checked:
    """A token whose signature, type, audience and times were good."""

    sub: str
    jti: str
    exp: int
    auth_time: int
    kid: str
    claims: dict[str, Any]


class TokenService:
    """Issues and checks tokens with the keyring's keys; remembers redeemed refresh tokens."""

    def __init__(
        self,
        keyring: Keyring,
        settings: TokenSettings,
        clock_s: Callable[[], float] = time.time,
        shared_redeem: Callable[[str, int, int], bool] | None = None,
    ) -> None:
        """``shared_redeem(jti, exp, now)``: records a redemption for every node (IdentityDb
        .redeem_refresh), True the first time; None: this process's memory only."""
        self.keyring = keyring
        self._shared_redeem = shared_redeem
        self.settings = settings
        self._clock = clock_s
        self._redeemed: OrderedDict[str, int] = OrderedDict()
        self._checked: OrderedDict[str, Checked] = OrderedDict()

    def _now(self) -> int:
        return int(self._clock())

    @property
    def redeems_in_database(self) -> bool:
        """Whether :meth:`redeem_refresh` asks the database (a blocking call)."""
        return self._shared_redeem is not None

    def issue(
        self,
        username: str,
        *,
        groups: list[str],
        roles: list[str],
        auth_time: int | None = None,
    ) -> Issued:
        """A new access token and refresh token for ``username``. ``auth_time`` is when the
        password was checked (a refresh keeps the original one)."""
        now = self._now()
        auth = now if auth_time is None else auth_time
        key = self.keyring.active()
        jti = secrets.token_urlsafe(16)
        s = self.settings
        access_exp = now + s.access_ttl_s
        common = {"iss": s.issuer, "aud": AUDIENCE, "sub": username, "nbf": now, "iat": now}
        access = {
            **common,
            "exp": access_exp,
            "jti": jti,
            "groups": sorted(groups),
            "roles": sorted(roles),
            "auth_time": auth,
        }
        refresh = {
            **common,
            "exp": min(now + s.refresh_ttl_s, auth + MAX_SIGN_IN_S),
            "jti": secrets.token_urlsafe(16),
            "ati": jti,
            "auth_time": auth,
        }
        return Issued(
            access_token=self._sign(access, key, ACCESS_TYP),
            refresh_token=self._sign(refresh, key, REFRESH_TYP),
            expires_in=s.access_ttl_s,
            jti=jti,
        )

    @staticmethod
    def _sign(claims: dict[str, Any], key: SigningKey, typ: str) -> str:
        return jwt.encode(
            claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": typ}
        )

    def check(self, token: str, typ: str = ACCESS_TYP) -> Checked | None:
        """The token's claims when it is one of ours, of type ``typ``, unexpired, signed by a key
        that still verifies; else None. Only RS256 is accepted (never ``none``, never HMAC)."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        now = self._now()
        if typ == ACCESS_TYP:
            hit = self._checked.get(token)
            if hit is not None:
                # Still unexpired, and its key still verifies (a rotation past MAX_KEYS may have
                # dropped it early).
                keep_s = self.settings.keep_s
                if now < hit.exp and self.keyring.verifying_key(hit.kid, now, keep_s) is not None:
                    return hit
                del self._checked[token]
        checked = self._verify(token, typ, now)
        if checked is not None and typ == ACCESS_TYP:
            self._checked[token] = checked
            while len(self._checked) > CHECKED_CACHE_SIZE:
                self._checked.popitem(last=False)
        return checked

    def _verify(self, token: str, typ: str, now: int) -> Checked | None:
        header = _header(token)
        if header is None:
            return None
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or header.get("typ") != typ or not isinstance(kid, str):
            return None
        public = self.keyring.verifying_key(kid, now, self.settings.keep_s)
        if public is None:
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=self.settings.issuer,
                # Times are checked below against this service's clock.
                options={
                    "require": ["sub", "exp", "iat", "nbf", "jti", "aud", "iss"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError:
            return None
        sub, jti, exp = claims.get("sub"), claims.get("jti"), claims.get("exp")
        nbf, auth_time = claims.get("nbf"), claims.get("auth_time", claims.get("iat"))
        if not (isinstance(sub, str) and isinstance(jti, str)):
            return None
        if not (isinstance(exp, int) and isinstance(nbf, int) and isinstance(auth_time, int)):
            return None
        # RFC 7519 4.1.4: not accepted on or after exp; 4.1.5: not before nbf (a little clock
        # difference between processes of one host is allowed).
        if now >= exp or now + CLOCK_LEEWAY_S < nbf:
            return None
        return Checked(sub=sub, jti=jti, exp=exp, auth_time=auth_time, kid=kid, claims=claims)

    def redeem_refresh(self, token: str) -> Checked | None:
        """Check a refresh token and use it up: each is accepted once."""
        checked = self.check(token, REFRESH_TYP)
        if checked is None:
            return None
        now = self._now()
        if self._shared_redeem is not None:
            return checked if self._shared_redeem(checked.jti, checked.exp, now) else None
        while self._redeemed and next(iter(self._redeemed.values())) <= now:
            self._redeemed.popitem(last=False)
        if checked.jti in self._redeemed:
            return None
        self._redeemed[checked.jti] = checked.exp
        while len(self._redeemed) > MAX_REDEEMED:
            self._redeemed.popitem(last=False)
        return checked


def _header(token: str) -> dict[str, Any] | None:
    """The JOSE header of a compact JWS, unverified (to pick the key by ``kid``; PyJWT then checks
    everything, the header again included), or None when it is not one."""
    first, sep, _ = token.partition(".")
    if not sep:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    except (ValueError, binascii.Error):
        return None
    return header if isinstance(header, dict) else None


def unverified_payload(token: str) -> dict[str, Any]:
    """The payload of a JWT without checking anything: for tests and diagnostics only."""
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def keyring_path(data_dir: Path) -> Path:
    return data_dir / "tokens" / "keyring.json"


def open_keyring(config: Config) -> tuple[Keyring, IdentityDb | None]:
    """The keyring ``config`` uses: with a PostgreSQL storage the database's (DbKeyring, this
    process's IdentityDb, liaison.admin.identity_db), else the data folder's keyring.json."""
    from liaison import admin  # here: admin imports much of the package

    path = keyring_path(config.data_dir)
    db = admin.identity_db(config)
    if db is None:
        return Keyring.open(path), None
    return DbKeyring.open_in_database(db, path), db
