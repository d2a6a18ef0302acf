"""TAK Server's streaming WebSocket ``/takproto/1`` (issue 9.10): binary messages of TAK protocol
v1 stream frames, encoded and decoded by takproto, exchanged with a pytak client on 8089; the same
session as 8089 (groups, replay, revocation)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import takproto

from liaison.app import Server
from liaison.cli import main
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from tests.integration.conftest import ServerFactory
from tests.integration.helpers import WAIT_S, Client, clients, connect_tls, sa_event
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


def _wss(url: str) -> str:
    return url.replace("https://", "wss://", 1)


def _stream_frame(xml: bytes) -> bytes:
    """What pytak's WSTXWorker sends: takproto's STREAM encoding (0xBF, varint length, payload)."""
    return bytes(takproto.xml2proto(xml, takproto.TAKProtoVer.STREAM))


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A protobuf varint at ``pos``: (value, end)."""
    value = shift = 0
    for i in range(10):
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise AssertionError("varint too long")


async def _uids(ws: aiohttp.ClientWebSocketResponse, quiet_s: float) -> list[str]:
    """Uids of the events received until nothing comes for ``quiet_s``; each binary message must
    be exactly one stream frame."""
    uids: list[str] = []
    for _ in range(1000):  # bounded
        try:
            msg = await ws.receive(timeout=quiet_s)
        except TimeoutError:
            break
        assert msg.type is aiohttp.WSMsgType.BINARY, msg
        data = bytes(msg.data)
        assert data[0] == 0xBF
        parsed = takproto.parse_proto(data)
        assert parsed is not None and parsed != -1
        # exactly one frame per message: its varint length covers the rest of the message
        length, end = _varint(data, 1)
        assert end + length == len(data)
        uids.append(parsed.cotEvent.uid)
    return uids


