"""What the nodes of a cluster tell each other about missions (docs/deployment.md "Several
nodes": "Missions and files"), on core NATS subject ``<cluster.prefix>.missions``.

One message says, after a node's mission writes reached the shared PostgreSQL database, which
missions and log entries they touched (the other nodes read those back) and carries the mission
notices the node sent meanwhile, with the (client uid, user) pairs they are for, so that every
node hands each notice to the clients connected to it, and only to those: a subscriber gets a
notice once, from the node it is connected to, under that node's access decision.

JSON, UTF-8::

    {"v": 1, "node": "<node name>", "missions": ["<name>", ...], "logs": ["<entry id>", ...],
     "notices": [{"xml": "<event .../>", "groups": [...], "label": "<label JSON>" | null,
                  "clients": [["<client uid>", "<user>"], ...], "path": "mission-notice",
                  "to": null | ["all", "<uid but whose>"] | ["clientUid" | "callsign" |
                  "userName", "<invitee>"]}]}

``to`` names clients by what each node finds among its own connected ones: a broadcast to every
device (``t-x-m-c-k``, ``t-x-m-c-m``, ``t-x-m-n``, ``t-x-m-d``) or an invitation's devices.

Pure: no I/O. Everything received is checked against the limits below; what fails is refused
whole (:class:`ShareError`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

VERSION = 1
# Largest message published or accepted: under NATS's default max_payload (1 MiB).
MAX_MESSAGE_BYTES = 512 * 1024
# Most mission names, log ids and notices in one message; a node with more splits them.
MAX_NAMES = 1000
MAX_NOTICES = 200
# Longest name, id, group, client uid or user name; longest notice XML.
MAX_TEXT = 1024
MAX_XML = 64 * 1024
# Paths a forwarded notice may name (the router's audit path of the delivery).
PATHS = frozenset({"mission", "mission-notice"})
# How a notice may name the clients each node finds among its own (Missions.local_clients).
TO_KINDS = frozenset({"all", "clientUid", "callsign", "userName"})


class ShareError(ValueError):
    """A message that is not one of ours, or breaks a limit."""


@dataclass(frozen=True, slots=True)
class SharedNotice:
    xml: bytes
    sender_groups: frozenset[str]
    label: str | None
    clients: frozenset[tuple[str, str]]
    path: str = "mission-notice"
    # Clients each node finds among its own: ("all", uid) every connected device but uid's
    # ("" none), or an invitee's ("clientUid" | "callsign" | "userName", value).
    to: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class MissionShare:
    node: str
    missions: tuple[str, ...] = ()
    logs: tuple[str, ...] = ()
    notices: tuple[SharedNotice, ...] = field(default=())


def subject(prefix: str) -> str:
    return f"{prefix}.missions"


def encode(msg: MissionShare) -> bytes:
    doc = {
        "v": VERSION,
        "node": msg.node,
        "missions": list(msg.missions),
        "logs": list(msg.logs),
        "notices": [
            {
                "xml": n.xml.decode("utf-8"),
                "groups": sorted(n.sender_groups),
                "label": n.label,
                "clients": sorted([uid, user] for uid, user in n.clients),
                "path": n.path,
                "to": list(n.to) if n.to is not None else None,
            }
            for n in msg.notices
        ],
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _text(value: object, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ShareError(f"{what} is not a string of at most {limit} characters")
    return value


def _texts(value: object, what: str, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise ShareError(f"{what} is not a list of at most {limit}")
    return tuple(_text(v, what) for v in value)


def decode(payload: bytes) -> MissionShare:
    """The message in ``payload``; ShareError when it is not well formed or too large, and for
    nothing else: whatever another node (or anyone on the bus) sends, this is the one error."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ShareError(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ShareError(f"not JSON: {exc!r}") from exc
    try:
        return _message(doc)
    except ShareError:
        raise
    except (TypeError, ValueError, UnicodeError) as exc:  # a value of the wrong kind somewhere
        raise ShareError(f"not a well-formed message: {exc!r}") from exc


def _message(doc: object) -> MissionShare:
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise ShareError("not a version 1 mission share message")
    raw_notices = doc.get("notices", [])
    if not isinstance(raw_notices, list) or len(raw_notices) > MAX_NOTICES:
        raise ShareError(f"notices is not a list of at most {MAX_NOTICES}")
    notices: list[SharedNotice] = []
    for n in raw_notices:
        if not isinstance(n, dict):
            raise ShareError("a notice is not an object")
        label = n.get("label")
        if label is not None:
            label = _text(label, "label", MAX_XML)
        clients = n.get("clients")
        if not isinstance(clients, list) or len(clients) > 100_000:
            raise ShareError("clients is not a list")
        pairs: set[tuple[str, str]] = set()
        for c in clients:
            if not isinstance(c, list) or len(c) != 2:
                raise ShareError("a client is not a [uid, user] pair")
            pairs.add((_text(c[0], "client uid"), _text(c[1], "user")))
        path = _text(n.get("path", "mission-notice"), "path")
        if path not in PATHS:
            raise ShareError(f"unknown path {path!r}")
        raw_to = n.get("to")
        to: tuple[str, str] | None = None
        if raw_to is not None:
            if (
                not isinstance(raw_to, list)
                or len(raw_to) != 2
                or not isinstance(raw_to[0], str)
                or raw_to[0] not in TO_KINDS
            ):
                raise ShareError("to is not one of [kind, value]")
            to = (raw_to[0], _text(raw_to[1], "to"))
        notices.append(
            SharedNotice(
                xml=_text(n.get("xml"), "xml", MAX_XML).encode("utf-8"),
                sender_groups=frozenset(_texts(n.get("groups"), "group", MAX_NAMES)),
                label=label,
                clients=frozenset(pairs),
                path=path,
                to=to,
            )
        )
    return MissionShare(
        node=_text(doc.get("node"), "node"),
        missions=_texts(doc.get("missions", []), "mission", MAX_NAMES),
        logs=_texts(doc.get("logs", []), "log id", MAX_NAMES),
        notices=tuple(notices),
    )
