"""The web map in a real browser against a real server, with TAK clients driving the picture."""

from __future__ import annotations

import re
import time
import uuid

import pytak
from playwright.async_api import Browser, Page

from tests.browser.helpers import (
    ARTIFACTS,
    VIEWPORT,
    WAIT_MS,
    add_web_user,
    browsing,
    drawn,
    map_url,
    new_page,
    pixel_colours,
    save_json,
    sign_in,
    wait_drawn,
)
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import (
    chat_event,
    clients,
    connect_tcp,
    connect_tls,
    delete_event,
    sa_event,
)

# milsymbol's default fills (MIL-STD-2525C light colours) for friend and hostile frames.
FRIEND_FILL = (128, 224, 255)
HOSTILE_FILL = (255, 128, 128)

# A small exercise near Kyiv: uid, callsign, CoT type, lat, lon, course, speed (m/s).
UNITS = [
    ("u-inf", "ALPHA-1", "a-f-G-U-C-I", 50.452, 30.520, 90, 6),
    ("u-armor", "BRAVO-2", "a-h-G-U-C-A", 50.470, 30.585, 225, 9),
    ("u-neutral", "CHARLIE-3", "a-n-G", 50.428, 30.470, None, None),
    ("u-recce", "DELTA-4", "a-f-G-U-C-R", 50.440, 30.560, 10, 4),
    ("u-heli", "EAGLE-5", "a-f-A-M-H", 50.465, 30.500, 135, 40),
    ("u-unknown", "FOXTROT-6", "a-u-G", 50.420, 30.545, None, None),
]


def unit_event(
    uid: str,
    callsign: str,
    cot_type: str,
    lat: float,
    lon: float,
    course: object,
    speed: object,
    stale_s: int = 600,
) -> bytes:
    track = f'<track course="{course}" speed="{speed}"/>' if course is not None else ""
    return sa_event(
        uid, callsign, lat=lat, lon=lon, cot_type=cot_type, stale_s=stale_s, extra_detail=track
    )


def drawing_event(
    uid: str,
    cot_type: str,
    callsign: str,
    points: list[tuple[float, float]],
    extra_detail: str = "",
) -> bytes:
    """A drawing or route as ATAK sends it: vertices as ``<link point="lat,lon"/>``."""
    t = pytak.cot_time()
    stale = pytak.cot_time(3600)
    lat, lon = points[0]
    links = "".join(f'<link point="{a},{o}"/>' for a, o in points)
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" how="h-e" time="{t}" start="{t}"'
        f' stale="{stale}"><point lat="{lat}" lon="{lon}" hae="0" ce="9999999" le="9999999"/>'
        f'<detail><contact callsign="{callsign}"/>{links}{extra_detail}</detail></event>'
    ).encode()


def close_to(colours: set[tuple[int, ...]], target: tuple[int, int, int], tol: int = 12) -> bool:
    return any(all(abs(c[i] - target[i]) <= tol for i in range(3)) for c in colours)


async def open_chat_and_send(page: Page, text: str) -> None:
    await page.click("[data-tab=chat]")
    await page.fill("#chat .chat-form input", text)
    await page.click("#chat .chat-form button")


