"""The WebSocket feed benchmark: its RFC 6455 frame parser and client, and a short real run."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.integration.conftest import ServerFactory, data_dir, start_server

__all__ = ["data_dir", "start_server"]

WS_BENCH = Path(__file__).resolve().parents[3] / "bench" / "ws_bench.py"
# Process start-ups, 0.5 s warm-up, a 2 s window and 1 s drain: well under this.
RUN_TIMEOUT_S = 60.0


def _load() -> ModuleType:
    # bench/ is a folder of scripts, not an installed package: load the file itself.
    spec = importlib.util.spec_from_file_location("liaison_bench_ws_bench", WS_BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ws_bench = _load()
wsclient = ws_bench.wsclient

# RFC 6455 5.7, "Examples", byte for byte: unmasked and masked "Hello", a fragmented "Hel" + "lo",
# an unmasked ping and a masked pong with body "Hello", 256 bytes with a 16-bit length and
# 65,536 bytes with a 64-bit length.
HELLO = b"\x81\x05\x48\x65\x6c\x6c\x6f"
HELLO_MASKED = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
FRAGMENTS = b"\x01\x03\x48\x65\x6c" + b"\x80\x02\x6c\x6f"
PING = b"\x89\x05\x48\x65\x6c\x6c\x6f"
PONG_MASKED = b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
BIN_256 = b"\x82\x7e\x01\x00" + bytes(range(256))
BIN_64K = b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00" + bytes(i % 251 for i in range(65536))
# A 64-bit length need not be minimal for a receiver: 200 bytes, masked, in the 8-byte form.
MASK = b"\x01\x02\x03\x04"
LONG_FORM = (
    b"\x82\xff" + (200).to_bytes(8, "big") + MASK + wsclient.apply_mask(bytes(range(200)), MASK)
)
CLOSE = b"\x88\x02\x03\xe8"  # close 1000

# The stream of every kind above except the 64 KiB frame (split separately: too long to split
# at every byte in a unit test).
STREAM = HELLO + PING + HELLO_MASKED + FRAGMENTS + BIN_256 + PONG_MASKED + LONG_FORM + CLOSE
EXPECTED = [
    (True, 0x1, b"Hello", False),
    (True, 0x9, b"Hello", False),
    (True, 0x1, b"Hello", True),
    (False, 0x1, b"Hel", False),
    (True, 0x0, b"lo", False),
    (True, 0x2, bytes(range(256)), False),
    (True, 0xA, b"Hello", True),
    (True, 0x2, bytes(range(200)), True),
    (True, 0x8, b"\x03\xe8", False),
]


def _parse_pieces(pieces: list[bytes]) -> list[tuple[bool, int, bytes, bool]]:
    parser = wsclient.FrameParser()
    frames: list[tuple[bool, int, bytes, bool]] = []
    for piece in pieces:
        frames.extend(tuple(frame) for frame in parser.feed(piece))
    assert parser.buffered == 0
    return frames


def test_every_split_of_the_recorded_stream_gives_the_same_frames() -> None:
    assert _parse_pieces([STREAM]) == EXPECTED
    for cut in range(len(STREAM) + 1):
        assert _parse_pieces([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut
    assert _parse_pieces([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_number_of_splits_gives_the_same_frames(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    assert _parse_pieces(pieces) == EXPECTED


def test_64_bit_length_frame_split_around_its_header_and_through_its_body() -> None:
    data = HELLO + BIN_64K + PING
    expected = [
        (True, 0x1, b"Hello", False),
        (True, 0x2, BIN_64K[10:], False),
        (True, 0x9, b"Hello", False),
    ]
    cuts = [*range(len(HELLO) + 12), *range(0, len(data), 4099), *range(len(data) - 12, len(data))]
    for cut in cuts:
        assert _parse_pieces([data[:cut], data[cut:]]) == expected, cut


def test_encode_frame_round_trips_every_length_form() -> None:
    for size in (0, 125, 126, 65535, 65536):
        payload = bytes(i % 256 for i in range(size))
        for mask in (None, MASK):
            frame = wsclient.encode_frame(wsclient.OP_BINARY, payload, mask=mask)
            assert _parse_pieces([frame]) == [(True, 0x2, payload, mask is not None)]
    assert wsclient.encode_frame(wsclient.OP_TEXT, b"Hello") == HELLO
    assert wsclient.encode_frame(wsclient.OP_TEXT, b"Hello", mask=b"\x37\xfa\x21\x3d") == (
        HELLO_MASKED
    )


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xc1\x00", 1002),  # RSV1 without an extension
        (b"\x83\x00", 1002),  # reserved data opcode
        (b"\x8b\x00", 1002),  # reserved control opcode
        (b"\x09\x00", 1002),  # fragmented ping
        (b"\x89\x7e\x00\x7e" + bytes(126), 1002),  # ping longer than 125 bytes
        (b"\x82\x7f\x80" + bytes(7), 1002),  # 64-bit length with the top bit set
        (b"\x82\x7f" + (1 << 40).to_bytes(8, "big"), 1009),  # bigger than the limit
    ],
)
def test_frame_parser_refuses_what_rfc_6455_forbids(data: bytes, code: int) -> None:
    with pytest.raises(wsclient.ProtocolError) as caught:
        wsclient.FrameParser().feed(data)
    assert caught.value.code == code


def test_accept_value_is_rfc_6455s_example() -> None:
    # RFC 6455 1.3: this key is answered with this accept value.
    assert wsclient.accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_request_and_response_checks() -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    request = wsclient.handshake_request("127.0.0.1", 8080, "/api/v1/stream", key)
    assert request.startswith(b"GET /api/v1/stream HTTP/1.1\r\n")
    assert b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" in request
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in request
    assert request.endswith(b"\r\n\r\n")
    good = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    )
    assert wsclient.split_head(good + b"\r\n\r\n\x81\x00") == (good, b"\x81\x00")
    assert wsclient.split_head(good) is None
    wsclient.check_handshake(good, key)
    with pytest.raises(wsclient.ProtocolError):
        wsclient.check_handshake(good.replace(b"s3pP", b"AAAA"), key)
    with pytest.raises(wsclient.ProtocolError):
        wsclient.check_handshake(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0", key)


def test_client_answers_ping_with_a_masked_pong_and_reassembles_fragments() -> None:
    conn = wsclient.ClientConnection()
    # The ping sits between the two fragments (RFC 6455 5.4 allows it); the second fragment
    # arrives in two reads.
    messages = conn.receive(FRAGMENTS[:5] + PING + FRAGMENTS[5:7])
    assert messages == []
    messages = conn.receive(FRAGMENTS[7:] + HELLO)
    assert messages == [(wsclient.OP_TEXT, b"Hello"), (wsclient.OP_TEXT, b"Hello")]
    assert conn.pings == 1
    pong = wsclient.FrameParser().feed(conn.data_to_send())
    assert [(f.opcode, f.payload, f.masked) for f in pong] == [(wsclient.OP_PONG, b"Hello", True)]
    assert conn.data_to_send() == b""


def test_client_echoes_a_close_and_refuses_masked_server_frames() -> None:
    conn = wsclient.ClientConnection()
    assert conn.receive(CLOSE + HELLO) == []
    assert conn.closed and conn.close_code == 1000
    reply = wsclient.FrameParser().feed(conn.data_to_send())
    assert [(f.opcode, f.payload, f.masked) for f in reply] == [(0x8, b"\x03\xe8", True)]

    masked = wsclient.ClientConnection()
    assert masked.receive(HELLO_MASKED) == []
    assert masked.closed and masked.close_code == 1002  # RFC 6455 5.1
    reply = wsclient.FrameParser().feed(masked.data_to_send())
    assert reply[0].opcode == 0x8 and reply[0].payload == b"\x03\xea"


def test_send_time_is_found_by_byte_search_and_matches_the_json() -> None:
    message = {
        "kind": "update",
        "feature": {
            "type": "Feature",
            "id": "BENCH-0007",
            "geometry": {"type": "Point", "coordinates": [-72.0, 40.0]},
            "properties": {"uid": "BENCH-0007", "remarks": "lbq/7/42/1764000000123456789"},
        },
    }
    payload = json.dumps(message, separators=(",", ":")).encode()
    assert ws_bench.send_time_ns(payload) == 1764000000123456789
    assert ws_bench.check_update(payload, 1764000000123456789)
    assert not ws_bench.check_update(payload, 1764000000123456788)
    assert ws_bench.send_time_ns(b'{"kind":"delete","uid":"x"}') is None
    assert not ws_bench.check_update(b'{"kind":"delete","uid":"x"}', 1)


def test_command_line_stays_on_loopback_and_reproduces_itself() -> None:
    with pytest.raises(SystemExit):
        ws_bench.parse_args(["--host", "192.0.2.1", "--tcp-port", "1", "--http-port", "2"])
    with pytest.raises(SystemExit):
        ws_bench.parse_args(["--tcp-port", "1"])
    config, json_out = ws_bench.parse_args(["--subscribers", "7", "--units", "30"])
    assert json_out is None and config.tcp_port is None
    again, _ = ws_bench.parse_args(config.command().split()[2:])
    assert again == config


async def test_short_run_against_a_real_server(start_server: ServerFactory) -> None:
    async with start_server(
        http="127.0.0.1:0", tls="off", https="off", enroll="off", udp="off"
    ) as server:
        assert server.tcp is not None and server.http is not None
        config = ws_bench.BenchConfig(
            tcp_port=server.tcp.port,
            http_port=server.http.port,
            server_pid=os.getpid(),
            subscribers=2,
            units=5,
            rate=1.0,
            duration=2.0,
            warmup=0.5,
            drain=1.0,
            readers=2,
            unit_connections=2,
        )
        # The benchmark blocks while it waits for its workers: keep the server's loop running.
        report = await asyncio.wait_for(asyncio.to_thread(ws_bench.run, config), RUN_TIMEOUT_S)
    assert report.connected == 2 and report.readers == 2
    assert report.snapshot_features_min == 5  # every unit registered before the feeds opened
    # Each unit sends once a second from a random phase: 2 reports each in a 2 s window.
    assert report.sent == 10
    assert report.expected == report.sent * 2
    assert report.received == report.expected and report.loss == 0
    assert report.messages_seen >= report.received
    assert report.other_messages == 0 and report.disconnects == 0
    assert report.validated >= 1 and report.invalid == 0
    assert report.latency_samples == report.received
    p50, p99, top = report.latency_p50_ms, report.latency_p99_ms, report.latency_max_ms
    assert p50 is not None and p99 is not None and top is not None
    assert 0 < p50 <= p99 <= top < 5000
    assert report.server_cpu_s is not None and report.server_cpu_s > 0
    assert report.server_peak_rss_mb is not None and report.server_peak_rss_mb > 10
    assert 0 <= report.sender_cpu_pct < 100
    assert len(report.reader_cpu_pct) == 2
    assert report.goal_p99_met is True
    text = ws_bench.format_report(report)
    assert "latency p50 / p90 / p99 / max" in text and "goal p99 < 250 ms: met" in text
    assert f"--tcp-port {server.tcp.port}" in report.command
