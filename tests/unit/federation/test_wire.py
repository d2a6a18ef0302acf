"""The federation wire protocol: every message round-trips, any split gives the same messages,
hostile frames are refused, and the handshake order is enforced."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liaison import errors
from liaison.protocol import federation as wire

HELLO = wire.Hello(
    versions=(1,),
    server_id="usa-srv",
    policy_id="LIAISON-USA-UKR",
    policy_version=1,
    policy_digest="sha256:" + "ab" * 32,
)
PEER_HELLO = wire.Hello(
    versions=(1,),
    server_id="ukr-srv",
    policy_id="LIAISON-USA-UKR",
    policy_version=1,
    policy_digest="sha256:" + "ab" * 32,
)
EVENT_BYTES = b'<event uid="x" type="a-f-G"><detail/></event>'

MESSAGES: list[wire.Message] = [
    HELLO,
    wire.Resume(last_applied=0),
    wire.Resume(last_applied=2**63 - 1),
    wire.EventMsg(seq=1, priority=0, payload=EVENT_BYTES),
    wire.EventMsg(seq=2**40, priority=15, payload=b"x"),
    wire.Ack(seq=7),
    wire.Heartbeat(time_ms=1_764_072_000_000),
    wire.ErrorMsg(code="policy_digest_mismatch", message="policy digest differs"),
]


def _stream() -> bytes:
    return b"".join(wire.encode(m) for m in MESSAGES)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: wire.Message) -> None:
    assert wire.FrameDecoder().receive_data(wire.encode(message)) == [message]


def test_encode_event_matches_the_dataclass_encoding() -> None:
    assert wire.encode_event(5, 2, EVENT_BYTES) == wire.encode(
        wire.EventMsg(seq=5, priority=2, payload=EVENT_BYTES)
    )


def test_frame_layout_is_the_documented_one() -> None:
    frame = wire.encode(wire.EventMsg(seq=258, priority=1, payload=b"<e/>"))
    assert frame[:4] == struct.pack(">I", 1 + 8 + 1 + 4)
    assert frame[4] == 0x03
    assert frame[5:13] == (258).to_bytes(8, "big")
    assert frame[13] == 1
    assert frame[14:] == b"<e/>"
    assert wire.encode(wire.Ack(seq=9)) == b"\x00\x00\x00\x09\x04" + (9).to_bytes(8, "big")


def test_split_at_every_position_gives_the_same_messages() -> None:
    data = _stream()
    for cut in range(len(data) + 1):
        dec = wire.FrameDecoder()
        got = dec.receive_data(data[:cut]) + dec.receive_data(data[cut:])
        assert got == MESSAGES, cut
        assert dec.buffered == 0


def test_byte_by_byte() -> None:
    dec = wire.FrameDecoder()
    got: list[wire.Message] = []
    for i in range(len(_stream())):
        got += dec.receive_data(_stream()[i : i + 1])
    assert got == MESSAGES


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(_stream())), max_size=8))
def test_any_split_gives_the_same_messages(cuts: list[int]) -> None:
    data = _stream()
    points = sorted(set(cuts))
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    dec = wire.FrameDecoder()
    got: list[wire.Message] = []
    for piece in pieces:
        got += dec.receive_data(piece)
    assert got == MESSAGES


def _raw(kind: int, body: bytes) -> bytes:
    return struct.pack(">I", len(body) + 1) + bytes((kind,)) + body


HOSTILE = {
    "zero_length": b"\x00\x00\x00\x00",
    "too_large": struct.pack(">I", wire.MAX_FRAME_BYTES + 1) + b"\x03",
    "unknown_type": _raw(0x7F, b""),
    "short_event": _raw(0x03, b"\x00" * 9),
    "event_seq_zero": _raw(0x03, struct.pack(">QB", 0, 0) + b"x"),
    "event_priority": _raw(0x03, struct.pack(">QB", 1, 16) + b"x"),
    "event_seq_sign": _raw(0x03, struct.pack(">QB", 2**63, 0) + b"x"),
    "ack_short": _raw(0x04, b"\x00" * 7),
    "ack_long": _raw(0x04, b"\x00" * 9),
    "hello_not_json": _raw(0x01, b"\xff\xfe"),
    "hello_array": _raw(0x01, b"[]"),
    "hello_other_protocol": _raw(0x01, b'{"protocol":"tak"}'),
    "hello_bad_server_id": _raw(
        0x01,
        b'{"protocol":"liaison-federation","versions":[1],"server_id":"a b",'
        b'"policy":{"id":"P","version":1,"digest":"d"}}',
    ),
    "hello_too_large": _raw(0x01, b" " * (wire.MAX_CONTROL_BYTES + 1)),
    "error_not_object": _raw(0x06, b'"x"'),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_frames_are_refused_and_the_decoder_stays_dead(name: str) -> None:
    dec = wire.FrameDecoder()
    with pytest.raises(errors.ProtocolError):
        dec.receive_data(HOSTILE[name])
    with pytest.raises(errors.ProtocolError):
        dec.receive_data(wire.encode(wire.Ack(seq=1)))


def test_oversized_length_is_refused_before_the_body_arrives() -> None:
    with pytest.raises(errors.FrameTooLarge):
        wire.FrameDecoder().receive_data(struct.pack(">I", 2**31))


def test_encoder_refuses_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        wire.encode(wire.EventMsg(seq=-1, priority=0, payload=b"x"))
    with pytest.raises(ValueError):
        wire.encode(wire.EventMsg(seq=1, priority=16, payload=b"x"))
    with pytest.raises(ValueError):
        wire.encode_event(1, 0, b"x" * wire.MAX_FRAME_BYTES)
    with pytest.raises(ValueError):
        wire.encode(
            wire.Hello(
                versions=(1,), server_id="bad id", policy_id="P", policy_version=1, policy_digest=""
            )
        )


# --- handshake ---------------------------------------------------------------------------------


def test_check_hello_accepts_the_same_policy_and_names_each_mismatch() -> None:
    assert wire.check_hello(HELLO, PEER_HELLO) is None
    cases = {
        wire.ErrorCode.VERSION: {"versions": (2,)},
        wire.ErrorCode.SELF: {"server_id": "usa-srv"},
        wire.ErrorCode.POLICY_ID: {"policy_id": "OTHER"},
        wire.ErrorCode.POLICY_VERSION: {"policy_version": 2},
        wire.ErrorCode.POLICY_DIGEST: {"policy_digest": "sha256:" + "cd" * 32},
    }
    for code, change in cases.items():
        fields = {
            "versions": PEER_HELLO.versions,
            "server_id": PEER_HELLO.server_id,
            "policy_id": PEER_HELLO.policy_id,
            "policy_version": PEER_HELLO.policy_version,
            "policy_digest": PEER_HELLO.policy_digest,
        }
        fields.update(change)  # type: ignore[arg-type]
        problem = wire.check_hello(HELLO, wire.Hello(**fields))  # type: ignore[arg-type]
        assert problem is not None and problem[0] is code


def test_highest_common_version_is_chosen() -> None:
    a = wire.Hello(
        versions=(1, 2, 3), server_id="a", policy_id="P", policy_version=1, policy_digest="d"
    )
    b = wire.Hello(
        versions=(2, 3, 4), server_id="b", policy_id="P", policy_version=1, policy_digest="d"
    )
    assert wire.choose_version(a, b) == 3


def test_link_protocol_happy_path_with_frames_buffered_behind_hello() -> None:
    proto = wire.LinkProtocol(HELLO)
    assert wire.FrameDecoder().receive_data(proto.hello()) == [HELLO]
    data = (
        wire.encode(PEER_HELLO)
        + wire.encode(wire.Resume(last_applied=4))
        + wire.encode_event(5, 0, b"a")
        + wire.encode_event(6, 1, b"b")
    )
    first = proto.receive_data(data)
    assert first == [PEER_HELLO]  # stops at HELLO until the caller decided
    resume = proto.accept_hello(last_applied=9)
    assert wire.FrameDecoder().receive_data(resume) == [wire.Resume(last_applied=9)]
    rest = proto.more()
    assert [type(m).__name__ for m in rest] == ["Resume", "EventMsg", "EventMsg"]
    assert proto.phase is wire.Phase.OPEN and proto.version == 1


@pytest.mark.parametrize(
    "frames",
    [
        [wire.encode_event(1, 0, b"a")],  # event before HELLO
        [wire.encode(wire.Resume(last_applied=0))],  # RESUME before HELLO
    ],
)
def test_nothing_but_hello_comes_first(frames: list[bytes]) -> None:
    with pytest.raises(errors.ProtocolError):
        wire.LinkProtocol(HELLO).receive_data(b"".join(frames))


def _opened() -> wire.LinkProtocol:
    proto = wire.LinkProtocol(HELLO)
    proto.receive_data(wire.encode(PEER_HELLO))
    proto.accept_hello(0)
    return proto


def test_events_before_resume_a_second_hello_and_falling_seqs_are_refused() -> None:
    with pytest.raises(errors.ProtocolError):
        _opened().receive_data(wire.encode_event(1, 0, b"a"))
    p = _opened()
    p.receive_data(wire.encode(wire.Resume(last_applied=0)))
    with pytest.raises(errors.ProtocolError):
        p.receive_data(wire.encode(PEER_HELLO))
    p = _opened()
    p.receive_data(wire.encode(wire.Resume(last_applied=0)))
    with pytest.raises(errors.ProtocolError):
        p.receive_data(wire.encode_event(3, 0, b"a") + wire.encode_event(3, 0, b"b"))
    p = _opened()
    p.receive_data(wire.encode(wire.Resume(last_applied=0)))
    with pytest.raises(errors.ProtocolError):
        p.receive_data(wire.encode(wire.Resume(last_applied=0)))


def test_error_ends_the_conversation() -> None:
    p = _opened()
    got = p.receive_data(
        wire.encode(wire.ErrorMsg(code="shutdown", message="bye")) + wire.encode_event(1, 0, b"a")
    )
    assert got == [wire.ErrorMsg(code="shutdown", message="bye")]
    assert p.phase is wire.Phase.CLOSED
    assert p.receive_data(wire.encode(wire.Ack(seq=1))) == []
