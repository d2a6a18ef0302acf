"""A small TAK federation v1 peer for tests, written from shared/reference/tak-federation.md
(sections 2, 5 and 12), playing a TAK Server on either side of a v1 link.

Independent of Liaison's v1 code: its own framing (section 12: a 4-byte big-endian length, then
exactly that many bytes of a serialized ``FederatedEvent``), its own TLS (mutual; it records the
SHA-256 of the leaf certificate the other side presents and how many certificates that side
sent, since TAK reads the issuing CA at index 1, section 2.1) and its own CoT -> ``GeoEvent``
conversion (section 5.1: times in ms, point as doubles, ``track``/``status``/
``precisionlocation`` moved to their fields, the rest of ``<detail>`` in ``other``). Only the
message classes generated from the schema are shared.

It listens (Liaison dials it) or dials (Liaison's federation listener); everything it receives
is kept as raw frame payloads (``received``), so a test decodes exactly what crossed. As TAK
does (section 12), it closes a connection on a frame that does not parse, and on connect it can
send its own latest state (``on_connect``). ``kill`` ends the connection abruptly (reset, the
unread bytes lost), as a crashed server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import struct
import tempfile
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

from liaison.federation.proto import fig_pb2

# Largest frame this peer reads (TAK allows far more; tests never need it).
MAX_FRAME = 4 * 1024 * 1024
# Events a test may queue for the peer to send.
MAX_QUEUED = 1000


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def cot_to_federated(xml: bytes) -> fig_pb2.FederatedEvent:
    """A CoT event as TAK Server's sender puts it in a FederatedEvent (section 5.1)."""
    root = ET.fromstring(xml)
    geo = fig_pb2.GeoEvent(
        sendTime=_ms(root.get("time", "")),
        startTime=_ms(root.get("start", "")),
        staleTime=_ms(root.get("stale", "")),
        uid=root.get("uid", ""),
        type=root.get("type", ""),
        coordSource=root.get("how", ""),
    )
    for attr, field in (
        ("access", "access"),
        ("caveat", "caveat"),
        ("releasableTo", "releaseableTo"),
    ):
        if root.get(attr):
            setattr(geo, field, root.get(attr))
    point = root.find("point")
    if point is not None:
        for name in ("lat", "lon", "hae", "ce", "le"):
            try:
                setattr(geo, name, float(point.get(name, "0")))
            except ValueError:
                setattr(geo, name, 999999.0 if name in ("ce", "le") else 0.0)
    detail = root.find("detail")
    if detail is None:
        detail = ET.Element("detail")
    for child in list(detail):
        a = child.attrib
        if child.tag == "track" and "speed" in a and "course" in a:
            geo.speed, geo.course = float(a["speed"]), float(a["course"])
            detail.remove(child)
        elif child.tag == "status" and "battery" in a and "readiness" not in a:
            geo.battery = int(float(a["battery"]))
            detail.remove(child)
        elif child.tag == "precisionlocation" and "geopointsrc" in a and "altsrc" in a:
            geo.ploc, geo.palt = a["geopointsrc"], a["altsrc"]
            detail.remove(child)
    geo.other = ET.tostring(detail, encoding="unicode")
    return fig_pb2.FederatedEvent(event=geo)


def _chain_length(writer: asyncio.StreamWriter) -> int | None:
    """How many certificates the other side presented (CPython's private accessor, 3.10+)."""
    obj = writer.get_extra_info("ssl_object")
    inner = getattr(obj, "_sslobj", None)
    getter = getattr(inner, "get_unverified_chain", None)
    if getter is None:
        return None
    with contextlib.suppress(Exception):
        return len(getter())
    return None


