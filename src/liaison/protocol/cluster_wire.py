"""The cluster bus's message: one accepted event as the node that accepted it hands it on.

Pure (bytes and headers in, a :class:`BusEvent` out; no sockets, no clock). The transport is NATS
JetStream (``cluster/bus.py``): the payload is the event's CoT XML as accepted (authoritative
label applied, ``marti/dest`` kept, so the receiving router routes it exactly as the origin
would); the headers carry who sent it and under which label, which the receiving node's router
needs for its own access decision and its own release records.

Subjects are per group the sender writes into (``<prefix>.ev.g.<hex of the group name>``): a node
subscribes to the groups its own subscribers read (their OUT groups), so it receives only what
some of its clients may see (TAK reachability: IN of the sender meets OUT of the reader,
tak-protocol.md section 7). An event written into two groups is published once per group with
the same ``Liaison-Id``; a node reading both keeps the first (:class:`SeenIds`).

The bus also carries access notices (:class:`AccessNotice`): a revoked user or certificate, kept
in a stream of their own (``<prefix>.rv.u.<hex of the name>``, ``<prefix>.rv.c.<hex serial>``:
one subject per revoked principal, so the stream keeps each once), and a web sign-out
(``<prefix>.so``, not kept). Their payload is a small versioned JSON object, checked field by
field, and the subject must be the one its content names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from liaison.model.principal import Principal, PrincipalKind
from liaison.protocol.recent import Recent

# Header names. H_MSG_ID names the event (the same on every group's subject); Nats-Msg-Id is
# JetStream's own, one per event and subject: the stream drops a second publish of the same id
# within its duplicate window (NATS JetStream "Message Deduplication"), so a publish sent again
# after a lost acknowledgement is kept once.
H_MSG_ID = "Liaison-Id"
H_NATS_MSG_ID = "Nats-Msg-Id"
H_NODE = "Liaison-Node"
H_SENDER = "Liaison-Sender"
H_LABEL = "Liaison-Label"
WIRE_VERSION = 1
H_VERSION = "Liaison-Wire"

# Longest sender header we read (a principal with many groups); longer is refused.
MAX_SENDER_BYTES = 16 * 1024
# Most groups a sender may carry on the bus (the same order as a groups file's).
MAX_SENDER_GROUPS = 1024
# Ids remembered per node to drop an event arriving on a second group subject.
SEEN_IDS = 65_536


class WireError(ValueError):
    """A bus message that is not one of ours: dropped, counted, logged by the bus."""


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One accepted event on the bus."""

    msg_id: str  # "<node>:<sequence>", unique per accepting node and event
    node: str  # the node that accepted it
    sender: Principal  # who sent it (without authorizations: the receiver needs its groups)
    label_json: str | None  # the authoritative label as canonical JSON, None when unlabelled
    xml: bytes  # the event as accepted, CoT XML
    # What JetStream's duplicate detection knows the event by, when not ``msg_id``: an event
    # from a partner is named by the peer and its sequence number, so the same event applied
    # again by another node (the next federation lease holder) is stored once.
    dedup: str | None = None


def subject_for(prefix: str, group: str) -> str:
    """The subject an event written into ``group`` goes to (any group name is safe as hex)."""
    return f"{prefix}.ev.g.{group.encode('utf-8').hex()}"


def stream_subjects(prefix: str) -> str:
    """The JetStream stream's subject filter: every group's events."""
    return f"{prefix}.ev.>"


def encode(event: BusEvent, group: str = "") -> tuple[dict[str, str], bytes]:
    """Headers and payload of ``event`` as published on the subject of ``group``."""
    p = event.sender
    sender = {
        "name": p.name,
        "kind": p.kind.value,
        "in": sorted(p.in_groups),
        "out": sorted(p.out_groups),
        "org": p.org,
        "listener": p.listener,
    }
    headers = {
        H_VERSION: str(WIRE_VERSION),
        H_MSG_ID: event.msg_id,
        H_NATS_MSG_ID: f"{event.dedup or event.msg_id}/{group.encode('utf-8').hex()}",
        H_NODE: event.node,
        H_SENDER: json.dumps(sender, separators=(",", ":"), ensure_ascii=True),
    }
    if event.label_json is not None:
        headers[H_LABEL] = event.label_json
    return headers, event.xml


