"""Tests of TAK protocol v1 stream framing and the UDP mesh header, with takproto's vectors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_samples import LOCAL

from liaison import errors
from liaison.model.event import WireFormat
from liaison.protocol import limits
from liaison.protocol.tak_mesh import MESH_HEADER, decode_datagram, mesh_frame
from liaison.protocol.tak_stream import (
    TakStreamFramer,
    decode_varint,
    encode_varint,
    frame,
)

# takproto's test vectors for cot/xml/wintak-sa-01.xml (MIT; tests/data/NOTICE).
STREAM_VECTOR = (LOCAL / "proto" / "takproto-wintak-sa-stream.bin").read_bytes()
MESH_VECTOR = (LOCAL / "proto" / "takproto-wintak-sa-mesh.bin").read_bytes()
PAYLOAD = MESH_VECTOR[3:]


# --- varint ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (307, b"\xb3\x02"),  # the length in takproto's stream vector
        ((1 << 64) - 1, b"\xff" * 9 + b"\x01"),
    ],
)
def test_varint_known_values(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    assert decode_varint(encoded) == (value, len(encoded))


@given(st.integers(0, (1 << 64) - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) <= limits.MAX_VARINT_BYTES
    assert decode_varint(encoded + b"tail") == (value, len(encoded))


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_varint_refuses_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(value)


def test_varint_incomplete_is_none() -> None:
    assert decode_varint(b"\x80\x80") is None
    assert decode_varint(b"") is None


def test_varint_overflow_refused() -> None:
    with pytest.raises(errors.MalformedStream):
        decode_varint(b"\xff" * 11)
    with pytest.raises(errors.MalformedStream):
        decode_varint(b"\xff" * 9 + b"\x02")  # 2**64: does not fit in 64 bits


# --- stream framing -------------------------------------------------------------------------------


def test_takproto_stream_vector() -> None:
    assert STREAM_VECTOR[:3] == b"\xbf\xb3\x02"
    assert TakStreamFramer().receive_data(STREAM_VECTOR) == [PAYLOAD]
    assert frame(PAYLOAD) == STREAM_VECTOR


def test_stream_vector_byte_by_byte_and_every_split() -> None:
    stream = STREAM_VECTOR * 3
    framer = TakStreamFramer()
    frames: list[bytes] = []
    for i in range(len(stream)):
        frames += framer.receive_data(stream[i : i + 1])
    assert frames == [PAYLOAD] * 3
    for cut in range(len(stream) + 1):
        framer = TakStreamFramer()
        assert (
            framer.receive_data(stream[:cut]) + framer.receive_data(stream[cut:]) == [PAYLOAD] * 3
        )


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 3000), max_size=10),
)
def test_any_split_gives_the_same_payloads(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p) for p in payloads)
    framer = TakStreamFramer()
    got: list[bytes] = []
    last = 0
    for cut in [*sorted(c for c in cuts if c <= len(stream)), len(stream)]:
        got += framer.receive_data(stream[last:cut])
        last = cut
    assert got == payloads
    assert framer.buffered == 0


def test_empty_payload_is_a_frame() -> None:
    assert TakStreamFramer().receive_data(b"\xbf\x00\xbf\x00") == [b"", b""]


def test_take_buffer_returns_the_rest() -> None:
    framer = TakStreamFramer()
    framer.feed(frame(b"abc") + b"\xbf\x05ab")
    assert framer.next_frame() == b"abc"
    assert framer.next_frame() is None
    assert framer.take_buffer() == b"\xbf\x05ab"
    assert framer.buffered == 0


def test_bad_magic_refused() -> None:
    with pytest.raises(errors.MalformedStream):
        TakStreamFramer().receive_data(b"<event/>")
    framer = TakStreamFramer()
    with pytest.raises(errors.MalformedStream):
        framer.receive_data(frame(b"ok") + b"\x00")


def test_varint_overflow_in_header_refused() -> None:
    with pytest.raises(errors.MalformedStream):
        TakStreamFramer().receive_data(b"\xbf" + b"\x80" * 11)


def test_declared_length_over_limit_refused_at_the_header() -> None:
    framer = TakStreamFramer(max_size=1000)
    with pytest.raises(errors.FrameTooLarge):
        framer.receive_data(b"\xbf" + encode_varint(1001))  # no payload byte sent yet
    assert TakStreamFramer(max_size=3).receive_data(frame(b"abc")) == [b"abc"]


def test_default_limit_refuses_a_huge_declared_length() -> None:
    with pytest.raises(errors.FrameTooLarge):
        TakStreamFramer().receive_data(b"\xbf" + encode_varint(limits.MAX_PROTO_EVENT_BYTES + 1))


def test_stream_framer_is_dead_after_an_error() -> None:
    framer = TakStreamFramer()
    with pytest.raises(errors.MalformedStream):
        framer.receive_data(b"x")
    with pytest.raises(errors.MalformedStream):
        framer.receive_data(frame(b"ok"))
    with pytest.raises(errors.MalformedStream):
        framer.take_buffer()


# --- mesh datagrams -------------------------------------------------------------------------------


def test_takproto_mesh_vector() -> None:
    assert MESH_HEADER == b"\xbf\x01\xbf"
    assert decode_datagram(MESH_VECTOR) == (WireFormat.PROTO, PAYLOAD)
    assert mesh_frame(PAYLOAD) == MESH_VECTOR


def test_xml_datagram() -> None:
    xml = b'<?xml version="1.0"?>\n<event/>'
    assert decode_datagram(xml) == (WireFormat.XML, xml)
    assert decode_datagram(b"\r\n  " + xml) == (WireFormat.XML, xml)
    assert decode_datagram(b"\xef\xbb\xbf" + xml) == (WireFormat.XML, xml)


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"   ",
        b"hello",
        b"\xbf\x02\xbf" + PAYLOAD,  # another protocol version
        b"\xbf\x00\xbf",  # version 0 is XML, never framed
        b"\xbf\x01",  # header cut short
        b"\xbf\x01\x00",  # wrong closing byte
        b"\xbf" + b"\xff" * 11,  # varint overflow in the version
        b"\xbf\x80",  # truncated varint
    ],
)
def test_bad_datagram_refused(datagram: bytes) -> None:
    with pytest.raises(errors.MalformedStream):
        decode_datagram(datagram)


def test_oversized_datagram_refused() -> None:
    with pytest.raises(errors.FrameTooLarge):
        decode_datagram(b"<" + b" " * limits.MAX_DATAGRAM_BYTES)
