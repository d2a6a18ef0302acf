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