async def test_map_shows_moves_deletes_and_chats(
    start_server: ServerFactory, browser: Browser
) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        assert server.tcp is not None
        tak = await connect_tcp(server.tcp.port, "tak")
        listener = await connect_tcp(server.tcp.port, "listener")
        async with clients(tak, listener):
            for u in UNITS:
                await tak.send(unit_event(*u))
            await tak.send(
                drawing_event(
                    "route-1",
                    "b-m-r",
                    "Route IRON",
                    [(50.415, 30.455), (50.432, 30.500), (50.445, 30.540), (50.462, 30.575)],
                )
            )
            await tak.send(
                drawing_event(
                    "shape-1",
                    "u-d-r",
                    "OBJ GOLD",
                    [(50.478, 30.540), (50.478, 30.570), (50.466, 30.570), (50.466, 30.540)],
                )
            )
            await listener.wait_for(b"shape-1")  # the server has the whole picture

            page = await sign_in(browser, server, "duty")
            uids = [u[0] for u in UNITS]
            await wait_drawn(page, "arg.every((u) => u in d)", uids)
            d = await drawn(page)
            # Symbols are 2525C, derived from the CoT types.
            assert d["u-inf"]["sidc"] == "SFGPUCI--------"
            assert d["u-armor"]["sidc"] == "SHGPUCA--------"
            assert d["u-neutral"]["sidc"] == "SNGP-----------"
            assert d["u-heli"]["sidc"] == "SFAPMH---------"
            assert d["u-inf"]["callsign"] == "ALPHA-1"
            # ... and really painted: the frame fill colours are on the canvas where they are.
            assert close_to(
                await pixel_colours(page, d["u-inf"]["x"], d["u-inf"]["y"]), FRIEND_FILL
            )
            assert close_to(
                await pixel_colours(page, d["u-armor"]["x"], d["u-armor"]["y"]), HOSTILE_FILL
            )
            # The route and the drawing are drawn from their vertices.
            assert d["route-1"]["kind"] == "route"
            assert d["shape-1"]["kind"] == "shape"
            # Header: who is signed in; no label policy on this server: nothing is labelled.
            assert (await page.text_content("#who") or "").startswith("duty")
            assert await page.text_content("#banner-top") == "UNLABELLED"

            # A unit moves when its position changes.
            before = d["u-inf"]
            await tak.send(unit_event("u-inf", "ALPHA-1", "a-f-G-U-C-I", 50.452, 30.530, 90, 6))
            await wait_drawn(page, "d['u-inf'] && d['u-inf'].x - arg > 5", before["x"])
            after = (await drawn(page))["u-inf"]
            assert abs(after["y"] - before["y"]) < 3  # moved east only

            # An item vanishes when deleted.
            await tak.send(delete_event("u-neutral"))
            await wait_drawn(page, "!('u-neutral' in d) && 'u-inf' in d")
            assert await page.evaluate("() => window.__liaison.items()") == len(UNITS) + 1

            # The popup shows what a unit is, and its label.
            box = await page.locator("#map-canvas").bounding_box()
            assert box is not None
            await page.mouse.click(box["x"] + after["x"], box["y"] + after["y"])
            popup = page.locator("#popup")
            await popup.wait_for(state="visible", timeout=WAIT_MS)
            text = await popup.text_content() or ""
            assert "ALPHA-1" in text and "UNLABELLED" in text and "a-f-G-U-C-I" in text
            # Its track from the server's history: the two positions it reported.
            await popup.get_by_role("button", name="Server track").click()
            await popup.get_by_role("button", name="Track: 2 points").wait_for(timeout=WAIT_MS)

            # Chat from the page reaches a TAK client...
            await open_chat_and_send(page, "hello from the map")
            frame = await listener.wait_for(b"hello from the map")
            assert b'type="b-t-f"' in frame
            # ... and a TAK client's chat reaches the page.
            await tak.send(chat_event("u-inf", "ALPHA-1", "contact north, 300 m"))
            await page.locator("#chat .chat-text", has_text="contact north, 300 m").wait_for(
                timeout=WAIT_MS
            )

            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "map.png"))
            assert page.errors == []  # type: ignore[attr-defined]


async def test_wrong_password_stays_on_sign_in(
    start_server: ServerFactory, browser: Browser
) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        page = await new_page(browser)
        await page.goto(map_url(server, "/"))
        await page.wait_for_url("**/login*", timeout=WAIT_MS)  # not signed in: sent to /login
        await page.fill("#username", "duty")
        await page.fill("#password", "not the password")
        await page.click("#sign-in")
        message = page.locator("#message")
        await message.wait_for(state="visible", timeout=WAIT_MS)
        assert "Wrong user name or password" in (await message.text_content() or "")
        assert "/login" in page.url
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "login-refused.png"))


async def test_logout_returns_to_sign_in(start_server: ServerFactory, browser: Browser) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        page = await sign_in(browser, server, "duty")
        await page.click("#logout")
        await page.wait_for_url(re.compile(r"/login$"), timeout=WAIT_MS)
        await page.goto(map_url(server, "/"))
        await page.wait_for_url(re.compile(r"/login"), timeout=WAIT_MS)  # the session is over
        assert await page.locator("#login-form").is_visible()