async def _wait_uid(ws: aiohttp.ClientWebSocketResponse, uid: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while loop.time() < deadline:
        if uid in await _uids(ws, 0.3):
            return
    raise AssertionError(f"{uid} never arrived on the WebSocket")


async def _close_of(ws: aiohttp.ClientWebSocketResponse, within: float) -> tuple[int, str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for _ in range(1000):  # bounded
        msg = await ws.receive(timeout=max(0.0, deadline - loop.time()))
        if msg.type is aiohttp.WSMsgType.CLOSE:
            return int(msg.data), str(msg.extra)
    raise AssertionError("no close frame")


async def _tls(server: Server, cert: object, name: str) -> Client:
    assert server.tls is not None
    return await connect_tls(
        server.tls.port,
        cert=cert.cert,  # type: ignore[attr-defined]
        key=cert.key,  # type: ignore[attr-defined]
        ca=cert.ca,  # type: ignore[attr-defined]
        name=name,
    )


async def test_takproto_websocket_is_a_tak_stream_client_on_8443(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "wsred", "RED", ["red"])
        c = certs(server, ("red1", "RED"), ("wsred", "RED"), ("wsblue", "BLUE"))
        red1 = await _tls(server, c["red1"], "red1")
        async with (
            clients(red1),
            cert_session(server, c["wsred"]) as red_http,
            cert_session(server, c["wsblue"]) as blue_http,
        ):
            # Known before the WebSocket connects: replayed to it, as to an 8089 client.
            await red1.send(sa_event("ANDROID-red1", "RED1"))
            await red1.wait_for(b"t-x-takp-v")  # red1's own session is up
            await asyncio.sleep(0.2)
            url = _wss(https_url(server, "/takproto/1"))
            ws = await red_http.ws_connect(url)
            blue = await blue_http.ws_connect(url)
            # No XML and no negotiation offer: the first thing is the replay, in protobuf.
            assert await _uids(ws, 0.5) == ["ANDROID-red1"]
            assert await _uids(blue, 0.3) == []  # RED's unit is not BLUE's

            # WebSocket -> 8089: a takproto-encoded report reaches the pytak client.
            await ws.send_bytes(_stream_frame(sa_event("WS-wsred", "WSRED")))
            got = await red1.wait_for(b"WS-wsred")
            assert b'callsign="WSRED"' in got
            # 8089 -> WebSocket: one binary message per event, parsed by takproto.
            await red1.send(sa_event("ANDROID-red1", "RED1", lat=51.0, lon=31.0))
            await _wait_uid(ws, "ANDROID-red1")
            # Ping is answered on the socket, as on 8089.
            ping = sa_event("WS-wsred-ping", "WSRED", cot_type="t-x-c-t")
            await ws.send_bytes(_stream_frame(ping))
            await _wait_uid(ws, "takPong")
            # Groups hold: BLUE saw none of it.
            assert await _uids(blue, 0.3) == []
            assert server.metrics.snapshot().get('liaison_connections_total{listener="ws"}') == 2

            # A text message is refused: 1003, as TAK Server does.
            await blue.send_str("<event/>")
            assert await _close_of(blue, WAIT_S) == (1003, "text messages are not supported")
            await blue.close()

            # Revocation by the CLI closes the WebSocket session within a second, as on 8089.
            where = ["--data-dir", str(server.config.data_dir), "--public-host", "localhost"]
            assert await asyncio.to_thread(main, ["user", "revoke", "wsred", *where]) == 0
            revoked = time.monotonic()
            assert await _close_of(ws, 2.0) == (4403, "revoked")
            assert time.monotonic() - revoked < 1.0
            await ws.close()
        snap = server.metrics.snapshot()
        assert snap.get('liaison_input_rejected_total{reason="ws_text"}') == 1
        assert snap.get('liaison_sessions_closed_total{reason="revoked"}') == 1


async def test_takproto_websocket_with_a_web_sign_in_on_8446(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        c = certs(server, ("red1", "RED"))
        red1 = await _tls(server, c["red1"], "red1")
        async with clients(red1), browser_session(server) as http:
            url = _wss(enroll_url(server, "/takproto/1"))
            # Without a sign-in the upgrade is refused with the JSON 401.
            try:
                await http.ws_connect(url)
                raise AssertionError("an anonymous /takproto/1 was accepted")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 401
            body = {"username": "webred", "password": PASSWORD}
            async with http.post(enroll_url(server, "/login"), json=body) as r:
                csrf = (await r.json())["csrf"]
            ws = await http.ws_connect(url)
            await red1.wait_for(b"t-x-takp-v")
            await red1.send(sa_event("ANDROID-red1", "RED1"))
            await _wait_uid(ws, "ANDROID-red1")
            await ws.send_bytes(_stream_frame(sa_event("WEB-webred", "WEBRED")))
            await red1.wait_for(b"WEB-webred")
            # Signing out ends it at once.
            async with http.post(enroll_url(server, "/logout"), headers={"X-CSRF-Token": csrf}):
                pass
            assert await _close_of(ws, 1.0) == (4401, "signed out")
            await ws.close()


@dataclass(frozen=True)
class _Source:
    principal: Principal


async def test_takproto_slow_consumer_is_closed(start_server: ServerFactory) -> None:
    limit = 50
    async with start_server(max_pending=limit) as server:
        c = certs(server, ("slow", "RED"))
        async with cert_session(server, c["slow"]) as http:
            ws = await http.ws_connect(_wss(https_url(server, "/takproto/1")))
            # More events than may wait for it, in one loop turn: the 8089 slow-consumer rule.
            source = _Source(Principal(name="feeder"))
            for i in range(limit + 1):
                marker = sa_event(f"marker-{i}", f"M{i}", cot_type="b-m-p-s-p-i")
                server.router.publish(cot_xml.parse_event(marker), source)
            assert await _close_of(ws, WAIT_S) == (1013, "slow consumer")
            await ws.close()
            key = 'liaison_sessions_closed_total{reason="slow_consumer"}'
            assert server.metrics.snapshot().get(key) == 1


async def test_takproto_sockets_are_closed_at_shutdown(start_server: ServerFactory) -> None:
    async with start_server() as server:
        c = certs(server, ("last", "RED"))
        async with cert_session(server, c["last"]) as h2:
            # At shutdown an open socket is told 1001 and the server does not wait for it.
            last = await h2.ws_connect(_wss(https_url(server, "/takproto/1")))
            assert server.http_runtime is not None
            loop = asyncio.get_running_loop()
            stopping = loop.time()
            closing = asyncio.create_task(server.http_runtime.close())
            assert await _close_of(last, WAIT_S) == (1001, "server shutdown")
            await asyncio.wait_for(closing, WAIT_S)
            assert loop.time() - stopping < 5.0
            await last.close()
