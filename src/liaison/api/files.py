"""The HTTP side of the file store: one handle per listener, uploads, visibility and content URLs.

The handle is a :class:`liaison.query.Files` (the router's query side), never the file store
itself. Every answer about a file comes from it, and it asks the router (``Router.permits``) with
the uploader's groups and the record's label. A record the caller may not see is treated exactly
like one that does not exist (:func:`not_found`). Content is handed over only through
:func:`release` (``Router.release_item``: the decision and the release record).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import unicodedata
import urllib.parse
import zipfile
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from liaison.api.auth import AuthMode
from liaison.api.context import CONTEXT_KEY, context, principal
from liaison.api.server import MODE_KEY
from liaison.protocol.limits import MAX_XML_EVENT_BYTES
from liaison.query import MAX_FILE_BYTES, FileRecord, Files

log = logging.getLogger(__name__)

FILES_KEY: web.AppKey[Files] = web.AppKey("liaison.files")
_INSTALLED_KEY: web.AppKey[bool] = web.AppKey("liaison.files.installed")

# Most parts read from one multipart upload before giving up on finding the file part. ATAK
# sends one part; browsers a few form fields with it.
MAX_MULTIPART_PARTS = 16
# Bytes read from the network at a time while receiving an upload.
READ_CHUNK_BYTES = 256 * 1024

# The body of every "no such file" answer, for missing and forbidden alike.
NOT_FOUND_TEXT = "not found\n"


# RFC 8187 section 3.2.1 attr-char other than ALPHA and DIGIT: left as they are in filename*.
_ATTR_CHAR_SAFE = "!#$&+-.^_`|~"
# Longest base name sent, in characters: the store already clips names; this bounds the header.
MAX_DOWNLOAD_NAME_CHARS = 255


def download_name(name: str, fallback: str) -> str:
    """The base name of ``name``: no folders (``/`` or ``\\``), no control characters, never
    ``.`` or ``..``; ``fallback`` when nothing is left."""
    base = re.split(r"[/\\]", name)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    if base in ("", ".", ".."):
        base = fallback
    return base[:MAX_DOWNLOAD_NAME_CHARS]


def content_disposition(name: str, fallback: str = "download") -> str:
    """``attachment; filename="ASCII"; filename*=UTF-8''PERCENT-ENCODED`` for a download named
    ``name`` (RFC 6266 section 4.3: ``filename`` for old clients, ``filename*`` in RFC 8187
    encoding for the rest). Every download answer uses this: Marti content, data packages,
    device profiles. The ASCII fallback replaces what is not printable ASCII, and ``"``, ``\\``
    and ``%`` (which some clients decode), with ``_``."""
    base = download_name(name, fallback)
    ascii_name = "".join(
        c if " " <= c <= "~" and c not in '"\\%' else "_"
        for c in unicodedata.normalize("NFKD", base)
        if not unicodedata.combining(c)
    )
    encoded = urllib.parse.quote(base, safe=_ATTR_CHAR_SAFE, encoding="utf-8")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"


def install(app: web.Application) -> None:
    """Open the listener's handle on the file store (``DATA_DIR/files``, through
    ``ApiContext.query``) at startup and close it at cleanup.

    Each listener's application has its own handle on the same folder and SQLite index, so an
    upload on one listener is visible on the others. Idempotent.
    """
    if app.get(_INSTALLED_KEY):
        return
    app[_INSTALLED_KEY] = True

    async def open_files(app: web.Application) -> None:
        ctx = app[CONTEXT_KEY]
        app[FILES_KEY] = await ctx.query.open_files()

    async def close_files(app: web.Application) -> None:
        store = app.get(FILES_KEY)
        if store is not None:
            await store.close()

    app.on_startup.append(open_files)
    app.on_cleanup.append(close_files)


def file_store(request: web.Request) -> Files:
    return request.app[FILES_KEY]


def not_found() -> web.Response:
    """The one answer for a file that is missing or that the caller may not see."""
    return web.Response(status=404, text=NOT_FOUND_TEXT, content_type="text/plain")


def release(request: web.Request, rec: FileRecord) -> bool:
    """Hand ``rec``'s content to the caller: the router's access decision and, when the caller's
    organisation is not the one that owns the file's label, a ``release`` record (path
    ``file``) written before the first byte is sent. False: send nothing."""
    return file_store(request).release(principal(request), rec, path="file")


async def visible_by_hash(request: web.Request, hash: str) -> FileRecord | None:
    """The newest record of this content the caller may see, or None (missing or forbidden)."""
    found = await file_store(request).by_hash(principal(request), hash)
    return found[0] if found else None


def base_url(request: web.Request) -> str:
    """``scheme://public_host:port`` of the listener this request came in on.

    The host is the configured public host (what clients were given), the port the one this
    listener is bound to, so a URL handed to a client works on the listener it already uses.
    """
    ctx = context(request)
    mode = request.app[MODE_KEY]
    scheme = "http" if mode is AuthMode.ANONYMOUS else "https"
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    port = int(sock[1]) if sock else (request.url.port or (80 if scheme == "http" else 443))
    host = ctx.config.public_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal (RFC 3986 section 3.2.2)
    return f"{scheme}://{host}:{port}"


def content_url(request: web.Request, hash: str) -> str:
    """Where a client downloads a file: ``/Marti/sync/content?hash=`` (TSw ContentServlet), the
    URL TAK Server's missionupload returns and clients put in a fileshare's ``senderUrl``."""
    return f"{base_url(request)}/Marti/sync/content?hash={hash}"


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC with a Z (TAK's SubmissionDateTime form)."""
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def metadata_json(rec: FileRecord) -> dict[str, Any]:
    """A record in TAK Server's Enterprise Sync metadata shape (``sync/search`` results; TS
    takserver-plugins sync/Metadata.java field names). The groups it was written into are not
    included: they name other organisations' groups."""
    return {
        "UID": rec.uid,
        "Name": rec.name,
        "Hash": rec.hash,
        "PrimaryKey": rec.uid,
        "SubmissionDateTime": iso_ms(rec.submitted),
        "SubmissionUser": rec.uploader,
        "CreatorUid": rec.creator_uid or "",
        "Keywords": list(rec.keywords),
        "MIMEType": rec.mime,
        "Size": rec.size,
        "Tool": rec.tool,
        "EXPIRATION": -1,
    }