def decode(headers: Mapping[str, str] | None, payload: bytes) -> BusEvent:
    """A bus message back as a :class:`BusEvent`; :class:`WireError` when it is not one."""
    if not headers:
        raise WireError("no headers")
    if headers.get(H_VERSION) != str(WIRE_VERSION):
        raise WireError(f"wire version {headers.get(H_VERSION)!r}")
    msg_id, node, raw = headers.get(H_MSG_ID), headers.get(H_NODE), headers.get(H_SENDER)
    if not msg_id or not node or raw is None:
        raise WireError("missing id, node or sender")
    if len(raw) > MAX_SENDER_BYTES:
        raise WireError("sender too long")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise WireError(f"sender: {exc}") from None
    if not isinstance(data, dict):
        raise WireError("sender is not an object")
    name, kind, org, listener = (data.get(k) for k in ("name", "kind", "org", "listener"))
    in_groups, out_groups = data.get("in"), data.get("out")
    if not isinstance(name, str) or not name:
        raise WireError("sender name")
    try:
        kind_value = PrincipalKind(kind)
    except ValueError:
        raise WireError(f"sender kind {kind!r}") from None
    for groups in (in_groups, out_groups):
        if (
            not isinstance(groups, list)
            or len(groups) > MAX_SENDER_GROUPS
            or not all(isinstance(g, str) for g in groups)
        ):
            raise WireError("sender groups")
    assert isinstance(in_groups, list) and isinstance(out_groups, list)
    if org is not None and not isinstance(org, str):
        raise WireError("sender org")
    if listener is not None and not isinstance(listener, str):
        raise WireError("sender listener")
    sender = Principal(
        name=name,
        kind=kind_value,
        in_groups=frozenset(in_groups),
        out_groups=frozenset(out_groups),
        org=org,
        listener=listener,
    )
    return BusEvent(msg_id, node, sender, headers.get(H_LABEL), bytes(payload))


class SeenIds(Recent):
    """The message ids a node has handled lately (bounded, oldest forgotten first)."""

    def __init__(self, limit: int = SEEN_IDS) -> None:
        super().__init__(limit)


# --- the shared latest state (a JetStream key-value bucket) ----------------------------------
#
# Each node writes the latest state of the events it accepted into one bucket, a value per uid;
# every node mirrors the bucket (cluster/latest_kv.py), so a client is replayed the same picture
# on every node, also of groups nobody on its node read before. Keys are ``u.<hex of the uid's
# UTF-8>``: NATS KV keys allow only ``[-/_=.a-zA-Z0-9]`` (NATS ADR-8, "Key-Value Store").

LATEST_VERSION = 1
_LATEST_KEY_PREFIX = "u."
# Largest value read from the bucket: the event (at most limits.MAX_EVENT_BYTES once accepted)
# with its label and groups; a larger one is refused.
MAX_LATEST_VALUE = 128 * 1024
# Longest origin read ("partner", or "feed:" and a feed's name).
MAX_ORIGIN_CHARS = 256


@dataclass(frozen=True, slots=True)
class LatestValue:
    """One uid's latest state as a node wrote it into the bucket."""

    node: str  # the node that accepted the event
    sender_groups: frozenset[str]  # its sender's IN groups (what the access decision reads)
    label_json: str | None  # the authoritative label as canonical JSON, None when unlabelled
    xml: bytes  # the event as accepted, CoT XML
    # Where the accepting node got it, for the web map's layers (model/event.py Event.origin).
    origin: str | None = None


def latest_key(uid: str) -> str:
    """The bucket key of ``uid``."""
    return _LATEST_KEY_PREFIX + uid.encode("utf-8").hex()


def uid_of_key(key: str) -> str:
    """The uid a bucket key names; :class:`WireError` when it is not one of ours."""
    if not key.startswith(_LATEST_KEY_PREFIX):
        raise WireError(f"not a latest-state key: {key[:80]!r}")
    try:
        return bytes.fromhex(key[len(_LATEST_KEY_PREFIX) :]).decode("utf-8")
    except ValueError:
        raise WireError(f"not a latest-state key: {key[:80]!r}") from None


