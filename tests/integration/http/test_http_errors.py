"""Error answers of the HTTP side: every 401 carries the JSON error body of docs/api.md."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.integration.conftest import ServerFactory
from tests.integration.http.http_support import browser_session, enroll_url, write_groups


async def test_every_401_is_json_and_keeps_its_challenge(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with (
        start_server(groups_file=str(write_groups(tmp_path))) as server,
        browser_session(server) as http,
    ):
        # No credentials at all, on REST and on Marti: the Basic challenge stays.
        for path in ("/api/v1/me", "/Marti/api/version"):
            async with http.get(enroll_url(server, path)) as r:
                assert r.status == 401
                assert r.content_type == "application/json"
                assert await r.json() == {"error": "authentication required"}
                assert r.headers["WWW-Authenticate"] == 'Basic realm="Liaison"'
        # Wrong Basic credentials.
        wrong = "Basic " + base64.b64encode(b"nobody:wrong").decode()
        async with http.get(
            enroll_url(server, "/api/v1/me"), headers={"Authorization": wrong}
        ) as r:
            assert r.status == 401 and r.content_type == "application/json"
            assert await r.json() == {"error": "wrong credentials"}
            assert r.headers["WWW-Authenticate"].startswith("Basic")
        # The web map (X-Requested-With) gets the same body and no challenge.
        async with http.get(
            enroll_url(server, "/api/v1/picture"), headers={"X-Requested-With": "fetch"}
        ) as r:
            assert r.status == 401 and r.content_type == "application/json"
            assert await r.json() == {"error": "authentication required"}
            assert "WWW-Authenticate" not in r.headers
        # Enrollment without credentials.
        async with http.post(enroll_url(server, "/Marti/api/tls/signClient/v2")) as r:
            assert r.status == 401 and r.content_type == "application/json"
            assert "error" in await r.json()
