"""The web map's load without a tile set, and its popup: live updates, bidi isolation, overflow."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Page, Response

from tests.browser.helpers import (
    PASSWORD,
    WAIT_MS,
    add_web_user,
    browsing,
    map_url,
    new_page,
    sign_in,
    wait_drawn,
)
from tests.integration.conftest import ServerFactory
from tests.integration.helpers import chat_event, clients, connect_tcp, sa_event

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: reverses what follows, up to a PDF or the paragraph end


async def _open_popup(page: Page, uid: str) -> Any:
    await page.evaluate("(uid) => window.__liaison.goTo(uid)", uid)
    popup = page.locator("#popup")
    await popup.wait_for(state="visible", timeout=WAIT_MS)
    return popup


async def test_load_without_mbtiles_logs_no_error_and_asks_for_no_tile(
    start_server: ServerFactory, browser: Browser
) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        page = await new_page(browser)
        console: list[str] = []
        failed: list[str] = []
        tile_requests: list[str] = []

        def on_console(m: ConsoleMessage) -> None:
            if m.type in {"error", "warning"}:
                console.append(f"{m.type}: {m.text}")

        def on_response(r: Response) -> None:
            if r.status >= 400:
                failed.append(f"{r.status} {r.url}")

        page.on("console", on_console)
        page.on("response", on_response)
        page.on(
            "request",
            lambda r: tile_requests.append(r.url) if "/api/v1/tiles/" in r.url else None,
        )
        await page.goto(map_url(server, "/login"))
        await page.fill("#username", "duty")
        await page.fill("#password", PASSWORD)
        async with page.expect_response(
            lambda r: r.url.endswith("/api/v1/tiles"), timeout=WAIT_MS
        ) as info:
            await page.click("#sign-in")
        # The page asked whether there is a tile set, and the answer is "no" without an error.
        answer = await info.value
        assert answer.status == 204
        await page.wait_for_function(
            "() => document.getElementById('conn').textContent === 'Live'", timeout=WAIT_MS
        )
        # Zooming in would ask for tiles if the page thought there were any.
        await page.evaluate("() => window.__liaison.setView({zoom: 12})")
        await page.wait_for_timeout(500)
        assert console == []
        assert failed == []
        assert tile_requests == []
        assert page.errors == []  # type: ignore[attr-defined]


async def test_open_popup_follows_updates_of_its_item(
    start_server: ServerFactory, browser: Browser
) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        assert server.tcp is not None
        tak = await connect_tcp(server.tcp.port, "tak")
        async with clients(tak):
            await tak.send(sa_event("u-pop", "ALPHA-1", lat=50.45, lon=30.52))
            page = await sign_in(browser, server, "duty")
            await wait_drawn(page, "'u-pop' in d")
            popup = await _open_popup(page, "u-pop")
            text = await popup.text_content() or ""
            assert "ALPHA-1" in text and "50.45000, 30.52000" in text
            await popup.get_by_role("button", name="Server track").click()
            track = popup.get_by_role("button", name=re.compile(r"^Track: \d+ points$"))
            await track.wait_for(timeout=WAIT_MS)

            # A new report of the same uid: the open popup shows it without being reopened.
            await tak.send(sa_event("u-pop", "ALPHA-2", lat=50.46, lon=30.53))
            await page.wait_for_function(
                """() => {
                    const t = document.getElementById('popup').textContent;
                    return t.includes('ALPHA-2') && t.includes('50.46000, 30.53000');
                }""",
                timeout=WAIT_MS,
                polling=100,
            )
            assert await popup.is_visible()
            assert "ALPHA-1" not in (await popup.text_content() or "")
            assert await track.is_visible()  # the buttons, and what they show, stay
            assert page.errors == []  # type: ignore[attr-defined]


# Where a string from the feed is shown as text: the node that holds it must sit inside a
# bidi isolate (a <bdi>, or an element with dir="auto" and unicode-bidi: isolate).
ISOLATED_JS = """([root, needle]) => {
    const walker = document.createTreeWalker(document.querySelector(root), NodeFilter.SHOW_TEXT);
    const found = [];
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        if (!n.data.includes(needle)) continue;
        const p = n.parentElement;
        found.push({
            tag: p.tagName,
            dir: p.getAttribute('dir'),
            bidi: getComputedStyle(p).unicodeBidi,
            whole: n.data === needle,
        });
    }
    return found;
}"""


def _all_isolated(found: list[dict[str, Any]]) -> bool:
    return bool(found) and all(
        f["whole"] and f["bidi"] == "isolate" and (f["tag"] == "BDI" or f["dir"] == "auto")
        for f in found
    )


async def test_right_to_left_override_in_a_callsign_is_isolated(
    start_server: ServerFactory, browser: Browser
) -> None:
    callsign = f"{RLO}ECHO-7"
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        assert server.tcp is not None
        tak = await connect_tcp(server.tcp.port, "tak")
        async with clients(tak):
            await tak.send(sa_event("u-rtl", callsign))
            page = await sign_in(browser, server, "duty")
            await wait_drawn(page, "'u-rtl' in d")
            await _open_popup(page, "u-rtl")
            found = await page.evaluate(ISOLATED_JS, ["#popup", callsign])
            assert _all_isolated(found), found
            # Not inserted as HTML: the override character is in the text node itself.
            head = await page.evaluate(
                "() => document.querySelector('#popup .popup-head bdi').textContent"
            )
            assert head == callsign

            # The contacts list and the chat show it isolated too.
            await page.click("[data-tab=contacts]")
            await page.locator("#contacts li[data-uid=u-rtl]").wait_for(timeout=WAIT_MS)
            found = await page.evaluate(ISOLATED_JS, ["#contacts .contact-list", callsign])
            assert _all_isolated(found), found
            await page.click("[data-tab=chat]")
            await tak.send(chat_event("u-rtl", callsign, "in position"))
            await page.locator("#chat .chat-text", has_text="in position").wait_for(timeout=WAIT_MS)
            found = await page.evaluate(ISOLATED_JS, ["#chat .chat-list", callsign])
            assert _all_isolated(found), found
            assert page.errors == []  # type: ignore[attr-defined]


async def test_long_callsign_does_not_overflow_the_popup(
    start_server: ServerFactory, browser: Browser
) -> None:
    callsign = "W" * 150
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        assert server.tcp is not None
        tak = await connect_tcp(server.tcp.port, "tak")
        async with clients(tak):
            await tak.send(sa_event("u-long", callsign))
            page = await sign_in(browser, server, "duty")
            await wait_drawn(page, "'u-long' in d")
            await _open_popup(page, "u-long")
            sizes = await page.evaluate(
                """() => [...document.querySelectorAll(
                        '#popup, #popup .popup-head, #popup .popup-head *, #popup td')]
                    .map((e) => [e.className || e.tagName, e.scrollWidth, e.clientWidth])"""
            )
            assert sizes
            assert [s for s in sizes if s[1] > s[2]] == [], sizes
            # The close button stays inside the popup.
            popup_box = await page.locator("#popup").bounding_box()
            close_box = await page.locator("#popup .close").bounding_box()
            assert popup_box is not None and close_box is not None
            assert close_box["x"] + close_box["width"] <= popup_box["x"] + popup_box["width"]
