"""Configuration: one frozen object built from defaults, a TOML file, the environment and flags.

Precedence, lowest first: built-in defaults, the TOML file (``--config`` or ``LIAISON_CONFIG``),
environment variables, command-line flags. Every setting is declared once in :data:`SETTINGS`
with its default, its environment variable and a sentence of documentation; docs/configuration.md
lists the same table and a test keeps the two in step. Errors name the key.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liaison.errors import ConfigError
from liaison.identity.directory_config import DirectoryConfig, parse_directory
from liaison.identity.listeners import descriptions as listener_descriptions


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host and port to listen on."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# What each listener is and the flag that moves it, for "cannot listen on ..." (item 14), by
# config key; the descriptions live with the listener kinds (identity/listeners.py).
LISTENER_NAMES: dict[str, str] = listener_descriptions()


def parse_endpoint(key: str, value: object) -> Endpoint | None:
    """``HOST:PORT``, ``:PORT`` (all interfaces), ``PORT``, or ``off``."""
    if value is None or value is False:
        return None
    text = str(value).strip()
    if text.lower() in ("off", "none", "false", ""):
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(key, f"expected HOST:PORT or 'off', got {text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"port {port} out of range 0..65535")
    return Endpoint(host, port)


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(key, f"expected true or false, got {value!r}")


def _positive_float(key: str, value: object) -> float:
    try:
        f = float(str(value))
    except ValueError:
        raise ConfigError(key, f"expected a number, got {value!r}") from None
    if f <= 0:
        raise ConfigError(key, "must be greater than 0")
    return f


def _non_negative_float(key: str, value: object) -> float:
    try:
        f = float(str(value))
    except ValueError:
        raise ConfigError(key, f"expected a number, got {value!r}") from None
    if not f >= 0:
        raise ConfigError(key, "must not be negative")
    return f


def _non_negative_int(key: str, value: object) -> int:
    try:
        n = int(str(value))
    except ValueError:
        raise ConfigError(key, f"expected a whole number, got {value!r}") from None
    if n < 0:
        raise ConfigError(key, "must not be negative")
    return n


def _path(key: str, value: object) -> Path:
    text = str(value).strip()
    if not text:
        raise ConfigError(key, "must not be empty")
    return Path(text)


def _optional_path(key: str, value: object) -> Path | None:
    text = str(value).strip() if value is not None else ""
    return Path(text) if text else None


def _optional_host(key: str, value: object) -> str | None:
    """A host name or address (letters, digits, ``.``, ``-``, ``:``), or None when empty."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    if len(text) > 253 or not all(c.isascii() and (c.isalnum() or c in ".-:") for c in text):
        raise ConfigError(key, f"expected a host name or address, got {value!r}")
    return text


def _token_ttl(key: str, value: object) -> int:
    """A token lifetime in whole seconds, 60..86400 (short by design: docs/api.md, Tokens)."""
    try:
        n = int(str(value))
    except ValueError:
        raise ConfigError(key, f"expected whole seconds, got {value!r}") from None
    if not 60 <= n <= 86400:
        raise ConfigError(key, "must be 60..86400 seconds")
    return n


def _text(key: str, value: object) -> str:
    text = str(value).strip()
    if not text:
        raise ConfigError(key, "must not be empty")
    return text