async def test_expired_session_returns_to_sign_in(
    start_server: ServerFactory, browser: Browser
) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        page = await sign_in(browser, server, "duty")
        # The server no longer knows the page's session (as after expiry or a restart).
        await page.context.add_cookies(
            [{"name": "liaison_session", "value": "expired", "url": map_url(server, "/")}]
        )
        await open_chat_and_send(page, "anyone there?")
        await page.wait_for_url(re.compile(r"/login\?expired=1$"), timeout=5000)
        assert "session has ended" in (await page.text_content("#message") or "")


async def test_stale_items_fade(start_server: ServerFactory, browser: Browser) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        assert server.tcp is not None
        tak = await connect_tcp(server.tcp.port, "tak")
        async with clients(tak):
            await tak.send(unit_event("u-fresh", "FRESH", "a-f-G-U-C", 50.45, 30.52, None, None))
            # Stale 10 s after it is sent: signing in and loading the page take up to 5 s on
            # a loaded machine, and the item must first be seen fresh.
            await tak.send(
                unit_event("u-old", "OLD", "a-f-G-U-C", 50.46, 30.54, None, None, stale_s=10)
            )
            page = await sign_in(browser, server, "duty")
            await wait_drawn(page, "'u-fresh' in d && 'u-old' in d && !d['u-old'].stale")
            # The page re-checks stale times every few seconds without any new message.
            await wait_drawn(page, "d['u-old'] && d['u-old'].stale && !d['u-fresh'].stale")


async def test_a_group_never_sees_another_groups_units(
    start_server: ServerFactory, browser: Browser, tmp_path: object
) -> None:
    from pathlib import Path

    groups = Path(str(tmp_path)) / "groups.toml"
    groups.write_text(
        '[[rule]]\no = "RED"\ngroups = ["red"]\n\n[[rule]]\no = "BLUE"\ngroups = ["blue"]\n'
    )
    async with start_server(groups_file=str(groups)) as server, browsing(browser):
        assert server.tls is not None
        add_web_user(server, "red-officer", groups=("red",))
        add_web_user(server, "blue-officer", groups=("blue",))
        red_cert = issue_cert(server, "r1", "RED")
        blue_cert = issue_cert(server, "b1", "BLUE")
        red = await connect_tls(
            server.tls.port, cert=red_cert.cert, key=red_cert.key, ca=red_cert.ca, name="r1"
        )
        blue = await connect_tls(
            server.tls.port, cert=blue_cert.cert, key=blue_cert.key, ca=blue_cert.ca, name="b1"
        )
        async with clients(red, blue):
            await red.send(unit_event("red-1", "RED-1", "a-f-G-U-C", 50.45, 30.52, None, None))
            await blue.send(unit_event("blue-1", "BLUE-1", "a-f-G-U-C", 50.46, 30.55, None, None))
            red_page = await sign_in(browser, server, "red-officer")
            blue_page = await sign_in(browser, server, "blue-officer")
            await wait_drawn(red_page, "'red-1' in d")
            await wait_drawn(blue_page, "'blue-1' in d")
            # Live updates keep to their group too.
            await red.send(unit_event("red-2", "RED-2", "a-h-G", 50.47, 30.50, None, None))
            await blue.send(unit_event("blue-2", "BLUE-2", "a-h-G", 50.44, 30.58, None, None))
            await wait_drawn(red_page, "'red-2' in d")
            await wait_drawn(blue_page, "'blue-2' in d")
            red_seen = await red_page.evaluate("() => window.__liaison.rendered().map(i => i.uid)")
            blue_seen = await blue_page.evaluate(
                "() => window.__liaison.rendered().map(i => i.uid)"
            )
            assert sorted(red_seen) == ["red-1", "red-2"]
            assert sorted(blue_seen) == ["blue-1", "blue-2"]
            # Nor through the contacts list or the REST picture the page uses.
            contacts = await red_page.locator("#contacts li").all_text_contents()
            assert not any("BLUE" in c for c in contacts)


