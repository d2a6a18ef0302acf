"""Federation settings: the ``[federation]`` table and its ``[[federation.peer]]`` entries (TOML).

Pure: the caller reads the file and passes its text (and the label policy the ceilings are
written in). Every error is a ConfigError naming the key, e.g. ``federation.peer[0].fingerprint``.
Every key and its default is named below and in the constants of this module; an example::

    [federation]
    server_id = "usa-liaison"          # this server's id on every link (default: public host)
    listen = "0.0.0.0:9006"            # where accepted peers connect, or "off"
    lease_ttl_s = 8.0                  # cluster only: the federation lease (federation/lease.py)
    lease_renew_s = 1.5                # cluster only: renewal interval, at most half the TTL

    [[federation.peer]]
    name = "ukr"
    dial = "ukr.example.net:9006"      # or: accept = true
    ca_file = "peers/ukr-ca.pem"       # the peer's CA (PEM)
    fingerprint = "AB:CD:..."          # SHA-256 of the peer's own certificate
    release_ceiling = { classification = "SECRET", REL = ["UKR", "LIAISON"] }
    originate = { org = "UKR", classification = "SECRET", REL = ["UKR", "LIAISON"] }
    allow_types = ["a-", "b-t-f", "b-a-o", "t-x-d-d"]
    detail_policy = "remove"           # or "deny": what to do with a detail not allowed
    in_groups = ["ukr-partner"]        # local groups the peer's events are written into
    out_groups = ["__ANON__"]          # local groups whose events may be released to the peer
    # TAK peers, instead of in_groups/out_groups (federation/fed_groups.py):
    # groups_in = { "FedBlue" = ["ukr-partner"], "*" = ["ukr-partner"] }
    # groups_out = { "__ANON__" = ["FedBlue"] }
    coalesce = true
    missions = ["ops"]                 # missions whose items cross (any protocol; "*" = all)
    [federation.peer.details]          # per CoT type prefix (longest wins); "*" for the rest
    "a-" = ["contact", "__group", "track", "status", "precisionlocation", "takv", "uid"]
    "b-t-f" = ["__chat", "link", "remarks", "__serverdestination", "marti"]
    [federation.peer.priority]         # CoT type prefix -> class, 0 first
    "b-a-o" = 0
    "b-t-f" = 1
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from liaison.errors import ConfigError
from liaison.model.labels import AuthSet, Label, Policy, validate_label
from liaison.model.policy import authset_from_table, normalize_fingerprint
from liaison.model.principal import ANON_GROUP
from liaison.protocol.federation import MAX_PRIORITY, SERVER_ID_RE

# The federation listener's default port: a port of the native link's own. It was 9001, which is
# TAK Server's federation v2 port (tak-federation.md 1.1): a Liaison next to a TAK Server could
# not listen there, and a TAK administrator reads 9001 as "speaks FIG". 9006 is used by none of
# TAK Server (8087-8089, 8443-8446, 9000-9002), its Federation Hub (9100-9103) or
# ots-federation (9101) (tak-federation.md 1.1).
DEFAULT_PORT = 9006
# The old default: still accepted as a listen port, with a warning when a native peer uses it.
TAK_V2_PORT = 9001

# Seconds between HEARTBEATs on an idle link; a link that hears nothing for IDLE_FACTOR times
# this is presumed dead (a pulled cable gives no TCP reset). TAK Server's federation health
# check runs every 3 s by default (tak-protocol.md 6.2); 5 s is gentler on a thin link.
DEFAULT_HEARTBEAT_S = 5.0
IDLE_FACTOR = 3.0

# Reconnect backoff: first retry after about 1 s, doubling to at most 60 s, with up to half of
# each delay randomised so two servers that lost each other do not retry in lockstep.
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_CAP_S = 60.0
DEFAULT_BACKOFF_JITTER = 0.5

# A link that stayed up this long resets the backoff (DESIGN.md convention 11).
DEFAULT_STABLE_S = 30.0

# Unacknowledged EVENTs in flight on one link. Enough to fill a long fat pipe (1000 events of
# 1 KB is 1 MB in flight), small enough that a reconnect resends little.
DEFAULT_WINDOW = 1000

# Seconds between writes of data_dir/federation/status.json.
DEFAULT_STATUS_INTERVAL_S = 5.0

# The element that must always survive the detail filter: the label itself (labels.md 7b).
ALWAYS_ALLOWED_DETAILS = frozenset({"__seclabel"})

# Default priority classes (labels: issue 5, "emergencies and chats go first"): emergency alerts
# (b-a-o-tbl 911, b-a-o-can cancel, b-a-o-opn, b-a-o-pan ...), then chats, then everything else.
PRIORITY_EMERGENCY = 0
PRIORITY_CHAT = 1
PRIORITY_ROUTINE = 2
DEFAULT_PRIORITIES: tuple[tuple[str, int], ...] = (
    ("b-a-o", PRIORITY_EMERGENCY),
    ("b-t-f", PRIORITY_CHAT),
)

# Detail children released per CoT type prefix when a peer sets no ``details`` table: what ATAK,
# WinTAK and iTAK put in position reports, markers, chats, alerts and deletes (tak-protocol.md
# 1.4). Everything else (_flow-tags_ naming our servers, __video URLs, attachments, plugin data)
# is left out until a partner agreement lists it.
DEFAULT_DETAILS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "a-": frozenset(
            {
                "contact",
                "__group",
                "track",
                "status",
                "takv",
                "precisionlocation",
                "uid",
                "link",
                "remarks",
                "usericon",
                "color",
                "archive",
            }
        ),
        # marti carries the dests of a directed chat for the partner's users (never broadcast).
        "b-t-f": frozenset({"__chat", "link", "remarks", "__serverdestination", "marti"}),
        "b-a-o": frozenset({"emergency", "link", "contact", "remarks"}),
        "t-x-d-d": frozenset({"link", "__forcedelete"}),
        "*": frozenset({"contact", "link", "remarks"}),
    }
)

# Peer names become file names (data_dir/federation/<name>.db) and metric names.
_PEER_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}", re.ASCII)
_TYPE_PREFIX_RE = re.compile(r"[A-Za-z0-9*][A-Za-z0-9_.*-]{0,63}|", re.ASCII)
_ELEMENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", re.ASCII)
_FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_GROUP_RE = re.compile(r"[^\x00-\x1f]{1,128}")
# A mission name federated with a peer (as the mission API takes them), or "*" for every one.
_MISSION_RE = re.compile(r"[^\x00-\x1f/]{1,256}")
ALL_MISSIONS = "*"

# In a cluster, seconds the federation lease lasts unless renewed, and between renewals: a dead
# holder's links move to another node within about lease_ttl_s + lease_renew_s.
DEFAULT_LEASE_TTL_S = 8.0
DEFAULT_LEASE_RENEW_S = 1.5

_FEDERATION_KEYS = {
    "server_id",
    "listen",
    "heartbeat_s",
    "backoff_base_s",
    "backoff_cap_s",
    "backoff_jitter",
    "window",
    "status_interval_s",
    "lease_ttl_s",
    "lease_renew_s",
    "peer",
}
_PEER_KEYS = {
    "name",
    "dial",
    "accept",
    "ca_file",
    "fingerprint",
    "release_ceiling",
    "originate",
    "allow_types",
    "details",
    "detail_policy",
    "in_groups",
    "out_groups",
    "priority",
    "coalesce",
    "relay",
    "max_hops",
    "protocol",
    "default_label",
    "groups_in",
    "groups_out",
    "missions",
}

# The wire spoken with a peer ([[federation.peer]] protocol): Liaison's own partner protocol,
# TAK federation v2 (gRPC, tak-federation.md section 3; federation/takv2.py, takv2_server.py) or
# TAK federation v1 (length-prefixed FederatedEvents, section 12; federation/takv1.py).
PROTOCOL_NATIVE = "native"
PROTOCOL_TAK_V2 = "tak-v2"
PROTOCOL_TAK_V1 = "tak-v1"
PROTOCOLS = (PROTOCOL_NATIVE, PROTOCOL_TAK_V2, PROTOCOL_TAK_V1)
# The wires that speak TAK Server's federation (FederatedEvent, fig_codec.py).
TAK_PROTOCOLS = (PROTOCOL_TAK_V2, PROTOCOL_TAK_V1)


class DetailPolicy(enum.Enum):
    """What the guard does with a detail element the allowlist does not name."""

    REMOVE = "remove"  # strip it and release the rest
    DENY = "deny"  # refuse the whole event


@dataclass(frozen=True, slots=True)
class Address:
    """Where to dial a peer."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConfig:
    """One partner server: how to reach and trust it, and what may cross the link each way."""

    name: str
    dial: Address | None  # None: the peer dials us (accept)
    ca_file: Path
    fingerprint: str  # SHA-256 of the peer's certificate, 64 lowercase hex digits
    release_ceiling: AuthSet  # the most we release to this peer (the gate's authorizations)
    originate_org: str  # the organisation the peer speaks for (a REL value)
    originate_ceiling: AuthSet  # the most the peer may assert on what it sends us
    allow_types: tuple[str, ...]  # CoT type prefixes that may cross, both ways
    details: Mapping[str, frozenset[str]]  # type prefix ("*" = any) -> detail children allowed
    detail_policy: DetailPolicy = DetailPolicy.REMOVE
    in_groups: frozenset[str] = frozenset({ANON_GROUP})
    out_groups: frozenset[str] = frozenset({ANON_GROUP})
    priorities: tuple[tuple[str, int], ...] = DEFAULT_PRIORITIES  # longest prefix first
    coalesce: bool = True
    relay: bool = False  # release events that came from another peer (needs max_hops >= 2)
    max_hops: int = 1  # federation links an event may cross in all
    protocol: str = PROTOCOL_NATIVE  # the wire: "native", "tak-v2" or "tak-v1"
    # The label given to what a TAK peer sends without a <__seclabel> (None: refused).
    default_label: Label | None = None
    # Group mapping across a TAK link (federation/fed_groups.py); None: in_groups/out_groups.
    groups_in: Mapping[str, frozenset[str]] | None = None  # federate name ("*") -> local groups
    groups_out: Mapping[str, frozenset[str]] | None = None  # local group -> federate names
    # Missions whose items cross this link (any wire; tak-v2 also sends ROL), by name; "*" is
    # every mission.
    # Empty (the default): no mission item crosses (docs/protocol.md "Missions across the link").
    missions: frozenset[str] = frozenset()

    def federates_mission(self, name: str) -> bool:
        """Whether items of the mission ``name`` cross this link (both ways)."""
        return name in self.missions or ALL_MISSIONS in self.missions

    def allowed_type(self, cot_type: str) -> bool:
        return any(cot_type.startswith(p) for p in self.allow_types)

    def allowed_details(self, cot_type: str) -> frozenset[str] | None:
        """The detail children allowed for ``cot_type`` (longest prefix), or None: no rule."""
        best: str | None = None
        for prefix in self.details:
            if (
                prefix != "*"
                and cot_type.startswith(prefix)
                and (best is None or len(prefix) > len(best))
            ):
                best = prefix
        if best is None:
            best = "*" if "*" in self.details else None
        if best is None:
            return None
        return self.details[best] | ALWAYS_ALLOWED_DETAILS

    def priority(self, cot_type: str) -> int:
        for prefix, klass in self.priorities:
            if cot_type.startswith(prefix):
                return klass
        return PRIORITY_ROUTINE


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationConfig:
    """The ``[federation]`` table."""

    server_id: str
    listen: Address | None = field(default_factory=lambda: Address("0.0.0.0", DEFAULT_PORT))
    peers: tuple[PeerConfig, ...] = ()
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S
    backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S
    backoff_jitter: float = DEFAULT_BACKOFF_JITTER
    window: int = DEFAULT_WINDOW
    status_interval_s: float = DEFAULT_STATUS_INTERVAL_S
    # In a cluster: the federation lease's time to live and renewal interval (federation/lease.py).
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S
    lease_renew_s: float = DEFAULT_LEASE_RENEW_S

    @property
    def idle_timeout_s(self) -> float:
        return self.heartbeat_s * IDLE_FACTOR

    def peer(self, name: str) -> PeerConfig | None:
        return next((p for p in self.peers if p.name == name), None)


