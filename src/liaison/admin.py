"""The administration commands: ``liaison user ...``, ``liaison ca ...`` and ``liaison doctor``.

Each command is a thin wrapper over a function that takes the Config (and, where time matters,
``now``), so tests call the same code the command line runs. The commands work on the same data
folder as a running server: the users file and the PKI index are shared safely (flock, atomic
replace), so a user added here can enroll at once and a revocation made here is seen by the
server's next handshake and its session sweep.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from liaison import config as config_mod
from liaison.errors import PkiError
from liaison.identity import packages
from liaison.identity.ca import (
    check_names,
    ensure_server_pki,
    expiring,
    import_ca,
)
from liaison.identity.certs import (
    ServerPki,
    fingerprint_sha256,
    load_ca_cert,
    load_chain,
    load_server_cert,
)
from liaison.identity.files import atomic_write
from liaison.identity.issue import IssuedCert, issue_client_cert, list_issued
from liaison.identity.p12 import client_p12, new_p12_password, truststore_p12
from liaison.identity.revocation import CRL_VALIDITY_DAYS, current_crl, revoke, revoked_serials
from liaison.identity.users import MAX_TOKEN_TTL_S, MIN_TOKEN_TTL_S, User, UserDirectory
from liaison.storage.permissions import secure_data_dir

if TYPE_CHECKING:
    from liaison.identity.db_import import ImportReport, LocalIdentity
    from liaison.identity.shared_db import IdentityDb

# --- Named choices --------------------------------------------------------------------------

# Enrollment tokens made by `user add` and `user token` live a day unless asked otherwise: long
# enough to hand a QR code over at the start of a shift, short enough that a lost printout
# expires by the next one.
DEFAULT_TOKEN_TTL_HOURS = 24.0
# `liaison doctor` warns about everything that expires within this many days (the issue's
# "expiring within 30 days"; also ca.SERVER_RENEW_BEFORE_DAYS, when startup re-issues).
DOCTOR_WINDOW_DAYS = 30
# The ports clients assume when a connect string or enrollment link names none
# (tak-protocol.md 3.1: 8089 streaming TLS, 8446 enrollment).
DEFAULT_TLS_PORT = 8089
# How ca.expiring names the CRL's nextUpdate.
CRL_ITEM = "CRL next update"
DEFAULT_ENROLL_PORT = 8446

_OUT_DIR_MODE = 0o700
_SECRET_FILE_MODE = 0o600


_Command = Callable[[argparse.Namespace], int]


class AdminError(Exception):
    """A command cannot do what was asked; the message says why (exit code 1)."""


# --- Configuration --------------------------------------------------------------------------


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The flags that locate the data folder and name the server, as for ``liaison serve``."""
    p.add_argument("--config", type=Path, help="TOML configuration file (env LIAISON_CONFIG)")
    p.add_argument("--data-dir", help="data folder (default ./liaison-data)")
    p.add_argument("--public-host", help="host name clients use to reach this server")


def add_listener_args(p: argparse.ArgumentParser) -> None:
    """The listener flags whose ports go into packages and links (``user add``, ``user token``):
    the same flags, file keys and variables as for ``liaison serve``."""
    p.add_argument(
        "--tls",
        help="the server's TLS streaming listener HOST:PORT; its port goes into the packages "
        "(default: listeners.tls of --config / LIAISON_TLS, else 8089)",
    )
    p.add_argument(
        "--enroll",
        help="the server's enrollment listener HOST:PORT; its port goes into the link "
        "(default: listeners.enroll of --config / LIAISON_ENROLL, else 8446)",
    )


def load_config(args: argparse.Namespace) -> config_mod.Config:
    """The same Config ``liaison serve`` builds from the same file, environment and flags."""
    overrides = {
        "data_dir": args.data_dir,
        "public_host": args.public_host,
        "tls": getattr(args, "tls", None),
        "enroll": getattr(args, "enroll", None),
    }
    return config_mod.load(args.config, os.environ, overrides)