class TakV1Peer:
    def __init__(
        self, on_connect: list[fig_pb2.FederatedEvent] | None = None, frame_delay: float = 0.0
    ) -> None:
        # Seconds the peer spends on each frame it reads (a busy server), so that frames wait
        # unread in its socket while the stream runs.
        self.frame_delay = frame_delay
        self.received: list[bytes] = []  # FederatedEvent payloads, in arrival order
        self.connections = 0
        self.fingerprints: set[str] = set()  # SHA-256 of the other side's leaf
        self.chain_lengths: list[int | None] = []
        self.closed_reasons: list[str] = []
        self.on_connect = on_connect or []
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._files = tempfile.TemporaryDirectory(prefix="takv1peer-")
        self.port = 0

    # --- TLS ------------------------------------------------------------------------------------

    def _context(self, side: int, chain: bytes, key: bytes, ca: bytes) -> ssl.SSLContext:
        folder = Path(self._files.name)
        (folder / "chain.pem").write_bytes(chain)
        (folder / "key.pem").write_bytes(key)
        (folder / "ca.pem").write_bytes(ca)
        ctx = ssl.SSLContext(side)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # <v1Tls> default: 1.2 and 1.3
        ctx.load_cert_chain(folder / "chain.pem", folder / "key.pem")
        ctx.load_verify_locations(folder / "ca.pem")
        ctx.verify_mode = ssl.CERT_REQUIRED
        if side == ssl.PROTOCOL_TLS_CLIENT:
            ctx.check_hostname = False
        return ctx

    # --- roles ----------------------------------------------------------------------------------

    async def listen(
        self, *, chain: bytes, key: bytes, ca: bytes, port: int = 0, host: str = "127.0.0.1"
    ) -> int:
        """Listen on ``host`` (TAK's federation-server v1 port; any port in tests)."""
        ctx = self._context(ssl.PROTOCOL_TLS_SERVER, chain, key, ca)
        self._server = await asyncio.start_server(self._serve, host, port, ssl=ctx)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def dial(
        self, port: int, *, chain: bytes, key: bytes, ca: bytes, host: str = "127.0.0.1"
    ) -> asyncio.Task[None]:
        """Dial Liaison's federation listener (TAK's federation-outgoing, protocolVersion 1).
        Returns the task serving the connection (done when it ends)."""
        ctx = self._context(ssl.PROTOCOL_TLS_CLIENT, chain, key, ca)
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        self.fingerprints.add(hashlib.sha256(der).hexdigest())
        self.chain_lengths.append(_chain_length(writer))
        self.connections += 1
        self._writer = writer
        for event in self.on_connect:  # section 12: latest SA on connect
            self._write(event.SerializeToString())
        try:
            while True:
                header = await reader.readexactly(4)
                (length,) = struct.unpack(">I", header)
                if length > MAX_FRAME:
                    self.closed_reasons.append("too_large")
                    break
                payload = await reader.readexactly(length)
                if writer.transport.is_closing():
                    # Killed: what was read but not yet handled dies with the process.
                    self.closed_reasons.append("killed")
                    break
                try:
                    fig_pb2.FederatedEvent.FromString(payload)
                except Exception:
                    self.closed_reasons.append("undecodable")  # section 12: closes
                    break
                self.received.append(payload)
                if self.frame_delay:
                    await asyncio.sleep(self.frame_delay)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            self.closed_reasons.append("eof")
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    # --- traffic --------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._writer is not None

    def _write(self, payload: bytes) -> None:
        assert self._writer is not None, "not connected"
        self._writer.write(struct.pack(">I", len(payload)) + payload)

    async def send(self, event: fig_pb2.FederatedEvent) -> None:
        self._write(event.SerializeToString())
        assert self._writer is not None
        await self._writer.drain()

    async def send_raw(self, data: bytes) -> None:
        assert self._writer is not None, "not connected"
        self._writer.write(data)
        await self._writer.drain()

    def decoded(self) -> list[fig_pb2.FederatedEvent]:
        return [fig_pb2.FederatedEvent.FromString(b) for b in self.received]

    def uids(self) -> list[str]:
        return [f.event.uid for f in self.decoded() if f.HasField("event")]

    # --- lifetime -------------------------------------------------------------------------------

    def kill(self) -> None:
        """End the connection and stop listening at once (a reset; unread bytes are lost)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None

    async def stop(self) -> None:
        self.kill()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        self._files.cleanup()
