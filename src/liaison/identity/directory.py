"""LDAP / Active Directory sign-in (docs/directory.md).

A password is checked the way RFC 4513 describes a simple bind: bind as the service account,
search the user by name (the name escaped per RFC 4515), then bind as the DN found with the
password given. An empty password is refused before anything is sent, because a simple bind with
a DN and no password is an "unauthenticated bind" that many servers accept (RFC 4513 5.1.2).

The directory users who signed in are remembered here as ``users.User`` records, so the rest of
the server treats them like users of the users file: ``Identities`` asks ``get`` for a name it does
not find in the users file. They are also kept in ``DATA_DIR/directory-users.json`` (no password,
mode 0600), so that after a restart a certificate enrolled by a directory user is still known as
theirs, and the first refresh, at start, checks them all again.

``refresh`` re-reads every remembered user from the directory; one that is gone, disabled, or in
none of the mapped groups (``require_group``) is marked revoked, and ``stamp`` changes, so the
session registry's sweep closes their streams, WebSockets and web sign-ins the next time it runs
(``identity.events``).

The client is ldap3 (pure Python, typed stubs in typeshed). Its calls block, so every one of them
runs on a worker thread, with connect and receive timeouts, and at most
``MAX_CONCURRENT_CHECKS`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException

from liaison.errors import StorageError
from liaison.identity.directory_config import DirectoryConfig, dn_key
from liaison.identity.files import atomic_write
from liaison.identity.users import MAX_PASSWORD_CHARS, User, check_username
from liaison.metrics import Metrics

log = logging.getLogger(__name__)

# Directory users remembered at once; past this one is forgotten (``_eviction_victim``) and must
# sign in again.
MAX_ACCOUNTS = 10_000
# The remembered directory users, in the data folder.
DIRECTORY_USERS_FILE = "directory-users.json"
# Password checks running at once: each holds a worker thread and a connection while the
# directory answers (bounded by timeout_s), so a burst of sign-ins cannot take every thread.
MAX_CONCURRENT_CHECKS = 4
# A user search answering more entries than this is ambiguous and refused.
USER_SEARCH_LIMIT = 2
# Group DNs read per user (memberOf values, or entries of the group search).
MAX_GROUPS_PER_USER = 1000
# Attributes of the user entry read besides the groups.
_NO_ATTRS: list[str] = []


def escape_filter_value(value: str) -> str:
    """``value`` as an RFC 4515 assertion value: ``*``, ``(``, ``)``, ``\\`` and NUL written
    as ``\\2a``, ``\\28``, ``\\29``, ``\\5c``, ``\\00`` (RFC 4515 section 3, "The <valueencoding>
    rule ensures that the entire filter string is a valid UTF-8 string and provides that the
    octets that represent the ASCII characters "*", "(", ")", "\\", and NUL are represented as
    a backslash followed by the two hexadecimal digits")."""
    out: list[str] = []
    for ch in value:
        if ch in "*()\\\x00":
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """A user entry as read from the directory."""

    dn: str
    groups: frozenset[str]  # normalised DNs (dn_key)


_STATE_VERSION = 1


def _account_to_json(u: User) -> dict[str, Any]:
    return {
        "name": u.name,
        "org": u.org,
        "profile": u.profile,
        "in_groups": list(u.in_groups),
        "out_groups": list(u.out_groups),
        "cert_serials": [format(s, "x") for s in u.cert_serials],
        "revoked": u.revoked,
    }


def _load_state(path: Path) -> dict[str, User]:
    """The remembered directory users; a missing file is none. An unreadable one is an error
    (StorageError): starting with none would forget who was revoked."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StorageError(f"directory users file {path} is unreadable: {exc}") from exc
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("version") != _STATE_VERSION:
            raise ValueError("unknown format version")
        users = [
            User(
                name=str(d["name"]),
                org=str(d["org"]),
                profile=None if d.get("profile") is None else str(d["profile"]),
                in_groups=tuple(str(g) for g in d.get("in_groups", ())),
                out_groups=tuple(str(g) for g in d.get("out_groups", ())),
                cert_serials=tuple(int(x, 16) for x in d.get("cert_serials", ())),
                revoked=bool(d.get("revoked", False)),
            )
            for d in doc["users"][:MAX_ACCOUNTS]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"directory users file {path} is unreadable: {exc}") from exc
    return {u.name: u for u in users}


class DirectoryUnavailable(Exception):
    """The directory could not be asked (no server answered, the service bind failed)."""


class _CheckedTls(ldap3.Tls):
    """TLS for ldaps:// and StartTLS with Python's own certificate and host name checks.

    ldap3's ``Tls`` turns the context's ``check_hostname`` off and matches names itself with
    ``ssl.match_hostname``, deprecated since Python 3.7 and removed in 3.12. Here the context
    checks the chain against ``ca_file`` and the name (DNS or IP address, RFC 6125) during the
    handshake, and TLS 1.2 is the least version accepted.
    """

    def __init__(self, ca_file: Path) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=str(ca_file))
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._context = ctx  # check_hostname and CERT_REQUIRED are the defaults

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )


class DirectoryClient:
    """The LDAP operations, blocking (call them on a worker thread)."""

    def __init__(self, config: DirectoryConfig) -> None:
        self.config = config
        self._tls = _CheckedTls(config.ca_file)

    def _open(self, user: str, password: str) -> ldap3.Connection | None:
        """A connection bound as ``user``; None when the server refused the credentials.
        DirectoryUnavailable when no server could be reached. Servers are tried in order."""
        if not password:
            return None  # never an unauthenticated bind (RFC 4513 5.1.2)
        cfg = self.config
        last: Exception | None = None
        for url in cfg.urls:
            server = ldap3.Server(
                url,
                use_ssl=url.lower().startswith("ldaps://"),
                tls=self._tls,
                get_info=ldap3.NONE,
                connect_timeout=cfg.timeout_s,
            )
            conn = ldap3.Connection(
                server,
                user=user,
                password=password,
                authentication=ldap3.SIMPLE,
                auto_bind=ldap3.AUTO_BIND_NONE,
                read_only=True,
                # Never follow a referral: it would send the credentials to another server,
                # named by the answer, not by the configuration.
                auto_referrals=False,
                receive_timeout=int(max(1, cfg.timeout_s)),
                raise_exceptions=False,
            )
            try:
                conn.open()
                tls_upgrade = cfg.start_tls and not url.lower().startswith("ldaps://")
                if tls_upgrade and not conn.start_tls():
                    raise DirectoryUnavailable(f"{url}: StartTLS refused")
                if conn.bind():
                    return conn
                result = conn.result or {}
                conn.unbind()
                # 49 invalidCredentials (RFC 4511 4.1.9): a wrong password, not an outage.
                if result.get("result") == 49:
                    return None
                last = DirectoryUnavailable(f"{url}: bind refused: {result.get('description')}")
            except (LDAPException, OSError, DirectoryUnavailable) as exc:
                last = exc
                with contextlib.suppress(LDAPException, OSError):
                    conn.unbind()
                # ldap3 leaves the socket of a failed connect or handshake open: close it here.
                sock = getattr(conn, "socket", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
        raise DirectoryUnavailable(str(last))

    def service(self) -> ldap3.Connection:
        """A connection bound as the service account; DirectoryUnavailable when it cannot be."""
        conn = self._open(self.config.bind_dn, self.config.bind_password)
        if conn is None:
            raise DirectoryUnavailable("the service account's credentials were refused")
        return conn

    def find(self, conn: ldap3.Connection, username: str) -> Found | None:
        """The user named ``username`` (not disabled), with their group DNs; None when there is
        no such user, more than one, or they are disabled."""
        cfg = self.config
        user_filter = cfg.user_filter.replace("{username}", escape_filter_value(username))
        if cfg.disabled_filter:
            user_filter = f"(&{user_filter}(!{cfg.disabled_filter}))"
        attrs = [cfg.group_attribute] if cfg.group_attribute else _NO_ATTRS
        ok = conn.search(
            cfg.user_base,
            user_filter,
            search_scope=ldap3.SUBTREE,
            attributes=attrs,
            size_limit=USER_SEARCH_LIMIT,
            time_limit=int(max(1, cfg.timeout_s)),
        )
        result = (conn.result or {}).get("result")
        # 0 success, 32 noSuchObject (base missing: nobody), 4 sizeLimitExceeded (ambiguous)
        if not ok and result not in (0, 4, 32):
            raise DirectoryUnavailable(f"user search failed: {conn.result}")
        entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if len(entries) != 1:
            if len(entries) > 1 or result == 4:
                log.warning("directory: %d entries match user %r: refused", len(entries), username)
            return None
        entry = entries[0]
        dn = str(entry["dn"])
        groups: set[str] = set()
        if cfg.group_attribute:
            values = entry.get("attributes", {}).get(cfg.group_attribute, [])
            if isinstance(values, str):
                values = [values]
            for v in list(values)[:MAX_GROUPS_PER_USER]:
                groups.add(dn_key(str(v)))
        if cfg.group_filter:
            group_filter = cfg.group_filter.replace("{dn}", escape_filter_value(dn))
            ok = conn.search(
                cfg.group_base,
                group_filter,
                search_scope=ldap3.SUBTREE,
                attributes=_NO_ATTRS,
                size_limit=MAX_GROUPS_PER_USER,
                time_limit=int(max(1, cfg.timeout_s)),
            )
            result = (conn.result or {}).get("result")
            # A failed group search must not read as "in no group" (which revokes): an outage.
            if not ok and result not in (0, 4, 32):
                raise DirectoryUnavailable(f"group search failed: {conn.result}")
            for e in conn.response or []:
                if e.get("type") == "searchResEntry":
                    groups.add(dn_key(str(e["dn"])))
        return Found(dn=dn, groups=frozenset(groups))

    def verify(self, dn: str, password: str) -> bool:
        """Whether ``password`` is ``dn``'s: a simple bind as them (RFC 4513 5.1.3)."""
        conn = self._open(dn, password)
        if conn is None:
            return False
        conn.unbind()
        return True


class Directory:
    """Directory sign-in and the directory users who signed in (see the module docstring)."""

    def __init__(
        self,
        config: DirectoryConfig,
        state_file: Path | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        metrics = metrics if metrics is not None else Metrics()
        # Incremented on the event loop only (authenticate, run), never from a worker thread.
        self._signins = metrics.counter(
            "liaison_directory_signins_total", "Directory password checks", "result"
        )
        self._refreshes = metrics.counter(
            "liaison_directory_refreshes_total", "Re-checks of the directory users", "result"
        )
        self.client = DirectoryClient(config)
        self._accounts: dict[str, User] = {}
        self._generation = 0
        self._lock = threading.Lock()  # the accounts are written from worker threads
        self._checks = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        self._state_file = state_file
        if state_file is not None:
            self._accounts = _load_state(state_file)

    def _save(self) -> None:
        """Write the remembered users (called with the lock held, off the event loop)."""
        if self._state_file is None:
            return
        doc = {
            "version": _STATE_VERSION,
            "users": [_account_to_json(u) for u in self._accounts.values()],
        }
        data = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        try:
            self._state_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(self._state_file, data, mode=0o600)
        except OSError as exc:
            log.error("directory: cannot write %s: %s", self._state_file, exc)

    # -- what Identities asks (the same questions as of UserDirectory) --

    def get(self, name: str) -> User | None:
        with self._lock:
            return self._accounts.get(name)

    @property
    def stamp(self) -> int:
        """Changes whenever a remembered user changes (revoked, reinstated, new groups)."""
        return self._generation

    def revoked_names(self) -> frozenset[str]:
        with self._lock:
            return frozenset(n for n, u in self._accounts.items() if u.revoked)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._accounts)

    def add_cert_serial(self, name: str, serial: int) -> None:
        """Record that certificate ``serial`` was issued to ``name`` (blocking: writes the file)."""
        with self._lock:
            user = self._accounts.get(name)
            if user is not None and serial not in user.cert_serials:
                self._accounts[name] = replace(user, cert_serials=(*user.cert_serials, serial))
                self._save()

    # -- mapping --

    def user_for(self, name: str, found: Found) -> User | None:
        """The User a directory entry maps to; None when ``require_group`` and no map matches."""
        cfg = self.config
        matched = [m for m in cfg.maps if m.key in found.groups]
        if cfg.require_group and not matched:
            return None
        ins: list[str] = []
        outs: list[str] = []
        for m in matched:
            ins += [g for g in m.in_groups if g not in ins]
            outs += [g for g in m.out_groups if g not in outs]
        # The first map (in file order) that names an org or a profile decides it.
        org = next((m.org for m in matched if m.org), cfg.org)
        profile = next((m.profile for m in matched if m.profile), None)
        return User(
            name=name, org=org, profile=profile, in_groups=tuple(ins), out_groups=tuple(outs)
        )

    def _remember(self, name: str, user: User | None) -> None:
        """``user`` as found in the directory now, or None: gone, disabled or unmapped."""
        with self._lock:
            old = self._accounts.get(name)
            if user is None:
                if old is None or old.revoked:
                    return
                new = replace(old, revoked=True)
            else:
                new = replace(user, cert_serials=old.cert_serials if old else ())
            if new == old:
                return
            self._accounts.pop(name, None)
            self._accounts[name] = new
            self._generation += 1
            while len(self._accounts) > MAX_ACCOUNTS:
                del self._accounts[self._eviction_victim()]
            self._save()

    def _eviction_victim(self) -> str:
        """Whom to forget past MAX_ACCOUNTS (lock held). Never a revoked user while another can
        go: forgetting them would forget that their certificates must be refused. First the
        oldest without certificates (they only need to sign in again), then the oldest."""
        live = [(n, u) for n, u in self._accounts.items() if not u.revoked]
        for name, user in live:
            if not user.cert_serials:
                return name
        if live:
            return live[0][0]
        log.warning("directory: %d revoked users remembered; forgetting the oldest", MAX_ACCOUNTS)
        return next(iter(self._accounts))

    # -- sign-in --

    def check_password(self, username: str, password: str) -> User | None:
        """The user when ``password`` is their directory password, they are not disabled and
        (with ``require_group``) in a mapped group; else None. Blocking; raises
        DirectoryUnavailable when the directory cannot be asked."""
        try:
            check_username(username)  # it becomes a certificate CN and a Basic user name
        except ValueError:
            return None
        if not password or len(password) > MAX_PASSWORD_CHARS:
            return None
        conn = self.client.service()
        try:
            found = self.client.find(conn, username)
        finally:
            conn.unbind()
        user = self.user_for(username, found) if found is not None else None
        if found is None or user is None:
            if found is not None:
                log.warning("directory: %r is in no mapped group: refused", username)
            self._remember(username, None)
            self._equal_time_bind(password)
            return None
        if not self.client.verify(found.dn, password):
            return None
        self._remember(username, user)
        return self.get(username)

    def _equal_time_bind(self, password: str) -> None:
        """A bind as a DN that does not exist, which the directory refuses (49): a refusal for
        an unknown or unmapped name then costs the same round trips as a wrong password, so the
        time of a 401 does not tell which names exist. No account is named, so none is locked."""
        dn = f"cn=liaison-no-such-user-{secrets.token_hex(8)},{self.config.user_base}"
        with contextlib.suppress(DirectoryUnavailable):
            self.client.verify(dn, password)

    async def authenticate(self, username: str, password: str) -> User | None:
        """``check_password`` on a worker thread, at most MAX_CONCURRENT_CHECKS at once. A
        directory that cannot be asked refuses the sign-in (logged)."""
        async with self._checks:
            try:
                user = await asyncio.to_thread(self.check_password, username, password)
            except (DirectoryUnavailable, LDAPException, OSError) as exc:
                log.error("directory: cannot check %r: %s", username, exc)
                self._signins.inc("unavailable")
                return None
        self._signins.inc("accepted" if user is not None else "refused")
        return user

    # -- the periodic re-check --

    def refresh(self, names: Iterable[str] | None = None) -> int:
        """Re-read the remembered users (or ``names``) from the directory; how many changed.
        Blocking. A directory that cannot be asked changes nothing (DirectoryUnavailable)."""
        before = self._generation
        wanted = list(names) if names is not None else self.names()
        if not wanted:
            return 0
        conn = self.client.service()
        try:
            for name in wanted:
                found = self.client.find(conn, name)
                if found is None:
                    self._remember(name, None)
                    continue
                self._remember(name, self.user_for(name, found))
        finally:
            conn.unbind()
        changed = self._generation - before
        if changed:
            log.info("directory: refresh changed %d user(s)", changed)
        return changed

    async def run(self) -> None:
        """Refresh at once (users remembered from before a restart), then every ``refresh_s``
        seconds, until cancelled (the app owns this task)."""
        first = True
        while True:
            if not first:
                await asyncio.sleep(self.config.refresh_s)
            first = False
            try:
                async with self._checks:
                    await asyncio.to_thread(self.refresh)
                self._refreshes.inc("ok")
            except (DirectoryUnavailable, LDAPException, OSError) as exc:
                self._refreshes.inc("failed")
                # Keep everyone as they are: an outage of the directory does not sign out the
                # whole server; the next refresh tries again.
                log.error("directory: refresh failed, users unchanged: %s", exc)
