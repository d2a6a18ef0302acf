"""The TAK federation v1 framer (protocol/tak_fed_v1.py): 4-byte big-endian length, then a
serialized FederatedEvent (tak-federation.md section 12). Any split of the byte stream yields
the same messages; garbage, undecodable payloads and oversized lengths end the stream with a
named error; the duplicate memory is bounded."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liaison import errors
from liaison.federation.proto import fig_pb2
from liaison.protocol.tak_fed_v1 import (
    LENGTH_BYTES,
    MAX_FRAME_BYTES,
    FrameReader,
    RecentDigests,
    UndecodableFrame,
    V1Stream,
    encode_frame,
)

REPO = Path(__file__).resolve().parents[3]
FTS_SAMPLE = (
    REPO.parent / "shared" / "reference" / "samples" / "cot" / "proto"
) / "fts-federatedevent-wintak-sa.bin"


def _event(uid: str, other: str = "<detail/>") -> fig_pb2.FederatedEvent:
    return fig_pb2.FederatedEvent(
        event=fig_pb2.GeoEvent(uid=uid, type="a-f-G-U-C", sendTime=1, other=other)
    )


def _stream() -> V1Stream[fig_pb2.FederatedEvent]:
    return V1Stream(fig_pb2.FederatedEvent.FromString)


def test_a_frame_is_a_big_endian_length_then_the_message() -> None:
    data = _event("u1").SerializeToString()
    framed = encode_frame(data)
    assert framed[:LENGTH_BYTES] == struct.pack(">I", len(data))
    assert framed[LENGTH_BYTES:] == data
    [(payload, message)] = _stream().receive_data(framed)
    assert payload == data and message.event.uid == "u1"


def test_the_captured_tak_server_message_reads() -> None:
    if not FTS_SAMPLE.is_file():
        pytest.skip(f"{FTS_SAMPLE} not found (the shared sample folder is absent)")
    data = FTS_SAMPLE.read_bytes()
    [(_payload, message)] = _stream().receive_data(encode_frame(data))
    assert message.event.coordSource == "h-e" and message.event.battery == 100
    assert message.event.other.startswith("<detail>") and "_flow-tags_" in message.event.other


@settings(max_examples=200)
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
)
def test_any_split_gives_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    reader = FrameReader()
    got: list[bytes] = []
    start = 0
    for point in [*points, len(stream)]:
        got.extend(reader.receive_data(stream[start:point]))
        start = point
    assert got == payloads
    assert reader.buffered == 0


@settings(max_examples=100)
@given(uids=st.lists(st.text(max_size=40), min_size=1, max_size=6), step=st.integers(1, 64))
def test_messages_survive_byte_by_byte_delivery(uids: list[str], step: int) -> None:
    data = b"".join(encode_frame(_event(u).SerializeToString()) for u in uids)
    stream = _stream()
    got = []
    for i in range(0, len(data), step):
        got.extend(m.event.uid for _p, m in stream.receive_data(data[i : i + step]))
    assert got == uids


def test_an_oversized_length_is_refused_before_its_payload() -> None:
    reader = FrameReader()
    with pytest.raises(errors.FrameTooLarge):
        reader.receive_data(struct.pack(">I", MAX_FRAME_BYTES + 1))
    # Dead afterwards: a stream that could not be framed cannot be resynchronised.
    with pytest.raises(errors.FrameTooLarge):
        reader.receive_data(b"")


def test_a_frame_of_exactly_the_limit_is_read() -> None:
    reader = FrameReader(max_size=10)
    assert reader.receive_data(struct.pack(">I", 10) + b"x" * 10) == [b"x" * 10]
    with pytest.raises(errors.FrameTooLarge):
        FrameReader(max_size=10).receive_data(struct.pack(">I", 11))


def test_an_empty_frame_is_an_empty_message() -> None:
    [(payload, message)] = _stream().receive_data(b"\x00\x00\x00\x00")
    assert payload == b"" and not message.HasField("event") and not message.HasField("contact")


def test_an_undecodable_payload_ends_the_stream_with_its_bytes() -> None:
    stream = _stream()
    good = encode_frame(_event("ok").SerializeToString())
    with pytest.raises(UndecodableFrame) as caught:
        stream.receive_data(good + b"\x00\x00\x00\x03\xff\xff\xff" + good)
    assert caught.value.payload == b"\xff\xff\xff" and caught.value.reason == "undecodable"
    with pytest.raises(UndecodableFrame):
        stream.receive_data(good)


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_garbage_never_raises_anything_but_a_protocol_error(data: bytes) -> None:
    stream = _stream()
    try:
        for payload, message in stream.receive_data(data):
            assert isinstance(message, fig_pb2.FederatedEvent)
            assert len(payload) <= MAX_FRAME_BYTES
    except errors.ProtocolError:
        pass


def test_encode_refuses_a_payload_over_the_limit() -> None:
    with pytest.raises(ValueError):
        encode_frame(b"x" * 11, max_size=10)


def test_recent_digests_are_bounded_and_refreshed() -> None:
    recent = RecentDigests(limit=3)
    for d in ("a", "b", "c"):
        recent.add(d)
    recent.add("a")  # seen again: now the newest
    recent.add("d")  # "b" is the oldest and goes
    assert "b" not in recent and {"a", "c", "d"} == {d for d in "acd" if d in recent}
    assert len(recent) == 3
    with pytest.raises(ValueError):
        RecentDigests(limit=0)
