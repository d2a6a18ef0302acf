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
    """The router depends on the ``LatestState`` interface; app.py constructs the implementation
    (the router's own default, one node's table, serves tests and benches)."""
    namers = sorted(
        p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*.py")
        if p.parent.name != "latest" and "MemoryLatestState(" in p.read_text()
    )
    assert namers == ["app.py", "router.py"]
