"""Web sign-in, the session cookie and CSRF token, chat from the web, and the WebSocket feed."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from liaison.api import rest
from liaison.api import web as web_pages
from liaison.api.ws import WS_MAX_PENDING
from liaison.app import Server, now_ms
from liaison.model.principal import Principal
from tests.integration.conftest import ServerFactory
from tests.integration.helpers import (
    WAIT_S,
    Client,
    chat_event,
    clients,
    connect_tls,
    delete_event,
    sa_event,
)
from tests.integration.http.http_support import (
    PASSWORD,
    add_user,
    browser_session,
    cert_session,
    certs,
    enroll_url,
    https_url,
    wait_until,
    write_groups,
)
from tests.integration.test_postgresql_app import database_url  # noqa: F401 - fixture


async def _connect(server: Server, cert: Any, name: str) -> Client:
    assert server.tls is not None
    return await connect_tls(server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name)


async def _login(server: Server, http: aiohttp.ClientSession, name: str) -> str:
    async with http.post(
        enroll_url(server, "/login"), json={"username": name, "password": PASSWORD}
    ) as r:
        assert r.status == 200, await r.text()
        doc = await r.json()
        cookie = r.cookies["liaison_session"]
    assert doc["name"] == name
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Strict"
    return str(doc["csrf"])


async def test_sign_in_session_csrf_and_sign_out(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        async with browser_session(server) as http:
            # Not signed in: pages redirect to the sign-in page, the API answers 401.
            async with http.get(enroll_url(server, "/"), allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/login"
            async with http.get(enroll_url(server, "/api/v1/me")) as r:
                assert r.status == 401
            async with http.get(enroll_url(server, "/login")) as r:
                assert r.status == 200 and r.content_type == "text/html"
                assert "<form" in (await r.text()).lower()
            async with http.post(
                enroll_url(server, "/login"), json={"username": "webred", "password": "wrong!"}
            ) as r:
                assert r.status == 401

            csrf = await _login(server, http, "webred")
            async with http.get(enroll_url(server, "/api/v1/me")) as r:
                me = await r.json()
            assert me["name"] == "webred" and me["org"] == "RED"
            assert me["groups"] == ["red"] and me["csrf"] == csrf and me["clearance"] is None
            async with http.get(enroll_url(server, "/"), allow_redirects=False) as r:
                assert r.status == 200 and r.content_type == "text/html"

            # State-changing calls need the CSRF token from the session.
            body = {"text": "hello from the map"}
            async with http.post(enroll_url(server, "/api/v1/chat"), json=body) as r:
                assert r.status == 403
            headers = {"X-CSRF-Token": csrf}
            async with http.post(
                enroll_url(server, "/api/v1/chat"), json=body, headers=headers
            ) as r:
                assert r.status == 201
            # A cross-site request is refused even with the token.
            cross = {**headers, "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
            async with http.post(enroll_url(server, "/api/v1/chat"), json=body, headers=cross) as r:
                assert r.status == 403
            # A form post (what a cross-site page could send without a preflight) is refused.
            async with http.post(
                enroll_url(server, "/api/v1/chat"), data={"text": "x"}, headers=headers
            ) as r:
                assert r.status == 415

            async with http.post(enroll_url(server, "/logout"), headers=headers) as r:
                assert r.status == 204
            async with http.get(enroll_url(server, "/api/v1/me")) as r:
                assert r.status == 401

        # The form flow: a redirect to the map with the cookie set; a wrong password goes back.
        async with browser_session(server) as http:
            form = {"username": "webred", "password": PASSWORD}
            async with http.post(
                enroll_url(server, "/login"), data=form, allow_redirects=False
            ) as r:
                assert r.status == 303 and r.headers["Location"] == "/"
            async with http.get(enroll_url(server, "/api/v1/me")) as r:
                assert (await r.json())["name"] == "webred"
        async with browser_session(server) as http:
            form = {"username": "webred", "password": "not it"}
            async with http.post(
                enroll_url(server, "/login"), data=form, allow_redirects=False
            ) as r:
                assert r.status == 303 and r.headers["Location"] == "/login?failed=1"


async def test_static_files_and_caching(start_server: ServerFactory, tmp_path: Path) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        c = certs(server, ("red1", "RED"))
        async with cert_session(server, c["red1"]) as http:
            async with http.get(https_url(server, "/")) as r:
                assert r.status == 200 and r.content_type == "text/html"
                assert r.headers["Cache-Control"] == "no-cache"
                assert r.headers["X-Frame-Options"] == "DENY"
                etag = r.headers["ETag"]
            async with http.get(https_url(server, "/"), headers={"If-None-Match": etag}) as r:
                assert r.status == 304
            async with http.get(https_url(server, "/static/favicon.svg")) as r:
                assert r.status == 200 and r.content_type == "image/svg+xml"
                assert r.headers["Cache-Control"] == "no-cache"
            assets = web_pages.static_root().joinpath("assets")
            built = sorted(a.name for a in assets.iterdir()) if assets.is_dir() else []
            if built:  # the web build's hashed files are cached for good
                async with http.get(https_url(server, f"/static/assets/{built[0]}")) as r:
                    assert r.status == 200
                    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            for bad in ("/static/../__init__.py", "/static/%2e%2e/__init__.py", "/static/nope.js"):
                async with http.get(https_url(server, bad)) as r:
                    assert r.status == 404, bad


async def test_web_chat_reaches_tak_clients_of_its_group(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        c = certs(server, ("red1", "RED"), ("red2", "RED"), ("blue1", "BLUE"))
        conns = {n: await _connect(server, c[n], n) for n in c}
        async with clients(*conns.values()), browser_session(server) as http:
            await conns["red1"].send(sa_event("ANDROID-red1", "RED1"))
            await conns["red2"].send(sa_event("ANDROID-red2", "RED2"))
            await conns["red1"].wait_for(b"ANDROID-red2")
            await conns["red2"].wait_for(b"ANDROID-red1")
            csrf = await _login(server, http, "webred")
            headers = {"X-CSRF-Token": csrf}
            async with http.post(
                enroll_url(server, "/api/v1/chat"),
                json={"text": "web to all <&>"},
                headers=headers,
            ) as r:
                assert r.status == 201
                sent = await r.json()
            assert sent["message"]["text"] == "web to all <&>"
            assert sent["message"]["sender_uid"] == "liaison-web-webred"
            assert sent["delivered"] == 2
            for n in ("red1", "red2"):
                got = await conns[n].wait_for(b"web to all")
                assert b'type="b-t-f"' in got and b"web to all &lt;&amp;&gt;" in got
                assert b'senderCallsign="webred"' in got and b'chatroom="All Chat Rooms"' in got
            assert not any(b"b-t-f" in f for f in await conns["blue1"].collect(0.3))

            # Directed: only the named client gets it, without the marti/dest element.
            async with http.post(
                enroll_url(server, "/api/v1/chat"),
                json={"text": "just for red2", "to_callsign": "RED2"},
                headers=headers,
            ) as r:
                assert r.status == 201
            got = await conns["red2"].wait_for(b"just for red2")
            assert b"<dest" not in got
            assert not any(b"just for red2" in f for f in await conns["red1"].collect(0.3))

            # A TAK client's chat and the web's own show in the web's chat history.
            await conns["red1"].send(chat_event("ANDROID-red1", "RED1", "tak to all"))
            await conns["red2"].wait_for(b"tak to all")
            await server.writer.flush()
            async with http.get(enroll_url(server, "/api/v1/chat")) as r:
                messages = (await r.json())["messages"]
            texts = [m["text"] for m in messages]
            assert texts == ["web to all <&>", "just for red2", "tak to all"]
            assert messages[2]["sender_uid"] == "ANDROID-red1"
            assert messages[2]["chatroom"] == "All Chat Rooms"


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next message of ``kind``, skipping others (bounded by WAIT_S)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no {kind} message within {WAIT_S}s")
        msg = await ws.receive(timeout=remaining)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        doc: dict[str, Any] = json.loads(msg.data)
        if doc["kind"] == kind:
            return doc


async def _quiet(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (remaining := deadline - loop.time()) > 0:
        try:
            msg = await ws.receive(timeout=remaining)
        except TimeoutError:
            break
        got.append(json.loads(msg.data))
    return got


async def test_websocket_snapshot_update_delete_and_chat(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        c = certs(server, ("red1", "RED"), ("blue1", "BLUE"), ("webviewer", "RED"))
        conns = {n: await _connect(server, c[n], n) for n in ("red1", "blue1")}
        async with clients(*conns.values()), cert_session(server, c["webviewer"]) as http:
            await conns["red1"].send(sa_event("ANDROID-red1", "RED1", lat=50.0, lon=30.0))
            await conns["red1"].send(sa_event("marker-red", "Obj", cot_type="a-h-G"))
            await conns["blue1"].send(sa_event("ANDROID-blue1", "BLUE1"))
            await wait_until(lambda: len(server.router.latest_entries()) == 3, "3 items")
            async with http.ws_connect(https_url(server, "/api/v1/stream")) as ws:
                snapshot = await _next(ws, "snapshot")
                assert {f["id"] for f in snapshot["features"]} == {"ANDROID-red1", "marker-red"}
                await conns["red1"].send(sa_event("ANDROID-red1", "RED1", lat=50.5, lon=30.5))
                update = await _next(ws, "update")
                assert update["feature"]["id"] == "ANDROID-red1"
                assert update["feature"]["geometry"]["coordinates"][:2] == [30.5, 50.5]
                await conns["red1"].send(delete_event("marker-red"))
                assert (await _next(ws, "delete"))["uid"] == "marker-red"
                await conns["red1"].send(chat_event("ANDROID-red1", "RED1", "over the feed"))
                chat = await _next(ws, "chat")
                assert chat["message"]["text"] == "over the feed"
                assert chat["message"]["sender_uid"] == "ANDROID-red1"
                # Nothing from BLUE ever reaches this feed.
                await conns["blue1"].send(sa_event("ANDROID-blue1", "BLUE1", lat=1.0, lon=1.0))
                await conns["blue1"].send(chat_event("ANDROID-blue1", "BLUE1", "blue secret"))
                rest = await _quiet(ws, 0.5)
                assert "blue" not in json.dumps(rest).lower()
            # The subscription is gone once the socket closes.
            await wait_until(
                lambda: (
                    not any(
                        s.client_uid == "liaison-web-webviewer" for s in server.router.subscribers
                    )
                ),
                "the feed's subscription detached",
            )
        snap = server.metrics.snapshot()
        assert snap["liaison_ws_connections_total"] == 1


async def test_websocket_refuses_cross_site_origin(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        c = certs(server, ("red1", "RED"))
        async with cert_session(server, c["red1"]) as http:
            try:
                async with http.ws_connect(
                    https_url(server, "/api/v1/stream"), origin="https://evil.example"
                ):
                    raise AssertionError("cross-site WebSocket was accepted")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 403
            assert server.https is not None
            same = f"https://localhost:{server.https.port}"
            async with http.ws_connect(https_url(server, "/api/v1/stream"), origin=same) as ws:
                assert (await _next(ws, "snapshot"))["features"] == []


async def test_a_feed_that_falls_too_far_behind_is_closed(start_server: ServerFactory) -> None:
    async with start_server() as server:
        c = certs(server, ("slow", "RED"))
        async with (
            cert_session(server, c["slow"]) as http,
            http.ws_connect(https_url(server, "/api/v1/stream")) as ws,
        ):
            await _next(ws, "snapshot")
            source = _Source(Principal(name="feeder"))
            # More non-coalescing events than a socket may have waiting, in one loop turn,
            # so none can be written meanwhile: the router must not wait, the feed is closed.
            for i in range(WS_MAX_PENDING + 1):
                chat = rest.build_chat(
                    sender_uid="feeder", callsign="F", text=f"n{i}", now_ms=now_ms()
                )
                server.router.publish(chat, source)
            msg = await ws.receive(timeout=WAIT_S)
            while msg.type is aiohttp.WSMsgType.TEXT:
                msg = await ws.receive(timeout=WAIT_S)
            assert msg.type is aiohttp.WSMsgType.CLOSE
            assert msg.data == aiohttp.WSCloseCode.TRY_AGAIN_LATER
        key = 'liaison_ws_closed_total{reason="slow_consumer"}'
        await wait_until(lambda: server.metrics.snapshot().get(key) == 1, "slow consumer counted")


@dataclass(frozen=True)
class _Source:
    principal: Principal


async def test_a_sign_out_the_shared_table_cannot_take_answers_503_and_still_signs_out(
    start_server: ServerFactory,
    database_url: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """PostgreSQL storage: a successful sign-out deletes the rows (a cookie copied to a new
    browser is refused); one whose rows cannot be deleted answers 503 with Retry-After, clears
    the cookie, is counted, and the cookie is refused afterwards all the same."""
    import asyncpg
    from yarl import URL

    from liaison.identity.users import UserDirectory

    async with start_server(
        groups_file=str(write_groups(tmp_path)), storage=database_url
    ) as server:
        assert server.server_pki is not None and server.server_pki.db is not None
        users = UserDirectory.in_database(server.server_pki.db)
        await asyncio.to_thread(users.add_user, "webred", "RED", groups=["red"], password=PASSWORD)

        async def me_status(cookie: str) -> int:
            async with browser_session(server) as fresh:
                fresh.cookie_jar.update_cookies(
                    {"liaison_session": cookie}, response_url=URL(enroll_url(server, "/"))
                )
                async with fresh.get(enroll_url(server, "/api/v1/me")) as r:
                    return r.status

        async with browser_session(server) as http:
            csrf = await _login(server, http, "webred")
            cookie = http.cookie_jar.filter_cookies(URL(enroll_url(server, "/")))
            token = cookie["liaison_session"].value
            async with http.post(
                enroll_url(server, "/logout"), headers={"X-CSRF-Token": csrf}
            ) as r:
                assert r.status == 204
            assert server.server_pki.db.session_get(token) is None
            assert await me_status(token) == 401

        admin = await asyncpg.connect(database_url, timeout=5)
        try:
            await admin.execute(
                "CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS"
                " $$BEGIN RAISE EXCEPTION 'deletes refused by the test'; END$$"
            )
            await admin.execute(
                "CREATE TRIGGER refuse_delete BEFORE DELETE ON identity_sessions"
                " FOR EACH ROW EXECUTE FUNCTION refuse_delete()"
            )
        finally:
            await admin.close()
        async with browser_session(server) as http:
            csrf = await _login(server, http, "webred")
            cookie = http.cookie_jar.filter_cookies(URL(enroll_url(server, "/")))
            token = cookie["liaison_session"].value
            async with http.post(
                enroll_url(server, "/logout"), headers={"X-CSRF-Token": csrf}
            ) as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == str(web_pages.LOGOUT_RETRY_S)
                assert "error" in await r.json()
                assert r.cookies["liaison_session"].value == ""  # cleared
            assert server.metrics.snapshot()["liaison_http_logout_unavailable_total"] == 1
            assert server.server_pki.db.session_get(token) is not None  # the row stayed
            assert await me_status(token) == 401
            # Signing in again works.
            await _login(server, http, "webred")
            async with http.get(enroll_url(server, "/api/v1/me")) as r:
                assert r.status == 200
