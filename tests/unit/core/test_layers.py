"""The dependency rules: protocol/ and model/ stay pure (no I/O, clock, config or storage),
model/canonical.py depends on nothing of Liaison, and only the router's decision and the
federation guard call ``labels.decide``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src" / "liaison"

FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "time",
    "sqlite3",
    "threading",
    "subprocess",
    "liaison.config",
    "liaison.storage",
    "liaison.router",
    "liaison.session",
    "liaison.transports",
    "liaison.app",
    "liaison.cli",
}
PURE_MODULES = sorted((SRC / "protocol").rglob("*.py")) + sorted((SRC / "model").rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PURE_MODULES, ids=lambda p: p.relative_to(SRC).as_posix())
def test_pure_layers_import_no_io(path: Path) -> None:
    bad = {
        name
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"
    # datetime is allowed for converting timestamps, never for reading the clock.
    text = path.read_text()
    for clock in (".now(", ".utcnow(", ".today(", "monotonic(", "perf_counter("):
        assert clock not in text, f"{path.name} reads the clock ({clock})"


def test_only_the_router_calls_can_see() -> None:
    callers = [
        p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*.py")
        if "can_see(" in p.read_text() and p.name != "access.py"
    ]
    assert callers == ["router.py"]


def test_the_latest_state_interface_is_pure() -> None:
    path = SRC / "latest" / "base.py"
    allowed = ("liaison.model", "liaison.latest", "__future__", "collections", "dataclasses")
    bad = {
        name
        for name in imported_modules(path)
        if name != "typing" and not any(name == a or name.startswith(a + ".") for a in allowed)
    }
    assert not bad, f"latest/base.py imports {sorted(bad)}"


def test_only_the_composition_root_picks_the_latest_state() -> None:
    """The router depends on the ``LatestState`` interface; app.py constructs the implementation."""
    namers = sorted(
        p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*.py")
        if p.parent.name != "latest" and "MemoryLatestState(" in p.read_text()
    )
    assert namers == ["app.py"]


# --- model/canonical.py: the bottom of the model, shared with the audit log ------------------

CANONICAL = SRC / "model" / "canonical.py"
CANONICAL_MAY_IMPORT = {"__future__", "collections.abc", "hashlib", "json", "re"}


def test_canonical_is_pure_and_imports_nothing_of_liaison() -> None:
    """Canonical JSON and times are what the audit log hashes: no Liaison import (so the audit
    never depends on the label model), and only the standard library modules listed here."""
    imported = imported_modules(CANONICAL)
    assert imported <= CANONICAL_MAY_IMPORT, sorted(imported - CANONICAL_MAY_IMPORT)
    tree = ast.parse(CANONICAL.read_text())
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert not relative


# --- labels.decide: the router's decision and the federation guard only ----------------------

LABELS = "liaison.model.labels"
DECISION = "liaison.model.labels.decision"
# model/access.py is the router's decision (can_see, called only by router.py, see above);
# federation/guard.py decides again, independently, before bytes leave for a partner.
DECIDE_CALLERS = {"router.py", "model/access.py", "federation/guard.py"}


def decide_uses(source: str) -> list[int]:
    """Lines of ``source`` that import, call or take ``labels.decide`` in any spelling:
    ``labels.decide``, ``liaison.model.labels.decide``, ``decision.decide``, or ``decide`` (or an
    alias of it) imported from the package or its ``decision`` module."""
    tree = ast.parse(source)
    modules: set[str] = set()  # names bound to the package or to its decision module
    functions: set[str] = set()  # names bound to decide itself
    lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                bound = alias.asname or alias.name
                full = f"{node.module}.{alias.name}"
                if full in (LABELS, DECISION):
                    modules.add(bound)
                elif node.module in (LABELS, DECISION) and alias.name in ("decide", "*"):
                    functions.add(bound)
                    lines.append(node.lineno)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in (LABELS, DECISION) and alias.asname:
                    modules.add(alias.asname)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "decide":
            if ast.unparse(node.value) in modules | {LABELS, DECISION}:
                lines.append(node.lineno)
        elif isinstance(node, ast.Name) and node.id in functions:
            lines.append(node.lineno)
    return sorted(lines)


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from liaison.model import labels\nlabels.decide(p, l, a)", True),
        ("from liaison.model import labels as L\nf = L.decide", True),
        ("import liaison.model.labels\nliaison.model.labels.decide(p, l, a)", True),
        ("from liaison.model.labels import decide\n", True),
        ("from liaison.model.labels.decision import decide as d\nd(p, l, a)", True),
        ("from liaison.model.labels import decision\ndecision.decide(p, l, a)", True),
        ("from liaison.model.labels import *\n", True),
        ("from liaison.model import labels\nlabels.Decision(permit=False)", False),
        ("from liaison.model.access import can_see\nself._decide(g, l, v)", False),
    ],
)
def test_decide_uses_finds_every_spelling(source: str, found: bool) -> None:
    assert bool(decide_uses(source)) is found


def test_only_the_router_decision_and_the_guard_call_labels_decide() -> None:
    callers = {
        rel
        for p in SRC.rglob("*.py")
        if not (rel := p.relative_to(SRC).as_posix()).startswith("model/labels/")
        and decide_uses(p.read_text())
    }
    assert callers <= DECIDE_CALLERS, sorted(callers - DECIDE_CALLERS)
    # The guard's second check exists; tests/unit/federation/test_second_check.py pins it.
    assert "federation/guard.py" in callers


API_MODULES = sorted((SRC / "api").glob("*.py"))
# The concrete classes behind the Store protocol and the file index: chosen in one place.
CONCRETE_STORES = {
    "MemoryStore",
    "SqliteStore",
    "PostgresStore",
    "MemoryFileIndex",
    "SqliteFileIndex",
    "MemoryMissionStore",
    "SqliteMissionStore",
}


def names_used(path: Path) -> set[str]:
    """Every identifier a module names: imported names, bare names and attribute names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
    return names


