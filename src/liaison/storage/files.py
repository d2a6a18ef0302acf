"""Data packages and files: content stored once by SHA-256 on disk, metadata in a small index.

TAK clients share data packages through the Marti "Enterprise Sync" endpoints (tak-protocol.md
section 4: ``sync/missionupload``, ``sync/content``, ``sync/search``). This module keeps what they
upload:

- the bytes, once per distinct SHA-256, under ``DATA_DIR/files/<first two hex digits>/<hash>``
  (written to a temporary file and renamed into place, so a reader never sees half a file);
- one metadata record per upload (:class:`FileRecord`) in a :class:`FileIndex`: who uploaded it,
  into which groups, its name, keywords, MIME type, TAK "tool" and label. The same bytes uploaded
  by two organisations are two records over one copy of the content, so neither learns that the
  other has it (a "this already exists" answer would tell them).

Uploads that look like zip archives are inspected before anything is stored
(:func:`inspect_zip`): entry names may not escape the archive (absolute paths, ``..``, drive
letters), symbolic links and encrypted entries are refused, and entry count, total uncompressed
size and compression ratio are bounded, measured by actually decompressing with a budget, so
headers that lie about sizes do not help a zip bomb.

Who may see a record is not decided here: the HTTP side asks the router (``Router.permits``) with
the record's ``uploader_groups`` and ``label``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import sqlite3
import stat
import tempfile
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from liaison.errors import PeerError, StorageError
from liaison.storage.permissions import DIR_MODE, create_private_file

T = TypeVar("T")

# Largest file accepted. Matches the HTTP side's upload limit (api.server.MAX_UPLOAD_BYTES):
# TAK Server allows 400 MB (enterpriseSyncSizeLimitMB, tak-protocol.md section 1.7); 100 MiB carries
# imagery and map packages used in the field and keeps one upload from filling memory.
MAX_FILE_BYTES = 100 * 1024 * 1024

# Most entries in one zip. ATAK data packages hold a manifest and a few to a few hundred files;
# tile caches packaged as zips reach a few thousand. 10,000 leaves room and bounds the central
# directory we parse (a zip may declare 65,535 entries, or billions with zip64).
MAX_ZIP_ENTRIES = 10_000

# Largest total uncompressed size of one zip. A 100 MiB upload of imagery (already compressed)
# expands little; CoT, KML and XML compress 10-20x, so 512 MiB fits the largest honest package
# while bounding the decompression work one upload can ask of us (about a second of CPU).
MAX_ZIP_UNCOMPRESSED_BYTES = 512 * 1024 * 1024

# Highest compression ratio (uncompressed / compressed) of one entry. Text compresses 10-25x
# with deflate; classic zip bombs run at 1,000x (deflate's ceiling is about 1,032x). 200 refuses
# bombs and keeps very repetitive honest files (a KML of identical placemarks) acceptable.
MAX_ZIP_RATIO = 200

# Entries smaller than this are not ratio-checked: a 40-byte file of zeros compresses 10x+ for
# reasons that do not matter, and cannot hurt anyone.
ZIP_RATIO_FLOOR_BYTES = 1024 * 1024

# Longest entry name, in bytes. Real names are short paths; long names only serve to confuse.
MAX_ZIP_NAME_BYTES = 1024

# Largest MANIFEST/manifest.xml we keep from an inspected package (for labels and display).
MAX_MANIFEST_BYTES = 256 * 1024

# Bytes decompressed at a time while measuring an entry.
_READ_CHUNK = 1024 * 1024

# Most records a search reads from the index before visibility is decided. The caller then keeps
# only what its principal may see, so this must be large enough that other organisations' files
# do not crowd out the caller's own; 10,000 records of metadata are a few MB.
MAX_INDEX_SCAN = 10_000

# Longest name, MIME type, keyword, tool and creator uid kept in a record. TAK clients send short
# values; the bounds stop one upload from storing megabytes of metadata.
MAX_TEXT_CHARS = 256
# Most keywords on one record.
MAX_KEYWORDS = 32

_HASH = re.compile(r"[0-9a-f]{64}\Z")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_ZIP_MIMES = frozenset(
    {"application/zip", "application/x-zip-compressed", "application/x-zip", "multipart/x-zip"}
)


class UnsafeFile(PeerError):
    """An upload refused before anything was stored. ``reason`` is a stable short code:

    ``too_large``, ``bad_zip``, ``zip_entries``, ``zip_bomb``, ``zip_path``, ``zip_symlink``,
    ``zip_encrypted``, ``zip_duplicate``, ``hash_mismatch``.
    """

    reason = "unsafe_file"


def is_sha256(text: str) -> bool:
    """True for a lowercase hex SHA-256 digest (what TAK clients send as ``hash``)."""
    return _HASH.match(text) is not None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRecord:
    """One upload: the metadata TAK's Enterprise Sync keeps (TS takserver-plugins Metadata.java)
    plus who uploaded it and into which groups."""

    uid: str  # the record's own id (TAK "UID"); one per upload
    hash: str  # SHA-256 of the content, lowercase hex
    name: str  # file name shown to users
    mime: str
    size: int  # bytes
    keywords: tuple[str, ...] = ()
    tool: str = "public"  # TAK "tool": "public", "private" or a plugin's name
    creator_uid: str | None = None  # device uid of the creator (ATAK's creatorUid)
    uploader: str  # principal name of who uploaded it
    uploader_groups: frozenset[str]  # the uploader's IN groups at upload (who may read it)
    label: str | None = None  # confidentiality label as JSON text (the labels feature sets it)
    submitted: int  # ms since epoch, server time of the upload


@dataclass(frozen=True, slots=True, kw_only=True)
class FileQuery:
    """A metadata search (``sync/search``). Every filter set must match; None means "any"."""

    keyword: str | None = None  # one of the record's keywords, exactly
    tool: str | None = None
    name_contains: str | None = None  # case-insensitive substring of the name
    creator_uid: str | None = None
    hash: str | None = None

    def matches(self, rec: FileRecord) -> bool:
        """The reference meaning; indexes must select exactly these records."""
        if self.keyword is not None and self.keyword not in rec.keywords:
            return False
        if self.tool is not None and rec.tool != self.tool:
            return False
        if self.name_contains is not None and self.name_contains.lower() not in rec.name.lower():
            return False
        if self.creator_uid is not None and rec.creator_uid != self.creator_uid:
            return False
        return self.hash is None or rec.hash == self.hash


# --- zip inspection ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipLimits:
    max_entries: int = MAX_ZIP_ENTRIES
    max_uncompressed: int = MAX_ZIP_UNCOMPRESSED_BYTES
    max_ratio: int = MAX_ZIP_RATIO
    ratio_floor: int = ZIP_RATIO_FLOOR_BYTES


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipSummary:
    """What an accepted archive holds."""

    entries: int
    uncompressed: int  # bytes, measured
    names: tuple[str, ...]
    manifest: bytes | None  # MANIFEST/manifest.xml when present (TAK data package, 5.1)


def looks_like_zip(data: bytes, *, name: str = "", mime: str = "") -> bool:
    """Whether an upload must be inspected as a zip: zip magic bytes, a .zip/.dpk name, or a zip
    MIME type. Something that claims to be a zip and is not one is refused, not stored."""
    if data[:4] in _ZIP_MAGIC:
        return True
    lowered = name.lower()
    if lowered.endswith((".zip", ".dpk", ".kmz")):
        return True
    return mime.split(";", 1)[0].strip().lower() in _ZIP_MIMES


def check_entry_name(name: str) -> None:
    """Refuse entry names that could write outside an extraction folder (CWE-22, "zip slip")."""
    if not name or "\x00" in name:
        raise UnsafeFile(f"zip entry name {name!r} is empty or has NUL", reason="zip_path")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_ZIP_NAME_BYTES:
        raise UnsafeFile("zip entry name too long", reason="zip_path")
    path = name.replace("\\", "/")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        raise UnsafeFile(f"zip entry {name[:80]!r} has an absolute path", reason="zip_path")
    if any(part == ".." for part in path.split("/")):
        raise UnsafeFile(f"zip entry {name[:80]!r} leaves the archive", reason="zip_path")


def inspect_zip(data: bytes, limits: ZipLimits = ZipLimits()) -> ZipSummary:
    """Check that ``data`` is a safe zip archive and summarise it; raise :class:`UnsafeFile`.

    Declared sizes are checked first (cheap), then every entry is decompressed with a running
    budget, so an archive whose headers understate its sizes is still caught, and zipfile's CRC
    check catches entries whose content does not match their headers. CPU-bound: call it from a
    worker thread for large uploads.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise UnsafeFile(f"not a readable zip archive: {exc}", reason="bad_zip") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise UnsafeFile(
                f"zip has {len(infos)} entries, more than {limits.max_entries}",
                reason="zip_entries",
            )
        seen: set[str] = set()
        declared = 0
        for info in infos:
            check_entry_name(info.filename)
            key = info.filename.replace("\\", "/").rstrip("/")
            if key in seen:
                raise UnsafeFile(f"zip entry {key[:80]!r} appears twice", reason="zip_duplicate")
            seen.add(key)
            mode = info.external_attr >> 16
            if mode and stat.S_ISLNK(mode):
                raise UnsafeFile(f"zip entry {key[:80]!r} is a symbolic link", reason="zip_symlink")
            if info.flag_bits & 0x1:
                raise UnsafeFile(f"zip entry {key[:80]!r} is encrypted", reason="zip_encrypted")
            declared += info.file_size
            if declared > limits.max_uncompressed:
                raise UnsafeFile("zip expands past the size limit", reason="zip_bomb")
            if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(
                info.compress_size, 1
            ):
                raise UnsafeFile(
                    f"zip entry {key[:80]!r} compresses more than {limits.max_ratio}x",
                    reason="zip_bomb",
                )
        total = 0
        manifest: bytes | None = None
        for info in infos:
            if info.is_dir():
                continue
            size = 0
            keep = info.filename.replace("\\", "/") == "MANIFEST/manifest.xml"
            kept: list[bytes] = []
            try:
                with zf.open(info) as f:
                    while chunk := f.read(_READ_CHUNK):
                        size += len(chunk)
                        total += len(chunk)
                        if total > limits.max_uncompressed:
                            raise UnsafeFile("zip expands past the size limit", reason="zip_bomb")
                        if size > limits.ratio_floor and size > limits.max_ratio * max(
                            info.compress_size, 1
                        ):
                            raise UnsafeFile("zip entry compresses too much", reason="zip_bomb")
                        if keep and size <= MAX_MANIFEST_BYTES:
                            kept.append(chunk)
            except UnsafeFile:
                raise
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise UnsafeFile(f"zip entry unreadable: {exc}", reason="bad_zip") from exc
            except RuntimeError as exc:  # zipfile raises it for encrypted entries
                raise UnsafeFile(f"zip entry unreadable: {exc}", reason="zip_encrypted") from exc
            if keep and size <= MAX_MANIFEST_BYTES:
                manifest = b"".join(kept)
        return ZipSummary(
            entries=len(infos),
            uncompressed=total,
            names=tuple(i.filename for i in infos),
            manifest=manifest,
        )


