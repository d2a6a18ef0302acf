"""Labels on the map: each partner sees only what is releasable to it, the banner shows the highest
marking on screen, the header the user's clearance and the popup each item's label; chats are sent
with the label chosen in the chat panel, never above the user's clearance."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page

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
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import Client, clients, connect_tls, sa_event
from tests.integration.test_labels_e2e import POLICY, marker, seclabel

# The password listener (8446) may carry up to SECRET, like the certificate listener.
WEB_POLICY = (
    POLICY
    + """
[gate.listeners.enroll]
ceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }
"""
)
# For chats from the page: the password listener also has a default label (the example policy's
# UNCLASSIFIED, REL TO the sender's organisation), which a chat sent with "Server default" gets.
CHAT_POLICY = (
    POLICY
    + """
[gate.listeners.enroll]
ceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }
default_classification = "UNCLASSIFIED"
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
    policy = labelled_web_users(data_dir, tmp_path, WEB_POLICY)
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


# The chat panel's label chooser and what it sends.
CLS = "#chat .chat-label-cls"
REL = "#chat .chat-label-rel"
SEND_LABEL = "#chat .chat-send-label"
STATUS = "#chat .chat-status"


async def tls_client(server: object, name: str, org: str) -> Client:
    from liaison.app import Server

    assert isinstance(server, Server) and server.tls is not None
    cert = issue_cert(server, name, org)
    return await connect_tls(server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name)


async def offered(page: Page) -> list[str]:
    """The classification choices of the chat panel (option values; "" is "Server default")."""
    values: list[str] = await page.eval_on_selector_all(
        f"{CLS} option", "(os) => os.map((o) => o.value)"
    )
    return values


async def send_chat(page: Page, text: str) -> None:
    await page.fill("#chat .chat-form input", text)
    await page.click("#chat .chat-form button")


async def wait_own_label(page: Page, text: str, label: str) -> None:
    """Wait until the page lists its own message ``text`` with the label badge ``label``."""
    row = page.locator("#chat .chat-list li", has_text=text)
    badge = row.locator(".badge", has_text=label)
    await badge.wait_for(timeout=WAIT_MS)
    assert await badge.text_content() == label


