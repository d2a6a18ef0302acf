"""Fixtures that run a real Liaison server on 127.0.0.1 with every listener on port 0."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from liaison import config as config_mod
from liaison.app import Server, run_server
from liaison.identity.issue import issue_client_cert

ServerFactory = Callable[..., contextlib.AbstractAsyncContextManager[Server]]


def make_config(data_dir: Path, **overrides: Any) -> config_mod.Config:
    base: dict[str, Any] = {
        "data_dir": str(data_dir),
        "tcp": "127.0.0.1:0",
        "tls": "127.0.0.1:0",
        "udp": "127.0.0.1:0",
        "https": "127.0.0.1:0",
        "enroll": "127.0.0.1:0",
        "public_host": "localhost",
    }
    base.update(overrides)
    return config_mod.load(None, {}, base)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def start_server(data_dir: Path) -> ServerFactory:
    """``async with start_server(**overrides) as server:`` runs a server for the block."""

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Server]:
        async with run_server(make_config(data_dir, **overrides)) as server:
            yield server

    return factory


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path
    ca: Path


def issue_cert(server: Server, name: str, org: str | None = None) -> ClientCert:
    """Issue a client certificate from the server's CA and write it where pytak can load it."""
    assert server.server_pki is not None
    issued = issue_client_cert(server.server_pki, common_name=name, org=org)
    out = server.config.data_dir / "test-clients"
    out.mkdir(parents=True, exist_ok=True)
    cert = out / f"{name}.pem"
    key = out / f"{name}.key"
    cert.write_bytes(issued.cert_pem)
    assert issued.key_pem is not None
    key.write_bytes(issued.key_pem)
    return ClientCert(cert=cert, key=key, ca=server.server_pki.ca_cert)
