"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, against a real server.

Playwright's own browser download is not used (it cannot be fetched here): Chromium comes from
Debian's ``chromium`` package and is started headless, without sandbox (tests run as root in a
container) and without any background networking, so the page can reach nothing but the server.
The tests skip with the reason when Chromium or Playwright is missing, and fail instead when
``LIAISON_REQUIRE_SERVICES=1`` (CI, where both are installed).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.conftest import data_dir, start_server

if TYPE_CHECKING:
    from playwright.async_api import Browser

__all__ = ["browser", "data_dir", "start_server"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; no 'playwright install')"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    reason = unavailable()
    if reason is not None:
        if os.environ.get("LIAISON_REQUIRE_SERVICES") == "1":
            pytest.fail(f"browser tests required but {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()
