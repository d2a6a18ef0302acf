"""``PUT /Marti/api/missions/{name}/contents/missionpackage``: a mission package (a TAK data
package zip) taken into a mission.

What TAK Server does with the body (TSw sync/api/MissionApi addMissionPackage;
MissionServiceDefaultImpl addMissionPackage; sync/MissionPackage extractMissionPackage;
tak-missions.md 5.2): ``creatorUid`` is required; MISSION_WRITE is required; every file entry of
the zip (directories skipped, each known by its base name) is taken except names containing
``manifest.xml``: an entry whose name ends in ``.cot`` is submitted as CoT to the mission (as if
sent with a ``dest mission``), any other file is added to Enterprise Sync under its base name
(tool ``public``, no keywords) and to the mission's contents. The answer is ``MissionChange``
with ``data`` the conflicting changes: an empty list on success (200); 409 with the conflicts;
500 when it failed. Only offline changes can conflict: a package holding a ``changes.json``
(ATAK's changes made while away: ``{"missionChanges": [MissionChange...]}``) is taken as those
changes, in order, each added item's CoT at ``<index>/<contentUid>.cot`` and each added file at
``<index>/<name>`` (else by its hash), after a conflict check (hasConflicts). There is no
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
changes are compared only with the recorded changes the caller may see, and are recorded at the
server's time (TAK records them at the device's); offline log entries and external data are
refused (400).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import mimetypes
import posixpath
import uuid
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass

from aiohttp import web

from liaison.api import files
from liaison.api import missions as mapi
from liaison.api.auth import AuthMode
from liaison.api.context import context, principal
from liaison.api.marti import envelope
from liaison.errors import PeerError, StorageError
from liaison.identity.packages import ZIP_EPOCH
from liaison.missions import OfflineChange, PackageOp, package_event
from liaison.model.event import Event
from liaison.protocol import cot_xml
from liaison.protocol.limits import MAX_XML_EVENT_BYTES
from liaison.query import (
    MAX_FILE_BYTES,
    FileRecord,
    MissionContent,
    MissionError,
    UnsafeFile,
    ZipLimits,
    extract_zip,
    is_sha256,
    mission_padded_time,
)

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


# Largest changes.json read (offline changes): a few thousand changes of a few hundred bytes.
MAX_OFFLINE_CHANGES_BYTES = 4 * 1024 * 1024
# Change types an offline change may have; TAK skips the others (addMissionPackage).
OFFLINE_TYPES = ("ADD_CONTENT", "REMOVE_CONTENT")


@dataclass(frozen=True, slots=True)
class _Step:
    """One step of an import before it is checked: an item's CoT, a file's content, a file
    already stored (offline ``contentResource`` by hash), or a removal."""

    cot: tuple[str, bytes] | None = None  # (entry name, bytes)
    uid: str | None = None  # the uid the item's CoT must have (offline changes)
    file: tuple[str, bytes, str, str, tuple[str, ...]] | None = None  # name, data, sha256, mime, kw
    stored_hash: str | None = None
    remove_uid: str | None = None
    remove_hash: str | None = None


def _refused(status: int, reason: str, message: str) -> MissionError:
    return MissionError(status, message, reason=f"package_{reason}")


def _mime(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def _cot_entry(name: str, content: bytes) -> tuple[str, bytes]:
    if len(content) > MAX_XML_EVENT_BYTES:
        raise _refused(400, "bad_cot", f"{name[:80]} is larger than {MAX_XML_EVENT_BYTES} bytes")
    return name, content


def _plain_steps(entries: list[tuple[str, bytes]]) -> list[_Step]:
    """A package without offline changes: its CoT events, then its files, each known by its
    base name (TAK's extractMissionPackage keeps the part after the last ``/``); the manifest
    (any name containing ``manifest.xml``, case-insensitive) is skipped as TAK skips it."""
    events: list[_Step] = []
    found: list[_Step] = []
    for path, content in entries:
        base = posixpath.basename(path)
        if "manifest.xml" in base.lower():
            continue
        if base.endswith(".cot"):
            events.append(_Step(cot=_cot_entry(base, content)))
        else:
            digest = hashlib.sha256(content).hexdigest()
            found.append(_Step(file=(base, content, digest, _mime(base), ())))
    return events + found


def _text(value: object, what: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise _refused(400, "offline_changes", f"changes.json: {what} is required")
        return None
    if (
        not isinstance(value, str)
        or len(value) > mapi.MAX_PARAM_CHARS
        or any(ord(c) < 0x20 for c in value)
    ):
        raise _refused(400, "offline_changes", f"changes.json: {what} is not acceptable")
    return value


def _offline(data: bytes) -> list[tuple[int, OfflineChange, list[str]]]:
    """The content changes of ``changes.json`` with their index in its ``missionChanges`` (the
    folder of their entries) and, for a file, its keywords. Other change types are skipped as
    TAK skips them; log entries and external data are refused (not supported here)."""
    if len(data) > MAX_OFFLINE_CHANGES_BYTES:
        raise _refused(400, "offline_changes", "changes.json is too large")
    try:
        doc = json.loads(data.removeprefix(b"\xef\xbb\xbf"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting deeper than the interpreter's stack (a hostile document).
        raise _refused(400, "offline_changes", "changes.json is not JSON") from None
    changes = doc.get("missionChanges") if isinstance(doc, dict) else None
    if not isinstance(changes, list) or len(changes) > MAX_PACKAGE_ENTRIES:
        raise _refused(
            400,
            "offline_changes",
            f"changes.json must hold missionChanges, at most {MAX_PACKAGE_ENTRIES}",
        )
    out: list[tuple[int, OfflineChange, list[str]]] = []
    for ndx, change in enumerate(changes):
        if not isinstance(change, dict):
            raise _refused(400, "offline_changes", "changes.json: a change is not an object")
        if change.get("type") not in OFFLINE_TYPES:
            log.info("changes.json: change %d of type %r skipped", ndx, change.get("type"))
            continue
        if change.get("logEntry") is not None or change.get("externalData") is not None:
            raise _refused(
                400,
                "offline_changes",
                "changes.json: offline log entries and external data are not supported",
            )
        stamp = change.get("timestamp")
        try:
            if isinstance(stamp, int) and not isinstance(stamp, bool):
                when = stamp
            else:
                when = cot_xml.parse_time(_text(stamp, "timestamp", required=True) or "")
        except PeerError:
            raise _refused(400, "offline_changes", "changes.json: a timestamp is bad") from None
        uid = _text(change.get("contentUid"), "contentUid")
        resource = change.get("contentResource")
        if uid is not None:
            out.append(
                (ndx, OfflineChange(type=change["type"], timestamp=when, content_uid=uid), [])
            )
        elif isinstance(resource, dict):
            name = _text(resource.get("name"), "contentResource.name")
            digest = _text(resource.get("hash"), "contentResource.hash")
            if digest is not None and not is_sha256(digest.lower()):
                raise _refused(400, "offline_changes", "changes.json: a hash is not SHA-256")
            if (name if change["type"] == "ADD_CONTENT" else digest) is None:
                # An added file needs its name (its entry), a removed one its hash.
                raise _refused(400, "offline_changes", "changes.json: a file change names no file")
            keywords = resource.get("keywords") or []
            if not isinstance(keywords, list):
                raise _refused(400, "offline_changes", "changes.json: keywords must be a list")
            kw = [k for k in (_text(k, "keyword") for k in keywords) if k]
            off = OfflineChange(
                type=change["type"],
                timestamp=when,
                resource_name=name,
                resource_hash=digest.lower() if digest else None,
            )
            out.append((ndx, off, kw))
    return out


def _offline_steps(
    entries: dict[str, bytes], pending: list[tuple[int, OfflineChange, list[str]]]
) -> list[_Step]:
    """The steps of offline changes, in their order: an added item's CoT is the entry
    ``<index>/<contentUid>.cot``, an added file's content the entry ``<index>/<name>`` (or,
    without it, the file of that hash already stored), as TAK looks them up."""
    steps: list[_Step] = []
    for ndx, p, keywords in pending:
        if p.content_uid is not None:
            if p.type == "REMOVE_CONTENT":
                steps.append(_Step(remove_uid=p.content_uid))
                continue
            path = f"{ndx}/{p.content_uid}.cot"
            raw = entries.get(path)
            if raw is None:
                raise _refused(400, "missing_entry", f"the package has no {path[:120]}")
            steps.append(_Step(cot=_cot_entry(path, raw), uid=p.content_uid))
        elif p.type == "REMOVE_CONTENT":
            steps.append(_Step(remove_hash=p.resource_hash))
        else:
            assert p.resource_name is not None
            content = entries.get(f"{ndx}/{p.resource_name}")
            if content is not None:
                digest = hashlib.sha256(content).hexdigest()
                mime = _mime(p.resource_name)
                kw = tuple(keywords)
                steps.append(_Step(file=(p.resource_name, content, digest, mime, kw)))
            elif p.resource_hash is not None:
                steps.append(_Step(stored_hash=p.resource_hash))
            else:
                raise _refused(400, "missing_entry", f"the package has no {ndx}/{p.resource_name}")
    return steps


def _parse(name: str, raw: bytes, mission: str, uid: str | None = None) -> Event:
    # A UTF-8 byte order mark before the event is dropped, as TAK does (trimByteOrderMark).
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        event = cot_xml.parse_event(raw)
    except PeerError as exc:
        raise _refused(400, "bad_cot", f"{name[:80]} is not a CoT event: {exc}") from None
    if event.is_control or event.is_delete:
        raise _refused(400, "bad_cot", f"{name[:80]} is a {event.type} message, not an item")
    if uid is not None and event.uid != uid:
        raise _refused(400, "bad_cot", f"{name[:80]} is not the event of uid {uid[:80]}")
    try:
        return package_event(event, mission)
    except PeerError as exc:
        raise _refused(400, "bad_cot", f"{name[:80]} is not a CoT event: {exc}") from None


def _conflict_json(name: str, guid: str, creator_uid: str, p: OfflineChange) -> dict[str, object]:
    """A conflicting offline change as TAK answers it (the pending MissionChange)."""
    when = mission_padded_time(p.timestamp)
    body: dict[str, object] = {
        "type": p.type,
        "missionName": name,
        "missionGuid": guid,
        "creatorUid": creator_uid,
        "timestamp": when,
        "serverTime": when,
        "isFederatedChange": False,
    }
    if p.content_uid is not None:
        body["contentUid"] = p.content_uid
    else:
        resource: dict[str, object] = {}
        if p.resource_name is not None:
            resource["name"] = resource["filename"] = p.resource_name
        if p.resource_hash is not None:
            resource["hash"] = p.resource_hash
        body["contentResource"] = resource
    return body


@mapi.handles_errors
async def put_mission_package(request: web.Request) -> web.Response:
    """``PUT /Marti/api/missions/{name}/contents/missionpackage?creatorUid=`` with the zip as
    the body (or a multipart file part): 200 ``MissionChange`` with an empty list when taken,
    409 with the conflicting offline changes."""
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
    # Offline changes (ATAK): a changes.json entry, found by its base name as TAK finds it.
    offline = next((c for p, c in entries if posixpath.basename(p) == OFFLINE_CHANGES), None)
    if offline is None:
        steps = await asyncio.to_thread(_plain_steps, entries)
    else:
        pending = await asyncio.to_thread(_offline, offline)
        conflicts = missions.offline_conflicts(viewer, name, [p for _, p, _ in pending])
        if conflicts:
            missions.m_refused.inc("package_conflict")
            log.info(
                "mission %s: package from %s has %d conflicting offline changes",
                name,
                viewer.name,
                len(conflicts),
            )
            guid = missions.get(viewer, name).guid
            body = [_conflict_json(name, guid, creator_uid, pending[i][1]) for i in conflicts]
            resp = envelope(ctx, "MissionChange", body)
            resp.set_status(409)
            return resp
        steps = _offline_steps(dict(entries), pending)
    # Parsing is pure and takes milliseconds an event: off the event loop.
    cots = [(s.cot, s.uid) for s in steps if s.cot is not None]
    events = await asyncio.to_thread(lambda: [_parse(c[0], c[1], name, u) for c, u in cots])
    # Everything is checked before anything is kept: the events against the mission's rules,
    # then the files' label (what the package would carry as an upload).
    store = files.file_store(request)
    known: dict[str, FileRecord] = {}
    for step in steps:
        if step.stored_hash is not None and step.stored_hash not in known:
            visible = await store.by_hash(viewer, step.stored_hash)
            if not visible:
                raise MissionError(404, f"not found: {step.stored_hash}")
            known[step.stored_hash] = visible[0]
    hashes = [s.file[2] for s in steps if s.file is not None] + list(known)
    refused = missions.package_refusals(viewer, name, events, hashes)
    if refused:
        raise _refused(403, "refused", "package refused: " + "; ".join(refused[:10]))
    label: str | None = None
    if any(s.file is not None for s in steps):
        label, reasons = ctx.router.label_upload(viewer, [c[1] for c, _ in cots])
        if reasons:
            raise _refused(403, "label", f"no label for the package's files: {', '.join(reasons)}")
    ops: list[PackageOp] = []
    parsed = iter(events)
    for step in steps:
        if step.cot is not None:
            ops.append(PackageOp(event=next(parsed)))
        elif step.file is not None:
            ops.append(PackageOp(record=await _store(request, step.file, creator_uid, label)))
        elif step.stored_hash is not None:
            ops.append(PackageOp(record=known[step.stored_hash]))
        else:
            ops.append(PackageOp(remove_uid=step.remove_uid, remove_hash=step.remove_hash))
    # The store was awaited: the rules are checked again where the package is taken.
    taken = await missions.import_package(viewer, name, ops, creator_uid=creator_uid, token=token)
    log.info(
        "mission %s: package from %s: %d items, %d files",
        name,
        viewer.name,
        taken,
        sum(1 for op in ops if op.record is not None),
    )
    return envelope(ctx, "MissionChange", [])


async def _store(
    request: web.Request,
    file: tuple[str, bytes, str, str, tuple[str, ...]],
    creator_uid: str,
    label: str | None,
) -> FileRecord:
    """One file of the package into the file store (TAK: Enterprise Sync, tool ``public``)."""
    name, content, _digest, mime, keywords = file
    viewer = principal(request)
    try:
        return await files.file_store(request).put(
            viewer,
            content,
            uid=str(uuid.uuid4()),
            name=name,
            mime=mime,
            submitted=context(request).clock_ms(),
            keywords=keywords,
            tool="public",
            creator_uid=creator_uid,
            expected_hash=None,
            label=label,
        )
    except UnsafeFile as exc:
        status = 413 if exc.reason == "too_large" else 400
        raise _refused(
            status, exc.reason, f"{name[:80]} is refused ({exc.reason}): {exc}"
        ) from None
    except StorageError as exc:
        log.error("mission package file %s from %s not stored: %s", name, viewer.name, exc)
        raise MissionError(503, "could not store the package's files") from None


# --- GET /missions/{name}/archive ------------------------------------------------------------

# Largest total of file bytes one archive holds: the archive is built in memory, like an upload.
MAX_ARCHIVE_FILE_BYTES = MAX_FILE_BYTES
# The port TAK writes into mission_uid and mission_server, whatever its listeners (TSw
# MissionServiceDefaultImpl archiveMission; tak-missions.md 1, "mission uid").
TAK_MISSION_PORT = 8443


def _archive_manifest(
    params: list[tuple[str, str]], groups: list[str], contents: list[tuple[str, str | None]]
) -> bytes:
    """``MANIFEST/manifest.xml`` of a mission archive: MissionPackageManifest version 2 with
    Configuration parameters, Contents (each ``zipEntry``, ``ignore="false"``, a CoT entry with
    a ``uid`` Parameter) and Groups (TSw util/missionpackage/mp.xsd, MissionPackage)."""
    root = ET.Element("MissionPackageManifest", {"version": "2"})
    conf = ET.SubElement(root, "Configuration")
    for name, value in params:
        ET.SubElement(conf, "Parameter", {"name": name, "value": value})
    listed = ET.SubElement(root, "Contents")
    for entry, uid in contents:
        content = ET.SubElement(listed, "Content", {"ignore": "false", "zipEntry": entry})
        if uid is not None:
            ET.SubElement(content, "Parameter", {"name": "uid", "value": uid})
    if groups:
        found = ET.SubElement(root, "Groups")
        for g in groups:
            ET.SubElement(found, "Group", {"name": g})
    ET.indent(root, space="  ")
    text = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + text).encode()


def _archive_zip(entries: list[tuple[str, bytes | None]]) -> bytes:
    """The zip: directories (``None``) and files, deflated, entry times zeroed as TAK does."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_STORED if content is None else zipfile.ZIP_DEFLATED
            info.external_attr = (0o40755 << 16 | 0x10) if content is None else (0o100644 << 16)
            zf.writestr(info, content or b"")
    return buf.getvalue()


