"""TAK protocol negotiation on a stream (t-x-takp-v / -q / -r) and the ping reply, as pure builders.

TAK protocol.txt, "Protocol Negotiation" (tak-protocol.md 2.4): a connection starts in XML. The
server may offer, once per connection, a ``t-x-takp-v`` listing the versions it supports; the
client answers with one ``t-x-takp-q`` naming a version; the server replies ``t-x-takp-r`` with
status true or false. On true both directions switch to stream-framed version 1 right after the
response; on false both stay in XML and the client may ask again.

Everything here is pure: the current time comes in as ``now_ms``.
"""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET

from liaison.model.event import Event, make_event

# The one TAK protocol version we speak besides XML (protocol.txt: version 1 = TakMessage).
SUPPORTED_VERSION = 1
# TAK Server announces apiVersion 3 in TakServerVersionInfo (StreamingProtoBufOrCoTProtocol
# buildProtocolAnnouncement, tak-protocol.md 2.4).
API_VERSION = "3"

OFFER_TYPE = "t-x-takp-v"
REQUEST_TYPE = "t-x-takp-q"
RESPONSE_TYPE = "t-x-takp-r"
PONG_TYPE = "t-x-c-t-r"
PONG_UID = "takPong"

# The offer and response are valid for a minute: the client must wait at least that long for the
# response, and the server watches for the request at least that long (protocol.txt).
NEGOTIATION_STALE_MS = 60_000
# TAK Server SubmissionService.sendPong: uid takPong, stale 20 s after now.
PONG_STALE_MS = 20_000
# protocol.txt: the negotiation messages carry point 0,0 with ce/le 999999 ("unknown").
_UNKNOWN_ERROR = 999999.0


def _control_event(now_ms: int, uid: str, type_: str, detail: ET.Element) -> Event:
    return make_event(
        uid=uid,
        type=type_,
        how="m-g",
        time=now_ms,
        start=now_ms,
        stale=now_ms + NEGOTIATION_STALE_MS,
        lat=0.0,
        lon=0.0,
        hae=0.0,
        ce=_UNKNOWN_ERROR,
        le=_UNKNOWN_ERROR,
        detail=detail,
    )


def version_offer(now_ms: int, uid: str, server_version: str) -> Event:
    """The server's ``t-x-takp-v`` announcement: version 1 supported, and who we are."""
    detail = ET.Element("detail")
    control = ET.SubElement(detail, "TakControl")
    ET.SubElement(control, "TakProtocolSupport", {"version": str(SUPPORTED_VERSION)})
    ET.SubElement(
        control,
        "TakServerVersionInfo",
        {"serverVersion": server_version, "apiVersion": API_VERSION},
    )
    return _control_event(now_ms, uid, OFFER_TYPE, detail)


def requested_version(event: Event) -> int | None:
    """The version a ``t-x-takp-q`` asks for (``TakControl/TakRequest@version``), or None."""
    if event.type != REQUEST_TYPE or event.detail is None:
        return None
    request = event.detail.find("TakControl/TakRequest")
    if request is None:
        return None
    text = (request.get("version") or "").strip()
    if not text.isascii() or not text.isdigit():
        return None
    return int(text)


def version_response(now_ms: int, uid: str, accepted: bool) -> Event:
    """The server's ``t-x-takp-r``: ``TakResponse status="true"`` or ``"false"``."""
    detail = ET.Element("detail")
    control = ET.SubElement(detail, "TakControl")
    ET.SubElement(control, "TakResponse", {"status": "true" if accepted else "false"})
    return _control_event(now_ms, uid, RESPONSE_TYPE, detail)


def pong(now_ms: int) -> Event:
    """The reply to a ``t-x-c-t`` ping, as TAK Server sends it (SubmissionService.sendPong)."""
    return make_event(
        uid=PONG_UID,
        type=PONG_TYPE,
        how="h-g-i-g-o",
        time=now_ms,
        start=now_ms,
        stale=now_ms + PONG_STALE_MS,
        lat=0.0,
        lon=0.0,
        hae=0.0,
        ce=_UNKNOWN_ERROR,
        le=_UNKNOWN_ERROR,
    )


class NegotiationState(enum.Enum):
    """Where one stream's negotiation stands."""

    OFFERED = "offered"  # t-x-takp-v sent; waiting for a t-x-takp-q (still XML)
    REFUSED = "refused"  # the last request was answered false; still XML, the client may retry
    SWITCHED = "switched"  # a request was accepted: both directions now speak version 1


class Negotiator:
    """The server side of one stream's negotiation.

    Build it when the session may offer protobuf, send :attr:`offer`, then pass each
    ``t-x-takp-q`` to :meth:`on_request` and send the response it returns.
    """

    def __init__(self, now_ms: int, uid: str, server_version: str) -> None:
        self.uid = uid
        # protocol.txt: the offer is sent at most once per connection.
        self.offer: Event = version_offer(now_ms, uid, server_version)
        self.state = NegotiationState.OFFERED
        self._now_ms = now_ms

    def on_request(self, event: Event, now_ms: int | None = None) -> tuple[Event, bool]:
        """Answer a ``t-x-takp-q``: ``(response to send, switch to protobuf right after it)``.

        Only version 1 is accepted, and only once: a request after the switch (or for another
        version) is answered false and changes nothing else. ``now_ms`` stamps the response;
        pass the current time (without it the offer's time is used, and a request that comes
        more than a minute after the offer gets a response that is already stale).
        """
        if event.type != REQUEST_TYPE:
            raise ValueError(f"not a protocol request: {event.type}")
        stamp = self._now_ms if now_ms is None else now_ms
        accept = (
            self.state is not NegotiationState.SWITCHED
            and requested_version(event) == SUPPORTED_VERSION
        )
        if accept:
            self.state = NegotiationState.SWITCHED
        elif self.state is NegotiationState.OFFERED:
            self.state = NegotiationState.REFUSED
        # protocol.txt: the response reuses the negotiation uid of the offer.
        return version_response(stamp, self.uid, accept), accept

    @property
    def switched(self) -> bool:
        return self.state is NegotiationState.SWITCHED
