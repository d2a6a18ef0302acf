"""Feeds on the web map: a real server runs an ADS-B file feed labelled SECRET and a feed whose
file is missing. A SECRET web user sees the aircraft with its air track symbol and both feeds in
the Layers panel's Feeds section (running, failing with its error shown as text, then the first
feed failing once its file holds garbage); an UNCLASSIFIED user sees no aircraft. A feed whose
file is missing is flagged on the Layers button while the panel is closed, and the flag clears
once the file is there."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from playwright.async_api import Browser, Page

from liaison.identity.users import UserDirectory
from tests.browser.helpers import (
    ARTIFACTS,
    PASSWORD,
    WAIT_MS,
    browsing,
    drawn,
    sign_in,
    wait_drawn,
)
from tests.integration.conftest import ServerFactory

POLICY = """
[policy]
id = "LIAISON-WEB-FEEDS"
version = 1
classifications = ["UNCLASSIFIED", "RESTRICTED", "SECRET"]

[policy.categories.REL]
type = "PERMISSIVE"
required = true
values = ["USA", "UKR"]

[authz.profiles.usa-secret]
classification = "SECRET"
REL = ["USA"]

[authz.profiles.usa-unclass]
classification = "UNCLASSIFIED"
REL = ["USA"]

[gate.listeners.enroll]
ceiling = { classification = "SECRET", REL = "*" }

[feeds.planes]
kind = "adsb-file"
path = "aircraft.json"
org = "USA"
ceiling = { classification = "SECRET", REL = "*" }
default_classification = "SECRET"
affiliation = "n"
interval_s = 0.2
min_interval_s = 0.1

[feeds.broken]
kind = "adsb-file"
path = "<img src=x onerror=alert(1)>.json"
org = "USA"
ceiling = { classification = "SECRET", REL = "*" }
default_classification = "SECRET"
interval_s = 0.2
"""

# A civil fixed-wing airliner (emitter category A3) seen half a second ago.
AIRCRAFT = {
    "hex": "3c6dd4",
    "flight": "DLH4AB  ",
    "lat": 50.45,
    "lon": 30.52,
    "alt_baro": 35000,
    "gs": 450,
    "track": 90,
    "category": "A3",
    "seen_pos": 0.5,
    "seen": 0.5,
}
UID = "ICAO-3c6dd4"
# What the Feeds section shows of a feed, by name: its class and its text.
FEEDS_JS = """() => Object.fromEntries([...document.querySelectorAll('#feeds li[data-feed]')]
    .map((li) => [li.dataset.feed, {cls: li.className, text: li.textContent,
                                    imgs: li.querySelectorAll('img').length}]))"""


async def open_layers(page: Page) -> None:
    """Open the Layers panel from the keyboard (focus the button, press Enter)."""
    await page.focus("#layers-button")
    await page.keyboard.press("Enter")
    assert await page.get_attribute("#layers-button", "aria-expanded") == "true"


async def wait_feed(page: Page, name: str, state: str, wait_ms: int = WAIT_MS) -> None:
    await page.wait_for_function(
        "([name, state]) => document.querySelector(`#feeds li[data-feed='${name}']`)"
        "?.classList.contains(`feed-${state}`)",
        arg=[name, state],
        timeout=wait_ms,
        polling=200,
    )


async def test_feed_aircraft_and_status_on_the_map(
    start_server: ServerFactory, browser: Browser, data_dir: Path, tmp_path: Path
) -> None:
    snapshot = tmp_path / "aircraft.json"
    snapshot.write_text(json.dumps({"now": time.time(), "aircraft": [AIRCRAFT]}))
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    users = UserDirectory.load(data_dir / "users.json")
    users.add_user("usa-s", "USA", profile="usa-secret", password=PASSWORD)
    users.add_user("usa-u", "USA", profile="usa-unclass", password=PASSWORD)
    async with start_server(policy_file=str(policy)) as server, browsing(browser):
        secret = await sign_in(browser, server, "usa-s")
        # Before the panel is opened, the Feeds section is not shown (it is read all the same, for
        # the badge on the Layers button: test_failing_feed_flagged_with_the_panel_closed).
        assert await secret.is_hidden("#feeds")
        await wait_drawn(secret, "arg in d", UID)
        d = await drawn(secret)
        plane = d[UID]
        # A neutral civil fixed-wing air track: a-n-A-C-F, 2525C SNAPCF.
        assert plane["sidc"] == "SNAPCF---------"
        assert plane["callsign"] == "DLH4AB"
        assert plane["label"] == "SECRET//REL TO USA"

        await open_layers(secret)
        await wait_feed(secret, "planes", "running")
        await wait_feed(secret, "broken", "failing")
        assert await secret.is_visible("#feeds")
        feeds = await secret.evaluate(FEEDS_JS)
        assert list(feeds) == ["planes", "broken"]  # configuration order
        assert "adsb-file" in feeds["planes"]["text"]
        assert "1 published of" in feeds["planes"]["text"]
        assert "last error" not in feeds["planes"]["text"]
        # The missing file's error, with its hostile name, is text: no element made of it.
        broken = feeds["broken"]["text"]
        assert "last error: [Errno 2] No such file or directory" in broken
        assert "<img src=x onerror=alert(1)>.json" in broken
        assert feeds["broken"]["imgs"] == 0
        assert await secret.locator("#feeds img").count() == 0
        # Keyboard: each feed is a tab stop after the panel's controls.
        await secret.focus("#feeds li[data-feed='planes']")
        await secret.keyboard.press("Tab")
        assert await secret.evaluate("() => document.activeElement.dataset.feed") == "broken"
        ARTIFACTS.mkdir(exist_ok=True)
        await secret.screenshot(path=str(ARTIFACTS / "map-feeds.png"))

        # The feed's file now holds garbage: the open panel shows it failing within a refresh
        # (every 10 s).
        snapshot.write_text("this is not an aircraft.json")
        await wait_feed(secret, "planes", "failing", wait_ms=3 * WAIT_MS)
        text = await secret.text_content("#feeds li[data-feed='planes']") or ""
        assert "last error:" in text
        # Closing the panel; the failing feeds stay flagged on its button.
        await secret.click("#layers-button")
        assert await secret.get_attribute("#layers-button", "aria-expanded") == "false"
        assert await secret.text_content("#feeds-badge") == "2"  # both feeds fail now
        assert await secret.is_visible("#feeds-badge")

        unclass = await sign_in(browser, server, "usa-u")
        await asyncio.sleep(1.0)  # the snapshot and any update have arrived (the feed is failing)
        assert await unclass.evaluate("() => window.__liaison.items()") == 0
        assert UID not in await drawn(unclass)
        assert secret.errors == [] and unclass.errors == []  # type: ignore[attr-defined]


ONE_FEED = (
    POLICY.split("[feeds.planes]", 1)[0]
    + """
