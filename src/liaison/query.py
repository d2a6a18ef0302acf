"""The router's query side: what a caller who asks (the HTTP API) is given, and nothing more.

The router decides and records; this module holds what it decides over, the event history
(:class:`~liaison.storage.base.Store`) and the file store, so the HTTP layer never holds either:

- :meth:`Query.history` pages the stored history for a viewer (``/api/v1/history``, the track,
  chat), each row through ``Router.filter_records`` (the decision and one ``release`` record per
  row handed over);
- :class:`Files` is one listener's handle on the file store (files and data packages): listings
  and searches pass ``Router.permits`` (names are not released, so no record), and content is
  handed over only after ``Router.release_item`` (the decision and its ``release`` record).

The current picture and single items are ``Router.picture`` and ``Router.find``. Every release
record is built by ``audit.release_record`` (through ``gate.release_entries``).

The value types the HTTP side needs to ask (history queries, file records and filters, limits)
are re-exported here, so ``api/`` never imports ``liaison.storage``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from pathlib import Path

from liaison.errors import PeerError
from liaison.missions import STORE_BUSY_RETRY_S as mission_store_busy_retry_s
from liaison.missions import MissionError, Missions
from liaison.missions import padded_time as mission_padded_time
from liaison.missions import resource_json as mission_resource_json
from liaison.missions import role_json as mission_role_json
from liaison.missions import unpadded_time as mission_unpadded_time
from liaison.model.event import Event
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from liaison.router import Router
from liaison.storage.base import MAX_QUERY_LIMIT, Store, StoredEvent
from liaison.storage.base import Query as HistoryQuery
from liaison.storage.files import (
    MAX_FILE_BYTES,
    MAX_TEXT_CHARS,
    FileQuery,
    FileRecord,
    FileStore,
    UnsafeFile,
    ZipLimits,
    extract_zip,
    is_sha256,
)
from liaison.storage.missions import (
    InvitationRecord,
    LogEntryRecord,
    MissionChangeRecord,
    MissionContent,
    MissionItem,
    MissionRecord,
    SubscriptionRecord,
)

__all__ = [
    "HISTORY_MIN_PAGE",
    "HISTORY_SCAN_BUDGET",
    "MAX_FILE_BYTES",
    "MAX_QUERY_LIMIT",
    "MAX_TEXT_CHARS",
    "FileQuery",
    "FileRecord",
    "Files",
    "HistoryQuery",
    "InvitationRecord",
    "LogEntryRecord",
    "MissionChangeRecord",
    "MissionContent",
    "MissionError",
    "MissionItem",
    "MissionRecord",
    "Missions",
    "Query",
    "StoredEvent",
    "SubscriptionRecord",
    "UnsafeFile",
    "ZipLimits",
    "extract_zip",
    "is_sha256",
    "mission_padded_time",
    "mission_resource_json",
    "mission_role_json",
    "mission_store_busy_retry_s",
    "mission_unpadded_time",
]

# Most history rows one query reads from the store while looking for rows the viewer may see
# (see Query.history): five full pages, a few tens of MB of XML at worst, read page by page.
HISTORY_SCAN_BUDGET = 5 * MAX_QUERY_LIMIT
# Smallest page read from the store when looking for visible rows.
HISTORY_MIN_PAGE = 200


class Query:
    """History and files for a viewer, through the router's decision and release records.

    Built by the composition root with the router, the event store and how to open the file
    store; the HTTP side gets this object and never the stores behind it.
    """

    def __init__(
        self,
        router: Router,
        store: Store,
        open_files: Callable[[], Awaitable[FileStore]],
        missions: Missions | None = None,
    ) -> None:
        self.router = router
        self._store = store
        self._open_files = open_files
        # The missions (Data Sync), each answer released through the router (liaison.missions).
        self.missions = missions

    async def history(
        self,
        viewer: Principal,
        query: HistoryQuery,
        *,
        keep: Callable[[Event], bool] | None = None,
        known_as: Collection[str] = (),
        path: str = "http",
    ) -> list[tuple[StoredEvent, Event]]:
        """Up to ``query.limit`` stored events ``viewer`` may see (and ``keep`` accepts), newest
        first, each released through ``Router.filter_records`` (``known_as``: the viewer's other
        identities, for directed messages).

        The store's limit counts rows before the access decision, so a plain query could come
        back short (or empty) because of other organisations' rows, which would hint at how much
        they have. Pages are read until ``limit`` visible rows are found, the history is
        exhausted, or :data:`HISTORY_SCAN_BUDGET` rows were read. Pages are chained with
        ``until`` on ``time`` (inclusive of the oldest time seen, with rows deduplicated by
        ``seq``) so equal times are not skipped.
        """
        wanted = query.limit
        page = min(MAX_QUERY_LIMIT, max(2 * wanted, HISTORY_MIN_PAGE))
        found: list[tuple[StoredEvent, Event]] = []
        seen: set[int] = set()
        until = query.until
        scanned = 0
        while len(found) < wanted and scanned < HISTORY_SCAN_BUDGET:
            rows = await self._store.history(replace(query, until=until, limit=page))
            new = [r for r in rows if r.seq not in seen]
            if not new:
                break
            seen.update(r.seq for r in new)
            scanned += len(new)
            allowed = self.router.filter_records(viewer, new, path=path, known_as=known_as)
            found.extend((rec, ev) for rec, ev in _parsed(allowed) if keep is None or keep(ev))
            if len(rows) < page:
                break
            until = min(r.time for r in rows) + 1
        return found[:wanted]

    async def open_files(self) -> Files:
        """A new handle on the file store (one per HTTP listener; close it with the listener)."""
        return Files(self.router, await self._open_files())


def _parsed(records: Sequence[StoredEvent]) -> list[tuple[StoredEvent, Event]]:
    """Stored records (already released) with their parsed events; unreadable rows are left
    out."""
    out: list[tuple[StoredEvent, Event]] = []
    for rec in records:
        try:
            event = cot_xml.parse_event(rec.xml)
        except PeerError:
            continue
        out.append((rec, event))
    return out


class Files:
    """One handle on the file store (files and data packages) seen through the router.

    A record ``viewer`` may not see is absent from every answer, exactly like a missing one.
    """

    def __init__(self, router: Router, store: FileStore) -> None:
        self._router = router
        self._store = store

    def visible(self, viewer: Principal, records: Sequence[FileRecord]) -> list[FileRecord]:
        """The records ``viewer`` may see (the router's decision), order kept. Metadata only:
        nothing is released, so no ``release`` record."""
        return [
            r
            for r in records
            if self._router.permits(viewer, sender_groups=r.uploader_groups, label=r.label)
        ]

    async def by_hash(self, viewer: Principal, hash: str) -> list[FileRecord]:
        """The records of this content ``viewer`` may see, newest first."""
        return self.visible(viewer, await self._store.index.by_hash(hash.lower()))

    async def by_uid(self, viewer: Principal, uid: str) -> FileRecord | None:
        found = await self._store.index.by_uid(uid)
        if found is None or not self.visible(viewer, [found]):
            return None
        return found

    async def search(self, viewer: Principal, query: FileQuery) -> list[FileRecord]:
        """The records matching ``query`` that ``viewer`` may see (filters first, then the
        decision, so a count reveals nothing of other organisations' files)."""
        return self.visible(viewer, await self._store.index.search(query))

    def content_path(self, rec: FileRecord) -> Path | None:
        """Where ``rec``'s content lies (it may be missing), or None when contents are kept in
        the database (:meth:`content_chunks`). Hand it over only after :meth:`release`."""
        return self._store.content_path(rec.hash) if self._store.on_disk else None

    async def content_size(self, rec: FileRecord) -> int | None:
        """The size of ``rec``'s stored content; None when it is missing."""
        return await self._store.content_size(rec.hash)

    def content_chunks(self, rec: FileRecord) -> AsyncIterator[bytes]:
        """``rec``'s content a chunk at a time. Hand it over only after :meth:`release`."""
        return self._store.content_chunks(rec.hash)

    async def read_content(self, rec: FileRecord, limit: int) -> bytes | None:
        """``rec``'s whole content (StorageError past ``limit`` bytes); None if missing."""
        return await self._store.read_content(rec.hash, limit)

    def release(self, viewer: Principal, rec: FileRecord, *, path: str = "file") -> bool:
        """Hand ``rec``'s content to ``viewer``: the router's access decision and, when the
        viewer's organisation is not the one that owns the file's label, a ``release`` record
        written before the first byte is sent. False: send nothing."""
        return self._router.release_item(
            viewer,
            path=path,
            uid=rec.uid,
            type=rec.mime,
            sender_groups=rec.uploader_groups,
            label=rec.label,
            sha256=rec.hash,
        )

    async def put(
        self,
        uploader: Principal,
        data: bytes,
        *,
        uid: str,
        name: str,
        mime: str,
        submitted: int,
        keywords: Sequence[str],
        tool: str,
        creator_uid: str | None,
        expected_hash: str | None,
        label: str | None,
    ) -> FileRecord:
        """Check, store and index one upload of ``uploader``, written into its IN groups with
        ``label`` (``Router.label_upload``). Raises :class:`UnsafeFile` (nothing stored) or
        StorageError."""
        rec, _summary = await self._store.put(
            data,
            uid=uid,
            name=name,
            mime=mime,
            uploader=uploader.name,
            uploader_groups=uploader.in_groups,
            submitted=submitted,
            keywords=keywords,
            tool=tool,
            creator_uid=creator_uid,
            expected_hash=expected_hash,
            label=label,
        )
        return rec

    async def set_tool(self, uid: str, tool: str) -> bool:
        """Change a record's tool (the caller has checked it is the viewer's own upload)."""
        return await self._store.index.set_tool(uid, tool)

    async def close(self) -> None:
        await self._store.close()
