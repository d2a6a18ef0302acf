"""The cluster bus's message codec (protocol/cluster_wire.py): round trip and hostile headers."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liaison.model.principal import Principal, PrincipalKind
from liaison.protocol import cluster_wire
from liaison.protocol.cluster_wire import BusEvent, SeenIds, WireError

SENDER = Principal(
    name="ukr-s",
    kind=PrincipalKind.USER,
    in_groups=frozenset({"UKR", "HQ"}),
    out_groups=frozenset({"UKR"}),
    org="UKR",
    listener="tls",
)


def sample(label: str | None = '{"v":1}') -> BusEvent:
    return BusEvent("node0:1:7", "node0", SENDER, label, b'<event uid="x"/>')


def test_round_trip_keeps_sender_label_and_bytes() -> None:
    headers, payload = cluster_wire.encode(sample())
    back = cluster_wire.decode(headers, payload)
    assert back == sample()
    assert back.sender.auths is None  # authorizations never travel: the receiver decides


def test_the_stream_id_is_per_group_and_the_event_id_is_not() -> None:
    a, _ = cluster_wire.encode(sample(), "UKR")
    b, _ = cluster_wire.encode(sample(), "HQ")
    assert a[cluster_wire.H_MSG_ID] == b[cluster_wire.H_MSG_ID] == "node0:1:7"
    assert a[cluster_wire.H_NATS_MSG_ID] != b[cluster_wire.H_NATS_MSG_ID]


def test_unlabelled_event_has_no_label_header() -> None:
    headers, _ = cluster_wire.encode(sample(None))
    assert cluster_wire.H_LABEL not in headers
    assert cluster_wire.decode(headers, b"x").label_json is None


def test_subjects_are_per_group_and_safe_for_any_name() -> None:
    assert cluster_wire.subject_for("liaison", "UKR") == "liaison.ev.g.554b52"
    odd = cluster_wire.subject_for("liaison", "a.b *>")
    assert odd.count(".") == 3 and "*" not in odd and ">" not in odd
    assert cluster_wire.stream_subjects("liaison") == "liaison.ev.>"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({cluster_wire.H_VERSION: "2"}, "wire version"),
        ({cluster_wire.H_MSG_ID: ""}, "missing"),
        ({cluster_wire.H_SENDER: "not json"}, "sender"),
        ({cluster_wire.H_SENDER: "[]"}, "not an object"),
        (
            {cluster_wire.H_SENDER: json.dumps({"name": "", "kind": "user", "in": [], "out": []})},
            "name",
        ),
        (
            {cluster_wire.H_SENDER: json.dumps({"name": "x", "kind": "root", "in": [], "out": []})},
            "kind",
        ),
        (
            {
                cluster_wire.H_SENDER: json.dumps(
                    {"name": "x", "kind": "user", "in": "A", "out": []}
                )
            },
            "groups",
        ),
        (
            {
                cluster_wire.H_SENDER: json.dumps(
                    {"name": "x", "kind": "user", "in": [], "out": [], "org": 5}
                )
            },
            "org",
        ),
        ({cluster_wire.H_SENDER: "x" * (cluster_wire.MAX_SENDER_BYTES + 1)}, "too long"),
    ],
)
def test_hostile_headers_are_refused(change: dict[str, str], why: str) -> None:
    headers, payload = cluster_wire.encode(sample())
    headers.update(change)
    with pytest.raises(WireError, match=why):
        cluster_wire.decode(headers, payload)


def test_no_headers_is_refused() -> None:
    with pytest.raises(WireError):
        cluster_wire.decode(None, b"x")


@given(
    st.dictionaries(st.text(max_size=20), st.text(max_size=200), max_size=6), st.binary(max_size=64)
)
def test_any_headers_either_decode_or_raise_wire_error(
    headers: dict[str, str], payload: bytes
) -> None:
    with contextlib.suppress(WireError):  # never any other exception
        cluster_wire.decode(headers, payload)


def test_seen_ids_drop_a_second_copy_and_stay_bounded() -> None:
    seen = SeenIds(limit=3)
    assert seen.first_time("a") and not seen.first_time("a")
    for k in "bcd":
        assert seen.first_time(k)
    assert seen.first_time("a")  # forgotten: the oldest went first


# --- the latest-state bucket's values --------------------------------------------------------


def latest_sample() -> cluster_wire.LatestValue:
    return cluster_wire.LatestValue(
        node="node0",
        sender_groups=frozenset({"UKR", "HQ"}),
        label_json='{"v":1}',
        xml='<event uid="é-x"/>'.encode(),
        origin="feed:adsb",
    )


def test_latest_value_and_key_round_trip() -> None:
    value = latest_sample()
    assert cluster_wire.decode_latest(cluster_wire.encode_latest(value)) == value
    unlabelled = cluster_wire.LatestValue("n", frozenset(), None, b"<event/>")
    assert cluster_wire.decode_latest(cluster_wire.encode_latest(unlabelled)) == unlabelled
    for uid in ("ANDROID-1234", "GeoChat.a.b.c", "é 😀 /.*>", "x" * 256):
        key = cluster_wire.latest_key(uid)
        # NATS KV keys: [-/_=.a-zA-Z0-9] only (ADR-8).
        assert all(c.isascii() and (c.isalnum() or c in "-/_=.") for c in key)
        assert cluster_wire.uid_of_key(key) == uid


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"v":2,"node":"n","groups":[],"label":null,"xml":"<e/>"}',
        b'{"v":1,"node":"","groups":[],"label":null,"xml":"<e/>"}',
        b'{"v":1,"node":"n","groups":"g","label":null,"xml":"<e/>"}',
        b'{"v":1,"node":"n","groups":[1],"label":null,"xml":"<e/>"}',
        b'{"v":1,"node":"n","groups":[],"label":5,"xml":"<e/>"}',
        b'{"v":1,"node":"n","groups":[],"label":null,"xml":""}',
        b'{"v":1,"node":"n","groups":[],"label":null,"xml":"\\ud800"}',
        b'{"v":1,"node":"n","groups":[],"label":null,"xml":"<e/>","origin":7}',
        b'{"v":1,"node":"n","groups":[],"label":null,"xml":"' + b"x" * (130 * 1024) + b'"}',
    ],
)
def test_hostile_latest_values_are_refused(data: bytes) -> None:
    with pytest.raises(WireError):
        cluster_wire.decode_latest(data)


@pytest.mark.parametrize("key", ["x.41", "u.zz", "u.ff", "u.4"])
def test_keys_not_ours_are_refused(key: str) -> None:
    with pytest.raises(WireError):
        cluster_wire.uid_of_key(key)


@given(st.binary(max_size=512))
def test_any_bytes_decode_or_are_refused(data: bytes) -> None:
    with contextlib.suppress(WireError):
        cluster_wire.decode_latest(data)