def encode_latest(value: LatestValue) -> bytes:
    """The bucket value: one JSON object, the event's XML as a string (it is UTF-8)."""
    return json.dumps(
        {
            "v": LATEST_VERSION,
            "node": value.node,
            "groups": sorted(value.sender_groups),
            "label": value.label_json,
            "xml": value.xml.decode("utf-8"),
            "origin": value.origin,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def decode_latest(data: bytes) -> LatestValue:
    """A bucket value back as a :class:`LatestValue`; :class:`WireError` when it is not one."""
    if len(data) > MAX_LATEST_VALUE:
        raise WireError(f"latest-state value of {len(data)} bytes")
    try:
        obj = json.loads(data)
    except ValueError as exc:  # UnicodeDecodeError included
        raise WireError(f"latest-state value: {exc}") from None
    if not isinstance(obj, dict) or obj.get("v") != LATEST_VERSION:
        raise WireError("latest-state value: not version 1")
    node, groups, label, xml, origin = (
        obj.get(k) for k in ("node", "groups", "label", "xml", "origin")
    )
    if not isinstance(node, str) or not node:
        raise WireError("latest-state value: node")
    if (
        not isinstance(groups, list)
        or len(groups) > MAX_SENDER_GROUPS
        or not all(isinstance(g, str) for g in groups)
    ):
        raise WireError("latest-state value: groups")
    if label is not None and not isinstance(label, str):
        raise WireError("latest-state value: label")
    if not isinstance(xml, str) or not xml:
        raise WireError("latest-state value: xml")
    if origin is not None and (not isinstance(origin, str) or len(origin) > MAX_ORIGIN_CHARS):
        raise WireError("latest-state value: origin")
    try:
        xml_bytes = xml.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escaped in the JSON
        raise WireError("latest-state value: xml is not valid Unicode") from None
    return LatestValue(node, frozenset(groups), label, xml_bytes, origin)


# --- access notices: revocations and sign-outs (cluster/access.py) --------------------------

NOTICE_VERSION = 1
# Largest notice payload read; larger is refused before parsing.
MAX_NOTICE_BYTES = 4096
# Longest user or node name in a notice (a users file name is at most 64 characters).
MAX_NOTICE_NAME_CHARS = 256
# Longest certificate serial, in hexadecimal digits (RFC 5280 4.1.2.2: at most 20 octets).
MAX_SERIAL_HEX = 40

KIND_USER = "user"  # a user revoked: every session and sign-in of that name ends
KIND_CERTIFICATE = "certificate"  # a certificate revoked: every session on it ends
KIND_SIGN_OUT = "sign_out"  # a web sign-out: the user's web sign-ins on other nodes end
REVOCATION_KINDS = frozenset({KIND_USER, KIND_CERTIFICATE})

# Lowercase hexadecimal without leading zeros: one spelling per serial (a serial is positive).
_SERIAL_RE = re.compile(f"[1-9a-f][0-9a-f]{{0,{MAX_SERIAL_HEX - 1}}}")


@dataclass(frozen=True, slots=True)
class AccessNotice:
    """A revocation or a sign-out one node announces to the others."""

    kind: str  # KIND_USER, KIND_CERTIFICATE or KIND_SIGN_OUT
    node: str  # the node that announced it
    name: str = ""  # KIND_USER, KIND_SIGN_OUT: the user
    serial: int = 0  # KIND_CERTIFICATE: the certificate's serial


def revocation_subjects(prefix: str) -> str:
    """The revocation stream's subject filter."""
    return f"{prefix}.rv.>"


def sign_out_subject(prefix: str) -> str:
    return f"{prefix}.so"


def notice_subject(prefix: str, notice: AccessNotice) -> str:
    """The subject ``notice`` is published on: one per revoked user or certificate."""
    if notice.kind == KIND_USER:
        return f"{prefix}.rv.u.{notice.name.encode('utf-8').hex()}"
    if notice.kind == KIND_CERTIFICATE:
        return f"{prefix}.rv.c.{notice.serial:x}"
    return sign_out_subject(prefix)


def encode_notice(notice: AccessNotice) -> bytes:
    doc: dict[str, object] = {"v": NOTICE_VERSION, "kind": notice.kind, "node": notice.node}
    if notice.kind == KIND_CERTIFICATE:
        doc["serial"] = f"{notice.serial:x}"
    else:
        doc["name"] = notice.name
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _notice_text(value: object, what: str) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_NOTICE_NAME_CHARS
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)
    ):
        raise WireError(f"notice {what}")
    return value


def decode_notice(prefix: str, subject: str, payload: bytes, kinds: frozenset[str]) -> AccessNotice:
    """The notice received on ``subject``; :class:`WireError` unless it is a well-formed notice
    of one of ``kinds`` published on the subject its content names."""
    if len(payload) > MAX_NOTICE_BYTES:
        raise WireError("notice too long")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"notice: {exc}") from None
    if not isinstance(doc, dict):
        raise WireError("notice is not an object")
    if doc.get("v") != NOTICE_VERSION or isinstance(doc.get("v"), bool):
        raise WireError(f"notice version {doc.get('v')!r}")
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        raise WireError(f"notice kind {kind!r}")
    node = _notice_text(doc.get("node"), "node")
    if kind == KIND_CERTIFICATE:
        serial = doc.get("serial")
        if not isinstance(serial, str) or not _SERIAL_RE.fullmatch(serial):
            raise WireError("notice serial")
        notice = AccessNotice(kind, node, serial=int(serial, 16))
    else:
        notice = AccessNotice(kind, node, name=_notice_text(doc.get("name"), "name"))
    if notice_subject(prefix, notice) != subject:
        raise WireError("notice on another subject than its content names")
    return notice