def _entry_name(folder: str, stem: str, suffix: str, used: set[str]) -> str:
    """A zip entry name for a uid that stays in ``folder`` whatever the uid holds (``/``,
    ``\\``, control characters become ``_``) and is unique in the archive."""
    safe = "".join("_" if c in "/\\" or ord(c) < 0x20 else c for c in stem)
    if safe in ("", ".", ".."):
        safe = "item"
    name = f"{folder}{safe}{suffix}"
    n = 1
    while name in used:
        name = f"{folder}{safe}-{n}{suffix}"
        n += 1
    used.add(name)
    return name


@mapi.handles_errors
async def get_mission_archive(request: web.Request) -> web.Response:
    """``GET /Marti/api/missions/{name}/archive``: the mission as a mission package (TSw
    MissionApi getMissionArchive, MissionServiceDefaultImpl archiveMission): the items and
    files the caller may see, each released through the router."""
    ctx = context(request)
    viewer = principal(request)
    name = mapi._name(request)
    missions = mapi._missions(request)
    missions.require_read(viewer, name, mapi._token(request))
    rec = missions.get(viewer, name)
    items = missions.items(viewer, name, path="mission-archive")
    store = files.file_store(request)
    found: list[tuple[FileRecord, MissionContent]] = []
    total = 0
    for content in missions.contents(viewer, name):
        record = await store.by_uid(viewer, content.file_uid)
        if record is None:
            continue  # the upload record is gone or no longer visible
        total += record.size
        if total > MAX_ARCHIVE_FILE_BYTES:
            raise MissionError(
                400,
                f"the mission's files are larger than {MAX_ARCHIVE_FILE_BYTES} bytes to archive",
                reason="archive_too_large",
            )
        found.append((record, content))
    entries: list[tuple[str, bytes | None]] = [("cot/", None), ("contents/", None)]
    listed: list[tuple[str, str | None]] = []
    used: set[str] = set()
    for item in items:
        entry = _entry_name("cot/", item.uid, ".cot", used)
        entries.append((entry, item.event.xml))
        listed.append((entry, item.uid))
    for n, (record, content) in enumerate(found):
        data = await store.read_content(record, MAX_ARCHIVE_FILE_BYTES)
        if data is None:
            log.error("content of %s is missing", record.hash)
            continue
        # The bytes are handed over: the decision and a release record, as a download.
        if not store.release(viewer, record, path="mission-archive"):
            raise MissionError(503, "the audit log cannot be written")
        entry = f"contents/{n}_{files.download_name(content.name, record.hash)}"
        entries.append((entry, data))
        listed.append((entry, None))
    host = ctx.config.public_host
    held = viewer.in_groups | viewer.out_groups
    params = [
        ("uid", str(uuid.uuid4())),
        ("name", rec.name),
        ("mission_guid", rec.guid),
        ("creatorUid", rec.creator_uid),
        ("create_time", str(rec.create_time)),
        ("expiration", "-1"),
        ("chatroom", rec.chat_room or ""),
        ("description", rec.description or ""),
        ("tool", rec.tool),
        ("onReceiveImport", "true"),
        ("onReceiveDelete", "false"),
        ("mission_name", rec.name),
        ("mission_label", rec.name),
        ("mission_uid", f"{host}-{TAK_MISSION_PORT}-ssl-{rec.name}"),
        ("mission_server", f"{host}:{TAK_MISSION_PORT}:ssl"),
    ]
    manifest = _archive_manifest(params, sorted(rec.groups & held), listed)
    entries += [("MANIFEST/", None), ("MANIFEST/manifest.xml", manifest)]
    body = await asyncio.to_thread(_archive_zip, entries)
    return web.Response(
        body=body,
        content_type="application/zip",
        headers={"Content-Disposition": files.content_disposition(f"{rec.name}.zip")},
    )


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """The mission package import and the archive (no ``/guid/`` twins, as in TAK:
    tak-missions.md 6)."""
    app.router.add_put(f"{mapi.BASE}/{{name}}/contents/missionpackage", put_mission_package)
    app.router.add_get(f"{mapi.BASE}/{{name}}/archive", get_mission_archive)
