"""The dependency rule: protocol/ and model/ stay pure (no I/O, clock, config or storage)."""

from __future__ import annotations

import ast
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
PURE_MODULES = sorted((SRC / "protocol").glob("*.py")) + sorted((SRC / "model").glob("*.py"))


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
