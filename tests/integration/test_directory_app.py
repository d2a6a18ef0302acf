"""Directory sign-in in a running server, against a real OpenLDAP (slapd_support): enrollment on
8446 with a directory password as ATAK does it, streaming with the certificate, web sign-in, and
a user disabled in the directory losing the open stream, the web map's WebSocket feed and the web
session within refresh_s, and a restart that does not forget them."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from liaison import config as config_mod
from liaison.app import Server, run_server
from liaison.errors import StorageError
from liaison.identity.directory_config import DirectoryConfig
from tests.integration.conftest import issue_cert
from tests.integration.helpers import WAIT_S, clients, connect_tls, sa_event
from tests.integration.slapd_support import (
    PASSWORD,
    Slapd,
    directory_toml,
    disable_ldif,
    enable_ldif,
    slapd,
)
from tests.integration.test_enrollment import (
    basic,
    csr_b64,
    enroll_url,
    new_key,
    users_of,
    write_identity,
)

__all__ = ["slapd"]  # the module-scoped fixture

# The re-check interval of these tests, and how long a disabled user's session may take to close:
# one interval, the sweep (twice a second), and room for a loaded machine.
REFRESH_S = 1.0
CLOSE_WITHIN_S = REFRESH_S + 14.0


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("LIAISON_"):
            monkeypatch.delenv(key)


def server_config(tmp_path: Path, slapd: Slapd) -> config_mod.Config:
    path = tmp_path / "liaison.toml"
    path.write_text(directory_toml(slapd, refresh_s=REFRESH_S))
    overrides = {
        "data_dir": str(tmp_path / "data"),
        "tcp": "127.0.0.1:0",
        "tls": "127.0.0.1:0",
        "udp": "127.0.0.1:0",
        "https": "127.0.0.1:0",
        "enroll": "127.0.0.1:0",
        "public_host": "localhost",
    }
    config = config_mod.load(path, {}, overrides)
    assert isinstance(config.directory, DirectoryConfig)
    return config


@pytest.fixture
async def server(tmp_path: Path, slapd: Slapd) -> AsyncIterator[Server]:
    async with run_server(server_config(tmp_path, slapd)) as running:
        yield running


async def enroll(server: Server, name: str, tmp_path: Path) -> tuple[Path, Path]:
    """Enroll ``name`` with their directory password as ATAK does (v2); their cert and key."""
    auth = basic(name, PASSWORD)
    key = new_key()
    async with await web(server) as session:
        async with session.get(enroll_url(server, "config"), headers=auth) as r:
            assert r.status == 200, await r.text()
        body = csr_b64(key, [("CN", name), ("O", "NATO")])
        async with session.post(enroll_url(server, "signClient/v2"), data=body, headers=auth) as r:
            assert r.status == 200, await r.text()
            answer = json.loads(await r.read())
    cert = x509.load_der_x509_certificate(base64.b64decode(answer["signedCert"]))
    return write_identity(tmp_path, name, cert, key)


async def close_of(ws: aiohttp.ClientWebSocketResponse, within: float) -> tuple[int, str]:
    """Read until the server's close frame: (code, reason)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for _ in range(10_000):  # bounded: at most this many messages before the close
        msg = await ws.receive(timeout=max(0.0, deadline - loop.time()))
        if msg.type is aiohttp.WSMsgType.CLOSE:
            return int(msg.data), str(msg.extra)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
    raise AssertionError("no close frame")


async def web(server: Server) -> aiohttp.ClientSession:
    """A browser-like session: trusts the server's CA and keeps cookies of 127.0.0.1."""
    assert server.server_pki is not None
    ctx = ssl.create_default_context(cafile=str(server.server_pki.ca_cert))
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx),
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=WAIT_S),
    )