def _choice(*choices: str) -> Callable[[str, object], str]:
    def parse(key: str, value: object) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ConfigError(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


def _storage(key: str, value: object) -> str:
    """``sqlite``, ``memory`` (any case) or a ``postgresql://`` / ``postgres://`` URL (as given)."""
    text = str(value).strip()
    if text.lower() in ("sqlite", "memory"):
        return text.lower()
    scheme, sep, rest = text.partition("://")
    if scheme in ("postgresql", "postgres") and rest:
        return text
    shown = f"{scheme}://..." if sep else text  # a URL's rest may hold a password: not echoed
    raise ConfigError(key, f"expected sqlite, memory or a postgresql:// URL, got {shown!r}")


def _regex(key: str, value: object) -> str:
    text = str(value)
    try:
        compiled = re.compile(text)
    except re.error as exc:
        raise ConfigError(key, f"not a valid regular expression: {exc}") from None
    if compiled.groups < 1:
        raise ConfigError(key, "needs one capturing group: the username")
    return text


def _names(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list):
        items = [str(v).strip() for v in value]
    else:
        raise ConfigError(key, "expected a list of names or a comma-separated string")
    return tuple(v for v in items if v)


def _nats_urls(key: str, value: object) -> tuple[str, ...]:
    """NATS server URLs (``nats://`` or ``tls://``), as a list or comma-separated."""
    urls = _names(key, value)
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if scheme not in ("nats", "tls") or not sep or not rest:
            raise ConfigError(key, f"expected nats://HOST:PORT or tls://HOST:PORT, got {url!r}")
    return urls


def _bus_token(key: str, value: object) -> str:
    """A NATS subject token or stream name: letters, digits, ``-`` and ``_``."""
    text = _text(key, value)
    if len(text) > 64 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in text):
        raise ConfigError(key, f"expected letters, digits, - or _ (at most 64), got {value!r}")
    return text


