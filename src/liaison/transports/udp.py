"""UDP CoT input and the optional multicast mesh bridge.

A datagram carries one event, as XML or as a TAK protocol v1 mesh frame (``0xBF 0x01 0xBF`` +
TakMessage; TAK protocol.txt "Mesh" and TAK Server SingleProtobufOrCotProtocol). Datagrams are
anonymous: their principal is the listener's, in ``__ANON__`` unless configured otherwise.

The multicast bridge joins a mesh group (ATAK's SA group is 239.2.3.1:6969, tak-protocol.md
section 3.1): what arrives there is published like any UDP input, and the bridge is itself a
router subscriber, so events from stream clients that the mesh principal may see go out to the
group as XML datagrams. Our own datagrams are not looped back (IP_MULTICAST_LOOP off) and the
router never echoes an event to its source, so nothing circulates.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from typing import cast

from liaison.config import Endpoint
from liaison.errors import PeerError
from liaison.metrics import Counter
from liaison.model.event import WireFormat
from liaison.model.principal import Principal
from liaison.protocol import cot_proto, cot_xml, limits, tak_mesh
from liaison.router import Outgoing, Router, Source

log = logging.getLogger(__name__)

# Hop limit for datagrams we send to the mesh group: 1 keeps them on the local network segment,
# as ATAK's own mesh SA does.
MULTICAST_TTL = 1


class DatagramInput(asyncio.DatagramProtocol):
    """Receives CoT datagrams and publishes them through the router."""

    def __init__(
        self,
        *,
        router: Router,
        principal: Principal,
        rejected: Counter,
        name: str = "udp",
    ) -> None:
        self._router = router
        self._principal = principal
        self._rejected = rejected
        self._name = name
        self.transport: asyncio.DatagramTransport | None = None
        # Set by the multicast bridge so its own subscriber is the source (never echoed back).
        self.source: Source = self

    @property
    def principal(self) -> Principal:
        return self._principal

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if len(data) > limits.MAX_DATAGRAM_BYTES:
            self._rejected.inc("frame_too_large")
            return
        try:
            fmt, payload = tak_mesh.decode_datagram(data)
            if fmt is WireFormat.XML:
                event = cot_xml.parse_event(payload)
            else:
                parsed = cot_proto.parse_proto(payload)
                if parsed is None:
                    return  # a mesh TakControl announcement: nothing to route
                event = parsed
        except PeerError as exc:
            self._rejected.inc(exc.reason)
            log.info("%s %s: datagram refused (%s): %s", self._name, addr[0], exc.reason, exc)
            return
        if event.is_control:
            return
        self._router.publish(event, self.source)

    def error_received(self, exc: Exception) -> None:
        log.warning("%s: socket error: %s", self._name, exc)


async def start_udp_input(
    endpoint: Endpoint, factory: Callable[[], DatagramInput], *, reuse_port: bool = False
) -> tuple[asyncio.DatagramTransport, DatagramInput]:
    """``reuse_port``: SO_REUSEPORT for ``liaison serve --workers N`` (the kernel hands each
    datagram to one worker, by the sender's address and port)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        factory, local_addr=(endpoint.host, endpoint.port), reuse_port=reuse_port
    )
    return transport, protocol


class MulticastBridge:
    """A router subscriber that writes events to a multicast group, paired with its input."""

    def __init__(self, *, group: Endpoint, principal: Principal) -> None:
        self._group = (group.host, group.port)
        self._principal = principal
        self.client_uid: str | None = None
        self.callsign: str | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.sent = 0

    @property
    def principal(self) -> Principal:
        return self._principal

    def deliver(self, out: Outgoing) -> None:
        data = out.xml()
        if self.transport is None or len(data) > limits.MAX_DATAGRAM_BYTES:
            return
        self.transport.sendto(data, self._group)
        self.sent += 1


def multicast_socket(group: Endpoint, interface: str) -> socket.socket:
    """A UDP socket bound to the group's port and joined to the group on ``interface``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", group.port))
    membership = struct.pack("4s4s", socket.inet_aton(group.host), socket.inet_aton(interface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    sock.setblocking(False)
    return sock


async def start_multicast_bridge(
    group: Endpoint,
    interface: str,
    *,
    router: Router,
    principal: Principal,
    rejected: Counter,
) -> tuple[asyncio.DatagramTransport, MulticastBridge]:
    loop = asyncio.get_running_loop()
    bridge = MulticastBridge(group=group, principal=principal)

    def factory() -> DatagramInput:
        proto = DatagramInput(router=router, principal=principal, rejected=rejected, name="mesh")
        proto.source = bridge
        return proto

    transport, _ = await loop.create_datagram_endpoint(
        factory, sock=multicast_socket(group, interface)
    )
    bridge.transport = transport
    router.attach(bridge)
    return transport, bridge
