"""How the v2 server role tells which rows' messages have been handed to the TLS connection
(takv2_server._Delivery): HTTP/2 frames (RFC 9113 section 4.1) carrying gRPC length-prefixed
messages, fed in arbitrary chunks, with other streams' DATA and other frame types between."""

from __future__ import annotations

from liaison.federation.takv2_server import _Delivery


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def message(data: bytes) -> bytes:
    return b"\x00" + len(data).to_bytes(4, "big") + data


SETTINGS = frame(0x4, 0, 0, b"")
HEADERS = frame(0x1, 0x4, 3, b"\x88")


def test_rows_pass_only_once_all_their_messages_went_out_in_any_chunking() -> None:
    d = _Delivery()
    contact, event1, event2 = b"\x12contact-of-u1", b"\x0aevent-1-bytes", b"\x0aevent-2-bytes"
    d.expect(contact, 0)  # row 7: a contact entry, then its event
    d.expect(event1, 7)
    d.expect(event2, 8)
    groups = message(b"\x0a\x02\x08\x01")  # the groups stream's first message, on stream 1
    wire = (
        SETTINGS
        + frame(0x0, 0, 1, groups)
        + HEADERS
        + frame(0x0, 0, 3, message(contact))
        + frame(0x0, 0, 5, message(b"\x08\x01"))  # a health answer between
        # event1 split over two DATA frames, the second padded (3 bytes of padding)
        + frame(0x0, 0, 3, message(event1)[:6])
        + frame(0x0, 0x8, 3, b"\x03" + message(event1)[6:] + b"\x00\x00\x00")
    )
    for i in range(len(wire)):  # one byte at a time
        d.feed(wire[i : i + 1])
        if i < len(wire) - 1:
            assert d.passed == 0, i
    assert d.passed == 7
    d.feed(frame(0x0, 0, 3, message(event2))[:-1])
    assert d.passed == 7
    d.feed(frame(0x0, 0, 3, message(event2))[-1:])
    assert d.passed == 8


def test_a_refused_row_settles_with_the_row_before_it() -> None:
    d = _Delivery()
    d.covers(3)  # nothing outstanding: settled at once
    assert d.passed == 3
    d.expect(b"\x0aevent-4", 4)
    d.covers(5)  # refused, after row 4 which has not gone out yet
    assert d.passed == 3
    d.feed(frame(0x0, 0, 1, message(b"\x0aevent-4")))
    assert d.passed == 5


def test_messages_on_other_streams_never_settle_a_row() -> None:
    d = _Delivery()
    d.expect(b"\x0aevent-1", 1)
    d.feed(frame(0x0, 0, 1, message(b"\x0aother")))  # a different message first
    assert d.passed == 0
    d.feed(frame(0x0, 0, 3, message(b"\x0aevent-1")))  # ClientEventStream found: stream 3
    assert d.passed == 1
    d.expect(b"\x0aevent-2", 2)
    d.feed(frame(0x0, 0, 1, message(b"\x0aevent-2")))  # the same bytes on another stream
    assert d.passed == 1
    d.feed(frame(0x0, 0, 3, message(b"\x0aevent-2")))
    assert d.passed == 2