async def test_enroll_stream_and_lose_access_when_disabled(
    server: Server, slapd: Slapd, tmp_path: Path
) -> None:
    auth = basic("erin", PASSWORD)
    key = new_key()
    async with await web(server) as session:
        # a wrong directory password is refused like a wrong local one
        async with session.get(enroll_url(server, "config"), headers=basic("erin", "nope")) as r:
            assert r.status == 401
        async with session.get(enroll_url(server, "config"), headers=auth) as r:
            assert r.status == 200, await r.text()
            assert b'name="O" value="NATO"' in await r.read()  # the mapped organisation
        body = csr_b64(key, [("CN", "erin"), ("O", "NATO")])
        url = enroll_url(server, "signClient/v2?clientUid=ANDROID-0123456789abcdef")
        async with session.post(url, data=body, headers=auth) as r:
            assert r.status == 200, await r.text()
            answer = json.loads(await r.read())
        # web sign-in with the same directory password
        assert server.enroll is not None
        base = f"https://127.0.0.1:{server.enroll.port}"
        login = {"username": "erin", "password": PASSWORD}
        async with session.post(f"{base}/login", json=login) as r:
            assert r.status == 200, await r.text()
        async with session.get(f"{base}/api/v1/me") as r:
            assert r.status == 200
            me = await r.json()
        assert me["name"] == "erin" and me["org"] == "NATO" and me["groups"] == ["Blue"]
    cert = x509.load_der_x509_certificate(base64.b64decode(answer["signedCert"]))
    assert cert.subject.rfc4514_string() == "CN=erin,O=NATO"
    assert users_of(server).get("erin") is None  # nothing written to the users file
    cert_path, key_path = write_identity(tmp_path, "erin", cert, key)
    assert server.server_pki is not None and server.tls is not None
    ca = server.server_pki.ca_cert

    # a local certificate user in Blue sees erin's position: erin's groups came from the directory
    users_of(server).add_user("watcher", "NATO", groups=["Blue"])
    other = issue_cert(server, "watcher")
    erin = await connect_tls(server.tls.port, cert=cert_path, key=key_path, ca=ca, name="erin")
    watcher = await connect_tls(
        server.tls.port, cert=other.cert, key=other.key, ca=other.ca, name="watcher"
    )
    async with clients(erin, watcher), await web(server) as session:
        async with session.post(f"{base}/login", json=login) as r:
            assert r.status == 200
        # the web map's live feed, opened with the directory user's web sign-in
        feed = await session.ws_connect(f"{base}/api/v1/stream")
        first = await feed.receive(timeout=WAIT_S)
        assert json.loads(first.data)["kind"] == "snapshot"
        await erin.send(sa_event("uid-erin", "ERIN"))
        await watcher.wait_for(b'uid="uid-erin"')

        slapd.modify(disable_ldif("erin"))
        try:
            disabled_at = time.monotonic()
            stream_closed, feed_close = await asyncio.gather(
                erin.closed_by_server(within=CLOSE_WITHIN_S), close_of(feed, CLOSE_WITHIN_S)
            )
            closed_after = time.monotonic() - disabled_at
            assert stream_closed and feed_close == (4403, "revoked")
            await feed.close()
            # the web session is over too, and the password no longer works
            async with session.get(f"{base}/api/v1/me") as r:
                assert r.status == 401
            # a session without the cookie: the password itself is checked, and refused
            async with (
                await web(server) as fresh,
                fresh.get(enroll_url(server, "config"), headers=auth) as r,
            ):
                assert r.status == 401
            # the certificate is refused at the next connection
            try:
                again = await connect_tls(server.tls.port, cert=cert_path, key=key_path, ca=ca)
            except (ssl.SSLError, ConnectionError, OSError):
                pass
            else:
                async with clients(again):
                    assert await again.closed_by_server(within=CLOSE_WITHIN_S)
            # the local user is untouched
            await watcher.send(sa_event("uid-watcher", "WATCHER"))
            assert not await watcher.closed_by_server(within=0.5)
        finally:
            slapd.modify(enable_ldif("erin"))
    assert closed_after < CLOSE_WITHIN_S
    counts = server.metrics.snapshot()
    assert counts.get('liaison_directory_signins_total{result="accepted"}', 0) >= 3
    assert counts.get('liaison_directory_signins_total{result="refused"}', 0) >= 2
    assert counts.get('liaison_directory_refreshes_total{result="ok"}', 0) >= 1
    print(f"stream and feed of a disabled directory user closed after {closed_after:.2f} s")


