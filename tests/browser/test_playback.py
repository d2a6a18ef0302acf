"""The map over time and finding things on it: playback from the server's history (a unit drawn
where it was, labels kept), the search box, and following a moving unit."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, Response

from tests.browser.helpers import (
    ARTIFACTS,
    WAIT_MS,
    add_web_user,
    browsing,
    drawn,
    labelled_web_users,
    sign_in,
    wait_drawn,
)
from tests.browser.test_labels import WEB_POLICY
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients, connect_tcp, connect_tls, sa_event
from tests.integration.test_labels_e2e import marker, seclabel

# Where the unit is first (A) and then (B): 0.03 degrees apart, both in view at zoom 10.
A = (50.45, 30.52)
B = (50.47, 30.55)


async def report_time_ms(page: Page, uid: str) -> int:
    """The report time (ms) of the item's current version, as the server has it."""
    iso = await page.evaluate(
        """(uid) => fetch('/api/v1/items/' + encodeURIComponent(uid))
            .then((r) => r.json()).then((f) => f.properties.time)""",
        uid,
    )
    return int(await page.evaluate("(iso) => Date.parse(iso)", iso))


async def open_playback(page: Page) -> None:
    """Open the playback bar (last hour) and wait until the history is read."""
    await page.click("#playback-button")
    await page.wait_for_function(
        "() => !document.getElementById('playback-time').disabled"
        " && window.__liaison.playbackTime() !== null",
        timeout=WAIT_MS,
    )


async def choose_time(page: Page, seconds: int) -> None:
    """Move the playback slider to ``seconds`` since the epoch, as dragging it does."""
    await page.evaluate(
        """(s) => {
            const r = document.getElementById('playback-time');
            r.value = String(s);
            r.dispatchEvent(new Event('input', { bubbles: true }));
        }""",
        seconds,
    )
    await page.wait_for_function(
        "(s) => window.__liaison.playbackTime() === s * 1000", arg=seconds, timeout=WAIT_MS
    )


def near(d: dict[str, Any], lat: float, lon: float) -> bool:
    return abs(d["lat"] - lat) < 1e-6 and abs(d["lon"] - lon) < 1e-6


