"""The web map's live feed ends with what let it open: sign-out, expiry, revocation (issue 9.5).

Real aiohttp WebSocket clients against a running server; the revocation is the CLI's, run as it
would be from another shell (it only writes files the server watches).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from liaison.api import auth
from liaison.app import Server
from liaison.cli import main
from tests.integration.conftest import ServerFactory
from tests.integration.helpers import WAIT_S, clients, connect_tls, sa_event
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

# The bound: every long-lived answer of a principal closes within this many seconds.
CLOSE_WITHIN_S = 1.0


async def _login(server: Server, http: aiohttp.ClientSession, name: str) -> str:
    body = {"username": name, "password": PASSWORD}
    async with http.post(enroll_url(server, "/login"), json=body) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["csrf"])


async def _snapshot(ws: aiohttp.ClientWebSocketResponse) -> None:
    msg = await ws.receive(timeout=WAIT_S)
    assert msg.type is aiohttp.WSMsgType.TEXT
    assert json.loads(msg.data)["kind"] == "snapshot"


async def _close_of(ws: aiohttp.ClientWebSocketResponse, within: float) -> tuple[int, str]:
    """Read until the server's close frame; (code, reason). Fails after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for _ in range(10_000):  # bounded: at most this many messages before the close
        msg = await ws.receive(timeout=max(0.0, deadline - loop.time()))
        if msg.type is aiohttp.WSMsgType.CLOSE:
            return int(msg.data), str(msg.extra)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
    raise AssertionError("no close frame")


async def _cli(server: Server, *args: str) -> None:
    where = ["--data-dir", str(server.config.data_dir), "--public-host", "localhost"]
    assert await asyncio.to_thread(main, [*args, *where]) == 0


async def test_sign_out_closes_the_feed_at_once(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        async with browser_session(server) as http:
            csrf = await _login(server, http, "webred")
            other = await http.ws_connect(enroll_url(server, "/api/v1/stream"))
            async with http.ws_connect(enroll_url(server, "/api/v1/stream")) as ws:
                await _snapshot(ws)
                await _snapshot(other)
                async with http.post(
                    enroll_url(server, "/logout"), headers={"X-CSRF-Token": csrf}
                ) as r:
                    assert r.status == 204
                started = time.monotonic()
                assert await _close_of(ws, CLOSE_WITHIN_S) == (4401, "signed out")
                assert await _close_of(other, CLOSE_WITHIN_S) == (4401, "signed out")
                assert time.monotonic() - started < CLOSE_WITHIN_S
            await other.close()
        key = 'liaison_ws_closed_total{reason="signed_out"}'
        assert server.metrics.snapshot().get(key) == 2


async def test_an_expired_sign_in_closes_its_feed(
    start_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lifetime = 1.5
    monkeypatch.setattr(auth, "SESSION_MAX_S", lifetime)
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        async with browser_session(server) as http:
            await _login(server, http, "webred")
            signed_in = time.monotonic()
            async with http.ws_connect(enroll_url(server, "/api/v1/stream")) as ws:
                await _snapshot(ws)
                code, reason = await _close_of(ws, lifetime + CLOSE_WITHIN_S + 0.5)
                closed_after = time.monotonic() - signed_in
            assert (code, reason) == (4401, "session expired")
            assert lifetime <= closed_after < lifetime + CLOSE_WITHIN_S
            async with http.get(enroll_url(server, "/api/v1/me")) as r:
                assert r.status == 401


async def test_cli_revocation_closes_feeds_on_both_listeners(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        cert = certs(server, ("webred", "RED"), ("red1", "RED"))
        assert server.tls is not None
        feeder = await connect_tls(
            server.tls.port, cert=cert["red1"].cert, key=cert["red1"].key, ca=cert["red1"].ca
        )
        async with (
            clients(feeder),
            browser_session(server) as browser,
            cert_session(server, cert["webred"]) as tls_http,
        ):
            await _login(server, browser, "webred")
            by_cookie = await browser.ws_connect(enroll_url(server, "/api/v1/stream"))
            by_cert = await tls_http.ws_connect(https_url(server, "/api/v1/stream"))
            for ws in (by_cookie, by_cert):
                await _snapshot(ws)
            # Both feeds are live: they get a RED unit's report.
            await feeder.send(sa_event("ANDROID-red1", "RED1"))
            for ws in (by_cookie, by_cert):
                msg = await ws.receive(timeout=WAIT_S)
                assert json.loads(msg.data)["kind"] == "update"
            await _cli(server, "user", "revoke", "webred")
            revoked = time.monotonic()
            results = await asyncio.gather(
                _close_of(by_cookie, CLOSE_WITHIN_S + 0.5), _close_of(by_cert, CLOSE_WITHIN_S + 0.5)
            )
            closed_after = time.monotonic() - revoked
            assert results == [(4403, "revoked"), (4403, "revoked")]
            assert closed_after < CLOSE_WITHIN_S
            for ws in (by_cookie, by_cert):
                await ws.close()
        key = 'liaison_ws_closed_total{reason="revoked"}'
        assert server.metrics.snapshot().get(key) == 2