def _stream_port(cfg: config_mod.Config) -> int:
    return cfg.tls.port if cfg.tls is not None and cfg.tls.port else DEFAULT_TLS_PORT


def _enroll_port(cfg: config_mod.Config) -> int | None:
    """The enrollment port to put in a link, or None when it is the default clients assume."""
    if cfg.enroll is None or cfg.enroll.port in (0, DEFAULT_ENROLL_PORT):
        return None
    return cfg.enroll.port


# The shared identity tables of each PostgreSQL storage this process has opened (one per URL):
# the server registers its own (use_identity_db, forget_identity_db), a command opens one on
# first use (closed by close_command_dbs when the command is done).
_IDENTITY_DBS: dict[str, IdentityDb] = {}
_OPENED_BY_COMMANDS: set[str] = set()


def shares_identity(cfg: config_mod.Config) -> bool:
    """Whether users, certificates and sign-ins live in PostgreSQL (a ``postgresql://`` storage)."""
    return cfg.storage.startswith(("postgresql://", "postgres://"))


def use_identity_db(cfg: config_mod.Config, db: IdentityDb) -> None:
    """Make ``db`` the one this process's commands and operator API use for ``cfg.storage``."""
    _IDENTITY_DBS[cfg.storage] = db


def forget_identity_db(cfg: config_mod.Config) -> None:
    """The server closed its ``db``: no later command may use it."""
    _IDENTITY_DBS.pop(cfg.storage, None)


def close_command_dbs() -> None:
    """Close what the commands of this process opened (the server's own stays)."""
    for url in sorted(_OPENED_BY_COMMANDS):
        db = _IDENTITY_DBS.pop(url, None)
        if db is not None:
            db.close()
    _OPENED_BY_COMMANDS.clear()


def local_identity(cfg: config_mod.Config) -> LocalIdentity:
    """What ``cfg``'s data folder holds for the one-time import into PostgreSQL (the users
    file, ``pki/issued.json``, ``pki/crl.pem``), read and checked; errors kept, not raised."""
    from liaison.identity.db_import import read_local_identity

    return read_local_identity(cfg.resolved_users_file(), cfg.data_dir / "pki")


def import_audit_fields(report: ImportReport, where: str) -> dict[str, object]:
    """The fields of the ``admin`` audit record of an import into PostgreSQL (docs/deployment.md
    "Users, certificates and sign-ins (PostgreSQL)"): no secret, only counts and file names."""
    return {
        "who": "",
        "org": "",
        "action": "identity_import",
        "target": where,
        "users": report.users,
        "users_from": str(report.users_from) if report.users_from is not None else None,
        "certificates": report.certs,
        "revoked": report.revoked,
        "certificates_from": str(report.certs_from) if report.certs_from is not None else None,
        "crl_number": report.crl_number,
    }


def identity_db(cfg: config_mod.Config) -> IdentityDb | None:
    """The shared identity tables of ``cfg``'s PostgreSQL storage, or None with SQLite. A command
    opens the database once (migrating it as the server would); ``cli.main`` closes it when the
    command is done."""
    if not shares_identity(cfg):
        return None
    db = _IDENTITY_DBS.get(cfg.storage)
    if db is None:
        import asyncio

        # Imported here: asyncpg is an optional extra, the default SQLite path never loads it.
        from liaison.config import redacted_url
        from liaison.identity.shared_db import IdentityDb
        from liaison.storage.postgresql import migrate_database

        asyncio.run(migrate_database(cfg.storage))
        # A command may be the first to open the tables after the switch to PostgreSQL: it
        # imports the data folder's users and certificates as the server would (not audited:
        # a command has no audit log open; the server's log would have two writers).
        db = IdentityDb.open(
            cfg.storage, where=redacted_url(cfg.storage), local=local_identity(cfg)
        )
        report = db.imported
        if report is not None and report.anything:
            print(
                f"Imported into PostgreSQL: {report.users} users"
                f"{f' from {report.users_from}' if report.users_from else ''},"
                f" {report.certs} issued certificates ({report.revoked} revoked)"
                f"{f' from {report.certs_from}' if report.certs_from else ''}"
                f"{f', CRL number {report.crl_number}' if report.crl_number is not None else ''}",
                file=sys.stderr,
            )
        _IDENTITY_DBS[cfg.storage] = db
        _OPENED_BY_COMMANDS.add(cfg.storage)
    return db


