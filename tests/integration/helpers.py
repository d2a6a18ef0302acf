"""Test clients that speak to a running Liaison the way TAK clients do, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from configparser import ConfigParser
from dataclasses import dataclass, field
from pathlib import Path

import pytak
import takproto

from liaison.protocol.tak_stream import TakStreamFramer
from liaison.protocol.xml_stream import XmlStreamFramer

# Seconds any single wait in an integration test may take before the test fails.
WAIT_S = 10.0


def sa_event(
    uid: str,
    callsign: str,
    *,
    lat: float = 50.45,
    lon: float = 30.52,
    cot_type: str = "a-f-G-U-C",
    stale_s: int = 600,
    extra_detail: str = "",
) -> bytes:
    """An ATAK-style self position report."""
    now = time.time()
    t = pytak.cot_time()
    stale = pytak.cot_time(stale_s)
    del now
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" how="m-g" time="{t}" start="{t}"'
        f' stale="{stale}"><point lat="{lat}" lon="{lon}" hae="120.5" ce="9.9" le="9999999.0"/>'
        f'<detail><contact callsign="{callsign}" endpoint="*:-1:stcp"/>'
        f'<__group name="Cyan" role="Team Member"/>{extra_detail}</detail></event>'
    ).encode()


def chat_event(
    sender_uid: str,
    sender_callsign: str,
    text: str,
    *,
    to_uid: str | None = None,
    to_callsign: str | None = None,
    chatroom: str = "All Chat Rooms",
) -> bytes:
    """A GeoChat message as ATAK sends it: broadcast, or directed with marti/dest."""
    t = pytak.cot_time()
    stale = pytak.cot_time(86400)
    msg_id = uuid.uuid4()
    dest = ""
    if to_uid:
        dest = f'<marti><dest uid="{to_uid}"/></marti>'
    elif to_callsign:
        dest = f'<marti><dest callsign="{to_callsign}"/></marti>'
    return (
        f'<event version="2.0" uid="GeoChat.{sender_uid}.{chatroom}.{msg_id}" type="b-t-f"'
        f' how="h-g-i-g-o" time="{t}" start="{t}" stale="{stale}">'
        f'<point lat="0" lon="0" hae="9999999.0" ce="9999999.0" le="9999999.0"/><detail>'
        f'<__chat parent="RootContactGroup" groupOwner="false" chatroom="{chatroom}"'
        f' id="{chatroom}" senderCallsign="{sender_callsign}">'
        f'<chatgrp uid0="{sender_uid}" uid1="{to_uid or chatroom}" id="{chatroom}"/></__chat>'
        f'<link uid="{sender_uid}" type="a-f-G-U-C" relation="p-p"/>'
        f'<remarks source="BAO.F.ATAK.{sender_uid}" time="{t}">{text}</remarks>{dest}'
        f"</detail></event>"
    ).encode()


def delete_event(target_uid: str) -> bytes:
    t = pytak.cot_time()
    stale = pytak.cot_time(20)
    return (
        f'<event version="2.0" uid="{uuid.uuid4()}" type="t-x-d-d" how="h-g-i-g-o" time="{t}"'
        f' start="{t}" stale="{stale}"><point lat="0" lon="0" hae="0" ce="9999999" le="9999999"/>'
        f'<detail><link uid="{target_uid}" relation="none" type="none"/><__forcedelete/></detail>'
        f"</event>"
    ).encode()


@dataclass
class Client:
    """A connected TAK stream client (built on pytak's connection factory)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    name: str = "client"
    proto: bool = False
    frames: list[bytes] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)  # every byte the server sent
    _xml: XmlStreamFramer = field(default_factory=XmlStreamFramer)
    _pb: TakStreamFramer = field(default_factory=TakStreamFramer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _read_more(self, wait_s: float) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(65536), wait_s)
        except TimeoutError:
            return False
        if not data:
            raise ConnectionError(f"{self.name}: connection closed by server")
        self.raw += data
        if self.proto:
            for payload in self._pb.receive_data(data):
                msg = takproto.parse_proto(b"\xbf\x01\xbf" + payload)
                self.frames.append(msg.SerializeToString())
        else:
            self.frames.extend(self._xml.receive_data(data))
        return True

    async def wait_for(self, needle: bytes, within: float = WAIT_S) -> bytes:
        """Read until a frame containing ``needle`` arrives; return it (consumed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            for i, frame in enumerate(self.frames):
                if needle in frame:
                    del self.frames[i]
                    return frame
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no frame with {needle!r} within {within}s")
            await self._read_more(remaining)

    async def collect(self, quiet_s: float = 0.5, limit_s: float = WAIT_S) -> list[bytes]:
        """Read until nothing arrives for ``quiet_s``; return and clear everything received."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while loop.time() < deadline:
            if not await self._read_more(quiet_s):
                break
        frames, self.frames = self.frames, []
        return frames

    async def closed_by_server(self, within: float = WAIT_S) -> bool:
        """True when the server closes the connection within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), deadline - loop.time())
            except TimeoutError:
                return False
            except (ConnectionError, OSError):
                return True
            if not data:
                return True
        return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


def _pytak_config(url: str, **extra: str) -> ConfigParser:
    cp = ConfigParser()
    cp["test"] = {"COT_URL": url, **extra}
    return cp


async def connect_tcp(port: int, name: str = "tcp-client") -> Client:
    cp = _pytak_config(f"tcp://127.0.0.1:{port}")
    reader, writer = await asyncio.wait_for(pytak.protocol_factory(cp["test"]), WAIT_S)
    return Client(reader=reader, writer=writer, name=name)


async def connect_tls(
    port: int, *, cert: Path, key: Path, ca: Path, name: str = "tls-client"
) -> Client:
    cp = _pytak_config(
        f"tls://127.0.0.1:{port}",
        PYTAK_TLS_CLIENT_CERT=str(cert),
        PYTAK_TLS_CLIENT_KEY=str(key),
        PYTAK_TLS_CLIENT_CAFILE=str(ca),
        PYTAK_TLS_SERVER_EXPECTED_HOSTNAME="localhost",
    )
    reader, writer = await asyncio.wait_for(pytak.protocol_factory(cp["test"]), WAIT_S)
    return Client(reader=reader, writer=writer, name=name)


async def negotiate_protobuf(client: Client) -> None:
    """Do the TAK protocol v1 handshake as protocol.txt describes it, from the client side."""
    offer = await client.wait_for(b"t-x-takp-v")
    uid = offer.split(b'uid="', 1)[1].split(b'"', 1)[0].decode()
    t = pytak.cot_time()
    stale = pytak.cot_time(60)
    request = (
        f'<event version="2.0" uid="{uid}" type="t-x-takp-q" how="m-g" time="{t}" start="{t}"'
        f' stale="{stale}"><point lat="0.0" lon="0.0" hae="0.0" ce="999999" le="999999"/>'
        f'<detail><TakControl><TakRequest version="1"/></TakControl></detail></event>'
    ).encode()
    await client.send(request)
    response = await client.wait_for(b"t-x-takp-r")
    assert b'status="true"' in response
    client.proto = True
    # Anything still buffered after the response is protobuf.
    leftover = client._xml.take_buffer()
    client._pb.feed(leftover)
    for payload in iter(client._pb.next_frame, None):
        msg = takproto.parse_proto(b"\xbf\x01\xbf" + payload)
        client.frames.append(msg.SerializeToString())


def proto_frame(xml: bytes) -> bytes:
    """An XML event as a TAK protocol v1 stream frame, encoded by takproto (a real TAK library)."""
    return bytes(takproto.xml2proto(xml, takproto.TAKProtoVer.STREAM))


@contextlib.asynccontextmanager
async def clients(*cs: Client) -> AsyncIterator[tuple[Client, ...]]:
    try:
        yield cs
    finally:
        for c in cs:
            await c.close()
