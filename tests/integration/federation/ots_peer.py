"""ots-federation (an independent FIG v2 implementation, MIT) as a separate process peer.

Where it is: ``$LIAISON_SHARED_DIR/interop/ots-federation``, else ``shared/`` next to the
repository (CI: ``../shared``) or next to the worktree folder (``/work/wt/NAME`` ->
``/work/shared``). It needs grpcio 1.81.1 and protobuf 6 (its INTEROP.md), which Liaison's own
venv does not pin, so :func:`ots_python` builds a venv of its own from the package index pip is
configured with, once, in a cache folder outside the repository (``$LIAISON_TEST_CACHE``, else
``~/.cache/liaison-tests``). When the folder is missing or the venv cannot be built the tests
skip with the reason; under ``LIAISON_REQUIRE_SERVICES=1`` they fail instead.

:class:`OtsPeer` runs ``ots_driver.py`` in that venv (its stdin/stdout JSON lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DRIVER = Path(__file__).with_name("ots_driver.py")
# What ots-federation's INTEROP.md lists as its runtime (and what it imports).
REQUIREMENTS = ["grpcio==1.81.1", "protobuf>=6.33.1,<7", "lxml", "dateutils", "cryptography"]
# Seconds the venv build may take (pip from the local mirror: about a minute).
BUILD_TIMEOUT_S = 600
# Seconds for the driver to report ready, and for it to exit when asked.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Lines of driver output kept.
MAX_LINES = 10_000


def _unavailable(reason: str) -> None:
    if os.environ.get("LIAISON_REQUIRE_SERVICES") == "1":
        pytest.fail(f"ots-federation peer required but unavailable: {reason}")
    pytest.skip(reason)


def ots_source() -> Path:
    env = os.environ.get("LIAISON_SHARED_DIR")
    candidates = [Path(env)] if env else [REPO.parent / "shared", REPO.parent.parent / "shared"]
    for shared in candidates:
        src = shared / "interop" / "ots-federation"
        if (src / "ots_federation" / "manager.py").is_file():
            return src
    _unavailable(f"ots-federation not found under {', '.join(map(str, candidates))}")
    raise AssertionError  # not reached


def ots_python() -> Path:
    """The python of a venv holding ots-federation's pinned runtime (built once, cached)."""
    cache = Path(os.environ.get("LIAISON_TEST_CACHE", Path.home() / ".cache" / "liaison-tests"))
    home = cache / "ots-federation-venv-grpcio1.81.1"
    python = home / "bin" / "python"
    done = home / ".liaison-complete"
    if done.is_file():
        return python
    try:
        venv.create(home, with_pip=True, clear=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *REQUIREMENTS],
            check=True,
            capture_output=True,
            timeout=BUILD_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        _unavailable(f"cannot build ots-federation's venv in {home}: {exc} {detail[-500:]!r}")
    done.write_text(" ".join(REQUIREMENTS))
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def colon_hex(fingerprint: str) -> str:
    """Liaison's fingerprint (64 hex digits) in ots-federation's form (AB:CD:...)."""
    h = fingerprint.replace(":", "").upper()
    return ":".join(h[i : i + 2] for i in range(0, len(h), 2))


def write_config(
    path: Path,
    *,
    server_id: str,
    listen_port: int | None,
    ca_bundle: Path,
    cert_chain: Path,
    key: Path,
    peer_server_id: str,
    peer_fingerprint: str,
    peer_port: int,
    accept_as: str = "*:FedIn",
    share_as: str = "FedOut:FedOut",
) -> Path:
    """An ots-federation INI: one peer (Liaison) pinned by fingerprint, by default wildcard
    groups in (for a Liaison peer without ``groups_out``, which sends no federateGroups), group
    ``FedOut`` shared out. ``peer_port`` is where ots dials Liaison (a closed port when only
    Liaison dials)."""
    listen = (
        f"listen_enabled = true\nlisten_ip = 127.0.0.1\nlisten_port = {listen_port}\n"
        if listen_port is not None
        else "listen_enabled = false\n"
    )
    path.write_text(
        f"""[federation]
enabled = true
server_id = {server_id}
max_hops = 3
{listen}
[federation_ssl]
fed_ca_bundle = {ca_bundle}
fed_cert = {cert_chain}
fed_key = {key}

[federate:liaison]
enabled = true
display_name = liaison
address = localhost
port = {peer_port}
server_id = {peer_server_id}
fingerprint = {colon_hex(peer_fingerprint)}
ca_cert = {ca_bundle}
client_cert = {cert_chain}
client_key = {key}
accept_as = {accept_as}
share_as = {share_as}
health_check_interval = 3
reconnect_interval = 1
"""
    )
    return path


class OtsPeer:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.received: list[str] = []  # CoT XML of each event ots delivered locally
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.log = config.with_suffix(".log")

    async def start(self) -> None:
        python, src = ots_python(), ots_source()
        env = dict(os.environ, PYTHONPATH=str(src), PYTHONUNBUFFERED="1")
        env.pop("VIRTUAL_ENV", None)
        self._log_file = self.log.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            str(python),
            str(DRIVER),
            "--config",
            str(self.config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log_file,
            env=env,
        )
        self._reader = asyncio.create_task(self._read())
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await self._ready.wait()
        except TimeoutError:
            raise AssertionError(f"ots-federation did not start: {self.log_text()}") from None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for _ in range(MAX_LINES):
            line = await self.proc.stdout.readline()
            if not line:
                return
            msg = json.loads(line)
            if msg.get("ready"):
                self._ready.set()
            if "received" in msg:
                self.received.append(msg["received"])

    async def send(self, cot_xml: str, groups: tuple[str, ...] = ("FedOut",)) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(
            (json.dumps({"send": cot_xml, "groups": list(groups)}) + "\n").encode()
        )
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._log_file.close()


def _main() -> None:  # pragma: no cover - manual check: python -m ...ots_peer
    print(ots_python(), ots_source(), file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    _main()