async def test_two_thousand_units_frame_time(start_server: ServerFactory, browser: Browser) -> None:
    """Draw 2,000 units from a real snapshot and measure frame time while panning."""
    n = 2000
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        assert server.tcp is not None
        tak = await connect_tcp(server.tcp.port, "tak")
        types = ["a-f-G-U-C-I", "a-h-G-U-C-A", "a-n-G", "a-u-G", "a-f-G-E-V-A", "a-h-A-M-F"]
        async with clients(tak):
            batch = b"".join(
                unit_event(
                    f"sim-{i}",
                    f"SIM-{i:04d}",
                    types[i % len(types)],
                    50.0 + (i // 50) * 0.02,
                    30.0 + (i % 50) * 0.03,
                    (i * 37) % 360,
                    i % 12,
                )
                for i in range(n)
            )
            await tak.send(batch)
            await tak.send(sa_event("sim-last", "LAST", lat=50.0, lon=30.0))
            page = await sign_in(browser, server, "duty")
            await page.wait_for_function(
                f"() => window.__liaison.items() >= {n}", timeout=WAIT_MS * 2, polling=250
            )
            await page.evaluate("() => window.__liaison.fit()")
            await page.wait_for_function(
                f"() => window.__liaison.rendered().length >= {n}", timeout=WAIT_MS
            )
            # Frame cost with the basemap cached (what panning and live updates cost).
            bench = await page.evaluate("() => window.__liaison.benchmark(60)")
            # Real frames while the map is dragged with the mouse and 200 units report new
            # positions: the draw time of each frame the page drew, as the page measured it.
            box = await page.locator("#map-canvas").bounding_box()
            assert box is not None
            await page.evaluate("() => window.__liaison.frameTimes()")  # start afresh
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            await page.mouse.move(cx, cy)
            await page.mouse.down()
            t0 = time.monotonic()
            for step in range(60):
                await page.mouse.move(cx + (step % 20) * 6 - 60, cy + (step % 10) * 4)
                if step % 6 == 0:
                    moved = step * 20
                    await tak.send(
                        b"".join(
                            unit_event(
                                f"sim-{i}",
                                f"SIM-{i:04d}",
                                types[i % len(types)],
                                50.0 + (i // 50) * 0.02 + 0.002,
                                30.0 + (i % 50) * 0.03,
                                (i * 37) % 360,
                                i % 12,
                            )
                            for i in range(moved, moved + 200)
                        )
                    )
            await page.mouse.up()
            drag_s = time.monotonic() - t0
            times = sorted(await page.evaluate("() => window.__liaison.frameTimes()"))
            assert len(times) >= 10, times
            drag = {
                "frames_drawn": len(times),
                "seconds": round(drag_s, 2),
                "median_ms": times[len(times) // 2],
                "p95_ms": times[int(len(times) * 0.95)],
                "max_ms": times[-1],
            }
            await page.screenshot(path=str(ARTIFACTS / "map-2000.png"))
            save_json(
                "frame-time-2000.json",
                {"units": n, "draw": bench, "drag": drag, "run": uuid.uuid4().hex[:8]},
            )
            print(f"2000 units: draw {bench}, drag {drag}")
            # Not a timing test (performance is measured by benchmarks, docs/performance.md): the
            # bound only catches a map that has stopped being usable, with room for a machine
            # whose two cores are shared with other work (a median of 50-80 ms was seen under a
            # load average of 9, 16-19 ms on a quiet machine).
            assert bench["median"] < 500, bench
            assert drag["median_ms"] < 500, drag


async def test_browser_with_a_client_certificate_needs_no_password(
    start_server: ServerFactory, browser: Browser
) -> None:
    async with start_server() as server, browsing(browser):
        assert server.https is not None and server.tcp is not None
        cert = issue_cert(server, "analyst", "TEST")
        origin = f"https://127.0.0.1:{server.https.port}"
        context = await browser.new_context(
            ignore_https_errors=True,
            viewport=VIEWPORT,
            client_certificates=[
                {"origin": origin, "certPath": str(cert.cert), "keyPath": str(cert.key)}
            ],
        )
        page = await context.new_page()
        tak = await connect_tcp(server.tcp.port, "tak")
        async with clients(tak):
            await tak.send(unit_event(*UNITS[0]))
            await page.goto(f"{origin}/")
            await page.wait_for_function("() => window.__liaison !== undefined", timeout=WAIT_MS)
            assert (await page.text_content("#who") or "").startswith("analyst")
            assert await page.locator("#logout").is_hidden()  # nothing to sign out of
            await wait_drawn(page, "'u-inf' in d")
