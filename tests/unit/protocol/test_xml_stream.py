"""Tests of the CoT XML stream framer: every sample, every split, hostile streams."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_samples import expected_element, xml_sample_params, xml_sample_paths

from liaison import errors
from liaison.protocol.xml_stream import XmlStreamFramer

SAMPLE_PARAMS = xml_sample_params()


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    framer = XmlStreamFramer()
    frames: list[bytes] = []
    last = 0
    for cut in [*sorted(cuts), len(data)]:
        frames += framer.receive_data(data[last:cut])
        last = cut
    assert framer.buffered == 0 or data[last:].strip() == b""
    return frames


# --- golden samples ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLE_PARAMS)
def test_sample_whole(path: Path) -> None:
    data = path.read_bytes()
    frames = XmlStreamFramer().receive_data(data)
    assert frames == [expected_element(data)]
    assert frames[0].startswith((b"<event", b"<auth"))


@pytest.mark.parametrize("path", SAMPLE_PARAMS)
def test_sample_byte_by_byte(path: Path) -> None:
    data = path.read_bytes()
    framer = XmlStreamFramer()
    frames: list[bytes] = []
    for i in range(len(data)):
        frames += framer.receive_data(data[i : i + 1])
    assert frames == [expected_element(data)]


@pytest.mark.parametrize("path", SAMPLE_PARAMS)
def test_sample_split_at_every_position(path: Path) -> None:
    data = path.read_bytes()
    expected = [expected_element(data)]
    # Two samples in a row, split once at every position of the first: the frame boundary of
    # the second is found whatever happened to the first.
    stream = data + b"\n" + data
    for cut in range(len(data) + 1):
        framer = XmlStreamFramer()
        frames = framer.receive_data(stream[:cut]) + framer.receive_data(stream[cut:])
        assert frames == expected * 2, f"split at {cut}"


def test_all_samples_in_one_read() -> None:
    paths = xml_sample_paths()
    blob = b"".join(p.read_bytes() + b"\r\n" for p in paths)
    assert XmlStreamFramer().receive_data(blob) == [expected_element(p.read_bytes()) for p in paths]


def _stream_strategy() -> st.SearchStrategy[tuple[bytes, list[bytes], list[int]]]:
    """A concatenation of samples with declarations/whitespace/comments between, and cuts."""
    paths = xml_sample_paths()
    small = [p.read_bytes() for p in paths if p.stat().st_size < 4096]
    separators = st.sampled_from(
        [b"", b"\n", b"\r\n  ", b'<?xml version="1.0" encoding="UTF-8"?>\n', b"<!-- k -->\t"]
    )

    @st.composite
    def build(draw: st.DrawFn) -> tuple[bytes, list[bytes], list[int]]:
        chosen = draw(st.lists(st.sampled_from(small), min_size=1, max_size=6))
        parts: list[bytes] = []
        for sample in chosen:
            parts.append(draw(separators))
            parts.append(sample)
        parts.append(draw(separators))
        stream = b"".join(parts)
        cuts = draw(st.lists(st.integers(0, len(stream)), max_size=12))
        return stream, [expected_element(s) for s in chosen], cuts

    return build()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_stream_strategy())
def test_any_split_gives_the_same_frames(case: tuple[bytes, list[bytes], list[int]]) -> None:
    stream, expected, cuts = case
    assert feed_in_pieces(stream, cuts) == expected


# --- XML features the framer must not be fooled by -------------------------------------------

TRICKY = [
    # ">" and "/" and "</event>" inside quoted attribute values
    b'<event uid="a>b" how=\'m/g\' note="</event>"><point lat=\'1\' lon="2/>"/></event>',
    # CDATA and comments that contain end tags and ">"
    b"<event><detail><remarks><![CDATA[</event> <b>x</b> ]]></remarks></detail></event>",
    b"<event><!-- </event> -- > --><detail/></event>",
    # self-closing top-level event, with and without attributes and spaces
    b"<event uid='x' type='t' />",
    b"<event/>",
    # an element named event nested inside the detail
    b"<event><detail><event><event/></event></detail></event>",
    # processing instruction inside, whitespace inside end tags
    b"<event><?pi x?><detail></detail  ></event >",
    # the auth message
    b'<auth><cot username="u" password="p&gt;" uid="x"/></auth>',
]


@pytest.mark.parametrize("element", TRICKY)
def test_tricky_elements_frame_exactly(element: bytes) -> None:
    stream = b'<?xml version="1.0"?>\n' + element + b"\n<!-- between -->\n" + element
    assert XmlStreamFramer().receive_data(stream) == [element, element]
    framer = XmlStreamFramer()
    frames: list[bytes] = []
    for i in range(len(stream)):
        frames += framer.receive_data(stream[i : i + 1])
    assert frames == [element, element]


def test_byte_order_mark_and_blank_lines_between_frames() -> None:
    stream = b"\xef\xbb\xbf<?xml version='1.0'?>\r\n\r\n<event/>\n\xef\xbb\xbf<event a='1'/>"
    assert feed_in_pieces(stream, [1, 2]) == [b"<event/>", b"<event a='1'/>"]


def test_next_frame_returns_one_frame_at_a_time() -> None:
    framer = XmlStreamFramer()
    framer.feed(b"<event/><event a='1'/>")
    assert framer.next_frame() == b"<event/>"
    assert framer.next_frame() == b"<event a='1'/>"
    assert framer.next_frame() is None


def test_take_buffer_returns_unscanned_bytes_after_a_frame() -> None:
    # After t-x-takp-q the client switches to protobuf: those bytes must come back untouched.
    request = b"<event type='t-x-takp-q'><detail/></event>"
    proto = b"\xbf\x05\x12\x03abc"
    framer = XmlStreamFramer()
    framer.feed(b"<?xml version='1.0'?>" + request + proto)
    assert framer.next_frame() == request
    assert framer.take_buffer() == proto
    assert framer.buffered == 0
    assert framer.next_frame() is None


def test_take_buffer_keeps_a_partial_frame() -> None:
    framer = XmlStreamFramer()
    assert framer.receive_data(b"  <event a='1'><det") == []
    assert framer.take_buffer() == b"<event a='1'><det"
    assert framer.receive_data(b"<event/>") == [b"<event/>"]


def test_feeding_one_byte_at_a_time_is_linear() -> None:
    # One large event: a 300 kB attribute, 100 kB of text, a 100 kB comment, 2000 child tags.
    event = (
        b"<event uid='"
        + b"u" * 300_000
        + b"'><detail><remarks>"
        + b"t" * 100_000
        + b"</remarks><!--"
        + b"c" * 100_000
        + b"-->"
        + b"<x a='1'/>" * 2000
        + b"</detail></event>"
    )
    framer = XmlStreamFramer()
    frames: list[bytes] = []
    started = time.monotonic()
    for i in range(len(event)):
        frames += framer.receive_data(event[i : i + 1])
    elapsed = time.monotonic() - started
    assert frames == [event]
    # Quadratic rescanning would take hours here; linear work takes well under a second.
    assert elapsed < 30, f"byte-by-byte framing took {elapsed:.1f} s"


# --- hostile streams ---------------------------------------------------------------------------


def test_oversized_frame_refused_before_it_completes() -> None:
    framer = XmlStreamFramer(max_size=1000)
    with pytest.raises(errors.FrameTooLarge):
        for _ in range(20):
            framer.receive_data(b"<event><detail>" + b"x" * 100)


def test_oversized_complete_frame_refused() -> None:
    framer = XmlStreamFramer(max_size=100)
    with pytest.raises(errors.FrameTooLarge):
        framer.receive_data(b"<event a='" + b"x" * 200 + b"'/>")


def test_frame_at_the_limit_accepted() -> None:
    element = b"<event a='" + b"x" * 87 + b"'/>"
    assert len(element) == 100
    assert XmlStreamFramer(max_size=100).receive_data(element) == [element]


def test_unterminated_comment_between_frames_is_bounded() -> None:
    framer = XmlStreamFramer(max_size=1000)
    with pytest.raises(errors.FrameTooLarge):
        for _ in range(20):
            framer.receive_data(b"<!--" + b"x" * 100)


@pytest.mark.parametrize(
    "stream",
    [
        b"hello<event/>",
        b"<event/>garbage",
        b"<events/>",
        b"<eventual a='1'/>",
        b"</event>",
        b"<point lat='1'/>",
        b"<?php echo 1 ?><event/>",
        b"<event/>\x00",
        b"\xbf\x01\xbf",
        b"<event>< detail/></event>",
        b"<event><detail <x/></event>",
    ],
)
def test_garbage_is_a_malformed_stream(stream: bytes) -> None:
    framer = XmlStreamFramer()
    with pytest.raises(errors.MalformedStream):
        framer.receive_data(stream)


@pytest.mark.parametrize(
    "stream",
    [
        b'<?xml version="1.0"?><!DOCTYPE event [<!ENTITY x "y">]><event>&x;</event>',
        # billion laughs
        b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b"<event>&lol2;</event>",
        # XXE inside the event
        b'<event><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><detail>&xxe;</detail>'
        b"</event>",
        b"<event><!ENTITY x 'y'></event>",
        b"<event><![INCLUDE[ x ]]></event>",
        # DTD text hidden in a comment or CDATA is refused too (anywhere)
        b"<!-- <!DOCTYPE x> --><event/>",
        b"<event><![CDATA[<!ENTITY x 'y'>]]></event>",
    ],
)
def test_dtd_markup_refused(stream: bytes) -> None:
    with pytest.raises(errors.ProtocolError) as info:
        XmlStreamFramer().receive_data(stream)
    assert info.value.reason == "doctype"


def test_dtd_refused_when_fed_byte_by_byte() -> None:
    framer = XmlStreamFramer()
    stream = b"<event><detail><!DOCTYPE x></detail></event>"
    with pytest.raises(errors.ProtocolError) as info:
        for i in range(len(stream)):
            framer.receive_data(stream[i : i + 1])
    assert info.value.reason == "doctype"


def test_framer_is_dead_after_an_error() -> None:
    framer = XmlStreamFramer()
    with pytest.raises(errors.MalformedStream):
        framer.receive_data(b"junk")
    with pytest.raises(errors.MalformedStream):
        framer.receive_data(b"<event/>")
    with pytest.raises(errors.MalformedStream):
        framer.next_frame()
    with pytest.raises(errors.MalformedStream):
        framer.take_buffer()


def test_frames_before_garbage_are_returned_by_next_frame() -> None:
    framer = XmlStreamFramer()
    framer.feed(b"<event/>junk")
    assert framer.next_frame() == b"<event/>"
    with pytest.raises(errors.MalformedStream):
        framer.next_frame()


def test_max_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        XmlStreamFramer(max_size=0)


# --- the whole-frame fast path gives what the token-by-token scan gives ----------------------

_PIECES = [
    b"<event>",
    b"</event>",
    b"<event a='1'/>",
    b"<a>",
    b"</a>",
    b"<b/>",
    b'<c x="1/">',
    b"<d y='>' z=\"'\"/>",
    b'<e q="</event>"/>',
    b"text",
    b" ",
    b">",
    b"/",
    b"<",
    b"<!-- c -->",
    b"<![CDATA[<x>]]>",
    b"<?pi x?>",
    b'<f a="<"/>',
    b"<g\t/>",
    b"&amp;",
    b"'",
    b'"',
]


def _frames_or_error(data: bytes, cuts: list[int], *, fast: bool) -> tuple[list[bytes], str]:
    from liaison.protocol import xml_stream

    framer = XmlStreamFramer()
    frames: list[bytes] = []
    saved = xml_stream._FAST_FRAME
    if not fast:
        xml_stream._FAST_FRAME = xml_stream.re.compile(rb"(?!)")  # never matches
    try:
        last = 0
        for cut in [*sorted(cuts), len(data)]:
            frames += framer.receive_data(data[last:cut])
            last = cut
    except errors.ProtocolError as exc:
        return frames, f"{type(exc).__name__}:{exc.reason}"
    finally:
        xml_stream._FAST_FRAME = saved
    return frames, ""


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.lists(st.sampled_from(_PIECES), max_size=24),
    depth=st.integers(0, 12),
    cuts=st.lists(st.integers(0, 400), max_size=3),
)
def test_fast_path_frames_exactly_as_the_token_scan(
    body: list[bytes], depth: int, cuts: list[int]
) -> None:
    # Nesting around the random body up to beyond the fast pattern's depth (8), then one more
    # plain frame, so a wrong end would show in the next frame too.
    data = (
        b"<event>"
        + b"<n>" * depth
        + b"".join(body)
        + b"</n>" * depth
        + b"</event>\n<event><point/></event>"
    )
    cuts = [c for c in cuts if c <= len(data)]
    assert _frames_or_error(data, cuts, fast=True) == _frames_or_error(data, cuts, fast=False)


def test_fast_path_takes_nesting_up_to_its_depth_and_the_scan_the_rest() -> None:
    for depth in (0, 7, 8, 9, 20):
        data = b"<event>" + b"<n>" * depth + b"</n>" * depth + b"</event>"
        assert feed_in_pieces(data, []) == [data]
