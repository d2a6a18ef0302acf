"""The audit log writer: append, durability, reopen, checkpoints, failure modes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liaison import audit
from liaison.audit import GENESIS_HASH, AuditLog, ChainHead, Kind, verify
from liaison.errors import StorageError


class FakeClock:
    def __init__(self, start: int = 1_764_072_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def log(path: Path, key: Ed25519PrivateKey) -> Iterator[AuditLog]:
    with AuditLog.open(path, key, clock=FakeClock()) as opened:
        yield opened


def read_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_append_writes_a_chained_canonical_line(log: AuditLog, path: Path) -> None:
    assert log.head == ChainHead(seq=0, hash=GENESIS_HASH)
    first = log.append(Kind.RELEASE, item="obj-7", label_id="sha256:ab", recipients=["a", "b"])
    second = log.append("deny", item="obj-7", reasons=["class_exceeds"])
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev == GENESIS_HASH and second.prev == first.hash
    assert log.head == second.head
    lines = path.read_bytes().splitlines(keepends=True)
    assert lines == [first.line(), second.line()]
    assert lines[0] == (
        b'{"fields":{"item":"obj-7","label_id":"sha256:ab","recipients":["a","b"]},'
        b'"hash":"' + first.hash.encode() + b'","kind":"release","prev":"' + b"0" * 64 + b'",'
        b'"seq":1,"time":1764072000000,"v":1}\n'
    )
    assert verify(path, log_key(log)).ok


def log_key(log: AuditLog) -> object:
    assert log._signing_key is not None
    return log._signing_key.public_key()


def test_append_many_is_one_write_and_one_fsync(
    log: AuditLog, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(audit.os, "fsync", lambda fd: (syncs.append(fd), real_fsync(fd))[1])
    records = log.append_many([("release", {"n": i}) for i in range(50)])
    assert [r.seq for r in records] == list(range(1, 51))
    assert len(syncs) == 1
    assert len(read_records(path)) == 50


def test_reopen_resumes_the_chain(path: Path, key: Ed25519PrivateKey) -> None:
    with AuditLog.open(path, key) as first:
        first.append("config_load", policy="sha256:00")
        head = first.append("release", item="a").head
    with AuditLog.open(path, key) as again:
        assert again.head == head
        resumed = again.append("release", item="b")
    assert resumed.seq == head.seq + 1 and resumed.prev == head.hash
    result = verify(path, key.public_key())
    assert result.ok and result.records == 3 and result.head == resumed.head


def test_checkpoints_every_n_records(path: Path, key: Ed25519PrivateKey) -> None:
    with AuditLog.open(path, key, checkpoint_every=3) as log:
        for i in range(7):
            log.append("release", n=i)
    kinds = [r["kind"] for r in read_records(path)]
    assert kinds == ["release"] * 3 + ["checkpoint"] + ["release"] * 3 + ["checkpoint", "release"]
    checkpoint = read_records(path)[3]
    fields = checkpoint["fields"]
    assert isinstance(fields, dict)
    assert fields["covers_seq"] == 3
    assert fields["key_id"] == audit.key_id(key.public_key())
    result = verify(path, key.public_key())
    assert result.ok and result.checkpoints == 2 and result.last_checkpoint_seq == 8
    assert result.unsigned_tail == 1  # one record after the second checkpoint


def test_checkpoint_by_interval_and_on_demand(path: Path, key: Ed25519PrivateKey) -> None:
    clock = FakeClock()
    with AuditLog.open(path, key, checkpoint_interval_ms=1000, clock=clock) as log:
        log.append("release", n=1)
        clock.now += 999
        log.append("release", n=2)
        clock.now += 1
        log.append("release", n=3)
        log.checkpoint()
    kinds = [r["kind"] for r in read_records(path)]
    assert kinds == ["release", "release", "release", "checkpoint", "checkpoint"]
    assert verify(path, key.public_key()).checkpoints == 2


def test_no_signing_key_no_checkpoints(path: Path) -> None:
    with AuditLog.open(path, None, checkpoint_every=1) as log:
        for i in range(3):
            log.append("release", n=i)
        with pytest.raises(ValueError):
            log.checkpoint()
    result = verify(path, None)
    assert result.ok and result.checkpoints == 0 and not result.signatures_checked


@pytest.mark.parametrize(
    ("kind", "fields", "error"),
    [
        ("checkpoint", {}, ValueError),
        ("recovery", {}, ValueError),
        ("Release", {}, ValueError),
        ("", {}, ValueError),
        ("release", {"latency": 1.5}, TypeError),
        ("release", {"big": 2**60}, ValueError),
        ("release", {"blob": "x" * 70_000}, ValueError),
        ("release", {"bad": "\ud800"}, ValueError),
        ("release", {"obj": object()}, TypeError),
    ],
)
def test_bad_records_are_refused_before_writing(
    log: AuditLog, path: Path, kind: str, fields: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        log.append_many([(kind, fields)])
    assert path.read_bytes() == b""
    assert log.append("release", ok=True).seq == 1  # the log is still usable


def test_write_failure_raises_storage_error_and_stays_failed(tmp_path: Path) -> None:
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("/dev/full is not available on this system")
    with AuditLog.open(full, None) as log:
        with pytest.raises(StorageError):
            log.append("release", item="a")
        with pytest.raises(StorageError):
            log.append("release", item="b")


def test_open_failures_raise_storage_error(tmp_path: Path, path: Path) -> None:
    with pytest.raises(StorageError):
        AuditLog.open(tmp_path / "missing-dir" / "audit.jsonl", None)
    with pytest.raises(StorageError):
        AuditLog.open(tmp_path, None)  # a directory
    with AuditLog.open(path, None), pytest.raises(StorageError, match="open elsewhere"):
        AuditLog.open(path, None)
    with pytest.raises(StorageError):
        verify(tmp_path / "nothing-here", None)


def test_closed_log_refuses_appends(path: Path) -> None:
    log = AuditLog.open(path, None)
    log.close()
    log.close()
    with pytest.raises(StorageError):
        log.append("release")


def test_interrupted_write_needs_explicit_repair(path: Path, key: Ed25519PrivateKey) -> None:
    with AuditLog.open(path, key) as log:
        head = log.append("release", item="a").head
    partial = b'{"fields":{"item":"b"},"hash":"'
    with open(path, "ab") as f:
        f.write(partial)
    assert verify(path, key.public_key()).failure.reason == "truncated_line"  # type: ignore[union-attr]
    with pytest.raises(StorageError, match="incomplete record"):
        AuditLog.open(path, key)
    with AuditLog.open(path, key, repair_truncated=True) as repaired:
        assert repaired.head.seq == head.seq + 1
    records = read_records(path)
    assert records[-1]["kind"] == "recovery"
    assert records[-1]["fields"] == {
        "truncated_bytes": len(partial),
        "truncated_sha256": audit.hashlib.sha256(partial).hexdigest(),
    }
    assert verify(path, key.public_key()).ok


def test_a_damaged_last_record_refuses_to_open(path: Path) -> None:
    with AuditLog.open(path, None) as log:
        log.append("release", item="a")
    text = path.read_bytes().replace(b'"item":"a"', b'"item":"b"')
    path.write_bytes(text)
    with pytest.raises(StorageError, match="damaged"):
        AuditLog.open(path, None)


def test_records_are_read_only(log: AuditLog) -> None:
    record = log.append("release", recipients=["a"])
    with pytest.raises(TypeError):
        record.fields["x"] = 1  # type: ignore[index]


def test_the_checkpoint_count_survives_reopening(path: Path, key: Ed25519PrivateKey) -> None:
    # Issue 9 item 4: a log reopened more often than every N records must still be signed every
    # N records; the count starts at the last checkpoint in the file, not at the open.
    for _run in range(6):
        with AuditLog.open(path, key, checkpoint_every=10, fsync=False) as log:
            for i in range(4):
                log.append("release", n=i)
    records = read_records(path)
    seqs = [r["seq"] for r in records if r["kind"] == "checkpoint"]
    # Records 1-10 (the 10th is due at seq 10), a checkpoint at 11, ten more, one at 22.
    assert seqs == [11, 22]
    result = verify(path, key.public_key())
    assert result.ok and result.checkpoints == 2
    assert result.unsigned_tail <= 10


def test_reopening_resumes_the_interval_from_the_last_checkpoint_time(
    path: Path, key: Ed25519PrivateKey
) -> None:
    clock = FakeClock()
    with AuditLog.open(path, key, checkpoint_interval_ms=1000, clock=clock) as log:
        log.append("release", n=1)
        log.checkpoint()
    clock.now += 1500
    with AuditLog.open(path, key, checkpoint_interval_ms=1000, clock=clock) as log:
        log.append("release", n=2)  # 1.5 s after the last checkpoint: one is due
    assert [r["kind"] for r in read_records(path)][-1] == "checkpoint"


def test_a_log_without_any_checkpoint_signs_one_at_the_next_append_when_overdue(
    path: Path, key: Ed25519PrivateKey
) -> None:
    with AuditLog.open(path, None) as log:  # written without a key: no checkpoints
        for i in range(12):
            log.append("release", n=i)
    with AuditLog.open(path, key, checkpoint_every=5) as log:
        assert log.unsigned_records >= 5  # none within the last 5 records: one is due
        log.append("release", n=99)
    kinds = [r["kind"] for r in read_records(path)]
    assert kinds[-2:] == ["release", "checkpoint"]
    assert verify(path, key.public_key()).unsigned_tail == 0


def test_the_backwards_scan_finds_a_checkpoint_across_read_chunks(
    path: Path, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "_SCAN_CHUNK", 97)  # lines split across many reads
    with AuditLog.open(path, key, checkpoint_every=50) as log:
        for i in range(3):
            log.append("release", n=i, pad="x" * 40)
        cp = log.checkpoint()
        for i in range(7):
            log.append("release", n=i, pad="y" * 40)
    with AuditLog.open(path, key, checkpoint_every=50) as log:
        assert log.unsigned_records == log.head.seq - cp.seq == 7


def test_a_clean_close_signs_a_checkpoint(path: Path, key: Ed25519PrivateKey) -> None:
    log = AuditLog.open(path, key, fsync=False)
    log.append("release", n=1)
    log.close(checkpoint=True)
    result = verify(path, key.public_key())
    assert result.ok and result.checkpoints == 1 and result.unsigned_tail == 0
    # Nothing new since that checkpoint: a second clean close writes nothing.
    size = path.stat().st_size
    AuditLog.open(path, key).close(checkpoint=True)
    assert path.stat().st_size == size
    # Without a key there is nothing to sign, and closing still works.
    AuditLog.open(path, None).close(checkpoint=True)
    assert path.stat().st_size == size