def _users(cfg: config_mod.Config) -> UserDirectory:
    db = identity_db(cfg)
    if db is not None:
        return UserDirectory.in_database(db)
    return UserDirectory.load(cfg.resolved_users_file())


def _pki_at(cfg: config_mod.Config) -> ServerPki:
    return ServerPki.at(cfg.data_dir, identity_db(cfg))


def _existing_pki(cfg: config_mod.Config) -> ServerPki:
    server_pki = _pki_at(cfg)
    if not server_pki.ca_cert.exists():
        raise AdminError(
            f"no certificate authority in {server_pki.directory}: start the server once "
            "(or run `liaison user add`), or import one with `liaison ca import`"
        )
    return server_pki


def _ensure_pki(cfg: config_mod.Config, now: dt.datetime | None) -> ServerPki:
    # What the server does at startup: a private data folder, the CA made on first use.
    secure_data_dir(cfg.data_dir)
    return ensure_server_pki(
        cfg.data_dir,
        public_host=cfg.public_host,
        extra_names=cfg.server_names,
        now=now,
        db=identity_db(cfg),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=_OUT_DIR_MODE)
    os.chmod(path.parent, _OUT_DIR_MODE)
    atomic_write(path, data, mode=_SECRET_FILE_MODE)


def default_out_dir(cfg: config_mod.Config, name: str) -> Path:
    return cfg.data_dir / "packages" / packages.safe_stem(name, "user")


# --- Users ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentLink:
    url: str
    expires_at: dt.datetime
    qr_png: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class AddedUser:
    user: User
    serial: int
    not_after: dt.datetime
    atak_package: Path
    itak_package: Path
    truststore_password: str
    client_password: str
    link: EnrollmentLink | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionPackages:
    atak: bytes  # ATAK and WinTAK
    itak: bytes
    truststore_password: str
    client_password: str | None  # None for enrollment packages (no client keystore)


def connection_packages(
    cfg: config_mod.Config,
    server_pki: ServerPki,
    name: str,
    *,
    issued: IssuedCert | None = None,
) -> ConnectionPackages:
    """The ATAK/WinTAK and iTAK connection packages of user ``name`` (tak-protocol.md 5.2):
    with ``issued`` (a certificate and its key), pre-issued style (a), carrying the client
    keystore; without, enrollment style (b): the truststore only, and the device enrolls on the
    enrollment port with the user's password or a one-time token."""
    trust_pw = new_p12_password()
    truststore = truststore_p12(server_pki, trust_pw)
    host = cfg.public_host
    client: bytes | None = None
    client_pw: str | None = None
    if issued is not None:
        assert issued.private_key is not None
        client_pw = new_p12_password()
        client = client_p12(issued.certificate, issued.private_key, issued.chain, client_pw)
        # A package uid per certificate: importing a newer package replaces the older one.
        base = f"liaison://{host}/users/{name}/{issued.serial:x}"
    else:
        base = f"liaison://{host}/users/{name}/enroll"
    made: dict[str, bytes] = {}
    builders: tuple[tuple[str, Callable[..., bytes]], ...] = (
        ("atak", packages.connection_package_atak),
        ("itak", packages.connection_package_itak),
    )
    for kind, build in builders:
        made[kind] = build(
            server_name=host,
            host=host,
            port=_stream_port(cfg),
            truststore=truststore,
            truststore_password=trust_pw,
            client_p12=client,
            client_password=client_pw,
            username=name,
            enroll=issued is None,
            package_uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{base}/{kind}")),
        )
    return ConnectionPackages(
        atak=made["atak"],
        itak=made["itak"],
        truststore_password=trust_pw,
        client_password=client_pw,
    )


