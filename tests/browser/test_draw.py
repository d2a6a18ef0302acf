"""Drawing from the map page: a marker drawn with the mouse (type picker, label chooser, Send),
one placed from the keyboard, the other shapes and a route drawn from the keyboard reach the TAK
clients cleared for their labels as ATAK's CoT, never a client below the label; the user's own
drawing is edited and deleted from its popup."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import Browser, Page

from tests.browser.helpers import (
    ARTIFACTS,
    WAIT_MS,
    browsing,
    labelled_web_users,
    sign_in,
    wait_drawn,
)
from tests.browser.test_labels import CHAT_POLICY, tls_client
from tests.integration.conftest import ServerFactory
from tests.integration.helpers import clients, sa_event
from tests.integration.test_labels_e2e import marker, seclabel

PANEL = "#draw"
STATUS = "#draw .draw-status"


async def sent_uid(page: Page, text: str) -> str:
    """Wait for the panel to report ``text`` as sent; the uid the server gave the item."""
    await page.wait_for_function(
        "(t) => document.querySelector('#draw .draw-status').textContent === t",
        arg=text,
        timeout=WAIT_MS,
    )
    uid = await page.get_attribute(STATUS, "data-uid")
    assert uid
    return uid


async def test_a_marker_drawn_on_the_page_reaches_the_cleared_client_only(
    start_server: ServerFactory, browser: Browser, data_dir: Path, tmp_path: Path
) -> None:
    policy = labelled_web_users(data_dir, tmp_path, CHAT_POLICY)
    async with start_server(policy_file=str(policy)) as server, browsing(browser):
        ukr_s = await tls_client(server, "ukr-s", "UKR")
        ukr_u = await tls_client(server, "ukr-u", "UKR")
        async with clients(ukr_s, ukr_u):
            await ukr_s.send(sa_event("uid-ukr-s", "UKR-S", lat=50.4, lon=30.4))
            await ukr_u.send(sa_event("uid-ukr-u", "UKR-U", lat=50.5, lon=30.6))
            await ukr_s.wait_for(b'uid="uid-ukr-u"')
            await ukr_u.wait_for(b'uid="uid-ukr-s"')
            # Someone else's item the web user may see (it gets no Delete button).
            await ukr_s.send(
                marker("m-ukr", "ukr marker", seclabel("UNCLASSIFIED", ["UKR", "USA"]))
            )

            page = await sign_in(browser, server, "usa-s")
            await page.click("#draw-button")
            assert await page.get_attribute("#draw-button", "aria-expanded") == "true"
            assert await page.is_visible(PANEL)
            # The label chooser offers what the user may assert: up to SECRET.
            offered = await page.eval_on_selector_all(
                "#draw .draw-label-cls option", "(os) => os.map((o) => o.value)"
            )
            assert offered == ["", "UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"]

            # A hostile infantry marker, SECRET//REL TO USA, UKR, placed with the mouse.
            await page.click("#draw .draw-tool[data-kind=marker]")
            assert (
                await page.get_attribute("#draw .draw-tool[data-kind=marker]", "aria-pressed")
                == "true"
            )
            await page.select_option("#draw .draw-affiliation", "h")
            await page.select_option("#draw .draw-function", "G-U-C-I")
            assert await page.text_content("#draw .draw-type") == "a-h-G-U-C-I"
            await page.fill("#draw .draw-callsign", "WEB-HOSTILE")
            await page.fill("#draw .draw-remarks", "CANARY-UI-MARKER")
            await page.select_option("#draw .draw-label-cls", "SECRET")
            await page.fill("#draw .draw-label-rel", "USA, UKR")
            assert await page.text_content("#draw .draw-send-label") == "SECRET//REL TO USA, UKR"
            box = await page.locator("#map-view").bounding_box()
            assert box is not None
            await page.mouse.click(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6)
            pending = await page.text_content("#draw .draw-pending") or ""
            assert pending.startswith("Marker at ")
            await page.click("#draw .draw-send")
            uid = await sent_uid(page, "Sent: WEB-HOSTILE (SECRET//REL TO USA, UKR)")
            got = await ukr_s.wait_for(b"CANARY-UI-MARKER")
            assert f'uid="{uid}"'.encode() in got
            assert b'type="a-h-G-U-C-I"' in got and b'callsign="WEB-HOSTILE"' in got
            assert b'access="SECRET"' in got and b'releasableTo="REL TO USA, UKR"' in got
            assert b'<creator uid="liaison-web-usa-s"' in got
            # Where it was clicked: the position the page showed before sending.
            lat, lon = (float(v) for v in pending.removeprefix("Marker at ").split(", "))
            point = re.search(rb'<point lat="([-0-9.]+)" lon="([-0-9.]+)"', got)
            assert point is not None
            assert abs(float(point[1]) - lat) < 1e-5 and abs(float(point[2]) - lon) < 1e-5
            # The page draws it from the live feed, with its label.
            await wait_drawn(page, "arg in d && d[arg].label === 'SECRET//REL TO USA, UKR'", uid)

            # From the keyboard: the next marker at the map's centre, UNCLASSIFIED//REL TO USA,
            # UKR, which the unclassified client may see.
            await page.select_option("#draw .draw-label-cls", "UNCLASSIFIED")
            await page.fill("#draw .draw-remarks", "UI-MARKER-UNCLASS")
            await page.fill("#draw .draw-callsign", "WEB-CENTRE")
            await page.focus("#draw .draw-centre")
            await page.keyboard.press("Enter")
            # The Send button has the focus now.
            await page.keyboard.press("Enter")
            centre_uid = await sent_uid(page, "Sent: WEB-CENTRE (UNCLASSIFIED//REL TO USA, UKR)")
            await ukr_u.wait_for(b"UI-MARKER-UNCLASS")
            await ukr_s.wait_for(b"UI-MARKER-UNCLASS")

            # The other shapes, drawn with the mouse (clicks at fractions of the map's size, right
            # of the draw panel).
            def at(fx: float, fy: float) -> tuple[float, float]:
                assert box is not None
                return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy

            await page.select_option("#draw .draw-label-cls", "SECRET")
            shapes = {
                # route: two waypoints, the last clicked twice to finish
                "route": ([(0.5, 0.2), (0.6, 0.25), (0.6, 0.25)], b'type="b-m-r"'),
                # polygon: three corners, then the first again to close it
                "polygon": ([(0.5, 0.7), (0.6, 0.7), (0.55, 0.8), (0.5, 0.7)], b'type="u-d-f"'),
                # circle: centre, then a point on it
                "circle": ([(0.8, 0.3), (0.85, 0.3)], b'type="u-d-c-c"'),
                # range and bearing: start, end (due east)
                "rangebearing": ([(0.75, 0.85), (0.9, 0.85)], b'type="u-rb-a"'),
            }
            for kind, (clicks, cot_type) in shapes.items():
                await page.click(f"#draw .draw-tool[data-kind={kind}]")
                await page.fill("#draw .draw-callsign", f"WEB-{kind.upper()}")
                await page.fill("#draw .draw-remarks", f"CANARY-UI-{kind.upper()}")
                for fx, fy in clicks:
                    x, y = at(fx, fy)
                    await page.mouse.click(x, y)
                    await page.wait_for_timeout(350)  # not a double-click (that zooms or ends)
                await page.wait_for_function(
                    "() => document.querySelector('#draw .draw-send').disabled === false",
                    timeout=WAIT_MS,
                )
                await page.click("#draw .draw-send")
                await sent_uid(page, f"Sent: WEB-{kind.upper()} (SECRET//REL TO USA, UKR)")
                got = await ukr_s.wait_for(f"CANARY-UI-{kind.upper()}".encode())
                assert cot_type in got and b'access="SECRET"' in got
                if kind == "rangebearing":
                    bearing = re.search(rb'<bearing value="([0-9.]+)"', got)
                    assert bearing is not None and abs(float(bearing[1]) - 90) < 0.5
                if kind == "polygon":
                    assert got.count(b"<link point=") == 4  # three corners, closed
            await page.click("#draw .draw-clear")

            # A route without pointing: a waypoint at the map's centre, the map panned with the
            # arrow keys, a second waypoint, then Send, all from the keyboard.
            await page.click("#draw .draw-tool[data-kind=route]")
            assert await page.text_content("#draw .draw-centre") == "Add point at map centre"
            await page.fill("#draw .draw-callsign", "WEB-KEY-ROUTE")
            await page.fill("#draw .draw-remarks", "CANARY-UI-KEY-ROUTE")
            await page.focus("#draw .draw-centre")
            await page.keyboard.press("Enter")
            assert await page.text_content(STATUS) == "Point 1 added; pan and add the next."
            assert await page.is_disabled("#draw .draw-send")
            await page.focus("#map-view")
            for _ in range(3):
                await page.keyboard.press("ArrowRight")
            await page.wait_for_timeout(400)  # the pan animation
            await page.focus("#draw .draw-centre")
            await page.keyboard.press("Enter")
            assert await page.text_content("#draw .draw-pending") == "Route of 2 points"
            await page.focus("#draw .draw-send")
            await page.keyboard.press("Enter")
            await sent_uid(page, "Sent: WEB-KEY-ROUTE (SECRET//REL TO USA, UKR)")
            got = await ukr_s.wait_for(b"CANARY-UI-KEY-ROUTE")
            points = re.findall(rb'type="b-m-p-w" point="([-0-9.]+),([-0-9.]+)"', got)
            assert len(points) == 2
            # Panned right (east): the second waypoint is east of the first, on the same latitude.
            assert float(points[1][1]) > float(points[0][1])
            assert abs(float(points[1][0]) - float(points[0][0])) < 1e-6
            await page.click("#draw .draw-clear")

            # Edit from the popup: the panel opens on the marker; a new name, sent where it is,
            # replaces it (same uid) and keeps its label.
            await page.keyboard.press("Escape")
            await page.evaluate("(u) => window.__liaison.goTo(u)", uid)
            edit = page.locator("#popup .actions .edit")
            await edit.wait_for(timeout=WAIT_MS)
            await edit.click()
            assert await page.input_value("#draw .draw-callsign") == "WEB-HOSTILE"
            assert await page.input_value("#draw .draw-remarks") == "CANARY-UI-MARKER"
            assert await page.input_value("#draw .draw-affiliation") == "h"
            assert await page.input_value("#draw .draw-function") == "G-U-C-I"
            assert await page.text_content("#draw .draw-send-label") == "SECRET//REL TO USA, UKR"
            assert (await page.text_content("#draw .draw-editing") or "").startswith(
                "Editing WEB-HOSTILE"
            )
            await page.fill("#draw .draw-callsign", "WEB-HOSTILE-2")
            await page.click("#draw .draw-send")
            await sent_uid(page, "Updated: WEB-HOSTILE-2 (SECRET//REL TO USA, UKR)")
            got = await ukr_s.wait_for(b'callsign="WEB-HOSTILE-2"')
            assert f'uid="{uid}"'.encode() in got and b'access="SECRET"' in got
            point = re.search(rb'<point lat="([-0-9.]+)" lon="([-0-9.]+)"', got)
            assert point is not None
            assert abs(float(point[1]) - lat) < 1e-5 and abs(float(point[2]) - lon) < 1e-5
            assert await page.is_hidden("#draw .draw-editing")

            # Delete from the popup: only the user's own drawings have the button.
            await page.keyboard.press("Escape")
            await page.evaluate("(u) => window.__liaison.goTo(u)", uid)
            delete = page.locator("#popup .actions .delete")
            await delete.wait_for(timeout=WAIT_MS)
            await delete.click()
            assert await delete.text_content() == "Delete: press again"
            await delete.click()
            got = await ukr_s.wait_for(b'type="t-x-d-d"')
            assert f'<link uid="{uid}"'.encode() in got
            await wait_drawn(page, "!(arg in d)", uid)
            await wait_drawn(page, "'m-ukr' in d")
            await page.evaluate("(u) => window.__liaison.goTo(u)", "m-ukr")
            await page.locator("#popup").wait_for(state="visible", timeout=WAIT_MS)
            assert await page.locator("#popup .actions .delete").count() == 0
            assert await page.locator("#popup .actions .edit").count() == 0

            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "map-draw.png"))
            await ukr_u.collect(0.5)
            raw = bytes(ukr_u.raw)
            assert b"CANARY-UI" not in raw and uid.encode() not in raw
            assert centre_uid.encode() in raw
            assert page.errors == []  # type: ignore[attr-defined]
