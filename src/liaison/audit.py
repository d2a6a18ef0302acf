"""Append-only, hash-chained audit log of label decisions (JSON lines), with signed checkpoints.

One record per line, each the RFC 8785 canonical JSON of::

    {"fields": {...}, "hash": "<hex>", "kind": "release", "prev": "<hex>", "seq": 7,
     "time": 1764072000000, "v": 1}

``hash`` is SHA-256 over the canonical JSON of the record without ``hash``; ``prev`` is the hash
of the record before (64 zeros for the first), so editing, removing or reordering a record
breaks the chain (Schneier and Kelsey, "Secure Audit Logs to Support Computer Forensics", 1999).
A ``checkpoint`` record carries an Ed25519 signature over the sequence number and hash of the
record before it, so a rewrite of the whole chain after a checkpoint is detectable too, and the
partner can hold our checkpoints (labels.md 7f). Truncating the tail after the last checkpoint is
only detectable against a checkpoint held elsewhere: ``VerifyResult.head`` is what to compare.

The hashing and verification are pure functions (:func:`make_record`, :class:`ChainVerifier`).
The file I/O in :class:`AuditLog` is small and synchronous; the caller decides whether to run it
off the event loop. A record is written, flushed and fsynced *before* the release it records is
made; when the file cannot be written, ``append`` raises StorageError and the caller must stop
releasing (fail closed).

Why fsync, and why per batch: a write that only reached the page cache is lost on a power cut
or kernel crash, and then an item would have left the server with no record of it, which is the
one thing an audit log of releases must not allow (NIST SP 800-53 AC-4(26); labels.md 7f). An
fsync costs 0.1 to 10 ms depending on the disk (about 0.25 ms measured on this project's CI
disk), too much to pay per record at position-report rates, so :meth:`AuditLog.append_many`
writes a whole batch (the decisions of one fan-out or one loop tick) with one write and one
fsync, and the caller releases the batch once it returns.
"""

from __future__ import annotations

import base64
import binascii
import enum
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from liaison.errors import StorageError
from liaison.model.canonical import canonical_json

RECORD_VERSION = 1
GENESIS_HASH = "0" * 64

# Largest record line. Audit records hold ids, codes and digests, never payloads; 64 KiB leaves
# room for a fan-out record listing a few hundred recipient ids.
MAX_RECORD_BYTES = 64 * 1024

# Default checkpoint spacing: at PLI rates (hundreds of decisions a second) a checkpoint every
# 1000 records is a few seconds of activity, and costs one signature (~50 us) per 1000 records.
DEFAULT_CHECKPOINT_EVERY = 1000
# verify() looks at its deadline once per this many lines (a few ms of work).
_DEADLINE_EVERY = 256

# Domain separation for checkpoint signatures, so a signature made for anything else with the
# same key can never pass as a checkpoint.
_CHECKPOINT_CONTEXT = b"liaison-audit-checkpoint-v1\n"

# Integers in records stay within the exact range of RFC 8785 numbers (2^53 - 1).
_MAX_TIME_MS = 2**53 - 1
_KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,31}", re.ASCII)
_HEX64_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_RECORD_KEYS = frozenset({"v", "seq", "time", "kind", "fields", "prev", "hash"})
_CHECKPOINT_KEYS = frozenset({"covers_seq", "covers_hash", "key_id", "sig"})


class Kind(enum.StrEnum):
    """Record kinds Liaison writes. Other lowercase kinds are accepted; two are reserved."""

    INGEST = "ingest"
    INGEST_REJECT = "ingest_reject"
    RELEASE = "release"
    DENY = "deny"
    RELABEL = "relabel"
    GUARD_MISMATCH = "guard_mismatch"
    PEER_LINK = "peer_link"
    CONFIG_LOAD = "config_load"
    CHECKPOINT = "checkpoint"  # reserved: written by AuditLog only
    RECOVERY = "recovery"  # reserved: written by AuditLog.open(repair_truncated=True) only


_RESERVED_KINDS = frozenset({Kind.CHECKPOINT.value, Kind.RECOVERY.value})


# --- pure: the release and deny records ---------------------------------------------------------
# Every release across an organisation boundary, and every refusal the router or the federation
# guard makes, is recorded by these two builders and no other code, so each kind has one set of
# field names wherever it is written (docs/labels.md section 5 documents them field by field).