@pytest.mark.parametrize("path", API_MODULES, ids=lambda p: p.relative_to(SRC).as_posix())
def test_the_http_side_never_holds_a_store(path: Path) -> None:
    """History and files reach HTTP handlers only through the router's query side
    (``liaison.query``), which re-exports the value types they need: no ``api`` module imports
    ``liaison.storage`` or names a store."""
    bad = {
        n
        for n in imported_modules(path)
        if n == "liaison.storage" or n.startswith("liaison.storage.")
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"
    held = names_used(path) & {"Store", "FileStore", "FileIndex", *CONCRETE_STORES}
    assert not held, f"{path.name} names {sorted(held)}"


def test_only_the_composition_root_names_concrete_stores() -> None:
    """``app.py`` chooses the store backends and opens the file store; everything else works
    with the ``Store`` protocol or the router's query side."""
    namers = sorted(
        p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*.py")
        if "storage" not in p.relative_to(SRC).parts[:1] and names_used(p) & CONCRETE_STORES
    )
    assert namers == ["app.py"]
    openers = sorted(
        p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*.py")
        if "storage" not in p.relative_to(SRC).parts[:1] and "FileStore.open" in p.read_text()
    )
    assert openers == ["app.py"]


# The sans-IO seams of issue 10: the TAK stream peer and the outbound queue are pure, so every
# carrier (asyncio streams, WebSocket, later gRPC) is a thin adapter over the same code.
SANS_IO_MODULES = ["protocol/tak_peer.py", "transports/outbound.py"]
SANS_IO_FORBIDDEN = FORBIDDEN | {"aiohttp", "grpc", "trio", "anyio", "liaison.api"}


@pytest.mark.parametrize("name", SANS_IO_MODULES)
def test_sans_io_peer_and_queue_import_no_io(name: str) -> None:
    path = SRC / name
    bad = {
        module
        for module in imported_modules(path)
        if any(module == f or module.startswith(f + ".") for f in SANS_IO_FORBIDDEN)
    }
    assert not bad, f"{name} imports {sorted(bad)}"
    text = path.read_text()
    for clock in (".now(", ".utcnow(", ".today(", "monotonic(", "perf_counter(", "time.time("):
        assert clock not in text, f"{name} reads the clock ({clock})"


# The partner link is wire-agnostic: the native wire, TLS and sockets sit beside it, so a second
# wire (TAK federation v2) plugs in without touching it (docs/architecture.md).
WIRE_MODULES = {
    "asyncio.streams",
    "socket",
    "ssl",
    "liaison.protocol.federation",
    "liaison.federation.native",
    "liaison.federation.tls",
    "liaison.federation.supervisor",
    "liaison.transports",
}
# The one outbound queue is pure (see above): the link queues in it, it carries no bytes.
NOT_A_WIRE = {"liaison.transports.outbound"}


def test_the_peer_link_imports_no_wire() -> None:
    path = SRC / "federation" / "link.py"
    bad = {
        name
        for name in imported_modules(path)
        if name not in NOT_A_WIRE
        and any(name == f or name.startswith(f + ".") for f in WIRE_MODULES)
    }
    assert not bad, f"federation/link.py imports {sorted(bad)}"
    text = path.read_text()
    assert "StreamWriter" not in text and "StreamReader" not in text


def test_the_composition_root_starts_tasks_only_through_lifetimes() -> None:
    # Every long-running part is a component, every background task is owned by one: none is
    # started, looked up or cancelled by name in app.py.
    text = (SRC / "app.py").read_text()
    for call in ("create_task(", "ensure_future(", "get_name(", ".cancel("):
        assert call not in text, f"app.py calls {call}"


IDENTITY_MODULES = sorted((SRC / "identity").glob("*.py"))
# identity/ sits below the router, the sessions and every carrier: they ask it who a peer is.
IDENTITY_FORBIDDEN = (
    "liaison.api",
    "liaison.router",
    "liaison.session",
    "liaison.transports",
    "liaison.federation",
    "liaison.storage",
    "liaison.gate",
    "liaison.app",
    "liaison.cli",
    "liaison.admin",
)


@pytest.mark.parametrize("path", IDENTITY_MODULES, ids=lambda p: p.relative_to(SRC).as_posix())
def test_identity_imports_no_upper_layer(path: Path) -> None:
    bad = {
        name
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in IDENTITY_FORBIDDEN)
    }
    assert not bad, f"identity/{path.name} imports {sorted(bad)}"