def extract_zip(data: bytes, limits: ZipLimits = ZipLimits()) -> list[tuple[str, bytes]]:
    """Every file entry of a safe zip as (entry name with ``/`` separators, bytes), in archive
    order; directories left out. :func:`inspect_zip` checks the archive first (names, links,
    encryption, entry count, sizes and ratios measured by decompressing), so what is read here
    is bounded by ``limits``. Raises :class:`UnsafeFile`. CPU-bound: call it from a worker
    thread."""
    inspect_zip(data, limits)
    out: list[tuple[str, bytes]] = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                with zf.open(info) as f:
                    content = f.read(limits.max_uncompressed + 1)
                out.append((info.filename.replace("\\", "/"), content))
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise UnsafeFile(f"zip entry unreadable: {exc}", reason="bad_zip") from exc
    return out


# --- the metadata index -----------------------------------------------------------------------


class FileIndex(Protocol):
    """Where file metadata is kept. Every method raises StorageError when the backend fails."""

    async def add(self, rec: FileRecord) -> None:
        """Add one record (``uid`` must be new)."""
        ...

    async def by_uid(self, uid: str) -> FileRecord | None: ...

    async def by_hash(self, hash: str) -> list[FileRecord]:
        """Every record of this content, newest first."""
        ...

    async def search(self, query: FileQuery, limit: int = MAX_INDEX_SCAN) -> list[FileRecord]:
        """Records matching ``query``, newest first, at most ``limit``."""
        ...

    async def set_tool(self, uid: str, tool: str) -> bool:
        """Change a record's tool; False when there is no such record."""
        ...

    async def close(self) -> None: ...


