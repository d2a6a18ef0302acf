"""The sans-IO TAK stream peer: framing switch, negotiation, <auth>, ping, timeouts, byte splits."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liaison.errors import AuthenticationFailed, FrameTooLarge, MalformedStream, PeerError
from liaison.model.event import Event, WireFormat, make_event
from liaison.protocol import cot_proto, cot_xml, negotiation
from liaison.protocol.cot_xml import format_time
from liaison.protocol.negotiation import NegotiationState
from liaison.protocol.tak_peer import (
    AuthRequested,
    EventReceived,
    FrameRejected,
    Negotiated,
    PeerEvent,
    PeerSettings,
    Phase,
    Reply,
    TakPeer,
    Timeout,
)
from liaison.protocol.tak_stream import TakStreamFramer, frame
from liaison.protocol.xml_stream import XmlStreamFramer

NOW = 1_714_564_800_000  # 2024-05-01T12:00:00.000Z
XML = PeerSettings(server_version="Liaison test")


def position(uid: str = "alpha", lat: float = 50.0) -> Event:
    return make_event(
        uid=uid,
        type="a-f-G-U-C",
        how="m-g",
        time=NOW,
        start=NOW,
        stale=NOW + 60_000,
        lat=lat,
        lon=4.0,
    )


def control(type_: str, uid: str = "ctl", inner: str = "") -> bytes:
    when = format_time(NOW)
    return (
        f'<event version="2.0" uid="{uid}" type="{type_}" time="{when}" start="{when}"'
        f' stale="{when}" how="m-g"><point lat="0.0" lon="0.0" hae="0.0" ce="999999"'
        f' le="999999"/><detail>{inner}</detail></event>'
    ).encode()


def request(version: str = "1") -> bytes:
    return control(
        negotiation.REQUEST_TYPE,
        "protouid",
        f'<TakControl><TakRequest version="{version}"/></TakControl>',
    )


PING = control("t-x-c-t", "ANDROID-1-ping")
AUTH = b'<auth><cot username="anna" password="secret" uid="ANDROID-1"/></auth>'
BAD_XML_EVENT = control("a-f-G").replace(b'lat="0.0"', b'lat="91.5"')  # frames, does not parse


def xml(event: Event) -> bytes:
    return cot_xml.render_xml(event)


def proto(event: Event) -> bytes:
    return frame(cot_proto.render_proto(event))


def opened(settings: PeerSettings = XML) -> tuple[TakPeer, bytes]:
    peer = TakPeer(settings, now_ms=NOW)
    return peer, peer.open(NOW)


def drain(peer: TakPeer, now_ms: int = NOW) -> list[PeerEvent]:
    events = []
    while (ev := peer.next_event(now_ms)) is not None:
        events.append(ev)
    return events


def feed(peer: TakPeer, data: bytes, now_ms: int = NOW) -> list[PeerEvent]:
    peer.receive_data(data)
    return drain(peer, now_ms)


def summary(events: list[PeerEvent]) -> list[tuple[str, object]]:
    """Events as comparable facts (replies are rendered with the time passed in)."""
    out: list[tuple[str, object]] = []
    for ev in events:
        if isinstance(ev, EventReceived):
            out.append(("event", (ev.event.uid, ev.event.lat)))
        elif isinstance(ev, Reply):
            out.append(("reply", ev.data))
        elif isinstance(ev, Negotiated):
            # The reply's uid holds the peer's id: compare what it says.
            out.append(("negotiated", (ev.accepted, b'status="true"' in ev.reply)))
        elif isinstance(ev, FrameRejected):
            out.append(("rejected", ev.error.reason))
        else:
            out.append(("auth", ev.request.username))
    return out


# --- open and the offer -----------------------------------------------------------------------


def test_open_offers_protobuf_on_an_xml_stream() -> None:
    peer, offer = opened()
    assert peer.phase is Phase.OPEN and peer.format is WireFormat.XML
    (frame_,) = XmlStreamFramer().receive_data(offer)
    ev = cot_xml.parse_event(frame_)
    assert ev.type == negotiation.OFFER_TYPE and ev.time == NOW
    assert peer.negotiation is NegotiationState.OFFERED


@pytest.mark.parametrize(
    "settings",
    [
        PeerSettings(server_version="x", offer_protobuf=False),
        PeerSettings(server_version="x", start_in_protobuf=True),
    ],
)
def test_no_offer_when_protobuf_is_not_offered_or_already_spoken(settings: PeerSettings) -> None:
    peer, offer = opened(settings)
    assert offer == b"" and peer.negotiation is None


def test_open_twice_is_a_bug() -> None:
    peer, _ = opened()
    with pytest.raises(RuntimeError):
        peer.open(NOW)


# --- events, ping, control ------------------------------------------------------------------


def test_events_come_out_in_order_and_control_messages_are_consumed() -> None:
    peer, _ = opened()
    data = xml(position("a")) + control("t-x-c-t-r") + xml(position("b"))
    assert summary(feed(peer, data)) == [("event", ("a", 50.0)), ("event", ("b", 50.0))]


def test_ping_is_answered_with_a_pong_in_the_current_format() -> None:
    peer, _ = opened()
    (reply,) = feed(peer, PING, now_ms=NOW + 5)
    assert isinstance(reply, Reply)
    pong = cot_xml.parse_event(XmlStreamFramer().receive_data(reply.data)[0])
    assert (pong.type, pong.uid, pong.time) == ("t-x-c-t-r", "takPong", NOW + 5)


def test_bad_event_is_rejected_and_the_stream_goes_on() -> None:
    peer, _ = opened()
    events = feed(peer, BAD_XML_EVENT + xml(position("a")))
    assert summary(events) == [("rejected", "bad_coordinates"), ("event", ("a", 50.0))]


def test_broken_framing_raises_and_stays_broken() -> None:
    peer, _ = opened()
    peer.receive_data(b"garbage<event")
    with pytest.raises(MalformedStream):
        peer.next_event(NOW)
    with pytest.raises(MalformedStream):
        peer.receive_data(b"more")


def test_oversized_frame_is_refused() -> None:
    peer, _ = opened(PeerSettings(server_version="x", max_event_bytes=200))
    peer.receive_data(b"<event " + b"a" * 300)
    with pytest.raises(FrameTooLarge):
        peer.next_event(NOW)


# --- negotiation ------------------------------------------------------------------------------


def test_accepted_negotiation_switches_both_directions_after_the_reply() -> None:
    peer, _ = opened()
    data = request("1") + proto(position("p")) + frame(cot_proto.render_proto(pong_request()))
    events = feed(peer, data, now_ms=NOW + 7)
    assert isinstance(events[0], Negotiated) and events[0].accepted
    # The reply is still XML; everything after it is protobuf.
    response = cot_xml.parse_event(XmlStreamFramer().receive_data(events[0].reply)[0])
    assert response.type == negotiation.RESPONSE_TYPE and response.time == NOW + 7
    assert peer.format is WireFormat.PROTO and peer.negotiation is NegotiationState.SWITCHED
    assert summary(events[1:2]) == [("event", ("p", 50.0))]
    assert isinstance(events[2], Reply)
    (payload,) = TakStreamFramer().receive_data(events[2].data)
    pong = cot_proto.parse_proto(payload)
    assert pong is not None and pong.type == "t-x-c-t-r"


def pong_request() -> Event:
    return cot_xml.parse_event(PING)


def test_refused_negotiation_stays_in_xml_and_may_be_retried() -> None:
    peer, _ = opened()
    (refused,) = feed(peer, request("2"))
    assert isinstance(refused, Negotiated) and not refused.accepted
    assert peer.format is WireFormat.XML and peer.negotiation is NegotiationState.REFUSED
    (accepted,) = feed(peer, request("1"))
    assert isinstance(accepted, Negotiated) and accepted.accepted
    assert peer.format is WireFormat.PROTO


def test_a_request_after_the_switch_is_refused_in_protobuf() -> None:
    peer, _ = opened()
    feed(peer, request("1"))
    again = cot_xml.parse_event(request("1"))
    (ev,) = feed(peer, proto(again))
    assert isinstance(ev, Negotiated) and not ev.accepted
    (payload,) = TakStreamFramer().receive_data(ev.reply)
    assert cot_proto.parse_proto(payload) is not None


def test_a_request_without_an_offer_is_consumed() -> None:
    peer, _ = opened(PeerSettings(server_version="x", offer_protobuf=False))
    assert feed(peer, request("1")) == []
    assert peer.format is WireFormat.XML


def test_stream_that_starts_in_protobuf() -> None:
    peer, _ = opened(PeerSettings(server_version="x", start_in_protobuf=True))
    assert peer.format is WireFormat.PROTO
    events = feed(peer, proto(position("a")) + frame(b"\xff\xff") + proto(position("b")))
    assert summary(events) == [
        ("event", ("a", 50.0)),
        ("rejected", "bad_proto"),
        ("event", ("b", 50.0)),
    ]
    peer.receive_data(b"<event/>")
    with pytest.raises(MalformedStream):
        peer.next_event(NOW)


# --- <auth> -----------------------------------------------------------------------------------

AUTH_SETTINGS = PeerSettings(server_version="x", require_auth=True, auth_timeout_s=15)


def test_auth_listener_asks_for_the_credentials_then_opens() -> None:
    peer = TakPeer(AUTH_SETTINGS, now_ms=NOW)
    peer.receive_data(AUTH + xml(position("a")))
    ev = peer.next_event(NOW)
    assert isinstance(ev, AuthRequested)
    assert (ev.request.username, ev.request.password) == ("anna", "secret")
    assert peer.phase is Phase.AWAIT_AUTH
    offer = peer.open(NOW)  # the carrier accepted the credentials
    assert offer
    assert summary(drain(peer)) == [("event", ("a", 50.0))]


def test_event_before_auth_breaks_the_stream() -> None:
    peer = TakPeer(AUTH_SETTINGS, now_ms=NOW)
    peer.receive_data(xml(position()))
    with pytest.raises(AuthenticationFailed) as caught:
        peer.next_event(NOW)
    assert caught.value.reason == "auth_required"


def test_auth_is_ignored_where_it_is_not_needed_and_after_open() -> None:
    peer, _ = opened()
    assert summary(feed(peer, AUTH + xml(position("a")))) == [("event", ("a", 50.0))]
    peer3 = TakPeer(AUTH_SETTINGS, now_ms=NOW)
    peer3.receive_data(AUTH + AUTH)
    assert isinstance(peer3.next_event(NOW), AuthRequested)
    peer3.open(NOW)
    assert drain(peer3) == []  # the second <auth>, after open, is ignored


def test_malformed_auth_breaks_the_stream() -> None:
    peer = TakPeer(AUTH_SETTINGS, now_ms=NOW)
    peer.receive_data(b"<auth><cot username='a'><x/></cot></auth>" + b"<auth>&bad;</auth>")
    with pytest.raises(PeerError):
        while peer.next_event(NOW) is not None:
            pass


# --- time and timeouts ------------------------------------------------------------------------


def test_partial_frame_timing_and_timeouts() -> None:
    settings = PeerSettings(server_version="x", idle_timeout_s=10, frame_timeout_s=2)
    peer = TakPeer(settings, now_ms=NOW)
    peer.open(NOW)
    data = xml(position())
    assert feed(peer, data[:10], now_ms=NOW + 100) == []
    assert peer.partial_since_ms == NOW + 100 and peer.buffered == 10
    assert peer.timeout(NOW + 2_000) is None
    assert peer.timeout(NOW + 2_101) == Timeout("frame_timeout", 2)
    assert len(feed(peer, data[10:], now_ms=NOW + 500)) == 1
    assert peer.partial_since_ms is None and peer.last_frame_ms == NOW + 500
    assert peer.timeout(NOW + 10_500) is None
    assert peer.timeout(NOW + 10_501) == Timeout("idle_timeout", 10)
    peer.close()
    assert peer.timeout(NOW + 99_999) is None
    assert feed(peer, data) == []  # nothing is read after close


def test_auth_timeout_applies_until_open() -> None:
    peer = TakPeer(AUTH_SETTINGS, now_ms=NOW)
    assert peer.timeout(NOW + 15_000) is None
    assert peer.timeout(NOW + 15_001) == Timeout("idle_timeout", 15)
    peer.open(NOW)
    assert peer.timeout(NOW + 99_000) is None  # idle_timeout_s 0: never


def test_quiet_peer_is_never_dropped_by_default() -> None:
    peer, _ = opened()
    assert peer.timeout(NOW + 10**9) is None


# --- byte splits --------------------------------------------------------------------------------

# One session's worth of traffic: XML events and control, a bad event, a refused and an accepted
# negotiation, then protobuf events, a bad payload and a protobuf ping.
SCRIPT = b"".join(
    [
        xml(position("a", 1.0)),
        b"\n  ",
        PING,
        BAD_XML_EVENT,
        request("9"),
        xml(position("b", 2.0)),
        request("1"),
        proto(position("c", 3.0)),
        frame(b"\x0a\x03abc"),  # a TakMessage whose takControl is garbage
        proto(pong_request()),
        proto(position("a", 4.0)),
    ]
)
AUTH_SCRIPT = AUTH + SCRIPT


def run(settings: PeerSettings, chunks: list[bytes], *, auth: bool = False) -> list[object]:
    peer = TakPeer(settings, now_ms=NOW)
    got: list[object] = []
    if not auth:
        peer.open(NOW)
    try:
        for chunk in chunks:
            peer.receive_data(chunk)
            while (ev := peer.next_event(NOW)) is not None:
                if isinstance(ev, AuthRequested):
                    got.append(("opened", bool(peer.open(NOW))))
                else:
                    got.extend(summary([ev]))
    except PeerError as exc:
        got.append(("error", exc.reason))
    return got


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


WHOLE = run(XML, [SCRIPT])
WHOLE_AUTH = run(AUTH_SETTINGS, [AUTH_SCRIPT], auth=True)


def test_the_script_does_what_it_says() -> None:
    kinds = [k for k, _ in WHOLE]  # type: ignore[misc]
    assert kinds == [
        "event",
        "reply",
        "rejected",
        "negotiated",
        "event",
        "negotiated",
        "event",
        "rejected",
        "reply",
        "event",
    ]
    assert WHOLE_AUTH[0] == ("opened", True) and WHOLE_AUTH[1:] == WHOLE


def test_one_byte_at_a_time() -> None:
    assert run(XML, [bytes([b]) for b in SCRIPT]) == WHOLE


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    assert run(XML, split(SCRIPT, cuts)) == WHOLE


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_any_split_with_auth_gives_the_same_events(cuts: list[int]) -> None:
    assert run(AUTH_SETTINGS, split(AUTH_SCRIPT, cuts), auth=True) == WHOLE_AUTH


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    st.integers(min_value=0, max_value=10_000),
)
def test_a_broken_stream_fails_the_same_way_whatever_the_split(cuts: list[int], at: int) -> None:
    pos = at % len(SCRIPT)
    # A stray byte in the middle: depending on where, a framing error or a rejected frame, but
    # always the same for every split of the same bytes.
    broken = SCRIPT[:pos] + b"\x00" + SCRIPT[pos:]
    assert run(XML, split(broken, cuts)) == run(XML, [broken])