def test_no_identity_module_left_at_the_top() -> None:
    for old in ("pki.py", "users.py", "groups.py", "datapackage.py"):
        assert not (SRC / old).exists(), f"{old} belongs in identity/"


LISTENER_STRINGS = frozenset({"tls", "tcp", "udp", "mesh", "https", "enroll", "http", "federation"})


def _mentions_listener(node: ast.expr) -> bool:
    return any(
        (isinstance(n, ast.Name) and "listener" in n.id.lower())
        or (isinstance(n, ast.Attribute) and "listener" in n.attr.lower())
        for n in ast.walk(node)
    )


def _listener_string(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in LISTENER_STRINGS
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_listener_string(e) for e in node.elts)
    return False


def test_listener_kinds_are_compared_as_listener_values() -> None:
    """Outside identity/, a listener kind is a ``Listener`` member, never a string literal: no
    ``listener == "tls"`` and no closed tuple of names to test membership against."""
    found = []
    for path in SRC.rglob("*.py"):
        if path.parent.name == "identity":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            if any(_listener_string(o) for o in operands) and any(
                _mentions_listener(o) for o in operands
            ):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, f"listener kinds compared as strings: {found}"


def test_listener_names_are_declared_once() -> None:
    """The set of listener kinds is the ``Listener`` enum; no other module keeps its own list."""
    found = []
    for path in SRC.rglob("*.py"):
        if path.parent.name == "identity":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                value = node.value
                if any("LISTENER" in n for n in names) and isinstance(
                    value, ast.Tuple | ast.List | ast.Set | ast.Dict
                ):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, f"a second list of listener kinds: {found}"


FEEDS_MODULES = sorted((SRC / "feeds").glob("*.py"))
# feeds/ are sources of the router (docs/feeds.md): they publish through it and nothing else.
# They never reach a subscriber, the store, a listener or the HTTP side directly.
FEEDS_FORBIDDEN = (
    "liaison.api",
    "liaison.session",
    "liaison.transports",
    "liaison.storage",
    "liaison.latest",
    "liaison.query",
    "liaison.missions",
    "liaison.identity",
    "liaison.app",
    "liaison.cli",
    "liaison.admin",
)


@pytest.mark.parametrize("path", FEEDS_MODULES, ids=lambda p: p.relative_to(SRC).as_posix())
def test_feeds_reach_the_router_only(path: Path) -> None:
    bad = {
        name
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FEEDS_FORBIDDEN)
    }
    assert not bad, f"feeds/{path.name} imports {sorted(bad)}"


def test_every_top_level_module_has_its_reason_in_the_architecture_doc() -> None:
    """A newcomer finds every room from the folder names: a module at the top of src/liaison/ is
    listed, with why, in docs/architecture.md ("Why these modules sit at the top level")."""
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    section = doc.split("### Why these modules sit at the top level", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"`([a-z_]+\.py)`", section))
    top = {p.name for p in SRC.glob("*.py") if p.name != "__init__.py"}
    assert top <= listed, sorted(top - listed)