@dataclass(frozen=True, slots=True)
class Upload:
    data: bytes
    filename: str | None
    content_type: str | None


class UploadTooLarge(Exception):
    pass


async def _read_bounded_part(part: BodyPartReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise UploadTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(
    request: web.Request,
    *,
    part_names: tuple[str, ...],
    any_file_part: bool = False,
    max_bytes: int = MAX_FILE_BYTES,
) -> Upload | None:
    """The uploaded file of a request: a multipart part named one of ``part_names`` (or, with
    ``any_file_part``, the first part carrying a filename), or the raw body when the request is
    not multipart. None when a multipart body has no such part. Raises :class:`UploadTooLarge`.
    """
    declared = request.content_length
    if declared is not None and declared > max_bytes + 64 * 1024:
        raise UploadTooLarge()
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        for _ in range(MAX_MULTIPART_PARTS):
            part = await reader.next()
            if part is None:
                return None
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not what TAK clients send
            if part.name in part_names or (any_file_part and part.filename):
                data = await _read_bounded_part(part, max_bytes)
                return Upload(data, part.filename, part.headers.get("Content-Type"))
            await part.release()
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise UploadTooLarge()
        chunks.append(chunk)
    return Upload(b"".join(chunks), None, request.content_type or None)


# Bounds on reading the CoT events inside an upload to find their labels. Every read is bounded
# by these, whatever the zip headers claim, so this scan is safe before the store's full checks.
MAX_LABEL_SCAN_ENTRIES = 2_000
MAX_LABEL_SCAN_BYTES = 16 * 1024 * 1024


def cot_parts(data: bytes) -> list[bytes]:
    """The CoT events an upload carries: the upload itself when it is one event, or the ``.cot``
    members of a data package (tak-protocol.md 5.1). Unreadable archives give no parts here; the
    file store's own checks refuse them."""
    stripped = data.lstrip()
    if stripped.startswith((b"<?xml", b"<event")):
        return [data]
    if data[:4] != b"PK\x03\x04":
        return []
    parts: list[bytes] = []
    budget = MAX_LABEL_SCAN_BYTES
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist()[:MAX_LABEL_SCAN_ENTRIES]:
                if info.is_dir() or not info.filename.lower().endswith(".cot") or budget <= 0:
                    continue
                with zf.open(info) as member:
                    raw = member.read(min(budget, MAX_XML_EVENT_BYTES) + 1)
                budget -= len(raw)
                parts.append(raw)
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, NotImplementedError):
        return []
    return parts


def refuse_cross_site(request: web.Request) -> None:
    """Refuse a state-changing request a browser made on behalf of another site.

    A browser holding a client certificate presents it to any site's requests, so a page elsewhere
    could make it post here (cross-site request forgery). Browsers mark such requests with
    ``Sec-Fetch-Site`` (W3C Fetch Metadata) and ``Origin`` (RFC 6454); TAK clients send neither.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise web.HTTPForbidden(text="cross-site request refused\n")
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(request, origin):
        raise web.HTTPForbidden(text="cross-site request refused\n")


def same_origin(request: web.Request, origin: str) -> bool:
    """Whether an ``Origin`` header names this server as the browser reached it."""
    if origin == "null":
        return False
    host = request.headers.get("Host", "")
    _, sep, rest = origin.partition("://")
    return bool(sep) and rest.rstrip("/").lower() == host.lower()