class MemoryFileIndex:
    """A :class:`FileIndex` in a dict: for tests and throwaway servers."""

    def __init__(self) -> None:
        self._records: dict[str, FileRecord] = {}
        self._order: dict[str, int] = {}
        self._seq = 0
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise StorageError("file index is closed")

    def _newest_first(self, recs: Sequence[FileRecord]) -> list[FileRecord]:
        return sorted(recs, key=lambda r: (r.submitted, self._order[r.uid]), reverse=True)

    async def add(self, rec: FileRecord) -> None:
        self._check()
        if rec.uid in self._records:
            raise StorageError(f"file record {rec.uid} exists")
        self._seq += 1
        self._records[rec.uid] = rec
        self._order[rec.uid] = self._seq

    async def by_uid(self, uid: str) -> FileRecord | None:
        self._check()
        return self._records.get(uid)

    async def by_hash(self, hash: str) -> list[FileRecord]:
        self._check()
        return self._newest_first([r for r in self._records.values() if r.hash == hash])

    async def search(self, query: FileQuery, limit: int = MAX_INDEX_SCAN) -> list[FileRecord]:
        self._check()
        return self._newest_first([r for r in self._records.values() if query.matches(r)])[:limit]

    async def set_tool(self, uid: str, tool: str) -> bool:
        self._check()
        rec = self._records.get(uid)
        if rec is None:
            return False
        self._records[uid] = replace(rec, tool=tool)
        return True

    async def close(self) -> None:
        self._closed = True


