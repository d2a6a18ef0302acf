"""Fixtures for the PKI, users and data package tests: one CA per module where possible."""

from __future__ import annotations

from pathlib import Path

import pytest

from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki

from .pki_helpers import NOW, PUBLIC_HOST


@pytest.fixture(scope="module")
def module_pki(tmp_path_factory: pytest.TempPathFactory) -> ServerPki:
    """A CA and server certificate shared by the read-only tests of one module."""
    data_dir = tmp_path_factory.mktemp("data")
    return ensure_server_pki(data_dir, public_host=PUBLIC_HOST, extra_names=["10.1.2.3"])


@pytest.fixture
def fresh_pki(tmp_path: Path) -> ServerPki:
    """A CA of its own, for tests that revoke, import or re-issue."""
    return ensure_server_pki(tmp_path, public_host=PUBLIC_HOST, now=NOW)
