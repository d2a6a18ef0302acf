"""ROL ("Resource Operation Language"), the text TAK Server federates missions in over the v2
``ServerROLStream``/``ClientROLStream`` (shared/reference/tak-federation.md section 11). Pure: no
I/O, no clock.

Facts taken from TAK Server's source (TAK-Product-Center/Server, read for facts only):

* Grammar, ``takserver-fig-core/rol/src/main/antlr/mil/af/rl/rol/Rol.g4``: a program is one or
  more statements ``operation resource [for ENTITY] [constraint ...] [assertions] [parameters]
  ;``. Tokens: ``IDENT`` ``[a-zA-Z0-9_.]+``; ``STRING`` a double-quoted JSON string (escapes
  ``\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX``); ``NUMBER`` a JSON number; punctuation
  ``; ( ) { } [ ] , :``; whitespace (space, tab, CR, LF) skipped. ``parameters`` is an ``IDENT``
  or an object ``{ key : value, ... }`` whose keys are STRING or IDENT and whose values are
  STRING, IDENT, NUMBER, object, array, ``true`` or ``false`` (so a JSON object parses).
* Mission programs, ``takserver-war/.../sync/federation/MissionActionROLConverter.java`` and
  ``takserver-common/.../remote/util/RemoteUtil.java`` (``getROLforMissionChange``): the text is
  ``"<op> mission\\n" + <JSON> + ";"``. ``create mission`` and ``delete mission`` carry a
  ``MissionMetadata`` (``rol/value/MissionMetadata.java``, a Jackson subtype tagged
  ``"type":"MissionMetadata"`` by ``rol/value/Parameters.java``): ``name``, ``creatorUid``,
  ``description``, ``chatRoom``, ``tool`` (a create sends ``" "`` for a missing creator,
  description or chat room and ``"public"`` for a missing tool); newer servers add
  ``classification`` and more. ``update mission`` carries a ``MissionUpdateDetails``
  (``remote/sync/MissionUpdateDetails.java``): ``content`` (``MissionContent``: ``hashes`` and
  ``uids``, lists of strings), ``creatorUid``, ``changeType`` (``ADD_CONTENT`` or
  ``REMOVE_CONTENT``), ``missionName``, and the mission's ``missionCreatorUid``,
  ``missionChatRoom``, ``missionTool``, ``missionDescription`` so that a receiver can create the
  mission on an ``ADD_CONTENT`` (``FederationROLHandler.java`` does).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Final

# The operations and resources of Rol.g4 (an IDENT that is one of them is that keyword).
OPERATIONS: Final = frozenset(
    {
        "create",
        "add",
        "remove",
        "update",
        "assign",
        "revoke",
        "get",
        "post",
        "put",
        "delete",
        "contains",
        "request",
        "announce",
        "disperse",
        "store",
        "enable",
        "disable",
    }
)
RESOURCES: Final = frozenset(
    {
        "query",
        "subscription",
        "staticsubscription",
        "role",
        "priority",
        "resource",
        "package",
        "mission",
        "input",
        "federation",
        "federate",
        "federated_connection",
    }
)
ADD_CONTENT: Final = "ADD_CONTENT"
REMOVE_CONTENT: Final = "REMOVE_CONTENT"
MISSION_METADATA: Final = "MissionMetadata"

# Limits on what is parsed (a program comes from a peer): text length, nesting, statements,
# values per list, length of one list of uids or hashes.
MAX_PROGRAM_CHARS: Final = 256 * 1024
MAX_DEPTH: Final = 16
MAX_STATEMENTS: Final = 64
MAX_ITEMS: Final = 4096
MAX_CONTENT_UIDS: Final = 1024
# The longest string field kept from a mission program (names, uids, descriptions).
MAX_FIELD_CHARS: Final = 4096
# A mission name Liaison's mission API can address (as the ``missions`` key admits them).
_MISSION_NAME_RE: Final = re.compile(r"[^\x00-\x1f/]{1,256}")


Value = str | int | float | bool | dict[str, "Value"] | list["Value"]


class RolError(ValueError):
    """A program that is not ROL, or not a mission program Liaison executes; ``reason`` is a
    stable code (``rol_syntax``, ``rol_too_large``, ``rol_unsupported``, ``rol_fields``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    """One statement: ``operation resource parameters;`` (assignment, constraints and
    assertions are refused as ``rol_unsupported``: no mission program uses them)."""

    operation: str
    resource: str
    parameters: dict[str, Value] | str | None


# --- lexer --------------------------------------------------------------------------------


# Rol.g4's tokens, longest match first as ANTLR's lexer does: a NUMBER only where no IDENT
# character follows (``1abc`` is an IDENT), a STRING with any backslash escape (json.loads then
# refuses one the grammar does not admit).
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \r\t\n]+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?(?:0|[1-9][0-9]*))?)(?![A-Za-z0-9_.])
  | (?P<ident>[A-Za-z0-9_.]+)
  | (?P<punct>[;(){}\[\],:])
    """,
    re.VERBOSE | re.DOTALL,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) pairs: ``ident``, ``string`` (its JSON text, quotes kept), ``number``,
    ``punct``."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        m = _TOKEN_RE.match(text, i)
        if m is None:
            raise RolError("rol_syntax", f"unexpected text at {i}: {text[i : i + 16]!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append((kind, m.group()))
        i = m.end()
    return out


# --- parser -------------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.t = tokens
        self.i = 0
        self.items = 0

    def peek(self) -> tuple[str, str] | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise RolError("rol_syntax", "unexpected end")
        self.i += 1
        return tok

    def expect(self, punct: str) -> None:
        if self.take() != ("punct", punct):
            raise RolError("rol_syntax", f"{punct!r} expected")

    def statement(self) -> Statement:
        kind, op = self.take()
        if kind != "ident" or op not in OPERATIONS:
            raise RolError("rol_syntax", "operation expected")
        kind, res = self.take()
        if kind != "ident" or res not in RESOURCES:
            raise RolError("rol_syntax", "resource expected")
        if res == "role" and self.peek() is not None and self.peek() != ("punct", ";"):
            nxt = self.peek()
            if (
                nxt is not None
                and nxt[0] in ("ident", "string")
                and nxt[1]
                not in (
                    "for",
                    "constraint",
                    "matchrole",
                    "match",
                    "not",
                )
            ):
                self.take()  # the role name (Rol.g4 resource: 'role' role)
        nxt = self.peek()
        if (
            nxt is not None
            and nxt[0] == "ident"
            and nxt[1]
            in (
                "for",
                "constraint",
                "matchrole",
                "match",
                "not",
            )
        ):
            raise RolError("rol_unsupported", f"clause {nxt[1]!r}")
        if nxt == ("punct", "("):
            raise RolError("rol_unsupported", "assertions")
        params: dict[str, Value] | str | None = None
        if nxt is not None and nxt[0] == "ident":
            params = self.take()[1]
        elif nxt == ("punct", "{"):
            obj = self.value(0)
            assert isinstance(obj, dict)
            params = obj
        self.expect(";")
        return Statement(op, res, params)

    def value(self, depth: int) -> Value:
        if depth > MAX_DEPTH:
            raise RolError("rol_too_large", "nesting")
        self.items += 1
        if self.items > MAX_ITEMS * 4:
            raise RolError("rol_too_large", "values")
        kind, text = self.take()
        if kind == "string":
            try:
                s = json.loads(text)
            except ValueError:
                raise RolError("rol_syntax", "bad string") from None
            assert isinstance(s, str)
            return s
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "ident":
            if text == "true":
                return True
            if text == "false":
                return False
            return text
        if text == "{":
            obj: dict[str, Value] = {}
            if self.peek() == ("punct", "}"):
                self.take()
                return obj
            while True:
                kkind, ktext = self.take()
                if kkind == "string":
                    key = json.loads(ktext)
                elif kkind == "ident":
                    key = ktext
                else:
                    raise RolError("rol_syntax", "key expected")
                self.expect(":")
                obj[key] = self.value(depth + 1)
                if len(obj) > MAX_ITEMS:
                    raise RolError("rol_too_large", "object")
                sep = self.take()
                if sep == ("punct", "}"):
                    return obj
                if sep != ("punct", ","):
                    raise RolError("rol_syntax", "',' or '}' expected")
        if text == "[":
            arr: list[Value] = []
            if self.peek() == ("punct", "]"):
                self.take()
                return arr
            while True:
                arr.append(self.value(depth + 1))
                if len(arr) > MAX_ITEMS:
                    raise RolError("rol_too_large", "array")
                sep = self.take()
                if sep == ("punct", "]"):
                    return arr
                if sep != ("punct", ","):
                    raise RolError("rol_syntax", "',' or ']' expected")
        raise RolError("rol_syntax", f"value expected, got {text!r}")


def parse(program: str) -> list[Statement]:
    """Every statement of ``program`` (raises RolError when it is not ROL). JSON ``null``, which
    Rol.g4 does not admit, is read as an absent value, since TAK's own Jackson writes it for a
    field it has no value for."""
    if len(program) > MAX_PROGRAM_CHARS:
        raise RolError("rol_too_large", "program")
    tokens = [("ident", "") if t == ("ident", "null") else t for t in _tokens(program)]
    p = _Parser(tokens)
    out: list[Statement] = []
    while p.peek() is not None:
        out.append(p.statement())
        if len(out) > MAX_STATEMENTS:
            raise RolError("rol_too_large", "statements")
    if not out:
        raise RolError("rol_syntax", "no statement")
    return out


# --- mission programs ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class MissionMeta:
    """``create mission`` / ``delete mission`` (MissionMetadata)."""

    operation: str  # "create" or "delete"
    name: str
    creator_uid: str = ""
    description: str = ""
    chat_room: str = ""
    tool: str = "public"
    classification: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class MissionUpdate:
    """``update mission`` (MissionUpdateDetails): content added or removed."""

    change_type: str  # ADD_CONTENT or REMOVE_CONTENT
    mission_name: str
    creator_uid: str = ""
    uids: tuple[str, ...] = ()
    hashes: tuple[str, ...] = ()
    mission_creator_uid: str = ""
    mission_chat_room: str = ""
    mission_tool: str = "public"
    mission_description: str = ""


MissionProgram = MissionMeta | MissionUpdate


def _text(obj: dict[str, Value], key: str, default: str = "") -> str:
    v = obj.get(key, default)
    if v == "":
        return default
    if not isinstance(v, str):
        raise RolError("rol_fields", f"{key} is not a string")
    if len(v) > MAX_FIELD_CHARS:
        raise RolError("rol_fields", f"{key} too long")
    # TAK writes " " for a missing creator, description or chat room (createMissionToROL).
    return v.strip() if v.strip() else default


def _name(obj: dict[str, Value], key: str) -> str:
    name = _text(obj, key)
    if not name:
        raise RolError("rol_fields", f"{key} missing")
    if not _MISSION_NAME_RE.fullmatch(name):
        raise RolError("rol_fields", f"{key} is not a mission name")
    return name


def _strings(obj: dict[str, Value], key: str) -> tuple[str, ...]:
    v = obj.get(key, [])
    if v == "":
        return ()
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise RolError("rol_fields", f"{key} is not a list of strings")
    if len(v) > MAX_CONTENT_UIDS:
        raise RolError("rol_too_large", key)
    return tuple(s for s in v if isinstance(s, str) and s and len(s) <= MAX_FIELD_CHARS)


def mission_program(program: str) -> MissionProgram:
    """The one mission statement of ``program`` (RolError otherwise: another resource, another
    operation, several statements, missing or mistyped fields)."""
    stmts = parse(program)
    if len(stmts) != 1:
        raise RolError("rol_unsupported", "more than one statement")
    st = stmts[0]
    if st.resource != "mission":
        raise RolError("rol_unsupported", f"resource {st.resource}")
    if not isinstance(st.parameters, dict):
        raise RolError("rol_fields", "parameters must be an object")
    p = st.parameters
    if st.operation in ("create", "delete"):
        kind = p.get("type", MISSION_METADATA)
        if kind != MISSION_METADATA:
            raise RolError("rol_fields", "not MissionMetadata")
        name = _name(p, "name")
        return MissionMeta(
            operation=st.operation,
            name=name,
            creator_uid=_text(p, "creatorUid"),
            description=_text(p, "description"),
            chat_room=_text(p, "chatRoom"),
            tool=_text(p, "tool", "public"),
            classification=_text(p, "classification"),
        )
    if st.operation == "update":
        change = p.get("changeType")
        if change not in (ADD_CONTENT, REMOVE_CONTENT):
            raise RolError("rol_unsupported", f"changeType {change!r}")
        name = _name(p, "missionName")
        content = p.get("content", {})
        if content == "":
            content = {}
        if not isinstance(content, dict):
            raise RolError("rol_fields", "content is not an object")
        return MissionUpdate(
            change_type=str(change),
            mission_name=name,
            creator_uid=_text(p, "creatorUid"),
            uids=_strings(content, "uids"),
            hashes=_strings(content, "hashes"),
            mission_creator_uid=_text(p, "missionCreatorUid"),
            mission_chat_room=_text(p, "missionChatRoom"),
            mission_tool=_text(p, "missionTool", "public"),
            mission_description=_text(p, "missionDescription"),
        )
    raise RolError("rol_unsupported", f"{st.operation} mission")


def _program(operation: str, body: dict[str, object]) -> str:
    # The layout TAK writes: "<op> mission", a newline, the JSON object, ";".
    return f"{operation} mission\n{json.dumps(body, separators=(',', ':'), ensure_ascii=False)};"


def encode(prog: MissionProgram) -> str:
    """The ROL text for a mission program, with the fields TAK Server writes, in its order."""
    if isinstance(prog, MissionMeta):
        body: dict[str, object] = {"type": MISSION_METADATA, "name": prog.name}
        if prog.operation == "create":
            # createMissionToROL: " " for what is missing, "public" for a missing tool.
            body.update(
                creatorUid=prog.creator_uid or " ",
                description=prog.description or " ",
                chatRoom=prog.chat_room or " ",
                tool=prog.tool or "public",
            )
        else:
            body["creatorUid"] = prog.creator_uid
        if prog.classification:
            body["classification"] = prog.classification
        return _program(prog.operation, body)
    return _program(
        "update",
        {
            "content": {"hashes": list(prog.hashes), "uids": list(prog.uids)},
            "creatorUid": prog.creator_uid,
            "changeType": prog.change_type,
            "missionName": prog.mission_name,
            "missionCreatorUid": prog.mission_creator_uid,
            "missionChatRoom": prog.mission_chat_room,
            "missionTool": prog.mission_tool,
            "missionDescription": prog.mission_description,
        },
    )
