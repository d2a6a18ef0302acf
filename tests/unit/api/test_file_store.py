"""The file store: zip safety checks, the metadata index contract (memory and SQLite), content."""

from __future__ import annotations

import contextlib
import io
import struct
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liaison.errors import StorageError
from liaison.storage.files import (
    FileIndex,
    FileQuery,
    FileRecord,
    FileStore,
    MemoryFileIndex,
    SqliteFileIndex,
    UnsafeFile,
    ZipLimits,
    check_entry_name,
    extract_zip,
    inspect_zip,
    looks_like_zip,
    sha256_hex,
)
from liaison.storage.postgresql_missions import CHUNK_BYTES
from tests.unit.storage.storage_support import FILE_INDEX_KINDS, opened_file_store


def make_zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def refused(data: bytes, limits: ZipLimits | None = None) -> str:
    with pytest.raises(UnsafeFile) as info:
        inspect_zip(data, limits or ZipLimits())
    return info.value.reason


# --- zip inspection ------------------------------------------------------------------------------


def test_a_data_package_is_accepted_and_its_manifest_kept() -> None:
    manifest = b'<MissionPackageManifest version="2"/>'
    data = make_zip({"MANIFEST/manifest.xml": manifest, "a/b.cot": b"<event/>", "c/": b""})
    summary = inspect_zip(data)
    assert summary.entries == 3
    assert summary.uncompressed == len(manifest) + len(b"<event/>")
    assert summary.names == ("MANIFEST/manifest.xml", "a/b.cot", "c/")
    assert summary.manifest == manifest


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "a/../../evil",
        "a\\..\\..\\evil",
        "/etc/passwd",
        "\\\\server\\share\\x",
        "C:/Windows/x.dll",
        "c:evil",
        "..",
    ],
)
def test_entry_names_that_escape_are_refused(name: str) -> None:
    assert refused(make_zip({name: b"x"})) == "zip_path"


@given(st.lists(st.sampled_from(["a", "b.txt", "..", ".", "x y"]), min_size=1, max_size=6))
@settings(max_examples=200)
def test_check_entry_name_never_accepts_a_parent_step(parts: list[str]) -> None:
    for sep in ("/", "\\"):
        name = sep.join(parts)
        if ".." in parts:
            with pytest.raises(UnsafeFile):
                check_entry_name(name)
        else:
            check_entry_name(name)
        with pytest.raises(UnsafeFile):
            check_entry_name(sep + name)


def test_symlinks_encrypted_and_duplicate_entries_are_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    assert refused(buf.getvalue()) == "zip_symlink"

    # zipfile cannot write encrypted entries: set the "encrypted" flag bit (APPNOTE 4.4.4) in
    # both headers of a plain one.
    data = bytearray(make_zip({"secret": b"x"}))
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    assert refused(bytes(data)) == "zip_encrypted"

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("same", b"1")
        zf.writestr("same", b"2")
    assert refused(buf.getvalue()) == "zip_duplicate"


def test_entry_count_total_size_and_ratio_are_bounded() -> None:
    many = make_zip({f"f{i}": b"" for i in range(11)})
    assert refused(many, ZipLimits(max_entries=10)) == "zip_entries"
    inspect_zip(many, ZipLimits(max_entries=11))

    big = make_zip({"a": b"x" * 3000, "b": b"y" * 3000}, zipfile.ZIP_STORED)
    assert refused(big, ZipLimits(max_uncompressed=5000)) == "zip_bomb"

    bomb = make_zip({"zeros": bytes(4 * 1024 * 1024)})
    assert refused(bomb) == "zip_bomb"
    # Stored (uncompressed) data of the same size is no bomb.
    inspect_zip(make_zip({"noise": bytes(range(256)) * 8192}, zipfile.ZIP_STORED))


