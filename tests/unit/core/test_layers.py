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


API_MODULES = sorted((SRC / "api").glob("*.py"))
# The concrete classes behind the Store protocol and the file index: chosen in one place.
CONCRETE_STORES = {"MemoryStore", "SqliteStore", "MemoryFileIndex", "SqliteFileIndex"}


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