# --- parsing ------------------------------------------------------------------------------------


def _only(table: Mapping[str, object], allowed: set[str], key: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(f"{key}.{extra[0]}", "unknown key")


def _address(value: object, key: str, *, listen: bool) -> Address | None:
    """``HOST:PORT``; for a listener also ``:PORT`` (all interfaces) and ``off``."""
    if not isinstance(value, str):
        raise ConfigError(key, "must be a string HOST:PORT")
    text = value.strip()
    if listen and text.lower() == "off":
        return None
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if listen and sep and not host:
        host = "0.0.0.0"
    if not sep or not host:
        raise ConfigError(key, f"expected HOST:PORT, got {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(key, f"expected HOST:PORT, got {text!r}") from None
    if not 0 <= port <= 65535 or (not listen and port == 0):
        raise ConfigError(key, f"port {port} out of range")
    return Address(host, port)


def _number(table: Mapping[str, object], name: str, default: float, key: str) -> float:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{key}.{name}", "must be a number greater than 0")
    return float(value)


def _strings(value: object, key: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, "must be a list of strings")
    for v in value:
        if pattern.fullmatch(v) is None:
            raise ConfigError(key, f"{v!r} is not allowed here")
    return tuple(value)


def _details(value: object, key: str) -> dict[str, frozenset[str]]:
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table of CoT type prefix = [detail element names]")
    out: dict[str, frozenset[str]] = {}
    for prefix, names in value.items():
        if _TYPE_PREFIX_RE.fullmatch(prefix) is None or not prefix:
            raise ConfigError(f"{key}.{prefix}", "not a CoT type prefix")
        out[prefix] = frozenset(_strings(names, f"{key}.{prefix}", _ELEMENT_RE))
    return out


def _priorities(value: object, key: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table of CoT type prefix = class (0 first)")
    out: list[tuple[str, int]] = []
    for prefix, klass in value.items():
        if not prefix or _TYPE_PREFIX_RE.fullmatch(prefix) is None:
            raise ConfigError(f"{key}.{prefix}", "not a CoT type prefix")
        if type(klass) is not int or not 0 <= klass <= MAX_PRIORITY:
            raise ConfigError(f"{key}.{prefix}", f"must be an integer 0..{MAX_PRIORITY}")
        out.append((prefix, klass))
    # Longest prefix first, so "b-a-o-can" can differ from "b-a-o".
    out.sort(key=lambda pk: -len(pk[0]))
    return tuple(out)


def _bool(table: Mapping[str, object], name: str, default: bool, key: str) -> bool:
    value = table.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}.{name}", "must be true or false")
    return value


def _groups(table: Mapping[str, object], name: str, key: str) -> frozenset[str]:
    if name not in table:
        return frozenset({ANON_GROUP})
    groups = _strings(table[name], f"{key}.{name}", _GROUP_RE)
    if not groups:
        raise ConfigError(f"{key}.{name}", "must name at least one group")
    return frozenset(groups)


def _group_map(value: object, key: str, *, wildcard: bool) -> Mapping[str, frozenset[str]]:
    """A table of group name = [group names] (each list non-empty)."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(key, "must be a non-empty table of group name = [group names]")
    out: dict[str, frozenset[str]] = {}
    for name, targets in value.items():
        if _GROUP_RE.fullmatch(name) is None or (name == "*" and not wildcard):
            raise ConfigError(f"{key}.{name}", "not a group name here")
        names = _strings(targets, f"{key}.{name}", _GROUP_RE)
        if not names or "*" in names:
            raise ConfigError(f"{key}.{name}", "must name at least one group (not *)")
        out[name] = frozenset(names)
    return MappingProxyType(out)


def _peer(raw: object, key: str, policy: Policy, base_dir: Path) -> PeerConfig:
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be a table ([[federation.peer]])")
    _only(raw, _PEER_KEYS, key)
    name = raw.get("name")
    if not isinstance(name, str) or _PEER_NAME_RE.fullmatch(name) is None:
        raise ConfigError(f"{key}.name", "required: 1-32 of a-z 0-9 _ - (starts a-z or 0-9)")
    dial: Address | None = None
    accept = _bool(raw, "accept", False, key)
    if "dial" in raw:
        dial = _address(raw["dial"], f"{key}.dial", listen=False)
    if (dial is None) == (not accept):
        raise ConfigError(f"{key}.dial", "set exactly one of dial = HOST:PORT or accept = true")
    ca = raw.get("ca_file")
    if not isinstance(ca, str) or not ca.strip():
        raise ConfigError(f"{key}.ca_file", "required: the peer's CA certificate (PEM)")
    ca_path = Path(ca)
    if not ca_path.is_absolute():
        ca_path = base_dir / ca_path
    fp = raw.get("fingerprint")
    if not isinstance(fp, str) or _FINGERPRINT_RE.fullmatch(normalize_fingerprint(fp)) is None:
        raise ConfigError(
            f"{key}.fingerprint", "required: SHA-256 of the peer's certificate (64 hex digits)"
        )
    if "release_ceiling" not in raw:
        # labels.md 7e: "missing peer ceiling ... the link does not start".
        raise ConfigError(f"{key}.release_ceiling", "required: what may be released to the peer")
    ceiling = authset_from_table(policy, raw["release_ceiling"], f"{key}.release_ceiling")
    originate = raw.get("originate")
    if not isinstance(originate, dict):
        raise ConfigError(f"{key}.originate", "required: {org = ..., classification = ..., ...}")
    org = originate.get("org")
    if not isinstance(org, str) or org not in policy.rel.value_set:
        raise ConfigError(f"{key}.originate.org", "must be a value of the policy's REL category")
    orig_auths = authset_from_table(
        policy, {k: v for k, v in originate.items() if k != "org"}, f"{key}.originate"
    )
    if "allow_types" not in raw:
        raise ConfigError(f"{key}.allow_types", "required: the CoT type prefixes that may cross")
    allow_types = _strings(raw["allow_types"], f"{key}.allow_types", _TYPE_PREFIX_RE)
    details = (
        _details(raw["details"], f"{key}.details") if "details" in raw else dict(DEFAULT_DETAILS)
    )
    policy_text = raw.get("detail_policy", DetailPolicy.REMOVE.value)
    try:
        detail_policy = DetailPolicy(policy_text)
    except ValueError:
        raise ConfigError(f"{key}.detail_policy", "must be remove or deny") from None
    priorities = (
        _priorities(raw["priority"], f"{key}.priority") if "priority" in raw else DEFAULT_PRIORITIES
    )
    max_hops = raw.get("max_hops", 1)
    if type(max_hops) is not int or not 1 <= max_hops <= 16:
        raise ConfigError(f"{key}.max_hops", "must be an integer 1..16")
    relay = _bool(raw, "relay", False, key)
    if relay and max_hops < 2:
        raise ConfigError(f"{key}.relay", "relaying another peer's events needs max_hops >= 2")
    protocol = raw.get("protocol", PROTOCOL_NATIVE)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{key}.protocol", f"must be one of {', '.join(PROTOCOLS)}")
    default_label: Label | None = None
    if "default_label" in raw:
        if protocol not in TAK_PROTOCOLS:
            raise ConfigError(f"{key}.default_label", 'only for protocol = "tak-v2" or "tak-v1"')
        auths = authset_from_table(policy, raw["default_label"], f"{key}.default_label")
        default_label = Label(
            policy_id=policy.id,
            classification=auths.ceiling or "",
            categories=auths.held,
            originator=org,  # the peer's organisation owns what it sends
            created_ms=0,  # stamped with the time of receipt by the wire
        )
        problems = validate_label(policy, default_label)
        if problems:
            raise ConfigError(f"{key}.default_label", f"not a valid label: {', '.join(problems)}")
    groups_in = groups_out = None
    for gkey in ("groups_in", "groups_out"):
        if gkey in raw and protocol == PROTOCOL_NATIVE:
            raise ConfigError(f"{key}.{gkey}", "only for a TAK peer (protocol)")
    if "groups_in" in raw:
        if "in_groups" in raw:
            raise ConfigError(f"{key}.groups_in", "set groups_in or in_groups, not both")
        groups_in = _group_map(raw["groups_in"], f"{key}.groups_in", wildcard=True)
    if "groups_out" in raw:
        if "out_groups" in raw:
            raise ConfigError(f"{key}.groups_out", "set groups_out or out_groups, not both")
        groups_out = _group_map(raw["groups_out"], f"{key}.groups_out", wildcard=False)
    in_groups = _groups(raw, "in_groups", key)
    if groups_in is not None:
        # The source principal's groups when an item carries nothing more specific: every local
        # group the mapping can write into (the link narrows it per item).
        in_groups = frozenset(g for gs in groups_in.values() for g in gs)
    out_groups = _groups(raw, "out_groups", key)
    if groups_out is not None:
        # The router releases to the peer only what was written into a mapped group.
        out_groups = frozenset(groups_out)
    missions: frozenset[str] = frozenset()
    if "missions" in raw:
        # Every wire carries mission items (TAK ones as FederatedEvent.missionNames, field 26,
        # tak-federation.md 4.2); tak-v2 also carries the missions themselves as ROL (section 11).
        missions = frozenset(_strings(raw["missions"], f"{key}.missions", _MISSION_RE))
    return PeerConfig(
        name=name,
        dial=dial,
        ca_file=ca_path,
        fingerprint=normalize_fingerprint(fp),
        release_ceiling=ceiling,
        originate_org=org,
        originate_ceiling=orig_auths,
        allow_types=allow_types,
        details=details,
        detail_policy=detail_policy,
        in_groups=in_groups,
        out_groups=out_groups,
        priorities=priorities,
        coalesce=_bool(raw, "coalesce", True, key),
        relay=relay,
        max_hops=max_hops,
        protocol=protocol,
        default_label=default_label,
        groups_in=groups_in,
        groups_out=groups_out,
        missions=missions,
    )


def listen_warning(config: FederationConfig) -> str | None:
    """The warning for a native link still listening on TAK v2's port 9001, the old default
    (docs/configuration.md, "The partner link's port"); None when there is nothing to say."""
    listen = config.listen
    if listen is None or listen.port != TAK_V2_PORT:
        return None
    if not any(p.dial is None and p.protocol == PROTOCOL_NATIVE for p in config.peers):
        return None
    return (
        f"federation: listen = {listen} uses port {TAK_V2_PORT}, TAK federation v2's port; the"
        f" native link's own default is now {DEFAULT_PORT} (set [federation] listen to move)"
    )


def parse_federation(
    text: str, policy: Policy, *, default_server_id: str, base_dir: Path = Path(".")
) -> FederationConfig | None:
    """The ``[federation]`` table of a TOML document; None when the document has none.

    ``default_server_id`` (normally the server's public host) is used when ``server_id`` is not
    set. Relative ``ca_file`` paths are resolved against ``base_dir`` (the config file's folder).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("federation", f"not valid TOML: {exc}") from exc
    table = doc.get("federation")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError("federation", "must be a table")
    return federation_from_table(
        table, policy, default_server_id=default_server_id, base_dir=base_dir
    )


def federation_from_table(
    table: Mapping[str, object],
    policy: Policy,
    *,
    default_server_id: str,
    base_dir: Path = Path("."),
) -> FederationConfig:
    """:func:`parse_federation` for an already-parsed ``[federation]`` table."""
    key = "federation"
    _only(table, _FEDERATION_KEYS, key)
    server_id = table.get("server_id", default_server_id)
    if not isinstance(server_id, str) or SERVER_ID_RE.fullmatch(server_id) is None:
        raise ConfigError(f"{key}.server_id", "1-64 of A-Z a-z 0-9 _ . : - (starts alphanumeric)")
    listen_opt: Address | None = Address("0.0.0.0", DEFAULT_PORT)
    if "listen" in table:
        listen_opt = _address(table["listen"], f"{key}.listen", listen=True)
    raw_peers = table.get("peer", [])
    if not isinstance(raw_peers, list):
        raise ConfigError(f"{key}.peer", "must be an array of tables ([[federation.peer]])")
    peers: list[PeerConfig] = []
    for i, raw in enumerate(raw_peers):
        peer = _peer(raw, f"{key}.peer[{i}]", policy, base_dir)
        if any(p.name == peer.name for p in peers):
            raise ConfigError(f"{key}.peer[{i}].name", f"duplicate peer name {peer.name!r}")
        if any(p.fingerprint == peer.fingerprint for p in peers):
            raise ConfigError(f"{key}.peer[{i}].fingerprint", "two peers with one certificate")
        peers.append(peer)
    if listen_opt is None and any(p.dial is None for p in peers):
        raise ConfigError(f"{key}.listen", "a peer has accept = true but listen is off")
    window = table.get("window", DEFAULT_WINDOW)
    if type(window) is not int or not 1 <= window <= 100_000:
        raise ConfigError(f"{key}.window", "must be an integer 1..100000")
    jitter = table.get("backoff_jitter", DEFAULT_BACKOFF_JITTER)
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
        raise ConfigError(f"{key}.backoff_jitter", "must be a number from 0 to 1")
    base = _number(table, "backoff_base_s", DEFAULT_BACKOFF_BASE_S, key)
    cap = _number(table, "backoff_cap_s", DEFAULT_BACKOFF_CAP_S, key)
    if cap < base:
        raise ConfigError(f"{key}.backoff_cap_s", "must be at least backoff_base_s")
    ttl = _number(table, "lease_ttl_s", DEFAULT_LEASE_TTL_S, key)
    renew = _number(table, "lease_renew_s", DEFAULT_LEASE_RENEW_S, key)
    if renew * 2 > ttl:
        raise ConfigError(f"{key}.lease_renew_s", "must be at most half of lease_ttl_s")
    return FederationConfig(
        server_id=server_id,
        listen=listen_opt,
        peers=tuple(peers),
        heartbeat_s=_number(table, "heartbeat_s", DEFAULT_HEARTBEAT_S, key),
        backoff_base_s=base,
        backoff_cap_s=cap,
        backoff_jitter=float(jitter),
        window=window,
        status_interval_s=_number(table, "status_interval_s", DEFAULT_STATUS_INTERVAL_S, key),
        lease_ttl_s=ttl,
        lease_renew_s=renew,
    )
