"""The operator's own MBTiles file (raster or vector), served to the web map over the Natural
Earth basemap.

MBTiles 1.3 (mapbox/mbtiles-spec): an SQLite file with a ``metadata`` table (name, value) and a
``tiles`` table (zoom_level, tile_column, tile_row, tile_data) whose rows are numbered TMS-style
from the south; the web map asks in XYZ numbering (from the north), so the row is flipped:
``tile_row = 2**z - 1 - y``. The file is opened read-only; reads run on a worker thread.
Tiles carry no items, so they need no access decision: they are the operator's basemap.

Vector tile sets (metadata ``format`` = ``pbf``) hold Mapbox Vector Tiles (mapbox/vector-tile-spec
2.1), stored gzip-compressed by the usual tools (tippecanoe, planetiler, OpenMapTiles): a gzip
tile goes out as stored with ``Content-Encoding: gzip`` when the request accepts gzip (RFC 9110
8.4 and 12.5.3; every browser does), and is decompressed here otherwise; a zlib-compressed tile
is always decompressed here, an uncompressed one sent as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import zlib
from pathlib import Path

from aiohttp import web

from liaison.api.auth import AuthMode
from liaison.api.context import CONTEXT_KEY
from liaison.errors import ConfigError

API = "/api/v1"
# Formats the page draws, and their content types (MBTiles 1.3 "format"; the vector tile type
# is IANA's application/vnd.mapbox-vector-tile).
VECTOR_FORMAT = "pbf"
FORMATS = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    VECTOR_FORMAT: "application/vnd.mapbox-vector-tile",
}
# Largest tile decompressed for a client that does not accept gzip (bytes): beyond it the tile
# is answered 500 rather than inflated without end.
MAX_INFLATED_TILE = 16 * 1024 * 1024
# Largest ``json`` metadata value read for its ``vector_layers`` (characters).
MAX_METADATA_JSON = 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
# Highest zoom level a request may name: 2^30 tiles a side is beyond any real tile set.
MAX_ZOOM = 30
TILES_KEY: web.AppKey[MbTiles] = web.AppKey("liaison.mbtiles")


class MbTiles:
    """A read-only MBTiles file. One connection per thread (sqlite3 objects stay on theirs)."""

    def __init__(self, path: Path) -> None:
        self._uri = f"file:{path}?mode=ro"
        self._local = threading.local()
        try:
            meta = dict(self._db().execute("SELECT name, value FROM metadata").fetchall())
        except sqlite3.Error as exc:
            raise ConfigError(
                "web.mbtiles", f"{path} is not a readable MBTiles file: {exc}"
            ) from exc
        fmt = str(meta.get("format", "png")).lower()
        if fmt not in FORMATS:
            raise ConfigError("web.mbtiles", f"{path}: format {fmt!r} is not png, jpg, webp or pbf")
        self.format = fmt
        self.vector = fmt == VECTOR_FORMAT
        self.info: dict[str, object] = {
            "format": "jpg" if fmt == "jpeg" else fmt,
            "vector": self.vector,
        }
        if self.vector:
            layers = _vector_layers(meta.get("json"))
            if layers is not None:
                self.info["vector_layers"] = layers
        for key in ("minzoom", "maxzoom"):
            if key in meta:
                self.info[key] = int(meta[key])
        for key in ("name", "attribution"):
            if key in meta:
                self.info[key] = str(meta[key])
        if "bounds" in meta:
            with contextlib.suppress(ValueError):
                self.info["bounds"] = [float(v) for v in str(meta["bounds"]).split(",")][:4]
        if "minzoom" not in self.info or "maxzoom" not in self.info:
            row = (
                self._db().execute("SELECT MIN(zoom_level), MAX(zoom_level) FROM tiles").fetchone()
            )
            self.info.setdefault("minzoom", int(row[0] or 0))
            self.info.setdefault("maxzoom", int(row[1] or 0))

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._uri, uri=True, check_same_thread=True)
            self._local.db = db
        return db

    def tile(self, z: int, x: int, y: int) -> bytes | None:
        row = (
            self._db()
            .execute(
                "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                (z, x, (1 << z) - 1 - y),
            )
            .fetchone()
        )
        return bytes(row[0]) if row is not None else None


def _vector_layers(text: object) -> list[object] | None:
    """The ``vector_layers`` array of the ``json`` metadata value (MBTiles 1.3), or None when
    there is none or it is not JSON."""
    if not isinstance(text, str) or len(text) > MAX_METADATA_JSON:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    layers = doc.get("vector_layers") if isinstance(doc, dict) else None
    return layers if isinstance(layers, list) else None


def accepts_gzip(header: str) -> bool:
    """True when an ``Accept-Encoding`` value accepts gzip (RFC 9110 12.5.3: ``gzip`` or ``*``
    with a weight above 0)."""
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() not in {"gzip", "x-gzip", "*"}:
            continue
        weight = params.strip().lower()
        if weight.startswith("q="):
            try:
                return float(weight[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def inflate(data: bytes) -> bytes | None:
    """A gzip or zlib tile decompressed, or None when it is larger than MAX_INFLATED_TILE."""
    d = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    out = d.decompress(data, MAX_INFLATED_TILE)
    return None if d.unconsumed_tail else out


# PMTiles v3 (protomaps/PMTiles spec/v3/spec.md): a 127-byte header, little-endian. Section 3:
# magic "PMTiles" and version 3, then offsets and lengths (uint64) of the root directory (8),
# metadata (24), leaf directories (40) and tile data (56); internal compression at 97, tile
# compression at 98, tile type at 99 (1 MVT, 2 PNG, 3 JPEG, 4 WebP, 5 AVIF), min and max zoom at
# 100 and 101, bounds as int32 degrees x 10^7 at 102 (min lon, min lat, max lon, max lat).
PMTILES_HEADER = 127
PMTILES_TYPES = {1: VECTOR_FORMAT, 2: "png", 3: "jpg", 4: "webp"}
# Internal compression codes (spec 3.4): 1 none, 2 gzip.
PMTILES_NONE, PMTILES_GZIP = 1, 2
PMTILES_CONTENT_TYPE = "application/vnd.pmtiles"
PMTILES_KEY: web.AppKey[PmTiles] = web.AppKey("liaison.pmtiles")


class PmTiles:
    """A PMTiles v3 archive: its header and metadata read once; the page reads the rest with
    range requests of ``GET /api/v1/pmtiles`` (the ``pmtiles`` npm library)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as f:
                head = f.read(PMTILES_HEADER)
                if len(head) < PMTILES_HEADER or head[:7] != b"PMTiles" or head[7] != 3:
                    raise ConfigError("web.pmtiles", f"{path} is not a PMTiles version 3 archive")
                meta_at = int.from_bytes(head[24:32], "little")
                meta_len = int.from_bytes(head[32:40], "little")
                f.seek(meta_at)
                raw = f.read(min(meta_len, MAX_METADATA_JSON))
        except OSError as exc:
            raise ConfigError("web.pmtiles", f"{path} is not readable: {exc}") from exc
        fmt = PMTILES_TYPES.get(head[99])
        if fmt is None:
            raise ConfigError("web.pmtiles", f"{path}: tile type {head[99]} is not drawn")

        def i32(at: int) -> float:
            return int.from_bytes(head[at : at + 4], "little", signed=True) / 1e7

        self.info: dict[str, object] = {
            "format": fmt,
            "vector": fmt == VECTOR_FORMAT,
            "minzoom": head[100],
            "maxzoom": head[101],
            "bounds": [i32(102), i32(106), i32(110), i32(114)],
            "pmtiles": f"{API}/pmtiles",
        }
        meta = _pmtiles_metadata(raw, head[97])
        for key in ("name", "attribution"):
            if isinstance(meta.get(key), str):
                self.info[key] = meta[key]
        if fmt == VECTOR_FORMAT and isinstance(meta.get("vector_layers"), list):
            self.info["vector_layers"] = meta["vector_layers"]