def test_grpc_is_never_imported_and_h2_only_with_a_tak_federation_peer() -> None:
    """Liaison speaks gRPC itself (federation/fig_h2.py): grpcio is never loaded, not even by the
    TAK v2 wires; h2 only by those (a server without a ``tak-v2`` peer never loads it)."""
    import subprocess
    import sys

    code = (
        "import sys, liaison.app, liaison.cli\n"
        "print('h2' in sys.modules)\n"
        "import liaison.federation.takv2, liaison.federation.takv2_server\n"
        "print('h2' in sys.modules, any(m == 'grpc' or m.startswith('grpc.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "True", "False"], out.stderr


# --- one outbound queue: transports/outbound.py ------------------------------------------------

# Every router subscriber (a class with a ``deliver`` method), by what it does with an event.
# Those whose reader can be slow hold what waits in an ``OutboundQueue``; the others hold nothing.
QUEUEING_SUBSCRIBERS = {
    ("session.py", "StreamSession"),
    ("api/ws.py", "WsSubscriber"),
    ("federation/link.py", "PeerLink"),
}
UNQUEUED_SUBSCRIBERS = {
    ("router.py", "Subscriber"),  # the interface
    ("transports/udp.py", "MulticastBridge"),  # one datagram per event, at once
}
# Containers a hand-written outbound queue is made of.
QUEUE_CONTAINERS = {"deque", "OrderedDict", "Queue", "SimpleQueue", "PriorityQueue", "LifoQueue"}
CONTAINER_ADDS = {"append", "appendleft", "extend", "insert", "add", "setdefault", "heappush"}


def subscriber_classes(tree: ast.AST) -> dict[str, ast.ClassDef]:
    return {
        node.name: node
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(isinstance(f, ast.FunctionDef) and f.name == "deliver" for f in node.body)
    }


def hand_written_queue(cls: ast.ClassDef) -> list[str]:
    """What in ``cls`` looks like an outbound queue of its own: a queue-like container built
    anywhere in the class, or ``deliver`` adding to a container (``x.append(...)``,
    ``x[key] = ...``) instead of putting into its ``OutboundQueue``."""
    found: list[str] = []
    for node in ast.walk(cls):
        if isinstance(node, ast.Call):
            f = node.func
            name = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            if name in QUEUE_CONTAINERS:
                found.append(f"line {node.lineno}: builds a {name}")
    deliver = next(f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "deliver")
    for node in ast.walk(deliver):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CONTAINER_ADDS
        ):
            found.append(f"line {node.lineno}: deliver calls .{node.func.attr}()")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Subscript) for t in targets):
                found.append(f"line {node.lineno}: deliver stores into a container")
    return found


@pytest.mark.parametrize(
    ("source", "own_queue"),
    [
        (
            "class S:\n def __init__(s): s.q = OutboundQueue(L)\n"
            " def deliver(s, o): s.q.put(o, o.coalesce_key)",
            False,
        ),
        ("class S:\n def __init__(s): s.q = []\n def deliver(s, o): s.q.append(o.event)", True),
        ("class S:\n def __init__(s): s.q = {}\n def deliver(s, o): s.q[o.uid] = o", True),
        (
            "import collections\nclass S:\n def __init__(s): s.q = collections.deque()\n"
            " def deliver(s, o): pass",
            True,
        ),
        ("class S:\n def __init__(s): s.q = OrderedDict()\n def deliver(s, o): pass", True),
    ],
)
def test_hand_written_queue_finds_the_usual_shapes(source: str, own_queue: bool) -> None:
    (cls,) = subscriber_classes(ast.parse(source)).values()
    assert bool(hand_written_queue(cls)) is own_queue


def test_every_subscriber_queues_in_the_one_outbound_queue() -> None:
    """No module but ``transports/outbound.py`` writes a (coalescing) outbound queue: every
    subscriber is known here, and those that queue build an ``OutboundQueue`` and nothing
    queue-like of their own."""
    found: set[tuple[str, str]] = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "transports/outbound.py":
            continue
        for name, cls in subscriber_classes(ast.parse(path.read_text())).items():
            found.add((rel, name))
            if (rel, name) not in QUEUEING_SUBSCRIBERS:
                continue
            built = {
                n.func.id
                for n in ast.walk(cls)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            }
            assert "OutboundQueue" in built, f"{rel}: {name} holds no OutboundQueue"
            assert not hand_written_queue(cls), f"{rel}: {name}: {hand_written_queue(cls)}"
    assert found == QUEUEING_SUBSCRIBERS | UNQUEUED_SUBSCRIBERS