def issue_link(
    cfg: config_mod.Config,
    directory: UserDirectory,
    name: str,
    *,
    ttl_s: float,
    out_dir: Path,
    now: dt.datetime,
) -> EnrollmentLink:
    """A new one-time token for ``name`` as a ``tak://`` enrollment link and its QR PNG."""
    token = directory.issue_token(name, ttl_s, now)
    url = packages.enrollment_url(cfg.public_host, name, token, port=_enroll_port(cfg))
    png = out_dir / f"{packages.safe_stem(name, 'user')}-enroll-qr.png"
    _write_private(png, packages.qr_png(url))
    return EnrollmentLink(url=url, expires_at=now + dt.timedelta(seconds=ttl_s), qr_png=png)


def add_user(
    cfg: config_mod.Config,
    *,
    name: str,
    org: str,
    profile: str | None = None,
    groups: Sequence[str] = (),
    in_groups: Sequence[str] | None = None,
    out_groups: Sequence[str] | None = None,
    password: str | None = None,
    token_ttl_s: float | None = DEFAULT_TOKEN_TTL_HOURS * 3600,
    out_dir: Path | None = None,
    now: dt.datetime | None = None,
) -> AddedUser:
    """Create the user, issue a client certificate and write the ATAK/WinTAK and iTAK packages
    (pre-issued certificate, tak-protocol.md 5.2 style (a)) and, with ``token_ttl_s``, a one-time
    enrollment link and its QR code, into ``out_dir`` (default DATA_DIR/packages/NAME/)."""
    t = now or dt.datetime.now(dt.UTC)
    server_pki = _ensure_pki(cfg, now)
    directory = _users(cfg)
    user = directory.add_user(
        name,
        org,
        profile=profile,
        groups=groups,
        in_groups=in_groups,
        out_groups=out_groups,
        password=password,
        now=t,
    )
    issued = issue_client_cert(server_pki, common_name=name, org=org, now=now)
    user = directory.add_cert_serial(name, issued.serial)
    made = connection_packages(cfg, server_pki, name, issued=issued)
    out = out_dir or default_out_dir(cfg, name)
    stem = packages.safe_stem(name, "user")
    atak_path = out / f"{stem}-atak.zip"
    itak_path = out / f"{stem}-itak.zip"
    _write_private(atak_path, made.atak)
    _write_private(itak_path, made.itak)
    link = None
    if token_ttl_s is not None:
        link = issue_link(cfg, directory, name, ttl_s=token_ttl_s, out_dir=out, now=t)
    return AddedUser(
        user=user,
        serial=issued.serial,
        not_after=issued.not_after,
        atak_package=atak_path,
        itak_package=itak_path,
        truststore_password=made.truststore_password,
        client_password=made.client_password or "",
        link=link,
    )


def revoke_user(cfg: config_mod.Config, name: str, now: dt.datetime | None = None) -> list[int]:
    """Block the user (no login, no enrollment, tokens dropped) and revoke every certificate
    issued to them; the CRL is re-signed. Returns the serials newly revoked."""
    serials = _users(cfg).revoke_user(name)
    server_pki = _pki_at(cfg)
    if not server_pki.ca_cert.exists():
        return []
    newly = revoke(server_pki, common_name=name, now=now)
    known = {r.serial for r in list_issued(server_pki)}
    for serial in serials:
        if serial in known and serial not in newly:
            newly += revoke(server_pki, serial=serial, now=now)
    return newly


def set_password(cfg: config_mod.Config, name: str, password: str | None) -> None:
    """Set (or with None, remove) the password of user ``name`` (the password rules of
    ``users.check_password_policy``: ValueError). Tokens already issued stay valid (docs/api.md,
    Revocation)."""
    directory = _users(cfg)
    if directory.get(name) is None:
        raise AdminError(f"no user named {name!r}")
    directory.set_password(name, password)


