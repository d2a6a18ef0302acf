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


def test_the_peer_link_imports_no_wire() -> None:
    path = SRC / "federation" / "link.py"
    bad = {
        name
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in WIRE_MODULES)
    }
    assert not bad, f"federation/link.py imports {sorted(bad)}"
    text = path.read_text()
    assert "StreamWriter" not in text and "StreamReader" not in text


def test_only_the_composition_root_names_concrete_stores() -> None:
    namers = sorted(
        p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*.py")
        if p.parent.name != "storage"
        and any(name in p.read_text() for name in ("MemoryStore", "SqliteStore"))
    )
    assert namers == ["app.py"]


def test_the_composition_root_starts_tasks_only_through_lifetimes() -> None:
    # Every long-running part is a component, every background task is owned by one: none is
    # started, looked up or cancelled by name in app.py.
    text = (SRC / "app.py").read_text()
    for call in ("create_task(", "ensure_future(", "get_name(", ".cancel("):
        assert call not in text, f"app.py calls {call}"