def _understate_size(data: bytes, name: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size of ``name`` in both zip headers (APPNOTE 4.3.7, 4.3.12)."""
    out = bytearray(data)
    local = out.find(b"PK\x03\x04")
    struct.pack_into("<I", out, local + 22, size)
    central = out.find(b"PK\x01\x02")
    assert out[central + 46 : central + 46 + len(name)] == name
    struct.pack_into("<I", out, central + 24, size)
    return bytes(out)


def test_headers_that_understate_sizes_do_not_help_a_bomb() -> None:
    bomb = make_zip({"zeros": bytes(8 * 1024 * 1024)})
    lying = _understate_size(bomb, b"zeros", 1000)
    # Declared 1,000 bytes (ratio looks harmless); decompression shows the truth.
    assert refused(lying) in ("zip_bomb", "bad_zip")


def test_garbage_is_refused_as_a_bad_zip() -> None:
    assert refused(b"PK\x03\x04 not really") == "bad_zip"
    assert refused(make_zip({"a": b"hello"})[:-10]) == "bad_zip"


@given(st.binary(max_size=512))
@settings(max_examples=200)
def test_inspect_zip_is_total(data: bytes) -> None:
    # Any bytes: either a summary or UnsafeFile, never another exception.
    with contextlib.suppress(UnsafeFile):
        inspect_zip(data)


def test_extract_zip_gives_the_file_entries_within_the_limits() -> None:
    data = make_zip({"MANIFEST/manifest.xml": b"<m/>", "a\\b.cot": b"<event/>", "c/": b""})
    assert extract_zip(data) == [("MANIFEST/manifest.xml", b"<m/>"), ("a/b.cot", b"<event/>")]
    with pytest.raises(UnsafeFile) as info:
        extract_zip(make_zip({"ok": b"x", "../evil": b"y"}))
    assert info.value.reason == "zip_path"
    with pytest.raises(UnsafeFile) as info:
        extract_zip(make_zip({"a": b"1", "b": b"2", "c": b"3"}), ZipLimits(max_entries=2))
    assert info.value.reason == "zip_entries"
    with pytest.raises(UnsafeFile) as info:
        extract_zip(make_zip({"a": bytes(2048)}), ZipLimits(max_uncompressed=1024))
    assert info.value.reason == "zip_bomb"


@given(st.binary(max_size=512))
@settings(max_examples=100)
def test_extract_zip_is_total(data: bytes) -> None:
    with contextlib.suppress(UnsafeFile):
        extract_zip(data)


def test_looks_like_zip() -> None:
    assert looks_like_zip(b"PK\x03\x04rest")
    assert looks_like_zip(b"", name="pack.ZIP")
    assert looks_like_zip(b"", mime="application/x-zip-compressed; charset=binary")
    assert not looks_like_zip(b"\x89PNG", name="photo.png", mime="image/png")


# --- the metadata index --------------------------------------------------------------------------


def rec(uid: str, hash: str = "a" * 64, *, submitted: int = 1000, **kw: object) -> FileRecord:
    fields: dict[str, object] = {
        "name": f"{uid}.zip",
        "mime": "application/zip",
        "size": 10,
        "uploader": "alice",
        "uploader_groups": frozenset({"red"}),
        "keywords": ("missionpackage",),
    }
    fields.update(kw)
    return FileRecord(uid=uid, hash=hash, submitted=submitted, **fields)  # type: ignore[arg-type]


@pytest.fixture(params=FILE_INDEX_KINDS)
async def file_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FileStore]:
    """A FileStore per backend: memory or SQLite index with contents on disk, or index and
    contents in PostgreSQL (a schema of its own)."""
    async with opened_file_store(request.param, tmp_path, max_bytes=4 * CHUNK_BYTES) as fs:
        yield fs


@pytest.fixture
async def index(file_store: FileStore) -> FileIndex:
    return file_store.index


async def test_index_add_and_lookups(index: FileIndex) -> None:
    await index.add(rec("u1", submitted=1000))
    await index.add(rec("u2", submitted=3000, uploader_groups=frozenset({"blue", "red"})))
    await index.add(rec("u3", "b" * 64, submitted=2000, label='{"x":1}', creator_uid="ANDROID-1"))
    assert [r.uid for r in await index.by_hash("a" * 64)] == ["u2", "u1"]
    got = await index.by_uid("u3")
    assert got == rec("u3", "b" * 64, submitted=2000, label='{"x":1}', creator_uid="ANDROID-1")
    assert (await index.by_uid("u2")) == rec(
        "u2", submitted=3000, uploader_groups=frozenset({"blue", "red"})
    )
    assert await index.by_uid("nope") is None
    assert await index.by_hash("c" * 64) == []
    with pytest.raises(StorageError):
        await index.add(rec("u1"))


async def test_index_search_matches_the_reference_meaning(index: FileIndex) -> None:
    records = [
        rec("u1", keywords=("missionpackage",), tool="public", submitted=1),
        rec("u2", keywords=("photo", "missionpackage"), tool="private", submitted=2),
        rec("u3", keywords=(), tool="public", name="Report.PDF", submitted=3),
        rec("u4", "b" * 64, creator_uid="ANDROID-9", submitted=4),
    ]
    for r in records:
        await index.add(r)
    queries = [
        FileQuery(),
        FileQuery(keyword="missionpackage"),
        FileQuery(keyword="photo", tool="private"),
        FileQuery(tool="public"),
        FileQuery(name_contains="report"),
        FileQuery(creator_uid="ANDROID-9"),
        FileQuery(hash="b" * 64),
        FileQuery(keyword="none"),
    ]
    for q in queries:
        expected = [r.uid for r in sorted(records, key=lambda r: -r.submitted) if q.matches(r)]
        assert [r.uid for r in await index.search(q)] == expected, q
    assert [r.uid for r in await index.search(FileQuery(), limit=2)] == ["u4", "u3"]


async def test_index_set_tool(index: FileIndex) -> None:
    await index.add(rec("u1"))
    assert await index.set_tool("u1", "private")
    assert (await index.by_uid("u1")).tool == "private"  # type: ignore[union-attr]
    assert not await index.set_tool("nope", "private")


async def test_a_closed_index_refuses_work(index: FileIndex) -> None:
    await index.close()
    with pytest.raises(StorageError):
        await index.by_hash("a" * 64)


async def test_sqlite_index_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    first = await SqliteFileIndex.open(path)
    await first.add(rec("u1"))
    # A second handle (another listener) sees the first's writes at once.
    second = await SqliteFileIndex.open(path)
    assert (await second.by_uid("u1")) is not None
    await first.close()
    await second.close()
    third = await SqliteFileIndex.open(path)
    assert [r.uid for r in await third.by_hash("a" * 64)] == ["u1"]
    await third.close()


# --- the store ----------------------------------------------------------------------------------


async def _put(store: FileStore, data: bytes, uid: str, **kw: object) -> FileRecord:
    args: dict[str, object] = {
        "uid": uid,
        "name": "p.zip",
        "mime": "application/zip",
        "uploader": "alice",
        "uploader_groups": frozenset({"red"}),
        "submitted": 1,
    }
    args.update(kw)
    record, _ = await store.put(data, **args)  # type: ignore[arg-type]
    return record


async def test_content_is_stored_once_per_hash(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files", MemoryFileIndex())
    data = make_zip({"a.txt": b"hello"})
    first = await _put(store, data, "u1")
    second = await _put(store, data, "u2", uploader="bob", uploader_groups=frozenset({"blue"}))
    assert first.hash == second.hash == sha256_hex(data)
    assert [p.name for p in (tmp_path / "files").glob("??/*")] == [first.hash]
    assert store.content_path(first.hash).read_bytes() == data
    assert {r.uid for r in await store.index.by_hash(first.hash)} == {"u1", "u2"}
    await store.close()


async def test_refused_uploads_leave_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files", MemoryFileIndex(), max_bytes=1000)
    with pytest.raises(UnsafeFile) as info:
        await _put(store, b"x" * 1001, "u1", name="big.bin", mime="application/octet-stream")
    assert info.value.reason == "too_large"
    with pytest.raises(UnsafeFile) as info:
        await _put(store, make_zip({"../x": b"1"}), "u2")
    assert info.value.reason == "zip_path"
    with pytest.raises(UnsafeFile) as info:
        await _put(store, b"hello", "u3", expected_hash="0" * 64, name="h.txt", mime="text/plain")
    assert info.value.reason == "hash_mismatch"
    with pytest.raises(UnsafeFile) as info:
        await _put(store, b"hello", "u4", name="bad\nname", mime="text/plain")
    assert info.value.reason == "bad_metadata"
    with pytest.raises(UnsafeFile):
        await _put(store, b"not a zip", "u5", name="claims.zip", mime="text/plain")
    assert not (tmp_path / "files").exists() or not list((tmp_path / "files").glob("??/*"))
    assert await store.index.search(FileQuery()) == []


async def test_plain_files_are_stored_without_zip_checks(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path / "files")
    record = await _put(store, b"\x89PNG...", "u1", name="photo.png", mime="image/png")
    assert record.size == 7 and record.mime == "image/png"
    assert record.keywords == ()
    with pytest.raises(ValueError):
        store.content_path("../../etc/passwd")
    await store.close()


async def test_contents_are_kept_once_and_read_back_in_bounded_chunks(
    file_store: FileStore,
) -> None:
    """Every backend (contents on disk, or in PostgreSQL chunks): the same bytes uploaded twice
    are one content under two records; a file of several chunks reads back whole and a chunk at
    a time (never more than CHUNK_BYTES); the size limit holds; a missing hash reads as None."""
    big = bytes(range(256)) * (CHUNK_BYTES * 2 // 256) + b"tail"  # 2 chunks and 4 bytes
    first = await _put(file_store, big, "u1", name="big.bin", mime="application/octet-stream")
    second = await _put(
        file_store, big, "u2", name="b.bin", mime="application/octet-stream", uploader="bob"
    )
    assert first.hash == second.hash == sha256_hex(big)
    assert await file_store.content_size(first.hash) == len(big)
    chunks = [c async for c in file_store.content_chunks(first.hash)]
    assert b"".join(chunks) == big and len(chunks) >= 3
    assert max(len(c) for c in chunks) <= CHUNK_BYTES
    assert await file_store.read_content(first.hash, len(big)) == big
    with pytest.raises(StorageError):
        await file_store.read_content(first.hash, len(big) - 1)
    assert await file_store.content_size("0" * 64) is None
    assert await file_store.read_content("0" * 64, 10) is None
    assert [c async for c in file_store.content_chunks("0" * 64)] == []
    with pytest.raises(UnsafeFile) as info:
        await _put(file_store, b"x" * (4 * CHUNK_BYTES + 1), "u3", name="x.bin", mime="a/b")
    assert info.value.reason == "too_large"
    assert {r.uid for r in await file_store.index.by_hash(first.hash)} == {"u1", "u2"}
