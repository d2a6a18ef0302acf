"""The feed's WebSocket text frames (RFC 6455 5.2), written once per event for every socket."""

from __future__ import annotations

import pytest

from liaison.api.ws import text_frame


def parse(frame: bytes) -> tuple[int, bool, bytes]:
    """(opcode, fin, payload) of one unmasked frame, read the way a browser does."""
    fin, opcode = bool(frame[0] & 0x80), frame[0] & 0x0F
    assert not frame[1] & 0x80, "server frames are never masked"
    n, at = frame[1] & 0x7F, 2
    if n == 126:
        n, at = int.from_bytes(frame[2:4], "big"), 4
    elif n == 127:
        n, at = int.from_bytes(frame[2:10], "big"), 10
    payload = frame[at:]
    assert len(payload) == n
    return opcode, fin, payload


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 200_000])
def test_every_length_form_round_trips(size: int) -> None:
    payload = b"x" * size
    opcode, fin, got = parse(text_frame(payload))
    assert (opcode, fin, got) == (1, True, payload)


def test_the_rfc_example() -> None:
    # RFC 6455 5.7: a single-frame unmasked text message "Hello".
    assert text_frame(b"Hello") == bytes.fromhex("810548656c6c6f")
