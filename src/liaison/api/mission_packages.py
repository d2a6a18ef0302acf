"""``PUT /Marti/api/missions/{name}/contents/missionpackage``: a mission package (a TAK data
package zip) taken into a mission.

What TAK Server does with the body (TSw sync/api/MissionApi addMissionPackage;
MissionServiceDefaultImpl addMissionPackage; sync/MissionPackage extractMissionPackage;
tak-missions.md 5.2): ``creatorUid`` is required; MISSION_WRITE is required; every file entry of
the zip (directories skipped, each known by its base name) is taken except names containing
``manifest.xml``: an entry whose name ends in ``.cot`` is submitted as CoT to the mission (as if
sent with a ``dest mission``), any other file is added to Enterprise Sync under its base name
(tool ``public``, no keywords) and to the mission's contents. The answer is ``MissionChange``
with ``data`` the conflicting changes: an empty list on success (200); 409 with the conflicts
(only offline changes, a ``changes.json`` entry, can conflict); 500 when it failed. There is no
``/guid/`` twin.

Here the zip is hostile input: it goes through the file store's zip checks
(``storage.files.extract_zip``: no path leaving the archive, no links, no encrypted entries,
bounded entry count, sizes and compression ratio measured by decompressing), every ``.cot`` entry
must be one acceptable CoT event (not a control message, not a delete), and the whole package is
checked against the mission's rules before anything is taken: each event through the router's
ingest rules as an event sent to the mission (its own label or the caller's default, nothing
above the caller's clearance), the files with the label the package would get as an upload
(``Router.label_upload``: the dominant label of its CoT events, or the caller's default). A
refusal answers 400, 403 or 413 with TAK's JSON error body, is logged and counted
(``liaison_mission_refused_total``); nothing of a refused package joins the mission. Offline
changes (``changes.json``) are refused with 400 (not supported).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import posixpath
import uuid
from dataclasses import dataclass

from aiohttp import web

from liaison.api import files
from liaison.api import missions as mapi
from liaison.api.auth import AuthMode
from liaison.api.context import context, principal
from liaison.api.marti import envelope
from liaison.errors import PeerError, StorageError
from liaison.missions import package_event
from liaison.model.event import Event
from liaison.protocol import cot_xml
from liaison.protocol.limits import MAX_XML_EVENT_BYTES
from liaison.query import MAX_FILE_BYTES, FileRecord, MissionError
from liaison.storage.files import UnsafeFile, ZipLimits, extract_zip

log = logging.getLogger(__name__)

# Largest package body read (bytes): the file store's upload limit.
MAX_PACKAGE_BYTES = MAX_FILE_BYTES
# Entries in one package. ATAK's mission export holds one .cot per item and one file per
# attachment; TAK Server bounds the zips it extracts at 1,024 entries (TSw logs/LogServlet
# MAX_ZIP_ENTRIES); a mission holds at most 8,192 items and 4,096 files.
MAX_PACKAGE_ENTRIES = 4_096
# Total uncompressed bytes of one package: each file joins the file store, whose limit this is,
# and the whole package is held in memory while it is checked.
MAX_PACKAGE_UNCOMPRESSED = MAX_FILE_BYTES
PACKAGE_ZIP_LIMITS = ZipLimits(
    max_entries=MAX_PACKAGE_ENTRIES, max_uncompressed=MAX_PACKAGE_UNCOMPRESSED
)
# The offline changes entry TAK reads first (MissionServiceDefaultImpl addMissionPackage).
OFFLINE_CHANGES = "changes.json"


@dataclass(frozen=True, slots=True)
class _Package:
    events: list[tuple[str, bytes]]  # (base name, bytes) of each .cot entry
    files: list[tuple[str, bytes, str]]  # (base name, bytes, sha256) of each other file


def _refused(status: int, reason: str, message: str) -> MissionError:
    return MissionError(status, message, reason=f"package_{reason}")


def _split(entries: list[tuple[str, bytes]]) -> _Package:
    """The package's CoT events and files, each known by its base name (TAK's
    extractMissionPackage keeps the part after the last ``/``); the manifest (any name
    containing ``manifest.xml``, case-insensitive) is skipped as TAK skips it."""
    events: list[tuple[str, bytes]] = []
    found: list[tuple[str, bytes, str]] = []
    for path, content in entries:
        base = posixpath.basename(path)
        if "manifest.xml" in base.lower():
            continue
        if base == OFFLINE_CHANGES:
            raise _refused(
                400, "offline_changes", "offline changes (changes.json) are not supported"
            )
        if base.endswith(".cot"):
            if len(content) > MAX_XML_EVENT_BYTES:
                raise _refused(
                    400, "bad_cot", f"{base[:80]} is larger than {MAX_XML_EVENT_BYTES} bytes"
                )
            events.append((base, content))
        else:
            found.append((base, content, hashlib.sha256(content).hexdigest()))
    return _Package(events, found)


def _parse(name: str, raw: bytes, mission: str) -> Event:
    # A UTF-8 byte order mark before the event is dropped, as TAK does (trimByteOrderMark).
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        event = cot_xml.parse_event(raw)
    except PeerError as exc:
        raise _refused(400, "bad_cot", f"{name[:80]} is not a CoT event: {exc}") from None
    if event.is_control or event.is_delete:
        raise _refused(400, "bad_cot", f"{name[:80]} is a {event.type} message, not an item")
    try:
        return package_event(event, mission)
    except PeerError as exc:
        raise _refused(400, "bad_cot", f"{name[:80]} is not a CoT event: {exc}") from None


def _mime(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


@mapi.handles_errors
async def put_mission_package(request: web.Request) -> web.Response:
    """``PUT /Marti/api/missions/{name}/contents/missionpackage?creatorUid=`` with the zip as
    the body (or a multipart file part): 200 ``MissionChange`` with an empty list when taken."""
    files.refuse_cross_site(request)
    ctx = context(request)
    viewer = principal(request)
    name = mapi._name(request)
    creator_uid = mapi._param(request, "creatorUid", "CreatorUid", required=True)
    assert creator_uid is not None
    missions = mapi._missions(request)
    token = mapi._token(request)
    # 404 for a mission the caller may not see, 403 without MISSION_WRITE, before the body.
    missions.require_write(viewer, name, token)
    try:
        upload = await files.read_upload(
            request,
            part_names=("assetfile", "resource", "file"),
            any_file_part=True,
            max_bytes=MAX_PACKAGE_BYTES,
        )
    except files.UploadTooLarge:
        raise _refused(
            413, "too_large", f"the package is larger than {MAX_PACKAGE_BYTES} bytes"
        ) from None
    if upload is None or not upload.data:
        raise _refused(400, "empty", "the body holds no mission package")
    try:
        entries = await asyncio.to_thread(extract_zip, upload.data, PACKAGE_ZIP_LIMITS)
    except UnsafeFile as exc:
        raise _refused(
            400, exc.reason, f"the mission package is refused ({exc.reason}): {exc}"
        ) from None
    package = await asyncio.to_thread(_split, entries)
    events = [_parse(n, raw, name) for n, raw in package.events]
    # Everything is checked before anything is kept: the events against the mission's rules,
    # then the files' label (what the package would carry as an upload).
    refused = missions.package_refusals(viewer, name, events, (h for _, _, h in package.files))
    if refused:
        raise _refused(403, "refused", "package refused: " + "; ".join(refused[:10]))
    label: str | None = None
    if package.files:
        label, reasons = ctx.router.label_upload(viewer, [raw for _, raw in package.events])
        if reasons:
            raise _refused(403, "label", f"no label for the package's files: {', '.join(reasons)}")
    records: list[FileRecord] = []
    store = files.file_store(request)
    for base, content, _digest in package.files:
        try:
            rec = await store.put(
                viewer,
                content,
                uid=str(uuid.uuid4()),
                name=base,
                mime=_mime(base),
                submitted=ctx.clock_ms(),
                keywords=(),
                tool="public",
                creator_uid=creator_uid,
                expected_hash=None,
                label=label,
            )
        except UnsafeFile as exc:
            status = 413 if exc.reason == "too_large" else 400
            raise _refused(
                status, exc.reason, f"{base[:80]} is refused ({exc.reason}): {exc}"
            ) from None
        except StorageError as exc:
            log.error("mission package file %s from %s not stored: %s", base, viewer.name, exc)
            raise MissionError(503, "could not store the package's files") from None
        records.append(rec)
    # The store was awaited: the rules are checked again where the package is taken.
    taken = missions.import_package(
        viewer, name, events, records, creator_uid=creator_uid, token=token
    )
    log.info(
        "mission %s: package from %s: %d items, %d files",
        name,
        viewer.name,
        taken,
        len(records),
    )
    return envelope(ctx, "MissionChange", [])


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """The mission package import (no ``/guid/`` twin, as in TAK: tak-missions.md 6)."""
    app.router.add_put(f"{mapi.BASE}/{{name}}/contents/missionpackage", put_mission_package)
