"""The operator's MBTiles over HTTP, and relabelling an item through the REST API."""

from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path

import pytest

from liaison.errors import ConfigError
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients, connect_tls
from tests.integration.http.http_support import cert_session, https_url, wait_until
from tests.integration.test_labels_e2e import POLICY, USERS, marker, seclabel
from tests.vector_tiles import make_vector_mbtiles, make_vector_pmtiles, water_tile

PNG = b"\x89PNG\r\n\x1a\n" + b"tile-bytes"


def make_mbtiles(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
        db.execute(
            "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,"
            " tile_data BLOB)"
        )
        db.executemany(
            "INSERT INTO metadata VALUES (?, ?)",
            [
                ("name", "Kyiv"),
                ("format", "png"),
                ("minzoom", "0"),
                ("maxzoom", "2"),
                ("bounds", "30.2,50.3,30.8,50.6"),
            ],
        )
        # XYZ (z=2, x=1, y=0) is TMS row 2^2 - 1 - 0 = 3.
        db.execute("INSERT INTO tiles VALUES (2, 1, 3, ?)", (PNG,))


async def test_mbtiles_are_served_with_xyz_numbering(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    tiles = tmp_path / "kyiv.mbtiles"
    make_mbtiles(tiles)
    async with start_server(mbtiles=str(tiles)) as server:
        cert = issue_cert(server, "viewer", "USA")
        async with cert_session(server, cert) as http:
            async with http.get(https_url(server, "/api/v1/tiles")) as r:
                info = await r.json()
                assert info["format"] == "png" and info["maxzoom"] == 2
                assert info["bounds"] == [30.2, 50.3, 30.8, 50.6]
            async with http.get(https_url(server, "/api/v1/tiles/2/1/0")) as r:
                assert r.status == 200 and r.content_type == "image/png"
                assert await r.read() == PNG
            for missing in ("/api/v1/tiles/2/1/3", "/api/v1/tiles/2/9/0", "/api/v1/tiles/40/0/0"):
                async with http.get(https_url(server, missing)) as r:
                    assert r.status == 404
    async with start_server() as server:
        cert = issue_cert(server, "viewer", "USA")
        async with (
            cert_session(server, cert) as http,
            http.get(https_url(server, "/api/v1/tiles")) as r,
        ):
            assert r.status == 204 and await r.read() == b""  # no tile set: no error either
        async with (
            cert_session(server, cert) as http,
            http.get(https_url(server, "/api/v1/tiles/2/1/0")) as r,
        ):
            assert r.status == 404


async def test_vector_mbtiles_are_served_as_mapbox_vector_tiles(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    tiles = tmp_path / "vectors.mbtiles"
    mvt = water_tile()
    make_vector_mbtiles(tiles, {(0, 0, 0): mvt, (1, 1, 0): mvt})
    async with start_server(mbtiles=str(tiles)) as server:
        cert = issue_cert(server, "viewer", "USA")
        async with cert_session(server, cert) as http:
            async with http.get(https_url(server, "/api/v1/tiles")) as r:
                assert r.status == 200
                info = await r.json()
            assert info["format"] == "pbf" and info["vector"] is True
            assert info["minzoom"] == 0 and info["maxzoom"] == 1
            assert [layer["id"] for layer in info["vector_layers"]] == ["water", "transportation"]
            # A client that accepts gzip gets the stored bytes as they are, marked gzip.
            async with http.get(
                https_url(server, "/api/v1/tiles/1/1/0"),
                headers={"Accept-Encoding": "gzip"},
                auto_decompress=False,
            ) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "application/vnd.mapbox-vector-tile"
                assert r.headers["Content-Encoding"] == "gzip"
                assert r.headers["Vary"] == "Accept-Encoding"
                body = await r.read()
            assert body[:2] == b"\x1f\x8b" and gzip.decompress(body) == mvt
            # One that does not gets them decompressed by the server.
            async with http.get(
                https_url(server, "/api/v1/tiles/0/0/0"),
                headers={"Accept-Encoding": "identity"},
                auto_decompress=False,
            ) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "application/vnd.mapbox-vector-tile"
                assert "Content-Encoding" not in r.headers
                assert await r.read() == mvt
            async with http.get(
                https_url(server, "/api/v1/tiles/1/1/0"),
                headers={"Accept-Encoding": "gzip;q=0, br"},
                auto_decompress=False,
            ) as r:
                assert "Content-Encoding" not in r.headers and await r.read() == mvt
            for missing in ("/api/v1/tiles/1/0/0", "/api/v1/tiles/1/1/1", "/api/v1/tiles/2/0/0"):
                async with http.get(https_url(server, missing)) as r:
                    assert r.status == 404


async def test_pmtiles_archive_is_served_with_range_requests(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    archive = tmp_path / "vectors.pmtiles"
    make_vector_pmtiles(archive, {(0, 0, 0): water_tile(), (1, 1, 0): water_tile()})
    whole = archive.read_bytes()
    async with start_server(pmtiles=str(archive)) as server:
        cert = issue_cert(server, "viewer", "USA")
        async with cert_session(server, cert) as http:
            async with http.get(https_url(server, "/api/v1/tiles")) as r:
                assert r.status == 200
                info = await r.json()
            assert info == {
                "format": "pbf",
                "vector": True,
                "minzoom": 0,
                "maxzoom": 1,
                "bounds": [-180.0, -85.0, 180.0, 85.0],
                "pmtiles": "/api/v1/pmtiles",
                "name": "Test archive",
                "attribution": "Test data",
                "vector_layers": [{"id": "water"}],
            }
            async with http.get(
                https_url(server, "/api/v1/pmtiles"), headers={"Range": "bytes=0-126"}
            ) as r:
                assert r.status == 206
                assert r.headers["Content-Type"] == "application/vnd.pmtiles"
                assert r.headers["Content-Range"] == f"bytes 0-126/{len(whole)}"
                assert r.headers["Cache-Control"] == "private, no-cache" and "ETag" in r.headers
                assert await r.read() == whole[:127]
            async with http.get(
                https_url(server, "/api/v1/pmtiles"), headers={"Range": "bytes=127-"}
            ) as r:
                assert r.status == 206 and await r.read() == whole[127:]
            async with http.get(https_url(server, "/api/v1/pmtiles")) as r:
                assert r.status == 200 and await r.read() == whole
            async with http.get(
                https_url(server, "/api/v1/pmtiles"),
                headers={"Range": f"bytes={len(whole) + 10}-"},
            ) as r:
                assert r.status == 416
            # Tiles come from the archive through the page, not from the MBTiles route.
            async with http.get(https_url(server, "/api/v1/tiles/0/0/0")) as r:
                assert r.status == 404
    async with start_server() as server:
        cert = issue_cert(server, "viewer", "USA")
        async with (
            cert_session(server, cert) as http,
            http.get(https_url(server, "/api/v1/pmtiles")) as r,
        ):
            assert r.status == 404
    tiles = tmp_path / "vectors.mbtiles"
    make_vector_mbtiles(tiles, {(0, 0, 0): water_tile()})
    with pytest.raises(ConfigError, match="not both"):
        async with start_server(pmtiles=str(archive), mbtiles=str(tiles)):
            pass
    (tmp_path / "not.pmtiles").write_bytes(b"PMTiles\x02" + bytes(200))
    with pytest.raises(ConfigError, match="version 3"):
        async with start_server(pmtiles=str(tmp_path / "not.pmtiles")):
            pass


async def test_relabel_through_the_api(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY + '\n[gate]\nrelease_authorities = { USA = ["usa-s"] }\n')
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    async with start_server(policy_file=str(policy)) as server:
        assert server.tls is not None
        certs = {name: issue_cert(server, name, org) for name, (org, _) in USERS.items()}
        s, k = certs["usa-s"], certs["ukr-s"]
        sender = await connect_tls(server.tls.port, cert=s.cert, key=s.key, ca=s.ca)
        ukr = await connect_tls(server.tls.port, cert=k.cert, key=k.key, ca=k.ca)
        async with clients(sender, ukr):
            await sender.send(marker("m-rel", "CANARY-REL", seclabel("SECRET", ["USA"])))
            await wait_until(
                lambda: any(e.event.uid == "m-rel" for e in server.router.latest_entries()),
                "the marker in the picture",
            )
            url = https_url(server, "/api/v1/items/m-rel/label")
            wider = {"label": "SECRET//REL TO USA, UKR"}
            async with (
                cert_session(server, certs["ukr-s"]) as http,
                http.post(url, json=wider) as r,
            ):
                assert r.status == 404  # UKR may not see it: same answer as a missing item
            async with cert_session(server, certs["usa-s"]) as http:
                async with http.post(url, json=wider) as r:
                    assert r.status == 403  # widening needs a justification
                body = {**wider, "justification": "agreed with the partner's liaison officer"}
                async with http.post(url, json=body) as r:
                    assert r.status == 200, await r.text()
                    assert (await r.json())["label"] == "SECRET//REL TO USA, UKR"
            got = await ukr.wait_for(b"CANARY-REL")
            assert b'releasableTo="REL TO USA, UKR"' in got