def new_link(
    cfg: config_mod.Config,
    name: str,
    *,
    ttl_s: float,
    out_dir: Path | None = None,
    now: dt.datetime | None = None,
) -> EnrollmentLink:
    """``liaison user token``: a new one-time enrollment link and its QR PNG for an existing
    user, once the server has a CA (a link is useless before)."""
    _existing_pki(cfg)
    directory = _users(cfg)
    if directory.get(name) is None:
        raise AdminError(f"no user named {name!r}")
    return issue_link(
        cfg,
        directory,
        name,
        ttl_s=ttl_s,
        out_dir=out_dir or default_out_dir(cfg, name),
        now=now or dt.datetime.now(dt.UTC),
    )


def check_group_args(
    groups: Sequence[str] | None, in_groups: Sequence[str] | None, out_groups: Sequence[str] | None
) -> None:
    """The group arguments of ``user add``: ``groups`` (both directions), or ``in_groups`` and
    ``out_groups`` together."""
    if groups is not None and (in_groups is not None or out_groups is not None):
        raise AdminError("use --groups, or --in-groups/--out-groups, not both")
    if (in_groups is None) != (out_groups is None):
        # One side alone would leave the other empty (__ANON__): say so instead.
        raise AdminError("--in-groups and --out-groups go together")


# --- Doctor ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DoctorReport:
    expiring: list[tuple[str, dt.datetime]]
    problems: list[str]

    @property
    def healthy(self) -> bool:
        return not self.expiring and not self.problems


def doctor(
    cfg: config_mod.Config,
    *,
    within_days: int = DOCTOR_WINDOW_DAYS,
    now: dt.datetime | None = None,
) -> DoctorReport:
    """What expires within ``within_days`` and what stops devices reaching ``public_host``."""
    server_pki = _pki_at(cfg)
    if not server_pki.ca_cert.exists():
        return DoctorReport(
            expiring=[],
            problems=[
                f"no certificate authority in {server_pki.directory} yet: start the server "
                "once or import one with `liaison ca import`"
            ],
        )
    t = now or dt.datetime.now(dt.UTC)
    # A CRL always expires within CRL_VALIDITY_DAYS (30) of its signing, so it is reported only
    # once it is past half its life, when the server would re-sign it at its next start.
    crl_due = t + dt.timedelta(days=CRL_VALIDITY_DAYS / 2)
    due = [
        (what, when)
        for what, when in expiring(server_pki, within_days, now=now)
        if what != CRL_ITEM or when <= crl_due
    ]
    problems = check_names(server_pki, cfg.public_host, now=now)
    return DoctorReport(expiring=due, problems=problems)


# --- Command line ---------------------------------------------------------------------------


def _read_secret(prompt: str, *, confirm: bool) -> str:
    """A password from the terminal (asked twice), or one line from standard input when it is
    not a terminal (scripts: ``echo "$PW" | liaison user passwd NAME``). Never from argv, where
    other users of the machine could read it in the process list."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"{prompt}: ")
    if confirm and getpass.getpass(f"{prompt} again: ") != first:
        raise AdminError("the two passwords differ")
    return first


def _groups_arg(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [g.strip() for g in value.split(",") if g.strip()]


def check_token_hours(hours: float) -> float:
    """An enrollment token lifetime in hours, within the users file's bounds (ValueError)."""
    if not MIN_TOKEN_TTL_S <= hours * 3600 <= MAX_TOKEN_TTL_S:
        raise ValueError(
            f"token lifetime must be {MIN_TOKEN_TTL_S / 3600:g}..{MAX_TOKEN_TTL_S / 3600:g} hours"
        )
    return hours


