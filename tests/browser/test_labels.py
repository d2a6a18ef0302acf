"""Labels on the map: each partner sees only what is releasable to it, the banner shows the highest
marking on screen, the header the user's clearance and the popup each item's label."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser

from liaison.users import UserDirectory
from tests.browser.helpers import ARTIFACTS, PASSWORD, WAIT_MS, browsing, drawn, sign_in, wait_drawn
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients, connect_tls
from tests.integration.test_labels_e2e import POLICY, USERS, marker, seclabel

# The password listener (8446) may carry up to SECRET, like the certificate listener.
WEB_POLICY = (
    POLICY
    + """
[gate.listeners.enroll]
ceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }
"""
)
MARKERS = {
    "m-secret-both": ("SECRET", ["USA", "UKR"], None, 50.45, 30.50),
    "m-orcon": ("SECRET", ["USA", "UKR"], ["ORCON"], 50.46, 30.55),
    "m-secret-usa": ("SECRET", ["USA"], None, 50.44, 30.56),
    "m-unclass-both": ("UNCLASSIFIED", ["USA", "UKR"], None, 50.43, 30.52),
}


async def test_each_partner_sees_only_what_is_releasable_to_it(
    start_server: ServerFactory, browser: Browser, data_dir: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(WEB_POLICY)
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile, password=PASSWORD)
    async with start_server(policy_file=str(policy)) as server, browsing(browser):
        assert server.tls is not None
        cert = issue_cert(server, "usa-s", "USA")
        sender = await connect_tls(server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca)
        async with clients(sender):
            for uid, (cls, rel, handling, lat, lon) in MARKERS.items():
                event = marker(uid, f"text of {uid}", seclabel(cls, rel, handling))
                event = event.replace(
                    b'lat="50.45" lon="30.52"', f'lat="{lat}" lon="{lon}"'.encode()
                )
                await sender.send(event)

            usa = await sign_in(browser, server, "usa-s")
            await wait_drawn(usa, "Object.keys(d).filter((u) => u.startsWith('m-')).length === 4")
            d = await drawn(usa)
            assert d["m-orcon"]["label"] == "SECRET//HANDLING ORCON//REL TO USA, UKR"
            assert d["m-unclass-both"]["label"] == "UNCLASSIFIED//REL TO USA, UKR"
            # The banner: the highest marking on screen, and how many others share its level.
            banner = await usa.text_content("#banner-top") or ""
            assert banner.startswith("SECRET//HANDLING ORCON//REL TO USA, UKR")
            assert "+2 other markings" in banner
            assert "level-s" in (await usa.get_attribute("#banner-top", "class") or "")
            clearance = await usa.text_content("#clearance") or ""
            assert "SECRET//HANDLING ORCON//REL TO USA, LIAISON" in clearance

            ukr = await sign_in(browser, server, "ukr-s")
            await wait_drawn(ukr, "'m-secret-both' in d && 'm-unclass-both' in d")
            seen = {u for u in await drawn(ukr) if u.startswith("m-")}
            assert seen == {"m-secret-both", "m-unclass-both"}  # never ORCON or USA-only
            assert await ukr.text_content("#banner-top") == "SECRET//REL TO USA, UKR"
            assert "SECRET//REL TO UKR, LIAISON" in (await ukr.text_content("#clearance") or "")

            # The banner follows what is on screen: zoomed onto the unclassified marker only.
            await ukr.evaluate("() => window.__liaison.goTo('m-unclass-both')")
            await ukr.evaluate("() => window.__liaison.setView({zoom: 17})")
            await ukr.wait_for_function(
                "() => document.getElementById('banner-top').textContent"
                " === 'UNCLASSIFIED//REL TO USA, UKR'",
                timeout=WAIT_MS,
            )
            popup = ukr.locator("#popup")
            await popup.wait_for(state="visible", timeout=WAIT_MS)
            assert "UNCLASSIFIED//REL TO USA, UKR" in (await popup.text_content() or "")

            ARTIFACTS.mkdir(exist_ok=True)
            await usa.screenshot(path=str(ARTIFACTS / "map-labels-usa.png"))
            await ukr.screenshot(path=str(ARTIFACTS / "map-labels-ukr.png"))
