"""Missions on the web map: the Missions tab lists what the user may see, subscribes and
unsubscribes the page, shows a mission's items in a list and on the map and its timeline
(changes and log entries), adds a log entry, and follows the mission live; a user below an
item's label never sees it (nor a log entry above them), anywhere on the page."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page

from tests.browser.helpers import (
    ARTIFACTS,
    WAIT_MS,
    browsing,
    drawn,
    labelled_web_users,
    sign_in,
    wait_drawn,
)
from tests.browser.test_labels import CHAT_POLICY
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients
from tests.integration.http.http_support import cert_session
from tests.integration.test_labels_e2e import seclabel
from tests.integration.test_missions import M, call, connect, data, mission_marker, wait_subscribed

PANEL = "#missions"
# The subscription of usa-u's web page (its uid is the feed's, liaison-web-<user>).
SUB = f"{M}/ops/subscription?uid=liaison-web-usa-u"


def placed(event: bytes, lat: float, lon: float) -> bytes:
    """``sa_event`` puts every marker at 50.45, 30.52: move it."""
    return event.replace(b'lat="50.45" lon="30.52"', f'lat="{lat}" lon="{lon}"'.encode())


async def open_missions(page: Page) -> None:
    await page.click("[data-tab=missions]")
    await page.locator(f"{PANEL} .mission-list li[data-mission=ops]").wait_for(timeout=WAIT_MS)


async def timeline(page: Page) -> str:
    return await page.locator(f"{PANEL} .mission-timeline").text_content() or ""


async def test_the_missions_tab(
    start_server: ServerFactory, browser: Browser, data_dir: Path, tmp_path: Path
) -> None:
    policy = labelled_web_users(data_dir, tmp_path, CHAT_POLICY)
    async with start_server(policy_file=str(policy)) as server, browsing(browser):
        cert = issue_cert(server, "usa-s", "USA")
        low_cert = issue_cert(server, "usa-u", "USA")
        device = await connect(server, cert, "ANDROID-usa", "usa-s")
        async with (
            clients(device),
            cert_session(server, cert) as http,
            cert_session(server, low_cert) as low_http,
        ):
            await wait_subscribed(server, "ANDROID-usa")
            # A USA mission with an UNCLASSIFIED item and a SECRET one (the canary).
            status, body = await call(
                http,
                server,
                "PUT",
                f"{M}/ops?creatorUid=ANDROID-usa&description=Bridge%20watch",
                params={"classification": "UNCLASSIFIED//REL TO USA"},
            )
            assert status == 201, body
            unclass, secret = seclabel("UNCLASSIFIED", ["USA"]), seclabel("SECRET", ["USA"])
            await device.send(placed(mission_marker("m-open", "open", "ops", unclass), 48.1, 11.5))
            await device.send(
                placed(mission_marker("m-secret", "CANARY-WEB-SECRET", "ops", secret), 48.2, 11.6)
            )
            await device.wait_for(b"<contentUid>m-secret</contentUid>")
            # A SECRET log entry the UNCLASSIFIED user must never see.
            status, body = await call(
                http,
                server,
                "POST",
                f"{M}/logs/entries",
                params={"classification": "SECRET//REL TO USA"},
                json={
                    "content": "CANARY-LOG",
                    "creatorUid": "ANDROID-usa",
                    "missionNames": ["ops"],
                },
            )
            assert status == 201, body

            # usa-u (UNCLASSIFIED) lists the mission and subscribes the page.
            low = await sign_in(browser, server, "usa-u")
            await open_missions(low)
            row = low.locator(f"{PANEL} .mission-list li[data-mission=ops]")
            assert "Bridge watch" in (await row.text_content() or "")
            await row.locator(".mission-sub", has_text="Subscribe").click()
            await row.locator(".mission-sub", has_text="Unsubscribe").wait_for(timeout=WAIT_MS)
            # The server holds the page's subscription (read as usa-u over HTTPS).
            status, body = await call(low_http, server, "GET", SUB)
            assert status == 200 and data(body)["username"] == "usa-u"

            # Open it: its items in the list and on the map, its timeline.
            await row.locator(".mission-name").click()
            items = low.locator(f"{PANEL} .mission-items li")
            await items.first.wait_for(timeout=WAIT_MS)
            assert await items.count() == 1
            assert await items.first.get_attribute("data-uid") == "m-open"
            assert "UNCLASSIFIED//REL TO USA" in (await items.first.text_content() or "")
            await wait_drawn(low, "'m-open' in d")
            assert "m-secret" not in await drawn(low)
            text = await timeline(low)
            assert "create mission" in text and "add content: M-OPEN" in text
            assert "CANARY" not in text and "M-SECRET" not in text

            # Add a log entry from the page: it is in the timeline and on the server.
            await low.fill(f"{PANEL} .log-text", "bridge clear, from the web")
            await low.click(f"{PANEL} .log-add")
            await low.locator(
                f"{PANEL} .mission-timeline li.tl-log", has_text="bridge clear, from the web"
            ).wait_for(timeout=WAIT_MS)
            status, body = await call(http, server, "GET", f"{M}/ops/log")
            entries = {e["content"]: e for e in data(body)}
            web_entry = entries["bridge clear, from the web"]
            assert web_entry["creatorUid"] == "liaison-web-usa-u"
            assert web_entry["missionNames"] == ["ops"]

            # Live: a new item sent to the mission reaches the subscribed page (map, list and
            # timeline) without a reload.
            await device.send(
                placed(mission_marker("m-live", "live", "ops", unclass), 48.15, 11.55)
            )
            await wait_drawn(low, "'m-live' in d")
            await low.locator(f"{PANEL} .mission-items li[data-uid=m-live]").wait_for(
                timeout=WAIT_MS
            )
            await low.locator(
                f"{PANEL} .mission-timeline li", has_text="add content: M-LIVE"
            ).wait_for(timeout=WAIT_MS)

            # usa-s (SECRET) sees both items and the SECRET log entry.
            high = await sign_in(browser, server, "usa-s")
            await open_missions(high)
            await high.locator(f"{PANEL} .mission-list li[data-mission=ops] .mission-name").click()
            await high.locator(f"{PANEL} .mission-items li[data-uid=m-secret]").wait_for(
                timeout=WAIT_MS
            )
            await wait_drawn(high, "'m-secret' in d && 'm-open' in d")
            await high.locator(
                f"{PANEL} .mission-timeline li.tl-log", has_text="CANARY-LOG"
            ).wait_for(timeout=WAIT_MS)
            assert (await drawn(high))["m-secret"]["label"] == "SECRET//REL TO USA"

            # Unsubscribe: the page's subscription is gone from the server.
            await row.locator(".mission-sub", has_text="Unsubscribe").click()
            await row.locator(".mission-sub", has_text="Subscribe").wait_for(timeout=WAIT_MS)
            assert (await call(low_http, server, "GET", SUB))[0] == 404

            ARTIFACTS.mkdir(exist_ok=True)
            await low.screenshot(path=str(ARTIFACTS / "map-missions-unclass.png"))
            await high.screenshot(path=str(ARTIFACTS / "map-missions-secret.png"))
            # Nothing above usa-u's clearance reached its page, in any form.
            content = await low.content()
            assert "CANARY" not in content and "m-secret" not in content
            assert "m-secret" not in await drawn(low)
            assert low.errors == [] and high.errors == []  # type: ignore[attr-defined]
