"""Download names: the base name only, with an ASCII ``filename`` and an RFC 6266/8187
``filename*`` (issue 9 item 15), over the real plain HTTP Marti listener."""

from __future__ import annotations

import hashlib
import urllib.parse

import aiohttp
import pytest

from liaison.api.files import content_disposition
from tests.integration.conftest import ServerFactory


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../../etc/passwd", "attachment; filename=\"passwd\"; filename*=UTF-8''passwd"),
        (
            "..\\..\\Windows\\évil name.zip",
            "attachment; filename=\"evil name.zip\"; filename*=UTF-8''%C3%A9vil%20name.zip",
        ),
        (
            "Übung данные.zip",
            'attachment; filename="Ubung ______.zip"; '
            "filename*=UTF-8''%C3%9Cbung%20%D0%B4%D0%B0%D0%BD%D0%BD%D1%8B%D0%B5.zip",
        ),
        (
            'say "hi"%41.txt',
            "attachment; filename=\"say _hi__41.txt\"; filename*=UTF-8''say%20%22hi%22%2541.txt",
        ),
        ("..", "attachment; filename=\"fallback\"; filename*=UTF-8''fallback"),
        (
            "a\r\nSet-Cookie: x=1",
            "attachment; filename=\"aSet-Cookie: x=1\"; filename*=UTF-8''aSet-Cookie%3A%20x%3D1",
        ),
    ],
)
def test_content_disposition(name: str, expected: str) -> None:
    assert content_disposition(name, fallback="fallback") == expected


@pytest.mark.parametrize(
    ("name", "ascii_name", "base"),
    [
        ("../../../etc/passwd", "passwd", "passwd"),
        ("данные/../Übung 1.txt", "Ubung 1.txt", "Übung 1.txt"),
    ],
)
async def test_marti_content_sends_the_cleaned_base_name(
    start_server: ServerFactory, name: str, ascii_name: str, base: str
) -> None:
    body = b"content named " + name.encode()
    digest = hashlib.sha256(body).hexdigest()
    async with start_server(http="127.0.0.1:0", udp="off") as server:
        assert server.http is not None
        url = f"http://127.0.0.1:{server.http.port}"
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{url}/Marti/sync/upload",
                params={"name": name},
                data=body,
                headers={"Content-Type": "application/octet-stream"},
            ) as r:
                assert r.status == 200, await r.text()
            async with http.get(f"{url}/Marti/sync/content", params={"hash": digest}) as r:
                assert r.status == 200
                assert await r.read() == body
                cd = r.headers["Content-Disposition"]
    encoded = urllib.parse.quote(base, safe="")
    assert cd == f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"
