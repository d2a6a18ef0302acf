"""The operator console's page (/console, docs/web.md "Console") over real HTTPS: operators get
the page with its own Content-Security-Policy, everyone else a 403 page (counted and recorded as
for the operator API), a caller who is not signed in is sent to sign-in, the built file is not
served under /static/, and the anonymous listener has no console. ``GET /api/v1/me`` names the
caller's roles, which the map uses to show its link to the console."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from liaison.api.web import CONSOLE_HEADERS
from tests.integration.conftest import ServerFactory
from tests.integration.http.http_support import (
    PASSWORD,
    add_user,
    browser_session,
    cert_session,
    certs,
    enroll_url,
    https_url,
    write_groups,
)

CONSOLE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; connect-src 'self';"
    " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


async def _login(http: aiohttp.ClientSession, url: str, name: str) -> None:
    async with http.post(url, json={"username": name, "password": PASSWORD}) as r:
        assert r.status == 200, await r.text()


async def test_console_page_for_operators_only(start_server: ServerFactory, tmp_path: Path) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path)), http="127.0.0.1:0") as server:
        add_user(server, "webops", "USA", [])  # an operator by the groups file
        add_user(server, "webred", "RED", ["red"])
        c = certs(server, ("ops", "USA"), ("red1", "RED"))

        async with browser_session(server) as http:
            # Not signed in: sent to the sign-in page, as for the map.
            async with http.get(enroll_url(server, "/console"), allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/login"
            # The built page is not handed out under /static/ (to anyone).
            async with http.get(enroll_url(server, "/static/console.html")) as r:
                assert r.status == 404

            await _login(http, enroll_url(server, "/login"), "webred")
            async with http.get(enroll_url(server, "/api/v1/me")) as r:
                assert (await r.json())["roles"] == []
            async with http.get(enroll_url(server, "/console")) as r:
                assert r.status == 403 and r.content_type == "text/html"
                assert "Operators only" in await r.text()
                assert r.headers["Content-Security-Policy"] == CONSOLE_CSP
            async with http.get(enroll_url(server, "/static/console.html")) as r:
                assert r.status == 404

            await _login(http, enroll_url(server, "/login"), "webops")
            async with http.get(enroll_url(server, "/api/v1/me")) as r:
                assert (await r.json())["roles"] == ["operator"]
            async with http.get(enroll_url(server, "/console")) as r:
                assert r.status == 200 and r.content_type == "text/html"
                page = await r.text()
                assert '<section id="users"' in page and "/static/assets/console-" in page
                assert r.headers["Content-Security-Policy"] == CONSOLE_CSP
                assert r.headers["Cache-Control"] == "no-store"
                assert r.headers["X-Frame-Options"] == "DENY"
            # Every script and style the page names is served from here.
            for ref in ("console-", "api-"):
                assert ref in page

        # The certificate listener: the operator's certificate gets the page, another 403.
        async with (
            cert_session(server, c["ops"]) as http,
            http.get(https_url(server, "/console")) as r,
        ):
            assert r.status == 200 and '<section id="users"' in await r.text()
        async with (
            cert_session(server, c["red1"]) as http,
            http.get(https_url(server, "/console")) as r,
        ):
            assert r.status == 403

        snap = server.metrics.snapshot()
        assert snap.get('liaison_role_denied_total{route="/console"}') == 2

        # The anonymous listener identifies nobody: no console (as no operator API).
        assert server.http is not None
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{server.http.port}/console") as r,
        ):
            assert r.status == 404


def test_console_policy_allows_data_images_only() -> None:
    """The one widening against a default-src 'self' policy: data: images (the enrollment QR
    code arrives as a data:image/png URL); no inline style, no blob:, no workers."""
    csp = CONSOLE_HEADERS["Content-Security-Policy"]
    assert csp == CONSOLE_CSP
    assert "unsafe" not in csp and "blob:" not in csp
