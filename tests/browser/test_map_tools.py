"""The web map's tools: measuring, coordinates in DD, DMS and MGRS, KML/KMZ overlays."""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

from playwright.async_api import Browser, Page

from tests.browser.helpers import (
    WAIT_MS,
    add_web_user,
    browsing,
    drawn,
    map_url,
    sign_in,
    wait_drawn,
)
from tests.integration.conftest import ServerFactory
from tests.integration.helpers import clients, connect_tcp, sa_event

# Three units at known positions (lat, lon): A-B runs 0.3 degrees east along 50 N.
POINTS = {"m-a": (50.0, 30.0), "m-b": (50.0, 30.3), "m-c": (50.15, 30.15)}


def vincenty_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Distance on the WGS 84 ellipsoid (Vincenty's inverse formula, Survey Review 1975)."""
    a, f = 6378137.0, 1 / 298.257223563
    b = a * (1 - f)
    big_l = math.radians(lon2 - lon1)
    u1 = math.atan((1 - f) * math.tan(math.radians(lat1)))
    u2 = math.atan((1 - f) * math.tan(math.radians(lat2)))
    lam = big_l
    for _ in range(200):
        sin_sigma = math.hypot(
            math.cos(u2) * math.sin(lam),
            math.cos(u1) * math.sin(u2) - math.sin(u1) * math.cos(u2) * math.cos(lam),
        )
        cos_sigma = math.sin(u1) * math.sin(u2) + math.cos(u1) * math.cos(u2) * math.cos(lam)
        sigma = math.atan2(sin_sigma, cos_sigma)
        sin_alpha = math.cos(u1) * math.cos(u2) * math.sin(lam) / sin_sigma
        cos2_alpha = 1 - sin_alpha**2
        cos_2sm = cos_sigma - 2 * math.sin(u1) * math.sin(u2) / cos2_alpha
        c = f / 16 * cos2_alpha * (4 + f * (4 - 3 * cos2_alpha))
        prev = lam
        lam = big_l + (1 - c) * f * sin_alpha * (
            sigma + c * sin_sigma * (cos_2sm + c * cos_sigma * (-1 + 2 * cos_2sm**2))
        )
        if abs(lam - prev) < 1e-12:
            break
    u_sq = cos2_alpha * (a**2 - b**2) / b**2
    big_a = 1 + u_sq / 16384 * (4096 + u_sq * (-768 + u_sq * (320 - 175 * u_sq)))
    big_b = u_sq / 1024 * (256 + u_sq * (-128 + u_sq * (74 - 47 * u_sq)))
    d_sigma = (
        big_b
        * sin_sigma
        * (
            cos_2sm
            + big_b
            / 4
            * (
                cos_sigma * (-1 + 2 * cos_2sm**2)
                - big_b / 6 * cos_2sm * (-3 + 4 * sin_sigma**2) * (-3 + 4 * cos_2sm**2)
            )
        )
    )
    return b * big_a * (sigma - d_sigma)


async def _click_units(page: Page, uids: list[str]) -> None:
    """Click each unit's drawn position, then the last one again (which ends the drawing)."""
    d = await drawn(page)
    box = await page.locator("#map-canvas").bounding_box()
    assert box is not None
    for uid in [*uids, uids[-1]]:
        await page.mouse.click(box["x"] + d[uid]["x"], box["y"] + d[uid]["y"])
        await page.wait_for_timeout(300)


async def test_measure_distance_and_area_and_coordinate_formats(
    start_server: ServerFactory, browser: Browser
) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        assert server.tcp is not None
        tak = await connect_tcp(server.tcp.port, "tak")
        async with clients(tak):
            for uid, (lat, lon) in POINTS.items():
                await tak.send(sa_event(uid, uid.upper(), lat=lat, lon=lon))
            page = await sign_in(browser, server, "duty")
            await wait_drawn(page, "arg.every((u) => u in d)", list(POINTS))

            # Distance: A to B, clicked on the map, against the ellipsoidal distance.
            await page.click("#measure-distance")
            assert await page.get_attribute("#measure-distance", "aria-pressed") == "true"
            await _click_units(page, ["m-a", "m-b"])
            result = page.locator("#measure-result")
            await page.wait_for_function(
                "() => document.getElementById('measure-result').dataset.done === 'true'",
                timeout=WAIT_MS,
            )
            measured = float(await result.get_attribute("data-metres") or "nan")
            known = vincenty_m(*POINTS["m-a"], *POINTS["m-b"])
            assert abs(measured - known) / known < 0.005, (measured, known)
            text = await result.text_content() or ""
            assert re.fullmatch(r"Distance: \d+\.\d\d km", text), text
            # Clicking while measuring selected nothing.
            assert await page.locator("#popup").is_hidden()

            # Area: the triangle A-B-C; its area on the sphere from the spherical excess.
            await page.click("#measure-area")
            assert await page.get_attribute("#measure-distance", "aria-pressed") == "false"
            await _click_units(page, ["m-a", "m-b", "m-c"])
            await page.wait_for_function(
                "() => document.getElementById('measure-result').dataset.done === 'true'",
                timeout=WAIT_MS,
            )
            area = float(await result.get_attribute("data-metres") or "nan")
            # Half base times height on the local plane: ~21.5 km x ~16.7 km / 2.
            base = vincenty_m(*POINTS["m-a"], *POINTS["m-b"])
            height = vincenty_m(50.0, 30.15, *POINTS["m-c"])
            assert abs(area - base * height / 2) / (base * height / 2) < 0.01, area
            assert (await result.text_content() or "").startswith("Area: ")
            await page.keyboard.press("Escape")  # focus is on the map: ends measuring
            await page.locator("#map-view").focus()
            await page.keyboard.press("Escape")
            await result.wait_for(state="hidden", timeout=WAIT_MS)

            # Coordinates under the pointer: decimal degrees, then DMS, then MGRS.
            d = await drawn(page)
            box = await page.locator("#map-canvas").bounding_box()
            assert box is not None
            await page.mouse.move(box["x"] + d["m-a"]["x"], box["y"] + d["m-a"]["y"])
            coords = page.locator("#coords")
            dd = await coords.text_content() or ""
            lat, lon = (float(v) for v in dd.split(", "))
            assert abs(lat - 50.0) < 0.01 and abs(lon - 30.0) < 0.01, dd
            await coords.click()
            await page.mouse.move(box["x"] + d["m-a"]["x"], box["y"] + d["m-a"]["y"])
            dms = await coords.text_content() or ""
            # 50°00'00.0"N 30°00'00.0"E, in primes and double primes (U+2032, U+2033).
            dms_re = r"(49°59|50°00)\u2032\d\d\.\d\u2033N (29°59|30°00)\u2032\d\d\.\d\u2033E"
            assert re.fullmatch(dms_re, dms), dms
            await coords.click()
            await page.mouse.move(box["x"] + d["m-a"]["x"], box["y"] + d["m-a"]["y"])
            mgrs = await coords.text_content() or ""
            # 50 N 30 E is in grid zone 36U (UTM zone 36 starts at 30 E).
            assert re.fullmatch(r"36U [A-Z]{2} \d{5} \d{5}", mgrs), mgrs
            assert page.errors == []  # type: ignore[attr-defined]


KML = """<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2">
  <Document>
    <name>Checkpoints</name>
    <Placemark><name>CP NORTH</name>
      <Point><coordinates>30.52,50.47,0</coordinates></Point></Placemark>
    <Placemark><name>CP SOUTH</name>
      <Style><IconStyle><Icon><href>https://example.invalid/pin.png</href></Icon></IconStyle></Style>
      <Point><coordinates>30.50,50.40,0</coordinates></Point></Placemark>
    <Placemark>
      <name>Phase line</name>
      <LineString><coordinates>30.45,50.43 30.60,50.43</coordinates></LineString>
    </Placemark>
  </Document>
</kml>
"""

# The overlays' colour (overlays.js COLOUR, #0f766e).
OVERLAY_RGB = (15, 118, 110)


async def _colour_near(page: Page, lon: float, lat: float, rgb: tuple[int, int, int]) -> bool:
    """Whether any canvas of the map has ``rgb`` (within 12 per channel) within 6 px of the point
    drawn at (lon, lat): the point is put at the centre of the view first."""
    return bool(
        await page.evaluate(
            """async ([lon, lat, rgb]) => {
                const x = (lon + 180) / 360;
                const phi = (lat * Math.PI) / 180;
                const y = (1 - Math.log(Math.tan(phi) + 1 / Math.cos(phi)) / Math.PI) / 2;
                window.__liaison.setView({ cx: x, cy: y, zoom: 13 });
                await new Promise((r) => setTimeout(r, 600));
                for (const c of document.querySelectorAll('#map-view canvas')) {
                    const k = c.width / c.clientWidth;
                    const cx = c.width / 2, cy = c.height / 2, r = Math.round(6 * k);
                    const d = c.getContext('2d').getImageData(cx - r, cy - r, 2 * r, 2 * r).data;
                    for (let i = 0; i < d.length; i += 4) {
                        if (Math.abs(d[i] - rgb[0]) <= 12 && Math.abs(d[i + 1] - rgb[1]) <= 12
                            && Math.abs(d[i + 2] - rgb[2]) <= 12 && d[i + 3] > 200) return true;
                    }
                }
                return false;
            }""",
            [lon, lat, list(rgb)],
        )
    )


async def test_kml_kmz_and_geojson_files_overlay_their_placemarks(
    start_server: ServerFactory, browser: Browser, tmp_path: Path
) -> None:
    kml = tmp_path / "checkpoints.kml"
    kml.write_text(KML)
    kmz = tmp_path / "route.kmz"
    with zipfile.ZipFile(kmz, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("doc.kml", KML.replace("CP NORTH", "KMZ NORTH"))
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        page = await sign_in(browser, server, "duty")
        origin = map_url(server, "/")
        elsewhere: list[str] = []  # nothing a file names is fetched
        page.on("request", lambda r: None if r.url.startswith(origin) else elsewhere.append(r.url))
        await page.click("#layers-button")
        await page.set_input_files("#overlay-file", str(kml))
        await page.wait_for_function(
            "() => window.__liaison.overlays().length === 1", timeout=WAIT_MS
        )
        [overlay] = await page.evaluate("() => window.__liaison.overlays()")
        assert overlay["name"] == "checkpoints.kml" and overlay["count"] == 3
        marks = {p["name"]: p for p in overlay["placemarks"]}
        assert set(marks) == {"CP NORTH", "CP SOUTH", "Phase line"}
        assert abs(marks["CP NORTH"]["lon"] - 30.52) < 1e-6
        assert abs(marks["CP NORTH"]["lat"] - 50.47) < 1e-6
        # ... and it is drawn where its placemarks are, not elsewhere.
        assert await _colour_near(page, 30.52, 50.47, OVERLAY_RGB)
        assert not await _colour_near(page, 30.30, 50.20, OVERLAY_RGB)
        assert await page.locator("#overlay-list li", has_text="checkpoints.kml (3)").count() == 1

        # A KMZ (zipped KML) opens the same way; hiding and removing work.
        await page.set_input_files("#overlay-file", str(kmz))
        await page.wait_for_function(
            "() => window.__liaison.overlays().length === 2", timeout=WAIT_MS
        )
        names = {
            p["name"]
            for p in (await page.evaluate("() => window.__liaison.overlays()"))[1]["placemarks"]
        }
        assert "KMZ NORTH" in names
        await (
            page.locator("#overlay-list li", has_text="checkpoints.kml").locator("input").uncheck()
        )
        await page.locator("#overlay-list li", has_text="route.kmz").locator("button").click()
        await page.wait_for_function(
            "() => window.__liaison.overlays().length === 1", timeout=WAIT_MS
        )
        assert not (await page.evaluate("() => window.__liaison.overlays()"))[0]["visible"]
        assert not await _colour_near(page, 30.52, 50.47, OVERLAY_RGB)

        # GeoJSON too.
        geojson = tmp_path / "points.geojson"
        geojson.write_text(
            json.dumps(
                {
                    "type": "FeatureCollection",
                    "features": [
                        {
                            "type": "Feature",
                            "properties": {"name": "GJ ONE"},
                            "geometry": {"type": "Point", "coordinates": [30.61, 50.41]},
                        }
                    ],
                }
            )
        )
        await page.set_input_files("#overlay-file", str(geojson))
        await page.wait_for_function(
            "() => window.__liaison.overlays().length === 2", timeout=WAIT_MS
        )
        gj = (await page.evaluate("() => window.__liaison.overlays()"))[1]
        assert gj["count"] == 1 and gj["placemarks"][0]["name"] == "GJ ONE"
        assert abs(gj["placemarks"][0]["lon"] - 30.61) < 1e-6
        assert await _colour_near(page, 30.61, 50.41, OVERLAY_RGB)
        await page.locator("#overlay-list li", has_text="points.geojson").locator("button").click()
        await page.wait_for_function(
            "() => window.__liaison.overlays().length === 1", timeout=WAIT_MS
        )

        # A file that is not KML says so and adds nothing.
        bad = tmp_path / "notes.kml"
        bad.write_text("not xml at all")
        await page.set_input_files("#overlay-file", str(bad))
        await page.locator("#overlay-status", has_text="Not opened: notes.kml").wait_for(
            timeout=WAIT_MS
        )
        assert len(await page.evaluate("() => window.__liaison.overlays()")) == 1
        assert elsewhere == []
        assert page.errors == []  # type: ignore[attr-defined]