# How an item left (the ``path`` field): live delivery, replay to a newcomer, a relabelled item,
# HTTP and Marti queries, a file or data package download, the partner link.
RELEASE_PATHS = ("live", "replay", "relabel", "http", "query", "marti", "file", "federation")


def release_record(
    *,
    path: str,
    uid: str,
    type: str,
    label_id: str,
    originator: str,
    to_org: str,
    recipients: Iterable[str],
    sha256: str,
    peer: str | None = None,
    priority: int | None = None,
    removed: Sequence[str] = (),
) -> tuple[str, dict[str, object]]:
    """A ``release`` record: ``uid``/``type`` of an item labelled ``label_id`` (owned by
    ``originator``) released over ``path`` to ``recipients`` of organisation ``to_org``, as
    bytes whose SHA-256 is ``sha256``. ``peer``, ``priority`` and ``removed`` are written only
    for the partner link (``path="federation"``)."""
    fields: dict[str, object] = {
        "path": path,
        "uid": uid,
        "type": type,
        "label_id": label_id,
        "originator": originator,
        "to_org": to_org,
        "recipients": sorted(recipients),
        "sha256": sha256,
    }
    if peer is not None:
        fields["peer"] = peer
    if priority is not None:
        fields["priority"] = priority
    if removed:
        fields["removed"] = list(removed)
    return Kind.RELEASE.value, fields


def deny_record(
    *,
    path: str,
    uid: str,
    type: str,
    label_id: str | None,
    reasons: Iterable[str],
    recipients: Iterable[str],
    peer: str | None = None,
    stage: str | None = None,
    mismatch: bool = False,
) -> tuple[str, dict[str, object]]:
    """A ``deny`` record (``guard_mismatch`` with ``mismatch``: the federation guard's re-check
    of the exact release bytes disagreed): the item was refused to ``recipients`` for
    ``reasons``. ``label_id`` is left out when the item has no valid label; ``peer`` and
    ``stage`` (guard, recheck, send) are written only for the partner link."""
    fields: dict[str, object] = {
        "path": path,
        "uid": uid,
        "type": type,
        "reasons": list(reasons),
        "recipients": sorted(recipients),
    }
    if label_id is not None:
        fields["label_id"] = label_id
    if peer is not None:
        fields["peer"] = peer
    if stage is not None:
        fields["stage"] = stage
    return (Kind.GUARD_MISMATCH.value if mismatch else Kind.DENY.value), fields


# --- pure: records and the chain ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainHead:
    """The end of a chain: the last sequence number and its hash (0 and GENESIS_HASH if empty)."""

    seq: int = 0
    hash: str = GENESIS_HASH


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One audit record. ``fields`` is read-only JSON data (no floats)."""

    seq: int
    time: int  # ms since the Unix epoch
    kind: str
    fields: Mapping[str, object]
    prev: str
    hash: str
    encoded: bytes = field(default=b"", repr=False, compare=False)  # the stored line, if known

    def to_json_obj(self) -> dict[str, object]:
        return {
            "v": RECORD_VERSION,
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            "fields": dict(self.fields),
            "prev": self.prev,
            "hash": self.hash,
        }

    def line(self) -> bytes:
        """The record as it is stored: canonical JSON and a newline."""
        return self.encoded or canonical_json(self.to_json_obj()) + b"\n"

    @property
    def head(self) -> ChainHead:
        return ChainHead(seq=self.seq, hash=self.hash)


def _body(seq: int, time_ms: int, kind: str, fields: Mapping[str, object], prev: str) -> bytes:
    return canonical_json(
        {
            "v": RECORD_VERSION,
            "seq": seq,
            "time": time_ms,
            "kind": kind,
            "fields": fields,
            "prev": prev,
        }
    )


def record_hash(seq: int, time_ms: int, kind: str, fields: Mapping[str, object], prev: str) -> str:
    """SHA-256 (hex) over the canonical JSON of a record without its ``hash`` member."""
    return hashlib.sha256(_body(seq, time_ms, kind, fields, prev)).hexdigest()


def make_record(
    head: ChainHead, *, time_ms: int, kind: str, fields: Mapping[str, object]
) -> AuditRecord:
    """The record that follows ``head``. Raises ValueError/TypeError for fields that are not
    canonical JSON data, a bad kind, or a record over MAX_RECORD_BYTES."""
    if _KIND_RE.fullmatch(kind) is None:
        raise ValueError(f"audit kind must be 1-32 of a-z 0-9 _, got {kind!r}")
    if type(time_ms) is not int or not 0 <= time_ms <= _MAX_TIME_MS:
        raise ValueError("time_ms must be a non-negative integer")
    if _HEX64_RE.fullmatch(head.hash) is None or type(head.seq) is not int or head.seq < 0:
        raise ValueError("not a chain head")
    fields_json = canonical_json(dict(fields))
    seq = head.seq + 1
    # The members in RFC 8785 order (fields, hash, kind, prev, seq, time, v), assembled from
    # their canonical encodings: the same bytes canonical_json would give for the whole record
    # (the verifier recomputes it that way), at a third of the cost.
    before = b'{"fields":' + fields_json
    after = (
        b',"kind":"'
        + kind.encode("ascii")
        + b'","prev":"'
        + head.hash.encode("ascii")
        + f'","seq":{seq},"time":{time_ms},"v":{RECORD_VERSION}}}'.encode("ascii")
    )
    digest = hashlib.sha256(before + after).hexdigest()
    line = before + b',"hash":"' + digest.encode("ascii") + b'"' + after + b"\n"
    if len(line) > MAX_RECORD_BYTES:
        raise ValueError("audit record exceeds MAX_RECORD_BYTES; log digests, not payloads")
    return AuditRecord(
        seq=seq,
        time=time_ms,
        kind=kind,
        fields=MappingProxyType(json.loads(fields_json)),
        prev=head.hash,
        hash=digest,
        encoded=line,
    )


def key_id(public_key: Ed25519PublicKey) -> str:
    """``ed25519:<sha256 hex of the raw public key>``: names the key that signed a checkpoint."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()


