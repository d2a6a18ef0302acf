"""The operator console (/console) in a real browser against a real server: an operator adds
users (with a password, and with an enrollment link whose QR code shows under the page's
Content-Security-Policy), downloads a connection package (a zip with the expected files), checks
the audit log from the keyboard, watches the counters refresh, and revokes a user whose open map
page then closes its feed and returns to sign-in; a non-operator is refused the page and every
operator API call the console makes; the page fits a 1366x768 screen."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, WebSocket

from liaison.app import Server
from liaison.gate import audit_paths
from liaison.identity import packages
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import fingerprint_sha256, load_server_cert
from tests.browser.helpers import (
    ARTIFACTS,
    PASSWORD,
    WAIT_MS,
    add_web_user,
    browsing,
    map_url,
    new_page,
    sign_in,
)
from tests.integration.conftest import ServerFactory
from tests.integration.test_federation_app import free_port, peer_toml
from tests.integration.test_feeds import feed
from tests.integration.test_labels_e2e import POLICY

OPERATORS = ("liaison-operators",)
NEW_PASSWORD = "a long new password"
SCREEN = {"width": 1366, "height": 768}
A = "/api/v1/admin"
# Every operator API call the console makes, with a body for the POSTs.
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", f"{A}/users", None),
    ("POST", f"{A}/users", {"name": "mallory", "org": "RED"}),
    ("POST", f"{A}/users/ops/revoke", {}),
    ("POST", f"{A}/users/ops/password", {"password": None}),
    ("POST", f"{A}/users/ops/enrollment", {"token_ttl_hours": 24}),
    ("GET", f"{A}/users/ops/package?client=atak&style=enrollment", None),
    ("GET", f"{A}/certificates?within_days=30", None),
    ("GET", f"{A}/status", None),
    ("GET", f"{A}/audit", None),
]


async def open_console(browser: Browser, server: Server, name: str) -> Page:
    """Sign in as ``name`` (the map opens), then open the console at 1366x768."""
    page = await sign_in(browser, server, name)
    await page.set_viewport_size(SCREEN)
    # Console errors (a script error, a load the page's policy refused) from here on.
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text) if m.type == "error" else None)
    page.console_errors = messages  # type: ignore[attr-defined]
    # The map shows operators a link to the console.
    await page.click("#console-link")
    await page.wait_for_url(map_url(server, "/console"), timeout=WAIT_MS)
    await page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    return page


async def add_user(page: Page, name: str, groups: str, password: str | None) -> None:
    if not await page.locator("details.add").evaluate("(d) => d.open"):
        await page.click("details.add summary")
    form = page.locator("#add-user")
    await form.locator("input[name=name]").fill(name)
    await form.locator("input[name=org]").fill("USA")
    await form.locator("input[name=groups]").fill(groups)
    if password is not None:
        await form.locator("input[name=sign-in][value=password]").check()
        await form.locator("input[name=password]").fill(password)
        assert await page.locator("#add-hours-row").is_hidden()
    else:
        await form.locator("input[name=sign-in][value=enrollment]").check()
        assert await page.locator("#add-password-row").is_hidden()
    await page.click("#add-submit")
    await page.wait_for_selector(f"tr[data-user='{name}']", timeout=WAIT_MS)


async def row_button(page: Page, user: str, label: str) -> None:
    await page.locator(f"tr[data-user='{user}'] button", has_text=label).click()
    await page.wait_for_selector("dialog[open]", timeout=WAIT_MS)


async def test_operator_adds_downloads_checks_and_revokes(
    browser: Browser, start_server: ServerFactory, tmp_path: Path
) -> None:
    # Labels on (the audit log exists and records every action), a partner link that cannot
    # connect and a feed, for the status sections.
    partner = ensure_server_pki(tmp_path / "partner", public_host="localhost")
    policy = tmp_path / "policy.toml"
    policy.write_text(
        POLICY
        + '\n[federation]\nserver_id = "ops-liaison"\nlisten = "off"\n'
        + "backoff_base_s = 0.05\nbackoff_cap_s = 0.5\nstatus_interval_s = 0.2\n"
        + peer_toml(
            "ukr",
            ca=partner.ca_cert,
            fingerprint=fingerprint_sha256(load_server_cert(partner)),
            org="UKR",
            dial=f"127.0.0.1:{free_port()}",
        )
        + feed("ships", "ais-udp", 'listen = "127.0.0.1:0"')
    )
    async with start_server(policy_file=str(policy)) as server, browsing(browser):
        add_web_user(server, "ops", OPERATORS)
        page = await open_console(browser, server, "ops")
        assert await page.title() == "Liaison · Console"
        await page.wait_for_selector("tr[data-user='ops']", timeout=WAIT_MS)

        # Add a user with a password, and one with an enrollment link (its QR code drawn).
        await add_user(page, "carol", "blue", NEW_PASSWORD)
        await add_user(page, "dave", "blue, red", None)
        await page.wait_for_selector("#enrollment:not([hidden]) img.qr", timeout=WAIT_MS)
        link = await page.input_value("#enrollment .link-url")
        assert link.startswith("tak://com.atakmap.app/enroll?") and "username=dave" in link
        qr = await page.eval_on_selector(
            "#enrollment img.qr", "(i) => [i.complete, i.naturalWidth, i.src.slice(0, 22)]"
        )
        assert qr[0] is True and qr[1] > 0 and qr[2] == "data:image/png;base64,"
        dave = page.locator("tr[data-user='dave']")
        assert "1 link" in await dave.inner_text()
        assert "IN" not in await dave.inner_text()  # the same groups both ways: listed once

        # Download carol's enrollment package for ATAK: a zip with the manifest, the .pref
        # (enroll with user name carol) and the truststore only.
        await row_button(page, "carol", "Package")
        await page.select_option("dialog select[name=client]", "atak")
        await page.select_option("dialog select[name=style]", "enrollment")
        async with page.expect_download(timeout=WAIT_MS) as info:
            await page.click("dialog button[type=submit]")
        download = await info.value
        assert download.suggested_filename == "carol-enroll-atak.zip"
        saved = tmp_path / download.suggested_filename
        await download.save_as(saved)
        with zipfile.ZipFile(io.BytesIO(saved.read_bytes())) as zf:
            names = set(zf.namelist())
            [pref] = [n for n in names if n.endswith(".pref")]
            prefs = packages.parse_pref(zf.read(pref))["cot_streams"]
        assert "MANIFEST/manifest.xml" in names and pref.startswith("certs/")
        assert [n for n in names if n.endswith(".p12")] == [
            pref.replace(".pref", ".p12").replace("certs/", "certs/truststore-")
        ]
        assert prefs["enrollForCertificateWithTrust0"] == "true"
        assert prefs["username0"] == "carol"
        await page.wait_for_selector("dialog:not([open])", state="attached", timeout=WAIT_MS)
        await page.wait_for_function(
            "() => document.getElementById('message').textContent.includes('downloaded')",
            timeout=WAIT_MS,
        )

        # Certificates: carol's and dave's are listed with their expiry, none expiring within
        # 30 days (they last a year); within 400 days both are, and highlighted.
        await page.wait_for_function(
            "() => ['carol', 'dave'].every((n) => document.getElementById('cert-list')"
            ".textContent.includes(n))",
            timeout=WAIT_MS,
        )
        assert await page.locator("#cert-list tr.cert-expiring").count() == 0
        await page.fill("#within-days", "400")
        await page.press("#within-days", "Enter")
        await page.wait_for_function(
            "() => document.querySelectorAll('#cert-list tr.cert-expiring').length === 2",
            timeout=WAIT_MS,
        )
        assert "2 expiring within 400 days" in await page.inner_text("#cert-summary")
        background = await page.eval_on_selector(
            "#cert-list tr.cert-expiring", "(r) => getComputedStyle(r).backgroundColor"
        )
        assert background == "rgb(255, 244, 214)"  # --warn-bg

        # The audit check, from the keyboard only: Tab to the button, Enter.
        await page.click("#audit-title")
        for _ in range(200):
            if await page.evaluate("() => document.activeElement?.id") == "audit-check":
                break
            await page.keyboard.press("Tab")
        assert await page.evaluate("() => document.activeElement?.id") == "audit-check"
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#audit-summary.ok", timeout=WAIT_MS)
        assert (await page.inner_text("#audit-summary")).startswith("Verified: ")

        # The partner link (down or connecting, with its last error) and the feed (running).
        await page.wait_for_selector("tr[data-peer='ukr'] td.wrap.state-bad", timeout=WAIT_MS)
        peer = await page.inner_text("tr[data-peer='ukr']")
        assert "native" in peer and "up" not in peer.split() and "127.0.0.1" in peer
        assert "This server: ops-liaison" in await page.inner_text("#link-list")
        feed_row = page.locator("tr[data-feed='ships']")
        assert "ais-udp" in await feed_row.inner_text()

        # A password set from the keyboard only: Escape cancels and focus returns to the button;
        # Enter in the dialog submits.
        await page.focus("tr[data-user='dave'] button:has-text('Password')")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("dialog[open]", timeout=WAIT_MS)
        await page.keyboard.press("Escape")
        await page.wait_for_selector("dialog[open]", state="detached", timeout=WAIT_MS)
        assert await page.evaluate("() => document.activeElement.textContent") == "Password…"
        await page.keyboard.press("Enter")
        await page.wait_for_selector("dialog[open]", timeout=WAIT_MS)
        assert await page.evaluate("() => document.activeElement.name") == "password"
        await page.keyboard.type("short")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("dialog .error:not([hidden])", timeout=WAIT_MS)
        assert "at least 12" in await page.inner_text("dialog .error")
        await page.fill("dialog input[name=password]", "")
        await page.keyboard.type(NEW_PASSWORD)
        await page.keyboard.press("Enter")
        await page.wait_for_function(
            "() => /password/.test(document.querySelector('tr[data-user=dave]').textContent)",
            timeout=WAIT_MS,
        )

        # The counters are read again within a refresh (5 s).
        before = await page.inner_text("#status-time")
        assert before.startswith("Updated ")
        await page.wait_for_function(
            "(t) => document.getElementById('status-time').textContent !== t",
            arg=before,
            timeout=WAIT_MS,
        )
        assert await page.locator("tr[data-counter='liaison_subscribers']").count() == 1

        # carol opens the map; the operator revokes her; her feed ends (4403) and her page goes
        # back to the sign-in page.
        carol = await new_page(browser)
        closed: list[str] = []

        def watch(ws: WebSocket) -> None:
            ws.on("close", lambda w: closed.append(w.url))

        carol.on("websocket", watch)
        await carol.goto(map_url(server, "/login"))
        await carol.fill("#username", "carol")
        await carol.fill("#password", NEW_PASSWORD)
        await carol.click("#sign-in")
        await carol.wait_for_url(map_url(server, "/"), timeout=WAIT_MS)
        await carol.wait_for_function(
            "() => document.getElementById('conn').textContent === 'Live'", timeout=WAIT_MS
        )
        assert closed == []
        await row_button(page, "carol", "Revoke")
        await page.fill("dialog input[name=confirm]", "carol")
        await page.click("dialog button[type=submit]")
        await page.wait_for_selector("tr[data-user='carol'].revoked", timeout=WAIT_MS)
        await carol.wait_for_url(re.compile(r"/login\?expired=1$"), timeout=WAIT_MS)
        assert any(u.endswith("/api/v1/stream") for u in closed), closed
        assert "carol revoked" in await page.inner_text("#message")

        # The console itself has no horizontal scroll at 1366x768, and raised no error.
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= SCREEN["width"], width
        ARTIFACTS.mkdir(exist_ok=True)
        await page.evaluate("() => window.scrollTo(0, 0)")
        await page.screenshot(path=str(ARTIFACTS / "console-1366x768.png"))
        await page.screenshot(path=str(ARTIFACTS / "console-full.png"), full_page=True)
        assert page.errors == []  # type: ignore[attr-defined]
        assert page.console_errors == []  # type: ignore[attr-defined]

    # Every action went through the operator API, which recorded it.
    log_path, _key, _pub = audit_paths(server.config.data_dir)
    actions = [
        (r["fields"]["action"], r["fields"]["target"], r["fields"]["status"])
        for r in map(json.loads, log_path.read_bytes().splitlines())
        if r["kind"] == "admin"
    ]
    assert actions == [
        ("user_add", "carol", 201),
        ("user_add", "dave", 201),
        ("user_package", "carol", 200),
        ("user_password", "dave", 200),
        ("user_revoke", "carol", 200),
    ]


async def test_non_operator_is_refused_every_console_route(
    browser: Browser, start_server: ServerFactory
) -> None:
    async with start_server() as server, browsing(browser):
        add_web_user(server, "ops", OPERATORS)
        add_web_user(server, "alice", ("blue",))
        # Not signed in: sent to the sign-in page, as for the map.
        anonymous = await new_page(browser)
        await anonymous.goto(map_url(server, "/console"))
        assert anonymous.url == map_url(server, "/login")
        page = await sign_in(browser, server, "alice")
        # The map shows no console link to a non-operator.
        assert await page.locator("#console-link").is_hidden()
        response = await page.goto(map_url(server, "/console"))
        assert response is not None and response.status == 403
        assert "Operators only" in await page.inner_text("body")
        results = await page.evaluate(
            """async (routes) => {
                const me = await (await fetch('/api/v1/me')).json();
                const out = [];
                for (const [method, path, body] of routes) {
                    const headers = {'X-CSRF-Token': me.csrf, 'X-Requested-With': 'test'};
                    if (body !== null) headers['Content-Type'] = 'application/json';
                    const r = await fetch(path, {method, headers,
                        body: body === null ? undefined : JSON.stringify(body)});
                    out.push([path, r.status, await r.text()]);
                }
                return out;
            }""",
            ROUTES,
        )
        for path, status, text in results:
            assert (status, text) == (403, '{"error": "operator role required"}'), path
        # Nothing changed: ops is not revoked, mallory was not added.
        page2 = await new_page(browser)
        await page2.goto(map_url(server, "/login"))
        await page2.fill("#username", "ops")
        await page2.fill("#password", PASSWORD)
        await page2.click("#sign-in")
        await page2.wait_for_url(map_url(server, "/"), timeout=WAIT_MS)
        users = await page2.evaluate(
            "async () => (await (await fetch('/api/v1/admin/users')).json())"
            ".users.map((u) => [u.name, u.revoked])"
        )
        assert sorted(users) == [["alice", False], ["ops", False]]
