"""The ``[directory]`` section of the configuration file: LDAP / Active Directory sign-in
(docs/directory.md). Pure: parses a TOML table (and reads the password file it names).

The section is parsed on its own, not through ``config.SETTINGS``, because it holds tables
(``[[directory.map]]``) that the flat ``section.key`` settings cannot express.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from liaison.errors import ConfigError

# Presets by directory kind: the user filter, where group memberships are read, and which entries
# count as disabled. Active Directory: sAMAccountName is the logon name; userAccountControl bit 2
# (0x2, ACCOUNTDISABLE) marks a disabled account, tested with the LDAP_MATCHING_RULE_BIT_AND rule
# 1.2.840.113556.1.4.803 ([MS-ADTS] 3.1.1.3.4.4.1 and 2.2.16 userAccountControl flags).
KINDS: dict[str, dict[str, str]] = {
    "openldap": {
        "user_filter": "(&(objectClass=person)(uid={username}))",
        "group_attribute": "memberOf",
        "disabled_filter": "",
    },
    "ad": {
        "user_filter": "(&(objectClass=user)(sAMAccountName={username}))",
        "group_attribute": "memberOf",
        "disabled_filter": "(userAccountControl:1.2.840.113556.1.4.803:=2)",
    },
}

# Bounds on the settings themselves.
MIN_REFRESH_S = 1.0
MAX_REFRESH_S = 24 * 3600.0
MIN_TIMEOUT_S = 0.5
MAX_TIMEOUT_S = 60.0
MAX_URLS = 8
MAX_MAPS = 1000
# The password file is a secret of a few dozen bytes; anything larger is a wrong path.
MAX_PASSWORD_FILE_BYTES = 4096

KEYS = {
    "kind",
    "urls",
    "start_tls",
    "ca_file",
    "bind_dn",
    "bind_password_file",
    "bind_password_env",
    "user_base",
    "user_filter",
    "group_attribute",
    "group_base",
    "group_filter",
    "disabled_filter",
    "require_group",
    "org",
    "refresh_s",
    "timeout_s",
    "map",
}
MAP_KEYS = {"group", "groups", "in", "out", "org", "profile"}


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupMap:
    """One ``[[directory.map]]``: what membership of directory group ``group`` (a DN) gives."""

    group: str  # as written
    key: str  # normalised DN, for comparison (``dn_key``)
    in_groups: tuple[str, ...] = ()
    out_groups: tuple[str, ...] = ()
    org: str | None = None
    profile: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectoryConfig:
    kind: str
    urls: tuple[str, ...]
    start_tls: bool
    ca_file: Path
    bind_dn: str
    # Where the password came from ("file PATH" or "env NAME", shown by check-config) and
    # the password (never shown).
    bind_password_source: str
    bind_password: str = field(repr=False)
    user_base: str
    user_filter: str
    group_attribute: str
    group_base: str
    group_filter: str
    disabled_filter: str
    require_group: bool
    org: str
    refresh_s: float
    timeout_s: float
    maps: tuple[GroupMap, ...]

    def describe(self) -> list[str]:
        """TOML lines for ``liaison check-config`` that load back to this configuration; the
        password itself is never printed (``***``), only where it is read from."""

        def q(v: str) -> str:
            return json.dumps(v)

        def names(vs: tuple[str, ...]) -> str:
            return "[" + ", ".join(q(v) for v in vs) + "]"

        kind, _, where = self.bind_password_source.partition(" ")
        source = "bind_password_file" if kind == "file" else "bind_password_env"
        lines = [
            "[directory]",
            f"kind = {q(self.kind)}",
            f"urls = {names(self.urls)}",
            f"start_tls = {'true' if self.start_tls else 'false'}",
            f"ca_file = {q(str(self.ca_file))}",
            f"bind_dn = {q(self.bind_dn)}",
            f"{source} = {q(where)}",
            '# bind_password = "***"',
            f"user_base = {q(self.user_base)}",
            f"user_filter = {q(self.user_filter)}",
            f"group_attribute = {q(self.group_attribute)}",
            f"group_base = {q(self.group_base)}",
            f"group_filter = {q(self.group_filter)}",
            f"disabled_filter = {q(self.disabled_filter)}",
            f"require_group = {'true' if self.require_group else 'false'}",
            f"org = {q(self.org)}",
            f"refresh_s = {self.refresh_s}",
            f"timeout_s = {self.timeout_s}",
        ]
        for m in self.maps:
            lines += ["", "[[directory.map]]", f"group = {q(m.group)}"]
            lines += [f"in = {names(m.in_groups)}", f"out = {names(m.out_groups)}"]
            lines += [f"org = {q(m.org)}"] if m.org else []
            lines += [f"profile = {q(m.profile)}"] if m.profile else []
        return lines


def dn_key(dn: str) -> str:
    """A DN normalised for comparison: attribute types and values lower-cased, spaces around
    the separators dropped (RFC 4514 section 3 DN syntax; directory group DNs compare
    case-insensitively in the usual schemas, e.g. ``cn`` is caseIgnoreMatch)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in dn:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch in ",;":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    out: list[str] = []
    for rdn in parts:
        kind, _, value = rdn.partition("=")
        out.append(f"{kind.strip().lower()}={value.strip().lower()}")
    return ",".join(out)


