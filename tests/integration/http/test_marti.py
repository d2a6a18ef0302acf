"""The Marti API as ATAK and iTAK call it, over real HTTPS with client certificates."""

from __future__ import annotations

import io
import uuid
import zipfile
from pathlib import Path

import aiohttp
import pytak

from tests.integration.conftest import ServerFactory
from tests.integration.helpers import clients, connect_tls, sa_event
from tests.integration.http.http_support import (
    cert_session,
    certs,
    data_package,
    https_url,
    make_zip,
    sha256,
    upload_form,
    write_groups,
)


async def test_version_config_and_groups(start_server: ServerFactory, tmp_path: Path) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        c = certs(server, ("red1", "RED"))
        async with cert_session(server, c["red1"]) as http:
            async with http.get(https_url(server, "/Marti/api/version")) as r:
                assert r.status == 200
                assert (await r.text()).startswith("Liaison ")
            async with http.get(https_url(server, "/Marti/api/version/config")) as r:
                doc = await r.json()
            assert doc["version"] == "3" and doc["type"] == "ServerConfig"
            assert doc["data"]["api"] == "3" and doc["data"]["hostname"] == "localhost"
            assert doc["messages"] == [] and len(doc["nodeId"]) == 32
            async with http.get(https_url(server, "/Marti/api/groups/all?useCache=true")) as r:
                groups = await r.json()
            assert groups["type"] == "com.bbn.marti.remote.groups.Group"
            assert {(g["name"], g["direction"]) for g in groups["data"]} == {
                ("red", "IN"),
                ("red", "OUT"),
            }
            assert all(g["active"] for g in groups["data"])
            async with http.get(https_url(server, "/Marti/api/groups/groupCacheEnabled")) as r:
                assert (await r.json())["data"] is False
            async with http.get(https_url(server, "/Marti/api/groups/active")) as r:
                assert (await r.json())["data"] == groups["data"]


