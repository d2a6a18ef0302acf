"""Small vector MBTiles files written by the tests themselves (never downloaded).

The Mapbox Vector Tile encoding (mapbox/vector-tile-spec 2.1, vector_tile.proto) written by hand:
protobuf varints and length-delimited fields, geometry as MoveTo/LineTo/ClosePath commands with
zigzag-encoded deltas (spec 4.3), exterior rings clockwise in tile coordinates (spec 4.3.4.3).
"""

from __future__ import annotations

import gzip
import itertools
import json
import sqlite3
import zlib
from collections.abc import Sequence
from pathlib import Path

EXTENT = 4096


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _bytes(number: int, data: bytes) -> bytes:
    return _field(number, 2) + _varint(len(data)) + data


def _uint(number: int, value: int) -> bytes:
    return _field(number, 0) + _varint(value)


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 31)


def _command(cid: int, count: int) -> int:
    return (cid & 0x7) | (count << 3)


def _geometry(kind: str, points: Sequence[tuple[int, int]]) -> list[int]:
    """Commands of one point, line or ring (a ring: without its closing point)."""
    cmds = [_command(1, 1), _zigzag(points[0][0]), _zigzag(points[0][1])]
    if kind == "point":
        return cmds
    cmds.append(_command(2, len(points) - 1))
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        cmds += [_zigzag(x1 - x0), _zigzag(y1 - y0)]
    if kind == "polygon":
        cmds.append(_command(7, 1))
    return cmds


GEOM_TYPES = {"point": 1, "line": 2, "polygon": 3}


def mvt_layer(
    name: str, features: Sequence[tuple[str, Sequence[tuple[int, int]], dict[str, str]]]
) -> bytes:
    """One layer: features as (kind, points in tile coordinates 0..4096, string properties)."""
    keys: list[str] = []
    values: list[str] = []
    body = _uint(15, 2) + _bytes(1, name.encode())
    for i, (kind, points, props) in enumerate(features):
        tags: list[int] = []
        for k, v in props.items():
            if k not in keys:
                keys.append(k)
            if v not in values:
                values.append(v)
            tags += [keys.index(k), values.index(v)]
        geometry = b"".join(_varint(c) for c in _geometry(kind, points))
        feature = _uint(1, i + 1)
        if tags:
            feature += _bytes(2, b"".join(_varint(t) for t in tags))
        feature += _uint(3, GEOM_TYPES[kind]) + _bytes(4, geometry)
        body += _bytes(2, feature)
    for k in keys:
        body += _bytes(3, k.encode())
    for v in values:
        body += _bytes(4, _bytes(1, v.encode()))  # Value.string_value
    body += _uint(5, EXTENT)
    return _bytes(3, body)  # Tile.layers


def water_tile() -> bytes:
    """A tile whose west half is a water polygon, with a road and a named place in the east."""
    return (
        mvt_layer(
            "water", [("polygon", [(0, 0), (2048, 0), (2048, 4096), (0, 4096)], {"class": "lake"})]
        )
        + mvt_layer(
            "transportation", [("line", [(2600, 100), (2600, 4000)], {"class": "motorway"})]
        )
        + mvt_layer("place", [("point", [(3300, 2048)], {"name": "Testville", "class": "town"})])
    )


def make_vector_mbtiles(path: Path, tiles: dict[tuple[int, int, int], bytes]) -> None:
    """An MBTiles file of format pbf holding ``tiles`` ((z, x, y) in XYZ numbering -> MVT
    bytes), stored gzip-compressed as tippecanoe and planetiler store them."""
    zooms = [z for z, _, _ in tiles]
    layers = [
        {"id": "water", "fields": {"class": "String"}},
        {"id": "transportation", "fields": {}},
    ]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
        db.execute(
            "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,"
            " tile_data BLOB)"
        )
        db.executemany(
            "INSERT INTO metadata VALUES (?, ?)",
            [
                ("name", "Test vectors"),
                ("format", "pbf"),
                ("minzoom", str(min(zooms))),
                ("maxzoom", str(max(zooms))),
                ("json", json.dumps({"vector_layers": layers})),
            ],
        )
        for (z, x, y), data in tiles.items():
            db.execute(
                "INSERT INTO tiles VALUES (?, ?, ?, ?)",
                (z, x, (1 << z) - 1 - y, gzip.compress(data, mtime=0)),
            )


def make_vector_pmtiles(path: Path, tiles: dict[tuple[int, int, int], bytes]) -> None:
    """A PMTiles v3 archive of MVT tiles ((z, x, y) -> bytes, stored gzip-compressed), written
    with the ``pmtiles`` PyPI package's writer (an implementation other than the page's)."""
    make_pmtiles(path, {k: gzip.compress(v, mtime=0) for k, v in tiles.items()}, vector=True)


def make_pmtiles(path: Path, tiles: dict[tuple[int, int, int], bytes], *, vector: bool) -> None:
    """A PMTiles v3 archive of ``tiles`` as given: gzip MVT tiles, or (``vector`` false) PNG."""
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import write

    zooms = [z for z, _, _ in tiles]
    with write(str(path)) as writer:
        for (z, x, y), data in sorted(tiles.items(), key=lambda t: zxy_to_tileid(*t[0])):
            writer.write_tile(zxy_to_tileid(z, x, y), data)
        writer.finalize(
            {
                "tile_type": TileType.MVT if vector else TileType.PNG,
                "tile_compression": Compression.GZIP if vector else Compression.NONE,
                "min_lon_e7": -1800000000,
                "min_lat_e7": -850000000,
                "max_lon_e7": 1800000000,
                "max_lat_e7": 850000000,
                "center_zoom": min(zooms),
                "center_lon_e7": 0,
                "center_lat_e7": 0,
            },
            {
                "name": "Test archive",
                "attribution": "Test data",
                "vector_layers": [{"id": "water"}],
            },
        )


def solid_png(rgb: tuple[int, int, int], size: int = 256) -> bytes:
    """A ``size`` x ``size`` PNG of one colour (PNG spec, ISO/IEC 15948: IHDR, IDAT, IEND;
    8-bit RGB, filter 0 on each row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = size.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    rows = (b"\x00" + bytes(rgb) * size) * size
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def make_raster_mbtiles(path: Path, tiles: dict[tuple[int, int, int], bytes]) -> None:
    """An MBTiles file of format png holding ``tiles`` ((z, x, y) XYZ -> PNG bytes)."""
    zooms = [z for z, _, _ in tiles]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
        db.execute(
            "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,"
            " tile_data BLOB)"
        )
        db.executemany(
            "INSERT INTO metadata VALUES (?, ?)",
            [("format", "png"), ("minzoom", str(min(zooms))), ("maxzoom", str(max(zooms)))],
        )
        for (z, x, y), data in tiles.items():
            db.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (z, x, (1 << z) - 1 - y, data))
