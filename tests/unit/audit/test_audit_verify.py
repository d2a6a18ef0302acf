"""Verification: every kind of tampering is found, at the right line, with the right reason."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from liaison.audit import (
    AuditLog,
    ChainHead,
    ChainVerifier,
    make_checkpoint,
    make_record,
    record_hash,
    verify,
    verify_lines,
)
from liaison.model.canonical import canonical_json

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()


def build_lines(n: int = 10, *, checkpoint_every: int = 4) -> list[bytes]:
    """A log as lines, built with the pure functions (a checkpoint after every 4 records)."""
    head = ChainHead()
    lines: list[bytes] = []
    for i in range(n):
        record = make_record(head, time_ms=1000 + i, kind="release", fields={"n": i, "to": ["a"]})
        lines.append(record.line())
        head = record.head
        if (i + 1) % checkpoint_every == 0:
            checkpoint = make_checkpoint(head, time_ms=1000 + i, signing_key=KEY)
            lines.append(checkpoint.line())
            head = checkpoint.head
    return lines


# 12 lines: seq 1-4 release, 5 checkpoint, 6-9 release (n = 4..7), 10 checkpoint, 11-12 release.
LINES = build_lines()


def rehash(obj: dict[str, object]) -> dict[str, object]:
    obj["hash"] = record_hash(obj["seq"], obj["time"], obj["kind"], obj["fields"], obj["prev"])  # type: ignore[arg-type]
    return obj


def line_of(obj: dict[str, object]) -> bytes:
    return canonical_json(obj) + b"\n"


def failure(lines: list[bytes], key: object = PUBLIC) -> tuple[int, int | None, str]:
    result = verify_lines(lines, key)  # type: ignore[arg-type]
    assert not result.ok and result.failure is not None
    return result.failure.line, result.failure.seq, result.failure.reason


def test_untouched_log_verifies() -> None:
    result = verify_lines(LINES, PUBLIC)
    assert result.ok and result.failure is None
    assert (result.records, result.checkpoints, result.head.seq) == (12, 2, 12)
    assert result.last_checkpoint_seq == 10 and result.unsigned_tail == 2
    assert verify_lines([], PUBLIC).ok


def test_one_record_edited() -> None:
    lines = list(LINES)
    lines[5] = lines[5].replace(b'"n":4', b'"n":5')
    assert failure(lines) == (6, 6, "bad_hash")


def test_one_record_edited_and_rehashed_breaks_the_next_link() -> None:
    lines = list(LINES)
    obj = json.loads(lines[5])
    obj["fields"]["n"] = 99
    lines[5] = line_of(rehash(obj))
    assert failure(lines) == (7, 7, "chain_break")


def test_rewriting_the_whole_tail_is_caught_by_the_checkpoint_signature() -> None:
    lines = list(LINES)
    prev = None
    for i in range(5, len(lines)):
        obj = json.loads(lines[i])
        if i == 5:
            obj["fields"]["n"] = 99
        else:
            obj["prev"] = prev
        if obj["kind"] == "checkpoint":
            obj["fields"]["covers_hash"] = obj["prev"]  # consistent, but the old signature
        lines[i] = line_of(rehash(obj))
        prev = obj["hash"]
    assert failure(lines) == (10, 10, "bad_signature")
    # Without the public key, only the signed checkpoint could tell: the chain itself is whole.
    assert verify_lines(lines, None).ok


def test_one_record_removed() -> None:
    lines = LINES[:3] + LINES[4:]
    assert failure(lines) == (4, 5, "seq_gap")


def test_records_reordered() -> None:
    lines = list(LINES)
    lines[2], lines[3] = lines[3], lines[2]
    assert failure(lines) == (3, 4, "seq_gap")


def test_record_duplicated() -> None:
    lines = [*LINES[:3], LINES[2], *LINES[3:]]
    assert failure(lines) == (4, 3, "seq_gap")


def test_truncated_last_line() -> None:
    lines = [*LINES[:-1], LINES[-1][:40]]
    assert failure(lines) == (12, None, "truncated_line")
    assert failure([*LINES[:-1], LINES[-1].rstrip(b"\n")]) == (12, None, "truncated_line")


def test_a_tail_cut_at_a_line_boundary_shows_in_the_head() -> None:
    # Undetectable locally by design; the head (compared with a partner-held checkpoint) shows it.
    result = verify_lines(LINES[:7], PUBLIC)
    assert result.ok and result.head.seq == 7


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda line: line.replace(b",", b", ", 1), "not_canonical"),
        (lambda line: b" " + line, "not_canonical"),
        (lambda line: line.replace(b'"v":1', b'"v":1,"v":1'), "not_json"),
        (lambda line: line.replace(b'"v":1', b'"v":2'), "bad_record"),
        (lambda line: line.replace(b'"v":1', b'"v":1,"x":1'), "bad_record"),
        (lambda line: line.replace(b'"time":1000', b'"time":1000.0'), "bad_record"),
        (lambda line: line.replace(b'"time":1000', b'"time":NaN'), "not_json"),
        (lambda line: line.replace(b'"kind":"release"', b'"kind":"Release"'), "bad_record"),
        (lambda line: b"\xff" + line, "not_json"),
        (lambda line: b"[]\n", "bad_record"),
        (lambda line: b"x" * 70_000 + b"\n", "record_too_large"),
    ],
)
def test_malformed_lines(mutate: object, reason: str) -> None:
    lines = [mutate(LINES[0]), *LINES[1:]]  # type: ignore[operator]
    assert failure(lines)[0] == 1
    assert failure(lines)[2] == reason


def test_wrong_key_fails() -> None:
    other = Ed25519PrivateKey.generate().public_key()
    assert failure(LINES, other) == (5, 5, "wrong_key")


def test_forged_checkpoint_claiming_our_key_id_fails() -> None:
    lines = list(LINES)
    obj = json.loads(lines[4])
    forger = Ed25519PrivateKey.generate()
    fake = forger.sign(b"liaison-audit-checkpoint-v1\n" + b"{}")
    obj["fields"]["sig"] = base64.b64encode(fake).decode()
    lines[4] = line_of(rehash(obj))
    assert failure(lines) == (5, 5, "bad_signature")
    obj["fields"]["sig"] = "!!not base64!!"
    lines[4] = line_of(rehash(obj))
    assert failure(lines) == (5, 5, "bad_signature")


def test_checkpoint_must_cover_the_record_before_it() -> None:
    lines = list(LINES)
    obj = json.loads(lines[4])
    obj["fields"]["covers_seq"] = 3
    lines[4] = line_of(rehash(obj))
    assert failure(lines, None) == (5, 5, "bad_checkpoint")
    del obj["fields"]["sig"]
    lines[4] = line_of(rehash(obj))
    assert failure(lines, None) == (5, 5, "bad_checkpoint")


def test_verifier_stops_at_the_first_failure() -> None:
    verifier = ChainVerifier(PUBLIC)
    assert verifier.feed(LINES[0])
    assert not verifier.feed(LINES[2])
    assert not verifier.feed(LINES[1])  # even a line that would have been right
    result = verifier.result()
    assert result.failure is not None and result.failure.line == 2 and result.records == 1


def test_verify_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(LINES))
    assert verify(path, PUBLIC).ok
    edited = b"".join(LINES).replace(b'"n":7', b'"n":8')
    path.write_bytes(edited)
    result = verify(path, PUBLIC)
    assert result.failure is not None and (result.failure.line, result.failure.reason) == (
        9,
        "bad_hash",
    )


def test_log_written_by_auditlog_matches_the_pure_functions(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, KEY, checkpoint_every=4, clock=lambda: 1000) as log:
        for i in range(5):
            log.append("release", n=i, to=["a"])
    head = ChainHead()
    expected = b""
    for i in range(5):
        record = make_record(head, time_ms=1000, kind="release", fields={"n": i, "to": ["a"]})
        expected += record.line()
        head = record.head
        if i == 3:
            checkpoint = make_checkpoint(head, time_ms=1000, signing_key=KEY)
            expected += checkpoint.line()
            head = checkpoint.head
    assert path.read_bytes() == expected  # Ed25519 signatures are deterministic


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(b"".join(LINES)) - 1), st.integers(1, 255))
def test_any_single_byte_change_is_detected(position: int, delta: int) -> None:
    data = bytearray(b"".join(LINES))
    data[position] = (data[position] + delta) % 256
    lines = bytes(data).splitlines(keepends=True)
    assert not verify_lines(lines, PUBLIC).ok


TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(TEXT, JSON_VALUES, max_size=4))
def test_stored_line_is_the_canonical_encoding(fields: dict[str, object]) -> None:
    record = make_record(ChainHead(), time_ms=5, kind="release", fields=fields)
    assert record.line() == canonical_json(record.to_json_obj()) + b"\n"
    assert record.hash == record_hash(1, 5, "release", fields, "0" * 64)
    assert verify_lines([record.line()], None).ok


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(ValueError):
        make_record(ChainHead(), time_ms=5, kind="release", fields={"\ud800": 1})


def test_logs_with_the_old_federation_field_names_still_verify(tmp_path: Path) -> None:
    # Before issue 9 item 6 the partner link wrote egress/item/content_sha256; verify checks the
    # chain and hashes, never field names, so such logs keep verifying.
    from liaison.audit import AuditLog

    path = tmp_path / "old.jsonl"
    key = Ed25519PrivateKey.generate()
    with AuditLog.open(path, key) as log:
        log.append("release", egress="fed:ukr", item="u1", content_sha256="ab" * 32, priority=1)
        log.append("deny", egress="fed:ukr", item="u2", stage="guard", reasons=["no_label"])
        log.append("ingest", ingress="fed:ukr", seq=1, content_sha256="cd" * 32, item="u3")
        log.checkpoint()
    result = verify(path, key.public_key())
    assert result.ok and result.records == 4 and result.checkpoints == 1


def test_release_and_deny_records_have_the_documented_fields() -> None:
    from liaison.audit import deny_record, release_record

    kind, fields = release_record(
        path="file",
        uid="f1",
        type="application/zip",
        label_id="sha256:aa",
        originator="USA",
        to_org="UKR",
        recipients=["b", "a"],
        sha256="ab" * 32,
    )
    assert kind == "release" and fields["recipients"] == ["a", "b"]
    assert set(fields) == {
        "path",
        "uid",
        "type",
        "label_id",
        "originator",
        "to_org",
        "recipients",
        "sha256",
    }
    _, fed = release_record(
        path="federation",
        uid="e1",
        type="a-f-G",
        label_id="sha256:aa",
        originator="USA",
        to_org="UKR",
        recipients=["federation:ukr"],
        sha256="ab" * 32,
        peer="ukr",
        priority=2,
        removed=["remarks"],
    )
    assert {"peer", "priority", "removed"} <= set(fed)
    kind, deny = deny_record(
        path="live", uid="e1", type="a-f-G", label_id=None, reasons=["no_label"], recipients=["x"]
    )
    assert kind == "deny" and set(deny) == {"path", "uid", "type", "reasons", "recipients"}
    kind, mismatch = deny_record(
        path="federation",
        uid="e1",
        type="a-f-G",
        label_id="sha256:aa",
        reasons=["guard_mismatch", "label_changed"],
        recipients=["federation:ukr"],
        peer="ukr",
        stage="recheck",
        mismatch=True,
    )
    assert kind == "guard_mismatch" and mismatch["stage"] == "recheck"


def test_verify_stops_at_an_offset_on_a_record_boundary(tmp_path: Path) -> None:
    """``end``: a log being appended to is checked up to the size it had (the operator API)."""
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(LINES) + b'{"partial')  # a record being written after the size
    end = len(b"".join(LINES[:7]))
    result = verify(path, PUBLIC, end=end)
    assert result.ok and result.complete and result.records == 7 and result.head.seq == 7
    whole = verify(path, PUBLIC, end=len(b"".join(LINES)))
    assert whole.ok and whole.records == len(LINES)


def test_verify_stops_at_its_deadline_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(LINES))
    result = verify(path, PUBLIC, deadline=0.0)  # long past
    assert result.ok and not result.complete and result.records == 0
    assert verify(path, PUBLIC, deadline=float("inf")).complete
    # A failure found is a complete answer: the log is bad, whatever follows.
    path.write_bytes(b"".join(LINES[:3]) + b"not json\n")
    bad = verify(path, PUBLIC, deadline=float("inf"))
    assert not bad.ok and bad.complete and bad.failure is not None