[feeds.rx]
kind = "adsb-file"
path = "later.json"
org = "USA"
ceiling = { classification = "SECRET", REL = "*" }
default_classification = "SECRET"
interval_s = 0.2
"""
)
# The Layers button's flag: the badge's text and visibility, the button's name, the live message.
FLAG_JS = """() => ({badge: document.querySelector('#feeds-badge').textContent,
    shown: !document.querySelector('#feeds-badge').hidden
           && document.querySelector('#feeds-badge').offsetWidth > 0,
    label: document.querySelector('#layers-button').getAttribute('aria-label'),
    live: document.querySelector('#feeds-alert').textContent,
    role: document.querySelector('#feeds-alert').getAttribute('role')})"""


async def test_failing_feed_flagged_with_the_panel_closed(
    start_server: ServerFactory, browser: Browser, data_dir: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(ONE_FEED)
    users = UserDirectory.load(data_dir / "users.json")
    users.add_user("usa-s", "USA", profile="usa-secret", password=PASSWORD)
    async with start_server(policy_file=str(policy)) as server, browsing(browser):
        page = await sign_in(browser, server, "usa-s")
        # The upstream (the file) is missing: the feed fails, and the Layers button says so
        # within a read (at load, then every 10 s) while the panel stays closed.
        await page.wait_for_function(
            "() => document.querySelector('#feeds-badge').textContent === '1'",
            timeout=3 * WAIT_MS,
            polling=200,
        )
        assert await page.is_hidden("#layers")
        assert await page.get_attribute("#layers-button", "aria-expanded") == "false"
        flag = await page.evaluate(FLAG_JS)
        assert flag == {
            "badge": "1",
            "shown": True,
            "label": "Layers and overlays (1 feed failing: rx)",
            "live": "1 feed failing: rx",
            "role": "status",
        }
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "map-feed-failing-badge.png"))

        # The upstream comes back: the next read (within 10 s) clears the flag.
        snapshot = tmp_path / "later.json"
        snapshot.write_text(json.dumps({"now": time.time(), "aircraft": [AIRCRAFT]}))
        await page.wait_for_function(
            "() => document.querySelector('#feeds-badge').hidden",
            timeout=3 * WAIT_MS,
            polling=200,
        )
        assert await page.is_hidden("#layers")
        flag = await page.evaluate(FLAG_JS)
        assert flag == {
            "badge": "",
            "shown": False,
            "label": "Layers and overlays",
            "live": "Feeds: none failing",
            "role": "status",
        }
        assert page.errors == []  # type: ignore[attr-defined]
