"""The operator's MBTiles over HTTP, and relabelling an item through the REST API."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients, connect_tls
from tests.integration.http.http_support import cert_session, https_url, wait_until
from tests.integration.test_labels_e2e import POLICY, USERS, marker, seclabel

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
