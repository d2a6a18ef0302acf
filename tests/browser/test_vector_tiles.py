"""The operator's tiles drawn on the web map: vector tiles (OpenLayers VectorTile + MVT) and raster
tiles, from an MBTiles file through the tile route and from a PMTiles archive read with range
requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Response

from tests.browser.helpers import (
    ARTIFACTS,
    PASSWORD,
    WAIT_MS,
    add_web_user,
    browsing,
    map_url,
    new_page,
)
from tests.integration.conftest import ServerFactory
from tests.vector_tiles import (
    make_pmtiles,
    make_raster_mbtiles,
    make_vector_mbtiles,
    make_vector_pmtiles,
    solid_png,
    water_tile,
)

# vectortiles.js's colours: water fill, major road.
WATER = (0x9C, 0xC3, 0xE4)
MAJOR_ROAD = (0xF6, 0xC3, 0x7A)
ZOOM = 2


async def colours_at(page: Page, x: float, y: float, r: int = 3) -> set[tuple[int, ...]]:
    """The distinct opaque RGB colours in a square around (x, y) (CSS pixels) on any canvas of
    the map (OpenLayers may draw the layers on one canvas or on several)."""
    values = await page.evaluate(
        """([x, y, r]) => {
            const out = [];
            for (const c of document.querySelectorAll('#map-view canvas')) {
                if (c.width === 0 || c.clientWidth === 0) continue;
                const k = c.width / c.clientWidth;
                const d = c.getContext('2d').getImageData(
                    Math.round((x - r) * k), Math.round((y - r) * k),
                    Math.round(2 * r * k), Math.round(2 * r * k)).data;
                for (let i = 0; i < d.length; i += 4) {
                    if (d[i + 3] === 255) out.push([d[i], d[i + 1], d[i + 2]]);
                }
            }
            return out;
        }""",
        [x, y, r],
    )
    return {tuple(v) for v in values}


async def wait_colour(page: Page, x: float, y: float, rgb: tuple[int, int, int]) -> None:
    """Wait until a canvas of the map has colour ``rgb`` at (x, y) (CSS pixels)."""
    await page.wait_for_function(
        """([x, y, c]) => [...document.querySelectorAll('#map-view canvas')].some((cv) => {
            if (cv.width === 0 || cv.clientWidth === 0) return false;
            const k = cv.width / cv.clientWidth;
            const d = cv.getContext('2d')
                .getImageData(Math.round(x * k), Math.round(y * k), 1, 1).data;
            return d[0] === c[0] && d[1] === c[1] && d[2] === c[2];
        })""",
        arg=[x, y, list(rgb)],
        timeout=WAIT_MS,
        polling=100,
    )


def screen_of(view: dict[str, Any], world_x: float, world_y: float) -> tuple[float, float]:
    scale = 256 * 2 ** view["zoom"]
    return (
        view["width"] / 2 + (world_x - view["cx"]) * scale,
        view["height"] / 2 + (world_y - view["cy"]) * scale,
    )


@pytest.mark.parametrize("container", ["mbtiles", "pmtiles"])
async def test_vector_tiles_are_drawn(
    start_server: ServerFactory, browser: Browser, tmp_path: Path, container: str
) -> None:
    # One z0 tile: its west half water, a motorway at x = 2600/4096, a named place.
    tiles = tmp_path / f"vectors.{container}"
    make = make_vector_mbtiles if container == "mbtiles" else make_vector_pmtiles
    make(tiles, {(0, 0, 0): water_tile()})
    async with start_server(**{container: str(tiles)}) as server, browsing(browser):
        add_web_user(server, "duty")
        page = await new_page(browser)
        tile_answers: list[Response] = []
        route = "/api/v1/tiles/" if container == "mbtiles" else "/api/v1/pmtiles"
        page.on("response", lambda r: tile_answers.append(r) if route in r.url else None)
        await page.goto(map_url(server, "/login"))
        await page.fill("#username", "duty")
        await page.fill("#password", PASSWORD)
        await page.click("#sign-in")
        await page.wait_for_function(
            "() => window.__liaison !== undefined && window.__liaison.tiles() !== null",
            timeout=WAIT_MS,
        )
        assert await page.evaluate("() => window.__liaison.tiles()") == {
            "vector": True,
            "pmtiles": container == "pmtiles",
        }
        await page.evaluate(f"() => window.__liaison.setView({{cx: 0.5, cy: 0.5, zoom: {ZOOM}}})")
        view = await page.evaluate("() => window.__liaison.view()")
        # Water where the tile's polygon is (lon -90, lat 0), none east of lon 0.
        wx, wy = screen_of(view, 0.25, 0.5)
        await wait_colour(page, wx + 2, wy + 2, WATER)
        assert WATER in await colours_at(page, wx + 2, wy + 2)
        ex, ey = screen_of(view, 0.70, 0.45)
        assert WATER not in await colours_at(page, ex, ey)
        # The motorway (x = 2600/4096 of the tile, north-south) in the major road colour.
        rx, ry = screen_of(view, 2600 / 4096, 0.3)
        assert MAJOR_ROAD in await colours_at(page, rx, ry, 4)
        if container == "mbtiles":
            assert any(r.status == 200 for r in tile_answers)
            assert all(
                r.headers.get("content-type") == "application/vnd.mapbox-vector-tile"
                for r in tile_answers
                if r.status == 200
            )
        else:
            # The archive is read in byte ranges (the header and root directory, then the tile).
            assert tile_answers and all(r.status == 206 for r in tile_answers)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"vector-tiles-{container}.png"))
        assert page.errors == []  # type: ignore[attr-defined]


# The raster tiles' one colour.
MAGENTA = (200, 30, 170)


@pytest.mark.parametrize("container", ["mbtiles", "pmtiles"])
async def test_raster_tiles_are_drawn(
    start_server: ServerFactory, browser: Browser, tmp_path: Path, container: str
) -> None:
    tiles = tmp_path / f"raster.{container}"
    png = {(0, 0, 0): solid_png(MAGENTA)}
    if container == "mbtiles":
        make_raster_mbtiles(tiles, png)
    else:
        make_pmtiles(tiles, png, vector=False)
    async with start_server(**{container: str(tiles)}) as server, browsing(browser):
        add_web_user(server, "duty")
        page = await new_page(browser)
        await page.goto(map_url(server, "/login"))
        await page.fill("#username", "duty")
        await page.fill("#password", PASSWORD)
        await page.click("#sign-in")
        await page.wait_for_function(
            "() => window.__liaison !== undefined && window.__liaison.tiles() !== null",
            timeout=WAIT_MS,
        )
        assert await page.evaluate("() => window.__liaison.tiles()") == {
            "vector": False,
            "pmtiles": container == "pmtiles",
        }
        await page.evaluate(f"() => window.__liaison.setView({{cx: 0.5, cy: 0.5, zoom: {ZOOM}}})")
        view = await page.evaluate("() => window.__liaison.view()")
        x, y = screen_of(view, 0.3, 0.6)
        await wait_colour(page, x + 2, y + 2, MAGENTA)
        assert page.errors == []  # type: ignore[attr-defined]