def _optional_bus_token(key: str, value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return _bus_token(key, text) if text else None


def _positive_int(key: str, value: object) -> int:
    n = _non_negative_int(key, value)
    if n < 1:
        raise ConfigError(key, "must be at least 1")
    return n


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration key: where it lives in TOML, its environment variable, how to parse it."""

    key: str  # "section.name" in the TOML file
    attr: str  # the Config attribute
    env: str | None
    parse: Callable[[str, object], Any]
    doc: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The effective configuration. Built by :func:`load`; never mutated."""

    data_dir: Path = Path("liaison-data")
    public_host: str = "localhost"
    server_names: tuple[str, ...] = ()
    tcp: Endpoint | None = field(default_factory=lambda: Endpoint("0.0.0.0", 8087))
    tls: Endpoint | None = field(default_factory=lambda: Endpoint("0.0.0.0", 8089))
    udp: Endpoint | None = field(default_factory=lambda: Endpoint("0.0.0.0", 8087))
    multicast: Endpoint | None = None
    https: Endpoint | None = field(default_factory=lambda: Endpoint("0.0.0.0", 8443))
    enroll: Endpoint | None = field(default_factory=lambda: Endpoint("0.0.0.0", 8446))
    http: Endpoint | None = None
    multicast_interface: str = "0.0.0.0"
    tcp_auth: bool = False
    tls_auth: bool = False
    offer_protobuf: bool = True
    mission_strict_membership: bool = True
    mission_chat_host: str | None = None
    cert_username_regex: str = r"CN=((?:[^,\\]|\\.)+)"
    groups_file: Path | None = None
    users_file: Path | None = None
    idle_timeout_s: float = 0.0
    auth_timeout_s: float = 15.0
    frame_timeout_s: float = 120.0
    keepalive_idle_s: int = 60
    keepalive_interval_s: int = 10
    keepalive_count: int = 6
    max_event_bytes: int = 1024 * 1024
    max_pending: int = 10_000
    write_batch_ms: float = 10.0
    http_header_timeout_s: float = 10.0
    http_idle_timeout_s: float = 60.0
    http_max_unauthenticated: int = 64
    token_access_ttl_s: int = 600
    token_refresh_ttl_s: int = 8 * 3600
    operator_group: str = "liaison-operators"
    storage: str = "sqlite"
    retention_days: int = 30
    policy_file: Path | None = None
    mbtiles: Path | None = None
    pmtiles: Path | None = None
    audit_sync_ms: float = 200.0
    log_level: str = "info"
    cluster_nats: tuple[str, ...] = ()  # NATS server URLs; empty: one node, no bus
    cluster_node: str | None = None  # this node's name on the bus (default: host name and port)
    cluster_prefix: str = "liaison"
    cluster_stream: str = "LIAISON_EVENTS"
    cluster_replicas: int = 1
    cluster_max_age_s: float = 3600.0
    # The [directory] section (LDAP / Active Directory sign-in, docs/directory.md); None: off.
    directory: DirectoryConfig | None = None
    # Set by `liaison serve --workers N` for its workers only (cli.py, docs/deployment.md), never
    # from a file or the environment: this worker's number (1..N), and every listener bound with
    # SO_REUSEPORT so the N workers share the ports.
    worker: int | None = None
    reuse_port: bool = False

    def resolved_users_file(self) -> Path:
        return self.users_file or self.data_dir / "users.json"


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "server.data_dir",
        "data_dir",
        "LIAISON_DATA_DIR",
        _path,
        "Folder for the database, the CA and certificates, users and logs.",
    ),
    Setting(
        "server.public_host",
        "public_host",
        "LIAISON_PUBLIC_HOST",
        _text,
        "Host name or address clients use to reach this server; goes into the server"
        " certificate and connection packages.",
    ),
    Setting(
        "server.names",
        "server_names",
        "LIAISON_SERVER_NAMES",
        _names,
        "Extra DNS names or IP addresses for the server certificate.",
    ),
    Setting(
        "listeners.tcp",
        "tcp",
        "LIAISON_TCP",
        parse_endpoint,
        "Plain TCP CoT streaming listener, HOST:PORT or off.",
    ),
    Setting(
        "listeners.tls",
        "tls",
        "LIAISON_TLS",
        parse_endpoint,
        "Mutual-TLS CoT streaming listener, HOST:PORT or off.",
    ),
    Setting(
        "listeners.udp",
        "udp",
        "LIAISON_UDP",
        parse_endpoint,
        "UDP CoT input (one event per datagram, XML or mesh protobuf), HOST:PORT or off.",
    ),
    Setting(
        "listeners.multicast",
        "multicast",
        "LIAISON_MULTICAST",
        parse_endpoint,
        "Multicast mesh group to bridge both ways (ATAK's is 239.2.3.1:6969), or off.",
    ),
    Setting(
        "listeners.https",
        "https",
        "LIAISON_HTTPS",
        parse_endpoint,
        "HTTPS for TAK clients and the API, client certificate required, HOST:PORT or off.",
    ),
    Setting(
        "listeners.enroll",
        "enroll",
        "LIAISON_ENROLL",
        parse_endpoint,
        "HTTPS with password sign-in and no client certificate: enrollment and the web map.",
    ),
    Setting(
        "listeners.http",
        "http",
        "LIAISON_HTTP",
        parse_endpoint,
        "Plain HTTP Marti API (what ATAK uses with a plain TCP server), HOST:PORT or off.",
    ),
    Setting(
        "listeners.multicast_interface",
        "multicast_interface",
        None,
        _text,
        "Local IPv4 address of the interface that joins the multicast group.",
    ),
    Setting(
        "auth.tcp",
        "tcp_auth",
        "LIAISON_TCP_AUTH",
        _bool,
        "Require <auth> username and password as the first message on the TCP listener.",
    ),
    Setting(
        "auth.tls",
        "tls_auth",
        None,
        _bool,
        "Also require <auth> on the TLS listener, after the client certificate.",
    ),
    Setting(
        "auth.cert_username_regex",
        "cert_username_regex",
        None,
        _regex,
        "Regular expression whose first group, searched in the certificate subject"
        " (RFC 4514 form), is the username (TAK Server's DNUsernameExtractorRegex).",
    ),
    Setting(
        "auth.groups_file",
        "groups_file",
        "LIAISON_GROUPS_FILE",
        _optional_path,
        "TOML file mapping users and certificate fields to IN/OUT groups.",
    ),
    Setting(
        "auth.users_file",
        "users_file",
        None,
        _optional_path,
        "Users file with hashed passwords (default DATA_DIR/users.json); not used with "
        "PostgreSQL storage, where users are in the database.",
    ),
    Setting(
        "protocol.offer_protobuf",
        "offer_protobuf",
        None,
        _bool,
        "Offer TAK protocol v1 (protobuf) to stream clients with t-x-takp-v.",
    ),
    Setting(
        "missions.strict_membership",
        "mission_strict_membership",
        None,
        _bool,
        "Strict mission membership (TAK's MissionStrictUidMissionMembership): an event whose"
        " uid is a mission's item and that does not name that mission is dropped, and an item"
        " cannot join a second mission.",
    ),
    Setting(
        "missions.chat_host",
        "mission_chat_host",
        None,
        _optional_host,
        "Host name of the mission chat rooms (TAK's takServerHost): set, a GeoChat sent to a"
        " mission reaches its subscribers in the room HOST-8443-ssl-NAME; unset (the default),"
        " unchanged.",
    ),
    Setting(
        "limits.idle_timeout_s",
        "idle_timeout_s",
        None,
        _non_negative_float,
        "Seconds without one complete frame before a stream client is dropped; 0 (the"
        " default) never drops a client for being quiet, so listen-only clients stay. Checked"
        " once a second, like auth_timeout_s and frame_timeout_s.",
    ),
    Setting(
        "limits.auth_timeout_s",
        "auth_timeout_s",
        None,
        _positive_float,
        "Seconds an <auth> listener waits for the <auth> message.",
    ),
    Setting(
        "limits.frame_timeout_s",
        "frame_timeout_s",
        None,
        _non_negative_float,
        "Seconds a stream client may take to finish a frame it has started (a client that"
        " drips bytes is dropped); 0 never.",
    ),
    Setting(
        "limits.keepalive_idle_s",
        "keepalive_idle_s",
        None,
        _non_negative_int,
        "TCP keepalive on stream connections: seconds of silence before the first probe"
        " (TCP_KEEPIDLE); 0 turns keepalive off.",
    ),
    Setting(
        "limits.keepalive_interval_s",
        "keepalive_interval_s",
        None,
        _non_negative_int,
        "Seconds between TCP keepalive probes (TCP_KEEPINTVL).",
    ),
    Setting(
        "limits.keepalive_count",
        "keepalive_count",
        None,
        _non_negative_int,
        "Unanswered TCP keepalive probes before the connection is dropped (TCP_KEEPCNT).",
    ),
    Setting(
        "limits.max_event_bytes",
        "max_event_bytes",
        None,
        _non_negative_int,
        "Largest stream frame read, in bytes, XML or protobuf; a longer one closes the"
        " session. Events are also refused (session kept) past the fixed limits of"
        " docs/protocol.md, Limits (48 KiB per event).",
    ),
    Setting(
        "limits.max_pending",
        "max_pending",
        None,
        _non_negative_int,
        "Events that may wait for one slow reader before it is disconnected.",
    ),
    Setting(
        "limits.write_batch_ms",
        "write_batch_ms",
        None,
        _non_negative_float,
        "Under load, milliseconds between batched writes to each client (0 writes at once).",
    ),
    Setting(
        "limits.http_header_timeout_s",
        "http_header_timeout_s",
        None,
        _positive_float,
        "Seconds an HTTP(S) client has for the TLS handshake, and for each request from its first "
        "byte to the end of its headers; slower connections are closed (slowloris).",
    ),
    Setting(
        "limits.http_idle_timeout_s",
        "http_idle_timeout_s",
        None,
        _positive_float,
        "Seconds an HTTP(S) connection may wait, after connecting or between requests, before "
        "the first byte of its next request; idle keep-alive connections are then closed.",
    ),
    Setting(
        "limits.http_max_unauthenticated",
        "http_max_unauthenticated",
        None,
        _non_negative_int,
        "Connections one client address may hold on an HTTP(S) listener before any request on "
        "them is authenticated; more are closed at once (0: no limit).",
    ),
    Setting(
        "tokens.access_ttl_s",
        "token_access_ttl_s",
        None,
        _token_ttl,
        "Seconds a bearer access token from POST /oauth/token is valid (60..86400; docs/api.md, "
        "Tokens).",
    ),
    Setting(
        "tokens.refresh_ttl_s",
        "token_refresh_ttl_s",
        None,
        _token_ttl,
        "Seconds a refresh token is valid (60..86400); a chain of refreshes never outlasts 24 h "
        "from the password sign-in.",
    ),
    Setting(
        "roles.operator_group",
        "operator_group",
        "LIAISON_OPERATOR_GROUP",
        _text,
        "Liaison group whose members (IN or OUT) are operators: only they may read /metrics and "
        "the admin routes (docs/api.md, Roles).",
    ),
    Setting(
        "storage.backend",
        "storage",
        "LIAISON_STORAGE",
        _storage,
        "Where events are kept: sqlite (DATA_DIR/liaison.db), memory (lost at exit), or a "
        "PostgreSQL database with PostGIS given as postgresql://USER[:PASSWORD]@HOST[:PORT]/DB "
        "(docs/storage.md), which then also keeps the missions and files, the users, issued "
        "certificates, CRL and web sign-ins, shared by every node on it (docs/deployment.md).",
    ),
    Setting(
        "storage.retention_days",
        "retention_days",
        None,
        _non_negative_int,
        "Days of event history to keep; 0 keeps everything. Latest state is always kept.",
    ),
    Setting(
        "labels.policy_file",
        "policy_file",
        "LIAISON_POLICY_FILE",
        _optional_path,
        "Label policy file ([policy], [authz], [gate]; docs/labels.md). Unset: labels off.",
    ),
    Setting(
        "labels.audit_sync_ms",
        "audit_sync_ms",
        None,
        _non_negative_float,
        "Milliseconds between fsyncs of the audit log (records are written before each"
        " release; 0 fsyncs every batch before releasing).",
    ),
    Setting(
        "cluster.nats",
        "cluster_nats",
        "LIAISON_CLUSTER_NATS",
        _nats_urls,
        "NATS servers (nats://HOST:PORT, comma-separated or a list) of the cluster this node"
        " shares its picture with through JetStream; empty (the default) runs one node"
        " (docs/deployment.md).",
    ),
    Setting(
        "cluster.node",
        "cluster_node",
        "LIAISON_CLUSTER_NODE",
        _optional_bus_token,
        "This node's name on the bus, unique in the cluster (default: host name, a dash and the"
        " port of the TLS listener, else the TCP one, else HTTPS; characters other than letters,"
        " digits, - and _ become -; at most 64).",
    ),
    Setting(
        "cluster.prefix",
        "cluster_prefix",
        None,
        _bus_token,
        "First token of the cluster's NATS subjects (PREFIX.ev.g.GROUP; revocations"
        " PREFIX.rv.u.NAME and PREFIX.rv.c.SERIAL, sign-outs PREFIX.so).",
    ),
    Setting(
        "cluster.stream",
        "cluster_stream",
        None,
        _bus_token,
        "Name of the JetStream stream that keeps the cluster's events; the cluster's revocations"
        " are kept in the stream of this name followed by `_REVOKED`.",
    ),
    Setting(
        "cluster.replicas",
        "cluster_replicas",
        None,
        _positive_int,
        "Copies JetStream keeps of each event (1 to 5; at most the number of NATS servers).",
    ),
    Setting(
        "cluster.max_age_s",
        "cluster_max_age_s",
        None,
        _positive_float,
        "Seconds the stream keeps an event.",
    ),
    Setting(
        "web.mbtiles",
        "mbtiles",
        "LIAISON_MBTILES",
        _optional_path,
        "An MBTiles file (raster, or vector: format pbf) the web map draws over its basemap.",
    ),
    Setting(
        "web.pmtiles",
        "pmtiles",
        "LIAISON_PMTILES",
        _optional_path,
        "A PMTiles v3 archive (vector or raster) the web map draws instead of web.mbtiles.",
    ),
    Setting(
        "log.level",
        "log_level",
        "LIAISON_LOG_LEVEL",
        _choice("debug", "info", "warning", "error"),
        "Log level.",
    ),
)

