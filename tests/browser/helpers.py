"""What the browser tests do on the map page: sign in, read what is drawn, wait for changes."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page

from liaison.app import Server
from liaison.identity.users import UserDirectory

# Where screenshots and measurements go (gitignored; CI keeps the folder as an artefact).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Longest any single wait on the page may take, in milliseconds.
WAIT_MS = 15_000
PASSWORD = "correct horse battery"
VIEWPORT = {"width": 1400, "height": 850}


def add_web_user(server: Server, name: str, groups: tuple[str, ...] = ()) -> None:
    """A user who signs in with a password (in the server's own users file)."""
    users = UserDirectory.load(server.config.resolved_users_file())
    users.add_user(name, "TEST", password=PASSWORD, groups=groups)


def map_url(server: Server, path: str = "/") -> str:
    assert server.enroll is not None, "the password listener (8446) is not running"
    return f"https://127.0.0.1:{server.enroll.port}{path}"


async def new_page(browser: Browser) -> Page:
    context = await browser.new_context(ignore_https_errors=True, viewport=VIEWPORT)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    return page


@contextlib.asynccontextmanager
async def browsing(browser: Browser) -> AsyncIterator[Browser]:
    """Close every page opened in the block when it ends, so the server (stopped after the
    block) has no open WebSocket or request to wait for."""
    try:
        yield browser
    finally:
        for context in list(browser.contexts):
            await context.close()


async def sign_in(browser: Browser, server: Server, name: str) -> Page:
    """Open the sign-in page, sign in as ``name`` and wait for the map to be running."""
    page = await new_page(browser)
    await page.goto(map_url(server, "/login"))
    await page.fill("#username", name)
    await page.fill("#password", PASSWORD)
    await page.click("#sign-in")
    await page.wait_for_url(map_url(server, "/"), timeout=WAIT_MS)
    await page.wait_for_function("() => window.__liaison !== undefined", timeout=WAIT_MS)
    await page.wait_for_function(
        "() => document.getElementById('conn').textContent === 'Live'", timeout=WAIT_MS
    )
    return page


async def drawn(page: Page) -> dict[str, dict[str, Any]]:
    """The items drawn in the last frame, by uid: {x, y, callsign, sidc, stale, label}."""
    items = await page.evaluate("() => window.__liaison.rendered()")
    return {i["uid"]: i for i in items}


# The items drawn in the last frame, by uid, as a JS expression.
DRAWN_JS = "Object.fromEntries(window.__liaison.rendered().map((i) => [i.uid, i]))"


async def wait_drawn(page: Page, condition: str, arg: Any = None) -> None:
    """Wait until the JS expression ``condition`` is true; in it ``d`` is the items drawn in the
    last frame by uid ({x, y, callsign, sidc, stale, label}) and ``arg`` is ``arg``."""
    await page.wait_for_function(
        f"(arg) => {{ const d = {DRAWN_JS}; return {condition}; }}",
        arg=arg,
        timeout=WAIT_MS,
        polling=100,
    )


async def pixel_colours(page: Page, x: float, y: float, radius: int = 6) -> set[tuple[int, ...]]:
    """The distinct RGB colours of the map canvas in a square around (x, y) (CSS pixels)."""
    values = await page.evaluate(
        """([x, y, r]) => {
            const c = document.getElementById('map-canvas');
            const k = c.width / c.clientWidth;
            const d = c.getContext('2d').getImageData(
                Math.round((x - r) * k), Math.round((y - r) * k),
                Math.round(2 * r * k), Math.round(2 * r * k)).data;
            const out = [];
            for (let i = 0; i < d.length; i += 4) out.push([d[i], d[i + 1], d[i + 2]]);
            return out;
        }""",
        [x, y, radius],
    )
    return {tuple(v) for v in values}


def save_json(name: str, data: Any) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")


def labelled_web_users(data_dir: Path, folder: Path, policy_text: str) -> Path:
    """The label policy ``policy_text`` written to ``folder``, and the users of
    tests/integration/test_labels_e2e.py (each with its organisation and profile) able to sign in
    to the web map with PASSWORD; returns the policy file for ``start_server(policy_file=...)``."""
    from tests.integration.test_labels_e2e import USERS

    policy = folder / "policy.toml"
    policy.write_text(policy_text)
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile, password=PASSWORD)
    return policy
