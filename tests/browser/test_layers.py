"""The Layers panel's item layers by origin: items a feed made (Feature ``origin`` "feed:NAME")
and items that came over a partner link (``origin`` "partner") are each switchable. Two real
servers linked as partners (USA dials UKR, as tests/integration/test_federation_app.py); the web
user signs in on UKR, which also runs an ADS-B file feed and has a TAK client of its own."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page

from liaison.app import run_server
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from liaison.identity.users import UserDirectory
from tests.browser.helpers import PASSWORD, WAIT_MS, browsing, drawn, sign_in, wait_drawn
from tests.integration.conftest import issue_cert, make_config
from tests.integration.helpers import WAIT_S, clients, connect_tls, sa_event
from tests.integration.test_federation_app import free_port, peer_toml
from tests.integration.test_labels_e2e import POLICY, marker, seclabel

# The password listener (the web map's) may show up to SECRET; then the feed.
FEED = """
[gate.listeners.enroll]
ceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }

[feeds.planes]
kind = "adsb-file"
path = "aircraft.json"
org = "UKR"
ceiling = { classification = "SECRET", REL = "*" }
default_classification = "SECRET"
affiliation = "n"
interval_s = 0.2
min_interval_s = 0.1
"""
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
PLANE = "ICAO-3c6dd4"
LOCAL = "uid-local"
PARTNER = "m-partner"
ALL = [PLANE, LOCAL, PARTNER]
# Each switchable layer's checkbox, the item on it and the text searched for it.
LAYERS = {"feeds": (PLANE, "DLH4AB"), "partner": (PARTNER, "M-PARTNER")}


def fp(p: ServerPki) -> str:
    return fingerprint_sha256(load_server_cert(p))


async def in_view(page: Page) -> int:
    text = await page.text_content("#counts") or ""
    return int(text.split("·")[1].split()[0])


async def search_count(page: Page, text: str) -> str:
    await page.fill("#search-input", text)
    await page.wait_for_timeout(300)
    count = await page.text_content("#search-count") or ""
    await page.fill("#search-input", "")
    return count


async def check_layer(page: Page, layer: str, uid: str, callsign: str) -> None:
    """Switch ``layer`` off: its item is neither drawn, clickable, searchable nor counted; the
    others stay; switched on again, it is back."""
    others = [u for u in ALL if u != uid]
    box = page.locator(f"#layers input[data-layer='{layer}']")
    before = await in_view(page)
    assert "No match" not in await search_count(page, callsign)
    d = await drawn(page)
    canvas = await page.locator("#map-canvas").bounding_box()
    assert canvas is not None
    x, y = canvas["x"] + d[uid]["x"], canvas["y"] + d[uid]["y"]
    await box.uncheck()
    await wait_drawn(page, "!(arg[0] in d) && arg[1].every((u) => u in d)", [uid, others])
    await page.wait_for_function(
        "(n) => document.getElementById('counts').textContent.includes(`· ${n} in view`)",
        arg=before - 1,
        timeout=WAIT_MS,
    )
    assert await search_count(page, callsign) == "No match"
    await page.mouse.click(x, y)
    await page.wait_for_timeout(300)
    assert await page.is_hidden("#popup")
    await box.check()
    await wait_drawn(page, "arg.every((u) => u in d)", ALL)
    await page.mouse.click(x, y)
    await page.locator("#popup").wait_for(state="visible", timeout=WAIT_MS)
    await page.keyboard.press("Escape")


async def test_feed_and_partner_items_are_switchable(tmp_path: Path, browser: Browser) -> None:
    usa_dir, ukr_dir = tmp_path / "usa", tmp_path / "ukr"
    usa_pki = ensure_server_pki(usa_dir, public_host="localhost")
    ukr_pki = ensure_server_pki(ukr_dir, public_host="localhost")
    ukr_port = free_port()
    usa_policy = tmp_path / "usa-policy.toml"
    usa_policy.write_text(
        POLICY
        + '\n[federation]\nserver_id = "usa-liaison"\nlisten = "off"\nheartbeat_s = 0.5\n'
        + "backoff_base_s = 0.05\nbackoff_cap_s = 0.5\nstatus_interval_s = 0.2\n"
        + peer_toml(
            "ukr",
            ca=ukr_pki.ca_cert,
            fingerprint=fp(ukr_pki),
            org="UKR",
            dial=f"127.0.0.1:{ukr_port}",
        )
    )
    (tmp_path / "aircraft.json").write_text(
        json.dumps({"now": time.time(), "aircraft": [AIRCRAFT]})
    )
    ukr_policy = tmp_path / "ukr-policy.toml"
    ukr_policy.write_text(
        POLICY
        + FEED
        + f'\n[federation]\nserver_id = "ukr-liaison"\nlisten = "127.0.0.1:{ukr_port}"\n'
        + "heartbeat_s = 0.5\nstatus_interval_s = 0.2\n"
        + peer_toml("usa", ca=usa_pki.ca_cert, fingerprint=fp(usa_pki), org="USA", dial=None)
    )
    UserDirectory.load(usa_dir / "users.json").add_user("usa-s", "USA", profile="usa-secret")
    ukr_users = UserDirectory.load(ukr_dir / "users.json")
    ukr_users.add_user("ukr-s", "UKR", profile="ukr-secret")
    ukr_users.add_user("ukr-web", "UKR", profile="ukr-secret", password=PASSWORD)

    async with (
        run_server(make_config(usa_dir, policy_file=str(usa_policy))) as usa,
        run_server(make_config(ukr_dir, policy_file=str(ukr_policy))) as ukr,
        browsing(browser),
    ):
        assert usa.tls is not None and ukr.tls is not None
        u, k = issue_cert(usa, "usa-s", "USA"), issue_cert(ukr, "ukr-s", "UKR")
        usa_client = await connect_tls(usa.tls.port, cert=u.cert, key=u.key, ca=u.ca)
        ukr_client = await connect_tls(ukr.tls.port, cert=k.cert, key=k.key, ca=k.ca)
        async with clients(usa_client, ukr_client):
            await ukr_client.send(
                sa_event(
                    LOCAL, "LOCAL-1", lat=50.40, lon=30.40, extra_detail=seclabel("SECRET", ["UKR"])
                )
            )
            partner = marker(PARTNER, "FROM-PARTNER", seclabel("SECRET", ["USA", "UKR"]))
            partner = partner.replace(b'lat="50.45"', b'lat="50.5"').replace(
                b'lon="30.52"', b'lon="30.6"'
            )
            await usa_client.send(partner)
            await ukr_client.wait_for(b"FROM-PARTNER", within=WAIT_S * 2)

            page = await sign_in(browser, ukr, "ukr-web")
            await page.wait_for_function(
                "() => window.__liaison.items() === 3", timeout=WAIT_MS, polling=100
            )
            await page.evaluate("() => window.__liaison.fit()")
            await wait_drawn(page, "arg.every((u) => u in d)", ALL)

            # What the server says of each item's origin (the Feature shape, docs/api.md).
            picture: dict[str, Any] = await page.evaluate(
                "() => fetch('/api/v1/picture').then((r) => r.json())"
            )
            origins = {
                f["properties"]["uid"]: f["properties"].get("origin") for f in picture["features"]
            }
            assert origins == {PLANE: "feed:planes", PARTNER: "partner", LOCAL: None}
            history: dict[str, Any] = await page.evaluate(
                f"() => fetch('/api/v1/history?uid={PARTNER}').then((r) => r.json())"
            )
            assert {f["properties"].get("origin") for f in history["features"]} == {"partner"}

            await page.click("#layers-button")
            for layer, (uid, callsign) in LAYERS.items():
                await check_layer(page, layer, uid, callsign)
            assert page.errors == []  # type: ignore[attr-defined]