async def test_a_restart_remembers_directory_users(tmp_path: Path, slapd: Slapd) -> None:
    config = server_config(tmp_path, slapd)
    async with run_server(config) as first:
        cert, key = await enroll(first, "dave", tmp_path)
    state = config.data_dir / "directory-users.json"
    assert state.stat().st_mode & 0o777 == 0o600
    assert PASSWORD.encode() not in state.read_bytes()
    # disabled while the server is down: after the restart the certificate works no more (the
    # first re-check runs at start)
    slapd.modify(disable_ldif("dave"))
    try:
        async with run_server(config) as second:
            assert second.tls is not None and second.server_pki is not None
            ca = second.server_pki.ca_cert
            try:
                dave = await connect_tls(second.tls.port, cert=cert, key=key, ca=ca, name="d")
            except (ssl.SSLError, ConnectionError, OSError):
                pass
            else:
                async with clients(dave):
                    assert await dave.closed_by_server(within=CLOSE_WITHIN_S)
    finally:
        slapd.modify(enable_ldif("dave"))
    # enabled again: the certificate works again after the next re-check
    async with run_server(config) as third:
        assert third.tls is not None and third.server_pki is not None
        users_of(third).add_user("watcher", "NATO", groups=["Blue"])
        other = issue_cert(third, "watcher")
        dave = await connect_tls(
            third.tls.port, cert=cert, key=key, ca=third.server_pki.ca_cert, name="d"
        )
        watcher = await connect_tls(
            third.tls.port, cert=other.cert, key=other.key, ca=other.ca, name="w"
        )
        async with clients(dave, watcher):
            await dave.send(sa_event("uid-dave", "DAVE"))
            await watcher.wait_for(b'uid="uid-dave"')


async def test_an_unreadable_users_record_stops_the_start(tmp_path: Path, slapd: Slapd) -> None:
    config = server_config(tmp_path, slapd)
    config.data_dir.mkdir(parents=True)
    (config.data_dir / "directory-users.json").write_text("not json\n")
    with pytest.raises(StorageError, match="directory users file"):
        async with run_server(config):
            pass


async def test_a_directory_user_gets_a_bearer_token_and_loses_it_when_disabled(
    server: Server, slapd: Slapd
) -> None:
    """POST /oauth/token with the directory password (as ATAK and CloudTAK ask for a token);
    the token is refused once the directory disables the user."""
    assert server.enroll is not None
    base = f"https://127.0.0.1:{server.enroll.port}"
    async with await web(server) as session:
        form = {"grant_type": "password", "username": "erin", "password": "wrong"}
        async with session.post(f"{base}/oauth/token", data=form) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_grant"
        form["password"] = PASSWORD
        async with session.post(f"{base}/oauth/token", data=form) as r:
            assert r.status == 200, await r.text()
            token = (await r.json())["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{base}/api/v1/me", headers=bearer) as r:
            assert r.status == 200 and (await r.json())["name"] == "erin"
        slapd.modify(disable_ldif("erin"))
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + CLOSE_WITHIN_S
            status = 200
            while status == 200 and loop.time() < deadline:  # bounded by CLOSE_WITHIN_S
                await asyncio.sleep(0.5)
                async with session.get(f"{base}/api/v1/me", headers=bearer) as r:
                    status = r.status
            assert status == 401
        finally:
            slapd.modify(enable_ldif("erin"))