_SCHEMA_VERSION = 1
_COLUMNS = (
    "uid",
    "hash",
    "name",
    "mime",
    "size",
    "keywords",
    "tool",
    "creator_uid",
    "uploader",
    "uploader_groups",
    "label",
    "submitted",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM files"
_ORDER = " ORDER BY submitted DESC, seq DESC"


def _to_row(rec: FileRecord) -> tuple[object, ...]:
    return (
        rec.uid,
        rec.hash,
        rec.name,
        rec.mime,
        rec.size,
        json.dumps(list(rec.keywords)),
        rec.tool,
        rec.creator_uid,
        rec.uploader,
        json.dumps(sorted(rec.uploader_groups)),
        rec.label,
        rec.submitted,
    )


def _from_row(row: Sequence[Any]) -> FileRecord:
    return FileRecord(
        uid=row[0],
        hash=row[1],
        name=row[2],
        mime=row[3],
        size=row[4],
        keywords=tuple(json.loads(row[5])),
        tool=row[6],
        creator_uid=row[7],
        uploader=row[8],
        uploader_groups=frozenset(json.loads(row[9])),
        label=row[10],
        submitted=row[11],
    )


class SqliteFileIndex:
    """A :class:`FileIndex` in its own SQLite file (WAL), run on one worker thread.

    Each HTTP listener opens its own handle on the same file; SQLite's locking keeps them
    consistent, so an upload on one listener is found at once on the others.
    """

    def __init__(self, path: Path, executor: ThreadPoolExecutor) -> None:
        self._path = path
        self._executor = executor
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> SqliteFileIndex:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="liaison-files")
        index = cls(path, executor)
        try:
            await index._run(index._open_sync)
        except BaseException:
            index._closed = True
            executor.submit(index._close_sync)
            executor.shutdown(wait=False)
            raise
        return index

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StorageError(f"file index {self._path} is closed")
        fut = asyncio.wrap_future(self._executor.submit(self._translated, fn, *args))
        return await fut

    def _translated(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise StorageError(f"file index {self._path}: {exc}") from exc

    def _open_sync(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        # 0600 before SQLite opens it: its -wal and -shm files take the same mode.
        create_private_file(self._path)
        # Several listeners open the same file: wait for each other's short transactions.
        conn = sqlite3.connect(self._path, timeout=5.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.execute(
                    "CREATE TABLE files (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                    " uid TEXT NOT NULL UNIQUE, hash TEXT NOT NULL, name TEXT NOT NULL,"
                    " mime TEXT NOT NULL, size INTEGER NOT NULL, keywords TEXT NOT NULL,"
                    " tool TEXT NOT NULL, creator_uid TEXT, uploader TEXT NOT NULL,"
                    " uploader_groups TEXT NOT NULL, label TEXT, submitted INTEGER NOT NULL)"
                )
                conn.execute("CREATE INDEX files_hash ON files (hash)")
                conn.execute("CREATE INDEX files_submitted ON files (submitted)")
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                raise StorageError(f"file index {self._path} has unknown schema {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"file index {self._path} is not open")
        return self._conn

    def _add_sync(self, rec: FileRecord) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self._db().execute(
            f"INSERT INTO files ({', '.join(_COLUMNS)}) VALUES ({placeholders})", _to_row(rec)
        )

    def _select_sync(self, sql: str, params: Sequence[object]) -> list[FileRecord]:
        return [_from_row(row) for row in self._db().execute(sql, params)]

    def _update_sync(self, uid: str, tool: str) -> int:
        return self._db().execute("UPDATE files SET tool = ? WHERE uid = ?", (tool, uid)).rowcount

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def add(self, rec: FileRecord) -> None:
        await self._run(self._add_sync, rec)

    async def by_uid(self, uid: str) -> FileRecord | None:
        rows = await self._run(self._select_sync, f"{_SELECT} WHERE uid = ?", (uid,))
        return rows[0] if rows else None

    async def by_hash(self, hash: str) -> list[FileRecord]:
        return await self._run(self._select_sync, f"{_SELECT} WHERE hash = ?{_ORDER}", (hash,))

    async def search(self, query: FileQuery, limit: int = MAX_INDEX_SCAN) -> list[FileRecord]:
        where: list[str] = []
        params: list[object] = []
        for column, value in (
            ("tool", query.tool),
            ("creator_uid", query.creator_uid),
            ("hash", query.hash),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + _ORDER
        if query.keyword is None and query.name_contains is None:
            sql += " LIMIT ?"
            params.append(limit)
            return await self._run(self._select_sync, sql, params)
        # Keywords (a JSON list) and case-insensitive substrings are filtered here, with the
        # reference meaning, over a bounded scan.
        sql += " LIMIT ?"
        params.append(MAX_INDEX_SCAN)
        rows = await self._run(self._select_sync, sql, params)
        return [r for r in rows if query.matches(r)][:limit]

    async def set_tool(self, uid: str, tool: str) -> bool:
        return await self._run(self._update_sync, uid, tool) > 0

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wrap_future(self._executor.submit(self._close_sync))
        finally:
            self._executor.shutdown(wait=True)


# --- the file store ---------------------------------------------------------------------------


def _clip(text: str | None, what: str) -> str | None:
    if text is None:
        return None
    if len(text) > MAX_TEXT_CHARS:
        raise UnsafeFile(f"{what} longer than {MAX_TEXT_CHARS} characters", reason="bad_metadata")
    if any(ord(c) < 0x20 for c in text):
        raise UnsafeFile(f"{what} contains control characters", reason="bad_metadata")
    return text


class ContentStore(Protocol):
    """File contents kept elsewhere than a folder (PostgreSQL: storage/postgresql_missions.py
    PostgresContents). Every method raises StorageError when the backend fails."""

    async def put(self, hash: str, data: bytes) -> None: ...

    async def size(self, hash: str) -> int | None: ...

    def chunks(self, hash: str) -> AsyncIterator[bytes]: ...

    async def read(self, hash: str, limit: int) -> bytes | None: ...


class FileStore:
    """Content by hash in a folder (or a :class:`ContentStore`), metadata in a
    :class:`FileIndex`."""

    def __init__(
        self,
        root: Path | None,
        index: FileIndex,
        *,
        contents: ContentStore | None = None,
        max_bytes: int = MAX_FILE_BYTES,
        zip_limits: ZipLimits = ZipLimits(),
    ) -> None:
        if (root is None) == (contents is None):
            raise ValueError("a file store keeps contents in a folder or a ContentStore")
        self.root = root
        self.index = index
        self.contents = contents
        self.max_bytes = max_bytes
        self.zip_limits = zip_limits

    @classmethod
    async def open(cls, root: Path, **kwargs: Any) -> FileStore:
        """A store under ``root`` (``DATA_DIR/files``) with its SQLite index ``root/index.db``."""
        return cls(root, await SqliteFileIndex.open(root / "index.db"), **kwargs)

    @classmethod
    async def open_postgresql(cls, url: str, **kwargs: Any) -> FileStore:
        """Index and contents in the PostgreSQL database at ``url`` (shared by a cluster's
        nodes; docs/storage.md "Missions and files in PostgreSQL")."""
        from liaison.storage.postgresql_missions import PostgresFileIndex

        index = await PostgresFileIndex.open(url, schema=kwargs.pop("schema", None))
        return cls(None, index, contents=index.contents, **kwargs)

    @property
    def on_disk(self) -> bool:
        """Whether contents are files under ``root`` (:meth:`content_path`)."""
        return self.root is not None

    def content_path(self, hash: str) -> Path:
        if not is_sha256(hash):
            raise ValueError("not a SHA-256 hex digest")
        if self.root is None:
            raise ValueError("this file store keeps its contents in a database")
        return self.root / hash[:2] / hash

    async def content_size(self, hash: str) -> int | None:
        """The stored content's size in bytes, or None when it is missing."""
        if self.contents is not None:
            return await self.contents.size(hash)
        path = self.content_path(hash)
        try:
            st = await asyncio.to_thread(path.stat)
        except OSError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    async def content_chunks(self, hash: str) -> AsyncIterator[bytes]:
        """The content a chunk at a time (bounded memory however large the file); nothing when
        it is missing."""
        if self.contents is not None:
            async for chunk in self.contents.chunks(hash):
                yield chunk
            return
        path = self.content_path(hash)
        try:
            f = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"content {hash}: {exc}") from exc
        try:
            while chunk := await asyncio.to_thread(f.read, _READ_CHUNK):
                yield chunk
        finally:
            f.close()

    async def read_content(self, hash: str, limit: int) -> bytes | None:
        """The whole content (at most ``limit`` bytes, else StorageError); None if missing."""
        if self.contents is not None:
            return await self.contents.read(hash, limit)
        path = self.content_path(hash)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError:
            return None
        if len(data) > limit:
            raise StorageError(f"file {hash} of {len(data)} bytes exceeds {limit}")
        return data

    def _write_sync(self, hash: str, data: bytes) -> None:
        path = self.content_path(hash)
        if path.exists() and path.stat().st_size == len(data):
            return  # stored once: the same hash is the same content
        path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        # mkstemp creates the file 0600 whatever the umask; os.replace keeps the mode.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def put(
        self,
        data: bytes,
        *,
        uid: str,
        name: str,
        mime: str,
        uploader: str,
        uploader_groups: frozenset[str],
        submitted: int,
        keywords: Sequence[str] = (),
        tool: str = "public",
        creator_uid: str | None = None,
        label: str | None = None,
        expected_hash: str | None = None,
    ) -> tuple[FileRecord, ZipSummary | None]:
        """Check, store and index one upload. Raises :class:`UnsafeFile` (nothing stored) or
        StorageError."""
        if len(data) > self.max_bytes:
            raise UnsafeFile(
                f"file of {len(data)} bytes exceeds {self.max_bytes}", reason="too_large"
            )
        clean_keywords = tuple(k for k in keywords if k)
        if len(clean_keywords) > MAX_KEYWORDS:
            raise UnsafeFile("too many keywords", reason="bad_metadata")
        for k in clean_keywords:
            _clip(k, "keyword")
        digest = await asyncio.to_thread(sha256_hex, data)
        if expected_hash is not None and expected_hash.lower() != digest:
            raise UnsafeFile("content does not match its hash", reason="hash_mismatch")
        summary: ZipSummary | None = None
        if looks_like_zip(data, name=name, mime=mime):
            summary = await asyncio.to_thread(inspect_zip, data, self.zip_limits)
        rec = FileRecord(
            uid=uid,
            hash=digest,
            name=_clip(name, "name") or digest,
            mime=_clip(mime, "MIME type") or "application/octet-stream",
            size=len(data),
            keywords=clean_keywords,
            tool=_clip(tool, "tool") or "public",
            creator_uid=_clip(creator_uid, "creator uid"),
            uploader=uploader,
            uploader_groups=uploader_groups,
            label=label,
            submitted=submitted,
        )
        if self.contents is not None:
            await self.contents.put(digest, data)
        else:
            try:
                await asyncio.to_thread(self._write_sync, digest, data)
            except OSError as exc:
                raise StorageError(f"cannot store file {digest}: {exc}") from exc
        await self.index.add(rec)
        return rec, summary

    async def close(self) -> None:
        await self.index.close()