async def test_data_package_shared_only_within_the_group(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        assert server.tls is not None and server.https is not None
        c = certs(server, ("red1", "RED"), ("red2", "RED"), ("blue1", "BLUE"))
        package = data_package("pkg-1", "rendezvous at the bridge")
        digest = sha256(package)
        async with (
            cert_session(server, c["red1"]) as red1,
            cert_session(server, c["red2"]) as red2,
            cert_session(server, c["blue1"]) as blue1,
        ):
            # ATAK's share flow: missionquery (404), missionupload, tool, then the fileshare CoT.
            query = https_url(server, f"/Marti/sync/missionquery?hash={digest}")
            async with red1.get(query) as r:
                assert r.status == 404
            upload = https_url(
                server,
                f"/Marti/sync/missionupload?hash={digest}&filename=pkg-1&creatorUid=ANDROID-red1",
            )
            async with red1.post(upload, data=upload_form(package)) as r:
                assert r.status == 200, await r.text()
                url = await r.text()
            expected = f"https://localhost:{server.https.port}/Marti/sync/content?hash={digest}"
            assert url == expected
            async with red1.get(query) as r:
                assert r.status == 200 and await r.text() == expected
            tool = https_url(server, f"/Marti/api/sync/metadata/{digest}/tool")
            async with red1.put(tool, data=b"public") as r:
                assert r.status == 200

            # A second identical upload is idempotent: same URL, still one search result.
            async with red1.post(upload, data=upload_form(package)) as r:
                assert r.status == 200 and await r.text() == expected

            # The other stream client learns of it through the fileshare CoT and downloads it.
            conns = {
                n: await connect_tls(
                    server.tls.port, cert=c[n].cert, key=c[n].key, ca=c[n].ca, name=n
                )
                for n in ("red1", "red2", "blue1")
            }
            async with clients(*conns.values()):
                await conns["red1"].send(sa_event("ANDROID-red1", "RED1"))
                await conns["red2"].wait_for(b"ANDROID-red1")
                await conns["red1"].send(fileshare_event("ANDROID-red1", "RED1", url, package))
                got = await conns["red2"].wait_for(b"b-f-t-r")
                assert f'senderUrl="{expected}"'.encode() in got.replace(b"&amp;", b"&")
                assert not any(b"b-f-t-r" in f for f in await conns["blue1"].collect(0.4))
            async with red2.get(expected) as r:
                assert r.status == 200
                assert await r.read() == package
                assert r.content_type == "application/x-zip-compressed"
                assert r.headers["Content-Disposition"] == (
                    "attachment; filename=\"pkg-1\"; filename*=UTF-8''pkg-1"
                )
            async with red2.head(expected) as r:
                assert r.status == 200 and int(r.headers["Content-Length"]) == len(package)
            async with blue1.head(expected) as r:
                assert r.status == 404
            async with red2.get(
                https_url(server, "/Marti/sync/search?keywords=missionpackage")
            ) as r:
                found = await r.json()
            assert found["resultCount"] == 1
            item = found["results"][0]
            assert item["Hash"] == digest and item["Name"] == "pkg-1"
            assert item["CreatorUid"] == "ANDROID-red1" and item["SubmissionUser"] == "red1"
            assert item["Keywords"] == ["missionpackage"] and item["Size"] == len(package)
            assert "Groups" not in item

            # BLUE can neither download it nor learn it exists: answers identical to a missing hash.
            missing = sha256(b"no such package")
            for path in (
                "/Marti/sync/missionquery?hash={}",
                "/Marti/sync/content?hash={}",
                "/Marti/api/sync/metadata/{}/tool",
            ):
                async with blue1.get(https_url(server, path.format(digest))) as r:
                    forbidden = (r.status, await r.read(), r.content_type)
                async with blue1.get(https_url(server, path.format(missing))) as r:
                    absent = (r.status, await r.read(), r.content_type)
                assert forbidden == absent and forbidden[0] == 404
            async with blue1.put(
                https_url(server, f"/Marti/api/sync/metadata/{digest}/tool"), data=b"private"
            ) as r:
                assert r.status == 404
            async with blue1.get(https_url(server, "/Marti/sync/search")) as r:
                assert await r.json() == {"resultCount": 0, "results": []}
            # The uploader's own record is unchanged by BLUE's attempt.
            async with red2.get(tool) as r:
                assert await r.text() == "public"
            # Another RED user sees it but may not change the uploader's metadata.
            async with red2.put(tool, data=b"private") as r:
                assert r.status == 403

            # BLUE uploading the same bytes gets its own record: still no hint that RED has it.
            async with blue1.post(upload, data=upload_form(package)) as r:
                assert r.status == 200 and await r.text() == expected
            async with blue1.get(https_url(server, "/Marti/sync/search")) as r:
                blue_view = await r.json()
            assert blue_view["resultCount"] == 1
            assert blue_view["results"][0]["SubmissionUser"] == "blue1"
            # Content is stored once.
            stored = list((server.config.data_dir / "files").glob("??/*"))
            assert [p.name for p in stored] == [digest]


def fileshare_event(uid: str, callsign: str, url: str, package: bytes) -> bytes:
    """The b-f-t-r ATAK sends after an upload (sample atak-fileshare-01.xml; NC fileshare.ts)."""
    t = pytak.cot_time()
    stale = pytak.cot_time(60)
    return (
        f'<event version="2.0" uid="{uuid.uuid4()}" type="b-f-t-r" how="h-e" time="{t}"'
        f' start="{t}" stale="{stale}"><point lat="50.1" lon="30.2" hae="0" ce="9999999"'
        f' le="9999999"/><detail><fileshare filename="pkg-1.zip" name="pkg-1"'
        f' senderUrl="{url.replace("&", "&amp;")}" sizeInBytes="{len(package)}"'
        f' sha256="{sha256(package)}" senderUid="{uid}" senderCallsign="{callsign}"/>'
        f'<ackrequest uid="{uuid.uuid4()}" ackrequested="true" tag="pkg-1"/></detail></event>'
    ).encode()


async def test_unsafe_uploads_are_refused_and_not_stored(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    bombs = {
        "traversal": make_zip({"../../etc/cron.d/evil": b"x"}),
        "absolute": make_zip({"/etc/passwd": b"x"}),
        "drive": make_zip({"C:/Windows/evil.dll": b"x"}),
        "bomb": make_zip({"zeros.bin": bytes(50 * 1024 * 1024)}),
        "not_a_zip": b"PK\x03\x04 this is not really a zip",
        "symlink": symlink_zip(),
    }
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        c = certs(server, ("red1", "RED"))
        async with cert_session(server, c["red1"]) as http:
            for name, data in bombs.items():
                url = https_url(
                    server, f"/Marti/sync/missionupload?hash={sha256(data)}&filename={name}"
                )
                async with http.post(url, data=upload_form(data)) as r:
                    assert r.status == 400, (name, r.status)
                    assert "upload refused" in await r.text()
                async with http.get(
                    https_url(server, f"/Marti/sync/missionquery?hash={sha256(data)}")
                ) as r:
                    assert r.status == 404
            # A hash that does not match the content is refused too.
            good = data_package("pkg-2", "hello")
            url = https_url(server, f"/Marti/sync/missionupload?hash={sha256(b'other')}&filename=x")
            async with http.post(url, data=upload_form(good)) as r:
                assert r.status == 400
            async with http.get(https_url(server, "/Marti/sync/search")) as r:
                assert (await r.json())["resultCount"] == 0
        assert not list((server.config.data_dir / "files").glob("??/*"))
        metrics = server.metrics.snapshot()
        assert metrics['liaison_files_refused_total{reason="zip_path"}'] == 3
        assert metrics['liaison_files_refused_total{reason="zip_bomb"}'] == 1
        assert metrics['liaison_files_refused_total{reason="zip_symlink"}'] == 1
        assert metrics['liaison_files_refused_total{reason="hash_mismatch"}'] == 1


def symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


async def test_itak_sync_upload_raw_body(start_server: ServerFactory, tmp_path: Path) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        c = certs(server, ("red1", "RED"), ("blue1", "BLUE"))
        package = data_package("itak-1", "from an iPhone")
        async with cert_session(server, c["red1"]) as red, cert_session(server, c["blue1"]) as blue:
            # As iTAK sends it (taky issue #81): the zip as the body, parameters in the query.
            url = https_url(
                server,
                "/Marti/sync/upload?CreatorUid=1874F828-5CF1&keywords=missionpackage"
                "&name=FM05-iOS.05.142741.zip",
            )
            headers = {"Content-Type": "application/x-zip-compressed"}
            async with red.post(url, data=package, headers=headers) as r:
                assert r.status == 200, await r.text()
                meta = await r.json()
            assert meta["Hash"] == sha256(package)
            assert meta["Name"] == "FM05-iOS.05.142741.zip"
            assert meta["CreatorUid"] == "1874F828-5CF1" and meta["Keywords"] == ["missionpackage"]
            content = https_url(server, f"/Marti/sync/content?hash={meta['Hash']}")
            async with red.get(content) as r:
                assert await r.read() == package
            async with red.get(https_url(server, f"/Marti/sync/content?uid={meta['UID']}")) as r:
                assert await r.read() == package
            async with blue.get(content) as r:
                assert r.status == 404
            async with blue.get(https_url(server, f"/Marti/sync/content?uid={meta['UID']}")) as r:
                assert r.status == 404
            # A multipart form works too.
            form = aiohttp.FormData()
            form.add_field(
                "assetfile", b"plain text", filename="note.txt", content_type="text/plain"
            )
            async with red.post(
                https_url(server, "/Marti/sync/upload?name=note.txt"), data=form
            ) as r:
                assert (await r.json())["MIMEType"] == "text/plain"


async def test_contacts_and_client_endpoints_are_filtered(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        assert server.tls is not None
        c = certs(server, ("red1", "RED"), ("blue1", "BLUE"))
        conns = {
            n: await connect_tls(server.tls.port, cert=c[n].cert, key=c[n].key, ca=c[n].ca, name=n)
            for n in c
        }
        async with clients(*conns.values()), cert_session(server, c["red1"]) as http:
            await conns["red1"].send(sa_event("ANDROID-red1", "RED1"))
            await conns["blue1"].send(sa_event("ANDROID-blue1", "BLUE1"))
            await conns["red1"].send(sa_event("ANDROID-red1", "RED1"))
            await conns["red1"].collect(0.3)
            async with http.get(https_url(server, "/Marti/api/contacts/all")) as r:
                contacts = await r.json()
            assert [x["uid"] for x in contacts] == ["ANDROID-red1"]
            assert contacts[0]["callsign"] == "RED1" and contacts[0]["team"] == "Cyan"
            url = https_url(server, "/Marti/api/clientEndPoints?showCurrentlyConnectedClients=true")
            async with http.get(url) as r:
                endpoints = await r.json()
            assert endpoints["type"] == "com.bbn.marti.remote.ClientEndpoint"
            assert [(e["uid"], e["lastStatus"]) for e in endpoints["data"]] == [
                ("ANDROID-red1", "Connected")
            ]
