"""Access notices of the cluster bus (protocol/cluster_wire.py): revocations and sign-outs, their
subjects, and every way a hostile notice is refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liaison.protocol import cluster_wire
from liaison.protocol.cluster_wire import (
    KIND_CERTIFICATE,
    KIND_SIGN_OUT,
    KIND_USER,
    REVOCATION_KINDS,
    AccessNotice,
    WireError,
)

PREFIX = "liaison"
ALL = frozenset({KIND_USER, KIND_CERTIFICATE, KIND_SIGN_OUT})


def round_trip(notice: AccessNotice) -> AccessNotice:
    subject = cluster_wire.notice_subject(PREFIX, notice)
    return cluster_wire.decode_notice(PREFIX, subject, cluster_wire.encode_notice(notice), ALL)


@pytest.mark.parametrize(
    ("notice", "subject"),
    [
        (AccessNotice(KIND_USER, "n1", name="bob"), "liaison.rv.u.626f62"),
        (AccessNotice(KIND_CERTIFICATE, "n1", serial=0xABC), "liaison.rv.c.abc"),
        (AccessNotice(KIND_SIGN_OUT, "n1", name="bob"), "liaison.so"),
    ],
)
def test_each_kind_round_trips_on_its_own_subject(notice: AccessNotice, subject: str) -> None:
    assert cluster_wire.notice_subject(PREFIX, notice) == subject
    assert round_trip(notice) == notice


def test_revocation_subjects_are_in_the_revocation_stream_not_the_events_stream() -> None:
    user = cluster_wire.notice_subject(PREFIX, AccessNotice(KIND_USER, "n", name="a.b c"))
    assert user.startswith("liaison.rv.") and " " not in user
    assert cluster_wire.revocation_subjects(PREFIX) == "liaison.rv.>"
    assert cluster_wire.stream_subjects(PREFIX) == "liaison.ev.>"


def payload(**doc: object) -> bytes:
    return json.dumps(doc).encode()


GOOD_USER = {"v": 1, "kind": "user", "node": "n1", "name": "bob"}


@pytest.mark.parametrize(
    ("subject", "data"),
    [
        ("liaison.rv.u.626f62", b"not json"),
        ("liaison.rv.u.626f62", b"[1, 2]"),
        ("liaison.rv.u.626f62", b"\xff\xfe"),
        ("liaison.rv.u.626f62", payload(**{**GOOD_USER, "v": 2})),
        ("liaison.rv.u.626f62", payload(**{**GOOD_USER, "v": True})),
        ("liaison.rv.u.626f62", payload(**{**GOOD_USER, "kind": "everyone"})),
        ("liaison.rv.u.626f62", payload(**{**GOOD_USER, "node": ""})),
        ("liaison.rv.u.626f62", payload(**{**GOOD_USER, "node": 7})),
        ("liaison.rv.u.626f62", payload(**{**GOOD_USER, "name": None})),
        ("liaison.rv.u.0a", payload(**{**GOOD_USER, "name": "\n"})),
        ("liaison.rv.u.626f62", payload(**{**GOOD_USER, "name": "x" * 300})),
        # the subject must be the one its content names (one subject per revoked principal)
        ("liaison.rv.u.616c696365", payload(**GOOD_USER)),
        ("liaison.so", payload(**GOOD_USER)),
        ("liaison.rv.c.abc", payload(v=1, kind="certificate", node="n", serial="ABC")),
        ("liaison.rv.c.0", payload(v=1, kind="certificate", node="n", serial="0")),
        ("liaison.rv.c.ab", payload(v=1, kind="certificate", node="n", serial="00ab")),
        ("liaison.rv.c.1", payload(v=1, kind="certificate", node="n", serial="1" * 41)),
        ("liaison.rv.c.1", payload(v=1, kind="certificate", node="n", serial=1)),
        ("liaison.rv.u.626f62", b" " * (cluster_wire.MAX_NOTICE_BYTES + 1)),
    ],
)
def test_hostile_notices_are_refused(subject: str, data: bytes) -> None:
    with pytest.raises(WireError):
        cluster_wire.decode_notice(PREFIX, subject, data, ALL)


def test_a_kind_not_expected_on_that_subscription_is_refused() -> None:
    notice = AccessNotice(KIND_SIGN_OUT, "n1", name="bob")
    data = cluster_wire.encode_notice(notice)
    with pytest.raises(WireError, match="kind"):
        cluster_wire.decode_notice(PREFIX, "liaison.so", data, REVOCATION_KINDS)


@given(st.binary(max_size=600))
def test_any_bytes_are_a_notice_of_that_subject_or_a_wire_error(data: bytes) -> None:
    subject = "liaison.rv.u.626f62"
    try:
        notice = cluster_wire.decode_notice(PREFIX, subject, data, ALL)
    except WireError:
        return
    assert notice.kind == KIND_USER and notice.name == "bob"
    assert cluster_wire.notice_subject(PREFIX, notice) == subject