_BY_KEY = {s.key: s for s in SETTINGS}
_BY_ATTR = {s.attr: s for s in SETTINGS}


def load(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build the effective configuration; ``overrides`` maps Config attributes to raw values."""
    values: dict[str, Any] = {}
    environ = environ or {}
    if path is None and environ.get("LIAISON_CONFIG"):
        path = Path(environ["LIAISON_CONFIG"])
    if path is not None:
        values.update(_from_file(path, environ))
    for s in SETTINGS:
        if s.env and s.env in environ:
            values[s.attr] = s.parse(s.env, environ[s.env])
    for attr, raw in (overrides or {}).items():
        if raw is None:
            continue
        setting = _BY_ATTR.get(attr)
        if setting is None:
            raise ConfigError(attr, "unknown setting")
        values[attr] = setting.parse(f"--{attr.replace('_', '-')}", raw)
    config = Config(**values)
    _validate(config)
    return config


def _from_file(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    values: dict[str, Any] = {}
    for section, table in doc.items():
        if section == "directory":  # tables of its own, parsed apart (identity/directory_config)
            values["directory"] = parse_directory(table, base_dir=path.parent, environ=environ)
            continue
        if not isinstance(table, dict):
            raise ConfigError(section, "expected a [section] table")
        for name, raw in table.items():
            key = f"{section}.{name}"
            s = _BY_KEY.get(key)
            if s is None:
                raise ConfigError(key, "unknown setting")
            values[s.attr] = s.parse(key, raw)
    return values


def _validate(config: Config) -> None:
    if config.multicast is not None:
        try:
            addr = ipaddress.ip_address(config.multicast.host)
        except ValueError:
            raise ConfigError("listeners.multicast", "must be a multicast IP address") from None
        if not addr.is_multicast:
            raise ConfigError("listeners.multicast", f"{addr} is not a multicast address")
    if config.max_event_bytes < 1024:
        raise ConfigError("limits.max_event_bytes", "must be at least 1024")
    if config.max_pending < 1:
        raise ConfigError("limits.max_pending", "must be at least 1")
    if config.keepalive_idle_s:
        # Linux limits (tcp(7)): TCP_KEEPIDLE and TCP_KEEPINTVL 1..32767, TCP_KEEPCNT 1..127.
        if not 1 <= config.keepalive_idle_s <= 32767:
            raise ConfigError("limits.keepalive_idle_s", "must be 0 (off) or 1..32767")
        if not 1 <= config.keepalive_interval_s <= 32767:
            raise ConfigError("limits.keepalive_interval_s", "must be 1..32767")
        if not 1 <= config.keepalive_count <= 127:
            raise ConfigError("limits.keepalive_count", "must be 1..127")
    if config.cluster_replicas > 5:
        # JetStream's limit on a stream's replicas (NATS docs, "Streams", Replicas).
        raise ConfigError("cluster.replicas", "must be 1..5")


def describe(config: Config) -> str:
    """The effective configuration as TOML-like text, for ``liaison check-config``."""
    lines: list[str] = []
    section = ""
    for s in SETTINGS:
        sec, name = s.key.split(".", 1)
        if sec != section:
            section = sec
            lines.append(f"\n[{sec}]" if lines else f"[{sec}]")
        value = getattr(config, s.attr)
        if value is None:
            # Unset listeners read "off"; other unset values (paths) read as empty.
            shown = '"off"' if sec == "listeners" else '""'
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        elif isinstance(value, int | float):
            shown = str(value)
        elif isinstance(value, tuple):
            # NATS URLs may carry user:password, shown as *** like the storage URL's.
            shown = "[" + ", ".join(json.dumps(redacted_url(v)) for v in value) + "]"
        elif s.key == "storage.backend":
            shown = json.dumps(redacted_url(str(value)))  # a password is never printed
        else:
            shown = json.dumps(str(value))
        lines.append(f"{name} = {shown}")
    if config.directory is not None:
        lines += ["", *config.directory.describe()]  # the bind password shown as ***
    return "\n".join(lines) + "\n"


def redacted_url(url: str) -> str:
    """``url`` with the password of its user part (``scheme://user:PASSWORD@host``) shown as
    ``***``, for ``check-config``, messages and logs."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)