def _str(key: str, value: object, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ConfigError(key, "must be a non-empty string")
    return value.strip()


def _names(key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(key, "must be a list of non-empty strings")
    out: list[str] = []
    for v in value:
        if v.strip() not in out:
            out.append(v.strip())
    return tuple(out)


def _seconds(key: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, "must be a number of seconds")
    if not low <= float(value) <= high:
        raise ConfigError(key, f"must be {low:g}..{high:g}")
    return float(value)


def _filter(key: str, value: str, placeholder: str | None) -> str:
    if value and not (value.startswith("(") and value.endswith(")")):
        raise ConfigError(key, "must be an LDAP filter in parentheses (RFC 4515)")
    if placeholder is not None and placeholder not in value:
        raise ConfigError(key, f"must contain {placeholder}")
    return value


def _password(
    table: Mapping[str, object], base_dir: Path, environ: Mapping[str, str]
) -> tuple[str, str]:
    has_file = "bind_password_file" in table
    has_env = "bind_password_env" in table
    if has_file == has_env:
        raise ConfigError(
            "directory.bind_password_file",
            "set exactly one of bind_password_file, bind_password_env",
        )
    if has_file:
        path = (
            base_dir / _str("directory.bind_password_file", table["bind_password_file"])
        ).absolute()
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_PASSWORD_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                "directory.bind_password_file", f"cannot read {path}: {exc.strerror}"
            ) from None
        if len(raw) > MAX_PASSWORD_FILE_BYTES:
            raise ConfigError("directory.bind_password_file", f"{path} is not a password file")
        password = raw.decode("utf-8", errors="strict").rstrip("\r\n")
        source = f"file {path}"
    else:
        name = _str("directory.bind_password_env", table["bind_password_env"])
        if name not in environ:
            raise ConfigError("directory.bind_password_env", f"environment variable {name} unset")
        password = environ[name]
        source = f"env {name}"
    if not password:
        # An empty password would make the service bind an unauthenticated one (RFC 4513 5.1.2).
        raise ConfigError("directory.bind_password_file", "the service account password is empty")
    return password, source


def parse_directory(
    table: object, *, base_dir: Path, environ: Mapping[str, str] | None = None
) -> DirectoryConfig:
    """The ``[directory]`` table. Relative paths are relative to the configuration file."""
    if not isinstance(table, dict):
        raise ConfigError("directory", "expected a [directory] table")
    extra = set(table) - KEYS
    if extra:
        raise ConfigError(f"directory.{sorted(extra)[0]}", "unknown setting")
    kind = table.get("kind", "openldap")
    if kind not in KINDS:
        raise ConfigError("directory.kind", f"expected one of {', '.join(KINDS)}")
    preset = KINDS[kind]
    raw_urls = table.get("urls")
    if isinstance(raw_urls, str):
        raw_urls = [raw_urls]
    urls = _names("directory.urls", raw_urls)
    if not urls or len(urls) > MAX_URLS:
        raise ConfigError("directory.urls", f"must list 1..{MAX_URLS} ldap:// or ldaps:// URLs")
    for url in urls:
        if not url.lower().startswith(("ldap://", "ldaps://")):
            raise ConfigError("directory.urls", f"{url!r} is not an ldap:// or ldaps:// URL")
    start_tls = table.get("start_tls", False)
    if not isinstance(start_tls, bool):
        raise ConfigError("directory.start_tls", "expected true or false")
    if any(u.lower().startswith("ldap://") for u in urls) and not start_tls:
        # Passwords cross this connection: never in clear (RFC 4513 section 6.3.1).
        raise ConfigError(
            "directory.urls", "an ldap:// URL needs start_tls = true (or use ldaps://)"
        )
    if "ca_file" not in table:
        raise ConfigError(
            "directory.ca_file", "missing: the directory's certificate is always checked"
        )
    ca_file = (base_dir / _str("directory.ca_file", table["ca_file"])).absolute()
    try:
        # The same loading the connections do: a file without a PEM certificate fails here, at
        # start (and in check-config), not at the first sign-in.
        ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("directory.ca_file", f"{ca_file} holds no usable CA: {exc}") from None
    password, source = _password(table, base_dir, environ or {})
    require_group = table.get("require_group", True)
    if not isinstance(require_group, bool):
        raise ConfigError("directory.require_group", "expected true or false")
    group_filter = (
        _filter(
            "directory.group_filter",
            _str("directory.group_filter", table.get("group_filter", ""), empty=True),
            "{dn}",
        )
        if table.get("group_filter")
        else ""
    )
    group_base = _str("directory.group_base", table.get("group_base", ""), empty=True)
    if group_filter and not group_base:
        raise ConfigError("directory.group_base", "needed with group_filter")
    maps: list[GroupMap] = []
    raw_maps = table.get("map", [])
    if not isinstance(raw_maps, list) or len(raw_maps) > MAX_MAPS:
        raise ConfigError("directory.map", f"must be up to {MAX_MAPS} [[directory.map]] tables")
    for i, raw in enumerate(raw_maps):
        key = f"directory.map[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(key, "must be a table")
        bad = set(raw) - MAP_KEYS
        if bad:
            raise ConfigError(f"{key}.{sorted(bad)[0]}", "unknown key")
        group = _str(f"{key}.group", raw.get("group"))
        both = _names(f"{key}.groups", raw["groups"]) if "groups" in raw else ()
        ins = both + tuple(
            g for g in (_names(f"{key}.in", raw["in"]) if "in" in raw else ()) if g not in both
        )
        outs = both + tuple(
            g for g in (_names(f"{key}.out", raw["out"]) if "out" in raw else ()) if g not in both
        )
        org = _str(f"{key}.org", raw["org"]) if "org" in raw else None
        profile = _str(f"{key}.profile", raw["profile"]) if "profile" in raw else None
        if not ins and not outs and org is None and profile is None:
            raise ConfigError(key, "gives nothing (set groups, in, out, org or profile)")
        maps.append(
            GroupMap(
                group=group,
                key=dn_key(group),
                in_groups=ins,
                out_groups=outs,
                org=org,
                profile=profile,
            )
        )
    return DirectoryConfig(
        kind=kind,
        urls=urls,
        start_tls=start_tls,
        ca_file=ca_file,
        bind_dn=_str("directory.bind_dn", table.get("bind_dn")),
        bind_password_source=source,
        bind_password=password,
        user_base=_str("directory.user_base", table.get("user_base")),
        user_filter=_filter(
            "directory.user_filter",
            _str("directory.user_filter", table.get("user_filter", preset["user_filter"])),
            "{username}",
        ),
        group_attribute=_str(
            "directory.group_attribute",
            table.get("group_attribute", preset["group_attribute"]),
            empty=True,
        ),
        group_base=group_base,
        group_filter=group_filter,
        disabled_filter=_filter(
            "directory.disabled_filter",
            _str(
                "directory.disabled_filter",
                table.get("disabled_filter", preset["disabled_filter"]),
                empty=True,
            ),
            None,
        ),
        require_group=require_group,
        org=_str("directory.org", table.get("org")),
        refresh_s=_seconds(
            "directory.refresh_s", table.get("refresh_s", 60), MIN_REFRESH_S, MAX_REFRESH_S
        ),
        timeout_s=_seconds(
            "directory.timeout_s", table.get("timeout_s", 5), MIN_TIMEOUT_S, MAX_TIMEOUT_S
        ),
        maps=tuple(maps),
    )