def checkpoint_message(covers: ChainHead) -> bytes:
    """The bytes a checkpoint signs: a context string and the canonical JSON of the head."""
    return _CHECKPOINT_CONTEXT + canonical_json(
        {"covers_seq": covers.seq, "covers_hash": covers.hash}
    )


def make_checkpoint(
    head: ChainHead, *, time_ms: int, signing_key: Ed25519PrivateKey
) -> AuditRecord:
    """A signed checkpoint record covering ``head`` (the record just before it)."""
    signature = signing_key.sign(checkpoint_message(head))
    return make_record(
        head,
        time_ms=time_ms,
        kind=Kind.CHECKPOINT.value,
        fields={
            "covers_seq": head.seq,
            "covers_hash": head.hash,
            "key_id": key_id(signing_key.public_key()),
            "sig": base64.b64encode(signature).decode("ascii"),
        },
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyFailure:
    """The first bad record: its 1-based line number, its seq when readable, and why.

    Reasons: ``truncated_line`` (no final newline: an interrupted write or a cut file),
    ``record_too_large``, ``not_json``, ``bad_record`` (wrong members or types),
    ``not_canonical``, ``seq_gap`` (a record removed, inserted or moved), ``chain_break``
    (``prev`` is not the hash of the record before), ``bad_hash`` (the record was edited),
    ``bad_checkpoint``, ``wrong_key`` and ``bad_signature``.
    """

    line: int
    seq: int | None
    reason: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    ok: bool
    records: int
    checkpoints: int
    head: ChainHead
    last_checkpoint_seq: int  # seq of the last good checkpoint record; 0 if none
    signatures_checked: bool
    failure: VerifyFailure | None = None
    # False when verification stopped at its deadline before the end (``verify``'s
    # ``deadline``): ``ok`` then speaks for the records read so far only.
    complete: bool = True

    @property
    def unsigned_tail(self) -> int:
        """Records after the last checkpoint: protected by the chain only, not by a signature."""
        return self.head.seq - self.last_checkpoint_seq


def _reject_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


class ChainVerifier:
    """Checks a log one line at a time; stops at the first bad record. Pure (no I/O)."""

    def __init__(
        self, public_key: Ed25519PublicKey | None, *, start: ChainHead | None = None
    ) -> None:
        """``start`` is the head the first line must follow (the genesis by default)."""
        self._public_key = public_key
        self._key_id = key_id(public_key) if public_key is not None else None
        self._head = start or ChainHead()
        self._line = 0
        self._records = 0
        self._checkpoints = 0
        self._last_checkpoint = 0
        self._failure: VerifyFailure | None = None

    @property
    def lines(self) -> int:
        """Lines checked so far."""
        return self._line

    def feed(self, raw: bytes) -> bool:
        """Check one line (with its newline). Returns False once a bad record has been seen."""
        if self._failure is not None:
            return False
        self._line += 1
        reason, detail, seq = self._check(raw)
        if reason is not None:
            self._failure = VerifyFailure(line=self._line, seq=seq, reason=reason, detail=detail)
            return False
        return True

    def result(self, *, complete: bool = True) -> VerifyResult:
        return VerifyResult(
            ok=self._failure is None,
            records=self._records,
            checkpoints=self._checkpoints,
            head=self._head,
            last_checkpoint_seq=self._last_checkpoint,
            signatures_checked=self._public_key is not None,
            failure=self._failure,
            complete=complete or self._failure is not None,
        )

    def _check(self, raw: bytes) -> tuple[str | None, str, int | None]:
        if len(raw) > MAX_RECORD_BYTES + 1:
            return "record_too_large", f"{len(raw)} bytes", None
        if not raw.endswith(b"\n"):
            return "truncated_line", "the last line has no newline", None
        text = raw[:-1]
        try:
            obj = json.loads(
                text.decode("utf-8"),
                object_pairs_hook=_reject_pairs,
                parse_constant=_reject_constant,
            )
        except (ValueError, RecursionError) as exc:
            return "not_json", str(exc)[:200], None
        if not isinstance(obj, dict) or set(obj) != _RECORD_KEYS:
            return (
                "bad_record",
                "members must be exactly v, seq, time, kind, fields, prev, hash",
                None,
            )
        seq, time_ms, kind, fields = obj["seq"], obj["time"], obj["kind"], obj["fields"]
        prev, digest = obj["prev"], obj["hash"]
        seq_out = seq if type(seq) is int else None
        if (
            obj["v"] != RECORD_VERSION
            or type(obj["v"]) is not int
            or type(seq) is not int
            or type(time_ms) is not int
            or not isinstance(kind, str)
            or _KIND_RE.fullmatch(kind) is None
            or not isinstance(fields, dict)
            or not isinstance(prev, str)
            or not isinstance(digest, str)
            or _HEX64_RE.fullmatch(prev) is None
            or _HEX64_RE.fullmatch(digest) is None
        ):
            return "bad_record", "a member has the wrong type or form", seq_out
        try:
            canonical = canonical_json(obj)
        except (TypeError, ValueError) as exc:
            return "bad_record", str(exc), seq_out
        if canonical != text:
            return "not_canonical", "the line is not in canonical JSON form", seq_out
        if seq != self._head.seq + 1:
            return "seq_gap", f"expected seq {self._head.seq + 1}, found {seq}", seq_out
        if prev != self._head.hash:
            return "chain_break", "prev is not the hash of the record before", seq_out
        if digest != record_hash(seq, time_ms, kind, fields, prev):
            return "bad_hash", "the record's content does not match its hash", seq_out
        if kind == Kind.CHECKPOINT.value:
            reason, detail = self._check_checkpoint(fields, self._head)
            if reason is not None:
                return reason, detail, seq_out
            self._checkpoints += 1
            self._last_checkpoint = seq
        self._head = ChainHead(seq=seq, hash=digest)
        self._records += 1
        return None, "", seq_out

    def _check_checkpoint(
        self, fields: Mapping[str, object], covers: ChainHead
    ) -> tuple[str | None, str]:
        if set(fields) != _CHECKPOINT_KEYS:
            return "bad_checkpoint", "members must be covers_seq, covers_hash, key_id, sig"
        if fields["covers_seq"] != covers.seq or fields["covers_hash"] != covers.hash:
            return "bad_checkpoint", "the checkpoint does not cover the record before it"
        if self._public_key is None:
            return None, ""
        if fields["key_id"] != self._key_id:
            return "wrong_key", f"signed by {fields['key_id']!s:.80}, expected {self._key_id}"
        sig = fields["sig"]
        try:
            signature = base64.b64decode(str(sig), validate=True)
            self._public_key.verify(signature, checkpoint_message(covers))
        except (InvalidSignature, binascii.Error, ValueError):
            return "bad_signature", "the checkpoint signature does not verify"
        return None, ""


def verify_lines(lines: Iterable[bytes], public_key: Ed25519PublicKey | None) -> VerifyResult:
    """Verify a log given as lines (each with its newline). See :class:`VerifyFailure`."""
    verifier = ChainVerifier(public_key)
    for raw in lines:
        if not verifier.feed(raw):
            break
    return verifier.result()


def verify(
    path: str | os.PathLike[str],
    public_key: Ed25519PublicKey | None,
    *,
    end: int | None = None,
    deadline: float | None = None,
) -> VerifyResult:
    """Verify the audit log at ``path`` (``liaison audit verify``).

    Checks the sequence, the hash chain, every record's hash and, with ``public_key``, every
    checkpoint signature; reports the first bad record. Raises StorageError when the file
    cannot be read. ``end`` stops at that byte offset (the size of a log being written, taken
    where its writer runs, so it falls on a record boundary); ``deadline`` (``time.monotonic``)
    stops there too, with ``complete`` False in the result (the operator API's bounded check).
    """
    verifier = ChainVerifier(public_key)
    read = 0
    try:
        with open(path, "rb") as f:
            while end is None or read < end:
                if (
                    deadline is not None
                    and verifier.lines % _DEADLINE_EVERY == 0
                    and time.monotonic() >= deadline
                ):
                    return verifier.result(complete=False)
                want = MAX_RECORD_BYTES + 2
                if end is not None:
                    want = min(want, end - read)
                raw = f.readline(want)
                read += len(raw)
                if not raw or not verifier.feed(raw):
                    break
    except OSError as exc:
        raise StorageError(f"cannot read audit log {os.fspath(path)!r}: {exc}") from exc
    return verifier.result()


# --- I/O: the writer -----------------------------------------------------------------------------


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _parse_stored(line: bytes) -> AuditRecord | None:
    """The record on ``line`` if it is well formed and its hash matches, else None."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or set(obj) != _RECORD_KEYS:
        return None
    prev, seq = obj["prev"], obj["seq"]
    if not isinstance(prev, str) or type(seq) is not int or seq < 1:
        return None
    # Check the record on its own, as if the chain ended just before it.
    verifier = ChainVerifier(None, start=ChainHead(seq=seq - 1, hash=prev))
    if not verifier.feed(line + b"\n"):
        return None
    return AuditRecord(
        seq=seq,
        time=obj["time"],
        kind=obj["kind"],
        fields=MappingProxyType(obj["fields"]),
        prev=prev,
        hash=obj["hash"],
    )


# Bytes read at a time while looking backwards for the last checkpoint when a log is opened.
_SCAN_CHUNK = 256 * 1024
_CHECKPOINT_MARK = b'"kind":"checkpoint"'


def _last_checkpoint(fd: int, end: int, limit: int) -> tuple[int, AuditRecord | None]:
    """The last checkpoint among the last ``limit`` records of the file's first ``end`` bytes.

    Returns (records looked at, the checkpoint or None). Reads backwards from ``end`` and stops
    at the first checkpoint, after ``limit`` records or at the start of the file, so the work is
    bounded by ``limit`` records whatever the size of the log.
    """
    pos = end
    carry = b""
    seen = 0
    while pos > 0 and seen < limit:
        n = min(_SCAN_CHUNK, pos)
        pos -= n
        lines = (os.pread(fd, n, pos) + carry).split(b"\n")
        carry = lines[0] if pos > 0 else b""
        if len(carry) > MAX_RECORD_BYTES + 1:
            break  # a damaged file: no checkpoint found, one is due now
        complete = lines[1:] if pos > 0 else lines
        for line in reversed(complete):
            if not line:
                continue
            seen += 1
            if _CHECKPOINT_MARK in line:
                record = _parse_stored(line)
                if record is not None and record.kind == Kind.CHECKPOINT.value:
                    return seen, record
            if seen >= limit:
                break
    return seen, None


@dataclass(slots=True)
class _Tail:
    head: ChainHead = field(default_factory=ChainHead)
    complete_size: int = 0  # bytes up to and including the last newline
    partial: bytes = b""  # bytes after the last newline (an interrupted write)


def _read_tail(fd: int) -> _Tail:
    size = os.fstat(fd).st_size
    if size == 0:
        return _Tail()
    # The last complete record ends within the last two record lengths: the partial line after
    # it (if any) is shorter than one record.
    span = min(size, 2 * (MAX_RECORD_BYTES + 1))
    chunk = os.pread(fd, span, size - span)
    end = chunk.rfind(b"\n")
    if end < 0:
        if span == size:
            return _Tail(complete_size=0, partial=chunk)
        raise StorageError("audit log tail has no complete record; run 'liaison audit verify'")
    partial = chunk[end + 1 :]
    start = chunk.rfind(b"\n", 0, end) + 1
    if start == 0 and span < size:
        raise StorageError("audit log's last record is too large; run 'liaison audit verify'")
    record = _parse_stored(chunk[start:end])
    if record is None:
        raise StorageError("audit log's last record is damaged; run 'liaison audit verify'")
    return _Tail(head=record.head, complete_size=size - len(partial), partial=partial)


class AuditLog:
    """The writer. One process owns a log file at a time (an exclusive flock enforces it).

    Use :meth:`open`; :meth:`append` / :meth:`append_many` write, flush and fsync before they
    return, so the caller releases only after the record is durable.
    """

    def __init__(
        self,
        *,
        path: Path,
        fd: int,
        head: ChainHead,
        signing_key: Ed25519PrivateKey | None,
        checkpoint_every: int,
        checkpoint_interval_ms: int | None,
        clock: Callable[[], int],
        fsync: bool,
    ) -> None:
        self._path = path
        self._fd: int | None = fd
        self._head = head
        self._signing_key = signing_key
        self._checkpoint_every = checkpoint_every
        self._checkpoint_interval_ms = checkpoint_interval_ms
        self._clock = clock
        self._fsync = fsync
        self._broken = False
        # Where the checkpoint interval counts from; open() sets it from the log's last
        # checkpoint, so restarts do not reset the count.
        self._last_checkpoint_seq = head.seq
        self._last_checkpoint_time = clock()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        signing_key: Ed25519PrivateKey | None,
        *,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_interval_ms: int | None = None,
        clock: Callable[[], int] = _wall_clock_ms,
        fsync: bool = True,
        repair_truncated: bool = False,
    ) -> AuditLog:
        """Open (or create) the log at ``path`` and resume its chain.

        ``signing_key`` signs a checkpoint every ``checkpoint_every`` records and, if set, when
        ``checkpoint_interval_ms`` has passed at the next append; None writes no checkpoints.
        Both count from the last checkpoint already in the file (found by reading backwards at
        most ``checkpoint_every`` records), so reopening does not restart the count.
        A file whose last line is incomplete (a write interrupted by a crash; such a record was
        never acknowledged, so no release depends on it) raises StorageError, unless
        ``repair_truncated``: then the partial line is cut off and a ``recovery`` record naming
        its length and SHA-256 is appended. ``fsync=False`` is for tests on tmpfs only.
        Raises StorageError when the file cannot be opened, locked or read.
        """
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        file_path = Path(path)
        created = not file_path.exists()
        try:
            fd = os.open(file_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open audit log {str(file_path)!r}: {exc}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StorageError(f"audit log {str(file_path)!r} is open elsewhere") from exc
            if created and fsync:
                _fsync_dir(file_path.parent)
            tail = _read_tail(fd)
            if tail.partial and not repair_truncated:
                raise StorageError(
                    f"audit log {str(file_path)!r} ends in an incomplete record "
                    "(interrupted write); run 'liaison audit verify', then reopen with repair"
                )
            log = cls(
                path=file_path,
                fd=fd,
                head=tail.head,
                signing_key=signing_key,
                checkpoint_every=checkpoint_every,
                checkpoint_interval_ms=checkpoint_interval_ms,
                clock=clock,
                fsync=fsync,
            )
            if signing_key is not None and tail.head.seq > 0:
                # Count the interval from the last checkpoint in the file, not from this open:
                # a server restarted more often than every ``checkpoint_every`` records must
                # still sign them. Not found within that many records: one is due now.
                seen, found = _last_checkpoint(fd, tail.complete_size, checkpoint_every)
                if found is not None:
                    log._last_checkpoint_seq = found.seq
                    log._last_checkpoint_time = found.time
                else:
                    log._last_checkpoint_seq = tail.head.seq - seen
            if tail.partial:
                os.ftruncate(fd, tail.complete_size)
                recovery = {
                    "truncated_bytes": len(tail.partial),
                    "truncated_sha256": hashlib.sha256(tail.partial).hexdigest(),
                }
                log._write_batch([(Kind.RECOVERY.value, recovery)], reserved_ok=True)
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot read audit log {str(file_path)!r}: {exc}") from exc
        except BaseException:
            os.close(fd)
            raise
        return log

    @property
    def path(self) -> Path:
        return self._path

    @property
    def head(self) -> ChainHead:
        """The last record written (seq 0 and GENESIS_HASH for an empty log)."""
        return self._head

    def append(self, kind: str, /, **fields: object) -> AuditRecord:
        """Write one record, durably, and return it. See :meth:`append_many`."""
        return self._write_batch([(kind, fields)], reserved_ok=False)[0]

    def append_many(self, entries: Sequence[tuple[str, Mapping[str, object]]]) -> list[AuditRecord]:
        """Write a batch of records with one write and one fsync; return them.

        Batching is how a busy router keeps "durable before release" affordable: collect the
        decisions of one fan-out, append them together, then release. Raises StorageError when
        the write or fsync fails; the log then refuses every later append until reopened, since
        the file may end in a partial record. Raises ValueError for a bad kind (reserved kinds
        included) or fields that are not canonical JSON data (no floats).
        """
        return self._write_batch(entries, reserved_ok=False)

    def checkpoint(self) -> AuditRecord:
        """Write a signed checkpoint now (for example from a timer). Needs a signing key."""
        if self._signing_key is None:
            raise ValueError("this audit log has no signing key")
        return self._write_batch([], reserved_ok=False, force_checkpoint=True)[-1]

    def _write_batch(
        self,
        entries: Sequence[tuple[str, Mapping[str, object]]],
        *,
        reserved_ok: bool,
        force_checkpoint: bool = False,
    ) -> list[AuditRecord]:
        if self._fd is None:
            raise StorageError("audit log is closed")
        if self._broken:
            raise StorageError("audit log failed earlier; reopen it before writing")
        now = self._clock()
        head = self._head
        records: list[AuditRecord] = []
        for kind, fields in entries:
            if kind in _RESERVED_KINDS and not reserved_ok:
                raise ValueError(f"audit kind {kind!r} is reserved for the log itself")
            record = make_record(head, time_ms=now, kind=kind, fields=fields)
            records.append(record)
            head = record.head
        due = self._signing_key is not None and (
            head.seq - self._last_checkpoint_seq >= self._checkpoint_every
            or (
                self._checkpoint_interval_ms is not None
                and records
                and now - self._last_checkpoint_time >= self._checkpoint_interval_ms
            )
        )
        if self._signing_key is not None and (due or force_checkpoint):
            checkpoint = make_checkpoint(head, time_ms=now, signing_key=self._signing_key)
            records.append(checkpoint)
            head = checkpoint.head
        self._write(b"".join(r.line() for r in records))
        self._head = head
        if records and records[-1].kind == Kind.CHECKPOINT.value:
            self._last_checkpoint_seq = head.seq
            self._last_checkpoint_time = now
        return records

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self._fsync:
                os.fsync(self._fd)
        except OSError as exc:
            self._broken = True
            raise StorageError(f"cannot write audit log {str(self._path)!r}: {exc}") from exc

    def sync(self) -> None:
        """fsync what has been written (for logs opened with ``fsync=False`` that sync on a timer).

        Raises StorageError, and refuses later appends, when the sync fails.
        """
        if self._fd is None or self._broken:
            raise StorageError("audit log is closed or failed earlier")
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = True
            raise StorageError(f"cannot sync audit log {str(self._path)!r}: {exc}") from exc

    @property
    def unsigned_records(self) -> int:
        """Records written after the last checkpoint (0 right after one). For a log opened
        with no checkpoint within its last ``checkpoint_every`` records, counted from that
        many records before its end (so one is due)."""
        return self._head.seq - self._last_checkpoint_seq

    def close(self, *, checkpoint: bool = False) -> None:
        """Close the file. With ``checkpoint`` (a clean shutdown), first sign a checkpoint
        covering the last record (when there is a signing key, the log has not failed and
        records were written after the last checkpoint) and fsync; raises StorageError, after
        closing, when that cannot be written."""
        if self._fd is None:
            return
        try:
            if checkpoint and not self._broken:
                if self._signing_key is not None and self.unsigned_records > 0:
                    self.checkpoint()
                if not self._fsync:
                    self.sync()
        finally:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # also releases the flock

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _fsync_dir(directory: Path) -> None:
    # A new file's directory entry is durable only once the directory itself is fsynced.
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
