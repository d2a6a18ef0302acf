"""Fixtures for the storage tests: ``store`` runs a test once per Store implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from storage_support import STORE_KINDS, opened_store

from liaison.storage import Store


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each test using this runs once per Store implementation."""
    async with opened_store(request.param, tmp_path) as s:
        yield s