async def test_chat_goes_with_the_chosen_label(
    start_server: ServerFactory, browser: Browser, data_dir: Path, tmp_path: Path
) -> None:
    policy = labelled_web_users(data_dir, tmp_path, CHAT_POLICY)
    async with start_server(policy_file=str(policy)) as server, browsing(browser):
        ukr_s = await tls_client(server, "ukr-s", "UKR")
        ukr_u = await tls_client(server, "ukr-u", "UKR")
        async with clients(ukr_s, ukr_u):
            # Each client has its session running before the page sends: each sees the other's
            # position report (both UNCLASSIFIED//REL TO UKR by the TLS listener's default).
            await ukr_s.send(sa_event("uid-ukr-s", "UKR-S"))
            await ukr_u.send(sa_event("uid-ukr-u", "UKR-U"))
            await ukr_s.wait_for(b'uid="uid-ukr-u"')
            await ukr_u.wait_for(b'uid="uid-ukr-s"')

            usa = await sign_in(browser, server, "usa-s")
            await usa.click("[data-tab=chat]")
            # SECRET clearance: every classification of the policy up to SECRET, lowest first,
            # after "Server default"; REL TO starts as the user's own organisation.
            assert await offered(usa) == [
                "",
                "UNCLASSIFIED",
                "RESTRICTED",
                "CONFIDENTIAL",
                "SECRET",
            ]
            assert await usa.input_value(CLS) == ""
            assert await usa.input_value(REL) == "USA"
            assert await usa.text_content(SEND_LABEL) == "server default"

            # Server default: no label sent; the listener's default applies and the page says so.
            await send_chat(usa, "CHAT-DEFAULT")
            await wait_own_label(usa, "CHAT-DEFAULT", "UNCLASSIFIED//REL TO USA")

            # SECRET, REL TO USA, UKR: the banner is shown next to the send button, then sent.
            await usa.select_option(CLS, "SECRET")
            await usa.fill(REL, "USA, UKR")
            assert await usa.text_content(SEND_LABEL) == "SECRET//REL TO USA, UKR"
            await send_chat(usa, "CHAT-SECRET-BOTH")
            frame = await ukr_s.wait_for(b"CHAT-SECRET-BOTH")
            assert b'type="b-t-f"' in frame
            assert b'access="SECRET"' in frame
            assert b'releasableTo="REL TO USA, UKR"' in frame
            await wait_own_label(usa, "CHAT-SECRET-BOTH", "SECRET//REL TO USA, UKR")
            # The choice stays for the next message.
            assert await usa.input_value(CLS) == "SECRET"
            assert await usa.input_value(REL) == "USA, UKR"
            assert await usa.text_content(SEND_LABEL) == "SECRET//REL TO USA, UKR"
            assert await usa.input_value("#chat .chat-form input") == ""

            # A hand-typed label the sender may not assert (REL TO excludes their own
            # organisation): the server refuses it (403) and the page shows its reasons.
            await usa.fill(REL, "UKR")
            assert await usa.text_content(SEND_LABEL) == "SECRET//REL TO UKR"
            await send_chat(usa, "CHAT-REFUSED")
            status = usa.locator(STATUS, has_text="Not sent")
            await status.wait_for(timeout=WAIT_MS)
            text = await status.text_content() or ""
            assert text.startswith("Not sent: refused: excludes_sender_org"), text
            assert "message" in (await status.get_attribute("class") or "")
            assert await usa.input_value("#chat .chat-form input") == "CHAT-REFUSED"  # kept
            # A banner the policy cannot parse (values out of its order): 400, its error shown.
            await usa.fill(REL, "ukr, usa")
            assert await usa.text_content(SEND_LABEL) == "SECRET//REL TO UKR, USA"
            assert await usa.text_content(STATUS) == ""  # the old refusal went with the change
            await send_chat(usa, "CHAT-REFUSED")
            status = usa.locator(STATUS, has_text="Not sent")
            await status.wait_for(timeout=WAIT_MS)
            text = await status.text_content() or ""
            assert text.startswith("Not sent: label: out_of_order:REL"), text
            ARTIFACTS.mkdir(exist_ok=True)
            await usa.screenshot(path=str(ARTIFACTS / "map-chat-label-refused.png"))

            # UNCLASSIFIED, REL TO USA, UKR reaches both UKR clients. Delivery on a connection
            # is in order, so once the unclassified client has it, it would have had the
            # earlier ones: it never got the SECRET chat, and nobody got a refused one.
            await usa.select_option(CLS, "UNCLASSIFIED")
            await usa.fill(REL, "USA, UKR")
            await send_chat(usa, "CHAT-UNCLASS-BOTH")
            frame = await ukr_u.wait_for(b"CHAT-UNCLASS-BOTH")
            assert b'releasableTo="REL TO USA, UKR"' in frame
            await ukr_s.wait_for(b"CHAT-UNCLASS-BOTH")
            assert b"CHAT-SECRET-BOTH" not in ukr_u.raw
            for c in (ukr_s, ukr_u):
                assert b"CHAT-DEFAULT" not in c.raw  # REL TO USA only
                assert b"CHAT-REFUSED" not in c.raw

            # An UNCLASSIFIED user cannot choose anything higher: it is not offered.
            usa_u = await sign_in(browser, server, "usa-u")
            await usa_u.click("[data-tab=chat]")
            assert await offered(usa_u) == ["", "UNCLASSIFIED"]
            await usa.screenshot(path=str(ARTIFACTS / "map-chat-label.png"))
            assert usa.errors == []  # type: ignore[attr-defined]


async def test_no_label_chooser_without_a_policy(
    start_server: ServerFactory, browser: Browser
) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "duty")
        page = await sign_in(browser, server, "duty")
        await page.click("[data-tab=chat]")
        assert await page.locator("#chat .chat-label").is_hidden()
        assert await page.locator(SEND_LABEL).is_hidden()
        await send_chat(page, "no policy here")
        await wait_own_label(page, "no policy here", "UNLABELLED")