def _hours(value: str) -> float:
    try:
        hours = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of hours: {value!r}") from None
    try:
        return check_token_hours(hours)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _when(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _print_link(link: EnrollmentLink, name: str) -> None:
    print(f"Enrollment by QR code: one use, until {_when(link.expires_at)}.")
    print(f"  In ATAK or iTAK, scan the code below or {link.qr_png}; {name} then signs in")
    print("  with the link's token and the device gets its own certificate.")
    print(f"  {link.url}")
    print(packages.qr_terminal(link.url), end="")


def cmd_user_add(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    password = _read_secret(f"Password for {args.name}", confirm=True) if args.password else None
    groups = _groups_arg(args.groups) or []
    added = add_user(
        cfg,
        name=args.name,
        org=args.org,
        profile=args.profile,
        groups=groups,
        in_groups=_groups_arg(args.in_groups),
        out_groups=_groups_arg(args.out_groups),
        password=password,
        token_ttl_s=None if args.password else args.token_ttl * 3600,
        out_dir=Path(args.out) if args.out else None,
    )
    u = added.user
    print(f"Added {u.name} (organisation {u.org}).")
    print(f"  groups IN: {', '.join(u.in_groups) or '__ANON__'}")
    print(f"  groups OUT: {', '.join(u.out_groups) or '__ANON__'}")
    if u.profile:
        print(f"  device profile: {u.profile}")
    print(
        f"Client certificate serial {added.serial:x}, valid until {_when(added.not_after)}, "
        f"for {cfg.public_host}:{_stream_port(cfg)}:ssl."
    )
    print("Wrote (they hold the private key: hand them over like a password):")
    print(f"  {added.atak_package}  ATAK and WinTAK: import this data package")
    print(f"  {added.itak_package}  iTAK: add a server from this package")
    print("The keystore passwords are inside both packages. Only a device that asks for them,")
    print("when you import a .p12 file by hand, needs them:")
    print(f"  truststore password  {added.truststore_password}")
    print(f"  certificate password {added.client_password}")
    if added.link is not None:
        _print_link(added.link, u.name)
    else:
        print(f"For enrollment by QR code, run: liaison user token {u.name}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    users = _users(cfg).list_users()
    if not users:
        print("No users. Add one with: liaison user add NAME --org ORG")
        return 0
    revoked: frozenset[int] = frozenset()
    server_pki = _pki_at(cfg)
    if server_pki.db is not None or server_pki.index.exists():  # the database's, or the file's
        revoked = revoked_serials(server_pki)
    now = dt.datetime.now(dt.UTC)
    rows = [("NAME", "ORG", "GROUPS IN/OUT", "PROFILE", "SIGN-IN", "CERTS", "STATUS")]
    for u in users:
        signin = []
        # A revoked user cannot sign in at all, whatever is still stored (users.py refuses).
        if u.password_hash and not u.revoked:
            signin.append("password")
        live_tokens = 0 if u.revoked else sum(1 for t in u.tokens if t.live(now))
        if live_tokens:
            signin.append(f"{live_tokens} token{'s' if live_tokens > 1 else ''}")
        n_revoked = sum(1 for s in u.cert_serials if s in revoked)
        certs = f"{len(u.cert_serials) - n_revoked} live"
        if n_revoked:
            certs += f", {n_revoked} revoked"
        rows.append(
            (
                u.name,
                u.org,
                f"{','.join(u.in_groups) or '__ANON__'}/{','.join(u.out_groups) or '__ANON__'}",
                u.profile or "-",
                " + ".join(signin) or "-",
                certs,
                "revoked" if u.revoked else "active",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_user_revoke(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    newly = revoke_user(cfg, args.name)
    print(f"Revoked {args.name}: no more sign-in or enrollment; enrollment tokens dropped.")
    if newly:
        print(f"Revoked {len(newly)} certificate(s): {', '.join(f'{s:x}' for s in newly)}")
        print(f"The CRL was re-signed: {_pki_at(cfg).crl}")
    else:
        print("No live certificate was left to revoke.")
    print("A running server refuses these certificates at the next connection and closes the")
    print("user's open sessions within a few seconds.")
    if cfg.cluster_nats:
        print("This node, once running, announces the revocation to every node of its cluster.")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if _users(cfg).get(args.name) is None:
        raise AdminError(f"no user named {args.name!r}")
    if args.clear:
        set_password(cfg, args.name, None)
        print(f"Removed the password of {args.name}.")
        return 0
    set_password(cfg, args.name, _read_secret(f"New password for {args.name}", confirm=True))
    print(f"Set the password of {args.name}.")
    return 0


def cmd_user_token(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    link = new_link(
        cfg, args.name, ttl_s=args.ttl * 3600, out_dir=Path(args.out) if args.out else None
    )
    _print_link(link, args.name)
    return 0


def _describe_cert(label: str, cert: x509.Certificate) -> None:
    print(f"{label}: {cert.subject.rfc4514_string()}")
    print(f"  issuer   {cert.issuer.rfc4514_string()}")
    print(f"  valid    {_when(cert.not_valid_before_utc)} to {_when(cert.not_valid_after_utc)}")
    print(f"  SHA-256  {fingerprint_sha256(cert)}")


def cmd_ca_import(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    try:
        cert_pem = Path(args.cert).read_bytes()
        key_pem = Path(args.key).read_bytes()
        chain_pem = Path(args.chain).read_bytes() if args.chain else None
    except OSError as exc:
        raise AdminError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    key_password = None
    if b"ENCRYPTED" in key_pem:  # PKCS#8 "ENCRYPTED PRIVATE KEY" or a Proc-Type: 4,ENCRYPTED
        key_password = _read_secret("CA key password", confirm=False).encode("utf-8")
    server_pki = import_ca(
        cfg.data_dir,
        cert_pem,
        key_pem,
        chain_pem,
        key_password=key_password,
        replace=args.replace,
        db=identity_db(cfg),
    )
    _describe_cert("Imported signing CA", load_ca_cert(server_pki))
    for i, c in enumerate(load_chain(server_pki)[1:]):
        print(f"  chain {i}: {c.subject.rfc4514_string()}")
    print("Restart the server: it issues its own certificate under this CA at startup.")
    if args.replace:
        print("The previous CA was moved to pki/retired/. Devices enrolled under it can no")
        print("longer connect: hand them new packages or let them enroll again.")
    return 0


def cmd_ca_show(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    server_pki = _existing_pki(cfg)
    chain = load_chain(server_pki)
    _describe_cert("Signing CA", chain[0])
    for i, c in enumerate(chain[1:]):
        _describe_cert(f"CA chain {i}", c)
    if server_pki.server_cert.exists():
        server = load_server_cert(server_pki)
        _describe_cert("Server certificate", server)
        try:
            san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            print(f"  names    {', '.join(str(n.value) for n in san)}")
        except x509.ExtensionNotFound:
            print("  names    (none)")
    records = list_issued(server_pki)
    n_revoked = sum(1 for r in records if r.revoked)
    print(f"Client certificates issued: {len(records)} ({n_revoked} revoked)")
    crl_pem = current_crl(server_pki)
    if crl_pem is not None:
        crl = x509.load_pem_x509_crl(crl_pem)
        nxt = crl.next_update_utc
        print(
            f"CRL: {server_pki.crl} ({len(crl)} entries, next update "
            f"{_when(nxt) if nxt else 'none'}); served at /crl.pem and /crl.der on the "
            "enrollment port"
        )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    now = dt.datetime.now(dt.UTC)
    report = doctor(cfg, within_days=args.days, now=now)
    if report.expiring:
        print(f"Expiring within {args.days} days:")
        for what, when in report.expiring:
            left = (when - now).days
            state = "EXPIRED" if when <= now else f"in {left} day{'s' if left != 1 else ''}"
            print(f"  {_when(when)}  {state:>12}  {what}")
    if report.problems:
        print(f"Problems with the public host {cfg.public_host}:")
        for problem in report.problems:
            print(f"  - {problem}")
    if report.healthy:
        print(f"All good: nothing expires within {args.days} days; {cfg.public_host} is in the")
        print("server certificate and looks reachable from devices.")
        return 0
    return 1


def _guarded(func: _Command) -> _Command:
    """Turn the errors a person can fix (unknown user, bad name, missing CA) into a message."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (AdminError, ValueError) as exc:
            print(f"liaison: {exc}", file=sys.stderr)
            return 1
        except KeyError as exc:
            print(f"liaison: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 1
        except PkiError as exc:
            print(f"liaison: {exc}", file=sys.stderr)
            return 1

    return run


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``user``, ``ca`` and ``doctor`` to the ``liaison`` command."""
    user = subparsers.add_parser("user", help="add, list and revoke users; passwords, tokens")
    user_sub = user.add_subparsers(dest="user_command", metavar="COMMAND")
    user.set_defaults(func=_help(user))

    p = user_sub.add_parser(
        "add", help="create a user, issue a certificate, write connection packages and a QR code"
    )
    p.add_argument("name", help="user name: becomes the certificate CN and TAK username")
    p.add_argument("--org", required=True, help="organisation: becomes the certificate O")
    p.add_argument("--profile", help="device profile name (folder under DATA_DIR/profiles/)")
    groups = p.add_mutually_exclusive_group()
    groups.add_argument("--groups", help="comma-separated groups, both IN and OUT")
    groups.add_argument("--in-groups", help="comma-separated IN groups (where messages go)")
    p.add_argument("--out-groups", help="comma-separated OUT groups (what the user sees)")
    login = p.add_mutually_exclusive_group()
    login.add_argument(
        "--password",
        action="store_true",
        help="set a password (asked on the terminal, or one line on standard input) "
        "instead of issuing an enrollment token",
    )
    login.add_argument(
        "--token-ttl",
        type=_hours,
        default=DEFAULT_TOKEN_TTL_HOURS,
        metavar="HOURS",
        help=f"lifetime of the QR code's one-time token (default {DEFAULT_TOKEN_TTL_HOURS:g})",
    )
    p.add_argument("--out", help="folder for the packages (default DATA_DIR/packages/NAME/)")
    add_config_args(p)
    add_listener_args(p)
    p.set_defaults(func=_guarded(_check_groups(cmd_user_add)))

    p = user_sub.add_parser("list", help="list users, their sign-in and certificates")
    add_config_args(p)
    p.set_defaults(func=_guarded(cmd_user_list))

    p = user_sub.add_parser("revoke", help="revoke a user and every certificate issued to them")
    p.add_argument("name")
    add_config_args(p)
    p.set_defaults(func=_guarded(cmd_user_revoke))

    p = user_sub.add_parser("passwd", help="set (or --clear) a user's password")
    p.add_argument("name")
    p.add_argument("--clear", action="store_true", help="remove the password")
    add_config_args(p)
    p.set_defaults(func=_guarded(cmd_user_passwd))

    p = user_sub.add_parser("token", help="a new one-time enrollment link and QR code")
    p.add_argument("name")
    p.add_argument("--ttl", type=_hours, default=DEFAULT_TOKEN_TTL_HOURS, metavar="HOURS")
    p.add_argument("--out", help="folder for the QR code PNG (default DATA_DIR/packages/NAME/)")
    add_config_args(p)
    add_listener_args(p)
    p.set_defaults(func=_guarded(cmd_user_token))

    ca = subparsers.add_parser("ca", help="import or show the certificate authority")
    ca_sub = ca.add_subparsers(dest="ca_command", metavar="COMMAND")
    ca.set_defaults(func=_help(ca))
    p = ca_sub.add_parser("import", help="use an enterprise CA (or an intermediate of one)")
    p.add_argument("--cert", required=True, help="CA certificate, PEM (its chain may follow)")
    p.add_argument("--key", required=True, help="CA private key, PEM")
    p.add_argument("--chain", help="certificates above the CA up to the root, PEM")
    p.add_argument("--replace", action="store_true", help="replace an existing CA")
    add_config_args(p)
    p.set_defaults(func=_guarded(cmd_ca_import))
    p = ca_sub.add_parser("show", help="the CA, the server certificate and the CRL")
    add_config_args(p)
    p.set_defaults(func=_guarded(cmd_ca_show))

    p = subparsers.add_parser(
        "doctor", help="certificates expiring soon and problems with the public host"
    )
    p.add_argument("--days", type=int, default=DOCTOR_WINDOW_DAYS, help="warning window")
    add_config_args(p)
    p.set_defaults(func=_guarded(cmd_doctor))


def _help(parser: argparse.ArgumentParser) -> _Command:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


def _check_groups(func: _Command) -> _Command:
    def run(args: argparse.Namespace) -> int:
        check_group_args(args.groups, args.in_groups, args.out_groups)
        return func(args)

    return run