async def test_playback_draws_a_unit_where_it_was(
    start_server: ServerFactory, browser: Browser
) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        assert server.tcp is not None
        tak = await connect_tcp(server.tcp.port, "tak")
        async with clients(tak):
            await tak.send(sa_event("u-pb", "PLAY-1", lat=A[0], lon=A[1]))
            page = await sign_in(browser, server, "duty")
            await wait_drawn(page, "'u-pb' in d")
            t_a = await report_time_ms(page, "u-pb")
            live_sidc = (await drawn(page))["u-pb"]["sidc"]
            await asyncio.sleep(2.5)
            await tak.send(sa_event("u-pb", "PLAY-1", lat=B[0], lon=B[1]))
            await page.evaluate("() => window.__liaison.setView({zoom: 10})")
            await wait_drawn(page, "'u-pb' in d && Math.abs(d['u-pb'].lat - arg) < 1e-6", B[0])
            t_b = await report_time_ms(page, "u-pb")
            assert t_b - t_a >= 2000

            await open_playback(page)
            # It opens at the end of the window (the moment it was opened): the unit where it
            # is now, though its last report came less than a second before.
            await wait_drawn(page, "'u-pb' in d && Math.abs(d['u-pb'].lat - arg) < 1e-6", B[0])
            slider = page.locator("#playback-time")
            lo = int(await slider.get_attribute("min") or 0)
            hi = int(await slider.get_attribute("max") or 0)
            assert 3500 <= hi - lo <= 3600  # the last hour
            # A time between the two reports: the unit is drawn at A, with the live symbol.
            t = t_a // 1000 + 1
            assert t * 1000 < t_b
            await choose_time(page, t)
            await wait_drawn(page, "'u-pb' in d && Math.abs(d['u-pb'].lat - arg) < 1e-6", A[0])
            d = (await drawn(page))["u-pb"]
            assert near(d, *A)
            assert d["sidc"] == live_sidc and d["callsign"] == "PLAY-1" and not d["stale"]
            clock = await page.text_content("#playback-clock") or ""
            assert clock.endswith("Z") and clock[11:19] == time_of_day(t)
            assert await page.get_attribute("#playback-time", "aria-valuetext") == clock
            assert "(playback)" in (await page.text_content("#counts") or "")
            # Its popup shows the version drawn.
            await page.evaluate("() => window.__liaison.goTo('u-pb')")
            popup = page.locator("#popup")
            await popup.wait_for(state="visible", timeout=WAIT_MS)
            text = await popup.text_content() or ""
            assert "50.45000, 30.52000" in text and "STALE" not in text
            # Before its first report it is not drawn at all.
            await choose_time(page, t_a // 1000 - 1)
            await wait_drawn(page, "!('u-pb' in d)")
            # Search looks at the picture shown: nothing yet at that time.
            await page.fill("#search-input", "play-1")
            await page.wait_for_function(
                "() => document.getElementById('search-count').textContent === 'No match'",
                timeout=WAIT_MS,
            )
            await page.fill("#search-input", "")
            ARTIFACTS.mkdir(exist_ok=True)
            await choose_time(page, t)
            await wait_drawn(page, "'u-pb' in d && Math.abs(d['u-pb'].lat - arg) < 1e-6", A[0])
            await page.screenshot(path=str(ARTIFACTS / "map-playback.png"))

            # Play in real time from that time: the clock runs and the unit reaches B.
            await page.select_option("#playback-speed", "1")
            await page.click("#playback-play")
            await page.wait_for_function(
                "(t) => window.__liaison.playbackTime() > t * 1000", arg=t, timeout=WAIT_MS
            )
            await wait_drawn(page, "'u-pb' in d && Math.abs(d['u-pb'].lat - arg) < 1e-6", B[0])
            # Pause (unless it already stopped at the end of the window): the time stays.
            play = page.locator("#playback-play")
            if await play.get_attribute("aria-label") == "Pause":
                await play.click()
            assert await play.get_attribute("aria-label") == "Play"
            paused = await page.evaluate("() => window.__liaison.playbackTime()")
            await page.wait_for_timeout(600)
            assert await page.evaluate("() => window.__liaison.playbackTime()") == paused

            # Following the unit in playback: the map moves with it as the time does (the End
            # key takes the slider to the window's end).
            await choose_time(page, t)
            await wait_drawn(page, "'u-pb' in d && Math.abs(d['u-pb'].lat - arg) < 1e-6", A[0])
            await page.evaluate("() => window.__liaison.goTo('u-pb')")
            await popup.get_by_role("button", name="Follow").click()
            await wait_centred(page, "u-pb")
            await page.focus("#playback-time")
            await page.keyboard.press("End")
            await wait_drawn(page, "'u-pb' in d && Math.abs(d['u-pb'].lat - arg) < 1e-6", B[0])
            await wait_centred(page, "u-pb")
            await page.click("#follow-stop")

            # Back to the live picture, which follows the feed again.
            await choose_time(page, t)
            await page.click("#playback-live")
            await page.wait_for_function(
                "() => window.__liaison.playbackTime() === null", timeout=WAIT_MS
            )
            await wait_drawn(page, "'u-pb' in d && Math.abs(d['u-pb'].lat - arg) < 1e-6", B[0])
            assert await page.locator("#playback").is_hidden()
            await tak.send(sa_event("u-pb", "PLAY-1", lat=A[0], lon=A[1]))
            await wait_drawn(page, "'u-pb' in d && Math.abs(d['u-pb'].lat - arg) < 1e-6", A[0])
            assert page.errors == []  # type: ignore[attr-defined]


def time_of_day(seconds: int) -> str:
    t = seconds % 86400
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"


async def test_playback_keeps_what_a_user_may_not_see_hidden(
    start_server: ServerFactory, browser: Browser, data_dir: Path, tmp_path: Path
) -> None:
    policy = labelled_web_users(data_dir, tmp_path, WEB_POLICY)
    async with start_server(policy_file=str(policy)) as server, browsing(browser):
        assert server.tls is not None
        cert = issue_cert(server, "usa-s", "USA")
        sender = await connect_tls(server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca)
        async with clients(sender):

            def secret(lat: str) -> bytes:
                event = marker("m-secret", "secret spot", seclabel("SECRET", ["USA"]))
                return event.replace(b'lat="50.45"', f'lat="{lat}"'.encode())

            await sender.send(secret("50.45"))
            await sender.send(
                marker("m-open", "open spot", seclabel("UNCLASSIFIED", ["USA"])).replace(
                    b'lat="50.45" lon="30.52"', b'lat="50.46" lon="30.53"'
                )
            )
            cleared = await sign_in(browser, server, "usa-s")
            await wait_drawn(cleared, "'m-secret' in d && 'm-open' in d")
            below = await sign_in(browser, server, "usa-u")
            await wait_drawn(below, "'m-open' in d")
            assert "m-secret" not in await drawn(below)
            # The markers move away; in playback each user sees the earlier versions it may see.
            await asyncio.sleep(1.2)
            await cleared.evaluate("() => window.__liaison.setView({zoom: 8})")
            await sender.send(secret("50.55"))
            await wait_drawn(
                cleared, "'m-secret' in d && Math.abs(d['m-secret'].lat - 50.55) < 1e-6"
            )
            t_first = await report_time_ms(cleared, "m-open")
            # What the server's history answers the user below the label.
            read: list[str] = []

            async def keep(response: Response) -> None:
                if "/api/v1/history" in response.url:
                    read.append(await response.text())

            below.on("response", keep)
            for page in (cleared, below):
                await page.evaluate("() => window.__liaison.setView({zoom: 8})")
                await open_playback(page)
                await choose_time(page, t_first // 1000 + 1)
            await wait_drawn(
                cleared, "'m-secret' in d && Math.abs(d['m-secret'].lat - 50.45) < 1e-6"
            )
            d = await drawn(cleared)
            assert d["m-secret"]["label"] == "SECRET//REL TO USA"
            await wait_drawn(below, "'m-open' in d")
            assert "m-secret" not in await drawn(below)
            # Nor anywhere in the window, nor in what the page read.
            for s in (t_first // 1000 - 1, t_first // 1000 + 3):
                await choose_time(below, s)
                assert "m-secret" not in await drawn(below)
            assert read and all('"m-open"' in body for body in read)
            assert not any("m-secret" in body for body in read)
            assert cleared.errors == [] and below.errors == []  # type: ignore[attr-defined]


async def test_search_finds_a_unit_by_callsign_and_centres_on_it(
    start_server: ServerFactory, browser: Browser
) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        assert server.tcp is not None
        tak = await connect_tcp(server.tcp.port, "tak")
        async with clients(tak):
            await tak.send(sa_event("u-alpha", "ALPHA-1", lat=50.45, lon=30.52))
            await tak.send(sa_event("u-bravo", "BRAVO-2", lat=48.0, lon=25.0))
            await tak.send(sa_event("u-bravo-h", "CHARLIE-3", lat=49.0, lon=27.0, cot_type="a-h-G"))
            page = await sign_in(browser, server, "duty")
            await wait_drawn(page, "'u-alpha' in d && 'u-bravo' in d")
            await page.evaluate("() => window.__liaison.setView({zoom: 12})")
            box = page.locator("#search-input")
            await box.fill("bravo")
            # Callsign first, then the uid match; all from the keyboard.
            options = page.locator("#search-results [role=option]")
            await options.first.wait_for(timeout=WAIT_MS)
            names = page.locator("#search-results [role=option] .search-name")
            assert await names.all_text_contents() == ["BRAVO-2", "CHARLIE-3"]
            assert await box.get_attribute("aria-expanded") == "true"
            await box.press("ArrowDown")
            assert await box.get_attribute("aria-activedescendant") == "search-result-0"
            assert await options.first.get_attribute("aria-selected") == "true"
            await box.press("Enter")
            popup = page.locator("#popup")
            await popup.wait_for(state="visible", timeout=WAIT_MS)
            assert "BRAVO-2" in (await popup.text_content() or "")
            assert await page.locator("#search-results").is_hidden()
            await wait_centred(page, "u-bravo")
            # By CoT type: the hostile unit.
            await box.fill("a-h")
            await options.first.wait_for(timeout=WAIT_MS)
            assert await options.count() == 1
            await options.first.click()
            await wait_centred(page, "u-bravo-h")
            assert "CHARLIE-3" in (await popup.text_content() or "")
            # No match says so.
            await box.fill("zulu")
            await page.wait_for_function(
                "() => document.getElementById('search-count').textContent === 'No match'",
                timeout=WAIT_MS,
            )
            assert page.errors == []  # type: ignore[attr-defined]


async def wait_centred(page: Page, uid: str) -> None:
    """Wait until the item is drawn within 2 px of the map's centre."""
    await page.wait_for_function(
        """(uid) => {
            const v = window.__liaison.view();
            const it = window.__liaison.rendered().find((i) => i.uid === uid);
            return it !== undefined && Math.abs(it.x - v.width / 2) < 2
                && Math.abs(it.y - v.height / 2) < 2;
        }""",
        arg=uid,
        timeout=WAIT_MS,
        polling=100,
    )


async def test_follow_keeps_a_moving_unit_centred_until_the_user_pans(
    start_server: ServerFactory, browser: Browser
) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        assert server.tcp is not None
        tak = await connect_tcp(server.tcp.port, "tak")
        async with clients(tak):
            await tak.send(sa_event("u-move", "MOVER-1", lat=50.45, lon=30.52))
            await tak.send(sa_event("u-still", "STILL-2", lat=50.40, lon=30.40))
            page = await sign_in(browser, server, "duty")
            await wait_drawn(page, "'u-move' in d && 'u-still' in d")
            await page.evaluate("() => window.__liaison.goTo('u-move')")
            popup = page.locator("#popup")
            await popup.wait_for(state="visible", timeout=WAIT_MS)
            await popup.get_by_role("button", name="Follow").click()
            chip = page.locator("#follow")
            await chip.wait_for(state="visible", timeout=WAIT_MS)
            assert "MOVER-1" in (await chip.text_content() or "")
            assert await page.evaluate("() => window.__liaison.following()") == "u-move"
            # Each new position: the map moves with it.
            for i in range(1, 4):
                lat, lon = 50.45 + 0.01 * i, 30.52 + 0.015 * i
                await tak.send(sa_event("u-move", "MOVER-1", lat=lat, lon=lon))
                await wait_drawn(
                    page, "'u-move' in d && Math.abs(d['u-move'].lat - arg) < 1e-6", lat
                )
                await wait_centred(page, "u-move")

            # The user drags the map: following stops, and the next move does not recentre.
            box = await page.locator("#map-view").bounding_box()
            assert box is not None
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            await page.mouse.move(cx + 50, cy + 80)
            await page.mouse.down()
            for step in range(1, 6):
                await page.mouse.move(cx + 50 + 30 * step, cy + 80 + 10 * step)
            await page.mouse.up()
            await page.wait_for_function(
                "() => window.__liaison.following() === null", timeout=WAIT_MS
            )
            assert await chip.is_hidden()
            before = (await drawn(page))["u-move"]
            await tak.send(sa_event("u-move", "MOVER-1", lat=50.50, lon=30.60))
            await wait_drawn(page, "'u-move' in d && Math.abs(d['u-move'].lat - 50.50) < 1e-6")
            after = (await drawn(page))["u-move"]
            view = await page.evaluate("() => window.__liaison.view()")
            assert math.dist((after["x"], after["y"]), (view["width"] / 2, view["height"] / 2)) > 20
            assert (after["x"], after["y"]) != (before["x"], before["y"])

            # A keyboard pan stops following too.
            await page.evaluate("() => window.__liaison.goTo('u-move')")
            await popup.get_by_role("button", name="Follow").click()
            await chip.wait_for(state="visible", timeout=WAIT_MS)
            await page.focus("#map-view")
            await page.keyboard.press("ArrowRight")
            assert await page.evaluate("() => window.__liaison.following()") is None
            assert await chip.is_hidden()
            # And so does the chip's Stop following.
            await popup.get_by_role("button", name="Follow").click()
            await chip.get_by_role("button", name="Stop following").click()
            assert await page.evaluate("() => window.__liaison.following()") is None
            assert await chip.is_hidden()
            assert page.errors == []  # type: ignore[attr-defined]