def _pmtiles_metadata(raw: bytes, compression: int) -> dict[str, object]:
    """The archive's JSON metadata (spec 5), or {} when it cannot be read."""
    try:
        if compression == PMTILES_GZIP:
            d = zlib.decompressobj(wbits=31)
            raw = d.decompress(raw, MAX_METADATA_JSON)
        elif compression != PMTILES_NONE:
            return {}
        doc = json.loads(raw)
    except (zlib.error, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


async def get_pmtiles(request: web.Request) -> web.StreamResponse:
    archive = request.app.get(PMTILES_KEY)
    if archive is None:
        raise web.HTTPNotFound(text="no PMTiles archive\n")
    # aiohttp's FileResponse answers Range (206 with Content-Range, 416 outside the file) and
    # If-Range/ETag (RFC 9110 13.1.5, 14.2), and reads the file off the event loop.
    return web.FileResponse(
        archive.path,
        headers={"Content-Type": PMTILES_CONTENT_TYPE, "Cache-Control": "private, no-cache"},
    )


async def get_info(request: web.Request) -> web.Response:
    archive = request.app.get(PMTILES_KEY)
    if archive is not None:
        return web.json_response(archive.info)
    tiles = request.app.get(TILES_KEY)
    if tiles is None:
        # 204, not 404: "is there a tile set?" is a question the web map asks on every load, and
        # "no" is a normal answer (a 404 shows as an error in the browser's console).
        return web.Response(status=204)
    return web.json_response(tiles.info)


async def get_tile(request: web.Request) -> web.Response:
    tiles = request.app.get(TILES_KEY)
    try:
        z, x, y = (int(request.match_info[k]) for k in ("z", "x", "y"))
    except ValueError:
        raise web.HTTPBadRequest(text="z, x and y must be integers\n") from None
    if tiles is None or not (0 <= z <= MAX_ZOOM and 0 <= x < (1 << z) and 0 <= y < (1 << z)):
        raise web.HTTPNotFound(text="no such tile\n")
    data = await asyncio.to_thread(tiles.tile, z, x, y)
    if data is None:
        raise web.HTTPNotFound(text="no such tile\n")
    headers = {"Cache-Control": "private, max-age=86400"}
    if tiles.vector:
        headers["Vary"] = "Accept-Encoding"
        gzipped = data.startswith(GZIP_MAGIC)
        if gzipped and accepts_gzip(request.headers.get("Accept-Encoding", "")):
            headers["Content-Encoding"] = "gzip"
        elif gzipped or data.startswith(b"\x78"):  # gzip, or a zlib header (RFC 1950)
            try:
                inflated = await asyncio.to_thread(inflate, data)
            except zlib.error:
                raise web.HTTPInternalServerError(text="tile is not valid gzip\n") from None
            if inflated is None:
                raise web.HTTPInternalServerError(text="tile too large to decompress\n")
            data = inflated
    return web.Response(body=data, content_type=FORMATS[tiles.format], headers=headers)


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """The tile routes on every listener; without ``web.mbtiles`` or ``web.pmtiles`` they answer
    204 and 404."""
    config = app[CONTEXT_KEY].config
    if config.mbtiles is not None and config.pmtiles is not None:
        raise ConfigError("web.pmtiles", "set web.mbtiles or web.pmtiles, not both")
    if config.mbtiles is not None:
        app[TILES_KEY] = MbTiles(config.mbtiles)
    if config.pmtiles is not None:
        app[PMTILES_KEY] = PmTiles(config.pmtiles)
    app.router.add_get(f"{API}/tiles", get_info)
    app.router.add_get(f"{API}/tiles/{{z}}/{{x}}/{{y}}", get_tile)
    app.router.add_get(f"{API}/pmtiles", get_pmtiles)
